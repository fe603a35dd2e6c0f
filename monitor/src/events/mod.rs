//! Kernel events as owned Rust values: decoded from the ring buffer bytes (`decode`), read by an
//! async task (`reader`) and handed to the pipeline over a channel.
pub mod decode;
pub mod errno;
pub mod reader;

use std::net::IpAddr;

use serde::Serialize;

pub use decode::{decode, DecodeError};

/// Fields every kernel event carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Header {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts_mono_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Tracked root this process belongs to.
    pub server_id: u32,
    /// The kernel could not copy everything (see the flag names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<&'static str>,
    /// What the kernel itself did about this syscall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_action: Option<KernelAction>,
    /// The syscall came in through the ia32 entry (`int $0x80`) rather than the 64-bit one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compat_syscall: bool,
    /// The open gate refused this open before any fd existed (fanotify permission event).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gated: bool,
}

/// What the kernel did about a syscall itself (`kernel_action` in the event stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelAction {
    Killed,
    Denied,
    DeniedAndKilled,
}

impl KernelAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Killed => "killed",
            Self::Denied => "denied",
            Self::DeniedAndKilled => "denied_and_killed",
        }
    }

    pub fn killed(self) -> bool {
        matches!(self, Self::Killed | Self::DeniedAndKilled)
    }
}

/// Which way captured bytes went: `in` (the server read them) or `out` (it wrote them); for
/// sockets also a connection's `accept`, `close`, and `accept_not_captured` (no data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
    Accept,
    Close,
    AcceptNotCaptured,
}

/// An open's flags by name (`file.access`): the access mode first, then the O_* bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    InvalidAccess,
    Create,
    Exclusive,
    Truncate,
    Append,
    Directory,
    Nofollow,
    Cloexec,
    Path,
    Tmpfile,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::ReadWrite => "read_write",
            Self::InvalidAccess => "invalid_access",
            Self::Create => "create",
            Self::Exclusive => "exclusive",
            Self::Truncate => "truncate",
            Self::Append => "append",
            Self::Directory => "directory",
            Self::Nofollow => "nofollow",
            Self::Cloexec => "cloexec",
            Self::Path => "path",
            Self::Tmpfile => "tmpfile",
        }
    }

    /// The open may change the file.
    pub fn writes(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite | Self::Create | Self::Truncate)
    }
}

/// An open's flags by name (`file.access`), worked out from the flags when asked: the access
/// mode first, then the O_* bits set. A list per open, built at decode, was an allocation per
/// event on the hot path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Accesses(u32);

impl Accesses {
    /// The O_* bits that have a name, in the order they are listed.
    const BITS: [(u32, Access); 9] = [
        (0o100, Access::Create),
        (0o200, Access::Exclusive),
        (0o1000, Access::Truncate),
        (0o2000, Access::Append),
        (0o200000, Access::Directory),
        (0o400000, Access::Nofollow),
        (0o2000000, Access::Cloexec),
        (0o10000000, Access::Path),
        // O_TMPFILE is __O_TMPFILE | O_DIRECTORY: listed with `directory` before it.
        (0o20200000, Access::Tmpfile),
    ];

    pub fn of(flags: u32) -> Self {
        Self(flags)
    }

    pub fn iter(&self) -> impl Iterator<Item = Access> + '_ {
        let mode = match self.0 & 3 {
            0 => Access::Read,
            1 => Access::Write,
            2 => Access::ReadWrite,
            _ => Access::InvalidAccess,
        };
        std::iter::once(mode).chain(Self::BITS.iter().filter(|(bit, _)| self.0 & bit == *bit).map(|(_, a)| *a))
    }

    pub fn contains(&self, a: &Access) -> bool {
        self.iter().any(|x| x == *a)
    }
}

