//! MCP-native results over stdio with the real binary: plots as PNG image content, the list of
//! files a run made, results that validate against each tool's outputSchema, progress
//! notifications for long runs, and cancellation that stops a run at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Server, str_field};
use rmcp::model::{
    CallToolRequestParams, ContentBlock, NumberOrString, ProgressNotificationParam, ProgressToken,
    RequestMetaObject,
};
use rmcp::service::NotificationContext;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

fn png_images(result: &rmcp::model::CallToolResult) -> Vec<Vec<u8>> {
    result
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Image(img) => {
                assert_eq!(img.mime_type, "image/png");
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(&img.data)
                        .unwrap(),
                )
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn figures_shown_left_open_and_saved_come_back_as_png() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let code = r#"
import matplotlib.pyplot as plt
plt.plot([1, 2, 3]); plt.title("shown"); plt.show()
fig = plt.figure(); plt.bar([1, 2], [3, 4]); fig.savefig("saved_plot.png"); plt.close(fig)
plt.figure(); plt.plot([3, 2, 1])  # left open at exit
print("done")
"#;
    let args = json!({ "code": code, "filename": "plots" });
    let result = s.call_raw("execute_code", args).await?;
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let body = result.structured_content.clone().unwrap();
    let stem = str_field(&body, "generated_filename")
        .trim_end_matches(".py")
        .to_string();
    assert_eq!(
        body["images"],
        json!([
            format!("{stem}_figure1.png"),
            format!("{stem}_figure2.png"),
            "saved_plot.png"
        ])
    );
    let images = png_images(&result);
    assert_eq!(images.len(), 3);
    for png in &images {
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(png.len() > 1000);
    }
    // The text content is still the JSON object old clients parse.
    assert!(result.content[0].as_text().is_some());
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_result_lists_files_created_or_changed() -> anyhow::Result<()> {
    let s = Server::start().await?;
    // Files made by an earlier run (owned by the user code runs as).
    let (r, is_error) = s
        .run("open('existing.txt', 'w').write('old')\nopen('untouched.txt', 'w').write('same')")
        .await?;
    assert!(!is_error, "{r}");
    let code =
        "open('data.csv', 'w').write('a,b\\n1,2\\n')\nopen('existing.txt', 'a').write(' and new')";
    let (r, is_error) = s.run(code).await?;
    assert!(!is_error, "{r}");
    let files = r["files"].as_array().unwrap();
    let by = |name: &str| files.iter().find(|f| f["name"] == name).cloned();
    let data = by("data.csv").expect("data.csv listed");
    assert_eq!(data["created"], true);
    assert_eq!(data["size"], 8);
    assert_eq!(
        data["path"],
        s.storage.join("data.csv").display().to_string()
    );
    assert_eq!(
        by("existing.txt").expect("existing.txt listed")["created"],
        false
    );
    assert!(by("untouched.txt").is_none());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(r["images"], json!([]));
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn every_result_validates_against_its_output_schema() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let tools = s.client.list_all_tools().await?;
    let schema_of = |name: &str| {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        let schema = Value::Object(
            tool.output_schema
                .as_ref()
                .expect("outputSchema")
                .as_ref()
                .clone(),
        );
        jsonschema::validator_for(&schema).unwrap()
    };
    let (r, _) = s
        .call("initialize_code_file", json!({ "content": "print(1)\n" }))
        .await?;
    let path = str_field(&r, "file_path").to_string();
    let calls = [
        ("execute_code", json!({ "code": "print('ok')" })),
        ("execute_code", json!({ "code": "raise SystemExit(2)" })),
        ("execute_code_file", json!({ "file_path": path })),
        ("execute_code_file", json!({ "file_path": "/etc/passwd" })),
        ("initialize_code_file", json!({ "content": "x" })),
        (
            "append_to_code_file",
            json!({ "file_path": path, "content": "print(2)\n" }),
        ),
        ("read_code_file", json!({ "file_path": path })),
        ("read_code_file", json!({ "file_path": "missing.py" })),
        ("get_environment_config", json!({})),
        ("configure_environment", json!({ "type": "venv" })),
        (
            "configure_environment",
            json!({ "type": "conda", "conda_name": "$bad" }),
        ),
        (
            "check_installed_packages",
            json!({ "packages": ["numpy", "nope"] }),
        ),
        (
            "check_installed_packages",
            json!({ "packages": ["bad name"] }),
        ),
        ("install_dependencies", json!({ "packages": ["-r x"] })),
    ];
    for (tool, args) in calls {
        let result = s.call_raw(tool, args.clone()).await?;
        let structured = result
            .structured_content
            .clone()
            .expect("structuredContent");
        let validator = schema_of(tool);
        let errors: Vec<String> = validator
            .iter_errors(&structured)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{tool} {args}: {errors:?}\n{structured}");
    }
    // Annotations: read-only tools say so, installs reach the open world.
    let ann = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .annotations
            .clone()
            .unwrap()
    };
    for name in [
        "read_code_file",
        "check_installed_packages",
        "get_environment_config",
    ] {
        assert_eq!(ann(name).read_only_hint, Some(true), "{name}");
    }
    assert_eq!(ann("install_dependencies").open_world_hint, Some(true));
    assert_eq!(ann("execute_code").open_world_hint, Some(false));
    assert!(ann("execute_code").title.is_some());
    s.stop().await?;
    Ok(())
}

