//! The application: what the binary does once its settings are validated — serve MCP on stdio
//! until the client leaves or a signal arrives, or over HTTP until a signal arrives (`service`:
//! one world per principal, health and metrics hooks), then remove every container this server
//! started; or run a maintenance command (`list-envs`, `reset-env`). Wires the Docker engine
//! into the server, and finds the storage folder's host path when the server itself runs in a
//! container.

mod service;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rmcp::ServiceExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Command, Config, Transport};
use crate::environment::{EnvSpec, EnvType};
use crate::error::Error;
use crate::sandbox::docker::DockerEngine;
use crate::sandbox::engine::ContainerEngine;
use crate::sandbox::helpers::volume_matches;
use crate::server::{CodeExecutor, State, Worlds};

/// Runs the maintenance command of `config`, or serves MCP when there is none.
pub async fn main(config: Config) -> Result<(), Error> {
    match config.command.clone() {
        None => serve(config).await,
        Some(Command::ListEnvs) => list_envs(config).await,
        Some(Command::ResetEnv {
            env_type,
            location,
            all,
        }) => reset_envs(config, env_type.as_deref(), location.as_deref(), all).await,
    }
}

async fn list_envs(config: Config) -> Result<(), Error> {
    let state = State::new(config, docker())?;
    for v in state.sandbox.env_volumes().await? {
        println!("{}\t{}\t{}\t{}", v.env_type, v.location, v.image, v.name);
    }
    Ok(())
}

async fn reset_envs(
    config: Config,
    env_type: Option<&str>,
    location: Option<&str>,
    all: bool,
) -> Result<(), Error> {
    let (env_type, location) = match env_type.filter(|_| !all) {
        None => (None, None),
        Some(t) => {
            let t = EnvType::parse(t)?;
            let loc = location.map(|l| EnvSpec::new(t, Some(l))).transpose()?;
            (Some(t), loc.map(|spec| spec.location().to_string()))
        }
    };
    let state = State::new(config, docker())?;
    let mut removed = 0;
    for v in state.sandbox.env_volumes().await? {
        if !volume_matches(&v, env_type, location.as_deref()) {
            continue;
        }
        state.sandbox.remove_env_volume(&v.name).await?;
        println!("reset {} {} ({})", v.env_type, v.location, v.name);
        removed += 1;
    }
    if removed == 0 {
        println!("no environment volume matched; nothing to reset");
    }
    Ok(())
}

/// The container engine the server uses.
fn docker() -> Arc<dyn ContainerEngine> {
    Arc::new(DockerEngine::new())
}

/// When the server runs in a container, the storage directory's host path (what sibling
/// containers must bind-mount) is found from the server's own mounts; HOST_STORAGE_DIR
/// overrides.
async fn discover_host_storage(mut config: Config, engine: &dyn ContainerEngine) -> Config {
    if config.host_storage_given {
        return config;
    }
    let Some(id) = own_container_id() else {
        return config;
    };
    match engine.inspect(&id).await {
        Ok(state) => match host_path_for(&state.mounts, &config.storage_dir) {
            Some(host) => {
                tracing::info!(
                    "running in container {}: the storage directory is {} on the host",
                    &id[..id.len().min(12)],
                    host.display()
                );
                config.host_storage_dir = host;
            }
            None => tracing::warn!(
                "running in a container, but {} is not a mount: files runs write stay in the \
                 server's container; mount a host folder there (-v HOST_DIR:{})",
                config.storage_dir.display(),
                config.storage_dir.display()
            ),
        },
        Err(e) => {
            tracing::warn!("cannot inspect this server's own container ({e}); set HOST_STORAGE_DIR")
        }
    }
    config
}

