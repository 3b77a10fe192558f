//! The Docker engine: implements [`ContainerEngine`] with bollard; this folder is the only code
//! that names a bollard type. Connects lazily (so the server answers `initialize` without
//! waiting for Docker, and recovers when the daemon comes back), negotiates the API version down
//! to the daemon's (Docker 20.10 speaks 1.41), tells Docker from Podman's Docker-compatible API
//! at first contact ([`EngineKind`], from `/version`), translates [`ContainerSpec`] into the
//! create body, and adapts to what Podman answers differently. [`errors`]: what the engine's
//! error answers mean, mapped to [`EngineError`]s; [`body`]: a [`ContainerSpec`] as Docker's
//! create body; [`listing`]: the container list when Podman answers it with a state bollard
//! does not know. Over 400 lines: the one `ContainerEngine` impl is one block, each method a
//! thin call.

mod body;
mod errors;
mod listing;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::VolumeCreateRequest;
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
    Attached, ContainerEngine, ContainerSpec, ContainerState, Created, EngineKind, ListedContainer,
    ListedVolume, OutputChunk, OutputStream,
};
use crate::error::EngineError;
use errors::{
    absent_ok, is_image_missing, is_name_taken, is_state_improper, kill_settled, map_err,
    removal_settled, unavailable,
};

/// Timeout of one API request (bollard's default is 120 s). Long waits use streams instead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a force-removal Podman refuses while the container exits is retried.
const REMOVE_RETRY_FOR: Duration = Duration::from_secs(10);
/// The pause between those retries.
const REMOVE_RETRY_EVERY: Duration = Duration::from_millis(100);

/// A lazily connected Docker client; clones share the connection.
#[derive(Debug, Default, Clone)]
pub struct DockerEngine {
    client: std::sync::Arc<Mutex<Option<(Docker, EngineKind)>>>,
}

impl DockerEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// The connected client; connects (negotiates the API version, tells Docker from Podman)
    /// on first use and after the daemon was unreachable.
    async fn connected(&self) -> Result<(Docker, EngineKind), EngineError> {
        let mut guard = self.client.lock().await;
        if let Some(connected) = guard.as_ref() {
            return Ok(connected.clone());
        }
        let client = Docker::connect_with_defaults()
            .map_err(unavailable)?
            .with_timeout(REQUEST_TIMEOUT)
            .negotiate_version()
            .await
            .map_err(unavailable)?;
        let version = client
            .version()
            .await
            .map_err(|e| map_err("read the engine's version", None, e))?;
        let components = version.components.unwrap_or_default();
        let kind = engine_kind(components.iter().map(|c| c.name.as_str()));
        tracing::debug!(engine = kind.as_str(), "connected to the container engine");
        *guard = Some((client.clone(), kind));
        Ok((client, kind))
    }

    async fn client(&self) -> Result<Docker, EngineError> {
        Ok(self.connected().await?.0)
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
            Err(e) => Err(self.forget_if_away(map_err(op, container, e)).await),
        }
    }

    /// Forgets the connection after a transport failure so that the next call reconnects.
    async fn forget_if_away(&self, err: EngineError) -> EngineError {
        if err.is_unavailable() {
            *self.client.lock().await = None;
        }
        err
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

/// The engine behind the Docker API, from the component names of its `/version` answer:
/// Podman's service names itself "Podman Engine".
fn engine_kind<'a>(mut components: impl Iterator<Item = &'a str>) -> EngineKind {
    if components.any(|name| name.to_ascii_lowercase().starts_with("podman")) {
        EngineKind::Podman
    } else {
        EngineKind::Docker
    }
}

/// The error for a seccomp profile the engine cannot open: where it comes from.
fn missing_seccomp_profile(profile: &str, message: &str) -> EngineError {
    EngineError::Unsupported {
        engine: "the container engine",
        what: format!("apply the seccomp profile {profile} ({message})"),
        hint: "on Podman, run scripts/setup-podman.sh as root: it writes that profile (Podman's \
               default profile lets code create user namespaces, Docker's does not, and runs \
               never get less than Docker gives)",
    }
}

