//! Taking over the runs of a server that is gone (killed, or restarted before its runs
//! ended). Such a run's container goes on by itself; what following it needs was kept next to
//! its record when it went to the background ([`Resumable`]). This server claims the container
//! (the leftover sweeps spare it), reads its whole output back from the engine and follows it
//! to its end, deadline and all, and answers for it as the first server would have. A run that
//! cannot be taken over is recorded `lost`, with the reason.

use std::sync::Arc;
use std::time::Duration;

use super::State;
use super::background::{Record, Resumable, RunHandle};
use super::run;
use crate::sandbox::lifecycle::unix_now;

/// How taking over a run went.
pub enum Adoption {
    /// This server follows it now.
    Adopted(Arc<RunHandle>),
    /// It cannot be followed: its record, now `lost` with the reason.
    Lost(Box<Record>),
    /// The engine cannot be reached now: its record stays as it was (try again later).
    Later,
}

/// Takes over the run of `record`, which says `running` for a server that is gone.
pub async fn adopt(state: &Arc<State>, record: Record) -> Adoption {
    if let Some(h) = state.runs.here(&record.run_id) {
        return Adoption::Adopted(h);
    }
    let Some(resumable) = state.runs.resumable(&record.run_id) else {
        let reason = not_resumable(&record);
        return Adoption::Lost(Box::new(state.runs.mark_lost(record, reason)));
    };
    match state.sandbox.claim(&resumable.container).await {
        Ok(()) => {}
        Err(e) if e.is_unavailable() => return Adoption::Later,
        Err(e) => {
            let reason = container_gone(&resumable.container, &e.to_string());
            return Adoption::Lost(Box::new(state.runs.mark_lost(record, reason)));
        }
    }
    let elapsed = Duration::from_secs(unix_now().saturating_sub(record.started_unix));
    let world = Arc::clone(state);
    let handle = state.runs.adopt(record, move |rc| async move {
        let Resumable {
            container,
            marker,
            plan,
        } = resumable;
        // Kept for the server after this one, should this one stop before the run ends.
        rc.live.set_container(&container, &marker);
        let sandbox = &world.sandbox;
        let limits = &plan.limits;
        let outcome =
            (sandbox.follow(&container, &marker, limits, elapsed, &rc.live, &rc.cancel)).await;
        run::adopted_answer(&world, rc.id, plan, outcome)
    });
    tracing::info!(run = %handle.id, "took over a run of a server that is gone");
    Adoption::Adopted(handle)
}

/// Takes over, or records lost, every run of `world` whose server is gone (at start and in
/// every sweep).
pub async fn take_over_runs(world: &Arc<State>) {
    for record in world.runs.sweep() {
        if let Ok(false) = world.sandbox.instance_alive(&record.instance).await {
            match adopt(world, record).await {
                Adoption::Lost(r) => {
                    tracing::info!(run = %r.run_id, "a run of a server that is gone is lost");
                }
                Adoption::Adopted(_) | Adoption::Later => {}
            }
        }
    }
}

/// Why a run without a [`Resumable`] is lost.
fn not_resumable(record: &Record) -> String {
    let what = if record.tool == "install_dependencies" {
        "an install is not taken over by another server"
    } else {
        "it had not gone to the background yet, or it ran in a session (a session call is not \
         taken over by another server)"
    };
    format!(
        "the server that ran it stopped (it was restarted or killed) before the run finished, \
         and the run could not be taken over: {what}; its container was removed with that \
         server's others, so no result can be had: start the run again"
    )
}

/// Why a run whose container is gone is lost.
fn container_gone(container: &str, error: &str) -> String {
    let short: String = container.chars().take(12).collect();
    format!(
        "the server that ran it stopped before the run finished, and its container {short} is \
         gone (removed by hand or by another server sharing the Docker daemon: {error}); no \
         result can be had: start the run again"
    )
}
