//! Re-planning keeps up: the daemon re-plans protection when the user database changes, and a
//! database rewritten in a loop (users added and removed by a provisioning script, or by
//! concurrent test suites) must not keep it from anything else. Before the re-plans were
//! rate-limited, each change reloaded the rules ahead of every request and event: under a
//! churn of users and two busy cores, `mcpmon exec` waited up to 7.6 s for its
//! acknowledgement (its own limit is 3 s), and with `--require-monitor` the server never
//! started.
//!
//! Nor may a database edited in place unprotect a home it names all along. An edit in place
//! truncates, then writes: a re-plan that read it between the two (a starved writer stays
//! there for a tenth of a second) dropped every home from the plan. Without the open gate,
//! whose hold on a refused file outlives the plan, servers started meanwhile read the key: 5,
//! 2 and 2 of 10 in three runs.
mod common;

use std::{
    io::Write,
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        Arc,
    },
};

use common::{
    daemon::{exec_cmd, Daemon},
    user::{alert, shipped_rules},
};

const SECRET: &str = "SECRET-KEY-MATERIAL-9c1e";

/// The writer's phases.
const MIXED: u8 = 0;
/// `late` joins, as `useradd` adds a user: every rewrite from here is a rename. (A user who
/// joins by an edit in place that is still under way when a server is acknowledged is in no
/// whole database the daemon could have read yet: it is protected when the edit ends.)
const JOINED: u8 = 1;
/// `late` stays, and edits in place come back (a script that rewrites the file where it is).
const JOINED_MIXED: u8 = 2;

/// Rewrites `passwd` as fast as it can: a new file renamed over the old one, as `useradd` and
/// `userdel` do, and (in the mixed phases) every third time an edit in place, line by line,
/// with a user that comes and goes. `late` is in the database from phase `JOINED` on. Counts
/// the rewrites.
fn churn(passwd: &Path, base: &str, late: &str, stop: &AtomicBool, phase: &AtomicU8, count: &AtomicU64) {
    let tmp = passwd.with_extension("new");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let phase = phase.load(Ordering::Relaxed);
        let mut text = base.to_string();
        if phase != MIXED {
            text.push_str(late);
        }
        if i.is_multiple_of(2) {
            text.push_str(&format!("churn{i}:x:4243:4243::/nonexistent/churn{i}:/bin/sh\n"));
        }
        if i.is_multiple_of(3) && phase != JOINED {
            // As a shell script does it (`: > passwd`, then `echo … >> passwd` per user):
            // the file is short of its later lines for a while.
            let mut f = std::fs::File::create(passwd).unwrap();
            for line in text.split_inclusive('\n') {
                f.write_all(line.as_bytes()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
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
    rewritten_in_a_loop(Gate::AsOffered);
}

/// The same without the open gate. The gate keeps a file it refused once protected while it
/// exists, whatever the plan says later; without it, protection is the kernel map the plan
/// writes, and a plan made on a torn read took the key out of it.
#[test]
fn without_the_open_gate_an_edit_in_place_unprotects_no_home() {
    if !common::can_load_ebpf() || !cfg!(target_arch = "x86_64") {
        return;
    }
    rewritten_in_a_loop(Gate::Refused);
}

#[derive(PartialEq)]
enum Gate {
    AsOffered,
    Refused,
}

fn rewritten_in_a_loop(gate: Gate) {
    let tmp = tempfile::tempdir().unwrap();
    let rules = shipped_rules(tmp.path(), "");
    let passwd = tmp.path().join("passwd");
    let base = "root:x:0:0:root:/root:/bin/bash\n";
    std::fs::write(&passwd, base).unwrap();
    let args = ["--rules", rules.to_str().unwrap(), "--passwd", passwd.to_str().unwrap()];
    let d = if gate == Gate::Refused { Daemon::start_without_gate(&args) } else { Daemon::start(&args) };
    d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    // A home that appears during the churn, with a key in it.
    let home = tmp.path().join("late");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_ed25519");
    std::fs::write(&key, format!("{SECRET}\n")).unwrap();
    let late = format!("late:x:4242:4242::{}:/bin/sh\n", home.display());

    let (stop, phase, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU8::new(MIXED)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (passwd, stop, phase, count) = (passwd.clone(), stop.clone(), phase.clone(), count.clone());
        std::thread::spawn(move || churn(&passwd, base, &late, &stop, &phase, &count))
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
    // The new home's key is protected while the churn goes on: from the first server
    // acknowledged after the user joined.
    phase.store(JOINED, Ordering::Relaxed);
    // Once a rewrite began after the flag, the database names the home.
    let seen = count.load(Ordering::Relaxed);
    while count.load(Ordering::Relaxed) < seen + 2 && !writer.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let cat = format!("cat {}", key.display());
    let mut leaked = Vec::new();
    let mut read = |name: &str| {
        let out = exec(name, &["/bin/sh", "-c", &cat]);
        if String::from_utf8_lossy(&out.stdout).contains(SECRET) {
            leaked.push(name.to_string());
        }
    };
    read("late-reader");
    // And it stays protected while the file is edited in place, whatever moment a re-plan
    // reads it at.
    phase.store(JOINED_MIXED, Ordering::Relaxed);
    let readers: Vec<String> = (0..10).map(|i| format!("late-reader-{i}")).collect();
    for name in &readers {
        read(name);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(leaked.is_empty(), "the key was read by {leaked:?}");
    for name in std::iter::once("late-reader").chain(readers.iter().map(String::as_str)) {
        let a = alert(&d, name, "ssh-private-key-read");
        if gate == Gate::Refused {
            // The kill at the open's exit: the fd never reaches user space.
            assert_eq!(a["action"]["result"], "killed_in_kernel", "{name}: {a}");
        } else {
            d.assert_refused_before_fd(&a, true, name);
        }
    }
    d.stop();
}