#[async_trait]
impl ContainerEngine for DockerEngine {
    async fn kind(&self) -> Result<EngineKind, EngineError> {
        Ok(self.connected().await?.1)
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, EngineError> {
        let info = self
            .call("inspect an image", None, |c| async move {
                absent_ok(c.inspect_image(image).await)
            })
            .await?;
        Ok(info.map(|i| i.id.unwrap_or_else(|| image.to_string())))
    }

    async fn create(&self, spec: &ContainerSpec, name: &str) -> Result<Created, EngineError> {
        self.kind().await?.check_runtime(spec.runtime.as_deref())?;
        let body = body::create_body(spec);
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.call("create a container", None, |c| async move {
            match c.create_container(Some(options), body).await {
                Ok(created) => Ok(Created::Id(created.id)),
                Err(e) if is_image_missing(&e) => Ok(Created::ImageMissing),
                Err(e) if is_name_taken(&e) => Ok(Created::NameTaken),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| match (&spec.seccomp_profile, e) {
            (Some(profile), EngineError::Refused { message, .. })
                if message.contains("seccomp profile") =>
            {
                missing_seccomp_profile(profile, &message)
            }
            (_, e) => e,
        })
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
        self.call("kill a container", Some(id), |c| async move {
            kill_settled(c.kill_container(id, Some(options)).await)
        })
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        // Podman refuses to force-remove a container while it is exiting: try again shortly.
        let until = tokio::time::Instant::now() + REMOVE_RETRY_FOR;
        loop {
            let options = options.clone();
            let removed = self
                .call("remove a container", Some(id), |c| async move {
                    match removal_settled(c.remove_container(id, Some(options)).await) {
                        Err(e) if is_state_improper(&e) => Ok(false),
                        other => other.map(|()| true),
                    }
                })
                .await?;
            if removed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                return Err(EngineError::Refused {
                    op: "remove a container",
                    container: Some(id.chars().take(12).collect()),
                    status: 500,
                    message: format!(
                        "the engine still refused after {}s: container state improper",
                        REMOVE_RETRY_FOR.as_secs()
                    ),
                });
            }
            tokio::time::sleep(REMOVE_RETRY_EVERY).await;
        }
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
        let until = tokio::time::Instant::now() + listing::RETRY_FOR;
        loop {
            let client = self.client().await?;
            let list = match client.list_containers(Some(options.clone())).await {
                Ok(list) => list,
                // Podman's `stopped` (see listing.rs): read the list without bollard's models.
                Err(e) if listing::is_unknown_value(&e) => match listing::unix_socket() {
                    Some(socket) => {
                        let listed = listing::list_untyped(socket, label, value, REQUEST_TIMEOUT);
                        return match listed.await {
                            Ok(list) => Ok(list),
                            Err(e) => Err(self.forget_if_away(e).await),
                        };
                    }
                    None if tokio::time::Instant::now() < until => {
                        tokio::time::sleep(listing::RETRY_EVERY).await;
                        continue;
                    }
                    None => return Err(map_err("list containers", None, e)),
                },
                Err(e) => {
                    return Err(self
                        .forget_if_away(map_err("list containers", None, e))
                        .await);
                }
            };
            return Ok(list.into_iter().filter_map(listing::listed).collect());
        }
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
        // Podman lists runtimes it would not honour per container: refused rather than listed.
        self.kind().await?.check_runtime_choice()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_is_told_apart_by_its_version_components() {
        let podman = ["Podman Engine", "Conmon", "OCI Runtime (runc)"];
        assert_eq!(engine_kind(podman.into_iter()), EngineKind::Podman);
        let docker = ["Engine", "containerd", "runc", "docker-init"];
        assert_eq!(engine_kind(docker.into_iter()), EngineKind::Docker);
        assert_eq!(engine_kind(std::iter::empty()), EngineKind::Docker);
    }
}
