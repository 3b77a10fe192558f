//! Long runs: every run (`execute_code`, `execute_code_file`, `install_dependencies`) is a task
//! of its own with a `run_id`, owned by its world's [`Runs`], not by the call that started it.
//! The call waits up to `RESULT_WAIT`; a run still going then answers `running` and goes on to
//! its own deadline, and `get_run` waits for it again. Each run has a record in
//! `<storage>/.mce-runs/<run_id>.json` (written when it starts and when it ends, atomically),
//! so finished results outlive the server for `RUN_RETENTION`. A run that went to the
//! background also gets `<run_id>.follow.json` ([`Resumable`]: its container, its runner's end
//! marker, what its answer is built from) for as long as it runs: a record still saying
//! `running` when a new server opens the world belonged to a server that stopped before the
//! run ended, and the new server adopts the run from that file ([`Runs::adopt`], see
//! `adopt.rs`) or, where it cannot, records it `lost` with the reason. The files themselves are
//! `records.rs`'s. (Somewhat over 400 lines: one registry whose every method works on the same
//! table — start, adopt, find, list, sweep, stop at shutdown.)

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use rmcp::model::CallToolResult;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::contract::RunState;
pub use super::records::{Plan, Record, Resumable};
use super::records::{
    is_run_id, read_record, read_records, record_path, resumable_path, write_json, write_record,
};
use crate::config::RunSettings;
use crate::error::RunsError;
use crate::limits::Limits;
use crate::sandbox::lifecycle::unix_now;
use crate::sandbox::output::Live;

/// A run this server started.
#[derive(Debug)]
pub struct RunHandle {
    pub id: String,
    pub tool: String,
    pub file_path: Option<String>,
    pub started_unix: u64,
    started: Instant,
    /// Stops the run (cancel_run, the client of the first call, shutdown).
    pub cancel: CancellationToken,
    /// What the run prints, as it prints it.
    pub live: Arc<Live>,
    /// Whether a call already answered `running` for it (it counts as in the background).
    backgrounded: std::sync::atomic::AtomicBool,
    /// What its answer is built from (runs that can be adopted).
    plan: Arc<OnceLock<Plan>>,
    /// Whether its [`Resumable`] is on disk.
    kept: std::sync::atomic::AtomicBool,
    done: watch::Receiver<Option<Arc<Record>>>,
}

impl RunHandle {
    pub fn elapsed_secs(&self) -> f64 {
        (self.started.elapsed().as_millis() as f64 / 1000.0 * 10.0).round() / 10.0
    }

    /// The final record, once the run has ended.
    pub fn finished(&self) -> Option<Arc<Record>> {
        self.done.borrow().clone()
    }

