//! Running stored code (`execute_code`, `execute_code_file`): store or load the file, run it in
//! a fresh container of the active environment or, with `session_id`, in that session's live
//! interpreter, and build the `RunResult` from the `RunOutcome`: the failure message (what a
//! session call's failure means for the session), stdout and stderr merged into `output`, the
//! files the run created or changed, and the PNG images among them (returned as image content
//! too). Both ways share everything but the call itself.

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::State;
use super::background::{self, Plan, RunContext};
use super::contract::{self, ExecuteCodeArgs, ExecuteCodeFileArgs, RunResult, Status};
use super::figures;
use super::reply::{Fallible, fail, respond};
use super::resources;
use super::runs;
use crate::environment::EnvSpec;
use crate::error::{RunsError, SandboxError};
use crate::limits::Limits;
use crate::sandbox::sessions::SessionState;
use crate::sandbox::{Job, RunOutcome};
use crate::storage::FileStat;

/// `execute_code`: stores `args.code` as a new file and runs it.
pub async fn execute_code(
    state: Arc<State>,
    args: ExecuteCodeArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let failed = || RunResult {
        session_id: args.session_id.clone(),
        ..Default::default()
    };
    let limits = call_limits(&state, args.timeout).and_then(|l| state.runs.admit().map(|()| l));
    let limits = match limits {
        Ok(limits) => limits,
        Err(e) => return fail(failed(), e),
    };
    match state.storage.create(args.filename.as_deref(), &args.code) {
        Ok(stored) => {
            let run = Run {
                tool: "execute_code",
                limits,
                session: args.session_id,
            };
            run_stored(state, stored.name, args.code, run, ctx).await
        }
        Err(e) => fail(failed(), e),
    }
}

/// `execute_code_file`: runs a file stored earlier.
pub async fn execute_code_file(
    state: Arc<State>,
    args: ExecuteCodeFileArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let failed = |args: ExecuteCodeFileArgs| RunResult {
        file_path: Some(args.file_path),
        session_id: args.session_id,
        ..Default::default()
    };
    let limits = match call_limits(&state, args.timeout) {
        Ok(limits) => limits,
        Err(e) => return fail(failed(args), e),
    };
    let storage = &state.storage;
    let loaded = storage
        .resolve(&args.file_path)
        .and_then(|name| storage.read(&name).map(|code| (name, code)));
    match loaded {
        Ok((name, code)) => {
            let run = Run {
                tool: "execute_code_file",
                limits,
                session: args.session_id,
            };
            run_stored(state, name, code, run, ctx).await
        }
        Err(e) => fail(failed(args), e),
    }
}

/// The limits of a run that asked for `timeout` seconds (at most MAX_TIMEOUT).
fn call_limits(state: &State, timeout: Option<u64>) -> Result<Limits, RunsError> {
    let max = state.config.runs.max_timeout_secs;
    background::call_limits(&state.config.limits, timeout, max)
}

/// How a stored file runs: the tool that asked, its limits, and the session it runs in (none:
/// a fresh container).
struct Run {
    tool: &'static str,
    limits: Limits,
    session: Option<String>,
}

/// Starts a stored file's `code` as a run (in the active environment or in `run.session`) and
/// answers when it ends or at RESULT_WAIT, whichever comes first.
async fn run_stored(
    state: Arc<State>,
    name: String,
    code: String,
    run: Run,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let path = state.storage.path_of(&name).to_string_lossy().into_owned();
    let world = Arc::clone(&state);
    let tool = run.tool;
    let started = state
        .runs
        .start(tool, Some(path.clone()), move |rc| async move {
            let answer = run_to_end(&world, name, &code, run, rc).await;
            answer.unwrap_or_else(|e| error_result(e.message))
        });
    match started {
        Ok(handle) => runs::answer_first(&state, &handle, ctx).await,
        Err(e) => {
            let result = RunResult {
                file_path: Some(path),
                ..Default::default()
            };
            fail(result, e)
        }
    }
}

