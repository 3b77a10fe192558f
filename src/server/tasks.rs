//! The MCP tasks extension (`io.modelcontextprotocol/tasks`) over the same runs: a client that
//! declared the extension and calls `execute_code`, `execute_code_file` or
//! `install_dependencies` gets a task at once (its id is the run's `run_id`) instead of waiting;
//! `tasks/get` answers the run's state and, once it ended, the same result the tool would have
//! returned; `tasks/cancel` stops it. Clients without the extension never see a difference.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CreateTaskResult, DetailedTask,
    GetTaskResult, JsonObject, Task, TaskPayload, TaskStatus,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::Value;

use super::State;
use super::background::{Found, RunHandle};
use super::contract::RunState;
use crate::error::RunsError;

/// The tools whose calls become tasks for clients that declared the extension.
const TASK_TOOLS: [&str; 3] = ["execute_code", "execute_code_file", "install_dependencies"];

/// Suggested polling interval of a task, in milliseconds.
const POLL_INTERVAL_MS: u64 = 1000;

/// Put into a call's extensions: answer at once once the run started (the task path).
#[derive(Debug, Clone, Copy)]
pub struct AnswerAtOnce;

/// Whether this call should become a task.
pub fn wanted(request: &CallToolRequestParams, ctx: &RequestContext<RoleServer>) -> bool {
    ctx.client_capabilities()
        .is_some_and(|caps| caps.supports_tasks())
        && TASK_TOOLS.contains(&request.name.as_ref())
}

/// The task for a call answered at once: a `running` answer becomes a task; anything else (the
/// call failed before a run started) is answered as it is.
pub fn created(result: CallToolResult) -> CallToolResponse {
    let running = result.structured_content.as_ref().and_then(|v| {
        (v.get("status")?.as_str()? == "running").then(|| v.get("run_id")?.as_str())?
    });
    match running {
        Some(id) => {
            let now = timestamp(None);
            let task = Task::new(id, TaskStatus::Working, now.clone(), now)
                .with_poll_interval_ms(POLL_INTERVAL_MS);
            CallToolResponse::Task(CreateTaskResult::new(task))
        }
        None => CallToolResponse::Complete(result),
    }
}

/// `tasks/get`: the run's state; its result once it ended.
pub fn get(state: &State, task_id: &str) -> Result<GetTaskResult, ErrorData> {
    let (started, payload) = match state.runs.find(task_id).map_err(not_found)? {
        Found::Here(h) => (h.started_unix, payload_of(&h)),
        Found::Stored(r) => {
            let payload = match (r.state, r.result) {
                // Another live server runs it, or this one is about to take it over (its
                // sweeps adopt the runs of servers that are gone).
                (RunState::Running, _) => TaskPayload::Working,
                (RunState::Cancelled, _) => TaskPayload::Cancelled,
                (_, Some(result)) => completed(&result),
                (_, None) => TaskPayload::Failed {
                    error: error_object(r.lost_reason.as_deref().unwrap_or("lost")),
                },
            };
            (r.started_unix, payload)
        }
    };
    let mut task = Task::new(
        task_id,
        payload.status(),
        timestamp(Some(started)),
        timestamp(None),
    );
    task.poll_interval_ms = Some(POLL_INTERVAL_MS);
    Ok(GetTaskResult::new(DetailedTask::new(task, payload)))
}

/// `tasks/cancel`: stops the run (its status follows). A run whose server is gone is taken
/// over first, as cancel_run does; one that another live server runs is left to it.
pub async fn cancel(state: &Arc<State>, task_id: &str) -> Result<(), ErrorData> {
    let handle = match state.runs.find(task_id).map_err(not_found)? {
        Found::Here(h) => Some(h),
        Found::Stored(record) => super::runs::take_over(state, *record).await.ok(),
    };
    if let Some(h) = handle {
        h.cancel.cancel();
    }
    Ok(())
}

fn payload_of(h: &RunHandle) -> TaskPayload {
    match h.finished() {
        None => TaskPayload::Working,
        Some(r) if r.state == RunState::Cancelled => TaskPayload::Cancelled,
        Some(r) => match &r.result {
            Some(result) => completed(result),
            None => TaskPayload::Failed {
                error: error_object("the run ended without a result"),
            },
        },
    }
}

fn completed(result: &CallToolResult) -> TaskPayload {
    let result = match serde_json::to_value(result) {
        Ok(Value::Object(map)) => map,
        _ => JsonObject::new(),
    };
    TaskPayload::Completed { result }
}

fn error_object(message: &str) -> JsonObject {
    let mut error = JsonObject::new();
    error.insert("code".into(), Value::from(-32603));
    error.insert("message".into(), Value::from(message));
    error
}

fn not_found(e: RunsError) -> ErrorData {
    ErrorData::invalid_params(e.to_string(), None)
}

/// ISO 8601 time of `unix` seconds (now when `None`).
fn timestamp(unix: Option<u64>) -> String {
    let at = match unix.and_then(|s| chrono::DateTime::from_timestamp(s as i64, 0)) {
        Some(at) => at,
        None => chrono::Utc::now(),
    };
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_running_answer_becomes_a_task_and_anything_else_stays_a_result() {
        let id = "run-0123456789abcdef0123456789abcdef";
        let running = CallToolResult::structured(json!({ "status": "running", "run_id": id }));
        match created(running) {
            CallToolResponse::Task(t) => {
                assert_eq!(t.task.task_id, id);
                assert_eq!(t.task.status, TaskStatus::Working);
                assert_eq!(t.task.poll_interval_ms, Some(POLL_INTERVAL_MS));
            }
            other => panic!("{other:?}"),
        }
        let refused = CallToolResult::structured_error(json!({ "status": "error" }));
        assert!(matches!(created(refused), CallToolResponse::Complete(_)));
        let done = CallToolResult::structured(json!({ "status": "success", "run_id": id }));
        assert!(matches!(created(done), CallToolResponse::Complete(_)));
    }

    #[test]
    fn timestamps_are_iso_8601() {
        assert_eq!(timestamp(Some(0)), "1970-01-01T00:00:00Z");
        assert!(timestamp(None).ends_with('Z'));
    }
}
