//! Output stage: one JSON object per line to stdout or a file.
//!
//! The writer task owns the sink; the pipeline sends finished lines over a bounded channel and
//! awaits when it is full, so slow output slows the pipeline instead of losing records (the
//! kernel then counts what it cannot deliver). A sink that fails loses records, counted in
//! `WriterHealth`.
pub mod alert;
mod event_json;
mod health;
pub mod record;

pub use alert::Alert;
pub use health::{CutLine, WriterHealth};
pub use record::Record;

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("opening {0}: {1}")]
    Open(PathBuf, std::io::Error),
}

/// Where the lines end up: written with blocking calls on tokio's blocking pool.
pub type Sink = Box<dyn std::io::Write + Send>;

/// Where JSON lines go: `-` is stdout, anything else a file opened for append.
pub async fn open_sink(target: &str) -> Result<Sink, OutputError> {
    if target == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    let path = PathBuf::from(target);
    let f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|e| OutputError::Open(path, e))?;
    Ok(Box::new(f.into_std().await))
}

/// Emptied batch buffers, back from the writer to the emitter. A new 64 KiB buffer per batch,
/// freed on the writer's side a megabyte at a time, had the allocator hand the memory back to
/// the kernel and fault it in again for the next batches (system time per event doubled).
#[derive(Clone, Debug, Default)]
pub struct Spare(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Spare {
    /// Buffers kept at most (the writer holds 1 MiB of 64 KiB batches at a time).
    const KEEP: usize = 32;

    /// An empty buffer with room for `cap` bytes: a returned one when there is one.
    pub fn take(&self, cap: usize) -> Vec<u8> {
        let b = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        b.unwrap_or_else(|| Vec::with_capacity(cap))
    }

    pub(crate) fn give(&self, held: Vec<Vec<u8>>) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for mut b in held {
            if s.len() < Self::KEEP && b.capacity() <= 4 << 20 {
                b.clear();
                s.push(b);
            }
        }
    }
}

/// Bytes held before they are written whatever the timers say.
const HELD_BYTES: usize = 1 << 20;

/// Writes lines until the channel closes. What arrives are whole lines, each ending in a
/// newline, several to a message (the emitter hands them over in batches, `daemon/emit.rs`).
/// The batches are held, then moved to a blocking-pool thread that writes them: no copy of a
/// line on its way (tokio's buffered file copied each twice, 5% of a flood's cost).
pub async fn writer(sink: Sink, mut rx: mpsc::Receiver<Vec<u8>>, spare: Spare, health: std::sync::Arc<WriterHealth>) -> std::io::Result<()> {
    // Each write is a hop to tokio's blocking pool, and a wake-up of one of its threads. So a
    // write waits until nothing more has come for `SETTLE`, or until the oldest line held has
    // waited `HOLD` (a steady trickle must not keep lines back), or `HELD_BYTES` are held:
    // under load one hop carries many batches, and every line reaches the file within
    // milliseconds.
    const SETTLE: std::time::Duration = std::time::Duration::from_millis(2);
    const HOLD: std::time::Duration = std::time::Duration::from_millis(10);
    let mut out = Out { sink: Some(sink), held: Vec::new(), bytes: 0, spare, health, cut: CutLine::default() };
    let mut held_since: Option<std::time::Instant> = None;
    loop {
        let next = match held_since {
            None => rx.recv().await,
            // Held long enough: out before taking more, even with more waiting in the channel
            // (a backlog that never empties would otherwise hold lines until the limit).
            Some(since) if since.elapsed() >= HOLD => {
                out.write().await?;
                held_since = None;
                continue;
            }
            Some(since) => {
                let wait = SETTLE.min(HOLD.saturating_sub(since.elapsed()));
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        out.write().await?;
                        held_since = None;
                        continue;
                    }
                }
            }
        };
        let Some(lines) = next else { break };
        out.hold(lines);
        if out.bytes >= HELD_BYTES {
            out.write().await?;
            held_since = None;
        } else {
            held_since.get_or_insert_with(std::time::Instant::now);
        }
    }
    out.write().await
}