/// Runs a stored file's `code` to its end (or deadline, or cancellation) and builds the
/// answer, with the run's id.
async fn run_to_end(
    state: &State,
    name: String,
    code: &str,
    run: Run,
    rc: RunContext,
) -> Result<CallToolResult, ErrorData> {
    let path = state.storage.path_of(&name).to_string_lossy().into_owned();
    let limits = &run.limits;
    let mut result = RunResult {
        file_path: Some(path.clone()),
        generated_filename: Some(name.clone()),
        timeout_secs: Some(limits.timeout_secs),
        session_id: run.session.clone(),
        ..Default::default()
    };
    result.background.run_id = Some(rc.id.clone());
    let env = match environment_of(state, run.session.as_deref()).await {
        Ok(env) => env,
        Err(e) => return fail_run(result, e),
    };
    result.environment = Some(env.to_string());
    // What the answer is built from, and what another server would build it from (only a run
    // in a container of its own is ever kept for that: a session call has none to follow).
    let plan = rc.plan.get_or_init(|| Plan {
        name: name.clone(),
        path: path.clone(),
        environment: env.to_string(),
        limits: limits.clone(),
        before: state.storage.snapshot(),
    });
    let job = Job {
        live: Some(&rc.live),
        ..Job::run(&env, &path, code, limits)
    };
    let ran = match run.session.as_deref() {
        None => state
            .sandbox
            .execute(job, &rc.cancel)
            .await
            .map(|o| (o, None)),
        Some(id) => (state.sandbox.run_in_session(id, job, &rc.cancel).await)
            .map(|r| (r.outcome, Some((id, r.state, r.ended_reason)))),
    };
    let (outcome, session) = match ran {
        Ok(ran) => ran,
        Err(e) => return fail_run(result, e),
    };
    let failure = match session {
        _ if outcome.cancelled && state.is_stopping() => Some(STOPPED.to_string()),
        None => run_failure(&outcome, limits),
        Some((id, after, reason)) => {
            result.session_state = Some(after.into());
            let ended = (after == SessionState::Ended)
                .then(|| reason.unwrap_or_else(|| "its interpreter stopped".to_string()));
            session_failure(&outcome, id, ended, limits)
        }
    };
    crate::metrics::run_finished(outcome_label(&outcome), outcome.duration.as_secs_f64());
    record_outcome(&mut result, outcome, failure);
    answer(state, result, &plan.before)
}

/// The answer of a run this server adopted from one that is gone (`outcome`: how following it
/// to its end went), built as the starting server would have built it from `plan`.
pub(super) fn adopted_answer(
    state: &State,
    run_id: String,
    plan: Plan,
    outcome: Result<RunOutcome, SandboxError>,
) -> CallToolResult {
    let mut result = RunResult {
        file_path: Some(plan.path),
        generated_filename: Some(plan.name),
        timeout_secs: Some(plan.limits.timeout_secs),
        environment: Some(plan.environment),
        ..Default::default()
    };
    result.background.run_id = Some(run_id);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return fail_run(result, e).unwrap_or_else(|e| error_result(e.message)),
    };
    let failure = if outcome.cancelled && state.is_stopping() {
        Some(STOPPED.to_string())
    } else {
        run_failure(&outcome, &plan.limits)
    };
    crate::metrics::run_finished(outcome_label(&outcome), outcome.duration.as_secs_f64());
    record_outcome(&mut result, outcome, failure);
    answer(state, result, &plan.before).unwrap_or_else(|e| error_result(e.message))
}

