//! Sessions: one live interpreter per session, in its own hardened container (the isolation of
//! a run), keeping one namespace across calls. A session belongs to the storage folder, not to
//! the server: its container carries labels (id, name, environment, storage folder, creation)
//! and its counters live in `<storage>/.mce-sessions/<id>.json`, so a restarted server finds it,
//! attaches again and goes on. Calls to one session are serialised, within a server by a mutex
//! and across servers by a lock file. The conversation itself is in [`super::session_call`].
//! One room at ~480 lines: the session registry and every step of a session's life (create,
//! adopt, look up, list, close, reap, run) share its locks; the call and the records are apart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::Sandbox;
use super::engine::{Attached, Created, ListedContainer};
use super::labels::{self, LABEL_CREATED, LABEL_SESSION, LABEL_SESSION_NAME, LABEL_STORAGE};
use super::lifecycle::{image_missing, lock, unix_now};
use super::policy::{self, Purpose, RunPolicy};
use super::runner::{self, Job, RunOutcome};
use super::session_call::{self, CallEnd};
use super::session_sync::{self, Synced};
use crate::environment::{EnvSpec, EnvType};
use crate::error::SandboxError;

/// Session limits and where session records live.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub max_sessions: usize,
    pub idle_timeout_secs: u64,
    pub max_lifetime_secs: u64,
    /// `<storage>/.mce-sessions`: counters and lock files, as the server sees it.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Alive,
    Ended,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Alive => "alive",
            SessionState::Ended => "ended",
        }
    }
}

/// A session as listed.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub name: Option<String>,
    pub environment: String,
    pub created: u64,
    pub last_used: u64,
    pub runs: u64,
    pub state: SessionState,
}

/// What one call in a session did, and whether the session lives on.
#[derive(Debug, Clone)]
pub struct SessionRun {
    pub outcome: RunOutcome,
    pub state: SessionState,
    /// Why the session ended (with `state: Ended`).
    pub ended_reason: Option<String>,
}

/// A live session this server knows.
#[derive(Debug)]
struct Session {
    id: String,
    name: Option<String>,
    env: EnvSpec,
    container: String,
    created: u64,
    last_used: AtomicU64,
    runs: AtomicU64,
    /// The attach this server holds (none until the first call); its mutex serialises calls.
    io: tokio::sync::Mutex<Option<Attached>>,
    /// Copy mode: the folder as the container last had it.
    synced: Synced,
}

impl Session {
    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            environment: self.env.to_string(),
            created: self.created,
            last_used: self.last_used.load(Ordering::SeqCst),
            runs: self.runs.load(Ordering::SeqCst),
            state: SessionState::Alive,
        }
    }
}

/// The sessions of one server: live ones, and why ended ones ended.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<Session>>>,
    ended: Mutex<HashMap<String, String>>,
    /// Copy mode: the storage folder's id, read (or made) once.
    storage_key: std::sync::OnceLock<String>,
}

/// A new session id: 128 random bits, hex.
fn new_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// A session id as given: 32 hex digits (anything else cannot name a session).
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit())
}

