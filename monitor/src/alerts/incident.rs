//! One alert per incident. Alerts that share a cause are one incident: the same server within
//! one tool call (by the call's JSON-RPC id); an incident ends when the server has raised no
//! alert in that call for a while. The first alert of an incident goes out at once and opens it.
//! A later alert that only alerts, at no higher severity than what already went out, is folded:
//! it is not sent again, and joins the incident's chain of evidence. An alert that enforces (a
//! kill, a deny) or raises the severity always goes out, carrying the chain so far, so no
//! enforcement record is ever folded away. When the incident ends (quiet for `quiet`, or open
//! for `max_open`), an `incident` record carries the whole chain if anything was folded.
//!
//! Alerts outside a call, about the monitor itself (no server), tool-set checks (no process) and
//! findings in results (content, not behaviour) pass through.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    output::{
        alert::{Alert, IncidentTag, ServerRef},
        record, Record,
    },
    rules::Severity,
};

pub struct Incidents {
    quiet: Duration,
    max_open: Duration,
    open: HashMap<(u64, String), Incident>,
    /// Ended, their records not yet sent.
    closed: Vec<Incident>,
    next: u64,
}

struct Incident {
    id: String,
    opened: Instant,
    last: Instant,
    server: Option<ServerRef>,
    mcp: Option<Value>,
    chain: Vec<Value>,
    /// Alerts in the incident (the chain keeps the first `MAX_CHAIN`).
    count: u64,
    folded: u64,
    /// Highest severity already sent for this incident.
    sent: Severity,
}

/// Incidents held at once; beyond this the oldest are closed early.
const MAX_OPEN: usize = 4096;
/// Chain entries kept per incident (the count goes on).
const MAX_CHAIN: usize = 32;

/// One line of evidence: what happened, by which process, and what was done.
fn evidence(a: &Alert) -> Value {
    let mut e = json!({
        "time": a.time, "rule": a.rule.id, "severity": a.rule.severity,
        "result": a.action.result, "summary": a.summary,
        "pid": a.process.as_ref().map(|p| p.pid), "exe": a.exe(),
    });
    if let Some(f) = a.file() {
        e["file"] = f.into();
    }
    let finding = a.evidence("finding");
    if !finding.is_null() {
        e["finding"] = finding.clone();
    }
    if let Some(addr) = a.event_field("addr").as_str() {
        e["addr"] = format!("{addr}:{}", a.event_field("port")).into();
    }
    e
}

impl Incidents {
    pub fn new(quiet: Duration) -> Self {
        Self { quiet, max_open: quiet * 12, open: HashMap::new(), closed: Vec::new(), next: 0 }
    }

    fn key(a: &Alert) -> Option<(u64, String)> {
        let server = a.server.as_ref()?.id as u64;
        a.process.as_ref()?;
        // Findings in what a server answered are about content, each its own evidence.
        if a.event_field("kind") == "mcp_result" {
            return None;
        }
        // Only a call gives alerts a shared cause: with none in flight (or several), each alert
        // stands alone (repeats are the throttle's to fold).
        let mcp = a.mcp.as_ref()?;
        match (mcp["state"].as_str(), &mcp["id"]) {
            (Some("call"), id) if !id.is_null() => Some((server, format!("call:{id}"))),
            _ => None,
        }
    }

