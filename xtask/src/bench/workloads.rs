//! The workloads: tight loops (run by `mcpmon-testkit loop`, an untracked process) and realistic
//! jobs (`git status` on a large tree, a small `cargo build`).
use std::{path::{Path, PathBuf}, process::Command, time::Instant};

use anyhow::{bail, Context as _};

use super::testkit;

pub struct Workloads {
    pub tree: PathBuf,
    pub krate: PathBuf,
    pub open_n: u64,
    pub fork_n: u64,
    pub connect_n: u64,
}

pub const NAMES: &[&str] = &["open_close", "fork_exec", "connect", "git_status", "cargo_build"];

impl Workloads {
    pub fn prepare(work: &Path, quick: bool) -> anyhow::Result<Self> {
        let tree = work.join("tree");
        if !tree.join(".git").exists() {
            eprintln!("bench: creating a 20000-file git tree");
            let _ = std::fs::remove_dir_all(&tree);
            for d in 0..200 {
                let dir = tree.join(format!("d{d:03}"));
                std::fs::create_dir_all(&dir)?;
                for f in 0..100 {
                    std::fs::write(dir.join(format!("f{f:03}.txt")), format!("{d} {f}\n"))?;
                }
            }
            let git = |args: &[&str]| -> anyhow::Result<()> {
                let st = Command::new("git").args(args).current_dir(&tree).env("GIT_AUTHOR_NAME", "b").env("GIT_AUTHOR_EMAIL", "b@b").env("GIT_COMMITTER_NAME", "b").env("GIT_COMMITTER_EMAIL", "b@b").status()?;
                if !st.success() {
                    bail!("git {args:?} failed");
                }
                Ok(())
            };
            git(&["init", "-q"])?;
            git(&["add", "."])?;
            git(&["commit", "-qm", "tree"])?;
        }
        let krate = work.join("crate");
        std::fs::create_dir_all(krate.join("src"))?;
        std::fs::write(krate.join("Cargo.toml"), "[package]\nname = \"benchcrate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n")?;
        let mut src = String::from("fn main() {\n    let mut v = 0u64;\n");
        for i in 0..200 {
            src.push_str(&format!("    v = v.wrapping_mul(31).wrapping_add({i});\n"));
        }
        src.push_str("    println!(\"{v}\");\n}\n");
        std::fs::write(krate.join("src/main.rs"), src)?;
        let k = if quick { 4 } else { 1 };
        Ok(Self { tree, krate, open_n: 200_000 / k, fork_n: 1500 / k, connect_n: 10_000 / k })
    }

    /// One sample of a workload: nanoseconds per operation (loops) or per job.
    pub fn sample(&self, name: &str) -> anyhow::Result<f64> {
        match name {
            "open_close" => fastest_batch_ns("open", self.open_n),
            "fork_exec" => fastest_batch_ns("forkexec", self.fork_n),
            "connect" => fastest_batch_ns("connect", self.connect_n),
            "git_status" => {
                let t = Instant::now();
                for _ in 0..5 {
                    let st = Command::new("git").args(["status", "--porcelain"]).current_dir(&self.tree).stdout(std::process::Stdio::null()).status()?;
                    if !st.success() {
                        bail!("git status failed");
                    }
                }
                Ok(t.elapsed().as_nanos() as f64 / 5.0)
            }
            "cargo_build" => {
                let _ = std::fs::remove_dir_all(self.krate.join("target"));
                let t = Instant::now();
                let st = crate::util::cargo_cmd().args(["build", "--quiet", "--offline"]).current_dir(&self.krate).status()?;
                if !st.success() {
                    bail!("cargo build of the bench crate failed");
                }
                Ok(t.elapsed().as_nanos() as f64)
            }
            other => bail!("unknown workload {other}"),
        }
    }
}

/// Batches a loop of the overhead section is timed in (`fastest_batch_ns`).
pub const BATCHES: u64 = 100;

/// The mean nanoseconds per operation of `n` runs of loop `kind`.
pub fn loop_ns(kind: &str, n: u64) -> anyhow::Result<f64> {
    run_loop(kind, n, None)
}

/// The nanoseconds per operation of the fastest of [`BATCHES`] batches of loop `kind`: the
/// operation's cost with the least of the machine's noise, which only ever adds time (the
/// testkit's `per_op` says why). The overhead section compares configurations by it.
pub fn fastest_batch_ns(kind: &str, n: u64) -> anyhow::Result<f64> {
    run_loop(kind, n, Some(BATCHES))
}

fn run_loop(kind: &str, n: u64, batches: Option<u64>) -> anyhow::Result<f64> {
    let mut c = Command::new(testkit());
    c.args(["loop", kind, &n.to_string()]);
    if let Some(b) = batches {
        c.env("MCPMON_LOOP_BATCHES", b.to_string());
    }
    let out = c.output()?;
    if !out.status.success() {
        bail!("mcpmon-testkit loop {kind}: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().context("mcpmon-testkit loop output")
}
