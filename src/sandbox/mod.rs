//! The sandbox: runs programs in fresh, locked-down containers and reports what happened. Its
//! rooms, top to bottom:
//!
//! - this module: [`Sandbox`], the one handle the server holds (run a job warm or cold, the
//!   pool, environments, cleanup), and [`SandboxSettings`];
//! - [`helpers`]: prepare/create environments, install and check packages;
//! - [`sessions`] (and `session_call`; `session_sync`: a session's copy of the folder in copy
//!   mode): live interpreters that keep state across calls and outlive the server;
//! - [`pool`]: pre-started single-use containers; [`volumes`]: environment volumes and seeding;
//! - [`runner`]: a job in a cold or warm container, and [`conversation`] with its runner
//!   (or following a dead server's run from its logs); [`copy`]: the
//!   storage folder's files in and out of a run as tar streams (STORAGE_MODE=copy);
//! - [`lifecycle`]: instance id, slots, creation, removal on every path, sentinel, sweeps;
//! - [`policy`] (container settings) and [`labels`] (names, labels, leftover rules): pure;
//!   [`runtime`]: the OCI runtime (`RUNTIME`, gVisor) each container gets, what it changes in
//!   the settings, and the check that the daemon offers it;
//!   [`output`]: capped capture, pure;
//! - [`engine`]: the [`engine::ContainerEngine`] trait, the only door to containers;
//!   [`docker`] implements it (the only bollard code, Docker and Podman's compatible API
//!   alike); `fake` is the recording test double.

pub mod conversation;
pub mod copy;
pub mod docker;
pub mod engine;
#[cfg(test)]
pub mod fake;
pub mod helpers;
pub mod labels;
pub mod lifecycle;
pub mod output;
pub mod policy;
pub mod pool;
pub mod runner;
pub mod runtime;
mod session_call;
mod session_sync;
pub mod sessions;
#[cfg(test)]
mod tests;
pub mod volumes;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::environment::EnvSpec;
use crate::error::SandboxError;
use crate::limits::{Images, InstallSource, Limits};
use engine::{ContainerEngine, ContainerSpec, EngineKind};
use lifecycle::{Lifecycle, unix_now};
use policy::{Purpose, RunPolicy};
use pool::Pool;
pub use runner::{Job, RunOutcome};
use sessions::{SessionSettings, Sessions};
use volumes::Volumes;

/// Static facts every container shares.
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
    /// Session limits and records.
    pub sessions: SessionSettings,
    /// Whose world this is (over HTTP): its environment volumes are its own.
    pub principal: Option<String>,
    /// Runs of this world at once (its fair share of `max_concurrent`; 0: no own limit).
    pub max_runs: usize,
    /// STORAGE_MODE=copy: the storage folder is copied in and out, never mounted (then
    /// `host_workdir` is empty and `workdir` is [`copy::COPY_WORKDIR`]).
    pub copy: Option<copy::CopySettings>,
    /// The OCI runtime of every container (`RUNTIME`; `None`: the daemon's default).
    pub runtime: Option<String>,
}

impl SandboxSettings {
    /// The policy of a container started for one job at once (no idle time, no pre-imports).
    pub fn policy<'a>(
        &'a self,
        purpose: Purpose,
        env: &'a EnvSpec,
        env_volume: &'a str,
        limits: &'a Limits,
        instance: &'a str,
    ) -> RunPolicy<'a> {
        RunPolicy {
            purpose,
            image: self.images.for_type(env.env_type),
            env,
            env_volume,
            limits,
            run_as: self.run_as,
            host_workdir: &self.host_workdir,
            workdir: &self.workdir,
            install: Some(&self.install),
            idle_secs: 0,
            preimport: &[],
            instance,
            now_unix: unix_now(),
            runtime: self.runtime.as_deref(),
        }
    }

    /// The settings a run container of `env` gets (for reports such as the isolation list).
    pub fn run_spec(&self, env: &EnvSpec) -> ContainerSpec {
        let policy = self.policy(Purpose::Run, env, "env", &self.run_limits, "report");
        policy::container_spec(&policy)
    }
}

