//! A server in a container (`docker run -i IMAGE`), one tree under its runner. The client starts
//! the CLI, which is tracked as the server (by config or by its own handshake) and holds the
//! client's stdio; the container's processes run under the engine's shim, below no tracked
//! process. The container's first process reads the initialize the CLI relayed through the
//! shim's pipes, so handshake discovery finds it; here it joins the CLI's server instead of
//! becoming a second one: same server id, same tool calls in flight, its events carrying the
//! container (engine, id, image, name).
use std::sync::Arc;

use super::Pipeline;
use crate::{
    discovery::{
        adopt::Intent,
        clients::runners,
        container::{self, Container},
    },
    output::Record,
    sys::procfs,
    tracker::Discovery,
};

/// What a handshake candidate's container says (`Err(intent)`: not in one, decide as usual).
pub(super) enum InContainer {
    /// Joined its runner's server; the candidate's own record is not the server's stream.
    Joined,
    /// In a container no tracked runner started: its own server, named after the image.
    Own(Intent, Arc<Container>),
}

impl Pipeline {
    /// Called for a handshake decided as a server: joins a container's process to the server of
    /// the `docker run` (or podman) CLI that runs its image.
    pub(super) async fn container_handshake(&mut self, intent: Intent) -> Result<InContainer, Intent> {
        let Intent::Sniff { pid, how: Discovery::Handshake, .. } = &intent else { return Err(intent) };
        let pid = *pid;
        let Some(c) = container::of_pid(pid, std::path::Path::new(container::DOCKER_ROOT)) else { return Err(intent) };
        let c = Arc::new(c);
        let Some(sid) = self.runner_of(&c) else {
            let Intent::Sniff { pid, name, how, parent, runner } = intent else { unreachable!() };
            let name = c.image.clone().unwrap_or(name);
            return Ok(InContainer::Own(Intent::Sniff { pid, name, how, parent, runner }, c));
        };
        let tracked = match self.tracker.join(pid, sid) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(pid, server_id = sid, error = %e, "container: joining its runner's server failed");
                return Err(intent);
            }
        };
        let (i, o) = procfs::stdio_streams(pid);
        for ino in [i, o].into_iter().flatten() {
            self.relayed_stdio.insert(ino, sid);
        }
        self.seed_tree(&tracked, sid);
        for &p in &tracked {
            self.tree.set_container(p, c.clone());
        }
        let server = match self.tracker.server_mut(sid) {
            Some(s) => {
                s.containers.push(c.clone());
                s.name.clone()
            }
            None => String::new(),
        };
        tracing::info!(pid, server_id = sid, server = %server, image = ?c.image, id = %c.id, "container: joined its runner's server");
        self.out.emit(Record::ContainerJoined { time: Self::now(), server_id: sid, server, pid, tracked_pids: tracked, container: c }).await;
        Ok(InContainer::Joined)
    }

    /// The tracked server whose runner started a container of `c`'s image: the oldest launch
    /// that has no container yet (launches side by side start their containers in about the
    /// order they started), else the newest with any. Without the image (not Docker's record), a
    /// runner server of the same engine.
    fn runner_of(&self, c: &Container) -> Option<u32> {
        let fits: Vec<&crate::tracker::ServerInfo> = self
            .tracker
            .servers()
            .filter(|s| {
                let Some(l) = runners::launch(crate::discovery::adopt::past_interpreter(&s.command)) else { return false };
                match &c.image {
                    Some(img) => matches!(l.runner, "docker" | "podman") && container::same_image(&l.target, img),
                    None => l.runner == c.engine || (c.engine == "containerd" && l.runner == "docker"),
                }
            })
            .collect();
        let first_free = fits.iter().filter(|s| s.containers.is_empty()).min_by_key(|s| (s.since, s.id));
        first_free.or_else(|| fits.iter().max_by_key(|s| (s.since, s.id))).map(|s| s.id)
    }

    /// A container no tracked runner started, tracked as its own server: its processes carry it.
    pub(super) fn mark_container(&mut self, sid: u32, c: Arc<Container>) {
        for p in self.tree.pids_of(sid) {
            self.tree.set_container(p, c.clone());
        }
        if let Some(s) = self.tracker.server_mut(sid) {
            s.containers.push(c);
        }
    }

    /// A server is gone: its containers' streams are no longer relayed ones.
    pub(super) fn forget_relayed(&mut self, sid: u32) {
        self.relayed_stdio.retain(|_, s| *s != sid);
    }
}
