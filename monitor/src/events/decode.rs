//! Ring buffer bytes → [`Event`]. The layouts are the `#[repr(C)]` records of `monitor-common`;
//! variable-length records (exec, open, stdio) arrive cut after the bytes in use. Exec is read
//! into a zeroed value of its full size; open and stdio, the frequent ones, field by field
//! (`rec!`), their data straight from the bytes. The lengths inside are checked against what
//! arrived.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use monitor_common::{
    exec_syscall, flags, open_syscall, ConnectEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, IoUringEvent, OpenEvent,
    HandshakeEvent, ProcAccessEvent, RepeatEvent, StdioEvent, PATH_CAP, STDIO_CHUNK, UNIX_PATH_CAP,
};

use super::{errno, Body, Connect, Direction, Event, Exec, Exit, Fork, Handshake, Header, Inode, IoUring, KernelAction, Open, ProcAccess, Repeat, Stdio, SysResult};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its fixed part ({1})")]
    Short(usize, usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{0} record claims {1} data bytes but only {2} arrived")]
    BadLength(&'static str, usize, usize),
}

/// A record must bring at least its fixed part (`min` bytes).
fn at_least(bytes: &[u8], min: usize) -> Result<(), DecodeError> {
    if bytes.len() < min {
        return Err(DecodeError::Short(bytes.len(), min));
    }
    Ok(())
}

/// Copies up to `size_of::<T>()` bytes into a zeroed `T`. `T` must be one of the plain-data
/// records of monitor-common (integers and byte arrays only, so any bit pattern is valid).
fn read_record<T: Copy>(bytes: &[u8], min: usize) -> Result<T, DecodeError> {
    at_least(bytes, min)?;
    let mut v = std::mem::MaybeUninit::<T>::zeroed();
    let n = bytes.len().min(std::mem::size_of::<T>());
    // SAFETY: T is a repr(C) POD record; n <= size_of::<T>() and the source has n bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, n);
        Ok(v.assume_init())
    }
}

/// One field of a record, read where the record's layout puts it: for records that end in a
/// byte array filled to a length they give (open, stdio), whose fixed part is all a decoder
/// needs. Reading the whole record zeroed and copied the array's full capacity (4 KiB for an
/// open) for every event. `_of` names the field (`|e: &OpenEvent| &e.ret`, never called), so
/// the value read has the field's own type; the bounds are checked here.
fn field<T, F: Copy>(bytes: &[u8], offset: usize, _of: fn(&T) -> &F) -> Result<F, DecodeError> {
    let end = offset + std::mem::size_of::<F>();
    if end > bytes.len() || end > std::mem::size_of::<T>() {
        return Err(DecodeError::Short(bytes.len(), end));
    }
    // SAFETY: `F` is a field of one of monitor-common's plain-data records (integers, so any
    // bit pattern is valid); `offset..end` lies inside `bytes` (checked above), and
    // `read_unaligned` needs no alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(offset) as *const F) })
}

