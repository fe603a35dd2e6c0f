//! Key agents' sockets by name (`AGENT_SOCKETS`): a socket a `kernel.sockets` pattern names
//! (`/run/user/*/openssh_agent`, `/tmp/ssh-*/agent.*`) is killed at the connect by its inode
//! once a plan has seen it; an agent started later made its socket before the plan could,
//! and a server waiting for it connected first (through a link of its own, whose name no rule
//! matches) and kept the connection. So the kernel also judges the socket the connect reached
//! by its own name and its directory's (the dentry's, whatever name reached it), against the
//! last two parts of each pattern.

/// Bytes of each part (directory, name) kept: the first 31 and a NUL. A longer name is cut
/// there by the kernel's read, so it never equals a literal part and may still start with one.
pub const SOCK_PART_CAP: usize = 32;

/// Entries of `AGENT_SOCKETS`; the first with policy 0 ends the list.
pub const SOCK_NAMES_MAX: u32 = 32;

/// How a part is compared: any, the literal bytes and the NUL after them, or the bytes only
/// (a pattern part that ends with its one `*`).
pub mod sock_part {
    pub const ANY: u8 = 0;
    pub const EXACT: u8 = 1;
    pub const PREFIX: u8 = 2;
}

/// A pattern's last two parts, and the `PROTECTED` value a socket they match is killed under
/// (`protect::KILL_CONNECT` with its rule's slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockName {
    pub dir: [u8; SOCK_PART_CAP],
    pub name: [u8; SOCK_PART_CAP],
    pub dir_len: u8,
    pub dir_how: u8,
    pub name_len: u8,
    pub name_how: u8,
    pub policy: u32,
}
const _: () = assert!(core::mem::size_of::<SockName>() == 72);

impl Default for SockName {
    fn default() -> Self {
        SockName { dir: [0; SOCK_PART_CAP], name: [0; SOCK_PART_CAP], dir_len: 0, dir_how: sock_part::ANY, name_len: 0, name_how: sock_part::ANY, policy: 0 }
    }
}

/// The names of the socket a connect reached, NUL-padded as the kernel reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockParts {
    pub dir: [u8; SOCK_PART_CAP],
    pub name: [u8; SOCK_PART_CAP],
}
const _: () = assert!(core::mem::size_of::<SockParts>() == 64);

impl Default for SockParts {
    fn default() -> Self {
        SockParts { dir: [0; SOCK_PART_CAP], name: [0; SOCK_PART_CAP] }
    }
}

