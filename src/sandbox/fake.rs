//! The recording fake engine (tests only), in the spirit of youki's `Syscall` test double: an
//! in-memory [`ContainerEngine`] that records every call in order (`"create <name>"`,
//! `"kill <id>"`, ...), keeps containers, volumes and images, and plays a scripted
//! [`Behaviour`] in each started container. Programs go through the real attach path: stdin is a
//! `tokio::io::duplex` pipe whose JSON header line the fake reads like `runner.py` (taking the
//! end marker from it), output is an mpsc-backed stream. Switches make the engine go away (at
//! once, after N calls, or mid-run), so the paths where Docker disappears can be tested.
//! Here: the engine itself; [`script`]: what a started container does; [`control`]: what
//! tests steer and read back.

mod control;
mod script;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::engine::{
    Attached, ContainerEngine, ContainerSpec, ContainerState, Created, EngineKind, ListedContainer,
    ListedVolume, MountKind, OutputChunk, OutputStream,
};
use super::labels::LABEL_PURPOSE;
use super::lifecycle::{lock, unix_now};
use crate::error::EngineError;
pub use script::{Behaviour, Step};

type Tx = mpsc::UnboundedSender<Result<OutputChunk, EngineError>>;
type Chooser = Box<dyn Fn(&str, &ContainerSpec) -> Option<Behaviour> + Send>;

struct Container {
    id: String,
    name: String,
    spec: ContainerSpec,
    created: i64,
    /// `true` while running; `wait` watches it.
    running: watch::Sender<bool>,
    exit_code: Option<i64>,
    oom: bool,
    removed: bool,
    /// The container's side of an attach (stdin reader, output sender), until `start`.
    io: Option<(DuplexStream, Tx)>,
    killed: CancellationToken,
    cut: CancellationToken,
    /// The runner's JSON header and the source it was fed.
    received: Option<(serde_json::Value, String)>,
}

impl Container {
    fn stop(&mut self, code: Option<i64>, oom: bool) {
        if *self.running.borrow() {
            (self.exit_code, self.oom) = (code, oom);
            self.running.send_replace(false);
        }
    }
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    containers: Vec<Container>,
    volumes: BTreeMap<String, HashMap<String, String>>,
    images: HashMap<String, String>,
    archives: HashMap<String, Bytes>,
    queue: VecDeque<Behaviour>,
    chooser: Option<Chooser>,
    down: bool,
    /// Calls still answered before the engine goes away.
    down_after: Option<usize>,
    /// The engine it plays (Docker unless a test sets Podman); asking is not recorded.
    kind: Option<EngineKind>,
}

impl State {
    fn find(&mut self, id: &str) -> Option<&mut Container> {
        self.containers
            .iter_mut()
            .find(|c| !c.removed && (c.id == id || c.name == id))
    }

    fn get(&mut self, op: &'static str, id: &str) -> Result<&mut Container, EngineError> {
        self.find(id).ok_or_else(|| EngineError::Refused {
            op,
            container: Some(id.to_string()),
            status: 404,
            message: "no such container".into(),
        })
    }

    /// Queue first, then the chooser, then: `Idle` for sentinels, else a silent exit 0.
    fn choose(&mut self, name: &str, spec: &ContainerSpec) -> Behaviour {
        let sentinel = spec
            .labels
            .get(LABEL_PURPOSE)
            .is_some_and(|p| p == "sentinel");
        self.queue
            .pop_front()
            .or_else(|| self.chooser.as_ref().and_then(|f| f(name, spec)))
            .unwrap_or(if sentinel {
                Behaviour::Idle
            } else {
                Behaviour::ok("")
            })
    }
}

/// The recording fake. Share it as `Arc<FakeEngine>` (it coerces to `Arc<dyn ContainerEngine>`).
#[derive(Default)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
}

impl FakeEngine {
    /// Records a call; fails it when the engine is (or just went) down.
    fn enter(&self, call: String) -> Result<MutexGuard<'_, State>, EngineError> {
        let mut st = lock(&self.state);
        st.calls.push(call);
        match st.down_after {
            Some(0) => (st.down, st.down_after) = (true, None),
            Some(n) => st.down_after = Some(n - 1),
            None => {}
        }
        if st.down { Err(unavailable()) } else { Ok(st) }
    }
}

impl std::fmt::Debug for FakeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeEngine")
    }
}

