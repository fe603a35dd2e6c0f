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
