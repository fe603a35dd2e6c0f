//! Daemon side of the control socket.
use std::{collections::HashMap, os::unix::fs::PermissionsExt, path::{Path, PathBuf}, time::Duration};

use serde_json::Value;

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{broadcast, mpsc, oneshot, watch},
};

use super::{ControlError, ControlMsg, Request, Response, MAX_LINE};
use crate::{
    sys::procfs,
    tracker::{Discovery, TrackRequest},
};

pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// The socket's directory when this listener made it: removed with the socket, so a daemon
    /// run by hand leaves nothing behind (`/run/mcpmon` would read as an installation).
    made_dir: Option<PathBuf>,
}

impl ControlListener {
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io { path: path.display().to_string(), source };
        let mut made_dir = None;
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(io)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
                made_dir = Some(dir.to_path_buf());
            }
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.display().to_string()));
            }
            // Left behind by a daemon that did not exit cleanly.
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        // Any local user may ask to have their own server tracked; authorization is by peer creds.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
        Ok(Self { listener, path: path.to_path_buf(), made_dir })
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // Only if empty: whatever else was put there meanwhile stays.
        if let Some(dir) = &self.made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Who may have `target_pid` tracked. Tracking your own process is always allowed (it only adds
/// monitoring); another process needs root or the same uid.
pub fn authorize(peer_uid: u32, peer_pid: u32, target_pid: u32, target_uid: Option<u32>) -> Result<Discovery, &'static str> {
    if target_pid == peer_pid {
        return Ok(Discovery::Exec);
    }
    match target_uid {
        None => Err("no such process"),
        Some(_) if peer_uid == 0 => Ok(Discovery::TrackPid),
        Some(u) if u == peer_uid => Ok(Discovery::TrackPid),
        Some(_) => Err("permission denied: the process belongs to another user"),
    }
}

/// What a caller of `servers` and `tail` may see: root sees everything; anyone else only the
/// servers that run as their own uid, because listings and lines carry the server's command
/// line, the paths it opens and the arguments of its tool calls. A line is shown to a non-root
/// caller only when it names a server known to be theirs; anything else (host-wide records, a
/// server whose owner is not known yet, a line that does not parse) is withheld.
#[derive(Debug)]
struct Visibility {
    peer_uid: u32,
    /// server id → uid it runs as, from the listing and from `server_tracked` lines. Server ids
    /// are never reused, so an entry cannot come to mean another server.
    owners: HashMap<u64, u64>,
}

impl Visibility {
    fn new(peer_uid: u32) -> Self {
        Self { peer_uid, owners: HashMap::new() }
    }

    fn sees_all(&self) -> bool {
        self.peer_uid == 0
    }

    fn owns(&self, entry_uid: Option<u64>) -> bool {
        entry_uid == Some(u64::from(self.peer_uid))
    }

    /// The entries of a `servers` listing the caller may see.
    fn listing(&self, servers: Value) -> Value {
        if self.sees_all() {
            return servers;
        }
        let Value::Array(list) = servers else { return Value::Array(vec![]) };
        Value::Array(list.into_iter().filter(|s| self.owns(s["uid"].as_u64())).collect())
    }

    /// Learns who owns the servers tracked before the tail started.
    fn learn_listing(&mut self, servers: &Value) {
        for s in servers.as_array().into_iter().flatten() {
            if let (Some(id), Some(uid)) = (s["id"].as_u64(), s["uid"].as_u64()) {
                self.owners.insert(id, uid);
            }
        }
    }

    /// Whether a tail line may go to the caller; a `server_tracked` line also teaches the owner
    /// of a server tracked after the tail started.
    fn admit_line(&mut self, line: &str) -> bool {
        if self.sees_all() {
            return true;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else { return false };
        let Some(id) = v["server_id"].as_u64() else { return false };
        if v["kind"] == "server_tracked" {
            if let Some(uid) = v["uid"].as_u64() {
                self.owners.insert(id, uid);
            }
        }
        self.owns(self.owners.get(&id).copied())
    }
}

fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.chars().count()) && !name.chars().any(char::is_control)
}