    /// The alert to send now (with its `incident` field), or None when it was folded.
    pub fn admit(&mut self, mut a: Alert, now: Instant) -> Option<Alert> {
        if self.quiet.is_zero() {
            return Some(a);
        }
        let Some(key) = Self::key(&a) else { return Some(a) };
        if self.open.get(&key).is_some_and(|i| now.duration_since(i.last) >= self.quiet || now.duration_since(i.opened) >= self.max_open) {
            // Stale: a new incident; the old one's record goes out at the next flush.
            let old = self.open.remove(&key).unwrap();
            self.closed.push(old);
        }
        let sev = a.rule.severity;
        match self.open.get_mut(&key) {
            None => {
                if self.open.len() >= MAX_OPEN {
                    self.evict_oldest();
                }
                self.next += 1;
                let id = format!("{}-{}", key.0, self.next);
                a.incident = Some(IncidentTag { id: id.clone(), seq: 1, chain: None });
                self.open.insert(key, Incident { id, opened: now, last: now, server: a.server.clone(), mcp: a.mcp.clone(), chain: vec![evidence(&a)], count: 1, folded: 0, sent: sev });
                Some(a)
            }
            Some(i) => {
                i.last = now;
                i.count += 1;
                if i.chain.len() < MAX_CHAIN {
                    i.chain.push(evidence(&a));
                }
                let seq = i.count;
                if a.action.result.enforces() || sev > i.sent {
                    i.sent = i.sent.max(sev);
                    a.incident = Some(IncidentTag { id: i.id.clone(), seq, chain: Some(i.chain.clone()) });
                    Some(a)
                } else {
                    i.folded += 1;
                    None
                }
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self.open.iter().min_by_key(|(_, i)| i.last).map(|(k, _)| k.clone()) {
            let old = self.open.remove(&k).unwrap();
            self.closed.push(old);
        }
    }

    /// Ends quiet incidents (all of them with `force`): one `incident` record for each that
    /// folded anything, so the evidence of every folded alert is reported.
    pub fn flush(&mut self, now: Instant, force: bool, time: &str) -> Vec<Record> {
        let (quiet, max_open) = (self.quiet, self.max_open);
        let ended: Vec<(u64, String)> = self
            .open
            .iter()
            .filter(|(_, i)| force || now.duration_since(i.last) >= quiet || now.duration_since(i.opened) >= max_open)
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            let i = self.open.remove(&k).unwrap();
            self.closed.push(i);
        }
        std::mem::take(&mut self.closed).into_iter().filter(|i| i.folded > 0).map(|i| incident_record(i, time)).collect()
    }
}

fn incident_record(i: Incident, time: &str) -> Record {
    Record::Incident(Box::new(record::Incident {
        time: time.into(),
        schema: 1,
        id: i.id,
        severity: i.sent,
        server: i.server,
        mcp: i.mcp,
        alerts: i.count,
        folded: i.folded,
        chain: i.chain,
        duration_s: i.last.duration_since(i.opened).as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::alert::{test_alert, ActionResult};

    fn alert(rule: &str, sev: &str, result: &str, call: Option<u64>) -> Alert {
        let r = match result {
            "alerted" => ActionResult::Alerted,
            "killed_in_kernel" => ActionResult::KilledInKernel,
            "denied_in_kernel" => ActionResult::DeniedInKernel,
            other => panic!("{other}"),
        };
        test_alert(rule, sev, r, call)
    }

    fn tag(a: &Alert) -> &IncidentTag {
        a.incident.as_ref().unwrap()
    }

    fn v(r: &Record) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn one_call_is_one_incident_and_enforcement_is_never_folded() {
        let mut inc = Incidents::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let first = inc.admit(alert("shell-spawned-by-tool-call", "high", "alerted", Some(3)), t0).expect("the first goes out");
        assert_eq!(tag(&first).seq, 1);
        assert!(inc.admit(alert("file-outside-call-scope", "medium", "alerted", Some(3)), t0).is_none(), "folded");
        assert!(inc.admit(alert("file-outside-call-scope", "high", "alerted", Some(3)), t0).is_none(), "not above what went out");
        let kill = inc.admit(alert("download-and-execute", "critical", "killed_in_kernel", Some(3)), t0).expect("a kill always goes out");
        assert_eq!(tag(&kill).id, tag(&first).id);
        assert_eq!(tag(&kill).chain.as_ref().unwrap().len(), 4, "the chain of evidence: {kill:?}");
        let deny = inc.admit(alert("cloud-metadata-connect", "low", "denied_in_kernel", Some(3)), t0).expect("a deny always goes out");
        assert_eq!(tag(&deny).seq, 5);
        // Another call is another incident.
        let other = inc.admit(alert("file-outside-call-scope", "medium", "alerted", Some(4)), t0).expect("new incident");
        assert_ne!(tag(&other).id, tag(&first).id);
        // Nothing ends before it is quiet; then one record per incident that folded something.
        assert!(inc.flush(t0 + Duration::from_secs(1), false, "t").is_empty());
        let recs = inc.flush(t0 + Duration::from_secs(6), false, "t");
        assert_eq!(recs.len(), 1, "{recs:?}");
        let r = v(&recs[0]);
        assert_eq!((r["kind"].as_str(), r["alerts"].as_u64(), r["folded"].as_u64()), (Some("incident"), Some(5), Some(2)));
        assert_eq!(r["severity"], "critical");
    }

    #[test]
    fn a_call_ends_when_quiet_and_alerts_outside_calls_pass() {
        let mut inc = Incidents::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(inc.admit(alert("file-outside-call-scope", "medium", "alerted", Some(9)), t0).is_some());
        assert!(inc.admit(alert("file-outside-call-scope", "medium", "alerted", Some(9)), t0 + Duration::from_secs(1)).is_none());
        assert!(inc.admit(alert("file-outside-call-scope", "medium", "alerted", Some(9)), t0 + Duration::from_secs(7)).is_some(), "quiet for 6 s: a new incident");
        for _ in 0..2 {
            assert!(inc.admit(alert("network-while-idle", "medium", "alerted", None), t0).is_some(), "no call, no shared cause");
        }
        let mut health = alert("sensor-table-full", "high", "alerted", None);
        (health.server, health.process, health.mcp) = (None, None, None);
        assert!(inc.admit(health.clone(), t0).is_some() && inc.admit(health, t0).is_some(), "monitor alerts pass");
        let off = &mut Incidents::new(Duration::ZERO);
        assert!(off.admit(alert("a", "low", "alerted", Some(1)), t0).is_some() && off.admit(alert("a", "low", "alerted", Some(1)), t0).is_some(), "0 turns folding off");
        assert_eq!(inc.flush(t0 + Duration::from_secs(20), true, "t").len(), 1);
    }
}
