//! Result checks in the pipeline: every reply to `tools/call`, `resources/read` and
//! `prompts/get` is scanned for prompt injection and secrets (`toolcheck::results`); the findings
//! become a `result` event for the rules, and an injection marks the client session so that what
//! a *later* call does (credential files, shells, the network) is tied back to it: the chain.
use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::super::Pipeline;
use crate::{
    correlation::{Correlator, ResultRecord},
    output::alert::{Alert, ProcessRef, RuleRef, ServerRef},
    events::{Body, Event, Fork, Header},
    jsonrpc::session::Attribution,
    process_tree::ProcessTree,
    rules::{Ctx, Val},
    toolcheck::results::{self, InjectionKind, ResultScan, Scanner},
    tracker::ServerInfo,
};

/// How long an injection taints its client session: it stays in the model's context, but a
/// client runs many conversations, so the chain is bounded in time.
pub const CHAIN_WINDOW_NS: u64 = 10 * 60 * 1_000_000_000;
/// Injected results remembered per client session (the most recent ones).
const MAX_MARKS: usize = 8;
/// Client sessions remembered at once (the oldest are forgotten first).
const MAX_CLIENTS: usize = 1024;

/// Who the model that reads a result works for: the MCP client process that started the
/// server (all its servers share the model's context). A server whose parent is init or unknown
/// is a session of its own.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum ClientKey {
    Client(u32),
    Server(u32),
}

fn client_key(tree: &ProcessTree, s: &ServerInfo) -> ClientKey {
    match tree.get(s.root_pid).map(|n| n.ppid) {
        Some(p) if p > 1 => ClientKey::Client(p),
        _ => ClientKey::Server(s.id),
    }
}

/// A result that carried an injection.
#[derive(Clone, Debug, Serialize)]
struct Mark {
    server_id: u32,
    server: String,
    tool: String,
    id: String,
    kinds: Vec<InjectionKind>,
    #[serde(skip)]
    at_mono_ns: u64,
}

impl Mark {
    fn name(&self) -> String {
        format!("{}/{}#{}", self.server, self.tool, self.id)
    }
}

/// Result-scan state: the compiled scanner, injected sessions, and the scan's cost.
#[derive(Default)]
pub struct ResultWatch {
    scanner: Scanner,
    marks: HashMap<ClientKey, Vec<Mark>>,
    pub results_scanned: u64,
    pub bytes_scanned: u64,
    pub scan_ns: u64,
}

impl ResultWatch {
    fn mark(&mut self, key: ClientKey, m: Mark) {
        if self.marks.len() >= MAX_CLIENTS && !self.marks.contains_key(&key) {
            let oldest = self.marks.iter().min_by_key(|(_, v)| v.last().map(|m| m.at_mono_ns).unwrap_or(0)).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.marks.remove(&k);
            }
        }
        let v = self.marks.entry(key).or_default();
        v.push(m);
        if v.len() > MAX_MARKS {
            v.remove(0);
        }
    }

    /// Sets the chain fields of a kernel event's context; returns the `chain` object for its
    /// alerts when the call in flight started after an injected result of the same client
    /// session (and within the window). Calls already running when the result arrived, and
    /// the injected call itself, are not its consequence.
    pub fn annotate(&self, ctx: &mut Ctx, attribution: &Attribution, server: Option<&ServerInfo>, tree: &ProcessTree, corr: &Correlator) -> Option<Value> {
        let Attribution::Call { tool, id, .. } = attribution else {
            // By slot: every event passes here, and a name costs a lookup.
            ctx.set_at(const { crate::rules::fields::at("mcp.session.injected") }, Val::Bool(false));
            return None;
        };
        ctx.str("mcp.call_id", id.clone());
        let found = server.and_then(|s| {
            let start = corr.call_start(s.id, id)?;
            let marks = self.marks.get(&client_key(tree, s))?;
            marks
                .iter()
                .rev()
                .find(|m| m.at_mono_ns < start && start - m.at_mono_ns <= CHAIN_WINDOW_NS && !(m.server_id == s.id && &m.id == id))
                .map(|m| (s, m, start))
        });
        ctx.set("mcp.session.injected", Val::Bool(found.is_some()));
        let (s, m, start) = found?;
        ctx.str("mcp.session.injection_call", m.name());
        Some(json!({
            "injection": m,
            "action": {"server": s.name, "tool": tool, "id": id},
            "seconds_after": (start - m.at_mono_ns) as f64 / 1e9,
        }))
    }
}

