//! Listing containers when the engine's answer is not quite Docker's. Podman 4.x's
//! `/containers/json` reports a container between its exit and its clean-up as `stopped`, a
//! state Docker's API does not have (podman#28359, fixed in 2026 by podman#28390; Debian 12
//! ships 4.3.1), and bollard then refuses the whole list. The state lasts from a fraction of a
//! second to as long as the clean-up waits, and on a busy engine some container is nearly always
//! in it, so retrying is no answer: this room reads the same list again without bollard's typed
//! models, over the same Unix socket, and takes the state as a plain string (anything but
//! `running` is not running). Over TCP or SSH (no socket to read here) the list is retried for a
//! while instead, then the engine's error stands.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::error::EngineError;
use crate::sandbox::engine::ListedContainer;

/// How long a list the engine answers in a shape bollard refuses is retried (non-socket hosts).
pub(super) const RETRY_FOR: Duration = Duration::from_secs(10);
/// The pause between those retries.
pub(super) const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Whether bollard refused a list because a field held a value its models do not name (such
/// as Podman's `stopped`), rather than because the answer was not JSON at all.
pub(super) fn is_unknown_value(e: &BollardError) -> bool {
    matches!(e, BollardError::JsonDataError { message, .. } if message.contains("unknown variant"))
}

/// The Unix socket the client talks to (`DOCKER_HOST=unix://…`, or Docker's default when
/// DOCKER_HOST is unset), or `None` for TCP and SSH hosts.
pub(super) fn unix_socket() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(PathBuf::from),
        _ => Some(PathBuf::from("/var/run/docker.sock")),
    }
}

/// A container of bollard's list in our terms (`None` without an id).
pub(super) fn listed(c: bollard::models::ContainerSummary) -> Option<ListedContainer> {
    Some(ListedContainer {
        running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
        created: c.created.unwrap_or(0),
        id: c.id?,
        labels: c.labels.unwrap_or_default(),
    })
}

/// One container as `/containers/json` describes it, with the state as the engine wrote it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    id: String,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
    #[serde(default)]
    state: Option<String>,
}

/// Lists every container (running or not) that carries `label=value`, reading the engine's
/// answer as plain JSON over the Unix socket at `socket`.
pub(super) async fn list_untyped(
    socket: PathBuf,
    label: &str,
    value: &str,
    timeout: Duration,
) -> Result<Vec<ListedContainer>, EngineError> {
    let filters = serde_json::json!({ "label": [format!("{label}={value}")] }).to_string();
    let query = format!(
        "/containers/json?all=true&filters={}",
        utf8_percent_encode(&filters, NON_ALPHANUMERIC)
    );
    let body = tokio::time::timeout(timeout, get(socket, &query))
        .await
        .map_err(|_| EngineError::Unavailable {
            source: format!("no answer within {}s", timeout.as_secs()).into(),
        })??;
    parse(&body)
}

/// GETs `path` from the engine on `socket`; the body of a 200 answer.
async fn get(socket: PathBuf, path: &str) -> Result<Bytes, EngineError> {
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(hyperlocal::UnixConnector);
    let uri: http::Uri = hyperlocal::Uri::new(&socket, path).into();
    let response = client
        .get(uri)
        .await
        .map_err(|e| EngineError::Unavailable {
            source: format!("{}: {e}", socket.display()).into(),
        })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| malformed(format!("reading the answer: {e}")))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(malformed(format!("answered {status}: {}", text.trim())));
    }
    Ok(body)
}

fn parse(body: &[u8]) -> Result<Vec<ListedContainer>, EngineError> {
    let list: Vec<Summary> =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not a list: {e}")))?;
    Ok(list
        .into_iter()
        .map(|c| ListedContainer {
            running: c.state.as_deref() == Some("running"),
            created: c.created,
            id: c.id,
            labels: c.labels.unwrap_or_default(),
        })
        .collect())
}

fn malformed(message: String) -> EngineError {
    EngineError::Malformed {
        op: "list containers",
        container: None,
        source: message.into(),
    }
}

// Checks whose only subject is the parsing and the host: the request itself is proven against
// Podman by tests/podman.rs (the suites there list containers while others exit).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_states_docker_lacks_are_read_as_not_running() {
        let body = br#"[
            {"Id":"a","Created":5,"Labels":{"k":"v"},"State":"stopped"},
            {"Id":"b","Created":6,"Labels":null,"State":"running"},
            {"Id":"c"}
        ]"#;
        let listed = parse(body).expect("parses");
        let seen: Vec<_> = listed.iter().map(|c| (c.id.as_str(), c.running)).collect();
        assert_eq!(seen, [("a", false), ("b", true), ("c", false)]);
        assert_eq!(listed[0].labels["k"], "v");
        assert_eq!(listed[0].created, 5);
        assert!(listed[1].labels.is_empty());
    }

    /// Answers one request on a Unix socket with `body`; hands back the request line.
    async fn answer_once(
        socket: &std::path::Path,
        status: &'static str,
        body: &'static str,
    ) -> tokio::task::JoinHandle<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(socket).expect("bind");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "request cut short");
                request.extend_from_slice(&buf[..n]);
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.expect("write");
            let text = String::from_utf8_lossy(&request).to_string();
            text.lines().next().unwrap_or_default().to_string()
        })
    }

    #[tokio::test]
    async fn the_untyped_list_asks_for_every_container_with_the_label() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("engine.sock");
        let server = answer_once(
            &socket,
            "200 OK",
            r#"[{"Id":"abc","Created":7,"Labels":{"l":"v"},"State":"stopped"}]"#,
        )
        .await;
        let listed = list_untyped(socket.clone(), "l", "v", Duration::from_secs(10))
            .await
            .expect("listed");
        let request = server.await.expect("served");
        assert_eq!((listed.len(), listed[0].running), (1, false));
        assert!(
            request.starts_with("GET /containers/json?all=true&filters="),
            "{request}"
        );
        let query = percent_encoding::percent_decode_str(&request).decode_utf8_lossy();
        assert!(query.contains(r#"{"label":["l=v"]}"#), "{query}");
    }

    #[tokio::test]
    async fn an_engine_error_answer_is_reported_with_its_status() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("engine.sock");
        let server = answer_once(
            &socket,
            "500 Internal Server Error",
            r#"{"message":"boom"}"#,
        )
        .await;
        let err = list_untyped(socket.clone(), "l", "v", Duration::from_secs(10))
            .await
            .expect_err("refused");
        server.await.expect("served");
        assert!(
            err.to_string().contains("500") && err.to_string().contains("boom"),
            "{err}"
        );
    }

    #[test]
    fn an_answer_that_is_no_list_is_a_clear_error() {
        let err = parse(br#"{"message":"boom"}"#).expect_err("not a list");
        assert!(err.to_string().contains("not a list"), "{err}");
    }

    #[test]
    fn only_unknown_values_call_for_the_untyped_list() {
        let unknown = BollardError::JsonDataError {
            message: "unknown variant `stopped`, expected one of ``, `created`".into(),
            column: 9,
        };
        let other = BollardError::JsonDataError {
            message: "expected value".into(),
            column: 1,
        };
        assert!(is_unknown_value(&unknown));
        assert!(!is_unknown_value(&other));
    }
}
