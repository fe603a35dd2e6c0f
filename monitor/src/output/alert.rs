//! The alert record (docs/alerts.md, schema 1): one type for every alert the daemon raises, from
//! YAML rules, tool checks, result scans and the monitor's own health checks. Built through
//! `Alert::new` and its setters, so the throttle, the incidents and the metrics read typed fields
//! instead of probing JSON.
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{rules::Severity, tracker::Discovery};

/// What a rule asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    Alert,
    Kill,
    Deny,
}

impl From<crate::rules::Action> for ActionType {
    fn from(a: crate::rules::Action) -> Self {
        match a {
            crate::rules::Action::Alert => Self::Alert,
            crate::rules::Action::Kill => Self::Kill,
            crate::rules::Action::Deny => Self::Deny,
        }
    }
}

/// What was done: `action.result` in docs/alerts.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    Alerted,
    /// The kernel (syscall hook, LSM or the open gate) acted itself.
    KilledInKernel,
    DeniedInKernel,
    DeniedAndKilledInKernel,
    /// A deny rule whose connect the kernel refused (the event's own kernel action).
    Denied,
    Killed,
    DeniedAndKilled,
    /// User-space kill outcomes.
    Refused,
    Gone,
    Failed,
    WouldKill,
    WouldDeny,
    NotDenied,
    AllowedByGrant,
}

impl ActionResult {
    /// The kernel's own action, as the result of the rule it applied.
    pub fn in_kernel(k: crate::events::KernelAction) -> Self {
        use crate::events::KernelAction as K;
        match k {
            K::Killed => Self::KilledInKernel,
            K::Denied => Self::DeniedInKernel,
            K::DeniedAndKilled => Self::DeniedAndKilledInKernel,
        }
    }

    /// The same kernel action reported as is (a deny rule's result).
    pub fn as_is(k: crate::events::KernelAction) -> Self {
        use crate::events::KernelAction as K;
        match k {
            K::Killed => Self::Killed,
            K::Denied => Self::Denied,
            K::DeniedAndKilled => Self::DeniedAndKilled,
        }
    }

    /// Whether a process was killed (in the kernel or from user space).
    pub fn killed(self) -> bool {
        matches!(self, Self::KilledInKernel | Self::DeniedAndKilledInKernel | Self::Killed | Self::DeniedAndKilled)
    }

    pub fn killed_in_kernel(self) -> bool {
        matches!(self, Self::KilledInKernel | Self::DeniedAndKilledInKernel)
    }

    pub fn denied(self) -> bool {
        matches!(self, Self::DeniedInKernel | Self::DeniedAndKilledInKernel | Self::Denied | Self::DeniedAndKilled)
    }

    pub fn in_kernel_result(self) -> bool {
        matches!(self, Self::KilledInKernel | Self::DeniedInKernel | Self::DeniedAndKilledInKernel)
    }

    /// Whether it records something done (a kill, a deny, a refusal) rather than a report.
    pub fn enforces(self) -> bool {
        !matches!(self, Self::Alerted | Self::AllowedByGrant)
    }
}

/// Where a kill or refusal was decided, when not by the syscall hook itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Where {
    Userspace,
    OpenGate,
}

/// `action` of an alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActionRecord {
    #[serde(rename = "type")]
    pub kind: ActionType,
    pub result: ActionResult,
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub at: Option<Where>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// The open gate refused the read before any byte moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<&'static str>,
    /// A refused kill: why it was not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A failed kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// User-space kill: kernel event → signal sent, and the signal call itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_us: Option<u64>,
    /// `--on-loss kill`: the rest of the server's tree killed from user space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree_killed: Option<Vec<u32>>,
}

impl ActionRecord {
    pub fn new(kind: ActionType, result: ActionResult) -> Self {
        Self { kind, result, at: None, dry_run: None, bytes_read: None, why: None, reason: None, error: None, latency_us: None, signal_us: None, tree_killed: None }
    }

    pub fn alerted() -> Self {
        Self::new(ActionType::Alert, ActionResult::Alerted)
    }

    pub fn dry_run(mut self, d: bool) -> Self {
        self.dry_run = Some(d);
        self
    }
}

/// `rule` of an alert: a YAML rule's, or a built-in check's in the same shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleRef {
    pub id: String,
    pub severity: Severity,
    pub description: String,
    pub tags: Vec<String>,
    pub mitre: Vec<String>,
}

