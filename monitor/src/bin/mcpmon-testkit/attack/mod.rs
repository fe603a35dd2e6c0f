//! Attacker programs for the enforcement tests, run inside a watched process as
//! `mcpmon-testkit loop KIND N ARG`. Each tries to get a protected file's bytes past mcpmon by a route
//! the plain open+read victims do not take, and prints what it got, so that a test can check that
//! no secret byte leaked:
//! - `uring-read-{inline,async,openat2} 1 PATH`: open and read through io_uring, so the open never
//!   enters the openat syscall (`async` punts both requests to an io-wq worker thread);
//! - `race-read TRIALS PATH`: sibling threads grab the fd in the window between the open's
//!   fd_install and the exit hook's verdict, and read it with sendfile and copy_file_range;
//! - `create-then-open N DIR`: write a key-looking file, then read it straight back;
//! - `uring-lend 1 FILE` / `uring-borrow-read 1 PID,FD,FILE,PATH` (`uring_pass.rs`): a ring set
//!   up outside the server, taken with pidfd_getfd;
//! - `race-write TRIALS PATH` (`race_write.rs`): siblings write through the fd of a
//!   write-protected file in the window before the kill;
//! - `vm-read PID ADDR`, `vm-write PID ADDR`, `ptrace-peek PID ADDR` (`proc.rs`): reach into
//!   another process's memory, from several threads at once; `hold-secret 0 TEXT` is the victim;
//! - `sendmmsg N ADDR:PORT` (`net.rs`): a batch of datagrams in one call.
//!
//! Raw syscalls through `libc` only; the io_uring ABI is spelled out here from <linux/io_uring.h>
//! because libc does not carry it.
use std::{
    ffi::{CStr, CString},
    io::Write as _,
    mem::{size_of, MaybeUninit},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Barrier,
    },
};

use anyhow::Context as _;

mod net;
mod proc;
mod race_write;
mod uring_pass;
pub use net::sendmmsg;
pub use race_write::race_write;
pub use uring_pass::{borrow_read as uring_borrow_read, lend as uring_lend};
pub use proc::{getfd_read, hold_secret, reach};

/// Largest read any attacker does: enough for a key file.
const CHUNK: usize = 4096;

/// What create-then-open writes; tests look for it in the output.
pub const SECRET: &str = "SECRET-KEY-MATERIAL-5f3a";

// ---------------------------------------------------------------------------------------------
// uring-read

// <linux/io_uring.h> (values and layouts checked against the 6.x header with offsetof).
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_READ: u8 = 22;
const IORING_OP_OPENAT2: u8 = 28;
const IOSQE_ASYNC: u8 = 1 << 4;
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;

#[repr(C)]
#[derive(Default)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

/// One submission queue entry; each union is flattened to the member OPENAT, OPENAT2 and READ use.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    /// Read offset; for OPENAT2 the address of the `open_how`.
    off: u64,
    /// Path or buffer address.
    addr: u64,
    /// Open mode, buffer length, or `sizeof(struct open_how)`.
    len: u32,
    /// open_flags for OPENAT, rw_flags for READ.
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    file_index: u32,
    addr3: u64,
    pad: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// <linux/openat2.h> `struct open_how`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

// A layout slip here would hand the kernel garbage: fail the build instead.
const _: () = assert!(size_of::<Sqe>() == 64 && size_of::<Cqe>() == 16);
const _: () = assert!(size_of::<Params>() == 120 && size_of::<OpenHow>() == 24);

/// `uring-read-MODE 1 PATH`: io_uring OPENAT (or OPENAT2) of PATH, then READ of up to 4 KiB from
/// the fd it returns. Prints `uring open=<res> read=<res|none>`, then the bytes read. Exits 3
/// after `uring setup=<errno>` when the kernel refuses io_uring altogether.
pub fn uring_read(mode: &str, path: &str) -> anyhow::Result<()> {
    let (openat2, sqe_flags) = match mode {
        "inline" => (false, 0),
        "async" => (false, IOSQE_ASYNC),
        "openat2" => (true, 0),
        other => anyhow::bail!("uring-read mode {other}: expected inline, async or openat2"),
    };
    let cpath = CString::new(path)?;
    let ring = match Ring::setup(4) {
        Ok((fd, p)) => Ring::map(fd, p)?,
        Err(errno) => {
            println!("uring setup={errno}");
            std::io::stdout().flush()?;
            std::process::exit(3);
        }
    };
    let how = OpenHow { flags: libc::O_RDONLY as u64, mode: 0, resolve: 0 };
    let open = ring.run(open_sqe(&cpath, &how, openat2, sqe_flags))?;
    let (read, data) = if open >= 0 {
        // SAFETY: a non-negative OPENAT result is a new fd installed in our table, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(open) };
        let (res, data) = ring_read(&ring, &fd, sqe_flags)?;
        (res.to_string(), data)
    } else {
        ("none".to_string(), Vec::new())
    };
    println!("uring open={open} read={read}");
    println!("{}", String::from_utf8_lossy(&data).trim_end_matches('\n'));
    Ok(())
}

