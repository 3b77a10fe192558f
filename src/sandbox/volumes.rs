//! Environments as named volumes: one per (environment, image, run user), seeded from the image
//! on first mount and handed to the run user, mounted read-only for runs and read-write only for
//! the containers that prepare, create or install into it. Seeding happens once per volume,
//! daemon-wide: the server that creates the lock container seeds, others wait for the ready
//! marker. Also the image ids the volume names are made from (cached per image), and the check
//! that the daemon offers the configured OCI runtime, passed before any container is made for
//! an environment (installs: its network registration too).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::SandboxSettings;
use super::engine::Created;
use super::labels::{self, LABEL_ENV_READY};
use super::lifecycle::{Lifecycle, image_missing, lock, unix_now};
use super::policy::{self, Purpose};
use super::runner::{self, Job, RunOutcome};
use super::runtime::RuntimeGate;
use crate::environment::EnvSpec;
use crate::error::SandboxError;

/// The helper that hands a seeded volume to the run user and reports whether the
/// environment's interpreter exists.
pub const PREPARE: &str = include_str!("scripts/prepare.py");

/// How long past the seeding deadline to wait for another server's seeding.
const SEED_WAIT_EXTRA: Duration = Duration::from_secs(10);
const SEED_POLL: Duration = Duration::from_millis(300);

/// The environment volumes of one server. Clones share everything.
#[derive(Debug, Clone)]
pub struct Volumes {
    life: Lifecycle,
    settings: Arc<SandboxSettings>,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Image name → id, resolved once.
    image_ids: Mutex<HashMap<String, String>>,
    /// Environment volumes known to be complete.
    known: Mutex<HashSet<String>>,
    /// Serialises seeding within this server.
    seed_lock: tokio::sync::Mutex<()>,
    /// Whether the daemon offers `RUNTIME`.
    runtime: RuntimeGate,
}

impl Volumes {
    pub fn new(life: Lifecycle, settings: Arc<SandboxSettings>) -> Self {
        let inner = Inner {
            image_ids: Mutex::default(),
            known: Mutex::default(),
            seed_lock: tokio::sync::Mutex::default(),
            runtime: RuntimeGate::new(settings.runtime.clone()),
        };
        Volumes {
            life,
            settings,
            inner: Arc::new(inner),
        }
    }

    fn image(&self, env: &EnvSpec) -> &str {
        self.settings.images.for_type(env.env_type)
    }

    /// Forgets the cached id of `env`'s image (it was rebuilt or removed).
    pub fn forget_image(&self, env: &EnvSpec) {
        lock(&self.inner.image_ids).remove(self.image(env));
    }

    /// The id of `env`'s image (cached), or a message saying how to build it.
    pub async fn image_id(&self, env: &EnvSpec) -> Result<String, SandboxError> {
        let image = self.image(env);
        if let Some(id) = lock(&self.inner.image_ids).get(image) {
            return Ok(id.clone());
        }
        let id = self
            .life
            .engine()
            .image_id(image)
            .await?
            .ok_or_else(|| image_missing(image, env))?;
        lock(&self.inner.image_ids).insert(image.to_string(), id.clone());
        Ok(id)
    }

    /// Checks that the daemon offers the configured runtime (asked until it does).
    pub async fn check_runtime(&self) -> Result<(), SandboxError> {
        self.inner.runtime.check(self.life.engine()).await
    }

