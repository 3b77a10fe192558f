//! What the benchmark measured, and the table it prints at the end.

use std::time::Duration;

use anyhow::bail;

use crate::http::{self, Burst, PRINCIPALS};
use crate::support::Series;

/// The HTTP/stdio ratio of the warm `print(1+1)` aimed for.
const HTTP_TARGET: f64 = 1.2;

#[derive(Default)]
pub struct Rows {
    pub host: Series,
    pub drun: Series,
    pub warm: Series,
    pub cold: Series,
    pub http_warm: Series,
    pub wdata: Series,
    pub cdata: Series,
    pub rt: Series,
    pub http_rt: Series,
    pub wserver: Series,
    pub cserver: Series,
    pub sess: Series,
    pub sdata: Series,
    pub odata: Series,
    pub create: Series,
    pub init: Series,
    pub stdio_burst_wall: Duration,
    pub stdio_burst_failures: usize,
    pub http_burst: Option<Burst>,
    pub idle_rss_kib: u64,
}

impl Rows {
    /// Fails the run when a burst call failed.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.stdio_burst_failures > 0 {
            bail!("{} stdio burst calls failed", self.stdio_burst_failures);
        }
        if let Some(b) = self.http_burst.as_ref().filter(|b| !b.failures.is_empty()) {
            bail!(
                "{} HTTP burst calls failed, first: {}",
                b.failures.len(),
                b.failures[0]
            );
        }
        Ok(())
    }
}

pub fn print(rounds: usize, r: &Rows) {
    let base = r.host.median();
    let row = |name: &str, s: &Series| {
        println!(
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
    row("host `python3 -c 'print(1+1)'`", &r.host);
    row("`docker run --rm` (same limits)", &r.drun);
    row("execute_code `print(1+1)`, warm (pool)", &r.warm);
    row("execute_code `print(1+1)`, warm over HTTP", &r.http_warm);
    row("execute_code `print(1+1)`, cold (POOL_SIZE=0)", &r.cold);
    row("execute_code numpy+pandas, warm", &r.wdata);
    row("execute_code numpy+pandas, cold", &r.cdata);
    row("MCP round trip alone (get_environment_config)", &r.rt);
    row("MCP round trip alone over HTTP", &r.http_rt);
    row("warm: server-side run time (duration_ms)", &r.wserver);
    row("cold: server-side run time (duration_ms)", &r.cserver);
    row("session call `print(1+1)`", &r.sess);
    row("session: work on a DataFrame made earlier", &r.sdata);
    row("one-shot (warm): make the DataFrame, same work", &r.odata);
    row("create_session", &r.create);
    row("time to answer `initialize`", &r.init);
    println!();
    print_notes(r);
}

fn print_notes(r: &Rows) {
    let (machine, per_principal) = http::run_limits();
    println!(
        "- cold / docker run: {:.2}×",
        r.cold.median() / r.drun.median()
    );
    let ratio = r.http_warm.median() / r.warm.median();
    let met = if ratio <= HTTP_TARGET {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "- warm `print(1+1)`, HTTP / stdio: {ratio:.2}× median, {:.2}× p90 (target: median ≤ {HTTP_TARGET}×, {met})",
        r.http_warm.pct(0.9) / r.warm.pct(0.9)
    );
    println!(
        "- numpy+pandas: warm is {:.1}× faster than cold",
        r.cdata.median() / r.wdata.median()
    );
    println!(
        "- burst of 8 concurrent calls over stdio (pool of 2, MAX_CONCURRENT_RUNS={machine}): {:.0} ms wall, {:.1} runs/s, {} failed",
        r.stdio_burst_wall.as_secs_f64() * 1000.0,
        8.0 / r.stdio_burst_wall.as_secs_f64(),
        r.stdio_burst_failures
    );
    if let Some(b) = &r.http_burst {
        let calls = http::BURST_CLIENTS * http::BURST_CALLS;
        println!(
            "- HTTP burst, {} clients × {} calls ({} principals × {} clients, all at once; POOL_SIZE=2 per principal, MAX_CONCURRENT_RUNS={machine}, MAX_RUNS_PER_PRINCIPAL={per_principal}): {calls} calls in {:.0} ms, {:.1} calls/s, latency p50 {:.0} ms, p99 {:.0} ms (server-side run time p50 {:.0} ms), {} failed",
            http::BURST_CLIENTS,
            http::BURST_CALLS,
            PRINCIPALS.len(),
            http::BURST_CLIENTS / PRINCIPALS.len(),
            b.wall.as_secs_f64() * 1000.0,
            b.latency.len() as f64 / b.wall.as_secs_f64(),
            b.latency.median(),
            b.latency.pct(0.99),
            b.run.median(),
            b.failures.len()
        );
    }
    println!(
        "- session: reusing the DataFrame is {:.1}× faster than one-shot with reload",
        r.odata.median() / r.sdata.median()
    );
    println!(
        "- idle server RSS: {:.1} MiB",
        r.idle_rss_kib as f64 / 1024.0
    );
}
