//! `mcpmon top`: a live terminal view for one host. It tails the daemon's output over the control
//! socket and shows the tracked servers, their tool calls as they happen with the syscalls under
//! each call, and the latest alerts. Plain ANSI, redrawn twice a second; Ctrl-C leaves.
use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

#[derive(Default)]
struct Server {
    name: String,
    how: String,
    client: String,
    pids: usize,
    calls: u64,
    alerts: u64,
}

struct Call {
    server: String,
    tool: String,
    id: String,
    args: String,
    state: String,
    syscalls: Vec<String>,
    events: u64,
}

#[derive(Default)]
pub struct View {
    servers: BTreeMap<u64, Server>,
    calls: VecDeque<Call>,
    alerts: VecDeque<String>,
    pub lines_seen: u64,
    lagged: u64,
}

const KEEP_CALLS: usize = 12;
const KEEP_ALERTS: usize = 8;
const SYSCALLS_PER_CALL: usize = 4;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl View {
    pub fn apply(&mut self, v: &Value) {
        self.lines_seen += 1;
        let sid = v["server_id"].as_u64().unwrap_or(0);
        match v["kind"].as_str().unwrap_or("") {
            "server_tracked" => {
                let e = self.servers.entry(sid).or_default();
                e.name = s(&v["server"]);
                e.how = s(&v["how"]);
                e.client = s(&v["client"]);
                e.pids = v["tracked_pids"].as_array().map(|a| a.len()).unwrap_or(1);
            }
            "server_gone" | "server_dropped" => {
                self.servers.remove(&sid);
            }
            "fork" => self.servers.entry(sid).or_default().pids += 1,
            "exit" => {
                if let Some(e) = self.servers.get_mut(&sid) {
                    e.pids = e.pids.saturating_sub(1);
                }
            }
            "tool_call_start" => {
                if let Some(e) = self.servers.get_mut(&sid) {
                    e.calls += 1;
                }
                let server = self.servers.get(&sid).map(|e| e.name.clone()).unwrap_or_else(|| s(&v["server"]));
                let mut args = v["arguments"].to_string();
                args.truncate(60);
                self.calls.push_front(Call { server, tool: s(&v["tool"]), id: s(&v["id"]), args, state: "running".into(), syscalls: vec![], events: 0 });
                self.calls.truncate(KEEP_CALLS);
            }
            "tool_call" => {
                let id = s(&v["id"]);
                let state = format!("{} {:.1} ms", s(&v["outcome"]), v["duration_ms"].as_f64().unwrap_or(0.0));
                match self.calls.iter_mut().find(|c| c.id == id && c.state == "running") {
                    Some(c) => c.state = state,
                    None => {
                        self.calls.push_front(Call { server: s(&v["server"]), tool: s(&v["tool"]), id, args: String::new(), state, syscalls: vec![], events: 0 });
                        self.calls.truncate(KEEP_CALLS);
                    }
                }
            }
            "alert" => {
                if let Some(e) = self.servers.get_mut(&v["server"]["id"].as_u64().unwrap_or(sid)) {
                    e.alerts += 1;
                }
                let line = format!(
                    "{} {:<8} {:<28} {} [{}]",
                    s(&v["time"]).get(11..19).unwrap_or(""),
                    s(&v["rule"]["severity"]),
                    s(&v["rule"]["id"]),
                    s(&v["summary"]),
                    s(&v["action"]["result"])
                );
                self.alerts.push_front(line);
                self.alerts.truncate(KEEP_ALERTS);
            }
            "tail_lagged" => self.lagged += v["missed"].as_u64().unwrap_or(0),
            k @ ("exec" | "open" | "connect" | "send" | "io_uring") if v["mcp"]["state"] == "call" => {
                let id = s(&v["mcp"]["id"]);
                if let Some(c) = self.calls.iter_mut().find(|c| c.id == id) {
                    c.events += 1;
                    let what = match k {
                        "exec" => s(&v["filename"]),
                        "open" => s(&v["resolved_path"]).chars().take(70).collect(),
                        "io_uring" => "io_uring".into(),
                        _ => format!("{}:{}", s(&v["addr"]), s(&v["port"])),
                    };
                    let line = format!("{k:<7} {what}");
                    if c.syscalls.len() >= SYSCALLS_PER_CALL {
                        c.syscalls.remove(0);
                    }
                    c.syscalls.push(line);
                }
            }
            _ => {}
        }
    }

    pub fn render(&self, width: usize) -> String {
        let mut o = String::new();
        let mut line = |t: String| {
            let t: String = t.chars().take(width).collect();
            o.push_str(&t);
            o.push_str("\x1b[K\r\n");
        };
        line(format!("mcpmon top — {} servers, {} lines{}  (Ctrl-C to quit)", self.servers.len(), self.lines_seen, if self.lagged > 0 { format!(", {} lines missed (slow terminal)", self.lagged) } else { String::new() }));
        line(String::new());
        line(format!("{:<5} {:<24} {:<10} {:<14} {:>5} {:>6} {:>6}", "ID", "SERVER", "FOUND", "CLIENT", "PROCS", "CALLS", "ALERTS"));
        for (id, sv) in &self.servers {
            line(format!("{:<5} {:<24} {:<10} {:<14} {:>5} {:>6} {:>6}", id, sv.name, sv.how, sv.client, sv.pids, sv.calls, sv.alerts));
        }
        line(String::new());
        line("TOOL CALLS (newest first) and the syscalls under each".into());
        for c in &self.calls {
            line(format!("  {:<18} {:<20} id={:<6} {:<22} {} events  {}", c.server, c.tool, c.id, c.state, c.events, c.args));
            for sc in &c.syscalls {
                line(format!("      └ {sc}"));
            }
        }
        line(String::new());
        line("ALERTS (newest first)".into());
        for a in &self.alerts {
            line(format!("  {a}"));
        }
        o
    }
}

