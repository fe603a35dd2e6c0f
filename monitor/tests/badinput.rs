//! Hostile or broken input on a server's stdio, and a burst of servers: the daemon keeps working
//! with bounded memory and reports what it dropped.
mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use common::daemon::{exec_cmd, Daemon, MCPMON};

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap()
}

#[test]
fn garbage_malformed_json_and_a_100mb_line_do_not_hurt() {
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&[]);
    // What start-up took (loading the programs and the kernel's BTF peaks here): the bound
    // below is on growth with the input, not on start-up.
    let base = peak_rss_kib(d.pid());
    // A "server" that reads whatever comes, in 64 KiB reads, like a real one.
    let reader = "import sys\nprint('ready', flush=True)\nwhile sys.stdin.buffer.read1(65536): pass\n";
    let python = common::python();
    let mut srv = exec_cmd(&d.socket, "junk", &["--require-monitor"], &[python, "-c", reader])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    d.expect("tracked", |v| v["kind"] == "server_tracked" && v["server"] == "junk");
    // Python is up and about to read (its own word, not a guess at how long that takes).
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(srv.stdout.take().unwrap()), &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let mut w = srv.stdin.take().unwrap();
    w.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\n").unwrap(); // malformed
    w.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"t\",\"arguments\":{}}}\n").unwrap();
    let mut garbage = vec![0u8; 256 * 1024];
    let mut x: u32 = 12345;
    for b in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    w.write_all(&garbage).unwrap();
    w.write_all(b"\n").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    w.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"huge\",\"arguments\":{\"blob\":\"").unwrap();
    for _ in 0..100 {
        w.write_all(&chunk).unwrap(); // a 100 MiB line
    }
    w.write_all(b"\"}}}\n").unwrap();
    // Records of the flood the ring could not hold are lost (and counted); framing must recover
    // for the next message whatever was lost. Wait until the daemon has handled the huge call,
    // so this one does not land in the same overflowing ring.
    d.expect("the huge call, handled", |v| v["kind"] == "tool_call_start" && v["tool"] == "huge");
    w.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"after\",\"arguments\":{\"ok\":true}}}\n").unwrap();
    drop(w);
    srv.wait().unwrap();

    // Still parsing correctly after all that: the call after the huge line is seen whole.
    let after = d.expect("call after the huge line", |v| v["kind"] == "tool_call_start" && v["tool"] == "after");
    assert_eq!(after["arguments"]["ok"], true);
    let huge = d.expect("the huge call, truncated", |v| v["kind"] == "tool_call_start" && v["tool"] == "huge");
    assert_eq!(huge["arguments_truncated"], true);
    d.expect("the unanswered calls are closed when the server goes", |v| v["kind"] == "tool_call" && v["outcome"] == "unanswered");
    assert!(monitor::control::client::ping(&d.socket, Duration::from_secs(2)).is_ok(), "daemon alive");
    // 100 MiB went through the daemon; its memory did not grow with it.
    let peak = peak_rss_kib(d.pid());
    assert!(peak < base + 32 * 1024, "peak RSS {peak} KiB (after start-up: {base} KiB)");
    let (_, records) = d.stop_with_records();
    let stats = records.iter().find(|v| v["kind"] == "stats").unwrap();
    let mcp = &stats["mcp"];
    assert!(mcp["invalid_messages"].as_u64().unwrap() >= 2, "malformed and binary lines reported: {stats}");
    assert!(mcp["truncated_messages"].as_u64().unwrap() >= 1, "{stats}");
    // Every byte of the 100 MiB is either parsed, counted as not captured (gaps, cut messages) or
    // in a ring-buffer record the kernel counted as lost (at most one 4 KiB chunk each).
    let accounted = mcp["bytes_not_captured"].as_u64().unwrap() + 4096 * stats["lost"]["ringbuf_full"].as_u64().unwrap();
    assert!(accounted >= 99 << 20, "what was dropped is counted: {stats}");
    let invalid = records.iter().filter(|v| v["kind"] == "mcp_invalid").count();
    assert!(invalid >= 2, "each dropped message is reported");
}

#[test]
fn a_thousand_servers_starting_at_once() {
    if !common::can_load_ebpf() {
        return;
    }
    let d = Daemon::start(&[]);
    let base = peak_rss_kib(d.pid());
    // 1000 `mcpmon exec` at once, each failing closed if the daemon cannot take it in time.
    let script = format!(
        "fails=0; for i in $(seq 1 1000); do {MCPMON} exec --name s$i --require-monitor --timeout-ms 60000 --socket {} -- /bin/sleep 2 </dev/null & done; \
         for j in $(jobs -p); do wait $j || fails=$((fails+1)); done; echo $fails",
        d.socket.display()
    );
    let out = Command::new("/bin/bash").args(["-c", &script]).output().unwrap();
    let fails: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(fails, 0, "every server was tracked before it started: {}", String::from_utf8_lossy(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let recs = d.records();
        let gone = recs.iter().filter(|v| v["kind"] == "server_gone").count();
        if gone == 1000 {
            assert_eq!(recs.iter().filter(|v| v["kind"] == "server_tracked").count(), 1000);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{gone} of 1000 servers reported gone");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(peak_rss_kib(d.pid()) < base + 32 * 1024, "peak RSS {} KiB (after start-up: {base} KiB)", peak_rss_kib(d.pid()));
    let (_, records) = d.stop_with_records();
    let stats = records.iter().find(|v| v["kind"] == "stats").unwrap();
    // Under this burst the ring may overflow: every exit is then either an event or a lost record
    // that the kernel counted, and the daemon caught up with the process's death.
    let exits = stats["events"]["exit"].as_u64().unwrap() + stats["exits_reconciled"].as_u64().unwrap();
    assert!(exits >= 1000, "{stats}");
    if stats["exits_reconciled"].as_u64().unwrap() > 0 {
        assert!(stats["lost"]["ringbuf_full"].as_u64().unwrap() > 0, "reconciled exits only after counted losses: {stats}");
    }
}
