//! What the kernel enforces by, and the daemon writes: the keys of the protection maps
//! (`PROTECTED`, `UNSEEN_DIRS`, `UNSEEN_NAMES`, `ROOT_READERS`), the bits of their values, the
//! stamps of `ROOT_IMAGES`/`ROOT_RUNNERS` and the indexes of `POLICY`. Re-exported at the
//! crate's root.

/// Protected files and directories, keyed by device and inode so that every name of the file
/// (symlinks, hardlinks, relative paths, `..`, `/proc/self/fd/N`, `/proc/PID/root/…`) is the same key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    /// The kernel's `dev_t` of the superblock: `major << 20 | minor`.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

/// Bytes of a file name kept in a [`NameKey`]: the first 127 and a NUL (a longer name is cut
/// there, by the kernel's read and by [`name_bytes`] alike). A power of two: the kernel masks
/// offsets into the key with `NAME_CAP - 1`.
pub const NAME_CAP: usize = 128;

/// Bytes of each part of a [`below_bytes`] name: the first 31 of each directory's name, then of
/// its file's (the kernel reads each into `PART_CAP` bytes of the key, so its offsets stay
/// bounded: four parts end within `4 * PART_CAP` = `NAME_CAP`).
pub const PART_CAP: usize = 32;

/// `UNSEEN_NAMES` key, in one of two forms. A literal file name a read rule protects (`.netrc`,
/// `credentials`) in one existing directory (a home, `~/.aws`): a file of that name made there
/// after the last plan has no `PROTECTED` entry yet, and is judged by this one at its first
/// open. Or, keyed by an existing directory marked `protect::NAMED_BELOW`, a name below a
/// directory of it that no plan has seen ([`below_bytes`]: `.aws/credentials`, or `.azure/`
/// for every file of a new `~/.azure`): a directory made together with its credential. The
/// `/` keeps the two forms apart: no file name holds one. `*/name` stands for `name` in any new
/// directory there (a new browser profile's `Login Data`). Up to three directories deep, for a
/// file that many levels of new directories below an existing one (`.config/gh/hosts.yml` in
/// a new home).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey {
    pub dir: InodeKey,
    pub name: [u8; NAME_CAP],
}
const _: () = assert!(core::mem::size_of::<NameKey>() == 144);

impl Default for NameKey {
    fn default() -> Self {
        NameKey { dir: InodeKey::default(), name: [0; NAME_CAP] }
    }
}

/// `name` as a [`NameKey`] holds it: its first `NAME_CAP - 1` bytes, NUL-padded.
pub fn name_bytes(name: &[u8]) -> [u8; NAME_CAP] {
    let mut k = [0u8; NAME_CAP];
    let n = name.len().min(NAME_CAP - 1);
    k[..n].copy_from_slice(&name[..n]);
    k
}

/// A name below a directory of a `NAMED_BELOW` directory, as the kernel builds it: the
/// directory's name (its first `PART_CAP - 1` bytes) and `/`, then the file's name (its first
/// `PART_CAP - 1` bytes), or nothing for every file of that directory (`.azure/`).
///
/// `dir` may be two or three names (`.config/gh`, `.local/share/keyrings`: that many new
/// directories at once). Then each name, and the file's after them, takes a `PART_CAP` slot of
/// its own, NUL-padded: the kernel writes every part at a constant offset, which the 6.1
/// verifier follows where it lost the bounds of a running one.
pub fn below_bytes(dir: &[u8], file: Option<&[u8]>) -> [u8; NAME_CAP] {
    let mut k = [0u8; NAME_CAP];
    let cut = |part: &[u8], k: &mut [u8; NAME_CAP], at: usize| {
        let n = part.len().min(PART_CAP - 1);
        k[at..at + n].copy_from_slice(&part[..n]);
        n
    };
    if dir.contains(&b'/') {
        let mut slot = 0;
        for part in dir.split(|&b| b == b'/').take(3) {
            cut(part, &mut k, slot * PART_CAP);
            slot += 1;
        }
        if let Some(f) = file {
            cut(f, &mut k, slot * PART_CAP);
        }
        return k;
    }
    let n = cut(dir, &mut k, 0);
    k[n] = b'/';
    if let Some(f) = file {
        cut(f, &mut k, n + 1);
    }
    k
}

/// `ROOT_READERS` key: an executable (device+inode of the image) that may read the files of one
/// rule (its slot) when it is its server's root process, as the docker CLI reads
/// `~/.docker/config.json` at the start of every `docker run -i` server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootReaderKey {
    pub dev: u32,
    /// The rule's slot (`PROTECTED` value >> `protect::SLOT_SHIFT`).
    pub slot: u32,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<RootReaderKey>() == 16);

/// The stamp of a server root's exec in `ROOT_IMAGES`: its exec event's `ts_ns`, bit 0 clear.
pub const fn exec_stamp(ts_ns: u64) -> u64 {
    ts_ns & !1
}

/// The daemon's judgement of that exec in `ROOT_RUNNERS`: the exec's stamp, bit 0 set when its
/// argv is a package runner's launch. It holds only while `ROOT_IMAGES` has the same stamp.
pub const fn runner_judgement(ts_ns: u64, runner: bool) -> u64 {
    exec_stamp(ts_ns) | runner as u64
}

