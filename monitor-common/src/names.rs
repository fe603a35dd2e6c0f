//! Map names shared by the kernel object and the loader (the programs: `programs::PROGRAMS`).

pub const MAP_TRACKED: &str = "TRACKED";
/// The program through which the daemon reads and sets a pid's `MAYBE_TRACKED` byte (global
/// data, the one-byte filter before `TRACKED`): run with `BPF_PROG_TEST_RUN`, never attached.
pub const PROG_MAYBE: &str = "mcpm_maybe";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_LOST: &str = "LOST";
/// server id → events of that server the kernel could not deliver (any reason).
pub const MAP_LOST_BY_SERVER: &str = "LOST_BY_SERVER";
pub const MAP_STDIO_PIPES: &str = "STDIO_PIPES";
/// tgid → ktime: provisional servers stopped at exec while the syscall hooks were detached; the
/// daemon attaches the hooks, then continues them (hold.rs).
pub const MAP_HELD: &str = "HELD";
/// [0] = 1 while the on-demand syscall hooks are attached (set by the daemon).
pub const MAP_HOOKS_LIVE: &str = "HOOKS_LIVE";
/// tgid → `HandshakeCandidate`: piped processes awaiting their first stdin read (handshake.rs).
pub const MAP_HANDSHAKE: &str = "HANDSHAKE";
/// [0] = 1 when handshake discovery is on (set by the daemon).
pub const MAP_HANDSHAKE_ON: &str = "HANDSHAKE_ON";
/// Sockets tracked servers accepted (HTTP capture), by inode.
pub const MAP_HTTP_SOCKS: &str = "HTTP_SOCKS";
pub const MAP_CANDIDATE_COMMS: &str = "CANDIDATE_COMMS";
/// Bits of the hashes of `CANDIDATE_COMMS`'s keys, tested before a lookup (comm_filter.rs).
pub const MAP_COMM_FILTER: &str = "COMM_FILTER";
pub const MAP_PROTECTED: &str = "PROTECTED";
pub const MAP_UNSEEN_DIRS: &str = "UNSEEN_DIRS";
/// (directory inode, literal file name) → read policy: a protected name made after the last plan.
pub const MAP_UNSEEN_NAMES: &str = "UNSEEN_NAMES";
/// Key agents' sockets by their last two names ([`crate::SockName`]): one no plan has seen yet.
pub const MAP_AGENT_SOCKETS: &str = "AGENT_SOCKETS";
pub const MAP_NET_POLICY_V4: &str = "NET_POLICY_V4";
pub const MAP_NET_POLICY_V6: &str = "NET_POLICY_V6";
pub const MAP_POLICY: &str = "POLICY";
/// (server id << 32 | rule slot) → 1: a server granted a file rule (docs/rules.md, grants).
pub const MAP_GRANTS: &str = "GRANTS";
/// (executable inode, rule slot) → 1: a server root running it may read that rule's files.
pub const MAP_ROOT_READERS: &str = "ROOT_READERS";
/// tgid → 1: server roots that exec'd from an image of their own (no launcher allowances).
pub const MAP_ROOT_TAINTED: &str = "ROOT_TAINTED";
/// tgid → the daemon's judgement of a server root's exec: that exec's stamp (`ROOT_IMAGES`,
/// bit 0 clear) with bit 0 set when its argv is a package runner's launch (`npx -y PKG`).
pub const MAP_ROOT_RUNNERS: &str = "ROOT_RUNNERS";
/// tgid → the stamp of a server root's latest successful exec (its event's `ts_mono_ns`, bit 0
/// clear), written by the kernel: a judgement in `ROOT_RUNNERS` holds only for that exec.
pub const MAP_ROOT_IMAGES: &str = "ROOT_IMAGES";
pub const MAP_PENDING_OPEN: &str = "PENDING_OPEN";
/// tid → tracking of threads of tracked processes that exited lately (LRU).
pub const MAP_EXITED: &str = "EXITED";
