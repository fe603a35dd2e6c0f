//! Command line of the `mcpmon` binary.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mcpmon", version, about = "eBPF host monitor for MCP servers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the kernel sensors and watch tracked MCP servers (needs root).
    // An option given twice takes the later value: `--config` settings come first.
    #[command(args_override_self = true)]
    Run(RunArgs),
    /// Run an MCP server under watch: put this in an MCP client's config in place of the command.
    Exec(ExecArgs),
    /// List the MCP servers the running daemon tracks.
    Servers(ServersArgs),
    /// One screen for a ticket: kernel features and the path each hook takes, rules lint,
    /// socket and state-directory permissions, whether the daemon answers and keeps up.
    Doctor(DoctorArgs),
    /// Work with rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Per-server baseline profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Live view: servers, tool calls with the syscalls under each, alerts (needs root).
    Top(ServersArgs),
    /// Started by `run`: continues the processes the kernel holds at exec once the daemon is
    /// gone (probes/guard.rs).
    #[command(hide = true)]
    HoldGuard(HoldGuardArgs),
}

#[derive(Debug, Args)]
pub struct HoldGuardArgs {
    /// The daemon's `HELD` map.
    #[arg(long)]
    pub map_id: u32,
    /// The daemon's pid (the guard's parent).
    #[arg(long)]
    pub daemon: u32,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Run the monitor and record what each server execs, opens and connects to, as YAML
    /// profiles in --profiles (default STATE_DIR/profiles); `mcpmon run --profiles DIR` then
    /// enforces them through the `profile.*` rule fields.
    Learn(RunArgs),
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Load every rule in DIR through the real engine and run each rule's fixtures.
    Lint {
        /// Rules directory.
        dir: PathBuf,
        /// User database whose home directories `~/` stands for.
        #[arg(long, default_value = "/etc/passwd")]
        passwd: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServersArgs {
    #[arg(long, env = "MCPMON_SOCKET", default_value = crate::control::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[arg(long, env = "MCPMON_SOCKET", default_value = crate::control::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[arg(long, default_value = "/var/lib/mcpmon")]
    pub state_dir: PathBuf,
    /// Rules directory (default: as `mcpmon run`).
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Option<PathBuf>,
    #[arg(long, default_value = "/etc/passwd")]
    pub passwd: PathBuf,
    /// The daemon's metrics endpoint, for its loss counters (`none`: skip).
    #[arg(long, default_value = "127.0.0.1:9464", value_parser = metrics_addr_arg)]
    pub metrics_addr: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Settings file (YAML; keys are these long options, e.g. `alert-webhook: http://…`);
    /// options on the command line override it. Default: /etc/mcpmon/mcpmon.yaml when it
    /// exists; `none` reads no file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to write events as JSON lines (`-` for stdout).
    #[arg(long, default_value = "-")]
    pub events: String,
    /// Put an already-running process tree under watch (repeatable).
    #[arg(long = "track-pid", value_name = "PID")]
    pub track_pid: Vec<u32>,
    /// Server name for `--track-pid` (defaults to the process's comm).
    #[arg(long = "track-name", value_name = "NAME")]
    pub track_name: Option<String>,
    /// Control socket that `mcpmon exec` talks to.
    #[arg(long, env = "MCPMON_SOCKET", default_value = crate::control::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Another MCP client program, by process name: its children are sniffed for an MCP
    /// handshake (repeatable; added to the built-in list of known clients).
    #[arg(long = "client-comm", value_name = "COMM")]
    pub client_comm: Vec<String>,
    /// A project directory whose `.mcp.json`, `.cursor/mcp.json`, `.vscode/mcp.json` count
    /// (repeatable; projects Claude Code knows are read anyway).
    #[arg(long = "project-root", value_name = "DIR")]
    pub project_root: Vec<PathBuf>,
    /// User database to find home directories in.
    #[arg(long, default_value = "/etc/passwd", hide = true)]
    pub passwd: PathBuf,
    /// Where mcpmon keeps state across restarts (the pinned tool sets).
    #[arg(long, default_value = "/var/lib/mcpmon")]
    pub state_dir: PathBuf,
    /// Send the kernel programs' diagnostics (which kind of event the kernel lost) to this
    /// log. Off by default: the kernel then skips them at no cost.
    #[arg(long)]
    pub ebpf_log: bool,
    /// Ring buffer size in MiB (power of two).
    #[arg(long, default_value_t = 8)]
    pub ringbuf_mib: u32,
    /// Size of the kernel's table of tracked processes (tests shrink it to show that a full
    /// table fails closed).
    #[arg(long, hide = true)]
    pub tracked_max: Option<u32>,
    /// Size of the kernel's table of stdio pipes (tests shrink it to show that a full table is
    /// reported).
    #[arg(long, hide = true)]
    pub stdio_pipes_max: Option<u32>,
    /// A pause between deciding that the syscall hooks are idle and detaching them (tests widen
    /// the moment in which a server can exec while the hooks come off).
    #[arg(long, hide = true, default_value_t = 0)]
    pub detach_pause_ms: u64,
    /// Ring buffer size in bytes, overriding --ringbuf-mib (a power of two, at least a page:
    /// tests use one page to make a flood overflow it).
    #[arg(long, hide = true)]
    pub ringbuf_bytes: Option<u32>,
    /// When the kernel could not deliver an event of a tracked server (ring or table full):
    /// `alert` raises a `blind_spot` alert naming the server; `kill` also has the kernel kill
    /// the process whose event was lost, and the daemon the rest of that server's tree.
    #[arg(long, value_enum, default_value = "alert")]
    pub on_loss: OnLoss,
    /// Fold a flood: identical opens by one thread within one tool call and this window go out as
    /// the first open plus a count (`folded` in the event stream); an open the kernel acted on
    /// never folds. 0 sends every open.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub fold_window_ms: u32,
    /// Find servers by their handshake, whatever started them: a process with pipes (or
    /// sockets) on stdin and stdout whose first stdin read is an MCP `initialize` is tracked
    /// (an agent on an SDK is not a known client). Costs one map lookup per read of untracked
    /// processes while the syscall hooks are attached (docs/architecture.md).
    #[arg(long, value_enum, default_value = "on")]
    pub handshake_discovery: Switch,
    /// What observes the syscalls of tracked servers: fentry/fexit where the kernel has BPF
    /// trampolines (auto falls back to syscall tracepoints), or tracepoints regardless.
    #[arg(long, value_enum, default_value = "auto")]
    pub observe: crate::probes::fast::Observe,
    /// Rules directory (default: /etc/mcpmon/rules if present, else the rules/ of this source tree).
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Turn every kill and deny into an alert saying what would have happened.
    #[arg(long)]
    pub dry_run: bool,
    /// Directory of per-server profiles: enforced by `run`, written by `profile learn`.
    #[arg(long, value_name = "DIR")]
    pub profiles: Option<PathBuf>,
    /// Set by `mcpmon profile learn`.
    #[arg(skip)]
    pub learn: bool,
    /// Prometheus endpoint (`none` to turn it off). Loopback by default.
    #[arg(long, default_value = "127.0.0.1:9464", value_parser = metrics_addr_arg)]
    pub metrics_addr: String,
    /// Also write alerts (only) to this file, rotated by size.
    #[arg(long, value_name = "FILE")]
    pub alerts_file: Option<PathBuf>,
    /// Rotate the alert file at this size.
    #[arg(long, default_value_t = 64)]
    pub alerts_file_max_mib: u64,
    /// Rotated alert files kept (FILE.1 … FILE.N).
    #[arg(long, default_value_t = 5)]
    pub alerts_file_keep: usize,
    /// POST every alert as JSON to this http:// URL (retried, bounded queue, never blocks).
    #[arg(long, value_name = "URL")]
    pub alert_webhook: Option<String>,
    /// Alert records (alerts, incidents, suppressed repeats) on the event stream and the sinks:
    /// mcpmon's schema, or OCSF Detection Findings (class 2004; docs/alerts.md, OCSF).
    #[arg(long, value_enum, default_value_t = crate::alerts::AlertFormat::Native)]
    pub alert_format: crate::alerts::AlertFormat,
    /// Export every tool call as an OpenTelemetry span (OTLP/HTTP, JSON) to this http:// collector
    /// (`URL/v1/traces`); its syscalls and alerts are span events.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Finished spans held while the collector is slow or down; more are dropped (counted).
    #[arg(long, default_value_t = crate::export::otlp::QUEUE)]
    pub otlp_queue: usize,
    /// Fold repeats of the same alert within this many seconds into a count (0: off).
    #[arg(long, default_value_t = 10)]
    pub alert_throttle_secs: u64,
    /// One alert per incident: alerts of one server within one tool call are folded into the
    /// first, with their chain of evidence, until the call has raised none for this many
    /// seconds; kills and denies always go out (0: off).
    #[arg(long, default_value_t = 5)]
    pub incident_quiet_secs: u64,
}

impl RunArgs {
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        if self.metrics_addr == "none" {
            return None;
        }
        self.metrics_addr.parse().ok()
    }

    pub fn sink_config(&self) -> crate::alerts::SinkConfig {
        crate::alerts::SinkConfig {
            file: self.alerts_file.clone(),
            file_max_bytes: self.alerts_file_max_mib << 20,
            file_keep: self.alerts_file_keep,
            webhook: self.alert_webhook.clone(),
        }
    }

    pub fn profiles_dir(&self) -> Option<PathBuf> {
        match (&self.profiles, self.learn) {
            (Some(d), _) => Some(d.clone()),
            (None, true) => Some(self.state_dir.join("profiles")),
            (None, false) => None,
        }
    }

    pub fn rules_dir(&self) -> PathBuf {
        rules_dir(self.rules.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Name of the MCP server, as it should appear in events and alerts.
    #[arg(long)]
    pub name: String,
    /// Fail (exit 1) instead of starting the server unwatched when no daemon answers.
    #[arg(long)]
    pub require_monitor: bool,
    /// Control socket of the running daemon.
    #[arg(long, env = "MCPMON_SOCKET", default_value = crate::control::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// How long to wait for the daemon's acknowledgement, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// The server command and its arguments.
    #[arg(trailing_var_arg = true, required = true, num_args = 1.., allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What a loss of a tracked server's kernel events leads to (`--on-loss`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLoss {
    #[default]
    Alert,
    Kill,
}

/// A feature turned on or off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    #[default]
    On,
    Off,
}

/// The rules directory `run` and `doctor` use: the one given, else /etc/mcpmon/rules if present,
/// else the rules/ of this source tree.
pub fn rules_dir(given: Option<&std::path::Path>) -> PathBuf {
    if let Some(d) = given {
        return d.to_path_buf();
    }
    let etc = PathBuf::from("/etc/mcpmon/rules");
    if etc.is_dir() {
        return etc;
    }
    let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules"));
    src.canonicalize().unwrap_or(src)
}

/// `--metrics-addr`: an IP address and port, or `none`. Anything else (a host name, a missing
/// port) is refused at the command line: an endpoint silently off is a blind dashboard.
fn metrics_addr_arg(s: &str) -> Result<String, String> {
    if s == "none" || s.parse::<std::net::SocketAddr>().is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not IP:PORT (for example 127.0.0.1:9464 or [::1]:9464) nor `none`"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn a_mistyped_metrics_addr_is_an_error() {
        for bad in ["localhost:9464", "127.0.0.1", "9464", ""] {
            for cmd in ["run", "doctor"] {
                let e = Cli::try_parse_from(["mcpmon", cmd, "--metrics-addr", bad]).expect_err(bad);
                assert!(e.to_string().contains("is not IP:PORT"), "{cmd} {bad}: {e}");
            }
        }
        for good in ["none", "127.0.0.1:0", "[::1]:9464", "0.0.0.0:9464"] {
            assert!(Cli::try_parse_from(["mcpmon", "run", "--metrics-addr", good]).is_ok(), "{good}");
        }
    }
}
