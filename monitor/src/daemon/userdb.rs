//! The user database as the protection plan reads it: the homes that `~/` in the rules expands
//! to. Others rewrite the file while the daemon runs. An edit in place (truncate, then write,
//! as a script's `: > passwd` and `echo … >> passwd` do) read between its steps looks like a
//! database with fewer users, or none: a re-plan on that read unprotected every home the
//! database had named all along, and a server acknowledged then read a key in one.
//!
//! So a home that leaves the database stays protected for `SETTLE`, and only a read that still
//! misses it after that lets it go. The watch sees the edit's end and re-plans; a user really
//! removed (`userdel`) keeps a protected home for two seconds more, which costs nothing.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::rules::load::homes_from_passwd;

/// How long a home that left the database stays protected.
pub const SETTLE: Duration = Duration::from_secs(2);

pub struct UserDb {
    path: PathBuf,
    /// The homes the last read named.
    named: BTreeSet<String>,
    /// Homes the database no longer names, and when a read first missed each.
    leaving: BTreeMap<String, Instant>,
}

impl UserDb {
    pub fn new(path: &Path) -> Self {
        Self { path: path.into(), named: BTreeSet::new(), leaving: BTreeMap::new() }
    }

    /// Reads the database: the homes it names, and those it stopped naming less than `SETTLE`
    /// before `now`.
    pub fn homes(&mut self, now: Instant) -> Vec<String> {
        // A database missing for a moment (replaced without a rename) names nobody: the
        // homes it named settle like any others.
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let homes = homes_from_passwd(&text);
        let named: BTreeSet<String> = homes.iter().cloned().collect();
        for gone in self.named.difference(&named) {
            self.leaving.entry(gone.clone()).or_insert(now);
        }
        self.leaving.retain(|h, since| !named.contains(h) && now.saturating_duration_since(*since) < SETTLE);
        tracing::debug!(bytes = text.len(), named = named.len(), leaving = self.leaving.len(), "user database read");
        self.named = named;
        let mut out = homes;
        out.extend(self.leaving.keys().cloned());
        out.sort();
        out.dedup();
        out
    }

    /// When the first leaving home's time is up: a read then lets it go.
    pub fn settle_at(&self) -> Option<Instant> {
        self.leaving.values().min().map(|t| *t + SETTLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, home: &Path) -> String {
        format!("{name}:x:4300:4300::{}:/bin/sh\n", home.display())
    }

    #[test]
    fn a_home_that_leaves_stays_protected_until_it_settles() {
        let t = tempfile::tempdir().unwrap();
        let passwd = t.path().join("passwd");
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&passwd, line("a", &a) + &line("b", &b)).unwrap();
        let mut db = UserDb::new(&passwd);
        let t0 = Instant::now();
        let has = |h: &[String], p: &Path| h.iter().any(|x| Path::new(x) == p);
        let h = db.homes(t0);
        assert!(has(&h, &a) && has(&h, &b), "{h:?}");
        assert_eq!(db.settle_at(), None);
        // An edit in place caught between its truncate and its write: an empty database.
        std::fs::write(&passwd, "").unwrap();
        let h = db.homes(t0 + Duration::from_millis(10));
        assert!(has(&h, &a) && has(&h, &b), "both stay protected: {h:?}");
        assert_eq!(db.settle_at(), Some(t0 + Duration::from_millis(10) + SETTLE));
        // The write lands: `a` is back and never left; `b` was really removed.
        std::fs::write(&passwd, line("a", &a)).unwrap();
        let h = db.homes(t0 + Duration::from_millis(20));
        assert!(has(&h, &a) && has(&h, &b), "{h:?}");
        // Past the settle time a read that still misses `b` lets it go, and nothing is left.
        let h = db.homes(t0 + Duration::from_millis(10) + SETTLE);
        assert!(has(&h, &a) && !has(&h, &b), "{h:?}");
        assert_eq!(db.settle_at(), None);
    }
}