/// The host path behind `path` inside a container with `mounts` (source, destination): the
/// mount with the longest destination containing `path`.
pub fn host_path_for(mounts: &[(String, String)], path: &Path) -> Option<PathBuf> {
    mounts
        .iter()
        .filter_map(|(source, dest)| {
            let rest = path.strip_prefix(dest).ok()?;
            Some((dest.len(), Path::new(source).join(rest)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, host)| host)
}

/// The id of the container this process runs in, if any (from its mount table, which names
/// the container's own directory, or its hostname).
fn own_container_id() -> Option<String> {
    if !Path::new("/.dockerenv").exists() {
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

/// Serves MCP over stdio until stdin closes, SIGTERM or SIGINT; leaves no container behind.
pub async fn serve(config: Config) -> Result<(), Error> {
    let engine = docker();
    let config = discover_host_storage(config, engine.as_ref()).await;
    if config.storage_defaulted {
        tracing::warn!(
            "CODE_STORAGE_DIR is not set: code and the files it writes go to {}",
            config.storage_dir.display()
        );
    }
    let transport = config.service.transport;
    let worlds = match transport {
        Transport::Stdio => Worlds::single(config, Arc::clone(&engine))?,
        Transport::Http => Worlds::per_principal(config, Arc::clone(&engine))?,
    };
    let state = worlds.anchor();
    tracing::info!(
        storage = %state.config.storage_dir.display(),
        environment = %state.config.environments.active_spec(),
        instance = state.sandbox.instance(),
        "mcp-code-executor ready"
    );
    // Not aborted at shutdown: a sentinel being made must be finished, then swept.
    tokio::spawn(prepare_in_background(Arc::clone(&worlds)));
    let sweeps = tokio::spawn(sweep_periodically(Arc::clone(&worlds)));
    let served = match transport {
        Transport::Stdio => serve_stdio(Arc::clone(&worlds)).await,
        Transport::Http => service::serve_http(Arc::clone(&worlds), engine).await,
    };
    sweeps.abort();
    remove_containers(&worlds).await;
    served
}

/// On shutdown: refuses new runs and removes every container of this server but live sessions
/// (waiting for pre-started containers being made).
async fn remove_containers(worlds: &Arc<Worlds>) {
    stop_runs(worlds).await;
    worlds.lifecycle().close();
    let busy = Arc::clone(worlds);
    match worlds
        .lifecycle()
        .remove_own(move || busy.pool_filling() > 0)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} container(s) still running"),
        Err(e) => tracing::warn!("could not remove this server's containers: {e}"),
    }
}

/// How long runs stopped at shutdown get to record their results.
const RUNS_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Stops the runs still going that another server could not take over (calls still waiting,
/// runs in sessions, installs) and gives them [`RUNS_STOP_WAIT`] to record their results, so
/// get_run after a restart says what happened. Runs in the background go on: their containers
/// stay, and the next server on the same storage folder takes them over.
async fn stop_runs(worlds: &Worlds) {
    worlds.stopping().cancel();
    let mut stopped = Vec::new();
    for world in worlds.all() {
        let (stop, left) = world.runs.stop_or_leave();
        for container in &left {
            worlds.lifecycle().spare(container);
        }
        if !left.is_empty() {
            tracing::info!(
                "leaving {} run(s) going for the next server on this storage folder",
                left.len()
            );
        }
        stopped.extend(stop);
    }
    if stopped.is_empty() {
        return;
    }
    tracing::info!("stopping {} run(s) still going", stopped.len());
    let never = tokio_util::sync::CancellationToken::new();
    let all =
        futures_util::future::join_all(stopped.iter().map(|h| h.wait(RUNS_STOP_WAIT, &never)));
    all.await;
}

/// How often the server sweeps for leftovers (containers of servers that died after this one
/// started, stopped sessions) and reaps idle sessions.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the sentinel, removes leftovers of servers that died (even by SIGKILL), adopts the
/// storage folder's live sessions and fills the pool, in the background, so that `initialize`
/// is answered at once.
async fn prepare_in_background(worlds: Arc<Worlds>) {
    let anchor = worlds.anchor();
    // The engine, told apart once, and the RUNTIME asked for: a RUNTIME the engine would ignore
    // (Podman) or the daemon lacks is said once here; every call that needs a container is
    // refused with the same message (the server still answers, so the client can show it).
    let runtime = anchor.config.runtime.as_deref();
    let checked = match anchor.sandbox.check_engine(runtime).await {
        Ok(kind) => {
            tracing::info!(engine = kind.as_str(), "container engine");
            anchor.sandbox.check_runtime().await
        }
        Err(e) => Err(e),
    };
    match checked {
        Err(e) if !e.is_unavailable() => {
            tracing::error!("{e}");
            sweep(&worlds).await;
            return;
        }
        Err(e) => tracing::debug!("container engine not reachable yet: {e}"),
        Ok(()) => {}
    }
    if let Err(e) = anchor
        .sandbox
        .start_sentinel(anchor.config.environments.active_spec())
        .await
    {
        tracing::warn!("could not start the sentinel container: {e}");
    }
    // Worlds with sessions or runs left going are opened before the first sweep, which takes
    // those runs over before it removes the leftovers of dead servers.
    worlds.open_worlds_with_sessions();
    sweep(&worlds).await;
    if worlds.per_principal_mode() {
        // Each principal's pool fills on its first call.
        return;
    }
    match anchor.sandbox.adopt_sessions().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("found {n} live session(s) of this storage folder"),
        Err(e) => tracing::warn!("could not look for live sessions: {e}"),
    }
    anchor.warm_up();
}

/// Sweeps every [`SWEEP_EVERY`] for as long as the server runs.
async fn sweep_periodically(worlds: Arc<Worlds>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        sweep(&worlds).await;
    }
}

/// One sweep: runs of dead servers (taken over, or recorded lost: before their containers
/// could be swept), leftovers of dead servers, stopped sessions, idle sessions (in every
/// world).
async fn sweep(worlds: &Worlds) {
    for world in worlds.all() {
        crate::server::take_over_runs(&world).await;
    }
    match worlds.anchor().sandbox.remove_leftovers().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} leftover container(s)"),
        Err(e) => tracing::debug!("could not check for leftover containers: {e}"),
    }
    for world in worlds.all() {
        match world.sandbox.reap_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("ended {n} idle session(s)"),
            Err(e) => tracing::debug!("could not end idle sessions: {e}"),
        }
    }
}

/// Serves MCP on stdin/stdout until the client leaves, SIGTERM or SIGINT.
async fn serve_stdio(worlds: Arc<Worlds>) -> Result<(), Error> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let service = CodeExecutor::new(worlds)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::Transport(e.to_string()))?;
    let stop = service.cancellation_token();
    tokio::select! {
        quit = service.waiting() => {
            tracing::info!("client disconnected ({quit:?})");
        }
        _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); stop.cancel(); }
        _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); stop.cancel(); }
    }
    Ok(())
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
        let p = |s: &str| host_path_for(&mounts, Path::new(s));
        assert_eq!(p("/data"), Some("/home/me/code".into()));
        assert_eq!(p("/data/x/y"), Some("/home/me/code/x/y".into()));
        assert_eq!(p("/data/sub/z"), Some("/home/me/code/sub-mount/z".into()));
        assert_eq!(p("/database"), None);
        assert_eq!(p("/elsewhere"), None);
    }
}