/// The OPENAT/OPENAT2 SQE for `path`, read-only, relative to the cwd. The SQE holds raw addresses
/// of `path` and `how`: the caller keeps both alive until the completion (Ring::run waits for it).
fn open_sqe(path: &CStr, how: &OpenHow, openat2: bool, flags: u8) -> Sqe {
    let mut sqe = Sqe { flags, fd: libc::AT_FDCWD, addr: path.as_ptr() as u64, user_data: 1, ..Sqe::default() };
    if openat2 {
        sqe.opcode = IORING_OP_OPENAT2;
        sqe.off = how as *const OpenHow as u64;
        sqe.len = size_of::<OpenHow>() as u32;
    } else {
        sqe.opcode = IORING_OP_OPENAT;
        sqe.op_flags = libc::O_RDONLY as u32;
    }
    sqe
}

/// IORING_OP_READ of up to CHUNK bytes at offset 0 of `fd`: the CQE's res and the bytes read.
fn ring_read(ring: &Ring, fd: &OwnedFd, flags: u8) -> anyhow::Result<(i32, Vec<u8>)> {
    let mut buf = vec![0u8; CHUNK];
    let sqe = Sqe {
        opcode: IORING_OP_READ,
        flags,
        fd: fd.as_raw_fd(),
        addr: buf.as_mut_ptr() as u64,
        len: CHUNK as u32,
        user_data: 2,
        ..Sqe::default()
    };
    // `buf` outlives the request: run() returns only after its completion.
    let res = ring.run(sqe)?;
    buf.truncate(res.max(0) as usize);
    Ok((res, buf))
}