    /// The volume of `env`, complete: seeded with what the image has at the environment's
    /// prefix and handed to the run user. Refused when the daemon lacks the configured runtime.
    pub async fn env_volume(&self, env: &EnvSpec) -> Result<String, SandboxError> {
        self.check_runtime().await?;
        let image_id = self.image_id(env).await?;
        let name = labels::env_volume_name(
            env,
            &image_id,
            self.settings.run_as,
            self.settings.principal.as_deref(),
        );
        if lock(&self.inner.known).contains(&name) {
            return Ok(name);
        }
        let _guard = self.inner.seed_lock.lock().await;
        let limits = &self.settings.env_limits;
        let wait_until = Instant::now() + limits.timeout() + SEED_WAIT_EXTRA;
        let engine = self.life.engine();
        loop {
            if engine
                .volume_exists(&labels::ready_marker_name(&name))
                .await?
            {
                lock(&self.inner.known).insert(name.clone());
                return Ok(name);
            }
            let lock_spec = policy::lock_container(
                self.image(env),
                self.life.instance(),
                unix_now(),
                limits.timeout_secs + policy::DEADLINE_GRACE_SECS,
            );
            match self
                .life
                .create(&lock_spec, Some(&labels::seed_lock_name(&name)))
                .await?
            {
                Created::Id(lock_id) => {
                    let seeded = self.seed(env, &name).await;
                    if let Err(e) = engine.remove(&lock_id).await {
                        tracing::warn!(error = %e, "could not remove a seed lock container");
                    }
                    seeded?;
                    lock(&self.inner.known).insert(name.clone());
                    return Ok(name);
                }
                Created::ImageMissing => return Err(image_missing(self.image(env), env)),
                Created::NameTaken if Instant::now() < wait_until => {
                    tokio::time::sleep(SEED_POLL).await;
                }
                Created::NameTaken => return Err(seed_timeout(&name)),
            }
        }
    }

    /// Arguments of scripts/prepare.py for `env`.
    pub fn prepare_argv(&self, env: &EnvSpec) -> [String; 4] {
        let (uid, gid) = self.settings.run_as;
        [
            env.prefix(),
            uid.to_string(),
            gid.to_string(),
            env.interpreter(),
        ]
    }

    /// Runs `job` in a new container with `volume` as its environment volume.
    pub async fn run_in(
        &self,
        volume: &str,
        job: &Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        if job.purpose == Purpose::Install {
            let engine = self.life.engine();
            self.inner.runtime.check_install(engine).await?;
        }
        let policy = self.settings.policy(
            job.purpose,
            job.env,
            volume,
            job.limits,
            self.life.instance(),
        );
        let spec = policy::container_spec(&policy);
        match runner::run_cold(&self.life, &spec, job, None, cancel).await? {
            Some(outcome) => Ok(outcome),
            None => Err(SandboxError::NameTaken),
        }
    }

    /// Seeds `volume` (holding the seed lock): starts from an empty volume, lets the engine copy
    /// the image's files in as the only container mounting it, hands it to the run user, then
    /// creates the ready marker.
    async fn seed(&self, env: &EnvSpec, volume: &str) -> Result<(), SandboxError> {
        let engine = self.life.engine();
        // A volume without its marker is the leftover of a seed that died half-way.
        engine.remove_volume(volume).await?;
        engine
            .ensure_volume(
                volume,
                labels::env_volume_labels(env, self.image(env), self.settings.principal.as_deref()),
            )
            .await?;
        let argv = self.prepare_argv(env);
        let job = Job::helper(
            Purpose::Prepare,
            env,
            "/tmp/prepare.py",
            PREPARE,
            &argv,
            &self.settings.env_limits,
        );
        // Not cancellable by a client: a half-seeded volume would have to be seeded again.
        let run = self.run_in(volume, &job, &CancellationToken::new()).await?;
        if !run.succeeded() {
            return Err(SandboxError::Helper {
                what: "prepare the environment volume",
                detail: run.failure_detail(),
            });
        }
        let marker = HashMap::from([(LABEL_ENV_READY.to_string(), volume.to_string())]);
        engine
            .ensure_volume(&labels::ready_marker_name(volume), marker)
            .await?;
        tracing::info!(volume = %volume, environment = %env, "prepared an environment volume");
        Ok(())
    }

    /// Removes an environment volume: the environment returns to its image state (or is gone,
    /// for one created later). Fails while a container uses it.
    pub async fn remove(&self, name: &str) -> Result<(), SandboxError> {
        lock(&self.inner.known).remove(name);
        // The marker goes first: a volume without it is never used.
        let engine = self.life.engine();
        engine
            .remove_volume(&labels::ready_marker_name(name))
            .await?;
        Ok(engine.remove_volume(name).await?)
    }
}

fn seed_timeout(name: &str) -> SandboxError {
    SandboxError::Helper {
        what: "prepare the environment volume",
        detail: format!("another server has been preparing {name} for too long; try again"),
    }
}
