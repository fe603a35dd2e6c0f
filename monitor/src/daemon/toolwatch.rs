//! Tool-set checks on every `tools/list` reply: pinning (rug pulls), poisoning, name collisions.
use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::Pipeline;
use crate::toolcheck::{
    collide::collisions,
    pin::{PinOutcome, PinStore},
    poison, tools_from_list_result, Tool,
};

/// Tool sets seen per server, and what was already reported.
#[derive(Default)]
pub struct ToolWatch {
    pub pins: Option<PinStore>,
    pub tools: HashMap<u32, Vec<Tool>>,
    reported_collisions: BTreeSet<(String, Vec<String>)>,
    pub alerts: HashMap<u32, u64>,
}

impl Pipeline {
    /// Handles an `mcp_tools` record (in place: its full tool list is removed after use).
    pub(super) async fn check_tools(&mut self, r: &mut Value) {
        let Some(id) = r["server_id"].as_u64().map(|v| v as u32) else { return };
        let detail = r.as_object_mut().and_then(|m| m.remove("tools_detail")).unwrap_or(Value::Null);
        let tools = tools_from_list_result(&json!({ "tools": detail }));
        let server = self.tracker.server(id).map(|s| s.name.clone()).unwrap_or_default();
        // Pin per server identity: what the server says it is (name@version), else its name here.
        let info = self.corr.session(id).and_then(|s| s.server_info.clone()).unwrap_or(Value::Null);
        let key = match (info["name"].as_str(), info["version"].as_str()) {
            (Some(n), Some(v)) => format!("{n}@{v}"),
            _ => server.clone(),
        };
        let mut alerts = vec![];
        if let Some(pins) = self.tools_watch.pins.as_mut() {
            match pins.check(&key, &tools) {
                Ok(PinOutcome::Changed(d)) => alerts.push(json!({
                    "rule": rule("mcp.tool_set_changed", "high", "The tool set a server offers changed since it was pinned (rug pull).", &["T1195.002"]),
                    "summary": format!("tools of {key} changed since they were pinned (rug pull?): {}", d.summary()),
                    "diff": d, "pin": key,
                })),
                Ok(PinOutcome::FirstSeen) => tracing::info!("pinned the {} tools of {key}", tools.len()),
                Ok(PinOutcome::Unchanged) => {}
                Err(e) => tracing::error!("tool pinning: {e}"),
            }
        }
        let others: Vec<(String, String)> = self
            .tools_watch
            .tools
            .iter()
            .filter(|(sid, _)| **sid != id)
            .flat_map(|(sid, ts)| {
                let n = self.tracker.server(*sid).map(|s| s.name.clone()).unwrap_or_default();
                ts.iter().map(move |t| (n.clone(), t.name.clone()))
            })
            .collect();
        for t in &tools {
            for f in poison::scan(t, &others) {
                alerts.push(json!({
                    "rule": rule("mcp.tool_poisoning", if f.kind == poison::FindingKind::LongDescription { "low" } else { "high" }, "A tool description carries instructions or content aimed at the model (tool poisoning, shadowing).", &["T1027", "T1204"]),
                    "summary": format!("tool {:?} of {server}: {}", t.name, f.detail), "tool": t.name, "finding": f,
                }));
            }
        }
        self.tools_watch.tools.insert(id, tools);
        let sets: Vec<(String, Vec<Tool>)> = self
            .tools_watch
            .tools
            .iter()
            .map(|(sid, ts)| (self.tracker.server(*sid).map(|s| s.name.clone()).unwrap_or_default(), ts.clone()))
            .collect();
        for c in collisions(&sets).into_iter().filter(|c| c.servers.contains(&server)) {
            if self.tools_watch.reported_collisions.insert((c.tool.clone(), c.servers.clone())) {
                alerts.push(json!({
                    "rule": rule("mcp.tool_name_collision", "medium", "Several servers offer a tool of the same name (shadowing).", &["T1036"]),
                    "summary": format!("tool {:?} is offered by {}", c.tool, c.servers.join(", ")), "collision": c,
                }));
            }
        }
        for mut a in alerts {
            *self.tools_watch.alerts.entry(id).or_default() += 1;
            a["kind"] = "alert".into();
            a["schema"] = 1.into();
            a["action"] = json!({"type": "alert", "result": "alerted"});
            a["server_id"] = id.into();
            a["server"] = json!({"id": id, "name": server});
            a["time"] = Self::now().into();
            a["host"] = self.host.clone().into();
            tracing::warn!("alert {}: {}", a["rule"]["id"], a["summary"]);
            self.emit_alert(a).await;
        }
    }
}

/// The `rule` object of a built-in tool-check alert (same shape as YAML rules' alerts).
fn rule(id: &str, severity: &str, description: &str, mitre: &[&str]) -> Value {
    json!({"id": id, "severity": severity, "description": description, "tags": ["mcp"], "mitre": mitre})
}
