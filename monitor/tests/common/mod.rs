//! Harness for integration tests that load the production eBPF object: "trigger, then expect the
//! event". Tests skip with a printed reason only where this machine cannot load eBPF; with
//! `MCPMON_REQUIRE_PRIVILEGED=1` (CI) they fail instead.
#![allow(dead_code)]

pub mod daemon;
pub mod seccomp;
pub mod user;

use std::{
    io::Write,
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use monitor::{
    events::{reader::Decoded, Event},
    probes::{SensorConfig, Sensors},
    tracker::{Discovery, Tracker},
};
use tokio::sync::mpsc;

/// A test that cannot run here says why, and is counted as skipped (never as passed): the line
/// goes to `MCPMON_SKIP_LOG`, which `cargo xtask test` reads into its summary.
pub fn skipped(why: &str) {
    eprintln!("SKIPPED: {why}");
    if let Ok(p) = std::env::var("MCPMON_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p) {
            let _ = writeln!(f, "{}: {why}", std::thread::current().name().unwrap_or("?"));
        }
    }
}

/// A wait of the harness (a daemon coming up, an expected event), stretched where the tests run
/// under emulation: `MCPMON_TEST_SLOWDOWN=N` (tests/vm/itest.sh sets it inside qemu TCG, where
/// code runs many times slower) makes every such wait N times as long. Only how long a test may
/// wait changes, never what it expects.
pub fn patience(d: Duration) -> Duration {
    let n = std::env::var("MCPMON_TEST_SLOWDOWN").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(1).max(1);
    d * n
}

/// A JSON-lines file the daemon is still writing, read as it grows: where the next read starts,
/// and the records before it. Each line is parsed once: a test that re-parsed the file on every
/// poll spent seconds per poll once servers had written tens of thousands of records, and on a
/// loaded machine one poll outlasted its deadline, with a snapshot older than the record it
/// waited for.
///
/// A flood test has the daemon write millions of records. Kept as parsed values they took 24 GB,
/// and the kernel's OOM killer ended the test binary in a fresh-clone CI; parsed at all, in a
/// debug build, they put the test minutes behind the daemon. So the file is read in bounded
/// chunks, and a `skip` filter sees each line first: a line it skips is never parsed.
#[derive(Default)]
pub struct JsonLines {
    offset: u64,
    pub seen: Vec<serde_json::Value>,
    skip: Option<LineFilter>,
}

/// Says of a line, before it is parsed, whether to skip it.
pub type LineFilter = Box<dyn FnMut(&str) -> bool + Send>;

/// What one read takes at most; a line longer than this is read whole all the same.
const CHUNK: u64 = 8 << 20;

impl JsonLines {
    /// Parses the whole lines added since the last read. A read can land in the middle of a
    /// write, so a last line without its newline is not a record yet: it is left for the next
    /// read, as `tail -F` and log shippers do.
    pub fn catch_up(&mut self, path: &std::path::Path) {
        use std::io::{Read, Seek};
        let Ok(mut f) = std::fs::File::open(path) else { return };
        let mut want = CHUNK;
        loop {
            f.seek(std::io::SeekFrom::Start(self.offset)).unwrap();
            let mut buf = Vec::new();
            let got = (&mut f).take(want).read_to_end(&mut buf).unwrap() as u64;
            let Some(end) = buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else {
                // No whole line yet: at the end of the file, wait for the rest; else a line
                // longer than the chunk, read again with room for it.
                if got < want {
                    return;
                }
                want *= 2;
                continue;
            };
            for line in buf[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let text = std::str::from_utf8(line).unwrap_or_else(|e| panic!("a line that is not UTF-8 {:?}: {e}", String::from_utf8_lossy(line)));
                if self.skip.as_mut().is_some_and(|skip| skip(text)) {
                    continue;
                }
                let v = serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON line {text:?}: {e}"));
                self.seen.push(v);
            }
            self.offset += end as u64;
            if got < want {
                return;
            }
            want = CHUNK;
        }
    }

