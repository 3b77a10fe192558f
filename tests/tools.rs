//! The tool contract seen by a client: the tool list (pinned by a golden file; regenerate with
//! `UPDATE_GOLDEN=1 cargo test --test tools` and review the diff), argument names compatible
//! with the original server, and protocol misuse answered with JSON-RPC errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use common::Server;
use rmcp::ServiceError;
use rmcp::model::ErrorCode;
use serde_json::{Value, json};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/tools.json");

#[tokio::test]
async fn tool_list_matches_the_golden_file() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let mut tools = s.client.list_all_tools().await?;
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    let listed = serde_json::to_value(&tools)?;
    let pretty = serde_json::to_string_pretty(&listed)? + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &pretty)?;
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(GOLDEN)?)?;
    assert_eq!(
        listed, golden,
        "tool list changed; rerun with UPDATE_GOLDEN=1 and review"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn original_tool_and_argument_names() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let tools = s.client.list_all_tools().await?;
    let args_of = |name: &str| -> Vec<String> {
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("tool {name} missing"));
        assert!(tool.output_schema.is_some(), "{name}: no outputSchema");
        tool.input_schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    let expect = [
        (
            "execute_code",
            vec!["code", "filename", "session_id", "timeout"],
        ),
        ("initialize_code_file", vec!["content", "filename"]),
        ("append_to_code_file", vec!["content", "file_path"]),
        (
            "execute_code_file",
            vec!["file_path", "session_id", "timeout"],
        ),
        ("read_code_file", vec!["file_path"]),
        (
            "configure_environment",
            vec!["conda_name", "type", "uv_venv_path", "venv_path"],
        ),
        ("get_environment_config", vec![]),
        ("install_dependencies", vec!["packages", "timeout"]),
        ("check_installed_packages", vec!["packages"]),
        ("create_session", vec!["env_type", "name"]),
        ("list_sessions", vec![]),
        ("close_session", vec!["session_id"]),
        ("list_runs", vec![]),
        ("list_files", vec!["cursor", "path", "pattern"]),
        ("read_file", vec!["length", "offset", "path"]),
        ("write_file", vec!["content", "encoding", "path"]),
    ];
    for (tool, args) in expect {
        let mut got = args_of(tool);
        got.sort();
        assert_eq!(got, args, "{tool}");
    }
    s.stop().await?;
    Ok(())
}

fn assert_invalid_params(err: anyhow::Error, needle: &str) {
    match err.downcast::<ServiceError>().expect("a service error") {
        ServiceError::McpError(e) => {
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{e:?}");
            assert!(e.message.contains(needle), "{}", e.message);
        }
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn protocol_misuse_is_a_json_rpc_error() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let err = s
        .call_raw("execute_code", json!({}))
        .await
        .expect_err("accepted");
    assert_invalid_params(err, "missing field `code`");
    let err = s
        .call_raw("execute_code", json!({ "code": 42 }))
        .await
        .expect_err("accepted");
    assert_invalid_params(err, "invalid type");
    let err = s
        .call_raw("read_code_file", json!({ "path": "x.py" }))
        .await
        .expect_err("accepted");
    assert_invalid_params(err, "missing field `file_path`");
    let err = s
        .call_raw("no_such_tool", json!({}))
        .await
        .expect_err("accepted");
    assert!(
        matches!(
            err.downcast_ref::<ServiceError>(),
            Some(ServiceError::McpError(_))
        ),
        "{err:?}"
    );
    // No file was stored and no container started; the server keeps answering.
    assert_eq!(std::fs::read_dir(&s.storage)?.count(), 0);
    let (r, is_error) = s.run("print('fine')").await?;
    assert!(!is_error, "{r}");
    s.stop().await?;
    Ok(())
}