impl Sandbox {
    /// Starts a session in `env`: its container is created and started; calls attach to it.
    pub async fn create_session(
        &self,
        env: &EnvSpec,
        name: Option<&str>,
    ) -> Result<SessionInfo, SandboxError> {
        let settings = &self.settings.sessions;
        self.adopt_sessions().await?;
        let live = lock(&self.sessions.live).len();
        if live >= settings.max_sessions {
            return Err(SandboxError::TooManySessions {
                max: settings.max_sessions,
            });
        }
        let id = new_id();
        let created = unix_now();
        let volume = self.volumes.env_volume(env).await?;
        let base = self.settings.policy(
            Purpose::Session,
            env,
            &volume,
            &self.settings.run_limits,
            self.instance(),
        );
        let policy = RunPolicy {
            idle_secs: settings.max_lifetime_secs,
            ..base
        };
        let mut spec = policy::container_spec(&policy);
        spec.entrypoint.push(settings.idle_timeout_secs.to_string());
        spec.labels
            .extend(self.session_labels(&id, name, env, created));
        let container = match self
            .life
            .create(&spec, Some(&labels::session_container_name(&id)))
            .await?
        {
            Created::Id(c) => c,
            Created::ImageMissing => return Err(image_missing(&spec.image, env)),
            Created::NameTaken => return Err(SandboxError::NameTaken),
        };
        let mut guard = self.life.guard(&container);
        // Copy mode: the folder's copy is there before the interpreter starts in it.
        let synced = match &self.settings.copy {
            Some(copy) => Some(
                runner::copy_in_since(
                    self.life.engine(),
                    &container,
                    copy,
                    self.settings.run_as,
                    None,
                )
                .await?,
            ),
            None => None,
        };
        self.life.engine().start(&container).await?;
        guard.disarm();
        let session = Arc::new(Session {
            id: id.clone(),
            name: name.map(str::to_string),
            env: env.clone(),
            container,
            created,
            last_used: AtomicU64::new(created),
            runs: AtomicU64::new(0),
            io: tokio::sync::Mutex::new(None),
            synced: Synced::new(synced),
        });
        let info = session.info();
        session_call::save_record(&settings.state_dir, &info);
        lock(&self.sessions.live).insert(id, session);
        Ok(info)
    }

    fn session_labels(
        &self,
        id: &str,
        name: Option<&str>,
        env: &EnvSpec,
        created: u64,
    ) -> HashMap<String, String> {
        let mut l = labels::env_volume_labels(
            env,
            self.settings.images.for_type(env.env_type),
            self.settings.principal.as_deref(),
        );
        l.remove(labels::LABEL_ENV_VOLUME);
        l.insert(LABEL_SESSION.to_string(), id.to_string());
        l.insert(LABEL_STORAGE.to_string(), self.storage_label());
        l.insert(LABEL_CREATED.to_string(), created.to_string());
        if let Some(name) = name {
            l.insert(LABEL_SESSION_NAME.to_string(), name.to_string());
        }
        l
    }

    /// What names this storage folder on its session containers: its path on the daemon's host,
    /// or in copy mode its id (see [`session_sync::storage_key`]).
    fn storage_label(&self) -> String {
        match &self.settings.copy {
            Some(_) => (self.sessions.storage_key)
                .get_or_init(|| session_sync::storage_key(&self.settings.sessions.state_dir))
                .clone(),
            None => self.settings.host_workdir.clone(),
        }
    }

    /// Finds the running sessions of this storage folder that this server does not know yet
    /// (a predecessor's, or another server's): returns how many were adopted.
    pub async fn adopt_sessions(&self) -> Result<usize, SandboxError> {
        let listed = self
            .life
            .engine()
            .list(labels::LABEL_PURPOSE, labels::SESSION)
            .await?;
        let mut adopted = 0;
        let storage = self.storage_label();
        for c in listed {
            if let Some(session) = self.adoptable(&c, &storage) {
                let mut live = lock(&self.sessions.live);
                let ended = lock(&self.sessions.ended).contains_key(&session.id);
                if !ended && !live.contains_key(&session.id) {
                    live.insert(session.id.clone(), Arc::new(session));
                    adopted += 1;
                }
            }
        }
        Ok(adopted)
    }

    /// A listed container as a session of ours, if it is one, running, of this storage folder.
    fn adoptable(&self, c: &ListedContainer, storage: &str) -> Option<Session> {
        let l = &c.labels;
        if !c.running || l.get(LABEL_STORAGE).map(String::as_str) != Some(storage) {
            return None;
        }
        let id = l.get(LABEL_SESSION).filter(|id| valid_id(id))?.clone();
        let state_dir = &self.settings.sessions.state_dir;
        if lock(&self.sessions.ended).contains_key(&id)
            || session_call::ended_reason(state_dir, &id).is_some()
        {
            return None;
        }
        let env_type = EnvType::parse(l.get(labels::LABEL_ENV_TYPE)?).ok()?;
        let env = EnvSpec::new(
            env_type,
            l.get(labels::LABEL_ENV_LOCATION).map(String::as_str),
        )
        .ok()?;
        let created = l.get(LABEL_CREATED)?.parse().ok()?;
        let (runs, last_used) =
            session_call::load_record(&self.settings.sessions.state_dir, &id, created);
        Some(Session {
            name: l.get(LABEL_SESSION_NAME).cloned(),
            container: c.id.clone(),
            env,
            created,
            last_used: AtomicU64::new(last_used),
            runs: AtomicU64::new(runs),
            io: tokio::sync::Mutex::new(None),
            synced: Synced::default(),
            id,
        })
    }

