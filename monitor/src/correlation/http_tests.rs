use super::*;
use serde_json::Value;

use crate::{
    correlation::{as_json, Outcome},
    events::{Body, Event, Exit, Header},
    jsonrpc::session::Attribution,
};

/// The test names directions as the event stream does.
fn dir_of(d: &str) -> Direction {
    match d {
        "in" => Direction::In,
        "out" => Direction::Out,
        "accept" => Direction::Accept,
        "close" => Direction::Close,
        _ => Direction::AcceptNotCaptured,
    }
}

fn header(server: u32, ts: u64) -> Header {
    Header { ts_mono_ns: ts, pid: 10, tid: 10, ppid: 1, uid: 0, server_id: server, truncated: vec![], kernel_action: None, compat_syscall: false, gated: false }
}

fn sock(ino: u64, dir: &'static str, off: u64, data: &[u8]) -> Event {
    let s = Stdio { ino, dir: dir_of(dir), fd: 7, total_len: data.len() as u64, stream_off: off, offset: 0, data: data.to_vec() };
    Event { header: header(1, 5), body: Body::Sock(s) }
}

fn post(session: Option<&str>, body: &str) -> Vec<u8> {
    let sid = session.map(|s| format!("mcp-session-id: {s}\r\n")).unwrap_or_default();
    format!("POST /mcp HTTP/1.1\r\ncontent-type: application/json\r\n{sid}content-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn reply(session: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: {session}\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// One connection per exchange, as the SDK's client does with Node's server.
struct Client<'a> {
    c: &'a mut Correlator,
    next_ino: u64,
}

impl Client<'_> {
    fn exchange(&mut self, req: &[u8], resp: &[u8], during: Option<&mut dyn FnMut(&mut Correlator)>) -> Vec<Value> {
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut out = vec![];
        for ev in [sock(ino, "accept", 0, b""), sock(ino, "in", 0, req)] {
            if let Outcome::Consumed(r) = self.c.handle(&ev) {
                out.extend(as_json(&r));
            }
        }
        if let Some(f) = during {
            f(self.c);
        }
        for ev in [sock(ino, "out", 0, resp), sock(ino, "close", 0, b"")] {
            if let Outcome::Consumed(r) = self.c.handle(&ev) {
                out.extend(as_json(&r));
            }
        }
        out
    }
}

fn attribution(c: &mut Correlator) -> Attribution {
    let ev = Event { header: header(1, 6), body: Body::Exit(Exit { code: Some(0), signal: None, signal_name: None, core_dumped: false, status: 0 }) };
    match c.handle(&ev) {
        Outcome::Event(a) => a,
        Outcome::Consumed(_) => panic!("an exit is not consumed"),
    }
}

#[test]
fn calls_of_two_sessions_with_the_same_ids_are_attributed_to_their_own() {
    let mut c = Correlator::new();
    let mut cl = Client { c: &mut c, next_ino: 100 };
    let init = cl.exchange(&post(None, r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"clientInfo":{"name":"a"}}}"#), &reply("A", r#"{"jsonrpc":"2.0","id":0,"result":{"serverInfo":{"name":"s"}}}"#), None);
    assert!(init.iter().any(|r| r["kind"] == "mcp_initialize") && init.iter().any(|r| r["kind"] == "mcp_initialized"));
    assert_eq!(cl.c.session(1).and_then(|s| s.server_info.clone()), Some(serde_json::json!({"name": "s"})), "the server's info outlives the connection");
    let call = |arg: &'static str| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read","arguments":{{"path":"{arg}"}}}}}}"#);
    let mut seen = vec![];
    let out = cl.exchange(&post(Some("A"), &call("/a")), &reply("A", r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#), Some(&mut |c: &mut Correlator| seen.push(attribution(c))));
    let out2 = cl.exchange(&post(Some("B"), &call("/b")), &reply("B", r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true}}"#), Some(&mut |c: &mut Correlator| seen.push(attribution(c))));
    let Attribution::Call { arguments, .. } = &seen[0] else { panic!("{:?}", seen[0]) };
    assert_eq!(arguments["path"], "/a");
    let Attribution::Call { arguments, .. } = &seen[1] else { panic!("{:?}", seen[1]) };
    assert_eq!(arguments["path"], "/b");
    let done: Vec<&Value> = out.iter().chain(&out2).filter(|r| r["kind"] == "tool_call").collect();
    assert_eq!(done.len(), 2);
    assert_eq!((done[0]["http_session"].as_str(), done[0]["outcome"].as_str(), done[0]["events"].as_u64()), (Some("A"), Some("ok"), Some(1)));
    assert_eq!((done[1]["http_session"].as_str(), done[1]["outcome"].as_str()), (Some("B"), Some("tool_error")));
    assert_eq!(attribution(&mut c), Attribution::Idle);
    assert!(c.http.conns.is_empty(), "closed connections are forgotten");
}

#[test]
fn two_calls_in_flight_in_two_sessions_are_ambiguous_and_server_gone_closes_them() {
    let mut c = Correlator::new();
    for (ino, sid) in [(1u64, "A"), (2, "B")] {
        c.handle(&sock(ino, "accept", 0, b""));
        c.handle(&sock(ino, "in", 0, &post(Some(sid), r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{}}}"#)));
    }
    let Attribution::Ambiguous { candidates } = attribution(&mut c) else { panic!() };
    assert_eq!(candidates.len(), 2);
    let gone = as_json(&c.server_gone(1, 9));
    assert_eq!(gone.iter().filter(|r| r["outcome"] == "unanswered").count(), 2);
    assert_eq!(c.http_buffered(), 0);
}

#[test]
fn garbage_and_tls_are_counted_not_fatal() {
    let mut c = Correlator::new();
    c.handle(&sock(1, "accept", 0, b""));
    c.handle(&sock(1, "in", 0, b"\x00\x01garbage that is not http at all\r\n\r\n"));
    assert!(c.http.stats.bytes_lost > 0 && c.http.stats.desyncs == 1);
    c.handle(&sock(2, "accept", 0, b""));
    let Outcome::Consumed(r) = c.handle(&sock(2, "in", 0, b"\x16\x03\x01\x00\xa5\x01")) else { panic!() };
    assert_eq!(as_json(&r)[0]["tls"], true);
    assert_eq!(c.http.stats.tls_connections, 1);
}

#[test]
fn idle_sessions_make_room_for_new_ones() {
    let mut c = Correlator::new();
    c.handle(&sock(1, "accept", 0, b""));
    let mut pos = 0;
    for i in 0..MAX_SESSIONS + 10 {
        let req = post(Some(&format!("s{i}")), r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        c.handle(&sock(1, "in", pos, &req));
        pos += req.len() as u64;
    }
    assert_eq!(c.http.sessions[&1].len(), MAX_SESSIONS);
    assert_eq!(c.http.stats.sessions_dropped, 0);
    // A session with a call in flight is never the one forgotten.
    let req = post(Some("busy"), r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{}}}"#);
    c.handle(&sock(1, "in", pos, &req));
    pos += req.len() as u64;
    for i in 0..MAX_SESSIONS {
        let req = post(Some(&format!("t{i}")), r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        c.handle(&sock(1, "in", pos, &req));
        pos += req.len() as u64;
    }
    assert!(c.http.sessions[&1].contains_key("busy"));
}
