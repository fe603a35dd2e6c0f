use super::*;

fn post(session: Option<&str>, body: &str) -> Vec<u8> {
    let sid = session.map(|s| format!("Mcp-Session-Id: {s}\r\n")).unwrap_or_default();
    format!("POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\n{sid}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn sse_reply(session: &str, body: &str) -> Vec<u8> {
    let ev = format!("event: message\ndata: {body}\n\n");
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nMcp-Session-Id: {session}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{ev}\r\n0\r\n\r\n", ev.len()).into_bytes()
}

fn text(d: &Delivery) -> (&str, bool, String) {
    (d.session.as_str(), d.inbound, String::from_utf8_lossy(&d.msg.head).into_owned())
}

#[test]
fn initialize_on_the_connection_then_calls_in_the_named_session() {
    let mut c = Conn::new(42);
    let (mut rin, mut rout) = (0u64, 0u64);
    let mut feed = |c: &mut Conn, inbound: bool, b: &[u8]| {
        let pos = if inbound { &mut rin } else { &mut rout };
        let d = c.feed(inbound, *pos, true, b, 1);
        *pos += b.len() as u64;
        d
    };
    let d = feed(&mut c, true, &post(None, r#"{"id":0,"method":"initialize"}"#));
    assert_eq!(text(&d[0]), ("conn:42", true, r#"{"id":0,"method":"initialize"}"#.into()));
    assert!(!d[0].named);
    let d = feed(&mut c, false, &sse_reply("abc", r#"{"id":0,"result":{}}"#));
    assert_eq!(text(&d[0]), ("conn:42", false, r#"{"id":0,"result":{}}"#.into()));
    // Pipelined: two requests, then both responses, each to its own session.
    let mut two = post(Some("abc"), r#"{"id":1,"method":"tools/call"}"#);
    two.extend(post(Some("xyz"), r#"{"id":1,"method":"tools/call"}"#));
    let d = feed(&mut c, true, &two);
    assert_eq!(d.iter().map(|d| d.session.as_str()).collect::<Vec<_>>(), vec!["abc", "xyz"]);
    assert!(d.iter().all(|d| d.named));
    let mut two = sse_reply("abc", r#"{"id":1,"result":{}}"#);
    two.extend(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"id\":1,\"result\":{}}");
    let d = feed(&mut c, false, &two);
    assert_eq!(d.iter().map(|d| (d.session.as_str(), d.inbound)).collect::<Vec<_>>(), vec![("abc", false), ("xyz", false)]);
    // A 202 to a notification carries nothing.
    feed(&mut c, true, &post(Some("abc"), r#"{"method":"notifications/initialized"}"#));
    assert!(feed(&mut c, false, b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").is_empty());
}

#[test]
fn tls_is_recognised_and_not_parsed() {
    let mut c = Conn::new(1);
    assert!(c.feed(true, 0, true, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 1).is_empty());
    assert!(c.tls);
    assert!(c.feed(true, 11, true, &post(None, "{}"), 1).is_empty());
    assert_eq!(c.bytes_lost(), 0, "TLS bytes are not losses: they are not plaintext to capture");
}

#[test]
fn sse_transport_posts_and_replies_on_the_get_stream() {
    // The GET /sse stream: its endpoint event names the session, its later events are replies.
    let mut stream = Conn::new(5);
    assert!(stream.feed(true, 0, true, b"GET /sse HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n", 1).is_empty());
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: keep-alive\r\n\r\n";
    let ev = b"event: endpoint\ndata: /message?sessionId=S1\n\n";
    let mut pos = 0;
    for part in [&head[..], &ev[..]] {
        assert!(stream.feed(false, pos, true, part, 1).is_empty(), "the endpoint event is no JSON-RPC");
        pos += part.len() as u64;
    }
    let d = stream.feed(false, pos, true, b"event: message\ndata: {\"id\":1,\"result\":{}}\n\n", 2);
    assert_eq!(text(&d[0]), ("S1", false, r#"{"id":1,"result":{}}"#.into()));
    // The POST on another connection, named by its query.
    let mut post_conn = Conn::new(6);
    let body = r#"{"id":1,"method":"tools/call"}"#;
    let req = format!("POST /message?sessionId=S1 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let d = post_conn.feed(true, 0, true, req.as_bytes(), 1);
    assert_eq!(text(&d[0]), ("S1", true, body.into()));
    assert!(d[0].named);
}
