//! `--alert-format ocsf`: alert-like records (`alert`, `incident`, `alert_suppressed`) as OCSF
//! Detection Findings (class 2004, category Findings), schema 1.6.0. A pure function of the
//! native record: the native schema (docs/alerts.md) stays the source of truth, and this is one
//! view of it, so nothing is lost — what OCSF has no attribute for goes to `unmapped.mcpmon`.
//! docs/alerts.md, "OCSF", is the field-by-field table; monitor/tests/ocsf.rs validates real
//! output against the vendored schema.
use serde_json::{json, Map, Value};

/// The OCSF schema version the records follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.6.0";
pub const CLASS_UID: u64 = 2004;
pub const CATEGORY_UID: u64 = 2;

/// Finding activities (`activity_id`).
const CREATE: u64 = 1;
const UPDATE: u64 = 2;
const CLOSE: u64 = 3;

/// The OCSF form of `v`, or None when `v` is not alert-like (events and tool calls stay native).
pub fn to_ocsf(v: &Value) -> Option<Value> {
    match v["kind"].as_str()? {
        "alert" => Some(alert(v)),
        "incident" => Some(incident(v)),
        "alert_suppressed" => Some(suppressed(v)),
        _ => None,
    }
}

/// mcpmon severities onto `severity_id` (1 Informational … 5 Critical; 0 Unknown when absent).
pub fn severity_id(s: &Value) -> (u64, &'static str) {
    match s.as_str() {
        Some("info") => (1, "Informational"),
        Some("low") => (2, "Low"),
        Some("medium") => (3, "Medium"),
        Some("high") => (4, "High"),
        Some("critical") => (5, "Critical"),
        _ => (0, "Unknown"),
    }
}

/// `action.result` onto the security-control profile's `action_id` (what happened to the
/// activity) and `disposition_id` (what the control did). Kills count as blocks: the kernel
/// kills before the syscall's result reaches user code.
pub fn action_ids(result: &str) -> ((u64, &'static str), (u64, &'static str)) {
    const ALLOWED: (u64, &str) = (1, "Allowed");
    const DENIED: (u64, &str) = (2, "Denied");
    const OBSERVED: (u64, &str) = (3, "Observed");
    match result {
        "denied_in_kernel" | "killed_in_kernel" | "denied_and_killed_in_kernel" | "killed" => (DENIED, (2, "Blocked")),
        "failed" => (ALLOWED, (27, "Error")),
        // The rule asked for enforcement that did not happen (a protected pid, already gone,
        // the kernel did not refuse): the activity went through.
        "refused" | "gone" | "not_denied" => (ALLOWED, (16, "No Action")),
        // `alerted`, and dry runs (`would_kill`, `would_deny`): seen and reported, nothing done.
        _ => (OBSERVED, (15, "Detected")),
    }
}

/// RFC 3339 UTC (`2026-12-01T06:05:21.123456Z`, what mcpmon writes) → milliseconds since the
/// epoch (OCSF `timestamp_t`).
pub fn epoch_ms(t: &str) -> Option<i64> {
    crate::output::parse_rfc3339_us(t).map(|us| (us / 1000) as i64)
}

/// The header every record shares: class, category, activity, type, time, metadata, device.
fn header(activity: (u64, &str), sev: (u64, &str), time: &Value, host: &Value, correlation: Option<String>) -> Map<String, Value> {
    let mut profiles = vec!["security_control"];
    let Value::Object(mut m) = json!({
        "class_uid": CLASS_UID, "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID, "category_name": "Findings",
        "activity_id": activity.0, "activity_name": activity.1,
        "type_uid": CLASS_UID * 100 + activity.0, "type_name": format!("Detection Finding: {}", activity.1),
        "severity_id": sev.0, "severity": sev.1,
        // Missing or odd times cannot happen in mcpmon's own records; 0 keeps the record valid.
        "time": time.as_str().and_then(epoch_ms).unwrap_or(0),
        "is_alert": true,
    }) else {
        unreachable!("an object literal")
    };
    let mut meta = json!({
        "version": OCSF_VERSION,
        "product": {"name": "mcpmon", "vendor_name": "mcpmon", "version": env!("CARGO_PKG_VERSION")},
        "log_name": "alerts",
    });
    if let Some(c) = correlation {
        meta["correlation_uid"] = c.into();
    }
    if let Some(h) = host.as_str().filter(|h| !h.is_empty()) {
        // OCSF requires a device type; what kind of machine this is, mcpmon cannot tell.
        m.insert("device".into(), json!({"hostname": h, "type_id": 0, "type": "Unknown"}));
        profiles.push("host");
    }
    meta["profiles"] = json!(profiles);
    m.insert("metadata".into(), meta);
    m
}

