//! The Docker engine: implements [`ContainerEngine`] with bollard, and is the only file that
//! names a bollard type. Connects lazily (so the server answers `initialize` without waiting for
//! Docker, and recovers when the daemon comes back), negotiates the API version down to the
//! daemon's (Docker 20.10 speaks 1.41), translates [`ContainerSpec`] into Docker's create body,
//! and maps bollard's errors to [`EngineError`]s that keep bollard's error as their source.
//! It is longer than our usual 400 lines on purpose: every bollard name stays in this one file.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, ResourcesUlimits,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder,
    DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListVolumesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, RenameContainerOptionsBuilder, UploadToContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;

use super::engine::{
    Attached, ContainerEngine, ContainerSpec, ContainerState, Created, ListedContainer,
    ListedVolume, MountKind, OutputChunk, OutputStream,
};
use crate::error::EngineError;

/// Timeout of one API request (bollard's default is 120 s). Long waits use streams instead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A lazily connected Docker client; clones share the connection.
#[derive(Debug, Default, Clone)]
pub struct DockerEngine {
    client: std::sync::Arc<Mutex<Option<Docker>>>,
}

impl DockerEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// The connected client; connects (and negotiates the API version) on first use and after
    /// the daemon was unreachable.
    async fn client(&self) -> Result<Docker, EngineError> {
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

    /// Runs one request; maps its error, and forgets the connection after a transport failure
    /// so that the next call reconnects.
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        container: Option<&str>,
        request: F,
    ) -> Result<T, EngineError>
    where
        F: FnOnce(Docker) -> Fut + Send,
        Fut: Future<Output = Result<T, BollardError>> + Send,
    {
        let client = self.client().await?;
        match request(client).await {
            Ok(v) => Ok(v),
            Err(e) => {
                let err = map_err(op, container, e);
                if err.is_unavailable() {
                    *self.client.lock().await = None;
                }
                Err(err)
            }
        }
    }
}

/// A container's multiplexed output as our chunks (other frames dropped).
fn output_of(
    id: &str,
    frames: impl futures_util::Stream<Item = Result<LogOutput, BollardError>> + Send + 'static,
) -> OutputStream {
    let owned = id.to_string();
    Box::pin(frames.filter_map(move |item| {
        let chunk = match item {
            Ok(LogOutput::StdOut { message }) => Some(Ok(OutputChunk::Stdout(message))),
            Ok(LogOutput::StdErr { message }) => Some(Ok(OutputChunk::Stderr(message))),
            Ok(_) => None,
            Err(e) => Some(Err(map_err("read a container's output", Some(&owned), e))),
        };
        std::future::ready(chunk)
    }))
}

