//! `mcpmon rules lint DIR`: the real loader, then every rule's fixtures.
use std::{path::Path, process::ExitCode};

pub fn run(dir: &Path, passwd: &Path) -> ExitCode {
    let homes = super::load::homes_from_passwd(&std::fs::read_to_string(passwd).unwrap_or_default());
    let set = match super::load_dir(dir, &homes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let failures = set.check_fixtures();
    let fixtures: usize = set.rules.iter().map(|r| r.fixtures_match.len() + r.fixtures_no_match.len()).sum();
    for (id, why) in &failures {
        let r = set.rules.iter().find(|r| &r.id == id);
        let at = r.map(|r| format!("{}:{}", r.file.display(), r.line)).unwrap_or_default();
        eprintln!("error: {at}: rule {id}: {why}");
    }
    println!("{} files, {} rules, {} fixtures, {} failures", set.files.len(), set.rules.len(), fixtures, failures.len());
    if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