pub async fn serve(cl: ControlListener, tx: mpsc::Sender<ControlMsg>, mut shutdown: watch::Receiver<bool>, tail: broadcast::Sender<String>) {
    loop {
        tokio::select! {
            r = cl.listener.accept() => match r {
                Ok((stream, _)) => { tokio::spawn(handle(stream, tx.clone(), tail.clone())); }
                Err(e) => tracing::warn!(error = %e, "control socket accept"),
            },
            _ = shutdown.changed() => if *shutdown.borrow() { break },
        }
    }
}

async fn handle(stream: UnixStream, tx: mpsc::Sender<ControlMsg>, tail: broadcast::Sender<String>) {
    let Ok(cred) = stream.peer_cred() else { return };
    let (peer_uid, peer_pid) = (cred.uid(), cred.pid().unwrap_or(0) as u32);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd.take(MAX_LINE as u64 + 1));
    let mut line = String::new();
    let resp = match tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line)).await {
        Err(_) => Response::error("timed out waiting for a request"),
        Ok(Err(e)) => Response::error(format!("reading request: {e}")),
        Ok(Ok(_)) if line.len() > MAX_LINE || !line.ends_with('\n') => Response::error("request too long or not newline-terminated"),
        Ok(Ok(_)) if serde_json::from_str::<Request>(&line).map(|r| r == Request::Tail).unwrap_or(false) => {
            return stream_tail(wr, tail.subscribe(), peer_uid, &tx).await;
        }
        Ok(Ok(_)) => answer(&line, peer_uid, peer_pid, &tx).await,
    };
    let mut out = serde_json::to_string(&resp).unwrap_or_default();
    out.push('\n');
    let _ = wr.write_all(out.as_bytes()).await;
}

