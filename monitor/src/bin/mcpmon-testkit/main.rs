//! `mcpmon-testkit`: the helpers the integration tests, the VM scenario and `cargo xtask bench`
//! run, kept out of the product binary (`mcpmon`) and out of the package: tight syscall loops,
//! victims and attackers for the enforcement tests, the floor program and the gate's marks for
//! the benchmark, and the scanners' figures on the labelled sets. Nothing here is a user-facing
//! command.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod attack;
mod floor;
mod int80;
mod loops;
mod marks;

#[derive(Debug, Parser)]
#[command(name = "mcpmon-testkit", about = "Test and benchmark helpers for mcpmon (not shipped)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A loop of one operation (open, forkexec, connect, getppid), ns/op; or a victim or attacker
    /// of the enforcement tests (read, dial, int80-*, uring-*, race-*, vm-*, ...).
    Loop { kind: String, n: u64, path: Option<String> },
    /// The one-lookup floor program on every syscall hook until stdin closes.
    Floor,
    /// The open gate's fanotify marks on DIR (no program, no daemon) until stdin closes.
    Marks { dir: std::path::PathBuf },
    /// The result scanner on the labelled set in DIR (precision, recall) and its cost per KiB,
    /// as JSON.
    Results { dir: std::path::PathBuf },
    /// The tool-description checks on the labelled set in DIR (precision, recall, held-out
    /// recall) and their cost per tool, as JSON.
    Descriptions { dir: std::path::PathBuf },
}

fn main() -> ExitCode {
    let r = match Cli::parse().command {
        Command::Loop { kind, n, path } => loops::run_loop(&kind, n, path.as_deref()),
        Command::Floor => floor::run_floor(),
        Command::Marks { dir } => marks::run_marks(&dir),
        Command::Results { dir } => print_json(monitor::toolcheck::labelled::bench(&dir)),
        Command::Descriptions { dir } => print_json(monitor::toolcheck::poison_set::bench(&dir)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpmon-testkit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_json<E: std::fmt::Display>(r: Result<serde_json::Value, E>) -> anyhow::Result<()> {
    let v = r.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{v}");
    Ok(())
}
