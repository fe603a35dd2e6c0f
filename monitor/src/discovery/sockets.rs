//! Servers that a client config names only by URL (`{"type": "http", "url": "http://127.0.0.1:8931/mcp"}`):
//! no exec to match, so the URL's port is matched to the socket listening on it, and that socket
//! to the process holding it.
//!
//! - The URL must point at this host: `localhost` (and `*.localhost`), 127.0.0.0/8, `::1`,
//!   `0.0.0.0`/`::` (Linux connects those to loopback), IPv4-mapped forms of these, or an address
//!   of one of the host's interfaces. Other names are not resolved: a DNS answer can point
//!   anywhere, and a lookup every tick would be a cost and a leak.
//! - Listeners come from `/proc/net/tcp` and `tcp6` (the daemon's network namespace) in LISTEN
//!   state. One bound to the URL's address wins over a wildcard (`0.0.0.0`, `::`); a dual-stack
//!   `::` listener counts for IPv4 too (procfs does not show IPV6_V6ONLY).
//! - The listener's inode is looked up in every process's `/proc/PID/fd` (`socket:[INODE]`). A
//!   server that forked workers after listen has them all holding it: the one whose parent does
//!   not hold it is taken (its workers are its descendants and are tracked with it). pid 1
//!   (socket activation) and the daemon are never taken.
//!
//! Whatever listens there is taken for the configured server: the config says that is where the
//! server is. To keep one user's config from putting another user's service under watch (and
//! under kill rules), a user's entry only takes a listener created by, or a process running as,
//! that user; host-wide configs and root's take any.
use std::{
    cell::OnceCell,
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use procfs::{
    net::{TcpNetEntry, TcpState},
    process::FDTarget,
};

use super::clients::ConfiguredServer;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("{0:?} is not an http:// or https:// URL")]
    NotHttp(String),
    #[error("{0:?} has no usable host")]
    BadHost(String),
    #[error("{0:?} has a bad port")]
    BadPort(String),
    #[error("{0} is not this host")]
    NotLocal(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    #[error("reading {table}: {source}")]
    Table { table: &'static str, source: procfs::ProcError },
}

/// The host part of a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// Lower-cased.
    Name(String),
}

/// Host and port of an `http`/`https` URL (port defaulting by scheme). Unix-socket URLs
/// (`http+unix://`) are not http.
pub fn parse_url(url: &str) -> Result<(Host, u16), UrlError> {
    let bad_host = || UrlError::BadHost(url.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(|| UrlError::NotHttp(url.to_string()))?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(UrlError::NotHttp(url.to_string())),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(bad_host)?;
        let port = if after.is_empty() { None } else { Some(after.strip_prefix(':').ok_or_else(bad_host)?) };
        // A zone (`fe80::1%25eth0`) names the interface, not the address.
        let h = h.split('%').next().unwrap_or(h);
        (Host::Ip(IpAddr::V6(h.parse().map_err(|_| bad_host())?)), port)
    } else {
        let (h, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if h.is_empty() || h.contains(':') {
            return Err(bad_host());
        }
        (h.parse::<Ipv4Addr>().map(|a| Host::Ip(IpAddr::V4(a))).unwrap_or_else(|_| Host::Name(h.to_ascii_lowercase())), port)
    };
    let port = match port {
        None | Some("") => default,
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| UrlError::BadPort(url.to_string()))?,
    };
    Ok((host, port))
}

/// The addresses of this host a client reaches through `host`, in the order it would try them.
/// `own`: the host's interface addresses, asked for only when the host is an address that is not
/// loopback.
pub fn local_addrs(host: &Host, own: impl FnOnce() -> Vec<IpAddr>) -> Result<Vec<IpAddr>, UrlError> {
    match host {
        Host::Name(n) => {
            let n = n.strip_suffix('.').unwrap_or(n);
            if n == "localhost" || n.ends_with(".localhost") {
                Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)])
            } else {
                Err(UrlError::NotLocal(n.to_string()))
            }
        }
        Host::Ip(ip) => {
            let ip = match ip.to_canonical() {
                IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                a => a,
            };
            if ip.is_loopback() || own().iter().any(|a| a.to_canonical() == ip) {
                Ok(vec![ip])
            } else {
                Err(UrlError::NotLocal(ip.to_string()))
            }
        }
    }
}

