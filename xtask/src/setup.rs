//! Installs the toolchain and test peers, skipping whatever is already there.
//!
//! - Debian's `rustc-web` + `libstd-rust-web-dev-bpf`: a stable rustc with a precompiled `core`
//!   for bpfel-unknown-none (no nightly, no rust-src needed), from bookworm-security.
//! - `bpf-linker` 0.13.0 built against LLVM 22 (`llvm-22-dev` and friends).
//! - `bpftool` (detach checks), `strace`, `python3` (test peers), util-linux's `setpriv`,
//!   `prometheus` (scrapes the daemon in the dashboard test), `tmux` (`mcpmon top` test),
//!   `docker.io` and `busybox-static` (a container server's discovery test).
use std::process::Command;

use anyhow::bail;

use crate::util::{self, output};

const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "build-essential",
    "pkg-config",
    "bpftool",
    "strace",
    "python3",
    "python3-venv",
    "util-linux",
    // Observability tests: a real Prometheus scrapes the daemon; `mcpmon top` runs in tmux.
    "prometheus",
    "tmux",
    // Discovery test of a `docker run -i` server: a Docker engine, and a static busybox for
    // the image it runs (imported from a local rootfs: no registry).
    "docker.io",
    "busybox-static",
];
const BPF_LINKER: &str = "0.13.0";

pub fn installed(pkg: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", pkg]).is_some_and(|s| s.contains("install ok installed"))
}

/// The packages of `pkgs` that are not installed.
pub fn missing<'a>(pkgs: &[&'a str]) -> Vec<&'a str> {
    pkgs.iter().copied().filter(|p| !installed(p)).collect()
}

/// Installs Debian packages, non-interactively and without recommends.
pub fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    util::run(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "-q", "--no-install-recommends"]).args(pkgs))
}

pub fn run() -> anyhow::Result<()> {
    let mut missing = missing(PACKAGES);
    // Node for the Node MCP server peers: keep one that is there (any vendor), else Debian's.
    if output("node", &["--version"]).is_none() {
        missing.extend(["nodejs", "npm"]);
    }
    if !missing.is_empty() {
        if !util::is_root() {
            bail!("missing Debian packages {missing:?}: run `sudo ./x setup` (or as root)");
        }
        util::run(Command::new("apt-get").args(["update", "-q"]))?;
        apt_install(&missing)?;
    }
    let have = output("bpf-linker", &["--version"]).unwrap_or_default();
    if !have.contains(BPF_LINKER) {
        let install = |locked: bool| {
            let mut c = util::cargo_cmd();
            c.env("LLVM_PREFIX", "/usr/lib/llvm-22").args(["install", &format!("bpf-linker@{BPF_LINKER}")]);
            if locked {
                c.arg("--locked");
            }
            util::run(c.args(["--no-default-features", "--features", "llvm-22"]))
        };
        // --locked can fail when the published lockfile predates this rustc; retry unlocked.
        install(true).or_else(|_| install(false))?;
    }
    crate::peers::install()?;
    crate::runners::install()?;
    eprintln!("xtask setup: toolchain ready (Debian packages, bpf-linker {BPF_LINKER})");
    Ok(())
}
