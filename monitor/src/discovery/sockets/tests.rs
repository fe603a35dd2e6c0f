use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use procfs::{net::TcpNetEntries, ExplicitSystemInfo, FromBufReadSI};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn urls_give_host_and_port_by_scheme() {
    let name = |n: &str| Host::Name(n.into());
    assert_eq!(parse_url("http://127.0.0.1:8931/mcp"), Ok((Host::Ip(ip("127.0.0.1")), 8931)));
    assert_eq!(parse_url("http://localhost/mcp"), Ok((name("localhost"), 80)));
    assert_eq!(parse_url("HTTPS://LocalHost"), Ok((name("localhost"), 443)));
    assert_eq!(parse_url("http://[::1]:3000/mcp?x=1"), Ok((Host::Ip(ip("::1")), 3000)));
    assert_eq!(parse_url("https://[::1]/sse"), Ok((Host::Ip(ip("::1")), 443)));
    assert_eq!(parse_url("http://[fe80::1%25eth0]:81/"), Ok((Host::Ip(ip("fe80::1")), 81)));
    assert_eq!(parse_url("http://user:pw@127.0.0.2:9000"), Ok((Host::Ip(ip("127.0.0.2")), 9000)));
    assert_eq!(parse_url("http://h:/x#f"), Ok((name("h"), 80)));
    assert_eq!(parse_url("http://a.example.com:8080/mcp"), Ok((name("a.example.com"), 8080)));
    assert!(matches!(parse_url("ws://127.0.0.1:1/"), Err(UrlError::NotHttp(_))));
    assert!(matches!(parse_url("http+unix://%2Frun%2Fmcp.sock/mcp"), Err(UrlError::NotHttp(_))));
    assert!(matches!(parse_url("127.0.0.1:80"), Err(UrlError::NotHttp(_))));
    assert!(matches!(parse_url("http://127.0.0.1:99999/"), Err(UrlError::BadPort(_))));
    assert!(matches!(parse_url("http://127.0.0.1:0/"), Err(UrlError::BadPort(_))));
    assert!(matches!(parse_url("http://127.0.0.1:x/"), Err(UrlError::BadPort(_))));
    assert!(matches!(parse_url("http:///mcp"), Err(UrlError::BadHost(_))));
    assert!(matches!(parse_url("http://[::1/"), Err(UrlError::BadHost(_))));
    assert!(matches!(parse_url("http://::1:80/"), Err(UrlError::BadHost(_))));
}

#[test]
fn only_this_host_is_local() {
    let own = || vec![ip("10.1.2.3"), ip("2001:db8::7")];
    let local = |u: &str| parse_url(u).and_then(|(h, _)| local_addrs(&h, own));
    let (v4, v6) = (ip("127.0.0.1"), ip("::1"));
    assert_eq!(local("http://localhost:1/"), Ok(vec![v4, v6]));
    assert_eq!(local("http://LOCALHOST.:1/"), Ok(vec![v4, v6]));
    assert_eq!(local("http://mcp.localhost:1/"), Ok(vec![v4, v6]));
    assert_eq!(local("http://127.9.8.7:1/"), Ok(vec![ip("127.9.8.7")]));
    assert_eq!(local("http://[::1]:1/"), Ok(vec![v6]));
    // Linux connects the unspecified address to loopback.
    assert_eq!(local("http://0.0.0.0:1/"), Ok(vec![v4]));
    assert_eq!(local("http://[::]:1/"), Ok(vec![v6]));
    assert_eq!(local("http://[::ffff:127.0.0.1]:1/"), Ok(vec![v4]));
    assert_eq!(local("http://10.1.2.3:1/"), Ok(vec![ip("10.1.2.3")]));
    assert_eq!(local("http://[2001:db8::7]:1/"), Ok(vec![ip("2001:db8::7")]));
    assert_eq!(local("http://[::ffff:10.1.2.3]:1/"), Ok(vec![ip("10.1.2.3")]));
    for remote in ["http://10.1.2.4:1/", "https://mcp.example.com/mcp", "http://192.0.2.1:8931/", "http://[2001:db8::8]:1/", "http://localhost.example:1/"] {
        assert!(matches!(local(remote), Err(UrlError::NotLocal(_))), "{remote}");
    }
    // Interface addresses are not even asked for when the host is a name or loopback.
    let (h, _) = parse_url("http://localhost:1/").unwrap();
    assert!(local_addrs(&h, || panic!("asked")).is_ok());
    let (h, _) = parse_url("http://127.0.0.1:1/").unwrap();
    assert!(local_addrs(&h, || panic!("asked")).is_ok());
}

