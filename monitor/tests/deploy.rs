//! What the package ships: the systemd unit passes systemd's own check, the daemon tells systemd
//! when it is ready, the example config is accepted, and a config file's settings take effect (a
//! setting only the file gives changes what the daemon tracks). Installing and purging the
//! package itself is tested in xtask (`deb.rs`).
mod common;

use std::{path::Path, process::Command};

use common::daemon::Daemon;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        assert!(!common::require_privileged(), "systemd-analyze missing (Debian: systemd)");
        common::skipped("systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let unit = std::fs::read_to_string(deploy("mcpmon.service")).unwrap().replace("/usr/bin/mcpmon", common::daemon::MCPMON);
    assert!(unit.contains("ExecStart=") && unit.contains("Type=notify"), "{unit}");
    let path = dir.path().join("mcpmon.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
}

#[test]
fn the_example_config_is_accepted_and_a_config_setting_takes_effect() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let alerts = tmp.path().join("alerts.jsonl");
    // The shipped example, with its paths moved under the test's directory on the command line.
    let example = deploy("mcpmon.yaml");
    let d = Daemon::start(&["--config", example.to_str().unwrap(), "--rules", rules.to_str().unwrap(), "--alerts-file", alerts.to_str().unwrap()]);
    d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    d.stop();

    // A setting only the file gives: an agent program by name, whose children are sniffed.
    let cfg = tmp.path().join("mcpmon.yaml");
    std::fs::write(&cfg, "client-comm: [zzagent]\nincident_quiet_secs: 0\n").unwrap();
    let d = Daemon::start(&["--config", cfg.to_str().unwrap()]);
    let client = "import ctypes, subprocess\nctypes.CDLL(None).prctl(15, b'zzagent', 0, 0, 0)\n\
                  p = subprocess.Popen(['/bin/sleep', '3.5'], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n\
                  print(p.pid, flush=True); p.wait()\n";
    let out = Command::new(common::python()).args(["-c", client]).output().unwrap();
    let pid: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let t = d.expect("sniffed under zzagent", |v| v["kind"] == "server_tracked" && v["root_pid"] == pid);
    assert_eq!((t["how"].as_str(), t["found"]["handshake_under"]["comm"].as_str()), (Some("sniffed"), Some("zzagent")), "{t}");
    d.stop();

    // A typo in the file stops the daemon at start, naming the key.
    std::fs::write(&cfg, "alert-webhok: http://127.0.0.1:9/\n").unwrap();
    let out = Command::new(common::daemon::MCPMON).args(["run", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting \"alert-webhok\""), "{out:?}");
}

/// `Type=notify`: READY=1 reaches the socket systemd names, once the daemon serves its socket.
#[test]
fn the_daemon_tells_systemd_it_is_ready() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let notify = tmp.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    listener.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let sock = tmp.path().join("mcpmon.sock");
    let mut d = Command::new(common::daemon::MCPMON)
        .args(["run", "--config", "none", "--metrics-addr", "none", "--events"])
        .arg(tmp.path().join("events.jsonl"))
        .arg("--socket")
        .arg(&sock)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .env("NOTIFY_SOCKET", &notify)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let got = listener.recv(&mut buf);
    // Ready means served: the control socket answers at once.
    let ping = monitor::control::client::ping(&sock, std::time::Duration::from_secs(2));
    // SAFETY: kill(2) on the child this test spawned and has not reaped yet.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    let _ = d.wait();
    let n = got.expect("READY=1 within 60 s");
    assert_eq!(&buf[..n], b"READY=1\n");
    assert!(ping.is_ok(), "{ping:?}");
}
