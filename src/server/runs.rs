//! The long-run tools and the waiting every backgroundable call shares: a call waits for its
//! run up to `RESULT_WAIT` (progress notifications follow the run's output), then answers with
//! the run's result or `running`; `get_run` waits again, `cancel_run` stops a run and answers
//! its result, `list_runs` lists the world's runs. A client that cancels the call that started
//! a run, before that call handed out the run's id, stops the run; once a `run_id` is out, a
//! cancelled `get_run` only stops waiting.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::json;

use super::State;
use super::adopt::{self, Adoption};
use super::background::{Found, Record, RunHandle};
use super::contract::{
    CancelRunArgs, GetRunArgs, ListRunsResult, RunEntry, RunLookup, RunState, Status,
};
use super::progress::Progress;
use super::reply::{fail, respond};
use super::tasks;

/// How long cancel_run waits for a stopped run to end (its container killed, its result made).
const CANCEL_WAIT: Duration = Duration::from_secs(15);

/// The first answer of a call that started `handle`: its result if it ends within
/// RESULT_WAIT, else `running`. Cancelling this call stops the run.
pub async fn answer_first(
    state: &State,
    handle: &Arc<RunHandle>,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let wait = match ctx.extensions.get::<tasks::AnswerAtOnce>() {
        Some(_) => Duration::ZERO,
        None => Duration::from_secs(state.runs.settings().result_wait_secs),
    };
    let progress = follow(handle, ctx);
    let mut ended = handle.wait(wait, &ctx.ct).await;
    if ended.is_none() && ctx.ct.is_cancelled() {
        // Cancelled by its client (or stopped by a shutdown) before it had a run id out: the
        // run stops, and its result (which says why) is the answer.
        handle.cancel.cancel();
        let never = tokio_util::sync::CancellationToken::new();
        ended = handle.wait(CANCEL_WAIT, &never).await;
    }
    progress.stop().await;
    match ended {
        Some(record) => final_answer(&record),
        None => running(state, handle),
    }
}

/// `get_run`: waits up to `min(wait_secs, RESULT_WAIT)`, then the result or `running`.
pub async fn get(
    state: &Arc<State>,
    args: GetRunArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let handle = match state.runs.find(&args.run_id) {
        Ok(Found::Here(h)) => h,
        Ok(Found::Stored(record)) => match take_over(state, *record).await {
            Ok(h) => h,
            Err(answer) => return answer,
        },
        Err(e) => return fail(lookup(&args.run_id), e),
    };
    let max = state.runs.settings().result_wait_secs;
    let wait = Duration::from_secs(args.wait_secs.unwrap_or(max).min(max));
    let progress = follow(&handle, ctx);
    let ended = handle.wait(wait, &ctx.ct).await;
    progress.stop().await;
    match ended {
        Some(record) => final_answer(&record),
        None => running(state, &handle),
    }
}

/// `cancel_run`: stops the run and answers its result (which says `cancelled`); a run that has
/// already ended answers its result as it is.
pub async fn cancel(state: &Arc<State>, args: CancelRunArgs) -> Result<CallToolResult, ErrorData> {
    let handle = match state.runs.find(&args.run_id) {
        Ok(Found::Here(h)) => h,
        Ok(Found::Stored(record)) => match take_over(state, *record).await {
            Ok(h) => h,
            Err(answer) => return answer,
        },
        Err(e) => return fail(lookup(&args.run_id), e),
    };
    handle.cancel.cancel();
    let never = tokio_util::sync::CancellationToken::new();
    match handle.wait(CANCEL_WAIT, &never).await {
        Some(record) => final_answer(&record),
        None => running(state, &handle),
    }
}

/// `list_runs`: the world's runs kept, newest first.
pub fn list(state: &State) -> Result<CallToolResult, ErrorData> {
    let runs = state
        .runs
        .list()
        .into_iter()
        .map(|r| RunEntry {
            elapsed_secs: r.elapsed_secs.unwrap_or_default(),
            run_id: r.run_id,
            tool: r.tool,
            state: r.state,
            started_unix: r.started_unix,
            file_path: r.file_path,
        })
        .collect();
    respond(
        &ListRunsResult {
            status: Status::Success,
            error: None,
            runs,
        },
        false,
    )
}

