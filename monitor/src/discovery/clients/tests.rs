use super::*;

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn argv(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/clients")
}

/// The fixtures are a home, a project and /etc laid out as each client writes them.
fn fixture_configs() -> (tempfile::TempDir, ClientConfigs) {
    let t = tempfile::tempdir().unwrap();
    let passwd = t.path().join("passwd");
    write(&passwd, &format!("dev:x:1000:1000::{}:/bin/bash\n", fixtures().join("home").display()));
    let mut c = ClientConfigs::with_etc(passwd, vec![fixtures().join("project")], fixtures().join("etc"));
    assert!(c.refresh());
    (t, c)
}

#[test]
fn every_fixture_is_read_in_its_clients_format() {
    let (_t, mut c) = fixture_configs();
    let mut got: Vec<(&str, &str, &str, Option<u32>)> = c.servers.iter().map(|s| (s.client, s.name.as_str(), s.transport, s.uid)).collect();
    got.sort();
    let u = Some(1000);
    let want = vec![
        ("amazon-q", "aws-docs", "stdio", u),
        ("amazon-q", "q-project", "stdio", u),
        ("claude-code", "company-docs", "http", None),
        ("claude-code", "company-tools", "stdio", None),
        ("claude-code", "git", "stdio", u),
        ("claude-code", "linear", "sse", u),
        ("claude-code", "memory", "stdio", u),
        ("claude-code", "sentry", "http", u),
        ("claude-code", "time", "stdio", u),
        ("claude-desktop", "filesystem", "stdio", u),
        ("claude-desktop", "github", "stdio", u),
        ("cline", "cline-in-cursor", "stdio", u),
        ("cline", "cline-remote", "sse", u),
        ("cline", "weather", "stdio", u),
        ("continue", "Browser search", "stdio", u),
        ("continue", "Remote Continue", "http", u),
        ("continue", "SQLite MCP", "stdio", u),
        ("continue", "brave", "stdio", u),
        ("continue", "uvx", "stdio", u),
        ("cursor", "everything", "stdio", u),
        ("cursor", "project-db", "stdio", u),
        ("cursor", "remote", "http", u),
        ("codex", "context7", "stdio", u),
        ("codex", "docs", "stdio", u),
        ("codex", "figma", "http", u),
        ("codex", "project-lint", "stdio", u),
        ("gemini-cli", "fleet-audit", "stdio", None),
        ("gemini-cli", "httpServer", "http", u),
        ("gemini-cli", "nodeServer", "stdio", u),
        ("gemini-cli", "pythonTools", "stdio", u),
        ("gemini-cli", "sseServer", "sse", u),
        ("goose", "github", "stdio", u),
        ("goose", "remote-goose", "http", u),
        ("lm-studio", "hf-mcp-server", "http", u),
        ("lm-studio", "lms-local", "stdio", u),
        ("opencode", "my-local-mcp-server", "stdio", u),
        ("opencode", "my-remote", "http", u),
        ("opencode", "oc-project", "stdio", u),
        ("roo", "puppeteer", "stdio", u),
        ("roo", "roo-project", "stdio", u),
        ("roo", "roo-remote", "http", u),
        ("vscode", "fetch", "stdio", u),
        ("vscode", "gh", "http", u),
        ("vscode", "perplexity", "stdio", u),
        ("vscode", "wrapped", "stdio", u),
        ("vscode-insiders", "playwright", "stdio", u),
        ("windsurf", "figma", "http", u),
        ("windsurf", "wind", "stdio", u),
        ("zed", "mcp-local-server", "stdio", u),
        ("zed", "my-context-server", "stdio", u),
        ("zed", "project-notes", "stdio", u),
        ("zed", "spectron", "http", u),
    ];
    let mut want = want;
    want.sort();
    assert_eq!(got, want);
    let clients: BTreeSet<&str> = got.iter().map(|g| g.0).collect();
    assert_eq!(clients.len(), 16, "{clients:?}");
    assert!(!c.refresh(), "nothing changed");
}

