//! One qemu TCG boot of the matrix: the console is followed line by line until the marker that
//! ends the run.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// A scenario boot takes 1.5 to 3 minutes under TCG; the privileged tests add a daemon start
/// (debug build, verifier under emulation) per test.
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
const ITEST_TIMEOUT: Duration = Duration::from_secs(2400);

/// Boots `kernel` with `initrd`; `host_root`: share this machine's `/` read-only over virtio 9p
/// (tag `hostroot`) for the privileged tests. Returns the console lines carrying markers, up to
/// the one starting with `done`; the whole console goes to `log` as it comes.
///
/// A kernel that panics while it boots, before the initramfs printed anything, is booted once
/// more: nothing of mcpmon ran yet. Debian's 6.12 under TCG with two vCPUs sometimes dies of an
/// int3 in `sched_clock_cpu` at about 3.5 s (a code patch racing the other vCPU under
/// emulation); the same kernel boots on the next try. A panic after the first marker is
/// reported as it is.
pub fn boot(kernel: &Path, initrd: &Path, extra_cmdline: &str, host_root: bool, done: &str, log: &Path) -> anyhow::Result<String> {
    let text = boot_once(kernel, initrd, extra_cmdline, host_root, done, log)?;
    let console = std::fs::read_to_string(log).unwrap_or_default();
    let ran = text.lines().any(|l| ["VMTEST", "VMITEST", "VMBENCH"].iter().any(|m| l.starts_with(m)));
    if !ran && console.contains("Kernel panic") {
        eprintln!("vm-test: the kernel panicked while booting, before the initramfs ran: booting it once more");
        let _ = std::fs::rename(log, log.with_extension("panic.log"));
        return boot_once(kernel, initrd, extra_cmdline, host_root, done, log);
    }
    Ok(text)
}

fn boot_once(kernel: &Path, initrd: &Path, extra_cmdline: &str, host_root: bool, done: &str, log: &Path) -> anyhow::Result<String> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-nographic", "-no-reboot", "-serial", "mon:stdio", "-display", "none"])
        .args(["-m", if host_root { "2048" } else { "1024" }])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 lsm=lockdown,capability,landlock,yama,apparmor,bpf panic=-1 quiet{extra_cmdline}"));
    if host_root {
        // Read-only: nothing in the VM can change this machine; multidevs=remap keeps inode
        // numbers of different host filesystems apart.
        cmd.args(["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"]);
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("qemu-system-x86_64")?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let timeout = if host_root { ITEST_TIMEOUT } else { BOOT_TIMEOUT };
    let start = Instant::now();
    let mut text = String::new();
    // The whole console, as it comes, for whoever watches a slow TCG boot.
    let mut live = std::fs::File::create(log).ok();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                let l = l.trim_end_matches('\r').to_string();
                if let Some(f) = live.as_mut() {
                    let _ = writeln!(f, "{l}");
                }
                // Console escape sequences may precede the marker on the same line.
                let l = match ["VMTEST", "VMITEST", "VMBENCH"].iter().filter_map(|m| l.find(m)).min() {
                    Some(i) => l[i..].to_string(),
                    None => l,
                };
                if l.starts_with("VMTEST") || l.starts_with("VMITEST") || l.starts_with("VMBENCH") {
                    eprintln!("vm: {l}");
                }
                text.push_str(&l);
                text.push('\n');
                if l.starts_with(done) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // qemu exited before the run's end marker (a kernel panic, init gone): the
                // console's last lines say why.
                if !text.lines().any(|l| l.starts_with(done)) {
                    let all = std::fs::read_to_string(log).unwrap_or_default();
                    let tail: Vec<&str> = all.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                    eprintln!("vm-test: the VM stopped before \"{done}\"; its console ended with:\n{}", tail.join("\n"));
                }
                break;
            }
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("{text}");
            bail!("the VM did not finish within {} s (console: {})", timeout.as_secs(), log.display());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("vm-test: VM run took {} s", start.elapsed().as_secs());
    if done == "VMTEST END" && !text.contains("VMTEST DONE 0") {
        eprintln!("{text}");
    }
    Ok(text)
}
