//! The path gate. Most opens name a path that no rule about opens is written for, and most of
//! those rules require `file.path` to match one of their globs: directly, as a part of their
//! `all`, or in every branch of an `any`. The gate matches the path once against the globs of
//! all of them together; a rule none of whose globs the path matches is not evaluated, since
//! it could not match. Before, each rule looked the path up in its own sets, one after another.
use std::{cell::Cell, collections::HashMap};

use super::{
    cond::{Cond, Matcher},
    fields::{at, Ctx, Val},
    glob::{Glob, GlobSet},
};

const FILE_PATH: usize = at("file.path");

/// One bit per rule: the rules of a kind after the 64th have no gate and are always evaluated.
pub const GATED_RULES: usize = 64;

/// The gate of the rules about one event kind.
#[derive(Clone, Debug, Default)]
pub struct PathGate {
    /// The globs of every gated rule, together.
    set: GlobSet,
    /// For each glob of `set`, the rule it belongs to: its position among the kind's rules.
    owner: Vec<u8>,
    /// The positions of the rules that have a gate.
    gated: u64,
}

impl PathGate {
    /// The gate of these rules (their conditions, in the kind's order).
    pub fn new<'a>(conds: impl Iterator<Item = &'a Cond>) -> Self {
        let (mut globs, mut owner, mut gated) = (Vec::new(), Vec::new(), 0u64);
        for (pos, c) in conds.enumerate().take(GATED_RULES) {
            if let Some(g) = required(c) {
                gated |= 1 << pos;
                owner.extend(std::iter::repeat_n(pos as u8, g.len()));
                globs.extend(g.into_iter().cloned());
            }
        }
        Self { set: GlobSet::new(globs), owner, gated }
    }

    /// The rules (bit `pos` for the kind's rule at position `pos`) that can match an event with
    /// this context: those without a gate, and those whose globs its path matches.
    pub fn passing(&self, ctx: &Ctx) -> u64 {
        if self.gated == 0 {
            return u64::MAX;
        }
        match ctx.get_at(FILE_PATH) {
            // A glob test fails on a missing field.
            None => !self.gated,
            Some(Val::Str(path)) => {
                let pass = Cell::new(!self.gated);
                let bit = |i: usize| 1u64 << self.owner[i];
                // A rule's other globs need not be tried once one of them matched.
                self.set.each_match(path, |i| pass.get() & bit(i) == 0, |i| pass.set(pass.get() | bit(i)));
                pass.get()
            }
            // Not a path as the gate knows it (never, for `file.path`): no rule is left out.
            Some(_) => u64::MAX,
        }
    }

    /// How many of the kind's rules have a gate.
    pub fn gated(&self) -> u32 {
        self.gated.count_ones()
    }
}

/// Bytes of paths the memo holds before it starts over: a flood of distinct long paths costs
/// a bounded amount of memory, and then a gate match each, as without the memo.
const MEMO_BYTES: usize = 1 << 20;

/// What each kind's gate said about the paths it has seen. A busy server opens the same few
/// paths again and again, and matching one against every gated glob was 9% of the daemon's
/// time per open. The whole path is the key (no hash stands in for it), so a hit is the gate's
/// own answer for that text. Owned by the policy and emptied with each new rule set.
#[derive(Debug, Default)]
pub struct GateMemo {
    /// Per kind (its place among the rule set's kinds): path → the gate's answer.
    kinds: Vec<HashMap<Box<str>, u64, foldhash::fast::RandomState>>,
    /// Path bytes held, with a fixed overhead per entry.
    bytes: usize,
    /// The last answer, for a path shared with the path cache (`Text::Shared`): a server that
    /// opens one path again and again is answered without hashing it (held, so its address is
    /// no other text's meanwhile).
    last: Option<(usize, std::sync::Arc<str>, u64)>,
}

