//! Rule slots that survive a reload. The kernel reports which rule it enforced as a slot (an
//! index into `RuleSet::rules`) carried by the event; an event still in flight when SIGHUP
//! reloads the rules must name the rule that acted, not whichever rule now sits at that index.
//! So a reload keeps every known rule at its slot, appends new rules, and leaves a removed rule
//! in place as retired: it names its slot's past decisions and matches nothing.
use super::{Rule, RuleSet};

impl Rule {
    /// Removed by a reload; kept only so that its slot keeps naming it.
    pub fn retired(&self) -> bool {
        self.events.is_empty()
    }

    fn retire(&self) -> Rule {
        let mut r = self.clone();
        r.events.clear();
        r.kernel = None;
        r.fixtures_match.clear();
        r.fixtures_no_match.clear();
        r
    }
}

impl RuleSet {
    /// Reorders this freshly loaded set so that each rule of `old` keeps its slot (retired if
    /// it is gone); rules new to this set follow, in file order.
    pub fn keep_slots_of(&mut self, old: &RuleSet) {
        let mut fresh: Vec<Option<Rule>> = std::mem::take(&mut self.rules).into_iter().map(Some).collect();
        let mut out = Vec::with_capacity(fresh.len().max(old.rules.len()));
        for o in &old.rules {
            match fresh.iter_mut().find(|r| r.as_ref().is_some_and(|r| r.id == o.id)) {
                Some(r) => out.push(r.take().expect("found above")),
                None if o.retired() => out.push(o.clone()),
                None => out.push(o.retire()),
            }
        }
        out.extend(fresh.into_iter().flatten());
        self.rules = out;
        self.by_kind = Default::default();
    }

    /// Rules in force (retired ones aside).
    pub fn in_force(&self) -> usize {
        self.rules.iter().filter(|r| !r.retired()).count()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::rules::{load::load_texts, Ctx, RuleSet};

    fn set(ids: &[&str]) -> RuleSet {
        let rules: String = ids
            .iter()
            .map(|id| format!("  - id: {id}\n    description: d\n    severity: high\n    action: alert\n    event: open\n    condition: {{file.path: {{equals: /tmp/{id}}}}}\n    output: o\n    tags: [T1552.004]\n"))
            .collect();
        load_texts(&[(PathBuf::from("t.yaml"), format!("rules:\n{rules}"))], &[]).unwrap()
    }

    #[test]
    fn a_reload_keeps_every_rule_at_its_slot() {
        let old = set(&["a", "b", "c"]);
        let mut new = set(&["d", "c", "a"]);
        new.keep_slots_of(&old);
        let ids: Vec<&str> = new.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert!(new.rules[1].retired() && new.rules[1].kernel.is_none());
        assert_eq!(new.in_force(), 3);
        // The retired rule matches nothing; the others still match at their slots.
        let ctx = |p: &str| {
            let mut c = Ctx::default();
            c.str("event", "open");
            c.str("file.path", p.to_string());
            c
        };
        assert_eq!(new.eval(&ctx("/tmp/b")).count(), 0);
        assert_eq!(new.eval(&ctx("/tmp/c")).map(|(slot, _)| slot).collect::<Vec<_>>(), [2]);
        // A second reload keeps the retired slot retired, and a returning rule takes it back.
        let mut again = set(&["b", "d"]);
        again.keep_slots_of(&new);
        let ids: Vec<(&str, bool)> = again.rules.iter().map(|r| (r.id.as_str(), r.retired())).collect();
        assert_eq!(ids, [("a", true), ("b", false), ("c", true), ("d", false)]);
    }
}
