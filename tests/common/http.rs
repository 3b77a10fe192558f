//! HTTP test harness: starts the real `mcp-code-executor` binary with `--transport http` on an
//! ephemeral loopback port, reads the address it printed, and talks to it with the rmcp
//! streamable-HTTP client (with a bearer token) or with raw HTTP (reqwest). Each server gets its
//! own temporary folder; containers are ours when they bind-mount something under it (every
//! principal's storage is a subfolder of it) or carry the instance label of such a container,
//! so each test checks exactly its own leftovers even when tests run in parallel. Environment
//! volumes of a test's principals (their names contain the principal, which each test makes
//! unique) are removed when the test ends.
//!
//! Only loopback traffic: servers listen on 127.0.0.1 and clients ignore proxy settings.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::common::{CONDA_STANDIN_IMAGE, bin, uuid_like};

/// A principal name no other test (or run) uses: `prefix` plus a unique tail.
pub fn unique_principal(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid_like()[..12])
}

/// A random-enough bearer token for one test.
pub fn new_token() -> String {
    format!("tok-{}-{}", uuid_like(), uuid_like())
}

/// `sha256:<hex>` of `token`, the hashed form a tokens file may hold.
pub fn hashed(token: &str) -> String {
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// How the server authenticates.
#[derive(Clone)]
pub enum Auth {
    /// No token setting at all.
    None,
    /// `AUTH_TOKEN` (principal `default`).
    Token(String),
    /// `AUTH_TOKENS_FILE` with these (principal, token) pairs; `true` writes the token hashed.
    File(Vec<(String, String, bool)>),
}

/// Options for one HTTP server.
#[derive(Clone)]
pub struct HttpOpts {
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// `--listen` value.
    pub listen: String,
    pub auth: Auth,
}

impl Default for HttpOpts {
    fn default() -> Self {
        HttpOpts {
            env: Vec::new(),
            args: Vec::new(),
            listen: "127.0.0.1:0".to_string(),
            auth: Auth::Token(new_token()),
        }
    }
}

impl HttpOpts {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn listen(mut self, l: &str) -> Self {
        self.listen = l.to_string();
        self
    }

    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// The tokens by principal.
    fn tokens(&self) -> HashMap<String, String> {
        match &self.auth {
            Auth::None => HashMap::new(),
            Auth::Token(t) => HashMap::from([("default".to_string(), t.clone())]),
            Auth::File(pairs) => pairs
                .iter()
                .map(|(p, t, _)| (p.clone(), t.clone()))
                .collect(),
        }
    }
}

/// A spawned server process, its stderr copied into a log file as it comes.
pub struct Spawned {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub dir: tempfile::TempDir,
    pub storage: PathBuf,
    pub stderr_log: PathBuf,
    /// The address from the `listening on http://<addr>/mcp` line, once printed.
    listening: tokio::sync::watch::Receiver<Option<SocketAddr>>,
    /// The task copying stderr into the log; it ends after the process does.
    copier: Option<tokio::task::JoinHandle<()>>,
}

impl Spawned {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit (and its log to be complete).
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                return Err(anyhow!(
                    "the server did not exit within {limit:?}; log:\n{}",
                    self.log()
                ));
            }
        };
        if let Some(copier) = self.copier.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), copier).await;
        }
        Ok(status)
    }
}

impl Drop for Spawned {
    /// A test that failed midway still lets its server clean up: SIGTERM, up to 20 s to exit,
    /// then SIGKILL (kill_on_drop).
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: signalling the child we spawned, which has not been reaped.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Starts the binary with `opts` (without waiting for it to listen).
pub fn spawn(opts: &HttpOpts) -> Result<Spawned> {
    let dir = tempfile::tempdir()?;
    let storage = dir.path().join("code");
    let stderr_log = dir.path().join("server.log");
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONDA_IMAGE", CONDA_STANDIN_IMAGE)
        .env("EXECUTION_TIMEOUT", "40")
        .env("LOG_LEVEL", "info")
        .env("CODE_STORAGE_DIR", &storage)
        .args(["--transport", "http", "--listen", &opts.listen]);
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        cmd.env("DOCKER_HOST", host);
    }
    match &opts.auth {
        Auth::None => {}
        Auth::Token(t) => {
            cmd.env("AUTH_TOKEN", t);
        }
        Auth::File(pairs) => {
            let file = dir.path().join("tokens");
            let mut text = String::from("# principal token\n");
            for (p, t, hash) in pairs {
                let t = if *hash { hashed(t) } else { t.clone() };
                text.push_str(&format!("{p} {t}\n"));
            }
            std::fs::write(&file, text)?;
            cmd.env("AUTH_TOKENS_FILE", &file);
        }
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.args(&opts.args);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the server")?;
    let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let (tx, listening) = tokio::sync::watch::channel(None);
    let log_path = stderr_log.clone();
    // Copies stderr into the log (so the pipe never fills) and reports the listen address.
    let copier = tokio::spawn(async move {
        let Ok(mut log) = tokio::fs::File::create(&log_path).await else {
            return;
        };
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = log.write_all(line.as_bytes()).await;
            let _ = log.write_all(b"\n").await;
            let _ = log.flush().await;
            if let Some(addr) = parse_listening(&line) {
                let _ = tx.send(Some(addr));
            }
        }
    });
    Ok(Spawned {
        child,
        pid,
        dir,
        storage,
        stderr_log,
        listening,
        copier: Some(copier),
    })
}

