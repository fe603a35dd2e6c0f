//! The local control socket: `mcpmon exec` asks the daemon to track its own pid before it execs
//! the server. One JSON object per line each way. There is no request that reduces monitoring.
pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

pub const DEFAULT_SOCKET: &str = "/run/mcpmon/mcpmon.sock";
/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Track `pid` (default: the caller itself, from SO_PEERCRED) as server `name`.
    Track { name: String, #[serde(default, skip_serializing_if = "Option::is_none")] pid: Option<u32> },
    Ping,
    /// What is tracked: `mcpmon servers`.
    Servers,
    /// Stream every line the daemon writes (root only): what `mcpmon top` reads.
    Tail,
}

/// What the control socket asks of the pipeline.
#[derive(Debug)]
pub enum ControlMsg {
    Track(crate::tracker::TrackRequest),
    Servers(tokio::sync::oneshot::Sender<serde_json::Value>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub already_tracked: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_pids: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pong: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn error(msg: impl Into<String>) -> Self {
        Self { ok: false, error: Some(msg.into()), ..Default::default() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another mcpmon daemon is listening on {0}")]
    InUse(String),
    #[error("control socket {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("no answer from the daemon on {0} (timed out)")]
    Timeout(String),
    #[error("bad response from the daemon: {0}")]
    BadResponse(String),
    #[error("the daemon refused: {0}")]
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r: Request = serde_json::from_str(r#"{"op":"track","name":"fs"}"#).unwrap();
        assert_eq!(r, Request::Track { name: "fs".into(), pid: None });
        let r: Request = serde_json::from_str(r#"{"op":"track","name":"fs","pid":12}"#).unwrap();
        assert_eq!(r, Request::Track { name: "fs".into(), pid: Some(12) });
        assert!(serde_json::from_str::<Request>(r#"{"op":"untrack","pid":1}"#).is_err());
        assert_eq!(serde_json::to_string(&Request::Ping).unwrap(), r#"{"op":"ping"}"#);
    }
}
