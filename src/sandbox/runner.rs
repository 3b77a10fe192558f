//! The conversation with one container's runner (`runner.py`): hand it the program through
//! stdin (a JSON header line, then the source), collect stdout and stderr capped per stream
//! until the runner's end marker, the deadline or cancellation, and settle the outcome — from
//! the marker when the program ended by itself, from the engine's state (exit code, OOM) when it
//! was killed or died without one. Also the two ways to get a container to talk to: a fresh one
//! ([`run_cold`]) or a pre-started one from the pool ([`run_warm`]).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::copy::{self, COPY_MOUNT, COPY_WORKDIR, CopySettings};
use super::engine::{
    Attached, ContainerEngine, ContainerSpec, Created, InputSink, OutputChunk, OutputStream,
};
use super::labels::used_name;
use super::lifecycle::{Lifecycle, image_missing};
use super::output::{Live, MarkedStream};
use super::policy::Purpose;
use crate::environment::EnvSpec;
use crate::error::SandboxError;
use crate::limits::Limits;

/// How long to wait for a killed container to be reported as stopped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// One program to run in one container.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub purpose: Purpose,
    pub env: &'a EnvSpec,
    /// The program's path as it sees it: `__file__`, `sys.argv[0]`, tracebacks.
    pub path: &'a str,
    pub code: &'a str,
    /// `sys.argv[1:]`: how data reaches helper programs (never spliced into code).
    pub argv: &'a [String],
    pub limits: &'a Limits,
    /// Updated with what the program prints (progress reports, tails of long runs).
    pub live: Option<&'a Live>,
    /// STORAGE_MODE=copy: the storage folder goes in before the run and comes back after it.
    pub copy: Option<&'a CopySettings>,
}

impl<'a> Job<'a> {
    /// One of our helper scripts (scripts/*.py), its input passed as `argv`.
    pub fn helper(
        purpose: Purpose,
        env: &'a EnvSpec,
        path: &'a str,
        code: &'a str,
        argv: &'a [String],
        limits: &'a Limits,
    ) -> Self {
        Job {
            purpose,
            env,
            path,
            code,
            argv,
            limits,
            live: None,
            copy: None,
        }
    }

