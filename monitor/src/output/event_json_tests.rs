//! The hand-written event line against serde's, byte for byte, over lines built at random
//! (a fixed seed) from every body kind, every optional field and strings with every escape.
use std::{collections::BTreeSet, sync::Arc};

use serde_json::json;

use super::*;
use crate::{
    discovery::container::{Container, Volume},
    events::{Accesses, Event, Fork, Handshake, Inode, IoUring, KernelAction, ProcAccess, Repeat, Stdio, Direction},
    jsonrpc::session::Candidate,
};

/// xorshift64: the same lines on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }
    fn maybe<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.coin() { Some(f(self)) } else { None }
    }
    fn text(&mut self) -> String {
        let controls: String = (0u8..0x20).map(char::from).chain(['\u{7f}']).collect();
        let pool = ["", "/etc/hostname", "quote\" and back\\slash", "é ☃ 😀 \u{2028}", "/tmp/u/.ssh/id_ecdsa_sk", "tab\tnl\ncr\r"];
        match self.below(pool.len() as u64 + 2) as usize {
            i if i < pool.len() => pool[i].into(),
            i if i == pool.len() => controls.clone(),
            _ => (0..self.below(6)).map(|_| controls.chars().nth(self.below(controls.len() as u64) as usize).unwrap()).collect(),
        }
    }
    fn num<T: TryFrom<u64>>(&mut self) -> T
    where
        T::Error: std::fmt::Debug,
    {
        // Small, large and the type's extremes (through the wrap of a u64).
        let v = match self.below(3) {
            0 => self.below(300),
            1 => self.next(),
            _ => u64::MAX,
        };
        T::try_from(v).unwrap_or_else(|_| T::try_from(v % 200).unwrap())
    }
    fn result(&mut self) -> SysResult {
        let ret = match self.below(3) {
            0 => -(self.below(140) as i64) - 1,
            1 => self.below(1000) as i64,
            _ => i64::MIN + 1,
        };
        SysResult::from_ret(ret)
    }
}

fn body(r: &mut Rng, kind: u64) -> Body {
    let connect = |r: &mut Rng| Connect {
        fd: r.num(),
        family: ["inet", "inet6", "unix", "netlink"][r.below(4) as usize].into(),
        addr: r.maybe(|r| if r.coin() { IpAddr::from([127, 0, 0, r.num()]) } else { IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, r.num()]) }),
        port: r.maybe(Rng::num),
        unix_path: r.maybe(Rng::text),
        policy: if r.coin() { 0 } else { r.num() },
        result: r.result(),
    };
    match kind {
        0 => Body::Exec(Exec {
            syscall: "execveat",
            filename: r.text(),
            argv: (0..r.below(4)).map(|_| r.text()).collect(),
            argv_truncated: r.coin(),
            dirfd: -100,
            policy: if r.coin() { 0 } else { r.num() },
            result: r.result(),
        }),
        1 => Body::Open(Open {
            syscall: "openat2",
            path: r.text().into(),
            dirfd: if r.coin() { -100 } else { r.num() },
            flags: r.num(),
            access: Accesses::of(r.num()),
            mode: r.num(),
            resolve: if r.coin() { 0 } else { r.num() },
            inode: r.maybe(|r| Inode { dev: r.num(), ino: r.num() }),
            policy: if r.coin() { 0 } else { r.num() },
            result: r.result(),
            fold_sig: r.num(),
        }),
        2 => Body::Connect(connect(r)),
        3 => Body::Send(connect(r)),
        4 => Body::Exit(Exit { code: r.maybe(Rng::num), signal: r.maybe(Rng::num), signal_name: r.maybe(|_| "SIGKILL"), core_dumped: r.coin(), status: r.num() }),
        5 => Body::Fork(Fork { child_pid: r.num(), clone_flags: r.num() }),
        6 => Body::IoUring(IoUring { op: "setup", fd: r.num(), sq_entries: r.num(), cq_entries: r.num(), setup_flags: r.num() }),
        7 => Body::ProcAccess(ProcAccess { syscall: "ptrace", request: r.maybe(Rng::text), target_pid: r.num() }),
        8 => Body::Repeat(Repeat { of: "open", fold_sig: r.num(), count: r.num(), first_ns: r.num(), last_ns: r.num() }),
        9 => Body::Handshake(Handshake { json_in: r.coin(), late: r.coin(), in_ino: r.num(), out_ino: r.num(), seen: None }),
        _ => {
            let s = Stdio { ino: r.num(), dir: Direction::Out, fd: r.num(), total_len: r.num(), stream_off: r.num(), offset: r.num(), data: vec![1, 2] };
            if r.coin() { Body::Stdio(s) } else { Body::Sock(s) }
        }
    }
}

