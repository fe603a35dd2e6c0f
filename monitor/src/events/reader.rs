//! Drains the kernel ring buffer as it becomes readable and forwards decoded events.
//!
//! The channel to the pipeline is bounded and sent to with `.await`: when the daemon falls behind,
//! back-pressure reaches the ring buffer and the *kernel* counts what it could not deliver
//! (`LOST`), so no userspace queue ever drops an event without it being counted.
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use super::{decode, DecodeError, Event};

pub type Decoded = Result<Event, DecodeError>;

/// Largest batch taken from the ring before handing it on (keeps latency low under load).
const BATCH: usize = 256;

pub async fn run(ring: RingBuf<MapData>, tx: mpsc::Sender<Decoded>) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd and keeps it open and unchanged while the AsyncFd
    // owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut drained = true;
        while let Some(item) = ring.next() {
            batch.push(decode(&item));
            if batch.len() == BATCH {
                drained = false;
                break;
            }
        }
        if drained {
            guard.clear_ready();
        }
        drop(guard);
        for ev in batch.drain(..) {
            if tx.send(ev).await.is_err() {
                return Ok(()); // pipeline gone: shutting down
            }
        }
    }
}
