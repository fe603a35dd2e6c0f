//! Throttling of repeated alerts: the first alert for a key (rule, server, executable, target)
//! in a window goes out; repeats inside the window are counted, and the count goes out when the
//! window closes (`alert_suppressed` record) so nothing is lost silently. Alerts whose action
//! did something (kill, deny) are never throttled.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

pub struct Throttle {
    window: Duration,
    open: HashMap<String, (Instant, u64, Value)>,
}

/// Keys held at once; beyond this the oldest windows are closed early.
const MAX_KEYS: usize = 10_000;

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self { window, open: HashMap::new() }
    }

    /// What makes two alerts "the same": rule, server, executable, target, and for tool checks
    /// the finding itself (each poisoned description is its own alert).
    fn key(a: &Value) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}{}\u{0}{}:{}\u{0}{}{}{}",
            a["rule"]["id"].as_str().unwrap_or(""),
            a["server"]["name"].as_str().unwrap_or(""),
            a["process"]["exe"].as_str().unwrap_or(""),
            a["file"].as_str().unwrap_or(""),
            a["event"]["addr"].as_str().unwrap_or(""),
            a["event"]["kind"].as_str().unwrap_or(""),
            a["event"]["port"],
            a["finding"],
            a["collision"],
            a["diff"]
        )
    }

    /// Whether the alert goes out now.
    pub fn admit(&mut self, a: &Value, now: Instant) -> bool {
        if window_free(a) || self.window.is_zero() {
            return true;
        }
        let k = Self::key(a);
        match self.open.get_mut(&k) {
            Some((start, n, _)) if now.duration_since(*start) < self.window => {
                *n += 1;
                false
            }
            _ => {
                if self.open.len() >= MAX_KEYS {
                    self.open.retain(|_, (s, n, _)| *n > 0 || now.duration_since(*s) < self.window);
                }
                self.open.insert(k, (now, 0, json!({"rule": a["rule"]["id"], "server": a["server"]["name"], "exe": a["process"]["exe"], "target": a["file"]})));
                true
            }
        }
    }

    /// Closes expired windows: one record per key that had repeats.
    pub fn flush(&mut self, now: Instant, force: bool) -> Vec<Value> {
        let mut out = Vec::new();
        let window = self.window;
        self.open.retain(|_, (start, n, what)| {
            let expired = force || now.duration_since(*start) >= window;
            if expired && *n > 0 {
                let mut r = what.clone();
                r["kind"] = "alert_suppressed".into();
                r["count"] = (*n).into();
                r["window_s"] = window.as_secs_f64().into();
                out.push(r);
            }
            !expired
        });
        out
    }
}

/// A kill ends a process, so each one is its own incident and always reported. Repeated
/// refusals of the same read by the same server (a retry loop, a tool walking a directory) are
/// one incident: the first is reported, the rest counted.
fn window_free(a: &Value) -> bool {
    let r = a["action"]["result"].as_str().unwrap_or("");
    r.contains("killed") || !matches!(r, "alerted" | "would_kill" | "would_deny" | "denied_in_kernel" | "allowed_by_grant")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_and_reported() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let a = json!({"rule": {"id": "r"}, "server": {"name": "s"}, "process": {"exe": "/bin/x"}, "file": "/f", "action": {"result": "alerted"}});
        let t0 = Instant::now();
        assert!(t.admit(&a, t0));
        for _ in 0..5 {
            assert!(!t.admit(&a, t0 + Duration::from_secs(1)));
        }
        let kill = json!({"rule": {"id": "r"}, "server": {"name": "s"}, "action": {"result": "killed_in_kernel"}});
        assert!(t.admit(&kill, t0) && t.admit(&kill, t0), "enforcement is never throttled");
        assert!(t.flush(t0 + Duration::from_secs(2), false).is_empty());
        let f = t.flush(t0 + Duration::from_secs(11), false);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0]["count"], 5);
        assert!(t.admit(&a, t0 + Duration::from_secs(12)), "a new window");
    }
}
