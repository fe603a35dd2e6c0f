//! Ordinary users for the tests that try mcpmon as an outsider would: made with `useradd`,
//! homes under /tmp, servers started as that user through `mcpmon exec --require-monitor`, and
//! the daemon running the shipped rules.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use super::daemon::Daemon;

pub const MCPMON: &str = env!("CARGO_BIN_EXE_mcpmon");
/// The test helpers (loops, victims, attackers), kept out of the product binary.
pub const TESTKIT: &str = env!("CARGO_BIN_EXE_mcpmon-testkit");

/// An ordinary user made with `useradd`, home under /tmp; removed on drop.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    _root: tempfile::TempDir,
}

impl User {
    /// `create_home`: make the home now (else the test creates it later).
    pub fn add(tag: &str, create_home: bool) -> User {
        let root = tempfile::Builder::new().prefix("mcpmon-home-").tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = root.path().join("home").join(tag);
        // The whole tag (a name may have 32 characters): cut to four, "nogate" and "nogatekey"
        // were one user, and each test's `userdel` of a stale one removed the other's.
        assert!(tag.len() <= 20 && tag.chars().all(|c| c.is_ascii_lowercase()), "tag {tag:?}");
        let name = format!("mcpt{tag}{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").arg(&name).output();
        let out = Command::new("useradd").args(["-M", "-s", "/bin/sh", "-d"]).arg(&home).arg(&name).output().unwrap();
        assert!(out.status.success(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
        let id = |f: &str| -> u32 { String::from_utf8(Command::new("id").arg(f).arg(&name).output().unwrap().stdout).unwrap().trim().parse().unwrap() };
        let u = User { uid: id("-u"), gid: id("-g"), name, home, _root: root };
        if create_home {
            u.make_home();
        }
        u
    }

    pub fn make_home(&self) {
        std::fs::create_dir_all(self.home.join(".ssh")).unwrap();
        self.chown(&self.home);
        self.chown(&self.home.join(".ssh"));
    }

    pub fn chown(&self, p: &Path) {
        std::os::unix::fs::chown(p, Some(self.uid), Some(self.gid)).unwrap();
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.home.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut d = p.parent().unwrap().to_path_buf();
        while d.starts_with(&self.home) {
            self.chown(&d);
            d = d.parent().unwrap().to_path_buf();
        }
        std::fs::write(&p, text).unwrap();
        self.chown(&p);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// `setpriv … --`: what follows runs as this user (outside any server unless it asks).
    pub fn command(&self) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &self.uid.to_string(), "--regid", &self.gid.to_string(), "--clear-groups", "--"]);
        c
    }

    /// `mcpmon exec --require-monitor --name NAME -- ARGV` as this user.
    pub fn exec(&self, d: &Daemon, name: &str, argv: &[&str]) -> Command {
        let mut c = self.command();
        c.arg(MCPMON).args(["exec", "--require-monitor", "--name", name, "--socket"]).arg(&d.socket);
        c.arg("--timeout-ms").arg(super::patience(std::time::Duration::from_millis(3000)).as_millis().to_string()).arg("--").args(argv);
        c.env("HOME", &self.home).current_dir(&self.home);
        c
    }

    pub fn run(&self, d: &Daemon, name: &str, script: &str) -> Output {
        self.exec(d, name, &["/bin/sh", "-c", script]).stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// The shipped rules, unchanged, in a directory the test may add grants to.
pub fn shipped_rules(dir: &Path, grants: &str) -> PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            let mut text = std::fs::read_to_string(e.path()).unwrap();
            if name == "local.yaml" && !grants.is_empty() {
                text = text.replace("grants: {}", grants);
            }
            std::fs::write(rules.join(&name), text).unwrap();
        }
    }
    rules
}

/// The daemon on the real user database with the shipped rules; its socket reachable by
/// ordinary users, as `mcpmon run` makes it.
pub fn start(dir: &Path, grants: &str) -> Daemon {
    started(dir, grants, Daemon::start)
}

/// `start`, on a machine without the open gate (`super::seccomp`).
pub fn start_without_gate(dir: &Path, grants: &str) -> Daemon {
    started(dir, grants, Daemon::start_without_gate)
}

fn started(dir: &Path, grants: &str, start: fn(&[&str]) -> Daemon) -> Daemon {
    let rules = shipped_rules(dir, grants);
    let d = start(&["--rules", rules.to_str().unwrap()]);
    std::fs::set_permissions(d.socket.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    d
}

pub fn alert(d: &Daemon, server: &str, rule: &str) -> Value {
    d.expect(&format!("alert {rule} for {server}"), |v| v["kind"] == "alert" && v["server"]["name"] == server && v["rule"]["id"] == rule)
}

/// A tracked reader that is already running and opens the file the moment it is named.
pub struct Reader {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Reader {
    pub fn start(u: &User, d: &Daemon, name: &str) -> Reader {
        let code = "import sys\nprint('ready', flush=True)\nf=sys.stdin.readline().strip()\nprint(open(f).read(), flush=True)\n";
        let mut child = u.exec(d, name, &[super::python(), "-c", code]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready", "{name}");
        Reader { child, out }
    }

    /// Names the file; returns what the reader got and how it ended.
    pub fn open(mut self, p: &Path) -> (String, std::process::ExitStatus) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{}", p.display()).unwrap();
        let mut got = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut got);
        (got, self.child.wait().unwrap())
    }
}
