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
//!
//! Through the `procfs` crate, as `procfs.rs`: its `Process` holds the process's /proc
//! directory as an fd, so smaps, pagemap and mem are all of one process even if the pid is
//! reused meanwhile.
use std::{io, os::unix::fs::FileExt};

use procfs::process::{MMPermissions, MemoryMaps, MemoryPageFlags, PageInfo, PageMap, Process};

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

/// The private writable mappings with resident pages (`maps`: from `/proc/PID/smaps`), the
/// most resident first.
fn regions(maps: &MemoryMaps) -> Vec<(u64, u64)> {
    let wanted = MMPermissions::READ | MMPermissions::WRITE | MMPermissions::PRIVATE;
    let mut out: Vec<(u64, u64, u64)> = maps
        .iter()
        .filter(|m| m.perms.contains(wanted))
        .filter_map(|m| {
            let rss = m.extension.map.get("Rss").copied().unwrap_or(0);
            (rss > 0).then_some((rss, m.address.0, m.address.1))
        })
        .collect();
    out.sort_by_key(|&(rss, start, _)| (std::cmp::Reverse(rss), start));
    out.into_iter().map(|(_, a, b)| (a, b)).collect()
}

/// The runs of resident pages of `[start, end)` from the process's `pagemap`.
fn resident(start: u64, end: u64, page: u64, pagemap: &mut PageMap) -> Vec<(u64, u64)> {
    runs(start, end, page, pagemap.get_range_info((start / page) as usize..(end / page) as usize))
}

/// The runs of consecutive present pages among `pages`, the pagemap entries of `[start, end)`.
/// A range whose entries could not be read is taken whole.
fn runs(start: u64, end: u64, page: u64, pages: procfs::ProcResult<Vec<PageInfo>>) -> Vec<(u64, u64)> {
    let Ok(pages) = pages else { return vec![(start, end)] };
    let present = pages.iter().map(|p| matches!(p, PageInfo::MemoryPage(f) if f.contains(MemoryPageFlags::PRESENT)));
    let mut runs: Vec<(u64, u64)> = vec![];
    for (at, _) in (0..).map(|i| start + i * page).zip(present).filter(|&(_, p)| p) {
        match runs.last_mut() {
            Some(r) if r.1 == at => r.1 = at + page,
            _ => runs.push((at, at + page)),
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
    let p = Process::new(i32::try_from(pid).map_err(io::Error::other)?).map_err(io::Error::other)?;
    let maps = p.smaps().map_err(io::Error::other)?;
    let mem = p.mem().map_err(io::Error::other)?;
    let mut pagemap = p.pagemap().map_err(io::Error::other)?;
    let page = procfs::page_size();
    let runs = regions(&maps).into_iter().flat_map(|(a, b)| resident(a, b, page, &mut pagemap));
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
        let maps = <MemoryMaps as procfs::FromBufRead>::from_buf_read(smaps.as_bytes()).unwrap();
        assert_eq!(regions(&maps), vec![(0x7ffe7c44b000, 0x7ffe7c46c000), (0xc000000000, 0xc000800000)], "the most resident first");
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
        // Pages 0x10, 0x11, 0x13 of 0x10..0x15 present (page size 0x1000); 7: other bits.
        let entry = |present: bool| PageInfo::parse_info(if present { MemoryPageFlags::PRESENT.bits() | 7 } else { 7 });
        let pages = [true, true, false, true, false].map(entry).to_vec();
        assert_eq!(runs(0x10000, 0x15000, 0x1000, Ok(pages)), vec![(0x10000, 0x12000), (0x13000, 0x14000)]);
        let broken = Err(procfs::ProcError::Other("EIO".into()));
        assert_eq!(runs(0x10000, 0x15000, 0x1000, broken), vec![(0x10000, 0x15000)], "taken whole");
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
