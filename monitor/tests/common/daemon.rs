//! The real `mcpmon` binary as a test peer: start `run`, wait until it answers, read its JSON lines.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const MCPMON: &str = env!("CARGO_BIN_EXE_mcpmon");

pub struct Daemon {
    pub child: Child,
    /// The daemon's stderr, drained continuously so its logging can never block it.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    pub events: PathBuf,
    pub socket: PathBuf,
    /// The events file as read so far (each line parsed once).
    read: std::sync::Mutex<super::JsonLines>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_cmd("run", "", extra)
    }

    /// `mcpmon CMD [SUB] --events … extra` (e.g. `profile learn`).
    pub fn start_cmd(cmd: &str, sub: &str, extra: &[&str]) -> Self {
        Self::start_with(cmd, sub, extra, |_| ())
    }

    /// `mcpmon run`, on a machine without the open gate (`seccomp::refuse_fanotify`): it says
    /// so before this returns.
    pub fn start_without_gate(extra: &[&str]) -> Self {
        let d = Self::start_with("run", "", extra, super::seccomp::refuse_fanotify);
        d.expect_log("open gate unavailable", Duration::from_secs(5));
        d
    }

    fn start_with(cmd: &str, sub: &str, extra: &[&str], prepare: impl FnOnce(&mut Command)) -> Self {
        let mut d = Self::launch_with(cmd, sub, extra, prepare);
        d.wait_ready();
        d
    }

    /// `mcpmon run` as `start` runs it, returned at once instead of when it is ready: for what a
    /// daemon does while it starts. `--socket PATH` (`--events PATH`) in `extra` replaces the
    /// harness's socket (events file).
    pub fn launch(extra: &[&str]) -> Self {
        Self::launch_with("run", "", extra, |_| ())
    }

    fn launch_with(cmd: &str, sub: &str, extra: &[&str], prepare: impl FnOnce(&mut Command)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // `--events PATH` and `--socket PATH` in `extra` replace the harness's own (the events
        // are read all the same).
        let given = |flag: &str| extra.iter().position(|a| *a == flag).and_then(|i| extra.get(i + 1)).map(PathBuf::from);
        let events = given("--events").unwrap_or_else(|| dir.path().join("events.jsonl"));
        let socket = given("--socket").unwrap_or_else(|| dir.path().join("mcpmon.sock"));
        let ours = [("--events", &events), ("--socket", &socket)].into_iter().filter(|(flag, _)| !extra.contains(flag));
        let mut command = Command::new(MCPMON);
        prepare(&mut command);
        let child = command
            .arg(cmd)
            .args(Some(sub).filter(|s| !s.is_empty()))
            .args(ours.flat_map(|(flag, path)| [std::ffi::OsStr::new(flag), path.as_os_str()]))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            // Tests run daemons side by side: an ephemeral port each (see `metrics_url`).
            .args(if extra.contains(&"--metrics-addr") { &[][..] } else { &["--metrics-addr", "127.0.0.1:0"][..] })
            // Hermetic: a host where the package is installed has /etc/mcpmon/mcpmon.yaml, which
            // `run` reads by default; a test names its settings itself.
            .args(if extra.contains(&"--config") { &[][..] } else { &["--config", "none"][..] })
            // Tests run daemons side by side, and handshake discovery would have each one track
            // the others' servers too: only the tests of it turn it on.
            .args(if extra.contains(&"--handshake-discovery") { &[][..] } else { &["--handshake-discovery", "off"][..] })
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = Some(std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        }));
        Self { child, stderr, stderr_reader, events, socket, read: Default::default(), _dir: dir }
    }

    /// The metrics endpoint the daemon announced on stderr.
    pub fn metrics_url(&self) -> String {
        let deadline = Instant::now() + super::patience(Duration::from_secs(10));
        loop {
            let err = self.stderr.lock().unwrap().clone();
            if let Some(i) = err.find("url=http://") {
                let rest = &err[i + "url=".len()..];
                return rest.split_whitespace().next().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no metrics line in:\n{err}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ready when the control socket answers a ping.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + super::patience(Duration::from_secs(30));
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(r) = self.stderr_reader.take() {
                    let _ = r.join();
                }
                panic!("mcpmon run exited early ({status}):\n{}", self.stderr.lock().unwrap());
            }
            if monitor::control::client::ping(&self.socket, Duration::from_millis(500)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // What it was doing: its log so far (the last step it reached).
        panic!("mcpmon run did not become ready within {:?}; its stderr ends:\n{}", super::patience(Duration::from_secs(30)), self.stderr_tail(40));
    }

    /// The last `n` lines the daemon logged.
    pub fn stderr_tail(&self, n: usize) -> String {
        let err = self.stderr.lock().unwrap();
        let tail: Vec<&str> = err.lines().rev().take(n).collect::<Vec<_>>().into_iter().rev().collect();
        tail.join("\n")
    }

    /// Waits until the daemon has logged a line containing `needle` (at most `wait`, scaled).
    pub fn expect_log(&self, needle: &str, wait: Duration) {
        let deadline = Instant::now() + super::patience(wait);
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(Instant::now() < deadline, "the daemon never logged {needle:?}; its stderr ends:\n{}", self.stderr_tail(60));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lines `skip` accepts are neither parsed nor kept (see `JsonLines`): for floods, whose
    /// records would otherwise fill this process's memory.
    pub fn skip(&self, skip: super::LineFilter) {
        self.read.lock().unwrap().skip(skip);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every record written so far.
    pub fn records(&self) -> Vec<Value> {
        let mut r = self.read.lock().unwrap();
        r.catch_up(&self.events);
        r.seen.clone()
    }

    /// The first record, written so far or within the patience, that `pred` accepts.
    pub fn expect(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_within(what, Duration::from_secs(10), pred)
    }

    /// `expect`, with a patience of `wait` (scaled as `patience` scales it).
    pub fn expect_within(&self, what: &str, wait: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + super::patience(wait);
        let mut checked = 0;
        loop {
            // Late or not, one more read first: the record may have come while this one waited.
            let late = Instant::now() > deadline;
            let mut r = self.read.lock().unwrap();
            r.catch_up(&self.events);
            if let Some(v) = r.seen[checked..].iter().find(|v| pred(v)) {
                return v.clone();
            }
            checked = r.seen.len();
            if late {
                // The daemon's log says what it was doing meanwhile (attaching, waiting, dropping).
                let last = &r.seen[r.seen.len().saturating_sub(200)..];
                panic!(
                    "timed out waiting for {what}; the last {} of {} records:\n{}\nthe daemon's stderr ends:\n{}",
                    last.len(),
                    r.seen.len(),
                    last.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n"),
                    self.stderr_tail(60)
                );
            }
            drop(r);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait; returns stderr and every record written, the shutdown stats included.
    pub fn stop_with_records(mut self) -> (String, Vec<Value>) {
        let err = self.stop_inner();
        (err, self.records())
    }

    /// SIGTERM and wait; returns stderr.
    pub fn stop(mut self) -> String {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> String {
        let status = self.terminate(super::patience(Duration::from_secs(20)));
        let status = status.expect("mcpmon did not exit after SIGTERM");
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
        let err = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "mcpmon exited with {status}:\n{err}");
        err
    }
}

/// A test that panicked drops its daemon still running. Left alone it would outlive the test:
/// it kept holding other tests' candidates at exec (SIGSTOP) and, once its test binary had
/// exited, died on its next write to the closed stderr without continuing them (three `sleep`s
/// of `failclosed.rs` stopped for good, and `./x test` waiting on them). SIGTERM lets it
/// continue what it holds, as `stop` does; SIGKILL only if it will not go.
impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if self.terminate(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    /// SIGTERM, then its exit status once it has gone (None: still running after `within`).
    fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child, which is reaped only by this value.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            // No unwrap: this runs in `drop` too, where a panic during unwinding aborts.
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {}
                _ => return None,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the daemon reports it loaded on this kernel (`sensors_loaded`, its first record):
    /// the paths tests may expect, whatever kernel they run on.
    pub fn loaded(&self) -> Value {
        self.expect("sensors_loaded", |v| v["kind"] == "sensors_loaded")
    }

    /// The alert `a` says its open was refused before an fd existed, in a way the paths the daemon
    /// reports allow, and (`killed`) that the opener was killed. The open gate (fanotify) refuses
    /// on every kernel; where the daemon loaded the BPF-LSM, a deny rule's EPERM comes from
    /// `lsm/file_open`; where it loaded the fentry program on `security_file_open`, a kill rule's
    /// SIGKILL is pending from there. Either may come before the gate's permission event.
    pub fn assert_refused_before_fd(&self, a: &Value, killed: bool, what: &str) {
        assert!(
            self.refused_before_fd(a, killed),
            "{what}: not refused before an fd existed on the paths the daemon reports (open_deny {}, file_open kill {}): {a}",
            self.loaded()["open_deny"],
            self.loaded()["programs"].as_array().unwrap().iter().any(|p| p["name"] == "mcpmf_file_open_e")
        );
    }

    /// Whether alert `a` shows its open refused before an fd existed, on a path the daemon
    /// reports it has (the open gate, the fentry kill at security_file_open, the BPF-LSM deny).
    pub fn refused_before_fd(&self, a: &Value, killed: bool) -> bool {
        let loaded = self.loaded();
        let programs = loaded["programs"].as_array().unwrap();
        let at_file_open = programs.iter().any(|p| p["name"] == "mcpmf_file_open_e");
        let gate = if killed { "denied_and_killed_in_kernel" } else { "denied_in_kernel" };
        let by_gate = a["action"]["result"] == gate && a["action"]["where"] == "open_gate";
        let by_hook = if killed {
            // The SIGKILL is pending from security_file_open, before fd_install: the open may
            // still return an fd number, but the process dies before it returns to user space.
            at_file_open && a["action"]["result"] == "killed_in_kernel"
        } else {
            loaded["open_deny"] == "lsm" && a["action"]["result"] == "denied_in_kernel" && a["event"]["result"]["errno"] == "EPERM"
        };
        by_gate || by_hook
    }
}

pub fn exec_cmd(socket: &Path, name: &str, extra: &[&str], cmd: &[&str]) -> Command {
    let mut c = Command::new(MCPMON);
    c.arg("exec").arg("--name").arg(name).arg("--socket").arg(socket).args(extra);
    // exec's own wait for the daemon's acknowledgement (3 s by default), stretched like the others.
    c.arg("--timeout-ms").arg(super::patience(Duration::from_millis(3000)).as_millis().to_string()).arg("--").args(cmd);
    c
}

pub fn is_open(v: &Value, path: &str) -> bool {
    v["kind"] == "open" && v["path"] == path
}

