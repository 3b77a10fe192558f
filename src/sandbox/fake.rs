//! The recording fake engine (tests only), in the spirit of youki's `Syscall` test double: an
//! in-memory [`ContainerEngine`] that records every call in order (`"create <name>"`,
//! `"kill <id>"`, ...), keeps containers, volumes and images, and plays a scripted
//! [`Behaviour`] in each started container. Programs go through the real attach path: stdin is a
//! `tokio::io::duplex` pipe whose JSON header line the fake reads like `runner.py` (taking the
//! end marker from it), output is an mpsc-backed stream. Switches make the engine go away (at
//! once, after N calls, or mid-run), so the paths where Docker disappears can be tested.
//! Longer than most files: one trait impl plus its test helpers belong together.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::engine::{
    Attached, ContainerEngine, ContainerSpec, ContainerState, Created, ListedContainer,
    ListedVolume, MountKind, OutputChunk,
};
use super::labels::LABEL_PURPOSE;
use super::lifecycle::{lock, unix_now};
use crate::error::EngineError;

/// What a started container does. All but `Idle` first read the runner's input like
/// `runner.py` (the JSON header line, then the source until stdin closes).
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Prints, then ends by itself: `"\n<marker>:<status>\n"` on both streams, exit `status`.
    Exits {
        stdout: String,
        stderr: String,
        status: i64,
    },
    /// Prints, then stops WITHOUT a marker (killed, OOM, `os._exit`): inspect tells the rest.
    Dies {
        stdout: String,
        stderr: String,
        exit_code: Option<i64>,
        oom: bool,
    },
    /// Never prints the marker and never ends until killed (exit 137).
    Hangs,
    /// Prints this many bytes of stdout, in 64 KiB chunks, then ends with status 0.
    Floods(usize),
    /// Prints nothing and ends (exit 0) when stdin closes: the sentinel.
    Idle,
    /// Prints `stdout`, then the output stream fails with `Unavailable` (with `down`, every
    /// later call fails too); the container keeps running until killed.
    Cut { stdout: String, down: bool },
    /// Anything else, step by step; without a final `Exit` the container hangs until killed.
    Steps(Vec<Step>),
}

/// One step of a script. In text, `{marker}` stands for the marker from the header.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Out(String),
    Err(String),
    /// Stdout text, one byte per chunk.
    OutBytewise(String),
    Flood(usize),
    Pause(Duration),
    /// The output stream fails with `Unavailable`; with `down` the whole engine goes away.
    Cut {
        down: bool,
    },
    /// The container stops with this state (the stream ends).
    Exit {
        code: Option<i64>,
        oom: bool,
    },
}

impl Behaviour {
    /// A program that prints `stdout` and exits 0.
    pub fn ok(stdout: &str) -> Self {
        Behaviour::Exits {
            stdout: stdout.into(),
            stderr: String::new(),
            status: 0,
        }
    }

    fn steps(self) -> Vec<Step> {
        let marker = |s: i64| format!("\n{{marker}}:{s}\n");
        let exit = |code: Option<i64>, oom| Step::Exit { code, oom };
        match self {
            Behaviour::Exits {
                stdout,
                stderr,
                status,
            } => vec![
                Step::Out(stdout),
                Step::Err(stderr),
                Step::Out(marker(status)),
                Step::Err(marker(status)),
                exit(Some(status), false),
            ],
            Behaviour::Dies {
                stdout,
                stderr,
                exit_code,
                oom,
            } => {
                vec![Step::Out(stdout), Step::Err(stderr), exit(exit_code, oom)]
            }
            Behaviour::Floods(n) => vec![
                Step::Flood(n),
                Step::Out(marker(0)),
                Step::Err(marker(0)),
                exit(Some(0), false),
            ],
            Behaviour::Cut { stdout, down } => vec![Step::Out(stdout), Step::Cut { down }],
            Behaviour::Steps(steps) => steps,
            Behaviour::Hangs | Behaviour::Idle => Vec::new(),
        }
    }
}

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

