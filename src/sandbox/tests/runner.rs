//! Tests of sandbox::runner against the fake engine: how a run ends (the runner's marker, the
//! engine's state when there is none, the deadline, cancellation), output caps, what the runner
//! is fed, progress lines, the engine going away, and removal of the container on every path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::environment::{EnvSpec, EnvType};
use crate::error::SandboxError;
use crate::limits::Limits;
use crate::sandbox::engine::{ContainerEngine, ContainerSpec, Created};
use crate::sandbox::fake::{Behaviour, FakeEngine, Step};
use crate::sandbox::labels;
use crate::sandbox::lifecycle::{Lifecycle, unix_now};
use crate::sandbox::policy::Purpose;
use crate::sandbox::runner::{self, Job, RunOutcome};

pub(super) const IMAGE: &str = "mce-test-image";

/// Small limits: `timeout_secs` of wall clock, 4 KiB per output stream.
pub(super) fn limits(timeout_secs: u64) -> Limits {
    Limits {
        timeout_secs,
        memory_bytes: 256 << 20,
        cpus: 1.0,
        pids: 64,
        output_bytes: 4096,
        tmpfs_bytes: 1 << 20,
        max_code_bytes: 1 << 20,
        max_file_bytes: 1 << 20,
    }
}

/// A fake engine with [`IMAGE`] and a lifecycle of `max_concurrent` slots over it.
pub(super) fn setup(max_concurrent: usize) -> (Arc<FakeEngine>, Lifecycle) {
    let fake = FakeEngine::new();
    fake.add_image(IMAGE);
    let life = Lifecycle::new(fake.clone(), max_concurrent);
    (fake, life)
}

/// A minimal container spec of this instance for `purpose`.
pub(super) fn spec(life: &Lifecycle, purpose: &str) -> ContainerSpec {
    ContainerSpec {
        image: IMAGE.to_string(),
        labels: labels::base_labels(life.instance(), unix_now() + 3600, purpose),
        ..Default::default()
    }
}

fn venv() -> EnvSpec {
    EnvSpec::default_for(EnvType::Venv)
}

/// Runs `code` cold as a user's program and returns the outcome and the container's id.
async fn run(life: &Lifecycle, fake: &FakeEngine, limits: &Limits) -> (RunOutcome, String) {
    let env = venv();
    let job = Job::run(&env, "/work/prog.py", "print('hi')", limits);
    let cancel = CancellationToken::new();
    let outcome = runner::run_cold(life, &spec(life, "run"), &job, None, &cancel)
        .await
        .unwrap()
        .unwrap();
    (outcome, fake.created().last().cloned().unwrap())
}

fn dies(stdout: &str, exit_code: Option<i64>, oom: bool) -> Behaviour {
    Behaviour::Dies {
        stdout: stdout.into(),
        stderr: String::new(),
        exit_code,
        oom,
    }
}

async fn removed(fake: &FakeEngine, id: &str) -> bool {
    fake.until(|f| !f.containers().iter().any(|c| c == id))
        .await
}

#[tokio::test]
async fn marker_ends_a_run_with_streams_apart_and_no_wait() {
    let (fake, life) = setup(2);
    fake.push(Behaviour::Exits {
        stdout: "hello\nworld\n".into(),
        stderr: "a warning\n".into(),
        status: 0,
    });
    let (out, id) = run(&life, &fake, &limits(5)).await;
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout, "hello\nworld\n");
    assert_eq!(out.stderr, "a warning\n");
    assert!(out.succeeded() && !out.truncated && !out.oom_killed);
    assert!(
        removed(&fake, &id).await,
        "the container is removed afterwards"
    );
    // The marker said it all: no wait, inspect or kill.
    assert_eq!(fake.ops_on(&id), ["attach", "start", "remove"]);
}

#[tokio::test]
async fn marker_carries_a_non_zero_status() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Exits {
        stdout: String::new(),
        stderr: "Traceback ...\nValueError: boom\n".into(),
        status: 3,
    });
    let (out, id) = run(&life, &fake, &limits(5)).await;
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "Traceback ...\nValueError: boom\n");
    assert!(!out.succeeded() && !out.timed_out);
    let ops = fake.ops_on(&id);
    assert!(
        !ops.iter().any(|o| o == "inspect" || o == "wait"),
        "{ops:?}"
    );
}

