//! The MCP tasks extension with the real binary and real containers: a client that declares
//! the extension gets a task at once for execute_code, polls it with tasks/get to the same
//! result a plain call returns, and stops one with tasks/cancel; a client that does not declare
//! it gets plain results from the same server build.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    GetTaskParams, Implementation, TaskPayload, TaskStatus,
};
use rmcp::service::RunningService;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use common::{Server, bin, containers_mounting};

/// A client that declares the tasks extension.
#[derive(Clone)]
struct TaskClient;

impl ClientHandler for TaskClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("tasks-test", "0"),
        )
    }
}

struct TaskServer {
    client: RunningService<RoleClient, TaskClient>,
    child: Child,
    storage: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> TaskServer {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("code");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CODE_STORAGE_DIR", &storage)
        .env("LOG_LEVEL", "info");
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        cmd.env("DOCKER_HOST", host);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let client = TaskClient.serve((stdout, stdin)).await.unwrap();
    let storage = storage.canonicalize().unwrap();
    TaskServer {
        client,
        child,
        storage,
        _dir: dir,
    }
}

fn call(code: &str) -> CallToolRequestParams {
    let args = json!({ "code": code });
    CallToolRequestParams::new("execute_code").with_arguments(args.as_object().unwrap().clone())
}

/// Polls tasks/get until the task leaves `working` (bounded).
async fn settle(s: &TaskServer, id: &str) -> rmcp::model::DetailedTask {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let got = s.client.get_task(GetTaskParams::new(id)).await.unwrap();
        if got.task.task.status != TaskStatus::Working || Instant::now() > until {
            return got.task;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_task_capable_client_gets_a_task_and_the_same_result_through_tasks_get() {
    let s = start().await;
    let asked = Instant::now();
    let response = s
        .client
        .call_tool_once(call("import time\ntime.sleep(2)\nprint('done in a task')"))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("expected a task, got {response:?}");
    };
    assert!(asked.elapsed() < Duration::from_secs(2), "answered at once");
    let id = created.task.task_id.clone();
    assert!(id.starts_with("run-"), "{id}");
    assert_eq!(created.task.status, TaskStatus::Working);
    let task = settle(&s, &id).await;
    let TaskPayload::Completed { result } = task.payload else {
        panic!("{task:?}");
    };
    let body: &Value = &result["structuredContent"];
    assert_eq!(body["stdout"], "done in a task\n", "{body}");
    assert_eq!(body["exit_code"], 0);
    assert_eq!(body["run_id"], id.as_str());
    // The same run is a run for the plain tools too.
    let listed = s
        .client
        .call_tool(CallToolRequestParams::new("list_runs"))
        .await
        .unwrap();
    let runs = listed.structured_content.unwrap();
    assert_eq!(runs["runs"][0]["run_id"], id.as_str(), "{runs}");
    finish(s).await;
}

/// Closes the client, waits for the server to clean up and exit, and checks nothing is left
/// (a server killed instead would leave its pool and sentinel containers to the next one).
async fn finish(s: TaskServer) {
    drop(s.client);
    let mut child = s.child;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(containers_mounting(&s.storage).is_empty());
}

#[tokio::test]
async fn tasks_cancel_stops_the_run_and_its_container() {
    let s = start().await;
    let response = s
        .client
        .call_tool_once(call(
            "import time\nprint('started', flush=True)\ntime.sleep(60)",
        ))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("expected a task, got {response:?}");
    };
    let id = created.task.task_id;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.client
        .cancel_task(CancelTaskParams::new(id.as_str()))
        .await
        .unwrap();
    let task = settle(&s, &id).await;
    assert_eq!(task.task.status, TaskStatus::Cancelled, "{task:?}");
    let until = Instant::now() + Duration::from_secs(10);
    while !busy(&s.storage).is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(busy(&s.storage).is_empty(), "the run's container is gone");
    let unknown = s
        .client
        .get_task(GetTaskParams::new("run-0123456789abcdef0123456789abcdef"))
        .await;
    assert!(unknown.is_err(), "an unknown task is a JSON-RPC error");
    finish(s).await;
}

/// Run containers of this storage folder (not the idle pool ones, named mce-warm-*).
fn busy(storage: &std::path::Path) -> Vec<String> {
    containers_mounting(storage)
        .into_iter()
        .filter(|id| {
            let out = std::process::Command::new("docker")
                .args(["inspect", "-f", "{{.Name}}", id])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            !out.contains("mce-warm-")
        })
        .collect()
}

#[tokio::test]
async fn a_client_without_the_extension_gets_plain_results() {
    let s = Server::start().await.unwrap();
    let (r, is_error) = s.run("print('plain')").await.unwrap();
    assert!(!is_error, "{r}");
    assert_eq!(r["stdout"], "plain\n");
    assert!(r["run_id"].as_str().unwrap().starts_with("run-"));
    s.stop().await.unwrap();
}