impl FakeEngine {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

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

    pub fn add_image(&self, name: &str) -> String {
        let id = format!("sha256:image-{name}");
        lock(&self.state)
            .images
            .insert(name.to_string(), id.clone());
        id
    }

    /// The next started container does `b` (queued in order, before the chooser).
    pub fn push(&self, b: Behaviour) {
        lock(&self.state).queue.push_back(b);
    }

    /// Chooses the behaviour of each started container from its name and spec.
    pub fn behave(&self, f: impl Fn(&str, &ContainerSpec) -> Option<Behaviour> + Send + 'static) {
        lock(&self.state).chooser = Some(Box::new(f));
    }

    /// Every call fails with `Unavailable` (true) or is answered again (false).
    pub fn set_down(&self, down: bool) {
        let mut st = lock(&self.state);
        (st.down, st.down_after) = (down, None);
    }

    /// The next `n` calls are answered, every later one fails with `Unavailable`.
    pub fn down_after(&self, n: usize) {
        lock(&self.state).down_after = Some(n);
    }

    /// Fails every open output stream with `Unavailable` (the daemon restarted).
    pub fn cut_streams(&self) {
        lock(&self.state)
            .containers
            .iter()
            .for_each(|c| c.cut.cancel());
    }

    /// Every call so far, in order, as `"<op> <target>"`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// The operations called on container `id`, in order.
    pub fn ops_on(&self, id: &str) -> Vec<String> {
        let calls = self.calls();
        let on = |c: &String| c.split(' ').nth(1) == Some(id);
        calls
            .iter()
            .filter(|c| on(c))
            .filter_map(|c| c.split(' ').next().map(String::from))
            .collect()
    }

    /// Ids of the containers still present.
    pub fn containers(&self) -> Vec<String> {
        let st = lock(&self.state);
        st.containers
            .iter()
            .filter(|c| !c.removed)
            .map(|c| c.id.clone())
            .collect()
    }

