//! Environments over MCP: switching between venv, venv-uv and conda (the conda STAND-IN image,
//! see tests/common) really changes the interpreter runs use; names are validated; the
//! original's config shapes keep working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod common;

use common::{CONDA_STANDIN_IMAGE, Opts, Server, str_field};
use serde_json::{Value, json};

const WHERE: &str = "import sys, os\nprint(sys.prefix, sys.executable, os.environ.get('VIRTUAL_ENV') or os.environ.get('CONDA_PREFIX'))";

async fn prefix_of_runs(s: &Server) -> anyhow::Result<String> {
    let (r, is_error) = s.run(WHERE).await?;
    assert!(!is_error, "{r}");
    Ok(str_field(&r, "stdout").trim().to_string())
}

#[tokio::test]
async fn switching_environments_changes_the_interpreter() -> anyhow::Result<()> {
    let s = Server::start().await?;
    assert_eq!(
        prefix_of_runs(&s).await?,
        "/opt/venv /opt/venv/bin/python /opt/venv"
    );

    let (r, is_error) = s
        .call("configure_environment", json!({ "type": "venv-uv" }))
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["previous"]["type"], "venv");
    assert_eq!(r["current"]["type"], "venv-uv");
    assert_eq!(r["current"]["uv_venv_path"], "/opt/uv-venv");
    assert_eq!(r["current"]["image"], "mcp-code-executor/uv");
    assert_eq!(
        prefix_of_runs(&s).await?,
        "/opt/uv-venv /opt/uv-venv/bin/python /opt/uv-venv"
    );

    let (r, is_error) = s
        .call(
            "configure_environment",
            json!({ "type": "conda", "conda_name": "base" }),
        )
        .await?;
    assert!(!is_error, "{r}");
    assert_eq!(r["current"]["image"], CONDA_STANDIN_IMAGE);
    assert_eq!(
        prefix_of_runs(&s).await?,
        "/opt/conda /opt/conda/bin/python /opt/conda"
    );

    let (r, _) = s.call("get_environment_config", json!({})).await?;
    let config = &r["config"];
    assert_eq!(config["type"], "conda");
    assert_eq!(config["conda_name"], "base");
    assert_eq!(config["interpreter"], "/opt/conda/bin/python");
    assert_eq!(config["code_storage_dir"], s.storage.display().to_string());
    assert_eq!(config["limits"]["timeout_secs"], 20);
    assert_eq!(config["limits"]["memory_bytes"], 512 * 1024 * 1024);
    assert_eq!(config["limits"]["pids"], 128);
    assert_eq!(config["limits"]["output_bytes"], 1024 * 1024);
    assert_eq!(config["environments"].as_array().map(Vec::len), Some(3));

    // Back to venv: the default numpy/pandas/matplotlib set is there.
    s.call("configure_environment", json!({ "type": "venv" }))
        .await?;
    let (r, is_error) = s
        .run("import numpy, pandas, matplotlib\nprint(matplotlib.get_backend())")
        .await?;
    assert!(!is_error, "{r}");
    // The capturing backend (Agg rendering, figures returned as images; no display needed).
    assert_eq!(
        str_field(&r, "stdout").trim(),
        "module://mcp_code_executor_backend"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bad_environment_names_are_refused() -> anyhow::Result<()> {
    let s = Server::start().await?;
    let bad: [(Value, &str); 5] = [
        (
            json!({ "type": "venv", "venv_path": "/home/me/.venv" }),
            "not below /opt/",
        ),
        (
            json!({ "type": "venv", "venv_path": "/opt/../etc" }),
            "invalid venv path",
        ),
        (
            json!({ "type": "venv-uv", "uv_venv_path": "/opt/x;rm -rf /" }),
            "invalid uv venv path",
        ),
        (
            json!({ "type": "conda", "conda_name": "$(id)" }),
            "invalid conda environment name",
        ),
        (
            json!({ "type": "conda", "conda_name": "../../x" }),
            "invalid conda environment name",
        ),
    ];
    for (args, expected) in bad {
        let (r, is_error) = s.call("configure_environment", args.clone()).await?;
        assert!(is_error, "{args}: {r}");
        assert!(str_field(&r, "error").contains(expected), "{args}: {r}");
    }
    // An unknown type is a malformed argument: a JSON-RPC error, not a tool result.
    let err = s
        .call_raw("configure_environment", json!({ "type": "pyenv" }))
        .await
        .expect_err("unknown type accepted");
    assert!(
        err.to_string().contains("pyenv") || err.to_string().to_lowercase().contains("invalid"),
        "{err}"
    );
    // Nothing changed.
    let (r, _) = s.call("get_environment_config", json!({})).await?;
    assert_eq!(r["config"]["type"], "venv");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_image_says_how_to_build_it() -> anyhow::Result<()> {
    let s = Server::start_with(Opts::default().env("UV_IMAGE", "mcp-code-executor/does-not-exist"))
        .await?;
    let (r, is_error) = s
        .call("configure_environment", json!({ "type": "venv-uv" }))
        .await?;
    assert!(is_error, "{r}");
    let msg = str_field(&r, "error");
    assert!(msg.contains("mcp-code-executor/does-not-exist"), "{msg}");
    assert!(msg.contains("scripts/build-images.sh"), "{msg}");
    assert!(msg.contains("UV_IMAGE"), "{msg}");

    // Started with the missing image active, a run fails with the same advice.
    let s2 = Server::start_with(
        Opts::default()
            .env("ENV_TYPE", "venv-uv")
            .env("UV_IMAGE", "mcp-code-executor/does-not-exist"),
    )
    .await?;
    let (r, is_error) = s2.run("print(1)").await?;
    assert!(is_error);
    assert!(
        str_field(&r, "error").contains("scripts/build-images.sh"),
        "{r}"
    );
    s.stop().await?;
    s2.stop().await?;
    Ok(())
}

#[tokio::test]
async fn original_config_shapes_keep_working() -> anyhow::Result<()> {
    // Only CONDA_ENV_NAME set, as in the original's default config: conda is selected.
    let s = Server::start_with(Opts::default().env("CONDA_ENV_NAME", "base")).await?;
    let (r, _) = s.call("get_environment_config", json!({})).await?;
    assert_eq!(r["config"]["type"], "conda");
    assert_eq!(
        prefix_of_runs(&s).await?,
        "/opt/conda /opt/conda/bin/python /opt/conda"
    );
    s.stop().await?;

    // ENV_TYPE + UV_VENV_PATH.
    let s = Server::start_with(
        Opts::default()
            .env("ENV_TYPE", "venv-uv")
            .env("UV_VENV_PATH", "/opt/uv-venv"),
    )
    .await?;
    assert_eq!(
        prefix_of_runs(&s).await?,
        "/opt/uv-venv /opt/uv-venv/bin/python /opt/uv-venv"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn without_code_storage_dir_a_per_user_folder_is_used() -> anyhow::Result<()> {
    let s = Server::start_with(Opts {
        no_storage_dir: true,
        ..Default::default()
    })
    .await?;
    let (r, is_error) = s.run("open('made_here.txt', 'w').write('x')").await?;
    assert!(!is_error, "{r}");
    assert!(s.storage.is_dir(), "{} missing", s.storage.display());
    assert!(str_field(&r, "file_path").starts_with(&s.storage.display().to_string()));
    assert!(s.storage.join("made_here.txt").is_file());
    let log = s.log();
    assert!(log.contains("CODE_STORAGE_DIR is not set"), "{log}");
    assert!(log.contains(&s.storage.display().to_string()), "{log}");
    s.stop().await?;
    Ok(())
}
