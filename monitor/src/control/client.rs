//! `mcpmon exec`: ask the daemon to track this very process, then become the server.
//! Never writes to stdout: it belongs to the MCP protocol of the server about to start.
use std::{
    convert::Infallible,
    io::{BufRead, BufReader, Write},
    os::unix::{net::UnixStream, process::CommandExt},
    path::Path,
    time::Duration,
};

use super::{ControlError, Request, Response};
use crate::cli::ExecArgs;

/// Sends one request and reads the response.
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let io = |source: std::io::Error| {
        if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            ControlError::Timeout(socket.display().to_string())
        } else {
            ControlError::Io { path: socket.display().to_string(), source }
        }
    };
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::BadResponse(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut resp = String::new();
    BufReader::new(&s).read_line(&mut resp).map_err(io)?;
    let r: Response = serde_json::from_str(&resp).map_err(|e| ControlError::BadResponse(format!("{e}: {resp:?}")))?;
    if r.ok {
        Ok(r)
    } else {
        Err(ControlError::Refused(r.error.unwrap_or_default()))
    }
}

pub fn ping(socket: &Path, timeout: Duration) -> Result<Response, ControlError> {
    request(socket, &Request::Ping, timeout)
}

/// What the daemon tracks, as JSON.
pub fn servers(socket: &Path) -> Result<serde_json::Value, ControlError> {
    Ok(request(socket, &Request::Servers, Duration::from_secs(5))?.servers.unwrap_or_default())
}

/// `mcpmon servers`: a table (or JSON) of what the daemon tracks.
pub fn run_servers(args: &crate::cli::ServersArgs) -> anyhow::Result<()> {
    let r = request(&args.socket, &Request::Servers, Duration::from_secs(5))?;
    let servers = r.servers.unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&servers)?);
        return Ok(());
    }
    // The daemon answers a caller other than root with that caller's servers only: say so,
    // or an empty table reads as "nothing is watched".
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!("(servers running as uid {euid} only; root sees every server)");
    }
    print!("{}", servers_table(&servers));
    Ok(())
}

pub fn servers_table(servers: &serde_json::Value) -> String {
    let mut out = format!("{:<4} {:<28} {:<8} {:<15} {:<18} {:>6} {:>7} {:<32} {}\n", "ID", "NAME", "FOUND", "CLIENT", "PIDS", "CALLS", "ALERTS", "TOOLS", "FROM");
    for s in servers.as_array().into_iter().flatten() {
        let pids: Vec<String> = s["pids"].as_array().into_iter().flatten().map(|p| p.to_string()).collect();
        let tools: Vec<&str> = s["tools"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
        out += &format!(
            "{:<4} {:<28} {:<8} {:<15} {:<18} {:>6} {:>7} {:<32} {}\n",
            s["id"],
            s["name"].as_str().unwrap_or("?"),
            s["how"].as_str().unwrap_or("?"),
            s["client"].as_str().unwrap_or("-"),
            pids.join(","),
            s["calls"],
            s["alerts"],
            tools.join(","),
            found_text(&s["found"]),
        );
    }
    out
}

/// The `found` record in words: which client config and file, a handshake under which parent,
/// `mcpmon exec` or `--track-pid`.
fn found_text(f: &serde_json::Value) -> String {
    if let Some(p) = f.get("handshake_under") {
        return format!("handshake under {} (pid {})", p["comm"].as_str().unwrap_or("?"), p["pid"]);
    }
    if let Some(via) = f["via"].as_str() {
        return via.to_string();
    }
    match (f["client"].as_str(), f["config"].as_str()) {
        (Some(c), Some(file)) if f["url"].is_string() => format!("{c} config {file} url {}", f["url"].as_str().unwrap_or("")),
        (Some(c), Some(file)) => format!("{c} config {file}"),
        (Some(c), None) => format!("{c} config"),
        _ => "-".into(),
    }
}

/// What `exec` does after asking the daemon.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Exec,
    ExecUnwatched(String),
    Refuse(String),
}

pub fn decide(outcome: &Result<Response, ControlError>, require_monitor: bool, name: &str) -> Action {
    match outcome {
        Ok(_) => Action::Exec,
        Err(e) if require_monitor => Action::Refuse(format!("mcpmon: {e}; refusing to start {name} (--require-monitor)")),
        Err(e) => Action::ExecUnwatched(format!("mcpmon: {e}; starting {name} unwatched (--require-monitor refuses instead)")),
    }
}

pub fn run_exec(args: &ExecArgs) -> anyhow::Result<Infallible> {
    let outcome = request(
        &args.socket,
        &Request::Track { name: args.name.clone(), pid: None },
        Duration::from_millis(args.timeout_ms),
    );
    match decide(&outcome, args.require_monitor, &args.name) {
        Action::Exec => {}
        Action::ExecUnwatched(msg) => eprintln!("{msg}"),
        Action::Refuse(msg) => {
            eprintln!("{msg}");
            std::process::exit(1);
        }
    }
    // Same pid, same stdin/stdout/stderr: the daemon tracked exactly this process.
    let err = std::process::Command::new(&args.command[0]).args(&args.command[1..]).exec();
    eprintln!("mcpmon: cannot execute {}: {err}", args.command[0]);
    std::process::exit(127);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_daemon_runs_unwatched_unless_required() {
        let r = ping(Path::new("/nonexistent/mcpmon.sock"), Duration::from_millis(100));
        assert!(matches!(r, Err(ControlError::Io { .. })));
        assert!(matches!(decide(&r, false, "fs"), Action::ExecUnwatched(m) if m.contains("unwatched")));
        assert!(matches!(decide(&r, true, "fs"), Action::Refuse(m) if m.contains("--require-monitor")));
        assert_eq!(decide(&Ok(Response { ok: true, ..Default::default() }), true, "fs"), Action::Exec);
    }

    #[test]
    fn found_in_words() {
        use serde_json::json;
        assert_eq!(found_text(&json!({"how": "config", "client": "codex", "config": "/h/.codex/config.toml"})), "codex config /h/.codex/config.toml");
        assert_eq!(found_text(&json!({"how": "url", "client": "claude-code", "config": "/h/.claude.json", "url": "http://127.0.0.1:9/mcp"})), "claude-code config /h/.claude.json url http://127.0.0.1:9/mcp");
        assert_eq!(found_text(&json!({"how": "sniffed", "handshake_under": {"pid": 42, "comm": "claude"}})), "handshake under claude (pid 42)");
        assert_eq!(found_text(&json!({"how": "exec", "via": "mcpmon exec"})), "mcpmon exec");
        assert_eq!(found_text(&serde_json::Value::Null), "-");
    }
}
