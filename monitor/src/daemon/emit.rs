//! The emitter: the last stage of the pipeline. It owns everything a finished record goes to: the
//! writer's channel, the live tail (`mcpmon top`), the metrics, and for alerts the throttle, the
//! incidents and the sinks (file, webhook). Stages hand it typed records; JSON is rendered here,
//! once per record.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{broadcast, mpsc};

use crate::{
    alerts::{incident::Incidents, throttle::Throttle, Sinks},
    metrics::Metrics,
    output::{format_rfc3339, record::EventLine, Alert, Record, Spare},
};

/// Lines gathered before they go to the writer in one message. Handing each line over on its
/// own woke the writer's thread once per event, and the wake-ups cost more than the rendering.
const BATCH_BYTES: usize = 64 * 1024;

/// The longest a line waits in the batch while kernel events keep the daemon busy (events that
/// write no line, a stdio flood, must not hold an alert back).
const BATCH_HOLD: Duration = Duration::from_millis(10);

/// Lines not yet handed to the writer, each ending in a newline, and when the first of them came.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    since: Option<Instant>,
    /// What the last kernel event line written here repeats to the next (its ids, server, exe).
    memo: crate::output::record::LineMemo,
}

impl Pending {
    /// Room for one more line; the batch's age starts with its first line.
    fn open(&mut self) -> &mut Vec<u8> {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        &mut self.buf
    }

    /// The whole batch, when it is big enough to go (or `always`); the next goes into a
    /// buffer the writer gave back when there is one.
    fn take(&mut self, always: bool, spare: &Spare) -> Option<Vec<u8>> {
        if self.buf.is_empty() || !(always || self.buf.len() >= BATCH_BYTES) {
            return None;
        }
        self.since = None;
        Some(std::mem::replace(&mut self.buf, spare.take(BATCH_BYTES)))
    }
}

pub struct Emitter {
    lines: mpsc::Sender<Vec<u8>>,
    /// Batch buffers the writer gave back.
    spare: Spare,
    /// Lines not yet handed to the writer. They go when they reach `BATCH_BYTES`, whenever the
    /// daemon has nothing more queued, and when the first has waited `BATCH_HOLD`
    /// (`flush_lines`, `lines_held`).
    pending: Mutex<Pending>,
    /// Every emitted line, for live views (`mcpmon top`); lossy for slow readers by design.
    tail: broadcast::Sender<String>,
    /// Whether anyone watched the tail when the current batch of kernel events was taken.
    tail_watched: std::sync::atomic::AtomicBool,
    /// Shared with the metrics endpoint.
    metrics: Arc<Mutex<Metrics>>,
    /// Alert sinks besides the event stream (file, webhook); taken at shutdown to drain them.
    pub sinks: Option<Sinks>,
    throttle: Throttle,
    incidents: Incidents,
    /// The kernel's hostname, on every alert.
    pub host: String,
    /// `--alert-format`: how alert-like records reach the stream and the sinks.
    pub alert_format: crate::alerts::AlertFormat,
    /// `--otlp-endpoint`: tool calls as OpenTelemetry spans; taken at shutdown to drain it.
    pub otlp: Option<crate::export::otlp::Otlp>,
}

