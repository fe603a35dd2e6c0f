//! `cargo xtask vm-test`: the kernel matrix. One build (the release `mcpmon`, one initramfs, the
//! debug test binaries) runs without a rebuild
//! - on this machine's kernel, where the scenario takes whatever paths the daemon reports,
//! - in a VM booted from each of Debian's kernels in `kernel::MATRIX` (6.1, 6.12, cloud) with
//!   `lsm=…,bpf`, under qemu TCG (KVM hangs on these machines), one after another, from a busybox
//!   initramfs holding mcpmon, its shared libraries, the rules and the scripts; there the paths
//!   the kernel's own config offers (BPF-LSM deny, fentry/fexit) must be the ones taken,
//! - and on `ITEST_KERNEL` also the privileged integration tests of tests/vm/itests.txt, run
//!   from the host's root filesystem shared read-only over virtio 9p (tests/vm/itest.sh).
use std::{process::Command, time::Instant};

use anyhow::bail;

use crate::util;

mod boot;
mod initramfs;
mod itests;
mod kernel;

use kernel::Kernel;

const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];
/// The kernel that also runs the privileged integration tests: it has trampolines, the BPF LSM
/// and virtio-pci built in (9p as modules).
const ITEST_KERNEL: &str = "6.12";

/// `kernels`: labels of `kernel::MATRIX` to boot (empty: all).
pub fn run(host: bool, vm: bool, kernels: &[String]) -> anyhow::Result<()> {
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
    let mut summary = Vec::new();
    if host {
        eprintln!("vm-test: scenario on this machine's kernel (the paths the daemon reports)");
        let dir = tempfile::tempdir()?;
        let start = Instant::now();
        let out = Command::new("sh")
            .arg(root.join("tests/vm/scenario.sh"))
            .arg(root.join("target/release/mcpmon"))
            .arg(root.join("rules"))
            .arg(dir.path())
            .arg("auto/auto")
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprint!("{text}");
        let release = util::output("uname", &["-r"]).unwrap_or_default();
        summary.push(format!("host {}: {}", release.trim(), scenario_result("host", &text, &mut failures, start)));
    }
    if vm {
        let specs: Vec<_> = kernel::MATRIX.iter().filter(|s| kernels.is_empty() || kernels.iter().any(|k| k == s.label)).collect();
        if specs.is_empty() {
            bail!("no kernel of the matrix is called {kernels:?}");
        }
        let matrix = specs.iter().map(|s| Kernel::fetch(&work, s)).collect::<anyhow::Result<Vec<_>>>()?;
        let itest_kernel = matrix.iter().find(|k| k.label == ITEST_KERNEL);
        let tests = match itest_kernel {
            Some(k) if !k.has_9p() => bail!("{} cannot mount the host over 9p: no privileged tests in the VM", k.release),
            Some(_) => itests::build(&root)?,
            None => vec![],
        };
        let initrd = initramfs::build(&work, &root, &matrix, &tests)?;
        for k in &matrix {
            let itest = k.label == ITEST_KERNEL;
            let expect = format!("{}/{}", k.expected_deny(), k.expected_observe());
            eprintln!("vm-test: booting {} ({}) under qemu TCG, expecting {expect}{}", k.release, k.package, if itest { ", then the privileged tests" } else { "" });
            let start = Instant::now();
            let log = work.join(format!("serial-{}.log", k.label));
            let text = boot::boot(&k.image, &initrd, &format!(" mcpmon.expect={expect}{}", if itest { " mcpmon.itest=1" } else { "" }), itest, "VMTEST END", &log)?;
            let mut line = format!("{} {}: {}", k.label, k.release, scenario_result(k.label, &text, &mut failures, start));
            if itest {
                line.push_str(&format!("; {}", itest_result(k.label, &text, &tests, &mut failures)));
            }
            if let Some(why) = text.lines().find_map(|l| l.strip_prefix(boot::REBOOTED)) {
                line.push_str(&format!("; booted twice: {why}"));
            }
            eprintln!("vm-test: {line} (serial console in {})", log.display());
            summary.push(line);
        }
    }
    eprintln!("vm-test: summary\n  {}", summary.join("\n  "));
    if !failures.is_empty() {
        bail!("vm-test failed: {}", failures.join("; "));
    }
    eprintln!("vm-test: all scenarios passed");
    Ok(())
}

