//! One config file for `mcpmon run`: `/etc/mcpmon/mcpmon.yaml` when it exists (what the package
//! installs), or `--config FILE` (`--config none`: no file). It is what a fleet's configuration
//! management writes instead of a command line. Keys are `run`'s long options, spelled
//! `alert-webhook` or `alert_webhook`; a value is a string or number (an option's value), a
//! boolean (a flag: `true` sets it), a list (a repeatable option), or empty (not set). The
//! file's settings go before the command line's, so an option given on the command line wins;
//! a repeatable one gets both. Unknown keys and values of the wrong shape are errors that name
//! the file and the key: a typo must not turn a protection off.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{ArgAction, CommandFactory};

use crate::cli::Cli;

/// Read by `run` when present and no `--config` is given.
pub const DEFAULT: &str = "/etc/mcpmon/mcpmon.yaml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: not YAML: {1}")]
    Parse(PathBuf, String),
    #[error("{0}: unknown setting {1:?} (settings are `mcpmon run`'s long options: {2})")]
    UnknownKey(PathBuf, String, String),
    #[error("{0}: {1:?}: {2}")]
    BadValue(PathBuf, String, &'static str),
}

/// `argv` with the config file's settings inserted right after `run` (the file of `--config
/// FILE`, else `default` when it exists); unchanged for any other command.
pub fn expand(argv: Vec<OsString>, default: &Path) -> Result<Vec<OsString>, ConfigError> {
    if argv.get(1).is_none_or(|a| a != "run") {
        return Ok(argv);
    }
    let path = match config_path(&argv[2..]) {
        Some(p) if p.as_os_str() == "none" => return Ok(argv),
        Some(p) => p,
        None if default.exists() => default.to_path_buf(),
        None => return Ok(argv),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read(path.clone(), e))?;
    let settings = settings(&path, &text)?;
    let mut out = argv[..2].to_vec();
    out.extend(settings);
    out.extend(argv[2..].iter().cloned());
    Ok(out)
}

/// The value of `--config FILE` or `--config=FILE` among `run`'s arguments.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            return None;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The file's settings as command-line arguments, checked against `run`'s options.
fn settings(path: &Path, text: &str) -> Result<Vec<OsString>, ConfigError> {
    let table: serde_yaml::Mapping = match serde_yaml::from_str::<Option<serde_yaml::Mapping>>(text) {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => return Err(ConfigError::Parse(path.to_path_buf(), e.to_string())),
    };
    let cmd = Cli::command();
    let run = cmd.find_subcommand("run").expect("the run subcommand");
    // `--config` names the file itself; `--help` is no setting.
    let known: Vec<(&str, &ArgAction)> =
        run.get_arguments().filter_map(|a| Some((a.get_long()?, a.get_action()))).filter(|(l, _)| !matches!(*l, "config" | "help")).collect();
    let mut out = Vec::new();
    for (key, value) in &table {
        let key = match key {
            serde_yaml::Value::String(k) => k.clone(),
            other => return Err(ConfigError::BadValue(path.to_path_buf(), format!("{other:?}"), "keys are option names")),
        };
        if value.is_null() {
            continue; // `key:` with nothing after it: not set
        }
        let long = key.replace('_', "-");
        let bad = |why| ConfigError::BadValue(path.to_path_buf(), key.clone(), why);
        let Some((_, action)) = known.iter().find(|(l, _)| *l == long) else {
            let names: Vec<&str> = known.iter().map(|(l, _)| *l).collect();
            return Err(ConfigError::UnknownKey(path.to_path_buf(), key, names.join(", ")));
        };
        let flag = format!("--{long}");
        match (action, value) {
            (ArgAction::SetTrue, serde_yaml::Value::Bool(true)) => out.push(flag.into()),
            (ArgAction::SetTrue, serde_yaml::Value::Bool(false)) => {}
            (ArgAction::SetTrue, _) => return Err(bad("a flag: true or false")),
            (ArgAction::Append, serde_yaml::Value::Sequence(items)) => {
                for item in items {
                    out.push(flag.clone().into());
                    out.push(scalar(item).ok_or_else(|| bad("a list of strings or numbers"))?.into());
                }
            }
            (_, v) => {
                out.push(flag.into());
                out.push(scalar(v).ok_or_else(|| bad("a string or a number"))?.into());
            }
        }
    }
    Ok(out)
}

