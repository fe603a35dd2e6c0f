//! Per-server baseline profiles: in learn mode every exec, open and connect of a server's tree is
//! recorded under the server's name (with its version from the MCP handshake); in enforce mode
//! `profile.exists`/`profile.fits` tell the rules whether an event is something the server did
//! while it was learned. Profiles are YAML files a person reviews in a pull request; entries are
//! globs, so a reviewer can generalise them.
use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::glob::Glob;

/// Entries kept per list: a profile is for review, not a log.
const MAX_ENTRIES: usize = 2000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub exec: BTreeSet<String>,
    #[serde(default)]
    pub open: BTreeSet<String>,
    #[serde(default)]
    pub connect: BTreeSet<String>,
    /// Rules (ids) the kernel enforced against the server while it was learned: what it would
    /// need granted. Kept in the reviewed profile, they are grants in enforce mode.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub grants: BTreeSet<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Learn,
    Enforce,
}

struct Compiled {
    version: Option<String>,
    grants: Vec<String>,
    exec: Vec<Glob>,
    open: Vec<Glob>,
    connect: Vec<Glob>,
}

pub struct Profiles {
    pub dir: PathBuf,
    pub mode: Mode,
    learned: HashMap<String, Profile>,
    compiled: HashMap<String, Compiled>,
    dirty: bool,
}

/// What an event contributes to a profile: (list, value).
pub fn entry(kind: &str, exe: Option<&str>, path: Option<&str>, net: Option<String>) -> Option<(&'static str, String)> {
    match kind {
        "exec" => exe.map(|e| ("exec", e.to_string())),
        "open" => path.map(|p| ("open", generalize(p))),
        "connect" | "send" => net.map(|n| ("connect", n)),
        _ => None,
    }
}

/// `/proc/1234/…` → `/proc/*/…`: pids change every run.
fn generalize(p: &str) -> String {
    let mut parts: Vec<&str> = p.split('/').collect();
    if parts.len() > 2 && parts[1] == "proc" && parts[2].bytes().all(|b| b.is_ascii_digit()) && !parts[2].is_empty() {
        parts[2] = "*";
    }
    parts.join("/")
}

fn file_name(server: &str) -> String {
    let safe: String = server.chars().map(|c| if c.is_ascii_alphanumeric() || "._-@".contains(c) { c } else { '_' }).collect();
    format!("{safe}.yaml")
}

