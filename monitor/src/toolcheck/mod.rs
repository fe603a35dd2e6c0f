//! Checks on the tool sets servers announce in `tools/list` replies seen on the wire:
//! pinning against rug pulls (`pin`), poisoning in descriptions (`poison`), and the same tool name
//! on several servers (`collide`).
pub mod collide;
pub mod labelled;
pub mod pin;
pub mod poison;
pub mod poison_set;
pub mod results;
pub mod secrets;
pub mod text;

use serde::{Deserialize, Serialize};

/// Ids of the alerts the tool-list checks raise (daemon/toolwatch.rs). They are not YAML rules,
/// but a site tunes them the same way: `exceptions:` in a rules file (docs/rules.md, Tuning).
pub const BUILTIN_RULES: &[&str] = &["mcp.tool_poisoning", "mcp.tool_set_changed", "mcp.tool_name_collision"];
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub input_schema: Value,
}

/// Tools of a `tools/list` result: `{"tools":[{"name","description","inputSchema"}…]}`.
pub fn tools_from_list_result(result: &Value) -> Vec<Tool> {
    result["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| {
                    Some(Tool {
                        name: t["name"].as_str()?.to_string(),
                        description: t["description"].as_str().unwrap_or_default().to_string(),
                        input_schema: t.get("inputSchema").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The fields an exception for a tool-check alert can test: `server.name`, `mcp.tool` and
/// `mcp.finding` (the event is `tools`, a `tools/list` reply).
pub fn alert_ctx(server: &str, tool: Option<&str>, finding: Option<&str>) -> crate::rules::Ctx {
    let mut c = crate::rules::Ctx::default();
    c.str("event", "tools");
    c.str("server.name", server.to_string());
    if let Some(t) = tool {
        c.set("mcp.tool", crate::rules::Val::List(vec![t.to_string().into()]));
    }
    if let Some(f) = finding {
        c.str("mcp.finding", f.to_string());
    }
    c
}