/// Runs programs in containers; owns the engine and this server's instance.
#[derive(Debug)]
pub struct Sandbox {
    settings: Arc<SandboxSettings>,
    life: Lifecycle,
    volumes: Volumes,
    pool: Pool,
    /// Serialises preparing and creating environments.
    env_lock: tokio::sync::Mutex<()>,
    sessions: Sessions,
    /// This world's share of the runs (`settings.max_runs`), when it has one.
    fair_share: Option<tokio::sync::Semaphore>,
}

impl Sandbox {
    /// The sandbox of a server with one world (stdio), with its own lifecycle.
    pub fn new(settings: SandboxSettings, engine: Arc<dyn ContainerEngine>) -> Arc<Self> {
        let life = Lifecycle::new(engine, settings.max_concurrent);
        Self::in_world(settings, life)
    }

    /// The sandbox of one world of a server with several (one per HTTP principal): they share
    /// `life` (the instance, its containers and the `max_concurrent` slots); each has its own
    /// pool, environment volumes, sessions and share of the slots.
    pub fn in_world(settings: SandboxSettings, life: Lifecycle) -> Arc<Self> {
        let settings = Arc::new(settings);
        let fair_share =
            (settings.max_runs > 0).then(|| tokio::sync::Semaphore::new(settings.max_runs));
        let volumes = Volumes::new(life.clone(), Arc::clone(&settings));
        let pool = Pool::new(life.clone(), volumes.clone(), Arc::clone(&settings));
        Arc::new(Sandbox {
            settings,
            life,
            volumes,
            pool,
            env_lock: tokio::sync::Mutex::new(()),
            sessions: Sessions::default(),
            fair_share,
        })
    }

