//! Long runs over MCP with the real binary and real containers (issue 15), with a short
//! `RESULT_WAIT`: a run that outlasts it answers `running` at once and is polled to its end with
//! `get_run`; its output tail grows between polls; `cancel_run` stops it and removes its
//! container; a run over its own deadline ends `timed_out` with its partial output; a server
//! killed mid-run hands its runs to the next one on the same folder (polled to their end, with
//! their whole output; a run whose container went away meanwhile is `lost`, with why), and a
//! finished run stays readable; a clean restart (a stdio client restarting) leaves runs in the
//! background going for the next server; results expire after `RUN_RETENTION`; a slow install
//! goes to the background and is importable afterwards; bad timeouts and run ids are refused;
//! `MAX_BACKGROUND_RUNS` refuses (and starts nothing) beyond its count; `list_runs` follows the
//! states; progress notifications flow while `get_run` waits.
//!
//! Every test has a time bound, works in storage folders of its own (its containers are found
//! by their bind mount of that folder, and removed by a guard if the test fails half-way) and
//! checks that nothing is left. Only the install test reaches outside (PyPI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use common::{Opts, Server, TestEnv, containers_mounting, str_field};
use rmcp::model::{
    CallToolRequestParams, NumberOrString, ProgressNotificationParam, ProgressToken,
    RequestMetaObject,
};
use rmcp::service::NotificationContext;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

/// Runs a test body with a time bound: a hung call fails the test instead of blocking the
/// suite (guards in the body still clean up when it is dropped).
async fn bounded(secs: u64, body: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .map_err(|_| anyhow!("the test took more than {secs} s"))?
}

/// Settings for these tests: a one-second RESULT_WAIT and no warm pool, so that every
/// container mounting a test's storage folder is one of its runs.
fn opts() -> Opts {
    Opts::default()
        .env("RESULT_WAIT", "1")
        .env("POOL_SIZE", "0")
}

/// Removes, when dropped, every container mounting the storage folders it watches or labelled
/// with the instances it watches: a test that fails half-way leaves nothing behind.
#[derive(Default)]
struct Guard {
    storage: Vec<PathBuf>,
    instances: Vec<String>,
}

impl Guard {
    fn watch(&mut self, storage: &Path) {
        self.storage.push(storage.to_path_buf());
    }

    fn left(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .storage
            .iter()
            .flat_map(|p| containers_mounting(p))
            .collect();
        left.extend(self.instances.iter().flat_map(|i| instance_containers(i)));
        left.sort();
        left.dedup();
        left
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let left = self.left();
        if !left.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&left)
                .output();
        }
    }
}