impl Emitter {
    pub fn new(lines: mpsc::Sender<Vec<u8>>, spare: Spare) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        Self {
            lines,
            spare,
            pending: Mutex::new(Pending { buf: Vec::with_capacity(BATCH_BYTES), since: None, memo: Default::default() }),
            tail: broadcast::channel(4096).0,
            tail_watched: Default::default(),
            metrics: Default::default(),
            sinks: None,
            throttle: Throttle::new(Duration::from_secs(10)),
            incidents: Incidents::new(Duration::from_secs(5)),
            host,
            alert_format: Default::default(),
            otlp: None,
        }
    }

    /// What `run` configures: the shared metrics, the sinks, the tail, and the alert windows.
    pub fn configure(&mut self, metrics: Arc<Mutex<Metrics>>, sinks: Sinks, tail: broadcast::Sender<String>, throttle: Duration, incident_quiet: Duration) {
        self.metrics = metrics;
        self.sinks = Some(sinks);
        self.tail = tail;
        self.throttle = Throttle::new(throttle);
        self.incidents = Incidents::new(incident_quiet);
    }

    /// The metrics, for a stage that counts something of its own (rule time, blind spots).
    pub fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        // A panic while holding the lock leaves counts that are still counts.
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called before each batch of kernel events: whether their lines go to the live tail too
    /// (a `mcpmon top` that subscribes meanwhile sees lines from the next batch on).
    pub fn look_for_tail(&self) {
        self.tail_watched.store(self.tail.receiver_count() > 0, std::sync::atomic::Ordering::Relaxed);
    }

    pub async fn emit(&self, r: Record) {
        self.emit_ref(&r).await;
    }

    /// A kernel event line (`emit_ref` of `Record::Event`, without the record): the pipeline
    /// keeps the line, to pair a folded run's count with.
    pub async fn emit_event(&self, e: &EventLine) {
        if let Some(o) = &self.otlp {
            o.observe_event(e);
        }
        // The answer taken once per batch (`look_for_tail`): asking the channel takes its lock,
        // and that was a lock per event.
        if self.tail_watched.load(std::sync::atomic::Ordering::Relaxed) {
            return self.write(crate::output::record::line_of(|b| e.write_line(b))).await;
        }
        let full = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.open();
            let Pending { buf, memo, .. } = &mut *p;
            e.write_line_after(buf, memo);
            buf.push(b'\n');
            p.take(false, &self.spare)
        };
        self.hand_over(full).await;
    }

    /// `emit`, leaving the record with the caller.
    pub async fn emit_ref(&self, r: &Record) {
        // Kernel event lines are counted by kind where they are taken (the pipeline's stats).
        if let Record::Event(e) = r {
            return self.emit_event(e).await;
        }
        self.metrics().record(r);
        if let Some(o) = &self.otlp {
            o.observe(r);
        }
        if self.tail.receiver_count() > 0 {
            return self.write(r.line()).await;
        }
        // Nobody watches live: rendered straight into the batch, no line of its own.
        self.append(|buf| r.write_line(buf)).await;
    }

    /// Adds one line (what `put` writes, and a newline) to the pending batch; hands the batch
    /// over once it is big enough.
    async fn append(&self, put: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let buf = p.open();
            put(buf);
            buf.push(b'\n');
            p.take(false, &self.spare)
        };
        self.hand_over(full).await;
    }

    async fn hand_over(&self, batch: Option<Vec<u8>>) {
        if let Some(batch) = batch {
            // The writer only goes away at shutdown, after the pipeline.
            let _ = self.lines.send(batch).await;
        }
    }

    async fn write(&self, line: String) {
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(line.clone());
        }
        self.append(|buf| buf.extend_from_slice(line.as_bytes())).await;
    }

    /// Hands every pending line to the writer: the daemon calls it whenever no kernel event
    /// waits (so a line never waits for the next one), before it reports ready, and at shutdown.
    pub async fn flush_lines(&self) {
        let batch = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take(true, &self.spare);
        self.hand_over(batch).await;
    }

    /// The oldest pending line has waited `BATCH_HOLD`: the daemon hands the batch over even
    /// though kernel events still wait.
    pub fn lines_held(&self) -> bool {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).since.is_some_and(|t| t.elapsed() >= BATCH_HOLD)
    }

    /// An alert: throttled (repeats folded into a count), folded into its incident, then to the
    /// stream and every sink.
    pub async fn alert(&mut self, mut a: Alert) {
        if a.host.is_none() {
            a.host = Some(self.host.clone());
        }
        let now = Instant::now();
        if !self.throttle.admit(&a, now) {
            self.metrics().suppressed(1);
            return;
        }
        let Some(a) = self.incidents.admit(a, now) else {
            self.metrics().folded(1);
            return;
        };
        self.to_sinks(Record::Alert(Box::new(a))).await;
    }

    async fn to_sinks(&self, r: Record) {
        self.metrics().record(&r);
        if let Some(o) = &self.otlp {
            o.observe(&r);
        }
        let line = r.line();
        // --alert-format ocsf: the stream and the sinks get an OCSF finding; the live view
        // (`mcpmon top`) reads mcpmon's own form.
        let Some(finding) = self.alert_format.render(&r) else {
            if let Some(s) = &self.sinks {
                s.send(&line);
            }
            return self.write(line).await;
        };
        if let Some(s) = &self.sinks {
            s.send(&finding);
        }
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(line);
        }
        self.append(|buf| buf.extend_from_slice(finding.as_bytes())).await;
    }

    /// Once a second: ended incidents and closed throttle windows (all of them with `force`).
    pub async fn flush(&mut self, force: bool) {
        let now = Instant::now();
        let time = format_rfc3339(std::time::SystemTime::now());
        for r in self.incidents.flush(now, force, &time) {
            self.to_sinks(r).await;
        }
        for r in self.throttle.flush(now, force, &time) {
            self.to_sinks(r).await;
        }
    }
}

impl Drop for Emitter {
    /// A pipeline that ends on an error path still hands over what it wrote, if the writer has
    /// room for it.
    fn drop(&mut self) {
        if let Some(p) = self.pending.get_mut().unwrap_or_else(|e| e.into_inner()).take(true, &self.spare) {
            let _ = self.lines.try_send(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Pending, Spare, BATCH_BYTES};

    #[test]
    fn a_batch_goes_when_full_or_asked_and_keeps_its_age_until_then() {
        let mut p = Pending::default();
        let spare = Spare::default();
        assert_eq!(p.take(true, &spare), None, "nothing to hand over");
        p.open().extend_from_slice(b"{}\n");
        let since = p.since.expect("the first line starts the clock");
        p.open().extend_from_slice(b"{}\n");
        assert_eq!((p.take(false, &spare), p.since), (None, Some(since)), "small, and as old as its first line");
        assert_eq!(p.take(true, &spare).as_deref(), Some(&b"{}\n{}\n"[..]));
        assert_eq!(p.since, None);
        p.open().resize(BATCH_BYTES, b'x');
        let full = p.take(false, &spare).expect("full: it goes");
        assert_eq!(full.len(), BATCH_BYTES);
        // What the writer gives back is what the next batch after the next is written into.
        let at = full.as_ptr();
        spare.give(vec![full]);
        p.open().extend_from_slice(b"{}\n");
        let _ = p.take(true, &spare);
        assert_eq!((p.buf.as_ptr(), p.buf.len()), (at, 0), "the given-back buffer, emptied");
    }
}
