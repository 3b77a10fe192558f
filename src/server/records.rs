//! The records folder of long runs (`<storage>/.mce-runs`): what is kept of a run
//! ([`Record`], `<run_id>.json`) and what another server needs to follow it ([`Resumable`],
//! `<run_id>.follow.json`), written atomically and read back; run ids checked before any path
//! is made of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rmcp::model::CallToolResult;
use serde::{Deserialize, Serialize};

use super::contract::RunState;
use crate::limits::Limits;
use crate::storage::FileStat;

/// What a run's answer is built from, besides its outcome (set by the run once it knows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The stored file's name and path.
    pub name: String,
    pub path: String,
    /// The environment it runs in, as reported.
    pub environment: String,
    pub limits: Limits,
    /// The storage folder before the run (to tell which files it made or changed).
    pub before: HashMap<String, FileStat>,
}

/// What another server needs to follow a run to its end: its plan, its container and the end
/// marker its runner was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resumable {
    pub container: String,
    pub marker: String,
    pub plan: Plan,
}

/// What is kept of a run on disk (and returned by `list_runs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub run_id: String,
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    pub started_unix: u64,
    /// The server instance that ran it.
    #[serde(default)]
    pub instance: String,
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_secs: Option<f64>,
    /// Why a lost run was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_reason: Option<String>,
    /// The final result, as the call would have answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CallToolResult>,
}

/// Whether `id` has the shape of a run id (also what keeps lookups inside the records folder).
pub fn is_run_id(id: &str) -> bool {
    id.strip_prefix("run-")
        .is_some_and(|hex| hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

pub(super) fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Where a run's [`Resumable`] is kept (not a record: its stem is no run id).
pub(super) fn resumable_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.follow.json"))
}

/// Writes a record atomically. A record that cannot be written costs only its life after a
/// restart: logged, not fatal.
pub(super) fn write_record(dir: &Path, record: &Record) {
    if let Err(e) = write_json(&record_path(dir, &record.run_id), record) {
        tracing::warn!(run = %record.run_id, "cannot write the run's record: {e}");
    }
}

/// Writes `value` as JSON to `path` atomically (a temporary file renamed over the old one).
pub(super) fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{}.tmp", name.unwrap_or_default()));
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

pub(super) fn read_record(dir: &Path, id: &str) -> Option<Record> {
    let bytes = std::fs::read(record_path(dir, id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(super) fn read_records(dir: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let id = name.to_str()?.strip_suffix(".json")?;
            is_run_id(id).then(|| read_record(dir, id)).flatten()
        })
        .collect()
}
