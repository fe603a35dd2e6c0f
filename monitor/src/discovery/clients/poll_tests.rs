//! The cached tree sees every change a full stat of every candidate path sees.
use std::{cell::Cell, fs, path::Path, time::{Duration, SystemTime}};

use super::super::ClientConfigs;

thread_local! {
    /// Paths statted by this thread.
    pub static STATS: Cell<u32> = const { Cell::new(0) };
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn server(name: &str, cmd: &str) -> String {
    format!(r#"{{"mcpServers":{{"{name}":{{"command":"{cmd}"}}}}}}"#)
}

/// Sets the mtime of every directory under `dir` (a change made now then shows as a new mtime).
fn set_dir_mtimes(dir: &Path, t: SystemTime) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            set_dir_mtimes(&e.path(), t);
        }
    }
    fs::File::open(dir).unwrap().set_modified(t).unwrap();
}

/// Every directory settled (an hour old), checked once, then a quiet check: it stats far fewer
/// paths than the tree holds (a name absent from an unchanged directory is not statted).
fn settle(c: &mut ClientConfigs, root: &Path) {
    set_dir_mtimes(root, SystemTime::now() - Duration::from_secs(3600));
    c.refresh();
    STATS.with(|n| n.set(0));
    assert!(!c.refresh(), "nothing changed");
    let (stats, files) = (STATS.with(Cell::get), c.tree.as_ref().unwrap().files().len());
    assert!(stats * 2 < files as u32, "a quiet check statted {stats} paths for {files} files");
}

/// What changes, a command it brings, and the change.
type Step<'a> = (&'a str, &'a str, Box<dyn Fn() + 'a>);

#[test]
fn a_cached_tree_sees_every_change() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let (alice, proj, svc, bob) = (root.join("home/alice"), root.join("proj"), root.join("svc"), root.join("home/bob"));
    let desktop = alice.join(".config/Claude/claude_desktop_config.json");
    write(&desktop, &server("a", "cmd-a"));
    write(&alice.join(".claude.json"), r#"{"projects":{}}"#);
    write(&alice.join(".continue/mcpServers/one.yaml"), "mcpServers:\n  - name: one\n    command: blk-1\n");
    write(&proj.join(".mcp.json"), &server("p", "proj-1"));
    write(&bob.join(".cursor/mcp.json"), &server("b", "bob-1"));
    fs::create_dir_all(root.join("dotfiles")).unwrap();
    fs::create_dir_all(alice.join(".codeium/windsurf")).unwrap();
    std::os::unix::fs::symlink(root.join("dotfiles/w.json"), alice.join(".codeium/windsurf/mcp_config.json")).unwrap();
    let passwd = root.join("passwd");
    let mut lines = format!("alice:x:1000:1000::{}:/bin/sh\nsvc:x:999:999::{}:/usr/sbin/nologin\n", alice.display(), svc.display());
    write(&passwd, &lines);
    let mut c = ClientConfigs::with_etc(passwd.clone(), vec![], root.join("etc"));
    assert!(c.refresh());
    let fresh = || {
        let mut f = ClientConfigs::with_etc(passwd.clone(), vec![], root.join("etc"));
        f.refresh();
        f.servers
    };
    let blocks = alice.join(".continue/mcpServers");
    let steps: Vec<Step> = vec![
        // Same size, new content and mtime; the directory's mtime stays.
        ("edited in place", "cmd-b", Box::new(|| write(&desktop, &server("a", "cmd-b")))),
        ("new file in a new directory", "cur-1", Box::new(|| write(&alice.join(".cursor/mcp.json"), &server("c", "cur-1")))),
        ("new project", "proj-1", Box::new(|| write(&alice.join(".claude.json"), &format!(r#"{{"projects":{{"{}":{{}}}}}}"#, proj.display())))),
        ("project file edited in place", "proj-2", Box::new(|| write(&proj.join(".mcp.json"), &server("p", "proj-2")))),
        ("new block file", "blk-2", Box::new(|| write(&blocks.join("two.yaml"), "mcpServers:\n  - name: two\n    command: blk-2\n"))),
        ("block file edited in place", "blk-3", Box::new(|| write(&blocks.join("one.yaml"), "mcpServers:\n  - name: one\n    command: blk-3\n"))),
        ("a dangling symlink's target created", "wind-1", Box::new(|| write(&root.join("dotfiles/w.json"), &server("w", "wind-1")))),
        ("a nologin user's home created", "svc-1", Box::new(|| write(&svc.join(".cursor/mcp.json"), &server("s", "svc-1")))),
    ];
    for (what, cmd, change) in steps {
        settle(&mut c, root);
        std::thread::sleep(Duration::from_millis(20));
        change();
        assert!(c.refresh(), "{what}");
        assert!(c.commands().contains(&cmd.to_string()), "{what}: {:?}", c.commands());
        assert_eq!(c.servers, fresh(), "{what}");
    }
    settle(&mut c, root);
    fs::remove_dir_all(alice.join(".cursor")).unwrap();
    assert!(c.refresh(), "a directory removed");
    assert!(!c.commands().contains(&"cur-1".to_string()));
    settle(&mut c, root);
    lines.push_str(&format!("bob:x:1001:1001::{}:/bin/sh\n", bob.display()));
    write(&passwd, &lines);
    assert!(c.refresh(), "a new user");
    assert!(c.commands().contains(&"bob-1".to_string()));
    assert_eq!(c.servers, fresh());
}

/// An entry added within the timestamp tick of the directory's last change leaves its mtime as
/// it was: a directory that changed less than SETTLE ago is looked into again.
#[test]
fn an_entry_added_in_the_same_tick_is_seen() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    write(&home.join(".config/zed/settings.json"), "{}");
    let passwd = t.path().join("passwd");
    write(&passwd, &format!("u:x:1000:1000::{}:/bin/sh\n", home.display()));
    let mut c = ClientConfigs::with_etc(passwd, vec![], t.path().join("etc"));
    c.refresh();
    let tick = SystemTime::now() - Duration::from_millis(500);
    set_dir_mtimes(&home, tick);
    c.refresh();
    assert!(!c.refresh());
    write(&home.join(".cursor/mcp.json"), &server("c", "same-tick"));
    fs::File::open(&home).unwrap().set_modified(tick).unwrap();
    assert!(c.refresh());
    assert!(c.commands().contains(&"same-tick".to_string()));
    // A new block file too (Continue's directory is listed again).
    let blocks = home.join(".continue/mcpServers");
    fs::create_dir_all(&blocks).unwrap();
    let tick = SystemTime::now() - Duration::from_millis(500);
    set_dir_mtimes(&home, tick);
    c.refresh();
    assert!(!c.refresh());
    write(&blocks.join("b.yaml"), "mcpServers:\n  - name: b\n    command: same-tick-block\n");
    fs::File::open(&blocks).unwrap().set_modified(tick).unwrap();
    assert!(c.refresh());
    assert!(c.commands().contains(&"same-tick-block".to_string()));
}
