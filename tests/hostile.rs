//! Hostile programs and hostile requests, one test per class, through the real binary and real
//! containers with short limits. Each test asserts the outcome, that the server keeps answering,
//! and that none of its containers remains.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::time::{Duration, Instant};

use common::{Opts, Server, str_field, under_gvisor};
use serde_json::{Value, json};

/// Asserts the server still answers quickly and left no container behind.
async fn still_fine(s: &Server) {
    let started = Instant::now();
    let (r, is_error) = s.call("get_environment_config", json!({})).await.unwrap();
    assert!(!is_error, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "slow answer: {:?}",
        started.elapsed()
    );
    assert!(s.containers().await.is_empty(), "container left behind");
}

#[tokio::test]
async fn deadlines_kill_busy_sleeping_and_sigterm_ignoring_programs() -> anyhow::Result<()> {
    let s = Server::start_with(Opts::default().env("EXECUTION_TIMEOUT", "3")).await?;
    let programs = [
        "print('busy', flush=True)\nwhile True: pass",
        "import time\nprint('sleepy', flush=True)\ntime.sleep(600)",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('stubborn', flush=True)\nwhile True: time.sleep(1)",
    ];
    for code in programs {
        let started = Instant::now();
        let (r, is_error) = s.run(code).await?;
        let took = started.elapsed();
        assert!(is_error);
        assert_eq!(r["timed_out"], true, "{r}");
        assert_eq!(r["oom_killed"], false, "{r}");
        assert_eq!(r["timeout_secs"], 3);
        assert!(
            !str_field(&r, "stdout").is_empty(),
            "output before the kill was lost: {r}"
        );
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
    // A per-call timeout lowers the limit...
    let started = Instant::now();
    let (r, _) = s
        .call(
            "execute_code",
            json!({ "code": "import time\ntime.sleep(60)", "timeout": 1 }),
        )
        .await?;
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["timeout_secs"], 1);
    assert!(started.elapsed() < Duration::from_secs(3) + Duration::from_secs(3));
    // ...may raise it up to MAX_TIMEOUT, and beyond that is refused before anything runs.
    let (r, is_error) = s
        .call(
            "execute_code",
            json!({ "code": "print('raised')", "timeout": 10 }),
        )
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["timeout_secs"], 10, "{r}");
    let (r, is_error) = s
        .call(
            "execute_code",
            json!({ "code": "print('quick')", "timeout": 99999 }),
        )
        .await?;
    assert!(is_error, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("MAX_TIMEOUT"),
        "{r}"
    );
    assert!(r.get("file_path").is_none(), "nothing stored: {r}");
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn memory_exhaustion_is_reported_as_oom_from_docker() -> anyhow::Result<()> {
    // Under gVisor the limit also holds gVisor's own kernel (~30 MB): at 64m a pre-started
    // container dies importing numpy and pandas, and a run handed to it is reported as out of
    // memory whatever it does.
    let memory = if under_gvisor() { "128m" } else { "64m" };
    let s = Server::start_with(
        Opts::default()
            .env("MEMORY_LIMIT", memory)
            .env("EXECUTION_TIMEOUT", "20"),
    )
    .await?;
    let (r, is_error) = s
        .run("print('allocating', flush=True)\nblocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))")
        .await?;
    assert!(is_error);
    assert_eq!(r["timed_out"], false, "{r}");
    // Under gVisor the sandbox now and then (about 1 run in 15 here) dies at the limit without
    // Docker recording an OOM kill: the run then ends killed (137) with oom_killed false (never
    // guessed from 137).
    let oom_unrecorded = under_gvisor()
        && r["oom_killed"] == false
        && r["exit_code"] == 137
        && r["stdout"] == "allocating\n";
    if !oom_unrecorded {
        assert_eq!(r["oom_killed"], true, "{r}");
        assert!(str_field(&r, "error").contains("out of memory"), "{r}");
        assert!(str_field(&r, "error").contains("MEMORY_LIMIT"), "{r}");
    }
    // A program that exits 137 by itself is not called out of memory.
    let (r, _) = s.run("import os\nos._exit(137)").await?;
    assert_eq!(r["exit_code"], 137);
    assert_eq!(r["oom_killed"], false, "{r}");
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn fork_and_thread_bombs_hit_the_pids_limit() -> anyhow::Result<()> {
    let s = Server::start_with(
        Opts::default()
            .env("PIDS_LIMIT", "32")
            .env("EXECUTION_TIMEOUT", "15"),
    )
    .await?;
    let fork_bomb = r#"
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print("fork stopped after", n, type(e).__name__, flush=True)
os._exit(0)
"#;
    let thread_bomb = r#"
import threading, time
n = 0
try:
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        n += 1
except RuntimeError as e:
    print("threads stopped after", n, flush=True)
import os; os._exit(0)
"#;
    for (code, expect) in [
        (fork_bomb, "fork stopped after"),
        (thread_bomb, "threads stopped after"),
    ] {
        let server = &s;
        let run = async move { server.run(code).await };
        // The server answers other calls while the bomb runs.
        let probe = async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let started = Instant::now();
            s.call("get_environment_config", json!({})).await.unwrap();
            started.elapsed()
        };
        let ((r, is_error), answered_in) = tokio::join!(async { run.await.unwrap() }, probe);
        // Under gVisor a forked child of a pre-started runner (numpy and pandas loaded) costs
        // ~26 MB, as gVisor copies a forking process's memory more eagerly than Linux: the
        // bomb then meets MEMORY_LIMIT before the process limit, and the sandbox is killed and
        // reported as out of memory. Contained either way (tests/gvisor.rs checks the nproc
        // bound with cold containers).
        let stopped_by_memory = under_gvisor() && code == fork_bomb && r["oom_killed"] == true;
        if !stopped_by_memory {
            assert!(!is_error, "{r}");
            let out = str_field(&r, "stdout");
            assert!(out.contains(expect), "{r}");
            let n: u32 = out.split_whitespace().nth(3).unwrap().parse().unwrap();
            assert!(n < 32, "{n} processes/threads under a limit of 32");
        }
        assert!(
            answered_in < Duration::from_secs(2),
            "server answered in {answered_in:?}"
        );
    }
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn output_floods_are_capped_and_return_promptly() -> anyhow::Result<()> {
    let s = Server::start_with(
        Opts::default()
            .env("OUTPUT_LIMIT", "65536")
            .env("EXECUTION_TIMEOUT", "60"),
    )
    .await?;
    // One 50 MB line (a generous limit: the point is the cap, not the machine's speed).
    let started = Instant::now();
    let (r, is_error) = s
        .run("import sys\nsys.stdout.write('x' * 50_000_000 + 'END\\n')")
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["truncated"], true);
    let out = str_field(&r, "stdout");
    assert!(out.len() < 70_000, "{}", out.len());
    assert!(out.starts_with("xxxx") && out.ends_with("END\n"));
    assert!(out.contains("bytes cut"));
    assert!(started.elapsed() < Duration::from_secs(30));

    // Binary, invalid UTF-8 on both streams: the response stays valid JSON.
    let (r, _) = s
        .run("import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4)\nsys.stderr.buffer.write(b'\\xff\\xfe\\x00bad')")
        .await?;
    assert!(str_field(&r, "stdout").contains('\u{fffd}'));
    assert!(str_field(&r, "stderr").ends_with("\u{0}bad"), "{r}");

    // A flood that never ends: stopped at the deadline, capped, prompt.
    let started = Instant::now();
    let (r, _) = s
        .call(
            "execute_code",
            json!({ "code": "while True:\n    print('y' * 1000)", "timeout": 3 }),
        )
        .await?;
    assert_eq!(r["timed_out"], true);
    assert_eq!(r["truncated"], true);
    assert!(str_field(&r, "stdout").len() < 70_000);
    assert!(started.elapsed() < Duration::from_secs(12));
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn filling_tmp_or_the_disk_hits_small_limits() -> anyhow::Result<()> {
    let s = Server::start_with(
        Opts::default()
            .env("TMPFS_SIZE", "8m")
            .env("MAX_FILE_SIZE", "4m"),
    )
    .await?;
    let code = r#"
import os
def fill(path):
    chunk = b"z" * (1 << 20)
    written = 0
    try:
        with open(path, "wb") as f:
            while written < (64 << 20):
                f.write(chunk); f.flush(); written += len(chunk)
        return "no limit"
    except OSError as e:
        return e.strerror
def fill_dir(d):
    chunk = b"z" * (1 << 20)
    try:
        for i in range(64):
            with open(f"{d}/part{i}", "wb") as f:
                f.write(chunk * 2)
        return "no limit"
    except OSError as e:
        return e.strerror
print(fill_dir("/tmp"))
print(fill("big.bin"))
print(os.path.getsize("big.bin") <= 4 << 20)
"#;
    let (r, is_error) = s.run(code).await?;
    assert!(!is_error, "{r}");
    let lines: Vec<&str> = str_field(&r, "stdout").lines().collect();
    assert_eq!(
        lines,
        ["No space left on device", "File too large", "True"],
        "{r}"
    );
    assert!(std::fs::metadata(s.storage.join("big.bin"))?.len() <= 4 << 20);
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn background_children_and_daemons_end_with_the_program() -> anyhow::Result<()> {
    let s = Server::start_with(Opts::default().env("EXECUTION_TIMEOUT", "20")).await?;
    let code = r#"
import os, subprocess, sys, time
subprocess.Popen(["sleep", "300"])                      # a background child
if os.fork() == 0:                                       # a daemon that keeps stdout open
    os.setsid()
    while True:
        print("daemon alive", flush=True)
        time.sleep(0.5)
print("main done", flush=True)
"#;
    let started = Instant::now();
    let (r, is_error) = s.run(code).await?;
    assert!(!is_error, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "waited for the daemon: {:?}",
        started.elapsed()
    );
    assert!(str_field(&r, "stdout").contains("main done"));
    assert_eq!(r["timed_out"], false);
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn privilege_escalation_attempts_fail() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let code = r#"
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
def attempt(f):
    try:
        r = f()
        return "allowed" if r in (None, 0) else os.strerror(ctypes.get_errno())
    except OSError as e:
        return e.strerror
print(json.dumps({
    "setuid": attempt(lambda: os.setuid(0)),
    "mount": attempt(lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
    "chroot": attempt(lambda: os.chroot("/tmp")),
    "raw_socket": attempt(lambda: __import__("socket").socket(17, 3)),
    "unshare_user": attempt(lambda: libc.unshare(0x10000000)),
    "unshare_mount": attempt(lambda: libc.unshare(0x00020000)),
    "setuid_bits": [p for p in ("/usr/bin/su", "/bin/su", "/usr/bin/passwd") if os.path.exists(p) and os.stat(p).st_mode & 0o4000],
}))
"#;
    let (r, is_error) = s.run(code).await?;
    assert!(!is_error, "{r}");
    let facts: Value = serde_json::from_str(str_field(&r, "stdout"))?;
    for key in ["setuid", "mount", "chroot", "raw_socket"] {
        assert_ne!(facts[key], "allowed", "{key}: {facts}");
    }
    // Under runc, Docker's seccomp profile refuses new namespaces. gVisor does not apply that
    // profile inside its sandbox (its --oci-seccomp option would, but then breaks
    // pthread_create in this version): a program may make user and mount namespaces, which
    // gVisor's own kernel implements and which give power over nothing outside the sandbox
    // (the host kernel never sees them). The attempts above come first so they are made
    // without such a namespace.
    if !under_gvisor() {
        for key in ["unshare_user", "unshare_mount"] {
            assert_ne!(facts[key], "allowed", "{key}: {facts}");
        }
    }
    // Setuid binaries may exist in the image, but no-new-privileges makes them useless:
    let (r, _) = s
        .run("import subprocess\np = subprocess.run(['su', '-c', 'id'], capture_output=True, text=True, input='')\nprint(p.returncode != 0)")
        .await?;
    assert_eq!(str_field(&r, "stdout").trim(), "True", "{r}");
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn hostile_file_arguments_and_planted_files() -> anyhow::Result<()> {
    let s = Server::start_with(Opts::default().env("MAX_FILE_SIZE", "8m")).await?;
    // A run plants a FIFO, a symlink to a host file, a directory and a huge file.
    let plant = r#"
import os
os.mkfifo("pipe.py")
os.symlink("/etc/passwd", "passwd.py")
os.mkdir("dir.py")
with open("huge.py", "wb") as f:
    f.write(b"x" * (4 << 20))
"#;
    let (r, is_error) = s.run(plant).await?;
    assert!(!is_error, "{r}");
    // Under gVisor a FIFO made in a bind mount exists only inside the sandbox (its file proxy
    // does not create FIFOs on the host): the host never sees one to be refused.
    let fifo = if under_gvisor() {
        "no file"
    } else {
        "not a regular file"
    };
    let cases = [
        ("pipe.py", fifo),
        ("passwd.py", "symbolic link"),
        ("dir.py", "not a regular file"),
        ("huge.py", "over the"),
    ];
    for (name, expected) in cases {
        for tool in ["read_code_file", "execute_code_file"] {
            let started = Instant::now();
            let (r, is_error) = s.call(tool, json!({ "file_path": name })).await?;
            assert!(is_error, "{tool} {name}: {r}");
            assert!(
                str_field(&r, "error").contains(expected),
                "{tool} {name}: {r}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{tool} {name} hung"
            );
        }
        let (r, is_error) = s
            .call(
                "append_to_code_file",
                json!({ "file_path": name, "content": "x" }),
            )
            .await?;
        assert!(is_error, "append {name}: {r}");
    }
    // Odd file name hints are sanitized, never used as paths.
    for hint in [
        "../../etc/cron.d/x",
        "a\\b",
        "CON",
        "name with spaces\n",
        "ünïcødé",
        "...",
        "",
    ] {
        let (r, is_error) = s
            .call(
                "initialize_code_file",
                json!({ "content": "x = 1\n", "filename": hint }),
            )
            .await?;
        assert!(!is_error, "{hint:?}: {r}");
        let path = std::path::PathBuf::from(str_field(&r, "file_path"));
        assert_eq!(path.parent(), Some(s.storage.as_path()), "{hint:?}");
    }
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn hostile_code_payloads() -> anyhow::Result<()> {
    let s = Server::start().await?;
    // 10 MB of code: refused with the limit named; nothing stored.
    let huge = "x = 1\n".repeat(10 * 1024 * 1024 / 6);
    let (r, is_error) = s.run(&huge).await?;
    assert!(is_error);
    assert!(
        str_field(&r, "error").contains("limit"),
        "{}",
        str_field(&r, "error")
    );
    assert_eq!(std::fs::read_dir(&s.storage)?.count(), 0);
    // NUL bytes: stored, Python refuses them, clear error.
    let (r, is_error) = s.run("print(1)\0print(2)").await?;
    assert!(is_error);
    assert!(str_field(&r, "stderr").contains("null bytes"), "{r}");
    // Wrong types and missing fields: JSON-RPC errors; unknown tools too.
    for (tool, args) in [
        ("execute_code", json!({ "code": ["print(1)"] })),
        (
            "execute_code",
            json!({ "code": "print(1)", "timeout": "soon" }),
        ),
        ("append_to_code_file", json!({ "file_path": "x.py" })),
        ("install_dependencies", json!({ "packages": "numpy" })),
        ("no_such_tool", json!({})),
    ] {
        let err = s
            .call_raw(tool, args.clone())
            .await
            .expect_err(&format!("{tool} {args}"));
        assert!(
            err.to_string().contains("-32602")
                || err.to_string().to_lowercase().contains("invalid")
                || err.to_string().contains("not found"),
            "{tool}: {err}"
        );
    }
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_calls_run_in_parallel_up_to_the_limit() -> anyhow::Result<()> {
    let s = Server::start_with(Opts::default().env("MAX_CONCURRENT_RUNS", "2")).await?;
    let code = "import time, json\nstart = time.time()\ntime.sleep(1.5)\nprint(json.dumps([start, time.time()]))";
    let calls = (0..5).map(|_| s.run(code));
    let results = futures_util::future::join_all(calls).await;
    let mut spans = Vec::new();
    for r in results {
        let (r, is_error) = r?;
        assert!(!is_error, "{r}");
        let span: (f64, f64) = serde_json::from_str(str_field(&r, "stdout"))?;
        spans.push(span);
    }
    // Never more than 2 programs running at the same moment, and more than 1 at some moment.
    let max_overlap = spans
        .iter()
        .map(|(t, _)| spans.iter().filter(|(a, b)| a <= t && t < b).count())
        .max()
        .unwrap();
    assert!(max_overlap <= 2, "{max_overlap} ran at once: {spans:?}");
    assert_eq!(max_overlap, 2, "no parallelism: {spans:?}");

    // Concurrent appends to one file never interleave or lose lines.
    let (r, _) = s
        .call("initialize_code_file", json!({ "content": "" }))
        .await?;
    let path = str_field(&r, "file_path").to_string();
    let appends = (0..40).map(|i| {
        let line = format!("line {i:02} {}\n", "=".repeat(2000));
        let path = path.clone();
        let s = &s;
        async move {
            s.call(
                "append_to_code_file",
                json!({ "file_path": path, "content": line }),
            )
            .await
        }
    });
    for r in futures_util::future::join_all(appends).await {
        assert!(!r?.1);
    }
    let content = std::fs::read_to_string(&path)?;
    let mut lines: Vec<&str> = content.lines().collect();
    assert_eq!(lines.len(), 40);
    lines.sort();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("line {i:02} {}", "=".repeat(2000)));
    }
    still_fine(&s).await;
    s.stop().await?;
    Ok(())
}
