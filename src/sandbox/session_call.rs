//! One call in a session (the conversation with `session.py` over a kept attach): send the
//! program framed by length, collect both streams until the call's end marker; at the deadline
//! or on cancellation send an interrupt (KeyboardInterrupt in the program) and give it a short
//! grace, after which the container is killed and the session ends. A stream that ends means
//! the interpreter died (OOM, `os._exit`, a crash): the cause comes from the engine's state.
//! Also the session records in the storage folder: counters, why a session ended, and the lock
//! file that serialises calls across servers.

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::conversation::frame;
use super::engine::{Attached, ContainerEngine, ContainerState, OutputChunk};
use super::output::MarkedStream;
use super::runner::{Job, RunOutcome};
use super::sessions::SessionInfo;
use crate::error::SandboxError;

/// How long a program may take to stop after its interrupt before its container is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);
const INTERRUPT: &[u8] = b"{\"op\":\"interrupt\"}\n";
/// Why a session whose container disappeared ended.
pub const GONE: &str = "its container is gone (idle for longer than SESSION_IDLE_TIMEOUT, past \
                        SESSION_MAX_LIFETIME, or removed)";

/// How a call ended.
#[derive(Debug)]
pub enum CallEnd {
    /// The program ended (by itself or by its interrupt); the session lives on.
    Done(RunOutcome),
    /// The session ended during the call, for the reason given.
    Ended(RunOutcome, String),
}

/// Why the call was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    Deadline,
    Cancel,
}

/// Runs `job` in the session whose container is `container`, through `attached`.
pub async fn call(
    engine: &dyn ContainerEngine,
    container: &str,
    attached: &mut Attached,
    job: &Job<'_>,
    cancel: &CancellationToken,
) -> Result<CallEnd, SandboxError> {
    let started = Instant::now();
    let marker = format!("mce-exit-{}", uuid::Uuid::new_v4().simple());
    let limit = job.limits.output_bytes;
    let (mut out, mut err) = (
        MarkedStream::new(limit, &marker),
        MarkedStream::new(limit, &marker),
    );
    let sent = attached.input.write_all(&request(job, &marker)).await;
    let sent = match sent {
        Ok(()) => attached.input.flush().await,
        Err(e) => Err(e),
    };
    let mut deadline = tokio::time::Instant::now() + job.limits.timeout();
    let mut interrupt = None;
    let mut broken = sent.is_err();
    let mut partials = (String::new(), String::new());
    while !broken && (out.status().is_none() || err.status().is_none()) {
        tokio::select! {
            chunk = attached.output.next() => match chunk {
                Some(Ok(OutputChunk::Stdout(b))) => {
                    out.push(&b);
                    watch(job, 0, &mut partials.0, &b, out.status().is_none());
                }
                Some(Ok(OutputChunk::Stderr(b))) => {
                    err.push(&b);
                    watch(job, 1, &mut partials.1, &b, err.status().is_none());
                }
                Some(Err(e)) if e.is_unavailable() => return Err(e.into()),
                Some(Err(_)) | None => broken = true,
            },
            _ = tokio::time::sleep_until(deadline) => {
                if interrupt.is_some() {
                    break;
                }
                interrupt = Some(Interrupt::Deadline);
                deadline = tokio::time::Instant::now() + INTERRUPT_GRACE;
                let _ = attached.input.write_all(INTERRUPT).await;
            }
            _ = cancel.cancelled(), if interrupt.is_none() => {
                interrupt = Some(Interrupt::Cancel);
                deadline = tokio::time::Instant::now() + INTERRUPT_GRACE;
                let _ = attached.input.write_all(INTERRUPT).await;
            }
        }
    }
    out.finish();
    err.finish();
    let status = err.status().filter(|_| out.status().is_some());
    let mut outcome = outcome(out, err, status, interrupt, started);
    if status.is_some() {
        return Ok(CallEnd::Done(outcome));
    }
    let reason = if broken {
        died(engine, container, &mut outcome).await?
    } else {
        engine.kill(container).await?;
        format!(
            "the program did not stop within {} s of its interrupt (it ignores SIGINT or is stuck \
             in C code), so the session's container was killed",
            INTERRUPT_GRACE.as_secs()
        )
    };
    Ok(CallEnd::Ended(outcome, reason))
}

/// Shows a chunk to the job's watchers, unless it carries the end marker (`show` false).
fn watch(job: &Job<'_>, stream: usize, partial: &mut String, chunk: &[u8], show: bool) {
    if let Some(live) = job.live.filter(|_| show) {
        live.note(stream, partial, chunk);
    }
}

/// The request line and the source.
fn request(job: &Job<'_>, marker: &str) -> Vec<u8> {
    let header = serde_json::json!({
        "op": "run",
        "path": job.path,
        "marker": marker,
        "length": job.code.len(),
        "plots": true,
    });
    frame(&header, job.code)
}

