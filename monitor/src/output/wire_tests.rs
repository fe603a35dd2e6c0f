//! The JSON on the wire did not change when the stages moved from building JSON to typed
//! records: each record is compared byte for byte with the line the old builders (`json!`
//! literals, kept here as the reference) produced, and the alert is checked against every field
//! docs/alerts.md documents.
use serde_json::{json, Value};

use super::*;
use crate::{
    events::{Accesses, Body, Header, Inode, KernelAction, Open, SysResult},
    output::alert::{ActionRecord, ActionResult, ActionType, ProcessRef, RuleRef, ServerRef, Where},
    rules::Severity,
};

fn open_event() -> Event {
    Event {
        header: Header { ts_mono_ns: 5, pid: 4242, tid: 4243, ppid: 4000, uid: 1000, server_id: 3, truncated: vec![], kernel_action: Some(KernelAction::Killed), compat_syscall: false, gated: true },
        body: Body::Open(Open {
            syscall: "openat",
            path: "/home/u/.ssh/id_ed25519".into(),
            dirfd: -100,
            flags: 0,
            access: Accesses::of(0),
            mode: 0,
            resolve: 0,
            inode: Some(Inode { dev: 2049, ino: 77 }),
            policy: 0x1_0003,
            result: SysResult::from_ret(-1),
            fold_sig: 0,
        }),
    }
}

fn attribution() -> Attribution {
    Attribution::Call { tool: "read_file".into(), id: "2".into(), arguments: json!({"path": "/srv/notes"}) }
}

fn event_line() -> EventLine {
    EventLine {
        event: open_event(),
        time: "2026-12-01T07:00:00.000001Z".into(),
        server: Some("fs".into()),
        exe: Some("/usr/bin/node".into()),
        container: None,
        mcp: attribution(),
        resolved_path: Some("/home/u/.ssh/id_ed25519".into()),
        folded: None,
    }
}

/// The event line as the pipeline built it: the event serialized, then time, server, exe, mcp
/// and resolved_path set on the object.
fn old_event_line() -> Value {
    let mut v = serde_json::to_value(open_event()).unwrap();
    v["time"] = "2026-12-01T07:00:00.000001Z".into();
    v["server"] = "fs".into();
    v["exe"] = "/usr/bin/node".into();
    v["mcp"] = serde_json::to_value(attribution()).unwrap();
    v["resolved_path"] = "/home/u/.ssh/id_ed25519".into();
    v
}

/// The keys of a JSON object as written, repeats included (`Value` would keep the last).
fn top_keys(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                out.push(k);
            }
            Ok(out)
        }
    }
    serde::Deserializer::deserialize_map(&mut serde_json::Deserializer::from_str(line), Keys).unwrap()
}

/// An event line is rendered straight from its fields, so its keys come in declared order, not
/// sorted: the same keys and values as before, each once.
#[test]
fn an_event_line_carries_what_it_did() {
    let line = Record::Event(Box::new(event_line())).line();
    let mut keys = top_keys(&line);
    let top = old_event_line();
    keys.sort();
    assert_eq!(keys, top.as_object().unwrap().keys().cloned().collect::<Vec<_>>(), "each key once: {line}");
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), top);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((v["kind"].as_str(), v["kernel_action"].as_str(), v["access"][0].as_str()), (Some("open"), Some("killed"), Some("read")));
}

fn rule_alert() -> Alert {
    let rule = RuleRef { id: "ssh-private-key-read".into(), severity: Severity::Critical, description: "d".into(), tags: vec!["credential_access".into(), "T1552.004".into()], mitre: vec!["T1552.004".into()] };
    let action = ActionRecord { at: Some(Where::OpenGate), bytes_read: Some(0), ..ActionRecord::new(ActionType::Kill, ActionResult::KilledInKernel).dry_run(false) };
    let mut a = Alert::new(rule, action, "fs read a key".into(), "2026-12-01T07:00:00.000001Z".into());
    a.host = Some("h".into());
    a.process = Some(ProcessRef { pid: 4242, ppid: Some(Some(4000)), uid: 1000, exe: Some(Some("/usr/bin/node".into())), argv: Some(vec!["node".into(), "srv.js".into()]), ancestry: Some(vec![4242, 4000]) });
    a.server = Some(ServerRef { id: 3, name: Some("fs".into()), how: Some(crate::tracker::Discovery::Config), client: Some(None), root_pid: Some(Some(4000)) });
    a.mcp = serde_json::to_value(attribution()).ok();
    a.file = Some(Some("/home/u/.ssh/id_ed25519".into()));
    a.event = serde_json::to_value(event_line()).ok();
    a
}

