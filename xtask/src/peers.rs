//! Real MCP peers for the end-to-end tests, installed from the registries into `target/mcp-peers`:
//! the official Python SDK (`mcp`, also the client the tests drive servers with),
//! `mcp-server-time`, `mcp-server-fetch` and `mcp-server-git` (Python SDK servers), the Node
//! reference servers (filesystem, memory, sequential-thinking, everything), a git server and
//! `mcp-remote` (the benign corpus of `monitor/tests/precision.rs`), and `opentelemetry-proto` for
//! the OTLP receiver of `monitor/tests/otlp.rs`.
//! Versions are pinned so a registry release cannot change what the tests mean.
use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::util;

/// `opentelemetry-proto` (with the protobuf runtime it parses with) is the OTLP receiver of
/// `monitor/tests/otlp.rs` (tests/peers/otlp_receiver.py).
const PIP: &[&str] = &[
    "mcp==2.3.0",
    "mcp-server-time==2026.10.19",
    "mcp-server-fetch==2026.10.24",
    "mcp-server-git==2026.10.19",
    "opentelemetry-proto==1.45.2",
    "protobuf==7.36.2",
];
/// The reference servers, plus two more that spawn subprocesses (a git server built on git
/// itself) or use the network (mcp-remote, a stdio-to-HTTP bridge) for the benign corpus.
const NPM: &[&str] = &[
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-memory@2026.8.31",
    "@modelcontextprotocol/server-sequential-thinking@2026.8.31",
    "@modelcontextprotocol/server-everything@2026.8.31",
    "@cyanheads/git-mcp-server@2.15.3",
    "mcp-remote@0.15.1",
    // The official TypeScript client SDK: the agent of monitor/tests/discovery_handshake.rs.
    "@modelcontextprotocol/sdk@1.32.2",
];

pub fn dir() -> PathBuf {
    util::root().join("target/mcp-peers")
}

pub fn install() -> anyhow::Result<()> {
    let dir = dir();
    let stamp = dir.join("installed");
    let want = format!("{PIP:?} {NPM:?} readabilipy-js");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).context("creating target/mcp-peers")?;
    // Debian's python3 (not a pyenv shim): the venv must work for root and in CI alike.
    let py = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    if !dir.join("venv/bin/python").exists() {
        util::run(Command::new(py).args(["-m", "venv"]).arg(dir.join("venv")))?;
    }
    util::run(Command::new(dir.join("venv/bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(PIP))?;
    // mcp-server-fetch's readabilipy runs `npm install` for its JavaScript part on first use.
    // That is installation, not everyday work (and npm reads ~/.npmrc, which the shipped rules
    // deny to servers): do it here, as installing the server would.
    util::run(Command::new(dir.join("venv/bin/python")).args(["-c", "from readabilipy.utils import run_npm_install; run_npm_install()"]))?;
    // --prefix keeps npm from walking up to a parent project.
    util::run(Command::new("npm").arg("--prefix").arg(&dir).args(["install", "--no-audit", "--no-fund", "--silent"]).args(NPM))?;
    std::fs::write(&stamp, want)?;
    eprintln!("xtask setup: MCP test peers ready in {}", dir.display());
    Ok(())
}
