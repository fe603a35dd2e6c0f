//! Does an exec run a configured server?
//!
//! One launch can be several images in one pid: a client runs `npx`, a symlink to a
//! `#!/usr/bin/env node` script, so the kernel first runs `/usr/bin/env node /usr/bin/npx …`
//! (comm `npx`), then `node /usr/bin/npx …`. The daemon reads /proc some time after the exec
//! event, so it may see either image, or a later one. The command is therefore accepted where
//! each of them shows it: the file the exec named (the event's filename, which is also what the
//! kernel's comm filter matched), argv[0], argv[1] (an interpreter running the script) or argv[2]
//! (a shebang with one interpreter argument, `env node`).
use std::{
    cell::OnceCell,
    collections::HashMap,
    path::{Path, PathBuf},
};

use super::{runners, ConfiguredServer};

pub fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// What is known of one exec: the kernel's view (filename) and /proc's (exe, argv, and lazily
/// the cwd and environment, read only when an entry that sets them is otherwise a match).
pub struct ExecView<'a> {
    pub filename: Option<&'a str>,
    pub exe: Option<&'a str>,
    pub argv: &'a [String],
    pub pid: Option<u32>,
    cwd: OnceCell<Option<PathBuf>>,
    environ: OnceCell<Option<HashMap<String, String>>>,
}

impl<'a> ExecView<'a> {
    pub fn new(filename: Option<&'a str>, exe: Option<&'a str>, argv: &'a [String], pid: Option<u32>) -> Self {
        Self { filename, exe, argv, pid, cwd: OnceCell::new(), environ: OnceCell::new() }
    }

    fn cwd(&self) -> Option<&Path> {
        self.cwd.get_or_init(|| crate::sys::procfs::cwd(self.pid?)).as_deref()
    }

    /// None: the environment cannot be read (the process is gone, or another user's).
    fn environ(&self) -> Option<&HashMap<String, String>> {
        self.environ.get_or_init(|| crate::sys::procfs::environ(self.pid?)).as_ref()
    }
}

/// A configured value the client expands before the launch (`${input:token}`, `$HOME`,
/// `{env:X}`): it cannot be compared with what the process got.
fn templated(v: &str) -> bool {
    v.contains('$') || v.contains("{env:") || v.contains("{file:")
}

/// A path the kernel resolves against the working directory.
fn relative_path(a: &str) -> bool {
    !a.starts_with('/') && (a.starts_with('.') || a.contains('/'))
}

/// npx flags that npm leaves out of its title.
const NPX_OWN_FLAGS: &[&str] = &["-y", "--yes", "-q", "--quiet"];

/// npm sets `process.title` to `npm exec PKG ARGS…`, overwriting argv: /proc then shows that one
/// string for a running `npx -y PKG ARGS…` (a server found at start-up). Read back as npx's argv.
fn npm_title(argv: &[String]) -> Option<Vec<String>> {
    let [one] = argv else { return None };
    let rest = one.strip_prefix("npm exec ")?;
    Some(std::iter::once("npx").chain(rest.split_whitespace()).map(str::to_string).collect())
}

impl ConfiguredServer {
    /// How well this exec fits the entry: None = it does not run it; more = more of the entry
    /// (args, env, cwd) was checked, so the most specific of several candidates wins.
    pub fn fit(&self, x: &ExecView) -> Option<usize> {
        if let Some(t) = npm_title(x.argv) {
            return self.fit_argv(x, &t, true);
        }
        // A running uvx shows `uv tool uvx ARGS`: tried as `uvx ARGS` only when the command line
        // as it is fits nothing (an entry may name `uv tool uvx` itself).
        self.fit_argv(x, x.argv, false).or_else(|| self.fit_argv(x, &runners::as_configured(x.argv)?, false))
    }

    /// `retitled`: argv is npm's title read back, without npx's own flags.
    fn fit_argv(&self, x: &ExecView, argv: &[String], retitled: bool) -> Option<usize> {
        let (full_cmd, args) = self.effective()?;
        let cmd = base(&full_cmd);
        let shebang_arg = argv.len() > 2 && (base(&argv[0]) == "env" || argv[1].starts_with('-'));
        let at = (0..argv.len().min(3)).find(|&i| base(&argv[i]) == cmd && (i < 2 || shebang_arg));
        let start = match at {
            Some(i) => i + 1,
            // The exec named the command itself (the event's filename, or the exe of a binary
            // exec'd by name): its arguments follow argv[0].
            None if x.filename.map(base) == Some(cmd) || (argv.len() <= 1 && x.exe.map(base) == Some(cmd)) => 1.min(argv.len()),
            None => return None,
        };
        let mut it = argv[start..].iter();
        // A retitled npx no longer shows its own flags.
        let shown = |a: &&String| !retitled || !NPX_OWN_FLAGS.contains(&a.as_str());
        if !args.iter().filter(shown).all(|a| it.any(|b| b == a)) {
            return None;
        }
        let mut score = 1 + args.len();
        if let Some(dir) = &self.cwd {
            // The same relative command line in two projects: the working directory tells them
            // apart. An absolute one runs the same wherever it is started from.
            let rel = relative_path(&full_cmd) || args.iter().any(|a| relative_path(a));
            // A relative `cwd` (Gemini CLI's `./mcp-servers/python`) is relative to a workspace
            // the daemon does not know: the process's cwd must end with it.
            let same = |c: &Path| if dir.is_absolute() { c == dir } else { c.ends_with(dir.strip_prefix(".").unwrap_or(dir)) };
            if rel {
                if x.cwd().is_some_and(|c| !same(c)) {
                    return None;
                }
                score += 1;
            }
        }
        for (k, v) in self.env.iter().filter(|(_, v)| !templated(v)) {
            // An environment that cannot be read is not held against the process.
            if x.environ().is_some_and(|e| e.get(k) != Some(v)) {
                return None;
            }
            score += 1;
        }
        Some(score)
    }
}
