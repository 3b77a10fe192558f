//! The session part of the tool contract: the arguments and results of `create_session`,
//! `list_sessions` and `close_session`, a session's state as `execute_code` reports it, and the
//! session limits `get_environment_config` reports. Copies of the sandbox's types, as the rest
//! of the contract (see the parent module); `server::sessions` converts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Status;
use crate::environment::EnvType;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateSessionArgs {
    /// Environment type of the session; default: the active environment. With a type, the
    /// environment configured for that type.
    #[serde(default)]
    pub env_type: Option<EnvType>,
    /// A label for the session, shown by list_sessions (at most 64 printable characters).
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CloseSessionArgs {
    /// The session to end, as create_session or list_sessions returned it.
    pub session_id: String,
}

/// Whether a session's interpreter is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Running: the next call sees the variables, imports and functions of the earlier ones.
    Alive,
    /// Gone, with its state: start a new one with create_session.
    Ended,
}

/// Result of `create_session`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct CreateSessionResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Pass it as session_id to execute_code and execute_code_file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The name given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The session's environment, e.g. "venv /opt/venv".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The session ends after this many seconds without a call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// The session ends this many seconds after it was created, used or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lifetime_secs: Option<u64>,
    /// When it was created, in unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// One session as `list_sessions` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionEntry {
    pub session_id: String,
    /// The name given to create_session (null when none was).
    pub name: Option<String>,
    /// The session's environment, e.g. "venv /opt/venv".
    pub environment: String,
    /// When it was created, in unix seconds.
    pub created: u64,
    /// When a call last used it (or when it was created), in unix seconds.
    pub last_used: u64,
    /// Calls run in it so far.
    pub runs: u64,
    pub state: SessionState,
}

/// Result of `list_sessions`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct ListSessionsResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The sessions of this storage folder, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<SessionEntry>>,
}

/// Result of `close_session`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct CloseSessionResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The session given.
    pub session_id: String,
}

/// Session limits, as `get_environment_config` reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionLimits {
    /// Sessions open at once (MAX_SESSIONS).
    pub max_sessions: usize,
    /// A session ends after this many seconds without a call (SESSION_IDLE_TIMEOUT).
    pub idle_timeout_secs: u64,
    /// A session ends this many seconds after it was created (SESSION_MAX_LIFETIME).
    pub max_lifetime_secs: u64,
}
