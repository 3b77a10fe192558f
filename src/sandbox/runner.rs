//! One program in one container: the job and what it did, and the two ways to get a container
//! to talk to — a fresh one ([`run_cold`], which in copy mode also copies the storage folder in
//! and the run's files out) or a pre-started one from the pool ([`run_warm`]). The talking
//! itself is [`super::conversation`]'s.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::conversation::converse;
use super::copy::{self, COPY_MOUNT, COPY_WORKDIR, CopySettings};
use super::engine::{Attached, ContainerEngine, ContainerSpec, Created};
use super::labels::used_name;
use super::lifecycle::{Lifecycle, image_missing};
use super::output::Live;
use super::policy::Purpose;
use crate::environment::EnvSpec;
use crate::error::SandboxError;
use crate::limits::Limits;

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
        let sent = copy_in(life.engine(), &id, copy, spec).await?;
        let outcome = drive(life.engine(), &id, job, cancel).await;
        match outcome {
            Ok(o) => copy_out(life.engine(), &id, copy, Some(&sent), o).await,
            Err(e) => Err(e),
        }
    } else {
        drive(life.engine(), &id, job, cancel).await
    };
    guard.disarm();
    life.remove_later(id);
    result.map(Some)
}

/// Copies the storage folder into a created container's copy volume, owned by its user; what
/// the container holds then.
async fn copy_in(
    engine: &dyn ContainerEngine,
    id: &str,
    copy: &CopySettings,
    spec: &ContainerSpec,
) -> Result<copy::Held, SandboxError> {
    let owner = (spec.user.as_deref())
        .and_then(|u| u.split_once(':'))
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .unwrap_or((0, 0));
    copy_in_since(engine, id, copy, owner, None).await
}

/// Copies the files of the storage folder that container `id` does not hold as they are (all
/// of them when `held` is unknown) into its copy volume, owned by `owner`; what it holds then
/// (see [`copy::pack_since`]). The container may be running.
pub async fn copy_in_since(
    engine: &dyn ContainerEngine,
    id: &str,
    copy: &CopySettings,
    owner: (u32, u32),
    held: Option<copy::Held>,
) -> Result<copy::Held, SandboxError> {
    let settings = copy.clone();
    let packed =
        tokio::task::spawn_blocking(move || copy::pack_since(&settings, owner, held.as_ref()));
    let (tar, held) = packed
        .await
        .map_err(|e| SandboxError::Copy(e.to_string()))??;
    engine.upload_archive(id, COPY_MOUNT, tar.into()).await?;
    Ok(held)
}

/// Copies the files the run created or changed back into the storage folder, and deletes
/// those it deleted (a run adopted from another server has no `held`: its deletions stay
/// undone); what could not be copied is said at the end of stderr.
pub async fn copy_out(
    engine: &dyn ContainerEngine,
    id: &str,
    copy: &CopySettings,
    held: Option<&copy::Held>,
    outcome: RunOutcome,
) -> Result<RunOutcome, SandboxError> {
    let (skipped, _) = copy_back(engine, id, copy, held).await?;
    Ok(note_skipped(outcome, &skipped))
}

/// Brings container `id`'s copy of the folder back (see [`copy::unpack`]): what could not be
/// copied back, and what the container holds.
pub async fn copy_back(
    engine: &dyn ContainerEngine,
    id: &str,
    copy: &CopySettings,
    held: Option<&copy::Held>,
) -> Result<(Vec<String>, copy::Held), SandboxError> {
    let tar = engine.download_archive(id, COPY_WORKDIR).await?;
    let settings = copy.clone();
    let held = held.cloned();
    tokio::task::spawn_blocking(move || copy::unpack(&settings, &tar, held.as_ref()))
        .await
        .map_err(|e| SandboxError::Copy(e.to_string()))?
}

/// `outcome` with what was not copied back said at the end of its stderr.
pub fn note_skipped(mut outcome: RunOutcome, skipped: &[String]) -> RunOutcome {
    if !skipped.is_empty() {
        if !outcome.stderr.is_empty() && !outcome.stderr.ends_with('\n') {
            outcome.stderr.push('\n');
        }
        outcome.stderr.push_str(&format!(
            "[mcp-code-executor: not copied back to the storage folder: {}]\n",
            skipped.join(", ")
        ));
    }
    outcome
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
