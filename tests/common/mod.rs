//! Test harness: starts the real `mcp-code-executor` binary, speaks MCP to it over stdio with
//! the rmcp client, and inspects the real Docker daemon. Every server gets its own storage
//! directory; containers are found by their bind mount of that directory, so each test checks
//! exactly its own leftovers even when tests run in parallel.
//!
//! The conda environment is tested against `mcp-code-executor/conda-standin`, a STAND-IN image
//! with the real conda image's layout (no conda channel is reachable on the build machines; see
//! images/conda-standin/Dockerfile).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::process::Command;

pub const CONDA_STANDIN_IMAGE: &str = "mcp-code-executor/conda-standin";

pub struct Server {
    pub client: RunningService<RoleClient, ()>,
    child: tokio::process::Child,
    pub storage: PathBuf,
    pub pid: u32,
    /// POOL_SIZE of this server (idle pool containers are expected, up to this many).
    pub pool_size: usize,
    _dir: tempfile::TempDir,
    pub stderr_log: PathBuf,
}

/// Options for one server.
#[derive(Clone, Default)]
pub struct Opts {
    /// Extra environment variables for the server.
    pub env: Vec<(String, String)>,
    /// Do not set CODE_STORAGE_DIR (HOME points at a temporary folder instead).
    pub no_storage_dir: bool,
}

impl Opts {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-code-executor")
}

impl Server {
    pub async fn start() -> Result<Server> {
        Self::start_with(Opts::default()).await
    }

    pub async fn start_with(opts: Opts) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let storage = dir.path().join("code");
        let stderr_log = dir.path().join("server.log");
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CONDA_IMAGE", CONDA_STANDIN_IMAGE)
            .env("EXECUTION_TIMEOUT", "20")
            .env("LOG_LEVEL", "info");
        // The engine under test: another daemon, another OCI runtime (RUNTIME=runsc reruns a
        // suite under gVisor).
        for var in ["DOCKER_HOST", "RUNTIME"] {
            if let Ok(value) = std::env::var(var) {
                cmd.env(var, value);
            }
        }
        if opts.no_storage_dir {
            cmd.env("HOME", dir.path().join("home"));
        } else {
            cmd.env("CODE_STORAGE_DIR", &storage);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(&stderr_log)?;
        // The test owns the process: stop() closes its stdin and lets it exit by itself, as a
        // client disconnecting does (rmcp's child transport would SIGKILL it on drop).
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("spawning the server")?;
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let pool_size = opts
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "POOL_SIZE")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(2);
        let client = ().serve((stdout, stdin)).await.context("MCP handshake")?;
        let storage = if opts.no_storage_dir {
            dir.path().join("home/.local/share/mcp-code-executor/code")
        } else {
            storage.canonicalize().unwrap_or(storage)
        };
        Ok(Server {
            client,
            child,
            storage,
            pid,
            pool_size,
            _dir: dir,
            stderr_log,
        })
    }

    /// Calls a tool; returns the structured result and whether `isError` was set.
    pub async fn call(&self, tool: &str, args: Value) -> Result<(Value, bool)> {
        let result = self.call_raw(tool, args).await?;
        let is_error = result.is_error.unwrap_or(false);
        let structured = result
            .structured_content
            .clone()
            .ok_or_else(|| anyhow!("{tool}: no structuredContent"))?;
        // The text content carries the same JSON object, for clients of the original.
        let text = result
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.clone())
            .ok_or_else(|| anyhow!("{tool}: no text content"))?;
        let from_text: Value = serde_json::from_str(&text)?;
        assert_eq!(
            from_text, structured,
            "{tool}: text and structuredContent differ"
        );
        Ok((structured, is_error))
    }

    pub async fn call_raw(&self, tool: &str, args: Value) -> Result<CallToolResult> {
        let Value::Object(map) = args else {
            return Err(anyhow!("arguments must be an object"));
        };
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(map);
        Ok(self.client.call_tool(params).await?)
    }

    /// Runs code with execute_code; panics on protocol errors.
    pub async fn run(&self, code: &str) -> Result<(Value, bool)> {
        self.call("execute_code", json!({ "code": code })).await
    }

    /// Containers of this server left behind: waits (up to 5 s) for used containers, removed in
    /// the background after each call, to go; idle pool containers are expected, up to
    /// `pool_size` (more of them is a leak, and they are all returned).
    pub async fn containers(&self) -> Vec<String> {
        let started = std::time::Instant::now();
        loop {
            let (idle, busy) = split_idle(&self.storage);
            let leak: Vec<String> = if idle.len() > self.pool_size {
                busy.into_iter().chain(idle).collect()
            } else {
                busy
            };
            if leak.is_empty() || started.elapsed() > Duration::from_secs(5) {
                return leak;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Containers of this server running a program now (not idle pool containers).
    pub fn busy_containers(&self) -> Vec<String> {
        split_idle(&self.storage).1
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Closes stdin and waits (up to 30 s) for the server to clean up and exit by itself.
    pub async fn stop(mut self) -> Result<StoppedServer> {
        let storage = self.storage.clone();
        let log = self.stderr_log.clone();
        self.client.cancel().await?;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("the server did not exit after stdin closed")??;
        anyhow::ensure!(status.success(), "the server exited with {status}");
        Ok(StoppedServer {
            storage,
            log,
            _dir: self._dir,
        })
    }
}

/// What remains of a server after it exited: its folders, for checks.
pub struct StoppedServer {
    pub storage: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Waits (up to 20 s) until process `pid` is gone.
pub async fn wait_gone(pid: u32) {
    for _ in 0..200 {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(pid as i32, 0) } != 0 {
            return;
        }
        // Reap it if it is our child and a zombie.
        let mut status = 0;
        // SAFETY: non-blocking waitpid on a pid we spawned.
        unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server {pid} did not exit");
}

/// Containers (any state, idle pool ones included) that mount `dir`.
pub fn containers_mounting(dir: &Path) -> Vec<String> {
    let (idle, busy) = split_idle(dir);
    busy.into_iter().chain(idle).collect()
}

/// (idle pool containers, all others) mounting `dir`, by name.
fn split_idle(dir: &Path) -> (Vec<String>, Vec<String>) {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            "label=mcp-code-executor.managed",
        ])
        .args(["--filter", &format!("volume={}", dir.display())])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .partition(|name| name.starts_with("mce-warm-"))
}

/// Whether the suite runs under gVisor (`RUNTIME=runsc`, passed on to every server).
pub fn under_gvisor() -> bool {
    std::env::var("RUNTIME").is_ok_and(|r| r == "runsc" || r.starts_with("runsc-"))
}

pub fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field {key:?} in {v}"))
}

/// The uid that code runs as for a server started by these tests.
pub fn expected_run_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 { 65534 } else { uid }
}

