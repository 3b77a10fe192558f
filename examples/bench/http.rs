//! The HTTP half of the benchmark: one server started with `--transport http --listen
//! 127.0.0.1:0` and an `AUTH_TOKENS_FILE` of two principals, driven by rmcp's streamable-HTTP
//! client with bearer tokens (loopback only, no proxy). The principals have fixed names, so
//! their environment volumes are seeded once and reused by later runs, as the stdio ones are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::support::Series;
use crate::{Client, TRIVIAL, call};

/// The principals of the tokens file.
pub const PRINCIPALS: [&str; 2] = ["bench-a", "bench-b"];
/// The burst: this many clients (half of them per principal), all at once...
pub const BURST_CLIENTS: usize = 8;
/// ...each making this many calls one after the other...
pub const BURST_CALLS: usize = 10;
/// ...all within this time (calls not answered by then count as failed).
pub const BURST_LIMIT: Duration = Duration::from_secs(180);

/// Installs rustls' aws-lc-rs crypto provider for the process, before any reqwest client is
/// built: the jsonschema dev-dependency turns on reqwest's rustls without a provider (building
/// a client then panics, even for plain http). The tests do the same.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A server on an ephemeral loopback port. Dropping it without [`HttpServer::stop`] still
/// sends SIGTERM, so the server removes its containers itself.
pub struct HttpServer {
    child: Child,
    pid: u32,
    pub url: String,
    tokens: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
    stopped: bool,
}

/// `MAX_CONCURRENT_RUNS` and `MAX_RUNS_PER_PRINCIPAL` as the server will read them (the
/// environment, else the defaults: 4 and half of it).
pub fn run_limits() -> (usize, usize) {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let machine = env("MAX_CONCURRENT_RUNS").unwrap_or(4);
    let per_principal = env("MAX_RUNS_PER_PRINCIPAL").unwrap_or((machine / 2).max(1));
    (machine, per_principal)
}

impl HttpServer {
    /// Starts the server (storage and tokens file under `dir`) and waits for its address.
    pub async fn start(bin: &str, dir: &Path, pool: usize) -> anyhow::Result<HttpServer> {
        let tokens: Vec<String> = PRINCIPALS
            .iter()
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let file = dir.join("tokens");
        let mut text = String::from("# principal token\n");
        for (p, t) in PRINCIPALS.iter().zip(&tokens) {
            text.push_str(&format!("{p} {t}\n"));
        }
        std::fs::write(&file, text)?;
        let mut cmd = Command::new(bin);
        cmd.env("CODE_STORAGE_DIR", storage(dir))
            .env("POOL_SIZE", pool.to_string())
            // The address line is logged at info; the rest as quiet as the stdio servers.
            .env("LOG_LEVEL", "warn,mcp_code_executor::http=info")
            .env("AUTH_TOKENS_FILE", &file)
            .env_remove("AUTH_TOKEN")
            .args(["--transport", "http", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting the HTTP server")?;
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut addr) = watch::channel(None);
        tokio::spawn(read_stderr(stderr, tx, log.clone()));
        let mut server = HttpServer {
            child,
            pid,
            url: String::new(),
            tokens,
            log,
            stopped: false,
        };
        let waited = tokio::time::timeout(Duration::from_secs(30), addr.wait_for(Option::is_some));
        let addr = match waited.await {
            Ok(Ok(a)) => a.ok_or_else(|| anyhow!("no address"))?,
            _ => bail!("no 'listening on' line; log:\n{}", server.log()),
        };
        server.url = format!("http://{addr}/mcp");
        Ok(server)
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// A client of principal `i` (an MCP session of its own, handshake done).
    pub async fn client(&self, i: usize) -> anyhow::Result<Client> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
            .auth_header(self.tokens[i].clone());
        let http = reqwest::Client::builder().no_proxy().build()?;
        let transport = StreamableHttpClientTransport::with_client(http, config);
        tokio::time::timeout(Duration::from_secs(30), ().serve(transport))
            .await
            .context("MCP handshake over HTTP timed out")?
            .context("MCP handshake over HTTP")
    }

    /// SIGTERM, then waits (up to 60 s) for the exit, which must be 0.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stopped = true;
        // SAFETY: signalling the child we spawned.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) if status.as_ref().is_ok_and(|s| s.success()) => Ok(()),
            Ok(status) => bail!(
                "the HTTP server exited with {status:?}; log:\n{}",
                self.log()
            ),
            Err(_) => {
                self.child.kill().await?;
                bail!("the HTTP server did not exit within 60 s of SIGTERM (killed)")
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if !self.stopped {
            // SAFETY: signalling the child we spawned; it cleans up and exits.
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        }
    }
}

/// Keeps the last lines of the server's stderr (so the pipe never fills) and reports the
/// address of its `listening on http://<addr>/mcp` line.
async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    tx: watch::Sender<Option<SocketAddr>>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addr) = parse_listening(&line) {
            let _ = tx.send(Some(addr));
        }
        if let Ok(mut log) = log.lock() {
            if log.len() >= 200 {
                log.remove(0);
            }
            log.push(line);
        }
    }
}

fn parse_listening(line: &str) -> Option<SocketAddr> {
    const MARK: &str = "listening on http://";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    rest[..rest.find("/mcp")?].parse().ok()
}

/// What the burst measured.
pub struct Burst {
    pub wall: Duration,
    pub latency: Series,
    /// The server-side run time (`duration_ms`) of the same calls: the rest is waiting.
    pub run: Series,
    pub failures: Vec<String>,
}

/// [`BURST_CLIENTS`] clients (alternating principals) each make [`BURST_CALLS`] calls of
/// `print(1+1)` one after the other, all clients at once, within [`BURST_LIMIT`].
pub async fn burst(server: &HttpServer) -> anyhow::Result<Burst> {
    let mut clients = Vec::new();
    for i in 0..BURST_CLIENTS {
        clients.push(server.client(i % PRINCIPALS.len()).await?);
    }
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + BURST_LIMIT;
    let runs = clients.iter().map(|c| async move {
        let mut took = Vec::new();
        for n in 0..BURST_CALLS {
            match tokio::time::timeout_at(deadline, call(c, TRIVIAL)).await {
                Ok(Ok((d, body))) => {
                    let ms = body["duration_ms"].as_u64().unwrap_or(0);
                    took.push(Ok((d, Duration::from_millis(ms))));
                }
                Ok(Err(e)) => took.push(Err(format!("{e:#}"))),
                Err(_) => {
                    let late = format!("not answered within {BURST_LIMIT:?}");
                    took.extend((n..BURST_CALLS).map(|_| Err(late.clone())));
                    break;
                }
            }
        }
        took
    });
    let results = futures_util::future::join_all(runs).await;
    let wall = t0.elapsed();
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.cancel()).await;
    }
    let mut out = Burst {
        wall,
        latency: Series::default(),
        run: Series::default(),
        failures: Vec::new(),
    };
    for r in results.into_iter().flatten() {
        match r {
            Ok((d, run)) => {
                out.latency.push(d);
                out.run.push(run);
            }
            Err(e) => out.failures.push(e),
        }
    }
    Ok(out)
}

/// The storage folder of the HTTP server under `dir`.
pub fn storage(dir: &Path) -> PathBuf {
    dir.join("code")
}