/// `lead`, then every batch, in order, in as few `writev` calls as the sink takes (the file's
/// write path costs per call as well as per byte). Returns how many bytes went out, `lead`'s
/// included, with the error that stopped it. The alert file writes a line and its newline
/// with it, in one call.
pub(crate) fn write_all_vectored<B: AsRef<[u8]>>(sink: &mut dyn std::io::Write, held: &[B], lead: &[u8]) -> (usize, std::io::Result<()>) {
    use std::io::{ErrorKind, IoSlice};
    let mut slices: Vec<IoSlice<'_>> = std::iter::once(lead).chain(held.iter().map(AsRef::as_ref)).filter(|b| !b.is_empty()).map(IoSlice::new).collect();
    let mut rest = &mut slices[..];
    let mut written = 0;
    let result = loop {
        if rest.is_empty() {
            break Ok(());
        }
        match sink.write_vectored(rest) {
            Ok(0) => break Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    (written, result)
}

/// The sink and the batches held for it.
struct Out {
    /// On the blocking pool while a write runs; None after a failed hand-off.
    sink: Option<Sink>,
    held: Vec<Vec<u8>>,
    bytes: usize,
    /// Where the written buffers go back to.
    spare: Spare,
    health: std::sync::Arc<WriterHealth>,
    cut: CutLine,
}

impl Out {
    /// Keeps a batch for the next write. A small one (a trickle's: the emitter hands over
    /// whatever it has whenever the daemon runs idle) joins the one before it, so that a
    /// trickle is not written one syscall per line.
    fn hold(&mut self, lines: Vec<u8>) {
        const SMALL: usize = 16 * 1024;
        self.bytes += lines.len();
        match self.held.last_mut() {
            Some(last) if lines.len() < SMALL && last.len() < 4 * SMALL => last.extend_from_slice(&lines),
            _ => self.held.push(lines),
        }
    }

    /// Writes every held batch, in order, on the blocking pool. A failed write is counted
    /// (`WriterHealth`) and its batches dropped; Err only when the sink itself is lost.
    async fn write(&mut self) -> std::io::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let (Some(mut sink), held) = (self.sink.take(), std::mem::take(&mut self.held)) else {
            return Err(std::io::Error::other("the sink was lost in an earlier write"));
        };
        self.bytes = 0;
        let lead = self.cut.lead();
        let (sink, held, written, done) = tokio::task::spawn_blocking(move || {
            let (written, done) = write_all_vectored(&mut *sink, &held, lead);
            let done = done.and_then(|()| sink.flush());
            (sink, held, written, done)
        })
        .await
        .map_err(std::io::Error::other)?;
        self.sink = Some(sink);
        let (lost, last) = unwritten(&held, written.saturating_sub(lead.len()));
        self.cut.after(last.or_else(|| lead[..written.min(lead.len())].last().copied()));
        match done {
            Ok(()) => self.health.wrote(),
            Err(e) => self.health.failed(&e, lost),
        }
        self.spare.give(held);
        Ok(())
    }
}

/// Of `held` with its first `written` bytes out: the lines whose newline did not go, and the
/// last byte that did.
pub(crate) fn unwritten<B: AsRef<[u8]>>(held: &[B], written: usize) -> (u64, Option<u8>) {
    let (mut skip, mut lost, mut last) = (written, 0u64, None);
    for b in held {
        let b = b.as_ref();
        let from = skip.min(b.len());
        if from > 0 {
            last = Some(b[from - 1]);
        }
        lost += memchr::memchr_iter(b'\n', &b[from..]).count() as u64;
        skip -= from;
    }
    (lost, last)
}

/// Converts kernel CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// wall-clock ns minus monotonic ns, measured once at start-up.
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
        Self { offset_ns: wall - monotonic_ns() as i128 }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_nanos(self.wall_ns(mono_ns))
    }

    /// `wall`, as nanoseconds after the epoch.
    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// RFC 3339 UTC with microseconds, e.g. `2026-11-25T03:18:59.123456Z`.
/// Microseconds since the epoch of a time as `format_rfc3339` writes it (`…T06:05:21.123456Z`;
/// fewer fraction digits are read as such); None for anything else.
pub fn parse_rfc3339_us(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || !t.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let us = match t.get(19..t.len() - 1)? {
        "" => 0,
        f => {
            let digits = f.strip_prefix('.').filter(|d| !d.is_empty() && d.len() <= 9 && d.bytes().all(|c| c.is_ascii_digit()))?;
            format!("{:0<6}", &digits[..digits.len().min(6)]).parse::<i64>().ok()?
        }
    };
    // Days from civil (Howard Hinnant's algorithm), the inverse of the one below.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000 + us).ok()
}

pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_micros());
    }
    // Every event carries one: digits written in place, without the formatting machinery.
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, (rem / 3600) as u64);
    put(14, 2, (rem % 3600 / 60) as u64);
    put(17, 2, (rem % 60) as u64);
    put(20, 6, u64::from(d.subsec_micros()));
    // Digits and ASCII punctuation only: always valid UTF-8 (checked, not assumed; the lossy
    // conversion walked it in chunks, 1% of a flood's time).
    std::str::from_utf8(&b).map(str::to_string).unwrap_or_default()
}

