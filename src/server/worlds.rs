//! Worlds: whose files, environments, packages and sessions a call sees. Over stdio there is
//! one world, the storage folder itself. Over HTTP each principal has its own world (its
//! storage subfolder, environment volumes, active environment, pool, sessions and share of
//! the runs), made on its first call and on start for every principal that has live sessions;
//! no call reaches another principal's world. The anchor world (the storage folder's root)
//! holds what belongs to the server as a whole: the sentinel, the sweeps for leftovers and the
//! health check; over HTTP it serves no calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rmcp::RoleServer;
use rmcp::service::RequestContext;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::State;
use crate::config::{Config, RUNS_STATE_DIR, SESSIONS_STATE_DIR};
use crate::error::Error;
use crate::principal::Principal;
use crate::sandbox::engine::ContainerEngine;
use crate::sandbox::lifecycle::Lifecycle;

/// Every world of one server.
#[derive(Debug)]
pub struct Worlds {
    base: Config,
    anchor: Arc<State>,
    /// `None`: one world (stdio); otherwise the worlds made so far, by principal.
    principals: Option<Mutex<HashMap<Principal, Arc<State>>>>,
    /// Fired when the server stops the calls still running (the end of the shutdown grace).
    stopping: CancellationToken,
}

impl Worlds {
    /// One world, the storage folder's root (stdio).
    pub fn single(config: Config, engine: Arc<dyn ContainerEngine>) -> Result<Arc<Self>, Error> {
        let stopping = CancellationToken::new();
        let anchor = Arc::new(State::following(config.clone(), engine, &stopping)?);
        Ok(Arc::new(Worlds {
            base: config,
            anchor,
            principals: None,
            stopping,
        }))
    }

    /// One world per principal (HTTP), each in `<storage>/<principal>/`.
    pub fn per_principal(
        config: Config,
        engine: Arc<dyn ContainerEngine>,
    ) -> Result<Arc<Self>, Error> {
        let stopping = CancellationToken::new();
        let anchor = Arc::new(State::following(config.clone(), engine, &stopping)?);
        Ok(Arc::new(Worlds {
            base: config,
            anchor,
            principals: Some(Mutex::new(HashMap::new())),
            stopping,
        }))
    }

    /// The world of the storage folder's root: the only one over stdio.
    pub fn anchor(&self) -> &Arc<State> {
        &self.anchor
    }

    /// Fired when the server stops the calls still running: each call's cancellation token
    /// follows it (see [`Worlds::link`]).
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Whether the server has stopped the calls still running (shutting down).
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// `ctx` with a cancellation token that fires when the client cancels the call or when
    /// the server stops the calls still running; the guard ends the link when the call ends.
    pub fn link(
        &self,
        mut ctx: RequestContext<RoleServer>,
    ) -> (RequestContext<RoleServer>, DropGuard) {
        let linked = self.stopping.child_token();
        let (client, call) = (ctx.ct.clone(), linked.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = client.cancelled() => call.cancel(),
                _ = call.cancelled() => {}
            }
        });
        ctx.ct = linked.clone();
        (ctx, linked.drop_guard())
    }

    /// The lifecycle (instance, containers, slots) every world shares.
    pub fn lifecycle(&self) -> &Lifecycle {
        self.anchor.sandbox.lifecycle()
    }

    /// The world a call of `ctx` works in: over HTTP, that of the principal the HTTP layer put
    /// into the request (made, and its pool filled, on first use).
    pub fn world_of(&self, ctx: &RequestContext<RoleServer>) -> Result<Arc<State>, Error> {
        if self.principals.is_none() {
            return Ok(Arc::clone(&self.anchor));
        }
        let principal = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .cloned()
            .ok_or(Error::NoPrincipal)?;
        self.world(&principal, true)
    }

    /// `principal`'s world, made if this server has not made it yet: its live sessions are
    /// adopted, and its pool is filled when `warm` (a call is coming).
    pub fn world(&self, principal: &Principal, warm: bool) -> Result<Arc<State>, Error> {
        let Some(map) = &self.principals else {
            return Ok(Arc::clone(&self.anchor));
        };
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(world) = map.get(principal) {
            return Ok(Arc::clone(world));
        }
        let life = self.lifecycle().clone();
        let world = State::for_principal(&self.base, principal, life, &self.stopping)?;
        let world = Arc::new(world);
        map.insert(principal.clone(), Arc::clone(&world));
        tracing::info!(principal = %principal, "a principal's world is open");
        let adopting = Arc::clone(&world);
        tokio::spawn(async move {
            match adopting.sandbox.adopt_sessions().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("found {n} live session(s) of a principal"),
                Err(e) => tracing::warn!("could not look for a principal's sessions: {e}"),
            }
            if warm {
                adopting.warm_up();
            }
        });
        Ok(world)
    }

    /// Every world made so far (the anchor first).
    pub fn all(&self) -> Vec<Arc<State>> {
        let mut all = vec![Arc::clone(&self.anchor)];
        if let Some(map) = &self.principals {
            let map = map.lock().unwrap_or_else(PoisonError::into_inner);
            all.extend(map.values().cloned());
        }
        all
    }

    /// Whether this server has one world per principal.
    pub fn per_principal_mode(&self) -> bool {
        self.principals.is_some()
    }

    /// Opens the world of every principal whose folder holds session records or runs another
    /// server left going, so that their live sessions and runs are adopted (and sessions reaped
    /// when idle) although the principal has not called yet. Over stdio, nothing to do.
    pub fn open_worlds_with_sessions(&self) {
        if self.principals.is_none() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.base.storage_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(principal) = Principal::new("CODE_STORAGE_DIR", name) else {
                continue;
            };
            let path = entry.path();
            let runs_left = has_resumable_runs(&path.join(RUNS_STATE_DIR));
            if (path.join(SESSIONS_STATE_DIR).is_dir() || runs_left)
                && let Err(e) = self.world(&principal, false)
            {
                tracing::warn!("could not open the world of {principal}: {e}");
            }
        }
    }

    /// Pre-started containers being made in any world.
    pub fn pool_filling(&self) -> usize {
        self.all().iter().map(|w| w.sandbox.pool_filling()).sum()
    }
}

