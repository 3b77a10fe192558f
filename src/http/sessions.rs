//! MCP sessions over HTTP: rmcp's in-memory session manager, wrapped to count sessions (the
//! `MAX_HTTP_CLIENTS` cap admits one new session at a time) and to cancel a call whose client
//! went away. rmcp ends a call's response stream when the connection drops but, in session
//! mode, leaves the call running; here a stream dropped before its response was sent injects
//! `notifications/cancelled` for that request, so the call's cancellation token fires, the run
//! stops and its container is removed (rmcp's stateless mode already cancels by itself).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use rmcp::model::{ClientJsonRpcMessage, RequestId, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use tokio::sync::{Mutex, MutexGuard};

/// Why a call was cancelled when its client left.
const DISCONNECTED: &str = "the HTTP client disconnected before the result was sent";

/// The session manager of the HTTP service.
#[derive(Debug)]
pub struct Sessions {
    inner: Arc<LocalSessionManager>,
    max: usize,
    /// Held while a new session is made, so two at once cannot both take the last place.
    admission: Mutex<()>,
}

impl Sessions {
    pub fn new(max: usize) -> Self {
        Sessions {
            inner: Arc::new(LocalSessionManager::default()),
            max,
            admission: Mutex::new(()),
        }
    }

    /// Open MCP sessions.
    pub async fn count(&self) -> usize {
        self.inner.sessions.read().await.len()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one new session, held until it is made; `None` when all are taken.
    pub async fn admit(&self) -> Option<MutexGuard<'_, ()>> {
        let guard = self.admission.lock().await;
        (self.count().await < self.max).then_some(guard)
    }
}

impl SessionManager for Sessions {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let request = match &message {
            ClientJsonRpcMessage::Request(r) => Some(r.id.clone()),
            _ => None,
        };
        let stream = self.inner.create_stream(id, message).await?;
        let pending = request.map(|request| Pending {
            manager: Arc::clone(&self.inner),
            session: id.clone(),
            request,
        });
        Ok(CancelOnDrop { stream, pending })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.inner.restore_session(id).await
    }
}

/// A request whose response has not been sent yet.
#[derive(Debug)]
struct Pending {
    manager: Arc<LocalSessionManager>,
    session: SessionId,
    request: RequestId,
}

/// A call's response stream; dropped before its end, it cancels the call.
struct CancelOnDrop<S> {
    stream: S,
    pending: Option<Pending>,
}

impl<S: Stream + Unpin> Stream for CancelOnDrop<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.stream).poll_next(cx);
        if let Poll::Ready(None) = polled {
            // The response went out: nothing to cancel.
            self.pending = None;
        }
        polled
    }
}

impl<S> Drop for CancelOnDrop<S> {
    fn drop(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(message) = cancelled(&p.request) else {
            return;
        };
        tracing::info!(request = %p.request, "{DISCONNECTED}: cancelling the call");
        runtime.spawn(async move {
            // The session may be gone already (closed, or the server stopping): nothing to do.
            let _ = p.manager.accept_message(&p.session, message).await;
        });
    }
}

/// `notifications/cancelled` for `request`, as if the client had sent it.
fn cancelled(request: &RequestId) -> Option<ClientJsonRpcMessage> {
    serde_json::from_value(serde_json::json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": { "requestId": request, "reason": DISCONNECTED },
    }))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cancellation_names_the_request() {
        let m = cancelled(&RequestId::Number(7)).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["method"], "notifications/cancelled");
        assert_eq!(v["params"]["requestId"], 7);
        let m = cancelled(&RequestId::String("a".into())).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap()["params"]["requestId"],
            "a"
        );
    }

    #[tokio::test]
    async fn admission_stops_at_the_cap() {
        let sessions = Sessions::new(1);
        assert!(sessions.admit().await.is_some());
        let (_id, _transport) = sessions.create_session().await.unwrap();
        assert_eq!(sessions.count().await, 1);
        assert!(sessions.admit().await.is_none());
    }
}
