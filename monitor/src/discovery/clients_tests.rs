use super::*;

fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

fn argv(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// A fake host: two users (one with a home outside /home), every client's config format.
fn host() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let alice = t.path().join("home/alice");
    let svc = t.path().join("srv/builder"); // home outside /home
    let proj = t.path().join("work/proj");
    std::fs::create_dir_all(&alice).unwrap();
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::create_dir_all(&proj).unwrap();
    let passwd = t.path().join("passwd");
    write(
        &passwd,
        &format!(
            "root:x:0:0:root:/nonexistent-root:/bin/bash\nalice:x:1000:1000::{}:/bin/bash\nbuilder:x:1500:1500::{}:/bin/sh\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n",
            alice.display(),
            svc.display()
        ),
    );
    write(
        &alice.join(".config/Claude/claude_desktop_config.json"),
        r#"{"mcpServers":{"filesystem":{"command":"npx","args":["-y","@modelcontextprotocol/server-filesystem","/home/alice/docs"]}}}"#,
    );
    write(
        &alice.join(".claude.json"),
        &format!(
            r#"{{"mcpServers":{{"git":{{"command":"uvx","args":["mcp-server-git"]}}}},"projects":{{"{}":{{"mcpServers":{{"time":{{"command":"mcp-server-time","args":[]}}}}}}}}}}"#,
            proj.display()
        ),
    );
    write(&proj.join(".mcp.json"), r#"{"mcpServers":{"memory":{"command":"npx","args":["-y","@modelcontextprotocol/server-memory"]}}}"#);
    write(&proj.join(".cursor/mcp.json"), r#"{"mcpServers":{"remote":{"url":"https://example.invalid/mcp"},"everything":{"command":"npx","args":["@modelcontextprotocol/server-everything"]}}}"#);
    write(&proj.join(".vscode/mcp.json"), r#"{"servers":{"fetch":{"type":"stdio","command":"uvx","args":["mcp-server-fetch"]}}}"#);
    write(
        &alice.join(".config/Code/User/settings.json"),
        "{\n  // user settings are JSONC\n  \"editor.tabSize\": 2,\n  \"mcp\": {\"servers\": {\"wrapped\": {\"command\": \"mcpmon\", \"args\": [\"exec\", \"--name\", \"w\", \"--\", \"python3\", \"-m\", \"srv\"]},}},\n}\n",
    );
    write(&svc.join(".cursor/mcp.json"), r#"{"mcpServers":{"ci-tool":{"command":"/opt/tools/ci-mcp","args":["--stdio"]}}}"#);
    write(&svc.join(".codeium/windsurf/mcp_config.json"), r#"{"mcpServers":{"wind":{"command":"node","args":["/opt/wind/index.js"]}}}"#);
    (t, passwd)
}

#[test]
fn reads_every_client_format_for_every_user() {
    let (_t, passwd) = host();
    let mut c = ClientConfigs::new(passwd, vec![]);
    assert!(c.refresh());
    let mut got: Vec<(&str, &str, u32)> = c.servers.iter().map(|s| (s.client, s.name.as_str(), s.uid)).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("claude-code", "git", 1000),
            ("claude-code", "memory", 1000),
            ("claude-code", "time", 1000),
            ("claude-desktop", "filesystem", 1000),
            ("cursor", "ci-tool", 1500),
            ("cursor", "everything", 1000),
            ("vscode", "fetch", 1000),
            ("vscode", "wrapped", 1000),
            ("windsurf", "wind", 1500),
        ]
    );
    assert!(!c.refresh(), "nothing changed");
}

#[test]
fn matches_execs_and_rereads_on_change() {
    let (t, passwd) = host();
    let mut c = ClientConfigs::new(passwd, vec![]);
    c.refresh();
    let m = c.match_exec(Some("/usr/bin/npx"), &argv(&["npx", "-y", "@modelcontextprotocol/server-filesystem", "/home/alice/docs"]));
    assert_eq!(m.map(|s| s.name.as_str()), Some("filesystem"));
    // Launcher flags in between are fine; other arguments are not.
    assert!(c.match_exec(None, &argv(&["npx", "--yes", "-y", "@modelcontextprotocol/server-memory"])).is_some());
    assert!(c.match_exec(None, &argv(&["npx", "-y", "@modelcontextprotocol/server-filesystem", "/etc"])).is_none());
    assert!(c.match_exec(None, &argv(&["npm", "install"])).is_none());
    // A server already wrapped in `mcpmon exec` matches its real command.
    assert_eq!(c.match_exec(Some("/usr/bin/python3.11"), &argv(&["python3", "-m", "srv"])).map(|s| s.name.as_str()), Some("wrapped"));
    // A shebang script shows up as interpreter + script.
    assert_eq!(
        c.match_exec(Some("/usr/bin/python3.11"), &argv(&["/usr/bin/python3", "/venv/bin/mcp-server-time"])).map(|s| s.name.as_str()),
        Some("time")
    );
    assert!(c.commands().contains(&"npx".to_string()) && c.commands().contains(&"ci-mcp".to_string()));

    // A new server in an existing file is picked up.
    let alice = t.path().join("home/alice");
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&alice.join(".cursor/mcp.json"), r#"{"mcpServers":{"new":{"command":"deno","args":["run","srv.ts"]}}}"#);
    assert!(c.refresh());
    assert!(c.match_exec(None, &argv(&["deno", "run", "-A", "srv.ts"])).is_some());
}

#[test]
fn jsonc_comments_and_trailing_commas() {
    let v: Value = serde_json::from_str(&strip_jsonc("{\"a\": \"x//y\", // c\n \"b\": [1,2,],}")).unwrap();
    assert_eq!(v["a"], "x//y");
    assert_eq!(v["b"][1], 2);
}