/// A listening TCP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub inode: u64,
    /// Who created it.
    pub uid: u32,
}

/// The LISTEN entries of a TCP table. Inode 0 is a kernel socket (nfsd, say): no process has it.
pub fn listening(entries: Vec<TcpNetEntry>) -> impl Iterator<Item = Listener> {
    entries
        .into_iter()
        .filter(|e| matches!(e.state, TcpState::Listen) && e.inode != 0)
        .map(|e| Listener { addr: e.local_address, inode: e.inode, uid: e.uid })
}

/// Every listening TCP socket of the daemon's network namespace.
pub fn read_listeners() -> Result<Vec<Listener>, SocketsError> {
    let mut out: Vec<Listener> = listening(procfs::net::tcp().map_err(|source| SocketsError::Table { table: "/proc/net/tcp", source })?).collect();
    match procfs::net::tcp6() {
        Ok(v6) => out.extend(listening(v6)),
        // A kernel without IPv6 has no tcp6 table.
        Err(procfs::ProcError::NotFound(_)) => {}
        Err(source) => return Err(SocketsError::Table { table: "/proc/net/tcp6", source }),
    }
    Ok(out)
}

/// Whether a listener bound to `bound` takes connections to `to`, and how specifically:
/// 0 bound to that address, 1 the wildcard of its family, 2 a dual-stack `::` for IPv4.
fn reach(bound: IpAddr, to: IpAddr) -> Option<u8> {
    let bound = bound.to_canonical();
    if bound == to {
        return Some(0);
    }
    match (bound, to) {
        (IpAddr::V4(b), IpAddr::V4(_)) if b.is_unspecified() => Some(1),
        (IpAddr::V6(b), IpAddr::V6(_)) if b.is_unspecified() => Some(1),
        (IpAddr::V6(b), IpAddr::V4(_)) if b.is_unspecified() => Some(2),
        _ => None,
    }
}

/// The listener a client connecting to `addrs` (tried in order) on `port` reaches.
pub fn listener_for<'a>(addrs: &[IpAddr], port: u16, listeners: &'a [Listener]) -> Option<&'a Listener> {
    addrs.iter().find_map(|&to| {
        listeners
            .iter()
            .filter(|l| l.addr.port() == port)
            .filter_map(|l| Some((reach(l.addr.ip(), to)?, l)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, l)| l)
    })
}

/// Processes (tgids, with their parent) that hold socket `inode`.
pub fn holders(inode: u64) -> Vec<(u32, u32)> {
    let Ok(all) = procfs::process::all_processes() else { return vec![] };
    all.flatten()
        .filter(|p| p.fd().is_ok_and(|mut fds| fds.any(|fd| fd.is_ok_and(|fd| matches!(fd.target, FDTarget::Socket(i) if i == inode)))))
        .filter_map(|p| Some((p.pid() as u32, p.stat().ok()?.ppid as u32)))
        .collect()
}

/// The process a listener belongs to: among its holders, one whose parent does not hold it
/// (the lowest pid if several). Never pid 1 nor `me`.
pub fn owner(holders: &[(u32, u32)], me: u32) -> Option<u32> {
    let hs: Vec<&(u32, u32)> = holders.iter().filter(|(p, _)| *p != 1 && *p != me).collect();
    hs.iter().filter(|(_, pp)| !hs.iter().any(|(p, _)| p == pp)).map(|(p, _)| *p).min()
}

/// May an entry from the config of `config_uid` (None: host-wide) take this listener?
pub fn allowed(config_uid: Option<u32>, socket_uid: u32, process_uid: Option<u32>) -> bool {
    match config_uid {
        None | Some(0) => true,
        Some(u) => socket_uid == u || process_uid == Some(u),
    }
}

