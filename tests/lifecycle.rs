//! Server lifecycle: no container survives the server's exit (stdin closed, SIGTERM, SIGINT),
//! `initialize` is answered without waiting for Docker, and leftovers of a server killed with
//! SIGKILL are removed by the next start once their deadline has passed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::time::{Duration, Instant};

use common::{Opts, Server, containers_mounting, str_field, wait_gone};
use serde_json::json;

/// Starts a long run in the background and waits until its container exists.
async fn start_long_run(s: &Server) -> tokio::task::JoinHandle<()> {
    let client = s.client.peer().clone();
    let handle = tokio::spawn(async move {
        let args = json!({ "code": "import time\nprint('started', flush=True)\ntime.sleep(60)" });
        let params = rmcp::model::CallToolRequestParams::new("execute_code")
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        // The server goes away mid-call: an error here is expected.
        let _ = client.call_tool(params).await;
    });
    let started = Instant::now();
    while s.busy_containers().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run container never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle
}

async fn signal_removes_running_containers(signal: i32) -> anyhow::Result<()> {
    let s = Server::start().await?;
    let call = start_long_run(&s).await;
    assert_eq!(s.busy_containers().len(), 1);
    // SAFETY: sending a signal to the child we spawned.
    assert_eq!(unsafe { libc::kill(s.pid as i32, signal) }, 0);
    wait_gone(s.pid).await;
    assert!(
        containers_mounting(&s.storage).is_empty(),
        "container survived the server"
    );
    call.abort();
    Ok(())
}

#[tokio::test]
async fn sigterm_removes_running_containers() -> anyhow::Result<()> {
    signal_removes_running_containers(libc::SIGTERM).await
}

#[tokio::test]
async fn sigint_removes_running_containers() -> anyhow::Result<()> {
    signal_removes_running_containers(libc::SIGINT).await
}

#[tokio::test]
async fn closing_stdin_removes_running_containers() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let call = start_long_run(&s).await;
    let stopped = s.stop().await?;
    assert!(containers_mounting(&stopped.storage).is_empty());
    call.abort();
    Ok(())
}

#[tokio::test]
async fn initialize_does_not_wait_for_docker() -> anyhow::Result<()> {
    // A daemon address that does not answer: the handshake still completes, and a run fails
    // with a message that names Docker and what to do.
    let started = Instant::now();
    let s =
        Server::start_with(Opts::default().env("DOCKER_HOST", "unix:///nonexistent/docker.sock"))
            .await?;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (r, is_error) = s.run("print(1)").await?;
    assert!(is_error);
    let msg = str_field(&r, "error");
    assert!(
        msg.contains("Docker daemon") && msg.contains("start Docker"),
        "{msg}"
    );
    // Other tools still work without Docker.
    let (r, is_error) = s
        .call(
            "read_code_file",
            json!({ "file_path": str_field(&r, "file_path") }),
        )
        .await?;
    assert!(!is_error, "{r}");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn leftovers_of_a_killed_server_are_removed_at_next_start() -> anyhow::Result<()> {
    // A server killed with SIGKILL cannot clean up. Its sentinel (and its idle pool containers)
    // lose their attach and exit; its run ends by its own deadline; the next server sees no
    // running sentinel for that instance and removes all of it.
    let s = Server::start().await?;
    let storage = s.storage.clone();
    let _call = start_long_run(&s).await;
    let killed_at = Instant::now();
    // SAFETY: killing the child we spawned.
    unsafe { libc::kill(s.pid as i32, libc::SIGKILL) };
    wait_gone(s.pid).await;
    assert!(
        !containers_mounting(&storage).is_empty(),
        "the killed server's containers"
    );

    // Past the grace period that protects servers still starting up, a new server cleans up.
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(killed_at.elapsed())).await;
    let next = Server::start().await?;
    let started = Instant::now();
    while !containers_mounting(&storage).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "leftovers not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    next.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_starting_server_leaves_another_live_servers_containers_alone() -> anyhow::Result<()> {
    let a = Server::start().await?;
    let call = start_long_run(&a).await;
    let running = a.busy_containers();
    assert_eq!(running.len(), 1);
    // A second server sharing the daemon starts and cleans up leftovers...
    let b = Server::start().await?;
    let (r, is_error) = b.run("print('b runs')").await?;
    assert!(!is_error, "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...but A's running container is untouched.
    assert_eq!(a.busy_containers(), running);
    b.stop().await?;
    let stopped = a.stop().await?;
    assert!(containers_mounting(&stopped.storage).is_empty());
    call.abort();
    Ok(())
}

/// The socket of the engine the tests use: DOCKER_HOST's (Podman's, say), else Docker's.
fn daemon_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".to_string())
}

/// A Unix-socket proxy in front of the real Docker daemon that the test can cut and restore,
/// to play a daemon that goes away and comes back.
struct DockerProxy {
    path: std::path::PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl DockerProxy {
    fn new(dir: &std::path::Path) -> DockerProxy {
        DockerProxy {
            path: dir.join("docker.sock"),
            task: None,
            conns: Default::default(),
        }
    }

    fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = tokio::net::UnixListener::bind(&self.path).unwrap();
        let conns = self.conns.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut daemon) = tokio::net::UnixStream::connect(daemon_socket()).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                    }
                });
                conns.lock().unwrap().push(conn);
            }
        }));
    }

    /// Cuts every connection and stops listening.
    fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn docker_going_away_mid_run_fails_the_call_and_the_server_recovers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut proxy = DockerProxy::new(dir.path());
    proxy.up();
    let host = format!("unix://{}", proxy.path.display());
    let s = Server::start_with(Opts::default().env("DOCKER_HOST", &host)).await?;
    let (r, is_error) = s.run("print('warm')").await?;
    assert!(!is_error, "{r}");

    let peer = s.client.peer().clone();
    let call = tokio::spawn(async move {
        let args = json!({ "code": "import time\nprint('started', flush=True)\ntime.sleep(30)" });
        let params = rmcp::model::CallToolRequestParams::new("execute_code")
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        peer.call_tool(params).await
    });
    let started = Instant::now();
    while s.busy_containers().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.down();
    let result = tokio::time::timeout(Duration::from_secs(40), call).await???;
    let body = result.structured_content.unwrap_or_default();
    assert_eq!(result.is_error, Some(true), "{body}");
    let msg = str_field(&body, "error");
    assert!(msg.contains("Docker"), "{msg}");

    // While Docker is away, calls fail with advice; when it is back, runs work again and the
    // container that could not be removed is removed.
    let (r, is_error) = s.run("print(1)").await?;
    assert!(is_error);
    assert!(str_field(&r, "error").contains("start Docker"), "{r}");
    proxy.up();
    let (r, is_error) = s.run("print('back')").await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "stdout"), "back\n");
    assert!(
        s.containers().await.is_empty(),
        "the orphaned container was not removed"
    );
    s.stop().await?;
    proxy.down();
    Ok(())
}
