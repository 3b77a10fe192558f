//! The conversation with one started container's runner (`runner.py`): hand it the program
//! through stdin (a JSON header line, then the source), collect stdout and stderr capped per
//! stream until the runner's end marker, the deadline or cancellation, and settle the outcome —
//! from the marker when the program ended by itself, from the engine's state (exit code, OOM)
//! when it was killed or died without one. [`follow`] does the same from the engine's logs for
//! a run another server started.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::engine::{Attached, ContainerEngine, InputSink, OutputChunk, OutputStream};
use super::output::{Live, MarkedStream};
use super::policy::Purpose;
use super::runner::{Job, RunOutcome};
use crate::error::SandboxError;

/// How long to wait for a killed container to be reported as stopped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Feeds the program to a started container's runner and settles the outcome.
pub async fn converse(
    engine: &dyn ContainerEngine,
    id: &str,
    attached: Attached,
    job: &Job<'_>,
    cancel: &CancellationToken,
) -> Result<RunOutcome, SandboxError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + job.limits.timeout();
    let marker = format!("mce-exit-{}", uuid::Uuid::new_v4().simple());
    if let Some(live) = job.live {
        live.set_container(id, &marker);
    }
    let Attached { output, input } = attached;
    let feed = Some((input, payload(job, &marker)));
    let watch = Watch {
        marker: &marker,
        limit: job.limits.output_bytes,
        live: job.live,
        deadline,
        cancel,
    };
    let c = collect(output, feed, &watch).await;
    settle(engine, id, c, &watch, started).await
}

/// Follows a run another server started in container `id` (its runner was given `marker`) to
/// its end from the engine's record of its output, as [`converse`] would have: the same
/// capture, deadline, cancellation and outcome. `started` is when the run started.
pub async fn follow(
    engine: &dyn ContainerEngine,
    id: &str,
    watch: &Watch<'_>,
    started: Instant,
) -> Result<RunOutcome, SandboxError> {
    let output = engine.logs(id).await?;
    let c = collect(output, None, watch).await;
    settle(engine, id, c, watch, started).await
}

/// What a run is watched for: its runner's end marker, the output cap per stream, the watchers
/// of its output, its deadline and its cancellation.
pub struct Watch<'a> {
    pub marker: &'a str,
    pub limit: usize,
    pub live: Option<&'a Live>,
    pub deadline: tokio::time::Instant,
    pub cancel: &'a CancellationToken,
}

/// The outcome of what was collected: from the runner's status when it ended by itself, else
/// from the engine's state once the container stopped (killed at the deadline or on
/// cancellation).
async fn settle(
    engine: &dyn ContainerEngine,
    id: &str,
    mut c: Collected,
    watch: &Watch<'_>,
    started: Instant,
) -> Result<RunOutcome, SandboxError> {
    c.stdout.finish();
    c.stderr.finish();
    if let Some(status) = c.stderr.status().filter(|_| !c.timed_out && !c.cancelled) {
        // The program ended by itself and said how: no need to wait for the container.
        return Ok(c.outcome(Some(status), false, started.elapsed()));
    }
    if c.timed_out || c.cancelled {
        kill_and_wait(engine, id).await?;
    } else {
        let remaining = watch
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let waited = tokio::select! {
            r = tokio::time::timeout(remaining, engine.wait(id)) => r.ok(),
            _ = watch.cancel.cancelled() => { c.cancelled = true; None }
        };
        match waited {
            Some(r) => r?,
            None => {
                c.timed_out = !c.cancelled;
                kill_and_wait(engine, id).await?;
            }
        }
    }
    let duration = started.elapsed();
    let state = engine.inspect(id).await?;
    Ok(c.outcome(state.exit_code, state.oom_killed, duration))
}

async fn kill_and_wait(engine: &dyn ContainerEngine, id: &str) -> Result<(), SandboxError> {
    engine.kill(id).await?;
    match tokio::time::timeout(KILL_WAIT, engine.wait(id)).await {
        Ok(r) => r?,
        Err(_) => tracing::warn!(container = %id, "killed container did not stop in time"),
    }
    Ok(())
}

/// The runner's input: a header line (path, argv, end marker, whether to capture figures),
/// then the source.
fn payload(job: &Job<'_>, marker: &str) -> Vec<u8> {
    let header = serde_json::json!({
        "path": job.path,
        "argv": job.argv,
        "marker": marker,
        "plots": job.purpose == Purpose::Run,
    });
    frame(&header, job.code)
}

/// A JSON header line followed by `code`: how programs reach the runners.
pub fn frame(header: &serde_json::Value, code: &str) -> Vec<u8> {
    let header = header.to_string();
    let mut payload = Vec::with_capacity(header.len() + 1 + code.len());
    payload.extend_from_slice(header.as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(code.as_bytes());
    payload
}

/// What came out of a container before its end, the deadline or cancellation.
struct Collected {
    stdout: MarkedStream,
    stderr: MarkedStream,
    timed_out: bool,
    cancelled: bool,
}

impl Collected {
    fn outcome(self, exit_code: Option<i64>, oom_killed: bool, duration: Duration) -> RunOutcome {
        let (out, err) = (self.stdout.output, self.stderr.output);
        RunOutcome {
            exit_code,
            truncated: out.truncated() || err.truncated(),
            stdout: out.render(),
            stderr: err.render(),
            timed_out: self.timed_out,
            oom_killed,
            cancelled: self.cancelled,
            duration,
        }
    }
}

/// Writes the payload of `feed` to its stdin (then closes it) while reading both streams, until
/// both carry the end marker, the stream ends, the deadline passes or the call is cancelled.
/// Both halves of an attach are dropped on return: they must be gone before kill/wait, or
/// those can hang.
async fn collect(
    mut output: OutputStream,
    feed: Option<(InputSink, Vec<u8>)>,
    watch: &Watch<'_>,
) -> Collected {
    let feed = async move {
        let (mut input, payload) = feed?;
        // A program that exits early closes its stdin; that is not an error of the run.
        let _ = input.write_all(&payload).await;
        let _ = input.shutdown().await;
        Some(input)
    };
    let (limit, marker) = (watch.limit, watch.marker);
    let mut c = Collected {
        stdout: MarkedStream::new(limit, marker),
        stderr: MarkedStream::new(limit, marker),
        timed_out: false,
        cancelled: false,
    };
    let mut feed = std::pin::pin!(feed);
    let mut input_done = None;
    let (mut out_line, mut err_line) = (String::new(), String::new());
    loop {
        tokio::select! {
            done = &mut feed, if input_done.is_none() => { input_done = Some(done); }
            chunk = output.next() => {
                let (stream, which, partial, bytes) = match chunk {
                    Some(Ok(OutputChunk::Stdout(b))) => (&mut c.stdout, 0, &mut out_line, b),
                    Some(Ok(OutputChunk::Stderr(b))) => (&mut c.stderr, 1, &mut err_line, b),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "output stream ended with an error");
                        break;
                    }
                    None => break,
                };
                stream.push(&bytes);
                // The chunk carrying the end marker is not progress (the marker line would show).
                if let Some(live) = watch.live.filter(|_| stream.status().is_none()) {
                    live.note(which, partial, &bytes);
                }
                if c.stdout.status().is_some() && c.stderr.status().is_some() { break; }
            }
            _ = tokio::time::sleep_until(watch.deadline) => { c.timed_out = true; break; }
            _ = watch.cancel.cancelled() => { c.cancelled = true; break; }
        }
    }
    drop(output);
    drop(input_done);
    c
}
