//! `cargo xtask deb`: a Debian package of mcpmon for a fleet. It holds the binary, the hardened
//! systemd unit (`deploy/mcpmon.service`), one config file (`/etc/mcpmon/mcpmon.toml`), the
//! default rules in `/etc/mcpmon/rules` (conffiles, so a site's `local.yaml` survives upgrades),
//! the dashboards and the docs. The maintainer scripts enable and start the service where systemd
//! runs, and stop it on removal.
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
";

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    util::cargo(&["build", "--release", "-p", "monitor"])?;
    let root = util::root();
    let deb = build(&root.join("target/release/mcpmon"), &root.join("target/deb"), env!("CARGO_PKG_VERSION"))?;
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
    put(&root.join("deploy/mcpmon.toml"), "etc/mcpmon/mcpmon.toml", 0o600)?;
    let mut conffiles = vec!["/etc/mcpmon/mcpmon.toml".to_string()];
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
            ("-rw-------", "root/root", "./etc/mcpmon/mcpmon.toml"),
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
        for f in ["/etc/mcpmon/mcpmon.toml", "/etc/mcpmon/rules/local.yaml", "/etc/mcpmon/rules/lists.yaml"] {
            assert!(conffiles.lines().any(|l| l == f), "{f} is a conffile: {conffiles}");
        }
        let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
        assert!(postinst.contains("systemctl enable mcpmon.service") && postinst.contains("set -e"), "{postinst}");
        // The maintainer scripts are valid shell.
        for s in ["postinst", "prerm", "postrm"] {
            assert!(Command::new("sh").arg("-n").arg(ctl.join(s)).status().unwrap().success(), "{s}");
        }
    }
}
