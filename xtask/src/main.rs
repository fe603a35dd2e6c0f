//! `cargo xtask <task>`: everything a fresh Debian machine needs to build, test and run mcpmon.
mod bench;
mod deb;
mod failures;
#[cfg(test)]
mod lint;
mod peers;
mod runners;
mod vm;
mod setup;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian packages and bpf-linker (idempotent).
    Setup,
    /// Build mcpmon (release), eBPF object included.
    Build,
    /// Run every test: unit tests and the integration tests that load the eBPF object (as root).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks: overhead, tracked-process throughput, enforcement, the daemon itself (as root).
    /// Writes bench/results.md and bench/results.json.
    Bench {
        /// Rounds of alternating configurations.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Fewer iterations and trials (a smoke run, not for the record).
        #[arg(long)]
        quick: bool,
        /// Rewrite bench/results.md from bench/results.json without measuring.
        #[arg(long)]
        report_only: bool,
        /// Only the fast-path figures (inside the VM), replacing them in bench/results.json.
        #[arg(long)]
        fast_path_only: bool,
        /// Only section 3 (enforcement and attacks on secrets), replacing it in
        /// bench/results.json; the report names the run it came from.
        #[arg(long)]
        enforcement_only: bool,
        /// Only the text scanners (sections 6 and 7: tool results, tool descriptions), replacing
        /// them in bench/results.json.
        #[arg(long)]
        scanners_only: bool,
        /// Only section 2 (tracked processes: throughput, folding, 1000 servers), replacing it in
        /// bench/results.json.
        #[arg(long)]
        tracked_only: bool,
        /// Only section 1 (overhead on untracked processes), replacing it.
        #[arg(long)]
        overhead_only: bool,
        /// Only section 1's run time of the eBPF programs per operation, replacing it.
        #[arg(long)]
        prog_time_only: bool,
    },
    /// Kernel matrix: the scenario on this kernel and in VMs booted from Debian's 6.1, 6.12 and
    /// cloud kernels with the BPF LSM (qemu TCG): deny, kill, fentry/tracepoint parity; on 6.12
    /// also the privileged integration tests of tests/vm/itests.txt.
    VmTest {
        /// Only the host run.
        #[arg(long)]
        host_only: bool,
        /// Only the VM runs.
        #[arg(long)]
        vm_only: bool,
        /// Boot only this kernel of the matrix (6.1, 6.12, cloud); repeatable.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
    },
    /// Build the Debian package (target/debian/mcpmon_VERSION_amd64.deb): binary, hardened
    /// systemd unit, /etc/mcpmon/mcpmon.yaml and the default rules as conffiles, logrotate rule.
    Package,
    /// Build and run `mcpmon run` with the given arguments (default: events as JSON lines on stdout).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The error is printed here, not by `main`'s `Result`: with `RUST_BACKTRACE=1` (set in CI)
/// anyhow would append some 40 lines of xtask's own stack, and CI shows only the tail of a run,
/// where the failing tests' digest must be.
fn main() -> std::process::ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::run()?;
            util::cargo(&["build", "--release", "-p", "monitor"])
        }
        Task::Test { args } => test(&args),
        Task::Package => deb::run(),
        Task::VmTest { host_only, vm_only, kernels } => vm::run(!vm_only, !host_only, &kernels),
        Task::Bench { rounds, quick, report_only, fast_path_only, enforcement_only, scanners_only, tracked_only, overhead_only, prog_time_only } => {
            bench::run(bench::Opts { rounds, quick, report_only, fast_path_only, enforcement_only, scanners_only, tracked_only, overhead_only, prog_time_only })
        }
        Task::Run { args } => {
            setup::run()?;
            util::cargo(&["build", "--release", "-p", "monitor"])?;
            let mut argv = vec!["run".to_string()];
            // Default rules come from rules/ (mcpmon finds them next to its source tree).
            if args.is_empty() {
                argv.extend(["--events".to_string(), "-".to_string()]);
            }
            argv.extend(args);
            util::exec(&util::root().join("target/release/mcpmon"), &argv)
        }
    }
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    if !util::is_root() {
        let strict = std::env::var("MCPMON_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1" || v == "true");
        eprintln!(
            "xtask: not root: integration tests that load eBPF will {} (run `sudo ./x test`)",
            if strict { "FAIL (MCPMON_REQUIRE_PRIVILEGED=1)" } else { "be skipped" }
        );
    }
    util::cargo(&["build", "-p", "monitor", "--bins"])?;
    let mut args: Vec<&str> = vec!["test", "--workspace", "--exclude", "monitor-ebpf", "--no-fail-fast"];
    args.extend(extra.iter().map(String::as_str));
    let tests = util::cargo_test_summary(&args);
    // The kernel matrix: this kernel through the fallbacks, and Debian's kernel with the BPF LSM
    // in a VM. Needs root (it loads eBPF); MCPMON_SKIP_VM=1 leaves it out of a quick local run.
    let strict = std::env::var("MCPMON_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1" || v == "true");
    let vm = if std::env::var("MCPMON_SKIP_VM").is_ok_and(|v| v == "1") {
        if strict {
            Err(anyhow::anyhow!("MCPMON_SKIP_VM=1 with MCPMON_REQUIRE_PRIVILEGED=1: nothing may be skipped; unset one"))
        } else {
            eprintln!("xtask: MCPMON_SKIP_VM=1: kernel-matrix scenario skipped");
            Ok(())
        }
    } else if !util::is_root() {
        let strict = std::env::var("MCPMON_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1" || v == "true");
        if strict { Err(anyhow::anyhow!("vm-test needs root")) } else { Ok(()) }
    } else {
        vm::run(true, true, &[])
    };
    tests.and(vm)
}
