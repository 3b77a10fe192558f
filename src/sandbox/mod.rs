//! The sandbox: runs one program in a fresh, locked-down container and reports what happened.
//!
//! - [`policy`] decides the container settings (pure),
//! - [`docker`] is the only code that talks to the Docker API,
//! - [`output`] caps what a program prints,
//! - [`envs`] keeps environments in named volumes and installs/checks packages,
//! - this module drives one container: create → attach → start → stream the code in through
//!   stdin → collect output until exit, deadline or cancellation → read exit code and OOM state
//!   from Docker → remove the container. A container is removed on every path, including when
//!   the calling future is dropped.

pub mod docker;
pub mod envs;
pub mod output;
pub mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Images, Limits};
use crate::environment::EnvSpec;
use crate::error::SandboxError;
use docker::{Created, DockerApi};
use output::CappedOutput;
use policy::{InstallSource, LABEL_DEADLINE, LABEL_INSTANCE, LABEL_MANAGED, Purpose, RunPolicy};

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
    /// Updated with the last line the program printed on stderr (for progress reports).
    pub last_line: Option<&'a Mutex<String>>,
}

impl<'a> Job<'a> {
    /// A user's program.
    pub fn run(env: &'a EnvSpec, path: &'a str, code: &'a str, limits: &'a Limits) -> Self {
        Job {
            purpose: Purpose::Run,
            env,
            path,
            code,
            argv: &[],
            limits,
            last_line: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// `None` when the container was killed before Docker recorded a code.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub cancelled: bool,
    pub duration: Duration,
}

impl RunOutcome {
    /// A call cancelled while it waited for a slot: nothing ran.
    fn cancelled_before_start() -> Self {
        RunOutcome {
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            timed_out: false,
            oom_killed: false,
            cancelled: true,
            duration: Duration::ZERO,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.oom_killed && !self.cancelled
    }
}

/// Static facts every run container shares.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub images: Images,
    pub run_as: (u32, u32),
    pub host_workdir: String,
    pub workdir: String,
    pub install: InstallSource,
    /// Limits for seeding and creating environments (the install limits).
    pub env_limits: Limits,
    /// Containers running at once.
    pub max_concurrent: usize,
}

/// Runs programs in containers; owns the Docker connection and this server's instance id.
#[derive(Debug)]
pub struct Sandbox {
    docker: DockerApi,
    instance: String,
    settings: SandboxSettings,
    /// Set on shutdown: no new containers.
    closed: AtomicBool,
    /// Image name → id, resolved once.
    image_ids: Mutex<HashMap<String, String>>,
    /// Environment volumes known to exist (created with labels).
    known_volumes: Mutex<HashSet<String>>,
    /// Serialises preparing and creating environments.
    env_lock: tokio::sync::Mutex<()>,
    /// Serialises seeding environment volumes within this server.
    seed_lock: tokio::sync::Mutex<()>,
    /// One permit per container allowed to run at once; calls beyond wait.
    slots: tokio::sync::Semaphore,
    /// Containers whose removal failed (Docker unreachable); retried on the next contact.
    pending_removals: Mutex<Vec<String>>,
}

/// Removes its container when dropped without [`ContainerGuard::disarm`] (a cancelled call).
struct ContainerGuard {
    id: Option<String>,
}

impl ContainerGuard {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The API client is cheap to re-create; a fresh one outlives the dropped call.
        handle.spawn(async move {
            let api = DockerApi::new();
            if let Err(e) = api.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "could not remove a container");
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps the last non-empty line of `chunk` (progress reports show it).
fn note_last_line(last: &Mutex<String>, chunk: &[u8]) {
    let text = String::from_utf8_lossy(chunk);
    if let Some(line) = text.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
        *lock(last) = line.chars().take(200).collect();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Self {
        Sandbox {
            docker: DockerApi::new(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            slots: tokio::sync::Semaphore::new(settings.max_concurrent.max(1)),
            settings,
            closed: AtomicBool::new(false),
            image_ids: Mutex::new(HashMap::new()),
            known_volumes: Mutex::new(HashSet::new()),
            env_lock: tokio::sync::Mutex::new(()),
            seed_lock: tokio::sync::Mutex::new(()),
            pending_removals: Mutex::new(Vec::new()),
        }
    }

    pub fn settings(&self) -> &SandboxSettings {
        &self.settings
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn docker(&self) -> &DockerApi {
        &self.docker
    }

    /// Runs one job in a fresh container of its environment's image, with the environment's
    /// volume mounted (created and seeded from the image on first use).
    pub async fn execute(
        &self,
        job: Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let volume = self.env_volume(job.env).await?;
        self.execute_in(&volume, job, cancel).await
    }

    /// Runs a job with `volume` as its environment volume.
    async fn execute_in(
        &self,
        volume: &str,
        job: Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        match self.execute_named(volume, job, None, cancel).await? {
            Some(outcome) => Ok(outcome),
            None => Err(SandboxError::Docker {
                op: "create a container",
                container: None,
                detail: "the generated name was taken".to_string(),
            }),
        }
    }

    /// Runs a job in a container named `name`; `Ok(None)` when that name is taken.
    async fn execute_named(
        &self,
        volume: &str,
        job: Job<'_>,
        name: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Option<RunOutcome>, SandboxError> {
        let image = self.settings.images.for_type(job.env.env_type);
        let policy = RunPolicy {
            purpose: job.purpose,
            image,
            env: job.env,
            env_volume: volume,
            limits: job.limits,
            run_as: self.settings.run_as,
            host_workdir: &self.settings.host_workdir,
            workdir: &self.settings.workdir,
            install: Some(&self.settings.install),
            instance: &self.instance,
            now_unix: unix_now(),
        };
        let body = policy::container_body(&policy);
        // Wait for a slot (MAX_CONCURRENT_RUNS); a cancelled call stops waiting.
        let _slot = tokio::select! {
            permit = self.slots.acquire() => permit.map_err(|_| SandboxError::ShuttingDown)?,
            _ = cancel.cancelled() => return Ok(Some(RunOutcome::cancelled_before_start())),
        };
        if self.closed.load(Ordering::SeqCst) {
            return Err(SandboxError::ShuttingDown);
        }
        let id = match self.docker.create(body, name).await? {
            Created::Id(id) => {
                // Docker answers again: clear what it could not do before.
                if !lock(&self.pending_removals).is_empty() {
                    self.retry_removals().await;
                }
                id
            }
            Created::NameTaken => return Ok(None),
            Created::ImageMissing => {
                self.forget_image(image);
                return Err(self.image_missing(job.env));
            }
        };
        let mut guard = ContainerGuard {
            id: Some(id.clone()),
        };
        let result = if self.closed.load(Ordering::SeqCst) {
            Err(SandboxError::ShuttingDown)
        } else {
            self.drive(&id, &job, cancel).await
        };
        guard.disarm();
        if let Err(e) = self.docker.remove(&id).await {
            tracing::warn!(container = %id, error = %e, "could not remove a container; will retry");
            lock(&self.pending_removals).push(id);
        }
        result.map(Some)
    }

    /// Retries removing containers that could not be removed earlier (Docker was away).
    async fn retry_removals(&self) {
        let pending = std::mem::take(&mut *lock(&self.pending_removals));
        for id in pending {
            if let Err(e) = self.docker.remove(&id).await {
                tracing::debug!(container = %id, error = %e, "removal failed again");
                lock(&self.pending_removals).push(id);
            }
        }
    }

    fn image_missing(&self, env: &EnvSpec) -> SandboxError {
        SandboxError::ImageMissing {
            image: self.settings.images.for_type(env.env_type).to_string(),
            env: env.env_type.as_str(),
            setting: Images::setting_name(env.env_type),
        }
    }

    fn forget_image(&self, image: &str) {
        lock(&self.image_ids).remove(image);
    }

    /// The id of `env`'s image (cached), or a message saying how to build it.
    async fn image_id(&self, env: &EnvSpec) -> Result<String, SandboxError> {
        let image = self.settings.images.for_type(env.env_type);
        if let Some(id) = lock(&self.image_ids).get(image) {
            return Ok(id.clone());
        }
        let id = self
            .docker
            .image_id(image)
            .await?
            .ok_or_else(|| self.image_missing(env))?;
        lock(&self.image_ids).insert(image.to_string(), id.clone());
        Ok(id)
    }

    async fn drive(
        &self,
        id: &str,
        req: &Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let (mut output, mut input) = self.docker.attach(id).await?;
        self.docker.start(id).await?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + req.limits.timeout();

        // Header line, then the source; closing stdin ends the program's input.
        let header = serde_json::json!({ "path": req.path, "argv": req.argv }).to_string();
        let mut payload = Vec::with_capacity(header.len() + 1 + req.code.len());
        payload.extend_from_slice(header.as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(req.code.as_bytes());
        let feed = async move {
            // A program that exits early closes its stdin; that is not an error of the run.
            let _ = input.write_all(&payload).await;
            let _ = input.shutdown().await;
            input
        };

        let limit = req.limits.output_bytes;
        let mut stdout = CappedOutput::new(limit);
        let mut stderr = CappedOutput::new(limit);
        let (mut timed_out, mut cancelled) = (false, false);
        let mut feed = std::pin::pin!(feed);
        let mut input_done = None;
        loop {
            tokio::select! {
                done = &mut feed, if input_done.is_none() => { input_done = Some(done); }
                chunk = output.next() => match chunk {
                    Some(Ok(LogOutput::StdOut { message })) => stdout.push(&message),
                    Some(Ok(LogOutput::StdErr { message })) => {
                        stderr.push(&message);
                        if let Some(last) = req.last_line {
                            note_last_line(last, &message);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(container = %id, error = %e, "output stream ended with an error");
                        break;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => { timed_out = true; break; }
                _ = cancel.cancelled() => { cancelled = true; break; }
            }
        }
        // Both halves of the attach must be gone before kill/wait, or they can hang.
        drop(output);
        drop(input_done);
        if timed_out || cancelled {
            self.docker.kill(id).await?;
            match tokio::time::timeout(KILL_WAIT, self.docker.wait(id)).await {
                Ok(r) => r?,
                Err(_) => tracing::warn!(container = %id, "killed container did not stop in time"),
            }
        } else {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited = tokio::select! {
                r = tokio::time::timeout(remaining, self.docker.wait(id)) => r.ok(),
                _ = cancel.cancelled() => { cancelled = true; None }
            };
            match waited {
                Some(r) => r?,
                None => {
                    timed_out = !cancelled;
                    self.docker.kill(id).await?;
                    let _ = tokio::time::timeout(KILL_WAIT, self.docker.wait(id)).await;
                }
            }
        }
        let duration = started.elapsed();
        let state = self.docker.exit_state(id).await?;
        Ok(RunOutcome {
            exit_code: state.exit_code,
            truncated: stdout.truncated() || stderr.truncated(),
            stdout_bytes: stdout.total(),
            stderr_bytes: stderr.total(),
            stdout: stdout.render(),
            stderr: stderr.render(),
            timed_out,
            oom_killed: state.oom_killed,
            cancelled,
            duration,
        })
    }

    /// Checks that Docker answers and the image of `env` exists.
    pub async fn check_image(&self, env: &EnvSpec) -> Result<(), SandboxError> {
        self.forget_image(self.settings.images.for_type(env.env_type));
        self.image_id(env).await.map(drop)
    }

    /// Refuses new runs from now on (before [`Sandbox::remove_own`] on shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Removes every container of this server instance (on shutdown).
    pub async fn remove_own(&self) -> Result<usize, SandboxError> {
        let listed = self
            .docker
            .list_labelled(LABEL_INSTANCE, &self.instance)
            .await?;
        for c in &listed {
            self.docker.remove(&c.id).await?;
        }
        Ok(listed.len())
    }

    /// Removes leftovers of earlier servers: containers past their deadline (by then they have
    /// stopped, or their server is gone). Containers of a live server sharing the daemon are
    /// still within their deadline and are left alone.
    pub async fn remove_leftovers(&self) -> Result<usize, SandboxError> {
        let now = unix_now();
        let listed = self.docker.list_labelled(LABEL_MANAGED, "true").await?;
        let mut removed = 0;
        for c in listed {
            if c.labels.get(LABEL_INSTANCE) == Some(&self.instance) {
                continue;
            }
            let expired = c
                .labels
                .get(LABEL_DEADLINE)
                .and_then(|d| d.parse::<u64>().ok())
                .is_none_or(|d| d <= now);
            if expired {
                self.docker.remove(&c.id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