impl GateMemo {
    /// `gate.passing(ctx)`, for the kind at place `kind`, remembered by path.
    pub fn passing(&mut self, kind: usize, gate: &PathGate, ctx: &Ctx) -> u64 {
        let Some(Val::Str(path)) = ctx.get_at(FILE_PATH).filter(|_| gate.gated != 0) else {
            return gate.passing(ctx);
        };
        let shared = match path {
            super::Text::Shared(a) => Some(a),
            _ => None,
        };
        if let (Some(a), Some((k, last, pass))) = (shared, &self.last) {
            if *k == kind && std::sync::Arc::ptr_eq(a, last) {
                return *pass;
            }
        }
        let pass = match self.kinds.get(kind).and_then(|m| m.get(&**path)) {
            Some(&pass) => pass,
            None => self.learn(kind, gate, ctx, path),
        };
        if let Some(a) = shared {
            self.last = Some((kind, a.clone(), pass));
        }
        pass
    }

    /// Asks the gate about a path not seen yet, and keeps the answer.
    fn learn(&mut self, kind: usize, gate: &PathGate, ctx: &Ctx, path: &str) -> u64 {
        let pass = gate.passing(ctx);
        let cost = path.len() + 64;
        if self.bytes + cost > MEMO_BYTES {
            self.clear();
        }
        if self.kinds.len() <= kind {
            self.kinds.resize_with(kind + 1, Default::default);
        }
        self.bytes += cost;
        self.kinds[kind].insert(Box::from(path), pass);
        pass
    }

    pub fn clear(&mut self) {
        self.kinds.iter_mut().for_each(HashMap::clear);
        self.bytes = 0;
        self.last = None;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kinds.iter().map(HashMap::len).sum()
    }
}