/// RFC 3339 stamps of a stream of nearby instants (every event line carries one): the date and
/// time of day are worked out once per second and kept, and a stamp in the same second only
/// writes its microseconds. Equal to `format_rfc3339` (`tests`).
#[derive(Debug, Default)]
pub struct Stamps {
    /// The second the kept stamp is of (None: nothing kept yet).
    secs: Option<u64>,
    kept: Stamp,
}

impl Stamps {
    pub fn format(&mut self, t: SystemTime) -> Stamp {
        self.format_ns(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64)
    }

    /// `format` of the instant `ns` nanoseconds after the epoch (`Clock::wall_ns`): a kernel
    /// event's time goes from the kernel's clock to text in integers.
    pub fn format_ns(&mut self, ns: u64) -> Stamp {
        let secs = ns / 1_000_000_000;
        if self.secs != Some(secs) {
            let s = format_rfc3339(UNIX_EPOCH + std::time::Duration::from_nanos(ns));
            // Beyond year 9999 the text is longer: not kept (never, in practice). Only ASCII is
            // kept: its digits are overwritten below.
            if s.len() != 27 || !s.is_ascii() {
                return Stamp::from(s.as_str());
            }
            self.kept = Stamp::from(s.as_str());
            self.secs = Some(secs);
        }
        let mut us = (ns % 1_000_000_000 / 1_000) as u32;
        for b in self.kept.buf[20..26].iter_mut().rev() {
            *b = b'0' + (us % 10) as u8;
            us /= 10;
        }
        // Still a `str`: ASCII digits replaced by ASCII digits.
        self.kept
    }
}

/// An event line's time as text, held inline: a `String` per event line was an allocation
/// (and a free) per kernel event. Up to `Stamp::CAP` bytes (an RFC 3339 stamp has 27); a
/// longer text is cut at a character boundary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    buf: [u8; Stamp::CAP],
    len: u8,
}

impl Stamp {
    pub const CAP: usize = 40;
}

impl Default for Stamp {
    fn default() -> Self {
        Self { buf: [0; Self::CAP], len: 0 }
    }
}

impl From<&str> for Stamp {
    fn from(s: &str) -> Self {
        let mut len = s.len().min(Self::CAP);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0; Self::CAP];
        buf[..len].copy_from_slice(&s.as_bytes()[..len]);
        Self { buf, len: len as u8 }
    }
}

impl std::ops::Deref for Stamp {
    type Target = str;

    fn deref(&self) -> &str {
        let bytes = &self.buf[..usize::from(self.len).min(Self::CAP)];
        // SAFETY: a stamp is only made by `from` (whole characters of a `str`) and by
        // `Stamps::format` (the ASCII text of `format_rfc3339`, digits replaced by digits), so
        // its bytes are valid UTF-8. Checking them again on every read was 1% of a flood.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

/// `#[serde(with = "crate::output::rfc3339")]` for SystemTime fields.
pub mod rfc3339 {
    pub fn serialize<S: serde::Serializer>(t: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_rfc3339(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_stamps_are_the_formatted_ones() {
        let mut st = Stamps::default();
        // Within a second, across seconds, days and a leap day, backwards, and the epoch.
        let start = 951_868_799_999_990u64; // 2000-02-29T23:59:59.999990Z
        let mut us: Vec<u64> = (0..40).map(|i| start + i * 7).collect();
        us.extend([start + 86_400_000_000, start, 0, 999_999, 1_000_000, 1_795_577_939_123_456]);
        for u in us {
            let t = UNIX_EPOCH + std::time::Duration::from_micros(u);
            assert_eq!(&*st.format(t), format_rfc3339(t), "{u}");
            assert_eq!(&*st.format_ns(u * 1_000 + 999), format_rfc3339(t), "{u} and 999 ns");
        }
    }

    #[test]
    fn a_stamp_keeps_whole_characters() {
        assert_eq!(&*Stamp::from("2026-12-04T15:22:22.223735Z"), "2026-12-04T15:22:22.223735Z");
        let long = format!("{}é", "a".repeat(Stamp::CAP - 1));
        assert_eq!(&*Stamp::from(long.as_str()), "a".repeat(Stamp::CAP - 1));
        assert_eq!(serde_json::to_string(&Stamp::from("x\"y")).unwrap(), r#""x\"y""#);
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_795_577_939_123_456);
        assert_eq!(format_rfc3339(t), "2026-11-25T03:38:59.123456Z");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn rfc3339_round_trips() {
        let mut us: u64 = 1;
        for _ in 0..2000 {
            // Instants spread from 1970 to 9999, down to the microsecond.
            us = us.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) % 253_402_300_799_000_000;
            let t = UNIX_EPOCH + std::time::Duration::from_micros(us);
            let s = format_rfc3339(t);
            assert_eq!((s.len(), parse_rfc3339_us(&s)), (27, Some(us)), "{s}");
        }
    }

    #[test]
    fn clock_maps_now_to_now() {
        let c = Clock::new();
        let wall = c.wall(monotonic_ns());
        let diff = SystemTime::now().duration_since(wall).unwrap_or_default();
        assert!(diff.as_secs() < 5);
    }

    /// A writer to `ev.jsonl` in a new directory.
    async fn writer_to_file() -> (tempfile::TempDir, mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<std::io::Result<()>>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = open_sink(dir.path().join("ev.jsonl").to_str().unwrap()).await.unwrap();
        let (tx, rx) = mpsc::channel(4);
        (dir, tx, tokio::spawn(writer(sink, rx, Spare::default(), Default::default())))
    }

    /// Lines that keep coming, each sooner than the writer's settle time, still reach the file
    /// within its hold time: a trickle cannot keep them back.
    #[tokio::test]
    async fn a_trickle_of_lines_reaches_the_file() {
        let (dir, tx, task) = writer_to_file().await;
        let path = dir.path().join("ev.jsonl");
        tx.send(b"{\"n\":0}\n".to_vec()).await.unwrap();
        let start = std::time::Instant::now();
        let mut n = 1;
        while std::fs::read_to_string(&path).unwrap_or_default().is_empty() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "the first line never reached the file");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tx.send(format!("{{\"n\":{n}}}\n").into_bytes()).await.unwrap();
            n += 1;
        }
        drop(tx);
        task.await.unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), n);
    }