#[test]
fn fields_of_each_format_land_in_the_record() {
    let (_t, c) = fixture_configs();
    let get = |client: &str, name: &str| c.servers.iter().find(|s| s.client == client && s.name == name).unwrap_or_else(|| panic!("{client} {name}"));
    let docs = get("codex", "docs");
    assert_eq!((docs.command.as_str(), docs.cwd.as_deref()), ("docs-server", Some(Path::new("/srv/docs"))));
    assert_eq!(get("codex", "context7").env.get("CONTEXT7_LOG").map(String::as_str), Some("info"));
    assert_eq!(get("codex", "figma").url.as_deref(), Some("https://mcp.figma.com/mcp"));
    assert_eq!(get("codex", "project-lint").env.get("LINT_LEVEL").map(String::as_str), Some("strict"));
    let py = get("gemini-cli", "pythonTools");
    assert_eq!((py.args.len(), py.cwd.as_deref()), (4, Some(Path::new("./mcp-servers/python"))));
    let zed_old = get("zed", "my-context-server");
    assert_eq!((zed_old.command.as_str(), zed_old.args.as_slice()), ("/path/to/my-context-server", &["run".to_string()][..]));
    assert_eq!(get("zed", "mcp-local-server").env.get("LOG").map(String::as_str), Some("debug"));
    let goose = get("goose", "github");
    assert_eq!((goose.command.as_str(), goose.args[1].as_str()), ("npx", "@modelcontextprotocol/server-github"));
    assert!(goose.env.contains_key("GITHUB_PERSONAL_ACCESS_TOKEN"));
    let oc = get("opencode", "my-local-mcp-server");
    assert_eq!((oc.command.as_str(), oc.args.as_slice()), ("npx", &argv(&["-y", "my-mcp-command"])[..]));
    assert_eq!(oc.env.get("MY_ENV_VAR").map(String::as_str), Some("my_env_var_value"));
    assert_eq!(get("roo", "puppeteer").cwd.as_deref(), Some(Path::new("/home/dev/projects")));
    assert_eq!(get("continue", "SQLite MCP").args, argv(&["-y", "mcp-sqlite", "/home/dev/data.db"]));
    assert_eq!(get("continue", "uvx").args[0], "mcp-server-sqlite");
    assert!(get("claude-code", "company-tools").config.ends_with("etc/claude-code/managed-mcp.json"));
    // Env values (tokens) never leave the daemon; names do.
    let rec = serde_json::to_value(get("claude-desktop", "github")).unwrap();
    assert_eq!(rec["env"], serde_json::json!(["GITHUB_PERSONAL_ACCESS_TOKEN"]));
    assert!(!rec.to_string().contains("ghp_fixture"));
    // Remote entries are kept for the HTTP transport, and never enter the exec filter.
    assert!(c.remote().any(|s| s.name == "sseServer" && s.transport == "sse"));
    let cmds = c.commands();
    assert!(cmds.contains(&"docs-server".to_string()) && cmds.contains(&"company-mcp".to_string()) && cmds.contains(&"uv".to_string()));
    assert!(!cmds.iter().any(String::is_empty));
}

