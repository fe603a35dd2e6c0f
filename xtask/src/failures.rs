//! What the failing tests printed, kept for the last lines of `./x test`.
//!
//! CI shows only the tail of a run, and the kernel matrix runs after the tests: without this, a
//! failed run ends in "cargo test failed: exit status: 101" with the failing test's name and
//! panic message some thousand lines earlier, out of sight.

/// Lines kept before a panic message (the test's own account of what it saw), and at most this
/// many of the message itself: a message may carry a child's whole stderr ("client failed:").
const BEFORE_PANIC: usize = 12;
const AFTER_PANIC: usize = 30;
/// Lines kept of a failing test's output that has no panic message: its end.
const TAIL: usize = 15;
/// A line of a test's output is cut here: some tests print whole event logs on one line.
const LINE_CAP: usize = 400;

/// Reads libtest's output line by line and keeps each failing test's section.
#[derive(Default)]
pub struct Failures {
    /// Names from `test NAME ... FAILED`, in order: a test binary that dies (a signal, a hang
    /// killed by its own timeout) prints no section, but its failed tests are still named.
    names: Vec<String>,
    current: Option<(String, Vec<String>)>,
    sections: Vec<(String, Vec<String>)>,
    /// What cargo said on stderr of a test binary that failed without libtest naming a test: one
    /// that died of a signal (an abort from a panic while panicking, a SIGKILL), or would not
    /// build. Without these lines such a run ends in "exit status: 101" and nothing else.
    cargo: Vec<String>,
    /// In cargo's closing list of failed targets ("error: 2 targets failed:").
    in_target_list: bool,
}

/// Lines kept of cargo's own stderr, the last ones.
const CARGO_LINES: usize = 40;

