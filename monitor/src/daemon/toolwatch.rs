//! Tool-set checks on every `tools/list` reply: pinning (rug pulls), poisoning, name collisions.
use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::Pipeline;
use crate::{
    output::{
        alert::{ActionRecord, RuleRef, ServerRef},
        Alert,
    },
    rules::Severity,
    toolcheck::{
        collide::collisions,
        pin::{version_change, Announced, PinKey, PinOutcome, PinStore},
        poison, tools_from_list_result, Tool,
    },
    tracker::{Discovery, ServerInfo},
};

pub mod results;

/// Tool sets seen per server, and what was already reported.
#[derive(Default)]
pub struct ToolWatch {
    /// Results of calls: scanner, injected client sessions, scan cost.
    pub results: results::ResultWatch,
    pub pins: Option<PinStore>,
    poison: poison::Scanner,
    pub tools: HashMap<u32, Vec<Tool>>,
    reported_collisions: BTreeSet<(String, Vec<String>)>,
    pub alerts: HashMap<u32, u64>,
}

impl Pipeline {
    /// Checks the tool list a server announced (`detail`: the reply's `tools`).
    pub(super) async fn check_tools(&mut self, id: u32, detail: Value) {
        let tools = tools_from_list_result(&json!({ "tools": detail }));
        let server = self.tracker.server(id).map(|s| s.name.to_string()).unwrap_or_default();
        let info = self.corr.session(id).and_then(|s| s.server_info.clone()).unwrap_or(Value::Null);
        let announced = Announced::from_server_info(&info);
        let key = self.tracker.server(id).and_then(pin_key);
        let mut alerts = vec![];
        if let (Some(pins), Some(key)) = (self.tools_watch.pins.as_mut(), key) {
            match pins.check(&key, &announced, &tools) {
                Ok(PinOutcome::Changed { diff: d, .. }) if self.set_change_silenced(&server, &d) => {
                    tracing::info!(%server, diff = %d.summary(), "tools changed since they were pinned; silenced by a site exception");
                }
                Ok(PinOutcome::Changed { diff: d, pinned }) => {
                    let version = version_change(&pinned, &announced).map(|v| format!(", announced version {v}")).unwrap_or_default();
                    let summary = format!("tools of {server} changed since they were pinned (rug pull?){version}: {}", d.summary());
                    let a = alert(rule("mcp.tool_set_changed", Severity::High, "The tool set a server offers changed since it was pinned (rug pull).", &["T1195.002"]), summary);
                    alerts.push(a.with("diff", &d).with("pin", key.to_string()).with("server_version", json!({"pinned": pinned.version, "now": announced.version})))
                }
                Ok(PinOutcome::FirstSeen) => tracing::info!(tools = tools.len(), pin = %key, "tool set pinned"),
                Ok(PinOutcome::Unchanged) => {}
                Err(e) => tracing::error!(error = %e, "tool pinning"),
            }
        }
        let others: Vec<(String, String)> = self
            .tools_watch
            .tools
            .iter()
            .filter(|(sid, _)| **sid != id)
            .flat_map(|(sid, ts)| {
                let n = self.tracker.server(*sid).map(|s| s.name.to_string()).unwrap_or_default();
                ts.iter().map(move |t| (n.clone(), t.name.clone()))
            })
            .collect();
        let own: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
        for t in &tools {
            for f in self.tools_watch.poison.scan(t, &own, &others) {
                let kind = serde_json::to_value(f.kind).unwrap_or_default();
                if self.silenced("mcp.tool_poisoning", &server, Some(&t.name), kind.as_str()) {
                    tracing::info!(tool = %t.name, %server, finding = %f.detail, "tool finding silenced by a site exception");
                    continue;
                }
                let r = rule("mcp.tool_poisoning", Severity::High, "A tool description carries instructions or content aimed at the model (tool poisoning, shadowing).", &["T1027", "T1204"]);
                alerts.push(alert(r, format!("tool {:?} of {server}: {}", t.name, f.detail)).with("tool", &t.name).with("finding", &f));
            }
        }
        self.tools_watch.tools.insert(id, tools);
        let sets: Vec<(String, Vec<Tool>)> = self
            .tools_watch
            .tools
            .iter()
            .map(|(sid, ts)| (self.tracker.server(*sid).map(|s| s.name.to_string()).unwrap_or_default(), ts.clone()))
            .collect();
        for c in collisions(&sets).into_iter().filter(|c| c.servers.contains(&server)) {
            // Accepted only when every server offering the name is excepted: a new server that
            // joins an accepted pair is still reported.
            if c.servers.iter().all(|s| self.silenced("mcp.tool_name_collision", s, Some(&c.tool), None)) {
                continue;
            }
            if self.tools_watch.reported_collisions.insert((c.tool.clone(), c.servers.clone())) {
                let r = rule("mcp.tool_name_collision", Severity::Medium, "Several servers offer a tool of the same name (shadowing).", &["T1036"]);
                alerts.push(alert(r, format!("tool {:?} is offered by {}", c.tool, c.servers.join(", "))).with("collision", &c));
            }
        }
        for mut a in alerts {
            *self.tools_watch.alerts.entry(id).or_default() += 1;
            a.server_id = Some(id);
            a.server = Some(ServerRef::named(id, &server));
            tracing::warn!(rule = %a.rule.id, summary = %a.summary, "alert");
            self.out.alert(a).await;
        }
    }
}