/// Containers (any state) of the server instance `instance`.
fn instance_containers(instance: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .args([
            "--filter",
            &format!("label=mcp-code-executor.instance={instance}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Running sentinel containers of the server instance `instance`.
fn running_sentinels(instance: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "--format", "{{.Names}}"])
        .args([
            "--filter",
            &format!("label=mcp-code-executor.instance={instance}"),
        ])
        .args(["--filter", "label=mcp-code-executor.purpose=sentinel"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The server instance a container belongs to (its label).
fn instance_of(container: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"mcp-code-executor.instance\"}}",
            container,
        ])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits (up to `secs`) until `f` holds.
async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is_run_id(id: &str) -> bool {
    id.strip_prefix("run-")
        .is_some_and(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The record file of run `id` in `storage`.
fn record_file(storage: &Path, id: &str) -> PathBuf {
    storage.join(".mce-runs").join(format!("{id}.json"))
}

/// Checks a `running` answer (of the first call or of get_run) and returns its run id.
fn assert_running(r: &Value, is_error: bool) -> String {
    assert!(!is_error, "a running answer is not an error: {r}");
    assert_eq!(r["status"], "running", "{r}");
    let id = str_field(r, "run_id").to_string();
    assert!(is_run_id(&id), "{r}");
    assert!(r["elapsed_secs"].as_f64().is_some(), "{r}");
    assert!(r["stdout_tail"].is_string(), "{r}");
    assert!(r["stderr_tail"].is_string(), "{r}");
    assert!(r["poll_after_secs"].as_u64().is_some_and(|p| p >= 1), "{r}");
    id
}

/// execute_code that must answer `running` (RESULT_WAIT=1); returns the answer and its id.
async fn start_running(s: &Server, args: Value) -> anyhow::Result<(Value, String)> {
    let started = Instant::now();
    let (r, is_error) = s.call("execute_code", args).await?;
    let took = started.elapsed();
    let id = assert_running(&r, is_error);
    ensure!(
        took < Duration::from_secs(4),
        "the running answer took {took:?} with RESULT_WAIT=1"
    );
    Ok((r, id))
}

/// Polls `id` with get_run (each call waiting up to a second) until it is no longer running,
/// for at most `secs`; returns the final answer and its isError.
async fn poll_to_end(s: &Server, id: &str, secs: u64) -> anyhow::Result<(Value, bool)> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (r, is_error) = s
            .call("get_run", json!({ "run_id": id, "wait_secs": 1 }))
            .await?;
        if r["status"] != "running" {
            return Ok((r, is_error));
        }
        assert_eq!(assert_running(&r, is_error), id);
        ensure!(
            Instant::now() < until,
            "run {id} still running after {secs} s: {r}"
        );
    }
}

/// Runs `code` to its end: its direct answer, or (a busy machine made it outlast RESULT_WAIT)
/// the answer get_run gives at its end.
async fn finished(s: &Server, code: &str) -> anyhow::Result<(Value, bool)> {
    let (r, is_error) = s.run(code).await?;
    if r["status"] != "running" {
        return Ok((r, is_error));
    }
    poll_to_end(s, str_field(&r, "run_id"), 60).await
}

/// The list_runs entry of `id`, if listed.
async fn listed(s: &Server, id: &str) -> anyhow::Result<Option<Value>> {
    let (r, is_error) = s.call("list_runs", json!({})).await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["status"], "success", "{r}");
    let runs = r["runs"].as_array().context("no runs array")?;
    Ok(runs.iter().find(|e| e["run_id"] == id).cloned())
}

/// Files (not folders, not hidden) in `storage`.
fn stored_files(storage: &Path) -> Vec<String> {
    std::fs::read_dir(storage)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_run_past_result_wait_answers_running_and_get_run_returns_its_result()
-> anyhow::Result<()> {
    let s = Server::start_with(opts()).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(60, async {
        let code = "import sys, time\nprint('start', flush=True)\ntime.sleep(5)\nprint('end')\nprint('err', file=sys.stderr)\nsys.exit(3)";
        let started = Instant::now();
        let (first, id) = start_running(&s, json!({ "code": code })).await?;
        let file_path = str_field(&first, "file_path").to_string();
        assert!(file_path.ends_with(".py"), "{first}");
        assert!(Path::new(&file_path).starts_with(&s.storage), "{first}");
        // The run has its record while it runs.
        let record: Value = serde_json::from_slice(&std::fs::read(record_file(&s.storage, &id))?)?;
        assert_eq!(record["state"], "running", "{record}");

        // get_run waits at most RESULT_WAIT, whatever wait_secs asks.
        let asked = Instant::now();
        let (r, is_error) = s
            .call("get_run", json!({ "run_id": id, "wait_secs": 60 }))
            .await?;
        assert_eq!(assert_running(&r, is_error), id);
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "get_run waited {:?} with RESULT_WAIT=1",
            asked.elapsed()
        );

        let (r, is_error) = poll_to_end(&s, &id, 30).await?;
        assert!(
            started.elapsed() >= Duration::from_secs(5),
            "a 5 s run ended after {:?}: {r}",
            started.elapsed()
        );
        // The same shape as a direct answer, with the run's id.
        assert!(is_error, "exit code 3 is a failed run: {r}");
        assert_eq!(r["status"], "error", "{r}");
        assert_eq!(r["run_id"], id.as_str(), "{r}");
        assert_eq!(r["exit_code"], 3, "{r}");
        assert_eq!(r["stdout"], "start\nend\n", "{r}");
        assert_eq!(r["stderr"], "err\n", "{r}");
        assert_eq!(r["output"], "start\nend\nerr\n", "{r}");
        assert_eq!(r["timed_out"], false, "{r}");
        assert_eq!(r["cancelled"], false, "{r}");
        assert_eq!(r["file_path"], file_path.as_str(), "{r}");
        assert!(r["files"].is_array() && r["images"].is_array(), "{r}");
        assert!(
            str_field(&r, "error").contains("exited with code 3"),
            "{r}"
        );

        // Asking again gives the same result; the record on disk says finished.
        let (again, again_error) = s.call("get_run", json!({ "run_id": id })).await?;
        assert_eq!((again, again_error), (r.clone(), true));
        let record: Value = serde_json::from_slice(&std::fs::read(record_file(&s.storage, &id))?)?;
        assert_eq!(record["state"], "finished", "{record}");

        // A run that ends within RESULT_WAIT answers as before, with a run_id of its own.
        let (quick, is_error) = s.run("print('quick')").await?;
        assert!(!is_error, "{quick}");
        assert_eq!(quick["stdout"], "quick\n");
        let quick_id = str_field(&quick, "run_id");
        assert!(is_run_id(quick_id) && quick_id != id, "{quick}");

        let left = s.containers().await;
        assert!(left.is_empty(), "containers left: {left:?}");
        Ok(())
    })
    .await?;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_output_tail_grows_between_polls() -> anyhow::Result<()> {
    let s = Server::start_with(opts()).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(60, async {
        let code = "import sys, time\nfor i in range(12):\n    print(f'tick {i}', flush=True)\n    print(f'warn {i}', file=sys.stderr, flush=True)\n    time.sleep(0.5)";
        let (first, id) = start_running(&s, json!({ "code": code })).await?;
        let ticks = |r: &Value, field: &str| str_field(r, field).matches("tick").count();
        let warns = |r: &Value, field: &str| str_field(r, field).matches("warn").count();
        assert!(ticks(&first, "stdout_tail") >= 1, "{first}");
        assert!(str_field(&first, "stdout_tail").starts_with("tick 0\n"), "{first}");
        assert!(
            str_field(&first, "stderr_tail").starts_with("warn 0\n"),
            "{first}"
        );

        let mut last = first;
        let mut grew = 0;
        for _ in 0..3 {
            let (r, is_error) = s
                .call("get_run", json!({ "run_id": id, "wait_secs": 1 }))
                .await?;
            if r["status"] != "running" {
                break;
            }
            assert_eq!(assert_running(&r, is_error), id);
            let (before, now) = (
                str_field(&last, "stdout_tail"),
                str_field(&r, "stdout_tail"),
            );
            assert!(now.starts_with(before), "the tail lost its start: {last} then {r}");
            if ticks(&r, "stdout_tail") > ticks(&last, "stdout_tail")
                && warns(&r, "stderr_tail") > warns(&last, "stderr_tail")
            {
                grew += 1;
            }
            assert!(
                r["elapsed_secs"].as_f64() > last["elapsed_secs"].as_f64(),
                "elapsed did not grow: {last} then {r}"
            );
            last = r;
        }
        assert!(grew >= 2, "the tails did not grow between polls (grew {grew} times)");

        let (r, is_error) = poll_to_end(&s, &id, 30).await?;
        assert!(!is_error, "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        let expected: String = (0..12).map(|i| format!("tick {i}\n")).collect();
        assert_eq!(r["stdout"], expected.as_str(), "{r}");
        let left = s.containers().await;
        assert!(left.is_empty(), "containers left: {left:?}");
        Ok(())
    })
    .await?;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn cancel_run_stops_the_run_and_removes_its_container() -> anyhow::Result<()> {
    let s = Server::start_with(opts()).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(60, async {
        let code = "import time\nprint('going', flush=True)\nwhile True:\n    with open('ticks.txt', 'a') as f:\n        f.write('x')\n    time.sleep(0.1)";
        let (_, id) = start_running(&s, json!({ "code": code, "timeout": 600 })).await?;
        assert_eq!(s.busy_containers().len(), 1, "the run has one container");
        let ticks = s.storage.join("ticks.txt");
        assert!(
            eventually(10, || std::fs::metadata(&ticks).is_ok_and(|m| m.len() > 0)).await,
            "the run never wrote"
        );

        let asked = Instant::now();
        let (r, is_error) = s.call("cancel_run", json!({ "run_id": id })).await?;
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "cancel_run took {:?}",
            asked.elapsed()
        );
        assert!(is_error, "a cancelled run is a failed run: {r}");
        assert_eq!(r["cancelled"], true, "{r}");
        assert_eq!(r["run_id"], id.as_str(), "{r}");
        assert_eq!(r["stdout"], "going\n", "{r}");
        assert_eq!(r["timed_out"], false, "{r}");
        assert!(str_field(&r, "error").contains("cancelled"), "{r}");

        // Its container goes within a few seconds, and the program no longer writes.
        let left = s.containers().await;
        assert!(left.is_empty(), "the cancelled run's container remains: {left:?}");
        let size = std::fs::metadata(&ticks)?.len();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            std::fs::metadata(&ticks)?.len(),
            size,
            "the cancelled run kept writing"
        );

        // Afterwards: get_run and cancel_run answer the same result; list_runs says cancelled.
        let (again, again_error) = s.call("get_run", json!({ "run_id": id })).await?;
        assert_eq!((&again, again_error), (&r, true));
        let (again, again_error) = s.call("cancel_run", json!({ "run_id": id })).await?;
        assert_eq!((&again, again_error), (&r, true));
        let entry = listed(&s, &id).await?.context("the run is not listed")?;
        assert_eq!(entry["state"], "cancelled", "{entry}");

        // The server goes on.
        let (r, is_error) = finished(&s, "print('next')").await?;
        assert!(!is_error, "{r}");
        assert_eq!(r["stdout"], "next\n");
        Ok(())
    })
    .await?;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_run_past_its_own_deadline_ends_timed_out_with_partial_output() -> anyhow::Result<()> {
    let s = Server::start_with(opts()).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(60, async {
        let code = "import time\nprint('before', flush=True)\ntime.sleep(10)\nprint('after')";
        let started = Instant::now();
        let (_, id) = start_running(&s, json!({ "code": code, "timeout": 2 })).await?;
        let (r, is_error) = poll_to_end(&s, &id, 20).await?;
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "a run with timeout 2 ended after {:?}",
            started.elapsed()
        );
        assert!(is_error, "{r}");
        assert_eq!(r["run_id"], id.as_str(), "{r}");
        assert_eq!(r["timed_out"], true, "{r}");
        assert_eq!(r["cancelled"], false, "{r}");
        assert_eq!(r["stdout"], "before\n", "{r}");
        assert_eq!(r["timeout_secs"], 2, "{r}");
        assert!(str_field(&r, "error").contains("within 2 s"), "{r}");
        let entry = listed(&s, &id).await?.context("the run is not listed")?;
        assert_eq!(entry["state"], "timed_out", "{entry}");
        let left = s.containers().await;
        assert!(left.is_empty(), "containers left: {left:?}");
        Ok(())
    })
    .await?;
    s.stop().await?;
    Ok(())
}

/// What a server keeps for handing run `id` to the next one: the run's container, once kept.
fn kept_container(storage: &Path, id: &str) -> Option<String> {
    let path = storage.join(".mce-runs").join(format!("{id}.follow.json"));
    let kept: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    kept["container"].as_str().map(str::to_string)
}

#[tokio::test]
async fn a_server_killed_mid_run_hands_its_runs_to_the_next_one() -> anyhow::Result<()> {
    let old = Server::start_with(opts()).await?;
    let storage = old.storage.clone();
    let mut guard = Guard::default();
    guard.watch(&storage);
    bounded(150, async {
        // One run that finished before the kill; two still going at the kill: one goes on and
        // is polled to its end by the next server, the other's container is removed by hand
        // while no server runs (it is lost, and says why).
        let (mut done, is_error) = old.run("print('finished before')").await?;
        let done_id = str_field(&done, "run_id").to_string();
        if done["status"] == "running" {
            // A busy machine: a cold start took longer than RESULT_WAIT.
            done = poll_to_end(&old, &done_id, 30).await?.0;
        }
        assert!(!is_error && done["status"] == "success", "{done}");
        let long = "import time, sys\nprint('going', flush=True)\n\
                    print('warn', file=sys.stderr, flush=True)\ntime.sleep(8)\n\
                    open('adopted.txt', 'w').write('made after the kill')\nprint('done')\n\
                    sys.exit(3)";
        let (_, adopted) = start_running(&old, json!({ "code": long, "timeout": 120 })).await?;
        let code = "import time\nprint('going', flush=True)\ntime.sleep(60)";
        let (_, removed) = start_running(&old, json!({ "code": code, "timeout": 120 })).await?;
        assert!(
            eventually(10, || kept_container(&storage, &adopted).is_some()
                && kept_container(&storage, &removed).is_some())
            .await,
            "the runs in the background were not kept for the next server"
        );
        let gone = kept_container(&storage, &removed).context("kept")?;
        let busy = old.busy_containers();
        assert_eq!(busy.len(), 2, "{busy:?}");
        let instance = instance_of(&busy[0]);
        assert!(
            !instance.is_empty(),
            "the run container has no instance label"
        );
        guard.instances.push(instance.clone());

        let killed_at = Instant::now();
        // SAFETY: SIGKILL to the server process this test spawned.
        assert_eq!(unsafe { libc::kill(old.pid as i32, libc::SIGKILL) }, 0);
        common::wait_gone(old.pid).await;
        assert!(
            eventually(15, || running_sentinels(&instance).is_empty()).await,
            "the killed server's sentinel still runs: {:?}",
            running_sentinels(&instance)
        );
        let rm = std::process::Command::new("docker")
            .args(["rm", "-f", &gone])
            .output()?;
        assert!(rm.status.success(), "docker rm: {rm:?}");

        let new =
            Server::start_with(opts().env("CODE_STORAGE_DIR", storage.to_str().unwrap())).await?;
        guard.watch(&new.storage);
        let result = async {
            // The run that went on is polled to its end: its whole output (also what it printed
            // before the kill), its exit code, the file it wrote after the kill.
            let (r, is_error) = poll_to_end(&new, &adopted, 60).await?;
            assert!(
                killed_at.elapsed() >= Duration::from_secs(5),
                "ended too early to have slept through the kill: {r}"
            );
            assert!(is_error, "exit code 3 is a failed run: {r}");
            assert_eq!(r["status"], "error", "{r}");
            assert_eq!(r["run_id"], adopted.as_str(), "{r}");
            assert_eq!(r["exit_code"], 3, "{r}");
            assert_eq!(r["stdout"], "going\ndone\n", "{r}");
            assert_eq!(r["stderr"], "warn\n", "{r}");
            assert_eq!(r["timed_out"], false, "{r}");
            assert!(str_field(&r, "error").contains("exited with code 3"), "{r}");
            let files = r["files"].to_string();
            assert!(
                files.contains("adopted.txt"),
                "the file made after the kill: {r}"
            );
            assert_eq!(
                std::fs::read_to_string(storage.join("adopted.txt"))?,
                "made after the kill"
            );
            // Asked again, the same result; cancel_run of an ended run answers it as it is.
            let (again, _) = new.call("get_run", json!({ "run_id": adopted })).await?;
            assert_eq!(again, r, "the result changed between polls");

            // The run whose container went away is lost, and says why, at once.
            let asked = Instant::now();
            let (r, is_error) = new.call("get_run", json!({ "run_id": removed })).await?;
            assert!(
                asked.elapsed() < Duration::from_secs(3),
                "{:?}",
                asked.elapsed()
            );
            assert!(is_error, "a lost run is an error: {r}");
            assert_eq!(
                (&r["status"], &r["state"]),
                (&json!("lost"), &json!("lost")),
                "{r}"
            );
            assert_eq!(r["run_id"], removed.as_str(), "{r}");
            let why = str_field(&r, "error");
            assert!(why.contains("lost") && why.contains("is gone"), "{r}");
            let (c, c_error) = new.call("cancel_run", json!({ "run_id": removed })).await?;
            assert_eq!((&c, c_error), (&r, true));

            // The finished run's result is still there, unchanged.
            let (r, is_error) = new.call("get_run", json!({ "run_id": done_id })).await?;
            assert!(!is_error, "{r}");
            assert_eq!(r, done, "the finished result changed across the restart");
            let states = [
                (&adopted, "finished"),
                (&removed, "lost"),
                (&done_id, "finished"),
            ];
            for (id, state) in states {
                let entry = listed(&new, id).await?.context("not listed")?;
                assert_eq!(entry["state"], state, "{entry}");
            }
            // Nothing of the killed server is left: the adopted run's container went when it
            // ended, the rest with the sweep.
            assert!(
                eventually(20, || instance_containers(&instance).is_empty()).await,
                "containers of the killed server left: {:?}",
                instance_containers(&instance)
            );
            anyhow::Ok(())
        }
        .await;
        if result.is_err() {
            eprintln!("new server's log:\n{}", new.log());
        }
        // Stopped either way, so that its own containers go with it.
        let stopped = new.stop().await;
        result?;
        stopped?;
        Ok(())
    })
    .await?;
    drop(old);
    Ok(())
}

#[tokio::test]
async fn a_run_in_the_background_goes_on_across_a_clean_restart() -> anyhow::Result<()> {
    // A stdio client that restarts closes the server's stdin: the server shuts down cleanly,
    // leaves its runs in the background going, and the next server takes them over.
    let old = Server::start_with(opts()).await?;
    let storage = old.storage.clone();
    let mut guard = Guard::default();
    guard.watch(&storage);
    bounded(120, async {
        let code = "import time\nfor i in range(6):\n    print(i, flush=True)\n    time.sleep(1)";
        let (_, id) = start_running(&old, json!({ "code": code, "timeout": 60 })).await?;
        assert!(
            eventually(10, || kept_container(&storage, &id).is_some()).await,
            "the run in the background was not kept for the next server"
        );
        let container = kept_container(&storage, &id).context("kept")?;
        let stopped = old.stop().await?;
        let exists = std::process::Command::new("docker")
            .args(["inspect", "--format", "{{.Id}}", &container])
            .output()?;
        assert!(
            exists.status.success(),
            "the clean shutdown removed the run's container"
        );

        let new =
            Server::start_with(opts().env("CODE_STORAGE_DIR", storage.to_str().unwrap())).await?;
        guard.watch(&new.storage);
        let result = async {
            let (r, is_error) = poll_to_end(&new, &id, 60).await?;
            assert!(!is_error, "{r}");
            assert_eq!(r["status"], "success", "{r}");
            assert_eq!(r["stdout"], "0\n1\n2\n3\n4\n5\n", "{r}");
            assert_eq!(r["exit_code"], 0, "{r}");
            assert_eq!(r["run_id"], id.as_str(), "{r}");
            assert!(
                eventually(20, || {
                    let out = std::process::Command::new("docker")
                        .args(["inspect", &container])
                        .output();
                    out.is_ok_and(|o| !o.status.success())
                })
                .await,
                "the run's container was not removed after its end"
            );
            anyhow::Ok(())
        }
        .await;
        if result.is_err() {
            eprintln!("new server's log:\n{}", new.log());
        }
        let stopped_new = new.stop().await;
        result?;
        stopped_new?;
        drop(stopped);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn results_expire_after_run_retention() -> anyhow::Result<()> {
    let s = Server::start_with(opts().env("RUN_RETENTION", "2")).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(60, async {
        let (r, is_error) = finished(&s, "print('kept a while')").await?;
        assert!(!is_error, "{r}");
        let id = str_field(&r, "run_id").to_string();
        let (again, _) = s.call("get_run", json!({ "run_id": id })).await?;
        assert_eq!(again, r);
        assert!(listed(&s, &id).await?.is_some());
        assert!(record_file(&s.storage, &id).exists());

        // 2 s of retention, a sweep every 5 s: gone well within 12 s.
        let until = Instant::now() + Duration::from_secs(12);
        let answer = loop {
            let (r, is_error) = s.call("get_run", json!({ "run_id": id })).await?;
            if is_error {
                break r;
            }
            ensure!(
                Instant::now() < until,
                "get_run still answers the result 12 s after a 2 s RUN_RETENTION: {r}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(
            str_field(&answer, "error").contains("there is no run"),
            "{answer}"
        );
        assert!(
            listed(&s, &id).await?.is_none(),
            "list_runs still shows an expired run"
        );
        let record = record_file(&s.storage, &id);
        assert!(
            eventually(8, || !record.exists()).await,
            "the expired run's record is still on disk: {}",
            record.display()
        );
        Ok(())
    })
    .await?;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_slow_install_goes_to_the_background_and_is_then_importable() -> anyhow::Result<()> {
    let env = TestEnv::new("venv");
    let s = Server::start_with(opts()).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(300, async {
        let (r, is_error) = s
            .call("configure_environment", env.configure_args())
            .await?;
        assert!(!is_error, "{r}");

        let asked = Instant::now();
        let (r, is_error) = s
            .call("install_dependencies", json!({ "packages": ["six"] }))
            .await?;
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "the install's first answer took {:?}",
            asked.elapsed()
        );
        let id = assert_running(&r, is_error);
        let entry = listed(&s, &id)
            .await?
            .context("the install is not listed")?;
        assert_eq!(entry["tool"], "install_dependencies", "{entry}");
        assert_eq!(entry["state"], "running", "{entry}");

        let (r, is_error) = poll_to_end(&s, &id, 240).await?;
        assert!(!is_error, "{r}");
        assert_eq!(r["status"], "success", "{r}");
        assert_eq!(r["run_id"], id.as_str(), "{r}");
        assert_eq!(r["installed_packages"], json!(["six"]), "{r}");
        assert_eq!(r["env_type"], "venv", "{r}");
        let entry = listed(&s, &id)
            .await?
            .context("the install is not listed")?;
        assert_eq!(entry["state"], "finished", "{entry}");

        let code = "import six, sys\nprint(six.__file__.startswith(sys.prefix), sys.prefix)";
        let (r, is_error) = finished(&s, code).await?;
        assert!(!is_error, "{r}");
        assert_eq!(
            str_field(&r, "stdout").trim(),
            format!("True {}", env.prefix())
        );
        let left = s.containers().await;
        assert!(left.is_empty(), "containers left: {left:?}");
        Ok(())
    })
    .await?;
    s.stop().await?;
    drop(env);
    Ok(())
}

#[tokio::test]
async fn bad_timeouts_and_run_ids_are_refused() -> anyhow::Result<()> {
    let s =
        Server::start_with(opts().env("MAX_TIMEOUT", "60").env("INSTALL_TIMEOUT", "60")).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(60, async {
        // A client can learn the bounds before it asks.
        let (c, _) = s.call("get_environment_config", json!({})).await?;
        let expected = json!({
            "max_timeout_secs": 60,
            "result_wait_secs": 1,
            "run_retention_secs": 3600,
            "max_background_runs": 8,
        });
        assert_eq!(c["config"]["runs"], expected, "{c}");
        let session = "0123456789abcdef0123456789abcdef";
        for timeout in [0, 61] {
            let calls = [
                (
                    "execute_code",
                    json!({ "code": "print(1)", "timeout": timeout }),
                ),
                (
                    "execute_code",
                    json!({ "code": "print(1)", "timeout": timeout, "session_id": session }),
                ),
                (
                    "execute_code_file",
                    json!({ "file_path": "x.py", "timeout": timeout }),
                ),
                (
                    "install_dependencies",
                    json!({ "packages": ["six"], "timeout": timeout }),
                ),
            ];
            for (tool, args) in calls {
                let (r, is_error) = s.call(tool, args.clone()).await?;
                assert!(is_error, "{tool} {args}: {r}");
                assert_eq!(r["status"], "error", "{tool} {args}: {r}");
                let msg = str_field(&r, "error");
                assert!(
                    msg.contains("MAX_TIMEOUT") && msg.contains("60"),
                    "{tool} {args}: {msg}"
                );
                assert!(r.get("run_id").is_none(), "{tool} {args}: {r}");
            }
        }
        let files = stored_files(&s.storage);
        assert!(files.is_empty(), "refused calls stored files: {files:?}");
        let (r, _) = s.call("list_runs", json!({})).await?;
        assert_eq!(r["runs"], json!([]), "refused calls started runs: {r}");

        // The bounds themselves are accepted.
        let (r, is_error) = s
            .call("execute_code", json!({ "code": "print(1)", "timeout": 60 }))
            .await?;
        assert!(!is_error, "{r}");
        assert_eq!(r["timeout_secs"], 60, "{r}");

        for tool in ["get_run", "cancel_run"] {
            let unknown = format!("run-{}", "0".repeat(32));
            let (r, is_error) = s.call(tool, json!({ "run_id": unknown })).await?;
            assert!(is_error, "{tool}: {r}");
            assert!(
                str_field(&r, "error").contains("there is no run"),
                "{tool}: {r}"
            );
            for bad in ["../x", "run-../../etc/passwd", ""] {
                let (r, is_error) = s.call(tool, json!({ "run_id": bad })).await?;
                assert!(is_error, "{tool} {bad:?}: {r}");
                assert!(
                    str_field(&r, "error").contains("is not a run id"),
                    "{tool} {bad:?}: {r}"
                );
            }
        }
        let left = s.containers().await;
        assert!(left.is_empty(), "containers left: {left:?}");
        Ok(())
    })
    .await?;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn runs_beyond_max_background_runs_are_refused_and_nothing_starts() -> anyhow::Result<()> {
    let s = Server::start_with(opts().env("MAX_BACKGROUND_RUNS", "1")).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(60, async {
        let code = "import time\nprint('busy', flush=True)\ntime.sleep(60)";
        let (_, id) = start_running(&s, json!({ "code": code, "timeout": 120 })).await?;
        let busy = s.busy_containers();
        assert_eq!(busy.len(), 1, "{busy:?}");

        let (r, is_error) = s.run("print('refused')").await?;
        assert!(is_error, "{r}");
        assert!(
            str_field(&r, "error").contains("MAX_BACKGROUND_RUNS"),
            "{r}"
        );
        assert!(r.get("run_id").is_none(), "a refused call has no run: {r}");
        let (r, is_error) = s
            .call("install_dependencies", json!({ "packages": ["six"] }))
            .await?;
        assert!(is_error, "{r}");
        assert!(
            str_field(&r, "error").contains("MAX_BACKGROUND_RUNS"),
            "{r}"
        );

        // Nothing started: still the one container, one run listed, one record.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(s.busy_containers(), busy);
        let (r, _) = s.call("list_runs", json!({})).await?;
        let runs = r["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{r}");
        assert_eq!(runs[0]["run_id"], id.as_str(), "{r}");
        let records = std::fs::read_dir(s.storage.join(".mce-runs"))?
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".json") && !name.ends_with(".follow.json")
            })
            .count();
        assert_eq!(records, 1, "one record (and what adopting it needs)");
        let files = stored_files(&s.storage);
        assert_eq!(
            files.len(),
            1,
            "the refused call stored its code: {files:?}"
        );

        // Once it is stopped, runs start again.
        let (r, _) = s.call("cancel_run", json!({ "run_id": id })).await?;
        assert_eq!(r["cancelled"], true, "{r}");
        let (r, is_error) = finished(&s, "print('next')").await?;
        assert!(!is_error, "{r}");
        assert_eq!(r["stdout"], "next\n");
        let left = s.containers().await;
        assert!(left.is_empty(), "containers left: {left:?}");
        Ok(())
    })
    .await?;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn list_runs_follows_the_states_newest_first() -> anyhow::Result<()> {
    let s = Server::start_with(opts()).await?;
    let mut guard = Guard::default();
    guard.watch(&s.storage);
    bounded(60, async {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let code = "import time\ntime.sleep(3)\nprint('slept')";
        let (first, id) = start_running(&s, json!({ "code": code })).await?;
        let entry = listed(&s, &id).await?.context("the run is not listed")?;
        assert_eq!(entry["state"], "running", "{entry}");
        assert_eq!(entry["tool"], "execute_code", "{entry}");
        assert_eq!(entry["file_path"], first["file_path"], "{entry}");
        let started = entry["started_unix"].as_u64().context("no started_unix")?;
        assert!(started >= before && started <= before + 5, "{entry}");
        assert!(
            entry["elapsed_secs"].as_f64().is_some_and(|e| e >= 1.0),
            "{entry}"
        );

        let (r, is_error) = poll_to_end(&s, &id, 20).await?;
        assert!(!is_error, "{r}");
        let entry = listed(&s, &id).await?.context("the run is not listed")?;
        assert_eq!(entry["state"], "finished", "{entry}");
        assert!(
            entry["elapsed_secs"].as_f64().is_some_and(|e| e >= 3.0),
            "{entry}"
        );

        // A newer run comes first.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (r, is_error) = finished(&s, "print(2)").await?;
        assert!(!is_error, "{r}");
        let newer = str_field(&r, "run_id");
        let (list, _) = s.call("list_runs", json!({})).await?;
        let ids: Vec<&str> = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["run_id"].as_str())
            .collect();
        assert_eq!(ids, [newer, id.as_str()], "{list}");
        let left = s.containers().await;
        assert!(left.is_empty(), "containers left: {left:?}");
        Ok(())
    })
    .await?;
    s.stop().await?;
    Ok(())
}

/// A client that records progress notifications.
#[derive(Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

#[tokio::test]
async fn progress_flows_while_get_run_waits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let storage = dir.path().join("code");
    let mut guard = Guard::default();
    let mut child = tokio::process::Command::new(common::bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CODE_STORAGE_DIR", &storage)
        .env("CONDA_IMAGE", common::CONDA_STANDIN_IMAGE)
        .env("POOL_SIZE", "0")
        .env("RESULT_WAIT", "3")
        .envs(std::env::var("DOCKER_HOST").map(|h| ("DOCKER_HOST", h)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let (stdout, stdin) = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let recorder = Recorder::default();
    let client = recorder.clone().serve((stdout, stdin)).await?;
    let storage = storage.canonicalize()?;
    guard.watch(&storage);
    let call = |tool: &str, args: Value, token: Option<&str>| {
        let mut params = CallToolRequestParams::new(tool.to_string())
            .with_arguments(args.as_object().cloned().unwrap());
        if let Some(token) = token {
            let mut meta = RequestMetaObject::default();
            meta.set_progress_token(ProgressToken(NumberOrString::String(token.into())));
            params.meta = Some(meta);
        }
        client.call_tool(params)
    };
    bounded(60, async {
        let code = "import time\nfor i in range(20):\n    print(f'step {i}', flush=True)\n    time.sleep(0.5)";
        let r = call("execute_code", json!({ "code": code }), None).await?;
        let body = r.structured_content.clone().context("no structuredContent")?;
        let id = assert_running(&body, r.is_error.unwrap_or(false));
        // (The rmcp client puts a progress token of its own on every request.)
        let at_first_answer = recorder.progress.lock().unwrap().len();
        assert!(at_first_answer >= 2, "no progress while execute_code waited 3 s");
        // The run goes on, but the call has answered: no more progress for it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            recorder.progress.lock().unwrap().len(),
            at_first_answer,
            "progress after execute_code answered running"
        );

        // get_run: progress while it waits (RESULT_WAIT=3), with the run's output.
        let asked = Instant::now();
        let r = call("get_run", json!({ "run_id": id }), Some("poll-1")).await?;
        let body = r.structured_content.clone().context("no structuredContent")?;
        assert_eq!(assert_running(&body, r.is_error.unwrap_or(false)), id);
        assert!(asked.elapsed() >= Duration::from_millis(2500), "{body}");
        let seen = recorder.progress.lock().unwrap()[at_first_answer..].to_vec();
        assert!(seen.len() >= 2, "progress while get_run waited: {seen:?}");
        assert!(
            seen.iter()
                .any(|p| p.message.as_deref().unwrap_or("").contains("step")),
            "{seen:?}"
        );
        // Nothing after the answer.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            recorder.progress.lock().unwrap().len(),
            at_first_answer + seen.len(),
            "progress after get_run answered"
        );

        // cancel_run ends it; its container goes.
        let r = call("cancel_run", json!({ "run_id": id }), None).await?;
        let body = r.structured_content.clone().context("no structuredContent")?;
        assert_eq!(body["cancelled"], true, "{body}");
        assert!(
            eventually(5, || containers_mounting(&storage).is_empty()).await,
            "containers left: {:?}",
            containers_mounting(&storage)
        );
        Ok(())
    })
    .await?;
    client.cancel().await?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .context("the server did not exit after stdin closed")??;
    assert!(status.success(), "the server exited with {status}");
    Ok(())
}
