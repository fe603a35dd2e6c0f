//! JSON-RPC 2.0 messages as MCP uses them, parsed from framed bytes. Complete messages are parsed
//! with serde_json; truncated ones (bigger than the capture) by a tolerant scan that recovers the
//! top-level `id` and `method` (from the head, or from the tail where the Node SDK puts `"id"` after
//! `"result"`) and a tools/call's `params.name`.
use serde::Serialize;
use serde_json::Value;

use super::framing::Message;

/// A JSON-RPC id, normalised to its JSON text (`5`, `"abc"`), so ids of either type pair up.
pub type Id = String;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rpc {
    Request { id: Id, method: String, params: Option<Value>, truncated: bool },
    Notification { method: String, params: Option<Value>, truncated: bool },
    Response { id: Id, result: Option<Value>, error: Option<Value>, truncated: bool },
    /// Not JSON-RPC (garbage, or a truncated message whose shape could not be recovered).
    Invalid { reason: String },
}

pub fn parse(msg: &Message) -> Vec<Rpc> {
    if let Some(bytes) = msg.complete() {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Array(batch)) => batch.iter().map(from_value).collect(),
            Ok(v) => vec![from_value(&v)],
            Err(e) => vec![Rpc::Invalid { reason: format!("not JSON: {e}") }],
        };
    }
    vec![tolerant(msg)]
}

fn id_text(v: &Value) -> Option<Id> {
    match v {
        Value::Number(_) | Value::String(_) => Some(v.to_string()),
        _ => None,
    }
}

pub fn from_value(v: &Value) -> Rpc {
    let Some(obj) = v.as_object() else { return Rpc::Invalid { reason: "not an object".into() } };
    let id = obj.get("id").and_then(id_text);
    let method = obj.get("method").and_then(Value::as_str).map(str::to_string);
    match (id, method) {
        (Some(id), Some(method)) => Rpc::Request { id, method, params: obj.get("params").cloned(), truncated: false },
        (None, Some(method)) => Rpc::Notification { method, params: obj.get("params").cloned(), truncated: false },
        (Some(id), None) if obj.contains_key("result") || obj.contains_key("error") => Rpc::Response {
            id,
            result: obj.get("result").cloned(),
            error: obj.get("error").cloned(),
            truncated: false,
        },
        _ => Rpc::Invalid { reason: "neither request, notification nor response".into() },
    }
}

/// Scans the head of a truncated message for top-level keys; depth-aware, string-aware.
fn scan_head(head: &[u8]) -> (Option<Id>, Option<String>, Option<String>, bool, bool) {
    let (mut id, mut method, mut tool) = (None, None, None);
    let (mut has_result, mut has_error) = (false, false);
    let mut depth = 0i32;
    let mut i = 0;
    let mut key: Option<(String, i32)> = None;
    let mut in_params = false;
    while i < head.len() {
        match head[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b'"' => {
                let (s, end) = read_string(head, i);
                let Some(end) = end else { break };
                // A string followed by ':' is a key.
                let mut j = end;
                while j < head.len() && head[j].is_ascii_whitespace() {
                    j += 1;
                }
                if head.get(j) == Some(&b':') {
                    key = Some((s.clone(), depth));
                    if depth == 1 {
                        in_params = s == "params";
                        has_result |= s == "result";
                        has_error |= s == "error";
                    }
                    i = j + 1;
                    continue;
                }
                if let Some((k, d)) = key.take() {
                    if d == 1 && k == "method" {
                        method = Some(s.clone());
                    } else if d == 1 && k == "id" {
                        id = Some(format!("\"{s}\""));
                    } else if d == 2 && in_params && k == "name" {
                        tool = Some(s.clone());
                    }
                }
                i = end;
                continue;
            }
            b'0'..=b'9' | b'-' => {
                if let Some((k, 1)) = &key {
                    if k == "id" {
                        let end = head[i..].iter().position(|c| !(c.is_ascii_digit() || *c == b'-')).map(|p| i + p);
                        if let Some(end) = end {
                            id = Some(String::from_utf8_lossy(&head[i..end]).into_owned());
                        }
                    }
                }
                key = None;
            }
            b',' => key = None,
            _ => {}
        }
        i += 1;
    }
    (id, method, tool, has_result, has_error)
}

