//! Benchmark: drives the real server binary over MCP stdio and over streamable HTTP and
//! compares, in one interleaved run (these machines are noisy: only ratios measured together
//! mean anything):
//! host `python3 -c`, `docker run --rm` with the same limits, our warm path (pool), our cold
//! path (POOL_SIZE=0), the warm path over HTTP (rmcp client, bearer token; its ratio to stdio
//! has a target of ≤ 1.2×), a numpy+pandas run warm vs cold, a call in a live session, work on
//! a DataFrame made in an earlier session call vs the same work one-shot (reload included),
//! `create_session`, a burst of 8 concurrent calls over stdio, a burst of 8 HTTP clients × 10
//! calls with 2 principals, the server's idle memory and its time to answer `initialize`.
//!
//!   scripts/bench.sh            (builds in release mode, then runs this)
//!   scripts/bench.sh --runtime runsc        (and a gVisor pair of servers, same rounds)
//!   scripts/bench.sh --storage-mode copy    (and a copy-mode pair of servers, same rounds)
//!
//! Settings: BENCH_ROUNDS (default 15), MCP_CODE_EXECUTOR_BIN, HOST_PYTHON (default
//! /usr/bin/python3), BENCH_IMAGE (default mcp-code-executor/venv).

#[path = "bench/http.rs"]
mod http;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/support.rs"]
mod support;
#[path = "bench/variant.rs"]
mod variant;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::http::HttpServer;
use crate::report::Rows;
use crate::support::{leftovers, rss_kib, time_command};
use crate::variant::{Variant, VariantRows};

const TRIVIAL: &str = "print(1+1)";
const DATA: &str = "import numpy, pandas\nprint(pandas.DataFrame({'a': numpy.arange(3)}).a.sum())";
/// Makes the DataFrame a session keeps (and one-shot runs make again every time).
const LOAD: &str = "import numpy, pandas\nrng = numpy.random.default_rng(0)\ndf = pandas.DataFrame(rng.random((200_000, 8)))\n";
/// The work on it.
const WORK: &str = "print(round(float(df.describe().loc['mean'].sum()), 3))\n";

/// An MCP client, over stdio or HTTP.
type Client = RunningService<RoleClient, ()>;

struct Server {
    client: Client,
    pid: u32,
    started_to_initialized: Duration,
}

async fn start(bin: &str, storage: &str, pool: usize) -> anyhow::Result<Server> {
    start_with(bin, storage, pool, &[]).await
}

async fn start_with(
    bin: &str,
    storage: &str,
    pool: usize,
    env: &[(String, String)],
) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.env("CODE_STORAGE_DIR", storage)
        .env("POOL_SIZE", pool.to_string())
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)));
    let t0 = Instant::now();
    let transport = TokioChildProcess::new(cmd).context("starting the server")?;
    let pid = transport.id().unwrap_or(0);
    let client = ().serve(transport).await.context("MCP handshake")?;
    Ok(Server {
        client,
        pid,
        started_to_initialized: t0.elapsed(),
    })
}

async fn call(c: &Client, code: &str) -> anyhow::Result<(Duration, Value)> {
    tool(c, "execute_code", json!({ "code": code })).await
}

async fn call_in(c: &Client, session: &str, code: &str) -> anyhow::Result<(Duration, Value)> {
    let args = json!({ "code": code, "session_id": session });
    tool(c, "execute_code", args).await
}

async fn tool(c: &Client, name: &'static str, args: Value) -> anyhow::Result<(Duration, Value)> {
    let params = CallToolRequestParams::new(name)
        .with_arguments(args.as_object().cloned().unwrap_or_default());
    let t0 = Instant::now();
    let result = c.call_tool(params).await?;
    let took = t0.elapsed();
    let body = result.structured_content.unwrap_or_default();
    if result.is_error == Some(true) {
        bail!("{name} failed: {body}");
    }
    Ok((took, body))
}

async fn mcp_roundtrip(c: &Client) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    c.call_tool(CallToolRequestParams::new("get_environment_config"))
        .await?;
    Ok(t0.elapsed())
}

