//! Alert file with size-based rotation: `alerts.jsonl` → `alerts.jsonl.1` … `.N` (oldest dropped).
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;

use crate::{
    metrics::Metrics,
    output::{unwritten, write_all_vectored, CutLine},
};

pub struct Rotating {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: usize,
    cut: CutLine,
}

impl Rotating {
    pub fn open(path: &Path, max: u64, keep: usize) -> std::io::Result<Self> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.into(), file, size, max: max.max(4096), keep: keep.max(1), cut: CutLine::default() })
    }

    fn rotated(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("{}.{i}", self.path.display()))
    }

    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.max {
            self.rotate()?;
        }
        // The line and its newline in one write: a reader tailing the file does not wait on
        // a second write to learn that the line has ended. After a write that failed mid-line
        // (a full disk), a newline first (`CutLine`).
        let lead = self.cut.lead();
        let (out, done) = write_all_vectored(&mut self.file, &[line.as_bytes(), b"\n"], lead);
        self.size += out as u64;
        self.cut.after(unwritten(&[lead, line.as_bytes(), b"\n"], out).1);
        done
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
        // A new file: nothing in it to cut.
        self.cut = CutLine::default();
        Ok(())
    }
}

pub async fn run(mut f: Rotating, mut rx: mpsc::Receiver<String>, metrics: Arc<Mutex<Metrics>>) {
    // Alerts lost while writes fail: logged when the failing starts and when it ends, not once
    // per alert (a full disk under an alert storm would flood the journal as well).
    let mut lost_since: Option<u64> = None;
    while let Some(line) = rx.recv().await {
        let ok = f.write_line(&line);
        match (&ok, lost_since.as_mut()) {
            (Err(e), None) => {
                tracing::error!(path = %f.path.display(), error = %e, "alert file: a write failed; alerts are lost until it recovers");
                lost_since = Some(1);
            }
            (Err(_), Some(n)) => *n += 1,
            (Ok(()), Some(n)) => {
                tracing::warn!(path = %f.path.display(), lost = *n, "alert file: writes go through again");
                lost_since = None;
            }
            (Ok(()), None) => {}
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

    /// A full disk (a 64 KiB tmpfs): the line it cut stands alone once there is room again
    /// (here, a filler file removed), and the next alert is whole.
    #[test]
    fn a_line_cut_by_a_full_disk_stands_alone() {
        // A tmpfs needs root; CI runs as root and says a privileged test may not skip.
        let must = std::env::var_os("MCPMON_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1");
        if !nix_root() {
            assert!(!must, "MCPMON_REQUIRE_PRIVILEGED=1 but not root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(d.path()).status();
        assert!(ok.is_ok_and(|s| s.success()), "mount tmpfs");
        let filler = d.path().join("filler");
        std::fs::write(&filler, vec![0u8; 8192]).unwrap();
        let p = d.path().join("alerts.jsonl");
        let mut r = super::Rotating::open(&p, 1 << 30, 1).unwrap();
        let line = format!("{{\"a\":\"{}\"}}", "x".repeat(1000));
        let failed = (0..100).map(|_| r.write_line(&line)).filter(Result::is_err).count();
        std::fs::remove_file(&filler).unwrap();
        let again = r.write_line("{\"b\":1}");
        let text = std::fs::read_to_string(&p).unwrap();
        let _ = std::process::Command::new("umount").arg("-l").arg(d.path()).status();
        assert!(failed > 0, "the disk never filled");
        again.unwrap();
        let bad = text.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err()).count();
        assert_eq!(bad, 1, "only the cut line is not JSON");
        assert!(text.ends_with("\n{\"b\":1}\n"), "the next alert whole, on its own line");
    }

    fn nix_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}
