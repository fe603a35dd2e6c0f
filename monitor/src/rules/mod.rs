//! Rules stage: YAML rules (docs/rules.md) loaded from a directory, compiled once, evaluated
//! against every kernel event with its MCP context. The engine decides; `actions` carries out.
pub mod cond;
pub mod fields;
pub mod gate;
pub mod glob;
pub mod lint;
pub mod profile;
pub mod load;
mod slots;
pub mod template;
pub mod text;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use fields::{Ctx, FieldSet, Val};
pub use text::Text;
pub use load::{load_dir, LoadError};

use cond::{Cidr, Cond};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Alert,
    /// In the kernel where the rule has a `kernel:` section, else from user space (pidfd).
    Kill,
    /// connect/send only: refused with EPERM by the cgroup programs; the process lives.
    Deny,
}

/// What the kernel enforces for a rule, by inode or address prefix.
#[derive(Clone, Debug, Default)]
pub struct KernelSpec {
    /// Globs of files protected by device+inode (`~/` = every home directory).
    pub files: Vec<String>,
    /// Directories in which any write or create is enforced.
    pub dirs: Vec<String>,
    /// Shared with every read pattern planned from the rule (`protect::ReadPattern`).
    pub except: std::sync::Arc<[glob::Glob]>,
    pub executables: Vec<String>,
    pub on_read: bool,
    pub on_write: bool,
    pub addrs: Vec<Cidr>,
    pub io_uring: bool,
    /// Files in the protected directories whose content is a private key are protected too.
    pub secret_content: bool,
    /// Other processes' /proc secrets, outside the opener's server tree.
    pub foreign_proc: bool,
    /// ptrace / process_vm_{readv,writev} on processes outside the caller's server tree.
    pub proc_access: bool,
    /// Unix socket files (globs) a tracked process is killed for connecting to, by inode.
    pub sockets: Vec<String>,
    /// Executables (globs) that may connect to `sockets` when they are the server's root.
    pub root_may_connect: Vec<String>,
    /// Executables (globs) that may read `files` when they are the server's root (by inode
    /// and rule, in the kernel and the open gate).
    pub root_may_read: Vec<String>,
    /// Those of `files` (same spelling) the server's root may read while it is still the
    /// package runner it was launched through (`ROOT_RUNNERS`).
    pub runner_may_read: Vec<String>,
    /// Executables (globs) a root may run before one of those and keep the allowance.
    pub root_via: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub action: Action,
    pub events: Vec<String>,
    pub cond: Cond,
    pub output: template::Template,
    pub tags: Vec<String>,
    /// MITRE ATT&CK technique ids among the tags.
    pub mitre: Vec<String>,
    pub kernel: Option<KernelSpec>,
    pub fixtures_match: Vec<Ctx>,
    pub fixtures_no_match: Vec<Ctx>,
    pub file: PathBuf,
    pub line: usize,
    /// The condition tests `exec.ok`: the rule is about exec attempts and sees failed ones too.
    /// Every other exec rule sees successful execs only.
    pub sees_failed_execs: bool,
    /// Site exceptions (`exceptions:` in any rules file): the rule does not fire where one holds.
    pub exceptions: Vec<Cond>,
}

impl Rule {
    pub fn matches(&self, ctx: &Ctx) -> bool {
        let event = ctx.event();
        self.matches_kind(event, failed_exec(ctx), ctx)
    }

    /// `matches`, with the event's kind and whether it is a failed exec read once per event.
    fn matches_kind(&self, event: &str, failed_exec: bool, ctx: &Ctx) -> bool {
        self.events.iter().any(|e| e == event) && self.matches_of_kind(failed_exec, ctx)
    }

    /// `matches` for a rule already known to be about the event's kind.
    fn matches_of_kind(&self, failed_exec: bool, ctx: &Ctx) -> bool {
        if failed_exec && !self.sees_failed_execs {
            return false;
        }
        self.cond.eval(ctx) && !self.exceptions.iter().any(|x| x.eval(ctx))
    }
}

#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub files: Vec<PathBuf>,
    /// Server name → rule ids it is granted (file rules only; checked at load).
    pub grants: std::collections::BTreeMap<String, Vec<String>>,
    /// Site exceptions for the daemon's built-in checks (`toolcheck::BUILTIN_RULES`), by rule id.
    pub builtin_exceptions: std::collections::BTreeMap<String, Vec<Cond>>,
    /// The rules about each event kind, built on first use: an event is tested against its
    /// kind's rules only, and its context computes only the fields they read. Beside the
    /// kinds, what a kind no rule is about needs.
    pub by_kind: std::sync::OnceLock<(Vec<(String, KindRules)>, FieldSet)>,
}