impl Failures {
    pub fn feed(&mut self, line: &str) {
        if let Some(name) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")) {
            self.names.push(name.to_string());
            return;
        }
        if let Some(name) = line.strip_prefix("---- ").and_then(|l| l.strip_suffix(" stdout ----")) {
            self.close();
            self.current = Some((name.to_string(), Vec::new()));
            return;
        }
        // libtest ends the sections with a second "failures:" header listing the names.
        if line == "failures:" || line.starts_with("test result: ") {
            self.close();
            return;
        }
        if let Some((_, lines)) = &mut self.current {
            lines.push(line.chars().take(LINE_CAP).collect());
        }
    }

    /// A line of cargo's stderr (which also carries the compiler's output and the tests' own
    /// stderr): keeps what names a failed target and why it failed.
    pub fn feed_cargo(&mut self, line: &str) {
        let t = line.trim_start();
        let keep = if line.starts_with("error") {
            self.in_target_list = line.ends_with("targets failed:") || line.ends_with("target failed:");
            true
        } else if self.in_target_list && t.starts_with('`') {
            true
        } else {
            self.in_target_list = false;
            t.starts_with("process didn't exit successfully") || t.contains("panicked at") || t.contains("aborting")
        };
        // The last lines are kept: cargo names the failed targets at the very end, and the tests'
        // own stderr may say "error" often before that.
        if keep {
            if self.cargo.len() == CARGO_LINES {
                self.cargo.remove(0);
            }
            self.cargo.push(line.chars().take(LINE_CAP).collect());
        }
    }

    /// Takes the cargo lines another reader kept (stderr is read in a thread of its own).
    pub fn add_cargo(&mut self, other: Failures) {
        self.cargo.extend(other.cargo);
    }

    fn close(&mut self) {
        if let Some(section) = self.current.take() {
            self.sections.push(section);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.sections.is_empty() && self.current.is_none() && self.cargo.is_empty()
    }

    /// Each failing test's name, then its panic message with the lines before it (the whole
    /// output's last lines when it did not panic).
    pub fn digest(&mut self) -> String {
        self.close();
        let mut out = format!("failed tests ({}):\n", self.names.len().max(self.sections.len()));
        for name in &self.names {
            out.push_str(&format!("  {name}\n"));
        }
        for (name, lines) in &self.sections {
            out.push_str(&format!("---- {name} (its output's end) ----\n"));
            let panic = lines.iter().position(|l| l.contains("panicked at"));
            let (from, to) = match panic {
                Some(p) => (p.saturating_sub(BEFORE_PANIC), p + 1 + message_len(&lines[p + 1..])),
                None => (lines.len().saturating_sub(TAIL), lines.len()),
            };
            for l in &lines[from..to] {
                out.push_str(&format!("  {l}\n"));
            }
        }
        if !self.cargo.is_empty() {
            out.push_str("cargo said:\n");
            for l in &self.cargo {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out
    }
}

/// How many lines of a panic message follow its `panicked at` line: up to the backtrace (CI
/// sets `RUST_BACKTRACE=1`) or libtest's hint, at most `AFTER_PANIC`.
fn message_len(after: &[String]) -> usize {
    after.iter().take(AFTER_PANIC).take_while(|l| !(l.starts_with("stack backtrace:") || l.starts_with("note: run with"))).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(text: &str) -> Failures {
        let mut f = Failures::default();
        text.lines().for_each(|l| f.feed(l));
        f
    }

    #[test]
    fn a_failing_test_is_named_with_its_panic_message() {
        let mut f = fed(
            "running 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ok\n\nfailures:\n\n\
             ---- b stdout ----\nsaw 2 alerts\n\nthread 'b' panicked at tests/x.rs:9:5:\n\
             expected 1 alert\nnote: run with `RUST_BACKTRACE=1`\n\nfailures:\n    b\n\n\
             test result: FAILED. 2 passed; 1 failed; 0 ignored\n",
        );
        let d = f.digest();
        assert!(d.starts_with("failed tests (1):\n  b\n"), "{d}");
        assert!(d.contains("  saw 2 alerts\n"), "{d}");
        assert!(d.contains("panicked at tests/x.rs:9:5"), "{d}");
        assert!(d.contains("  expected 1 alert\n"), "{d}");
        assert!(!d.contains("    b\n"), "the closing list is not output: {d}");
    }

    /// A message that carries a child's stderr is kept whole, and a backtrace is not.
    #[test]
    fn a_long_panic_message_is_kept_and_its_backtrace_is_not() {
        let stderr: String = (0..8).map(|i| format!("child line {i}\n")).collect();
        let mut f = fed(&format!(
            "test b ... FAILED\n---- b stdout ----\nthread 'b' panicked at tests/common/mod.rs:288:5:\n\
             client failed:\n{stderr}stack backtrace:\n   0: std::panicking::begin_panic\n\nfailures:\n"
        ));
        let d = f.digest();
        assert!(d.contains("  client failed:\n") && d.contains("  child line 7\n"), "{d}");
        assert!(!d.contains("stack backtrace") && !d.contains("begin_panic"), "{d}");
    }

    /// A test binary that dies of a signal names no test: cargo's stderr names the target.
    #[test]
    fn a_binary_that_dies_is_named_from_cargo_stderr() {
        let mut f = Failures::default();
        f.feed("running 12 tests");
        for l in [
            "   Compiling monitor v0.1.0 (/w/monitor)",
            "thread 'x' panicked at tests/common/mod.rs:10:5:",
            "thread caused non-unwinding panic. aborting.",
            "error: test failed, to rerun pass `-p monitor --test secrets`",
            "",
            "Caused by:",
            "  process didn't exit successfully: `/w/target/debug/deps/secrets-1` (signal: 6, SIGABRT)",
            "note: test exited abnormally; to see the full output pass --nocapture to the harness.",
            "error: 1 target failed:",
            "    `-p monitor --test secrets`",
            "warning: unused variable",
        ] {
            f.feed_cargo(l);
        }
        assert!(!f.is_empty());
        let d = f.digest();
        assert!(d.contains("cargo said:\n"), "{d}");
        assert!(d.contains("--test secrets`\n") && d.contains("(signal: 6, SIGABRT)"), "{d}");
        assert!(d.contains("panicked at tests/common/mod.rs") && d.contains("aborting"), "{d}");
        assert!(d.contains("  error: 1 target failed:\n      `-p monitor --test secrets`\n"), "{d}");
        assert!(!d.contains("Compiling") && !d.contains("warning") && !d.contains("Caused by"), "{d}");
    }

    #[test]
    fn a_passing_run_leaves_nothing() {
        let f = fed("running 1 test\ntest a ... ok\n\ntest result: ok. 1 passed; 0 failed\n");
        assert!(f.is_empty());
    }

    #[test]
    fn output_without_a_panic_keeps_its_end_and_long_lines_are_cut() {
        let long = "x".repeat(LINE_CAP * 2);
        let body: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let mut f = fed(&format!("test t ... FAILED\n---- t stdout ----\n{body}{long}\nfailures:\n"));
        let d = f.digest();
        assert!(d.contains("line 39") && !d.contains("line 5\n"), "{d}");
        assert!(d.contains(&"x".repeat(LINE_CAP)) && !d.contains(&"x".repeat(LINE_CAP + 1)), "{d}");
    }
}