#[tokio::test]
async fn marker_split_byte_by_byte_is_found_while_the_container_still_runs() {
    let (fake, life) = setup(1);
    // No exit step: the container keeps running (a leftover background process), yet the
    // marker on both streams ends the run.
    fake.push(Behaviour::Steps(vec![
        Step::OutBytewise("line one\nline two\n\n{marker}:0\nafter the end\n".into()),
        Step::Err("\n{marker}:0\n".into()),
    ]));
    let (out, id) = run(&life, &fake, &limits(5)).await;
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stdout, "line one\nline two\n");
    assert_eq!(out.stderr, "");
    assert!(!out.timed_out);
    assert!(out.duration < Duration::from_secs(2));
    assert!(!fake.ops_on(&id).iter().any(|o| o == "kill" || o == "wait"));
}

#[tokio::test]
async fn killed_without_marker_takes_the_code_from_inspect() {
    let (fake, life) = setup(1);
    fake.push(dies("partial\n", Some(137), false));
    let (out, id) = run(&life, &fake, &limits(5)).await;
    assert_eq!(out.exit_code, Some(137));
    assert!(!out.oom_killed, "137 alone is not an OOM kill");
    assert!(!out.timed_out && !out.cancelled);
    assert_eq!(out.stdout, "partial\n");
    let ops = fake.ops_on(&id);
    assert_eq!(&ops[..4], ["attach", "start", "wait", "inspect"]);
}

#[tokio::test]
async fn oom_comes_from_inspect() {
    let (fake, life) = setup(1);
    fake.push(dies("allocating\n", Some(137), true));
    let (out, _) = run(&life, &fake, &limits(5)).await;
    assert!(out.oom_killed);
    assert_eq!(out.exit_code, Some(137));
    assert_eq!(out.stdout, "allocating\n");
    assert!(!out.succeeded());
}

#[tokio::test]
async fn os_exit_without_marker_reports_the_engines_code() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Dies {
        stdout: "before exit\n".into(),
        stderr: "err\n".into(),
        exit_code: Some(3),
        oom: false,
    });
    let (out, _) = run(&life, &fake, &limits(5)).await;
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("before exit\n", "err\n")
    );
    assert!(!out.oom_killed && !out.timed_out);
}

#[tokio::test]
async fn deadline_kills_and_removes_a_hanging_program() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Hangs);
    let t = Instant::now();
    let (out, id) = run(&life, &fake, &limits(1)).await;
    assert!(out.timed_out && !out.cancelled);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(out.exit_code, Some(137));
    assert!(!out.oom_killed);
    assert!(removed(&fake, &id).await);
    let ops = fake.ops_on(&id);
    let kill = ops.iter().position(|o| o == "kill").unwrap();
    assert!(ops[kill..].iter().any(|o| o == "remove"), "{ops:?}");
}

#[tokio::test]
async fn cancellation_kills_the_run() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Steps(vec![Step::Out("working\n".into())]));
    let env = venv();
    let l = limits(5);
    let job = Job::run(&env, "/work/p.py", "", &l);
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        canceller.cancel();
    });
    let out = runner::run_cold(&life, &spec(&life, "run"), &job, None, &cancel)
        .await
        .unwrap()
        .unwrap();
    assert!(out.cancelled && !out.timed_out);
    assert_eq!(out.stdout, "working\n");
    assert!(out.duration < Duration::from_secs(2));
    let id = fake.created()[0].clone();
    assert!(fake.ops_on(&id).contains(&"kill".to_string()));
    assert!(removed(&fake, &id).await);
}

#[tokio::test]
async fn cancelled_while_waiting_for_a_slot_creates_nothing() {
    let (fake, life) = setup(1);
    let held = CancellationToken::new();
    let _slot = life.slot(&held).await.unwrap().unwrap();
    let env = venv();
    let l = limits(5);
    let job = Job::run(&env, "/work/p.py", "", &l);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = runner::run_cold(&life, &spec(&life, "run"), &job, None, &cancel)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, RunOutcome::cancelled_before_start());
    assert!(out.cancelled && out.exit_code.is_none());
    assert!(fake.created().is_empty());
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

