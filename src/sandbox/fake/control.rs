//! The test side of the fake: scripting containers, switching the engine off, and reading
//! back what happened (the call log, containers, what runners received).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Behaviour, FakeEngine, new_container};
use crate::sandbox::engine::{ContainerSpec, EngineKind};
use crate::sandbox::labels::LABEL_PURPOSE;
use crate::sandbox::lifecycle::lock;

impl FakeEngine {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add_image(&self, name: &str) -> String {
        let id = format!("sha256:image-{name}");
        lock(&self.state)
            .images
            .insert(name.to_string(), id.clone());
        id
    }

    /// The image `name` now has the id `id` (rebuilt), or is gone (`None`).
    pub fn set_image(&self, name: &str, id: Option<&str>) {
        let mut st = lock(&self.state);
        match id {
            Some(id) => st.images.insert(name.to_string(), id.to_string()),
            None => st.images.remove(name),
        };
    }

    /// The engine plays `kind` from now on.
    pub fn set_kind(&self, kind: EngineKind) {
        lock(&self.state).kind = Some(kind);
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