/// Whether a runs folder holds what following a run needs (runs left going by a server).
fn has_resumable_runs(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".follow.json"))
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Cli;
    use crate::sandbox::fake::FakeEngine;

    fn config(dir: &std::path::Path) -> Config {
        let dir = dir.to_str().unwrap();
        let cli = Cli::try_parse_from(["mce", "--storage-dir", dir, "--pool-size", "0"]).unwrap();
        Config::from_cli(cli).unwrap()
    }

    #[tokio::test]
    async fn each_principal_has_its_own_folder_sessions_and_share_of_one_instance() {
        let tmp = tempfile::tempdir().unwrap();
        let base = config(tmp.path());
        let worlds = Worlds::per_principal(base.clone(), FakeEngine::new()).unwrap();
        let a = Principal::new("T", "team-a").unwrap();
        let b = Principal::new("T", "team-b").unwrap();
        let wa = worlds.world(&a, false).unwrap();
        let wb = worlds.world(&b, false).unwrap();
        assert!(Arc::ptr_eq(&wa, &worlds.world(&a, false).unwrap()));
        assert_eq!(wa.storage.root(), base.storage_dir.join("team-a"));
        assert_eq!(wb.storage.root(), base.storage_dir.join("team-b"));
        assert!(wa.storage.root().is_dir() && wb.storage.root().is_dir());
        assert_eq!(
            wa.config.sessions.state_dir,
            base.storage_dir.join("team-a").join(SESSIONS_STATE_DIR)
        );
        assert_eq!(wa.sandbox.instance(), wb.sandbox.instance());
        assert_eq!(wa.sandbox.instance(), worlds.anchor().sandbox.instance());
        assert_eq!(worlds.all().len(), 3, "the anchor and two principals");
    }

    #[tokio::test]
    async fn one_world_over_stdio_whoever_asks() {
        let tmp = tempfile::tempdir().unwrap();
        let worlds = Worlds::single(config(tmp.path()), FakeEngine::new()).unwrap();
        let a = Principal::new("T", "team-a").unwrap();
        assert!(Arc::ptr_eq(
            &worlds.world(&a, false).unwrap(),
            worlds.anchor()
        ));
        assert!(!tmp.path().join("team-a").exists());
        assert_eq!(worlds.all().len(), 1);
    }

    #[tokio::test]
    async fn worlds_with_session_records_or_runs_left_going_are_opened_on_start() {
        let tmp = tempfile::tempdir().unwrap();
        let base = config(tmp.path());
        std::fs::create_dir_all(base.storage_dir.join("ci").join(SESSIONS_STATE_DIR)).unwrap();
        std::fs::create_dir_all(base.storage_dir.join("idle")).unwrap();
        std::fs::create_dir_all(base.storage_dir.join(".hidden").join(SESSIONS_STATE_DIR)).unwrap();
        let runs = base.storage_dir.join("batch").join(RUNS_STATE_DIR);
        std::fs::create_dir_all(&runs).unwrap();
        std::fs::write(runs.join("run-1.follow.json"), "{}").unwrap();
        let done = base.storage_dir.join("done").join(RUNS_STATE_DIR);
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(done.join("run-1.json"), "{}").unwrap();
        let worlds = Worlds::per_principal(base, FakeEngine::new()).unwrap();
        worlds.open_worlds_with_sessions();
        let mut roots: Vec<_> = worlds
            .all()
            .iter()
            .map(|w| w.storage.root().to_path_buf())
            .collect();
        roots.sort();
        assert_eq!(roots.len(), 3, "the anchor, ci and batch: {roots:?}");
        assert!(roots.iter().any(|r| r.ends_with("ci")), "{roots:?}");
        assert!(
            roots.iter().any(|r| r.ends_with("batch")),
            "runs left going: {roots:?}"
        );
    }
}