impl Pipeline {
    /// Whether a site exception (`exceptions:` in a rules file) silences a tool-check alert for
    /// this server, tool and finding.
    fn silenced(&self, rule: &str, server: &str, tool: Option<&str>, finding: Option<&str>) -> bool {
        let Some(p) = self.policy.as_ref() else { return false };
        p.rules.silenced(rule, &crate::toolcheck::alert_ctx(server, tool, finding))
    }

    /// A changed tool set is silenced by an exception for the whole server, or when every
    /// tool that was added, removed or changed is excepted by name.
    fn set_change_silenced(&self, server: &str, d: &crate::toolcheck::pin::ToolSetDiff) -> bool {
        const R: &str = "mcp.tool_set_changed";
        let names: Vec<&str> = d.added.iter().chain(&d.removed).map(String::as_str).chain(d.changed.iter().map(|c| c.name.as_str())).collect();
        self.silenced(R, server, None, None) || (!names.is_empty() && names.iter().all(|n| self.silenced(R, server, Some(n), None)))
    }
}

/// Whose pin a server's tool set is checked against: what the operator configured, never what
/// the server announces. The name is the one given in the client config or to `mcpmon exec
/// --name`; the program comes from the command line the daemon recorded when it took the server
/// under watch: `mcpmon exec`'s own (read before the server's code ran), or the one that matched
/// the client config.
///
/// Two exceptions, both because the process itself chose the value: a sniffed server's name
/// carries its announced name (discovery appends it), so only its program counts; a process
/// taken with `--track-pid` was already running and may have rewritten its command line, so
/// only its name counts.
fn pin_key(s: &ServerInfo) -> Option<PinKey> {
    let (name, argv) = match s.how {
        Discovery::Exec => (Some(&*s.name), exec_command(&s.command)),
        Discovery::Config | Discovery::Procfs | Discovery::Url => (Some(&*s.name), Some(s.command.clone())),
        Discovery::Sniffed | Discovery::Handshake => (None, Some(s.command.clone())),
        Discovery::TrackPid => (Some(&*s.name), None),
    };
    PinKey::new(name, argv.as_deref().and_then(program).as_deref())
}

/// The server command of an `mcpmon exec` command line (the process is tracked before it execs
/// the server, so that is the command line the daemon saw), read with the real parser.
fn exec_command(argv: &[String]) -> Option<Vec<String>> {
    use clap::Parser;
    match crate::cli::Cli::try_parse_from(argv).ok()?.command {
        crate::cli::Command::Exec(a) => Some(a.command),
        _ => None,
    }
}

/// The program a command runs, stable across runs and upgrades: the script or package given to
/// an interpreter or runner (`python -u /opt/weather.py` → `weather.py`, `npx -y
/// @scope/server-x@1.2` → `server-x`), else the executable's file name. Version suffixes are
/// cut off, so that an upgrade is compared with the pin instead of starting a new one;
/// directories too, as runners put packages in per-version cache paths.
fn program(argv: &[String]) -> Option<String> {
    use crate::discovery::clients::runners::{interpreted_script, script_program};
    let runs_another = |s: &str| s.starts_with("python") || matches!(s, "node" | "deno" | "bun" | "uv" | "uvx" | "npx");
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let first = base(argv.first()?);
    let operand = |argv: &[String]| match first.as_str() {
        // A runner's operand is a package, taken whole (`@scope/x@1.2` is cut below).
        "npx" | "uvx" => argv[1..].iter().find(|a| !a.starts_with('-')).map(|a| base(a)),
        _ => interpreted_script(argv).map(script_program),
    };
    let name = if runs_another(&first) { operand(argv).unwrap_or(first) } else { first };
    let unversioned = name.split("==").next().unwrap_or(&name);
    let unversioned = match unversioned.char_indices().skip(1).find(|(_, c)| *c == '@') {
        Some((i, _)) => &unversioned[..i],
        None => unversioned,
    };
    Some(unversioned.to_string()).filter(|p| !p.is_empty())
}