fn scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::Parser;

    use super::{expand, ConfigError};
    use crate::cli::{Cli, Command, OnLoss};

    fn parse(file: &str, cli: &[&str]) -> Result<Cli, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcpmon.yaml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = vec!["mcpmon".into(), "run".into(), "--config".into(), path.clone().into()];
        argv.extend(cli.iter().map(OsString::from));
        let argv = expand(argv, std::path::Path::new("/nonexistent")).map_err(|e| e.to_string())?;
        Cli::try_parse_from(argv).map_err(|e| e.to_string())
    }

    fn run(cli: Cli) -> crate::cli::RunArgs {
        match cli.command {
            Command::Run(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn settings_are_run_options_and_the_command_line_wins() {
        let file = "events: /var/log/mcpmon/events.jsonl\nalert_webhook: http://127.0.0.1:9/hook\n\
                    metrics-addr: none\non-loss: kill\nincident-quiet-secs: 0\ndry-run: true\n\
                    client-comm: [myagent, other]\nalerts-file:\n";
        let a = run(parse(file, &[]).unwrap());
        assert_eq!(a.events, "/var/log/mcpmon/events.jsonl");
        assert_eq!(a.alert_webhook.as_deref(), Some("http://127.0.0.1:9/hook"));
        assert_eq!(a.metrics_addr, "none");
        assert_eq!(a.on_loss, OnLoss::Kill);
        assert_eq!(a.incident_quiet_secs, 0);
        assert!(a.dry_run);
        assert_eq!(a.client_comm, ["myagent", "other"]);
        // The command line overrides a single value and adds to a repeatable one.
        let a = run(parse(file, &["--events", "-", "--client-comm", "third"]).unwrap());
        assert_eq!(a.events, "-");
        assert_eq!(a.client_comm, ["myagent", "other", "third"]);
        // A flag set to false is not set.
        assert!(!run(parse("dry_run: false\n", &[]).unwrap()).dry_run);
        // An empty key is not set; an empty file sets nothing.
        assert!(run(parse(file, &[]).unwrap()).alerts_file.is_none());
        assert_eq!(run(parse("", &[]).unwrap()).events, "-");
    }

    #[test]
    fn export_settings_come_from_the_file() {
        let a = run(parse("alert-format: ocsf\notlp-endpoint: http://127.0.0.1:4318\notlp-queue: 16\n", &[]).unwrap());
        assert_eq!(a.alert_format, crate::alerts::AlertFormat::Ocsf);
        assert_eq!(a.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(a.otlp_queue, 16);
        assert_eq!(run(parse("", &[]).unwrap()).alert_format, crate::alerts::AlertFormat::Native);
        assert!(parse("alert-format: cef\n", &[]).is_err(), "an unknown format is refused");
    }

    #[test]
    fn typos_and_wrong_shapes_are_errors_naming_the_key() {
        let e = parse("alert-webhok: http://x\n", &[]).unwrap_err();
        assert!(e.contains("unknown setting \"alert-webhok\"") && e.contains("alert-webhook"), "{e}");
        let e = parse("dry-run: \"yes\"\n", &[]).unwrap_err();
        assert!(e.contains("\"dry-run\": a flag"), "{e}");
        let e = parse("client-comm: [{a: 1}]\n", &[]).unwrap_err();
        assert!(e.contains("\"client-comm\": a list"), "{e}");
        let e = parse("events: [\n", &[]).unwrap_err();
        assert!(e.contains("not YAML"), "{e}");
        // The values themselves go through the command line's checks.
        let e = parse("metrics-addr: localhost:9464\n", &[]).unwrap_err();
        assert!(e.contains("is not IP:PORT"), "{e}");
        let missing = expand(vec!["mcpmon".into(), "run".into(), "--config".into(), "/nonexistent/mcpmon.yaml".into()], std::path::Path::new("/nonexistent"));
        assert!(matches!(missing, Err(ConfigError::Read(..))));
    }

    #[test]
    fn the_default_file_is_read_when_present_and_none_turns_it_off() {
        let none = std::path::Path::new("/nonexistent/mcpmon.yaml");
        let argv: Vec<OsString> = ["mcpmon", "exec", "--config", "x", "--", "srv"].iter().map(OsString::from).collect();
        assert_eq!(expand(argv.clone(), none).unwrap(), argv);
        let argv: Vec<OsString> = ["mcpmon", "run", "--events", "-"].iter().map(OsString::from).collect();
        assert_eq!(expand(argv.clone(), none).unwrap(), argv);
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("mcpmon.yaml");
        std::fs::write(&default, "on-loss: kill\n").unwrap();
        let a = run(Cli::try_parse_from(expand(argv.clone(), &default).unwrap()).unwrap());
        assert_eq!(a.on_loss, OnLoss::Kill);
        let off: Vec<OsString> = ["mcpmon", "run", "--config", "none"].iter().map(OsString::from).collect();
        assert_eq!(expand(off.clone(), &default).unwrap(), off);
        assert_eq!(run(Cli::try_parse_from(off).unwrap()).on_loss, OnLoss::Alert);
    }
}