/// `Ok(None)` for a 404 answer (the thing does not exist), else the result as it is.
fn absent_ok<T>(r: Result<T, BollardError>) -> Result<Option<T>, BollardError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Success for a 404 or 409 answer: what was asked for is already so (gone, not running, or
/// being removed).
fn settled_ok(r: Result<(), BollardError>) -> Result<(), BollardError> {
    match r {
        Err(BollardError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        other => other,
    }
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    async fn image_id(&self, image: &str) -> Result<Option<String>, EngineError> {
        let info = self
            .call("inspect an image", None, |c| async move {
                absent_ok(c.inspect_image(image).await)
            })
            .await?;
        Ok(info.map(|i| i.id.unwrap_or_else(|| image.to_string())))
    }

    async fn create(&self, spec: &ContainerSpec, name: &str) -> Result<Created, EngineError> {
        let body = create_body(spec);
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.call("create a container", None, |c| async move {
            match c.create_container(Some(options), body).await {
                Ok(created) => Ok(Created::Id(created.id)),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404,
                    message,
                }) if message.contains("image") => Ok(Created::ImageMissing),
                Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                }) => Ok(Created::NameTaken),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn attach(&self, id: &str) -> Result<Attached, EngineError> {
        let options = AttachContainerOptionsBuilder::new()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        let attached = self
            .call("attach to a container", Some(id), |c| async move {
                c.attach_container(id, Some(options)).await
            })
            .await?;
        Ok(Attached {
            output: output_of(id, attached.output),
            input: attached.input,
        })
    }

    async fn logs(&self, id: &str) -> Result<OutputStream, EngineError> {
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let client = self.client().await?;
        Ok(output_of(id, client.logs(id, Some(options))))
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.call("start a container", Some(id), |c| async move {
            c.start_container(id, None).await
        })
        .await
    }

    async fn wait(&self, id: &str) -> Result<(), EngineError> {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let first = self
            .call("wait for a container", Some(id), |c| async move {
                match c.wait_container(id, Some(options)).next().await {
                    // A non-zero exit arrives as an error; the code is read from `inspect`.
                    None
                    | Some(Ok(_))
                    | Some(Err(BollardError::DockerContainerWaitError { .. })) => Ok(true),
                    Some(Err(BollardError::RequestTimeoutError)) => Ok(false),
                    Some(Err(e)) => Err(e),
                }
            })
            .await?;
        if !first {
            // The long wait outlived the request timeout: poll the state instead.
            while self.inspect(id).await?.running {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerState, EngineError> {
        let info = self
            .call("inspect a container", Some(id), |c| async move {
                c.inspect_container(id, None).await
            })
            .await?;
        let state = info.state.unwrap_or_default();
        Ok(ContainerState {
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            mounts: info
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| Some((m.source?, m.destination?)))
                .collect(),
        })
    }

    async fn kill(&self, id: &str) -> Result<(), EngineError> {
        let options = KillContainerOptionsBuilder::new().signal("KILL").build();
        // 404: gone; 409: not running.
        self.call("kill a container", Some(id), |c| async move {
            settled_ok(c.kill_container(id, Some(options)).await)
        })
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        // 404: gone; 409: removal already in progress.
        self.call("remove a container", Some(id), |c| async move {
            settled_ok(c.remove_container(id, Some(options)).await)
        })
        .await
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        let options = RenameContainerOptionsBuilder::new().name(name).build();
        self.call("rename a container", Some(id), |c| async move {
            c.rename_container(id, options).await
        })
        .await
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<ListedContainer>, EngineError> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .call("list containers", None, |c| async move {
                c.list_containers(Some(options)).await
            })
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                Some(ListedContainer {
                    running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
                    created: c.created.unwrap_or(0),
                    id: c.id?,
                    labels: c.labels.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn volume_exists(&self, name: &str) -> Result<bool, EngineError> {
        let found = self
            .call("inspect a volume", None, |c| async move {
                absent_ok(c.inspect_volume(name).await)
            })
            .await?;
        Ok(found.is_some())
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<bool, EngineError> {
        if self.volume_exists(name).await? {
            return Ok(false);
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        };
        self.call("create a volume", None, |c| async move {
            c.create_volume(request).await
        })
        .await?;
        Ok(true)
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let options = RemoveVolumeOptionsBuilder::new().force(false).build();
        self.call("remove a volume", None, |c| async move {
            absent_ok(c.remove_volume(name, Some(options)).await)
        })
        .await
        .map(drop)
    }

    async fn list_volumes(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<ListedVolume>, EngineError> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let list = self
            .call("list volumes", None, |c| async move {
                c.list_volumes(Some(options)).await
            })
            .await?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| ListedVolume {
                name: v.name,
                labels: v.labels,
            })
            .collect())
    }

    async fn upload_archive(&self, id: &str, path: &str, tar: Bytes) -> Result<(), EngineError> {
        let options = UploadToContainerOptionsBuilder::new().path(path).build();
        self.call("copy files into a container", Some(id), |c| async move {
            c.upload_to_container(id, Some(options), bollard::body_full(tar))
                .await
        })
        .await
    }

    async fn download_archive(&self, id: &str, path: &str) -> Result<Bytes, EngineError> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let parts: Vec<Bytes> = self
            .call("copy files out of a container", Some(id), |c| async move {
                c.download_from_container(id, Some(options))
                    .try_collect()
                    .await
            })
            .await?;
        Ok(Bytes::from(parts.concat()))
    }

    async fn runtimes(&self) -> Result<Vec<String>, EngineError> {
        let info = self
            .call("read the daemon's information", None, |c| async move {
                c.info().await
            })
            .await?;
        let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        names.sort();
        Ok(names)
    }
}

/// Docker's create body for `spec`.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let host_config = HostConfig {
        network_mode: Some(spec.network.clone()),
        cap_drop: some_vec(&spec.cap_drop),
        cap_add: some_vec(&spec.cap_add),
        security_opt: spec
            .no_new_privileges
            .then(|| vec!["no-new-privileges:true".to_string()]),
        readonly_rootfs: Some(spec.readonly_rootfs),
        tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone()),
        memory: spec.memory_bytes,
        memory_swap: spec.memory_bytes,
        nano_cpus: spec.nano_cpus,
        pids_limit: spec.pids_limit,
        init: spec.init.then_some(true),
        ipc_mode: spec.private_ipc_shm_bytes.map(|_| "private".to_string()),
        shm_size: spec.private_ipc_shm_bytes,
        ulimits: (!spec.ulimits.is_empty()).then(|| {
            spec.ulimits
                .iter()
                .map(|(name, value)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(*value),
                    hard: Some(*value),
                })
                .collect()
        }),
        mounts: (!spec.mounts.is_empty()).then(|| spec.mounts.iter().map(mount).collect()),
        runtime: spec.runtime.clone(),
        auto_remove: Some(false),
        privileged: Some(false),
        ..Default::default()
    };
    let interactive = spec.interactive.then_some(true);
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(spec.entrypoint.clone()),
        cmd: Some(vec![]),
        user: spec.user.clone(),
        env: some_vec(&spec.env),
        working_dir: spec.working_dir.clone(),
        labels: Some(spec.labels.clone()),
        hostname: spec.hostname.clone(),
        network_disabled: Some(spec.network == "none"),
        attach_stdin: interactive,
        attach_stdout: interactive,
        attach_stderr: interactive,
        open_stdin: interactive,
        stdin_once: Some(spec.interactive && !spec.keep_stdin_open),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn mount(m: &super::engine::MountSpec) -> Mount {
    let (typ, volume_options) = match m.kind {
        MountKind::Bind => (MountType::BIND, None),
        // An empty volume is seeded with what the image has at the target.
        MountKind::Volume => (
            MountType::VOLUME,
            Some(MountVolumeOptions {
                no_copy: Some(false),
                ..Default::default()
            }),
        ),
    };
    Mount {
        target: Some(m.target.clone()),
        source: Some(m.source.clone()),
        typ: Some(typ),
        read_only: Some(m.read_only),
        volume_options,
        ..Default::default()
    }
}

fn unavailable(e: BollardError) -> EngineError {
    EngineError::Unavailable {
        source: Box::new(e),
    }
}

/// An answer from the daemon is a refusal; an unreadable answer is malformed; anything else
/// means the daemon is unreachable.
fn map_err(op: &'static str, container: Option<&str>, e: BollardError) -> EngineError {
    let container = container.map(|id| id.chars().take(12).collect());
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Refused {
            op,
            container,
            status: status_code,
            message,
        },
        e @ (BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }) => {
            EngineError::Malformed {
                op,
                container,
                source: Box::new(e),
            }
        }
        other => unavailable(other),
    }
}
