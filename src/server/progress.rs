//! Progress notifications for long tool calls: when the request carries a progress token, a
//! ticker sends `notifications/progress` about once a second (elapsed seconds, what is
//! happening, the last line the installer printed). `stop` waits for the ticker, so nothing is
//! sent after the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sandbox::output::Live;

const FIRST_AFTER: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_secs(1);

/// A running ticker (or none, when the client asked for no progress).
pub struct Progress {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(ctx: &RequestContext<RoleServer>, what: String, total: Option<f64>) -> Self {
        Self::follow(ctx, what, total, Arc::default())
    }

    /// A ticker that reports the last line of `live` (a job that may outlive this call).
    pub fn follow(
        ctx: &RequestContext<RoleServer>,
        what: String,
        total: Option<f64>,
        live: Arc<Live>,
    ) -> Self {
        let stop = CancellationToken::new();
        let task = ctx.meta.get_progress_token().map(|token| {
            let peer = ctx.peer.clone();
            let last = Arc::clone(&live);
            let stop = stop.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut next = tokio::time::Instant::now() + FIRST_AFTER;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep_until(next) => {}
                    }
                    let elapsed = started.elapsed().as_secs_f64();
                    let line = last.last_line();
                    let message = if line.is_empty() {
                        format!("{what}: {elapsed:.0} s")
                    } else {
                        format!("{what}: {elapsed:.0} s: {line}")
                    };
                    let mut param = ProgressNotificationParam::new(token.clone(), elapsed);
                    param.total = total;
                    param.message = Some(message);
                    if stop.is_cancelled() || peer.notify_progress(param).await.is_err() {
                        return;
                    }
                    next += EVERY;
                }
            })
        });
        Progress { stop, task }
    }

    /// Stops the ticker and waits for it: no progress after this returns.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}