/// A shared mapping of the ring fd, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, offset: libc::off_t) -> anyhow::Result<Self> {
        // SAFETY: a fresh shared mapping chosen by the kernel (no address hint), of a region the
        // io_uring fd defines at `offset`; the kernel checks len and offset, and we check MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        anyhow::ensure!(ptr != libc::MAP_FAILED, "mmap io_uring at {offset:#x}: {}", std::io::Error::last_os_error());
        Ok(Self { ptr: ptr.cast(), len })
    }

    /// The u32 at byte offset `off`: ring fields are shared with the kernel, so only ever touched
    /// atomically.
    fn u32_at(&self, off: u32) -> &AtomicU32 {
        let off = off as usize;
        assert!(off.is_multiple_of(4) && off + 4 <= self.len, "ring offset {off} out of the mapping");
        // SAFETY: in bounds and 4-byte aligned (asserted; the mapping is page aligned), and the
        // mapping lives as long as &self.
        unsafe { &*(self.ptr.add(off) as *const AtomicU32) }
    }

    /// Pointer to entry `idx` of a `T` array at byte offset `off`, bounds-checked.
    fn slot<T>(&self, off: u32, idx: u32) -> *mut T {
        let at = off as usize + idx as usize * size_of::<T>();
        assert!(at + size_of::<T>() <= self.len, "ring slot {idx} out of the mapping");
        // SAFETY: `at` is within the mapping (asserted).
        unsafe { self.ptr.add(at).cast() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr and len are what mmap returned; references into the mapping borrow self, so
        // none outlives it.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One io_uring with its rings mapped, used by one thread for one request at a time.
struct Ring {
    fd: OwnedFd,
    p: Params,
    sq: Mapping,
    /// None when the kernel shares one mapping for both rings (IORING_FEAT_SINGLE_MMAP).
    cq: Option<Mapping>,
    sqes: Mapping,
}

impl Ring {
    /// io_uring_setup: the ring fd and the parameters the kernel filled in, or the errno (the
    /// caller reports a refused setup distinctly from later failures).
    fn setup(entries: u32) -> Result<(OwnedFd, Params), i32> {
        let mut p = Params::default();
        // SAFETY: io_uring_setup writes only into `p`, a live, correctly laid out io_uring_params.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, &mut p as *mut Params) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // SAFETY: a non-negative io_uring_setup result is a new fd that nothing else owns.
        Ok((unsafe { OwnedFd::from_raw_fd(fd as RawFd) }, p))
    }

    /// Maps the SQ ring, the CQ ring (unless it shares the SQ mapping) and the SQE array.
    fn map(fd: OwnedFd, p: Params) -> anyhow::Result<Ring> {
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * size_of::<u32>();
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * size_of::<Cqe>();
        let single = p.features & IORING_FEAT_SINGLE_MMAP != 0;
        let sq = Mapping::new(&fd, if single { sq_len.max(cq_len) } else { sq_len }, IORING_OFF_SQ_RING)?;
        let cq = if single { None } else { Some(Mapping::new(&fd, cq_len, IORING_OFF_CQ_RING)?) };
        let sqes = Mapping::new(&fd, p.sq_entries as usize * size_of::<Sqe>(), IORING_OFF_SQES)?;
        Ok(Ring { fd, p, sq, cq, sqes })
    }

    fn cq(&self) -> &Mapping {
        self.cq.as_ref().unwrap_or(&self.sq)
    }

    /// Queues `sqe`, submits it and waits for its completion; returns the CQE's res.
    fn run(&self, sqe: Sqe) -> anyhow::Result<i32> {
        self.push(sqe);
        let mut to_submit = 1;
        loop {
            self.enter(to_submit)?;
            to_submit = 0;
            if let Some(res) = self.pop() {
                return Ok(res);
            }
        }
    }

    fn push(&self, sqe: Sqe) {
        let o = &self.p.sq_off;
        // Only this thread writes the tail: a plain load is current.
        let tail = self.sq.u32_at(o.tail).load(Ordering::Relaxed);
        let idx = tail & self.sq.u32_at(o.ring_mask).load(Ordering::Relaxed);
        // SAFETY: slot() bounds-checked the entry; SQE slots are 64-byte aligned in the page-aligned
        // mapping; the kernel does not read the slot before the tail below publishes it.
        unsafe { self.sqes.slot::<Sqe>(0, idx).write(sqe) };
        self.sq.u32_at(o.array + idx * 4).store(idx, Ordering::Relaxed);
        // Release: the kernel must see the SQE and its array slot before the new tail.
        self.sq.u32_at(o.tail).store(tail.wrapping_add(1), Ordering::Release);
    }

    /// io_uring_enter: submit `to_submit` queued SQEs and wait for at least one completion.
    fn enter(&self, to_submit: u32) -> anyhow::Result<()> {
        loop {
            // SAFETY: io_uring_enter on our ring fd with no signal mask (null, size 0); the kernel
            // touches only the rings we mapped and the buffers our live SQEs point to.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.fd.as_raw_fd(),
                    to_submit,
                    1u32,
                    IORING_ENTER_GETEVENTS,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if r >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            // Resubmitting after EINTR is harmless: the kernel submits only SQEs still queued.
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("io_uring_enter");
            }
        }
    }

    /// The next completion's res, if one is there.
    fn pop(&self) -> Option<i32> {
        let (o, cq) = (&self.p.cq_off, self.cq());
        let head = cq.u32_at(o.head).load(Ordering::Relaxed);
        // Acquire: a CQE's contents are visible once its tail is.
        if head == cq.u32_at(o.tail).load(Ordering::Acquire) {
            return None;
        }
        let idx = head & cq.u32_at(o.ring_mask).load(Ordering::Relaxed);
        // SAFETY: slot() bounds-checked the entry; CQEs are 16-byte aligned in the mapping; the
        // kernel does not reuse the slot until the head below moves past it.
        let cqe = unsafe { cq.slot::<Cqe>(o.cqes, idx).read() };
        // Release: done reading the slot before handing it back.
        cq.u32_at(o.head).store(head.wrapping_add(1), Ordering::Release);
        Some(cqe.res)
    }
}

// ---------------------------------------------------------------------------------------------
// race-read

/// `race-read TRIALS PATH`: the main thread opens PATH up to TRIALS times while two sibling
/// threads scan fds 3..64 for PATH's inode and read any they catch (sendfile into a pipe;
/// copy_file_range into a memfd). A block applied at the open's exit leaves the fd in the shared
/// table for a moment: this is the attacker for that window.
pub fn race_read(trials: u64, path: &str) -> anyhow::Result<()> {
    let target = file_id(path)?;
    let cpath = CString::new(path)?;
    let stop = AtomicBool::new(false);
    let leaked = AtomicU64::new(0);
    let mut copier = Copier::new(path)?;
    let pipe = pipe()?;
    // The opener waits for both scanners: a short run would otherwise be over before they look.
    let start = Barrier::new(3);
    let opened = std::thread::scope(|s| {
        let (stop, leaked, start) = (&stop, &leaked, &start);
        s.spawn(move || scan(start, stop, leaked, target, "sendfile", |fd| via_sendfile(fd, &pipe)));
        s.spawn(move || scan(start, stop, leaked, target, "copy_file_range", |fd| copier.copy(fd)));
        start.wait();
        let opened = open_loop(&cpath, trials);
        stop.store(true, Ordering::Relaxed);
        opened
    });
    println!("race trials={trials} opened={opened} leaked_bytes={}", leaked.load(Ordering::Relaxed));
    Ok(())
}

/// The opener: PATH read-only, `trials` times, closing each fd it gets; returns how many opens
/// succeeded.
fn open_loop(path: &CStr, trials: u64) -> u64 {
    let mut opened = 0;
    for _ in 0..trials {
        // SAFETY: a NUL-terminated path and plain flags.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            opened += 1;
            // SAFETY: fd was just returned to us and nothing else owns it.
            unsafe { libc::close(fd) };
        }
    }
    opened
}

