//! Running stored code (`execute_code`, `execute_code_file`): store or load the file, run it in
//! the active environment, and build the `RunResult` from the `RunOutcome`: the failure message,
//! stdout and stderr merged into `output`, the files the run created or changed, and the PNG
//! images among them (returned as image content too).

use base64::Engine;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::State;
use super::contract::{ExecuteCodeArgs, ExecuteCodeFileArgs, FileInfo, RunResult, Status};
use super::progress::Progress;
use super::reply::{Fallible, fail, respond};
use crate::limits::Limits;
use crate::sandbox::{Job, RunOutcome};
use crate::storage::Changed;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// `execute_code`: stores `args.code` as a new file and runs it.
pub async fn execute_code(
    state: &State,
    args: ExecuteCodeArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    match state.storage.create(args.filename.as_deref(), &args.code) {
        Ok(stored) => run_stored(state, stored.name, &args.code, args.timeout, ctx).await,
        Err(e) => fail(RunResult::default(), e),
    }
}

/// `execute_code_file`: runs a file stored earlier.
pub async fn execute_code_file(
    state: &State,
    args: ExecuteCodeFileArgs,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let storage = &state.storage;
    let loaded = storage
        .resolve(&args.file_path)
        .and_then(|name| storage.read(&name).map(|code| (name, code)));
    match loaded {
        Ok((name, code)) => run_stored(state, name, &code, args.timeout, ctx).await,
        Err(e) => {
            let result = RunResult {
                file_path: Some(args.file_path),
                ..Default::default()
            };
            fail(result, e)
        }
    }
}

/// Runs a stored file's `code` in the active environment.
async fn run_stored(
    state: &State,
    name: String,
    code: &str,
    timeout: Option<u64>,
    ctx: &RequestContext<RoleServer>,
) -> Result<CallToolResult, ErrorData> {
    let env = state.envs().active_spec().clone();
    let path = state.storage.path_of(&name).to_string_lossy().into_owned();
    let limits = &state.config.limits.with_call_timeout(timeout);
    let before = state.storage.snapshot();
    let progress = Progress::start(ctx, format!("running {name}"), None);
    let job = Job {
        last_line: Some(progress.last_line()),
        ..Job::run(&env, &path, code, limits)
    };
    let mut result = RunResult {
        file_path: Some(path.clone()),
        generated_filename: Some(name),
        environment: Some(env.to_string()),
        timeout_secs: Some(limits.timeout_secs),
        ..Default::default()
    };
    let outcome = state.sandbox.execute(job, &ctx.ct).await;
    // No progress notification after the result.
    progress.stop().await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return fail(result, e),
    };
    record_outcome(&mut result, outcome, limits);
    let changed = crate::storage::changed_files(&before, &state.storage.snapshot());
    let images = images_of(state, &changed);
    result.files = Some(file_list(state, &changed));
    result.images = Some(images.iter().map(|(name, _)| name.clone()).collect());
    let mut response = respond(&result, result.status == Status::Error)?;
    response.content.extend(
        images
            .into_iter()
            .map(|(_, png)| ContentBlock::image(png, "image/png")),
    );
    Ok(response)
}

/// Fills `result` with what the run did: status and error, output, exit and kill flags.
fn record_outcome(result: &mut RunResult, o: RunOutcome, limits: &Limits) {
    if let Some(error) = run_failure(&o, limits) {
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
            "the program did not finish within {} s and was killed (the call's timeout, at most \
             the server's EXECUTION_TIMEOUT); output printed before that is kept",
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

/// The files a run created or changed, with their absolute paths.
fn file_list(state: &State, changed: &[Changed]) -> Vec<FileInfo> {
    changed
        .iter()
        .map(|c| FileInfo {
            name: c.name.clone(),
            path: state
                .storage
                .path_of(&c.name)
                .to_string_lossy()
                .into_owned(),
            size: c.size,
            created: c.created,
        })
        .collect()
}

/// The PNG files among `changed`, base64-encoded, within the count and size caps.
fn images_of(state: &State, changed: &[Changed]) -> Vec<(String, String)> {
    let config = &state.config;
    changed
        .iter()
        .filter(|c| is_png_name(&c.name) && c.size <= config.max_image_bytes)
        .filter_map(|c| {
            let bytes = state
                .storage
                .read_bytes(&c.name, config.max_image_bytes)
                .ok()?;
            bytes.starts_with(PNG_SIGNATURE).then(|| {
                (
                    c.name.clone(),
                    base64::engine::general_purpose::STANDARD.encode(bytes),
                )
            })
        })
        .take(config.max_images)
        .collect()
}

/// Whether `name` ends in `.png`, in any case.
fn is_png_name(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".png")
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
        record_outcome(&mut result, o, &limits());
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
        record_outcome(&mut result, outcome(Some(2)), &limits());
        assert_eq!(result.status, Status::Error);
        assert_eq!(
            result.error.as_deref(),
            Some("the program exited with code 2; see stderr")
        );
        assert_eq!(result.exit_code, Some(2));
    }

    #[test]
    fn png_names_in_any_case() {
        assert!(is_png_name("plot.png"));
        assert!(is_png_name("PLOT.PNG"));
        assert!(!is_png_name("plot.png.txt"));
        assert!(!is_png_name("png"));
    }
}
