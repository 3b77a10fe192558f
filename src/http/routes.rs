//! The router: which path gets which guard, and the small endpoints. `/mcp` and `/metrics` need
//! a token; `/healthz` and the RFC 9728 metadata do not; the Origin check covers everything.
//! Also builds rmcp's streamable HTTP service with its settings (keep-alives, sessions, Host).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use rmcp::ServerHandler;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use super::Hooks;
use super::files;
use super::guard::{self, Access, METADATA_PATH};
use super::listener::Drain;
use super::mcp::{self, Endpoint};
use super::sessions::Sessions;
use crate::config::ServiceSettings;
use crate::metrics::{Exporter, set_gauges};

/// How often an open SSE stream gets a keep-alive comment, so that proxies and clients do not
/// take a long call for a dead connection.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long `/healthz` waits for the health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the endpoints share.
pub struct App {
    pub access: Arc<Access>,
    pub mcp: Endpoint,
    hooks: Hooks,
    /// What `/files` needs (a copy of `hooks.files`).
    pub files: files::FileAccess,
    exporter: Exporter,
    /// Fired after the shutdown grace: rmcp ends every session and cancels their calls.
    cancel: CancellationToken,
    grace: Duration,
}

impl App {
    pub fn new<S, F>(
        settings: &ServiceSettings,
        addr: SocketAddr,
        limit: usize,
        factory: F,
        hooks: Hooks,
        exporter: Exporter,
    ) -> Arc<Self>
    where
        S: ServerHandler + Send + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let cancel = CancellationToken::new();
        let sessions = Arc::new(Sessions::new(settings.max_http_clients));
        let config = rmcp_config(addr, limit, cancel.clone());
        let service =
            StreamableHttpService::new(move || Ok(factory()), Arc::clone(&sessions), config);
        let service = ServiceExt::<Request>::map_response(service, |r| r.map(Body::new));
        Arc::new(App {
            access: Arc::new(Access::new(
                settings.tokens.clone(),
                settings.allowed_origins.clone(),
                addr,
            )),
            mcp: Endpoint {
                service: BoxCloneSyncService::new(service),
                sessions,
                limit,
                calls: TaskTracker::new(),
            },
            files: hooks.files.clone(),
            hooks,
            exporter,
            cancel,
            grace: settings.shutdown_grace,
        })
    }

    /// What the listener needs to shut down.
    pub fn drain(&self) -> Drain {
        Drain {
            calls: self.mcp.calls.clone(),
            grace: self.grace,
            stop_calls: self.hooks.stop_calls.clone(),
            cancel: self.cancel.clone(),
        }
    }
}

/// rmcp's settings. Host checking (DNS rebinding) matters for a loopback server: it accepts
/// only loopback names. A server on another address is reached by names it cannot know, and
/// needs tokens there (or an explicit --allow-unauthenticated), so any Host is accepted. The
/// Origin check is ours (`guard`), for a JSON 403 on every path. Legacy session mode stays on
/// so 2025-revision clients (the Python SDK) keep working; 2026 clients are served statelessly.
fn rmcp_config(
    addr: SocketAddr,
    limit: usize,
    cancel: CancellationToken,
) -> StreamableHttpServerConfig {
    let config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(SSE_KEEP_ALIVE))
        .with_legacy_session_mode(true)
        .with_cancellation_token(cancel)
        .with_max_request_body_bytes(limit)
        .disable_allowed_origins();
    if addr.ip().is_loopback() {
        config.with_allowed_hosts(["localhost", "127.0.0.1", "::1"])
    } else {
        config.disable_allowed_hosts()
    }
}

/// The routes and their guards.
pub fn router(app: Arc<App>) -> Router {
    let access = Arc::clone(&app.access);
    Router::new()
        .route("/mcp", any(mcp::handle))
        .route("/metrics", get(metrics))
        .route(
            "/files/{name}",
            get(files::get)
                .put(files::put)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route_layer(from_fn_with_state(Arc::clone(&access), guard::authenticate))
        .route("/healthz", get(health))
        .route(METADATA_PATH, get(metadata))
        .route(&format!("{METADATA_PATH}/mcp"), get(metadata))
        .layer(from_fn_with_state(access, guard::check_origin))
        .with_state(app)
}

/// `GET /healthz`: 200 when Docker answers and the active environment's image exists.
async fn health(State(app): State<Arc<App>>) -> Response {
    let reason = match tokio::time::timeout(HEALTH_TIMEOUT, (app.hooks.health)()).await {
        Ok(Ok(())) => return Json(json!({ "status": "ok" })).into_response(),
        Ok(Err(reason)) => reason,
        Err(_) => format!("the health check did not answer within {HEALTH_TIMEOUT:?}"),
    };
    let body = json!({ "status": "unavailable", "reason": reason });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text, gauges read now.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let gauges = (app.hooks.gauges)().await;
    set_gauges(gauges, app.mcp.sessions.count().await);
    let content_type = [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    (content_type, app.exporter.render()).into_response()
}

/// `GET /.well-known/oauth-protected-resource[/mcp]`: the RFC 9728 resource metadata.
async fn metadata(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let base = app.access.base_url(&headers);
    Json(json!({
        "resource": format!("{base}/mcp"),
        "resource_name": "mcp-code-executor",
        "bearer_methods_supported": ["header"],
    }))
    .into_response()
}