    /// A user's program.
    pub fn run(env: &'a EnvSpec, path: &'a str, code: &'a str, limits: &'a Limits) -> Self {
        Self::helper(Purpose::Run, env, path, code, &[], limits)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOutcome {
    /// `None` when the container was killed before the engine recorded a code.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub cancelled: bool,
    pub duration: Duration,
}

impl RunOutcome {
    /// A call cancelled while it waited for a slot: nothing ran.
    pub fn cancelled_before_start() -> Self {
        RunOutcome {
            cancelled: true,
            ..Default::default()
        }
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.oom_killed && !self.cancelled
    }

    /// How a helper program failed: exit code, flags and the end of its stderr.
    pub fn failure_detail(&self) -> String {
        let tail: String = self
            .stderr
            .chars()
            .rev()
            .take(600)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "exit code {}{}{}: {}",
            self.exit_code.map_or("none".to_string(), |c| c.to_string()),
            if self.timed_out { ", timed out" } else { "" },
            if self.oom_killed {
                ", out of memory"
            } else {
                ""
            },
            tail.trim()
        )
    }
}

/// Runs `job` in a new container made from `spec` and named `name` (random when `None`);
/// `Ok(None)` when that name is taken. The container is removed on every path, in the
/// background once the outcome is known, at once when the calling future is dropped.
pub async fn run_cold(
    life: &Lifecycle,
    spec: &ContainerSpec,
    job: &Job<'_>,
    name: Option<&str>,
    cancel: &CancellationToken,
) -> Result<Option<RunOutcome>, SandboxError> {
    // Wait for a slot (MAX_CONCURRENT_RUNS); a cancelled call stops waiting.
    let Some(_slot) = life.slot(cancel).await? else {
        return Ok(Some(RunOutcome::cancelled_before_start()));
    };
    let t = Instant::now();
    let id = match life.create(spec, name).await? {
        Created::Id(id) => id,
        Created::NameTaken => return Ok(None),
        Created::ImageMissing => return Err(image_missing(&spec.image, job.env)),
    };
    tracing::debug!(target: "mcp_code_executor::sandbox", phase = "create",
        ms = t.elapsed().as_millis() as u64, purpose = job.purpose.as_str());
    let mut guard = life.guard(&id);
    let result = if life.is_closed() {
        Err(SandboxError::ShuttingDown)
    } else if let Some(copy) = job.copy {
        copy_in(life.engine(), &id, copy, spec).await?;
        let outcome = drive(life.engine(), &id, job, cancel).await;
        match outcome {
            Ok(o) => copy_out(life.engine(), &id, copy, o).await,
            Err(e) => Err(e),
        }
    } else {
        drive(life.engine(), &id, job, cancel).await
    };
    guard.disarm();
    life.remove_later(id);
    result.map(Some)
}

/// Copies the storage folder into a created container's copy volume, owned by its user.
async fn copy_in(
    engine: &dyn ContainerEngine,
    id: &str,
    copy: &CopySettings,
    spec: &ContainerSpec,
) -> Result<(), SandboxError> {
    let owner = (spec.user.as_deref())
        .and_then(|u| u.split_once(':'))
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .unwrap_or((0, 0));
    let settings = copy.clone();
    let tar = tokio::task::spawn_blocking(move || copy::pack(&settings, owner))
        .await
        .map_err(|e| SandboxError::Copy(e.to_string()))??;
    engine.upload_archive(id, COPY_MOUNT, tar.into()).await?;
    Ok(())
}

/// Copies the files the run created or changed back into the storage folder; what could not
/// be copied is said at the end of stderr.
pub async fn copy_out(
    engine: &dyn ContainerEngine,
    id: &str,
    copy: &CopySettings,
    mut outcome: RunOutcome,
) -> Result<RunOutcome, SandboxError> {
    let tar = engine.download_archive(id, COPY_WORKDIR).await?;
    let settings = copy.clone();
    let skipped = tokio::task::spawn_blocking(move || copy::unpack(&settings, &tar))
        .await
        .map_err(|e| SandboxError::Copy(e.to_string()))??;
    if !skipped.is_empty() {
        if !outcome.stderr.is_empty() && !outcome.stderr.ends_with('\n') {
            outcome.stderr.push('\n');
        }
        outcome.stderr.push_str(&format!(
            "[mcp-code-executor: not copied back to the storage folder: {}]\n",
            skipped.join(", ")
        ));
    }
    Ok(outcome)
}

/// A pre-started container, ready for one program (made by the pool).
pub struct Warm {
    pub id: String,
    pub attached: Attached,
    pub env: EnvSpec,
    pub born: Instant,
}

impl Warm {
    pub fn new(id: String, attached: Attached, env: EnvSpec) -> Self {
        Warm {
            id,
            attached,
            env,
            born: Instant::now(),
        }
    }
}

/// Runs `job` in a pre-started container, which is removed afterwards in the background.
pub async fn run_warm(
    life: &Lifecycle,
    warm: Warm,
    job: &Job<'_>,
    cancel: &CancellationToken,
) -> Result<RunOutcome, SandboxError> {
    let Some(_slot) = life.slot(cancel).await? else {
        life.remove_later(warm.id);
        return Ok(RunOutcome::cancelled_before_start());
    };
    let Warm { id, attached, .. } = warm;
    let mut guard = life.guard(&id);
    // Observers (and tests) tell a used pool container from an idle one by its name.
    let engine = life.engine_handle();
    let (rid, new_name) = (id.clone(), used_name(&id));
    tokio::spawn(async move {
        let _ = engine.rename(&rid, &new_name).await;
    });
    let result = converse(life.engine(), &id, attached, job, cancel).await;
    guard.disarm();
    life.remove_later(id);
    result
}

/// Attaches (before start, or early output is lost), starts, and converses.
async fn drive(
    engine: &dyn ContainerEngine,
    id: &str,
    job: &Job<'_>,
    cancel: &CancellationToken,
) -> Result<RunOutcome, SandboxError> {
    let t = Instant::now();
    let attached = engine.attach(id).await?;
    tracing::debug!(target: "mcp_code_executor::sandbox", phase = "attach", ms = t.elapsed().as_millis() as u64);
    let t = Instant::now();
    engine.start(id).await?;
    tracing::debug!(target: "mcp_code_executor::sandbox", phase = "start", ms = t.elapsed().as_millis() as u64);
    let t = Instant::now();
    let outcome = converse(engine, id, attached, job, cancel).await;
    tracing::debug!(target: "mcp_code_executor::sandbox", phase = "program", ms = t.elapsed().as_millis() as u64);
    outcome
}

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