fn error_result(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

const STOPPED: &str = "the run was stopped because the server is shutting down; output printed \
before that is kept";

/// The environment a run uses: the active one, or the session's.
async fn environment_of(state: &State, session: Option<&str>) -> Result<EnvSpec, SandboxError> {
    match session {
        None => Ok(state.envs().active_spec().clone()),
        Some(id) => state.sandbox.session_env(id).await,
    }
}

/// A run that could not run: `fail`, noting a session that has ended.
fn fail_run(mut result: RunResult, err: SandboxError) -> Result<CallToolResult, ErrorData> {
    if matches!(err, SandboxError::SessionEnded { .. }) {
        result.session_state = Some(contract::SessionState::Ended);
    }
    fail(result, err)
}

/// The result with the files the run created or changed since `before`, and the PNG images
/// among them as image content.
fn answer(
    state: &State,
    mut result: RunResult,
    before: &HashMap<String, FileStat>,
) -> Result<CallToolResult, ErrorData> {
    let changed = crate::storage::changed_files(before, &state.storage.snapshot());
    let images = figures::images_of(state, &changed);
    result.files = Some(figures::file_list(state, &changed));
    result.images = Some(images.iter().map(|i| i.name.clone()).collect());
    let downscaled: Vec<String> = (images.iter().filter(|i| i.downscaled))
        .map(|i| i.name.clone())
        .collect();
    result.images_downscaled = (!downscaled.is_empty()).then_some(downscaled);
    let mut response = respond(&result, result.status == Status::Error)?;
    response.content.extend(
        images
            .into_iter()
            .map(|i| ContentBlock::image(i.png, "image/png")),
    );
    // Every file the run made or changed, as a link: clients read it with resources/read
    // instead of receiving its content here.
    response.content.extend(
        changed
            .iter()
            .map(|c| ContentBlock::resource_link(resources::link(&c.name, c.size))),
    );
    Ok(response)
}

/// Fills `result` with what the run did: status and error (`failure`), output, exit and kill
/// flags.
fn record_outcome(result: &mut RunResult, o: RunOutcome, failure: Option<String>) {
    if let Some(error) = failure {
        result.set_error(error);
    }
    result.output = Some(merge_output(&o.stdout, &o.stderr));
    result.stdout = Some(o.stdout);
    result.stderr = Some(o.stderr);
    result.exit_code = o.exit_code;
    result.duration_ms = Some(o.duration.as_millis() as u64);
    result.timed_out = Some(o.timed_out);
    result.oom_killed = Some(o.oom_killed);
    result.truncated = Some(o.truncated);
    result.cancelled = Some(o.cancelled);
}

/// How a run ended, for the `mce_runs_total{outcome}` metric.
fn outcome_label(o: &RunOutcome) -> &'static str {
    if o.cancelled {
        "cancelled"
    } else if o.oom_killed {
        "oom_killed"
    } else if o.timed_out {
        "timed_out"
    } else if o.exit_code == Some(0) {
        "success"
    } else {
        "error"
    }
}

/// stdout, then stderr on a line of its own (the original's single `output` field).
fn merge_output(stdout: &str, stderr: &str) -> String {
    let mut output = stdout.to_string();
    if !stderr.is_empty() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(stderr);
    }
    output
}

/// The `error` text of a run that did not succeed.
fn run_failure(o: &RunOutcome, limits: &Limits) -> Option<String> {
    if o.cancelled {
        Some("the run was cancelled by the client; its container was killed".to_string())
    } else if o.oom_killed {
        Some(format!(
            "the program ran out of memory and was killed (limit {} MiB, setting MEMORY_LIMIT)",
            limits.memory_bytes >> 20
        ))
    } else if o.timed_out {
        Some(format!(
            "the program did not finish within {} s and was killed (the call's `timeout`, \
             EXECUTION_TIMEOUT when not given, at most MAX_TIMEOUT); output printed before that \
             is kept",
            limits.timeout_secs
        ))
    } else {
        match o.exit_code {
            Some(0) => None,
            Some(127) if o.stderr.contains("failed to run command") => Some(
                "the environment's interpreter does not exist in its image: select the \
                 environment with configure_environment to create it"
                    .to_string(),
            ),
            Some(code) => Some(format!("the program exited with code {code}; see stderr")),
            None => Some("the program was killed before it exited".to_string()),
        }
    }
}

