//! The sandbox: runs one program in a fresh, locked-down container and reports what happened.
//!
//! - [`policy`] decides the container settings (pure),
//! - [`docker`] is the only code that talks to the Docker API,
//! - [`output`] caps what a program prints,
//! - this module drives one run: create → attach → start → stream the code in through stdin →
//!   collect output until exit, deadline or cancellation → read exit code and OOM state from
//!   Docker → remove the container. A container is removed on every path, including when the
//!   calling future is dropped.

pub mod docker;
pub mod output;
pub mod policy;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Images, Limits};
use crate::environment::EnvSpec;
use crate::error::SandboxError;
use docker::DockerApi;
use output::CappedOutput;
use policy::{LABEL_DEADLINE, LABEL_INSTANCE, LABEL_MANAGED, RunPolicy};

/// How long to wait for a killed container to be reported as stopped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// One program to run.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    pub env: &'a EnvSpec,
    /// The stored file's path as the program sees it (also its `sys.argv[0]`).
    pub path: &'a str,
    pub code: &'a str,
    pub limits: &'a Limits,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// `None` when the container was killed before Docker recorded a code.
    pub exit_code: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub cancelled: bool,
    pub duration: Duration,
}

impl RunOutcome {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.oom_killed && !self.cancelled
    }
}

/// Static facts every run container shares.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub images: Images,
    pub run_as: (u32, u32),
    pub host_workdir: String,
    pub workdir: String,
}

/// Runs programs in containers; owns the Docker connection and this server's instance id.
#[derive(Debug)]
pub struct Sandbox {
    docker: DockerApi,
    instance: String,
    settings: SandboxSettings,
    /// Set on shutdown: no new containers.
    closed: AtomicBool,
}

/// Removes its container when dropped without [`ContainerGuard::disarm`] (a cancelled call).
struct ContainerGuard {
    id: Option<String>,
}

