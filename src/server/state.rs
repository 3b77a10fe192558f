//! One world's state (see `worlds`): its settings (with its own storage folder), storage,
//! sandbox, active environment and runs. Over stdio the only one; over HTTP one per principal.

use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use super::background::Runs;
use crate::config::{Config, RUNS_STATE_DIR, SESSIONS_STATE_DIR, StorageMode};
use crate::environment::Environments;
use crate::error::{Error, StorageError};
use crate::principal::Principal;
use crate::sandbox::copy::{COPY_WORKDIR, CopySettings};
use crate::sandbox::engine::ContainerEngine;
use crate::sandbox::lifecycle::Lifecycle;
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::storage::Storage;

/// One world's state: its settings, storage folder, sandbox, active environment and runs.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub storage: Arc<Storage>,
    pub sandbox: Arc<Sandbox>,
    pub(super) envs: Mutex<Environments>,
    /// The server's [`super::Worlds::stopping`]: a run cancelled once it fired was stopped by
    /// the shutdown, not by its client.
    stopping: CancellationToken,
    /// The world's runs (long runs polled with get_run).
    pub runs: Runs,
}

impl State {
    /// The one world of a server without principals (stdio): the storage folder's root.
    pub fn new(config: Config, engine: Arc<dyn ContainerEngine>) -> Result<Self, Error> {
        Self::following(config, engine, &CancellationToken::new())
    }

    /// [`State::new`], its runs stopping when `stopping` fires (the server shuts down).
    pub fn following(
        config: Config,
        engine: Arc<dyn ContainerEngine>,
        stopping: &CancellationToken,
    ) -> Result<Self, Error> {
        let life = Lifecycle::new(engine, config.max_concurrent_runs);
        Self::build(config, None, life, 0, stopping)
    }

    /// `principal`'s world on a server with several: its own storage subfolder
    /// (`<storage>/<principal>/`, with its own session records), environment volumes, active
    /// environment, pool and share of the runs; the instance and its slots are `life`'s.
    pub fn for_principal(
        base: &Config,
        principal: &Principal,
        life: Lifecycle,
        stopping: &CancellationToken,
    ) -> Result<Self, Error> {
        let mut config = base.clone();
        config.storage_dir = base.storage_dir.join(principal.as_str());
        config.host_storage_dir = base.host_storage_dir.join(principal.as_str());
        config.sessions.state_dir = config.storage_dir.join(SESSIONS_STATE_DIR);
        config.runs.state_dir = config.storage_dir.join(RUNS_STATE_DIR);
        std::fs::create_dir_all(&config.storage_dir).map_err(|source| StorageError::Io {
            what: "cannot create the principal's storage folder",
            path: config.storage_dir.clone(),
            source,
        })?;
        let share = base.max_runs_per_principal;
        Self::build(config, Some(principal), life, share, stopping)
    }

    fn build(
        config: Config,
        principal: Option<&Principal>,
        life: Lifecycle,
        max_runs: usize,
        stopping: &CancellationToken,
    ) -> Result<Self, Error> {
        let storage = Storage::new(
            config.storage_dir.clone(),
            config.limits.max_code_bytes,
            config.run_as,
        )?;
        let copy = (config.storage_mode == StorageMode::Copy).then(|| CopySettings {
            root: config.storage_dir.clone(),
            max_file_bytes: config.limits.max_file_bytes.max(0) as u64,
            max_total_bytes: config.max_copy_bytes,
        });
        let sandbox = Sandbox::in_world(
            SandboxSettings {
                images: config.images.clone(),
                run_as: config.run_as,
                host_workdir: match copy {
                    Some(_) => String::new(),
                    None => config.host_storage_dir.to_string_lossy().into_owned(),
                },
                workdir: match copy {
                    Some(_) => COPY_WORKDIR.to_string(),
                    None => config.storage_dir.to_string_lossy().into_owned(),
                },
                install: config.install_source.clone(),
                env_limits: config.install_limits.clone(),
                max_concurrent: config.max_concurrent_runs,
                run_limits: config.limits.clone(),
                pool_size: config.pool_size,
                preimport: config.preimport.clone(),
                sessions: config.sessions.clone(),
                principal: principal.map(|p| p.as_str().to_string()),
                max_runs,
                copy: copy.clone(),
                runtime: config.runtime.clone(),
            },
            life,
        );
        Ok(State {
            envs: Mutex::new(config.environments.clone()),
            runs: Runs::open(config.runs.clone(), sandbox.instance()),
            config,
            storage: Arc::new(storage),
            sandbox,
            stopping: stopping.clone(),
        })
    }

    /// Whether the server is stopping the calls still running (shutting down).
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Starts filling the pool for the active environment (in the background).
    pub fn warm_up(&self) {
        self.sandbox.warm_up(self.envs().active_spec());
    }

    pub(super) fn envs(&self) -> Environments {
        self.envs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