/// The scenario's verdict on one kernel: its PASS/FAIL lines, the paths the daemon reported.
fn scenario_result(label: &str, text: &str, failures: &mut Vec<String>, start: Instant) -> String {
    let passed = text.lines().filter(|l| l.starts_with("VMTEST PASS")).count();
    for l in text.lines().filter(|l| l.starts_with("VMTEST FAIL")) {
        failures.push(format!("{label}: {l}"));
    }
    let paths = text.lines().find_map(|l| l.strip_prefix("VMTEST INFO paths: ")).unwrap_or("not reported");
    match text.lines().find_map(|l| l.strip_prefix("VMTEST DONE ")) {
        None => failures.push(format!("{label}: the scenario did not finish ({})", stop_reason(text, "scenario.sh"))),
        Some(n) if n.trim() != "0" => {}
        Some(_) if passed < 16 => failures.push(format!("{label}: only {passed} checks passed")),
        Some(_) => {}
    }
    format!("scenario {passed} passed, {} failed ({paths}) in {} s", text.lines().filter(|l| l.starts_with("VMTEST FAIL")).count(), start.elapsed().as_secs())
}

/// The privileged tests' verdict: each must have passed (a test that did not run is a failure).
/// `tests`: (binary, name) in the order they run, to say which one a stop cut short.
fn itest_result(label: &str, text: &str, tests: &[(std::path::PathBuf, String)], failures: &mut Vec<String>) -> String {
    let want = tests.len();
    let passed = text.lines().filter(|l| l.starts_with("VMITEST PASS")).count();
    let failed: Vec<_> = text.lines().filter_map(|l| l.strip_prefix("VMITEST FAIL ")).collect();
    for f in &failed {
        failures.push(format!("{label}: privileged test {f}"));
    }
    if text.lines().all(|l| !l.starts_with("VMITEST DONE")) {
        let during = tests.get(passed + failed.len()).map_or("none", |(_, n)| n.as_str());
        failures.push(format!("{label}: the privileged tests did not finish (during {during}: {})", stop_reason(text, "itest.sh")));
    } else if passed + failed.len() < want {
        failures.push(format!("{label}: {} of {want} privileged tests ran", passed + failed.len()));
    }
    format!("privileged tests {passed} passed, {} failed", failed.len())
}

/// Why `script` ended before its DONE line: what `boot` saw of qemu and the console, else that
/// the VM ran on to its end without it (the script cut short: killed, with the status init saw).
fn stop_reason(text: &str, script: &str) -> String {
    if let Some(s) = text.lines().find_map(|l| l.strip_prefix(boot::STOPPED)) {
        return s.to_string();
    }
    let status = text.lines().find_map(|l| l.strip_prefix(&format!("VMTEST INFO {script} exited "))).unwrap_or("?");
    format!("the VM ran to its end; {script} exited {status} without its DONE line")
}

/// The fast-path benchmark in the VM (`tests/vm/bench.sh`) on the first kernel of the matrix:
/// its raw `VMBENCH` lines.
pub fn bench(rounds: usize, n: u64) -> anyhow::Result<String> {
    let missing = crate::setup::missing(PACKAGES);
    if !missing.is_empty() {
        crate::setup::apt_install(&missing)?;
    }
    let root = util::root();
    let work = root.join("target/vm");
    std::fs::create_dir_all(&work)?;
    let kernel = Kernel::fetch(&work, &kernel::MATRIX[0])?;
    let initrd = initramfs::build(&work, &root, std::slice::from_ref(&kernel), &[])?;
    boot::boot(&kernel.image, &initrd, &format!(" mcpmon.bench={rounds},{n}"), false, "VMBENCH DONE", &work.join("serial-bench.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_short_run_names_the_test_and_why() {
        let tests: Vec<_> = ["a", "b", "c"].iter().map(|s| (std::path::PathBuf::from("/t/daemon"), s.to_string())).collect();
        let mut failures = vec![];
        let died = format!("VMITEST PASS a (3 s)\n{}qemu exited; Oops: int3: 0000 [#1]\n", boot::STOPPED);
        itest_result("6.12", &died, &tests, &mut failures);
        assert_eq!(failures, ["6.12: the privileged tests did not finish (during b: qemu exited; Oops: int3: 0000 [#1])"]);
        failures.clear();
        let killed = "VMITEST PASS a (3 s)\nVMITEST FAIL b (4 s, exit 1)\nVMTEST INFO itest.sh exited 137\nVMTEST END\n";
        itest_result("6.12", killed, &tests, &mut failures);
        assert_eq!(failures[1], "6.12: the privileged tests did not finish (during c: the VM ran to its end; itest.sh exited 137 without its DONE line)");
    }
}
