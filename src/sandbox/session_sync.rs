//! Sessions in copy mode (`STORAGE_MODE=copy`: a daemon that cannot mount the storage folder).
//! A session's container holds its own copy of the folder in an anonymous volume at
//! [`super::copy::COPY_MOUNT`], kept in step with the server's at each call: before the call,
//! the files the container does not hold as the folder has them go in (so a file written with
//! `write_file` between calls is there); after it, what the session wrote comes back and what
//! it deleted is deleted, by the rules of [`super::copy`]. What the container holds is
//! remembered between calls ([`Synced`]); a server that does not know it (it adopted the
//! session) first takes back what the container has, then sends what it lacks. What a session
//! writes between calls (a thread it left running) comes back with its next call.

use std::path::Path;
use std::sync::Mutex;

use super::copy::{CopySettings, Held};
use super::engine::ContainerEngine;
use super::lifecycle::lock;
use super::runner::{self, RunOutcome};
use super::session_call::CallEnd;
use crate::error::SandboxError;

/// The storage label of a session container in copy mode: no host path names the storage
/// folder there (every folder's copy is at the same place), so the folder's own id does, kept
/// in its sessions' state folder (made the first time). Sessions are adopted only by servers
/// of the folder whose id their label has: another principal's world, or another server on
/// the same daemon, never sees them. When the id cannot be kept, a new one each time: such a
/// session is never adopted.
pub fn storage_key(state_dir: &Path) -> String {
    let file = state_dir.join("storage-id");
    let kept = std::fs::read_to_string(&file).ok().or_else(|| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        std::fs::create_dir_all(state_dir).ok()?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .ok()?;
        std::io::Write::write_all(&mut f, id.as_bytes()).ok()?;
        Some(id)
    });
    // Another server may have made it at the same moment: its id is the one kept.
    let kept = kept.or_else(|| std::fs::read_to_string(&file).ok());
    let id = kept
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| format!("unkept-{}", uuid::Uuid::new_v4().simple()));
    format!("copy:{id}")
}

/// What the session's container holds, as of the last exchange (`None`: unknown).
#[derive(Debug, Default)]
pub struct Synced(Mutex<Option<Held>>);

impl Synced {
    pub fn new(held: Option<Held>) -> Self {
        Synced(Mutex::new(held))
    }
}

/// Before a call: the files the container lacks go in. Returns what it holds then.
pub async fn before_call(
    engine: &dyn ContainerEngine,
    container: &str,
    copy: &CopySettings,
    owner: (u32, u32),
    synced: &Synced,
) -> Result<Held, SandboxError> {
    let known = lock(&synced.0).clone();
    let held = match known {
        Some(held) => held,
        // Adopted: what the session wrote since its last exchange comes back first, so that
        // sending the folder cannot overwrite it.
        None => runner::copy_back(engine, container, copy, None).await?.1,
    };
    let held = runner::copy_in_since(engine, container, copy, owner, Some(held)).await?;
    *lock(&synced.0) = Some(held.clone());
    Ok(held)
}

/// After a call (whatever its end, while the container exists): the session's files come
/// back into the folder, and what the container holds is remembered for the next call.
async fn after_call(
    engine: &dyn ContainerEngine,
    container: &str,
    copy: &CopySettings,
    held: &Held,
    outcome: RunOutcome,
    synced: &Synced,
) -> Result<RunOutcome, SandboxError> {
    let (skipped, now) = runner::copy_back(engine, container, copy, Some(held)).await?;
    *lock(&synced.0) = Some(now);
    Ok(runner::note_skipped(outcome, &skipped))
}
/// [`after_call`] for a call's end. A session that ended in the call (out of memory, exit)
/// still gives its files back where its container can; where not, the end stands as it is.
pub async fn after_end(
    engine: &dyn ContainerEngine,
    container: &str,
    copy: &CopySettings,
    held: &Held,
    end: CallEnd,
    synced: &Synced,
) -> Result<CallEnd, SandboxError> {
    match end {
        CallEnd::Done(outcome) => {
            let outcome = after_call(engine, container, copy, held, outcome, synced).await?;
            Ok(CallEnd::Done(outcome))
        }
        CallEnd::Ended(outcome, reason) => {
            let back = after_call(engine, container, copy, held, outcome.clone(), synced).await;
            let outcome = back.unwrap_or_else(|e| {
                tracing::warn!("the ended session's files could not be copied back: {e}");
                outcome
            });
            Ok(CallEnd::Ended(outcome, reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_keeps_its_storage_key_and_another_has_its_own() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = storage_key(&a.path().join(".mce-sessions"));
        assert!(first.starts_with("copy:") && first.len() > 20, "{first}");
        assert_eq!(storage_key(&a.path().join(".mce-sessions")), first);
        assert_ne!(storage_key(&b.path().join(".mce-sessions")), first);
    }
}
