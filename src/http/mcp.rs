//! The `/mcp` endpoint, in front of rmcp's streamable HTTP service. A POST is read whole first
//! (bounded in size and time: 413 or 408, so nothing is half-stored), checked to be a JSON-RPC
//! message (otherwise a JSON-RPC error, and the server serves on), admitted when it would open
//! a session past `MAX_HTTP_CLIENTS` (503), and counted as a call in flight (for the shutdown
//! grace) until its response has been sent. GET and DELETE go to rmcp as they are.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rmcp::model::ClientJsonRpcMessage;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use super::reply::{self, INVALID_REQUEST, PARSE_ERROR};
use super::routes::App;
use super::sessions::Sessions;
use crate::metrics::request_rejected;

/// The margin over `MAX_CODE_SIZE` for the JSON-RPC framing and the other arguments.
const FRAMING_MARGIN: usize = 64 * 1024;
/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The header that names an MCP session.
const SESSION_HEADER: &str = "mcp-session-id";

/// The largest request body: a tool call carries at most `MAX_CODE_SIZE` bytes of code or
/// content, which JSON escaping can double (a newline, quote or backslash is two bytes;
/// base64 content grows by a third), plus [`FRAMING_MARGIN`] for the rest of the message.
pub fn body_limit(max_code_bytes: usize) -> usize {
    max_code_bytes
        .saturating_mul(2)
        .saturating_add(FRAMING_MARGIN)
}

/// rmcp's service, type-erased.
pub type McpService = BoxCloneSyncService<Request, Response, Infallible>;

/// The `/mcp` endpoint's parts.
#[derive(Clone)]
pub struct Endpoint {
    pub service: McpService,
    pub sessions: Arc<Sessions>,
    /// Bytes a request body may have.
    pub limit: usize,
    /// Calls in flight (POSTs whose response is not finished).
    pub calls: TaskTracker,
}

/// Why `/mcp` refused a POST before rmcp saw it.
#[derive(Debug)]
enum Refused {
    TooLarge { limit: usize },
    TooSlow,
    Unreadable(String),
    NotJson(String),
    NotJsonRpc { id: Value, reason: String },
    TooManyClients { max: usize },
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::TooLarge { limit } => {
                request_rejected("too_large");
                let message = format!(
                    "the request body is over {limit} bytes (twice MAX_CODE_SIZE plus 64 KiB): \
                     send less code or content per call, or raise MAX_CODE_SIZE"
                );
                reply::error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            Refused::TooSlow => reply::error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
            ),
            Refused::Unreadable(e) => reply::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("could not read the request body: {e}"),
            ),
            Refused::NotJson(e) => {
                reply::jsonrpc_error(PARSE_ERROR, Value::Null, format!("Parse error: {e}"))
            }
            Refused::NotJsonRpc { id, reason } => reply::jsonrpc_error(
                INVALID_REQUEST,
                id,
                format!("Invalid Request: not a JSON-RPC message this server accepts ({reason})"),
            ),
            Refused::TooManyClients { max } => {
                request_rejected("too_many_clients");
                let message = format!(
                    "{max} MCP sessions are open (MAX_HTTP_CLIENTS): try again when a client \
                     has left, or raise MAX_HTTP_CLIENTS"
                );
                reply::error(StatusCode::SERVICE_UNAVAILABLE, "too_many_clients", message)
            }
        }
    }
}

/// `/mcp`: checks a POST, then hands the request to rmcp.
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let ep = &app.mcp;
    if req.method() != Method::POST || !is_json(req.headers()) {
        // rmcp answers GET, DELETE, other methods and other content types itself.
        return forward(ep, req).await;
    }
    match checked_post(ep, req).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    }
}

/// A JSON POST: read whole, checked, admitted when it opens a session, then forwarded.
async fn checked_post(ep: &Endpoint, req: Request) -> Result<Response, Refused> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, ep.limit).await?;
    let opens_session = check_message(&bytes)? && !parts.headers.contains_key(SESSION_HEADER);
    let req = Request::from_parts(parts, Body::from(bytes));
    let call = ep.calls.token();
    let response = if opens_session {
        let Some(_place) = ep.sessions.admit().await else {
            return Err(Refused::TooManyClients {
                max: ep.sessions.max(),
            });
        };
        forward(ep, req).await
    } else {
        forward(ep, req).await
    };
    // The call stays in flight until its response body has been sent (or dropped).
    Ok(response.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _in_flight = &call;
            chunk
        }))
    }))
}

async fn forward(ep: &Endpoint, req: Request) -> Response {
    match ep.service.clone().oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The whole body, at most `limit` bytes, read within [`BODY_READ_TIMEOUT`].
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Refused> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refused::TooLarge { limit });
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Refused::TooLarge { limit })
        }
        Ok(Err(e)) => Err(Refused::Unreadable(e.to_string())),
        Err(_) => Err(Refused::TooSlow),
    }
}

/// Whether `bytes` is a JSON-RPC message rmcp accepts; `Ok(true)` for `initialize`.
fn check_message(bytes: &[u8]) -> Result<bool, Refused> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| Refused::NotJson(e.to_string()))?;
    if let Err(e) = ClientJsonRpcMessage::deserialize(&value) {
        return Err(Refused::NotJsonRpc {
            id: value.get("id").cloned().unwrap_or(Value::Null),
            reason: e.to_string(),
        });
    }
    Ok(value.get("method").and_then(Value::as_str) == Some("initialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_covers_escaped_code_and_framing() {
        assert_eq!(body_limit(1000), 2000 + 65536);
        assert_eq!(body_limit(usize::MAX), usize::MAX);
    }

    #[test]
    fn messages_are_checked() {
        let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
        assert_eq!(check_message(init).ok(), Some(true));
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(check_message(note).ok(), Some(false));
        let parse = check_message(b"{not json").unwrap_err();
        assert!(matches!(parse, Refused::NotJson(_)), "{parse:?}");
        assert_eq!(parse.into_response().status(), StatusCode::BAD_REQUEST);
        let invalid = check_message(br#"{"id":5,"hello":"world"}"#).unwrap_err();
        assert!(
            matches!(&invalid, Refused::NotJsonRpc { id, .. } if id == 5),
            "{invalid:?}"
        );
    }

    #[test]
    fn json_content_types() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, v.parse().unwrap());
            is_json(&h)
        };
        assert!(h("application/json"));
        assert!(h("Application/JSON; charset=utf-8"));
        assert!(!h("text/plain"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
