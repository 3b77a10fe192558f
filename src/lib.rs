//! mcp-code-executor: an MCP server (stdio) that runs LLM-written Python in short-lived,
//! locked-down Docker containers and keeps every file in a host folder.
//!
//! Where things live:
//! - [`config`]: settings (CLI flags and environment variables) → validated [`config::Config`].
//! - [`environment`]: the environment kinds, their names/paths and interpreters (pure data).
//! - [`storage`]: the storage directory; confined, no-follow file operations.
//! - [`packages`]: validation of requirements and package names (pure).
//! - [`sandbox`]: running one program in a container (`policy` decides the settings, `docker` is
//!   the only code that talks to Docker, `output` caps what programs print).
//! - [`server`]: the MCP tool handlers; [`server::contract`] is the tool contract as Rust types
//!   (arguments and results; schemas come from them).
//! - [`error`]: typed errors.
//!
//! [`serve`] serves MCP on stdin/stdout until the client leaves or a signal arrives, then removes
//! every container this server started.

pub mod config;
pub mod environment;
pub mod error;
pub mod limits;
pub mod packages;
pub mod sandbox;
pub mod server;
pub mod storage;

use std::sync::Arc;

use rmcp::ServiceExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Command, Config};
use crate::environment::{EnvSpec, EnvType};
use crate::error::Error;
use crate::sandbox::envs::volume_matches;
use crate::server::{CodeExecutor, State};

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
    let state = State::new(config)?;
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
    let state = State::new(config)?;
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

/// When the server runs in a container, the storage directory's host path (what sibling
/// containers must bind-mount) is found from the server's own mounts; HOST_STORAGE_DIR
/// overrides.
async fn discover_host_storage(mut config: Config) -> Config {
    if config.host_storage_given {
        return config;
    }
    let Some(id) = sandbox::own_container_id() else {
        return config;
    };
    match sandbox::docker::DockerApi::new().mounts_of(&id).await {
        Ok(mounts) => match sandbox::host_path_for(&mounts, &config.storage_dir) {
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

/// Serves MCP over stdio until stdin closes, SIGTERM or SIGINT; leaves no container behind.
pub async fn serve(config: Config) -> Result<(), Error> {
    let config = discover_host_storage(config).await;
    if config.storage_defaulted {
        tracing::warn!(
            "CODE_STORAGE_DIR is not set: code and the files it writes go to {}",
            config.storage_dir.display()
        );
    }
    let state = Arc::new(State::new(config)?);
    tracing::info!(
        storage = %state.config.storage_dir.display(),
        environment = %state.config.environments.active_spec(),
        instance = state.sandbox.instance(),
        "mcp-code-executor ready"
    );

    // Leftovers of servers that died (even by SIGKILL) are removed and the pool is filled in
    // the background, so that `initialize` is answered at once.
    let cleaner = Arc::clone(&state);
    tokio::spawn(async move {
        if let Err(e) = cleaner
            .sandbox
            .start_sentinel(cleaner.config.environments.active_spec())
            .await
        {
            tracing::warn!("could not start the sentinel container: {e}");
        }
        match cleaner.sandbox.remove_leftovers().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} leftover container(s) of earlier servers"),
            Err(e) => tracing::warn!("could not check for leftover containers: {e}"),
        }
        cleaner.warm_up();
    });

    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let serving = async {
        let service = CodeExecutor::new(Arc::clone(&state))
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
        Ok::<(), Error>(())
    };
    let served = serving.await;

    state.sandbox.close();
    match state.sandbox.remove_own().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} container(s) still running"),
        Err(e) => tracing::warn!("could not remove this server's containers: {e}"),
    }
    served
}
