//! Alert file with size-based rotation: `alerts.jsonl` → `alerts.jsonl.1` … `.N` (oldest dropped).
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;

use crate::metrics::Metrics;

pub struct Rotating {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: usize,
}

impl Rotating {
    pub fn open(path: &Path, max: u64, keep: usize) -> std::io::Result<Self> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.into(), file, size, max: max.max(4096), keep: keep.max(1) })
    }

    fn rotated(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("{}.{i}", self.path.display()))
    }

    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.max {
            self.rotate()?;
        }
        // The line and its newline in one write: a reader tailing the file does not wait on
        // a second write to learn that the line has ended.
        let mut whole = Vec::with_capacity(line.len() + 1);
        whole.extend_from_slice(line.as_bytes());
        whole.push(b'\n');
        self.file.write_all(&whole)?;
        self.size += line.len() as u64 + 1;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for i in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(i), self.rotated(i + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

pub async fn run(mut f: Rotating, mut rx: mpsc::Receiver<String>, metrics: Arc<Mutex<Metrics>>) {
    while let Some(line) = rx.recv().await {
        let ok = f.write_line(&line);
        if let Err(e) = &ok {
            tracing::error!(path = %f.path.display(), error = %e, "alert file");
        }
        if let Ok(mut m) = metrics.lock() {
            if ok.is_ok() { m.sink("file", 1, 0) } else { m.sink("file", 0, 1) }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotates_and_keeps_n() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("alerts.jsonl");
        let mut r = super::Rotating::open(&p, 4096, 2).unwrap();
        let line = "x".repeat(1000);
        for _ in 0..20 {
            r.write_line(&line).unwrap();
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 4096);
        assert!(d.path().join("alerts.jsonl.1").exists() && d.path().join("alerts.jsonl.2").exists());
        assert!(!d.path().join("alerts.jsonl.3").exists(), "only `keep` old files");
    }
}
