//! Alert sinks beside the event stream: a rotating file and an HTTP webhook, each behind a bounded
//! queue that never blocks the event path (a full queue drops and counts), and throttling of
//! repeated alerts (folded into counts, reported, never dropped silently). docs/alerts.md is the
//! schema.
pub mod file;
pub mod incident;
pub mod ocsf;
pub mod throttle;
pub mod webhook;

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Alerts a sink may hold before it starts dropping (and counting).
pub const QUEUE: usize = 1024;

#[derive(Clone, Debug, Default)]
pub struct SinkConfig {
    pub file: Option<std::path::PathBuf>,
    pub file_max_bytes: u64,
    pub file_keep: usize,
    pub webhook: Option<String>,
}

/// How alert-like records (alerts, incidents, suppressed repeats) are written
/// (`--alert-format`): mcpmon's own schema, or OCSF Detection Findings (`ocsf.rs`). Applies to
/// the event stream and the sinks; other records stay native.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AlertFormat {
    #[default]
    Native,
    Ocsf,
}

impl AlertFormat {
    /// The line to write for `r` when it differs from `r.line()` (an alert in OCSF).
    pub fn render(self, r: &crate::output::Record) -> Option<String> {
        match self {
            AlertFormat::Native => None,
            AlertFormat::Ocsf => serde_json::to_value(r).ok().and_then(|v| ocsf::to_ocsf(&v)).map(|o| o.to_string()),
        }
    }
}

pub struct Sinks {
    queues: Vec<(&'static str, mpsc::Sender<String>)>,
    metrics: Arc<Mutex<Metrics>>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("alert file {0}: {1}")]
    File(String, std::io::Error),
    #[error("webhook URL {0}: {1}")]
    Url(String, String),
}

impl Sinks {
    pub async fn start(cfg: &SinkConfig, metrics: Arc<Mutex<Metrics>>) -> Result<Self, SinkError> {
        let mut s = Self { queues: vec![], metrics: metrics.clone(), tasks: vec![] };
        if let Some(path) = &cfg.file {
            let f = file::Rotating::open(path, cfg.file_max_bytes, cfg.file_keep).map_err(|e| SinkError::File(path.display().to_string(), e))?;
            let (tx, rx) = mpsc::channel(QUEUE);
            s.tasks.push(tokio::spawn(file::run(f, rx, metrics.clone())));
            s.queues.push(("file", tx));
        }
        if let Some(url) = &cfg.webhook {
            let target = webhook::Target::parse(url).map_err(|e| SinkError::Url(url.clone(), e))?;
            let (tx, rx) = mpsc::channel(QUEUE);
            s.tasks.push(tokio::spawn(webhook::run(target, rx, metrics.clone())));
            s.queues.push(("webhook", tx));
        }
        Ok(s)
    }

    /// Hands one alert line to every sink without waiting.
    pub fn send(&self, line: &str) {
        for (name, q) in &self.queues {
            if q.try_send(line.to_string()).is_err() {
                if let Ok(mut m) = self.metrics.lock() {
                    m.sink(name, 0, 1);
                }
                tracing::warn!("alert sink {name}: queue full, alert dropped (counted)");
            }
        }
    }

    /// Closes the queues and waits (bounded) for the sinks to drain.
    pub async fn close(self) {
        drop(self.queues);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }
}
