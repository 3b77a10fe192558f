//! gVisor (`RUNTIME=runsc`) through the real binary and real containers: the guest kernel seen
//! from a run, the runtime reported and applied to every container, figures and a package
//! install from PyPI (through the network-enabled registration `runsc-net`), a fork bomb stopped
//! in the guest, and a runtime the daemon does not offer refused with the list it has.
//!
//! The daemon must list `runsc` and `runsc-net` (`scripts/setup-gvisor.sh`, as root). Without
//! them these tests print why and pass, unless `MCE_REQUIRE_GVISOR=1` is set (scripts/test.sh
//! sets it after running the setup): then they fail. The isolation and hostile suites run under
//! gVisor the same way: `RUNTIME=runsc cargo test --test hostile` (the harness passes RUNTIME on).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use common::{Opts, Server, TestEnv, str_field};
use rmcp::model::ContentBlock;
use serde_json::{Value, json};

const RUNTIME: &str = "runsc";
const INSTALL_RUNTIME: &str = "runsc-net";

/// Whether the daemon lists both gVisor runtimes; panics when it does not and
/// `MCE_REQUIRE_GVISOR=1` is set.
fn gvisor_ready(test: &str) -> bool {
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .expect("docker info");
    let runtimes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let ready = [RUNTIME, INSTALL_RUNTIME]
        .iter()
        .all(|name| runtimes.get(name).is_some());
    if !ready {
        let why = format!(
            "the Docker daemon does not list the runtimes {RUNTIME} and {INSTALL_RUNTIME} \
             (it lists {runtimes}); run scripts/setup-gvisor.sh as root"
        );
        if std::env::var("MCE_REQUIRE_GVISOR").as_deref() == Ok("1") {
            panic!("MCE_REQUIRE_GVISOR=1: {why}");
        }
        eprintln!("SKIPPED {test}: {why}");
    }
    ready
}

fn opts() -> Opts {
    Opts::default().env("RUNTIME", RUNTIME)
}