#[test]
fn matches_execs_and_rereads_on_change() {
    let t = tempfile::tempdir().unwrap();
    let alice = t.path().join("home/alice");
    write(
        &alice.join(".config/Claude/claude_desktop_config.json"),
        r#"{"mcpServers":{"filesystem":{"command":"npx","args":["-y","@modelcontextprotocol/server-filesystem","/home/alice/docs"]},
            "memory":{"command":"npx","args":["-y","@modelcontextprotocol/server-memory"]},
            "time":{"command":"mcp-server-time"}}}"#,
    );
    write(&alice.join(".config/Code/User/settings.json"), "{\"mcp\": {\"servers\": {\"wrapped\": {\"command\": \"mcpmon\", \"args\": [\"exec\", \"--name\", \"w\", \"--\", \"python3\", \"-m\", \"srv\"]},}},}\n");
    let passwd = t.path().join("passwd");
    write(&passwd, &format!("alice:x:1000:1000::{}:/bin/bash\n", alice.display()));
    let mut c = ClientConfigs::with_etc(passwd, vec![], t.path().join("etc"));
    c.refresh();
    fn m(c: &ClientConfigs, file: Option<&str>, exe: Option<&str>, a: &[&str]) -> Option<String> {
        c.match_exec(&ExecView::new(file, exe, &argv(a), None)).map(|s| s.name.clone())
    }
    let fs_args = ["-y", "@modelcontextprotocol/server-filesystem", "/home/alice/docs"];
    assert_eq!(m(&c, Some("/usr/bin/npx"), Some("/usr/bin/npx"), &[&["npx"][..], &fs_args].concat()).as_deref(), Some("filesystem"));
    // Every image of one `npx` launch (a symlink to a `#!/usr/bin/env node` script) matches,
    // whichever the daemon happens to read in /proc.
    let env_stage = [&["/usr/bin/env", "node", "/usr/bin/npx"][..], &fs_args].concat();
    let node_stage = [&["node", "/usr/bin/npx"][..], &fs_args].concat();
    assert_eq!(m(&c, Some("/usr/bin/npx"), Some("/usr/bin/env"), &env_stage).as_deref(), Some("filesystem"));
    assert_eq!(m(&c, None, Some("/usr/bin/env"), &env_stage).as_deref(), Some("filesystem"));
    assert_eq!(m(&c, None, Some("/usr/bin/node"), &node_stage).as_deref(), Some("filesystem"));
    // The exec named the configured command and /proc already shows the next image of it.
    assert_eq!(m(&c, Some("/usr/bin/npx"), Some("/usr/bin/node"), &["node", "/usr/lib/node_modules/npm/bin/npx-cli.js", "-y", "@modelcontextprotocol/server-memory"]).as_deref(), Some("memory"));
    // A running npx, retitled by npm (what the start-up scan reads in /proc).
    assert_eq!(m(&c, None, Some("/usr/bin/node"), &["npm exec @modelcontextprotocol/server-filesystem /home/alice/docs"]).as_deref(), Some("filesystem"));
    assert!(m(&c, None, Some("/usr/bin/node"), &["npm exec @modelcontextprotocol/server-filesystem /etc"]).is_none());
    // Launcher flags in between are fine; other arguments are not.
    assert!(m(&c, None, None, &["npx", "--yes", "-y", "@modelcontextprotocol/server-memory"]).is_some());
    assert!(m(&c, None, None, &["npx", "-y", "@modelcontextprotocol/server-filesystem", "/etc"]).is_none());
    assert!(m(&c, None, None, &["npm", "install"]).is_none());
    // `env` with another command in third place is not a shebang: no match.
    assert!(m(&c, None, None, &["/usr/bin/env", "FOO=1", "x", "mcp-server-time"]).is_none());
    // A server already wrapped in `mcpmon exec` matches its real command.
    assert_eq!(m(&c, None, Some("/usr/bin/python3.11"), &["python3", "-m", "srv"]).as_deref(), Some("wrapped"));
    // A shebang script shows up as interpreter + script.
    assert_eq!(m(&c, None, Some("/usr/bin/python3.11"), &["/usr/bin/python3", "/venv/bin/mcp-server-time"]).as_deref(), Some("time"));

    // A new server in an existing file is picked up.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&alice.join(".cursor/mcp.json"), r#"{"mcpServers":{"new":{"command":"deno","args":["run","srv.ts"]}}}"#);
    assert!(c.refresh());
    assert!(m(&c, None, None, &["deno", "run", "-A", "srv.ts"]).is_some());
    // So is a new Continue block file (a new file in a watched directory).
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&alice.join(".continue/mcpServers/b.yaml"), "name: b\nmcpServers:\n  - name: block\n    command: block-mcp\n");
    assert!(c.refresh());
    assert!(c.commands().contains(&"block-mcp".to_string()));
}