impl Profiles {
    pub fn open(dir: &Path, mode: Mode) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut p = Self { dir: dir.into(), mode, learned: HashMap::new(), compiled: HashMap::new(), dirty: false };
        for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let prof: Profile = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let globs = |v: &BTreeSet<String>, path_mode| v.iter().map(|g| Glob::new(g, path_mode)).collect::<Result<Vec<_>, _>>();
            let c = Compiled {
                version: prof.version.clone(),
                grants: prof.grants.iter().cloned().collect(),
                exec: globs(&prof.exec, true).map_err(|e| format!("{}: {e}", path.display()))?,
                open: globs(&prof.open, true).map_err(|e| format!("{}: {e}", path.display()))?,
                connect: globs(&prof.connect, false).map_err(|e| format!("{}: {e}", path.display()))?,
            };
            p.compiled.insert(prof.server.clone(), c);
            if mode == Mode::Learn {
                // Learning extends what is there.
                p.learned.insert(prof.server.clone(), prof);
            }
        }
        Ok(p)
    }

    pub fn learn(&mut self, server: &str, version: Option<&str>, list: &str, value: String) {
        let prof = self.learned.entry(server.to_string()).or_insert_with(|| Profile { server: server.into(), ..Default::default() });
        if version.is_some() && prof.version.as_deref() != version {
            prof.version = version.map(str::to_string);
            self.dirty = true;
        }
        let set = match list {
            "exec" => &mut prof.exec,
            "open" => &mut prof.open,
            _ => &mut prof.connect,
        };
        if set.len() < MAX_ENTRIES && set.insert(value) {
            self.dirty = true;
        }
    }

    /// A rule the kernel enforced against `server` while learning: a grant it would need.
    pub fn learn_grant(&mut self, server: &str, rule: &str) {
        let prof = self.learned.entry(server.to_string()).or_insert_with(|| Profile { server: server.into(), ..Default::default() });
        if prof.grants.insert(rule.to_string()) {
            self.dirty = true;
        }
    }

    /// Grants (rule ids) of every enforced profile, by server name: reviewed profiles grant
    /// what they list.
    pub fn grants(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        if self.mode != Mode::Enforce {
            return Default::default();
        }
        self.compiled.iter().filter(|(_, c)| !c.grants.is_empty()).map(|(n, c)| (n.clone(), c.grants.clone())).collect()
    }

    /// `(exists, fits)` for an event of `server`. A profile learned for another version of the
    /// server does not count (a changed server is a new server).
    pub fn check(&self, server: &str, version: Option<&str>, list: &str, value: &str) -> (bool, bool) {
        let Some(c) = self.compiled.get(server) else { return (false, true) };
        if let (Some(want), Some(have)) = (&c.version, version) {
            if want != have {
                return (false, true);
            }
        }
        let globs = match list {
            "exec" => &c.exec,
            "open" => &c.open,
            _ => &c.connect,
        };
        (true, globs.iter().any(|g| g.matches(value)))
    }

    /// Writes learned profiles (sorted lists, so reviews see small diffs).
    pub fn save(&mut self) -> std::io::Result<usize> {
        if !self.dirty {
            return Ok(0);
        }
        for p in self.learned.values() {
            let text = format!(
                "# mcpmon profile: what server {:?} did while learned. Review like code; entries are globs.\n{}",
                p.server,
                serde_yaml::to_string(p).map_err(std::io::Error::other)?
            );
            let path = self.dir.join(file_name(&p.server));
            let tmp = path.with_extension("yaml.tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)?;
        }
        self.dirty = false;
        Ok(self.learned.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_save_reload_check() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Profiles::open(d.path(), Mode::Learn).unwrap();
        p.learn("fs", Some("1.0"), "exec", "/usr/bin/node".into());
        p.learn("fs", Some("1.0"), "open", generalize("/proc/4242/status"));
        p.learn("fs", Some("1.0"), "connect", "127.0.0.1:5432".into());
        assert_eq!(p.save().unwrap(), 1);
        let text = std::fs::read_to_string(d.path().join("fs.yaml")).unwrap();
        assert!(text.contains("/proc/*/status") && text.contains("version: '1.0'") || text.contains("version: \"1.0\"") || text.contains("version: 1.0"), "{text}");
        let e = Profiles::open(d.path(), Mode::Enforce).unwrap();
        assert_eq!(e.check("fs", Some("1.0"), "open", "/proc/99/status"), (true, true));
        assert_eq!(e.check("fs", Some("1.0"), "open", "/etc/shadow"), (true, false));
        assert_eq!(e.check("fs", Some("2.0"), "open", "/etc/shadow"), (false, true), "another version has no profile");
        assert_eq!(e.check("other", None, "exec", "/bin/sh"), (false, true));
    }

    #[test]
    fn refusals_while_learning_become_grants_when_enforced() {
        let d = tempfile::tempdir().unwrap();
        let mut p = Profiles::open(d.path(), Mode::Learn).unwrap();
        p.learn_grant("aws", "cloud-credentials-read");
        p.learn_grant("aws", "cloud-credentials-read");
        p.save().unwrap();
        let text = std::fs::read_to_string(d.path().join("aws.yaml")).unwrap();
        assert!(text.contains("grants:") && text.contains("cloud-credentials-read"), "{text}");
        assert!(Profiles::open(d.path(), Mode::Learn).unwrap().grants().is_empty(), "learning grants nothing");
        let e = Profiles::open(d.path(), Mode::Enforce).unwrap();
        assert_eq!(e.grants().get("aws"), Some(&vec!["cloud-credentials-read".to_string()]));
    }
}