impl ContainerGuard {
    fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The API client is cheap to re-create; a fresh one outlives the dropped call.
        handle.spawn(async move {
            let api = DockerApi::new();
            if let Err(e) = api.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "could not remove a container");
            }
        });
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Self {
        Sandbox {
            docker: DockerApi::new(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            settings,
            closed: AtomicBool::new(false),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn docker(&self) -> &DockerApi {
        &self.docker
    }

    /// Runs one program in a fresh container of `req.env`'s image.
    pub async fn run(
        &self,
        req: RunRequest<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let image = self.settings.images.for_type(req.env.env_type);
        let policy = RunPolicy {
            image,
            env: req.env,
            limits: req.limits,
            run_as: self.settings.run_as,
            host_workdir: &self.settings.host_workdir,
            workdir: &self.settings.workdir,
            instance: &self.instance,
            now_unix: unix_now(),
        };
        let body = policy::run_container(&policy);
        if self.closed.load(Ordering::SeqCst) {
            return Err(SandboxError::ShuttingDown);
        }
        let Some(id) = self.docker.create(body).await? else {
            return Err(SandboxError::ImageMissing {
                image: image.to_string(),
                env: req.env.env_type.as_str(),
                setting: Images::setting_name(req.env.env_type),
            });
        };
        let mut guard = ContainerGuard {
            id: Some(id.clone()),
        };
        let result = if self.closed.load(Ordering::SeqCst) {
            Err(SandboxError::ShuttingDown)
        } else {
            self.drive(&id, &req, cancel).await
        };
        guard.disarm();
        if let Err(e) = self.docker.remove(&id).await {
            tracing::warn!(container = %id, error = %e, "could not remove a run container");
        }
        result
    }

    async fn drive(
        &self,
        id: &str,
        req: &RunRequest<'_>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let (mut output, mut input) = self.docker.attach(id).await?;
        self.docker.start(id).await?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + req.limits.timeout();

        // Header line, then the source; closing stdin ends the program's input.
        let header = serde_json::json!({ "path": req.path, "argv": [] }).to_string();
        let mut payload = Vec::with_capacity(header.len() + 1 + req.code.len());
        payload.extend_from_slice(header.as_bytes());
        payload.push(b'\n');
        payload.extend_from_slice(req.code.as_bytes());
        let feed = async move {
            // A program that exits early closes its stdin; that is not an error of the run.
            let _ = input.write_all(&payload).await;
            let _ = input.shutdown().await;
            input
        };

        let limit = req.limits.output_bytes;
        let mut stdout = CappedOutput::new(limit);
        let mut stderr = CappedOutput::new(limit);
        let (mut timed_out, mut cancelled) = (false, false);
        let mut feed = std::pin::pin!(feed);
        let mut input_done = None;
        loop {
            tokio::select! {
                done = &mut feed, if input_done.is_none() => { input_done = Some(done); }
                chunk = output.next() => match chunk {
                    Some(Ok(LogOutput::StdOut { message })) => stdout.push(&message),
                    Some(Ok(LogOutput::StdErr { message })) => stderr.push(&message),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(container = %id, error = %e, "output stream ended with an error");
                        break;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => { timed_out = true; break; }
                _ = cancel.cancelled() => { cancelled = true; break; }
            }
        }
        // Both halves of the attach must be gone before kill/wait, or they can hang.
        drop(output);
        drop(input_done);
        if timed_out || cancelled {
            self.docker.kill(id).await?;
            match tokio::time::timeout(KILL_WAIT, self.docker.wait(id)).await {
                Ok(r) => r?,
                Err(_) => tracing::warn!(container = %id, "killed container did not stop in time"),
            }
        } else {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited = tokio::select! {
                r = tokio::time::timeout(remaining, self.docker.wait(id)) => r.ok(),
                _ = cancel.cancelled() => { cancelled = true; None }
            };
            match waited {
                Some(r) => r?,
                None => {
                    timed_out = !cancelled;
                    self.docker.kill(id).await?;
                    let _ = tokio::time::timeout(KILL_WAIT, self.docker.wait(id)).await;
                }
            }
        }
        let duration = started.elapsed();
        let state = self.docker.exit_state(id).await?;
        Ok(RunOutcome {
            exit_code: state.exit_code,
            truncated: stdout.truncated() || stderr.truncated(),
            stdout_bytes: stdout.total(),
            stderr_bytes: stderr.total(),
            stdout: stdout.render(),
            stderr: stderr.render(),
            timed_out,
            oom_killed: state.oom_killed,
            cancelled,
            duration,
        })
    }

    /// Checks that Docker answers and the image of `env` exists.
    pub async fn check_image(&self, env: &EnvSpec) -> Result<(), SandboxError> {
        let image = self.settings.images.for_type(env.env_type);
        if self.docker.image_exists(image).await? {
            Ok(())
        } else {
            Err(SandboxError::ImageMissing {
                image: image.to_string(),
                env: env.env_type.as_str(),
                setting: Images::setting_name(env.env_type),
            })
        }
    }

    /// Refuses new runs from now on (before [`Sandbox::remove_own`] on shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Removes every container of this server instance (on shutdown).
    pub async fn remove_own(&self) -> Result<usize, SandboxError> {
        let listed = self
            .docker
            .list_labelled(LABEL_INSTANCE, &self.instance)
            .await?;
        for c in &listed {
            self.docker.remove(&c.id).await?;
        }
        Ok(listed.len())
    }

    /// Removes leftovers of earlier servers: containers past their deadline (by then they have
    /// stopped, or their server is gone). Containers of a live server sharing the daemon are
    /// still within their deadline and are left alone.
    pub async fn remove_leftovers(&self) -> Result<usize, SandboxError> {
        let now = unix_now();
        let listed = self.docker.list_labelled(LABEL_MANAGED, "true").await?;
        let mut removed = 0;
        for c in listed {
            if c.labels.get(LABEL_INSTANCE) == Some(&self.instance) {
                continue;
            }
            let expired = c
                .labels
                .get(LABEL_DEADLINE)
                .and_then(|d| d.parse::<u64>().ok())
                .is_none_or(|d| d <= now);
            if expired {
                self.docker.remove(&c.id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
