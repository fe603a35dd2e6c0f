//! The same tool name announced by more than one server: the model cannot tell which one it calls.
use std::collections::BTreeMap;

use serde::Serialize;

use super::Tool;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Collision {
    pub tool: String,
    pub servers: Vec<String>,
    /// Names equal only after case-folding and dropping `-`/`_` (`read_file` vs `readFile`).
    pub near_duplicate: bool,
}

fn fold(name: &str) -> String {
    name.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

pub fn collisions(sets: &[(String, Vec<Tool>)]) -> Vec<Collision> {
    let mut by_fold: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for (server, tools) in sets {
        for t in tools {
            by_fold.entry(fold(&t.name)).or_default().push((server.as_str(), t.name.as_str()));
        }
    }
    by_fold
        .into_values()
        .filter_map(|mut v| {
            v.sort();
            v.dedup();
            let mut servers: Vec<String> = v.iter().map(|(s, _)| s.to_string()).collect();
            servers.dedup();
            (servers.len() > 1).then(|| Collision {
                tool: v[0].1.to_string(),
                near_duplicate: v.iter().any(|(_, n)| *n != v[0].1),
                servers,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(names: &[&str]) -> Vec<Tool> {
        names.iter().map(|n| Tool { name: n.to_string(), description: String::new(), input_schema: serde_json::Value::Null }).collect()
    }

    #[test]
    fn exact_and_near_duplicates_across_servers() {
        let c = collisions(&[
            ("fs".into(), tools(&["read_file", "list_directory"])),
            ("evil".into(), tools(&["read_file", "fetch"])),
            ("other".into(), tools(&["ListDirectory"])),
            ("solo".into(), tools(&["only_mine"])),
        ]);
        assert_eq!(c.len(), 2, "{c:?}");
        let list = c.iter().find(|c| c.servers.contains(&"other".to_string())).unwrap();
        assert!(list.near_duplicate);
        let read = c.iter().find(|c| c.tool == "read_file").unwrap();
        assert_eq!((read.servers.clone(), read.near_duplicate), (vec!["evil".to_string(), "fs".to_string()], false));
    }
}
