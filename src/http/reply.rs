//! The HTTP layer's own responses: JSON errors (`{"error": code, "message": what to do}`) and
//! JSON-RPC errors for messages rmcp cannot parse.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// JSON-RPC "Parse error": the body is not JSON.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC "Invalid Request": JSON, but not a JSON-RPC message this server understands.
pub const INVALID_REQUEST: i32 = -32600;

/// A JSON error: `status`, a stable `code` and a message.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": code, "message": message.into() });
    (status, Json(body)).into_response()
}

/// A JSON-RPC error (HTTP 400) for the request `id` (`null` when it could not be read).
pub fn jsonrpc_error(code: i32, id: serde_json::Value, message: impl Into<String>) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message.into() },
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}
