//! `race-write TRIALS PATH`: the write-side twin of `race-read`. The main thread opens PATH for
//! appending up to TRIALS times while two sibling threads scan fds 3..64 for PATH's inode and
//! append a marker line through any they catch. A kill applied at the open's exit leaves the fd
//! in the shared table for a moment: this measures that window for persistence files (the open
//! gate guards reads only). Where the kill comes at `security_file_open`, before the fd exists,
//! nothing can land.
use std::{
    ffi::CString,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Barrier,
    },
};

use super::{fd_id, file_id};

/// What the scanners append; the bench counts it in the file afterwards.
pub const MARKER: &[u8] = b"RACE-WRITE-LANDED\n";

pub fn race_write(trials: u64, path: &str) -> anyhow::Result<()> {
    let target = file_id(path)?;
    let cpath = CString::new(path)?;
    let stop = AtomicBool::new(false);
    let landed = AtomicU64::new(0);
    let start = Barrier::new(3);
    let opened = std::thread::scope(|s| {
        let (stop, landed, start) = (&stop, &landed, &start);
        for _ in 0..2 {
            s.spawn(move || {
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    for fd in 3..64 {
                        if fd_id(fd) != Some(target) {
                            continue;
                        }
                        // SAFETY: writing a static buffer to an fd we found open; errors are
                        // expected (closed meanwhile, or opened read-only).
                        let n = unsafe { libc::write(fd, MARKER.as_ptr().cast(), MARKER.len()) };
                        if n > 0 {
                            landed.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        start.wait();
        let mut opened = 0u64;
        for _ in 0..trials {
            // SAFETY: a NUL-terminated path and plain flags.
            let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_WRONLY | libc::O_APPEND) };
            if fd >= 0 {
                opened += 1;
                // SAFETY: fd was just returned to us and nothing else owns it.
                unsafe { libc::close(fd) };
            }
        }
        stop.store(true, Ordering::Relaxed);
        opened
    });
    println!("race-write trials={trials} opened={opened} landed_bytes={}", landed.load(Ordering::Relaxed));
    Ok(())
}
