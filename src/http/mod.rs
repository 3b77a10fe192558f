//! The HTTP service (`--transport http`): MCP over streamable HTTP at `/mcp` (rmcp's server
//! transport), behind our own guards, plus `/healthz`, `/metrics` and the RFC 9728 metadata.
//! Generic over the MCP handler (a factory makes one per MCP session), so nothing below knows
//! which transport is in use.
//!
//! Rooms:
//! - `listener`: binding, the accept loop, connection timeouts, graceful shutdown.
//! - `routes`: the router and the small endpoints (`/healthz`, `/metrics`, metadata).
//! - `mcp`: the `/mcp` endpoint: body limit (413), malformed JSON-RPC, the session cap (503),
//!   calls in flight, then rmcp.
//! - `guard`: Origin (403) and bearer-token (401) middleware; the principal goes into the
//!   request's extensions.
//! - `sessions`: rmcp's session manager, counted, and cancelling a call whose client left.
//! - `files`: `/files/{name}`, streaming downloads and uploads of a principal's files.
//! - `reply`: the JSON error responses.
//! - `tests`: the router in process (guards, limits, endpoints), no socket, no Docker.

mod files;
mod guard;
mod listener;
mod mcp;
mod reply;
mod routes;
mod sessions;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rmcp::ServerHandler;

use crate::config::ServiceSettings;
use crate::error::HttpError;
use crate::metrics::GaugeSource;

pub use files::{FileAccess, StorageOf};
pub use mcp::body_limit;

/// Says whether the server can run code: `Err(reason)` when Docker does not answer or the
/// active environment's image is missing (injected by the application).
pub type HealthCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What the HTTP layer asks the rest of the application.
#[derive(Clone)]
pub struct Hooks {
    pub health: HealthCheck,
    pub gauges: GaugeSource,
    /// Fired when the shutdown grace is over: the calls still running stop and answer that the
    /// server is shutting down, before their sessions end.
    pub stop_calls: tokio_util::sync::CancellationToken,
    /// Where `/files` reads and writes.
    pub files: files::FileAccess,
}

/// Serves HTTP on `settings.listen` until `shutdown` completes; then stops accepting, lets
/// calls in flight finish for up to `settings.shutdown_grace`, cancels the rest and returns
/// (the caller removes containers). `factory` makes the MCP handler of each MCP session.
/// `max_code_bytes` sets the request body limit (see [`body_limit`]).
pub async fn serve<S, F>(
    settings: &ServiceSettings,
    max_code_bytes: usize,
    factory: F,
    hooks: Hooks,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), HttpError>
where
    S: ServerHandler + Send + 'static,
    F: Fn() -> S + Send + Sync + 'static,
{
    let exporter = crate::metrics::install()?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: settings.listen,
        source,
    })?;
    log_access(settings, addr);
    let app = routes::App::new(
        settings,
        addr,
        body_limit(max_code_bytes),
        factory,
        hooks,
        exporter,
    );
    let router = routes::router(app.clone());
    listener::run(listener, router, shutdown, app.drain()).await;
    Ok(())
}

/// Logs where the server listens (one line; tests read the address from it) and who may call.
fn log_access(settings: &ServiceSettings, addr: SocketAddr) {
    tracing::info!("listening on http://{addr}/mcp");
    let principals: Vec<&str> = settings
        .tokens
        .entries()
        .iter()
        .map(|e| e.principal.as_str())
        .collect();
    if !principals.is_empty() {
        tracing::info!(
            "bearer tokens required; principals: {}",
            principals.join(", ")
        );
    } else if addr.ip().is_loopback() {
        tracing::info!(
            "no AUTH_TOKEN or AUTH_TOKENS_FILE: requests are served as principal \"default\" \
             without a token (loopback only)"
        );
    } else {
        tracing::warn!(
            "serving {addr} WITHOUT authentication (--allow-unauthenticated): anyone who \
             reaches this port can run code as principal \"default\""
        );
    }
}
