//! Whether this kernel runs ia32 syscalls at all. The ia32 hook (`mcpm_compat_x`, a `tp_btf`
//! program on every syscall exit of the machine) is only worth its cost where `int $0x80`
//! works: a kernel built without IA32 emulation, or with it disabled at boot
//! (`ia32_emulation=0`, or `CONFIG_IA32_EMULATION_DEFAULT_DISABLED` without an `=1`), refuses
//! every ia32 syscall before any tracepoint, so there is nothing to see. (On the fast path the
//! ia32 wrappers are fentry/fexit programs of their own, skipped where the kernel lacks them.)
use aya::{programs::BtfTracePoint, Btf, Ebpf};
use monitor_common::programs::{of_kind, Kind};

use super::{
    hook::{hooks_of, HookRef},
    program, refused,
};

/// The ia32 hooks of the tracepoint path: the `tp_btf` programs of the table, loaded, or
/// none where ia32 syscalls cannot happen or the kernel refuses them (logged either way).
pub fn load(ebpf: &mut Ebpf) -> Vec<HookRef> {
    if let Some(why) = emulation_off() {
        // Nothing to see, and the hook would run on every syscall exit.
        tracing::info!(%why, "ia32 syscalls cannot happen on this kernel: no ia32 hook");
        return vec![];
    }
    match load_programs(ebpf) {
        Ok(()) => hooks_of(of_kind(Kind::BtfTracePoint)),
        Err(e) => {
            tracing::warn!(error = %e, "ia32 syscalls (int $0x80) will not be seen");
            vec![]
        }
    }
}

/// A `tp_btf` program is bound to its tracepoint's BTF type at load; without the kernel's BTF
/// the hook could not read the task's compat flag either (`koff!`), so it would see nothing.
fn load_programs(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    for p in of_kind(Kind::BtfTracePoint) {
        let prog: &mut BtfTracePoint = program(ebpf, p.name, p.purpose).map_err(|e| e.to_string())?;
        let hook = p.hooks[0];
        prog.load(hook, &btf).map_err(|e| refused(p.name, p.purpose, format!("(load on {hook})"), e).to_string())?;
    }
    Ok(())
}

/// Why ia32 syscalls cannot happen here, or None when they can (or when it cannot be told:
/// then the hook stays, the safe side).
pub fn emulation_off() -> Option<String> {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    decide(&kallsyms, &cmdline, kernel_config().as_deref())
}

/// The running kernel's build config: /boot/config-RELEASE (Debian), else /proc/config.gz
/// through gzip (read once at start-up; no decompressor in the daemon for this one file).
fn kernel_config() -> Option<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    if let Ok(c) = std::fs::read_to_string(format!("/boot/config-{}", release.trim())) {
        return Some(c);
    }
    let out = std::process::Command::new("gzip").args(["-dc", "/proc/config.gz"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn decide(kallsyms: &str, cmdline: &str, config: Option<&str>) -> Option<String> {
    // kallsyms reads empty (or all zeros) only when unreadable; names are still listed to root.
    if !kallsyms.is_empty() && !kallsyms.lines().any(|l| l.contains(" __ia32_sys_")) {
        return Some("the kernel has no ia32 syscall entry points (CONFIG_IA32_EMULATION off)".into());
    }
    let arg = cmdline.split_whitespace().find_map(|w| w.strip_prefix("ia32_emulation="));
    match arg.map(str::to_ascii_lowercase).as_deref() {
        Some("0" | "n" | "no" | "off" | "false") => return Some("booted with ia32_emulation off".into()),
        Some(_) => return None,
        None => {}
    }
    let default_off = config.is_some_and(|c| c.lines().any(|l| l.trim() == "CONFIG_IA32_EMULATION_DEFAULT_DISABLED=y"));
    default_off.then(|| "ia32 emulation is disabled by default in this kernel's build (CONFIG_IA32_EMULATION_DEFAULT_DISABLED=y) and not enabled at boot".into())
}

#[cfg(test)]
mod tests {
    use super::decide;

    const WITH: &str = "ffffffff81001000 T __ia32_sys_read\nffffffff81002000 T __x64_sys_read\n";
    const WITHOUT: &str = "ffffffff81002000 T __x64_sys_read\n";

    #[test]
    fn the_hook_stays_unless_the_kernel_cannot_run_ia32_syscalls() {
        assert_eq!(decide(WITH, "quiet", None), None);
        assert_eq!(decide("", "quiet", None), None, "unreadable: keep the hook");
        assert!(decide(WITHOUT, "quiet", None).unwrap().contains("CONFIG_IA32_EMULATION"));
        assert!(decide(WITH, "ro ia32_emulation=0 quiet", None).is_some());
        assert!(decide(WITH, "ia32_emulation=false", None).is_some());
        let default_off = "CONFIG_IA32_EMULATION=y\nCONFIG_IA32_EMULATION_DEFAULT_DISABLED=y\n";
        assert!(decide(WITH, "quiet", Some(default_off)).is_some());
        assert_eq!(decide(WITH, "ia32_emulation=1", Some(default_off)), None, "enabled at boot");
        assert_eq!(decide(WITH, "quiet", Some("CONFIG_IA32_EMULATION=y\n")), None);
    }
}
