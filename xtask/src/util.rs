//! Running commands, loudly.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command in the repo root, echoing it; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(root());
    eprintln!("+ {}", describe(cmd));
    let status = cmd.status().with_context(|| format!("spawning {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// `cargo` with `$CARGO_HOME/bin` (where `cargo install` puts bpf-linker) first on PATH.
pub fn cargo_cmd() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.env("PATH", path_with_cargo_bin());
    c
}

pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"));
    let mut paths = vec![home.join("bin")];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(paths).unwrap_or_default()
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(cargo_cmd().args(args))
}

/// Replaces this process (signals then reach mcpmon directly).
pub fn exec(program: &Path, args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.args(args);
    eprintln!("+ {}", describe(&cmd));
    Err(cmd.exec()).with_context(|| format!("executing {}", program.display()))
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Output of a command, or None if it cannot run.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(program).env("PATH", path_with_cargo_bin()).args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}
