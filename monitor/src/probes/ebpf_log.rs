//! `mcpmon run --ebpf-log`: the kernel side's aya-log records (which kind of event it lost,
//! `monitor-ebpf/src/maps.rs`) in the daemon's log. Off by default, and then free: the
//! level global stays 0, the verifier drops the records' code, and their ring buffer is one page.
use std::os::fd::AsRawFd as _;

use aya::Ebpf;

/// The log level the kernel side is loaded with (`AYA_LOG_LEVEL`): everything, or nothing.
pub fn level(on: bool) -> u8 {
    if on {
        aya_log::Level::Trace as u8
    } else {
        0
    }
}

/// Size of aya-log's ring buffer (`AYA_LOGS`): its default when on, one page when nothing is
/// written to it.
pub fn ring_bytes(on: bool) -> u32 {
    if on {
        1 << 17
    } else {
        4096
    }
}

/// The name aya-log gives its ring buffer (private in aya-log).
pub const MAP_LOGS: &str = "AYA_LOGS";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("reading the eBPF log ring: {0}")]
    Logger(#[from] aya_log::Error),
    #[error("starting the eBPF log thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Takes the log ring from `ebpf` and forwards its records to the `log` facade (which the
/// daemon's tracing subscriber receives) from a thread of its own, for the life of the process.
pub fn start(ebpf: &mut Ebpf) -> Result<(), LogError> {
    let mut logger = aya_log::EbpfLogger::init(ebpf)?;
    std::thread::Builder::new().name("ebpf-log".into()).spawn(move || loop {
        let mut pfd = libc::pollfd { fd: logger.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `pfd` is one valid pollfd on this stack for the duration of the call, and the ring's fd
        // stays open as long as `logger`, which this thread owns.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            tracing::warn!(error = %std::io::Error::last_os_error(), "eBPF log ring: poll failed; kernel log records are no longer read");
            return;
        }
        logger.flush();
    })?;
    Ok(())
}