/// A real /proc/net/tcp and tcp6, through the procfs crate's parser.
const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1529 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 9999 1 0000000000000000 20 4 30 10 -1
   3: 00000000:0801 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 100 0 0 10 0
";
const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   501        0 5252 1 0000000000000000 100 0 0 10 0
";

fn table(text: &str) -> Vec<Listener> {
    let si = ExplicitSystemInfo { boot_time_secs: 0, ticks_per_second: 100, page_size: 4096, is_little_endian: true };
    listening(TcpNetEntries::from_buf_read(text.as_bytes(), &si).unwrap().0).collect()
}

#[test]
fn proc_net_tables_give_listeners_only() {
    let l = |a: &str, inode, uid| Listener { addr: a.parse::<SocketAddr>().unwrap(), inode, uid };
    // Established (9999) and kernel-owned (inode 0, nfsd's 2049) sockets are left out.
    assert_eq!(table(TCP), [l("127.0.0.1:8080", 4242, 1000), l("0.0.0.0:22", 1529, 0)]);
    assert_eq!(table(TCP6), [l("[::]:3000", 5151, 0), l("[::1]:3001", 5252, 501)]);
}

#[test]
fn a_url_reaches_the_most_specific_listener() {
    let all: Vec<Listener> = [table(TCP), table(TCP6)].concat();
    let (v4, v6) = (IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST));
    let inode = |addrs: &[IpAddr], port| listener_for(addrs, port, &all).map(|l| l.inode);
    assert_eq!(inode(&[v4], 8080), Some(4242));
    assert_eq!(inode(&[v6], 8080), None, "127.0.0.1 does not take ::1");
    assert_eq!(inode(&[v4, v6], 22), Some(1529), "0.0.0.0 takes loopback");
    assert_eq!(inode(&[ip("127.0.0.5")], 22), Some(1529));
    assert_eq!(inode(&[v6], 22), None, "an IPv4 wildcard does not take ::1");
    assert_eq!(inode(&[v4], 3000), Some(5151), "a dual-stack :: takes IPv4 too");
    assert_eq!(inode(&[v6], 3000), Some(5151));
    assert_eq!(inode(&[v6], 3001), Some(5252));
    assert_eq!(inode(&[v4, v6], 3001), Some(5252), "localhost: ::1 is tried after 127.0.0.1");
    assert_eq!(inode(&[v4], 3001), None);
    assert_eq!(inode(&[v4], 2049), None, "kernel sockets are not listeners of a process");
    assert_eq!(inode(&[v4], 9), None);
    // Bound to the address beats a wildcard on the same port.
    let both = vec![
        Listener { addr: "[::]:7000".parse().unwrap(), inode: 1, uid: 0 },
        Listener { addr: "0.0.0.0:7000".parse().unwrap(), inode: 2, uid: 0 },
        Listener { addr: "[::ffff:127.0.0.1]:7000".parse().unwrap(), inode: 3, uid: 0 },
    ];
    assert_eq!(listener_for(&[v4], 7000, &both).map(|l| l.inode), Some(3));
    assert_eq!(listener_for(&[v4], 7000, &both[..2]).map(|l| l.inode), Some(2));
    assert_eq!(listener_for(&[v6], 7000, &both).map(|l| l.inode), Some(1));
}

#[test]
fn the_owner_is_the_holder_whose_parent_does_not_hold_it() {
    // A master (100, child of a shell 50) and two workers forked after listen.
    assert_eq!(owner(&[(101, 100), (100, 50), (102, 100)], 7), Some(100));
    // Socket activation: systemd holds it too, and is never taken; nor is the daemon.
    assert_eq!(owner(&[(1, 0), (300, 1)], 7), Some(300));
    assert_eq!(owner(&[(7, 1)], 7), None);
    // Two unrelated holders (an fd passed over a unix socket): the lowest pid.
    assert_eq!(owner(&[(500, 2), (400, 3)], 7), Some(400));
    assert_eq!(owner(&[], 7), None);
}