/// The texts of a `mcp_result` record: the parsed result, or the captured text of a reply too
/// big for the capture.
fn texts_of(r: &ResultRecord) -> Vec<(String, String)> {
    let mut t = results::texts(r.result.as_ref().unwrap_or(&Value::Null));
    if let Some(raw) = &r.raw_text {
        t.push(("result (captured text of a truncated reply)".into(), raw.clone()));
    }
    t
}

/// The rule context of a result event.
fn result_ctx(r: &ResultRecord, s: &ServerInfo, scan: &ResultScan) -> Ctx {
    let mut c = Ctx::default();
    c.str("event", "result");
    c.set("proc.pid", Val::Num(s.root_pid.into()));
    c.set("proc.is_server_root", Val::Bool(true));
    c.str("server.name", s.name.clone());
    c.str("server.how", s.how.as_str());
    if let Some(cl) = &s.client {
        c.str("server.client", cl.clone());
    }
    c.str("mcp.state", "call");
    c.set("mcp.tool", Val::List(vec![r.target.clone().into()]));
    c.str("mcp.call_id", r.id.clone());
    c.str("mcp.method", r.method.clone());
    c.set("mcp.result.injection", Val::Bool(!scan.injections.is_empty()));
    c.set("mcp.result.injection_kinds", Val::List(scan.injection_kinds().iter().map(|k| k.as_str().into()).collect()));
    c.set("mcp.result.secrets", Val::Bool(!scan.secrets.is_empty()));
    c.set("mcp.result.secret_kinds", Val::List(scan.secret_kinds().iter().map(|k| k.as_str().into()).collect()));
    // The span a person reads first: an instruction or a tool call rather than a bare marker.
    let lead = scan.injections.iter().find(|i| matches!(i.kind, InjectionKind::ModelInstruction | InjectionKind::ToolChain) && i.signal != "you_must").or(scan.injections.first());
    if let Some(i) = lead {
        c.str("mcp.result.injection_span", i.excerpt.clone());
    }
    if let Some(x) = scan.secrets.first() {
        c.str("mcp.result.secret_span", format!("{} {}", x.secret.kind.as_str(), x.secret.masked));
    }
    c
}

