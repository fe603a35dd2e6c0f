//! Re-planning keeps up: the daemon re-plans protection when the user database changes, and a
//! database rewritten in a loop (users added and removed by a provisioning script, or by
//! concurrent test suites) must not keep it from anything else. Before the re-plans were
//! rate-limited, each change reloaded the rules ahead of every request and event: under a
//! churn of users and two busy cores, `mcpmon exec` waited up to 7.6 s for its
//! acknowledgement (its own limit is 3 s), and with `--require-monitor` the server never
//! started.
mod common;

use std::{
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

use common::{
    daemon::{exec_cmd, Daemon},
    user::{alert, shipped_rules},
};

const SECRET: &str = "SECRET-KEY-MATERIAL-9c1e";

/// Rewrites `passwd` as fast as it can, the way `useradd` and `userdel` do (a new file renamed
/// over the old one, and edits in place), with a user that comes and goes. `late` joins the
/// database for good once `add_late` is set. Returns the number of rewrites.
fn churn(passwd: &Path, base: &str, late: &str, stop: &AtomicBool, add_late: &AtomicBool, count: &AtomicU64) {
    let tmp = passwd.with_extension("new");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut text = base.to_string();
        if add_late.load(Ordering::Relaxed) {
            text.push_str(late);
        }
        if i % 2 == 0 {
            text.push_str(&format!("churn{i}:x:4243:4243::/nonexistent/churn{i}:/bin/sh\n"));
        }
        if i % 3 == 0 {
            std::fs::write(passwd, &text).unwrap();
        } else {
            std::fs::write(&tmp, &text).unwrap();
            std::fs::rename(&tmp, passwd).unwrap();
        }
        i += 1;
        count.store(i, Ordering::Relaxed);
    }
}

#[test]
fn a_user_database_rewritten_in_a_loop_delays_no_server_and_no_protection() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rules = shipped_rules(tmp.path(), "");
    let passwd = tmp.path().join("passwd");
    let base = "root:x:0:0:root:/root:/bin/bash\n";
    std::fs::write(&passwd, base).unwrap();
    let d = Daemon::start(&["--rules", rules.to_str().unwrap(), "--passwd", passwd.to_str().unwrap()]);
    d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    // A home that appears during the churn, with a key in it.
    let home = tmp.path().join("late");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_ed25519");
    std::fs::write(&key, format!("{SECRET}\n")).unwrap();
    let late = format!("late:x:4242:4242::{}:/bin/sh\n", home.display());

    let (stop, add_late, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (passwd, stop, add_late, count) = (passwd.clone(), stop.clone(), add_late.clone(), count.clone());
        std::thread::spawn(move || churn(&passwd, base, &late, &stop, &add_late, &count))
    };
    let exec = |name: &str, argv: &[&str]| exec_cmd(&d.socket, name, &["--require-monitor"], argv).stdin(Stdio::null()).output().unwrap();
    // Every server starts, watched: `--require-monitor` refuses to start one the daemon
    // did not acknowledge in time.
    let launches = 20;
    let mut refused = Vec::new();
    for i in 0..launches {
        let out = exec(&format!("churn-{i}"), &["true"]);
        if !out.status.success() {
            refused.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    let rewrites = count.load(Ordering::Relaxed);
    assert!(refused.is_empty(), "{} of {launches} launches were refused during {rewrites} rewrites: {refused:?}", refused.len());
    // The new home's key is protected while the churn goes on.
    add_late.store(true, Ordering::Relaxed);
    // Once a rewrite began after the flag, the database names the home.
    let seen = count.load(Ordering::Relaxed);
    while count.load(Ordering::Relaxed) < seen + 2 && !writer.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let cat = format!("cat {}", key.display());
    let out = exec("late-reader", &["/bin/sh", "-c", &cat]);
    let a = alert(&d, "late-reader", "ssh-private-key-read");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET), "the key was read");
    d.assert_refused_before_fd(&a, true, "late-reader");
    d.stop();
}
