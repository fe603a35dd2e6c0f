//! A process's own memory, read through `/proc/PID/mem`: whether it holds a byte string. For
//! facts the process knows and tells no one else, such as the id of the container a `docker
//! run` CLI created (the engine's reply named it, and the CLI keeps it to attach, start, wait
//! and remove): no record of the engine names the CLI.
//!
//! Only the resident pages of the private writable mappings are read (heap, anonymous memory,
//! stacks), those with the most resident memory first: strings a process received live there,
//! and a Go program's heap comes first. Which pages are resident comes from
//! `/proc/PID/pagemap`: reading a page never touched would map one into the process (and cost a
//! fault per page of its thread stacks' reserve). The daemon reads them as root with
//! `CAP_SYS_PTRACE` (`deploy/mcpmon.service` keeps it); the process is not stopped.
use std::{fs::File, io, os::unix::fs::FileExt};

/// Bytes read per call; a needle spanning two reads is found through the carried tail.
const CHUNK: usize = 1 << 20;

/// What `holds` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Yes,
    No,
    /// More resident memory than the budget: the rest was not read.
    OverBudget,
}

/// One mapping of `/proc/PID/smaps`: its range, whether to read it.
struct Region {
    start: u64,
    end: u64,
    wanted: bool,
}

/// The private writable mappings with resident pages, from the text of `/proc/PID/smaps`, the
/// most resident first.
fn regions(smaps: &str) -> Vec<(u64, u64)> {
    let mut out = vec![];
    let mut cur: Option<Region> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
            let perms = f.next().unwrap_or("");
            // [vvar] and [vsyscall] are not the process's data, and reading them fails.
            let special = line.ends_with("[vvar]") || line.ends_with("[vsyscall]") || line.ends_with("[vvar_vclock]");
            cur = Some(Region { start, end, wanted: perms.starts_with("rw") && perms.ends_with('p') && !special });
        } else if first == "Rss:" {
            let kb = f.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            if let Some(r) = cur.take().filter(|r| r.wanted && kb > 0) {
                out.push((kb, r.start, r.end));
            }
        }
    }
    out.sort_by_key(|&(kb, start, _)| (std::cmp::Reverse(kb), start));
    out.into_iter().map(|(_, a, b)| (a, b)).collect()
}

/// `pagemap`'s bit for a page present in memory.
const PRESENT: u64 = 1 << 63;

/// The runs of resident pages of `[start, end)`, from `/proc/PID/pagemap` read through
/// `read_at` (8 bytes per page). A range whose entries cannot be read is taken whole.
fn resident(start: u64, end: u64, page: u64, read_at: &impl Fn(&mut [u8], u64) -> io::Result<usize>) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = vec![];
    let mut entries = vec![0u8; 8 * 4096];
    let mut at = start;
    while at < end {
        let pages = ((end - at) / page).clamp(1, 4096) as usize;
        let Ok(n) = read_at(&mut entries[..pages * 8], at / page * 8) else { return vec![(start, end)] };
        if n < 8 {
            return vec![(start, end)];
        }
        for e in entries[..n / 8 * 8].chunks_exact(8) {
            if u64::from_le_bytes(e.try_into().expect("8 bytes")) & PRESENT != 0 {
                match runs.last_mut() {
                    Some(r) if r.1 == at => r.1 = at + page,
                    _ => runs.push((at, at + page)),
                }
            }
            at += page;
        }
    }
    runs
}

/// Whether process `pid`'s memory holds `needle`, reading at most `budget` bytes. Err: its
/// memory could not be opened (gone, or not the daemon's to read).
pub fn holds(pid: u32, needle: &[u8], budget: usize) -> io::Result<Found> {
    if needle.is_empty() || needle.len() > CHUNK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "needle length"));
    }
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))?;
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let runs = regions(&smaps).into_iter().flat_map(|(a, b)| resident(a, b, page, &|buf: &mut [u8], at| pagemap.read_at(buf, at)));
    Ok(search(runs, needle, budget, |buf, at| mem.read_at(buf, at)))
}

