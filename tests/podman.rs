//! Podman-specific checks, against Podman's Docker-compatible API (`podman system service`,
//! set up by `scripts/setup-podman.sh`): the engine is told apart as Podman, a per-container OCI
//! runtime (RUNTIME) is refused rather than silently ignored, a read-only root gets no writable
//! mount Docker would not give, OOM kills are reported, and Podman's answers for a taken name or
//! a stopped container mean what Docker's do.
//!
//! They run when `DOCKER_HOST` points at a Podman service (the other suites then run against
//! Podman too: `scripts/test.sh` does both as root). Without one they are skipped with a
//! message, unless `MCE_REQUIRE_PODMAN=1` is set: then they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Opts, Server, expected_run_uid, str_field};
use mcp_code_executor::error::EngineError;
use mcp_code_executor::sandbox::docker::DockerEngine;
use mcp_code_executor::sandbox::engine::{ContainerEngine, ContainerSpec, Created, EngineKind};
use serde_json::{Value, json};

/// The label every container of ours carries (CI's leftover check looks for it).
const MANAGED: &str = "mcp-code-executor.managed";

/// Whether this test runs: `DOCKER_HOST` is a Podman service. Otherwise skipped with a message,
/// or failed when `MCE_REQUIRE_PODMAN=1`.
fn podman() -> bool {
    let required = std::env::var("MCE_REQUIRE_PODMAN").is_ok_and(|v| v == "1");
    let why_not = match std::env::var("DOCKER_HOST") {
        Err(_) => "DOCKER_HOST is not set".to_string(),
        Ok(host) => match version_of(&host) {
            Ok(v) if v.contains("\"Podman Engine\"") => return true,
            Ok(_) => format!("{host} answers, but not as Podman"),
            Err(e) => format!("{host} does not answer: {e}"),
        },
    };
    assert!(
        !required,
        "MCE_REQUIRE_PODMAN=1 but Podman is not reachable: {why_not}; run scripts/setup-podman.sh \
         as root and set DOCKER_HOST=unix:///run/podman/podman.sock"
    );
    eprintln!(
        "skipped: {why_not}; run scripts/setup-podman.sh as root and set \
         DOCKER_HOST=unix:///run/podman/podman.sock to run the Podman checks"
    );
    false
}

/// `/version` of the engine at a `unix://` host, read without any client library.
fn version_of(host: &str) -> std::io::Result<String> {
    let path = host.strip_prefix("unix://").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::Unsupported, "not a unix:// socket")
    })?;
    let mut socket = UnixStream::connect(path)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    socket.write_all(b"GET /version HTTP/1.0\r\nHost: podman\r\n\r\n")?;
    let mut answer = String::new();
    socket.read_to_string(&mut answer)?;
    Ok(answer)
}

/// A container of ours that is never started (`true`), labelled for CI's leftover check.
fn idle_spec() -> ContainerSpec {
    ContainerSpec {
        image: "mcp-code-executor/venv".to_string(),
        entrypoint: vec!["true".to_string()],
        labels: HashMap::from([(MANAGED.to_string(), "podman-test".to_string())]),
        network: "none".to_string(),
        cap_drop: vec!["ALL".to_string()],
        no_new_privileges: true,
        readonly_rootfs: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_engine_is_told_apart_as_podman() -> anyhow::Result<()> {
    if !podman() {
        return Ok(());
    }
    assert_eq!(DockerEngine::new().kind().await?, EngineKind::Podman);
    // The server says so once at start.
    let s = Server::start().await?;
    let (r, is_error) = s.run("print('hello from podman')").await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "stdout"), "hello from podman\n");
    let stopped = s.stop().await?;
    let log = std::fs::read_to_string(&stopped.log)?;
    assert!(
        log.lines()
            .any(|l| l.contains("container engine") && l.contains("Podman")),
        "{log}"
    );
    Ok(())
}