#[tokio::test]
async fn floods_are_capped_and_marked_truncated() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Floods(2_000_000));
    let l = limits(5);
    let (out, _) = run(&life, &fake, &l).await;
    assert!(out.truncated);
    assert_eq!(
        out.exit_code,
        Some(0),
        "the marker after the flood still ends the run"
    );
    assert!(
        out.stdout.len() < l.output_bytes + 200,
        "{}",
        out.stdout.len()
    );
    assert!(out.stdout.contains("bytes cut by mcp-code-executor"));
    assert!(out.stdout.starts_with("xxxx"));
    assert!(!out.stdout.contains("mce-exit-"), "the marker is stripped");
    assert_eq!(out.stderr, "");
}

#[tokio::test]
async fn the_runner_receives_path_argv_marker_and_plots_for_runs() {
    let (fake, life) = setup(1);
    let (env, l, cancel) = (venv(), limits(5), CancellationToken::new());
    let job = Job::run(&env, "/work/analysis.py", "print(1)\n", &l);
    runner::run_cold(&life, &spec(&life, "run"), &job, None, &cancel)
        .await
        .unwrap()
        .unwrap();
    let (header, source) = fake.received(&fake.created()[0]).unwrap();
    assert_eq!(header["path"], "/work/analysis.py");
    assert_eq!(header["argv"], serde_json::json!([]));
    assert_eq!(header["plots"], true);
    let marker = header["marker"].as_str().unwrap();
    assert!(
        marker.starts_with("mce-exit-") && marker.len() > 20,
        "{marker}"
    );
    assert_eq!(source, "print(1)\n");

    let argv = ["numpy".to_string(), "--flag; rm -rf /".to_string()];
    let job = Job::helper(Purpose::Inspect, &env, "/tmp/check.py", "x = 1", &argv, &l);
    runner::run_cold(&life, &spec(&life, "inspect"), &job, None, &cancel)
        .await
        .unwrap()
        .unwrap();
    let (header2, source2) = fake.received(&fake.created()[1]).unwrap();
    assert_eq!(header2["argv"], serde_json::json!(argv));
    assert_eq!(header2["plots"], false, "only user runs capture figures");
    assert_ne!(
        header2["marker"], header["marker"],
        "a fresh marker per run"
    );
    assert_eq!(source2, "x = 1");
}

#[tokio::test]
async fn last_line_follows_complete_lines_and_never_shows_the_marker() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Steps(vec![
        Step::Out("step 1\n".into()),
        Step::Out("step 2\nstep 3 unfinish".into()),
        Step::Pause(Duration::from_millis(400)),
        Step::Out("ed\n\n{marker}:0\n".into()),
        Step::Err("\n{marker}:0\n".into()),
        Step::Exit {
            code: Some(0),
            oom: false,
        },
    ]));
    let (env, l, cancel) = (venv(), limits(5), CancellationToken::new());
    let last = crate::sandbox::output::Live::default();
    let job = Job {
        live: Some(&last),
        ..Job::run(&env, "/work/p.py", "", &l)
    };
    let spec = spec(&life, "run");
    let run = runner::run_cold(&life, &spec, &job, None, &cancel);
    let peek = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last.last_line()
    };
    let (out, during) = tokio::join!(run, peek);
    assert_eq!(during, "step 2", "an unfinished line is not shown");
    assert_eq!(
        out.unwrap().unwrap().stdout,
        "step 1\nstep 2\nstep 3 unfinished\n"
    );
    let after = last.last_line();
    assert!(!after.contains("mce-exit"), "{after}");
}

#[tokio::test]
async fn engine_gone_mid_run_is_reported_and_the_removal_retried() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Cut {
        stdout: "partial\n".into(),
        down: true,
    });
    let (env, l, cancel) = (venv(), limits(5), CancellationToken::new());
    let job = Job::run(&env, "/work/p.py", "", &l);
    let err = runner::run_cold(&life, &spec(&life, "run"), &job, None, &cancel)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    let id = fake.created()[0].clone();
    // The removal was tried while the engine was down: the container is still there.
    assert!(
        fake.until(|f| f.calls().contains(&format!("remove {id}")))
            .await
    );
    assert_eq!(fake.containers(), std::slice::from_ref(&id));
    fake.set_down(false);
    let Created::Id(next) = life.create(&spec(&life, "run"), None).await.unwrap() else {
        panic!("not created");
    };
    assert_eq!(fake.containers(), [next], "the failed removal was retried");
}

