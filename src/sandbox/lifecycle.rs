//! Container lifecycle: this server instance's identity, the slots that bound how many
//! containers run at once, creation (with a fresh name), removal on every path (a guard for
//! dropped calls, background removal after a run, retries of removals Docker could not do while
//! it was away), the sentinel that tells other servers this one is alive, and the two sweeps:
//! this instance's containers at shutdown, dead instances' leftovers at start.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::engine::{Attached, ContainerEngine, ContainerSpec, Created};
use super::labels::{self, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PURPOSE, SENTINEL};
use super::policy;
use crate::environment::EnvSpec;
use crate::error::SandboxError;
use crate::limits::Images;

/// How long shutdown keeps sweeping for containers still being made or removed.
const SHUTDOWN_SWEEP: Duration = Duration::from_secs(15);

/// Locks a std mutex, recovering from poisoning (the data stays usable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The error for a missing image: which one, and how to build it or point elsewhere.
pub fn image_missing(image: &str, env: &EnvSpec) -> SandboxError {
    SandboxError::ImageMissing {
        image: image.to_string(),
        env: env.env_type.as_str(),
        setting: Images::setting_name(env.env_type),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This server's containers, through one engine. Clones share everything.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    engine: Arc<dyn ContainerEngine>,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    instance: String,
    /// Set on shutdown: no new containers.
    closed: AtomicBool,
    /// One permit per container allowed to run at once; calls beyond wait.
    slots: Semaphore,
    /// Background work under way (removals, the sentinel being made): shutdown waits for it.
    background: AtomicUsize,
    /// Containers whose removal failed (Docker unreachable); retried on the next contact.
    pending_removals: Mutex<Vec<String>>,
    /// The sentinel's attach: held for the server's whole life.
    sentinel: Mutex<Option<Attached>>,
    /// Containers of dead servers this one has taken over (runs it follows to their end): not
    /// leftovers.
    spared: Mutex<HashSet<String>>,
}

/// Removes its container when dropped without [`ContainerGuard::disarm`] (a cancelled call).
pub struct ContainerGuard {
    life: Lifecycle,
    id: Option<String>,
}

impl ContainerGuard {
    pub fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        // A spared container is left to the server that follows (see `spare`).
        if let Some(id) = self.id.take().filter(|id| !self.life.is_spared(id)) {
            self.life.remove_later(id);
        }
    }
}