/// MITRE ids (`T1552`, `T1552.004`) as OCSF attacks: a sub-technique names its technique too.
fn attacks(mitre: &Value) -> Vec<Value> {
    let ids = mitre.as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>()).unwrap_or_default();
    ids.iter()
        .map(|id| match id.split_once('.') {
            Some((tech, _)) => json!({"technique": {"uid": tech}, "sub_technique": {"uid": id}}),
            None => json!({"technique": {"uid": id}}),
        })
        .collect()
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// A file object (OCSF requires `name` and `type_id`; the kind of file is not known here).
fn file(path: &str) -> Value {
    json!({"name": basename(path), "path": path, "type_id": 0})
}

/// The process evidence: pid, command line, image, user, parent and ancestry.
fn process(p: &Value) -> Option<Value> {
    let pid = p["pid"].as_i64()?;
    let mut o = json!({"pid": pid});
    if let Some(exe) = p["exe"].as_str() {
        o["file"] = file(exe);
        o["name"] = basename(exe).into();
    }
    if let Some(argv) = p["argv"].as_array().filter(|a| !a.is_empty()) {
        o["cmd_line"] = argv.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ").into();
    }
    if let Some(uid) = p["uid"].as_u64() {
        o["user"] = json!({"uid": uid.to_string()});
    }
    if let Some(ppid) = p["ppid"].as_i64() {
        o["parent_process"] = json!({"pid": ppid});
    }
    if let Some(a) = p["ancestry"].as_array().filter(|a| !a.is_empty()) {
        o["ancestry"] = a.iter().map(|pid| json!({"pid": pid})).collect();
    }
    Some(o)
}

/// Keys of an alert that have an OCSF home (or go to `unmapped`); the rest is evidence data.
const MAPPED: &[&str] = &["kind", "schema", "time", "host", "rule", "action", "summary", "process", "file", "event", "server", "mcp", "incident", "chain"];

fn alert(a: &Value) -> Value {
    let rule = &a["rule"];
    let rule_id = rule["id"].as_str().unwrap_or("unknown");
    let incident = a["incident"]["id"].as_str().map(str::to_string);
    let mut m = header((CREATE, "Create"), severity_id(&rule["severity"]), &a["time"], &a["host"], incident.clone());
    let result = a["action"]["result"].as_str().unwrap_or("alerted");
    let ((action_id, action), (disp_id, disp)) = action_ids(result);
    let uid = match (&incident, a["incident"]["seq"].as_u64()) {
        (Some(id), Some(seq)) => format!("mcpmon-incident-{id}-{seq}"),
        _ => format!("mcpmon-{rule_id}-{}-{}", a["time"].as_str().unwrap_or(""), a["process"]["pid"].as_i64().unwrap_or(0)),
    };
    let attacks = attacks(&rule["mitre"]);
    let mut info = json!({
        "uid": uid,
        "title": rule_id,
        "analytic": {"uid": rule_id, "name": rule_id, "type_id": 1, "type": "Rule"},
    });
    if let Some(d) = rule["description"].as_str() {
        info["desc"] = d.into();
    }
    if let Some(t) = rule["tags"].as_array().filter(|t| !t.is_empty()) {
        info["tags"] = t.iter().filter_map(Value::as_str).map(|t| json!({"name": "tag", "value": t})).collect();
    }
    if !attacks.is_empty() {
        info["attacks"] = json!(attacks);
        // The detection class asks security controls to carry attacks at the top as well.
        m.insert("attacks".into(), json!(attacks));
    }
    m.insert("finding_info".into(), info);
    m.insert("message".into(), a["summary"].clone());
    m.insert("action_id".into(), action_id.into());
    m.insert("action".into(), action.into());
    m.insert("disposition_id".into(), disp_id.into());
    m.insert("disposition".into(), disp.into());
    m.insert("evidences".into(), json!([evidence(a)]));
    m.insert("unmapped".into(), unmapped(a));
    Value::Object(m)
}