/// The address in a line containing `listening on http://<addr>/mcp`.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let end = rest.find("/mcp")?;
    rest[..end].parse().ok()
}

/// A running HTTP server.
pub struct HttpServer {
    /// Declared first: dropped (SIGTERM, wait) before the volumes below are removed.
    pub proc: Spawned,
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub base: String,
    /// Token of each principal.
    pub tokens: HashMap<String, String>,
    /// Instances (label `mcp-code-executor.instance`) seen on containers mounting our folders.
    instances: Mutex<BTreeSet<String>>,
    /// The environment volumes of the tokens file's principals (not `default`), removed once
    /// the server is gone.
    _volumes: PrincipalVolumes,
}

impl HttpServer {
    pub async fn start() -> Result<HttpServer> {
        Self::start_with(HttpOpts::default()).await
    }

    /// Starts the server and waits (up to 30 s) until it prints its address.
    pub async fn start_with(opts: HttpOpts) -> Result<HttpServer> {
        let mut proc = spawn(&opts)?;
        let started = Instant::now();
        let addr = loop {
            if let Some(addr) = *proc.listening.borrow() {
                break addr;
            }
            if let Some(status) = proc.child.try_wait()? {
                return Err(anyhow!(
                    "the server exited with {status} before listening; log:\n{}",
                    proc.log()
                ));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(anyhow!(
                    "no 'listening on http://…/mcp' line within 30 s; log:\n{}",
                    proc.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        anyhow::ensure!(addr.ip().is_loopback(), "listening on {addr}, not loopback");
        let tokens = opts.tokens();
        let volumes = PrincipalVolumes(
            tokens
                .keys()
                .filter(|p| p.as_str() != "default")
                .cloned()
                .collect(),
        );
        Ok(HttpServer {
            proc,
            addr,
            base: format!("http://{addr}"),
            tokens,
            instances: Mutex::new(BTreeSet::new()),
            _volumes: volumes,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn mcp_url(&self) -> String {
        self.url("/mcp")
    }

    pub fn token(&self, principal: &str) -> &str {
        self.tokens
            .get(principal)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no token for principal {principal}"))
    }

    /// The storage folder of `principal`.
    pub fn storage_of(&self, principal: &str) -> PathBuf {
        let root = self.proc.storage.join(principal);
        root.canonicalize().unwrap_or(root)
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// An rmcp client of `principal`.
    pub async fn client(&self, principal: &str) -> Result<HttpClient> {
        connect(&self.mcp_url(), Some(self.token(principal))).await
    }

    /// Our containers, by (idle pool containers and the sentinel, all others).
    pub fn our_containers(&self) -> (Vec<String>, Vec<String>) {
        let mut instances = lock(&self.instances);
        containers_under(self.proc.dir.path(), &mut instances)
    }

    /// Containers of this server running a program now (not idle pool containers).
    pub fn busy_containers(&self) -> Vec<String> {
        self.our_containers().1
    }

    /// Waits (up to 5 s) until no container of ours is busy; returns those still there.
    pub async fn busy_after_settling(&self) -> Vec<String> {
        let started = Instant::now();
        loop {
            let busy = self.busy_containers();
            if busy.is_empty() || started.elapsed() > Duration::from_secs(5) {
                return busy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to the child we spawned.
        assert_eq!(unsafe { libc::kill(self.proc.pid as i32, signal) }, 0);
    }

    /// SIGTERM, then waits (up to 30 s) for the exit; returns the status, every container of
    /// ours still on the daemon, and the server's log.
    pub async fn terminate(mut self) -> Result<(ExitStatus, Vec<String>, String)> {
        self.signal(libc::SIGTERM);
        let status = self.proc.wait_exit(Duration::from_secs(30)).await?;
        let (idle, busy) = self.our_containers();
        Ok((status, busy.into_iter().chain(idle).collect(), self.log()))
    }

    /// Stops the server with SIGTERM; it must exit 0 and leave no container.
    pub async fn stop(self) -> Result<()> {
        let (status, left, log) = self.terminate().await?;
        anyhow::ensure!(
            status.code() == Some(0),
            "the server exited with {status}; log:\n{log}"
        );
        anyhow::ensure!(left.is_empty(), "containers left behind: {left:?}");
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Managed containers that bind-mount something under `dir`, or belong to an instance in
/// `instances` (which grows with the instances of the former): (idle pool ones and the
/// sentinel, others).
pub fn containers_under(
    dir: &Path,
    instances: &mut BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let ids = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=mcp-code-executor.managed"])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return (Vec::new(), Vec::new());
    }
    // A container removed between the two commands makes inspect fail for it alone.
    let out = std::process::Command::new("docker")
        .arg("inspect")
        .args(&ids)
        .output()
        .expect("docker inspect");
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut ours = Vec::new();
    for pass in 0..2 {
        for c in &all {
            let name = c["Name"].as_str().unwrap_or("").trim_start_matches('/');
            let instance = c["Config"]["Labels"]["mcp-code-executor.instance"]
                .as_str()
                .unwrap_or("");
            let mounts_ours = c["Mounts"].as_array().is_some_and(|ms| {
                ms.iter()
                    .filter_map(|m| m["Source"].as_str())
                    .any(|s| Path::new(s).starts_with(&dir))
            });
            if mounts_ours && !instance.is_empty() {
                instances.insert(instance.to_string());
            }
            if pass == 1
                && (mounts_ours || instances.contains(instance))
                && !ours.contains(&name.to_string())
            {
                ours.push(name.to_string());
            }
        }
    }
    // Standing containers: the pool's idle ones and the instance's sentinel, alive as long as
    // the server; everything else runs something (a run, an install, a session).
    ours.into_iter().partition(|name: &String| {
        name.starts_with("mce-warm-") || name.starts_with("mce-sentinel-")
    })
}

/// Removes the environment volumes (and their markers) whose names contain one of
/// `principals` when dropped. Principal names are unique to a test (see [`unique_principal`]).
pub struct PrincipalVolumes(pub Vec<String>);

impl Drop for PrincipalVolumes {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("docker")
            .args(["volume", "ls", "-q"])
            .output()
        else {
            return;
        };
        let doomed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|v| self.0.iter().any(|p| v.contains(p.as_str())))
            .map(str::to_string)
            .collect();
        if !doomed.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&doomed)
                .output();
        }
    }
}

/// An rmcp client over streamable HTTP.
pub struct HttpClient {
    pub client: RunningService<RoleClient, ()>,
}

/// Installs a rustls crypto provider once: reqwest's rustls is on (through jsonschema) without
/// one, and building a client would panic. Only loopback plain HTTP is used.
fn crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A reqwest client that never uses a proxy (loopback only) and keeps no idle connections.
pub fn http() -> reqwest::Client {
    crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// Connects an rmcp client to `url`, sending `Authorization: Bearer <token>` when given.
pub async fn connect(url: &str, token: Option<&str>) -> Result<HttpClient> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(t) = token {
        config = config.auth_header(t.to_string());
    }
    crypto_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()?;
    let transport = StreamableHttpClientTransport::with_client(client, config);
    let client = tokio::time::timeout(Duration::from_secs(30), ().serve(transport))
        .await
        .context("MCP handshake over HTTP timed out")?
        .context("MCP handshake over HTTP")?;
    Ok(HttpClient { client })
}

impl HttpClient {
    /// Calls a tool; returns the structured result and whether `isError` was set.
    pub async fn call(&self, tool: &str, args: Value) -> Result<(Value, bool)> {
        let result = self.call_raw(tool, args).await?;
        structured(tool, &result)
    }

    pub async fn call_raw(&self, tool: &str, args: Value) -> Result<CallToolResult> {
        let Value::Object(map) = args else {
            return Err(anyhow!("arguments must be an object"));
        };
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(map);
        let call = self.client.call_tool(params);
        Ok(tokio::time::timeout(Duration::from_secs(120), call)
            .await
            .with_context(|| format!("{tool}: no answer within 120 s"))??)
    }

    /// Runs code with execute_code.
    pub async fn run(&self, code: &str) -> Result<(Value, bool)> {
        self.call("execute_code", json!({ "code": code })).await
    }

    /// Closes the client (the transport ends its MCP session).
    pub async fn close(self) -> Result<()> {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.cancel()).await;
        Ok(())
    }
}

/// The structured content of a result (checked equal to its text content) and `isError`.
pub fn structured(tool: &str, result: &CallToolResult) -> Result<(Value, bool)> {
    let is_error = result.is_error.unwrap_or(false);
    let structured = result
        .structured_content
        .clone()
        .ok_or_else(|| anyhow!("{tool}: no structuredContent in {result:?}"))?;
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .ok_or_else(|| anyhow!("{tool}: no text content"))?;
    let from_text: Value = serde_json::from_str(&text)?;
    anyhow::ensure!(
        from_text == structured,
        "{tool}: text and structuredContent differ"
    );
    Ok((structured, is_error))
}

/// A minimal raw MCP session over HTTP (for what the rmcp client cannot show: statuses,
/// headers, oversized bodies, abrupt disconnects).
pub struct RawSession {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    pub session_id: Option<String>,
    pub protocol_version: Option<String>,
}

pub const PROTOCOL_VERSION: &str = "2025-06-18";

impl RawSession {
    /// A POST to the MCP endpoint with the usual headers (and the session's, once known).
    pub fn post(&self, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(id) = &self.session_id {
            req = req.header("mcp-session-id", id);
        }
        if let Some(v) = &self.protocol_version {
            req = req.header("mcp-protocol-version", v);
        }
        req
    }

    /// Sends `initialize` (and `notifications/initialized`); returns the response status of
    /// `initialize` and, when it succeeded, the ready session.
    pub async fn open(
        url: &str,
        token: Option<&str>,
    ) -> Result<(reqwest::StatusCode, Option<RawSession>, String)> {
        let mut s = RawSession {
            http: http(),
            url: url.to_string(),
            token: token.map(str::to_string),
            session_id: None,
            protocol_version: None,
        };
        let resp = s.post(initialize_body().to_string()).send().await?;
        let status = resp.status();
        let session_id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Ok((status, None, body));
        }
        s.session_id = session_id;
        s.protocol_version = Some(PROTOCOL_VERSION.to_string());
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let r = s.post(note.to_string()).send().await?;
        anyhow::ensure!(
            r.status().is_success(),
            "notifications/initialized: {}",
            r.status()
        );
        Ok((status, Some(s), body))
    }
}

/// The JSON-RPC `initialize` request.
pub fn initialize_body() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "raw-test-client", "version": "0" }
        }
    })
}