    /// The live session `id`, adopting it if another server made it; the errors say whether
    /// it never existed or ended, and why.
    async fn session(&self, id: &str) -> Result<Arc<Session>, SandboxError> {
        if let Some(s) = lock(&self.sessions.live).get(id) {
            return Ok(Arc::clone(s));
        }
        if valid_id(id) {
            self.adopt_sessions().await?;
            if let Some(s) = lock(&self.sessions.live).get(id) {
                return Ok(Arc::clone(s));
            }
        }
        let ended = lock(&self.sessions.ended).get(id).cloned();
        let ended = ended.or_else(|| {
            valid_id(id)
                .then(|| session_call::ended_reason(&self.settings.sessions.state_dir, id))
                .flatten()
        });
        Err(match ended {
            Some(reason) => SandboxError::SessionEnded {
                id: id.to_string(),
                reason,
            },
            None => SandboxError::SessionNotFound { id: id.to_string() },
        })
    }

    /// The environment of a live session.
    pub async fn session_env(&self, id: &str) -> Result<EnvSpec, SandboxError> {
        Ok(self.session(id).await?.env.clone())
    }

    /// Every live session of this storage folder.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, SandboxError> {
        self.adopt_sessions().await?;
        let live: Vec<Arc<Session>> = lock(&self.sessions.live).values().cloned().collect();
        let mut infos: Vec<SessionInfo> = live.iter().map(|s| s.info()).collect();
        infos.sort_by_key(|i| i.created);
        Ok(infos)
    }

    /// Ends a session: its container is gone when this returns.
    pub async fn close_session(&self, id: &str) -> Result<(), SandboxError> {
        let session = self.session(id).await?;
        self.end_session(&session, "closed with close_session")
            .await
    }

    /// Removes a session's container and remembers why it ended.
    async fn end_session(&self, session: &Session, reason: &str) -> Result<(), SandboxError> {
        {
            // Both under the live lock: an adoption running meanwhile cannot bring it back.
            let mut live = lock(&self.sessions.live);
            lock(&self.sessions.ended).insert(session.id.clone(), reason.to_string());
            live.remove(&session.id);
        }
        session_call::save_ended(&self.settings.sessions.state_dir, &session.id, reason);
        *session.io.lock().await = None;
        Ok(self.life.engine().remove(&session.container).await?)
    }

    /// Ends the sessions idle for longer than the idle timeout (their runners exit by
    /// themselves too; this removes the containers without waiting for a sweep).
    pub async fn reap_sessions(&self) -> Result<usize, SandboxError> {
        let idle = self.settings.sessions.idle_timeout_secs;
        let now = unix_now();
        let stale: Vec<Arc<Session>> = lock(&self.sessions.live)
            .values()
            .filter(|s| s.last_used.load(Ordering::SeqCst) + idle <= now)
            .cloned()
            .collect();
        let mut ended = 0;
        for s in &stale {
            // A call is going on (its timeout may be longer than the idle timeout): not idle.
            if s.io.try_lock().is_err() {
                continue;
            }
            let reason = format!("idle for more than {idle} s (SESSION_IDLE_TIMEOUT)");
            // One that cannot be removed now (the next sweep retries) holds up no other.
            match self.end_session(s, &reason).await {
                Ok(()) => ended += 1,
                Err(e) => tracing::warn!(session = %s.id, "could not end an idle session: {e}"),
            }
        }
        Ok(ended)
    }

    /// Runs `job` in the session `id`'s interpreter.
    pub async fn run_in_session(
        &self,
        id: &str,
        job: Job<'_>,
        cancel: &CancellationToken,
    ) -> Result<SessionRun, SandboxError> {
        let session = self.session(id).await?;
        let mut io = session.io.lock().await;
        if !lock(&self.sessions.live).contains_key(id) {
            // Ended (reaped, closed) while this call waited for the previous one.
            drop(io);
            return Err(self
                .session(id)
                .await
                .err()
                .unwrap_or(SandboxError::ShuttingDown));
        }
        let state_dir = &self.settings.sessions.state_dir;
        // Another server's call lasts at most the longest timeout plus the interrupt's grace.
        let wait = self.settings.run_limits.timeout() + session_call::INTERRUPT_GRACE * 2;
        let _file_lock = session_call::lock_file(state_dir, id, self.instance(), wait).await?;
        if _file_lock.as_ref().is_some_and(|l| l.other_user) {
            // Another server used the session since: its output may sit in our old attach.
            *io = None;
        }
        let engine = self.life.engine();
        if io.is_none() {
            // Attaching to a stopped container never returns: look first.
            let stopped = match engine.inspect(&session.container).await {
                Ok(state) if state.running => None,
                Ok(state) => Some(session_call::why_stopped(&state)),
                Err(e) if e.is_unavailable() => return Err(e.into()),
                Err(_) => Some(session_call::GONE.to_string()),
            };
            let attached = match stopped {
                None => engine.attach(&session.container).await,
                Some(reason) => {
                    drop(io);
                    self.end_session(&session, &reason).await?;
                    return Err(SandboxError::SessionEnded {
                        id: id.to_string(),
                        reason,
                    });
                }
            };
            *io = Some(attached?);
        }
        let Some(attached) = io.as_mut() else {
            return Err(SandboxError::ShuttingDown);
        };
        // Copy mode: the container gets the files it lacks, and runs the program by its path
        // in the copy; what the call wrote comes back after it.
        let (inside, sync) = match &self.settings.copy {
            Some(copy) => {
                let (container, owner) = (&session.container, self.settings.run_as);
                let sent =
                    session_sync::before_call(engine, container, copy, owner, &session.synced);
                (copy.inside(job.path), Some((copy, sent.await?)))
            }
            None => (job.path.to_string(), None),
        };
        let job = Job {
            path: &inside,
            ..job
        };
        let end = session_call::call(engine, &session.container, attached, &job, cancel).await;
        let end = match (end, &sync) {
            (Ok(end), Some((copy, sent))) => {
                let (container, synced) = (&session.container, &session.synced);
                session_sync::after_end(engine, container, copy, sent, end, synced).await
            }
            (end, _) => end,
        };
        session.runs.fetch_add(1, Ordering::SeqCst);
        session.last_used.store(unix_now(), Ordering::SeqCst);
        session_call::save_record(state_dir, &session.info());
        let end = match end {
            Ok(end) => end,
            Err(e) => {
                // The attach is in an unknown state: the next call attaches afresh.
                *io = None;
                return Err(e);
            }
        };
        match end {
            CallEnd::Done(outcome) => Ok(SessionRun {
                outcome,
                state: SessionState::Alive,
                ended_reason: None,
            }),
            CallEnd::Ended(outcome, reason) => {
                *io = None;
                drop(io);
                self.end_session(&session, &reason).await?;
                Ok(SessionRun {
                    outcome,
                    state: SessionState::Ended,
                    ended_reason: Some(reason),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_random_bits() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert!(valid_id(&a) && valid_id(&b));
        assert_ne!(a, b);
        assert!(!valid_id("../etc"));
        assert!(!valid_id(&"g".repeat(32)));
        assert_eq!(SessionState::Alive.as_str(), "alive");
        assert_eq!(SessionState::Ended.as_str(), "ended");
    }
}
