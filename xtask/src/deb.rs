//! `cargo xtask package`: a Debian package of mcpmon for a fleet. It holds the binary (the eBPF
//! object is embedded), the hardened systemd unit (`deploy/mcpmon.service`), one config file
//! (`/etc/mcpmon/mcpmon.yaml`, every `run` setting with comments), the default rules in
//! `/etc/mcpmon/rules` (conffiles, so a site's `local.yaml` survives upgrades), a logrotate rule,
//! the dashboards and the docs. The maintainer scripts enable and start the service where systemd
//! runs, stop it on removal, and purge removes the daemon's state and logs.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::util;

const CONTROL: &str = "Package: mcpmon
Version: {version}
Architecture: amd64
Maintainer: mcpmon maintainers <maintainers@mcpmon.invalid>
Depends: libc6 (>= 2.36)
Section: admin
Priority: optional
Description: eBPF host monitor for MCP servers
 Watches the MCP servers that AI clients start on a host: ties every exec, open and connect
 to the tool call that caused it, and kills or denies in the kernel where a rule says so.
";

const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable mcpmon.service >/dev/null
  systemctl restart mcpmon.service
fi
";

const PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now mcpmon.service >/dev/null || true
fi
";

const POSTRM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ \"$1\" = purge ]; then
  rm -rf /var/lib/mcpmon /var/log/mcpmon /run/mcpmon
  rmdir /etc/mcpmon/rules /etc/mcpmon 2>/dev/null || true
fi
";

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    util::cargo(&["build", "--release", "-p", "monitor"])?;
    let root = util::root();
    let deb = build(&root.join("target/release/mcpmon"), &root.join("target/debian"), env!("CARGO_PKG_VERSION"))?;
    println!("{}", deb.display());
    Ok(())
}

