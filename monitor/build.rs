//! Builds the eBPF object (`monitor-ebpf`, target bpfel-unknown-none) from source on every build
//! and leaves it in OUT_DIR, where `probes::loader` embeds it. No prebuilt object lives in the repo.
//!
//! Toolchain choice, in order (override with MCPMON_EBPF_TOOLCHAIN=debian|nightly):
//! - Debian's `rustc-web` (/usr/bin/rustc) with `libstd-rust-web-dev-bpf`, which ships a precompiled
//!   `core` for bpfel-unknown-none: stable rustc, made to accept `-Z` features by RUSTC_BOOTSTRAP.
//! - a rustup nightly that has `rust-src`, with `-Z build-std=core`.
//!
//! Both need `bpf-linker` on PATH (`cargo xtask setup` installs everything).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_BPF_CORE: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_dir = manifest_dir.parent().unwrap().join("monitor-ebpf");
    let common_dir = manifest_dir.parent().unwrap().join("monitor-common");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    for d in [&ebpf_dir, &common_dir] {
        println!("cargo:rerun-if-changed={}", d.join("src").display());
        println!("cargo:rerun-if-changed={}", d.join("Cargo.toml").display());
    }
    println!("cargo:rerun-if-env-changed=MCPMON_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=PATH");

    if let Err(e) = build(&ebpf_dir, &out_dir) {
        // A clear stop beats a daemon with no kernel side.
        panic!("\n\nmcpmon: building the eBPF object failed:\n{e}\n\nRun `cargo xtask setup` (as root) to install the toolchain.\n");
    }
}

fn build(ebpf_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let linker = which("bpf-linker").ok_or("bpf-linker is not on PATH")?;
    println!("cargo:rerun-if-changed={}", linker.display());
    let choice = env::var("MCPMON_EBPF_TOOLCHAIN").unwrap_or_default();
    let debian_ok = Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_BPF_CORE).exists();
    let use_debian = match choice.as_str() {
        "debian" => true,
        "nightly" => false,
        _ => debian_ok || !nightly_has_rust_src(),
    };
    if use_debian && !debian_ok {
        return Err(format!("{DEBIAN_RUSTC} or {DEBIAN_BPF_CORE} is missing (apt-get install rustc-web libstd-rust-web-dev-bpf)"));
    }

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = if use_debian {
        let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
        c
    } else {
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo"]);
        c.env_remove("RUSTC");
        c
    };
    cmd.current_dir(ebpf_dir)
        .args(["build", "--release", "--target", "bpfel-unknown-none", "--bin", "monitor-ebpf"])
        .arg("--target-dir")
        .arg(&target_dir)
        // The object must not depend on the host build's flags or wrappers.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", ["-Cdebuginfo=2", "-Clink-arg=--btf", "-Cpanic=abort"].join("\x1f"));
    if !use_debian {
        cmd.args(["-Z", "build-std=core"]);
    }
    let out = cmd.output().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let obj = target_dir.join("bpfel-unknown-none/release/monitor-ebpf");
    std::fs::copy(&obj, out_dir.join("monitor-ebpf.o")).map_err(|e| format!("copy {}: {e}", obj.display()))?;
    Ok(())
}

fn nightly_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("rust-src"))
        .unwrap_or(false)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}
