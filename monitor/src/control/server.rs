//! Daemon side of the control socket.
use std::{os::unix::fs::PermissionsExt, path::{Path, PathBuf}, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{broadcast, mpsc, oneshot, watch},
};

use super::{ControlError, ControlMsg, Request, Response, MAX_LINE};
use crate::{
    discovery::procfs,
    tracker::{Discovery, TrackRequest},
};

pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlListener {
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(io)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
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
        Ok(Self { listener, path: path.to_path_buf() })
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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

fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.chars().count()) && !name.chars().any(char::is_control)
}

pub async fn serve(cl: ControlListener, tx: mpsc::Sender<ControlMsg>, mut shutdown: watch::Receiver<bool>, tail: broadcast::Sender<String>) {
    loop {
        tokio::select! {
            r = cl.listener.accept() => match r {
                Ok((stream, _)) => { tokio::spawn(handle(stream, tx.clone(), tail.clone())); }
                Err(e) => tracing::warn!("control socket accept: {e}"),
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
            return stream_tail(wr, tail.subscribe(), peer_uid).await;
        }
        Ok(Ok(_)) => answer(&line, peer_uid, peer_pid, &tx).await,
    };
    let mut out = serde_json::to_string(&resp).unwrap_or_default();
    out.push('\n');
    let _ = wr.write_all(out.as_bytes()).await;
}

/// `tail`: every line the daemon writes, as it writes it, until the reader goes away. Only root
/// may tail (lines carry every user's paths and tool arguments). A reader too slow for the
/// stream is told how many lines it missed.
async fn stream_tail(mut wr: tokio::net::unix::OwnedWriteHalf, mut rx: broadcast::Receiver<String>, peer_uid: u32) {
    if peer_uid != 0 {
        let mut out = serde_json::to_string(&Response::error("tail needs root")).unwrap_or_default();
        out.push('\n');
        let _ = wr.write_all(out.as_bytes()).await;
        return;
    }
    loop {
        let line = match rx.recv().await {
            Ok(l) => l,
            Err(broadcast::error::RecvError::Lagged(n)) => format!("{{\"kind\":\"tail_lagged\",\"missed\":{n}}}"),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if wr.write_all(line.as_bytes()).await.is_err() || wr.write_all(b"\n").await.is_err() {
            return;
        }
    }
}

async fn answer(line: &str, peer_uid: u32, peer_pid: u32, tx: &mpsc::Sender<ControlMsg>) -> Response {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::error(format!("bad request: {e}")),
    };
    match req {
        Request::Tail => Response::error("tail is answered as a stream"),
        Request::Ping => Response { ok: true, pong: Some(true), daemon_pid: Some(std::process::id()), ..Default::default() },
        Request::Servers => {
            let (reply, rx) = oneshot::channel();
            if tx.send(ControlMsg::Servers(reply)).await.is_err() {
                return Response::error("the daemon is shutting down");
            }
            match rx.await {
                Ok(v) => Response { ok: true, servers: Some(v), ..Default::default() },
                Err(_) => Response::error("the daemon is shutting down"),
            }
        }
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

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // file stays, nobody listens
        assert!(path.exists());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { ControlListener::bind(&path).unwrap() });
    }
}