#[test]
fn a_users_entry_takes_only_that_users_listener() {
    assert!(allowed(None, 0, Some(0)), "host-wide config");
    assert!(allowed(Some(0), 1000, Some(1000)), "root's config");
    assert!(allowed(Some(1000), 1000, Some(1000)));
    assert!(allowed(Some(1000), 0, Some(1000)), "bound as root, then dropped to the user");
    assert!(!allowed(Some(1000), 0, Some(0)), "sshd on a port a user's config names");
    assert!(!allowed(Some(1000), 0, None), "gone or unreadable");
}

#[test]
fn a_live_listener_is_found_with_its_process() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let all = read_listeners().unwrap();
    let found = listener_for(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], port, &all).expect("this test's listener").clone();
    assert_eq!(found.addr, l.local_addr().unwrap());
    let me = std::process::id();
    let h = holders(found.inode);
    assert!(h.iter().any(|(p, _)| *p == me), "{h:?}");
    assert_eq!(owner(&h, 0), Some(me));
    assert_eq!(owner(&h, me), None);
    drop(l);
    // Gone by its socket inode: the port itself may be bound again at once by another test
    // running in parallel (a fresh-clone CI saw that).
    assert!(read_listeners().unwrap().iter().all(|x| x.inode != found.inode));
}

#[test]
fn interface_addresses_include_loopback() {
    let a = interface_addrs();
    assert!(a.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{a:?}");
}

/// A python process listening on `port` (0: any), and the port it got.
fn python_listener(port: u16) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut c = std::process::Command::new("python3")
        .args(["-c", &format!("import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); print(s.getsockname()[1], flush=True); sys.stdin.read()")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    (c, line.trim().parse().expect("the listener's port"))
}

fn url_entry(name: &str, url: &str, uid: Option<u32>) -> ConfiguredServer {
    ConfiguredServer {
        client: "claude-code",
        config: PathBuf::from("/h/.claude.json"),
        uid,
        name: name.into(),
        command: String::new(),
        args: vec![],
        env: Default::default(),
        cwd: None,
        url: Some(url.into()),
        transport: "http",
    }
}

#[test]
fn a_scan_takes_a_new_listener_once_and_again_after_a_restart() {
    let (mut first, port) = python_listener(0);
    let mine = my_uid();
    let entries = [
        url_entry("srv", &format!("http://localhost:{port}/mcp"), Some(mine)),
        url_entry("remote", &format!("http://192.0.2.1:{port}/mcp"), None),
        url_entry("nothing-there", "http://127.0.0.1:9/mcp", None),
        url_entry("not-mine", &format!("http://127.0.0.1:{port}/mcp"), Some(mine + 1)),
    ];
    let names = |m: &[UrlMatch]| m.iter().map(|m| (m.server.name.clone(), m.pid)).collect::<Vec<_>>();
    // Already under watch some other way: left as it is.
    assert!(UrlWatch::default().scan(entries.iter(), |p| p == first.id()).is_empty());
    let mut w = UrlWatch::default();
    let got = w.scan(entries.iter(), |_| false);
    assert_eq!(names(&got), [("srv".to_string(), first.id())]);
    assert_eq!(got[0].listener, SocketAddr::from(([127, 0, 0, 1], port)));
    // Tracked now: the next scan has nothing to do. Not tracked (the track failed): taken again.
    assert!(w.scan(entries.iter(), |p| p == first.id()).is_empty());
    assert_eq!(names(&w.scan(entries.iter(), |_| false)), [("srv".to_string(), first.id())]);
    // The server restarts on the same port: a new socket, a new process, taken again.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(w.scan(entries.iter(), |_| false).is_empty(), "nothing listens in between");
    let (mut second, again) = python_listener(port);
    assert_eq!(again, port);
    assert_eq!(names(&w.scan(entries.iter(), |p| p == first.id())), [("srv".to_string(), second.id())]);
    second.kill().unwrap();
    second.wait().unwrap();
    // No URL entry at all: nothing read.
    assert!(w.scan(std::iter::empty(), |_| false).is_empty());
}

/// This test's own uid, read from /proc (no libc call needed).
fn my_uid() -> u32 {
    crate::discovery::procfs::uid_of(std::process::id()).unwrap()
}