/// Reads a JSON string starting at the quote at `start`; returns it and the index after it.
fn read_string(b: &[u8], start: usize) -> (String, Option<usize>) {
    let mut i = start + 1;
    let mut out = Vec::new();
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if let Some(&c) = b.get(i + 1) {
                    out.push(c);
                }
                i += 2;
            }
            b'"' => return (String::from_utf8_lossy(&out).into_owned(), Some(i + 1)),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (String::new(), None)
}

/// The `"id"` that closes a message: `…,"id":7}` or `…"id":"x"}` at the very end of the tail.
fn tail_id(tail: &[u8]) -> Option<Id> {
    let s = String::from_utf8_lossy(tail);
    let t = s.trim_end();
    let t = t.strip_suffix('}')?.trim_end();
    let pos = t.rfind("\"id\"")?;
    let after = t[pos + 4..].trim_start().strip_prefix(':')?.trim();
    let ok = after.parse::<i64>().is_ok() || (after.starts_with('"') && after.ends_with('"') && after.len() >= 2 && !after[1..after.len() - 1].contains('"'));
    ok.then(|| after.to_string())
}

fn tolerant(msg: &Message) -> Rpc {
    let (head_id, method, tool, has_result, has_error) = scan_head(&msg.head);
    let id = head_id.or_else(|| tail_id(&msg.tail));
    let params = tool.map(|t| serde_json::json!({ "name": t }));
    match (id, method) {
        (Some(id), Some(method)) => Rpc::Request { id, method, params, truncated: true },
        (None, Some(method)) => Rpc::Notification { method, params, truncated: true },
        (Some(id), None) if has_result || has_error => Rpc::Response {
            id,
            result: None,
            error: has_error.then(|| Value::String("(truncated)".into())),
            truncated: true,
        },
        _ => Rpc::Invalid { reason: format!("truncated message of {} bytes without a recoverable id/method", msg.len) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(s: &str) -> Message {
        Message { head: s.as_bytes().to_vec().into(), tail: Default::default(), truncated: false, len: s.len() as u64, ts_mono_ns: 0 }
    }

    #[test]
    fn complete_messages() {
        let r = parse(&whole(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/tmp/a"}}}"#));
        let Rpc::Request { id, method, params, truncated } = &r[0] else { panic!("{r:?}") };
        assert_eq!((id.as_str(), method.as_str(), *truncated), ("3", "tools/call", false));
        assert_eq!(params.as_ref().unwrap()["arguments"]["path"], "/tmp/a");
        // Node SDK order: result before id.
        let r = parse(&whole(r#"{"result":{"content":[]},"jsonrpc":"2.0","id":"abc"}"#));
        assert!(matches!(&r[0], Rpc::Response { id, .. } if id == "\"abc\""));
        let r = parse(&whole(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#));
        assert!(matches!(&r[0], Rpc::Notification { method, .. } if method == "notifications/initialized"));
        let r = parse(&whole(r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":-1}}]"#));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        for g in ["", "{", "\u{0}\u{1}binary", "[1,2]", "{\"jsonrpc\":\"2.0\"}", "null"] {
            for r in parse(&whole(g)) {
                assert!(matches!(r, Rpc::Invalid { .. }), "{g:?} → {r:?}");
            }
        }
    }

    #[test]
    fn truncated_reply_with_id_in_the_tail() {
        let m = Message {
            head: br#"{"result":{"content":[{"type":"text","text":"{\"id\":99, lots of file"#.to_vec().into(),
            tail: br#"end of file"}]},"jsonrpc":"2.0","id":12}"#.to_vec().into(),
            truncated: true,
            len: 1 << 20,
            ts_mono_ns: 0,
        };
        // The "id":99 inside the file content is at depth > 1 and must not be taken.
        let r = parse(&m);
        assert!(matches!(&r[0], Rpc::Response { id, truncated: true, .. } if id == "12"), "{r:?}");
    }

    #[test]
    fn truncated_request_keeps_method_and_tool() {
        let m = Message {
            head: br#"{"jsonrpc":"2.0","id":"r-9","method":"tools/call","params":{"name":"write_file","arguments":{"content":"xxxx"#.to_vec().into(),
            tail: br#"xxxx"}}}"#.to_vec().into(),
            truncated: true,
            len: 5 << 20,
            ts_mono_ns: 0,
        };
        let r = parse(&m);
        let Rpc::Request { id, method, params, truncated } = &r[0] else { panic!("{r:?}") };
        assert_eq!((id.as_str(), method.as_str(), *truncated), ("\"r-9\"", "tools/call", true));
        assert_eq!(params.as_ref().unwrap()["name"], "write_file");
    }
}
