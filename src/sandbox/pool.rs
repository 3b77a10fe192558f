//! The pool: pre-started, single-use run containers for the active environment. Each one is
//! created, attached and started ahead of time, with the runner's interpreter already waiting on
//! stdin (and the `PREIMPORT` modules loaded); a run takes one, feeds it the program, and the
//! container is removed afterwards — no state passes from one run to the next. The pool refills
//! in the background, is flushed when the environment changes or packages are installed, and
//! drops containers that waited longer than [`IDLE_SECS`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};

use super::docker::{Created, InputSink, OutputStream};
use super::policy::{self, Purpose, RunPolicy};
use super::{Sandbox, lock, unix_now};
use crate::environment::EnvSpec;
use crate::error::SandboxError;

/// How long a pre-started container may wait for a program before it is replaced.
pub const IDLE_SECS: u64 = 600;
/// Name prefix of idle pool containers; a taken one is renamed to [`used_name`].
pub const WARM_PREFIX: &str = "mce-warm-";

/// A pre-started container, ready for one program.
pub struct Warm {
    pub id: String,
    pub output: OutputStream,
    pub input: InputSink,
    env: EnvSpec,
    born: Instant,
}

/// The pool's state: which environment it serves, the ready containers, those being made.
#[derive(Default)]
pub struct PoolState {
    env: Option<EnvSpec>,
    ready: VecDeque<Warm>,
    filling: usize,
    /// Bumped on every flush: containers made for an older generation are not kept.
    generation: u64,
}

impl std::fmt::Debug for PoolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolState")
            .field("env", &self.env)
            .field("ready", &self.ready.len())
            .field("filling", &self.filling)
            .field("generation", &self.generation)
            .finish()
    }
}

/// The name a pool container gets once taken (idle ones start with [`WARM_PREFIX`]).
pub fn used_name(id: &str) -> String {
    format!("mce-run-{}", &id[..id.len().min(24)])
}

impl Sandbox {
    /// Makes the pool serve `env` (flushing containers of another environment) and fills it.
    pub fn warm_up(&self, env: &EnvSpec) {
        let stale = {
            let mut st = lock(&self.pool);
            if st.env.as_ref() == Some(env) {
                Vec::new()
            } else {
                st.env = Some(env.clone());
                st.generation += 1;
                st.ready.drain(..).collect()
            }
        };
        for w in stale {
            self.remove_later(w.id);
        }
        self.fill();
    }

    /// Replaces every ready container (after an install, so runs start on fresh interpreters).
    pub fn flush_pool(&self) {
        let stale: Vec<Warm> = {
            let mut st = lock(&self.pool);
            st.generation += 1;
            st.ready.drain(..).collect()
        };
        for w in stale {
            self.remove_later(w.id);
        }
        self.fill();
    }

    /// Containers being made for the pool right now.
    pub(super) fn pool_filling(&self) -> usize {
        lock(&self.pool).filling
    }

    /// Takes a ready container for `env`, if there is one; refills in the background.
    pub(super) fn take_warm(&self, env: &EnvSpec) -> Option<Warm> {
        let mut expired = Vec::new();
        let taken = {
            let mut st = lock(&self.pool);
            let mut taken = None;
            while let Some(mut w) = st.ready.pop_front() {
                // An idle runner prints nothing: anything on its stream (or its end) means the
                // container died, e.g. its attach broke while Docker was away.
                let dead = w.output.next().now_or_never().is_some();
                if dead || w.env != *env || w.born.elapsed() >= Duration::from_secs(IDLE_SECS) {
                    expired.push(w);
                } else {
                    taken = Some(w);
                    break;
                }
            }
            taken
        };
        for w in expired {
            self.remove_later(w.id);
        }
        self.fill();
        taken
    }

    /// Starts making containers until ready + being made reaches the pool size.
    fn fill(&self) {
        if self.settings.pool_size == 0 || self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        let (env, generation, missing) = {
            let mut st = lock(&self.pool);
            let Some(env) = st.env.clone() else { return };
            let have = st.ready.len() + st.filling;
            let missing = self.settings.pool_size.saturating_sub(have);
            st.filling += missing;
            (env, st.generation, missing)
        };
        for _ in 0..missing {
            let me = me.clone();
            let env = env.clone();
            tokio::spawn(async move {
                let made = me.make_warm(&env).await;
                let discard = {
                    let mut st = lock(&me.pool);
                    st.filling -= 1;
                    match made {
                        Ok(w)
                            if st.generation == generation
                                && !me.closed.load(std::sync::atomic::Ordering::SeqCst) =>
                        {
                            st.ready.push_back(w);
                            None
                        }
                        Ok(w) => Some(w.id),
                        Err(e) => {
                            tracing::warn!(environment = %env, error = %e, "could not pre-start a container");
                            None
                        }
                    }
                };
                if let Some(id) = discard {
                    me.remove_later(id);
                }
            });
        }
    }

    /// Creates, attaches and starts one container whose runner waits for a program.
    async fn make_warm(&self, env: &EnvSpec) -> Result<Warm, SandboxError> {
        let volume = self.env_volume(env).await?;
        let image = self.settings.images.for_type(env.env_type);
        let policy = RunPolicy {
            purpose: Purpose::Run,
            image,
            env,
            env_volume: &volume,
            limits: &self.settings.run_limits,
            run_as: self.settings.run_as,
            host_workdir: &self.settings.host_workdir,
            workdir: &self.settings.workdir,
            install: None,
            idle_secs: IDLE_SECS,
            preimport: &self.settings.preimport,
            instance: &self.instance,
            now_unix: unix_now(),
        };
        let name = format!("{WARM_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let id = match self
            .docker
            .create(policy::container_body(&policy), Some(&name))
            .await?
        {
            Created::Id(id) => id,
            Created::ImageMissing => return Err(self.image_missing(env)),
            Created::NameTaken => {
                return Err(SandboxError::Docker {
                    op: "create a container",
                    container: None,
                    detail: "the generated name was taken".to_string(),
                });
            }
        };
        let started = async {
            let (output, input) = self.docker.attach(&id).await?;
            self.docker.start(&id).await?;
            Ok::<_, SandboxError>((output, input))
        };
        match started.await {
            Ok((output, input)) => Ok(Warm {
                id,
                output,
                input,
                env: env.clone(),
                born: Instant::now(),
            }),
            Err(e) => {
                self.remove_later(id);
                Err(e)
            }
        }
    }
}
