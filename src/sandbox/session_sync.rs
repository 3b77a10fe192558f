//! Sessions in copy mode (`STORAGE_MODE=copy`: a daemon that cannot mount the storage folder).
//! A session's container holds its own copy of the folder in an anonymous volume at
//! [`super::copy::COPY_MOUNT`], kept in step with the server's at each call: before the call,
//! the files new or changed in the folder since the container last saw it go in (so a file
//! written with `write_file` between calls is there); after it, what the session wrote comes
//! back and what it deleted is deleted, as after a run ([`super::copy::unpack`]). What a
//! session writes between calls (a thread it left running) comes back with the next call.
//! What the server remembers of the last exchange ([`Synced`]) is per server: a server that
//! adopts a session sends the whole folder before its first call.

use std::sync::Mutex;

use super::copy::{self, CopySettings, Sent};
use super::engine::ContainerEngine;
use super::lifecycle::lock;
use super::runner::{self, RunOutcome};
use super::session_call::CallEnd;
use crate::error::SandboxError;

/// The storage folder as the session's container and the server last both had it (`None`:
/// unknown, e.g. adopted: everything goes in at the next call).
#[derive(Debug, Default)]
pub struct Synced(Mutex<Option<Sent>>);

impl Synced {
    pub fn new(sent: Option<Sent>) -> Self {
        Synced(Mutex::new(sent))
    }
}

/// Before a call: the files the container lacks go in. Returns what it holds now.
pub async fn before_call(
    engine: &dyn ContainerEngine,
    container: &str,
    copy: &CopySettings,
    owner: (u32, u32),
    synced: &Synced,
) -> Result<Sent, SandboxError> {
    let since = lock(&synced.0).take();
    runner::copy_in_since(engine, container, copy, owner, since).await
}

/// After a call (whatever its end, while the container exists): the session's files come
/// back into the folder, and the folder as it is then is remembered for the next call.
pub async fn after_call(
    engine: &dyn ContainerEngine,
    container: &str,
    copy: &CopySettings,
    sent: &Sent,
    outcome: RunOutcome,
    synced: &Synced,
) -> Result<RunOutcome, SandboxError> {
    let outcome = runner::copy_out(engine, container, copy, Some(sent), outcome).await?;
    let settings = copy.clone();
    let now = tokio::task::spawn_blocking(move || copy::scan(&settings))
        .await
        .map_err(|e| SandboxError::Copy(e.to_string()))?;
    *lock(&synced.0) = now.ok();
    Ok(outcome)
}

/// [`after_call`] for a call's end. A session that ended in the call (out of memory, exit)
/// still gives its files back where its container can; where not, the end stands as it is.
pub async fn after_end(
    engine: &dyn ContainerEngine,
    container: &str,
    copy: &CopySettings,
    sent: &Sent,
    end: CallEnd,
    synced: &Synced,
) -> Result<CallEnd, SandboxError> {
    match end {
        CallEnd::Done(outcome) => {
            let outcome = after_call(engine, container, copy, sent, outcome, synced).await?;
            Ok(CallEnd::Done(outcome))
        }
        CallEnd::Ended(outcome, reason) => {
            let back = after_call(engine, container, copy, sent, outcome.clone(), synced).await;
            let outcome = back.unwrap_or_else(|e| {
                tracing::warn!("the ended session's files could not be copied back: {e}");
                outcome
            });
            Ok(CallEnd::Ended(outcome, reason))
        }
    }
}