/// Whether `got` (NUL-padded) matches a part kept as `pat`, `len` bytes, compared `how`.
/// Bounded by `SOCK_PART_CAP`, as the verifier wants; `pat[len]` is the NUL an exact part
/// compares too (`len` < `SOCK_PART_CAP`).
#[inline(always)]
fn part_matches(pat: &[u8; SOCK_PART_CAP], len: u8, how: u8, got: &[u8; SOCK_PART_CAP]) -> bool {
    let n = match how {
        sock_part::EXACT => len as usize + 1,
        sock_part::PREFIX => len as usize,
        _ => return true,
    };
    let mut i = 0;
    while i < SOCK_PART_CAP {
        if i >= n {
            break;
        }
        if pat[i] != got[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl SockName {
    #[inline(always)]
    pub fn matches(&self, got: &SockParts) -> bool {
        part_matches(&self.name, self.name_len, self.name_how, &got.name) && part_matches(&self.dir, self.dir_len, self.dir_how, &got.dir)
    }

    /// The last two parts of `pattern` (a `kernel.sockets` glob), with `policy`. A part that is
    /// `*` or `~` (the directory is any user's home) compares as any; one with a single `*` at
    /// its end as a prefix; a literal one exactly. None when the name cannot be told this way
    /// (a `*` elsewhere, `?`, `[`, a part over 30 bytes, or nothing literal in either part):
    /// its sockets are killed by inode only, once a plan has seen them.
    pub fn of_pattern(pattern: &str, policy: u32) -> Option<SockName> {
        let mut parts = pattern.rsplit('/');
        let name = parts.next().filter(|n| !n.is_empty())?;
        let dir = parts.next().unwrap_or("*");
        let mut s = SockName { policy, ..Default::default() };
        (s.name_how, s.name_len) = compile_part(name, &mut s.name)?;
        (s.dir_how, s.dir_len) = match dir {
            "~" | "" => (sock_part::ANY, 0),
            d => compile_part(d, &mut s.dir)?,
        };
        // Every socket of every directory: not a name at all.
        if s.name_how == sock_part::ANY && s.dir_how == sock_part::ANY {
            return None;
        }
        Some(s)
    }
}

/// `part` into `out`: (how, length), or None if it cannot be compared this way. A literal
/// stops at 30 bytes: the kernel cuts a longer name at 31, which then equals none.
fn compile_part(part: &str, out: &mut [u8; SOCK_PART_CAP]) -> Option<(u8, u8)> {
    if part == "*" {
        return Some((sock_part::ANY, 0));
    }
    let (lit, how) = match part.strip_suffix('*') {
        Some(l) => (l, sock_part::PREFIX),
        None => (part, sock_part::EXACT),
    };
    if lit.is_empty() || lit.len() > SOCK_PART_CAP - 2 || lit.contains(['*', '?', '[', ']', '{', '}', '\\']) {
        return None;
    }
    out[..lit.len()].copy_from_slice(lit.as_bytes());
    Some((how, lit.len() as u8))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    fn parts(dir: &str, name: &str) -> SockParts {
        let mut p = SockParts::default();
        let (d, n) = (dir.as_bytes(), name.as_bytes());
        p.dir[..d.len().min(31)].copy_from_slice(&d[..d.len().min(31)]);
        p.name[..n.len().min(31)].copy_from_slice(&n[..n.len().min(31)]);
        p
    }

    fn m(pattern: &str, dir: &str, name: &str) -> bool {
        SockName::of_pattern(pattern, 1).unwrap_or_else(|| panic!("{pattern}")).matches(&parts(dir, name))
    }

    #[test]
    fn the_shipped_agent_patterns_match_their_sockets_by_the_last_two_names() {
        assert!(m("/tmp/ssh-*/agent.*", "ssh-XXXXq5cL", "agent.1234"));
        assert!(!m("/tmp/ssh-*/agent.*", "ssh-XXXXq5cL", "notes"));
        assert!(!m("/tmp/ssh-*/agent.*", "tmp", "agent.1234"));
        assert!(m("/run/user/*/openssh_agent", "1000", "openssh_agent"));
        assert!(m("/run/user/*/openssh_agent", "anything", "openssh_agent"));
        assert!(!m("/run/user/*/openssh_agent", "1000", "openssh_agent2"));
        assert!(!m("/run/user/*/openssh_agent", "1000", "openssh_agen"));
        assert!(m("/run/user/*/gcr/ssh", "gcr", "ssh"));
        assert!(!m("/run/user/*/gcr/ssh", "keyring2", "ssh"));
        assert!(m("/run/user/*/gnupg/S.gpg-agent*", "gnupg", "S.gpg-agent.ssh"));
        assert!(m("~/.gnupg/S.gpg-agent*", ".gnupg", "S.gpg-agent"));
        assert!(m("~/.1password/agent.sock", ".1password", "agent.sock"));
        assert!(m("~/.bitwarden-ssh-agent.sock", "alice", ".bitwarden-ssh-agent.sock"));
        assert!(m("~/.ssh/agent/*", "agent", "s.abc"));
        assert!(!m("~/.ssh/agent/*", "run", "s.abc"));
        assert!(!m("/run/user/*/openssh_agent", "1000", "bus"));
    }

    #[test]
    fn what_the_names_cannot_tell_is_left_to_the_inode() {
        assert_eq!(SockName::of_pattern("/run/*.sock", 1), None, "a * before a literal end");
        assert_eq!(SockName::of_pattern("/run/x/*", 1).map(|s| s.name_how), Some(sock_part::ANY));
        assert_eq!(SockName::of_pattern("/run/*/*", 1), None, "every socket of any directory");
        assert_eq!(SockName::of_pattern("/run/a/", 1), None);
        assert_eq!(SockName::of_pattern(&format!("/run/{}", "n".repeat(31)), 1), None, "longer than a part");
        // A name the kernel's read cut at 31 bytes equals no literal part (30 at most).
        assert!(!m(&format!("/run/d/{}", "n".repeat(30)), "d", &"n".repeat(40)));
        assert!(m(&format!("/run/d/{}", "n".repeat(30)), "d", &"n".repeat(30)));
        assert!(m(&format!("/run/d/{}*", "n".repeat(30)), "d", &"n".repeat(40)), "a prefix still starts it");
    }
}