/// Starts the server (owning its process, so it can exit by itself) with a recording client.
async fn serve_recorded(
    storage: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(
    tokio::process::Child,
    Recorder,
    rmcp::service::RunningService<RoleClient, Recorder>,
)> {
    let mut child = tokio::process::Command::new(common::bin())
        .env("CODE_STORAGE_DIR", storage)
        .env("CONDA_IMAGE", common::CONDA_STANDIN_IMAGE)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (stdout, stdin) = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let recorder = Recorder::default();
    let client = recorder.clone().serve((stdout, stdin)).await?;
    Ok((child, recorder, client))
}

/// A client that records progress and log notifications.
#[derive(Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }

    #[allow(deprecated)] // MCP logging (SEP-2577 deprecates it; older clients use it)
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.logs
            .lock()
            .unwrap()
            .push(serde_json::to_value(&params).unwrap());
    }
}

#[tokio::test]
#[allow(deprecated)] // MCP logging (SEP-2577 deprecates it; older clients use it)
async fn log_messages_reach_a_client_that_sets_a_level() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut child, recorder, client) = serve_recorded(dir.path(), &[("POOL_SIZE", "0")]).await?;
    let args = json!({ "code": "print(1)" }).as_object().cloned().unwrap();
    client
        .call_tool(CallToolRequestParams::new("execute_code").with_arguments(args.clone()))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        recorder.logs.lock().unwrap().is_empty(),
        "logs before the client asked"
    );

    let params = rmcp::model::SetLevelRequestParams::new(rmcp::model::LoggingLevel::Debug);
    client.set_level(params).await?;
    client
        .call_tool(CallToolRequestParams::new("execute_code").with_arguments(args))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = recorder.logs.lock().unwrap().clone();
    // The per-phase timings of the (cold) run arrive as debug messages from the server.
    assert!(
        logs.iter().any(|l| l["level"] == "debug"
            && l["logger"] == "mcp_code_executor::sandbox"
            && l["data"].as_str().unwrap_or("").contains("phase")),
        "{logs:?}"
    );
    client.cancel().await?;
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok(())
}

#[tokio::test]
async fn long_runs_report_progress_and_nothing_after_the_result() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut child, recorder, client) = serve_recorded(dir.path(), &[]).await?;

    let code =
        "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(1)";
    let mut params = CallToolRequestParams::new("execute_code")
        .with_arguments(json!({ "code": code }).as_object().cloned().unwrap());
    let mut meta = RequestMetaObject::default();
    meta.set_progress_token(ProgressToken(NumberOrString::String("run-1".into())));
    params.meta = Some(meta);
    let result = client.call_tool(params).await?;
    assert_eq!(result.is_error, Some(false));
    let at_result = recorder.progress.lock().unwrap().len();
    assert!(at_result >= 1, "no progress for a 3 s run");
    {
        let seen = recorder.progress.lock().unwrap();
        let last = seen.last().unwrap();
        // The rmcp client substitutes a token of its own; the server echoes what it received.
        assert!(seen.iter().all(|p| p.progress_token == last.progress_token));
        assert!(
            last.message.as_deref().unwrap_or("").contains("step"),
            "{last:?}"
        );
        assert!(
            seen.windows(2).all(|w| w[0].progress < w[1].progress),
            "progress must increase"
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        recorder.progress.lock().unwrap().len(),
        at_result,
        "progress after the result"
    );

    // A quick run without a token gets none.
    let before = recorder.progress.lock().unwrap().len();
    client
        .call_tool(
            CallToolRequestParams::new("execute_code")
                .with_arguments(json!({ "code": "print(1)" }).as_object().cloned().unwrap()),
        )
        .await?;
    assert_eq!(recorder.progress.lock().unwrap().len(), before);
    client.cancel().await?;
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok(())
}

#[tokio::test]
async fn a_cancelled_run_stops_at_once_and_the_server_goes_on() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let ticks = s.storage.join("ticks.txt");
    let code = "import time\nwhile True:\n    with open('ticks.txt', 'a') as f:\n        f.write('x')\n    time.sleep(0.1)";
    let peer = s.client.peer().clone();
    let call = tokio::spawn(async move {
        let params = CallToolRequestParams::new("execute_code")
            .with_arguments(json!({ "code": code }).as_object().cloned().unwrap());
        peer.call_tool(params).await
    });
    let started = Instant::now();
    while std::fs::metadata(&ticks).map(|m| m.len()).unwrap_or(0) < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dropping the call's future makes the rmcp client send notifications/cancelled.
    call.abort();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let size = std::fs::metadata(&ticks)?.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        std::fs::metadata(&ticks)?.len(),
        size,
        "the cancelled run kept writing"
    );
    assert!(
        s.containers().await.is_empty(),
        "the cancelled run's container remains"
    );
    let (r, is_error) = s.run("print('next')").await?;
    assert!(!is_error, "{r}");
    assert_eq!(str_field(&r, "stdout"), "next\n");
    s.stop().await?;
    Ok(())
}