/// Progress notifications with the run's last output line, for as long as this call waits.
fn follow(handle: &RunHandle, ctx: &RequestContext<RoleServer>) -> Progress {
    let what = match &handle.file_path {
        Some(path) => format!("{} {}", handle.tool, file_name(path)),
        None => handle.tool.to_string(),
    };
    Progress::follow(ctx, what, None, Arc::clone(&handle.live))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The answer for a run that is still going.
fn running(state: &State, handle: &RunHandle) -> Result<CallToolResult, ErrorData> {
    handle.mark_backgrounded();
    state.runs.keep_resumable(handle);
    let elapsed = handle.elapsed_secs();
    let (stdout_tail, stderr_tail) = handle.live.tails();
    let wait = state.runs.settings().result_wait_secs;
    let mut body = json!({
        "status": "running",
        "run_id": handle.id,
        "elapsed_secs": elapsed,
        "stdout_tail": stdout_tail,
        "stderr_tail": stderr_tail,
        "poll_after_secs": poll_after(elapsed, wait),
    });
    if let Some(path) = &handle.file_path {
        body["file_path"] = json!(path);
    }
    respond(&body, false)
}

/// When to poll again: soon for a young run, less often for an old one (get_run waits up to
/// RESULT_WAIT itself, so polling early costs nothing but a call).
fn poll_after(elapsed_secs: f64, result_wait: u64) -> u64 {
    ((elapsed_secs / 5.0) as u64).clamp(1, result_wait.clamp(1, 30))
}

/// A run another server started: its handle once this server has taken it over (its server is
/// gone), else the answer: its result when it ended; while that server lives (two servers may
/// share a storage folder), that it runs there; `lost` when it cannot be taken over.
pub(super) async fn take_over(
    state: &Arc<State>,
    record: Record,
) -> Result<Arc<RunHandle>, Result<CallToolResult, ErrorData>> {
    if record.state != RunState::Running {
        return Err(final_answer(&record));
    }
    let id = record.run_id.clone();
    let refused = |error: String| {
        let body = RunLookup {
            status: Status::Error,
            error: Some(error),
            run_id: Some(id.clone()),
            state: Some(RunState::Running),
        };
        Err(respond(&body, true))
    };
    match state.sandbox.instance_alive(&record.instance).await {
        Ok(false) => match adopt::adopt(state, record).await {
            Adoption::Adopted(h) => Ok(h),
            Adoption::Lost(r) => Err(final_answer(&r)),
            Adoption::Later => refused(format!(
                "run {id} was started by a server that is gone; this server takes it over as \
                 soon as the container engine answers again: try again shortly"
            )),
        },
        Ok(true) => refused(format!(
            "run {id} is running on another server that shares this storage folder (instance \
             {}); only that server can wait for it or stop it",
            record.instance
        )),
        Err(e) => Err(fail(lookup(&id), e)),
    }
}

/// The answer for a run that has ended: its result, or why it is lost.
fn final_answer(record: &Record) -> Result<CallToolResult, ErrorData> {
    match &record.result {
        Some(result) => Ok(result.clone()),
        None => {
            let why = record
                .lost_reason
                .clone()
                .unwrap_or_else(|| "the run ended without a result".to_string());
            let body = RunLookup {
                status: Status::Lost,
                error: Some(format!("run {} is lost: {why}", record.run_id)),
                run_id: Some(record.run_id.clone()),
                state: Some(RunState::Lost),
            };
            respond(&body, true)
        }
    }
}

fn lookup(id: &str) -> RunLookup {
    RunLookup {
        run_id: Some(id.chars().take(80).collect()),
        ..RunLookup::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_soon_for_young_runs_and_less_often_for_old_ones() {
        assert_eq!(poll_after(0.5, 45), 1);
        assert_eq!(poll_after(60.0, 45), 12);
        assert_eq!(poll_after(3600.0, 45), 30);
        assert_eq!(poll_after(3600.0, 5), 5);
    }
}