/// Two projects configure the same relative command line, and two entries differ only by env:
/// the process's cwd and environment tell which one runs.
#[test]
fn cwd_and_env_pick_the_entry() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let home = t.path().join("home");
    let entry = |cwd: &Path| serde_json::json!({"command": "python3", "args": ["./srv.py"], "cwd": cwd});
    let cfg = serde_json::json!({"mcpServers": {
        "in-a": entry(&a), "in-b": entry(&b),
        "rel-cmd-in-b": {"command": "./run.sh", "cwd": b},
        "rel-cwd": {"command": "python3", "args": ["srv/x.py"], "cwd": "./b"},
        "tok-1": {"command": "python3", "args": ["tok.py"], "env": {"TOK": "one"}},
        "tok-2": {"command": "python3", "args": ["tok.py"], "env": {"TOK": "two"}},
        "tok-any": {"command": "python3", "args": ["tok.py"], "env": {"TOK": "${input:tok}"}},
    }});
    write(&home.join(".cursor/mcp.json"), &cfg.to_string());
    let passwd = t.path().join("passwd");
    write(&passwd, &format!("u:x:1000:1000::{}:/bin/sh\n", home.display()));
    let mut c = ClientConfigs::with_etc(passwd, vec![], t.path().join("etc"));
    c.refresh();
    let sleeper = "import sys; sys.stdin.read()";
    let run = |dir: &Path, env: (&str, &str), arg: &str| {
        // The interpreter itself, not a version manager's shim (a shim is a process of its own).
        std::process::Command::new("/usr/bin/python3").args(["-c", sleeper, arg]).current_dir(dir).env(env.0, env.1).stdin(std::process::Stdio::piped()).spawn().unwrap()
    };
    let name_of = |child: &std::process::Child| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // /proc shows the child's argv once it has exec'd python.
        loop {
            let info = crate::sys::procfs::process_info(child.id()).unwrap();
            if info.argv.first().is_some_and(|a| a.contains("python3")) && info.argv.iter().any(|a| a == sleeper) {
                return c.match_exec(&ExecView::new(None, info.exe.as_deref(), &info.argv, Some(child.id()))).map(|s| s.name.clone());
            }
            assert!(std::time::Instant::now() < deadline, "the child never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    for (dir, env, arg, want) in [(&b, ("X", "1"), "srv/x.py", "rel-cwd"), (&b, ("X", "1"), "./srv.py", "in-b"), (&a, ("X", "1"), "./srv.py", "in-a"), (&a, ("TOK", "two"), "tok.py", "tok-2"), (&a, ("TOK", "zzz"), "tok.py", "tok-any")] {
        let mut child = run(dir, env, arg);
        let got = name_of(&child);
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(got.as_deref(), Some(want), "{dir:?} {env:?}");
    }
    // A relative command: only the process whose cwd is the entry's is it.
    for (dir, want) in [(&a, None), (&b, Some("rel-cmd-in-b"))] {
        let mut child = run(dir, ("X", "1"), "x");
        name_of(&child); // waits for the exec
        let argv = vec!["./run.sh".to_string()];
        let got = c.match_exec(&ExecView::new(None, None, &argv, Some(child.id()))).map(|s| s.name.clone());
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(got.as_deref(), want, "{dir:?}");
    }
}

/// A running uvx has re-exec'd itself as `uv tool uvx ARGS` (same pid): the start-up scan reads
/// that in /proc and must still name the `uvx` entry; an entry that names `uv tool uvx` itself
/// keeps matching as written, and so does every image of the launch at exec.
#[test]
fn a_running_uvx_matches_its_uvx_entry() {
    let t = tempfile::tempdir().unwrap();
    let alice = t.path().join("home/alice");
    write(
        &alice.join(".config/Claude/claude_desktop_config.json"),
        r#"{"mcpServers":{"time":{"command":"uvx","args":["mcp-server-time","--local-timezone","Asia/Tokyo"]},
            "git":{"command":"uv","args":["tool","uvx","mcp-server-git"]}}}"#,
    );
    let passwd = t.path().join("passwd");
    write(&passwd, &format!("alice:x:1000:1000::{}:/bin/bash\n", alice.display()));
    let mut c = ClientConfigs::with_etc(passwd, vec![], t.path().join("etc"));
    c.refresh();
    let m = |file: Option<&str>, exe: Option<&str>, a: &[&str]| c.match_exec(&ExecView::new(file, exe, &argv(a), None)).map(|s| s.name.clone());
    let running = ["/home/alice/.local/bin/uv", "tool", "uvx", "mcp-server-time", "--local-timezone", "Asia/Tokyo"];
    assert_eq!(m(None, Some("/home/alice/.local/bin/uv"), &running).as_deref(), Some("time"));
    assert_eq!(m(Some("/home/alice/.local/bin/uvx"), Some("/home/alice/.local/bin/uvx"), &["uvx", "mcp-server-time", "--local-timezone", "Asia/Tokyo"]).as_deref(), Some("time"));
    assert!(m(None, Some("/usr/bin/uv"), &["uv", "tool", "uvx", "mcp-server-time", "--local-timezone", "UTC"]).is_none());
    assert_eq!(m(None, Some("/usr/bin/uv"), &["uv", "tool", "uvx", "mcp-server-git"]).as_deref(), Some("git"));
}
