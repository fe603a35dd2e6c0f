//! One server entry, whatever client wrote it. The clients agree on the idea (a command line, an
//! environment, maybe a working directory, or a URL) and differ in the spelling:
//! - command: `command` + `args` (most), `cmd` + `args` (Goose), `command: [cmd, args…]`
//!   (opencode), `command: {path, args, env}` (Zed before its flat form);
//! - environment: `env`, `envs` (Goose), `environment` (opencode);
//! - remote: `url`, `httpUrl` (Gemini CLI, streamable HTTP), `serverUrl` (Windsurf), `uri`
//!   (Goose); the transport from `type` when it says (`http`, `streamable-http`, `sse`, …).
use std::{collections::BTreeMap, path::PathBuf};

use serde_json::Value;

/// How a configured server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// A local process speaking JSON-RPC on its stdio.
    Stdio { command: String, args: Vec<String>, env: BTreeMap<String, String>, cwd: Option<PathBuf> },
    /// A remote server; `transport` is `http` (streamable HTTP) or `sse`.
    Url { url: String, transport: &'static str },
}

/// A named entry as found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub launch: Launch,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn env_of(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(m) = v.and_then(Value::as_object) else { return BTreeMap::new() };
    m.iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect()
}

fn transport_of(v: &Value, url_key: &str, url_means: &'static str) -> &'static str {
    match v.get("type").or_else(|| v.get("transport")).and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("sse") => "sse",
        Some(_) => "http",
        // Without a type, a plain `url` is what the client says it is (Gemini CLI: SSE).
        None if url_key == "url" => url_means,
        None => "http",
    }
}

/// The launch an entry describes; None for entries that start nothing (Goose `builtin`
/// extensions, Zed extension-provided servers that only carry `settings`). `url_means`: the
/// transport of an untyped `url` in this client's format.
pub fn launch_of(v: &Value, url_means: &'static str) -> Option<Launch> {
    let mut env = BTreeMap::new();
    let (command, args) = match v.get("command").or_else(|| v.get("cmd")) {
        Some(Value::String(c)) => (c.clone(), strings(v.get("args"))),
        Some(Value::Array(a)) => {
            let mut it = a.iter().filter_map(Value::as_str).map(str::to_string);
            (it.next()?, it.collect())
        }
        Some(Value::Object(o)) => {
            env = env_of(o.get("env"));
            (o.get("path")?.as_str()?.to_string(), strings(o.get("args")))
        }
        _ => {
            let (key, url) = ["httpUrl", "url", "serverUrl", "uri"].iter().find_map(|k| Some((*k, v.get(*k)?.as_str()?)))?;
            return Some(Launch::Url { url: url.to_string(), transport: transport_of(v, key, url_means) });
        }
    };
    if command.is_empty() {
        return None;
    }
    for k in ["env", "envs", "environment"] {
        env.extend(env_of(v.get(k)));
    }
    let cwd = v.get("cwd").and_then(Value::as_str).filter(|s| !s.is_empty()).map(PathBuf::from);
    Some(Launch::Stdio { command, args, env, cwd })
}

/// Entries under `path` (a key path; `*` is every value of an object, as in Claude Code's
/// `projects.*.mcpServers`) in `v`: a map of name → entry, or a list of entries each carrying a
/// `name` (Continue's YAML, Goose's older list form).
pub fn entries_at(v: &Value, path: &[&str], url_means: &'static str) -> Vec<Entry> {
    match path.split_first() {
        Some((&"*", rest)) => v.as_object().into_iter().flat_map(|m| m.values()).flat_map(|v| entries_at(v, rest, url_means)).collect(),
        Some((k, rest)) => v.get(*k).map(|v| entries_at(v, rest, url_means)).unwrap_or_default(),
        None => entries_in(v, url_means),
    }
}

