use super::*;
use crate::jsonrpc::framing::{HEAD_KEEP, TAIL_KEEP};

/// Feeds whole syscalls back to back; returns everything they produced.
fn feed_all(w: &mut Wire, syscalls: &[&[u8]]) -> Vec<Item> {
    let mut pos = 0;
    let mut out = vec![];
    for d in syscalls {
        out.extend(w.feed(pos, true, d, 1));
        pos += d.len() as u64;
    }
    out
}

fn bodies(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Body(m) | Item::Event(m) => Some(String::from_utf8_lossy(&m.head).into_owned()),
            _ => None,
        })
        .collect()
}

const POST: &[u8] = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nMcp-Session-Id: s1\r\nContent-Length: 7\r\n\r\n{\"a\":1}";

#[test]
fn content_length_keep_alive_and_pipelining_split_anywhere() {
    let two = [POST, POST].concat();
    for cut in 0..two.len() {
        let mut w = Wire::default();
        let items = feed_all(&mut w, &[&two[..cut], &two[cut..]]);
        assert_eq!(bodies(&items), vec!["{\"a\":1}", "{\"a\":1}"], "cut at {cut}");
        let heads: Vec<_> = items.iter().filter_map(|i| if let Item::Head(h) = i { Some(h.clone()) } else { None }).collect();
        assert_eq!(heads.len(), 2);
        assert_eq!((heads[0].method.as_str(), heads[0].header("mcp-session-id")), ("POST", Some("s1")));
        assert_eq!(items.iter().filter(|i| **i == Item::End).count(), 2);
    }
}

#[test]
fn chunked_body_and_sse_response() {
    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
22\r\nevent: message\r\ndata: {\"id\":1}\r\n\r\n\r\n\
d\r\ndata: {\"id\":2\r\n3\r\n}\n\n\r\n0\r\n\r\n";
    for cut in 0..resp.len() {
        let mut w = Wire::default();
        let items = feed_all(&mut w, &[&resp[..cut], &resp[cut..]]);
        assert_eq!(bodies(&items), vec!["{\"id\":1}", "{\"id\":2}"], "cut at {cut}");
        assert_eq!(items.last(), Some(&Item::End), "cut at {cut}");
    }
    let plain = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n";
    assert_eq!(bodies(&feed_all(&mut Wire::default(), &[plain])), vec!["[1,2]"]);
}

#[test]
fn status_without_body_and_body_until_close() {
    let mut w = Wire::default();
    let items = feed_all(&mut w, &[b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n{\"x\"", b":1}"]);
    assert_eq!(items.iter().filter(|i| matches!(i, Item::Head(_))).count(), 3);
    assert!(bodies(&items).is_empty());
    assert_eq!(bodies(&w.close(2)), vec!["{\"x\":1}"]);
}

#[test]
fn garbage_breaks_until_a_syscall_starts_a_request() {
    let mut w = Wire::default();
    let items = feed_all(&mut w, &[b"\x16\x03\x01 definitely not http\r\n\r\n", b"more garbage", POST]);
    assert_eq!(bodies(&items), vec!["{\"a\":1}"]);
    assert!(w.bytes_lost >= 12 && w.desyncs == 1);
    // A head that never ends is dropped at MAX_HEAD, not kept.
    let mut w = Wire::default();
    w.feed(0, true, b"POST / HTTP/1.1\r\nX: ", 1);
    let junk = vec![b'a'; 8192];
    for i in 0..20u64 {
        w.feed(20 + i * 8192, false, &junk, 1);
        assert!(w.buffered() <= MAX_HEAD + 8192);
    }
    assert_eq!(w.desyncs, 1);
}

#[test]
fn a_gap_inside_a_body_truncates_it_and_the_next_request_is_whole() {
    let mut w = Wire::default();
    let (head, start) = (b"POST /mcp HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", b"{\"id\":5,\"method\":\"tools/call\"");
    let items = w.feed(0, true, &[&head[..], &start[..]].concat(), 1);
    assert!(bodies(&items).is_empty());
    let tail_at = (head.len() + 100_000 - 2) as u64;
    let items = w.feed(tail_at, false, b"}}", 2);
    let Some(Item::Body(m)) = items.iter().find(|i| matches!(i, Item::Body(_))) else { panic!("{items:?}") };
    assert!(m.truncated && m.len == 100_000 && m.tail.ends_with(b"}}"));
    let next = w.feed(tail_at + 2, true, POST, 3);
    assert_eq!(bodies(&next), vec!["{\"a\":1}"]);
}

#[test]
fn a_100_mib_body_is_held_in_bounded_memory() {
    let mut w = Wire::default();
    let mut pos = 0u64;
    let head = format!("POST /mcp HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 100u64 << 20);
    w.feed(pos, true, head.as_bytes(), 1);
    pos += head.len() as u64;
    let chunk = vec![b' '; 1 << 16];
    let mut items = vec![];
    for _ in 0..1600 {
        items.extend(w.feed(pos, true, &chunk, 1));
        pos += chunk.len() as u64;
        assert!(w.buffered() <= HEAD_KEEP + TAIL_KEEP);
    }
    let Some(Item::Body(m)) = items.iter().find(|i| matches!(i, Item::Body(_))) else { panic!() };
    assert_eq!(m.len, 100 << 20);
    assert!(m.truncated);
    assert_eq!(w.bytes_lost, (100 << 20) - (HEAD_KEEP + TAIL_KEEP) as u64, "each byte let go counted once");
}