fn line(r: &mut Rng, kind: u64) -> EventLine {
    let header = Header {
        ts_mono_ns: r.num(),
        pid: r.num(),
        tid: r.num(),
        ppid: r.num(),
        uid: r.num(),
        server_id: r.num(),
        truncated: (0..r.below(3)).map(|i| ["path", "argv"][i as usize]).collect(),
        kernel_action: r.maybe(|r| [KernelAction::Killed, KernelAction::Denied, KernelAction::DeniedAndKilled][r.below(3) as usize]),
        compat_syscall: r.coin(),
        gated: r.coin(),
    };
    let mcp = match r.below(3) {
        0 => Attribution::Idle,
        1 => Attribution::Call { tool: r.text(), id: r.text(), arguments: json!({"path": r.text(), "n": [1, null, r.text()]}) },
        _ => Attribution::Ambiguous { candidates: (0..r.below(3)).map(|_| Candidate { tool: r.text(), id: r.text() }).collect() },
    };
    let container = r.maybe(|r| {
        let volumes = (0..r.below(2)).map(|_| Volume { source: r.text(), destination: "/data".into() }).collect();
        Arc::new(Container { engine: "docker", id: "ab".repeat(32), image: r.maybe(Rng::text), name: r.maybe(Rng::text), volumes })
    });
    EventLine {
        event: Event { header, body: body(r, kind) },
        time: r.text().as_str().into(),
        server: r.maybe(Rng::text).map(Into::into),
        exe: r.maybe(Rng::text).map(Into::into),
        container,
        mcp,
        resolved_path: r.maybe(Rng::text).map(Into::into),
        folded: r.maybe(|r| Folded { count: r.num(), first: r.text(), last: r.text() }),
    }
}

#[test]
fn the_event_line_is_byte_for_byte_what_serde_writes() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut kinds = BTreeSet::new();
    for n in 0..30_000u64 {
        let l = line(&mut r, n % 11);
        kinds.insert(l.event.kind());
        let mut ours = b"prefix".to_vec();
        write(&l, &mut ours).unwrap();
        let theirs = serde_json::to_vec(&l).unwrap();
        assert_eq!(String::from_utf8_lossy(&ours[6..]), String::from_utf8_lossy(&theirs), "line {n}: {l:?}");
        assert_eq!(&ours[..6], b"prefix", "appends");
    }
    assert_eq!(kinds.len(), 11, "{kinds:?}");
}

/// Lines written one after another through one memo, where the next line often repeats the
/// last one's ids, server or executable (the same shared texts, or equal texts held apart):
/// still serde's bytes, line by line.
#[test]
fn lines_after_lines_are_what_serde_writes() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut memo = LineMemo::default();
    let mut prev: Option<EventLine> = None;
    let mut hits = 0;
    for n in 0..30_000u64 {
        let mut l = line(&mut r, n % 11);
        if let Some(p) = &prev {
            match r.next() % 4 {
                0 => {}
                1 => l.event.header = Header { ts_mono_ns: l.event.header.ts_mono_ns, ..p.event.header.clone() },
                2 => {
                    l.event.header = p.event.header.clone();
                    (l.server, l.exe) = (p.server.clone(), p.exe.clone());
                    hits += 1;
                }
                _ => (l.server, l.exe) = (p.server.as_deref().map(Into::into), p.exe.clone()),
            }
        }
        let mut ours = Vec::new();
        write_with(&l, &mut ours, &mut memo).unwrap();
        let theirs = serde_json::to_vec(&l).unwrap();
        assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs), "line {n}: {l:?}");
        prev = Some(l);
    }
    assert!(hits > 5000, "{hits}");
}

#[test]
fn numbers_are_written_as_itoa_writes_them() {
    let edges: Vec<u64> = [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345, 99999, 100000, u32::MAX as u64, u64::MAX, u64::MAX - 1]
        .into_iter()
        .chain((0..64).map(|b| 1u64 << b))
        .chain((1..20).map(|e| 10u64.pow(e) - 1))
        .chain((1..20).map(|e| 10u64.pow(e)))
        .collect();
    let mut out = b"x".to_vec();
    let mut w = Json { out: &mut out };
    let mut want = "x".to_string();
    for v in &edges {
        w.num(*v);
        want.push_str(itoa::Buffer::new().format(*v));
    }
    for v in [0i64, -1, -9, -10, 7, i64::MIN, i64::MAX, -1234567890123] {
        w.num(v);
        want.push_str(itoa::Buffer::new().format(v));
    }
    w.num(i32::MIN);
    want.push_str(itoa::Buffer::new().format(i32::MIN));
    assert_eq!(String::from_utf8(out).unwrap(), want);
}