pub fn unavailable() -> EngineError {
    EngineError::Unavailable {
        source: "the fake engine is down".into(),
    }
}

fn new_container(st: &mut State, spec: ContainerSpec, name: &str, created: i64) -> String {
    let id = format!("id{:02}", st.containers.len() + 1);
    st.containers.push(Container {
        id: id.clone(),
        name: name.to_string(),
        spec,
        created,
        running: watch::channel(false).0,
        exit_code: None,
        oom: false,
        removed: false,
        io: None,
        killed: CancellationToken::new(),
        cut: CancellationToken::new(),
        received: None,
    });
    id
}

#[async_trait]
impl ContainerEngine for FakeEngine {
    async fn kind(&self) -> Result<EngineKind, EngineError> {
        let st = lock(&self.state);
        if st.down {
            return Err(unavailable());
        }
        Ok(st.kind.unwrap_or(EngineKind::Docker))
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, EngineError> {
        Ok(self
            .enter(format!("image_id {image}"))?
            .images
            .get(image)
            .cloned())
    }

    async fn create(&self, spec: &ContainerSpec, name: &str) -> Result<Created, EngineError> {
        let mut st = self.enter(format!("create {name}"))?;
        if !st.images.contains_key(&spec.image) {
            return Ok(Created::ImageMissing);
        }
        if st.find(name).is_some() {
            return Ok(Created::NameTaken);
        }
        Ok(Created::Id(new_container(
            &mut st,
            spec.clone(),
            name,
            unix_now() as i64,
        )))
    }

    async fn attach(&self, id: &str) -> Result<Attached, EngineError> {
        let mut st = self.enter(format!("attach {id}"))?;
        let c = st.get("attach to a container", id)?;
        let (input, container_side) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::unbounded_channel();
        c.io = Some((container_side, tx));
        let output =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
            );
        Ok(Attached {
            output: Box::pin(output),
            input: Box::pin(input),
        })
    }