fn outcome(
    out: MarkedStream,
    err: MarkedStream,
    status: Option<i64>,
    interrupt: Option<Interrupt>,
    started: Instant,
) -> RunOutcome {
    let (out, err) = (out.output, err.output);
    RunOutcome {
        exit_code: status,
        truncated: out.truncated() || err.truncated(),
        stdout: out.render(),
        stderr: err.render(),
        timed_out: interrupt == Some(Interrupt::Deadline),
        oom_killed: false,
        cancelled: interrupt == Some(Interrupt::Cancel),
        duration: started.elapsed(),
    }
}

/// The interpreter's stream ended: why, from the engine's state (waiting briefly for the
/// container to stop).
async fn died(
    engine: &dyn ContainerEngine,
    container: &str,
    outcome: &mut RunOutcome,
) -> Result<String, SandboxError> {
    let _ = tokio::time::timeout(INTERRUPT_GRACE, engine.wait(container)).await;
    let state = match engine.inspect(container).await {
        Ok(state) => state,
        Err(e) if e.is_unavailable() => return Err(e.into()),
        Err(_) => return Ok(GONE.to_string()),
    };
    outcome.exit_code = state.exit_code;
    outcome.oom_killed = state.oom_killed;
    Ok(why_stopped(&state))
}

/// Why a session's interpreter stopped, from its container's state.
pub fn why_stopped(state: &ContainerState) -> String {
    if state.oom_killed {
        "the interpreter ran out of memory and was killed (MEMORY_LIMIT)".to_string()
    } else {
        match state.exit_code {
            Some(code) => format!(
                "the interpreter exited with code {code} (os._exit, a crash, its idle timeout \
                 SESSION_IDLE_TIMEOUT, or its lifetime SESSION_MAX_LIFETIME ran out)"
            ),
            None => "the interpreter's container stopped".to_string(),
        }
    }
}

/// A session's record in the storage folder.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    runs: u64,
    last_used: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended: Option<String>,
}

fn record_path(dir: &Path, id: &str) -> std::path::PathBuf {
    dir.join(format!("{id}.json"))
}

fn read_record(dir: &Path, id: &str) -> Option<Record> {
    let text = std::fs::read_to_string(record_path(dir, id)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_record(dir: &Path, id: &str, record: &Record) {
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        let tmp = dir.join(format!(".{id}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(record).unwrap_or_default())?;
        std::fs::rename(&tmp, record_path(dir, id))
    });
    if let Err(e) = written {
        tracing::warn!(session = %id, error = %e, "could not write the session record");
    }
}

/// Saves a live session's counters.
pub fn save_record(dir: &Path, info: &SessionInfo) {
    let record = Record {
        runs: info.runs,
        last_used: info.last_used,
        ended: None,
    };
    write_record(dir, &info.id, &record);
}

/// `(runs, last_used)` of an adopted session (`created` when there is no record).
pub fn load_record(dir: &Path, id: &str, created: u64) -> (u64, u64) {
    read_record(dir, id).map_or((0, created), |r| (r.runs, r.last_used))
}

/// Records why a session ended (a restarted server can still say so).
pub fn save_ended(dir: &Path, id: &str, reason: &str) {
    let mut record = read_record(dir, id).unwrap_or_default();
    record.ended = Some(reason.to_string());
    write_record(dir, id, &record);
}

/// Why session `id` ended, if a server recorded it.
pub fn ended_reason(dir: &Path, id: &str) -> Option<String> {
    read_record(dir, id)?.ended
}

/// An exclusive lock on one session's lock file, held for one call.
#[derive(Debug)]
pub struct FileLock {
    _file: std::fs::File,
    /// Another server instance made the previous call.
    pub other_user: bool,
}

/// Locks session `id` against calls from other servers, waiting at most `wait` for theirs to
/// finish. `Ok(None)` when the lock file cannot be used at all (then only this server's own
/// calls are serialised); an error when another holder keeps it longer than `wait`.
pub async fn lock_file(
    dir: &Path,
    id: &str,
    instance: &str,
    wait: Duration,
) -> Result<Option<FileLock>, SandboxError> {
    let path = dir.join(format!("{id}.lock"));
    let instance = instance.to_string();
    let locked = tokio::task::spawn_blocking(move || lock_blocking(&path, &instance, wait)).await;
    match locked {
        Ok(Ok(Some(lock))) => Ok(Some(lock)),
        Ok(Ok(None)) => Err(SandboxError::Helper {
            what: "use the session",
            detail: format!(
                "another server has been running a call in it for more than {} s; try again",
                wait.as_secs()
            ),
        }),
        Ok(Err(e)) => {
            tracing::warn!(session = %id, error = %e, "could not lock the session file");
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

/// `Ok(None)` when the lock stayed taken for `wait`.
fn lock_blocking(path: &Path, instance: &str, wait: Duration) -> std::io::Result<Option<FileLock>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let until = Instant::now() + wait;
    // Never block for good: code in a run can see the storage folder and could hold the lock.
    // SAFETY: flock on a file descriptor we own; released when the file is closed.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock {
            return Err(e);
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut previous = String::new();
    file.read_to_string(&mut previous)?;
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(instance.as_bytes())?;
    Ok(Some(FileLock {
        _file: file,
        other_user: !previous.is_empty() && previous != instance,
    }))
}
