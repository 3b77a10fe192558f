//! Serving over HTTP: the HTTP layer (`crate::http`) with a server value per MCP session over
//! every principal's world, the health check (Docker answers, the active environment's image
//! exists) and the gauges read at each `/metrics` scrape.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::error::Error;
use crate::http;
use crate::metrics::{GaugeSource, Gauges};
use crate::sandbox::engine::ContainerEngine;
use crate::sandbox::labels::LABEL_INSTANCE;
use crate::server::{CodeExecutor, Worlds};

/// Serves MCP over HTTP until SIGTERM or SIGINT (then calls in flight get `SHUTDOWN_GRACE`).
pub async fn serve_http(
    worlds: Arc<Worlds>,
    engine: Arc<dyn ContainerEngine>,
) -> Result<(), Error> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let hooks = http::Hooks {
        health: health_check(Arc::clone(&worlds)),
        gauges: gauge_source(Arc::clone(&worlds), engine),
        stop_calls: worlds.stopping().clone(),
        files: file_access(&worlds),
    };
    let factory = {
        let worlds = Arc::clone(&worlds);
        move || CodeExecutor::new(Arc::clone(&worlds))
    };
    let config = &worlds.anchor().config;
    let max_code = config.limits.max_code_bytes;
    http::serve(&config.service, max_code, factory, hooks, shutdown).await?;
    Ok(())
}

/// `/files`: each principal's storage folder (its world, opened on first use), MAX_FILE_SIZE.
fn file_access(worlds: &Arc<Worlds>) -> http::FileAccess {
    let max_bytes = worlds.anchor().config.limits.max_file_bytes as u64;
    let worlds = Arc::clone(worlds);
    let storage_of: http::StorageOf = Arc::new(move |principal| {
        (worlds.world(principal, false))
            .map(|w| Arc::clone(&w.storage))
            .map_err(|e| e.to_string())
    });
    http::FileAccess {
        storage_of,
        max_bytes,
    }
}

/// Healthy when Docker answers, offers the configured runtime and has the image of the
/// configured environment.
fn health_check(worlds: Arc<Worlds>) -> http::HealthCheck {
    Arc::new(move || {
        let worlds = Arc::clone(&worlds);
        Box::pin(async move {
            let anchor = worlds.anchor();
            let env = anchor.config.environments.active_spec();
            anchor
                .sandbox
                .check_runtime()
                .await
                .map_err(|e| e.to_string())?;
            anchor
                .sandbox
                .check_image(env)
                .await
                .map_err(|e| e.to_string())
        })
    })
}

/// Containers of this server, ready pool containers and live sessions of every world.
fn gauge_source(worlds: Arc<Worlds>, engine: Arc<dyn ContainerEngine>) -> GaugeSource {
    Arc::new(move || {
        let (worlds, engine) = (Arc::clone(&worlds), Arc::clone(&engine));
        Box::pin(async move {
            let instance = worlds.lifecycle().instance().to_string();
            let live = engine.list(LABEL_INSTANCE, &instance).await;
            let mut pool_ready = 0;
            let mut sessions = 0;
            for world in worlds.all() {
                pool_ready += world.sandbox.pool_ready();
                sessions += world.sandbox.list_sessions().await.map_or(0, |s| s.len());
            }
            Gauges {
                live_containers: live.map_or(0, |l| l.len()) as u64,
                pool_ready: pool_ready as u64,
                sessions: sessions as u64,
            }
        })
    })
}