/// The OCI runtime of a container, as the daemon recorded it.
fn runtime_of(container: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.HostConfig.Runtime}}", container])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn runs_see_the_gvisor_kernel_and_the_runtime_is_reported() -> anyhow::Result<()> {
    if !gvisor_ready("runs_see_the_gvisor_kernel_and_the_runtime_is_reported") {
        return Ok(());
    }
    let s = Server::start_with(opts()).await?;
    let (r, is_error) = s.call("get_environment_config", json!({})).await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["config"]["runtime"], RUNTIME, "{r}");
    assert_eq!(r["config"]["install_runtime"], INSTALL_RUNTIME, "{r}");
    let isolation = r["config"]["isolation"].to_string();
    assert!(isolation.contains("gVisor"), "{isolation}");
    assert!(isolation.contains("network none"), "{isolation}");

    let code = "import os, platform\nprint(platform.release())\nprint(os.getuid())";
    let (r, is_error) = s.run(code).await?;
    assert!(!is_error, "{r}");
    let out = str_field(&r, "stdout");
    assert!(out.starts_with("4.4.0"), "not gVisor's kernel: {r}");
    assert_ne!(out.lines().nth(1), Some("0"), "ran as root: {r}");

    // Every container of this server runs under runsc (the pool's, the sentinel).
    let mut seen = 0;
    for _ in 0..100 {
        let containers = common::containers_mounting(&s.storage);
        if !containers.is_empty() {
            for c in &containers {
                let rt = runtime_of(c);
                assert!(rt.is_empty() || rt == RUNTIME, "{c} runs under {rt}");
                seen += usize::from(rt == RUNTIME);
            }
            if seen > 0 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen > 0, "no container of this server was seen under runsc");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn figures_and_a_fork_bomb_under_gvisor() -> anyhow::Result<()> {
    if !gvisor_ready("figures_and_a_fork_bomb_under_gvisor") {
        return Ok(());
    }
    // No pool: a forked child of a pre-started runner (numpy and pandas loaded) costs ~26 MB
    // under gVisor, so there a bomb meets the memory limit first (tests/hostile.rs); cold
    // containers show the process bound itself.
    let s = Server::start_with(opts().env("PIDS_LIMIT", "32").env("POOL_SIZE", "0")).await?;
    let code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]); plt.show()\nprint('drawn')";
    let result = s
        .call_raw("execute_code", json!({ "code": code, "filename": "plot" }))
        .await?;
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let body = result.structured_content.clone().unwrap();
    assert_eq!(body["images"].as_array().map(Vec::len), Some(1), "{body}");
    let pngs = result
        .content
        .iter()
        .filter(|c| matches!(c, ContentBlock::Image(i) if i.mime_type == "image/png"))
        .count();
    assert_eq!(pngs, 1, "{body}");

    // The guest's nproc limit stops the bomb with EAGAIN, before the sandbox's host pids limit
    // could crash the whole sandbox (which would lose the output).
    let bomb = r#"
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print("fork stopped after", n, e.errno, flush=True)
os._exit(0)
"#;
    let (r, is_error) = s.run(bomb).await?;
    assert!(!is_error, "{r}");
    let out = str_field(&r, "stdout");
    assert!(out.starts_with("fork stopped after"), "{r}");
    let n: u32 = out.split_whitespace().nth(3).unwrap().parse()?;
    assert!(n < 32, "{n} processes under a limit of 32");
    assert_eq!(out.split_whitespace().nth(4), Some("11"), "not EAGAIN: {r}");
    // The server and the sandbox are fine afterwards.
    let (r, is_error) = s.run("print('after')").await?;
    assert!(!is_error, "{r}");
    assert!(s.containers().await.is_empty(), "container left behind");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn installs_from_pypi_work_under_gvisor() -> anyhow::Result<()> {
    if !gvisor_ready("installs_from_pypi_work_under_gvisor") {
        return Ok(());
    }
    let env = TestEnv::new("venv");
    let s = Server::start_with(opts()).await?;
    let (r, is_error) = s
        .call("configure_environment", env.configure_args())
        .await?;
    assert!(!is_error, "{r}");
    // A small pure-Python package; the CA bundle is the server's default, which the install
    // container must trust (TLS goes through the machine's intercepting proxy).
    let (r, is_error) = s
        .call(
            "install_dependencies",
            json!({ "packages": ["six==1.16.0"] }),
        )
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["packages"][0]["status"], "installed", "{r}");
    let (r, is_error) = s
        .run("import six, platform\nprint(six.__version__, platform.release())")
        .await?;
    assert!(!is_error, "{r}");
    let out = str_field(&r, "stdout");
    assert!(out.starts_with("1.16.0 4.4.0"), "{r}");
    // Runs stay offline under gVisor.
    let (r, _) = s
        .run("import socket\ntry:\n    socket.create_connection(('pypi.org', 443), timeout=5); print('online')\nexcept OSError as e:\n    print('offline')")
        .await?;
    assert_eq!(str_field(&r, "stdout").trim(), "offline", "{r}");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_runtime_the_daemon_lacks_is_refused_with_the_list_it_has() -> anyhow::Result<()> {
    // Needs no gVisor: any daemon lacks this one.
    let s = Server::start_with(Opts::default().env("RUNTIME", "no-such-runtime")).await?;
    // The server answers (initialize went through); the configuration says what was asked.
    let (r, is_error) = s.call("get_environment_config", json!({})).await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["config"]["runtime"], "no-such-runtime");
    let (r, is_error) = s.run("print('never')").await?;
    assert!(is_error, "{r}");
    let msg = str_field(&r, "error");
    assert!(msg.contains("\"no-such-runtime\""), "{msg}");
    assert!(msg.contains("runc"), "the daemon's list is missing: {msg}");
    assert!(msg.contains("setup-gvisor.sh"), "{msg}");
    assert!(common::containers_mounting(&s.storage).is_empty());
    let log = s.log();
    assert!(log.contains("no OCI runtime \"no-such-runtime\""), "{log}");
    s.stop().await?;
    // An invalid name is refused before the server starts.
    let out = std::process::Command::new(common::bin())
        .env_clear()
        .env("RUNTIME", "run sc")
        .arg("list-envs")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid RUNTIME"), "{err}");
    Ok(())
}