/// The alert as `policy::alert_record` built it (plus time and host set by the pipeline).
fn old_rule_alert() -> Value {
    json!({
        "kind": "alert",
        "schema": 1,
        "rule": {"id": "ssh-private-key-read", "severity": "critical", "description": "d", "tags": ["credential_access", "T1552.004"], "mitre": ["T1552.004"]},
        "action": {"type": "kill", "result": "killed_in_kernel", "where": "open_gate", "bytes_read": 0, "dry_run": false},
        "summary": "fs read a key",
        "process": {"pid": 4242, "ppid": 4000, "uid": 1000, "exe": "/usr/bin/node", "argv": ["node", "srv.js"], "ancestry": [4242, 4000]},
        "server": {"id": 3, "name": "fs", "how": "config", "client": null, "root_pid": 4000},
        "mcp": serde_json::to_value(attribution()).unwrap(),
        "file": "/home/u/.ssh/id_ed25519",
        "event": old_event_line(),
        "time": "2026-12-01T07:00:00.000001Z",
        "host": "h",
    })
}

#[test]
fn a_rule_alert_is_byte_for_byte_what_it_was() {
    assert_eq!(Record::Alert(Box::new(rule_alert())).line(), old_rule_alert().to_string());
}

#[test]
fn an_alert_carries_every_field_docs_alerts_md_documents() {
    let doc = include_str!("../../../docs/alerts.md");
    let table = doc.split("## Alert records").nth(1).unwrap().split("\n\n").find(|p| p.starts_with("| field")).unwrap();
    let v = serde_json::to_value(Record::Alert(Box::new(rule_alert()))).unwrap();
    let mut checked = 0;
    for row in table.lines().skip(2) {
        let cell = row.split('|').nth(1).unwrap_or_default();
        for field in cell.split(',').map(|f| f.trim().trim_matches('`')) {
            // Present with one action result or one attribution state only.
            if ["action.latency_us", "mcp.candidates"].contains(&field) {
                continue;
            }
            let known = field.split('.').try_fold(&v, |at, p| at.get(p)).is_some();
            assert!(known, "{field} documented but missing from {v}");
            checked += 1;
        }
    }
    assert!(checked >= 25, "read {checked} documented fields");
}

#[test]
fn records_of_the_other_stages_are_byte_for_byte_what_they_were() {
    let call = crate::jsonrpc::session::ToolCall { id: "2".into(), tool: "read_file".into(), arguments: json!({"path": "/srv"}), arguments_truncated: false, start_mono_ns: 1, http_session: None };
    let finished = crate::jsonrpc::session::FinishedCall { call: call.clone(), end_mono_ns: 3, duration_ms: 0.002, outcome: "ok", events: 4, result: None };
    let stamp = |body| Record::Mcp(Box::new(McpRecord { time: "t".into(), server_id: 3, server: Some("fs".into()), body })).line();
    // The correlation stage's builders: the call serialized, then kind and server_id; time and
    // server added by `decorate`.
    let mut old = serde_json::to_value(&finished).unwrap();
    (old["kind"], old["server_id"], old["time"], old["server"]) = ("tool_call".into(), 3.into(), "t".into(), "fs".into());
    assert_eq!(stamp(Mcp::ToolCall(finished)), old.to_string());
    let mut old = serde_json::to_value(&call).unwrap();
    (old["kind"], old["server_id"], old["time"], old["server"]) = ("tool_call_start".into(), 3.into(), "t".into(), "fs".into());
    assert_eq!(stamp(Mcp::ToolCallStart(call)), old.to_string());
    let tools = Mcp::McpTools { tools: vec![json!("a")], detail: json!([{"name": "a", "description": "x"}]) };
    assert_eq!(stamp(tools), json!({"kind": "mcp_tools", "server_id": 3, "tools": ["a"], "time": "t", "server": "fs"}).to_string());
    let invalid = Mcp::McpInvalid { direction: crate::events::Direction::In, transport: Some("http"), reason: "r".into(), bytes: 9 };
    assert_eq!(stamp(invalid), json!({"kind": "mcp_invalid", "server_id": 3, "direction": "in", "transport": "http", "reason": "r", "bytes": 9, "time": "t", "server": "fs"}).to_string());
    let gone = Record::ServerGone { time: "t".into(), server_id: 3, server: "fs".into(), exit_event_lost: false };
    assert_eq!(gone.line(), json!({"time": "t", "kind": "server_gone", "server_id": 3, "server": "fs"}).to_string());
    let lost = Record::Lost { time: "t".into(), by_reason: [("ringbuf_full", LostCount { total: 5, new: 2 })].into_iter().collect() };
    assert_eq!(lost.line(), json!({"time": "t", "kind": "lost", "ringbuf_full": {"total": 5, "new": 2}}).to_string());
}