/// A `tools/call` request.
pub fn tool_call_body(id: u64, tool: &str, args: Value) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": { "name": tool, "arguments": args }
    })
}

/// Shared list of (start, end) Unix times printed by runs.
pub type Spans = Arc<Mutex<Vec<(f64, f64)>>>;

/// Most intervals open at one instant.
pub fn max_overlap(spans: &[(f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = spans.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // Ends sort before starts at the same instant: touching is not overlapping.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in events {
        open += d;
        most = most.max(open);
    }
    most as usize
}

/// Where the test's Python SDK venv lives: under the target dir, keyed on the SDK version.
pub fn py_venv_dir(version: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join(format!("py-mcp-venv-{version}"))
}

/// Makes (once; later calls reuse it) a venv with `mcp==version`; returns its python.
pub async fn python_sdk_venv(version: &str) -> Result<PathBuf> {
    let dir = py_venv_dir(version);
    let python = dir.join("bin/python");
    let done = dir.join(".mcp-installed");
    if done.exists() && python.exists() {
        return Ok(python);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let host_python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| anyhow!("no python3 on PATH to make the SDK venv"))?;
    let out = run_bounded(
        Command::new(host_python).args(["-m", "venv"]).arg(&dir),
        Duration::from_secs(120),
    )
    .await?;
    anyhow::ensure!(out.status.success(), "python -m venv: {out:?}");
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        &format!("mcp=={version}"),
    ]);
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if bundle.exists() {
        pip.env("PIP_CERT", bundle)
            .env("REQUESTS_CA_BUNDLE", bundle);
    }
    let out = run_bounded(&mut pip, Duration::from_secs(600)).await?;
    anyhow::ensure!(
        out.status.success(),
        "pip install mcp=={version} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&done, version)?;
    Ok(python)
}

/// Runs a command to completion within `limit` (killed past it).
pub async fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<std::process::Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("{cmd:?} did not finish within {limit:?}"))?
        .map_err(Into::into)
}
