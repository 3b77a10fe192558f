//! The router in process (no socket, no Docker): guards, limits, endpoints, with a trivial MCP
//! handler.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::guard::{Access, authenticate};
use super::routes::{App, router};
use super::{HealthCheck, Hooks};
use crate::config::{ServiceSettings, Tokens, Transport, parse_tokens_file};
use crate::metrics::{Gauges, install};
use crate::principal::Principal;

/// An MCP server with no tools: enough for `initialize`.
#[derive(Clone)]
struct Bare;
impl rmcp::ServerHandler for Bare {}

fn settings(tokens: Tokens, max_clients: usize) -> ServiceSettings {
    ServiceSettings {
        transport: Transport::Http,
        listen: "127.0.0.1:8080".parse().unwrap(),
        tokens,
        allowed_origins: vec!["https://app.example.com".into()],
        allow_unauthenticated: false,
        shutdown_grace: std::time::Duration::from_secs(1),
        max_http_clients: max_clients,
    }
}

fn tokens() -> Tokens {
    parse_tokens_file("alice a-token\nbob b-token\n", "t").unwrap()
}

fn app_with(tokens: Tokens, max_clients: usize, health: HealthCheck) -> Router {
    let hooks = Hooks {
        health,
        gauges: Arc::new(|| Box::pin(async { Gauges::default() })),
        stop_calls: tokio_util::sync::CancellationToken::new(),
        files: crate::http::FileAccess {
            storage_of: Arc::new(|_| Err("no storage in these tests".to_string())),
            max_bytes: 1000,
        },
    };
    let s = settings(tokens, max_clients);
    let app = App::new(&s, s.listen, 1000, || Bare, hooks, install().unwrap());
    router(app)
}

fn app() -> Router {
    app_with(tokens(), 1, Arc::new(|| Box::pin(async { Ok(()) })))
}

fn initialize() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
    .to_string()
}

fn post(body: impl Into<Body>, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::post("/mcp")
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body.into()).unwrap()
}

fn get_req(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::get(path).header("host", "127.0.0.1:8080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Body::empty()).unwrap()
}

async fn text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn json_of(resp: Response<Body>) -> Value {
    serde_json::from_str(&text(resp).await).unwrap()
}

#[tokio::test]
async fn no_or_wrong_token_is_401_with_the_metadata_pointer() {
    let resp = app().oneshot(post(initialize(), &[])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge,
        "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource\""
    );
    let wrong = [("authorization", "Bearer nope")];
    let resp = app().oneshot(post(initialize(), &wrong)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.ends_with(", error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(json_of(resp).await["error"], "unauthorized");
    let resp = app().oneshot(get_req("/metrics", &[])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_opens_a_session_until_the_cap() {
    let router = app();
    let auth = [("authorization", "Bearer a-token")];
    let resp = router
        .clone()
        .oneshot(post(initialize(), &auth))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("mcp-session-id"));
    let body = text(resp).await;
    assert!(body.contains("\"protocolVersion\""), "{body}");
    // MAX_HTTP_CLIENTS = 1: the next session is refused.
    let resp = router
        .clone()
        .oneshot(post(initialize(), &auth))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json_of(resp).await;
    assert_eq!(body["error"], "too_many_clients");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("MAX_HTTP_CLIENTS")
    );
    let resp = router.oneshot(get_req("/metrics", &auth)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let metrics = text(resp).await;
    assert!(metrics.contains("mce_http_clients 1"), "{metrics}");
    assert!(metrics.contains("mce_rejected_requests_total{reason=\"too_many_clients\"}"));
}

#[tokio::test]
async fn foreign_origins_are_403_everywhere() {
    let auth = ("authorization", "Bearer a-token");
    for origin in [
        "http://evil.example",
        "null",
        "https://app.example.com:8443",
    ] {
        let resp = app()
            .oneshot(post(initialize(), &[auth, ("origin", origin)]))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(json_of(resp).await["error"], "forbidden_origin");
        let resp = app()
            .oneshot(get_req("/healthz", &[("origin", origin)]))
            .await;
        assert_eq!(resp.unwrap().status(), StatusCode::FORBIDDEN);
    }
    for origin in ["http://localhost:5173", "https://app.example.com"] {
        let resp = app()
            .oneshot(post(initialize(), &[auth, ("origin", origin)]))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{origin}");
    }
}

#[tokio::test]
async fn oversized_and_malformed_bodies() {
    let auth = ("authorization", "Bearer a-token");
    // MAX_CODE_SIZE 1000: the limit is 2000 + 64 KiB.
    let big = "x".repeat(2000 + 65536 + 1);
    let resp = app().oneshot(post(big.clone(), &[auth])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(resp).await["error"], "too_large");
    // Without Content-Length (streamed), the limit holds while reading.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let resp = app()
        .oneshot(post(Body::from_stream(stream), &[auth]))
        .await;
    assert_eq!(resp.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = app().oneshot(post("{oops", &[auth])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["error"]["code"], -32700);
    let resp = app()
        .oneshot(post(r#"{"id":3,"x":1}"#, &[auth]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = json_of(resp).await;
    assert_eq!(
        (body["id"].clone(), body["error"]["code"].clone()),
        (json!(3), json!(-32600))
    );
}

#[tokio::test]
async fn health_and_metadata_need_no_token() {
    let resp = app().oneshot(get_req("/healthz", &[])).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await, json!({"status": "ok"}));
    let down: HealthCheck = Arc::new(|| Box::pin(async { Err("Docker is away".to_string()) }));
    let resp = app_with(tokens(), 1, down)
        .oneshot(get_req("/healthz", &[]))
        .await;
    let resp = resp.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let expected = json!({"status": "unavailable", "reason": "Docker is away"});
    assert_eq!(json_of(resp).await, expected);
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let resp = app().oneshot(get_req(path, &[])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let meta = json_of(resp).await;
        assert_eq!(meta["resource"], "http://127.0.0.1:8080/mcp");
        assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
    }
}

#[tokio::test]
async fn the_principal_is_in_the_request_extensions() {
    let access = Arc::new(Access::new(
        tokens(),
        vec![],
        "127.0.0.1:1".parse().unwrap(),
    ));
    let who = Router::new()
        .route(
            "/",
            get(|Extension(p): Extension<Principal>| async move { p.to_string() }),
        )
        .layer(from_fn_with_state(access, authenticate));
    for (token, name) in [("a-token", "alice"), ("b-token", "bob")] {
        let auth = format!("Bearer {token}");
        let req = Request::get("/")
            .header("authorization", auth)
            .body(Body::empty());
        let resp = who.clone().oneshot(req.unwrap()).await.unwrap();
        assert_eq!(text(resp).await, name);
    }
    // Without tokens configured (loopback), every request is `default`.
    let open = Arc::new(Access::new(
        Tokens::default(),
        vec![],
        "127.0.0.1:1".parse().unwrap(),
    ));
    let who = Router::new()
        .route(
            "/",
            get(|Extension(p): Extension<Principal>| async move { p.to_string() }),
        )
        .layer(from_fn_with_state(open, authenticate));
    let resp = who
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(text(resp.unwrap()).await, "default");
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_loopback() {
    let auth = ("authorization", "Bearer a-token");
    let mut req = post(initialize(), &[auth]);
    req.headers_mut()
        .insert("host", "evil.example:8080".parse().unwrap());
    let resp = app().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}
