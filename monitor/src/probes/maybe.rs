//! The daemon's side of `MAYBE_TRACKED`, the one-byte-per-pid filter every hook tests before
//! `TRACKED` (monitor-ebpf/src/maps.rs has the rule: a byte is set before its pid goes into
//! `TRACKED`, and only the kernel clears it).
//!
//! The array is the object's global data, which the hooks reach without a lookup; aya creates
//! that map without `BPF_F_MMAPABLE`, so the daemon cannot map it, and a bpf(2) update would write
//! its one 4 MiB element whole, undoing a byte the kernel set meanwhile (a tracked child the hooks
//! then skip). So the daemon runs `mcpm_maybe` (monitor-ebpf/src/gate.rs) with
//! `BPF_PROG_TEST_RUN`: one byte store in the kernel, as the hooks do, about a microsecond, once
//! per process the daemon adopts.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::{
    programs::{ProgramError, ProgramFd, RawTracePoint},
    Ebpf,
};
use monitor_common::names::PROG_MAYBE;

use super::ProbeError;

/// `bpf(2)` command number of `BPF_PROG_TEST_RUN` (uapi `enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of uapi `union bpf_attr`, through `batch_size`; fields this command does not
/// use for a raw tracepoint stay zero, as the kernel requires.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// The struct's tail padding, as a field so that it is zero: the kernel refuses an attr with
    /// nonzero bytes past the fields it knows, and Rust leaves padding uninitialised.
    _pad: u32,
}

// uapi's layout: 76 bytes of fields, 8-byte aligned.
const _: () = assert!(size_of::<TestRunAttr>() == 80);

pub struct MaybeTracked {
    /// `mcpm_maybe`, loaded (never attached).
    prog: ProgramFd,
}

fn refused(e: ProgramError) -> ProbeError {
    ProbeError::Program { program: PROG_MAYBE, purpose: "the daemon's writes of MAYBE_TRACKED", hook: "none (BPF_PROG_TEST_RUN)".into(), source: Box::new(e) }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut RawTracePoint, ProbeError> {
    ebpf.program_mut(PROG_MAYBE).ok_or(ProbeError::MissingProgram(PROG_MAYBE))?.try_into().map_err(refused)
}

/// Loads `mcpm_maybe` (never attached): with the object, so that a kernel refusing it fails the
/// start, and `sensors_loaded` lists it.
pub fn load(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    program(ebpf)?.load().map_err(refused)
}

impl MaybeTracked {
    /// The writer of the object `load` loaded `mcpm_maybe` of (a second fd on the program).
    pub fn of(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let fd = program(ebpf)?.fd().map_err(refused)?;
        let prog = fd.try_clone().map_err(|e| ProbeError::Map("MAYBE_TRACKED", format!("dup of {PROG_MAYBE}'s fd: {e}")))?;
        Ok(Self { prog })
    }

    /// Runs `mcpm_maybe` once on `pid` (setting its byte first if `set`) and returns the byte.
    fn run(&self, pid: u32, set: bool) -> io::Result<bool> {
        // The raw tracepoint's arguments: the program reads args[0] and args[1].
        let args: [u64; 2] = [u64::from(pid), u64::from(set)];
        let mut attr = TestRunAttr {
            prog_fd: self.prog.as_fd().as_raw_fd() as u32,
            ctx_size_in: size_of_val(&args) as u32,
            ctx_in: args.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: bpf(2) with a fully initialised attr of the size passed; the kernel reads
        // `ctx_size_in` bytes at `ctx_in` (`args`, alive across the call) and writes `retval`
        // into `attr`, which outlives the call.
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &mut attr as *mut TestRunAttr, size_of::<TestRunAttr>()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(attr.retval != 0)
    }

    /// Sets `pid`'s byte: call before inserting `pid` into `TRACKED`. An error means the byte may
    /// be clear, and the hooks would skip the process: the caller must not track it as if seen.
    pub fn set(&self, pid: u32) -> io::Result<()> {
        match self.run(pid, true)? {
            true => Ok(()),
            false => Err(io::Error::other(format!("mcpm_maybe left pid {pid}'s byte clear"))),
        }
    }

    /// Whether `pid`'s byte is set.
    pub fn get(&self, pid: u32) -> io::Result<bool> {
        self.run(pid, false)
    }
}
