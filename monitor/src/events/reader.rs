//! Drains the kernel ring buffer as it becomes readable and forwards decoded events.
//!
//! The channel to the pipeline is bounded and sent to with `.await`: when the daemon falls behind,
//! back-pressure reaches the ring buffer and the *kernel* counts what it could not deliver
//! (`LOST`), so no userspace queue ever drops an event without it being counted.
//!
//! Under a flood the reader polls instead of waiting for readiness. The kernel wakes a ring's
//! reader whenever it commits a record the reader had caught up to, so a daemon that keeps up
//! is woken every few events: a third of its time went to `epoll_wait` and the scheduler
//! (bench section 2 profile). After a drain that found `BUSY` events or more, the reader sleeps
//! one `POLL` and drains again without being woken; a quiet ring (a drain below `BUSY`) goes back
//! to readiness, so a lone event (a secret read after silence) is handled as soon as it lands.
//! Under a flood an event waits at most one `POLL` more (rounded up to tokio's 1 ms timer tick:
//! 0.5-1.5 ms); the default 8 MiB ring holds far more than that of the fastest producer, so
//! the wait costs no loss (a ring made tiny with `--ringbuf-mib` loses sooner, and counts it).
//!
//! The daemon runs this on a thread of its own ([`spawn`]), so that it takes records as they
//! land even while the pipeline is busy (setting up a server takes it tens of milliseconds).
//! A handshake candidate's /proc is read here, as its record is taken: by the time the pipeline
//! gets to it, a container that answered one call may have exited, its shim with it.
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{decode::{decode_in, Paths}, Body, DecodeError, Event};

pub type Decoded = Result<Event, DecodeError>;

/// What one drain took, handed on whole: one channel message per drain, not per event.
pub type Batch = Vec<Decoded>;

/// Largest batch taken from the ring before handing it on (keeps latency low under load).
const BATCH: usize = 256;
/// Captured stdio and socket bytes after which a batch goes on even if it holds fewer than
/// `BATCH` events. The channel holds 64 batches: counted in events only, a flood of 4 KiB
/// stdio chunks could queue 64 MiB while the pipeline was busy (a 100 MiB line raised the
/// daemon's peak RSS by 34 MiB in a CI run). With this bound the queue holds at most about
/// 8 MiB of captured bytes (32 chunks a batch still share one hand-over).
const BATCH_BYTES: usize = 128 * 1024;
/// A drain of at least this many events means a flood: poll rather than be woken per event.
const BUSY: usize = 16;
/// How long the reader lets a flood fill the ring between drains.
const POLL: Duration = Duration::from_micros(500);

/// Takes events from the ring into `batch` (empty on entry) until the ring is empty (false) or
/// the batch is full (true: `BATCH` events, or `BATCH_BYTES` of captured bytes; more may wait).
fn drain(ring: &mut RingBuf<MapData>, batch: &mut Vec<Decoded>, paths: &mut Paths) -> bool {
    let mut bytes = 0;
    while batch.len() < BATCH && bytes < BATCH_BYTES {
        let Some(item) = ring.next() else { return false };
        let mut ev = decode_in(&item, paths);
        drop(item);
        match &mut ev {
            Ok(Event { header, body: Body::Handshake(h) }) if h.json_in => {
                h.seen = Some(Box::new(crate::discovery::adopt::snapshot(header.pid, header.ppid, (h.in_ino, h.out_ino))));
            }
            Ok(Event { body: Body::Stdio(s) | Body::Sock(s), .. }) => bytes += s.data.len(),
            _ => {}
        }
        batch.push(ev);
    }
    true
}

pub async fn run(ring: RingBuf<MapData>, tx: mpsc::Sender<Batch>) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged while the AsyncFd
    // owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut paths = Paths::default();
    // Events taken since the ring was last found empty, and whether the last drain stopped
    // at a full batch (then the next one starts at once).
    let mut run_len = 0usize;
    let mut more = false;
    loop {
        let full = if more {
            drain(fd.get_mut(), &mut batch, &mut paths)
        } else if run_len >= BUSY {
            // A flood: let it fill the ring, then drain without waiting to be woken. Readiness
            // that arrived meanwhile stays set and costs one empty drain later at most.
            tokio::time::sleep(POLL).await;
            drain(fd.get_mut(), &mut batch, &mut paths)
        } else {
            let mut guard = fd.readable_mut().await?;
            let full = drain(guard.get_inner_mut(), &mut batch, &mut paths);
            if !full {
                guard.clear_ready();
            }
            full
        };
        run_len = if more { run_len + batch.len() } else { batch.len() };
        more = full;
        if !batch.is_empty() {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(full).await.is_err() {
                return Ok(()); // pipeline gone: shutting down
            }
        }
    }
}

/// `run` on a thread of its own with its own runtime, until `stop` turns true (or the pipeline
/// goes away).
pub fn spawn(ring: RingBuf<MapData>, tx: mpsc::Sender<Batch>, mut stop: tokio::sync::watch::Receiver<bool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("mcpmon-ring".into()).spawn(move || {
        rt.block_on(async move {
            tokio::select! {
                r = run(ring, tx) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "ring reader stopped");
                    }
                }
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    })
}