    /// From now on, the lines `skip` accepts are neither parsed nor kept.
    pub fn skip(&mut self, skip: LineFilter) {
        self.skip = Some(skip);
    }
}

/// The server of an `open` record, found by text alone (std's search, optimised even in a debug
/// build, keeps pace with a flood); None for any other record.
pub fn open_record_server(line: &str) -> Option<&str> {
    // The record's own kind is its first (an alert carries the event's further on).
    if !line.find("\"kind\":\"").is_some_and(|i| line[i + 8..].starts_with("open\"")) {
        return None;
    }
    line.find("\"server\":\"").and_then(|i| line[i + 10..].split('"').next())
}

/// A filter for floods: of each server's `open` records only the first is kept.
pub fn all_but_first_open() -> LineFilter {
    let mut servers = std::collections::HashSet::new();
    Box::new(move |line: &str| {
        let Some(server) = open_record_server(line) else { return false };
        if servers.contains(server) {
            return true;
        }
        servers.insert(server.to_owned());
        false
    })
}

/// The records of a JSON-lines file the daemon may still be writing (see `JsonLines`).
/// What `f` finds within `wait` (scaled as `patience` scales it), trying every 100 ms: None if
/// it found nothing by then.
pub fn within<T>(wait: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + patience(wait);
    loop {
        // One more try after the deadline: it may have come while this one waited.
        let late = std::time::Instant::now() > deadline;
        if let Some(v) = f() {
            return Some(v);
        }
        if late {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let mut r = JsonLines::default();
    r.catch_up(path);
    r.seen
}

pub fn require_privileged() -> bool {
    matches!(std::env::var("MCPMON_REQUIRE_PRIVILEGED").as_deref(), Ok("1") | Ok("true"))
}

/// Returns false (after printing why) when the test must be skipped.
pub fn can_load_ebpf() -> bool {
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let why = format!("not root (euid {euid}): cannot load eBPF");
    if require_privileged() {
        panic!("MCPMON_REQUIRE_PRIVILEGED=1 but {why}");
    }
    skipped(&format!("{why}"));
    false
}

pub struct Harness {
    pub sensors: Sensors,
    pub tracker: Tracker,
    rx: mpsc::Receiver<Decoded>,
    /// The ring buffer, when the test reads it by hand (`start_with(.., false)`).
    pub ring: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    /// The kernel's lost-event counters.
    pub lost: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    /// Everything received so far (for failure messages and negative checks).
    pub seen: Vec<Event>,
}

impl Harness {
    /// Loads and attaches the sensors; None when the test must be skipped.
    pub async fn start() -> Option<Self> {
        Self::start_with(SensorConfig::default(), true).await
    }

    pub async fn start_with(cfg: SensorConfig, read: bool) -> Option<Self> {
        if !can_load_ebpf() {
            return None;
        }
        let mut sensors = match Sensors::load(&cfg) {
            Ok(s) => s,
            Err(e) if !require_privileged() && matches!(e, monitor::probes::ProbeError::Btf(_)) => {
                skipped(&format!("this kernel cannot run mcpmon's sensors: {e}"));
                return None;
            }
            Err(e) => panic!("loading sensors: {e}"),
        };
        let tracker = monitor::tracker::Tracker::from_maps(sensors.tracker_maps().unwrap());
        let lost = sensors.take_lost().unwrap();
        let (tx, rx) = mpsc::channel(65536);
        let ring = sensors.take_events().unwrap();
        let ring = if read {
            // The reader hands on whole drains; these tests take events one at a time.
            let (btx, mut brx) = mpsc::channel::<monitor::events::reader::Batch>(256);
            tokio::spawn(monitor::events::reader::run(ring, btx));
            tokio::spawn(async move {
                while let Some(batch) = brx.recv().await {
                    for ev in batch {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
            });
            None
        } else {
            Some(ring)
        };
        Some(Self { sensors, tracker, rx, ring, lost, seen: vec![] })
    }

    pub fn track(&mut self, pid: u32, name: &str) -> u32 {
        self.sensors.attach_syscall_hooks().expect("attach syscall hooks");
        self.tracker.track(pid, name, Discovery::TrackPid, 0).expect("track").server_id
    }

    /// Waits for an event matching `pred`, failing with everything seen on timeout.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + patience(Duration::from_secs(10));
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Ok(ev))) => {
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        return ev;
                    }
                }
                Ok(Some(Err(e))) => panic!("decode error: {e}"),
                Ok(None) => panic!("event channel closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; seen:\n{}", self.dump()),
            }
        }
    }

    /// Collects events for `d` (for negative checks).
    pub async fn settle(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(Ok(ev))) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(ev);
        }
    }

    /// Reads and decodes everything in a hand-read ring buffer.
    pub fn drain_ring(&mut self) -> Vec<Event> {
        let ring = self.ring.as_mut().expect("start_with(.., false)");
        let mut out = vec![];
        while let Some(item) = ring.next() {
            out.push(monitor::events::decode(&item).expect("decode"));
        }
        out
    }

    pub fn dump(&self) -> String {
        self.seen.iter().map(|e| serde_json::to_string(e).unwrap()).collect::<Vec<_>>().join("\n")
    }
}

