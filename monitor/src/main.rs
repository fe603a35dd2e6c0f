//! `mcpmon`: thin entry point; everything lives in the library.
use clap::Parser;
use monitor::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    // The config file's settings (/etc/mcpmon/mcpmon.yaml, or `run --config FILE`) go in before
    // the command line's.
    let argv = match monitor::config::expand(std::env::args_os().collect(), std::path::Path::new(monitor::config::DEFAULT)) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("mcpmon: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    match cli.command {
        // No runtime, no logging setup: stdout belongs to the MCP server about to be exec'd.
        Command::Exec(args) => match monitor::control::client::run_exec(
            &args.socket,
            &args.name,
            args.require_monitor,
            std::time::Duration::from_millis(args.timeout_ms),
            &args.command,
        ) {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("mcpmon exec: {e:#}");
                std::process::ExitCode::from(127)
            }
        },
        Command::Servers(args) => match monitor::control::client::run_servers(&args.socket, args.json) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcpmon servers: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Doctor(args) => monitor::doctor::run(&args),
        Command::Rules(monitor::cli::RulesCommand::Lint { dir, passwd }) => monitor::rules::lint::run(&dir, &passwd),
        Command::Profile(monitor::cli::ProfileCommand::Learn(mut args)) => {
            args.learn = true;
            run(args)
        }
        Command::Run(args) => run(args),
        Command::HoldGuard(a) => monitor::probes::guard::run(a.map_id, a.daemon),
        Command::Top(args) => match monitor::top::run(&args.socket) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("\x1b[?25hmcpmon top: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

fn run(args: monitor::cli::RunArgs) -> std::process::ExitCode {
    init_logging();
    // One thread: measured on a 2-core machine, worker threads for the reader and writer only
    // competed with the watched processes for the same cores (bench/results.md, section 2).
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpmon: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(monitor::daemon::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpmon: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that `--events -` keeps stdout for JSON lines only.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCPMON_LOG").unwrap_or_else(|_| "info".into());
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
