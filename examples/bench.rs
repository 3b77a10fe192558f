//! Benchmark: drives the real server binary over MCP stdio and compares, in one interleaved run
//! (these machines are noisy: only ratios measured together mean anything):
//! host `python3 -c`, `docker run --rm` with the same limits, our warm path (pool), our cold
//! path (POOL_SIZE=0), a numpy+pandas run warm vs cold, a call in a live session, work on a
//! DataFrame made in an earlier session call vs the same work one-shot (reload included),
//! `create_session`, a burst of 8 concurrent calls, the server's idle memory and its time to
//! answer `initialize`.
//!
//!   scripts/bench.sh            (builds in release mode, then runs this)
//!
//! Settings: BENCH_ROUNDS (default 15), MCP_CODE_EXECUTOR_BIN, HOST_PYTHON (default
//! /usr/bin/python3), BENCH_IMAGE (default mcp-code-executor/venv).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::process::Command;

const TRIVIAL: &str = "print(1+1)";
const DATA: &str = "import numpy, pandas\nprint(pandas.DataFrame({'a': numpy.arange(3)}).a.sum())";
/// Makes the DataFrame a session keeps (and one-shot runs make again every time).
const LOAD: &str = "import numpy, pandas\nrng = numpy.random.default_rng(0)\ndf = pandas.DataFrame(rng.random((200_000, 8)))\n";
/// The work on it.
const WORK: &str = "print(round(float(df.describe().loc['mean'].sum()), 3))\n";

struct Server {
    client: RunningService<RoleClient, ()>,
    pid: u32,
    started_to_initialized: Duration,
}

async fn start(bin: &str, storage: &str, pool: usize) -> anyhow::Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.env("CODE_STORAGE_DIR", storage)
        .env("POOL_SIZE", pool.to_string())
        .env("LOG_LEVEL", "warn");
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

async fn call(s: &Server, code: &str) -> anyhow::Result<(Duration, Value)> {
    tool(s, "execute_code", json!({ "code": code })).await
}

async fn call_in(s: &Server, session: &str, code: &str) -> anyhow::Result<(Duration, Value)> {
    tool(
        s,
        "execute_code",
        json!({ "code": code, "session_id": session }),
    )
    .await
}

async fn tool(s: &Server, name: &'static str, args: Value) -> anyhow::Result<(Duration, Value)> {
    let params = CallToolRequestParams::new(name)
        .with_arguments(args.as_object().cloned().unwrap_or_default());
    let t0 = Instant::now();
    let result = s.client.call_tool(params).await?;
    let took = t0.elapsed();
    let body = result.structured_content.unwrap_or_default();
    if result.is_error == Some(true) {
        bail!("{name} failed: {body}");
    }
    Ok((took, body))
}

async fn mcp_roundtrip(s: &Server) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    s.client
        .call_tool(CallToolRequestParams::new("get_environment_config"))
        .await?;
    Ok(t0.elapsed())
}