/// `field` by the field's name: `rec!(bytes, OpenEvent, ret)`.
macro_rules! rec {
    ($bytes:expr, $t:ty, $f:ident) => {
        field::<$t, _>($bytes, std::mem::offset_of!($t, $f), |e: &$t| &e.$f)?
    };
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn header(h: &EventHeader) -> Header {
    let mut truncated = Vec::new();
    for (bit, name) in [
        (flags::ARGS_TRUNCATED, "argv"),
        (flags::PATH_TRUNCATED, "path"),
        (flags::NO_ENTRY, "syscall_entry_missed"),
        (flags::READ_FAILED, "user_memory_unreadable"),
    ] {
        if h.flags & bit != 0 {
            truncated.push(name);
        }
    }
    let kernel_action = match (h.flags & flags::DENIED != 0, h.flags & flags::KILLED != 0) {
        (true, true) => Some(KernelAction::DeniedAndKilled),
        (true, false) => Some(KernelAction::Denied),
        (false, true) => Some(KernelAction::Killed),
        (false, false) => None,
    };
    let compat_syscall = h.flags & flags::COMPAT != 0;
    Header { ts_mono_ns: h.ts_ns, pid: h.tgid, tid: h.tid, ppid: h.ppid, uid: h.uid, server_id: h.server_id, truncated, kernel_action, compat_syscall, gated: h.flags & flags::GATED != 0 }
}

/// The paths the ring reader has decoded, each kept once and shared by the events that name it.
/// A fresh `String` per open was the one allocation per event left on the hot path, and the
/// pipeline's thread freed what the reader's had allocated (allocator locks across threads);
/// a flood repeats a handful of paths. Bounded by bytes: emptied when full, so a walk over a
/// tree of distinct paths costs one hash per open more than before, never memory.
#[derive(Default)]
pub struct Paths {
    set: foldhash::HashSet<Arc<str>>,
    bytes: usize,
}

/// What the kept paths may add up to (a flood's are a few; a `find` replaces them all).
const PATHS_BYTES: usize = 256 * 1024;

impl Paths {
    fn get(&mut self, b: &[u8]) -> Arc<str> {
        // Invalid UTF-8 is rare (its lossy copy differs from the bytes): not kept.
        let Ok(s) = std::str::from_utf8(b) else { return String::from_utf8_lossy(b).into() };
        if let Some(p) = self.set.get(s) {
            return Arc::clone(p);
        }
        if self.bytes + s.len() > PATHS_BYTES {
            self.set.clear();
            self.bytes = 0;
        }
        let p: Arc<str> = s.into();
        self.bytes += s.len();
        self.set.insert(Arc::clone(&p));
        p
    }
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    decode_in(bytes, &mut Paths::default())
}

/// `decode`, sharing open paths through `paths`.
pub fn decode_in(bytes: &[u8], paths: &mut Paths) -> Result<Event, DecodeError> {
    let h: EventHeader = read_record(bytes, std::mem::size_of::<EventHeader>())?;
    let kind = EventKind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    let body = match kind {
        EventKind::Exec => Body::Exec(exec(bytes)?),
        EventKind::Open => Body::Open(open(bytes, paths)?),
        EventKind::Connect => Body::Connect(connect(bytes)?),
        EventKind::Exit => Body::Exit(exit(bytes)?),
        EventKind::Fork => {
            let f: ForkEvent = read_record(bytes, std::mem::size_of::<ForkEvent>())?;
            Body::Fork(Fork { child_pid: f.child_tgid, clone_flags: f.clone_flags })
        }
        EventKind::Stdio => Body::Stdio(stdio(bytes)?),
        EventKind::Sock => Body::Sock(stdio(bytes)?),
        EventKind::Send => Body::Send(connect(bytes)?),
        EventKind::IoUring => {
            let e: IoUringEvent = read_record(bytes, std::mem::size_of::<IoUringEvent>())?;
            let op = if e.hdr.flags & flags::URING_ENTER != 0 { "enter" } else { "setup" };
            Body::IoUring(IoUring { op, fd: e.fd, sq_entries: e.sq_entries, cq_entries: e.cq_entries, setup_flags: e.setup_flags })
        }
        EventKind::ProcAccess => Body::ProcAccess(proc_access(bytes)?),
        EventKind::Repeat => {
            let e: RepeatEvent = read_record(bytes, std::mem::size_of::<RepeatEvent>())?;
            let of = match EventKind::from_u32(e.of_kind) {
                Some(EventKind::Open) => "open",
                _ => return Err(DecodeError::UnknownKind(e.of_kind)),
            };
            Body::Repeat(Repeat { of, fold_sig: e.fold_sig, count: e.count, first_ns: e.first_ns, last_ns: e.last_ns })
        }
        EventKind::Handshake => {
            let e: HandshakeEvent = read_record(bytes, std::mem::size_of::<HandshakeEvent>())?;
            let json_in = match e.what {
                monitor_common::handshake::CANDIDATE => false,
                monitor_common::handshake::JSON_IN => true,
                other => return Err(DecodeError::UnknownKind(other)),
            };
            Body::Handshake(Handshake { json_in, late: e.late != 0, in_ino: e.in_ino, out_ino: e.out_ino, seen: None })
        }
    };
    Ok(Event { header: header(&h), body })
}

fn proc_access(bytes: &[u8]) -> Result<ProcAccess, DecodeError> {
    let e: ProcAccessEvent = read_record(bytes, std::mem::size_of::<ProcAccessEvent>())?;
    let syscall = match e.syscall {
        monitor_common::proc_access::PTRACE => "ptrace",
        monitor_common::proc_access::VM_READV => "process_vm_readv",
        monitor_common::proc_access::VM_WRITEV => "process_vm_writev",
        monitor_common::proc_access::PIDFD_GETFD => "pidfd_getfd",
        _ => "unknown",
    };
    let request = match e.syscall {
        monitor_common::proc_access::PTRACE => Some(ptrace_request(e.request)),
        // The fd number taken from the other process.
        monitor_common::proc_access::PIDFD_GETFD => Some(format!("fd {}", e.request)),
        _ => None,
    };
    Ok(ProcAccess { syscall, request, target_pid: e.target })
}

/// Names of the ptrace requests an attacker uses (<linux/ptrace.h>, <asm/ptrace-abi.h>).
fn ptrace_request(r: i64) -> String {
    let name = match r {
        1 => "peektext",
        2 => "peekdata",
        3 => "peekuser",
        4 => "poketext",
        5 => "pokedata",
        6 => "pokeuser",
        7 => "cont",
        8 => "kill",
        9 => "singlestep",
        12 => "getregs",
        13 => "setregs",
        16 => "attach",
        17 => "detach",
        24 => "syscall",
        0x4200 => "setoptions",
        0x4206 => "seize",
        0x4207 => "interrupt",
        _ => return r.to_string(),
    };
    name.to_string()
}

fn exec(bytes: &[u8]) -> Result<Exec, DecodeError> {
    let e: ExecEvent = read_record(bytes, ExecEvent::DATA_OFFSET)?;
    let (fl, al) = (e.filename_len as usize, e.args_len as usize);
    let arrived = bytes.len() - ExecEvent::DATA_OFFSET;
    if fl + al > arrived || fl + al > ExecEvent::DATA_CAP {
        return Err(DecodeError::BadLength("exec", fl + al, arrived));
    }
    let argv = e.data[fl..fl + al]
        .split(|&b| b == 0)
        .take(e.argc as usize)
        .map(text)
        .collect();
    Ok(Exec {
        syscall: match e.syscall {
            exec_syscall::EXECVE => "execve",
            exec_syscall::EXECVEAT => "execveat",
            _ => "unknown",
        },
        filename: text(&e.data[..fl]),
        argv,
        argv_truncated: e.hdr.flags & flags::ARGS_TRUNCATED != 0,
        dirfd: e.dirfd,
        policy: e.policy,
        result: SysResult::from_ret(e.ret as i64),
    })
}

fn open(bytes: &[u8], paths: &mut Paths) -> Result<Open, DecodeError> {
    at_least(bytes, OpenEvent::DATA_OFFSET)?;
    let pl = rec!(bytes, OpenEvent, path_len) as usize;
    let arrived = bytes.len() - OpenEvent::DATA_OFFSET;
    if pl > arrived || pl > PATH_CAP {
        return Err(DecodeError::BadLength("open", pl, arrived));
    }
    let (ret, ino, flags) = (rec!(bytes, OpenEvent, ret), rec!(bytes, OpenEvent, ino), rec!(bytes, OpenEvent, open_flags));
    Ok(Open {
        syscall: match rec!(bytes, OpenEvent, syscall) {
            open_syscall::OPEN => "open",
            open_syscall::OPENAT => "openat",
            open_syscall::OPENAT2 => "openat2",
            open_syscall::CREAT => "creat",
            _ => "unknown",
        },
        path: paths.get(&bytes[OpenEvent::DATA_OFFSET..][..pl]),
        dirfd: rec!(bytes, OpenEvent, dirfd),
        flags,
        access: super::Accesses::of(flags),
        mode: rec!(bytes, OpenEvent, mode),
        resolve: rec!(bytes, OpenEvent, resolve),
        inode: (ret >= 0 && ino != 0).then_some(Inode { dev: rec!(bytes, OpenEvent, dev), ino }),
        policy: rec!(bytes, OpenEvent, policy),
        result: SysResult::from_ret(ret),
        fold_sig: rec!(bytes, OpenEvent, fold_sig),
    })
}

fn connect(bytes: &[u8]) -> Result<Connect, DecodeError> {
    let e: ConnectEvent = read_record(bytes, std::mem::size_of::<ConnectEvent>())?;
    let (family, addr, port, unix_path) = match e.family {
        2 => ("inet".to_string(), Some(IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]))), Some(e.port), None),
        10 => ("inet6".to_string(), Some(IpAddr::V6(Ipv6Addr::from(e.addr))), Some(e.port), None),
        1 => {
            let n = (e.unix_path_len as usize).min(UNIX_PATH_CAP);
            let raw = &e.unix_path[..n];
            // Abstract names start with NUL and may contain NULs; path names end at the first NUL.
            let path = match raw.first() {
                Some(0) => format!("@{}", text(&raw[1..])),
                _ => text(raw.split(|&b| b == 0).next().unwrap_or_default()),
            };
            ("unix".to_string(), None, None, Some(path))
        }
        0 => ("unspec".to_string(), None, None, None),
        other => (format!("af_{other}"), None, None, None),
    };
    Ok(Connect { fd: e.fd, family, addr, port, unix_path, policy: e.policy, result: SysResult::from_ret(e.ret as i64) })
}

