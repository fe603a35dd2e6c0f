//! What the daemon loaded and which path each stage took, as one record (`sensors_loaded`, the
//! first line of the event stream; `output::Record::SensorsLoaded` adds its kind and time). Tests and the kernel matrix read their expectations from it:
//! the same build runs on kernels with and without trampolines or the BPF LSM, so what a test
//! may expect is what this kernel let the daemon load, never what the test machine happens to be.
use serde_json::{json, Value};

use super::{cgroup::DenyPath, Sensors};

impl Sensors {
    pub fn loaded(&self) -> Value {
        // Every program with a kernel fd, by name and kernel id (what bpftool and fdinfo show).
        let mut programs: Vec<Value> = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| {
                let id = p.info().ok()?.id();
                p.fd().ok().map(|_| json!({"name": name, "id": id}))
            })
            .collect();
        programs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let ia32 = if self.fast_path {
            "fentry"
        } else if self.on_demand_hooks().iter().any(|h| h.starts_with("tp_btf:")) {
            "tp_btf"
        } else {
            "none"
        };
        let fallback = self.report.hooks.iter().find_map(|h| h.fallback_reason.clone());
        json!({
            "kernel": self.report.kernel,
            "observe": if self.fast_path { "fentry" } else { "tracepoint" },
            "observe_fallback": fallback,
            "ia32": ia32,
            "open_deny": if self.lsm_deny { "lsm" } else { "kill" },
            "exec_deny": if self.lsm_deny { "lsm" } else { "kill" },
            "connect_deny": if matches!(self.deny, DenyPath::Cgroup { .. }) { "cgroup" } else { "kill" },
            "always_attached": self.attached,
            "on_demand": self.on_demand_hooks(),
            "programs": programs,
        })
    }
}