async fn time_command(program: &str, args: &[&str]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = Command::new(program).args(args).output().await?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let idx = ((v.len() - 1) as f64 * p).round() as usize;
        v[idx]
    }
    fn median(&self) -> f64 {
        self.pct(0.5)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = std::env::var("MCP_CODE_EXECUTOR_BIN").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
        format!("{target}/release/mcp-code-executor")
    });
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let python = std::env::var("HOST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_string());
    let image =
        std::env::var("BENCH_IMAGE").unwrap_or_else(|_| "mcp-code-executor/venv".to_string());
    let storage = tempfile::tempdir()?;
    let storage_path = storage.path().to_string_lossy().into_owned();
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let user = if uid == 0 {
        "65534:65534".to_string()
    } else {
        format!("{uid}:{}", unsafe { libc::getgid() })
    };
    let docker_run: Vec<String> = [
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=64m",
        "--memory",
        "512m",
        "--memory-swap",
        "512m",
        "--cpus",
        "1",
        "--pids-limit",
        "128",
        "--init",
        "--user",
        &user,
        "-e",
        "HOME=/tmp",
        &image,
        "/opt/venv/bin/python",
        "-c",
        TRIVIAL,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let docker_args: Vec<&str> = docker_run.iter().map(String::as_str).collect();

    eprintln!("starting servers (warm: POOL_SIZE=2, cold: POOL_SIZE=0)...");
    let warm = start(&bin, &storage_path, 2).await?;
    let cold = start(&bin, &storage_path, 0).await?;
    // First runs seed environment volumes; not measured.
    tokio::time::sleep(Duration::from_secs(3)).await;
    call(&warm, TRIVIAL).await?;
    call(&cold, TRIVIAL).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (_, created) = tool(&warm, "create_session", json!({ "name": "bench" })).await?;
    let sid = created["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    call_in(&warm, &sid, LOAD).await?;
    let (mut sess, mut sdata, mut odata) =
        (Series::default(), Series::default(), Series::default());
    let (mut host, mut drun, mut w, mut c, mut wdata, mut cdata, mut rt, mut wserver, mut cserver) =
        Default::default();
    let (host, drun, w, c, wdata, cdata, rt, wserver, cserver): (
        &mut Series,
        &mut Series,
        &mut Series,
        &mut Series,
        &mut Series,
        &mut Series,
        &mut Series,
        &mut Series,
        &mut Series,
    ) = (
        &mut host,
        &mut drun,
        &mut w,
        &mut c,
        &mut wdata,
        &mut cdata,
        &mut rt,
        &mut wserver,
        &mut cserver,
    );
    for round in 0..rounds {
        eprint!("\rround {}/{rounds}", round + 1);
        host.push(time_command(&python, &["-c", TRIVIAL]).await?);
        drun.push(time_command("docker", &docker_args).await?);
        let (d, body) = call(&warm, TRIVIAL).await?;
        w.push(d);
        wserver.push(Duration::from_millis(
            body["duration_ms"].as_u64().unwrap_or(0),
        ));
        let (d, body) = call(&cold, TRIVIAL).await?;
        c.push(d);
        cserver.push(Duration::from_millis(
            body["duration_ms"].as_u64().unwrap_or(0),
        ));
        rt.push(mcp_roundtrip(&warm).await?);
        sess.push(call_in(&warm, &sid, TRIVIAL).await?.0);
        sdata.push(call_in(&warm, &sid, WORK).await?.0);
        // Let the pool refill, as it does between an agent's calls.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        wdata.push(call(&warm, DATA).await?.0);
        cdata.push(call(&cold, DATA).await?.0);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        odata.push(call(&warm, &format!("{LOAD}{WORK}")).await?.0);
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    eprintln!();

    // Burst of 8 concurrent calls on the warm server (pool of 2: the rest go cold).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    let burst = futures_util::future::join_all((0..8).map(|_| call(&warm, TRIVIAL))).await;
    let burst_wall = t0.elapsed();
    let burst_failures = burst.iter().filter(|r| r.is_err()).count();

    // Creating sessions (each closed again).
    let mut create = Series::default();
    for _ in 0..5 {
        let (d, made) = tool(&warm, "create_session", json!({})).await?;
        create.push(d);
        let id = made["session_id"].as_str().unwrap_or_default();
        tool(&warm, "close_session", json!({ "session_id": id })).await?;
    }
    tool(&warm, "close_session", json!({ "session_id": sid })).await?;

    // Idle memory and time to initialize (fresh servers).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(warm.pid);
    let mut init = Series::default();
    for _ in 0..5 {
        let s = start(&bin, &storage_path, 0).await?;
        init.push(s.started_to_initialized);
        s.client.cancel().await?;
    }

    let base = host.median();
    let row = |name: &str, s: &Series| {
        format!(
            "| {name} | {:.1} | {:.1} | {:.2}× |",
            s.median(),
            s.pct(0.9),
            s.median() / base
        )
    };
    println!(
        "Benchmark: {rounds} interleaved rounds, medians and p90 in ms; ratio = median / host python3 median.\n"
    );
    println!("| what | median ms | p90 ms | × host python3 |");
    println!("|---|---|---|---|");
    println!("{}", row("host `python3 -c 'print(1+1)'`", host));
    println!("{}", row("`docker run --rm` (same limits)", drun));
    println!("{}", row("execute_code `print(1+1)`, warm (pool)", w));
    println!(
        "{}",
        row("execute_code `print(1+1)`, cold (POOL_SIZE=0)", c)
    );
    println!("{}", row("execute_code numpy+pandas, warm", wdata));
    println!("{}", row("execute_code numpy+pandas, cold", cdata));
    println!(
        "{}",
        row("MCP round trip alone (get_environment_config)", rt)
    );
    println!(
        "{}",
        row("warm: server-side run time (duration_ms)", wserver)
    );
    println!(
        "{}",
        row("cold: server-side run time (duration_ms)", cserver)
    );
    println!("{}", row("session call `print(1+1)`", &sess));
    println!(
        "{}",
        row("session: work on a DataFrame made earlier", &sdata)
    );
    println!(
        "{}",
        row("one-shot (warm): make the DataFrame, same work", &odata)
    );
    println!("{}", row("create_session", &create));
    println!("{}", row("time to answer `initialize`", &init));
    println!();
    println!("- cold / docker run: {:.2}×", c.median() / drun.median());
    println!(
        "- numpy+pandas: warm is {:.1}× faster than cold",
        cdata.median() / wdata.median()
    );
    println!(
        "- burst of 8 concurrent calls (pool of 2, MAX_CONCURRENT_RUNS=4): {:.0} ms wall, {:.1} runs/s, {burst_failures} failed",
        burst_wall.as_secs_f64() * 1000.0,
        8.0 / burst_wall.as_secs_f64()
    );
    println!(
        "- session: reusing the DataFrame is {:.1}× faster than one-shot with reload",
        odata.median() / sdata.median()
    );
    println!("- idle server RSS: {:.1} MiB", idle_rss as f64 / 1024.0);
    warm.client.cancel().await?;
    cold.client.cancel().await?;
    if burst_failures > 0 {
        bail!("{burst_failures} burst calls failed");
    }
    Ok(())
}
