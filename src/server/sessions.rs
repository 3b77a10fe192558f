//! The session tools (`create_session`, `list_sessions`, `close_session`): check the name,
//! pick the environment, and report what the sandbox's sessions API did. Running code in a
//! session is `run`'s (`execute_code` with `session_id`).

use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::State;
use super::contract::{
    CloseSessionArgs, CloseSessionResult, CreateSessionArgs, CreateSessionResult,
    ListSessionsResult, SessionEntry, SessionLimits, SessionState,
};
use super::progress::Progress;
use super::reply::{fail, respond};
use crate::error::SandboxError;
use crate::sandbox::sessions::{self, SessionInfo, SessionSettings};

/// Longest session name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// `create_session`: starts a live interpreter in the active environment, or in the one
/// configured for `args.env_type`.
pub async fn create(
    state: &State,
    args: CreateSessionArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let envs = state.envs();
    let env = match args.env_type {
        Some(t) => envs.spec(t),
        None => envs.active_spec(),
    };
    let result = CreateSessionResult {
        environment: Some(env.to_string()),
        name: args.name.clone(),
        ..Default::default()
    };
    let name = match check_name(args.name.as_deref()) {
        Ok(name) => name,
        Err(e) => return fail(result, e),
    };
    let progress = Progress::start(ctx, format!("starting a session in {env}"), None);
    let created = state.sandbox.create_session(env, name).await;
    progress.stop().await;
    match created {
        Ok(info) => respond(&created_result(&info, &state.config.sessions), false),
        Err(e) => fail(result, e),
    }
}

/// `list_sessions`: the sessions of this storage folder.
pub async fn list(state: &State) -> Result<CallToolResult, ErrorData> {
    match state.sandbox.list_sessions().await {
        Ok(infos) => respond(
            &ListSessionsResult {
                sessions: Some(infos.iter().map(SessionEntry::from).collect()),
                ..Default::default()
            },
            false,
        ),
        Err(e) => fail(ListSessionsResult::default(), e),
    }
}

/// `close_session`: ends a session; its container and state are gone.
pub async fn close(state: &State, args: CloseSessionArgs) -> Result<CallToolResult, ErrorData> {
    let closed = state.sandbox.close_session(&args.session_id).await;
    let result = CloseSessionResult {
        session_id: args.session_id,
        ..Default::default()
    };
    match closed {
        Ok(()) => respond(&result, false),
        Err(e) => fail(result, e),
    }
}

/// A session name as given, if it is one: at most [`MAX_NAME_CHARS`] printable characters, not
/// blank. Checked here so that a bad name is a tool error with a message, before any container.
pub fn check_name(name: Option<&str>) -> Result<Option<&str>, SandboxError> {
    let Some(name) = name else {
        return Ok(None);
    };
    let bad = |reason: String| Err(SandboxError::BadSessionName { reason });
    if name.trim().is_empty() {
        return bad("it is empty; give a short label such as \"analysis\", or omit name".into());
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return bad(format!(
            "it has {chars} characters; at most {MAX_NAME_CHARS}"
        ));
    }
    match name.chars().find(|c| !is_printable(*c)) {
        Some(c) => bad(format!(
            "it contains the non-printable character U+{:04X}; use letters, digits, spaces and \
             punctuation",
            c as u32
        )),
        None => Ok(Some(name)),
    }
}

