//! `cargo xtask vm-test`: the kernel matrix. The same scenario (tests/vm/scenario.sh) runs
//! - on this machine's kernel, where mcpmon must take the fallbacks (no BPF-LSM, no trampolines),
//! - in a VM booted from Debian's own kernel package (`linux-image-amd64`, fetched with apt) with
//!   `lsm=…,bpf`, under qemu TCG (KVM hangs on these machines), from a busybox initramfs holding
//!   the release `mcpmon` and `mcpmon-testkit`, their shared libraries, the rules and the scenario; there the BPF-LSM
//!   deny path must load and return EPERM.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::util;

const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);

pub fn run(host: bool, vm: bool) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("vm-test loads eBPF on the host and needs root");
    }
    crate::setup::run()?;
    let missing = crate::setup::missing(PACKAGES);
    if !missing.is_empty() {
        crate::setup::apt_install(&missing)?;
    }
    util::cargo(&["build", "--release", "-p", "monitor"])?;
    let root = util::root();
    let work = root.join("target/vm");
    std::fs::create_dir_all(&work)?;
    let mut failures = Vec::new();
    if host {
        eprintln!("vm-test: scenario on this machine's kernel (fallback paths)");
        let dir = tempfile::tempdir()?;
        let out = Command::new("sh")
            .arg(root.join("tests/vm/scenario.sh"))
            .arg(root.join("target/release/mcpmon"))
            .arg(root.join("rules"))
            .arg(dir.path())
            .arg("fallback")
            .arg(root.join("target/release/mcpmon-testkit"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprint!("{text}");
        check("host", &text, &mut failures);
    }
    if vm {
        let kernel = fetch_kernel(&work)?;
        let initrd = build_initramfs(&work, &root)?;
        eprintln!("vm-test: booting {} under qemu TCG", kernel.display());
        let text = boot(&kernel, &initrd, "", "VMTEST DONE")?;
        check("vm", &text, &mut failures);
    }
    if !failures.is_empty() {
        bail!("vm-test failed: {}", failures.join("; "));
    }
    eprintln!("vm-test: all scenarios passed");
    Ok(())
}

fn check(label: &str, text: &str, failures: &mut Vec<String>) {
    let passed = text.lines().filter(|l| l.starts_with("VMTEST PASS")).count();
    for l in text.lines().filter(|l| l.starts_with("VMTEST FAIL")) {
        failures.push(format!("{label}: {l}"));
    }
    match text.lines().find_map(|l| l.strip_prefix("VMTEST DONE ")) {
        None => failures.push(format!("{label}: the scenario did not finish")),
        Some(n) if n.trim() != "0" => {}
        Some(_) if passed < 16 => failures.push(format!("{label}: only {passed} checks passed")),
        Some(_) => eprintln!("vm-test: {label}: {passed} checks passed"),
    }
}

/// Debian's current kernel package, downloaded with apt and unpacked (once).
fn fetch_kernel(work: &Path) -> anyhow::Result<PathBuf> {
    let deps = util::output("apt-cache", &["depends", "linux-image-amd64"]).context("apt-cache depends linux-image-amd64")?;
    let pkg = deps.lines().find_map(|l| l.trim().strip_prefix("Depends: ")).filter(|p| p.starts_with("linux-image-")).context("no linux-image dependency")?.to_string();
    let dir = work.join("kernel").join(&pkg);
    let found = |d: &Path| -> Option<PathBuf> {
        std::fs::read_dir(d.join("boot")).ok()?.flatten().map(|e| e.path()).find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
    };
    if let Some(k) = found(&dir) {
        return Ok(k);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("vm-test: downloading {pkg}");
    let mut c = Command::new("apt-get");
    c.args(["download", &pkg]).current_dir(&dir);
    let st = c.status()?;
    if !st.success() {
        util::run(Command::new("apt-get").args(["update", "-q"]))?;
        if !Command::new("apt-get").args(["download", &pkg]).current_dir(&dir).status()?.success() {
            bail!("apt-get download {pkg} failed");
        }
    }
    let deb = std::fs::read_dir(&dir)?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb")).context("no .deb downloaded")?;
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    found(&dir).context("no vmlinuz in the package")
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /tmp /run /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t securityfs none /sys/kernel/security
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
echo "VMTEST BOOT $(uname -r) lsm=$(cat /sys/kernel/security/lsm)"
bench=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^mcpmon.bench=//p')
if [ -n "$bench" ]; then
  sh /vm/bench.sh /vm/mcpmon /vm/rules /tmp/work ${bench%,*} ${bench#*,} /vm/mcpmon-testkit
else
  sh /vm/scenario.sh /vm/mcpmon /vm/rules /tmp/work lsm /vm/mcpmon-testkit
fi
poweroff -f
"#;

fn build_initramfs(work: &Path, root: &Path) -> anyhow::Result<PathBuf> {
    let dir = work.join("initramfs");
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["bin", "vm/rules", "etc", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).context("busybox-static")?;
    // mcpmon, and the victims and attackers of the scenario (mcpmon-testkit).
    for bin in ["mcpmon", "mcpmon-testkit"] {
        let path = root.join("target/release").join(bin);
        std::fs::copy(&path, dir.join("vm").join(bin)).with_context(|| format!("copying {}", path.display()))?;
        // The shared libraries it needs, at the same paths.
        let ldd = util::output("ldd", &[path.to_str().unwrap()]).context("ldd")?;
        for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
            let dst = dir.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap())?;
            std::fs::copy(lib, &dst).with_context(|| format!("copying {lib}"))?;
        }
    }
    for e in std::fs::read_dir(root.join("rules"))?.flatten() {
        std::fs::copy(e.path(), dir.join("vm/rules").join(e.file_name()))?;
    }
    for script in ["scenario.sh", "bench.sh"] {
        std::fs::copy(root.join("tests/vm").join(script), dir.join("vm").join(script))?;
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("init"), INIT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("init"), std::fs::Permissions::from_mode(0o755))?;
    let out = work.join("initramfs.cpio.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}", dir.display(), out.display()))
        .status()?;
    if !st.success() {
        bail!("building the initramfs failed");
    }
    Ok(out)
}

/// The fast-path benchmark in the VM (`tests/vm/bench.sh`): its raw `VMBENCH` lines.
pub fn bench(rounds: usize, n: u64) -> anyhow::Result<String> {
    let missing = crate::setup::missing(PACKAGES);
    if !missing.is_empty() {
        crate::setup::apt_install(&missing)?;
    }
    let root = util::root();
    let work = root.join("target/vm");
    std::fs::create_dir_all(&work)?;
    let kernel = fetch_kernel(&work)?;
    let initrd = build_initramfs(&work, &root)?;
    boot(&kernel, &initrd, &format!(" mcpmon.bench={rounds},{n}"), "VMBENCH DONE")
}

/// Boots the VM; returns the console lines carrying VMTEST/VMBENCH markers, up to `done`.
fn boot(kernel: &Path, initrd: &Path, extra_cmdline: &str, done: &str) -> anyhow::Result<String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot", "-serial", "mon:stdio", "-display", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 lsm=lockdown,capability,landlock,yama,apparmor,bpf panic=-1 quiet{extra_cmdline}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("qemu-system-x86_64")?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let start = Instant::now();
    let mut text = String::new();
    // The whole console, as it comes, for whoever watches a slow TCG boot.
    let live = kernel.parent().and_then(Path::parent).and_then(Path::parent).and_then(Path::parent).unwrap_or(Path::new(".")).join("serial.log");
    let mut live_f = std::fs::File::create(&live).ok();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                let l = l.trim_end_matches('\r').to_string();
                if let Some(f) = live_f.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{l}");
                }
                // Console escape sequences may precede the marker on the same line.
                let l = match l.find("VMTEST").or_else(|| l.find("VMBENCH")) { Some(i) => l[i..].to_string(), None => l };
                if l.starts_with("VMTEST") || l.starts_with("VMBENCH") {
                    eprintln!("vm: {l}");
                }
                text.push_str(&l);
                text.push('\n');
                if l.starts_with(done) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            eprintln!("{text}");
            bail!("the VM did not finish within {} s", BOOT_TIMEOUT.as_secs());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("vm-test: VM run took {} s", start.elapsed().as_secs());
    if done == "VMTEST DONE" && !text.contains("VMTEST DONE 0") {
        eprintln!("{text}");
    }
    eprintln!("vm-test: serial console saved to {}", live.display());
    Ok(text)
}
