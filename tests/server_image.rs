//! The server itself launched with `docker run -i` (image mcp-code-executor/server, built by
//! scripts/build-images.sh server): it serves MCP on stdio, starts run containers as siblings on
//! the host's daemon, finds the host path behind its /data, runs code in every environment type
//! (conda: the STAND-IN image, see tests/common), and leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use common::CONDA_STANDIN_IMAGE;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

const IMAGE: &str = "mcp-code-executor/server";
/// The folder's owner on a laptop; code runs as the folder's owner.
const USER: (u32, u32) = (1000, 1000);

async fn call(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    tool: &str,
    args: Value,
) -> Value {
    let params = CallToolRequestParams::new(tool.to_string())
        .with_arguments(args.as_object().cloned().unwrap());
    let result = client.call_tool(params).await.unwrap();
    let body = result.structured_content.unwrap();
    assert_eq!(result.is_error, Some(false), "{tool}: {body}");
    body
}

#[tokio::test]
async fn the_server_in_a_container_runs_code_in_every_environment() -> anyhow::Result<()> {
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()?;
    assert!(
        present.status.success(),
        "{IMAGE} is missing: build it with scripts/build-images.sh server"
    );

    let host = tempfile::tempdir()?;
    let host_dir = host.path().canonicalize()?;
    std::os::unix::fs::chown(&host_dir, Some(USER.0), Some(USER.1))?;
    let name = format!("mce-test-server-{}", std::process::id());
    let mut child = tokio::process::Command::new("docker")
        .args(["run", "-i", "--rm", "--name", &name])
        .args([
            "--read-only",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CHOWN",
            "--cap-add",
            "DAC_OVERRIDE",
        ])
        .args(["--security-opt", "no-new-privileges"])
        .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
        .args(["-v", &format!("{}:/data", host_dir.display())])
        .args([
            "-e",
            "CODE_STORAGE_DIR=/data",
            "-e",
            &format!("CONDA_IMAGE={CONDA_STANDIN_IMAGE}"),
        ])
        .args(["-e", "POOL_SIZE=1", IMAGE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (stdout, stdin) = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let client = ().serve((stdout, stdin)).await?;

    for (env_type, prefix) in [
        ("venv", "/opt/venv"),
        ("venv-uv", "/opt/uv-venv"),
        ("conda", "/opt/conda"),
    ] {
        call(
            &client,
            "configure_environment",
            json!({ "type": env_type }),
        )
        .await;
        let code = format!(
            "import sys\nopen('from_{env_type}.txt', 'w').write(sys.prefix)\nprint('hi from', sys.prefix)"
        );
        let r = call(
            &client,
            "execute_code",
            json!({ "code": code, "filename": env_type }),
        )
        .await;
        assert_eq!(r["stdout"], format!("hi from {prefix}\n"), "{r}");
        // The stored program and the file it wrote are in the host folder.
        let stored = r["file_path"].as_str().unwrap();
        assert!(stored.starts_with("/data/"), "{stored}");
        let on_host = host_dir.join(stored.trim_start_matches("/data/"));
        assert_eq!(std::fs::read_to_string(&on_host)?, code);
        let written = host_dir.join(format!("from_{env_type}.txt"));
        assert_eq!(std::fs::read_to_string(&written)?, prefix);
        assert_eq!(
            std::fs::metadata(&written)?.uid(),
            USER.0,
            "written as the folder's owner"
        );
    }

    client.cancel().await?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    assert!(status.success(), "{status}");
    // Nothing left: not the server (--rm), not its run containers, sentinel or pool.
    let left = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            "label=mcp-code-executor.managed",
        ])
        .args(["--filter", "volume=/data"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "containers left behind"
    );
    let server = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("name={name}")])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&server.stdout).trim(), "");
    Ok(())
}