/// The `docker run --rm` arguments with the limits our containers get.
fn docker_run_args(image: &str) -> Vec<String> {
    // SAFETY: getuid and getgid cannot fail.
    let uid = unsafe { libc::getuid() };
    let user = if uid == 0 {
        "65534:65534".to_string()
    } else {
        format!("{uid}:{}", unsafe { libc::getgid() })
    };
    let limits = "run --rm -i --network none --cap-drop ALL --security-opt no-new-privileges \
                  --read-only --tmpfs /tmp:rw,nosuid,nodev,size=64m --memory 512m \
                  --memory-swap 512m --cpus 1 --pids-limit 128 --init";
    let mut args: Vec<String> = limits.split_whitespace().map(String::from).collect();
    let rest = [
        "--user",
        &user,
        "-e",
        "HOME=/tmp",
        image,
        "/opt/venv/bin/python",
        "-c",
        TRIVIAL,
    ];
    args.extend(rest.map(String::from));
    args
}

struct Settings {
    bin: String,
    rounds: usize,
    python: String,
    docker_args: Vec<String>,
}

fn settings() -> Settings {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = std::env::var("MCP_CODE_EXECUTOR_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
        format!("{target}/release/mcp-code-executor")
    });
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let python = std::env::var("HOST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_string());
    let image =
        std::env::var("BENCH_IMAGE").unwrap_or_else(|_| "mcp-code-executor/venv".to_string());
    Settings {
        bin,
        rounds,
        python,
        docker_args: docker_run_args(&image),
    }
}

/// The servers and clients of one run.
struct Fleet {
    warm: Server,
    cold: Server,
    web: HttpServer,
    /// The warm HTTP client (first principal).
    web_a: Client,
    /// The session the session rows use (on `warm`).
    sid: String,
    /// The variant's pool and cold servers (`--runtime`, `--storage-mode`).
    variant: Option<(Server, Server)>,
}

async fn start_fleet(
    cfg: &Settings,
    storage: &str,
    web_dir: &std::path::Path,
    variant: Option<&Variant>,
) -> anyhow::Result<Fleet> {
    eprintln!("starting servers (warm: POOL_SIZE=2, cold: POOL_SIZE=0, HTTP: POOL_SIZE=2)...");
    let warm = start(&cfg.bin, storage, 2).await?;
    let cold = start(&cfg.bin, storage, 0).await?;
    let web = HttpServer::start(&cfg.bin, web_dir, 2).await?;
    let web_a = web.client(0).await?;
    let web_b = web.client(1).await?;
    // First runs seed environment volumes (one per HTTP principal) and fill pools; not measured.
    tokio::time::sleep(Duration::from_secs(3)).await;
    call(&warm.client, TRIVIAL).await?;
    call(&cold.client, TRIVIAL).await?;
    call(&web_a, TRIVIAL).await?;
    call(&web_b, TRIVIAL).await?;
    web_b.cancel().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, created) = tool(&warm.client, "create_session", json!({ "name": "bench" })).await?;
    let sid = created["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    call_in(&warm.client, &sid, LOAD).await?;
    let variant = match variant {
        Some(v) => {
            eprintln!("starting the variant's servers ({})...", v.label);
            let vwarm = start_with(&cfg.bin, storage, 2, &v.env).await?;
            let vcold = start_with(&cfg.bin, storage, 0, &v.env).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            call(&vwarm.client, TRIVIAL).await?;
            call(&vcold.client, TRIVIAL).await?;
            Some((vwarm, vcold))
        }
        None => None,
    };
    Ok(Fleet {
        warm,
        cold,
        web,
        web_a,
        sid,
        variant,
    })
}

/// Warm `print(1+1)` over stdio and over HTTP back to back, in alternating order (the second
/// runs while the first server refills its pool).
async fn warm_pair(f: &Fleet, r: &mut Rows, http_first: bool) -> anyhow::Result<()> {
    if http_first {
        r.http_warm.push(call(&f.web_a, TRIVIAL).await?.0);
    }
    let (d, body) = call(&f.warm.client, TRIVIAL).await?;
    r.warm.push(d);
    r.wserver.push(Duration::from_millis(
        body["duration_ms"].as_u64().unwrap_or(0),
    ));
    if !http_first {
        r.http_warm.push(call(&f.web_a, TRIVIAL).await?.0);
    }
    Ok(())
}