/// The `error` text of a call in a session that did not succeed: the session ended during the
/// call (`ended`: why; the message says its state is lost), or the call was interrupted or
/// failed and the session lives on.
fn session_failure(
    o: &RunOutcome,
    id: &str,
    ended: Option<String>,
    limits: &Limits,
) -> Option<String> {
    if let Some(reason) = ended {
        let id = id.to_string();
        return Some(SandboxError::SessionEnded { id, reason }.to_string());
    }
    let alive = format!("the session {id} is still alive and keeps its state");
    if o.cancelled {
        Some(format!(
            "the call was cancelled by the client and interrupted (KeyboardInterrupt); {alive}, \
             including what the call did before the interrupt"
        ))
    } else if o.timed_out {
        Some(format!(
            "the call did not finish within {} s and was interrupted at the deadline \
             (KeyboardInterrupt); {alive}, including what the call did before the interrupt; \
             output printed before that is kept",
            limits.timeout_secs
        ))
    } else {
        match o.exit_code {
            Some(0) => None,
            Some(code) => Some(format!(
                "the code ended with status {code} (an exception or sys.exit; see stderr); {alive}"
            )),
            None => Some(format!("the call ended without a status; {alive}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            timeout_secs: 30,
            memory_bytes: 512 << 20,
            cpus: 1.0,
            pids: 64,
            output_bytes: 1 << 20,
            tmpfs_bytes: 64 << 20,
            max_code_bytes: 1 << 20,
            max_file_bytes: 1 << 20,
        }
    }

    fn outcome(exit_code: Option<i64>) -> RunOutcome {
        RunOutcome {
            exit_code,
            stdout: "out\n".into(),
            stderr: String::new(),
            truncated: false,
            timed_out: false,
            oom_killed: false,
            cancelled: false,
            duration: Duration::from_millis(1234),
        }
    }

    #[test]
    fn output_is_stdout_then_stderr_on_its_own_line() {
        assert_eq!(merge_output("a", "b"), "a\nb");
        assert_eq!(merge_output("a\n", "b"), "a\nb");
        assert_eq!(merge_output("", "b"), "b");
        assert_eq!(merge_output("a", ""), "a");
        assert_eq!(merge_output("", ""), "");
    }

    #[test]
    fn a_clean_exit_is_no_failure() {
        assert_eq!(run_failure(&outcome(Some(0)), &limits()), None);
    }

    #[test]
    fn failures_say_what_happened() {
        let l = limits();
        let exited = outcome(Some(3));
        assert_eq!(
            run_failure(&exited, &l).as_deref(),
            Some("the program exited with code 3; see stderr")
        );
        let killed = outcome(None);
        assert_eq!(
            run_failure(&killed, &l).as_deref(),
            Some("the program was killed before it exited")
        );
        let oom = RunOutcome {
            oom_killed: true,
            ..outcome(None)
        };
        assert_eq!(
            run_failure(&oom, &l).as_deref(),
            Some(
                "the program ran out of memory and was killed (limit 512 MiB, setting MEMORY_LIMIT)"
            )
        );
        let late = RunOutcome {
            timed_out: true,
            ..outcome(None)
        };
        assert!(
            run_failure(&late, &l)
                .unwrap()
                .starts_with("the program did not finish within 30 s and was killed")
        );
    }

    #[test]
    fn cancellation_wins_over_other_causes() {
        let o = RunOutcome {
            cancelled: true,
            timed_out: true,
            oom_killed: true,
            ..outcome(None)
        };
        assert_eq!(
            run_failure(&o, &limits()).as_deref(),
            Some("the run was cancelled by the client; its container was killed")
        );
    }

    #[test]
    fn a_missing_interpreter_points_at_configure_environment() {
        let o = RunOutcome {
            stderr: "exec: failed to run command python".into(),
            ..outcome(Some(127))
        };
        let error = run_failure(&o, &limits()).unwrap();
        assert!(error.contains("interpreter does not exist"), "{error}");
        assert!(error.contains("configure_environment"), "{error}");
        // Exit 127 from the program itself is an ordinary exit code.
        assert_eq!(
            run_failure(&outcome(Some(127)), &limits()).as_deref(),
            Some("the program exited with code 127; see stderr")
        );
    }

    #[test]
    fn the_outcome_fills_the_result() {
        let mut result = RunResult::default();
        let o = RunOutcome {
            stderr: "warn".into(),
            truncated: true,
            ..outcome(Some(0))
        };
        let failure = run_failure(&o, &limits());
        record_outcome(&mut result, o, failure);
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "success",
                "output": "out\nwarn",
                "stdout": "out\n",
                "stderr": "warn",
                "exit_code": 0,
                "duration_ms": 1234,
                "timed_out": false,
                "oom_killed": false,
                "truncated": true,
                "cancelled": false
            })
        );
    }

    #[test]
    fn a_failed_outcome_marks_the_result_failed() {
        let mut result = RunResult::default();
        let o = outcome(Some(2));
        record_outcome(&mut result, o.clone(), run_failure(&o, &limits()));
        assert_eq!(result.status, Status::Error);
        assert_eq!(
            result.error.as_deref(),
            Some("the program exited with code 2; see stderr")
        );
        assert_eq!(result.exit_code, Some(2));
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_session_call_that_ended_the_session_says_why_and_what_to_do() {
        let o = RunOutcome {
            oom_killed: true,
            ..outcome(None)
        };
        let reason = "the interpreter ran out of memory and was killed (MEMORY_LIMIT)";
        assert_eq!(
            session_failure(&o, ID, Some(reason.into()), &limits()).as_deref(),
            Some(
                "the session 0123456789abcdef0123456789abcdef has ended (the interpreter ran out \
                 of memory and was killed (MEMORY_LIMIT)); its state is lost: call \
                 create_session to start a new one"
            )
        );
        // Even a clean status does not hide that the session is gone.
        let gone = session_failure(&outcome(Some(0)), ID, Some("closed".into()), &limits());
        assert!(gone.unwrap().contains("has ended (closed)"));
    }

    #[test]
    fn a_timed_out_session_call_leaves_the_session_alive() {
        let o = RunOutcome {
            timed_out: true,
            ..outcome(Some(130))
        };
        assert_eq!(
            session_failure(&o, ID, None, &limits()).as_deref(),
            Some(
                "the call did not finish within 30 s and was interrupted at the deadline \
                 (KeyboardInterrupt); the session 0123456789abcdef0123456789abcdef is still \
                 alive and keeps its state, including what the call did before the interrupt; \
                 output printed before that is kept"
            )
        );
        let cancelled = RunOutcome {
            cancelled: true,
            ..outcome(Some(130))
        };
        let error = session_failure(&cancelled, ID, None, &limits()).unwrap();
        assert!(
            error.starts_with("the call was cancelled by the client"),
            "{error}"
        );
        assert!(
            error.contains("is still alive and keeps its state"),
            "{error}"
        );
    }

    #[test]
    fn session_call_statuses() {
        assert_eq!(
            session_failure(&outcome(Some(0)), ID, None, &limits()),
            None
        );
        assert_eq!(
            session_failure(&outcome(Some(1)), ID, None, &limits()).as_deref(),
            Some(
                "the code ended with status 1 (an exception or sys.exit; see stderr); the \
                 session 0123456789abcdef0123456789abcdef is still alive and keeps its state"
            )
        );
    }

    #[test]
    fn a_session_result_carries_the_session_and_its_state() {
        let mut result = RunResult {
            session_id: Some(ID.into()),
            session_state: Some(SessionState::Alive.into()),
            ..Default::default()
        };
        let o = outcome(Some(0));
        let failure = session_failure(&o, ID, None, &limits());
        record_outcome(&mut result, o, failure);
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["status"], "success");
        assert_eq!(json["session_id"], ID);
        assert_eq!(json["session_state"], "alive");
        let ended = RunResult {
            session_state: Some(SessionState::Ended.into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&ended).unwrap()["session_state"],
            "ended"
        );
    }
}
