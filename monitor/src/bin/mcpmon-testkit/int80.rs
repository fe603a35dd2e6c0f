//! i386 syscalls through `int $0x80` from this 64-bit process: the compat-syscall bypass the
//! ia32 hooks must see. The i386 ABI takes 32-bit pointers, so arguments live in a `MAP_32BIT`
//! mapping.
/// One i386 syscall through `int $0x80` from this 64-bit process (the bypass tests for compat
/// syscalls); pointers must lie below 4 GiB.
#[cfg(target_arch = "x86_64")]
unsafe fn int80(nr: u32, a: u64, b: u64, c: u64) -> i32 {
    let ret: i32;
    // rbx is reserved by LLVM: swap the first argument in and out around the call.
    // SAFETY: the i386 `int 0x80` ABI: number in eax, arguments in ebx, ecx, edx, result in eax; rbx,
    // which LLVM reserves, is swapped back by the second xchg, and r8-r11 (zeroed by the compat
    // entry of older kernels) are declared clobbered. Callers guarantee pointers lie below 4 GiB.
    unsafe {
        std::arch::asm!(
            "xchg {a}, rbx",
            "int 0x80",
            "xchg {a}, rbx",
            a = inout(reg) a => _,
            inlateout("eax") nr => ret,
            in("ecx") b as u32,
            in("edx") c as u32,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    ret
}

/// open + read through `int $0x80` (i386 numbers 5 and 3), path and buffer below 4 GiB.
#[cfg(target_arch = "x86_64")]
pub fn int80_read(path: &str) -> anyhow::Result<Vec<u8>> {
    let low = low_page()?;
    let p = path.as_bytes();
    anyhow::ensure!(p.len() < 4095, "path too long");
    // SAFETY: `low` is a fresh 8192-byte writable mapping (low_page) and p.len() < 4095, so the copy and
    // the NUL stay inside its first page; the source is a &str that does not overlap it.
    unsafe {
        std::ptr::copy_nonoverlapping(p.as_ptr(), low, p.len());
        *low.add(p.len()) = 0;
    }
    // SAFETY: open(2) with a NUL-terminated path in `low`, a MAP_32BIT page below 4 GiB as int80 requires.
    let fd = unsafe { int80(5, low as u64, 0, 0) };
    anyhow::ensure!(fd >= 0, "int80 open: errno {}", -fd);
    // SAFETY: `low` starts an 8192-byte mapping, so low + 4096 is its second page, still inside it.
    let buf = unsafe { low.add(4096) };
    // SAFETY: read(2) of at most 4096 bytes into `buf`, the 4096-byte second page of the mapping, below
    // 4 GiB as int80 requires.
    let n = unsafe { int80(3, fd as u64, buf as u64, 4096) };
    anyhow::ensure!(n >= 0, "int80 read: errno {}", -n);
    // SAFETY: read returned n (0 <= n <= 4096, checked above) bytes written at `buf`, inside the mapping,
    // which is never unmapped; the slice is copied into a Vec at once.
    Ok(unsafe { std::slice::from_raw_parts(buf, n as usize) }.to_vec())
}

/// Two pages below 4 GiB, where 32-bit syscalls can point.
#[cfg(target_arch = "x86_64")]
fn low_page() -> anyhow::Result<*mut u8> {
    // SAFETY: an anonymous private mapping with no address hint and no fd; the result is checked against
    // MAP_FAILED before use.
    let low = unsafe { libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT, -1, 0) };
    anyhow::ensure!(low != libc::MAP_FAILED, "mmap MAP_32BIT: {}", std::io::Error::last_os_error());
    Ok(low as *mut u8)
}

/// A TCP socket (made the usual way) connected through `int $0x80`; returns 0 or -errno.
#[cfg(target_arch = "x86_64")]
pub fn int80_connect(addr: std::net::SocketAddrV4) -> anyhow::Result<i32> {
    // SAFETY: socket(2) with constant arguments and no pointers; the fd is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(addr.ip().octets()) },
        sin_zero: [0; 8],
    };
    let low = low_page()?;
    // SAFETY: copies size_of::<sockaddr_in>() (16) bytes from the local `sa` into the fresh 8192-byte
    // mapping `low`; the two never overlap.
    unsafe { std::ptr::copy_nonoverlapping(&sa as *const _ as *const u8, low, std::mem::size_of::<libc::sockaddr_in>()) };
    // SAFETY: i386 connect with `fd` from socket() above and the sockaddr_in just copied to `low`, a
    // MAP_32BIT page below 4 GiB as int80 requires; the length matches what was copied.
    Ok(unsafe { int80(362, fd as u64, low as u64, std::mem::size_of::<libc::sockaddr_in>() as u64) })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn int80_read(_: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::bail!("int $0x80 exists on x86_64 only")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn int80_connect(_: std::net::SocketAddrV4) -> anyhow::Result<i32> {
    anyhow::bail!("int $0x80 exists on x86_64 only")
}
