//! One qemu TCG boot of the matrix: the console is followed line by line until the marker that
//! ends the run.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, ExitStatus, Stdio},
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
/// emulation); the same kernel boots on the next try. The same death can come later, while
/// mcpmon attaches or detaches tracepoints (each a code patch: an int3 first, the new bytes,
/// then the int3 removed after every CPU synchronized): seen once in CI, both vCPUs trapped on
/// the int3 of `syscall_trace_enter` after the patch had completed, which a real CPU cannot do
/// (the handler finds no patch in progress, so the kernel dies); in CI again at a fentry patch
/// site (`__x64_sys_read+0x5`) as mcpmon detached, with trampolines on the stack. These came
/// from qemu's thread per vCPU; both vCPUs now run on one thread (`boot_once`), and a death of
/// that kind is still retried in case the emulator has another way to it. With fentry/fexit
/// the kernel also patches a BPF trampoline's own text when a program detaches (the return
/// path of the image being retired), under the same int3 protocol. That boot is repeated once,
/// said loudly, when the oops's RIP is in text the kernel patches (its own, a trampoline, a
/// dispatcher), not in a BPF program's body, which nothing patches (mcpmon uses no tail calls):
/// an int3 there is a jump into the JIT's padding, a real fault. qemu itself dying (a signal
/// or a failure status, no panic on the console) is the emulator's fault and repeated once as
/// well. Any other stop before the marker is reported as it is, with its headline
/// (`STOPPED`).
pub fn boot(kernel: &Path, initrd: &Path, extra_cmdline: &str, host_root: bool, done: &str, log: &Path) -> anyhow::Result<String> {
    let (text, qemu_failed) = boot_once(kernel, initrd, extra_cmdline, host_root, done, log)?;
    let console = std::fs::read_to_string(log).unwrap_or_default();
    let ran = text.lines().any(|l| ["VMTEST", "VMITEST", "VMBENCH"].iter().any(|m| l.starts_with(m)));
    let panicked = console.contains("Kernel panic");
    let again = if !ran && panicked {
        "the kernel panicked while booting, before the initramfs ran".to_string()
    } else if let Some(rip) = stale_int3(&console) {
        format!("the kernel died of an int3 left by a finished code patch ({rip}), an emulation fault of TCG")
    } else if let Some(status) = qemu_failed.filter(|_| !panicked) {
        format!("qemu died ({status}), no kernel panic on the console")
    } else {
        return Ok(text);
    };
    let kept = log.with_extension("panic.log");
    eprintln!("vm-test: {again}: booting it once more (that console is in {})", kept.display());
    let _ = std::fs::rename(log, &kept);
    let (text, _) = boot_once(kernel, initrd, extra_cmdline, host_root, done, log)?;
    Ok(format!("{REBOOTED}{again}\n{text}"))
}

/// The first line of what `boot` returns when it booted twice (the summary repeats it).
pub const REBOOTED: &str = "VMTEST INFO booted twice: ";

/// The line `boot_once` adds when the run stopped before its marker: qemu's exit and the
/// console's first panic, oops or BUG line.
pub const STOPPED: &str = "VMTEST INFO stopped early: ";

/// The kernel's `RIP` line when the console ends in a panic from an `Oops: int3` at text the
/// kernel patches: its own, a BPF trampoline or dispatcher, not a BPF program's body.
fn stale_int3(console: &str) -> Option<String> {
    let from = console.find("Oops: int3")?;
    let oops = &console[from..];
    let oops = &oops[..oops.find("Kernel panic")?];
    let rip = oops.lines().find_map(|l| l.split("RIP: 0010:").nth(1))?.trim();
    if rip.starts_with("bpf_prog_") || rip.contains(" bpf_prog_") {
        return None;
    }
    Some(rip.to_string())
}

/// The console's first line that says why the kernel stopped, without its timestamp.
fn headline(console: &str) -> Option<&str> {
    console.lines().find_map(|l| {
        let l = l.trim_end_matches('\r');
        let body = match l.strip_prefix('[') {
            Some(r) => r.split_once("] ").map_or(r, |(_, b)| b),
            None => l,
        };
        ["Kernel panic", "Oops:", "BUG:", "kernel BUG"].iter().any(|m| body.starts_with(m)).then_some(body)
    })
}

