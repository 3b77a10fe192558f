//! The seam to containers: the [`ContainerEngine`] trait is the only door through which the
//! sandbox creates, feeds, watches and removes containers and volumes. It speaks in our own
//! types ([`ContainerSpec`], [`OutputChunk`], [`EngineError`]), never in a client library's, so
//! that everything above it (runner, lifecycle, pool, volumes) is tested against the recording
//! fake without a daemon, and other engines (Podman's Docker-compatible API, a remote host)
//! slot in behind it. `sandbox::docker` implements it with bollard.

use std::collections::HashMap;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncWrite;

use crate::error::EngineError;

/// A bind mount or a named volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A host path (as the daemon sees it).
    Bind,
    /// A named volume; an empty one is filled with what the image has at the target.
    Volume,
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: MountKind,
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// Everything an engine needs to create one container. Engines map each field to their own API
/// and must refuse, never silently drop, a field they cannot honour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    pub image: String,
    /// Replaces the image's entrypoint; no image command is appended.
    pub entrypoint: Vec<String>,
    /// `uid:gid`.
    pub user: Option<String>,
    /// `KEY=value` pairs: the whole environment the container sees.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub labels: HashMap<String, String>,
    pub hostname: Option<String>,
    /// Network mode; `none` also disables networking altogether.
    pub network: String,
    /// Stdin open (once) and attachable, stdout and stderr kept apart (no tty).
    pub interactive: bool,
    /// With `interactive`: stdin stays open when an attach ends, so that another attach can
    /// take over (sessions); otherwise it closes with the first attach.
    pub keep_stdin_open: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    pub readonly_rootfs: bool,
    /// Mount point → tmpfs options.
    pub tmpfs: HashMap<String, String>,
    /// Memory limit, bytes (memory + swap gets the same value: no swap).
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    /// An init process as PID 1 (reaps zombies, forwards signals).
    pub init: bool,
    /// Private IPC namespace with a `/dev/shm` of this many bytes.
    pub private_ipc_shm_bytes: Option<i64>,
    /// `(name, value)`: soft and hard limit alike.
    pub ulimits: Vec<(String, i64)>,
    pub mounts: Vec<MountSpec>,
    /// The OCI runtime (e.g. `runsc`); `None` for the daemon's default.
    pub runtime: Option<String>,
    /// A seccomp profile file on the engine's host; `None` for the engine's default profile.
    pub seccomp_profile: Option<String>,
}

/// What creating a container gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Id(String),
    /// The image does not exist.
    ImageMissing,
    /// A container of that name exists (used as a daemon-wide lock).
    NameTaken,
}

/// A piece of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A container's output, in the order it was written.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, EngineError>> + Send>>;
/// A container's stdin.
pub type InputSink = Pin<Box<dyn AsyncWrite + Send>>;

/// Both halves of an attach. Drop both before killing the container, or kill/wait can hang.
pub struct Attached {
    pub output: OutputStream,
    pub input: InputSink,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attached")
    }
}

/// A container's state, as the engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerState {
    pub running: bool,
    /// `None` while running, or when killed before the engine recorded a code.
    pub exit_code: Option<i64>,
    /// Killed by the kernel's OOM killer (never guessed from exit code 137).
    pub oom_killed: bool,
    /// `(source, destination)` of each mount.
    pub mounts: Vec<(String, String)>,
}

/// A container listed by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedContainer {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    /// Unix time of creation.
    pub created: i64,
}