#[tokio::test]
async fn broken_stream_without_engine_loss_falls_back_to_the_deadline() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Cut {
        stdout: "partial\n".into(),
        down: false,
    });
    let (out, id) = run(&life, &fake, &limits(1)).await;
    assert_eq!(out.stdout, "partial\n");
    assert!(
        out.timed_out,
        "still running after the stream broke: the deadline ends it"
    );
    assert_eq!(out.exit_code, Some(137));
    assert!(removed(&fake, &id).await);
}

#[tokio::test]
async fn a_dropped_run_removes_its_container() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Hangs);
    let (env, l, cancel) = (venv(), limits(30), CancellationToken::new());
    let job = Job::run(&env, "/work/p.py", "", &l);
    let spec = spec(&life, "run");
    let run = runner::run_cold(&life, &spec, &job, None, &cancel);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), run)
            .await
            .is_err()
    );
    let id = fake.created()[0].clone();
    assert!(removed(&fake, &id).await, "the guard removed it");
    assert!(
        !fake.ops_on(&id).contains(&"kill".to_string()),
        "removed, not killed first"
    );
    // And the slot was given back: another run gets through.
    fake.push(Behaviour::ok("again\n"));
    assert_eq!(run_named(&life, &l).await.stdout, "again\n");
}

/// A run named `mce-named` that must finish within 2 s.
async fn run_named(life: &Lifecycle, l: &Limits) -> RunOutcome {
    let (env, cancel) = (venv(), CancellationToken::new());
    let job = Job::run(&env, "/work/p.py", "", l);
    let spec = spec(life, "run");
    tokio::time::timeout(
        Duration::from_secs(2),
        runner::run_cold(life, &spec, &job, Some("mce-named"), &cancel),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn a_taken_name_gives_none_and_starts_nothing() {
    let (fake, life) = setup(1);
    fake.add_container("mce-named", Default::default(), true, 0);
    let (env, l, cancel) = (venv(), limits(5), CancellationToken::new());
    let job = Job::run(&env, "/work/p.py", "", &l);
    let got = runner::run_cold(&life, &spec(&life, "run"), &job, Some("mce-named"), &cancel)
        .await
        .unwrap();
    assert!(got.is_none());
    assert_eq!(fake.calls(), ["create mce-named"]);
}

#[tokio::test]
async fn a_missing_image_is_reported_with_the_setting() {
    let fake = FakeEngine::new();
    let life = Lifecycle::new(fake.clone(), 1);
    let (env, l, cancel) = (venv(), limits(5), CancellationToken::new());
    let job = Job::run(&env, "/work/p.py", "", &l);
    let err = runner::run_cold(&life, &spec(&life, "run"), &job, None, &cancel)
        .await
        .unwrap_err();
    match err {
        SandboxError::ImageMissing {
            image,
            env,
            setting,
        } => assert_eq!(
            (image.as_str(), env, setting),
            (IMAGE, "venv", "VENV_IMAGE")
        ),
        other => panic!("unexpected {other}"),
    }
    assert!(fake.containers().is_empty());
}

#[tokio::test]
async fn converse_with_a_pre_started_container_that_waited() {
    let (fake, life) = setup(1);
    fake.push(Behaviour::Exits {
        stdout: "warm\n".into(),
        stderr: String::new(),
        status: 0,
    });
    let Created::Id(id) = life
        .create(&spec(&life, "run"), Some("mce-warm-x"))
        .await
        .unwrap()
    else {
        panic!("not created");
    };
    let attached = fake.attach(&id).await.unwrap();
    fake.start(&id).await.unwrap();
    // It waits for its program, printing nothing and staying up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        fake.container(&id).unwrap().2,
        "still running, waiting on stdin"
    );
    let (env, l, cancel) = (venv(), limits(5), CancellationToken::new());
    let job = Job::run(&env, "/work/w.py", "print('warm')", &l);
    let out = crate::sandbox::conversation::converse(fake.as_ref(), &id, attached, &job, &cancel)
        .await
        .unwrap();
    assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), "warm\n"));
    assert_eq!(fake.received(&id).unwrap().1, "print('warm')");
}

#[tokio::test]
async fn a_closed_lifecycle_refuses_cold_runs() {
    let (fake, life) = setup(1);
    life.close();
    let (env, l, cancel) = (venv(), limits(5), CancellationToken::new());
    let job = Job::run(&env, "/work/p.py", "", &l);
    let err = runner::run_cold(&life, &spec(&life, "run"), &job, None, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::ShuttingDown), "{err}");
    assert!(fake.calls().is_empty());
}