/// One boot: the marker lines, and qemu's exit status when it stopped by a signal or with a
/// failure status before the marker.
fn boot_once(kernel: &Path, initrd: &Path, extra_cmdline: &str, host_root: bool, done: &str, log: &Path) -> anyhow::Result<(String, Option<ExitStatus>)> {
    let mut cmd = Command::new("qemu-system-x86_64");
    // One host thread runs both vCPUs in turn (`thread=single`): with a thread per vCPU (this
    // qemu's default) a vCPU can still run a translation of kernel text another vCPU has
    // finished patching, and the kernel dies of a stale int3 (`boot`). Seen in 2 of 3 boots of
    // 6.12 running the hook-detach test repeatedly; a scenario takes as long either way (6.1:
    // 219 s single, 212 s multi).
    cmd.args(["-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-nographic", "-no-reboot", "-serial", "mon:stdio", "-display", "none"])
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
            // qemu exited before the run's end marker (a kernel panic, init gone): said below.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("{text}");
            bail!("the VM did not finish within {} s (console: {})", timeout.as_secs(), log.display());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = None;
    while Instant::now() < deadline {
        status = child.try_wait()?;
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut failed = None;
    if !text.lines().any(|l| l.starts_with(done)) {
        // The console's last lines, and its first that says why, in the marker lines.
        let console = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        eprintln!("vm-test: the VM stopped before \"{done}\"; its console ended with:\n{}", tail.join("\n"));
        let why = headline(&console).unwrap_or("no panic, oops or BUG on the console");
        let qemu = match status {
            Some(s) if !s.success() => {
                failed = Some(s);
                format!("qemu died ({s})")
            }
            Some(_) => "qemu exited".to_string(),
            None => "qemu still running".to_string(),
        };
        text.push_str(&format!("{STOPPED}{qemu}; {why}\n"));
    }
    eprintln!("vm-test: VM run took {} s", start.elapsed().as_secs());
    if done == "VMTEST END" && !text.contains("VMTEST DONE 0") {
        eprintln!("{text}");
    }
    Ok((text, failed))
}

#[cfg(test)]
mod tests {
    use super::{headline, stale_int3};

    /// The CI console of 2026-12-02 (6.12.117, the tracepoint parity run), shortened.
    const CI: &str = "VMTEST INFO daemon ready after 17 s
[  178.092518] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[  178.093623] CPU: 0 UID: 0 PID: 619 Comm: mcpmon Tainted: G               X   6.12.117+deb12-amd64 #1
[  178.094275] RIP: 0010:syscall_trace_enter+0xd6/0x190
[  178.096961] Call Trace:
[  178.098832]  <TASK>
[  178.099732]  do_syscall_64+0x14a/0x1b0
[  178.100666]  entry_SYSCALL_64_after_hwframe+0x76/0x7e
[  178.103835] Oops: int3: 0000 [#2] PREEMPT SMP NOPTI
[  178.104769] Kernel panic - not syncing: Fatal exception in interrupt
";

    #[test]
    fn an_int3_in_kernel_text_is_the_emulators() {
        assert_eq!(stale_int3(CI).as_deref(), Some("syscall_trace_enter+0xd6/0x190"));
    }

    /// A console of 2026-12-06 (6.12.118, the privileged test
    /// syscall_hooks_are_attached_only_while_something_is_tracked, as the daemon detached its
    /// fentry/fexit programs), shortened: the int3 of the `__x64_sys_read` patch, already
    /// rewritten to the call (`e8 <27>`), trapped; trampolines of the programs being detached
    /// are on the stack.
    const DETACH: &str = "[  299.353304] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[  299.353773] CPU: 1 UID: 0 PID: 1190 Comm: syscall_hooks_a Tainted: G               X   6.12.118+deb12-amd64 #1  Debian 6.12.118-1~deb12u1
[  299.354065] RIP: 0010:__x64_sys_read+0x5/0x20
[  299.354962] Call Trace:
[  299.355936]  do_syscall_64+0x87/0x1b0
[  299.356087]  ? __bpf_tramp_exit+0xd/0x50
[  299.356166]  ? bpf_trampoline_6442495075+0x89/0xd8
[  299.356526]  entry_SYSCALL_64_after_hwframe+0x76/0x7e
[  299.357056] Modules linked in: 9p 9pnet_virtio 9pnet netfs
[  299.357635] RIP: 0010:__x64_sys_read+0x5/0x20
[  299.357654] Code: 90 90 90 90 f3 0f 1e fa e8 <27> a7 26 08 48 8b 57 60 48 8b 77 68 8b 7f 70 e9 e7 fe ff ff 0f 1f
[  299.357902] Kernel panic - not syncing: Fatal exception in interrupt
";

    #[test]
    fn an_int3_at_a_finished_fentry_patch_with_trampolines_on_the_stack_is_the_emulators() {
        assert_eq!(stale_int3(DETACH).as_deref(), Some("__x64_sys_read+0x5/0x20"));
        assert_eq!(headline(DETACH), Some("Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"));
    }

    #[test]
    fn an_int3_in_a_trampoline_being_retired_is_the_emulators() {
        // A program on the stack, the RIP in the trampoline whose return path a detach patched.
        let tramp = CI
            .replace("syscall_trace_enter+0xd6/0x190", "bpf_trampoline_6442491052+0x5f/0x1000")
            .replace("do_syscall_64+0x14a/0x1b0", "bpf_prog_1a2b3c4d5e6f7a8b_mcpm_read_x+0x1c/0x200");
        assert_eq!(stale_int3(&tramp).as_deref(), Some("bpf_trampoline_6442491052+0x5f/0x1000"));
    }

    #[test]
    fn a_stop_is_named_by_the_consoles_first_panic_oops_or_bug() {
        assert_eq!(headline(CI), Some("Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"));
        assert_eq!(headline("VMITEST PASS x\n[  9.1] BUG: kernel NULL pointer dereference, address: 0\n"), Some("BUG: kernel NULL pointer dereference, address: 0"));
        assert_eq!(headline("VMITEST PASS x\nsh: can't kill\n"), None);
    }

    #[test]
    fn an_oops_in_a_bpf_program_or_another_oops_is_reported_as_it_is() {
        let in_prog = CI.replace("syscall_trace_enter+0xd6/0x190", "bpf_prog_1a2b3c4d5e6f7a8b_mcpm_read_e+0x1c/0x200");
        assert_eq!(stale_int3(&in_prog), None, "nothing patches a program's body");
        assert_eq!(stale_int3(&CI.replace("Oops: int3", "Oops: general protection fault")), None);
        assert_eq!(stale_int3("BUG: kernel NULL pointer dereference\nKernel panic - not syncing"), None);
        // An int3 oops that did not end in a panic is no crash.
        assert_eq!(stale_int3(&CI.replace("Kernel panic", "Kernel warning")), None);
    }
}
