//! Issue 15 item 3, containers: a server launched as `docker run -i IMAGE` runs in a container
//! whose processes are children of the engine's shim, not of the CLI the agent started. It must
//! be one server, named once (after the image), whose tree holds the container's processes on
//! the host, their events carrying the image and attributed to the tool call in flight.
//!
//! A real engine: Debian's docker.io (dockerd, containerd, runc), started here when none runs
//! (no bridge, no iptables: the container has `--network none`). The image is imported from a
//! local rootfs (a static busybox and a shell MCP server): no registry.
mod common;

use std::{
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::daemon::Daemon;
use serde_json::{json, Value};

const DOCKER: &str = "/usr/bin/docker";
/// One engine at a time: each test starts (and stops) dockerd when none runs.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
const IMAGE: &str = "mcpmon-test/sh-server:1";

/// The engine: the one running, or one started (and stopped) by the test.
struct Engine {
    started: Option<Child>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(c) = self.started.as_mut() {
            // SAFETY: a signal to the dockerd this test spawned (its pid, still our child).
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new(DOCKER).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn engine() -> Option<Engine> {
    common::tool(DOCKER)?;
    let dockerd = common::tool("/usr/sbin/dockerd")?;
    if docker_ok(&["info"]) {
        return Some(Engine { started: None });
    }
    let log = std::env::temp_dir().join("mcpmon-test-dockerd.log");
    let child = Command::new(dockerd)
        .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let e = Engine { started: Some(child) };
    let deadline = Instant::now() + common::patience(Duration::from_secs(60));
    while !docker_ok(&["info"]) {
        if Instant::now() > deadline {
            let why = format!("dockerd did not come up:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            assert!(!common::require_privileged(), "{why}");
            common::skipped(&why);
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(e)
}

/// The server's image: busybox and `sh_server.sh` (a shell MCP server whose tool cats
/// /etc/hostname), imported from a rootfs made here.
fn image() {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("srv")).unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in ["sh", "cat", "sed", "printf"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sh_server.sh"), root.path().join("srv/sh_server.sh")).unwrap();
    let tar = Command::new("tar").arg("-C").arg(root.path()).args(["-c", "."]).stdout(Stdio::piped()).spawn().unwrap();
    let out = Command::new(DOCKER).args(["import", "-", IMAGE]).stdin(tar.stdout.unwrap()).output().unwrap();
    assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
}

/// What each test needs: the Python SDK, the engine to itself (stopped, if started, before the
/// next test takes it), and the image imported.
struct Setup {
    peers: PathBuf,
    _engine: Engine,
    _one: std::sync::MutexGuard<'static, ()>,
}

fn setup() -> Option<Setup> {
    if !common::can_load_ebpf() {
        return None;
    }
    let peers = common::peers()?;
    common::tool("/bin/busybox")?;
    let one = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let engine = engine()?;
    image();
    Some(Setup { peers, _engine: engine, _one: one })
}

impl Setup {
    /// An agent on the official Python SDK (no known client, no config) that runs the server
    /// as MCP configs for containers do: `docker run -i --rm … IMAGE`, `run` the options.
    fn agent(&self, run: &[&str]) -> Command {
        self.agent_via::<&str>(&[], run)
    }

    /// [`Self::agent`] with the CLI behind `wrap` (`setpriv …`, `mcpmon exec … --`).
    fn agent_via<S: AsRef<std::ffi::OsStr>>(&self, wrap: &[S], run: &[&str]) -> Command {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/mcp_client.py");
        let calls = json!([{"tool": "hostname", "arguments": {}}]);
        let mut c = Command::new(self.peers.join("venv/bin/python"));
        c.arg(&script).arg(calls.to_string()).arg("--").args(wrap).args([DOCKER, "run", "-i", "--rm", "--network", "none"]).args(run).args([IMAGE, "sh", "/srv/sh_server.sh"]);
        c
    }
}

#[test]
fn a_docker_run_server_is_one_tree_with_its_container() {
    let Some(t) = setup() else { return };
    let d = Daemon::start(&["--handshake-discovery", "on"]);

    let out = t.agent(&[]).output().unwrap();
    assert!(out.status.success(), "agent failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Docker makes the container's hostname the start of its id.
    let hostname = out["calls"][0]["text"].as_str().unwrap_or_else(|| panic!("{out}")).to_string();

    let s = d.expect("the CLI tracked, named after the image", |r| r["kind"] == "server_tracked" && r["server"] == IMAGE);
    assert_eq!(s["found"]["runner"]["runner"], "docker", "{s}");
    let id = s["server_id"].clone();
    let joined = d.expect("the container's process joined the CLI's server", |r| r["kind"] == "container_joined");
    assert_eq!(joined["server_id"], id, "{joined}");
    assert_eq!(joined["container"]["image"], IMAGE, "{joined}");
    assert_eq!(joined["container"]["engine"], "docker", "{joined}");
    let cid = joined["container"]["id"].as_str().unwrap();
    assert!(cid.starts_with(&hostname), "the container that answered ({hostname}) is the one joined: {joined}");
    assert_ne!(joined["pid"], s["root_pid"], "a process of the container, not the CLI: {joined}");

    // The tool's `cat /etc/hostname` ran in the container, below no tracked process but the
    // container's: an event of the CLI's server, with the image, attributed to the call.
    let call = d.expect("the tool call", |r| r["kind"] == "tool_call" && r["server_id"] == id && r["tool"] == "hostname");
    assert_eq!(call["outcome"], "ok", "{call}");
    let cat = d.expect("the container's cat, with its image and call", |r| {
        r["kind"] == "exec" && r["server_id"] == id && r["argv"][0] == "cat" && r["container"]["image"] == IMAGE
    });
    assert_eq!(cat["mcp"]["tool"], "hostname", "attributed to the call in flight: {cat}");
    assert!(call["events"].as_u64().unwrap() > 0, "{call}");

    // Named once, and the handshake counted once: the container's copy of the stream is the
    // one the CLI relayed.
    d.expect("the server's end", |r| r["kind"] == "server_gone" && r["server_id"] == id);
    let (log, records) = d.stop_with_records();
    let tracked: Vec<&Value> = records.iter().filter(|r| r["kind"] == "server_tracked").collect();
    assert_eq!(tracked.len(), 1, "one server for the launch: {tracked:?}\n{log}");
    let inits = records.iter().filter(|r| r["kind"] == "mcp_initialize" && r["server_id"] == id).count();
    assert_eq!(inits, 1, "the initialize once, from the CLI's stdin\n{log}");
    let calls = records.iter().filter(|r| r["kind"] == "tool_call" && r["server_id"] == id).count();
    assert_eq!(calls, 1, "the tool call once\n{log}");
    // The container's own files (its /etc/hostname, its image) are no host file it reached: no
    // alert on its opens. (What it executes is judged as anywhere else.)
    let stray: Vec<&Value> = records.iter().filter(|r| r["kind"] == "alert" && r["event"]["kind"] == "open" && !r["event"]["container"].is_null()).collect();
    assert!(stray.is_empty(), "alerts on the container's own files: {stray:?}");
    // busybox runs `cat` and `sed` as itself: the applet is what it runs, no shell.
    let shells: Vec<&Value> = records.iter().filter(|r| r["kind"] == "alert" && r["rule"]["id"] == "shell-spawned-by-tool-call").collect();
    assert!(shells.is_empty(), "busybox applets taken for shells: {shells:?}");
}

/// Three agents launch the same image at once, as an outsider's trial did. Nothing in the
/// engine's record names the CLI, and the containers start (and read their first line) in any
/// order: each must still end up in its own CLI's server (the one its reply went out through),
/// its `cat` attributed to that agent's call. Each agent pauses before its call, as an agent
/// waiting on its model does, so that the session outlives the daemon's reaction.
#[test]
fn launches_of_one_image_side_by_side_each_get_their_own_container() {
    let Some(t) = setup() else { return };
    let d = Daemon::start(&["--handshake-discovery", "on"]);

    let agents: Vec<Child> = (0..3).map(|_| t.agent(&[]).env("MCP_CLIENT_THINK_MS", "500").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()).collect();
    // (agent pid, the hostname its call answered: the start of its container's id)
    let answered: Vec<(u32, String)> = agents.into_iter().map(answered).collect();

    let log = each_in_its_own_server(d, &answered);
    // A CLI whose container was found is not searched again for another's: 3 + 2 + 1 memory
    // searches at most for three launches (each searched all three, 9, before).
    let joins: Vec<Option<usize>> = log.lines().filter(|l| l.contains("joined its runner's server")).map(|l| l.split("searched=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    assert_eq!(joins.len(), 3, "{log}");
    let searched: usize = joins.iter().map(|n| n.expect("each join says how many CLIs it searched")).sum();
    assert!(searched <= 6, "{searched} searches of a CLI's memory\n{log}");
}

/// Each agent's container (known by the hostname its call answered, the start of the
/// container's id) ended up in its agent's CLI's server, its `cat` attributed to that agent's
/// call, and no container became a server of its own. `answered`: (agent pid, hostname).
/// Returns the daemon's log.
fn each_in_its_own_server(d: Daemon, answered: &[(u32, String)]) -> String {
    let mut servers = vec![];
    for (agent, _) in answered {
        let s = d.expect("each agent's CLI tracked", |r| r["kind"] == "server_tracked" && r["found"]["handshake_under"]["pid"] == *agent);
        d.expect("its end", |r| r["kind"] == "server_gone" && r["server_id"] == s["server_id"]);
        servers.push(s["server_id"].clone());
    }
    let (log, records) = d.stop_with_records();
    // Each CLI holds its container's id: known for certain at the join, so nothing moved.
    for r in records.iter().filter(|r| r["kind"] == "container_joined") {
        assert_eq!(r["by"], "cli_memory", "{r}\n{log}");
        assert!(r["moved_from"].is_null(), "{r}\n{log}");
    }
    for ((agent, hostname), sid) in answered.iter().zip(&servers) {
        // Where the container that answered this agent ended up: its last join.
        let joined = records
            .iter()
            .rev()
            .find(|r| r["kind"] == "container_joined" && r["container"]["id"].as_str().is_some_and(|id| id.starts_with(hostname.as_str())))
            .unwrap_or_else(|| panic!("agent {agent}: its container {hostname} never joined\n{log}"));
        assert_eq!(&joined["server_id"], sid, "agent {agent}: its container {hostname} is in its CLI's server: {joined}\n{log}");
        let cat = records.iter().find(|r| r["kind"] == "exec" && r["argv"][0] == "cat" && r["container"]["id"] == joined["container"]["id"]);
        let cat = cat.unwrap_or_else(|| panic!("agent {agent}: the cat of {hostname}\n{log}"));
        assert_eq!(&cat["server_id"], sid, "agent {agent}: {cat}");
        assert_eq!(cat["mcp"]["tool"], "hostname", "agent {agent}: attributed to its call: {cat}");
    }
    let own = records.iter().filter(|r| r["kind"] == "server_tracked").count();
    assert_eq!(own, answered.len(), "one server per agent, none for a container on its own\n{log}");
    log
}

/// The agent's output: its pid and the hostname its call answered.
fn answered(a: Child) -> (u32, String) {
    let pid = a.id();
    let out = a.wait_with_output().unwrap();
    assert!(out.status.success(), "agent failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    (pid, out["calls"][0]["text"].as_str().unwrap_or_else(|| panic!("{out}")).to_string())
}

/// Two agents launch the same image, and one agent's CLI is held up (stopped, as a loaded
/// machine may stall it) while its container's first reply goes out: the other CLI relays a
/// reply first, so the order of replies names the wrong CLI for both containers. Each container
/// must still end up in its own CLI's server: the CLI that created a container holds its id.
/// (Each container's reply waits at a FIFO of the test's, `INIT_GATE`, so the order is the
/// test's to set.)
#[test]
fn a_cli_held_up_while_its_container_replies_keeps_its_container() {
    let Some(t) = setup() else { return };
    let d = Daemon::start(&["--handshake-discovery", "on"]);
    let gates: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let agents: Vec<Child> = gates
        .iter()
        .map(|g| {
            let fifo = std::ffi::CString::new(g.path().join("go").into_os_string().into_encoded_bytes()).unwrap();
            // SAFETY: a NUL-terminated path made just above.
            assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
            let volume = format!("{}:/gate", g.path().display());
            t.agent(&["-v", &volume, "-e", "INIT_GATE=/gate/go"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    // Both containers joined a server and wait at their gates.
    let joined = || (d.records().iter().filter(|r| r["kind"] == "container_joined").count() >= 2).then_some(());
    common::within(Duration::from_secs(30), joined).unwrap_or_else(|| panic!("two containers joined\n{:?}", d.records()));
    let held = d.expect("the first agent's CLI", |r| r["kind"] == "server_tracked" && r["found"]["handshake_under"]["pid"] == agents[0].id());
    let held = held["root_pid"].as_u64().unwrap() as i32;
    // SAFETY: signals to the CLI the first agent started (its pid, from the daemon's record).
    assert_eq!(unsafe { libc::kill(held, libc::SIGSTOP) }, 0);
    // The held CLI's container replies first; a moment later the other's, which its CLI relays.
    open_gate(gates[0].path());
    std::thread::sleep(Duration::from_millis(300));
    open_gate(gates[1].path());
    let mut agents = agents.into_iter();
    let first = agents.next().unwrap();
    let second = answered(agents.next().unwrap());
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(held, libc::SIGCONT) }, 0);
    let first = answered(first);
    each_in_its_own_server(d, &[first, second]);
}

/// Lets the reply waiting at `dir`'s FIFO go (waits for its reader to open it).
fn open_gate(dir: &Path) {
    let deadline = Instant::now() + common::patience(Duration::from_secs(30));
    loop {
        match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(dir.join("go")) {
            Ok(mut f) => return std::io::Write::write_all(&mut f, b"go\n").unwrap(),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the gate at {}: {e}", dir.display()),
        }
    }
}

/// A server in a container reads a key mounted in from an ordinary user's home (`-v
/// ~/.ssh:/root/.ssh`), the home made after the daemon started: the same file by another path,
/// in another mount namespace. The read is refused before an fd exists, the reader killed, and
/// the alert names the container's image; no byte reaches the agent.
#[test]
fn a_container_reads_no_key_mounted_from_a_home() {
    let Some(t) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rules = common::user::shipped_rules(tmp.path(), "");
    let d = Daemon::start(&["--rules", rules.to_str().unwrap(), "--handshake-discovery", "on"]);
    let u = common::user::User::add("ctr", false);
    u.make_home();
    const SECRET: &str = "SECRET-KEY-MATERIAL-c0n7";
    u.write(".ssh/id_ed25519", &format!("{SECRET}\n"));
    let volume = format!("{}:/root/.ssh:ro", u.home.join(".ssh").display());

    let out = t.agent(&["-v", &volume, "-e", "HOSTNAME_FILE=/root/.ssh/id_ed25519"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.contains(SECRET) {
        let (log, records) = d.stop_with_records();
        let kinds: Vec<String> = records.iter().map(|r| format!("{} {} {} {} {}", r["kind"], r["server_id"], r["argv"], r["file"]["path"], r["result"])).collect();
        panic!("the key reached the agent: {stdout}\n{log}\n{}", kinds.join("\n"));
    }
    // What the agent saw, should the refusal not come: an agent that failed prints nothing.
    let what = format!("the key read refused, in the container (agent: {}, stdout {stdout}, stderr {})", out.status, String::from_utf8_lossy(&out.stderr));
    let a = d.expect(&what, |r| {
        r["kind"] == "alert" && r["rule"]["id"] == "ssh-private-key-read" && r["event"]["container"]["image"] == IMAGE
    });
    assert_eq!(a["event"]["path"], "/root/.ssh/id_ed25519", "{a}");
    assert_eq!(a["event"]["container"]["volumes"][0]["source"], u.home.join(".ssh").display().to_string(), "the host path it reached: {a}");
    assert_eq!(a["mcp"]["tool"], "hostname", "{a}");
    d.assert_refused_before_fd(&a, true, "container");
    d.stop();
}

/// The engine's containers on this host, by id.
fn containers() -> Vec<String> {
    let out = Command::new(DOCKER).args(["ps", "-aq", "--no-trunc"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// A server on the host has the engine read a key for it: `docker run -v ~:/h IMAGE cat …` from
/// a tool, the engine's API spoken by its own process through a symlink of its own to the
/// socket (a name no list holds), and the server's own process exec'ing the CLI, which makes
/// the root of the server the engine's CLI, as a `docker run -i` server's is. The container
/// would run under the engine's shim, outside the server's tree, where no protection follows
/// it. Every connect is killed in the kernel as it returns, judged by the socket file it
/// reached and, for the exec'd CLI, by what the root ran before it: no container is made, no
/// byte of the key reaches the agent. (Before: the key came back from all three.)
#[test]
fn a_server_cannot_have_the_container_engine_read_a_key() {
    let Some(t) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rules = common::user::shipped_rules(tmp.path(), "");
    let d = Daemon::start(&["--rules", rules.to_str().unwrap(), "--handshake-discovery", "on"]);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    const SECRET: &str = "SECRET-KEY-MATERIAL-3ng1";
    std::fs::write(home.join(".ssh/id_ed25519"), format!("{SECRET}\n")).unwrap();
    let before = containers();
    for tool in ["via_cli", "via_api", "via_exec"] {
        let out = t.thief(tool, &home).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "{tool}: the key reached the agent: {stdout}\n{stderr}");
        let what = format!("{tool}: the connect to the engine killed (agent: {stdout} {stderr})");
        let a = d.expect(&what, |r| r["kind"] == "alert" && r["rule"]["id"] == "container-engine-socket" && r["mcp"]["tool"] == tool);
        assert_eq!(a["action"]["result"], "killed_in_kernel", "{a}");
    }
    assert_eq!(containers(), before, "a container was made");
    d.stop();
}

impl Setup {
    /// The agent on the Python SDK running `engine_thief.py` on the host, with `home` as its
    /// HOME, and calling `tool`.
    fn thief(&self, tool: &str, home: &Path) -> Command {
        let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
        let py = self.peers.join("venv/bin/python");
        let mut c = Command::new(&py);
        c.arg(peers.join("mcp_client.py")).arg(json!([{"tool": tool, "arguments": {}}]).to_string()).arg("--").arg(&py).arg(peers.join("engine_thief.py")).arg(IMAGE);
        c.env("MCP_SERVER_ENV", json!({"HOME": home}).to_string());
        c
    }
}

/// An ordinary user who logged in to a registry (`~/.docker/config.json`, made after the daemon
/// started) runs a server as MCP configs for containers do, `docker run -i IMAGE`, under
/// `mcpmon exec`: watched from its first instruction, its root process the engine's CLI, which
/// reads the login at every start. That read is the launcher's own: allowed (by the CLI's
/// inode, in the kernel and the open gate) and no alert. The same CLI run as a *child* by a
/// server's tool (`engine_thief.py via_cli`, as that user's HOME) is refused the login, with the
/// alert, and killed at the engine's socket. (Before: the launch itself raised
/// `kube-docker-credentials-read`, high, and the CLI was refused its login.)
#[test]
fn a_docker_run_server_reads_its_registry_login_and_its_children_may_not() {
    let Some(t) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rules = common::user::shipped_rules(tmp.path(), "");
    let d = Daemon::start(&["--rules", rules.to_str().unwrap(), "--handshake-discovery", "on"]);
    // The user's `mcpmon exec` reaches the daemon's socket, as `mcpmon run` makes it.
    std::fs::set_permissions(d.socket.parent().unwrap(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let u = common::user::User::add("dkr", false);
    u.make_home();
    const SECRET: &str = "bWNwdDpSRUdJU1RSWS1MT0dJTi1kMGNr";
    let login = u.write(".docker/config.json", &format!("{{\"auths\": {{\"registry.test\": {{\"auth\": \"{SECRET}\"}}}}}}\n"));
    let docker_gid = std::fs::metadata("/run/docker.sock").map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap();

    // The agent (root, the Python SDK) starts the user's server: setpriv → mcpmon exec → the CLI,
    // one process that ends as the CLI.
    let ids = [u.uid, u.gid, docker_gid].map(|n| n.to_string());
    let (setpriv, exec) = (["setpriv", "--reuid", &ids[0], "--regid", &ids[1], "--groups", &ids[2], "--"], [common::user::MCPMON, "exec", "--require-monitor", "--name", "registry-user", "--socket"]);
    let mut wrap: Vec<std::ffi::OsString> = setpriv.iter().chain(&exec).map(Into::into).collect();
    wrap.extend([d.socket.clone().into_os_string(), "--".into()]);
    let mut agent = t.agent_via(&wrap, &[]);
    agent.env("MCP_SERVER_ENV", json!({"HOME": u.home}).to_string()).current_dir(&u.home);
    let out = agent.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent failed:\n{stderr}");
    assert!(!stderr.contains("Error loading config file"), "the CLI was refused its own login:\n{stderr}");
    let login_path = login.display().to_string();
    let read = d.expect("the CLI's read of its login", |r| {
        r["kind"] == "open" && r["server"] == "registry-user" && (r["path"] == login_path.as_str() || r["resolved_path"] == login_path.as_str())
    });
    assert_eq!(read["result"]["ok"], true, "{read}");
    assert_eq!(read["exe"], DOCKER, "by the server's root, the CLI: {read}");
    // The wrapper's runner is the CLI after `--`: the container is one server with it.
    d.expect("the container joined the user's server", |r| r["kind"] == "container_joined" && r["server"] == "registry-user");
    d.expect("the server's end", |r| r["kind"] == "server_gone" && r["server"] == "registry-user");

    // A server whose tool runs the CLI as its child, with the user's HOME: refused the login.
    let mut thief = t.thief("via_cli", &u.home);
    let out = thief.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(SECRET), "the login reached the agent: {stdout}");
    let a = d.expect(&format!("the child CLI refused the login (agent: {stdout})"), |r| {
        r["kind"] == "alert" && r["rule"]["id"] == "kube-docker-credentials-read" && r["mcp"]["tool"] == "via_cli"
    });
    assert_eq!(a["file"], login_path, "{a}");
    d.assert_refused_before_fd(&a, false, "the child CLI's read");
    d.expect("and its connect killed", |r| r["kind"] == "alert" && r["rule"]["id"] == "container-engine-socket" && r["mcp"]["tool"] == "via_cli");

    let (log, records) = d.stop_with_records();
    let at_launch: Vec<&Value> = records.iter().filter(|r| r["kind"] == "alert" && r["server"]["name"] == "registry-user").collect();
    assert!(at_launch.is_empty(), "alerts on the docker run server: {at_launch:?}\n{log}");
}