fn stdio(bytes: &[u8]) -> Result<Stdio, DecodeError> {
    at_least(bytes, StdioEvent::DATA_OFFSET)?;
    let n = rec!(bytes, StdioEvent, len) as usize;
    let arrived = bytes.len() - StdioEvent::DATA_OFFSET;
    if n > arrived || n > STDIO_CHUNK {
        return Err(DecodeError::BadLength("stdio", n, arrived));
    }
    let dir = rec!(bytes, StdioEvent, dir);
    Ok(Stdio {
        ino: rec!(bytes, StdioEvent, ino),
        dir: match dir {
            monitor_common::stdio_dir::IN => Direction::In,
            monitor_common::stdio_dir::OUT => Direction::Out,
            monitor_common::sock_dir::ACCEPT => Direction::Accept,
            monitor_common::sock_dir::CLOSE => Direction::Close,
            monitor_common::sock_dir::ACCEPT_NOT_CAPTURED => Direction::AcceptNotCaptured,
            _ => return Err(DecodeError::BadLength("stdio dir", dir as usize, 0)),
        },
        fd: rec!(bytes, StdioEvent, fd),
        total_len: rec!(bytes, StdioEvent, total_len),
        stream_off: rec!(bytes, StdioEvent, stream_off),
        offset: rec!(bytes, StdioEvent, offset),
        data: bytes[StdioEvent::DATA_OFFSET..][..n].to_vec(),
    })
}

fn exit(bytes: &[u8]) -> Result<Exit, DecodeError> {
    let e: ExitEvent = read_record(bytes, std::mem::size_of::<ExitEvent>())?;
    let status = e.exit_code;
    let sig = (status & 0x7f) as u8;
    Ok(if sig == 0 {
        Exit { code: Some(((status >> 8) & 0xff) as u8), signal: None, signal_name: None, core_dumped: false, status }
    } else {
        Exit { code: None, signal: Some(sig), signal_name: Some(errno::signal_name(sig)), core_dumped: status & 0x80 != 0, status }
    })
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