    /// A sink that notes how many lines were still queued for the writer when its first bytes
    /// arrived.
    struct BacklogProbe {
        queue: mpsc::WeakSender<Vec<u8>>,
        queued_at_first_write: std::sync::Arc<std::sync::Mutex<Option<usize>>>,
    }

    impl std::io::Write for BacklogProbe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let queued = self.queue.upgrade().map_or(0, |tx| tx.max_capacity() - tx.capacity());
            self.queued_at_first_write.lock().unwrap().get_or_insert(queued);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A backlog that never runs dry (the pipeline always a step ahead of the writer) still
    /// reaches the sink within the hold time, not only once the buffer is full: lines written
    /// while 120,000 more (under the buffer's size in all) wait in the channel. Draining them
    /// takes the writer far longer than its hold time. The writer used to flush only when the
    /// channel ran dry or the buffer filled: a steady flood kept records back for seconds.
    #[tokio::test]
    async fn a_backlog_that_never_runs_dry_still_reaches_the_sink() {
        const LINES: usize = 120_000;
        let (tx, rx) = mpsc::channel(LINES);
        for i in 0..LINES {
            tx.send(format!("{:07}\n", i % 10_000_000).into_bytes()).await.unwrap();
        }
        assert!(LINES * 8 < 1 << 20, "all of it fits the writer's buffer");
        let first = std::sync::Arc::new(std::sync::Mutex::new(None));
        let sink = BacklogProbe { queue: tx.downgrade(), queued_at_first_write: first.clone() };
        let task = tokio::spawn(writer(Box::new(sink), rx, Spare::default(), Default::default()));
        // The sender stays until the first write (it reads the queue through it); the writer
        // writes, at the latest, once the channel has run dry.
        while first.lock().unwrap().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        drop(tx);
        task.await.unwrap().unwrap();
        let queued = first.lock().unwrap().expect("the lines reached the sink");
        assert!(queued > 0, "nothing reached the sink until the channel ran dry");
    }

