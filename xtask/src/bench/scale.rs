//! Scale (issue 16 item 6): the daemon's memory and CPU with many servers tracked at once. Each
//! server is a sleeping process taken under watch through the control socket (as `mcpmon exec`
//! does for itself), so the figure is the daemon's per-server cost, not the servers'.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::configs::{usage, Daemon};

fn track(socket: &std::path::Path, pid: u32, name: &str) -> anyhow::Result<()> {
    let mut s = UnixStream::connect(socket).context("control socket")?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    writeln!(s, "{}", json!({"op": "track", "name": name, "pid": pid}))?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let r: Value = serde_json::from_str(&line).with_context(|| format!("reply {line:?}"))?;
    if r["ok"] != true {
        bail!("track {name}: {line}");
    }
    Ok(())
}

/// RSS and CPU of the daemon with `n` servers tracked: at rest, and while one of them works.
pub fn run(quick: bool) -> anyhow::Result<Value> {
    let n = if quick { 200 } else { 1000 };
    let d = Daemon::start(&[], false)?;
    let (cpu0, rss0) = usage(d.pid());
    let mut kids: Vec<Child> = Vec::with_capacity(n);
    let t = Instant::now();
    let result = (|| -> anyhow::Result<Value> {
        for i in 0..n {
            let k = Command::new("sleep").arg("600").stdin(Stdio::null()).spawn()?;
            track(&d.socket, k.id(), &format!("scale-{i}"))?;
            kids.push(k);
        }
        let track_s = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        // At rest: n servers tracked, nothing happening.
        let (c1, _) = usage(d.pid());
        std::thread::sleep(Duration::from_secs(10));
        let (c2, rss_rest) = usage(d.pid());
        Ok(json!({
            "servers": n,
            "track_all_s": track_s,
            "daemon_rss_bytes_before": rss0,
            "daemon_rss_bytes": rss_rest,
            "rss_per_server_bytes": (rss_rest as f64 - rss0 as f64) / n as f64,
            "daemon_cpu_cores_at_rest": (c2 - c1) / 10.0,
            "daemon_cpu_s_to_track_all": c1 - cpu0,
        }))
    })();
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    d.stop()?;
    result
}