    fn is_backgrounded(&self) -> bool {
        self.backgrounded.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Notes that a call answered `running` for this run.
    pub fn mark_backgrounded(&self) {
        self.backgrounded
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// What another server needs to follow it, once it is known.
    fn resumable(&self) -> Option<Resumable> {
        let plan = self.plan.get()?.clone();
        let (container, marker) = self.live.container()?;
        Some(Resumable {
            container,
            marker,
            plan,
        })
    }

    /// Waits up to `wait` for the end; `None` when it is still running then or `stop` fires.
    pub async fn wait(&self, wait: Duration, stop: &CancellationToken) -> Option<Arc<Record>> {
        let mut done = self.done.clone();
        let ended = async { done.wait_for(Option::is_some).await.ok()?.clone() };
        tokio::select! {
            record = ended => record,
            _ = tokio::time::sleep(wait) => None,
            _ = stop.cancelled() => None,
        }
    }
}

/// What a run's work is given.
pub struct RunContext {
    pub id: String,
    pub live: Arc<Live>,
    pub cancel: CancellationToken,
    /// Where a run that another server could follow puts its [`Plan`].
    pub plan: Arc<OnceLock<Plan>>,
}

/// The runs of one world.
#[derive(Debug)]
pub struct Runs {
    settings: RunSettings,
    table: Mutex<HashMap<String, Arc<RunHandle>>>,
    /// This server's instance id (in each record).
    instance: String,
}

impl Runs {
    /// The runs of a world whose records live in `settings.state_dir`, started by server
    /// `instance`.
    pub fn open(settings: RunSettings, instance: &str) -> Self {
        Runs {
            settings,
            table: Mutex::new(HashMap::new()),
            instance: instance.to_string(),
        }
    }

    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunHandle>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `work` as a run of `tool` (on `file_path`), unless MAX_BACKGROUND_RUNS runs still
    /// go (in the background or waiting to answer).
    pub fn start<F, Fut>(
        &self,
        tool: &'static str,
        file_path: Option<String>,
        work: F,
    ) -> Result<Arc<RunHandle>, RunsError>
    where
        F: FnOnce(RunContext) -> Fut,
        Fut: Future<Output = CallToolResult> + Send + 'static,
    {
        let mut table = self.table();
        admit(&table, self.settings.max_background)?;
        let id = format!("run-{}", uuid::Uuid::new_v4().simple());
        let handle = self.launch(id, tool.to_string(), file_path, unix_now(), false, work);
        table.insert(handle.id.clone(), Arc::clone(&handle));
        Ok(handle)
    }

    /// Takes over the run of `record`, which a server that is gone started: `work` follows it
    /// to its end, and this server answers for it from now on. It is in the background at once
    /// and counts against MAX_BACKGROUND_RUNS like the others, but is never refused (it runs
    /// already). A run already taken over is answered as it is.
    pub fn adopt<F, Fut>(&self, record: Record, work: F) -> Arc<RunHandle>
    where
        F: FnOnce(RunContext) -> Fut,
        Fut: Future<Output = CallToolResult> + Send + 'static,
    {
        let mut table = self.table();
        if let Some(h) = table.get(&record.run_id) {
            return Arc::clone(h);
        }
        let (id, tool, path) = (record.run_id, record.tool, record.file_path);
        let handle = self.launch(id, tool, path, record.started_unix, true, work);
        table.insert(handle.id.clone(), Arc::clone(&handle));
        handle
    }

    /// Records a run as running and spawns `work`, which records its result when it ends.
    fn launch<F, Fut>(
        &self,
        id: String,
        tool: String,
        file_path: Option<String>,
        started_unix: u64,
        backgrounded: bool,
        work: F,
    ) -> Arc<RunHandle>
    where
        F: FnOnce(RunContext) -> Fut,
        Fut: Future<Output = CallToolResult> + Send + 'static,
    {
        let (tx, rx) = watch::channel(None);
        let age = Duration::from_secs(unix_now().saturating_sub(started_unix));
        let now = Instant::now();
        let handle = Arc::new(RunHandle {
            id: id.clone(),
            tool,
            file_path,
            started_unix,
            started: now.checked_sub(age).unwrap_or(now),
            cancel: CancellationToken::new(),
            live: Arc::default(),
            backgrounded: backgrounded.into(),
            plan: Arc::default(),
            kept: (backgrounded).into(),
            done: rx,
        });
        let running = record_of(&self.instance, &handle, RunState::Running, None);
        write_record(&self.settings.state_dir, &running);
        let fut = work(RunContext {
            id,
            live: Arc::clone(&handle.live),
            cancel: handle.cancel.clone(),
            plan: Arc::clone(&handle.plan),
        });
        let (dir, h) = (self.settings.state_dir.clone(), Arc::clone(&handle));
        let instance = self.instance.clone();
        tokio::spawn(async move {
            let result = fut.await;
            let state = state_of(&result);
            let record = record_of(&instance, &h, state, Some(result));
            write_record(&dir, &record);
            let _ = std::fs::remove_file(resumable_path(&dir, &h.id));
            let _ = tx.send(Some(Arc::new(record)));
        });
        handle
    }

    /// Keeps what another server needs to adopt `h` next to its record (once; a run that
    /// cannot be adopted, or has ended, has nothing to keep).
    pub fn keep_resumable(&self, h: &RunHandle) {
        use std::sync::atomic::Ordering::SeqCst;
        if h.kept.load(SeqCst) || h.finished().is_some() {
            return;
        }
        if let Some(r) = h.resumable() {
            let path = resumable_path(&self.settings.state_dir, &h.id);
            if let Err(e) = write_json(&path, &r) {
                tracing::warn!(run = %h.id, "cannot keep what adopting the run needs: {e}");
            }
            h.kept.store(true, SeqCst);
        }
    }

    /// What a server that is gone kept for adopting run `id`, if anything.
    pub fn resumable(&self, id: &str) -> Option<Resumable> {
        let path = resumable_path(&self.settings.state_dir, id);
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether a run may start now (fewer than MAX_BACKGROUND_RUNS still going): checked before
    /// a call stores anything, and again when the run starts.
    pub fn admit(&self) -> Result<(), RunsError> {
        admit(&self.table(), self.settings.max_background)
    }

    /// The run `id`: this server's, or a record left on disk.
    pub fn find(&self, id: &str) -> Result<Found, RunsError> {
        if !is_run_id(id) {
            return Err(RunsError::BadId(id.chars().take(80).collect()));
        }
        if let Some(h) = self.here(id) {
            return Ok(Found::Here(h));
        }
        read_record(&self.settings.state_dir, id)
            .filter(|r| !self.expired(r))
            .map(|r| Found::Stored(Box::new(r)))
            .ok_or_else(|| RunsError::Unknown(id.to_string()))
    }

    /// The run `id` if this server has it (started or adopted); no disk read.
    pub fn here(&self, id: &str) -> Option<Arc<RunHandle>> {
        self.table().get(id).cloned()
    }

    /// Every run kept, newest first.
    pub fn list(&self) -> Vec<Record> {
        let mut all: HashMap<String, Record> = read_records(&self.settings.state_dir)
            .into_iter()
            .filter(|r| !self.expired(r))
            .map(|mut r| {
                // Still going on another server: its elapsed time is now's, not the record's.
                if r.state == RunState::Running {
                    r.elapsed_secs = Some(unix_now().saturating_sub(r.started_unix) as f64);
                }
                (r.run_id.clone(), r)
            })
            .collect();
        for h in self.table().values() {
            let record = match h.finished() {
                Some(r) => (*r).clone(),
                None => record_of(&self.instance, h, RunState::Running, None),
            };
            all.insert(h.id.clone(), record);
        }
        let mut all: Vec<Record> = all.into_values().collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.started_unix));
        all
    }

    /// Forgets runs whose results are past RUN_RETENTION (memory and disk), and returns the
    /// records of runs another server started that still say `running` (see
    /// [`Runs::mark_lost`] for those whose server is gone) — one read of the records folder.
    pub fn sweep(&self) -> Vec<Record> {
        self.table()
            .retain(|_, h| h.finished().is_none_or(|r| !self.expired(&r)));
        let background = self.running().into_iter().filter(|h| h.is_backgrounded());
        for h in background {
            self.keep_resumable(&h);
        }
        let mut others_running = Vec::new();
        for r in read_records(&self.settings.state_dir) {
            if self.expired(&r) {
                let _ = std::fs::remove_file(record_path(&self.settings.state_dir, &r.run_id));
                let _ = std::fs::remove_file(resumable_path(&self.settings.state_dir, &r.run_id));
            } else if r.state == RunState::Running && r.instance != self.instance {
                others_running.push(r);
            }
        }
        others_running
    }

    /// On shutdown: stops the runs still going that the next server could not take over, and
    /// leaves the others going (their containers are returned: they must not be removed). The
    /// stopped runs are returned too, to wait for their results.
    pub fn stop_or_leave(&self) -> (Vec<Arc<RunHandle>>, Vec<String>) {
        let (mut stopped, mut left) = (Vec::new(), Vec::new());
        for h in self.running() {
            let kept = h.kept.load(std::sync::atomic::Ordering::SeqCst);
            match h.live.container().filter(|_| kept) {
                Some((container, _)) => left.push(container),
                None => {
                    h.cancel.cancel();
                    stopped.push(h);
                }
            }
        }
        (stopped, left)
    }

    /// Runs still going.
    pub fn running(&self) -> Vec<Arc<RunHandle>> {
        let table = self.table();
        table
            .values()
            .filter(|h| h.finished().is_none())
            .cloned()
            .collect()
    }

    fn expired(&self, r: &Record) -> bool {
        r.finished_unix
            .is_some_and(|t| unix_now() > t + self.settings.retention_secs)
    }

    /// A record left `running` by a server that is gone, whose run cannot be adopted: the run
    /// is `lost` (recorded so, with `reason`).
    pub fn mark_lost(&self, mut r: Record, reason: String) -> Record {
        r.state = RunState::Lost;
        r.finished_unix = Some(unix_now());
        r.elapsed_secs = Some(unix_now().saturating_sub(r.started_unix) as f64);
        r.lost_reason = Some(reason);
        write_record(&self.settings.state_dir, &r);
        let _ = std::fs::remove_file(resumable_path(&self.settings.state_dir, &r.run_id));
        r
    }
}

/// Refuses a run when `max` runs of `table` still go: those in the background and those whose
/// call still waits, since each of them may go to the background when RESULT_WAIT passes (so
/// the background never holds more than `max`, however many calls arrive at once).
fn admit(table: &HashMap<String, Arc<RunHandle>>, max: usize) -> Result<(), RunsError> {
    let going = table.values().filter(|h| h.finished().is_none()).count();
    if going >= max {
        Err(RunsError::TooMany(going))
    } else {
        Ok(())
    }
}

/// A run found by id.
#[derive(Debug)]
pub enum Found {
    /// Started by this server (running or finished).
    Here(Arc<RunHandle>),
    /// Only its record: finished, or lost.
    Stored(Box<Record>),
}

/// How a run ended, read off its result.
fn state_of(result: &CallToolResult) -> RunState {
    let flag = |name: &str| {
        result
            .structured_content
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    };
    if flag("cancelled") {
        RunState::Cancelled
    } else if flag("timed_out") {
        RunState::TimedOut
    } else {
        RunState::Finished
    }
}

fn record_of(
    instance: &str,
    h: &RunHandle,
    state: RunState,
    result: Option<CallToolResult>,
) -> Record {
    let ended = state != RunState::Running;
    Record {
        run_id: h.id.clone(),
        tool: h.tool.to_string(),
        file_path: h.file_path.clone(),
        started_unix: h.started_unix,
        instance: instance.to_string(),
        state,
        finished_unix: ended.then(unix_now),
        elapsed_secs: Some(h.elapsed_secs()),
        lost_reason: None,
        result,
    }
}

/// The limits of a call that asked for `asked` seconds: 1 to `max` (MAX_TIMEOUT); without a
/// timeout, `default`'s.
pub fn call_limits(default: &Limits, asked: Option<u64>, max: u64) -> Result<Limits, RunsError> {
    match asked {
        None => Ok(default.clone()),
        Some(secs) if (1..=max).contains(&secs) => Ok(Limits {
            timeout_secs: secs,
            ..default.clone()
        }),
        Some(secs) => Err(RunsError::BadTimeout { secs, max }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn settings(dir: &Path, max_background: usize, retention_secs: u64) -> RunSettings {
        RunSettings {
            max_timeout_secs: 60,
            result_wait_secs: 1,
            retention_secs,
            max_background,
            state_dir: dir.join(".mce-runs"),
        }
    }

    fn result(flags: serde_json::Value) -> CallToolResult {
        CallToolResult::structured(flags)
    }

    #[tokio::test]
    async fn a_run_is_recorded_when_it_starts_and_when_it_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = Runs::open(settings(tmp.path(), 8, 60), "inst");
        let gate = Arc::new(tokio::sync::Notify::new());
        let wait = Arc::clone(&gate);
        let h = runs
            .start(
                "execute_code",
                Some("/s/a.py".into()),
                move |rc| async move {
                    wait.notified().await;
                    result(json!({ "status": "success", "run_id": rc.id }))
                },
            )
            .unwrap();
        assert!(is_run_id(&h.id), "{}", h.id);
        let on_disk = read_record(&runs.settings.state_dir, &h.id).unwrap();
        assert_eq!(on_disk.state, RunState::Running);
        let never = CancellationToken::new();
        assert!(h.wait(Duration::from_millis(50), &never).await.is_none());
        gate.notify_one();
        let done = h.wait(Duration::from_secs(5), &never).await.unwrap();
        assert_eq!(done.state, RunState::Finished);
        let on_disk = read_record(&runs.settings.state_dir, &h.id).unwrap();
        assert_eq!(on_disk.state, RunState::Finished);
        assert!(on_disk.result.is_some());
        assert_eq!(runs.list().len(), 1);
    }

    #[tokio::test]
    async fn a_new_server_finds_finished_results_and_can_call_unfinished_runs_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Runs::open(settings(tmp.path(), 8, 60), "inst");
        let done = first
            .start("execute_code", None, |_| async {
                result(json!({ "timed_out": true }))
            })
            .unwrap();
        let never = CancellationToken::new();
        done.wait(Duration::from_secs(5), &never).await.unwrap();
        let hung = first
            .start("execute_code", None, |_| std::future::pending())
            .unwrap();
        let second = Runs::open(settings(tmp.path(), 8, 60), "new");
        match second.find(&done.id).unwrap() {
            Found::Stored(r) => assert_eq!(r.state, RunState::TimedOut),
            other => panic!("{other:?}"),
        }
        let Found::Stored(r) = second.find(&hung.id).unwrap() else {
            panic!("not stored");
        };
        assert_eq!((r.state, r.instance.as_str()), (RunState::Running, "inst"));
        let lost = second.mark_lost(*r, "its server stopped".into());
        assert_eq!(lost.lost_reason.as_deref(), Some("its server stopped"));
        let Found::Stored(r) = second.find(&hung.id).unwrap() else {
            panic!("not stored");
        };
        assert_eq!(r.state, RunState::Lost, "recorded");
    }

    fn plan() -> Plan {
        Plan {
            name: "a.py".into(),
            path: "/s/a.py".into(),
            environment: "venv:default".into(),
            limits: limits(),
            before: HashMap::new(),
        }
    }

    #[tokio::test]
    async fn a_run_in_the_background_keeps_what_adopting_it_needs_until_it_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = Runs::open(settings(tmp.path(), 8, 60), "inst");
        let gate = Arc::new(tokio::sync::Notify::new());
        let wait = Arc::clone(&gate);
        let h = runs
            .start("execute_code", None, move |rc| async move {
                let _ = rc.plan.set(plan());
                rc.live.set_container("c0ffee", "mce-exit-1");
                wait.notified().await;
                result(json!({}))
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        runs.sweep();
        assert!(runs.resumable(&h.id).is_none(), "not in the background yet");
        h.mark_backgrounded();
        runs.sweep();
        let kept = runs.resumable(&h.id).expect("kept once in the background");
        assert_eq!(
            (kept.container.as_str(), kept.marker.as_str()),
            ("c0ffee", "mce-exit-1")
        );
        assert_eq!(kept.plan.path, "/s/a.py");
        assert_eq!(runs.list().len(), 1, "the kept file is no record");
        gate.notify_one();
        h.wait(Duration::from_secs(5), &CancellationToken::new())
            .await
            .unwrap();
        assert!(runs.resumable(&h.id).is_none(), "removed when the run ends");
    }

    #[tokio::test]
    async fn at_shutdown_runs_the_next_server_can_take_over_go_on_and_the_others_stop() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = Runs::open(settings(tmp.path(), 8, 60), "inst");
        let kept = runs
            .start("execute_code", None, |rc| async move {
                let _ = rc.plan.set(plan());
                rc.live.set_container("c0ffee", "mce-exit-1");
                std::future::pending().await
            })
            .unwrap();
        let waiting = runs
            .start("execute_code", None, |rc| async move {
                rc.live.set_container("decaf", "mce-exit-2");
                rc.cancel.cancelled().await;
                result(json!({ "cancelled": true }))
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        kept.mark_backgrounded();
        runs.sweep();
        let (stopped, left) = runs.stop_or_leave();
        assert_eq!(left, vec!["c0ffee".to_string()]);
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].id, waiting.id);
        assert!(!kept.cancel.is_cancelled());
        let never = CancellationToken::new();
        let done = waiting.wait(Duration::from_secs(5), &never).await.unwrap();
        assert_eq!(done.state, RunState::Cancelled);
    }

    #[tokio::test]
    async fn an_adopted_run_keeps_its_id_and_start_and_is_answered_here() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Runs::open(settings(tmp.path(), 8, 60), "old");
        let hung = first
            .start("execute_code", Some("/s/a.py".into()), |_| {
                std::future::pending()
            })
            .unwrap();
        let second = Runs::open(settings(tmp.path(), 1, 60), "new");
        let left = second.sweep();
        assert_eq!(left.len(), 1);
        let record = left.into_iter().next().unwrap();
        let gate = Arc::new(tokio::sync::Notify::new());
        let wait = Arc::clone(&gate);
        let h = second.adopt(record.clone(), move |rc| async move {
            wait.notified().await;
            result(json!({ "run_id": rc.id }))
        });
        assert_eq!(
            (h.id.as_str(), h.started_unix),
            (hung.id.as_str(), hung.started_unix)
        );
        let again = second.adopt(record, |_| async { result(json!({ "twice": true })) });
        assert!(Arc::ptr_eq(&h, &again), "taken over once");
        assert!(matches!(second.find(&h.id), Ok(Found::Here(_))));
        let on_disk = read_record(&second.settings.state_dir, &h.id).unwrap();
        assert_eq!(on_disk.instance, "new", "this server answers for it now");
        assert!(
            matches!(second.admit(), Err(RunsError::TooMany(1))),
            "an adopted run is in the background"
        );
        gate.notify_one();
        let never = CancellationToken::new();
        let done = h.wait(Duration::from_secs(5), &never).await.unwrap();
        let run_id = done
            .result
            .as_ref()
            .unwrap()
            .structured_content
            .as_ref()
            .unwrap();
        assert_eq!(run_id["run_id"], json!(h.id));
    }