/// A scanner: until `stop`, looks at every fd in 3..64 that refers to `target`, hands it to
/// `grab`, and prints and counts whatever bytes that got.
fn scan(start: &Barrier, stop: &AtomicBool, leaked: &AtomicU64, target: (u64, u64), how: &str, mut grab: impl FnMut(RawFd) -> std::io::Result<Vec<u8>>) {
    start.wait();
    while !stop.load(Ordering::Relaxed) {
        for fd in 3..64 {
            if fd_id(fd) != Some(target) {
                continue;
            }
            // Errors are expected: the fd may be closed (by the opener or the monitor) meanwhile.
            let Ok(data) = grab(fd) else { continue };
            if data.is_empty() {
                continue;
            }
            leaked.fetch_add(data.len() as u64, Ordering::Relaxed);
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "race {how} fd={fd} got={}: {}", data.len(), String::from_utf8_lossy(&data).trim_end());
        }
    }
}

/// (st_dev, st_ino) of a path, the identity the scanners look for.
fn file_id(path: &str) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let st = std::fs::metadata(path).with_context(|| format!("stat {path}"))?;
    Ok((st.dev(), st.ino()))
}

/// (st_dev, st_ino) of an open fd, or None when it is not open.
fn fd_id(fd: RawFd) -> Option<(u64, u64)> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole struct stat into `st` on success, and we read it only then.
    unsafe { (libc::fstat(fd, st.as_mut_ptr()) == 0).then(|| st.assume_init()) }.map(|st| (st.st_dev, st.st_ino))
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the two-element array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    anyhow::ensure!(r == 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// sendfile the first CHUNK bytes of `fd` into the pipe and drain it. An explicit offset leaves
/// the file position alone, so the opener never notices.
fn via_sendfile(fd: RawFd, pipe: &(OwnedFd, OwnedFd)) -> std::io::Result<Vec<u8>> {
    let mut off: libc::off_t = 0;
    // SAFETY: plain fds and a live off_t for the kernel to update.
    let n = cvt(unsafe { libc::sendfile(pipe.1.as_raw_fd(), fd, &mut off, CHUNK) } as i64)?;
    read_exactly(pipe.0.as_raw_fd(), n)
}

/// copy_file_range's sinks. The memfd comes first, but the kernel refuses copies between
/// different filesystems (EXDEV) when neither implements the copy, so it falls back to an
/// O_TMPFILE in PATH's own directory, made on first need: an attacker who caught an fd is not
/// stopped by a sink detail.
struct Copier {
    memfd: OwnedFd,
    dir: CString,
    tmpfile: Option<Option<OwnedFd>>,
}

impl Copier {
    fn new(path: &str) -> anyhow::Result<Self> {
        // SAFETY: a NUL-terminated name and plain flags.
        let fd = unsafe { libc::memfd_create(c"race-sink".as_ptr(), libc::MFD_CLOEXEC) };
        anyhow::ensure!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: fd is new and owned by nobody else.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let dir = match std::path::Path::new(path).parent() {
            Some(d) if !d.as_os_str().is_empty() => d.as_os_str().as_bytes(),
            _ => b".",
        };
        Ok(Copier { memfd, dir: CString::new(dir)?, tmpfile: None })
    }

    fn copy(&mut self, fd: RawFd) -> std::io::Result<Vec<u8>> {
        match copy_into(fd, &self.memfd) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let dir = &self.dir;
                let sink = self.tmpfile.get_or_insert_with(|| {
                    eprintln!("race: copy_file_range into the memfd: {e}; copying into an O_TMPFILE in {dir:?}");
                    tmpfile_in(dir).map_err(|e| eprintln!("race: O_TMPFILE in {dir:?}: {e}")).ok()
                });
                match sink {
                    Some(sink) => copy_into(fd, sink),
                    None => Err(e),
                }
            }
            r => r,
        }
    }
}

