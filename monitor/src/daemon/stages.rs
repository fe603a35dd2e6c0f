//! The pipeline's stage timers: nanoseconds in total per stage, the profile behind the
//! throughput figures of `cargo xtask bench`. A fixed array indexed by stage, not a map keyed
//! by name: they are added to several times per kernel event, and the map's string compares
//! were a visible share of a flood's profile.
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    ProcessTree,
    Correlation,
    ContextAndRules,
    RulesEval,
    RenderAndQueue,
    ResultScan,
}

impl Stage {
    const ALL: [Stage; 6] =
        [Stage::ProcessTree, Stage::Correlation, Stage::ContextAndRules, Stage::RulesEval, Stage::RenderAndQueue, Stage::ResultScan];

    /// The name in the `stats` record.
    pub fn name(self) -> &'static str {
        match self {
            Stage::ProcessTree => "process_tree",
            Stage::Correlation => "correlation",
            Stage::ContextAndRules => "context_and_rules",
            Stage::RulesEval => "rules_eval",
            Stage::RenderAndQueue => "render_and_queue",
            Stage::ResultScan => "result_scan",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct StageTimes([u64; Stage::ALL.len()]);

impl StageTimes {
    pub fn add(&mut self, stage: Stage, ns: u64) {
        self.0[stage as usize] += ns;
    }

    /// The stages that ran, by name (a stage that never ran is left out, as before).
    pub fn to_map(&self) -> BTreeMap<&'static str, u64> {
        Stage::ALL.iter().filter(|s| self.0[**s as usize] > 0).map(|s| (s.name(), self.0[*s as usize])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_has_its_own_slot_and_name() {
        let mut t = StageTimes::default();
        for (i, s) in Stage::ALL.iter().enumerate() {
            t.add(*s, i as u64 + 1);
        }
        let m = t.to_map();
        assert_eq!(m.len(), Stage::ALL.len());
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(m[s.name()], i as u64 + 1);
        }
        assert!(StageTimes::default().to_map().is_empty());
    }
}
