//! The kernels of the VM matrix: Debian's kernel packages, fetched with apt once and unpacked under
//! target/vm/kernel, what each offers (from its own config, never from this machine's kernel), and
//! the modules the privileged-test boot needs to mount the host's root over 9p.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::util;

/// One kernel of the matrix: a label for reports and the Debian meta-package apt resolves to the
/// current image (so a new point release is picked up without an edit here).
pub struct Spec {
    pub label: &'static str,
    pub meta: &'static str,
}

/// bookworm's kernel (6.1), the 6.12 kernel bookworm-security carries, and the cloud kernel
/// (virtio and no 9p: it runs the scenario only).
pub const MATRIX: &[Spec] = &[
    Spec { label: "6.1", meta: "linux-image-amd64" },
    Spec { label: "6.12", meta: "linux-image-6.12-amd64" },
    Spec { label: "cloud", meta: "linux-image-cloud-amd64" },
];

pub struct Kernel {
    pub label: &'static str,
    pub package: String,
    /// The unpacked package.
    pub dir: PathBuf,
    pub image: PathBuf,
    /// `uname -r` of the booted kernel.
    pub release: String,
    config: BTreeMap<String, String>,
}

impl Kernel {
    /// The package behind `spec.meta`, downloaded and unpacked unless it already is.
    pub fn fetch(work: &Path, spec: &Spec) -> anyhow::Result<Kernel> {
        let depends = || util::output("apt-cache", &["depends", spec.meta]);
        // Package lists older than the meta-package (6.12 came to bookworm-security later).
        let deps = match depends() {
            Some(d) => d,
            None => {
                util::run(Command::new("apt-get").args(["update", "-q"]))?;
                depends().with_context(|| format!("apt-cache depends {}: not in the apt sources (bookworm and bookworm-security)", spec.meta))?
            }
        };
        let package = deps
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|p| p.starts_with("linux-image-"))
            .with_context(|| format!("{} depends on no linux-image package", spec.meta))?
            .to_string();
        let dir = work.join("kernel").join(&package);
        if find_in(&dir.join("boot"), "vmlinuz-").is_none() {
            std::fs::create_dir_all(&dir)?;
            eprintln!("vm-test: downloading {package}");
            let download = || Command::new("apt-get").args(["download", &package]).current_dir(&dir).status().is_ok_and(|s| s.success());
            if !download() {
                // An old package list names a version the mirror no longer has.
                util::run(Command::new("apt-get").args(["update", "-q"]))?;
                if !download() {
                    bail!("apt-get download {package} failed");
                }
            }
            let deb = std::fs::read_dir(&dir)?.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb")).context("no .deb downloaded")?;
            util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
        }
        let image = find_in(&dir.join("boot"), "vmlinuz-").with_context(|| format!("no vmlinuz in {package}"))?;
        let release = image.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
        let config_file = dir.join("boot").join(format!("config-{release}"));
        let text = std::fs::read_to_string(&config_file).with_context(|| format!("reading {}", config_file.display()))?;
        let config = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string())).collect();
        Ok(Kernel { label: spec.label, package, dir, image, release, config })
    }

    fn on(&self, option: &str) -> bool {
        self.config.get(option).is_some_and(|v| v == "y")
    }

    /// The open/exec deny path this kernel must give mcpmon when booted with `lsm=…,bpf`.
    pub fn expected_deny(&self) -> &'static str {
        if self.on("CONFIG_BPF_LSM") && self.on("CONFIG_BPF_SYSCALL") { "lsm" } else { "fallback" }
    }

    /// The syscall observation path: fentry/fexit needs BPF trampolines (direct calls from
    /// ftrace, a JIT) and BTF to find the wrappers.
    pub fn expected_observe(&self) -> &'static str {
        let trampolines = self.on("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") && self.on("CONFIG_BPF_JIT") && self.on("CONFIG_DEBUG_INFO_BTF");
        if trampolines { "fentry" } else { "tracepoint" }
    }

    /// Whether this kernel can mount the host's root over virtio 9p (built in or as modules).
    pub fn has_9p(&self) -> bool {
        ["CONFIG_NET_9P_VIRTIO", "CONFIG_9P_FS", "CONFIG_VIRTIO_PCI"].iter().all(|o| self.config.get(*o).is_some_and(|v| v == "y" || v == "m"))
    }

    /// The modules (uncompressed, dependencies first) that 9p over virtio-pci needs on this
    /// kernel; what is built in needs none. The package has no modules.dep (depmod runs at
    /// install), so dependencies come from each module's own `.modinfo` section.
    pub fn modules_for_9p(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let root = self.dir.join("lib/modules").join(&self.release).join("kernel");
        let mut files = BTreeMap::new();
        index_modules(&root, &mut files)?;
        let mut order = Vec::new();
        for m in ["virtio_pci", "9pnet_virtio", "9p"] {
            add_with_deps(m, &files, &mut order)?;
        }
        Ok(order)
    }
}

fn find_in(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
}

/// Module name (as `depends=` spells it: `-` read as `_`) → file.
fn index_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let p = e.path();
        if p.is_dir() {
            index_modules(&p, out)?;
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.split(".ko").next().filter(|_| n.contains(".ko"))) {
            out.insert(name.replace('-', "_"), p);
        }
    }
    Ok(())
}

fn add_with_deps(name: &str, files: &BTreeMap<String, PathBuf>, order: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let key = name.replace('-', "_");
    if order.iter().any(|(n, _)| *n == key) {
        return Ok(());
    }
    // Not a module file: built into the image.
    let Some(file) = files.get(&key) else { return Ok(()) };
    let bytes = if file.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz").arg("-dc").arg(file).output().context("xz")?;
        if !out.status.success() {
            bail!("xz -dc {} failed", file.display());
        }
        out.stdout
    } else {
        std::fs::read(file)?
    };
    for dep in modinfo_depends(&bytes) {
        add_with_deps(&dep, files, order)?;
    }
    order.push((key, bytes));
    Ok(())
}

/// The `depends=a,b` entry of a module's `.modinfo` strings.
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let tag = b"\0depends=";
    let Some(at) = ko.windows(tag.len()).position(|w| w == tag) else { return vec![] };
    let rest = &ko[at + tag.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_are_read_from_modinfo() {
        let ko = b"\x7fELF...\0license=GPL\0depends=9pnet,netfs\0retpoline=Y\0";
        assert_eq!(modinfo_depends(ko), ["9pnet", "netfs"]);
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
        assert!(modinfo_depends(b"no modinfo").is_empty());
    }
}