impl std::fmt::Debug for Accesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Accesses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(flatten)]
    pub header: Header,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Exec(Exec),
    Open(Open),
    Connect(Connect),
    Exit(Exit),
    Fork(Fork),
    /// Bytes on a server's stdio pipe; consumed by the JSON-RPC stage, not written out raw.
    Stdio(Stdio),
    /// A datagram with an explicit destination (sendto/sendmsg).
    Send(Connect),
    /// An io_uring was set up: its operations do not pass the syscall tracepoints.
    IoUring(IoUring),
    /// Bytes on a socket a server accepted (or its accept/close: `dir`); consumed by the HTTP
    /// stage, not written out raw.
    Sock(Stdio),
    /// ptrace / process_vm_readv / process_vm_writev on a process outside the server's tree.
    ProcAccess(ProcAccess),
    /// A run of identical events the kernel folded into a count (monitor-ebpf/src/fold.rs);
    /// written out as the event it repeats, with `folded`.
    Repeat(Repeat),
    /// Handshake discovery (monitor-ebpf/src/handshake.rs): a piped process exec'd while the
    /// syscall hooks were detached, or its first stdin read opened a JSON object. Decided on by
    /// discovery, never written out.
    Handshake(Handshake),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Handshake {
    /// True: its first stdin read opened a JSON object (it is tracked provisionally now);
    /// false: it is a candidate that exec'd while the hooks were detached.
    pub json_in: bool,
    /// The syscall hooks were detached at its exec: its first reads may have gone unseen.
    pub late: bool,
    pub in_ino: u64,
    pub out_ino: u64,
    /// A JSON read's candidate as /proc showed it when the ring reader took this record
    /// (`reader::run`); None from `decode` alone.
    #[serde(skip)]
    pub seen: Option<Box<crate::discovery::adopt::Seen>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Repeat {
    /// The kind folded (`open`).
    pub of: &'static str,
    /// Pairs the count with the full event the run started from (`Open::fold_sig`).
    pub fold_sig: u64,
    /// Events folded after the one sent in full.
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcAccess {
    /// ptrace, process_vm_readv, process_vm_writev.
    pub syscall: &'static str,
    /// The ptrace request (attach, seize, peekdata, …; a number when unnamed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The pid the caller named (a thread id for ptrace).
    pub target_pid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IoUring {
    /// `setup` (the process made a ring) or `enter` (it used a ring it got elsewhere).
    pub op: &'static str,
    pub fd: i32,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub setup_flags: u32,
}

/// Result of a syscall: success value or errno.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SysResult {
    pub ok: bool,
    /// Return value (fd, 0) or -errno.
    pub ret: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<&'static str>,
}

impl SysResult {
    pub fn from_ret(ret: i64) -> Self {
        if ret < 0 {
            Self { ok: false, ret, errno: Some(errno::name(-ret)) }
        } else {
            Self { ok: true, ret, errno: None }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exec {
    pub syscall: &'static str,
    pub filename: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    /// execveat's dirfd (-100 = AT_FDCWD).
    pub dirfd: i32,
    /// Kernel policy value that killed the new image (protect bits | rule slot << 16).
    #[serde(skip_serializing_if = "is_zero32")]
    pub policy: u32,
    pub result: SysResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Open {
    pub syscall: &'static str,
    /// The path exactly as the process passed it (relative paths are relative to `dirfd`).
    /// Shared: the ring reader hands out one copy per distinct path (`decode::Paths`).
    pub path: std::sync::Arc<str>,
    pub dirfd: i32,
    /// Raw O_* flags.
    pub flags: u32,
    /// Decoded flags: the access mode first, then `create`, `truncate`, …
    pub access: Accesses,
    pub mode: u32,
    /// openat2 RESOLVE_* bits.
    #[serde(skip_serializing_if = "is_zero")]
    pub resolve: u64,
    /// The opened file (successful opens): what protected-file rules match on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<Inode>,
    /// Kernel policy value that killed the process (protect bits | rule slot << 16).
    #[serde(skip_serializing_if = "is_zero32")]
    pub policy: u32,
    pub result: SysResult,
    /// The kernel's identity of this open when later repeats may fold into it (0: they may not).
    #[serde(skip)]
    pub fold_sig: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord, Hash)]
pub struct Inode {
    /// Kernel `dev_t` (major << 20 | minor).
    pub dev: u32,
    pub ino: u64,
}

fn is_zero32(v: &u32) -> bool {
    *v == 0
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connect {
    pub fd: i32,
    pub family: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Unix socket path; abstract names start with '@'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_path: Option<String>,
    /// Kernel policy value that refused it (deny bits | rule slot << 16).
    #[serde(skip_serializing_if = "is_zero32")]
    pub policy: u32,
    pub result: SysResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exit {
    /// Exit status when the process exited normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
    /// Killing signal number and name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<&'static str>,
    pub core_dumped: bool,
    /// Raw wait-status form.
    pub status: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stdio {
    /// Pipe inode: identifies the stream.
    pub ino: u64,
    /// Which way the bytes went, or (sockets) the connection's start or end.
    pub dir: Direction,
    pub fd: i32,
    /// Bytes the syscall moved; `offset`/`data` is the captured part.
    pub total_len: u64,
    /// Bytes through this pipe before this syscall.
    pub stream_off: u64,
    pub offset: u32,
    #[serde(skip)]
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fork {
    pub child_pid: u32,
    pub clone_flags: u64,
}

impl Event {
    /// Every value `kind` returns (the metrics export each at 0 from the start).
    pub const KINDS: &'static [&'static str] = &["exec", "open", "connect", "exit", "fork", "stdio", "send", "io_uring", "proc_access", "sock"];

    /// The place of `kind` in `KINDS` (its length for a handshake, which is not counted).
    pub fn kind_index(&self) -> usize {
        match self.body {
            Body::Exec(_) => 0,
            Body::Open(_) => 1,
            Body::Connect(_) => 2,
            Body::Exit(_) => 3,
            Body::Fork(_) => 4,
            Body::Stdio(_) => 5,
            Body::Send(_) => 6,
            Body::IoUring(_) => 7,
            Body::ProcAccess(_) => 8,
            Body::Sock(_) => 9,
            Body::Repeat(ref r) => Self::index_of_kind(r.of),
            Body::Handshake(_) => Self::KINDS.len(),
        }
    }

    /// The place of a kind's name in `KINDS` (its length for any other name).
    pub fn index_of_kind(kind: &str) -> usize {
        Self::KINDS.iter().position(|k| *k == kind).unwrap_or(Self::KINDS.len())
    }

    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Repeat(ref r) => r.of,
            Body::Handshake(_) => "handshake",
            // Every other body has its place in `KINDS` (`kind_index`): one table, not two.
            _ => Self::KINDS[self.kind_index()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Access::*, Accesses};

    #[test]
    fn accesses_name_the_flags_mode_first() {
        let names = |f: u32| Accesses::of(f).iter().collect::<Vec<_>>();
        assert_eq!(names(0), [Read]);
        assert_eq!(names(0o3), [InvalidAccess]);
        assert_eq!(names(0o1101), [Write, Create, Truncate]);
        assert_eq!(names(0o2002 | 0o2000000), [ReadWrite, Append, Cloexec]);
        // O_TMPFILE carries O_DIRECTORY's bit: a directory open is no tmpfile.
        assert_eq!(names(0o20200002), [ReadWrite, Directory, Tmpfile]);
        assert_eq!(names(0o200000), [Read, Directory]);
        assert_eq!(names(0o10400000 | 0o200), [Read, Exclusive, Nofollow, Path]);
        assert!(Accesses::of(0o101).contains(&Create) && !Accesses::of(0o101).contains(&Read));
        assert_eq!(serde_json::to_string(&Accesses::of(0o1101)).unwrap(), r#"["write","create","truncate"]"#);
    }

    #[test]
    fn a_kinds_index_is_its_place_in_kinds() {
        use super::*;
        let r = SysResult { ok: true, ret: 0, errno: None };
        let header = Header { ts_mono_ns: 0, pid: 1, tid: 1, ppid: 0, uid: 0, server_id: 1, truncated: vec![], kernel_action: None, compat_syscall: false, gated: false };
        let bodies = [
            Body::Exec(Exec { syscall: "execve", filename: "/x".into(), argv: vec![], argv_truncated: false, dirfd: -100, policy: 0, result: r.clone() }),
            Body::Open(Open { syscall: "openat", path: "/x".into(), dirfd: -100, flags: 0, access: Accesses::of(0), mode: 0, resolve: 0, inode: None, policy: 0, result: r, fold_sig: 0 }),
            Body::Fork(Fork { child_pid: 2, clone_flags: 0 }),
            Body::Repeat(Repeat { of: "connect", fold_sig: 1, count: 2, first_ns: 0, last_ns: 1 }),
            Body::Handshake(Handshake { json_in: true, late: false, in_ino: 1, out_ino: 2, seen: None }),
        ];
        for body in bodies {
            let ev = Event { header: header.clone(), body };
            let want = Event::KINDS.iter().position(|k| *k == ev.kind()).unwrap_or(Event::KINDS.len());
            assert_eq!(ev.kind_index(), want, "{}", ev.kind());
        }
    }
}