/// `tail`: every line the daemon writes, as it writes it, until the reader goes away; for a
/// caller other than root, only the lines about their own servers (`Visibility`). A reader too
/// slow for the stream is told how many lines it missed.
async fn stream_tail(mut wr: tokio::net::unix::OwnedWriteHalf, mut rx: broadcast::Receiver<String>, peer_uid: u32, tx: &mpsc::Sender<ControlMsg>) {
    let mut vis = Visibility::new(peer_uid);
    if !vis.sees_all() {
        // Asked after subscribing: a server tracked after the listing has its `server_tracked`
        // line in the stream, so none is left without a known owner.
        match listing(tx).await {
            Ok(v) => vis.learn_listing(&v),
            Err(resp) => {
                let mut out = serde_json::to_string(&resp).unwrap_or_default();
                out.push('\n');
                let _ = wr.write_all(out.as_bytes()).await;
                return;
            }
        }
    }
    loop {
        let line = match rx.recv().await {
            Ok(l) if vis.admit_line(&l) => l,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => format!("{{\"kind\":\"tail_lagged\",\"missed\":{n}}}"),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if wr.write_all(line.as_bytes()).await.is_err() || wr.write_all(b"\n").await.is_err() {
            return;
        }
    }
}

/// Every tracked server, from the pipeline (unfiltered: callers apply `Visibility`).
async fn listing(tx: &mpsc::Sender<ControlMsg>) -> Result<Value, Response> {
    let (reply, rx) = oneshot::channel();
    if tx.send(ControlMsg::Servers(reply)).await.is_err() {
        return Err(Response::error("the daemon is shutting down"));
    }
    rx.await.map_err(|_| Response::error("the daemon is shutting down"))
}

async fn answer(line: &str, peer_uid: u32, peer_pid: u32, tx: &mpsc::Sender<ControlMsg>) -> Response {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    match req {
        Request::Tail => Response::error("tail is answered as a stream"),
        Request::Ping => Response { ok: true, pong: Some(true), daemon_pid: Some(std::process::id()), ..Default::default() },
        Request::Servers => match listing(tx).await {
            Ok(v) => Response { ok: true, servers: Some(Visibility::new(peer_uid).listing(v)), ..Default::default() },
            Err(resp) => resp,
        },
        Request::Track { name, pid } => {
            if !valid_name(&name) {
                return Response::error("name must be 1-128 characters without control characters");
            }
            let target = pid.unwrap_or(peer_pid);
            let how = match authorize(peer_uid, peer_pid, target, procfs::uid_of(target)) {
                Ok(h) => h,
                Err(why) => return Response::error(why),
            };
            let (reply, rx) = oneshot::channel();
            let req = TrackRequest { pid: target, name, how, requester_uid: peer_uid, reply };
            if tx.send(ControlMsg::Track(req)).await.is_err() {
                return Response::error("the daemon is shutting down");
            }
            match rx.await {
                Ok(Ok(ack)) => Response {
                    ok: true,
                    server_id: Some(ack.server_id),
                    name: Some(ack.name),
                    already_tracked: Some(ack.already_tracked),
                    tracked_pids: Some(ack.tracked_pids),
                    ..Default::default()
                },
                Ok(Err(e)) => Response::error(e.to_string()),
                Err(_) => Response::error("the daemon is shutting down"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::TrackAck;
    use serde_json::json;

    #[test]
    fn authorization() {
        assert_eq!(authorize(1000, 50, 50, Some(1000)), Ok(Discovery::Exec));
        assert_eq!(authorize(1000, 50, 60, Some(1000)), Ok(Discovery::TrackPid));
        assert_eq!(authorize(0, 50, 60, Some(1000)), Ok(Discovery::TrackPid));
        assert!(authorize(1000, 50, 60, Some(1001)).is_err());
        assert!(authorize(1000, 50, 60, None).is_err());
    }

    async fn roundtrip(path: &Path, req: &[u8]) -> Response {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap()
    }

    #[tokio::test]
    async fn serves_track_and_ping_and_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let cl = ControlListener::bind(&path).unwrap();
        assert!(matches!(ControlListener::bind(&path), Err(ControlError::InUse(_))));
        let (tx, mut rx) = mpsc::channel::<ControlMsg>(4);
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(cl, tx, stop_rx, broadcast::channel(16).0));
        // A fake tracker.
        tokio::spawn(async move {
            while let Some(ControlMsg::Track(r)) = rx.recv().await {
                let ack = TrackAck { server_id: 7, name: r.name.clone(), already_tracked: false, tracked_pids: vec![r.pid] };
                let _ = r.reply.send(Ok(ack));
            }
        });
        let me = std::process::id();
        let r = roundtrip(&path, b"{\"op\":\"track\",\"name\":\"fs\"}\n").await;
        assert_eq!((r.ok, r.server_id, r.tracked_pids), (true, Some(7), Some(vec![me])));
        let r = roundtrip(&path, b"{\"op\":\"ping\"}\n").await;
        assert_eq!((r.ok, r.daemon_pid), (true, Some(me)));
        let r = roundtrip(&path, b"{\"op\":\"untrack\"}\n").await;
        assert!(!r.ok);
        let r = roundtrip(&path, b"{\"op\":\"track\",\"name\":\"\"}\n").await;
        assert!(!r.ok);
        let mut big = vec![b'x'; MAX_LINE + 10];
        big.push(b'\n');
        let r = roundtrip(&path, &big).await;
        assert!(!r.ok && r.error.unwrap().contains("too long"));
        stop_tx.send(true).unwrap();
        server.await.unwrap();
        assert!(!path.exists(), "socket removed on drop");
    }

    fn listed() -> Value {
        json!([{"id": 1, "name": "mine", "uid": 1000}, {"id": 2, "name": "root's", "uid": 0}, {"id": 3, "name": "theirs", "uid": 1001}, {"id": 4, "name": "no uid"}])
    }

    #[test]
    fn listings_show_others_only_their_own_servers() {
        let names = |v: Value| v.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(names(Visibility::new(0).listing(listed())).len(), 4, "root sees every server");
        assert_eq!(names(Visibility::new(1000).listing(listed())), ["mine"]);
        assert_eq!(names(Visibility::new(1002).listing(listed())), Vec::<String>::new());
        assert_eq!(Visibility::new(1000).listing(json!({"not": "a list"})), json!([]));
    }

    #[test]
    fn tail_lines_reach_others_only_when_they_name_their_own_server() {
        let line = |v: Value| v.to_string();
        let mut root = Visibility::new(0);
        assert!(root.admit_line(&line(json!({"kind": "stats", "events": 5}))));
        assert!(root.admit_line("not json"));

        let mut v = Visibility::new(1000);
        v.learn_listing(&listed());
        assert!(v.admit_line(&line(json!({"kind": "open", "server_id": 1, "uid": 1000, "path": "/home/u/x"}))));
        assert!(!v.admit_line(&line(json!({"kind": "open", "server_id": 2, "uid": 1000, "path": "/root/.ssh/id_rsa"}))), "the server's owner counts, not the process's uid");
        assert!(!v.admit_line(&line(json!({"kind": "tool_call", "server_id": 3, "arguments": {"token": "s3cret"}}))));
        assert!(!v.admit_line(&line(json!({"kind": "alert", "server_id": 4}))), "owner unknown");
        assert!(!v.admit_line(&line(json!({"kind": "stats", "events": 5}))), "host-wide records name no server");
        assert!(!v.admit_line(&line(json!({"kind": "alert", "server": {"id": 1}}))), "only the top-level server_id attributes a line");
        assert!(!v.admit_line("{\"server_id\": 1"), "a line that does not parse");
        // Tracked after the tail started: its `server_tracked` line says whose it is.
        assert!(!v.admit_line(&line(json!({"kind": "exec", "server_id": 5}))));
        assert!(v.admit_line(&line(json!({"kind": "server_tracked", "server_id": 5, "uid": 1000, "server": "new"}))));
        assert!(v.admit_line(&line(json!({"kind": "exec", "server_id": 5}))));
        assert!(!v.admit_line(&line(json!({"kind": "server_tracked", "server_id": 6, "uid": 0, "server": "root's new"}))));
        assert!(!v.admit_line(&line(json!({"kind": "exec", "server_id": 6}))));
    }

    #[tokio::test]
    async fn servers_and_tail_answer_through_the_visibility_filter() {
        // Run as root, everything arrives; run as anyone else (`setpriv --reuid`), only server 1.
        // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
        let me = unsafe { libc::geteuid() };
        let other = if me == 0 { 1000 } else { 0 };
        let listing = json!([{"id": 1, "name": "mine", "uid": me}, {"id": 2, "name": "other", "uid": other}]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let cl = ControlListener::bind(&path).unwrap();
        let (tx, mut rx) = mpsc::channel::<ControlMsg>(4);
        let (stop_tx, stop_rx) = watch::channel(false);
        let tail = broadcast::channel::<String>(16).0;
        let server = tokio::spawn(serve(cl, tx, stop_rx, tail.clone()));
        let fake = listing.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if let ControlMsg::Servers(reply) = m {
                    let _ = reply.send(fake.clone());
                }
            }
        });
        let r = roundtrip(&path, b"{\"op\":\"servers\"}\n").await;
        let names: Vec<Value> = r.servers.unwrap().as_array().unwrap().iter().map(|s| s["name"].clone()).collect();
        assert_eq!(names, if me == 0 { vec![json!("mine"), json!("other")] } else { vec![json!("mine")] });

        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"op\":\"tail\"}\n").await.unwrap();
        let mut lines = BufReader::new(s).lines();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tail.receiver_count() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "tail never subscribed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A non-root tail asks for the listing after subscribing; let it arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (theirs, mine) = (json!({"kind": "open", "server_id": 2}).to_string(), json!({"kind": "open", "server_id": 1}).to_string());
        for l in [theirs.clone(), json!({"kind": "stats"}).to_string(), mine.clone()] {
            tail.send(l).unwrap();
        }
        let mut got = vec![];
        for _ in 0..if me == 0 { 3 } else { 1 } {
            got.push(tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await.unwrap().unwrap().unwrap());
        }
        let stats = json!({"kind": "stats"}).to_string();
        assert_eq!(got, if me == 0 { vec![theirs, stats, mine] } else { vec![mine] });
        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // file stays, nobody listens
        assert!(path.exists());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { ControlListener::bind(&path).unwrap() });
    }

    /// A daemon run by hand (`mcpmon run`, then Ctrl-C) leaves no trace: the socket's directory
    /// goes with it when the daemon made it, so the next run, or the package's install check,
    /// does not find `/run/mcpmon` and take it for an installation. A directory it found (the
    /// service's `RuntimeDirectory`, or one holding anything else) stays.
    #[test]
    fn the_socket_directory_goes_with_the_daemon_that_made_it() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("run-mcpmon");
        let path = dir.join("mcpmon.sock");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        drop(ControlListener::bind(&path).unwrap());
        assert!(!dir.exists(), "the directory the daemon made is gone");
        std::fs::create_dir(&dir).unwrap();
        drop(ControlListener::bind(&path).unwrap());
        assert!(dir.exists() && !path.exists(), "a directory it found stays, without the socket");
    }
}
