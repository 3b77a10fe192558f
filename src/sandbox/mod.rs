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
pub mod pool;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::limits::{Images, Limits};
use crate::environment::EnvSpec;
use crate::error::SandboxError;
use docker::{Created, DockerApi};
use output::MarkedStream;
use crate::limits::InstallSource;
use policy::{LABEL_INSTANCE, LABEL_MANAGED, Purpose, RunPolicy};

/// How long shutdown keeps sweeping for containers still being made or removed.
const SHUTDOWN_SWEEP: Duration = Duration::from_secs(15);

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
    /// Updated with the last line the program printed (for progress reports).
    pub last_line: Option<&'a Mutex<String>>,
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
            last_line: None,
        }
    }

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
    /// Limits of runs (pre-started containers are made with them).
    pub run_limits: Limits,
    /// Pre-started containers kept ready for the active environment (0: none).
    pub pool_size: usize,
    /// Modules pre-started runners import while they wait.
    pub preimport: Vec<String>,
}

/// A held attach connection (the sentinel's).
struct Attached(
    #[allow(dead_code)] docker::OutputStream,
    #[allow(dead_code)] docker::InputSink,
);

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attached")
    }
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
    /// Pre-started containers.
    pool: Mutex<pool::PoolState>,
    /// Background removals under way (shutdown waits for them).
    background: std::sync::atomic::AtomicUsize,
    /// The sentinel's attach: held for the server's whole life.
    sentinel: Mutex<Option<Attached>>,
    /// This sandbox, for background work (refilling the pool, removing used containers).
    me: Weak<Sandbox>,
}

/// Removes its container when dropped without [`ContainerGuard::disarm`] (a cancelled call).
struct ContainerGuard {
    docker: DockerApi,
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
        let api = self.docker.clone();
        handle.spawn(async move {
            if let Err(e) = api.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "could not remove a container");
            }
        });
    }
}