impl Pipeline {
    /// Handles an `mcp_result` record (consumed: it is not written out).
    pub(in crate::daemon) async fn check_result(&mut self, id: u32, r: ResultRecord) {
        let Some(server) = self.tracker.server(id).cloned() else { return };
        let texts = texts_of(&r);
        let known: Vec<String> = self.tools_watch.tools.values().flatten().map(|t| t.name.clone()).collect();
        let t0 = std::time::Instant::now();
        let scan = self.tools_watch.results.scanner.scan(&texts, &known);
        let ns = t0.elapsed().as_nanos() as u64;
        let w = &mut self.tools_watch.results;
        w.results_scanned += 1;
        w.bytes_scanned += scan.bytes as u64;
        w.scan_ns += ns;
        self.stats.stage_ns.add(crate::daemon::stages::Stage::ResultScan, ns);
        if scan.is_empty() {
            return;
        }
        let (tool, call_id) = (r.target.clone(), r.id.clone());
        tracing::info!(method = %r.method, %tool, call = %call_id, server = %server.name, injections = scan.injections.len(), secrets = scan.secrets.len(), "result findings");
        if !scan.injections.is_empty() {
            let key = client_key(&self.tree, &server);
            let at = r.end_mono_ns;
            self.tools_watch.results.mark(key, Mark { server_id: id, server: server.name.to_string(), tool: tool.clone(), id: call_id.clone(), kinds: scan.injection_kinds(), at_mono_ns: at });
        }
        let ctx = result_ctx(&r, &server, &scan);
        let Some(policy) = self.policy.as_mut() else { return };
        // The rules' actions act on processes: a result event stands for the server's root (a
        // `kill` rule stops a server that returned, say, a private key from answering again).
        let ts = r.end_mono_ns;
        let ev = Event {
            header: Header { ts_mono_ns: ts, pid: server.root_pid, tid: server.root_pid, ppid: 0, uid: server.uid, server_id: id, truncated: vec![], kernel_action: None, compat_syscall: false, gated: false },
            body: Body::Fork(Fork { child_pid: 0, clone_flags: 0 }),
        };
        let tracker = &self.tracker;
        let fired = policy.evaluate(&ev, &ctx, |pid| tracker.lookup(pid).is_some());
        if fired.is_empty() {
            return;
        }
        let time = crate::output::format_rfc3339(self.clock.wall(ts));
        let event = json!({
            "kind": "mcp_result", "method": r.method, "id": call_id, "target": tool, "bytes": scan.bytes, "pid": server.root_pid, "uid": server.uid,
            "truncated": r.raw_text.is_some(), "time": time,
        });
        let mcp = json!({"state": "call", "tool": tool, "id": call_id, "method": r.method});
        let findings = json!({"injections": scan.injections, "secrets": scan.secrets});
        // The first finding, as tool-check alerts carry it (and the throttle keys on it).
        let first = scan.injections.first().map(|i| json!(i)).or_else(|| scan.secrets.first().map(|s| json!(s))).unwrap_or(Value::Null);
        let mut alerts = Vec::new();
        for (rule, action) in fired {
            let mut a = Alert::new(RuleRef::of(rule), action, rule.output.render(&ctx), time.clone());
            a.process = Some(ProcessRef { pid: server.root_pid, ppid: Some(None), uid: server.uid, exe: Some(ctx.get("proc.exe").map(|v| v.to_string())), argv: Some(vec![]), ancestry: Some(vec![]) });
            a.server = Some(ServerRef::of(&server));
            a.mcp = Some(mcp.clone());
            a.file = Some(ctx.get("file.path").map(|v| v.to_string()));
            a.event = Some(event.clone());
            let a = a.with("findings", &findings).with("finding", &first);
            tracing::warn!(rule = %rule.id, severity = ?rule.severity, summary = %a.summary, "alert");
            alerts.push(a);
        }
        *self.rule_alerts.entry(id).or_default() += alerts.len() as u64;
        for a in alerts {
            self.out.alert(a).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{jsonrpc::message::from_value, tracker::Discovery};

    fn server(id: u32, root: u32) -> ServerInfo {
        ServerInfo { id, name: format!("s{id}").into(), root_pid: root, how: Discovery::Exec, uid: 0, since: std::time::SystemTime::now(), stdio_inodes: vec![], client: None, config: None, sniffing: false, command: vec![], containers: vec![] }
    }

    #[test]
    fn only_later_calls_of_the_same_client_session_are_chained() {
        let mut tree = ProcessTree::new();
        // Client 100 runs servers 1 and 2; client 200 runs server 3.
        for (pid, ppid, sid) in [(10, 100, 1), (20, 100, 2), (30, 200, 3)] {
            tree.insert(crate::process_tree::ProcNode { pid, ppid, server_id: sid, exe: None, argv: vec![] });
        }
        let (s1, s2, s3) = (server(1, 10), server(2, 20), server(3, 30));
        let mut corr = Correlator::new();
        let call = |corr: &mut Correlator, sid: u32, id: u64, ts: u64| {
            let rpc = from_value(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "t", "arguments": {}}}));
            corr.session_mut(sid).on_request(&rpc, ts);
        };
        call(&mut corr, 2, 7, 50); // in flight before the injection arrived
        let mut w = ResultWatch::default();
        w.mark(ClientKey::Client(100), Mark { server_id: 1, server: "s1".into(), tool: "read".into(), id: "1".into(), kinds: vec![InjectionKind::ModelInstruction], at_mono_ns: 100 });
        call(&mut corr, 2, 8, 200);
        call(&mut corr, 3, 9, 200);
        let att = |id: &str| Attribution::Call { tool: "t".into(), id: id.into(), arguments: Value::Null };
        let mut ctx = Ctx::default();
        let chain = w.annotate(&mut ctx, &att("8"), Some(&s2), &tree, &corr).expect("a later call of the same client");
        assert_eq!((chain["injection"]["id"].as_str(), chain["action"]["id"].as_str()), (Some("1"), Some("8")));
        assert_eq!(ctx.get("mcp.session.injection_call"), Some(&Val::Str("s1/read#1".into())));
        for (id, s) in [("7", &s2), ("9", &s3)] {
            let mut ctx = Ctx::default();
            assert!(w.annotate(&mut ctx, &att(id), Some(s), &tree, &corr).is_none(), "call {id}");
            assert_eq!(ctx.get("mcp.session.injected"), Some(&Val::Bool(false)));
        }
        let _ = s1;
    }
}
