//! Metrics stage: counters the pipeline feeds as it emits records, rendered in the Prometheus text
//! format by `http.rs` on `--metrics-addr`. Label values are bounded: server names are capped,
//! tool names are capped per server (the rest are counted under `other`), rule ids come from the
//! loaded rules, and every other label has a fixed set of values.
pub mod http;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
};

use crate::output::{
    alert::ActionResult,
    record::{Mcp, Record},
};

/// Distinct server label values; more servers are counted as `other`.
pub const MAX_SERVERS: usize = 200;
/// Distinct tool label values per server.
pub const MAX_TOOLS_PER_SERVER: usize = 64;

const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const EVAL_BUCKETS: &[f64] = &[1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2];

#[derive(Clone, Debug, Default)]
pub struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Gauges the pipeline sets each tick.
#[derive(Clone, Debug, Default)]
pub struct Gauges {
    pub servers: u64,
    pub processes: u64,
    pub protected_inodes: u64,
    pub rules: u64,
    /// Kernel lost counters by reason.
    pub kernel_lost: Vec<(&'static str, u64)>,
    /// Other losses by stage (decode errors, stdio bytes not captured, streams dropped, …).
    pub userspace_lost: Vec<(&'static str, u64)>,
}

#[derive(Default)]
pub struct Metrics {
    events: BTreeMap<String, u64>,
    tool_calls: BTreeMap<(String, String, String), u64>,
    tool_duration: BTreeMap<String, Histogram>,
    alerts: BTreeMap<(String, String, String, String), u64>,
    kills: BTreeMap<String, u64>,
    denies: u64,
    rule_eval: Histogram,
    alerts_suppressed: u64,
    alerts_folded: u64,
    /// Kernel events lost per server (`blind_spot`).
    blind_spot: BTreeMap<String, u64>,
    sink_dropped: BTreeMap<String, u64>,
    sink_sent: BTreeMap<String, u64>,
    /// OTLP span export: `exported`, and drops by reason (`queue_full`, `export_failed`,
    /// `calls_given_up`); empty unless `--otlp-endpoint` is set.
    otlp: BTreeMap<&'static str, u64>,
    servers_seen: HashSet<String>,
    tools_seen: HashMap<String, HashSet<String>>,
    pub gauges: Gauges,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn server_label(&mut self, s: &str) -> String {
        if self.servers_seen.contains(s) {
            return s.into();
        }
        if self.servers_seen.len() < MAX_SERVERS {
            self.servers_seen.insert(s.into());
            return s.into();
        }
        "other".into()
    }

    fn tool_label(&mut self, server: &str, tool: &str) -> String {
        let seen = self.tools_seen.entry(server.into()).or_default();
        if seen.contains(tool) || seen.len() < MAX_TOOLS_PER_SERVER {
            seen.insert(tool.into());
            tool.into()
        } else {
            "other".into()
        }
    }

    /// Exports at 0, before anything happened, the series whose labels are known in advance:
    /// every event kind, the alerts of every rule in force (`rules`: id, severity, action; no
    /// server label yet), the configured sinks, and the tool-call total without labels. Panels
    /// then show 0, not "No data" (Prometheus' instrumentation practice). Called again after a
    /// rules reload; existing counts are kept.
    pub fn zero(&mut self, rules: &[(String, String, String)], sinks: &[&str]) {
        for k in crate::events::Event::KINDS {
            self.events.entry((*k).into()).or_default();
        }
        for (id, sev, action) in rules {
            self.alerts.entry((String::new(), id.clone(), sev.clone(), action.clone())).or_default();
        }
        for s in sinks {
            self.sink_sent.entry((*s).into()).or_default();
            self.sink_dropped.entry((*s).into()).or_default();
        }
        self.tool_calls.entry(Default::default()).or_default();
    }

    /// The pipeline's counts of kernel events by kind (a folded run counts every event in it),
    /// taken at each metrics tick: counting here per event cost a lock and a map lookup per
    /// event, and the pipeline counts them anyway (its `stats` record).
    pub fn set_events(&mut self, counts: &BTreeMap<&'static str, u64>) {
        for (k, v) in counts {
            match self.events.get_mut(*k) {
                Some(c) => *c = *v,
                None => {
                    self.events.insert((*k).into(), *v);
                }
            }
        }
    }

    pub fn rule_eval(&mut self, seconds: f64) {
        self.rule_eval.observe(EVAL_BUCKETS, seconds);
    }

    pub fn blind_spot(&mut self, server: &str, lost: u64) {
        *self.blind_spot.entry(server.into()).or_default() += lost;
    }

    pub fn folded(&mut self, n: u64) {
        self.alerts_folded += n;
    }

    pub fn suppressed(&mut self, n: u64) {
        self.alerts_suppressed += n;
    }

    pub fn sink(&mut self, sink: &str, sent: u64, dropped: u64) {
        *self.sink_sent.entry(sink.into()).or_default() += sent;
        *self.sink_dropped.entry(sink.into()).or_default() += dropped;
    }

    pub fn otlp(&mut self, what: &'static str, n: u64) {
        *self.otlp.entry(what).or_default() += n;
    }

    /// Counts what a record says: finished tool calls and alerts.
    pub fn record(&mut self, r: &Record) {
        match r {
            Record::Mcp(m) => {
                let Mcp::ToolCall(call) = &m.body else { return };
                let s = self.server_label(m.server.as_deref().unwrap_or("unknown"));
                let tool = self.tool_label(&s, &call.call.tool);
                *self.tool_calls.entry((s.clone(), tool, call.outcome.to_string())).or_default() += 1;
                self.tool_duration.entry(s).or_default().observe(DURATION_BUCKETS, call.duration_ms / 1000.0);
            }
            Record::Alert(a) => {
                let sev = serde_json::to_value(a.rule.severity).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                let action = serde_json::to_value(a.action.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                let srv = self.server_label(a.server_name().unwrap_or("unknown"));
                *self.alerts.entry((srv, a.rule.id.clone(), sev, action)).or_default() += 1;
                let result = a.action.result;
                if result.killed_in_kernel() {
                    *self.kills.entry("kernel".into()).or_default() += 1;
                } else if result == ActionResult::Killed {
                    *self.kills.entry("userspace".into()).or_default() += 1;
                }
                if result.denied() {
                    self.denies += 1;
                }
            }
            _ => {}
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(&mut o, "mcpmon_events_total", "counter", "Kernel events processed, by kind.");
        for (k, v) in &self.events {
            let _ = writeln!(o, "mcpmon_events_total{{kind=\"{}\"}} {v}", esc(k));
        }
        head(&mut o, "mcpmon_events_lost_total", "counter", "Events lost, by where (kernel ring buffer and pending maps, user-space stages).");
        for (k, v) in &self.gauges.kernel_lost {
            let _ = writeln!(o, "mcpmon_events_lost_total{{where=\"kernel\",reason=\"{k}\"}} {v}");
        }
        for (k, v) in &self.gauges.userspace_lost {
            let _ = writeln!(o, "mcpmon_events_lost_total{{where=\"userspace\",reason=\"{k}\"}} {v}");
        }
        head(&mut o, "mcpmon_servers_tracked", "gauge", "MCP servers under watch.");
        let _ = writeln!(o, "mcpmon_servers_tracked {}", self.gauges.servers);
        head(&mut o, "mcpmon_processes_tracked", "gauge", "Processes in tracked server trees.");
        let _ = writeln!(o, "mcpmon_processes_tracked {}", self.gauges.processes);
        head(&mut o, "mcpmon_protected_inodes", "gauge", "Files and directories protected in the kernel.");
        let _ = writeln!(o, "mcpmon_protected_inodes {}", self.gauges.protected_inodes);
        head(&mut o, "mcpmon_rules_loaded", "gauge", "Rules in force.");
        let _ = writeln!(o, "mcpmon_rules_loaded {}", self.gauges.rules);
        head(&mut o, "mcpmon_tool_calls_total", "counter", "Finished MCP tool calls, by server, tool and outcome.");
        for ((s, t, out), v) in &self.tool_calls {
            let _ = writeln!(o, "mcpmon_tool_calls_total{} {v}", labels(&[("server", s), ("tool", t), ("outcome", out)]));
        }
        head(&mut o, "mcpmon_tool_call_duration_seconds", "histogram", "Tool call duration (request read to reply written), by server.");
        for (s, h) in &self.tool_duration {
            hist(&mut o, "mcpmon_tool_call_duration_seconds", &format!("server=\"{}\",", esc(s)), DURATION_BUCKETS, h);
        }
        head(&mut o, "mcpmon_alerts_total", "counter", "Alerts, by server, rule, severity and action.");
        for ((srv, r, sev, a), v) in &self.alerts {
            let _ = writeln!(o, "mcpmon_alerts_total{} {v}", labels(&[("server", srv), ("rule", r), ("severity", sev), ("action", a)]));
        }
        head(&mut o, "mcpmon_alerts_folded_total", "counter", "Alerts folded into their incident's first alert (same server and tool call), reported in its `incident` record.");
        let _ = writeln!(o, "mcpmon_alerts_folded_total {}", self.alerts_folded);
        head(&mut o, "mcpmon_alerts_suppressed_total", "counter", "Repeated alerts folded into a later alert's count by throttling.");
        let _ = writeln!(o, "mcpmon_alerts_suppressed_total {}", self.alerts_suppressed);
        head(&mut o, "mcpmon_kills_total", "counter", "Processes killed, by where the decision ran.");
        for w in ["kernel", "userspace"] {
            let _ = writeln!(o, "mcpmon_kills_total{{where=\"{w}\"}} {}", self.kills.get(w).copied().unwrap_or(0));
        }
        head(&mut o, "mcpmon_denies_total", "counter", "Connects and sends refused with EPERM.");
        let _ = writeln!(o, "mcpmon_denies_total {}", self.denies);
        head(&mut o, "mcpmon_rule_eval_seconds", "histogram", "Time to evaluate the rules on one event (one kernel event in 16 is timed).");
        hist(&mut o, "mcpmon_rule_eval_seconds", "", EVAL_BUCKETS, &self.rule_eval);
        head(&mut o, "mcpmon_blind_spot_events_total", "counter", "Kernel events of a tracked server that could not be delivered (ring or table full), by server.");
        for (k, v) in &self.blind_spot {
            let _ = writeln!(o, "mcpmon_blind_spot_events_total{{server=\"{}\"}} {v}", esc(k));
        }
        head(&mut o, "mcpmon_alert_sink_sent_total", "counter", "Alerts delivered, by sink.");
        for (k, v) in &self.sink_sent {
            let _ = writeln!(o, "mcpmon_alert_sink_sent_total{{sink=\"{k}\"}} {v}");
        }
        head(&mut o, "mcpmon_alert_sink_dropped_total", "counter", "Alerts a sink could not deliver (queue full, retries exhausted).");
        for (k, v) in &self.sink_dropped {
            let _ = writeln!(o, "mcpmon_alert_sink_dropped_total{{sink=\"{k}\"}} {v}");
        }
        if let Some(n) = self.otlp.get("exported") {
            head(&mut o, "mcpmon_otlp_spans_exported_total", "counter", "Tool-call spans the OTLP collector accepted.");
            let _ = writeln!(o, "mcpmon_otlp_spans_exported_total {n}");
            head(&mut o, "mcpmon_otlp_spans_dropped_total", "counter", "Tool-call spans not exported: queue full, retries exhausted, or the call given up (too many open).");
            for (k, v) in self.otlp.iter().filter(|(k, _)| **k != "exported") {
                let _ = writeln!(o, "mcpmon_otlp_spans_dropped_total{{reason=\"{k}\"}} {v}");
            }
        }
        let (cpu, rss) = crate::sys::procfs::self_usage();
        head(&mut o, "mcpmon_process_cpu_seconds_total", "counter", "CPU time of the daemon (user + system).");
        let _ = writeln!(o, "mcpmon_process_cpu_seconds_total {cpu}");
        head(&mut o, "mcpmon_process_resident_memory_bytes", "gauge", "Resident memory of the daemon.");
        let _ = writeln!(o, "mcpmon_process_resident_memory_bytes {rss}");
        o
    }
}

fn hist(o: &mut String, name: &str, labels: &str, bounds: &[f64], h: &Histogram) {
    for (i, b) in bounds.iter().enumerate() {
        let _ = writeln!(o, "{name}_bucket{{{labels}le=\"{b}\"}} {}", h.buckets.get(i).copied().unwrap_or(0));
    }
    let _ = writeln!(o, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.count);
    let l = labels.trim_end_matches(',');
    let l = if l.is_empty() { String::new() } else { format!("{{{l}}}") };
    let _ = writeln!(o, "{name}_sum{l} {}", h.sum);
    let _ = writeln!(o, "{name}_count{l} {}", h.count);
}

/// `{a="x",b="y"}` without the empty ones (an empty label is an absent label to Prometheus; the
/// zero series made before any server exists have none), or nothing at all.
fn labels(pairs: &[(&str, &str)]) -> String {
    let set: Vec<String> = pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", set.join(","))
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        jsonrpc::session::{FinishedCall, ToolCall},
        output::{
            alert::{ActionRecord, ActionType, Alert, RuleRef, ServerRef},
            record::McpRecord,
        },
        rules::Severity,
    };

    fn key_kill() -> Record {
        let mut a = Alert::new(
            RuleRef::builtin("ssh-private-key-read", Severity::Critical, "", &[], &[]),
            ActionRecord::new(ActionType::Kill, ActionResult::KilledInKernel),
            String::new(),
            String::new(),
        );
        a.server = Some(ServerRef::named(1, "fs"));
        Record::Alert(Box::new(a))
    }

    fn tool_call(tool: &str) -> Record {
        let call = ToolCall { id: "1".into(), tool: tool.into(), arguments: serde_json::Value::Null, arguments_truncated: false, start_mono_ns: 0, http_session: None };
        let f = FinishedCall { call, end_mono_ns: 0, duration_ms: 12.0, outcome: "ok", events: 0, result: None };
        Record::Mcp(Box::new(McpRecord { time: String::new(), server_id: 1, server: Some("fs".into()), body: Mcp::ToolCall(f) }))
    }

    #[test]
    fn known_series_are_exported_at_zero_from_the_start() {
        let mut m = Metrics::new();
        m.zero(&[("ssh-private-key-read".into(), "critical".into(), "kill".into())], &["webhook"]);
        let t = m.render();
        for line in [
            "mcpmon_events_total{kind=\"open\"} 0",
            "mcpmon_events_total{kind=\"proc_access\"} 0",
            "mcpmon_alerts_total{rule=\"ssh-private-key-read\",severity=\"critical\",action=\"kill\"} 0",
            "mcpmon_tool_calls_total 0",
            "mcpmon_alert_sink_sent_total{sink=\"webhook\"} 0",
            "mcpmon_alert_sink_dropped_total{sink=\"webhook\"} 0",
            "mcpmon_kills_total{where=\"kernel\"} 0",
            "mcpmon_denies_total 0",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in:\n{t}");
        }
        // A real alert adds its server's series; the zero series stays, and sums are right.
        m.record(&key_kill());
        m.zero(&[("ssh-private-key-read".into(), "critical".into(), "kill".into())], &["webhook"]);
        let t = m.render();
        assert!(t.contains("mcpmon_alerts_total{server=\"fs\",rule=\"ssh-private-key-read\",severity=\"critical\",action=\"kill\"} 1"), "{t}");
    }

    #[test]
    fn renders_counters_with_bounded_labels() {
        let mut m = Metrics::new();
        m.set_events(&[("open", 1)].into());
        for i in 0..(MAX_TOOLS_PER_SERVER + 5) {
            m.record(&tool_call(&format!("t{i}")));
        }
        m.record(&key_kill());
        let t = m.render();
        assert!(t.contains("mcpmon_events_total{kind=\"open\"} 1"), "{t}");
        assert!(t.contains("mcpmon_tool_calls_total{server=\"fs\",tool=\"other\",outcome=\"ok\"} 5"), "{t}");
        assert!(t.contains("mcpmon_tool_call_duration_seconds_bucket{server=\"fs\",le=\"0.05\"} 69"), "{t}");
        assert!(t.contains("mcpmon_alerts_total{server=\"fs\",rule=\"ssh-private-key-read\",severity=\"critical\",action=\"kill\"} 1"), "{t}");
        assert!(t.contains("mcpmon_kills_total{where=\"kernel\"} 1"));
        assert!(t.contains("mcpmon_rule_eval_seconds_count 0"));
        assert!(crate::sys::procfs::self_usage().1 > 0);
    }
}
