//! Issue 15: a configured `npx` server must be tracked every time. On a stock Node install `npx`
//! is a symlink to a `#!/usr/bin/env node` script, so one launch is three images in one pid:
//! `npx` (the kernel's comm, from the symlink's name) running `/usr/bin/env`, then `node`, and
//! npm then rewrites its argv in place (`process.title`: /proc shows `npm exec PKG DIR`). The
//! daemon used to decide on /proc, read whenever it got to the exec event: at the `env` stage or
//! after the retitle nothing matched, the process was dropped, and the `node` image (comm `node`,
//! not a candidate) was never taken again. Before the fix both loops below lost launches.
mod common;

use std::{
    os::unix::fs::{symlink, PermissionsExt},
    path::Path,
    process::{Child, Command, Stdio},
};

use common::daemon::Daemon;
use serde_json::json;

/// Starts `n` launches at once (concurrent launches vary the daemon's timing against the
/// launches' exec chains), then expects each one tracked under `name` by its pid.
fn launch_all_and_expect(d: &Daemon, name: &str, n: usize, spawn: impl Fn() -> Child) {
    let mut kids: Vec<Child> = (0..n).map(|_| spawn()).collect();
    for k in &kids {
        let pid = k.id();
        d.expect(&format!("{name} pid {pid} tracked"), |v| v["kind"] == "server_tracked" && v["root_pid"] == pid && v["server"] == name);
    }
    for k in &mut kids {
        drop(k.stdin.take()); // EOF: the server exits
        k.wait().unwrap();
    }
}

#[test]
fn fifty_launches_of_a_symlinked_env_node_script_and_of_real_npx_are_all_tracked() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    // npm's own npx, as Debian's npm package installs it (`cargo xtask setup`).
    let Some(_) = common::tool("/usr/bin/npx") else { return };
    let t = tempfile::tempdir().unwrap();
    // A launcher installed the way npm installs npx: bin/fake-npx → ../lib/cli.js, `env node`.
    let (bin, lib) = (t.path().join("bin"), t.path().join("lib"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    let script = lib.join("cli.js");
    std::fs::write(&script, "#!/usr/bin/env node\nprocess.stdin.on('data', () => {});\nprocess.stdin.on('end', () => process.exit(0));\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink("../lib/cli.js", bin.join("fake-npx")).unwrap();
    let root = t.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let root_s = root.to_str().unwrap();

    let home = t.path().join("home/dev");
    std::fs::create_dir_all(home.join(".config/Claude")).unwrap();
    std::fs::write(
        home.join(".config/Claude/claude_desktop_config.json"),
        json!({"mcpServers": {
            "launcher": {"command": "fake-npx", "args": ["-y", "@example/server", root_s]},
            "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", root_s]},
        }})
        .to_string(),
    )
    .unwrap();
    let passwd = t.path().join("passwd");
    std::fs::write(&passwd, format!("dev:x:1000:1000::{}:/bin/sh\n", home.display())).unwrap();
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);

    // As a client starts it: a PATH lookup of the configured command, stdio on pipes.
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let spawn = |cmd: &str, args: &[&str], dir: &Path| {
        Command::new(cmd)
            .args(args)
            .env("PATH", &path)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for _ in 0..5 {
        launch_all_and_expect(&d, "launcher", 10, || spawn("fake-npx", &["-y", "@example/server", root_s], t.path()));
    }
    // The real npx, offline: run from the peers' project, it finds the installed package.
    for _ in 0..10 {
        launch_all_and_expect(&d, "filesystem", 5, || {
            spawn("npx", &["-y", "@modelcontextprotocol/server-filesystem", root_s], &peers)
        });
    }
    let (_, recs) = d.stop_with_records();
    let tracked = |n: &str| recs.iter().filter(|v| v["kind"] == "server_tracked" && v["server"] == n).count();
    assert_eq!((tracked("launcher"), tracked("filesystem")), (50, 50));
}

/// A configured npx server already running when the daemon starts: npm has retitled itself by
/// then (`npm exec PKG DIR`, its `-y` gone from /proc), and the start-up scan still names it.
#[test]
fn a_running_npx_server_retitled_by_npm_is_found_at_start_up() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    // npm's own npx, as Debian's npm package installs it (`cargo xtask setup`).
    let Some(_) = common::tool("/usr/bin/npx") else { return };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let root_s = root.to_str().unwrap();
    let home = t.path().join("home/dev");
    std::fs::create_dir_all(home.join(".config/Claude")).unwrap();
    std::fs::write(
        home.join(".config/Claude/claude_desktop_config.json"),
        json!({"mcpServers": {"running-fs": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", root_s]}}}).to_string(),
    )
    .unwrap();
    let passwd = t.path().join("passwd");
    std::fs::write(&passwd, format!("dev:x:1000:1000::{}:/bin/sh\n", home.display())).unwrap();
    let mut npx = Command::new("npx")
        .args(["-y", "@modelcontextprotocol/server-filesystem", root_s])
        .current_dir(&peers)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = npx.id();
    // Wait (bounded) for npm's retitle: that is the state this test is about.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let title = format!("npm exec @modelcontextprotocol/server-filesystem {root_s}");
    while std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).trim_end_matches('\0') != title).unwrap_or(true) {
        assert!(std::time::Instant::now() < deadline, "npm never retitled itself");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);
    let rec = d.expect("the running npx", |v| v["kind"] == "server_tracked" && v["root_pid"] == pid);
    assert_eq!((rec["server"].as_str(), rec["how"].as_str()), (Some("running-fs"), Some("procfs")), "{rec}");
    drop(npx.stdin.take());
    npx.wait().unwrap();
    d.stop();
}