/// The `rule` of a built-in tool-check alert (same shape as YAML rules' alerts).
fn rule(id: &str, severity: Severity, description: &str, mitre: &[&str]) -> RuleRef {
    RuleRef::builtin(id, severity, description, &["mcp"], mitre)
}

/// A tool-check alert: it reports, never acts.
fn alert(rule: RuleRef, summary: String) -> Alert {
    Alert::new(rule, ActionRecord::alerted(), summary, Pipeline::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn server(name: &str, how: Discovery, command: &str) -> ServerInfo {
        ServerInfo {
            id: 1,
            name: name.into(),
            root_pid: 10,
            how,
            uid: 1000,
            since: std::time::SystemTime::now(),
            stdio_inodes: vec![],
            client: None,
            config: None,
            sniffing: false,
            command: argv(command),
            containers: vec![],
        }
    }

    #[test]
    fn programs_are_named_without_interpreters_paths_or_versions() {
        let p = |s: &str| program(&argv(s));
        assert_eq!(p("/usr/bin/python3 -u /opt/srv/weather.py --verbose").as_deref(), Some("weather.py"));
        assert_eq!(p("npx -y @modelcontextprotocol/server-filesystem@2025.1.14 /home/u").as_deref(), Some("server-filesystem"));
        assert_eq!(p("uvx mcp-server-fetch==1.0").as_deref(), Some("mcp-server-fetch"));
        assert_eq!(p("/opt/venv/bin/mcp-server-time --local-timezone UTC").as_deref(), Some("mcp-server-time"));
        assert_eq!(p("node").as_deref(), Some("node"));
        // Two packages' entry points are two programs, not one `index.js` (runners.rs).
        let entry = |pkg: &str| format!("node /home/u/.npm/lib/node_modules/@modelcontextprotocol/{pkg}/dist/index.js");
        assert_eq!(p(&entry("server-filesystem")).as_deref(), Some("server-filesystem"));
        assert_eq!(p(&entry("server-memory")).as_deref(), Some("server-memory"));
        assert_eq!(p("node /home/u/weather/build/index.js").as_deref(), Some("weather"));
        // `uv run` and `deno run` servers are their scripts, not one program `run`.
        assert_eq!(p("uv --directory /home/u/weather run weather.py").as_deref(), Some("weather.py"));
        assert_eq!(p("uv run --with mcp /home/u/notes/server.py").as_deref(), Some("notes"));
        assert_eq!(p("deno run -A /srv/tasks/main.ts").as_deref(), Some("tasks"));
        assert_eq!(program(&[]), None);
    }

    #[test]
    fn pins_follow_the_configured_name_and_program_never_the_announced_one() {
        let exec = |args: &str| server("shifty", Discovery::Exec, &format!("/usr/bin/mcpmon exec --name shifty --require-monitor --socket /run/s -- {args}"));
        let k = pin_key(&exec("python3 /opt/shifty_server.py clean")).unwrap();
        assert_eq!(k.to_string(), "shifty [shifty_server.py]");
        assert_eq!(pin_key(&exec("python3 /opt/shifty_server.py poisoned")), Some(k.clone()), "arguments are not identity");
        // Without `--` too, as clap takes it.
        let bare = server("shifty", Discovery::Exec, "mcpmon exec --name shifty python3 /opt/shifty_server.py");
        assert_eq!(pin_key(&bare), Some(k));
        assert_eq!(pin_key(&server("fs", Discovery::Config, "npx -y @scope/fs@1.2 /srv")).unwrap().to_string(), "fs [fs]");
        // Discovery renames a sniffed server after its announced name: that part never counts.
        let a = pin_key(&server("evil-1.0 (weather.py)", Discovery::Sniffed, "python3 weather.py")).unwrap();
        let b = pin_key(&server("evil-2.0 (weather.py)", Discovery::Sniffed, "python3 weather.py")).unwrap();
        assert_eq!((a.to_string(), a), ("[weather.py]".to_string(), b));
        assert_eq!(pin_key(&server("calc", Discovery::TrackPid, "sh -c anything")).unwrap().to_string(), "calc");
    }
}