/// A shell that waits for a line on stdin before running `script`: the test tracks its pid in
/// between, so everything the script does happens under watch.
pub struct Gated {
    pub child: Child,
    stdin: Option<ChildStdin>,
}

impl Gated {
    pub fn spawn(script: &str) -> Self {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read _go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn go(&mut self) {
        let mut s = self.stdin.take().expect("go once");
        s.write_all(b"go\n").unwrap();
        // Dropping stdin closes it: scripts that read again see EOF.
        drop(s);
    }

    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// The MCP peers `cargo xtask setup` installs (None, after saying why, when they are missing).
pub fn peers() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-peers");
    if dir.join("installed").exists() {
        return dir.canonicalize().ok();
    }
    let why = format!("MCP peers are not installed in {} (run `cargo xtask setup`)", dir.display());
    assert!(!require_privileged(), "MCPMON_REQUIRE_PRIVILEGED=1 but {why}");
    skipped(&format!("{why}"));
    None
}

/// uv, pipx, bun and the wheelhouse that `cargo xtask setup` installs (None, after saying why).
pub fn runners() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-runners");
    if dir.join("installed").exists() {
        return dir.canonicalize().ok();
    }
    let why = format!("MCP runners are not installed in {} (run `cargo xtask setup`)", dir.display());
    assert!(!require_privileged(), "MCPMON_REQUIRE_PRIVILEGED=1 but {why}");
    skipped(&why);
    None
}


/// Runs the official MCP client SDK (tests/peers/mcp_client.py) against `server`: initialize,
/// tools/list, then `calls`; returns what the client reports (ids it used, tools, results).
/// `comm` makes the client pose as an MCP client program (for sniffing).
pub fn mcp_client(peers: &std::path::Path, calls: serde_json::Value, comm: Option<&str>, server: &[&str]) -> serde_json::Value {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_client.py");
    let mut c = Command::new(peers.join("venv/bin/python"));
    c.arg(script).arg(calls.to_string()).arg("--").args(server);
    if let Some(comm) = comm {
        c.env("MCP_CLIENT_COMM", comm);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Debian tool a test needs (installed by `cargo xtask setup`); in CI its absence fails.
pub fn tool(path: &str) -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from(path);
    if p.exists() {
        return Some(p);
    }
    if require_privileged() {
        panic!("{path} is missing: `cargo xtask setup` installs it");
    }
    skipped(&format!("{path} not installed (cargo xtask setup installs it)"));
    None
}

/// A plain HTTP/1.0 GET on loopback; returns the body.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string()).filter(|_| head.split_whitespace().nth(1) == Some("200"))
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