/// What the rules about one event kind need.
#[derive(Clone, Debug, Default)]
pub struct KindRules {
    /// Their slots, in file order.
    pub slots: Vec<usize>,
    /// The fields they read, with those every alert carries and the profiles read.
    pub fields: FieldSet,
    /// Which of them an event's path leaves to evaluate.
    pub gate: gate::PathGate,
}

/// Whether an evaluation asks the path gate, and where its answers are remembered.
enum Gating<'m> {
    #[cfg_attr(not(test), allow(dead_code))]
    Off,
    On,
    Memo(&'m mut gate::GateMemo),
}

/// What every alert carries and the profiles read, for events of any kind.
const ALWAYS: &[&str] = &["event", "proc.exe", "file.path", "file.ok", "mcp.in_scope", "net.addr", "net.port", "net.unix_path"];

/// A failed exec: rules about execs see it only when they test `exec.ok`.
fn failed_exec(ctx: &Ctx) -> bool {
    ctx.event() == "exec" && ctx.get("exec.ok") == Some(&Val::Bool(false))
}

impl Rule {
    /// Whether a grant can lift this rule: it enforces files, directories, io_uring or /proc
    /// secrets in the kernel (grants in rules files and in profiles alike).
    pub fn grantable(&self) -> bool {
        self.kernel.as_ref().is_some_and(|k| !k.files.is_empty() || !k.dirs.is_empty() || k.io_uring || k.foreign_proc || k.proc_access || !k.sockets.is_empty())
    }
}

impl RuleSet {
    /// Whether a site exception silences the built-in check `rule` for this context.
    pub fn silenced(&self, rule: &str, ctx: &Ctx) -> bool {
        self.builtin_exceptions.get(rule).is_some_and(|x| x.iter().any(|c| c.eval(ctx)))
    }

    /// Rule slots granted to the server with this (configured) name.
    pub fn granted_slots(&self, server: &str) -> Vec<u32> {
        let Some(ids) = self.grants.get(server) else { return vec![] };
        self.rules.iter().enumerate().filter(|(_, r)| ids.contains(&r.id)).map(|(i, _)| i as u32).collect()
    }
}

impl RuleSet {
    /// The fields the rules for events of `kind` read (None: of any kind), plus those every
    /// alert carries and the profiles read: the context builder computes only these.
    pub fn fields_for(&self, kind: Option<&str>) -> FieldSet {
        let mut out: FieldSet = ALWAYS.iter().copied().collect();
        for r in self.rules.iter().filter(|r| kind.is_none_or(|k| r.events.iter().any(|e| e == k))) {
            r.cond.fields(&mut out);
            r.exceptions.iter().for_each(|x| x.fields(&mut out));
            out.extend(r.output.fields());
        }
        out
    }

    /// The rules about events of `kind` with their place among the kinds (a memo's key; None:
    /// no rule is about it), and what a kind without rules needs.
    fn kind_rules(&self, kind: &str) -> (Option<(usize, &KindRules)>, FieldSet) {
        let (kinds, none) = self.by_kind.get_or_init(|| {
            let mut kinds: Vec<(String, KindRules)> = Vec::new();
            for (slot, r) in self.rules.iter().enumerate() {
                for e in &r.events {
                    match kinds.iter_mut().find(|(k, _)| k == e) {
                        Some((_, k)) => k.slots.push(slot),
                        None => kinds.push((e.clone(), KindRules { slots: vec![slot], ..Default::default() })),
                    }
                }
            }
            for (kind, k) in &mut kinds {
                k.fields = self.fields_for(Some(kind));
                k.gate = gate::PathGate::new(k.slots.iter().map(|&s| &self.rules[s].cond));
            }
            (kinds, ALWAYS.iter().copied().collect())
        });
        (kinds.iter().enumerate().find(|(_, (k, _))| k == kind).map(|(i, (_, k))| (i, k)), *none)
    }

    /// The slots of the rules about events of `kind`, in file order.
    pub fn slots_for(&self, kind: &str) -> &[usize] {
        self.kind_rules(kind).0.map(|(_, k)| k.slots.as_slice()).unwrap_or(&[])
    }

    /// The fields the context of an event of `kind` computes: `fields_for(Some(kind))`, built
    /// once per kind.
    pub fn wanted(&self, kind: &str) -> FieldSet {
        let (rules, none) = self.kind_rules(kind);
        rules.map_or(none, |(_, k)| k.fields)
    }