/// Which engine answers behind the Docker API, told apart once, at first contact (from the
/// components of its `/version` answer). Policy and startup checks adapt to it without naming
/// a client library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Docker Engine (dockerd).
    Docker,
    /// Podman's Docker-compatible API (`podman system service`).
    Podman,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Docker => "Docker",
            EngineKind::Podman => "Podman",
        }
    }

    /// Ok when containers can run under `runtime` (`None`: the engine's default). Podman's
    /// compatible API accepts a container's runtime (`HostConfig.Runtime`) and ignores it: every
    /// container would run under its default runtime, a silent downgrade of the isolation asked
    /// for, so any runtime is refused there.
    pub fn check_runtime(self, runtime: Option<&str>) -> Result<(), EngineError> {
        match (self, runtime) {
            (EngineKind::Podman, Some(runtime)) => Err(podman_ignores_runtime(Some(runtime))),
            _ => Ok(()),
        }
    }

    /// Ok when a container's runtime can be chosen at all (see [`EngineKind::check_runtime`]).
    pub fn check_runtime_choice(self) -> Result<(), EngineError> {
        match self {
            EngineKind::Docker => Ok(()),
            EngineKind::Podman => Err(podman_ignores_runtime(None)),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn podman_ignores_runtime(runtime: Option<&str>) -> EngineError {
    let asked = match runtime {
        Some(runtime) => format!("run containers under the OCI runtime {runtime:?} (RUNTIME)"),
        None => "choose the OCI runtime of a container (RUNTIME)".to_string(),
    };
    EngineError::Unsupported {
        engine: EngineKind::Podman.as_str(),
        what: format!(
            "{asked}: its Docker-compatible API ignores a container's runtime \
             (HostConfig.Runtime), so containers would silently get its default runtime"
        ),
        hint: "unset RUNTIME, or point DOCKER_HOST at a Docker daemon that has the runtime \
               registered (scripts/setup-gvisor.sh)",
    }
}

/// A volume listed by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVolume {
    pub name: String,
    pub labels: HashMap<String, String>,
}

/// The only door to containers. Implementations are cheap to share (`Arc<dyn ContainerEngine>`)
/// and must be safe to call concurrently.
#[async_trait]
pub trait ContainerEngine: Send + Sync + std::fmt::Debug {
    /// Which engine this is (connects on first use; the answer is kept).
    async fn kind(&self) -> Result<EngineKind, EngineError>;
    /// The id of a local image; `None` when it does not exist.
    async fn image_id(&self, image: &str) -> Result<Option<String>, EngineError>;
    /// Creates (does not start) a container named `name`.
    async fn create(&self, spec: &ContainerSpec, name: &str) -> Result<Created, EngineError>;
    /// Attaches to stdin, stdout and stderr. Must happen before `start`, or early output is lost.
    async fn attach(&self, id: &str) -> Result<Attached, EngineError>;
    async fn start(&self, id: &str) -> Result<(), EngineError>;
    /// Everything the container wrote since it started (kept by the engine), followed until
    /// it stops: how a run is followed by a server that did not start it.
    async fn logs(&self, id: &str) -> Result<OutputStream, EngineError>;
    /// Waits until the container is no longer running.
    async fn wait(&self, id: &str) -> Result<(), EngineError>;
    async fn inspect(&self, id: &str) -> Result<ContainerState, EngineError>;
    /// Sends SIGKILL; a container that already stopped or is gone is not an error.
    async fn kill(&self, id: &str) -> Result<(), EngineError>;
    /// Removes a container (killing it if needed); a missing one is not an error.
    async fn remove(&self, id: &str) -> Result<(), EngineError>;
    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError>;
    /// All containers (running or not) carrying `label=value`.
    async fn list(&self, label: &str, value: &str) -> Result<Vec<ListedContainer>, EngineError>;
    async fn volume_exists(&self, name: &str) -> Result<bool, EngineError>;
    /// Creates a named volume unless it exists; returns whether it was created.
    async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<bool, EngineError>;
    /// Removes a volume; a missing one is not an error.
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError>;
    /// Volumes carrying `label=value`.
    async fn list_volumes(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<ListedVolume>, EngineError>;
    /// Unpacks a tar archive into the container's filesystem at `path`.
    async fn upload_archive(&self, id: &str, path: &str, tar: Bytes) -> Result<(), EngineError>;
    /// `path` in the container's filesystem, as a tar archive.
    async fn download_archive(&self, id: &str, path: &str) -> Result<Bytes, EngineError>;
    /// The OCI runtimes the daemon offers (e.g. `runc`, `runsc`).
    async fn runtimes(&self) -> Result<Vec<String>, EngineError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_refuses_a_runtime_it_would_ignore() {
        assert!(EngineKind::Docker.check_runtime(Some("runsc")).is_ok());
        assert!(EngineKind::Docker.check_runtime_choice().is_ok());
        assert!(EngineKind::Podman.check_runtime(None).is_ok());
        let message = EngineKind::Podman
            .check_runtime(Some("runsc"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.starts_with("Podman cannot run containers under"),
            "{message}"
        );
        assert!(message.contains("\"runsc\""), "{message}");
        assert!(message.contains("unset RUNTIME"), "{message}");
        assert!(EngineKind::Podman.check_runtime_choice().is_err());
    }
}