#[tokio::test]
async fn a_runtime_is_refused_not_silently_ignored() -> anyhow::Result<()> {
    if !podman() {
        return Ok(());
    }
    let engine = DockerEngine::new();
    // Podman would accept HostConfig.Runtime and run the container under its default runtime.
    let spec = ContainerSpec {
        runtime: Some("runsc".to_string()),
        ..idle_spec()
    };
    let name = format!("mce-podman-test-runtime-{}", std::process::id());
    let refused = engine.create(&spec, &name).await;
    let Err(e @ EngineError::Unsupported { .. }) = refused else {
        if let Ok(Created::Id(id)) = &refused {
            engine.remove(id).await?;
        }
        panic!("a runtime was not refused on Podman: {refused:?}");
    };
    let message = e.to_string();
    assert!(message.starts_with("Podman cannot"), "{message}");
    assert!(message.contains("\"runsc\""), "{message}");
    assert!(message.contains("unset RUNTIME"), "{message}");
    // Nothing was made.
    assert!(engine.inspect(&name).await.is_err());
    // The start check (what RUNTIME goes through) and the runtime list refuse too.
    let kind = engine.kind().await?;
    assert!(kind.check_runtime(Some("runsc")).is_err());
    assert!(kind.check_runtime(None).is_ok());
    assert!(matches!(
        engine.runtimes().await,
        Err(EngineError::Unsupported { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_read_only_root_has_no_writable_mount_docker_would_not_give() -> anyhow::Result<()> {
    if !podman() {
        return Ok(());
    }
    let s = Server::start().await?;
    // Every mounted directory the program can create a file in.
    let code = r#"
import os, json, tempfile
points = []
for line in open('/proc/self/mountinfo'):
    point = line.split()[4].replace('\\040', ' ')
    if point not in points and os.path.isdir(point):
        points.append(point)
writable = []
for point in points:
    try:
        fd, path = tempfile.mkstemp(dir=point)
        os.close(fd)
        os.unlink(path)
        writable.append(point)
    except OSError:
        pass
tmpfs = {l.split()[1]: l.split()[3] for l in open('/proc/mounts') if l.split()[2] == 'tmpfs'}
print(json.dumps({"uid": os.getuid(), "writable": sorted(writable), "tmpfs": tmpfs}))
"#;
    let (r, is_error) = s.run(code).await?;
    assert!(!is_error, "{r}");
    let facts: Value = serde_json::from_str(str_field(&r, "stdout"))?;
    assert_eq!(facts["uid"], expected_run_uid());
    // What Docker gives (measured): /tmp, /dev/shm, /dev/mqueue and the storage folder. Podman
    // alone would add a writable, unbounded /var/tmp (and /run).
    let storage = s.storage.display().to_string();
    let mut want = vec!["/dev/mqueue", "/dev/shm", "/tmp", storage.as_str()];
    want.sort();
    assert_eq!(facts["writable"], json!(want), "{facts}");
    for path in ["/run", "/var/tmp"] {
        let options = facts["tmpfs"][path].as_str().unwrap_or_default();
        assert!(options.starts_with("ro,"), "{path}: {options:?} ({facts})");
    }
    assert!(
        facts["tmpfs"]["/tmp"]
            .as_str()
            .is_some_and(|o| o.contains("size=")),
        "/tmp has no size limit: {facts}"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn oom_is_reported_by_podman() -> anyhow::Result<()> {
    if !podman() {
        return Ok(());
    }
    let s = Server::start_with(Opts::default().env("MEMORY_LIMIT", "64m")).await?;
    let (r, is_error) = s
        .run("blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))")
        .await?;
    assert!(is_error, "{r}");
    assert_eq!(r["oom_killed"], true, "{r}");
    assert_eq!(r["timed_out"], false, "{r}");
    // A program that exits 137 by itself is not called out of memory.
    let (r, _) = s.run("import os\nos._exit(137)").await?;
    assert_eq!(r["exit_code"], 137, "{r}");
    assert_eq!(r["oom_killed"], false, "{r}");
    assert!(s.containers().await.is_empty());
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_taken_name_and_a_stopped_container_mean_what_they_mean_on_docker() -> anyhow::Result<()>
{
    if !podman() {
        return Ok(());
    }
    let engine = DockerEngine::new();
    let name = format!("mce-podman-test-name-{}", std::process::id());
    let Created::Id(id) = engine.create(&idle_spec(), &name).await? else {
        panic!("the first create failed");
    };
    // Podman answers 500 where Docker answers 409: still "the name is taken" (the daemon-wide
    // locks of seeding and the sentinel rely on it).
    let again = engine.create(&idle_spec(), &name).await;
    // Killing a container that is not running is not an error (Podman: 500 "state improper").
    let killed = engine.kill(&id).await;
    engine.start(&id).await?;
    engine.wait(&id).await?;
    let killed_after_exit = engine.kill(&id).await;
    let state = engine.inspect(&id).await?;
    engine.remove(&id).await?;
    engine.remove(&id).await?; // gone: not an error either
    assert_eq!(again?, Created::NameTaken);
    killed?;
    killed_after_exit?;
    assert!(!state.running);
    assert_eq!(state.exit_code, Some(0));
    assert!(engine.inspect(&id).await.is_err());
    assert_eq!(
        engine
            .create(
                &ContainerSpec {
                    image: "mcp-code-executor/no-such-image".to_string(),
                    ..idle_spec()
                },
                &name
            )
            .await?,
        Created::ImageMissing
    );
    Ok(())
}

#[tokio::test]
async fn a_running_container_is_removed_at_once() -> anyhow::Result<()> {
    if !podman() {
        return Ok(());
    }
    // Podman refuses to force-remove a container while it exits; the engine retries.
    let engine = DockerEngine::new();
    let spec = ContainerSpec {
        entrypoint: ["sleep", "60"].map(String::from).to_vec(),
        init: true,
        ..idle_spec()
    };
    for round in 0..3 {
        let name = format!("mce-podman-test-rm-{}-{round}", std::process::id());
        let Created::Id(id) = engine.create(&spec, &name).await? else {
            panic!("create failed");
        };
        engine.start(&id).await?;
        if round == 1 {
            engine.kill(&id).await?; // removal races the exit
        }
        engine.remove(&id).await?;
        assert!(engine.inspect(&id).await.is_err(), "round {round}");
    }
    Ok(())
}