/// Stages the package under `out` and builds `out/mcpmon_VERSION_amd64.deb` from `binary`.
pub fn build(binary: &Path, out: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let root = util::root();
    let stage = out.join("stage");
    let _ = fs::remove_dir_all(&stage);
    let put = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        let dest = stage.join(to);
        fs::create_dir_all(dest.parent().expect("a file path")).with_context(|| dest.display().to_string())?;
        fs::copy(from, &dest).with_context(|| format!("{} -> {}", from.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let write = |to: &str, text: &str, mode: u32| -> anyhow::Result<()> {
        let dest = stage.join(to);
        fs::create_dir_all(dest.parent().expect("a file path"))?;
        fs::write(&dest, text)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put(binary, "usr/bin/mcpmon", 0o755)?;
    put(&root.join("deploy/mcpmon.service"), "lib/systemd/system/mcpmon.service", 0o644)?;
    // The webhook URL may carry a token: readable by root only.
    put(&root.join("deploy/mcpmon.yaml"), "etc/mcpmon/mcpmon.yaml", 0o600)?;
    put(&root.join("deploy/logrotate"), "etc/logrotate.d/mcpmon", 0o644)?;
    let mut conffiles = vec!["/etc/mcpmon/mcpmon.yaml".to_string(), "/etc/logrotate.d/mcpmon".to_string()];
    for e in sorted(&root.join("rules"))? {
        let name = e.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.ends_with(".yaml") {
            put(&e, &format!("etc/mcpmon/rules/{name}"), 0o644)?;
            conffiles.push(format!("/etc/mcpmon/rules/{name}"));
        }
    }
    put(&root.join("README.md"), "usr/share/doc/mcpmon/README.md", 0o644)?;
    for doc in ["architecture.md", "rules.md", "alerts.md"] {
        put(&root.join("docs").join(doc), &format!("usr/share/doc/mcpmon/{doc}"), 0o644)?;
    }
    for e in sorted(&root.join("dashboards"))? {
        let name = e.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        put(&e, &format!("usr/share/mcpmon/dashboards/{name}"), 0o644)?;
    }
    // systemd makes these (LogsDirectory, StateDirectory); the package does too, for a host
    // that starts the daemon some other way.
    for (dir, mode) in [("var/log/mcpmon", 0o750), ("var/lib/mcpmon", 0o700)] {
        fs::create_dir_all(stage.join(dir))?;
        fs::set_permissions(stage.join(dir), fs::Permissions::from_mode(mode))?;
    }
    write("DEBIAN/control", &CONTROL.replace("{version}", version), 0o644)?;
    write("DEBIAN/conffiles", &(conffiles.join("\n") + "\n"), 0o644)?;
    write("DEBIAN/postinst", POSTINST, 0o755)?;
    write("DEBIAN/prerm", PRERM, 0o755)?;
    write("DEBIAN/postrm", POSTRM, 0o755)?;
    let deb = out.join(format!("mcpmon_{version}_amd64.deb"));
    util::run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&stage).arg(&deb))?;
    Ok(deb)
}

fn sorted(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir).with_context(|| dir.display().to_string())?.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    #[test]
    fn the_package_holds_the_service_config_rules_and_scripts() {
        if Command::new("dpkg-deb").arg("--version").output().is_err() {
            // xtask setup installs dpkg-dev's tools on Debian; elsewhere there is nothing to test.
            assert!(std::env::var("MCPMON_REQUIRE_PRIVILEGED").is_err(), "dpkg-deb missing");
            return;
        }
        let out = tempfile::tempdir().unwrap();
        // Any executable stands in for the release binary: packaging does not look inside it.
        let deb = super::build(std::path::Path::new("/bin/true"), out.path(), "9.9.9").unwrap();
        let text = |args: &[&str]| String::from_utf8(Command::new("dpkg-deb").args(args).arg(&deb).output().unwrap().stdout).unwrap();
        let info = text(&["--field"]);
        assert!(info.contains("Package: mcpmon") && info.contains("Version: 9.9.9"), "{info}");
        let contents = text(&["--contents"]);
        for (mode, owner, path) in [
            ("-rwxr-xr-x", "root/root", "./usr/bin/mcpmon"),
            ("-rw-r--r--", "root/root", "./lib/systemd/system/mcpmon.service"),
            ("-rw-------", "root/root", "./etc/mcpmon/mcpmon.yaml"),
            ("-rw-r--r--", "root/root", "./etc/logrotate.d/mcpmon"),
            ("-rw-r--r--", "root/root", "./etc/mcpmon/rules/local.yaml"),
            ("-rw-r--r--", "root/root", "./etc/mcpmon/rules/credential_access.yaml"),
            ("-rw-r--r--", "root/root", "./usr/share/mcpmon/dashboards/mcpmon-fleet.json"),
            ("-rw-r--r--", "root/root", "./usr/share/doc/mcpmon/rules.md"),
            ("drwxr-x---", "root/root", "./var/log/mcpmon/"),
            ("drwx------", "root/root", "./var/lib/mcpmon/"),
        ] {
            assert!(contents.lines().any(|l| l.starts_with(mode) && l.contains(owner) && l.ends_with(path)), "{mode} {owner} {path} in:\n{contents}");
        }
        let ctl = out.path().join("ctl");
        assert!(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&ctl).status().unwrap().success());
        let conffiles = std::fs::read_to_string(ctl.join("conffiles")).unwrap();
        for f in ["/etc/mcpmon/mcpmon.yaml", "/etc/logrotate.d/mcpmon", "/etc/mcpmon/rules/local.yaml", "/etc/mcpmon/rules/lists.yaml"] {
            assert!(conffiles.lines().any(|l| l == f), "{f} is a conffile: {conffiles}");
        }
        let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
        assert!(postinst.contains("systemctl enable mcpmon.service") && postinst.contains("set -e"), "{postinst}");
        // The maintainer scripts are valid shell.
        for s in ["postinst", "prerm", "postrm"] {
            assert!(Command::new("sh").arg("-n").arg(ctl.join(s)).status().unwrap().success(), "{s}");
        }
    }

    /// The package on this machine (root): `dpkg -i` works, `mcpmon run` started from `/` with no
    /// flags takes its settings and rules from /etc/mcpmon, systemd accepts the installed unit,
    /// and `dpkg --purge` leaves nothing behind.
    #[test]
    fn installs_runs_from_etc_and_purges_clean() {
        let strict = std::env::var("MCPMON_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1" || v == "true");
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(!strict, "installing the package needs root");
            eprintln!("SKIPPED: installing the package needs root");
            return;
        }
        let paths = ["/usr/bin/mcpmon", "/etc/mcpmon", "/lib/systemd/system/mcpmon.service", "/etc/logrotate.d/mcpmon", "/usr/share/mcpmon", "/usr/share/doc/mcpmon", "/var/lib/mcpmon", "/var/log/mcpmon", "/run/mcpmon"];
        if let Some(p) = paths.iter().find(|p| std::path::Path::new(p).exists()) {
            // A real installation: never overwrite or purge it.
            assert!(!strict, "{p} exists: mcpmon is installed here");
            eprintln!("SKIPPED: {p} exists (mcpmon is installed on this machine)");
            return;
        }
        let binary = crate::util::root().join("target/debug/mcpmon");
        assert!(binary.exists(), "build the daemon first (cargo build -p monitor --bins)");
        let out = tempfile::tempdir().unwrap();
        let deb = super::build(&binary, out.path(), "0.0.1~test").unwrap();
        struct Purge;
        impl Drop for Purge {
            fn drop(&mut self) {
                let _ = Command::new("dpkg").args(["--purge", "mcpmon"]).output();
            }
        }
        let purge = Purge;
        let st = Command::new("dpkg").arg("-i").arg(&deb).output().unwrap();
        assert!(st.status.success(), "dpkg -i: {st:?}");
        // Started from / with no flags, as an administrator would.
        let mut d = Command::new("/usr/bin/mcpmon").arg("run").current_dir("/").stderr(std::process::Stdio::piped()).spawn().unwrap();
        let events = std::path::Path::new("/var/log/mcpmon/events.jsonl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut loaded = String::new();
        while std::time::Instant::now() < deadline {
            loaded = std::fs::read_to_string(events).unwrap_or_default().lines().find(|l| l.contains("\"rules_loaded\"")).unwrap_or_default().to_string();
            if !loaded.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let servers = Command::new(&binary).args(["servers", "--socket", "/run/mcpmon/mcpmon.sock"]).output().unwrap();
        // SAFETY: kill(2) on the child this test spawned and has not reaped yet.
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        let status = d.wait().unwrap();
        assert!(loaded.contains("/etc/mcpmon/rules/credential_access.yaml"), "events went to /var/log/mcpmon and name the installed rules: {loaded:?}");
        assert!(servers.status.success(), "the daemon answered on /run/mcpmon/mcpmon.sock: {servers:?}");
        assert!(status.success() || status.code().is_none(), "{status:?}");
        let verify = Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/mcpmon.service"]).output();
        if let Ok(v) = verify {
            assert!(v.status.success() && v.stderr.is_empty(), "systemd-analyze verify: {v:?}");
        }
        drop(purge);
        let left: Vec<&str> = paths.iter().copied().filter(|p| std::path::Path::new(p).exists()).collect();
        assert!(left.is_empty(), "dpkg --purge left {left:?}");
        let dpkg = Command::new("dpkg").args(["-s", "mcpmon"]).output().unwrap();
        assert!(!dpkg.status.success(), "still known to dpkg");
    }
}
