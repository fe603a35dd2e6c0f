//! Throttling of repeated alerts: the first alert for a key (rule, server, executable, target)
//! in a window goes out; repeats inside the window are counted, and the count goes out when the
//! window closes (`alert_suppressed` record) so nothing is lost silently. Alerts whose action
//! did something (kill, deny) are never throttled.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::output::{alert::Alert, record::Suppressed, Record};

pub struct Throttle {
    window: Duration,
    open: HashMap<String, (Instant, u64, What)>,
}

/// What the `alert_suppressed` record names.
struct What {
    rule: String,
    server: Option<String>,
    exe: Option<String>,
    target: Option<String>,
}

/// Keys held at once; beyond this the oldest windows are closed early.
const MAX_KEYS: usize = 10_000;

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Self { window, open: HashMap::new() }
    }

    /// What makes two alerts "the same": rule, server, executable, target, and for tool checks
    /// the finding itself (each poisoned description is its own alert).
    fn key(a: &Alert) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}{}\u{0}{}:{}\u{0}{}{}{}",
            a.rule.id,
            a.server_name().unwrap_or(""),
            a.exe().unwrap_or(""),
            a.file().unwrap_or(""),
            a.event_field("addr").as_str().unwrap_or(""),
            a.event_field("kind").as_str().unwrap_or(""),
            a.event_field("port"),
            a.evidence("finding"),
            a.evidence("collision"),
            a.evidence("diff")
        )
    }

    /// Whether the alert goes out now.
    pub fn admit(&mut self, a: &Alert, now: Instant) -> bool {
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
                let what = What { rule: a.rule.id.clone(), server: a.server_name().map(str::to_string), exe: a.exe().map(str::to_string), target: a.file().map(str::to_string) };
                self.open.insert(k, (now, 0, what));
                true
            }
        }
    }

    /// Closes expired windows: one record per key that had repeats.
    pub fn flush(&mut self, now: Instant, force: bool, time: &str) -> Vec<Record> {
        let mut out = Vec::new();
        let window = self.window;
        self.open.retain(|_, (start, n, what)| {
            let expired = force || now.duration_since(*start) >= window;
            if expired && *n > 0 {
                out.push(Record::AlertSuppressed(Suppressed {
                    time: time.into(),
                    rule: what.rule.clone(),
                    server: what.server.clone(),
                    exe: what.exe.clone(),
                    target: what.target.clone(),
                    count: *n,
                    window_s: window.as_secs_f64(),
                }));
            }
            !expired
        });
        out
    }
}

/// A kill ends a process, so each one is its own incident and always reported. Repeated
/// refusals of the same read by the same server (a retry loop, a tool walking a directory) are
/// one incident: the first is reported, the rest counted.
fn window_free(a: &Alert) -> bool {
    use crate::output::alert::ActionResult as R;
    !matches!(a.action.result, R::Alerted | R::WouldKill | R::WouldDeny | R::DeniedInKernel | R::AllowedByGrant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::alert::{test_alert, ActionResult};

    #[test]
    fn repeats_are_counted_and_reported() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let a = test_alert("r", "medium", ActionResult::Alerted, None);
        let t0 = Instant::now();
        assert!(t.admit(&a, t0));
        for _ in 0..5 {
            assert!(!t.admit(&a, t0 + Duration::from_secs(1)));
        }
        let kill = test_alert("r", "medium", ActionResult::KilledInKernel, None);
        assert!(t.admit(&kill, t0) && t.admit(&kill, t0), "enforcement is never throttled");
        assert!(t.flush(t0 + Duration::from_secs(2), false, "t").is_empty());
        let f = t.flush(t0 + Duration::from_secs(11), false, "t");
        assert_eq!(f.len(), 1);
        let v = serde_json::to_value(&f[0]).unwrap();
        assert_eq!((v["kind"].as_str(), v["count"].as_u64(), v["exe"].as_str()), (Some("alert_suppressed"), Some(5), Some("/bin/sh")));
        assert!(t.admit(&a, t0 + Duration::from_secs(12)), "a new window");
    }
}