    /// The lifecycle this sandbox shares with the other worlds of its server.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.life
    }

    /// Pre-started containers being made for this world now.
    pub fn pool_filling(&self) -> usize {
        self.pool.filling()
    }

    /// Pre-started containers ready for this world now.
    pub fn pool_ready(&self) -> usize {
        self.pool.ready()
    }

    pub fn instance(&self) -> &str {
        self.life.instance()
    }

    /// Whether the server `instance` still runs (this one, or one whose sentinel runs).
    pub async fn instance_alive(&self, instance: &str) -> Result<bool, SandboxError> {
        self.life.instance_alive(instance).await
    }

    /// Runs one job: a user's program in a pre-started container when one is ready, anything
    /// else in a fresh container of its environment's image with the environment's volume
    /// (created and seeded from the image on first use).
    pub async fn execute(
        &self,
        job: Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        if self.life.is_closed() {
            return Err(SandboxError::ShuttingDown);
        }
        // This world's fair share first; a call cancelled while it waits goes on and is
        // reported as cancelled by the runner, which sees the same token.
        let _share = match &self.fair_share {
            Some(share) => tokio::select! {
                permit = share.acquire() => Some(permit.map_err(|_| SandboxError::ShuttingDown)?),
                _ = cancel.cancelled() => None,
            },
            None => None,
        };
        // In copy mode the program sees the folder's copy, and no pre-started container has it.
        let (inside, copy) = match &self.settings.copy {
            Some(c) if job.purpose == Purpose::Run => (c.inside(job.path), Some(c)),
            _ => (job.path.to_string(), None),
        };
        let job = Job {
            path: &inside,
            copy,
            ..job
        };
        // A pre-started container kills itself EXECUTION_TIMEOUT after its idle wait (policy's
        // lifetime): a call with a longer timeout (up to MAX_TIMEOUT) needs a cold one.
        let fits_warm = job.limits.timeout_secs <= self.settings.run_limits.timeout_secs;
        let warm = (job.purpose == Purpose::Run && copy.is_none() && fits_warm)
            .then(|| self.pool.take(job.env))
            .flatten();
        let result = match warm {
            Some(warm) => runner::run_warm(&self.life, warm, &job, cancel).await,
            None => match self.volumes.env_volume(job.env).await {
                Ok(volume) => self.volumes.run_in(&volume, &job, cancel).await,
                Err(e) => Err(e),
            },
        };
        match &result {
            // Pre-started containers lost their connection with the daemon: start afresh.
            Err(e) if e.is_unavailable() => self.pool.flush(),
            Err(SandboxError::ImageMissing { .. }) => self.volumes.forget_image(job.env),
            _ => {}
        }
        result
    }

    /// The isolation a run container of `env` gets, in words read off its settings.
    pub fn isolation(&self, env: &EnvSpec) -> Vec<String> {
        policy::isolation_summary(&self.settings.run_spec(env))
    }

    /// Checks that the daemon offers the configured runtime (`RUNTIME`); without one, Ok at
    /// once. Every container made for an environment passes the same check first.
    pub async fn check_runtime(&self) -> Result<(), SandboxError> {
        self.volumes.check_runtime().await
    }

    /// Which engine serves DOCKER_HOST, checked against what this server asks of it: an OCI
    /// runtime (`runtime`, from RUNTIME) is refused on an engine that would ignore it
    /// (Podman), never silently dropped. Called once at start.
    pub async fn check_engine(&self, runtime: Option<&str>) -> Result<EngineKind, SandboxError> {
        let kind = self.life.engine().kind().await?;
        kind.check_runtime(runtime)?;
        Ok(kind)
    }

    /// Checks that the engine answers and the image of `env` exists.
    pub async fn check_image(&self, env: &EnvSpec) -> Result<(), SandboxError> {
        self.volumes.forget_image(env);
        self.volumes.image_id(env).await.map(drop)
    }

    /// Makes the pool serve `env` and fills it (in the background).
    pub fn warm_up(&self, env: &EnvSpec) {
        self.pool.warm_up(env);
    }

    /// Replaces every pre-started container (after an install).
    pub fn flush_pool(&self) {
        self.pool.flush();
    }

    /// Refuses new runs from now on (before [`Sandbox::remove_own`] on shutdown).
    pub fn close(&self) {
        self.life.close();
    }

    /// Removes every container of this server instance, waiting for the pool's makers.
    pub async fn remove_own(&self) -> Result<usize, SandboxError> {
        let pool = self.pool.clone();
        self.life.remove_own(move || pool.filling() > 0).await
    }

    /// Removes leftovers of servers that are gone (see [`Lifecycle::remove_leftovers`]).
    pub async fn remove_leftovers(&self) -> Result<usize, SandboxError> {
        self.life.remove_leftovers().await
    }

    /// Takes over container `id`, where a run of a dead server goes on: spares it from the
    /// leftover sweeps and checks that the engine still has it.
    pub async fn claim(&self, id: &str) -> Result<(), SandboxError> {
        self.life.spare(id);
        let found = self.life.engine().inspect(id).await;
        if found.is_err() {
            self.life.release(id);
        }
        found.map(drop).map_err(SandboxError::from)
    }

    /// Follows a claimed container's run (its runner was given `marker`; it started `elapsed`
    /// ago with `limits`) to its end, as if this server had started it, then removes the
    /// container. It takes no slot: it was admitted by the server that started it.
    pub async fn follow(
        &self,
        id: &str,
        marker: &str,
        limits: &Limits,
        elapsed: std::time::Duration,
        live: &output::Live,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let now = std::time::Instant::now();
        let started = now.checked_sub(elapsed).unwrap_or(now);
        let watch = conversation::Watch {
            marker,
            limit: limits.output_bytes,
            live: Some(live),
            deadline: tokio::time::Instant::now() + limits.timeout().saturating_sub(elapsed),
            cancel,
        };
        let followed = conversation::follow(self.life.engine(), id, &watch, started).await;
        let result = match (followed, &self.settings.copy) {
            (Ok(outcome), Some(copy)) => {
                runner::copy_out(self.life.engine(), id, copy, None, outcome).await
            }
            (followed, _) => followed,
        };
        self.life.release(id);
        result
    }

    /// Starts this server's sentinel in the image of `env` (see [`policy::sentinel_container`]).
    pub async fn start_sentinel(&self, env: &EnvSpec) -> Result<(), SandboxError> {
        let image = self.settings.images.for_type(env.env_type);
        let mut spec =
            policy::sentinel_container(image, self.instance(), self.settings.run_as, unix_now());
        runtime::apply(&mut spec, self.settings.runtime.clone());
        if self.life.start_sentinel(&spec).await? {
            Ok(())
        } else {
            Err(lifecycle::image_missing(image, env))
        }
    }
}