/// The evidence of one alert: process, file, destination, and the triggering event (or tool
/// finding, lost-event window…) as data.
fn evidence(a: &Value) -> Value {
    let mut e = Map::new();
    if let Some(p) = process(&a["process"]) {
        e.insert("process".into(), p);
    }
    let ev = &a["event"];
    if let Some(path) = a["file"].as_str() {
        e.insert("file".into(), file(path));
    }
    if let Some(ip) = ev["addr"].as_str() {
        let mut d = json!({"ip": ip});
        if let Some(port) = ev["port"].as_u64() {
            d["port"] = port.into();
        }
        e.insert("dst_endpoint".into(), d);
    }
    let mut data = Map::new();
    if !ev.is_null() {
        data.insert("event".into(), ev.clone());
    }
    if let Value::Object(o) = a {
        for (k, v) in o.iter().filter(|(k, _)| !MAPPED.contains(&k.as_str())) {
            data.insert(k.clone(), v.clone());
        }
    }
    // OCSF wants at least one piece of evidence: data always qualifies.
    if !data.is_empty() || e.is_empty() {
        e.insert("data".into(), Value::Object(data));
    }
    Value::Object(e)
}

/// What OCSF has no attribute for: the MCP server and tool call, the native action (type, result,
/// latency, dry run), the incident and the injection chain; `kind` and `schema` say what the
/// native record was.
fn unmapped(a: &Value) -> Value {
    let mut u = Map::new();
    for k in ["kind", "schema", "server", "mcp", "action", "incident", "chain"] {
        if !a[k].is_null() {
            u.insert(k.into(), a[k].clone());
        }
    }
    json!({"mcpmon": u})
}

/// An incident's closing record: the finding closed, with its chain as evidences and the count.
fn incident(i: &Value) -> Value {
    let id = i["id"].as_str().unwrap_or("?");
    let mut m = header((CLOSE, "Close"), severity_id(&i["severity"]), &i["time"], &i["host"], Some(id.to_string()));
    let chain = i["chain"].as_array().cloned().unwrap_or_default();
    let mut rules: Vec<&str> = chain.iter().filter_map(|c| c["rule"].as_str()).collect();
    rules.dedup();
    let evidences: Vec<Value> = chain
        .iter()
        .map(|c| {
            let mut e = evidence(&json!({"process": {"pid": c["pid"], "exe": c["exe"]}, "file": c["file"]}));
            e["data"] = c.clone();
            e
        })
        .collect();
    m.insert(
        "finding_info".into(),
        json!({
            "uid": format!("mcpmon-incident-{id}"),
            "title": format!("incident {id}: {} alerts", i["alerts"]),
            "related_analytics": rules.iter().map(|r| json!({"uid": r, "name": r, "type_id": 1, "type": "Rule"})).collect::<Vec<_>>(),
        }),
    );
    m.insert("message".into(), format!("incident {id} ended: {} alerts, {} folded", i["alerts"], i["folded"]).into());
    if let Some(n) = i["alerts"].as_u64() {
        m.insert("count".into(), n.into());
    }
    if let (Some(end), Some(d)) = (m["time"].as_i64(), i["duration_s"].as_f64()) {
        m.insert("end_time".into(), end.into());
        m.insert("start_time".into(), (end - (d * 1000.0) as i64).into());
    }
    if !evidences.is_empty() {
        m.insert("evidences".into(), evidences.into());
    }
    let mut u = Map::new();
    for k in ["kind", "schema", "server", "mcp", "folded", "duration_s"] {
        if !i[k].is_null() {
            u.insert(k.into(), i[k].clone());
        }
    }
    m.insert("unmapped".into(), json!({"mcpmon": u}));
    Value::Object(m)
}

