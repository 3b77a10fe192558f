//! MCP log notifications: once the client sets a level (`logging/setLevel`), the server's own log
//! events at or above it go to the client as `notifications/message` too (they always go to
//! stderr). MCP deprecates logging in the revision rmcp 3.11 speaks (SEP-2577); it is kept for
//! clients of earlier revisions, and the deprecation allowance stays in this module.
#![allow(deprecated)]

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};

use rmcp::RoleServer;
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::Peer;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Where and from which level to forward, once a client asked.
struct Forward {
    peer: Peer<RoleServer>,
    min_rank: u8,
}

static FORWARD: OnceLock<Mutex<Option<Forward>>> = OnceLock::new();

fn forward() -> &'static Mutex<Option<Forward>> {
    FORWARD.get_or_init(|| Mutex::new(None))
}

fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

fn mcp_level(level: &Level) -> LoggingLevel {
    match *level {
        Level::ERROR => LoggingLevel::Error,
        Level::WARN => LoggingLevel::Warning,
        Level::INFO => LoggingLevel::Info,
        _ => LoggingLevel::Debug,
    }
}

/// The client asked for log messages from `level` up (handles `logging/setLevel`).
pub fn set_level(peer: Peer<RoleServer>, level: LoggingLevel) {
    *forward().lock().unwrap_or_else(PoisonError::into_inner) = Some(Forward {
        peer,
        min_rank: rank(level),
    });
}

/// A tracing layer that forwards this crate's events to the client, when it asked for them.
pub struct McpLogLayer;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for McpLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // Only the server's own events: rmcp's (sending this very notification) would loop.
        if !meta.target().starts_with("mcp_code_executor") {
            return;
        }
        let level = mcp_level(meta.level());
        let peer = {
            let guard = forward().lock().unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                Some(f) if rank(level) >= f.min_rank => f.peer.clone(),
                _ => return,
            }
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut message = Message(String::new());
        event.record(&mut message);
        let param =
            LoggingMessageNotificationParam::new(level, serde_json::Value::String(message.0))
                .with_logger(meta.target());
        handle.spawn(async move {
            let _ = peer.notify_logging_message(param).await;
        });
    }
}
