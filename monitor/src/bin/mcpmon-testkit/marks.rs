//! `mcpmon-testkit marks DIR`: the open gate's two kinds of fanotify mark on one directory, held
//! until stdin closes, with no BPF program and no daemon. `cargo xtask bench` runs it (alone,
//! and beside the floor) to tell what the marks cost the kernel on every open and close of the
//! marked filesystem (the fsnotify checks a filesystem with any mark goes through) from what
//! mcpmon's programs and daemon cost. DIR is the bench's, empty, on the loop file's filesystem;
//! the gate marks users' key directories the same way.
use std::{
    io::{BufRead, Write},
    os::fd::AsFd,
};

use anyhow::Context as _;
use monitor::gate::{fanotify, persist};

pub fn run_marks(dir: &std::path::Path) -> anyhow::Result<()> {
    // The gate's group and mark: opens in DIR wait for an answer (here always: allow).
    let group = fanotify::init().context("fanotify_init (content class)")?;
    let handle = fanotify::open_path(dir).with_context(|| format!("{}", dir.display()))?;
    fanotify::mark_dir(group.as_fd(), handle.as_fd()).context("permission mark")?;
    // The persistence watch's group and mark: entries made in DIR.
    let notif = persist::group().context("fanotify_init (notification class)")?;
    persist::mark(&notif, dir).context("entry mark")?;
    // Nothing opens in DIR during a bench; answer anyway, so a stray open cannot hang.
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 8192];
        while let Ok(evs) = fanotify::read_events(group.as_fd(), &mut buf) {
            for ev in &evs {
                let _ = fanotify::respond(group.as_fd(), ev, true);
            }
        }
    });
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    drop(notif);
    Ok(())
}