impl RuleRef {
    pub fn of(r: &crate::rules::Rule) -> Self {
        Self { id: r.id.clone(), severity: r.severity, description: r.description.clone(), tags: r.tags.clone(), mitre: r.mitre.clone() }
    }

    /// A built-in check (not a YAML rule).
    pub fn builtin(id: &str, severity: Severity, description: &str, tags: &[&str], mitre: &[&str]) -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Self { id: id.into(), severity, description: description.into(), tags: s(tags), mitre: s(mitre) }
    }
}

/// `server` of an alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerRef {
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<Discovery>,
    /// Present (maybe null) for servers the tracker knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_pid: Option<Option<u32>>,
}

impl ServerRef {
    pub fn of(s: &crate::tracker::ServerInfo) -> Self {
        Self { id: s.id, name: Some(s.name.to_string()), how: Some(s.how), client: Some(s.client.clone()), root_pid: Some(Some(s.root_pid)) }
    }

    pub fn id(id: u32) -> Self {
        Self { id, name: None, how: None, client: None, root_pid: None }
    }

    pub fn named(id: u32, name: &str) -> Self {
        Self { name: Some(name.into()), ..Self::id(id) }
    }
}

/// `process` of an alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessRef {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<Option<u32>>,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ancestry: Option<Vec<u32>>,
}

/// `incident` of an alert (alerts/incident.rs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentTag {
    pub id: String,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<Value>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub schema: u8,
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub rule: RuleRef,
    pub action: ActionRecord,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerRef>,
    /// The tool-set checks also name the server at the top level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
    /// The call in flight (`mcp.state` …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<Value>,
    /// The resolved path (present, maybe null, on alerts about a kernel event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Option<String>>,
    /// The event that triggered it, as in the event stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentTag>,
    /// The injection → action chain (toolwatch/results.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<Value>,
    /// What each check adds as its own evidence (`finding`, `findings`, `diff`, `collision`,
    /// `window`, `lost_new`, …): documented per check in docs/alerts.md.
    #[serde(flatten)]
    pub evidence: Map<String, Value>,
}

impl Alert {
    /// The one constructor: a rule (or check), what was done, and a line for a person.
    pub fn new(rule: RuleRef, action: ActionRecord, summary: String, time: String) -> Self {
        Self { schema: 1, time, host: None, rule, action, summary, process: None, server: None, server_id: None, mcp: None, file: None, event: None, incident: None, chain: None, evidence: Map::new() }
    }

    pub fn with(mut self, key: &str, v: impl Serialize) -> Self {
        self.evidence.insert(key.into(), serde_json::to_value(v).unwrap_or(Value::Null));
        self
    }

    pub fn evidence(&self, key: &str) -> &Value {
        self.evidence.get(key).unwrap_or(&Value::Null)
    }

    /// The triggering event's field (kind, addr, port …), or null.
    pub fn event_field(&self, key: &str) -> &Value {
        self.event.as_ref().and_then(|e| e.get(key)).unwrap_or(&Value::Null)
    }

    pub fn server_name(&self) -> Option<&str> {
        self.server.as_ref().and_then(|s| s.name.as_deref())
    }

    pub fn exe(&self) -> Option<&str> {
        self.process.as_ref().and_then(|p| p.exe.as_ref()).and_then(|e| e.as_deref())
    }

    pub fn file(&self) -> Option<&str> {
        self.file.as_ref().and_then(|f| f.as_deref())
    }
}

/// An alert about a process of server 7 (`s`), within call `call` when given: for the tests of
/// the stages that read alerts.
#[cfg(test)]
pub fn test_alert(rule: &str, severity: &str, result: ActionResult, call: Option<u64>) -> Alert {
    let sev: Severity = serde_json::from_value(Value::String(severity.into())).unwrap();
    let kind = if result.killed() { ActionType::Kill } else { ActionType::Alert };
    let mut a = Alert::new(RuleRef::builtin(rule, sev, "", &[], &[]), ActionRecord::new(kind, result), rule.into(), "t".into());
    a.server = Some(ServerRef::named(7, "s"));
    a.process = Some(ProcessRef { pid: 42, ppid: None, uid: 0, exe: Some(Some("/bin/sh".into())), argv: None, ancestry: None });
    a.file = Some(Some("/f".into()));
    a.mcp = Some(match call {
        Some(id) => serde_json::json!({"state": "call", "tool": "run", "id": id.to_string()}),
        None => serde_json::json!({"state": "idle"}),
    });
    a
}
