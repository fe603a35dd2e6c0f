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
    output::{format_rfc3339, Alert, Record},
};

pub struct Emitter {
    lines: mpsc::Sender<String>,
    /// Every emitted line, for live views (`mcpmon top`); lossy for slow readers by design.
    tail: broadcast::Sender<String>,
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
    pub fn new(lines: mpsc::Sender<String>) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        Self {
            lines,
            tail: broadcast::channel(4096).0,
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

    pub async fn emit(&self, r: Record) {
        self.emit_ref(&r).await;
    }

    /// `emit`, leaving the record with the caller (the pipeline keeps an open to pair a folded
    /// run's count with).
    pub async fn emit_ref(&self, r: &Record) {
        self.metrics().record(r);
        if let Some(o) = &self.otlp {
            o.observe(r);
        }
        self.write(r.line()).await;
    }

    async fn write(&self, line: String) {
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(line.clone());
        }
        // The writer only goes away at shutdown, after the pipeline.
        let _ = self.lines.send(line).await;
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
        let _ = self.lines.send(finding).await;
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