    #[tokio::test]
    async fn ids_are_checked_before_any_file_is_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = Runs::open(settings(tmp.path(), 8, 60), "inst");
        for bad in [
            "../etc/passwd",
            "run-",
            "run-../../x",
            "RUN-0123456789abcdef0123456789abcdef",
        ] {
            assert!(matches!(runs.find(bad), Err(RunsError::BadId(_))), "{bad}");
        }
        let unknown = "run-0123456789abcdef0123456789abcdef";
        assert!(matches!(runs.find(unknown), Err(RunsError::Unknown(_))));
    }

    #[tokio::test]
    async fn runs_still_waited_for_count_against_the_limit_and_finished_ones_do_not() {
        // Two calls at once with MAX_BACKGROUND_RUNS=1: both could go to the background after
        // RESULT_WAIT, so the second is refused before anything starts.
        let tmp = tempfile::tempdir().unwrap();
        let runs = Runs::open(settings(tmp.path(), 1, 60), "inst");
        let gate = Arc::new(tokio::sync::Notify::new());
        let opened = Arc::clone(&gate);
        let a = runs
            .start("execute_code", None, move |_| async move {
                opened.notified().await;
                result(json!({}))
            })
            .unwrap();
        assert!(matches!(runs.admit(), Err(RunsError::TooMany(1))));
        let refused = runs.start("execute_code", None, |_| std::future::pending());
        assert!(refused.is_err());
        assert_eq!(runs.running().len(), 1, "nothing else started");
        gate.notify_one();
        a.wait(Duration::from_secs(5), &CancellationToken::new())
            .await
            .unwrap();
        assert!(runs.admit().is_ok(), "a finished run no longer counts");
    }

    #[tokio::test]
    async fn results_expire_after_the_retention() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = Runs::open(settings(tmp.path(), 8, 0), "inst");
        let h = runs
            .start("execute_code", None, |_| async { result(json!({})) })
            .unwrap();
        h.wait(Duration::from_secs(5), &CancellationToken::new())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        runs.sweep();
        assert!(matches!(runs.find(&h.id), Err(RunsError::Unknown(_))));
        assert!(runs.list().is_empty());
        assert!(read_records(&runs.settings.state_dir).is_empty());
    }

    fn limits() -> Limits {
        Limits {
            timeout_secs: 30,
            memory_bytes: 1 << 29,
            cpus: 1.0,
            pids: 128,
            output_bytes: 1 << 20,
            tmpfs_bytes: 1 << 26,
            max_code_bytes: 1 << 20,
            max_file_bytes: 1 << 28,
        }
    }

    #[test]
    fn a_call_may_ask_for_one_second_up_to_max_timeout() {
        let base = limits();
        assert_eq!(call_limits(&base, None, 60).unwrap().timeout_secs, 30);
        assert_eq!(call_limits(&base, Some(60), 60).unwrap().timeout_secs, 60);
        assert_eq!(call_limits(&base, Some(1), 60).unwrap().timeout_secs, 1);
        for bad in [0, 61] {
            let err = call_limits(&base, Some(bad), 60).unwrap_err().to_string();
            assert!(err.contains("MAX_TIMEOUT"), "{err}");
        }
    }
}