/// What the kernel does when a tracked process opens a protected inode (`PROTECTED` values; the
/// rule's slot sits in the upper 16 bits so the daemon can name the rule).
pub mod protect {
    pub const SLOT_SHIFT: u32 = 16;
    /// Kill when the file is opened for reading.
    pub const KILL_READ: u32 = 1 << 0;
    /// Kill when the file is opened for writing (or truncated).
    pub const KILL_WRITE: u32 = 1 << 1;
    /// A directory: kill when any file in it, or in a directory directly below it, is opened for
    /// writing or created.
    pub const KILL_DIR_WRITE: u32 = 1 << 2;
    /// An executable: kill a tracked process that execs it (checked in the new image before it
    /// runs an instruction).
    pub const KILL_EXEC: u32 = 1 << 3;
    /// BPF-LSM kernels: fail the open with EPERM instead (read / write). Always set together with
    /// the matching KILL bit: where the LSM runs the open fails and nothing is killed; elsewhere
    /// the kill at the open's exit is the fallback.
    pub const DENY_READ: u32 = 1 << 4;
    pub const DENY_WRITE: u32 = 1 << 5;
    /// BPF-LSM kernels: fail the exec with EPERM (`bprm_check_security`) and the caller lives.
    /// Set together with KILL_EXEC, the fallback.
    pub const DENY_EXEC: u32 = 1 << 6;
    /// A unix socket file: kill a tracked process whose connect reached it (a container
    /// engine's API: the work it is asked for runs outside the tracked tree). Checked at the
    /// connect's exit on the peer's inode, so every name of the socket is the same key.
    pub const KILL_CONNECT: u32 = 1 << 7;
    /// An executable that may connect to the `KILL_CONNECT` sockets when it is its server's
    /// root process (a server launched as `docker run -i …`).
    pub const ROOT_MAY_CONNECT: u32 = 1 << 8;
    /// An image a server's root may run *before* it execs one of the launchers above and keep
    /// their allowances (`env`, `setpriv`, `mcpmon exec`): it runs no code of the server's.
    /// A root that execs from any other image (its own code, a shell, an interpreter) loses
    /// them for good (`ROOT_TAINTED`): a server that execs `docker` is not a `docker run -i`
    /// server.
    pub const ROOT_VIA: u32 = 1 << 9;
    /// A file the server's root may read while it is still the package runner it was launched
    /// through (`ROOT_RUNNERS`): npm reads `~/.npmrc`, uv `~/.netrc`, at every launch, for the
    /// registry login. The package it then starts runs as a child, and is refused.
    pub const RUNNER_MAY_READ: u32 = 1 << 10;
    /// No protection: a file a plan has seen in a directory of `UNSEEN_DIRS` (known_hosts, a
    /// `.pub`), which is therefore not new there.
    pub const KNOWN: u32 = 1 << 11;
    /// `UNSEEN_DIRS` only: the directory holds literal names a read rule protects
    /// (`UNSEEN_NAMES`); the rest of the value is its own policy as a secret directory.
    pub const NAMED: u32 = 1 << 12;
    /// `UNSEEN_DIRS` only: names below this directory's subdirectories are protected
    /// (`UNSEEN_NAMES` in its [`below_bytes`](super::below_bytes) form): a read of a file in a
    /// directory no plan has seen, directly below this one, is judged by them.
    pub const NAMED_BELOW: u32 = 1 << 13;
    /// `UNSEEN_DIRS` only: a directory of a `**` pattern (`~/.password-store/**`, and every
    /// directory below it), with the pattern's policy: a file in it, or in a directory directly
    /// below it, that no plan has seen is judged by that policy.
    pub const SUBTREE: u32 = 1 << 14;
    /// The flags: what is not a policy in an `UNSEEN_DIRS` value.
    pub const DIR_FLAGS: u32 = NAMED | NAMED_BELOW | SUBTREE;
}

/// `NET_POLICY_V4/V6` values (LPM tries keyed by address prefix).
pub mod net_policy {
    /// The cgroup `sock_addr` program refuses the connect/sendmsg with EPERM.
    pub const DENY: u32 = 1 << 0;
    /// And the process is killed when the syscall returns.
    pub const KILL: u32 = 1 << 1;
}

/// Indexes of the `POLICY` array (knobs the daemon sets from the rules).
pub mod policy {
    /// Kill a tracked process when it sets up an io_uring.
    pub const IO_URING_KILL: u32 = 0;
    /// Kill a tracked process that opens /proc/PID/{environ,mem,maps,…} of a process outside
    /// its server's tree (1 | rule slot << 16).
    pub const FOREIGN_PROC_KILL: u32 = 1;
    /// Kill a tracked process that calls `ptrace`, `process_vm_readv` or `process_vm_writev` on
    /// a process outside its server's tree (1 | rule slot << 16).
    pub const PROC_ACCESS_KILL: u32 = 2;
    /// `--on-loss kill`: a tracked process whose event could not be delivered (ring full, a
    /// pending table full) is killed in the kernel, so a flood never buys unseen actions.
    pub const ON_LOSS_KILL: u32 = 3;
    /// The BPF-LSM open deny is attached: deny rules are its to enforce (EPERM, the process
    /// lives), not the fentry kill's at `security_file_open`.
    pub const LSM_ACTIVE: u32 = 4;
    /// Fold identical opens of one thread within this many milliseconds into one event and a
    /// count ([`crate::RepeatEvent`]); 0 = off.
    pub const FOLD_WINDOW_MS: u32 = 5;
    /// The open gate runs (fanotify permission events on the protected files): a server
    /// root's read that waits on the daemon's judgement of its exec is left to it at
    /// `security_file_open` (`ROOT_RUNNERS`).
    pub const GATE_ACTIVE: u32 = 6;
    pub const LEN: u32 = 8;
}
