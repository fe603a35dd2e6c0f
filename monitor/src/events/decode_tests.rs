//! Round trips: build each record exactly as the kernel programs do (same struct, same cut after
//! the used bytes), decode it, and compare every field.
use monitor_common::{
    exec_syscall, flags, open_syscall, ConnectEvent, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, IoUringEvent, OpenEvent,
    proc_access, ProcAccessEvent,
};

use super::*;
use crate::events::{Access, Accesses, Direction, KernelAction, Repeat};

fn hdr(kind: EventKind, fl: u32) -> EventHeader {
    EventHeader { kind: kind as u32, flags: fl, ts_ns: 123_456_789, tgid: 42, tid: 43, ppid: 7, uid: 1000, server_id: 3, _pad: 0 }
}

fn bytes_of<T>(v: &T, len: usize) -> Vec<u8> {
    assert!(len <= std::mem::size_of::<T>());
    // SAFETY: reading the bytes of a POD record.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, len) }.to_vec()
}

fn zeroed<T>() -> T {
    // SAFETY: only called for the monitor_common event records (Exec, Open, Connect, StdioEvent), all
    // #[repr(C)] with integer and byte-array fields, for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

fn expect_header(e: &Event, truncated: Vec<&'static str>) {
    assert_eq!(
        e.header,
        Header { ts_mono_ns: 123_456_789, pid: 42, tid: 43, ppid: 7, uid: 1000, server_id: 3, truncated, kernel_action: None, compat_syscall: false, gated: false }
    );
}

#[test]
fn exec_round_trip() {
    let mut e: ExecEvent = zeroed();
    e.hdr = hdr(EventKind::Exec, flags::ARGS_TRUNCATED);
    e.syscall = exec_syscall::EXECVE;
    e.dirfd = -100;
    let filename = b"/usr/bin/cat";
    let args = b"cat\0-n\0/etc/hostname\0";
    e.data[..filename.len()].copy_from_slice(filename);
    e.data[filename.len()..filename.len() + args.len()].copy_from_slice(args);
    e.filename_len = filename.len() as u32;
    e.args_len = args.len() as u32;
    e.argc = 3;
    let len = ExecEvent::DATA_OFFSET + filename.len() + args.len();
    let ev = decode(&bytes_of(&e, len)).unwrap();
    expect_header(&ev, vec!["argv"]);
    assert_eq!(
        ev.body,
        Body::Exec(Exec {
            syscall: "execve",
            filename: "/usr/bin/cat".into(),
            argv: vec!["cat".into(), "-n".into(), "/etc/hostname".into()],
            argv_truncated: true,
            dirfd: -100,
            policy: 0,
            result: SysResult { ok: true, ret: 0, errno: None },
        })
    );
}

#[test]
fn failed_exec_and_lying_lengths() {
    let mut e: ExecEvent = zeroed();
    e.hdr = hdr(EventKind::Exec, 0);
    e.syscall = exec_syscall::EXECVEAT;
    e.ret = -2;
    e.filename_len = 3;
    e.data[..3].copy_from_slice(b"/no");
    let ev = decode(&bytes_of(&e, ExecEvent::DATA_OFFSET + 3)).unwrap();
    let Body::Exec(x) = ev.body else { panic!() };
    assert_eq!((x.syscall, x.filename.as_str(), x.argv.len()), ("execveat", "/no", 0));
    assert_eq!(x.result, SysResult { ok: false, ret: -2, errno: Some("ENOENT") });

    // A record that claims more bytes than arrived is rejected, not read past its end.
    e.args_len = 100;
    assert_eq!(decode(&bytes_of(&e, ExecEvent::DATA_OFFSET + 3)), Err(DecodeError::BadLength("exec", 103, 3)));
}

#[test]
fn open_round_trip_success_and_failure() {
    let mut e: OpenEvent = zeroed();
    e.hdr = hdr(EventKind::Open, 0);
    e.syscall = open_syscall::OPENAT2;
    e.dirfd = 5;
    e.open_flags = 0o1101; // O_WRONLY|O_CREAT|O_TRUNC
    e.mode = 0o600;
    e.resolve = 0x08;
    e.ret = 7;
    e.fold_sig = 0xfeed_0001;
    let p = b"../.ssh/id_rsa";
    e.path[..p.len()].copy_from_slice(p);
    e.path_len = p.len() as u32;
    let ev = decode(&bytes_of(&e, OpenEvent::DATA_OFFSET + p.len())).unwrap();
    expect_header(&ev, vec![]);
    assert_eq!(
        ev.body,
        Body::Open(Open {
            syscall: "openat2",
            path: "../.ssh/id_rsa".into(),
            dirfd: 5,
            flags: 0o1101,
            access: Accesses::of(0o1101),
            mode: 0o600,
            resolve: 0x08,
            inode: None,
            policy: 0,
            result: SysResult { ok: true, ret: 7, errno: None },
            fold_sig: 0xfeed_0001,
        })
    );

    e.ret = -13;
    e.syscall = open_syscall::OPENAT;
    e.open_flags = 0;
    e.hdr.flags = flags::PATH_TRUNCATED;
    let ev = decode(&bytes_of(&e, OpenEvent::DATA_OFFSET + p.len())).unwrap();
    expect_header(&ev, vec!["path"]);
    let Body::Open(o) = ev.body else { panic!() };
    assert_eq!((o.syscall, o.access.iter().collect::<Vec<_>>()), ("openat", vec![Access::Read]));
    assert_eq!(o.result, SysResult { ok: false, ret: -13, errno: Some("EACCES") });

    // Every field read from its own place: an inode, a device and a policy hit, distinct.
    (e.ret, e.ino, e.dev, e.policy, e.hdr.flags) = (3, 0x1234_5678_9abc, 0x0810_0003, 0x0003_0001, 0);
    let Body::Open(o) = decode(&bytes_of(&e, OpenEvent::DATA_OFFSET + p.len())).unwrap().body else { panic!() };
    assert_eq!((o.inode, o.policy, o.dirfd, o.mode, o.resolve), (Some(Inode { dev: 0x0810_0003, ino: 0x1234_5678_9abc }), 0x0003_0001, 5, 0o600, 0x08));
    // A length that claims more than arrived, or more than the record holds, and a record cut
    // inside its fixed part, are errors.
    e.path_len = 100;
    assert_eq!(decode(&bytes_of(&e, OpenEvent::DATA_OFFSET + p.len())), Err(DecodeError::BadLength("open", 100, p.len())));
    e.path_len = monitor_common::PATH_CAP as u32 + 1;
    assert!(matches!(decode(&bytes_of(&e, std::mem::size_of::<OpenEvent>())), Err(DecodeError::BadLength("open", _, _))));
    assert!(matches!(decode(&bytes_of(&e, OpenEvent::DATA_OFFSET - 1)), Err(DecodeError::Short(_, _))));
}

#[test]
fn an_open_path_is_kept_once_and_shared_within_a_bound() {
    let open = |path: &[u8]| {
        let mut e: OpenEvent = zeroed();
        e.hdr = hdr(EventKind::Open, 0);
        e.path[..path.len()].copy_from_slice(path);
        e.path_len = path.len() as u32;
        bytes_of(&e, OpenEvent::DATA_OFFSET + path.len())
    };
    let path_of = |paths: &mut Paths, b: &[u8]| match decode_in(&open(b), paths).unwrap().body {
        Body::Open(o) => o.path,
        other => panic!("{other:?}"),
    };
    let mut paths = Paths::default();
    let (a, b) = (path_of(&mut paths, b"/etc/hostname"), path_of(&mut paths, b"/etc/hostname"));
    assert!(std::sync::Arc::ptr_eq(&a, &b), "the second open of a path shares the first's text");
    assert!(!std::sync::Arc::ptr_eq(&a, &path_of(&mut paths, b"/etc/hosts")));
    // Not valid UTF-8: the lossy copy, as before, and not kept.
    assert_eq!(&*path_of(&mut paths, b"/tmp/\xff"), "/tmp/\u{fffd}");
    // A walk over distinct paths never holds more than the bound.
    for i in 0..100_000 {
        path_of(&mut paths, format!("/srv/tree/{i:07}/file").as_bytes());
        assert!(paths.bytes <= PATHS_BYTES);
        if i % 997 == 0 {
            assert_eq!(paths.set.iter().map(|p| p.len()).sum::<usize>(), paths.bytes);
        }
    }
}

#[test]
fn repeat_round_trip() {
    let mut e = monitor_common::RepeatEvent { hdr: hdr(EventKind::Repeat, 0), of_kind: EventKind::Open as u32, _pad: 0, fold_sig: 0xabc, count: 999_999, first_ns: 10, last_ns: 20 };
    let ev = decode(&bytes_of(&e, std::mem::size_of::<monitor_common::RepeatEvent>())).unwrap();
    expect_header(&ev, vec![]);
    assert_eq!(ev.body, Body::Repeat(Repeat { of: "open", fold_sig: 0xabc, count: 999_999, first_ns: 10, last_ns: 20 }));
    assert_eq!(ev.kind(), "open", "counted as the kind it repeats");
    e.of_kind = EventKind::Exec as u32;
    assert!(decode(&bytes_of(&e, std::mem::size_of::<monitor_common::RepeatEvent>())).is_err(), "only opens fold");
    assert!(decode(&bytes_of(&e, 40)).is_err(), "short");
}

#[test]
fn connect_round_trip_all_families() {
    let mut e: ConnectEvent = zeroed();
    e.hdr = hdr(EventKind::Connect, 0);
    e.fd = 9;
    e.family = 2;
    e.port = 8080;
    e.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.ret = -111;
    let ev = decode(&bytes_of(&e, std::mem::size_of::<ConnectEvent>())).unwrap();
    expect_header(&ev, vec![]);
    assert_eq!(
        ev.body,
        Body::Connect(Connect {
            fd: 9,
            family: "inet".into(),
            addr: Some("127.0.0.1".parse().unwrap()),
            port: Some(8080),
            unix_path: None,
            policy: 0,
            result: SysResult { ok: false, ret: -111, errno: Some("ECONNREFUSED") },
        })
    );

    e.family = 10;
    e.addr = "fd00:ec2::254".parse::<std::net::Ipv6Addr>().unwrap().octets();
    e.port = 80;
    e.ret = 0;
    let Body::Connect(c) = decode(&bytes_of(&e, std::mem::size_of::<ConnectEvent>())).unwrap().body else { panic!() };
    assert_eq!((c.family.as_str(), c.addr, c.port), ("inet6", Some("fd00:ec2::254".parse().unwrap()), Some(80)));
    assert!(c.result.ok);

    e.family = 1;
    let path = b"/run/user/1000/bus\0";
    e.unix_path[..path.len()].copy_from_slice(path);
    e.unix_path_len = path.len() as u32;
    let Body::Connect(c) = decode(&bytes_of(&e, std::mem::size_of::<ConnectEvent>())).unwrap().body else { panic!() };
    assert_eq!((c.family.as_str(), c.unix_path.as_deref(), c.addr), ("unix", Some("/run/user/1000/bus"), None));

    e.unix_path = [0; 108];
    e.unix_path[1..5].copy_from_slice(b"abst");
    e.unix_path_len = 5;
    let Body::Connect(c) = decode(&bytes_of(&e, std::mem::size_of::<ConnectEvent>())).unwrap().body else { panic!() };
    assert_eq!(c.unix_path.as_deref(), Some("@abst"));
}

#[test]
fn send_round_trip_refused_in_the_kernel() {
    let mut e: ConnectEvent = zeroed();
    e.hdr = hdr(EventKind::Send, flags::DENIED);
    e.fd = 4;
    e.family = 10;
    e.addr = "::ffff:169.254.169.254".parse::<std::net::Ipv6Addr>().unwrap().octets();
    e.port = 53;
    e.ret = -1;
    e.policy = 3 | 7 << 16;
    let ev = decode(&bytes_of(&e, std::mem::size_of::<ConnectEvent>())).unwrap();
    assert_eq!(ev.header.kernel_action, Some(KernelAction::Denied));
    assert_eq!(
        ev.body,
        Body::Send(Connect {
            fd: 4,
            family: "inet6".into(),
            addr: Some("::ffff:169.254.169.254".parse().unwrap()),
            port: Some(53),
            unix_path: None,
            policy: 3 | 7 << 16,
            result: SysResult { ok: false, ret: -1, errno: Some("EPERM") },
        })
    );
}

#[test]
fn io_uring_round_trip_killed_at_setup() {
    let e = IoUringEvent { hdr: hdr(EventKind::IoUring, flags::KILLED), fd: 5, sq_entries: 8, cq_entries: 16, setup_flags: 2 };
    let ev = decode(&bytes_of(&e, std::mem::size_of::<IoUringEvent>())).unwrap();
    assert_eq!(ev.header.kernel_action, Some(KernelAction::Killed));
    assert_eq!(ev.body, Body::IoUring(IoUring { op: "setup", fd: 5, sq_entries: 8, cq_entries: 16, setup_flags: 2 }));
    let enter = IoUringEvent { hdr: hdr(EventKind::IoUring, flags::KILLED | flags::URING_ENTER), fd: 9, ..Default::default() };
    let ev = decode(&bytes_of(&enter, std::mem::size_of::<IoUringEvent>())).unwrap();
    assert_eq!(ev.body, Body::IoUring(IoUring { op: "enter", fd: 9, sq_entries: 0, cq_entries: 0, setup_flags: 0 }));
    // Cut short: an error, not a panic or a guess.
    assert!(decode(&bytes_of(&e, std::mem::size_of::<IoUringEvent>() - 4)).is_err());
}

#[test]
fn proc_access_round_trip() {
    let e = ProcAccessEvent { hdr: hdr(EventKind::ProcAccess, flags::KILLED), syscall: proc_access::PTRACE, target: 4242, request: 16 };
    let ev = decode(&bytes_of(&e, std::mem::size_of::<ProcAccessEvent>())).unwrap();
    assert_eq!(ev.header.kernel_action, Some(KernelAction::Killed));
    assert_eq!(ev.kind(), "proc_access");
    assert_eq!(ev.body, Body::ProcAccess(ProcAccess { syscall: "ptrace", request: Some("attach".into()), target_pid: 4242 }));
    let w = ProcAccessEvent { hdr: hdr(EventKind::ProcAccess, 0), syscall: proc_access::VM_WRITEV, target: 7, request: 0 };
    let ev = decode(&bytes_of(&w, std::mem::size_of::<ProcAccessEvent>())).unwrap();
    assert_eq!(ev.header.kernel_action, None);
    assert_eq!(ev.body, Body::ProcAccess(ProcAccess { syscall: "process_vm_writev", request: None, target_pid: 7 }));
    assert!(decode(&bytes_of(&e, std::mem::size_of::<ProcAccessEvent>() - 8)).is_err());
}

#[test]
fn gated_open_is_marked() {
    let mut e: OpenEvent = zeroed();
    e.hdr = hdr(EventKind::Open, flags::DENIED | flags::GATED | flags::KILLED);
    e.ret = -1;
    e.policy = 1 | 2 << 16;
    let ev = decode(&bytes_of(&e, OpenEvent::DATA_OFFSET)).unwrap();
    assert!(ev.header.gated);
    assert_eq!(ev.header.kernel_action, Some(KernelAction::DeniedAndKilled));
}

#[test]
fn exit_round_trip_code_and_signal() {
    let mut e = ExitEvent { hdr: hdr(EventKind::Exit, 0), exit_code: 3 << 8, _pad: 0 };
    let ev = decode(&bytes_of(&e, std::mem::size_of::<ExitEvent>())).unwrap();
    expect_header(&ev, vec![]);
    assert_eq!(ev.body, Body::Exit(Exit { code: Some(3), signal: None, signal_name: None, core_dumped: false, status: 768 }));
    e.exit_code = 9;
    let Body::Exit(x) = decode(&bytes_of(&e, std::mem::size_of::<ExitEvent>())).unwrap().body else { panic!() };
    assert_eq!((x.code, x.signal, x.signal_name), (None, Some(9), Some("SIGKILL")));
}

#[test]
fn fork_round_trip() {
    let e = ForkEvent { hdr: hdr(EventKind::Fork, 0), child_tgid: 99, _pad: 0, clone_flags: 0x11 };
    let ev = decode(&bytes_of(&e, std::mem::size_of::<ForkEvent>())).unwrap();
    expect_header(&ev, vec![]);
    assert_eq!(ev.body, Body::Fork(Fork { child_pid: 99, clone_flags: 0x11 }));
}

#[test]
fn stdio_round_trip() {
    let mut e: monitor_common::StdioEvent = zeroed();
    e.hdr = hdr(EventKind::Stdio, 0);
    e.ino = 4242;
    e.total_len = 70_000;
    e.offset = 65_536;
    e.stream_off = 1_000;
    e.fd = 7;
    e.dir = monitor_common::stdio_dir::OUT;
    let d = b"\"id\":5}\n";
    e.data[..d.len()].copy_from_slice(d);
    e.len = d.len() as u32;
    let ev = decode(&bytes_of(&e, monitor_common::StdioEvent::DATA_OFFSET + d.len())).unwrap();
    expect_header(&ev, vec![]);
    assert_eq!(
        ev.body,
        Body::Stdio(Stdio { ino: 4242, dir: Direction::Out, fd: 7, total_len: 70_000, stream_off: 1_000, offset: 65_536, data: d.to_vec() })
    );
    e.len = 5000;
    assert!(matches!(decode(&bytes_of(&e, monitor_common::StdioEvent::DATA_OFFSET + 10)), Err(DecodeError::BadLength("stdio", 5000, 10))));
}

#[test]
fn sock_round_trip_data_accept_and_close() {
    let mut e: monitor_common::StdioEvent = zeroed();
    e.hdr = hdr(EventKind::Sock, 0);
    e.ino = 77;
    e.total_len = 5;
    e.fd = 9;
    e.dir = monitor_common::stdio_dir::IN;
    e.data[..5].copy_from_slice(b"POST ");
    e.len = 5;
    let ev = decode(&bytes_of(&e, monitor_common::StdioEvent::DATA_OFFSET + 5)).unwrap();
    assert_eq!(ev.body, Body::Sock(Stdio { ino: 77, dir: Direction::In, fd: 9, total_len: 5, stream_off: 0, offset: 0, data: b"POST ".to_vec() }));
    for (dir, name) in [(monitor_common::sock_dir::ACCEPT, Direction::Accept), (monitor_common::sock_dir::CLOSE, Direction::Close), (monitor_common::sock_dir::ACCEPT_NOT_CAPTURED, Direction::AcceptNotCaptured)] {
        e.dir = dir;
        e.len = 0;
        e.total_len = 0;
        let ev = decode(&bytes_of(&e, monitor_common::StdioEvent::DATA_OFFSET)).unwrap();
        assert!(matches!(&ev.body, Body::Sock(s) if s.dir == name && s.data.is_empty()), "{ev:?}");
    }
    e.dir = 99;
    assert!(decode(&bytes_of(&e, monitor_common::StdioEvent::DATA_OFFSET)).is_err());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(matches!(decode(&[1, 2, 3]), Err(DecodeError::Short(3, _))));
    let mut h = hdr(EventKind::Exec, 0);
    h.kind = 77;
    assert_eq!(decode(&bytes_of(&h, 40)), Err(DecodeError::UnknownKind(77)));
    let h = hdr(EventKind::Connect, 0);
    assert!(matches!(decode(&bytes_of(&h, 40)), Err(DecodeError::Short(40, _))));
}

#[test]
fn json_shape() {
    let e = ForkEvent { hdr: hdr(EventKind::Fork, 0), child_tgid: 99, _pad: 0, clone_flags: 0 };
    let v = serde_json::to_value(decode(&bytes_of(&e, std::mem::size_of::<ForkEvent>())).unwrap()).unwrap();
    assert_eq!(v["kind"], "fork");
    assert_eq!(v["pid"], 42);
    assert_eq!(v["child_pid"], 99);
    assert_eq!(v["server_id"], 3);
}