/// The host's interface addresses (getifaddrs).
pub fn interface_addrs() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs only writes the head of a list it allocates into `head`; the list is
    // freed below with freeifaddrs, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return vec![];
    }
    let mut out = vec![];
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr at least as large as its
            // family's struct; the family is read first and decides the cast.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in (see above).
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6 (see above).
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and no reference into it outlives this.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// A URL entry matched to the process listening on its URL.
#[derive(Debug)]
pub struct UrlMatch<'a> {
    pub server: &'a ConfiguredServer,
    pub pid: u32,
    pub listener: SocketAddr,
}

/// One configured entry: its file, name and URL.
type EntryKey = (PathBuf, String, String);

/// URL entries and what their listeners were last matched to, so that a scan costs two table
/// reads when nothing changed, and the fd walk runs only for a listener not seen before (a server
/// that started, or restarted: a new socket).
#[derive(Default)]
pub struct UrlWatch {
    /// Per entry: the listener's inode, and the process taken for it (None: declined).
    seen: HashMap<EntryKey, (u64, Option<u32>)>,
    /// Entries already logged as not local (once each, not every tick).
    not_local: HashSet<EntryKey>,
}

fn key(s: &ConfiguredServer) -> EntryKey {
    (s.config.clone(), s.name.clone(), s.url.clone().unwrap_or_default())
}

impl UrlWatch {
    /// The entries that point at this host (others are logged once, at debug, and skipped).
    fn local<'a>(&mut self, servers: impl Iterator<Item = &'a ConfiguredServer>) -> Vec<(&'a ConfiguredServer, Vec<IpAddr>, u16)> {
        let own = OnceCell::new();
        let mut not_local = HashSet::new();
        let mut out = vec![];
        for s in servers {
            let Some(url) = s.url.as_deref() else { continue };
            match parse_url(url).and_then(|(host, port)| Ok((local_addrs(&host, || own.get_or_init(interface_addrs).clone())?, port))) {
                Ok((addrs, port)) => out.push((s, addrs, port)),
                Err(e) => {
                    if !self.not_local.contains(&key(s)) {
                        tracing::debug!("discovery: {} in {}: not matched to a local listener: {e}", s.name, s.config.display());
                    }
                    not_local.insert(key(s));
                }
            }
        }
        self.not_local = not_local;
        out
    }

    /// Entries whose listener is new since the last scan, matched to its process. `tracked`:
    /// whether a pid is under watch (a process taken earlier that is no longer is taken again).
    pub fn scan<'a>(&mut self, servers: impl Iterator<Item = &'a ConfiguredServer>, tracked: impl Fn(u32) -> bool) -> Vec<UrlMatch<'a>> {
        let local = self.local(servers);
        if local.is_empty() {
            self.seen.clear();
            return vec![];
        }
        let listeners = match read_listeners() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("discovery: URL entries not matched this time: {e}");
                return vec![];
            }
        };
        let me = std::process::id();
        let mut owners: HashMap<u64, Option<u32>> = HashMap::new();
        let mut present: HashSet<EntryKey> = HashSet::new();
        let mut out = vec![];
        for (s, addrs, port) in local {
            let key = key(s);
            let Some(l) = listener_for(&addrs, port, &listeners) else { continue };
            present.insert(key.clone());
            if let Some((inode, taken)) = self.seen.get(&key) {
                if *inode == l.inode && taken.is_none_or(&tracked) {
                    continue;
                }
            }
            let pid = *owners.entry(l.inode).or_insert_with(|| owner(&holders(l.inode), me));
            let taken = pid.filter(|&p| {
                let ok = allowed(s.uid, l.uid, super::procfs::uid_of(p));
                if !ok {
                    tracing::warn!("discovery: {} ({}) in {}: pid {p} listening on {} is another user's: not taken", s.name, s.url.as_deref().unwrap_or(""), s.config.display(), l.addr);
                }
                ok
            });
            self.seen.insert(key, (l.inode, taken));
            // A process already under watch (through `mcpmon exec`, its command line, another
            // URL entry) stays the server it is.
            if let Some(pid) = taken.filter(|&p| !tracked(p)) {
                out.push(UrlMatch { server: s, pid, listener: l.addr });
            }
        }
        // An entry whose listener went away is matched afresh when one appears.
        self.seen.retain(|k, _| present.contains(k));
        out
    }
}

#[cfg(test)]
mod tests;