async fn round(cfg: &Settings, f: &Fleet, r: &mut Rows, n: usize) -> anyhow::Result<()> {
    let docker_args: Vec<&str> = cfg.docker_args.iter().map(String::as_str).collect();
    let pause = Duration::from_millis(1500);
    r.host
        .push(time_command(&cfg.python, &["-c", TRIVIAL]).await?);
    r.drun.push(time_command("docker", &docker_args).await?);
    warm_pair(f, r, n % 2 == 1).await?;
    let (d, body) = call(&f.cold.client, TRIVIAL).await?;
    r.cold.push(d);
    r.cserver.push(Duration::from_millis(
        body["duration_ms"].as_u64().unwrap_or(0),
    ));
    r.rt.push(mcp_roundtrip(&f.warm.client).await?);
    r.http_rt.push(mcp_roundtrip(&f.web_a).await?);
    r.sess
        .push(call_in(&f.warm.client, &f.sid, TRIVIAL).await?.0);
    r.sdata.push(call_in(&f.warm.client, &f.sid, WORK).await?.0);
    // Let the pools refill, as they do between an agent's calls.
    tokio::time::sleep(pause).await;
    r.wdata.push(call(&f.warm.client, DATA).await?.0);
    r.cdata.push(call(&f.cold.client, DATA).await?.0);
    tokio::time::sleep(pause).await;
    r.odata
        .push(call(&f.warm.client, &format!("{LOAD}{WORK}")).await?.0);
    tokio::time::sleep(pause).await;
    Ok(())
}

/// The variant's rows of one round (its pool refills during the pauses).
async fn variant_round(f: &Fleet, v: &mut VariantRows) -> anyhow::Result<()> {
    let Some((warm, cold)) = &f.variant else {
        return Ok(());
    };
    let (d, body) = call(&warm.client, TRIVIAL).await?;
    v.warm.push(d);
    v.wserver.push(Duration::from_millis(
        body["duration_ms"].as_u64().unwrap_or(0),
    ));
    v.cold.push(call(&cold.client, TRIVIAL).await?.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    v.wdata.push(call(&warm.client, DATA).await?.0);
    v.cdata.push(call(&cold.client, DATA).await?.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(())
}

/// Everything after the interleaved rounds: the bursts, sessions, memory, `initialize`.
async fn tail(cfg: &Settings, f: &Fleet, r: &mut Rows, storage: &str) -> anyhow::Result<()> {
    // Burst of 8 concurrent calls on the warm server (pool of 2: the rest go cold).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let burst = futures_util::future::join_all((0..8).map(|_| call(&f.warm.client, TRIVIAL))).await;
    r.stdio_burst_wall = t0.elapsed();
    r.stdio_burst_failures = burst.iter().filter(|r| r.is_err()).count();
    eprintln!(
        "HTTP burst: {} clients × {} calls...",
        http::BURST_CLIENTS,
        http::BURST_CALLS
    );
    r.http_burst = Some(http::burst(&f.web).await?);
    for _ in 0..5 {
        let (d, made) = tool(&f.warm.client, "create_session", json!({})).await?;
        r.create.push(d);
        let id = made["session_id"].as_str().unwrap_or_default();
        tool(&f.warm.client, "close_session", json!({ "session_id": id })).await?;
    }
    tool(
        &f.warm.client,
        "close_session",
        json!({ "session_id": f.sid }),
    )
    .await?;
    // Idle memory and time to initialize (fresh servers).
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.idle_rss_kib = rss_kib(f.warm.pid);
    for _ in 0..5 {
        let s = start(&cfg.bin, storage, 0).await?;
        r.init.push(s.started_to_initialized);
        s.client.cancel().await?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    http::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cfg = settings();
    let variant = variant::from_args()?;
    let storage = tempfile::tempdir()?;
    let web_dir = tempfile::tempdir()?;
    let storage_path = storage.path().to_string_lossy().into_owned();
    let fleet = start_fleet(&cfg, &storage_path, web_dir.path(), variant.as_ref()).await?;
    let mut rows = Rows::default();
    let mut vrows = VariantRows::default();
    for n in 0..cfg.rounds {
        eprint!("\rround {}/{}", n + 1, cfg.rounds);
        round(&cfg, &fleet, &mut rows, n).await?;
        variant_round(&fleet, &mut vrows).await?;
    }
    eprintln!();
    tail(&cfg, &fleet, &mut rows, &storage_path).await?;
    report::print(cfg.rounds, &rows);
    if let Some(v) = &variant {
        variant::print(v, &rows, &vrows);
    }
    let Fleet {
        warm,
        cold,
        web,
        web_a,
        variant: variant_servers,
        ..
    } = fleet;
    if let Some((vwarm, vcold)) = variant_servers {
        vwarm.client.cancel().await?;
        vcold.client.cancel().await?;
    }
    web_a.cancel().await?;
    web.stop().await?;
    warm.client.cancel().await?;
    cold.client.cancel().await?;
    let left = leftovers(&[storage.path(), web_dir.path()]).await;
    println!("- containers left behind: {}", left.len());
    if !left.is_empty() {
        bail!("containers left behind: {left:?}");
    }
    rows.check()
}
