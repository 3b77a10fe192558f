//! Metrics: what the server records and `GET /metrics` shows in Prometheus text format (through
//! `metrics-exporter-prometheus`, never hand-formatted). Runs by outcome and their duration,
//! requests the HTTP layer refused and why, and gauges read from a snapshot at scrape time.
//! Recording is a cheap no-op until [`install`] is called (stdio never calls it). No metric
//! carries a principal label: one principal cannot learn of another through them.

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::HttpError;

pub const RUNS_TOTAL: &str = "mce_runs_total";
pub const RUN_DURATION: &str = "mce_run_duration_seconds";
pub const REJECTED_TOTAL: &str = "mce_rejected_requests_total";
pub const LIVE_CONTAINERS: &str = "mce_live_containers";
pub const POOL_READY: &str = "mce_pool_ready";
pub const SESSIONS: &str = "mce_sessions";
pub const HTTP_CLIENTS: &str = "mce_http_clients";

/// Bucket bounds of [`RUN_DURATION`], in seconds: from a warm run to a long one.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// The gauges read at scrape time (besides [`HTTP_CLIENTS`], which the HTTP layer knows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Containers of this server that exist now (runs, pool, sessions, sentinel).
    pub live_containers: u64,
    /// Pre-started containers ready for a run.
    pub pool_ready: u64,
    /// Live sessions (create_session), of every principal.
    pub sessions: u64,
}

/// Reads the [`Gauges`] (injected by the application; the HTTP layer calls it per scrape).
pub type GaugeSource = Arc<dyn Fn() -> BoxFuture<'static, Gauges> + Send + Sync>;

/// A run finished with `outcome` (success, error, timeout, oom, cancelled, ...) after `secs`.
pub fn run_finished(outcome: &str, secs: f64) {
    metrics::counter!(RUNS_TOTAL, "outcome" => outcome.to_string()).increment(1);
    metrics::histogram!(RUN_DURATION).record(secs);
}

/// The HTTP layer refused a request: unauthorized, forbidden_origin, too_large or
/// too_many_clients.
pub fn request_rejected(reason: &'static str) {
    metrics::counter!(REJECTED_TOTAL, "reason" => reason).increment(1);
}

/// Sets the gauges from a snapshot taken at scrape time.
pub fn set_gauges(g: Gauges, http_clients: usize) {
    metrics::gauge!(LIVE_CONTAINERS).set(g.live_containers as f64);
    metrics::gauge!(POOL_READY).set(g.pool_ready as f64);
    metrics::gauge!(SESSIONS).set(g.sessions as f64);
    metrics::gauge!(HTTP_CLIENTS).set(http_clients as f64);
}

/// Renders what was recorded, in Prometheus text format.
#[derive(Clone)]
pub struct Exporter(PrometheusHandle);

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

impl Exporter {
    pub fn render(&self) -> String {
        self.0.run_upkeep();
        self.0.render()
    }
}

/// Installs the Prometheus recorder for this process (once; later calls share it).
pub fn install() -> Result<Exporter, HttpError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    let installed = HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(RUN_DURATION.to_string()), &DURATION_BUCKETS)
            .map_err(|e| e.to_string())?
            .install_recorder()
            .map_err(|e| e.to_string())
    });
    match installed {
        Ok(handle) => Ok(Exporter(handle.clone())),
        Err(e) => Err(HttpError::Metrics(e.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_rendered_without_principals() {
        let exporter = install().unwrap();
        run_finished("success", 0.2);
        run_finished("timeout", 31.0);
        request_rejected("unauthorized");
        set_gauges(
            Gauges {
                live_containers: 3,
                pool_ready: 2,
                sessions: 1,
            },
            5,
        );
        let text = exporter.render();
        for expected in [
            "mce_runs_total{outcome=\"success\"}",
            "mce_runs_total{outcome=\"timeout\"}",
            "mce_run_duration_seconds_bucket{le=\"0.25\"}",
            "mce_rejected_requests_total{reason=\"unauthorized\"}",
            "mce_live_containers 3",
            "mce_pool_ready 2",
            "mce_sessions 1",
            "mce_http_clients 5",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(!text.contains("principal"), "{text}");
        // A second install shares the recorder.
        assert!(install().unwrap().render().contains("mce_runs_total"));
    }
}
