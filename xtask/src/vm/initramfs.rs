//! The one initramfs every kernel of the matrix boots: busybox, the release mcpmon and mcpmon-testkit and their shared
//! libraries, the rules, the scripts of tests/vm, the list of privileged tests, and for each
//! kernel that can mount the host over 9p the modules that needs.
use std::{os::unix::fs::PermissionsExt, path::{Path, PathBuf}, process::Command};

use anyhow::{bail, Context as _};

use super::kernel::Kernel;
use crate::util;

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
# mcpmon.NAME=VALUE on the kernel command line.
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^mcpmon.$1=//p"; }
bench=$(arg bench)
if [ -n "$bench" ]; then
  sh /vm/bench.sh /vm/mcpmon /vm/rules /tmp/work ${bench%,*} ${bench#*,}
else
  # Each script's status, for a run that ends without the script's DONE line (cut short).
  sh /vm/scenario.sh /vm/mcpmon /vm/rules /tmp/work "$(arg expect)"
  echo "VMTEST INFO scenario.sh exited $?"
  if [ "$(arg itest)" = 1 ]; then
    sh /vm/itest.sh /vm/itests
    echo "VMTEST INFO itest.sh exited $?"
  fi
fi
echo "VMTEST END"
poweroff -f
"#;

/// `tests`: (test binary, test name) pairs for tests/vm/itest.sh, paths as on this machine.
pub fn build(work: &Path, root: &Path, kernels: &[Kernel], tests: &[(PathBuf, String)]) -> anyhow::Result<PathBuf> {
    let dir = work.join("initramfs");
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["bin", "vm/rules", "etc", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).context("busybox-static")?;
    // mcpmon, and the victims and attackers of the scenario (mcpmon-testkit, found next to it),
    // with the shared libraries they need, at the same paths.
    for bin in ["mcpmon", "mcpmon-testkit"] {
        let src = root.join("target/release").join(bin);
        std::fs::copy(&src, dir.join("vm").join(bin)).with_context(|| format!("target/release/{bin}"))?;
        let ldd = util::output("ldd", &[src.to_str().unwrap()]).context("ldd")?;
        for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
            let dst = dir.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap())?;
            std::fs::copy(lib, &dst).with_context(|| format!("copying {lib}"))?;
        }
    }
    for e in std::fs::read_dir(root.join("rules"))?.flatten() {
        std::fs::copy(e.path(), dir.join("vm/rules").join(e.file_name()))?;
    }
    for script in ["scenario.sh", "bench.sh", "itest.sh"] {
        std::fs::copy(root.join("tests/vm").join(script), dir.join("vm").join(script)).with_context(|| format!("tests/vm/{script}"))?;
    }
    let list: String = tests.iter().map(|(bin, name)| format!("{} {name}\n", bin.display())).collect();
    std::fs::write(dir.join("vm/itests"), list)?;
    if !tests.is_empty() {
        for k in kernels.iter().filter(|k| k.has_9p()) {
            let mods = dir.join("lib/modules").join(&k.release);
            std::fs::create_dir_all(&mods)?;
            let mut order = String::new();
            for (name, bytes) in k.modules_for_9p()? {
                std::fs::write(mods.join(format!("{name}.ko")), bytes)?;
                order.push_str(&name);
                order.push('\n');
            }
            std::fs::write(mods.join("order"), order)?;
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("init"), INIT)?;
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