/// Not a control character, nor one that is invisible or reorders text (zero-width, bidi
/// overrides, line and paragraph separators, byte-order mark).
fn is_printable(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// The result of a created session: its id and name, environment, limits and creation time.
fn created_result(info: &SessionInfo, settings: &SessionSettings) -> CreateSessionResult {
    CreateSessionResult {
        session_id: Some(info.id.clone()),
        name: info.name.clone(),
        environment: Some(info.environment.clone()),
        idle_timeout_secs: Some(settings.idle_timeout_secs),
        max_lifetime_secs: Some(settings.max_lifetime_secs),
        created: Some(info.created),
        ..Default::default()
    }
}

impl From<&SessionInfo> for SessionEntry {
    fn from(i: &SessionInfo) -> Self {
        SessionEntry {
            session_id: i.id.clone(),
            name: i.name.clone(),
            environment: i.environment.clone(),
            created: i.created,
            last_used: i.last_used,
            runs: i.runs,
            state: i.state.into(),
        }
    }
}

impl From<sessions::SessionState> for SessionState {
    fn from(s: sessions::SessionState) -> Self {
        match s {
            sessions::SessionState::Alive => SessionState::Alive,
            sessions::SessionState::Ended => SessionState::Ended,
        }
    }
}

impl From<&SessionSettings> for SessionLimits {
    fn from(s: &SessionSettings) -> Self {
        SessionLimits {
            max_sessions: s.max_sessions,
            idle_timeout_secs: s.idle_timeout_secs,
            max_lifetime_secs: s.max_lifetime_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    fn settings() -> SessionSettings {
        SessionSettings {
            max_sessions: 4,
            idle_timeout_secs: 600,
            max_lifetime_secs: 14400,
            state_dir: PathBuf::from("/data/.mce-sessions"),
        }
    }

    fn info(name: Option<&str>) -> SessionInfo {
        SessionInfo {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: name.map(str::to_string),
            environment: "venv /opt/venv".into(),
            created: 1_700_000_000,
            last_used: 1_700_000_100,
            runs: 3,
            state: sessions::SessionState::Alive,
        }
    }

    fn reason(name: &str) -> String {
        match check_name(Some(name)) {
            Err(SandboxError::BadSessionName { reason }) => reason,
            other => panic!("{name:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn names_that_are_accepted() {
        assert_eq!(check_name(None).unwrap(), None);
        assert_eq!(check_name(Some("analysis")).unwrap(), Some("analysis"));
        assert_eq!(
            check_name(Some("Daten – Analyse #2 (ü)")).unwrap(),
            Some("Daten – Analyse #2 (ü)")
        );
        let longest = "é".repeat(MAX_NAME_CHARS);
        assert_eq!(check_name(Some(&longest)).unwrap(), Some(longest.as_str()));
    }

    #[test]
    fn names_that_are_refused_say_why() {
        assert_eq!(
            reason("  "),
            "it is empty; give a short label such as \"analysis\", or omit name"
        );
        assert_eq!(reason(&"x".repeat(65)), "it has 65 characters; at most 64");
        assert_eq!(
            reason("a\nb"),
            "it contains the non-printable character U+000A; use letters, digits, spaces and \
             punctuation"
        );
        assert!(reason("tab\there").contains("U+0009"));
        assert!(reason("esc\u{1b}[31m").contains("U+001B"));
        assert!(reason("rtl\u{202E}txt").contains("U+202E"));
        assert!(reason("zero\u{200B}width").contains("U+200B"));
        assert!(reason("\u{FEFF}bom").contains("U+FEFF"));
        let message = SandboxError::BadSessionName {
            reason: reason("a\u{7f}"),
        }
        .to_string();
        assert!(message.starts_with("invalid session name: "), "{message}");
    }

    #[test]
    fn a_created_session_reports_its_id_environment_and_limits() {
        let result = created_result(&info(Some("eda")), &settings());
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({
                "status": "success",
                "session_id": "0123456789abcdef0123456789abcdef",
                "name": "eda",
                "environment": "venv /opt/venv",
                "idle_timeout_secs": 600,
                "max_lifetime_secs": 14400,
                "created": 1_700_000_000
            })
        );
        let unnamed = serde_json::to_value(created_result(&info(None), &settings())).unwrap();
        assert_eq!(unnamed.get("name"), None);
    }

    #[test]
    fn a_listed_session_has_every_field() {
        let entry = SessionEntry::from(&info(None));
        assert_eq!(
            serde_json::to_value(&entry).unwrap(),
            json!({
                "session_id": "0123456789abcdef0123456789abcdef",
                "name": null,
                "environment": "venv /opt/venv",
                "created": 1_700_000_000,
                "last_used": 1_700_000_100,
                "runs": 3,
                "state": "alive"
            })
        );
        let ended = SessionInfo {
            state: sessions::SessionState::Ended,
            ..info(Some("x"))
        };
        assert_eq!(SessionEntry::from(&ended).state, SessionState::Ended);
    }

    #[test]
    fn the_limits_are_reported_without_the_state_dir() {
        assert_eq!(
            serde_json::to_value(SessionLimits::from(&settings())).unwrap(),
            json!({"max_sessions": 4, "idle_timeout_secs": 600, "max_lifetime_secs": 14400})
        );
    }
}