    /// A sink that takes at most 5 bytes a call (a pipe, a full disk's short writes): every
    /// byte still goes out once, in order.
    #[test]
    fn short_writes_are_resumed_where_they_stopped() {
        struct Short(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Short {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let n = b.len().min(5);
                self.0.lock().unwrap().extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut sink: Sink = Box::new(Short(got.clone()));
        let held: Vec<Vec<u8>> = ["{\"a\":1}\n", "", "{\"b\":22}\n{\"c\":3}\n", "x\n"].iter().map(|s| s.as_bytes().to_vec()).collect();
        let (written, done) = super::write_all_vectored(&mut *sink, &held, b"");
        done.unwrap();
        assert_eq!(written, held.concat().len());
        assert_eq!(String::from_utf8(got.lock().unwrap().clone()).unwrap(), held.concat().iter().map(|&b| b as char).collect::<String>());
    }

    /// A sink that takes `room` bytes and then fails as a full disk does, until given more.
    struct Full {
        got: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        room: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl std::io::Write for Full {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let room = self.room.load(std::sync::atomic::Ordering::Relaxed);
            if room == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = b.len().min(room);
            self.room.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            self.got.lock().unwrap().extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a test of a full sink holds: what the sink got, its room, the writer's health, the
    /// writer's channel and task.
    type FullWriter = (
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        std::sync::Arc<WriterHealth>,
        mpsc::Sender<Vec<u8>>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    );

    impl Full {
        /// A writer to a `Full` sink with `room` bytes.
        fn writer(room: usize) -> FullWriter {
            let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let room = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(room));
            let health = std::sync::Arc::new(WriterHealth::default());
            // One batch waits at most: each is written before the test moves on.
            let (tx, rx) = mpsc::channel(1);
            let task = tokio::spawn(writer(Box::new(Full { got: got.clone(), room: room.clone() }), rx, Spare::default(), health.clone()));
            (got, room, health, tx, task)
        }
    }

    /// Waits (10 s at most) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "{what} never came");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A full disk loses lines, counted as lost, and the writer lives on: once there is room
    /// again, lines are written again, the torn one standing alone on its own line.
    #[tokio::test]
    async fn a_full_sink_counts_what_it_lost_and_writes_again_when_it_can() {
        use std::sync::atomic::Ordering;
        let (got, room, health, tx, task) = Full::writer(12);
        // 12 bytes of room: the first line (8 bytes) and 4 bytes of the second go out.
        tx.send(b"{\"a\":1}\n{\"b\":22}\n{\"c\":3}\n".to_vec()).await.unwrap();
        until("the failure reported", || health.failing()).await;
        assert_eq!(health.lines_dropped(), 2, "the torn line and the one after it");
        assert!(health.last_error().contains("No space left"), "{}", health.last_error());
        room.store(1 << 20, Ordering::Relaxed);
        tx.send(b"{\"d\":4}\n".to_vec()).await.unwrap();
        drop(tx);
        task.await.unwrap().unwrap();
        assert!(!health.failing());
        assert_eq!(health.lines_dropped(), 2);
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\"\n{\"d\":4}\n", "the torn line alone, then the next whole");
    }

    /// After a cut line, a write that fails once its leading newline is out leaves the file at
    /// a line's end: the next write adds no second newline (an empty line is not JSON either).
    #[tokio::test]
    async fn a_cut_line_is_ended_once() {
        let (got, room, health, tx, task) = Full::writer(12);
        let settle = || until("the write", || room.load(std::sync::atomic::Ordering::Relaxed) == 0);
        tx.send(b"{\"a\":1}\n{\"b\":22}\n".to_vec()).await.unwrap();
        settle().await;
        // Room for the leading newline alone.
        room.store(1, std::sync::atomic::Ordering::Relaxed);
        tx.send(b"{\"c\":3}\n".to_vec()).await.unwrap();
        settle().await;
        room.store(1 << 20, std::sync::atomic::Ordering::Relaxed);
        tx.send(b"{\"d\":4}\n".to_vec()).await.unwrap();
        drop(tx);
        task.await.unwrap().unwrap();
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\"\n{\"d\":4}\n");
        assert_eq!(health.lines_dropped(), 2);
    }

    #[test]
    fn unwritten_lines_are_those_whose_newline_did_not_go() {
        let held: Vec<Vec<u8>> = ["a\nbb\n", "ccc\n"].iter().map(|s| s.as_bytes().to_vec()).collect();
        assert_eq!(unwritten(&held, 0), (3, None));
        assert_eq!(unwritten(&held, 2), (2, Some(b'\n')));
        assert_eq!(unwritten(&held, 3), (2, Some(b'b')));
        assert_eq!(unwritten(&held, 5), (1, Some(b'\n')));
        assert_eq!(unwritten(&held, 6), (1, Some(b'c')));
        assert_eq!(unwritten(&held, 9), (0, Some(b'\n')));
    }

    #[tokio::test]
    async fn writer_writes_lines_to_a_file() {
        let (dir, tx, task) = writer_to_file().await;
        let path = dir.path().join("ev.jsonl");
        for i in 0..10 {
            tx.send(format!("{{\"n\":{i}}}\n").into_bytes()).await.unwrap();
        }
        tx.send(b"{\"n\":10}\n{\"n\":11}\n".to_vec()).await.unwrap();
        drop(tx);
        task.await.unwrap().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 12);
        assert_eq!(text.lines().last(), Some("{\"n\":11}"));
    }
}