/// The host path behind `path` inside a container with `mounts` (source, destination): the
/// mount with the longest destination containing `path`.
pub fn host_path_for(
    mounts: &[(String, String)],
    path: &std::path::Path,
) -> Option<std::path::PathBuf> {
    mounts
        .iter()
        .filter_map(|(source, dest)| {
            let rest = path.strip_prefix(dest).ok()?;
            Some((dest.len(), std::path::Path::new(source).join(rest)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, host)| host)
}

/// The id of the container this process runs in, if any (from its mount table, which names
/// the container's own directory, or its hostname).
pub fn own_container_id() -> Option<String> {
    if !std::path::Path::new("/.dockerenv").exists() {
        return None;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let from_mounts = mountinfo.split_whitespace().find_map(|field| {
        let rest = field.split("/containers/").nth(1)?;
        let id = rest.split('/').next()?;
        (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
    });
    from_mounts.or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps the last complete non-empty line of a stream (progress reports show it); `partial`
/// holds the stream's unfinished line between chunks.
fn note_last_line(last: &Mutex<String>, partial: &mut String, chunk: &[u8]) {
    partial.push_str(&String::from_utf8_lossy(chunk));
    let Some(end) = partial.rfind('\n') else {
        if partial.len() > 4096 {
            partial.clear();
        }
        return;
    };
    if let Some(line) = partial[..end]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
    {
        *lock(last) = line.chars().take(200).collect();
    }
    partial.drain(..=end);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Arc<Self> {
        Arc::new_cyclic(|me| Sandbox {
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
            pool: Mutex::new(pool::PoolState::default()),
            background: std::sync::atomic::AtomicUsize::new(0),
            sentinel: Mutex::new(None),
            me: me.clone(),
        })
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
        let result = if job.purpose == Purpose::Run
            && let Some(warm) = self.take_warm(job.env)
        {
            self.execute_warm(warm, job, cancel).await
        } else {
            match self.env_volume(job.env).await {
                Ok(volume) => self.execute_in(&volume, job, cancel).await,
                Err(e) => Err(e),
            }
        };
        if let Err(SandboxError::DockerUnavailable { .. }) = &result {
            // Pre-started containers lost their connection with the daemon: start afresh.
            self.flush_pool();
        }
        result
    }

    /// Runs a job in a pre-started container; it is removed afterwards, in the background.
    async fn execute_warm(
        &self,
        warm: pool::Warm,
        job: Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let _slot = tokio::select! {
            permit = self.slots.acquire() => permit.map_err(|_| SandboxError::ShuttingDown)?,
            _ = cancel.cancelled() => {
                self.remove_later(warm.id);
                return Ok(RunOutcome::cancelled_before_start());
            }
        };
        let pool::Warm {
            id, output, input, ..
        } = warm;
        let mut guard = ContainerGuard {
            docker: self.docker.clone(),
            id: Some(id.clone()),
        };
        // Observers (and tests) tell a used pool container from an idle one by its name.
        let docker = self.docker.clone();
        let (rid, new_name) = (id.clone(), pool::used_name(&id));
        tokio::spawn(async move {
            let _ = docker.rename(&rid, &new_name).await;
        });
        let result = self.converse(&id, output, input, &job, cancel).await;
        guard.disarm();
        self.remove_later(id);
        result
    }

    /// Removes a container in the background (the caller does not wait for Docker).
    fn remove_later(&self, id: String) {
        let Some(me) = self.me.upgrade() else { return };
        self.background.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Err(e) = me.docker.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "could not remove a container; will retry");
                lock(&me.pending_removals).push(id);
            }
            me.background.fetch_sub(1, Ordering::SeqCst);
        });
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
            idle_secs: 0,
            preimport: &[],
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
        let t_create = Instant::now();
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
        tracing::debug!(
            phase = "create",
            ms = t_create.elapsed().as_millis() as u64,
            purpose = job.purpose.as_str()
        );
        let mut guard = ContainerGuard {
            docker: self.docker.clone(),
            id: Some(id.clone()),
        };
        let result = if self.closed.load(Ordering::SeqCst) {
            Err(SandboxError::ShuttingDown)
        } else {
            self.drive(&id, &job, cancel).await
        };
        guard.disarm();
        self.remove_later(id);
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

    /// Attaches (before start, or early output is lost), starts, and converses.
    async fn drive(
        &self,
        id: &str,
        req: &Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let t = Instant::now();
        let (output, input) = self.docker.attach(id).await?;
        tracing::debug!(phase = "attach", ms = t.elapsed().as_millis() as u64);
        let t = Instant::now();
        self.docker.start(id).await?;
        tracing::debug!(phase = "start", ms = t.elapsed().as_millis() as u64);
        let t = Instant::now();
        let outcome = self.converse(id, output, input, req, cancel).await;
        tracing::debug!(phase = "program", ms = t.elapsed().as_millis() as u64);
        outcome
    }

    /// Feeds the program to a started container's runner and collects the outcome: from the
    /// runner's end markers when it ends by itself, from Docker's state otherwise.
    async fn converse(
        &self,
        id: &str,
        mut output: docker::OutputStream,
        mut input: docker::InputSink,
        req: &Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + req.limits.timeout();
        let marker = format!("mce-exit-{}", uuid::Uuid::new_v4().simple());

        // Header line, then the source; closing stdin ends the program's input.
        let header = serde_json::json!({
            "path": req.path,
            "argv": req.argv,
            "marker": marker,
            "plots": req.purpose == Purpose::Run,
        })
        .to_string();
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
        let mut stdout = MarkedStream::new(limit, &marker);
        let mut stderr = MarkedStream::new(limit, &marker);
        let (mut timed_out, mut cancelled) = (false, false);
        let mut feed = std::pin::pin!(feed);
        let mut input_done = None;
        let (mut out_line, mut err_line) = (String::new(), String::new());
        loop {
            tokio::select! {
                done = &mut feed, if input_done.is_none() => { input_done = Some(done); }
                chunk = output.next() => match chunk {
                    Some(Ok(LogOutput::StdOut { message })) => {
                        stdout.push(&message);
                        if let Some(last) = req.last_line {
                            note_last_line(last, &mut out_line, &message);
                        }
                        if stdout.status().is_some() && stderr.status().is_some() { break; }
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        stderr.push(&message);
                        if let Some(last) = req.last_line {
                            note_last_line(last, &mut err_line, &message);
                        }
                        if stdout.status().is_some() && stderr.status().is_some() { break; }
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
        stdout.finish();
        stderr.finish();
        let (stdout, stderr) = (stdout.output, {
            let status = stderr.status();
            (stderr.output, status)
        });
        let (stderr, reported) = stderr;
        if let Some(status) = reported.filter(|_| !timed_out && !cancelled) {
            // The program ended by itself and said how: no need to wait for the container.
            return Ok(RunOutcome {
                exit_code: Some(status),
                truncated: stdout.truncated() || stderr.truncated(),
                stdout_bytes: stdout.total(),
                stderr_bytes: stderr.total(),
                stdout: stdout.render(),
                stderr: stderr.render(),
                timed_out: false,
                oom_killed: false,
                cancelled: false,
                duration: started.elapsed(),
            });
        }
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

    /// Removes every container of this server instance (on shutdown, after [`Sandbox::close`]):
    /// sweeps until no pool container is being made and no background removal is under way.
    pub async fn remove_own(&self) -> Result<usize, SandboxError> {
        let until = Instant::now() + SHUTDOWN_SWEEP;
        let mut removed = 0;
        loop {
            let listed = self
                .docker
                .list_labelled(LABEL_INSTANCE, &self.instance)
                .await?;
            for c in &listed {
                self.docker.remove(&c.id).await?;
            }
            removed += listed.len();
            let busy = self.pool_filling() > 0 || self.background.load(Ordering::SeqCst) > 0;
            if (!busy && listed.is_empty()) || Instant::now() > until {
                return Ok(removed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes leftovers of servers that are gone: every container of an instance without a
    /// running sentinel, and anything past its deadline. Containers of a live server sharing
    /// the daemon are left alone.
    pub async fn remove_leftovers(&self) -> Result<usize, SandboxError> {
        let now = unix_now();
        let listed = self.docker.list_labelled(LABEL_MANAGED, "true").await?;
        let live: HashSet<String> = listed
            .iter()
            .filter(|c| {
                c.running
                    && c.labels.get(policy::LABEL_PURPOSE).map(String::as_str)
                        == Some(policy::SENTINEL)
            })
            .filter_map(|c| c.labels.get(LABEL_INSTANCE).cloned())
            .chain([self.instance.clone()])
            .collect();
        let mut removed = 0;
        for c in listed {
            if c.labels.get(LABEL_INSTANCE) == Some(&self.instance) {
                continue;
            }
            if policy::is_leftover(&c.labels, c.created, &live, now) {
                self.docker.remove(&c.id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Starts this server's sentinel (see [`policy::sentinel_container`]) in the image of `env`.
    pub async fn start_sentinel(&self, env: &EnvSpec) -> Result<(), SandboxError> {
        // Shutdown's sweep waits for this, so a sentinel made meanwhile is removed too.
        self.background.fetch_add(1, Ordering::SeqCst);
        let result = self.make_sentinel(env).await;
        self.background.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn make_sentinel(&self, env: &EnvSpec) -> Result<(), SandboxError> {
        if self.closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let image = self.settings.images.for_type(env.env_type);
        let body =
            policy::sentinel_container(image, &self.instance, self.settings.run_as, unix_now());
        let name = format!("mce-sentinel-{}", self.instance);
        let id = match self.docker.create(body, Some(&name)).await? {
            Created::Id(id) => id,
            Created::ImageMissing => return Err(self.image_missing(env)),
            Created::NameTaken => return Ok(()),
        };
        let (output, input) = self.docker.attach(&id).await?;
        self.docker.start(&id).await?;
        *lock(&self.sentinel) = Some(Attached(output, input));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_through_mounts() {
        let mounts = vec![
            (
                "/var/run/docker.sock".to_string(),
                "/var/run/docker.sock".to_string(),
            ),
            ("/home/me/code".to_string(), "/data".to_string()),
            (
                "/home/me/code/sub-mount".to_string(),
                "/data/sub".to_string(),
            ),
        ];
        let p = |s: &str| host_path_for(&mounts, std::path::Path::new(s));
        assert_eq!(p("/data"), Some("/home/me/code".into()));
        assert_eq!(p("/data/x/y"), Some("/home/me/code/x/y".into()));
        assert_eq!(p("/data/sub/z"), Some("/home/me/code/sub-mount/z".into()));
        assert_eq!(p("/database"), None);
        assert_eq!(p("/elsewhere"), None);
    }

    #[test]
    fn last_line_is_the_last_complete_one() {
        let last = Mutex::new(String::new());
        let mut partial = String::new();
        for piece in ["step", " ", "1", "\n", "step", " 2"] {
            note_last_line(&last, &mut partial, piece.as_bytes());
        }
        assert_eq!(*lock(&last), "step 1");
        note_last_line(&last, &mut partial, b"\n\n");
        assert_eq!(*lock(&last), "step 2");
    }
}
