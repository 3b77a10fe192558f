//! The long-run part of the tool contract: what a call that outlasted `RESULT_WAIT` answers
//! (`Background`, flattened into the results of the tools that can go to the background), and
//! the arguments and results of `get_run`, `cancel_run` and `list_runs`, and the long-run
//! limits `get_environment_config` reports.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Status;

/// What a call adds about its run: always its `run_id`; while it is still running (`status:
/// "running"`), how long it has run, the end of its output so far, and when to poll again.
#[derive(Debug, Default, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Background {
    /// The run's id: poll it with get_run, stop it with cancel_run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Seconds since the run started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_secs: Option<f64>,
    /// The last few KiB of what the program printed so far on stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_tail: Option<String>,
    /// The last few KiB of what the program printed so far on stderr.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// Seconds to wait before the next get_run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_after_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetRunArgs {
    /// The run, as execute_code, execute_code_file, install_dependencies or list_runs gave it.
    pub run_id: String,
    /// Seconds to wait for the run to finish before answering (at most the server's
    /// RESULT_WAIT; default: RESULT_WAIT).
    #[serde(default)]
    pub wait_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CancelRunArgs {
    /// The run to stop.
    pub run_id: String,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Still going: get_run waits for it.
    Running,
    /// Ended on its own, with success or not (its result says which).
    Finished,
    /// Stopped by cancel_run, by its client before it had a run_id, or by a shutdown.
    Cancelled,
    /// Killed at its deadline (the call's timeout).
    TimedOut,
    /// Its server stopped before it finished and the run could not be followed: no result.
    Lost,
}

/// One run in `list_runs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunEntry {
    pub run_id: String,
    /// The tool that started it.
    pub tool: String,
    pub state: RunState,
    /// When it started (unix seconds).
    pub started_unix: u64,
    /// Seconds it ran (so far, while running).
    pub elapsed_secs: f64,
    /// The stored program it ran, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
}

/// Result of `list_runs`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ListRunsResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Runs kept (running, and finished within RUN_RETENTION), newest first.
    pub runs: Vec<RunEntry>,
}

/// What `get_run` and `cancel_run` say when there is no result to give: the run is unknown,
/// expired or lost. Otherwise they answer with the run's own result (the shape of the tool
/// that started it).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct RunLookup {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
}

/// Limits of long runs, as `get_environment_config` reports them.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunLimits {
    /// Longest `timeout` a call may ask for, seconds (MAX_TIMEOUT).
    pub max_timeout_secs: u64,
    /// How long a call waits for its run before answering status "running" (RESULT_WAIT).
    pub result_wait_secs: u64,
    /// How long finished results are kept for get_run, seconds (RUN_RETENTION).
    pub run_retention_secs: u64,
    /// Runs still going at once (in the background or whose call still waits), per principal
    /// over HTTP (MAX_BACKGROUND_RUNS).
    pub max_background_runs: usize,
}