/// A uniquely named environment for one test; its volume is removed when dropped (with the
/// server's own `reset-env` command), so tests never share installed packages.
pub struct TestEnv {
    pub env_type: &'static str,
    pub name: String,
}

impl TestEnv {
    pub fn new(env_type: &'static str) -> TestEnv {
        let name = format!("t{}", &uuid_like()[..10]);
        TestEnv { env_type, name }
    }

    /// Arguments of configure_environment selecting it.
    pub fn configure_args(&self) -> Value {
        match self.env_type {
            "venv" => json!({ "type": "venv", "venv_path": self.name }),
            "venv-uv" => json!({ "type": "venv-uv", "uv_venv_path": self.name }),
            _ => json!({ "type": "conda", "conda_name": self.name }),
        }
    }

    /// Server settings selecting it at start.
    pub fn opts(&self) -> Opts {
        let var = match self.env_type {
            "venv" => "VENV_PATH",
            "venv-uv" => "UV_VENV_PATH",
            _ => "CONDA_ENV_NAME",
        };
        Opts::default()
            .env("ENV_TYPE", self.env_type)
            .env(var, &self.name)
    }

    /// The environment's prefix inside the image.
    pub fn prefix(&self) -> String {
        match self.env_type {
            "conda" => format!("/opt/conda/envs/{}", self.name),
            _ => format!("/opt/envs/{}", self.name),
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = std::process::Command::new(bin())
            .args(["reset-env", self.env_type, &self.name])
            .env("CONDA_IMAGE", CONDA_STANDIN_IMAGE)
            .output();
    }
}

pub fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:08x}", nanos, std::process::id())
        .chars()
        .rev()
        .collect()
}

/// The environment volumes the server lists for `location`.
pub fn env_volumes(location: &str) -> Vec<String> {
    let out = std::process::Command::new(bin())
        .arg("list-envs")
        .env("CONDA_IMAGE", CONDA_STANDIN_IMAGE)
        .output()
        .expect("list-envs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split('\t').nth(1) == Some(location))
        .map(str::to_string)
        .collect()
}
