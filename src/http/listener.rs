//! Connections: the accept loop, per-connection timeouts, and the graceful shutdown. HTTP/1.1
//! only (what MCP clients speak in plain text; protocol sniffing for HTTP/2 would wait for a
//! first byte without a timeout). A client has [`HEADER_READ_TIMEOUT`] to send a request's
//! headers; the same timer closes a connection left idle before or between requests (hyper
//! starts it whenever it waits for a request head). A response being streamed (SSE) is not
//! idle: rmcp sends keep-alives on it.
//!
//! Shutdown: stop accepting, ask every connection to close once its current response is done,
//! wait for calls in flight up to the grace, then cancel the rest (rmcp ends every session and
//! cancels its calls, whose runs then stop and remove their containers) and return.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time to send a request's headers, and most time a connection may sit idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After the grace, how long stopped calls get to send their results.
const RESULTS_TIMEOUT: Duration = Duration::from_secs(5);
/// After the calls are cancelled, how long connections get to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed accept (out of file descriptors, say), a pause before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What shutting down waits for and then cancels.
pub struct Drain {
    /// Calls in flight.
    pub calls: TaskTracker,
    pub grace: Duration,
    /// Stops the calls still running after the grace (they answer that the server is
    /// shutting down).
    pub stop_calls: CancellationToken,
    /// Ends every MCP session and cancels its calls.
    pub cancel: CancellationToken,
}

/// Serves `router` on `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
    drain: Drain,
) {
    serve_with(listener, router, shutdown, drain, HEADER_READ_TIMEOUT).await;
}

async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
    drain: Drain,
    header_timeout: Duration,
) {
    let builder = connection_builder(header_timeout);
    let graceful = GracefulShutdown::new();
    accept_until(listener, &router, &builder, &graceful, shutdown).await;
    finish(graceful, drain).await;
}

fn connection_builder(header_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
}

/// Accepts connections until `shutdown`; the listener is closed on return.
async fn accept_until(
    listener: TcpListener,
    router: &Router,
    builder: &Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("could not accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // SSE events are small and must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// Waits for calls in flight (up to the grace), cancels the rest, lets connections close.
async fn finish(graceful: GracefulShutdown, drain: Drain) {
    let connections = graceful.shutdown();
    tokio::pin!(connections);
    drain.calls.close();
    let in_flight = drain.calls.len();
    if in_flight > 0 {
        tracing::info!(
            "waiting up to {:?} (SHUTDOWN_GRACE) for {in_flight} call(s) in flight",
            drain.grace
        );
    }
    if tokio::time::timeout(drain.grace, drain.calls.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} call(s) still running after SHUTDOWN_GRACE: cancelling them",
            drain.calls.len()
        );
        drain.stop_calls.cancel();
        // Their results (cancelled: shutting down) go out before the sessions end.
        let _ = tokio::time::timeout(RESULTS_TIMEOUT, drain.calls.wait()).await;
    }
    drain.cancel.cancel();
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut connections)
        .await
        .is_err()
    {
        tracing::debug!("some connections did not close within {CLOSE_TIMEOUT:?}");
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn idle_connections_are_closed_and_requests_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "hi" }));
        let stop = CancellationToken::new();
        let drain = Drain {
            calls: TaskTracker::new(),
            grace: Duration::ZERO,
            stop_calls: CancellationToken::new(),
            cancel: CancellationToken::new(),
        };
        let timeout = Duration::from_millis(300);
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            serve_with(listener, router, stopped.cancelled_owned(), drain, timeout).await;
        });
        // A connection that never sends a byte is closed after the header timeout.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf));
        assert!(closed.await.is_ok(), "the idle connection stayed open");
        // A request is served.
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("hi"),
            "{reply}"
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
