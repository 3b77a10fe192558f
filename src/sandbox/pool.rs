//! The pool: pre-started, single-use run containers for the active environment. Each one is
//! created, attached and started ahead of time, with the runner's interpreter already waiting on
//! stdin (and the `PREIMPORT` modules loaded); a run takes one, feeds it the program, and the
//! container is removed afterwards — no state passes from one run to the next. The pool refills
//! in the background, is flushed when the environment changes or packages are installed, and
//! drops containers that waited longer than [`IDLE_SECS`] or died while waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};

use super::SandboxSettings;
use super::engine::Created;
use super::lifecycle::{Lifecycle, image_missing, lock};
use super::policy::{self, Purpose, RunPolicy};
use super::runner::Warm;
use super::volumes::Volumes;
use crate::environment::EnvSpec;
use crate::error::SandboxError;

/// How long a pre-started container may wait for a program before it is replaced.
pub const IDLE_SECS: u64 = 600;
/// Name prefix of idle pool containers; a taken one is renamed to `labels::used_name`.
pub const WARM_PREFIX: &str = "mce-warm-";

/// Which environment the pool serves, the ready containers, those being made.
#[derive(Default)]
struct State {
    env: Option<EnvSpec>,
    ready: VecDeque<Warm>,
    filling: usize,
    /// Bumped on every flush: containers made for an older generation are not kept.
    generation: u64,
}

/// The pool of one server. Clones share everything.
#[derive(Clone)]
pub struct Pool {
    life: Lifecycle,
    volumes: Volumes,
    settings: Arc<SandboxSettings>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("Pool")
            .field("env", &st.env)
            .field("ready", &st.ready.len())
            .field("filling", &st.filling)
            .field("generation", &st.generation)
            .finish()
    }
}

impl Pool {
    pub fn new(life: Lifecycle, volumes: Volumes, settings: Arc<SandboxSettings>) -> Self {
        Pool {
            life,
            volumes,
            settings,
            state: Arc::default(),
        }
    }

    /// Makes the pool serve `env` (flushing containers of another environment) and fills it.
    pub fn warm_up(&self, env: &EnvSpec) {
        let stale: Vec<Warm> = {
            let mut st = lock(&self.state);
            if st.env.as_ref() == Some(env) {
                Vec::new()
            } else {
                st.env = Some(env.clone());
                st.generation += 1;
                st.ready.drain(..).collect()
            }
        };
        self.discard(stale);
        self.fill();
    }

    /// Replaces every ready container (after an install, so runs start on fresh interpreters).
    pub fn flush(&self) {
        let stale: Vec<Warm> = {
            let mut st = lock(&self.state);
            st.generation += 1;
            st.ready.drain(..).collect()
        };
        self.discard(stale);
        self.fill();
    }

    fn discard(&self, stale: Vec<Warm>) {
        for w in stale {
            self.life.remove_later(w.id);
        }
    }

    /// Containers being made for the pool right now.
    pub fn filling(&self) -> usize {
        lock(&self.state).filling
    }

    /// Ready containers right now.
    pub fn ready(&self) -> usize {
        lock(&self.state).ready.len()
    }

    /// Takes a ready container for `env`, if there is one; refills in the background.
    pub fn take(&self, env: &EnvSpec) -> Option<Warm> {
        let mut expired = Vec::new();
        let taken = {
            let mut st = lock(&self.state);
            let mut taken = None;
            while let Some(mut w) = st.ready.pop_front() {
                // An idle runner prints nothing: anything on its stream (or its end) means the
                // container died, e.g. its attach broke while the engine was away.
                let dead = w.attached.output.next().now_or_never().is_some();
                if dead || w.env != *env || w.born.elapsed() >= Duration::from_secs(IDLE_SECS) {
                    expired.push(w);
                } else {
                    taken = Some(w);
                    break;
                }
            }
            taken
        };
        self.discard(expired);
        self.fill();
        taken
    }

    /// Starts making containers until ready + being made reaches the pool size.
    fn fill(&self) {
        if self.settings.pool_size == 0 || self.life.is_closed() {
            return;
        }
        let (env, generation, missing) = {
            let mut st = lock(&self.state);
            let Some(env) = st.env.clone() else { return };
            let have = st.ready.len() + st.filling;
            let missing = self.settings.pool_size.saturating_sub(have);
            st.filling += missing;
            (env, st.generation, missing)
        };
        for _ in 0..missing {
            let pool = self.clone();
            let env = env.clone();
            tokio::spawn(async move {
                let made = pool.make(&env).await;
                pool.settle(made, &env, generation);
            });
        }
    }

    /// Keeps a container made for `generation` if that is still current, else removes it and
    /// makes a replacement (the flush that outdated it counted it as coming).
    fn settle(&self, made: Result<Warm, SandboxError>, env: &EnvSpec, generation: u64) {
        let (discard, stale) = {
            let mut st = lock(&self.state);
            st.filling -= 1;
            let stale = st.generation != generation;
            let discard = match made {
                Ok(w) if !stale && !self.life.is_closed() => {
                    st.ready.push_back(w);
                    None
                }
                Ok(w) => Some(w.id),
                Err(e) => {
                    tracing::warn!(environment = %env, error = %e, "could not pre-start a container");
                    None
                }
            };
            (discard, stale)
        };
        if let Some(id) = discard {
            self.life.remove_later(id);
        }
        if stale {
            self.fill();
        }
    }

    /// Creates, attaches and starts one container whose runner waits for a program.
    async fn make(&self, env: &EnvSpec) -> Result<Warm, SandboxError> {
        let volume = self.volumes.env_volume(env).await?;
        let settings = &self.settings;
        let base = settings.policy(
            Purpose::Run,
            env,
            &volume,
            &settings.run_limits,
            self.life.instance(),
        );
        let policy = RunPolicy {
            install: None,
            idle_secs: IDLE_SECS,
            preimport: &settings.preimport,
            ..base
        };
        let spec = policy::container_spec(&policy);
        let name = format!("{WARM_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let id = match self.life.create(&spec, Some(&name)).await? {
            Created::Id(id) => id,
            Created::ImageMissing => return Err(image_missing(&spec.image, env)),
            Created::NameTaken => return Err(SandboxError::NameTaken),
        };
        let engine = self.life.engine();
        let started = async {
            let attached = engine.attach(&id).await?;
            engine.start(&id).await?;
            Ok::<_, SandboxError>(attached)
        };
        match started.await {
            Ok(attached) => Ok(Warm::new(id, attached, env.clone())),
            Err(e) => {
                self.life.remove_later(id);
                Err(e)
            }
        }
    }
}
