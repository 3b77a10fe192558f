//! `/files/{name}`: data in and out of a principal's storage folder without passing through
//! the model. `GET` streams a stored file (Content-Type by extension, Content-Length, ETag,
//! Last-Modified; `If-None-Match` answers 304); `PUT` streams the body into a temporary file
//! and renames it over the name when complete (over MAX_FILE_SIZE: 413, and nothing stays).
//! Names follow the file tools' rules (`datafiles`, `storage`); the bearer token picks the
//! folder. Neither direction holds a whole file in memory.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LAST_MODIFIED};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::reply::error;
use super::routes::App;
use crate::datafiles::{self, Download, Upload};
use crate::error::StorageError;
use crate::principal::Principal;
use crate::storage::Storage;

/// Finds a principal's storage folder (injected by the application).
pub type StorageOf =
    Arc<dyn Fn(&Principal) -> Result<Arc<Storage>, String> + Send + Sync + 'static>;

/// What `/files` needs from the application.
#[derive(Clone)]
pub struct FileAccess {
    pub storage_of: StorageOf,
    /// MAX_FILE_SIZE.
    pub max_bytes: u64,
}

/// `GET /files/{name}`.
pub async fn get(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let storage = match storage(&app, &req) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e),
    };
    let opened = tokio::task::spawn_blocking(move || datafiles::open_download(&storage, &name))
        .await
        .map_err(|e| StorageError::Io {
            what: "cannot open",
            path: "".into(),
            source: std::io::Error::other(e),
        });
    let (name, download) = match opened.and_then(|r| r) {
        Ok(found) => found,
        Err(e) => return refused(e),
    };
    let tag = etag(&download);
    if headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(tag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(ETAG, tag)]).into_response();
    }
    let size = download.size;
    let modified = httpdate::fmt_http_date(download.modified);
    let file = tokio::fs::File::from_std(download.file);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let headers = [
        (CONTENT_TYPE, datafiles::mime_of(&name)),
        (CONTENT_LENGTH, size.to_string()),
        (ETAG, tag),
        (LAST_MODIFIED, modified),
    ];
    (headers, body).into_response()
}

/// `PUT /files/{name}`.
pub async fn put(State(app): State<Arc<App>>, Path(name): Path<String>, req: Request) -> Response {
    let max = app.files.max_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return too_large(max);
    }
    let storage = match storage(&app, &req) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e),
    };
    let (upload, file) = match Upload::begin(storage, &name) {
        Ok(begun) => begun,
        Err(e) => return refused(e),
    };
    let mut file = tokio::fs::File::from_std(file);
    let mut body = req.into_body().into_data_stream();
    let mut written: u64 = 0;
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return error(
                StatusCode::BAD_REQUEST,
                "upload_broken",
                "the upload broke off; nothing was stored",
            );
        };
        written += chunk.len() as u64;
        if written > max {
            return too_large(max);
        }
        if let Err(e) = file.write_all(&chunk).await {
            return refused(StorageError::Io {
                what: "cannot write",
                path: upload.name().into(),
                source: e,
            });
        }
    }
    let file = file.into_std().await;
    match tokio::task::spawn_blocking(move || upload.commit(&file)).await {
        Ok(Ok(name)) => {
            let body = json!({ "status": "success", "name": name, "size": written });
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Ok(Err(e)) => refused(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// The storage folder of the request's principal.
fn storage(app: &App, req: &Request) -> Result<Arc<Storage>, String> {
    let principal = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::default_principal);
    (app.files.storage_of)(&principal)
}

fn etag(d: &Download) -> String {
    let nanos = d
        .modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_nanos());
    format!("\"{:x}-{nanos:x}\"", d.size)
}

fn too_large(max: u64) -> Response {
    crate::metrics::request_rejected("too_large");
    let message = format!("the file is over MAX_FILE_SIZE ({max} bytes); nothing was stored");
    error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
}

/// A refused name or a missing file: 404 for a file that is not there, 400 otherwise.
fn refused(e: StorageError) -> Response {
    match e {
        StorageError::NotFound { .. } => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        StorageError::Io { .. } => error(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()),
        _ => error(StatusCode::BAD_REQUEST, "refused", e.to_string()),
    }
}