/// Globs of which `file.path` must match one for `c` to hold, when there are such.
fn required(c: &Cond) -> Option<Vec<&Glob>> {
    match c {
        Cond::Test { at, m: Matcher::Glob(set), .. } if *at == FILE_PATH => Some(set.globs().iter().collect()),
        // Any part's globs will do: the fewest.
        Cond::All(v) => v.iter().filter_map(required).min_by_key(Vec::len),
        // Every branch must have globs; the path must match one of one branch's.
        Cond::Any(v) => v.iter().map(required).collect::<Option<Vec<_>>>().map(|v| v.concat()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{load::load_texts, load_dir, Ctx, RuleSet, Val};

    fn fired(set: &RuleSet, c: &Ctx, gated: bool) -> Vec<usize> {
        match gated {
            true => set.eval(c).map(|(s, _)| s).collect(),
            false => set.eval_ungated(c).map(|(s, _)| s).collect(),
        }
    }

    /// Every fixture of the shipped rules, and each of them again with the path of every other
    /// fixture (and none): the gate changes no verdict.
    #[test]
    fn the_shipped_rules_fire_as_without_the_gate() {
        let homes = ["/root", "/home/*", "/tmp/u1"].map(String::from);
        let set = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"), &homes).unwrap();
        let fixtures: Vec<&Ctx> = set.rules.iter().flat_map(|r| r.fixtures_match.iter().chain(&r.fixtures_no_match)).collect();
        let mut paths: Vec<Option<Val>> = fixtures.iter().filter_map(|c| c.get("file.path").cloned()).map(Some).collect();
        let odd = ["/tmp/u1/.ssh/id_rsa", "/tmp/u1/.aws/credentials", "/home/x/.ssh/id_rsa.pub", "/etc/hostname", "relative/.env", "", "/", "/root/.kube/config"];
        paths.extend(odd.iter().map(|p| Some(Val::Str(p.to_string().into()))));
        paths.push(None);
        let (mut checked, mut fires) = (0, 0);
        let mut memo = super::GateMemo::default();
        for f in &fixtures {
            for p in &paths {
                let mut c = (*f).clone();
                match p {
                    Some(v) => c.set("file.path", v.clone()),
                    None => c = strip_path(f),
                }
                let want = fired(&set, &c, false);
                assert_eq!(fired(&set, &c, true), want, "{c:?}");
                // The memo is kept across all of them: most paths are seen again, by other kinds.
                assert_eq!(set.eval_memo(&c, &mut memo).map(|(s, _)| s).collect::<Vec<_>>(), want, "memo: {c:?}");
                checked += 1;
                fires += usize::from(!want.is_empty());
            }
        }
        assert!(checked > 10_000 && fires > 1_000, "{checked} contexts, {fires} with a rule firing");
        // And it is in the way of most rules about opens: an ordinary open tries few of them.
        let mut c = Ctx::default();
        c.str("event", "open");
        c.str("file.path", "/etc/hostname");
        c.set("file.access", Val::List(vec!["read".into()]));
        let (kinds, _) = set.by_kind.get().unwrap();
        let open = &kinds.iter().find(|(k, _)| k == "open").unwrap().1;
        let left = open.gate.passing(&c) & ((1u64 << open.slots.len()) - 1);
        assert!(open.gate.gated() >= 10 && left.count_ones() <= open.slots.len() as u32 - open.gate.gated(), "{} gated, {left:b} left of {}", open.gate.gated(), open.slots.len());
    }

    /// Distinct paths past the memo's bound empty it: its memory stays bounded, its answers
    /// stay the gate's.
    #[test]
    fn the_memo_is_bounded_and_answers_as_the_gate() {
        let homes = ["/root".to_string()];
        let set = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"), &homes).unwrap();
        set.slots_for("open");
        let (kinds, _) = set.by_kind.get().unwrap();
        let (at, open) = kinds.iter().enumerate().find(|(_, (k, _))| k == "open").map(|(i, (_, k))| (i, k)).unwrap();
        let mut memo = super::GateMemo::default();
        let long = "x".repeat(1000);
        for i in 0..3000 {
            let mut c = Ctx::default();
            c.str("event", "open");
            let p = if i % 3 == 0 { "/root/.ssh/id_rsa".to_string() } else { format!("/tmp/{i}/{long}") };
            c.str("file.path", p);
            assert_eq!(memo.passing(at, &open.gate, &c), open.gate.passing(&c));
            // A shared text (as the path cache hands it), asked twice in a row: the kept answer
            // is the gate's too.
            let shared: std::sync::Arc<str> = if i % 2 == 0 { "/root/.ssh/id_ed25519".into() } else { "/srv/a".into() };
            c.set("file.path", Val::Str(super::super::Text::Shared(shared)));
            for _ in 0..2 {
                assert_eq!(memo.passing(at, &open.gate, &c), open.gate.passing(&c));
            }
            assert!(memo.bytes <= super::MEMO_BYTES && memo.len() < 1100, "{} entries, {} bytes", memo.len(), memo.bytes);
        }
    }

    fn strip_path(f: &Ctx) -> Ctx {
        let mut c = Ctx::default();
        for (name, _, _) in super::super::fields::FIELDS.iter().filter(|(n, _, _)| *n != "file.path") {
            if let Some(v) = f.get(name) {
                c.set(name, v.clone());
            }
        }
        c
    }

    #[test]
    fn only_a_path_every_branch_requires_gates_a_rule() {
        let rule = |id: &str, cond: &str| format!("  - id: {id}\n    description: d\n    severity: high\n    action: alert\n    event: open\n    condition: {cond}\n    output: o\n    tags: [T1005]\n");
        let text = format!(
            "rules:\n{}{}{}{}",
            rule("any_all", "{any: [{file.path: {glob: /a/*}}, {all: [{file.ok: {equals: true}}, {file.path: {glob: /b/**}}]}]}"),
            rule("any_not", "{any: [{file.path: {glob: /a/*}}, {not: {file.path: {glob: /b/**}}}]}"),
            rule("ok_only", "{file.ok: {equals: true}}"),
            rule("any_none", "{any: []}"),
        );
        let set = load_texts(&[(PathBuf::from("t.yaml"), text)], &[]).unwrap();
        let ids = |path: Option<&str>| {
            let mut c = Ctx::default();
            c.str("event", "open");
            c.set("file.ok", Val::Bool(true));
            if let Some(p) = path {
                c.str("file.path", p.to_string());
            }
            assert_eq!(fired(&set, &c, true), fired(&set, &c, false), "{c:?}");
            set.eval(&c).map(|(_, r)| r.id.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ids(Some("/a/x")), ["any_all", "any_not", "ok_only"]);
        assert_eq!(ids(Some("/b/x/y")), ["any_all", "ok_only"]);
        assert_eq!(ids(Some("/c")), ["any_not", "ok_only"]);
        assert_eq!(ids(None), ["any_not", "ok_only"]);
        let (kinds, _) = set.by_kind.get().unwrap();
        assert_eq!(kinds[0].1.gate.gated(), 2, "any_all and any_none have a gate; any_not and ok_only none");
    }
}
