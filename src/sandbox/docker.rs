//! The one place that talks to the Docker Engine API (bollard). Connects lazily (so the server
//! answers `initialize` without waiting for Docker, and recovers when the daemon comes back),
//! negotiates the API version down to the daemon's (Docker 20.10 speaks 1.41), and maps
//! bollard's errors to [`SandboxError`]s that say what to do.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, VolumeCreateRequest};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;
use tokio::sync::Mutex;

use crate::error::SandboxError;

/// Timeout of one API request (bollard's default is 120 s). Long waits use streams instead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, BollardError>> + Send>>;
pub type InputSink = Pin<Box<dyn AsyncWrite + Send>>;

/// How a container ended, from Docker's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitState {
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
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

/// A container listed by label.
#[derive(Debug, Clone)]
pub struct ListedContainer {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    /// Unix time of creation.
    pub created: i64,
}

/// A lazily connected Docker client; clones share the connection.
#[derive(Debug, Default, Clone)]
pub struct DockerApi {
    client: std::sync::Arc<Mutex<Option<Docker>>>,
}

impl DockerApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// The connected client; connects (and negotiates the API version) on first use and after
    /// the daemon was unreachable.
    async fn client(&self) -> Result<Docker, SandboxError> {
        let mut guard = self.client.lock().await;
        if let Some(client) = guard.as_ref() {
            return Ok(client.clone());
        }
        let client = Docker::connect_with_defaults()
            .map_err(unavailable)?
            .with_timeout(REQUEST_TIMEOUT)
            .negotiate_version()
            .await
            .map_err(unavailable)?;
        *guard = Some(client.clone());
        Ok(client)
    }

    /// Forgets the connection after a transport failure, so the next call reconnects.
    async fn note(&self, err: SandboxError) -> SandboxError {
        if matches!(err, SandboxError::DockerUnavailable { .. }) {
            *self.client.lock().await = None;
        }
        err
    }

    /// Checks that the daemon answers.
    pub async fn ping(&self) -> Result<(), SandboxError> {
        let client = self.client().await?;
        match client.ping().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.note(unavailable(e)).await),
        }
    }

    /// The id of a local image; `None` when it does not exist.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, SandboxError> {
        let client = self.client().await?;
        match client.inspect_image(image).await {
            Ok(info) => Ok(Some(info.id.unwrap_or_else(|| image.to_string()))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.note(map_err("inspect an image", None, e)).await),
        }
    }

    /// Creates a named volume unless it exists; returns whether it was created.
    pub async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<bool, SandboxError> {
        let client = self.client().await?;
        match client.inspect_volume(name).await {
            Ok(_) => return Ok(false),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(self.note(map_err("inspect a volume", None, e)).await),
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        };
        match client.create_volume(request).await {
            Ok(_) => Ok(true),
            Err(e) => Err(self.note(map_err("create a volume", None, e)).await),
        }
    }

    /// Removes a volume; a missing one is not an error.
    pub async fn remove_volume(&self, name: &str) -> Result<(), SandboxError> {
        let client = self.client().await?;
        let options = RemoveVolumeOptionsBuilder::new().force(false).build();
        match client.remove_volume(name, Some(options)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.note(map_err("remove a volume", None, e)).await),
        }
    }

    /// Volumes carrying `label=value`, with their labels.
    pub async fn list_volumes(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, SandboxError> {
        let client = self.client().await?;
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        match client.list_volumes(Some(options)).await {
            Ok(list) => Ok(list
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| (v.name, v.labels))
                .collect()),
            Err(e) => Err(self.note(map_err("list volumes", None, e)).await),
        }
    }

    /// Creates a container; `Ok(None)` when its image does not exist.
    /// Creates a container named `name` (a random name when `None`).
    pub async fn create(
        &self,
        body: ContainerCreateBody,
        name: Option<&str>,
    ) -> Result<Created, SandboxError> {
        let client = self.client().await?;
        let name = name.map_or_else(
            || format!("mce-{}", uuid::Uuid::new_v4().simple()),
            str::to_string,
        );
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        match client.create_container(Some(options), body).await {
            Ok(created) => Ok(Created::Id(created.id)),
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) if message.contains("image") => Ok(Created::ImageMissing),
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(Created::NameTaken),
            Err(e) => Err(self.note(map_err("create a container", None, e)).await),
        }
    }

    /// The (source, destination) of each mount of a container.
    pub async fn mounts_of(&self, id: &str) -> Result<Vec<(String, String)>, SandboxError> {
        let client = self.client().await?;
        match client.inspect_container(id, None).await {
            Ok(info) => Ok(info
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| Some((m.source?, m.destination?)))
                .collect()),
            Err(e) => Err(self.note(map_err("inspect a container", Some(id), e)).await),
        }
    }

    /// Whether a volume exists.
    pub async fn volume_exists(&self, name: &str) -> Result<bool, SandboxError> {
        let client = self.client().await?;
        match client.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.note(map_err("inspect a volume", None, e)).await),
        }
    }

    /// Attaches to stdin, stdout and stderr. Must happen before `start`, or early output is lost.
    pub async fn attach(&self, id: &str) -> Result<(OutputStream, InputSink), SandboxError> {
        let client = self.client().await?;
        let options = AttachContainerOptionsBuilder::new()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        match client.attach_container(id, Some(options)).await {
            Ok(attached) => Ok((attached.output, attached.input)),
            Err(e) => Err(self
                .note(map_err("attach to a container", Some(id), e))
                .await),
        }
    }

    pub async fn start(&self, id: &str) -> Result<(), SandboxError> {
        let client = self.client().await?;
        match client.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.note(map_err("start a container", Some(id), e)).await),
        }
    }

    /// Waits until the container is no longer running.
    pub async fn wait(&self, id: &str) -> Result<(), SandboxError> {
        let client = self.client().await?;
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut stream = client.wait_container(id, Some(options));
        match stream.next().await {
            // A non-zero exit arrives as an error; the exit code is read from `inspect` instead.
            None | Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })) => Ok(()),
            // The long wait outlives the request timeout: fall back to polling the state.
            Some(Err(BollardError::RequestTimeoutError)) => loop {
                if !self.is_running(id).await? {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
            Some(Err(e)) => Err(self
                .note(map_err("wait for a container", Some(id), e))
                .await),
        }
    }

    async fn is_running(&self, id: &str) -> Result<bool, SandboxError> {
        let client = self.client().await?;
        match client.inspect_container(id, None).await {
            Ok(info) => Ok(info.state.and_then(|s| s.running).unwrap_or(false)),
            Err(e) => Err(self.note(map_err("inspect a container", Some(id), e)).await),
        }
    }

    /// Exit code and OOM flag, from Docker's state of the container.
    pub async fn exit_state(&self, id: &str) -> Result<ExitState, SandboxError> {
        let client = self.client().await?;
        match client.inspect_container(id, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                Ok(ExitState {
                    exit_code: state.exit_code,
                    oom_killed: state.oom_killed.unwrap_or(false),
                })
            }
            Err(e) => Err(self.note(map_err("inspect a container", Some(id), e)).await),
        }
    }

    /// Renames a container (pool containers are renamed when taken, for observers).
    pub async fn rename(&self, id: &str, name: &str) -> Result<(), SandboxError> {
        let client = self.client().await?;
        let options = bollard::query_parameters::RenameContainerOptionsBuilder::new()
            .name(name)
            .build();
        match client.rename_container(id, options).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.note(map_err("rename a container", Some(id), e)).await),
        }
    }

    /// Sends SIGKILL; a container that already stopped is not an error.
    pub async fn kill(&self, id: &str) -> Result<(), SandboxError> {
        let client = self.client().await?;
        let options = KillContainerOptionsBuilder::new().signal("KILL").build();
        match client.kill_container(id, Some(options)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(self.note(map_err("kill a container", Some(id), e)).await),
        }
    }

    /// Removes a container (killing it if needed) with its anonymous volumes.
    pub async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let client = self.client().await?;
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match client.remove_container(id, Some(options)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // 409: removal already in progress.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.note(map_err("remove a container", Some(id), e)).await),
        }
    }

    /// All containers (running or not) carrying `label=value`.
    pub async fn list_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<ListedContainer>, SandboxError> {
        let client = self.client().await?;
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        match client.list_containers(Some(options)).await {
            Ok(list) => Ok(list
                .into_iter()
                .filter_map(|c| {
                    Some(ListedContainer {
                        running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
                        created: c.created.unwrap_or(0),
                        id: c.id?,
                        labels: c.labels.unwrap_or_default(),
                    })
                })
                .collect()),
            Err(e) => Err(self.note(map_err("list containers", None, e)).await),
        }
    }
}

fn unavailable(e: BollardError) -> SandboxError {
    SandboxError::DockerUnavailable {
        detail: e.to_string(),
    }
}

/// An answer from the daemon is a Docker error; anything else means the daemon is unreachable.
fn map_err(op: &'static str, container: Option<&str>, e: BollardError) -> SandboxError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => SandboxError::Docker {
            op,
            container: container.map(short_id),
            detail: format!("{message} (HTTP {status_code})"),
        },
        BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. } => {
            SandboxError::Docker {
                op,
                container: container.map(short_id),
                detail: e.to_string(),
            }
        }
        other => unavailable(other),
    }
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}