    /// Rules that match, in file order. The slot of a rule is its index here. Only the rules
    /// about the event's kind that its path gate lets through are evaluated.
    pub fn eval<'a>(&'a self, ctx: &'a Ctx) -> impl Iterator<Item = (usize, &'a Rule)> + 'a {
        self.eval_gated(ctx, Gating::On)
    }

    /// `eval` without the path gate: every rule about the kind is evaluated (the reference the
    /// gate is tested against).
    #[cfg(test)]
    pub fn eval_ungated<'a>(&'a self, ctx: &'a Ctx) -> impl Iterator<Item = (usize, &'a Rule)> + 'a {
        self.eval_gated(ctx, Gating::Off)
    }

    /// `eval`, with the path gate's answers remembered in `memo` (which must be emptied when
    /// the rule set changes: the policy's memo goes with its rules).
    pub fn eval_memo<'a>(&'a self, ctx: &'a Ctx, memo: &mut gate::GateMemo) -> impl Iterator<Item = (usize, &'a Rule)> + use<'a> {
        self.eval_gated(ctx, Gating::Memo(memo))
    }

    fn eval_gated<'a>(&'a self, ctx: &'a Ctx, gating: Gating<'_>) -> impl Iterator<Item = (usize, &'a Rule)> + use<'a> {
        let failed_exec = failed_exec(ctx);
        let (slots, pass) = match self.kind_rules(ctx.event()).0 {
            Some((i, k)) => (
                k.slots.as_slice(),
                match gating {
                    Gating::Off => u64::MAX,
                    Gating::On => k.gate.passing(ctx),
                    Gating::Memo(m) => m.passing(i, &k.gate, ctx),
                },
            ),
            None => (&[][..], 0),
        };
        let gated_out = move |pos: usize| pos < gate::GATED_RULES && pass >> pos & 1 == 0;
        slots.iter().enumerate().filter(move |(pos, _)| !gated_out(*pos)).map(move |(_, &slot)| (slot, &self.rules[slot])).filter(move |(_, r)| r.matches_of_kind(failed_exec, ctx))
    }

    /// Runs every rule's fixtures: `(rule id, failure)` for each one that does not behave.
    pub fn check_fixtures(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for r in &self.rules {
            if r.fixtures_match.is_empty() {
                out.push((r.id.clone(), "has no `match` fixture".into()));
            }
            if r.fixtures_no_match.is_empty() {
                out.push((r.id.clone(), "has no `no_match` fixture".into()));
            }
            for (i, f) in r.fixtures_match.iter().enumerate() {
                if !r.matches(f) {
                    out.push((r.id.clone(), format!("match fixture #{} did not match: {f:?}", i + 1)));
                }
            }
            for (i, f) in r.fixtures_no_match.iter().enumerate() {
                if r.matches(f) {
                    out.push((r.id.clone(), format!("no_match fixture #{} matched: {f:?}", i + 1)));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod fields_tests {
    use std::path::PathBuf;

    use super::{load::load_texts, Ctx};

    #[test]
    fn each_event_kind_computes_only_its_rules_fields() {
        let text = "rules:\n  - id: x\n    description: d\n    severity: high\n    action: alert\n    event: exec\n    condition: {proc.cmdline: {contains: curl}}\n    output: o\n    tags: [T1059]\n  - id: o\n    description: d\n    severity: high\n    action: alert\n    event: open\n    condition: {proc.ancestors: {contains: sshd}}\n    output: o\n    tags: [T1005]\n";
        let set = load_texts(&[(PathBuf::from("t.yaml"), text.to_string())], &[]).unwrap();
        let open = set.fields_for(Some("open"));
        assert!(open.contains("proc.ancestors") && !open.contains("proc.cmdline"), "{open:?}");
        let exec = set.fields_for(Some("exec"));
        assert!(exec.contains("proc.cmdline") && !exec.contains("proc.ancestors"), "{exec:?}");
        for kind in ["open", "exec", "connect"] {
            assert_eq!(set.wanted(kind), set.fields_for(Some(kind)), "the index keeps what fields_for computes: {kind}");
        }
        let any = set.fields_for(None);
        assert!(any.contains("proc.cmdline") && any.contains("proc.ancestors"));
        // What every alert and the profiles read is there for every kind.
        assert!(["event", "proc.exe", "file.path", "net.addr"].iter().all(|f| set.fields_for(Some("connect")).contains(f)));
        // Rules still see the kind read once per event.
        let mut c = Ctx::default();
        c.str("event", "exec");
        c.str("proc.cmdline", "curl http://x");
        assert_eq!(set.eval(&c).map(|(_, r)| r.id.as_str()).collect::<Vec<_>>(), ["x"]);
    }
}