/// Repeats folded by the throttle: an update of the finding already sent, with their count.
fn suppressed(s: &Value) -> Value {
    let rule = s["rule"].as_str().unwrap_or("unknown");
    let mut m = header((UPDATE, "Update"), (0, "Unknown"), &s["time"], &s["host"], None);
    m.insert(
        "finding_info".into(),
        json!({
            "uid": format!("mcpmon-suppressed-{rule}-{}", s["time"].as_str().unwrap_or("")),
            "title": format!("{rule}: repeats suppressed"),
            "analytic": {"uid": rule, "name": rule, "type_id": 1, "type": "Rule"},
        }),
    );
    m.insert("message".into(), format!("{} repeats of {rule} suppressed within {} s", s["count"], s["window_s"]).into());
    if let Some(n) = s["count"].as_u64() {
        m.insert("count".into(), n.into());
    }
    if let (Some(end), Some(w)) = (m["time"].as_i64(), s["window_s"].as_f64()) {
        m.insert("end_time".into(), end.into());
        m.insert("start_time".into(), (end - (w * 1000.0) as i64).into());
    }
    let mut e = Map::new();
    if let Some(t) = s["target"].as_str().filter(|t| t.starts_with('/')) {
        e.insert("file".into(), file(t));
    }
    e.insert("data".into(), json!({"exe": s["exe"], "target": s["target"], "server": s["server"]}));
    m.insert("evidences".into(), json!([e]));
    m.insert("unmapped".into(), json!({"mcpmon": {"kind": "alert_suppressed", "server": s["server"], "window_s": s["window_s"]}}));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_alert() -> Value {
        json!({
            "kind": "alert", "schema": 1, "time": "2026-12-01T06:05:21.123456Z", "host": "box",
            "rule": {"id": "ssh-private-key-read", "severity": "critical", "description": "SSH key read", "tags": ["credential_access", "T1552.004"], "mitre": ["T1552.004"]},
            "action": {"type": "kill", "result": "killed_in_kernel"},
            "summary": "cat read ~/.ssh/id_ed25519",
            "process": {"pid": 4242, "ppid": 4241, "uid": 1000, "exe": "/usr/bin/cat", "argv": ["cat", "/home/u/.ssh/id_ed25519"], "ancestry": [4242, 4241]},
            "server": {"id": 3, "name": "fs", "how": "exec", "client": null, "root_pid": 4241},
            "mcp": {"state": "call", "tool": "read", "id": "2", "arguments": {"p": 1}},
            "file": "/home/u/.ssh/id_ed25519",
            "event": {"kind": "open", "pid": 4242, "path": "/home/u/.ssh/id_ed25519"},
        })
    }

    #[test]
    fn times_are_epoch_milliseconds() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(epoch_ms("2026-12-01T06:05:21.123456Z"), Some(1_796_105_121_123));
        assert_eq!(epoch_ms("2000-02-29T23:59:59Z"), Some(951_868_799_000));
        // Round trip through the writer.
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_234_567_890_123);
        assert_eq!(epoch_ms(&crate::output::format_rfc3339(t)), Some(1_234_567_890_123));
        assert_eq!(epoch_ms("yesterday"), None);
    }

    #[test]
    fn an_enforced_alert_maps_field_by_field() {
        let o = to_ocsf(&ssh_alert()).unwrap();
        assert_eq!((o["class_uid"].as_u64(), o["category_uid"].as_u64(), o["activity_id"].as_u64(), o["type_uid"].as_u64()), (Some(2004), Some(2), Some(1), Some(200401)));
        assert_eq!((o["severity_id"].as_u64(), o["severity"].as_str()), (Some(5), Some("Critical")));
        assert_eq!(o["time"], 1_796_105_121_123i64);
        assert_eq!(o["finding_info"]["analytic"]["uid"], "ssh-private-key-read");
        assert_eq!(o["finding_info"]["attacks"][0], json!({"technique": {"uid": "T1552"}, "sub_technique": {"uid": "T1552.004"}}));
        assert_eq!(o["attacks"], o["finding_info"]["attacks"]);
        assert_eq!((o["action_id"].as_u64(), o["disposition_id"].as_u64()), (Some(2), Some(2)));
        let e = &o["evidences"][0];
        assert_eq!(e["process"]["pid"], 4242);
        assert_eq!(e["process"]["file"]["path"], "/usr/bin/cat");
        assert_eq!(e["process"]["cmd_line"], "cat /home/u/.ssh/id_ed25519");
        assert_eq!(e["process"]["user"]["uid"], "1000");
        assert_eq!(e["process"]["parent_process"]["pid"], 4241);
        assert_eq!(e["file"], json!({"name": "id_ed25519", "path": "/home/u/.ssh/id_ed25519", "type_id": 0}));
        assert_eq!(e["data"]["event"]["kind"], "open");
        assert_eq!(o["unmapped"]["mcpmon"]["mcp"]["tool"], "read");
        assert_eq!(o["unmapped"]["mcpmon"]["server"]["name"], "fs");
        assert_eq!(o["unmapped"]["mcpmon"]["action"]["result"], "killed_in_kernel");
        assert_eq!(o["device"]["hostname"], "box");
        assert_eq!(o["metadata"]["version"], OCSF_VERSION);
        assert_eq!(o["message"], "cat read ~/.ssh/id_ed25519");
    }

    #[test]
    fn actions_and_severities() {
        assert_eq!(action_ids("alerted"), ((3, "Observed"), (15, "Detected")));
        assert_eq!(action_ids("would_kill"), ((3, "Observed"), (15, "Detected")));
        assert_eq!(action_ids("denied_in_kernel").0 .0, 2);
        assert_eq!(action_ids("killed").1 .0, 2);
        assert_eq!(action_ids("failed"), ((1, "Allowed"), (27, "Error")));
        assert_eq!(action_ids("refused").1 .0, 16);
        for (s, id) in [("info", 1), ("low", 2), ("medium", 3), ("high", 4), ("critical", 5)] {
            assert_eq!(severity_id(&json!(s)).0, id);
        }
        assert_eq!(severity_id(&Value::Null).0, 0);
    }

    #[test]
    fn connects_become_destinations_and_tool_findings_data() {
        let mut a = ssh_alert();
        a["file"] = Value::Null;
        a["event"] = json!({"kind": "connect", "addr": "169.254.169.254", "port": 80});
        let o = to_ocsf(&a).unwrap();
        assert_eq!(o["evidences"][0]["dst_endpoint"], json!({"ip": "169.254.169.254", "port": 80}));
        assert!(o["evidences"][0].get("file").is_none());
        let t = json!({"kind": "alert", "time": "2026-12-01T06:05:21.000000Z", "rule": {"id": "mcp.tool_poisoning", "severity": "high", "mitre": []}, "action": {"type": "alert", "result": "alerted"}, "finding": {"tool": "x"}});
        let o = to_ocsf(&t).unwrap();
        assert_eq!(o["evidences"][0], json!({"data": {"finding": {"tool": "x"}}}));
        assert!(o.get("attacks").is_none() && o.get("device").is_none());
    }

    #[test]
    fn incidents_close_and_suppressions_update() {
        let i = json!({"kind": "incident", "schema": 1, "id": "3-17", "severity": "high", "server": {"id": 3, "name": "runner"}, "mcp": {"state": "call", "tool": "run", "id": "2"}, "alerts": 4, "folded": 3, "chain": [{"rule": "shell-spawned-by-tool-call", "result": "alerted", "pid": 4242, "exe": "/usr/bin/dash", "summary": "s"}], "duration_s": 0.25, "time": "2026-12-01T06:05:21.500000Z"});
        let o = to_ocsf(&i).unwrap();
        assert_eq!((o["activity_id"].as_u64(), o["type_uid"].as_u64(), o["count"].as_u64()), (Some(3), Some(200403), Some(4)));
        assert_eq!(o["metadata"]["correlation_uid"], "3-17");
        assert_eq!(o["start_time"].as_i64().unwrap() + 250, o["end_time"].as_i64().unwrap());
        assert_eq!(o["evidences"][0]["process"]["pid"], 4242);
        assert_eq!(o["finding_info"]["related_analytics"][0]["uid"], "shell-spawned-by-tool-call");
        let s = json!({"kind": "alert_suppressed", "rule": "cloud-credentials-read", "server": "nosy", "exe": "/usr/bin/cat", "target": "/home/u/.aws/credentials", "count": 3, "window_s": 10.0, "time": "2026-12-01T06:05:21.000000Z"});
        let o = to_ocsf(&s).unwrap();
        assert_eq!((o["activity_id"].as_u64(), o["count"].as_u64(), o["severity_id"].as_u64()), (Some(2), Some(3), Some(0)));
        assert_eq!(o["evidences"][0]["file"]["name"], "credentials");
    }

    #[test]
    fn other_records_stay_native() {
        for k in ["open", "exec", "tool_call", "tool_call_start", "server_tracked", "stats"] {
            assert!(to_ocsf(&json!({"kind": k})).is_none(), "{k}");
        }
    }
}
