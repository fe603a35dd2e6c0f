//! What the writer could not write. A full disk, a revoked file or a closed stdout loses
//! records exactly as a full ring does, so it is counted, logged and alerted on as loss is
//! (`daemon/limits.rs`), never silence. The writer drops what it could not write (holding it
//! would grow without bound) and tries the next batch: the sink may recover (space freed).
use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Mutex,
};

/// Shared by the writer (which updates it) and the pipeline (which reports it).
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// Lines not written: every line whose newline did not reach the sink.
    lines_dropped: AtomicU64,
    /// Whether the last write failed.
    failing: AtomicBool,
    /// The last failure, for the alert and the log.
    last_error: Mutex<String>,
}

impl WriterHealth {
    pub fn lines_dropped(&self) -> u64 {
        self.lines_dropped.load(Ordering::Relaxed)
    }

    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A write failed with `error`, `lines` lines lost.
    pub(super) fn failed(&self, error: &std::io::Error, lines: u64) {
        self.lines_dropped.fetch_add(lines, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error.to_string();
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %error, lines, "events output: a write failed; records are being lost until it recovers");
        }
    }

    /// A write went through.
    pub(super) fn wrote(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::warn!(lost_in_all = self.lines_dropped(), "events output: writes go through again");
        }
    }
}

/// Whether a sink's bytes end mid-line, after a write that failed part way (a full disk). The
/// next write then starts with a newline, so that the cut line stands alone: a reader skips one
/// bad line, where glued to the next it would lose that one too. Kept by the events writer and
/// by the alert file.
#[derive(Debug, Default)]
pub struct CutLine(bool);

impl CutLine {
    /// What the next write starts with.
    pub fn lead(&self) -> &'static [u8] {
        if self.0 {
            b"\n"
        } else {
            b""
        }
    }

    /// A write went out up to `last`, its last byte that did (None: not one did).
    pub fn after(&mut self, last: Option<u8>) {
        if let Some(b) = last {
            self.0 = b != b'\n';
        }
    }
}
