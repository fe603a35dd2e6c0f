//! Issue 15: servers configured in Codex, Gemini CLI, Zed (both command forms), Goose and
//! opencode, each written in the client's own format into a user's home and started exactly as
//! configured (command, args, env, cwd), are tracked under their configured names, and
//! `server_tracked` and `mcpmon servers` say which client's file named them (or that
//! `mcpmon exec` asked).
mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use common::daemon::{Daemon, MCPMON};
use serde_json::json;

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

/// One configured launch: what the client's file says, and how the client starts it.
struct Launch {
    client: &'static str,
    name: &'static str,
    file: &'static str,
    cmd: String,
    args: Vec<String>,
    env: (&'static str, &'static str),
    cwd: Option<std::path::PathBuf>,
}

impl Launch {
    fn start(&self) -> Child {
        let mut c = Command::new(&self.cmd);
        c.args(&self.args).env(self.env.0, self.env.1).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c.spawn().unwrap()
    }
}

#[test]
fn servers_of_codex_gemini_zed_goose_and_opencode_are_tracked_under_their_configured_names() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(peers) = common::peers() else { return };
    let time = peers.join("venv/bin/mcp-server-time");
    let time = time.to_str().unwrap();
    let python = peers.join("venv/bin/python");
    let python = python.to_str().unwrap();
    let fs_bin = peers.join("node_modules/.bin/mcp-server-filesystem").canonicalize().unwrap();
    let fs_bin = fs_bin.to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home/dev");
    // Arguments unique to this test: every daemon on the machine sees every process.
    let dir = |n: &str| {
        let d = t.path().join(n);
        std::fs::create_dir_all(&d).unwrap();
        d.to_str().unwrap().to_string()
    };
    let (gem_dir, goose_dir, work) = (dir("gemini-root"), dir("goose-root"), dir("work"));
    let tz = |z: &str| vec!["--local-timezone".to_string(), z.to_string()];
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let launches = [
        Launch { client: "codex", name: "codex-time", file: ".codex/config.toml", cmd: time.into(), args: tz("Asia/Tokyo"), env: ("CODEX_T", "1"), cwd: Some(work.clone().into()) },
        Launch { client: "gemini-cli", name: "geminiFiles", file: ".gemini/settings.json", cmd: "node".into(), args: s(&[fs_bin, &gem_dir]), env: ("GEM", "on"), cwd: Some(work.clone().into()) },
        Launch { client: "zed", name: "zed-old-form", file: ".config/zed/settings.json", cmd: time.into(), args: tz("Europe/Paris"), env: ("ZED_T", "z"), cwd: None },
        Launch { client: "zed", name: "zed-flat", file: ".config/zed/settings.json", cmd: time.into(), args: tz("Europe/Madrid"), env: ("ZED_F", "f"), cwd: None },
        Launch { client: "goose", name: "goose-files", file: ".config/goose/config.yaml", cmd: "node".into(), args: s(&[fs_bin, &goose_dir]), env: ("GOOSE_T", "g"), cwd: None },
        Launch { client: "opencode", name: "oc-time", file: ".config/opencode/opencode.json", cmd: python.into(), args: [s(&["-m", "mcp_server_time"]), tz("America/Lima")].concat(), env: ("OC_T", "o"), cwd: None },
    ];
    let l = |i: usize| &launches[i];
    write(
        &home.join(l(0).file),
        &format!(
            "model = \"gpt-5-codex\"\n\n[mcp_servers.codex-time]\ncommand = {:?}\nargs = {:?}\ncwd = {:?}\n\n[mcp_servers.codex-time.env]\nCODEX_T = \"1\"\n\n[mcp_servers.remote]\nurl = \"https://example.invalid/mcp\"\n",
            l(0).cmd, l(0).args, work
        ),
    );
    write(
        &home.join(l(1).file),
        &json!({"mcpServers": {
            "geminiFiles": {"command": "node", "args": l(1).args, "cwd": work, "env": {"GEM": "on"}, "timeout": 30000, "trust": false},
            "sseServer": {"url": "http://127.0.0.1:9/sse"},
        }})
        .to_string(),
    );
    write(
        &home.join(l(2).file),
        &format!(
            "// Zed settings\n{{\n  \"ui_font_size\": 16,\n  \"context_servers\": {{\n    \"zed-old-form\": {{\n      \"command\": {{\"path\": {:?}, \"args\": {}, \"env\": {{\"ZED_T\": \"z\"}}}},\n      \"settings\": {{}}\n    }},\n    \"zed-flat\": {{\"source\": \"custom\", \"command\": {:?}, \"args\": {}, \"env\": {{\"ZED_F\": \"f\"}}}},\n  }},\n}}\n",
            time,
            json!(l(2).args),
            time,
            json!(l(3).args)
        ),
    );
    write(
        &home.join(l(4).file),
        &format!(
            "GOOSE_PROVIDER: anthropic\nextensions:\n  developer:\n    enabled: true\n    name: developer\n    type: builtin\n  goose-files:\n    name: goose-files\n    cmd: node\n    args: {}\n    enabled: true\n    envs: {{ \"GOOSE_T\": \"g\" }}\n    type: stdio\n    timeout: 300\n",
            json!(l(4).args)
        ),
    );
    let oc_cmd: Vec<String> = [vec![python.to_string()], l(5).args.clone()].concat();
    write(
        &home.join(l(5).file),
        &json!({"$schema": "https://opencode.ai/config.json", "mcp": {"oc-time": {"type": "local", "command": oc_cmd, "environment": {"OC_T": "o"}, "enabled": true}}}).to_string(),
    );
    let passwd = t.path().join("passwd");
    write(&passwd, &format!("dev:x:1000:1000::{}:/bin/sh\n", home.display()));
    let d = Daemon::start(&["--passwd", passwd.to_str().unwrap()]);

    let mut kids = vec![];
    for l in &launches {
        let kid = l.start();
        let pid = kid.id();
        let rec = d.expect(&format!("{} tracked", l.name), |v| v["kind"] == "server_tracked" && v["root_pid"] == pid);
        assert_eq!((rec["server"].as_str(), rec["how"].as_str(), rec["client"].as_str()), (Some(l.name), Some("config"), Some(l.client)), "{rec}");
        let cfg = home.join(l.file);
        assert_eq!(rec["found"]["config"].as_str(), cfg.to_str(), "{rec}");
        assert_eq!(rec["found"]["client"].as_str(), Some(l.client));
        kids.push(kid);
    }
    // `mcpmon servers` says where each one came from, as JSON and in the table.
    let out = Command::new(MCPMON).args(["servers", "--json", "--socket"]).arg(&d.socket).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let servers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for l in &launches {
        let s = servers.as_array().unwrap().iter().find(|s| s["name"] == l.name).unwrap_or_else(|| panic!("{} in {servers}", l.name));
        assert_eq!(s["found"]["client"], l.client);
        assert!(s["found"]["config"].as_str().unwrap().ends_with(l.file));
    }
    let table = Command::new(MCPMON).args(["servers", "--socket"]).arg(&d.socket).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&format!("goose config {}", home.join(".config/goose/config.yaml").display())), "{table}");
    for mut k in kids {
        drop(k.stdin.take());
        k.wait().unwrap();
    }
    // The other ways in say so too: `mcpmon exec` (the server asked for itself).
    let mut ex = common::daemon::exec_cmd(&d.socket, "via-exec", &[], &["/bin/sh", "-c", "read x"]).stdin(Stdio::piped()).spawn().unwrap();
    let rec = d.expect("exec tracked", |v| v["kind"] == "server_tracked" && v["server"] == "via-exec");
    assert_eq!((rec["found"]["how"].as_str(), rec["found"]["via"].as_str()), (Some("exec"), Some("mcpmon exec")), "{rec}");
    drop(ex.stdin.take());
    ex.wait().unwrap();
    d.stop();
}
