//! Persistence placed without an open: a unit file renamed into `~/.config/systemd/user`, a
//! symlink made there, a drop-in directory made there, and a file renamed over `~/.bashrc`. The
//! write check and the open gate judge opens, and none of these opens anything there. Each entry
//! a server places must be gone from the protected place at once (moved to the daemon's
//! quarantine), with a `persistence-write` alert; the user's own moves stay untouched.
mod common;

use std::process::Stdio;

use common::user::{start, User};
use serde_json::Value;

#[test]
fn entries_renamed_linked_or_made_in_persistence_dirs_are_quarantined() {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add("persist", true);
    u.write(".bashrc", "# rc\n");
    u.write(".config/systemd/user/keep.service", "[Unit]\n");
    let d = start(tmp.path(), "");
    let units = u.home.join(".config/systemd/user");
    let script = format!(
        "printf '[Service]\\nExecStart=/tmp/x\\n' > /tmp/evil-$$.service; mv /tmp/evil-$$.service {units}/evil.service; \
         ln -s /tmp/x {units}/link.service; mkdir {units}/ssh-agent.service.d; \
         echo evil > /tmp/rc-$$; mv /tmp/rc-$$ {home}/.bashrc; echo done",
        units = units.display(),
        home = u.home.display()
    );
    let out = u.exec(&d, "placer", &["/bin/sh", "-c", &script]).stdin(Stdio::null()).output().unwrap();
    let _ = out;
    for name in ["evil.service", "link.service", "ssh-agent.service.d"] {
        let p = units.join(name);
        let q = d.expect(&format!("{name} quarantined"), |v| v["kind"] == "quarantined" && v["path"] == p.display().to_string());
        assert!(q["to"].is_string(), "moved away: {q}");
        assert!(std::fs::symlink_metadata(&p).is_err(), "{name} is no longer in place");
        d.expect(&format!("{name} alert"), |v| v["kind"] == "alert" && v["rule"]["id"] == "persistence-write" && v["file"] == p.display().to_string());
    }
    let rc = u.home.join(".bashrc");
    d.expect(".bashrc quarantined", |v| v["kind"] == "quarantined" && v["path"] == rc.display().to_string());
    assert!(std::fs::symlink_metadata(&rc).is_err() || std::fs::read_to_string(&rc).unwrap() != "evil\n", "the replaced rc file does not stay in place");
    // The user's own move of a unit is the user's business.
    let mine = u.home.join("mine.service");
    std::fs::write(&mine, "[Unit]\n").unwrap();
    std::fs::rename(&mine, units.join("mine.service")).unwrap();
    assert!(units.join("keep.service").exists());
    let (_, recs) = d.stop_with_records();
    assert!(units.join("mine.service").exists(), "untouched");
    assert!(!recs.iter().any(|v: &Value| v["kind"] == "quarantined" && v["path"].as_str().is_some_and(|p| p.ends_with("mine.service"))));
}