fn entries_in(node: &Value, url_means: &'static str) -> Vec<Entry> {
    let named: Vec<(String, &Value)> = match node {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, e)| {
                // A list entry without a name (Continue's config.json) is named by its command.
                let name = e.get("name").and_then(Value::as_str).map(str::to_string);
                let base = || launch_of(e.get("transport").unwrap_or(e), url_means).and_then(|l| match l {
                    Launch::Stdio { command, .. } => command.rsplit('/').next().map(str::to_string),
                    Launch::Url { .. } => None,
                });
                (name.or_else(base).unwrap_or_else(|| format!("server-{i}")), e)
            })
            .collect(),
        _ => vec![],
    };
    named
        .into_iter()
        // Continue's config.json nests the launch under `transport`.
        .filter_map(|(name, e)| Some(Entry { launch: launch_of(e, url_means).or_else(|| launch_of(e.get("transport")?, url_means))?, name }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stdio(e: &Entry) -> (&str, &[String]) {
        match &e.launch {
            Launch::Stdio { command, args, .. } => (command, args),
            Launch::Url { .. } => panic!("{e:?}"),
        }
    }

    #[test]
    fn every_spelling_of_a_command() {
        let v = json!({"s": {
            "plain": {"command": "npx", "args": ["-y", "a"], "env": {"K": "v", "N": 3}, "cwd": "/w"},
            "goose": {"type": "stdio", "cmd": "uvx", "args": ["b"], "envs": {"T": "x"}},
            "opencode": {"type": "local", "command": ["bun", "x", "c"], "environment": {"E": "1"}},
            "zed-old": {"command": {"path": "/bin/d", "args": ["--stdio"], "env": {"Z": "z"}}, "settings": {}},
            "zed-ext": {"settings": {"x": 1}},
            "builtin": {"type": "builtin", "name": "developer"},
        }});
        let mut es = entries_at(&v, &["s"], "http");
        es.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = es.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["goose", "opencode", "plain", "zed-old"]);
        assert_eq!(stdio(&es[1]), ("bun", &["x".to_string(), "c".to_string()][..]));
        let Launch::Stdio { env, cwd, .. } = &es[2].launch else { panic!() };
        assert_eq!((env.get("N").map(String::as_str), cwd.as_deref()), (Some("3"), Some(std::path::Path::new("/w"))));
        let Launch::Stdio { env, .. } = &es[3].launch else { panic!() };
        assert_eq!(env.get("Z").map(String::as_str), Some("z"));
    }

    #[test]
    fn remote_entries_keep_url_and_transport() {
        let v = json!({"m": {
            "a": {"type": "http", "url": "https://a/mcp"},
            "b": {"type": "sse", "url": "https://b/sse"},
            "c": {"httpUrl": "https://c/mcp"},
            "d": {"serverUrl": "https://d/mcp"},
            "e": {"type": "remote", "url": "https://e/mcp"},
            "f": {"url": "https://f/sse"},
        }});
        let got: Vec<(String, Launch)> = entries_at(&v, &["m"], "sse").into_iter().map(|e| (e.name, e.launch)).collect();
        let url = |u: &str, t| Launch::Url { url: u.into(), transport: t };
        assert_eq!(got[0].1, url("https://a/mcp", "http"));
        assert_eq!(got[1].1, url("https://b/sse", "sse"));
        assert_eq!(got[2].1, url("https://c/mcp", "http"));
        assert_eq!(got[3].1, url("https://d/mcp", "http"));
        assert_eq!(got[4].1, url("https://e/mcp", "http"));
        assert_eq!(got[5].1, url("https://f/sse", "sse"));
    }

    #[test]
    fn lists_of_entries_are_named_by_name_or_command() {
        let v = json!({"l": [{"name": "n", "command": "x"}, {"transport": {"type": "stdio", "command": "/opt/srv", "args": []}}]});
        let names: Vec<String> = entries_at(&v, &["l"], "http").into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["n", "srv"]);
        let v = json!({"projects": {"/a": {"mcpServers": {"p": {"command": "x"}}}, "/b": {}}});
        assert_eq!(entries_at(&v, &["projects", "*", "mcpServers"], "http")[0].name, "p");
    }
}