/// Counts as background work until dropped.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Busy(counter)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Lifecycle {
    /// A new server instance (a fresh random id) with `max_concurrent` slots.
    pub fn new(engine: Arc<dyn ContainerEngine>, max_concurrent: usize) -> Self {
        Lifecycle {
            engine,
            inner: Arc::new(Inner {
                instance: uuid::Uuid::new_v4().simple().to_string(),
                closed: AtomicBool::new(false),
                slots: Semaphore::new(max_concurrent.max(1)),
                background: AtomicUsize::new(0),
                pending_removals: Mutex::new(Vec::new()),
                sentinel: Mutex::new(None),
                spared: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn engine(&self) -> &dyn ContainerEngine {
        self.engine.as_ref()
    }

    /// A shared handle on the engine, for background tasks.
    pub fn engine_handle(&self) -> Arc<dyn ContainerEngine> {
        Arc::clone(&self.engine)
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Refuses new containers from now on.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Waits for a slot; `None` when `cancel` fires first.
    pub async fn slot(
        &self,
        cancel: &CancellationToken,
    ) -> Result<Option<SemaphorePermit<'_>>, SandboxError> {
        tokio::select! {
            permit = self.inner.slots.acquire() => {
                permit.map(Some).map_err(|_| SandboxError::ShuttingDown)
            }
            _ = cancel.cancelled() => Ok(None),
        }
    }

    /// Creates a container named `name` (a fresh random name when `None`), from `spec` as the
    /// engine must be asked for it ([`policy::for_engine`]). After the engine answers again,
    /// removals it could not do earlier are retried.
    pub async fn create(
        &self,
        spec: &ContainerSpec,
        name: Option<&str>,
    ) -> Result<Created, SandboxError> {
        if self.is_closed() {
            return Err(SandboxError::ShuttingDown);
        }
        let name = name.map_or_else(
            || format!("mce-{}", uuid::Uuid::new_v4().simple()),
            str::to_string,
        );
        let kind = self.engine.kind().await?;
        let spec = policy::for_engine(spec, kind);
        let created = self.engine.create(&spec, &name).await?;
        if matches!(created, Created::Id(_)) && !lock(&self.inner.pending_removals).is_empty() {
            self.retry_removals().await;
        }
        Ok(created)
    }

    /// A guard that removes container `id` unless disarmed.
    pub fn guard(&self, id: &str) -> ContainerGuard {
        ContainerGuard {
            life: self.clone(),
            id: Some(id.to_string()),
        }
    }

    /// Removes a container in the background (the caller does not wait for the engine); a
    /// removal that fails is retried on the next contact.
    pub fn remove_later(&self, id: String) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let life = self.clone();
        life.inner.background.fetch_add(1, Ordering::SeqCst);
        handle.spawn(async move {
            if let Err(e) = life.engine.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "could not remove a container; will retry");
                lock(&life.inner.pending_removals).push(id);
            }
            life.inner.background.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Retries removing containers that could not be removed earlier (the engine was away).
    async fn retry_removals(&self) {
        let pending = std::mem::take(&mut *lock(&self.inner.pending_removals));
        for id in pending {
            if let Err(e) = self.engine.remove(&id).await {
                tracing::debug!(container = %id, error = %e, "removal failed again");
                lock(&self.inner.pending_removals).push(id);
            }
        }
    }

    /// Removes every container of this instance but its running sessions (they belong to the
    /// storage folder and outlive the server) and the spared ones (runs left to the next
    /// server) on shutdown, after [`Lifecycle::close`]: sweeps
    /// until nothing is being made (`busy` says whether the pool is still making containers)
    /// and no background work is under way, for at most [`SHUTDOWN_SWEEP`].
    pub async fn remove_own(&self, busy: impl Fn() -> bool) -> Result<usize, SandboxError> {
        let until = Instant::now() + SHUTDOWN_SWEEP;
        let mut removed = 0;
        loop {
            let mut listed = self.engine.list(LABEL_INSTANCE, self.instance()).await?;
            listed.retain(|c| !(c.running && labels::is_session(&c.labels)));
            listed.retain(|c| !self.is_spared(&c.id));
            for c in &listed {
                self.engine.remove(&c.id).await?;
            }
            removed += listed.len();
            let busy = busy() || self.inner.background.load(Ordering::SeqCst) > 0;
            if (!busy && listed.is_empty()) || Instant::now() > until {
                return Ok(removed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes leftovers of servers that are gone: every container of an instance without a
    /// running sentinel, and anything past its deadline. Containers of a live server sharing
    /// the daemon are left alone.
    pub async fn remove_leftovers(&self) -> Result<usize, SandboxError> {
        let now = unix_now();
        let listed = self.engine.list(LABEL_MANAGED, "true").await?;
        let live: HashSet<String> = listed
            .iter()
            .filter(|c| {
                c.running && c.labels.get(LABEL_PURPOSE).map(String::as_str) == Some(SENTINEL)
            })
            .filter_map(|c| c.labels.get(LABEL_INSTANCE).cloned())
            .chain([self.instance().to_string()])
            .collect();
        let spared = lock(&self.inner.spared).clone();
        let mut removed = 0;
        for c in listed {
            let own = c.labels.get(LABEL_INSTANCE).map(String::as_str) == Some(self.instance());
            if own || spared.contains(&c.id) {
                continue;
            }
            if labels::is_leftover(&c.labels, c.created, c.running, &live, now) {
                self.engine.remove(&c.id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Spares container `id` from this server's removals until [`Lifecycle::release`]: a
    /// dead server's container whose run this one follows (the leftover sweeps leave it
    /// alone), or one of this server's own whose run it leaves to the next server at shutdown
    /// (the shutdown sweep and the guards leave it alone).
    pub fn spare(&self, id: &str) {
        lock(&self.inner.spared).insert(id.to_string());
    }

    pub fn is_spared(&self, id: &str) -> bool {
        lock(&self.inner.spared).contains(id)
    }

    /// Removes a container taken over with [`Lifecycle::spare`] (in the background).
    pub fn release(&self, id: &str) {
        self.remove_later(id.to_string());
        lock(&self.inner.spared).remove(id);
    }

    /// Whether the server `instance` is alive: this one, or one whose sentinel runs.
    pub async fn instance_alive(&self, instance: &str) -> Result<bool, SandboxError> {
        if instance == self.instance() {
            return Ok(true);
        }
        let listed = self.engine.list(LABEL_INSTANCE, instance).await?;
        Ok(listed.iter().any(|c| {
            c.running && c.labels.get(LABEL_PURPOSE).map(String::as_str) == Some(SENTINEL)
        }))
    }

    /// Creates, attaches and starts this instance's sentinel from `spec`, and holds its stdin
    /// for the server's whole life. `Ok(false)` when the image is missing.
    pub async fn start_sentinel(&self, spec: &ContainerSpec) -> Result<bool, SandboxError> {
        // Shutdown's sweep waits for this, so a sentinel made meanwhile is removed too.
        let _busy = Busy::new(&self.inner.background);
        if self.is_closed() {
            return Ok(true);
        }
        let kind = self.engine.kind().await?;
        let spec = policy::for_engine(spec, kind);
        let id = match self
            .engine
            .create(&spec, &labels::sentinel_name(self.instance()))
            .await?
        {
            Created::Id(id) => id,
            Created::ImageMissing => return Ok(false),
            Created::NameTaken => return Ok(true),
        };
        let attached = self.engine.attach(&id).await?;
        self.engine.start(&id).await?;
        *lock(&self.inner.sentinel) = Some(attached);
        Ok(true)
    }
}
