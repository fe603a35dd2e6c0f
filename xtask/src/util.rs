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
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
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

/// Runs `cargo test`, passing its output through, and ends with one line totalling every test
/// binary (`summary: N passed, N failed, N skipped`): cargo's own last line is a per-binary one,
/// often the doc tests' "0 passed".
pub fn cargo_test_summary(args: &[&str]) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    let mut cmd = cargo_cmd();
    // Tests that skip at run time (a missing tool, no privileges) log themselves here: they
    // count as skipped, not passed.
    let skip_log = std::env::temp_dir().join(format!("mcpmon-skips-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&skip_log);
    cmd.env("MCPMON_SKIP_LOG", &skip_log);
    cmd.args(args).current_dir(root()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    eprintln!("+ {}", describe(&cmd));
    let mut child = cmd.spawn().with_context(|| format!("spawning {}", describe(&cmd)))?;
    // cargo's stderr passes through too, and its lines are kept for the digest in a thread of
    // their own: a test binary that dies of a signal is named only there.
    let stderr = child.stderr.take().unwrap();
    let cargo_said = std::thread::spawn(move || {
        let mut said = crate::failures::Failures::default();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            said.feed_cargo(&line);
        }
        said
    });
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let mut failures = crate::failures::Failures::default();
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        println!("{line}");
        failures.feed(&line);
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(key).map(|n| n.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").parse::<u64>().unwrap_or(0)))
                    .unwrap_or(0)
            };
            passed += num("passed");
            failed += num("failed");
            ignored += num("ignored");
        }
    }
    let status = child.wait()?;
    // A process a test left behind may hold cargo's stderr open after cargo exited (a server
    // stopped at exec by a daemon that died): its lines are not waited for beyond a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cargo_said.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if cargo_said.is_finished() {
        if let Ok(said) = cargo_said.join() {
            failures.add_cargo(said);
        }
    } else {
        println!("xtask: cargo's stderr is still held open by a process the tests left behind");
    }
    let skips: Vec<String> = std::fs::read_to_string(&skip_log).unwrap_or_default().lines().map(str::to_string).collect();
    let _ = std::fs::remove_file(&skip_log);
    for s in &skips {
        println!("skipped at run time: {s}");
    }
    let runtime = skips.len() as u64;
    let passed = passed.saturating_sub(runtime);
    let ignored = ignored + runtime;
    println!("summary: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() || failed > 0 {
        if failures.is_empty() {
            // Nothing failed that libtest reported (a build error, a test binary that would not start).
            bail!("cargo test failed: {status}");
        }
        // The digest goes into the error, which `./x test` prints last, after the kernel matrix.
        bail!("cargo test failed: {status}\n{}", failures.digest());
    }
    Ok(())
}