/// An unnamed, close-on-exec file in `dir` (same filesystem as the target).
fn tmpfile_in(dir: &CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path and plain flags and mode.
    let fd = cvt(unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o600) } as i64)?;
    // SAFETY: fd is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// copy_file_range of the first CHUNK bytes of `fd` to offset 0 of `sink`, read back from there.
fn copy_into(fd: RawFd, sink: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let (mut off_in, mut off_out): (libc::loff_t, libc::loff_t) = (0, 0);
    // SAFETY: plain fds and two live loff_t for the kernel to update; the raw syscall avoids
    // depending on the glibc wrapper's version.
    let n = cvt(unsafe { libc::syscall(libc::SYS_copy_file_range, fd, &mut off_in, sink.as_raw_fd(), &mut off_out, CHUNK, 0u32) })?;
    let mut buf = vec![0u8; n];
    // SAFETY: buf has room for n bytes.
    let got = cvt(unsafe { libc::pread(sink.as_raw_fd(), buf.as_mut_ptr().cast(), n, 0) } as i64)?;
    buf.truncate(got);
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// create-then-open

/// `create-then-open N DIR`: N times, writes DIR/id_race_<i> holding SECRET, then reads it back
/// at once; prints each read and a final count of reads that returned the secret. (The tests'
/// monitor may kill the process midway: every line is flushed as it is printed.)
pub fn create_then_open(n: u64, dir: &str) -> anyhow::Result<()> {
    let mut leaked = 0;
    for i in 0..n {
        let name = format!("id_race_{i}");
        let path = CString::new(format!("{dir}/{name}"))?;
        match write_secret(&path).and_then(|()| read_back(&path)) {
            Ok(data) => {
                let text = String::from_utf8_lossy(&data);
                leaked += text.contains(SECRET) as u64;
                println!("{name} read={}: {}", data.len(), text.trim_end());
            }
            Err(e) => println!("{name} {e:#}"),
        }
    }
    println!("create-then-open n={n} leaked={leaked}");
    Ok(())
}

/// create + write + close.
fn write_secret(path: &CStr) -> anyhow::Result<()> {
    // SAFETY: a NUL-terminated path, plain flags and mode.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o600) } as i64).context("create")?;
    // SAFETY: fd is new and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let line = format!("{SECRET}\n");
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: rest is a live buffer of rest.len() bytes.
        let n = cvt(unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) } as i64).context("write")?;
        rest = &rest[n..];
    }
    Ok(())
}

/// open + read (up to CHUNK bytes) + close.
fn read_back(path: &CStr) -> anyhow::Result<Vec<u8>> {
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) } as i64).context("open")?;
    // SAFETY: fd is new and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut buf = vec![0u8; CHUNK];
    // SAFETY: buf has room for CHUNK bytes.
    let n = cvt(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), CHUNK) } as i64).context("read")?;
    buf.truncate(n);
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// helpers

/// A syscall's return value as a count, or the errno it failed with.
fn cvt(r: i64) -> std::io::Result<usize> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Reads exactly `n` bytes that are already waiting in a pipe.
fn read_exactly(fd: RawFd, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        // SAFETY: the tail of buf from `got` has room for n - got bytes.
        let r = cvt(unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), n - got) } as i64)?;
        if r == 0 {
            break;
        }
        got += r;
    }
    buf.truncate(got);
    Ok(buf)
}