/// `holds` over the address ranges `runs`, read through `read_at(buf, address)`.
fn search(runs: impl IntoIterator<Item = (u64, u64)>, needle: &[u8], budget: usize, read_at: impl Fn(&mut [u8], u64) -> io::Result<usize>) -> Found {
    let finder = memchr::memmem::Finder::new(needle);
    let mut buf = vec![0u8; CHUNK + needle.len()];
    let mut spent = 0usize;
    for (start, end) in runs {
        // `carry` bytes at the front of `buf` are the previous read's tail.
        let mut carry = 0usize;
        let mut at = start;
        while at < end {
            if spent >= budget {
                return Found::OverBudget;
            }
            let want = CHUNK.min((end - at) as usize);
            // A page that cannot be read (a guard page, a mapping gone meanwhile) ends the run.
            let Ok(n) = read_at(&mut buf[carry..carry + want], at) else { break };
            if n == 0 {
                break;
            }
            spent += n;
            let filled = carry + n;
            if finder.find(&buf[..filled]).is_some() {
                return Found::Yes;
            }
            carry = (needle.len() - 1).min(filled);
            buf.copy_within(filled - carry..filled, 0);
            at += n as u64;
        }
    }
    Found::No
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_writable_resident_mappings_are_read_most_resident_first() {
        let smaps = "\
c000000000-c000800000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                 412 kB
55f23132c000-55f2313c1000 r--p 00000000 fd:01 1234                       /usr/bin/docker
Size:                596 kB
Rss:                 596 kB
7fde71efd000-7fde726fd000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                   0 kB
7fde80000000-7fde80001000 rw-s 00000000 00:05 99                         /dev/shm/x
Size:                  4 kB
Rss:                   4 kB
7ffe7c44b000-7ffe7c46c000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                 900 kB
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Rss:                   0 kB
";
        assert_eq!(regions(smaps), vec![(0x7ffe7c44b000, 0x7ffe7c46c000), (0xc000000000, 0xc000800000)], "the most resident first");
    }

    /// Memory of three chunks at 0x1000, read as the kernel would.
    fn memory(needle: &[u8], at: usize) -> impl Fn(&mut [u8], u64) -> io::Result<usize> {
        let mut m = vec![b'x'; 3 * CHUNK];
        m[at..at + needle.len()].copy_from_slice(needle);
        move |buf: &mut [u8], addr: u64| {
            let off = (addr - 0x1000) as usize;
            let n = buf.len().min(m.len() - off);
            buf[..n].copy_from_slice(&m[off..off + n]);
            Ok(n)
        }
    }

    #[test]
    fn a_needle_across_two_reads_is_found() {
        let id = [b'a'; 64];
        let whole = [(0x1000, 0x1000 + 3 * CHUNK as u64)];
        for at in [0, CHUNK - 1, CHUNK - 63, CHUNK - 32, 2 * CHUNK - 1, 3 * CHUNK - 64] {
            assert_eq!(search(whole, &id, usize::MAX, memory(&id, at)), Found::Yes, "at {at}");
        }
        // Not in the regions read, or past the budget.
        let first = [(0x1000, 0x1000 + CHUNK as u64)];
        assert_eq!(search(first, &id, usize::MAX, memory(&id, CHUNK + 5)), Found::No);
        assert_eq!(search(whole, &id, CHUNK, memory(&id, 2 * CHUNK)), Found::OverBudget);
        // A region that cannot be read is skipped, not the end of the search.
        let fails = |buf: &mut [u8], addr: u64| if addr < 0x1000 { Err(io::Error::other("EIO")) } else { memory(&id, 9)(buf, addr) };
        assert_eq!(search([(0, 0x1000), whole[0]], &id, usize::MAX, fails), Found::Yes);
    }

    #[test]
    fn resident_pages_are_read_in_runs() {
        // Pages 0x10, 0x11, 0x13 of 0x10..0x15 present (page size 0x1000).
        let map = |buf: &mut [u8], off: u64| {
            for (i, e) in buf.chunks_exact_mut(8).enumerate() {
                let page = off / 8 + i as u64;
                e.copy_from_slice(&if [0x10, 0x11, 0x13].contains(&page) { PRESENT | 7 } else { 7 }.to_le_bytes());
            }
            Ok(buf.len())
        };
        assert_eq!(resident(0x10000, 0x15000, 0x1000, &map), vec![(0x10000, 0x12000), (0x13000, 0x14000)]);
        let broken = |_: &mut [u8], _: u64| Err(io::Error::other("EIO"));
        assert_eq!(resident(0x10000, 0x15000, 0x1000, &broken), vec![(0x10000, 0x15000)], "taken whole");
    }

    #[test]
    fn another_process_holds_what_it_was_given_and_nothing_else() {
        // The string is only in the argv (on the stack) of the shell that holds it, and made at
        // run time so that no image holds it.
        let id: String = format!("{:064x}", (std::process::id() as u128) << 64 | 0x5eed);
        let spawn = |arg: &str| std::process::Command::new("/bin/sh").args(["-c", "sleep 30; :", arg]).spawn().unwrap();
        let (mut with, mut without) = (spawn(&id), spawn("nothing"));
        std::thread::sleep(std::time::Duration::from_millis(100));
        let a = holds(with.id(), id.as_bytes(), usize::MAX).unwrap();
        let b = holds(without.id(), id.as_bytes(), usize::MAX).unwrap();
        for c in [&mut with, &mut without] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!((a, b), (Found::Yes, Found::No));
    }
}