fn term_width() -> usize {
    // SAFETY: libc::winsize is a plain C struct of u16 fields, for which all-zero bytes are valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, a live local of exactly that type; fd 1 needs no
    // validity (a bad or non-tty fd just returns an error, checked here).
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        160
    }
}

pub fn run(socket: &Path) -> anyhow::Result<()> {
    let mut view = View::default();
    // Seed with what is tracked already.
    if let Ok(list) = crate::control::client::servers(socket) {
        for sv in list.as_array().into_iter().flatten() {
            view.apply(&serde_json::json!({"kind": "server_tracked", "server_id": sv["id"], "server": sv["name"], "how": sv["how"], "client": sv["client"], "tracked_pids": sv["pids"]}));
            if let Some(e) = view.servers.get_mut(&sv["id"].as_u64().unwrap_or(0)) {
                e.calls = sv["calls"].as_u64().unwrap_or(0);
                e.alerts = sv["alerts"].as_u64().unwrap_or(0);
            }
        }
    }
    let mut stream = UnixStream::connect(socket).map_err(|e| anyhow::anyhow!("{}: {e} (is `mcpmon run` running?)", socket.display()))?;
    stream.write_all(b"{\"op\":\"tail\"}\n")?;
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for l in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let mut out = std::io::stdout();
    write!(out, "\x1b[?25l\x1b[2J")?;
    loop {
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) => {
                    if v["ok"] == false {
                        anyhow::bail!("daemon: {}", v["error"]);
                    }
                    view.apply(&v)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    write!(out, "\x1b[?25h")?;
                    anyhow::bail!("the daemon closed the stream");
                }
            }
        }
        write!(out, "\x1b[H{}\x1b[J", view.render(term_width()))?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_collect_their_syscalls_and_alerts_show() {
        let mut v = View::default();
        v.apply(&json!({"kind": "server_tracked", "server_id": 1, "server": "fs", "how": "exec", "tracked_pids": [5]}));
        v.apply(&json!({"kind": "tool_call_start", "server_id": 1, "tool": "read_file", "id": "3", "arguments": {"path": "/x"}}));
        v.apply(&json!({"kind": "open", "server_id": 1, "resolved_path": "/x", "mcp": {"state": "call", "id": "3", "tool": "read_file"}}));
        v.apply(&json!({"kind": "tool_call", "server_id": 1, "server": "fs", "tool": "read_file", "id": "3", "outcome": "ok", "duration_ms": 2.5}));
        v.apply(&json!({"kind": "alert", "server": {"id": 1, "name": "fs"}, "rule": {"id": "ssh-private-key-read", "severity": "critical"}, "summary": "boom", "action": {"result": "killed_in_kernel"}, "time": "2026-11-27T08:00:01.000Z"}));
        let r = v.render(200);
        assert!(r.contains("fs") && r.contains("read_file") && r.contains("ok 2.5 ms") && r.contains("open    /x"), "{r}");
        assert!(r.contains("ssh-private-key-read") && r.contains("killed_in_kernel"), "{r}");
    }
}
