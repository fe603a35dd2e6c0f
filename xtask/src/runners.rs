//! The runners MCP clients launch servers through, installed the way users install them, for
//! `monitor/tests/discovery_runners.rs` (issue 15): `uv` (`uvx`) and `pipx` from PyPI, `bun`
//! (`bunx`) from npm, and a wheelhouse (`mcp-server-time` and its dependencies) that the tests
//! point uv, pipx and pip at, so that a launch needs no network. Pinned like the peers.
use std::process::Command;

use anyhow::Context as _;

use crate::util;

const PIP: &[&str] = &["uv==0.13.8", "pipx==1.18.4"];
const NPM: &[&str] = &["bun@1.4.4"];
/// Downloaded as wheels, not installed: the local index of the offline launches.
const WHEELS: &[&str] = &["mcp-server-time==2026.10.19", "mcp==2.3.0"];

pub fn install() -> anyhow::Result<()> {
    let dir = util::root().join("target/mcp-runners");
    let stamp = dir.join("installed");
    let want = format!("{PIP:?} {NPM:?} {WHEELS:?}");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).context("creating target/mcp-runners")?;
    // Debian's python3 (not a pyenv shim), as for the peers: the wheels are for its version.
    let py = if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    if !dir.join("venv/bin/python").exists() {
        util::run(Command::new(py).args(["-m", "venv"]).arg(dir.join("venv")))?;
    }
    let pip = dir.join("venv/bin/pip");
    util::run(Command::new(&pip).args(["install", "-q", "--disable-pip-version-check"]).args(PIP))?;
    util::run(Command::new(&pip).args(["download", "-q", "--disable-pip-version-check", "-d"]).arg(dir.join("wheelhouse")).args(WHEELS))?;
    // --prefix keeps npm from walking up to a parent project.
    util::run(Command::new("npm").arg("--prefix").arg(&dir).args(["install", "--no-audit", "--no-fund", "--silent"]).args(NPM))?;
    std::fs::write(&stamp, want)?;
    eprintln!("xtask setup: MCP runners (uv, pipx, bun) ready in {}", dir.display());
    Ok(())
}