    async fn logs(&self, id: &str) -> Result<OutputStream, EngineError> {
        let _st = self.enter(format!("logs {id}"))?;
        Err(EngineError::Refused {
            op: "read a container's logs",
            container: Some(id.to_string()),
            status: 501,
            message: "the recording fake keeps no logs".to_string(),
        })
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        let mut st = self.enter(format!("start {id}"))?;
        let c = st.get("start a container", id)?;
        if *c.running.borrow() {
            return Ok(());
        }
        c.running.send_replace(true);
        let (name, spec, io) = (c.name.clone(), c.spec.clone(), c.io.take());
        let (killed, cut) = (c.killed.clone(), c.cut.clone());
        let b = st.choose(&name, &spec);
        tokio::spawn(script::process(
            Arc::clone(&self.state),
            id.to_string(),
            b,
            io,
            killed,
            cut,
        ));
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<(), EngineError> {
        let mut rx = self
            .enter(format!("wait {id}"))?
            .get("wait for a container", id)?
            .running
            .subscribe();
        let _ = rx.wait_for(|running| !running).await;
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerState, EngineError> {
        let mut st = self.enter(format!("inspect {id}"))?;
        let c = st.get("inspect a container", id)?;
        let mounts = c
            .spec
            .mounts
            .iter()
            .map(|m| (m.source.clone(), m.target.clone()))
            .collect();
        Ok(ContainerState {
            running: *c.running.borrow(),
            exit_code: c.exit_code,
            oom_killed: c.oom,
            mounts,
        })
    }

    async fn kill(&self, id: &str) -> Result<(), EngineError> {
        if let Some(c) = self.enter(format!("kill {id}"))?.find(id) {
            c.stop(Some(137), false);
            c.killed.cancel();
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), EngineError> {
        if let Some(c) = self.enter(format!("remove {id}"))?.find(id) {
            c.stop(Some(137), false);
            c.killed.cancel();
            (c.removed, c.io) = (true, None);
        }
        Ok(())
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), EngineError> {
        let mut st = self.enter(format!("rename {id} {name}"))?;
        if st.find(name).is_some() {
            let container = Some(id.to_string());
            return Err(EngineError::Refused {
                op: "rename a container",
                container,
                status: 409,
                message: "name taken".into(),
            });
        }
        st.get("rename a container", id)?.name = name.to_string();
        Ok(())
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<ListedContainer>, EngineError> {
        let st = self.enter(format!("list {label}={value}"))?;
        let listed = st
            .containers
            .iter()
            .filter(|c| !c.removed && c.spec.labels.get(label).is_some_and(|v| v == value));
        Ok(listed
            .map(|c| ListedContainer {
                id: c.id.clone(),
                labels: c.spec.labels.clone(),
                running: *c.running.borrow(),
                created: c.created,
            })
            .collect())
    }

    async fn volume_exists(&self, name: &str) -> Result<bool, EngineError> {
        Ok(self
            .enter(format!("volume_exists {name}"))?
            .volumes
            .contains_key(name))
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<bool, EngineError> {
        let mut st = self.enter(format!("ensure_volume {name}"))?;
        let created = !st.volumes.contains_key(name);
        st.volumes.entry(name.to_string()).or_insert(labels);
        Ok(created)
    }

    /// Refused (409) while a container mounts the volume, like Docker.
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let mut st = self.enter(format!("remove_volume {name}"))?;
        let mounts = |c: &Container| {
            c.spec
                .mounts
                .iter()
                .any(|m| m.kind == MountKind::Volume && m.source == name)
        };
        if st.containers.iter().any(|c| !c.removed && mounts(c)) {
            let message = "volume is in use".into();
            return Err(EngineError::Refused {
                op: "remove a volume",
                container: None,
                status: 409,
                message,
            });
        }
        st.volumes.remove(name);
        Ok(())
    }

    async fn list_volumes(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<ListedVolume>, EngineError> {
        let st = self.enter(format!("list_volumes {label}={value}"))?;
        let listed = st
            .volumes
            .iter()
            .filter(|(_, l)| l.get(label).is_some_and(|v| v == value));
        Ok(listed
            .map(|(name, labels)| ListedVolume {
                name: name.clone(),
                labels: labels.clone(),
            })
            .collect())
    }

    async fn upload_archive(&self, id: &str, path: &str, _tar: Bytes) -> Result<(), EngineError> {
        self.enter(format!("upload {id} {path}"))?
            .get("upload an archive", id)
            .map(drop)
    }

    /// What [`FakeEngine::add_archive`] stored for `path`; 404 otherwise.
    async fn download_archive(&self, id: &str, path: &str) -> Result<Bytes, EngineError> {
        let mut st = self.enter(format!("download {id} {path}"))?;
        st.get("download an archive", id)?;
        st.archives
            .get(path)
            .cloned()
            .ok_or_else(|| EngineError::Refused {
                op: "download an archive",
                container: Some(id.to_string()),
                status: 404,
                message: "no such path".into(),
            })
    }

    async fn runtimes(&self) -> Result<Vec<String>, EngineError> {
        self.enter("runtimes".into())
            .map(|_| vec!["runc".to_string(), "runsc".to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn smoke_a_program_answers_with_the_marker() {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let fake = FakeEngine::new();
        fake.add_image("img");
        fake.push(Behaviour::ok("hi\n"));
        let spec = ContainerSpec {
            image: "img".into(),
            ..Default::default()
        };
        let Created::Id(id) = fake.create(&spec, "n1").await.unwrap() else {
            panic!("not created")
        };
        assert_eq!(fake.create(&spec, "n1").await.unwrap(), Created::NameTaken);
        let Attached {
            mut output,
            mut input,
        } = fake.attach(&id).await.unwrap();
        fake.start(&id).await.unwrap();
        input
            .write_all(b"{\"marker\":\"mk\"}\nprint('hi')")
            .await
            .unwrap();
        input.shutdown().await.unwrap();
        let mut seen = Vec::new();
        while let Some(Ok(chunk)) = output.next().await {
            seen.push(chunk);
        }
        assert_eq!(seen[0], OutputChunk::Stdout(Bytes::from("hi\n")));
        assert_eq!(seen[1], OutputChunk::Stdout(Bytes::from("\nmk:0\n")));
        assert_eq!(seen[2], OutputChunk::Stderr(Bytes::from("\nmk:0\n")));
        fake.wait(&id).await.unwrap();
        assert_eq!(fake.inspect(&id).await.unwrap().exit_code, Some(0));
        assert_eq!(fake.received(&id).unwrap().1, "print('hi')");
        assert_eq!(fake.ops_on(&id), ["attach", "start", "wait", "inspect"]);
    }
}