    /// Ids of every container ever created, in order, removed or not.
    pub fn created(&self) -> Vec<String> {
        lock(&self.state)
            .containers
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    /// Containers ever created with this purpose label.
    pub fn count_created(&self, purpose: &str) -> usize {
        let st = lock(&self.state);
        st.containers
            .iter()
            .filter(|c| {
                c.spec
                    .labels
                    .get(LABEL_PURPOSE)
                    .is_some_and(|p| p == purpose)
            })
            .count()
    }

    /// `(name, spec, running)` of a container, removed or not.
    pub fn container(&self, id: &str) -> Option<(String, ContainerSpec, bool)> {
        let st = lock(&self.state);
        let c = st.containers.iter().find(|c| c.id == id)?;
        Some((c.name.clone(), c.spec.clone(), *c.running.borrow()))
    }

    /// The JSON header and source the container's runner received.
    pub fn received(&self, id: &str) -> Option<(serde_json::Value, String)> {
        lock(&self.state)
            .containers
            .iter()
            .find(|c| c.id == id)?
            .received
            .clone()
    }

    /// A container made by someone else (another server); `created` in Unix seconds.
    pub fn add_container(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        running: bool,
        created: i64,
    ) -> String {
        let spec = ContainerSpec {
            labels,
            ..Default::default()
        };
        let mut st = lock(&self.state);
        let id = new_container(&mut st, spec, name, created);
        if let Some(c) = st.find(&id) {
            c.running.send_replace(running);
        }
        id
    }

    pub fn volumes(&self) -> Vec<String> {
        lock(&self.state).volumes.keys().cloned().collect()
    }

    pub fn add_archive(&self, path: &str, tar: Bytes) {
        lock(&self.state).archives.insert(path.to_string(), tar);
    }

    /// Polls until `f` holds (background work settles), for at most 2 s; whether it held.
    pub async fn until(&self, f: impl Fn(&FakeEngine) -> bool) -> bool {
        for _ in 0..200 {
            if f(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f(self)
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

/// The container's "process": plays its behaviour until it exits, is killed or is cut off.
async fn process(
    state: Arc<Mutex<State>>,
    id: String,
    b: Behaviour,
    io: Option<(DuplexStream, Tx)>,
    killed: CancellationToken,
    cut: CancellationToken,
) {
    let (stdin, mut out) = io.map_or((None, None), |(i, o)| (Some(i), Some(o)));
    enum Stop {
        Exit(Option<i64>, bool),
        Killed,
        Cut,
    }
    let stop = tokio::select! {
        (code, oom) = play(&state, &id, b, stdin, &mut out) => Stop::Exit(code, oom),
        _ = killed.cancelled() => Stop::Killed,
        _ = cut.cancelled() => Stop::Cut,
    };
    match stop {
        Stop::Exit(code, oom) => {
            if let Some(c) = lock(&state).find(&id) {
                c.stop(code, oom);
            }
        }
        Stop::Killed => {}
        Stop::Cut => {
            if let Some(tx) = out.take() {
                let _ = tx.send(Err(unavailable()));
            }
            killed.cancelled().await;
        }
    }
}

async fn play(
    state: &Mutex<State>,
    id: &str,
    b: Behaviour,
    stdin: Option<DuplexStream>,
    out: &mut Option<Tx>,
) -> (Option<i64>, bool) {
    let idle = b == Behaviour::Idle;
    let Some(mut stdin) = stdin else {
        return std::future::pending().await;
    };
    if idle {
        let _ = stdin.read_to_end(&mut Vec::new()).await;
        return (Some(0), false);
    }
    let mut reader = BufReader::new(stdin);
    let (mut line, mut source) = (String::new(), String::new());
    let _ = reader.read_line(&mut line).await;
    let Ok(header) = serde_json::from_str::<serde_json::Value>(&line) else {
        return (Some(0), false); // no program: runner.py leaves with os._exit(0)
    };
    let _ = reader.read_to_string(&mut source).await;
    let marker = header["marker"].as_str().unwrap_or_default().to_string();
    if let Some(c) = lock(state).find(id) {
        c.received = Some((header, source));
    }
    let send = |out: &Option<Tx>, chunk: OutputChunk| {
        if let Some(tx) = out {
            let _ = tx.send(Ok(chunk));
        }
    };
    let text = |s: &str| Bytes::from(s.replace("{marker}", &marker));
    for step in b.steps() {
        match step {
            Step::Out(s) if !s.is_empty() => send(out, OutputChunk::Stdout(text(&s))),
            Step::Err(s) if !s.is_empty() => send(out, OutputChunk::Stderr(text(&s))),
            Step::Out(_) | Step::Err(_) => {}
            Step::OutBytewise(s) => text(&s)
                .iter()
                .for_each(|b| send(out, OutputChunk::Stdout(Bytes::copy_from_slice(&[*b])))),
            Step::Flood(n) => {
                let block: Vec<u8> = (0..65536)
                    .map(|i| if i % 64 == 63 { b'\n' } else { b'x' })
                    .collect();
                for at in (0..n).step_by(block.len()) {
                    send(
                        out,
                        OutputChunk::Stdout(Bytes::copy_from_slice(
                            &block[..(n - at).min(block.len())],
                        )),
                    );
                    tokio::task::yield_now().await;
                }
            }
            Step::Pause(d) => tokio::time::sleep(d).await,
            Step::Cut { down } => {
                lock(state).down |= down;
                if let Some(tx) = out.take() {
                    let _ = tx.send(Err(unavailable()));
                }
            }
            Step::Exit { code, oom } => return (code, oom),
        }
        tokio::task::yield_now().await;
    }
    std::future::pending().await
}

#[async_trait]
impl ContainerEngine for FakeEngine {
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
        tokio::spawn(process(
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
            .map(|_| vec!["runc".to_string()])
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
