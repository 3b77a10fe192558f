//! Demo client: starts the server binary, speaks MCP to it over stdio like Claude Desktop would,
//! runs a small data program in the default environment and prints what came back.
//!
//!   cargo run --release --example demo            (scripts/demo.sh does this after building)
//!
//! Settings: MCP_CODE_EXECUTOR_BIN (server binary, default target/release/mcp-code-executor),
//! CODE_STORAGE_DIR (default ./demo-output); other server settings pass through.

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use tokio::process::Command;

const SAMPLE: &str = r#"
import sys, platform
import numpy as np, pandas as pd
df = pd.DataFrame({"x": np.arange(5), "y": np.arange(5) ** 2})
df.to_csv("squares.csv", index=False)
print(df.describe().loc[["mean", "max"]])
print("python", platform.python_version(), "in", sys.prefix)
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = std::env::var("MCP_CODE_EXECUTOR_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
        format!("{target}/release/mcp-code-executor")
    });
    let storage =
        std::env::var("CODE_STORAGE_DIR").unwrap_or_else(|_| format!("{root}/demo-output"));
    let mut cmd = Command::new(&bin);
    cmd.env("CODE_STORAGE_DIR", &storage);
    let transport = TokioChildProcess::new(cmd).with_context(|| format!("starting {bin}"))?;
    let client = ().serve(transport).await.context("MCP handshake")?;

    let tools = client.list_all_tools().await?;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    println!("tools: {}", names.join(", "));

    let args = json!({ "code": SAMPLE, "filename": "demo" });
    let params = CallToolRequestParams::new("execute_code")
        .with_arguments(args.as_object().cloned().unwrap_or_default());
    let result = client.call_tool(params).await?;
    let body: Value = result.structured_content.clone().unwrap_or(Value::Null);
    println!("isError: {}", result.is_error.unwrap_or(false));
    println!("{}", serde_json::to_string_pretty(&body)?);
    client.cancel().await?;
    println!("files in {storage}:");
    for entry in std::fs::read_dir(&storage)? {
        println!("  {}", entry?.file_name().to_string_lossy());
    }
    if result.is_error.unwrap_or(false) {
        anyhow::bail!("the sample run failed: {}", body["error"]);
    }
    Ok(())
}
