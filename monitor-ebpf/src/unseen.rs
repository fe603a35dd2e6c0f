//! Files no plan has seen: the kernel's judgement of a read open of a file with no
//! `PROTECTED` entry, by its directory (`UNSEEN_DIRS`) and its name (`UNSEEN_NAMES`), made
//! in user space by `actions/protect/unseen.rs`. Called from `enforce::file_check`.
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str},
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use monitor_common::{protect, InodeKey, NameKey, NAME_CAP, PART_CAP};

use crate::{enforce::inode_key, maps::koff};

/// Directories, by inode, where a file with no `PROTECTED` entry (no plan has seen it) may
/// still be protected:
/// - without the open gate only, secret directories (`~/.ssh`), each with the read policy of
///   its patterns: a read of a file made there since the last plan (a key written, copied,
///   linked or renamed in) is judged under that policy, as the gate would judge it by name;
/// - with or without the gate, `protect::NAMED` on the directories of literal protected names
///   (a home for `~/.netrc`, `~/.aws` for `credentials`): the name is looked up in
///   `UNSEEN_NAMES`. The gate marks no such directory (a home's every open would go through
///   it), so a credential written for the first time was read before the watch's re-plan;
/// - with or without the gate, `protect::NAMED_BELOW` on the existing parents of directories
///   that hold protected names (a home for `~/.aws/credentials`, whether `~/.aws` exists or
///   not): a read of a file in a directory directly below, that no plan has seen, is judged by
///   `UNSEEN_NAMES` in its `below_bytes` form. `aws configure` makes `~/.aws` and its
///   `credentials` at once: all 36 such credentials were read before the watch's re-plan;
/// - with or without the gate, `protect::SUBTREE` and its policy on each directory of a `**`
///   pattern (`~/.password-store` and every directory below): a file no plan has seen in one,
///   or in a new directory directly below one, is judged by it (the gate marks the top only).
/// Allocated as used (`BPF_F_NO_PREALLOC`, 1): a `**` tree puts each of its directories here.
#[map(name = "UNSEEN_DIRS")]
pub static UNSEEN_DIRS: HashMap<InodeKey, u32> = HashMap::with_max_entries(16384, 1);

/// (directory, literal name) → the read policy of the rule that names it (`UNSEEN_DIRS`).
/// About 80 entries a home (its names, and the names below its directories): room for 800
/// homes, allocated as used (`BPF_F_NO_PREALLOC`, 1): a lookup costs the same.
#[map(name = "UNSEEN_NAMES")]
pub static UNSEEN_NAMES: HashMap<NameKey, u32> = HashMap::with_max_entries(65536, 1);

/// Where the two lookups below build their `UNSEEN_NAMES` key: 80 bytes on the stack put the
/// ia32 program's call chain over the 512 bytes a kernel such as 6.1 allows in all.
#[map(name = "NAME_SCRATCH")]
pub static NAME_SCRATCH: PerCpuArray<NameKey> = PerCpuArray::with_max_entries(1, 0);

/// The scratch key, cleared, for directory `dir`; None only if the map has no element.
#[inline(always)]
fn name_key(dir: InodeKey) -> Option<&'static mut NameKey> {
    let k = NAME_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's element of NAME_SCRATCH (valid for the program run, which does not
    // migrate); no program of this CPU uses it meanwhile: none of ours runs nested in another.
    let k = unsafe { &mut *k };
    k.dir = dir;
    k.name = [0; NAME_CAP];
    Some(k)
}

/// Whether `inode` is a directory: an unseen one is listed, never read, and `ls` of a new
/// `~/.password-store/web` is no read of a password.
#[inline(always)]
pub fn is_dir(inode: *const u8) -> bool {
    // SAFETY: `inode->i_mode` (BTF offset) read through bpf_probe_read_kernel, which returns Err
    // on a fault (then not a directory: judged as a file).
    let mode: u16 = unsafe { bpf_probe_read_kernel(inode.add(koff!(inode_mode)) as *const u16) }.unwrap_or(0);
    mode & 0o170000 == 0o040000
}

/// The read policy of a file no plan has seen, from the `UNSEEN_DIRS` directory holding it: its
/// name's in `UNSEEN_NAMES`, else the directory's own (0 if none); from the one above, for a
/// directory no plan has seen either.
#[inline(always)]
pub fn unseen_policy(file: *const u8) -> u32 {
    // SAFETY: `file` is the file being opened; its dentry, d_parent and d_inode (BTF offsets) are
    // read through bpf_probe_read_kernel, which returns Err on a fault.
    let (dentry, parent, dir) = unsafe {
        let Ok(dentry) = bpf_probe_read_kernel(file.add(koff!(file_dentry)) as *const *const u8) else { return 0 };
        let Ok(parent) = bpf_probe_read_kernel(dentry.add(koff!(dentry_parent)) as *const *const u8) else { return 0 };
        let Ok(inode) = bpf_probe_read_kernel(parent.add(koff!(dentry_inode)) as *const *const u8) else { return 0 };
        (dentry, parent, inode)
    };
    let Some(key) = inode_key(dir) else { return 0 };
    // SAFETY: the value is copied out at once; no reference into the map is kept.
    let Some(v) = (unsafe { UNSEEN_DIRS.get(&key) }.copied()) else {
        // Called one after the other, not one from the other: a fifth frame put the ia32
        // program's call chain at 544 bytes of stack on 6.1, over its 512.
        return match below_policy(dentry, parent) {
            DEEPER => deep_policy(dentry, parent),
            p => p,
        };
    };
    if v & protect::NAMED != 0 {
        let p = unseen_name_policy(dentry, key.dev, key.ino);
        if p != 0 {
            return p;
        }
    }
    v & !protect::DIR_FLAGS
}

/// `UNSEEN_NAMES` for the name of `dentry` in directory `dev`/`ino`. A subprogram of its own,
/// its key in `NAME_SCRATCH` (scalars in: a struct argument of a BPF call has no fixed form).
#[inline(never)]
fn unseen_name_policy(dentry: *const u8, dev: u32, ino: u64) -> u32 {
    let Some(k) = name_key(InodeKey { dev, _pad: 0, ino }) else { return 0 };
    // SAFETY: `d_name.name` (BTF offset + 8 past the qstr's hash and length, as in procmem.rs)
    // and the name's bytes are read through the fault-checked kernel helpers; the string read
    // writes at most NAME_CAP bytes into `k.name`, NUL included, and the rest stays zero.
    unsafe {
        let Ok(name) = bpf_probe_read_kernel(dentry.add(koff!(dentry_name) + 8) as *const *const u8) else { return 0 };
        if bpf_probe_read_kernel_str(k.name.as_mut_ptr() as *mut _, NAME_CAP as u32, name as *const _) <= 0 {
            return 0;
        }
    }
    // SAFETY: the value is copied out at once; no reference into the map is kept.
    unsafe { UNSEEN_NAMES.get(&*k) }.copied().unwrap_or(0)
}

/// What [`below_policy`] answers when the directory above `parent` has no `UNSEEN_DIRS` entry
/// either: [`deep_policy`] looks further up. No policy is all ones (its flag bits never are).
const DEEPER: u32 = u32::MAX;

/// A file in `parent`, a directory no plan has seen: if the directory above is `SUBTREE`, its
/// policy (`pass insert web/new` makes `web/` and `new.gpg`); if it is `NAMED_BELOW`,
/// `UNSEEN_NAMES` for `parent/` (every file of a new `~/.azure`), then `parent/name`
/// (`.aws/credentials`), then `*/name` (any new directory's), as `monitor_common::below_bytes`
/// builds them; [`DEEPER`] if it has no entry at all.
#[inline(never)]
fn below_policy(dentry: *const u8, parent: *const u8) -> u32 {
    // SAFETY: d_parent and d_inode (BTF offsets) are read through bpf_probe_read_kernel, which
    // returns Err on a fault; the root is its own parent.
    let grand = unsafe {
        let Ok(g) = bpf_probe_read_kernel(parent.add(koff!(dentry_parent)) as *const *const u8) else { return 0 };
        if g == parent {
            return 0;
        }
        let Ok(inode) = bpf_probe_read_kernel(g.add(koff!(dentry_inode)) as *const *const u8) else { return 0 };
        inode
    };
    let Some(dir) = inode_key(grand) else { return 0 };
    // SAFETY: the value is copied out at once; no reference into the map is kept.
    let Some(v) = (unsafe { UNSEEN_DIRS.get(&dir) }.copied()) else {
        return DEEPER;
    };
    if v & protect::SUBTREE != 0 {
        return v & !protect::DIR_FLAGS;
    }
    if v & protect::NAMED_BELOW == 0 {
        return 0;
    }
    let Some(k) = name_key(dir) else { return 0 };
    // SAFETY: `d_name.name` pointers (BTF offset + 8, as above) and the names' bytes are read
    // through the fault-checked kernel helpers. The directory's name goes into the first
    // PART_CAP bytes (NUL included); `/` replaces its NUL at `at` (< PART_CAP); the file's name
    // goes at `at + 1` (≤ PART_CAP), at most PART_CAP bytes, so every write stays in `k.name`.
    unsafe {
        let Ok(pname) = bpf_probe_read_kernel(parent.add(koff!(dentry_name) + 8) as *const *const u8) else { return 0 };
        let n = bpf_probe_read_kernel_str(k.name.as_mut_ptr() as *mut _, PART_CAP as u32, pname as *const _);
        if n <= 0 {
            return 0;
        }
        let at = (n as usize - 1) & (PART_CAP - 1);
        *k.name.as_mut_ptr().add(at) = b'/';
        let whole = UNSEEN_NAMES.get(&*k).copied();
        let Ok(fname) = bpf_probe_read_kernel(dentry.add(koff!(dentry_name) + 8) as *const *const u8) else { return whole.unwrap_or(0) };
        let m = bpf_probe_read_kernel_str(k.name.as_mut_ptr().add(at + 1) as *mut _, PART_CAP as u32, fname as *const _);
        if m <= 0 {
            return whole.unwrap_or(0);
        }
        // The whole directory's entry (`~/.ssh/id_*` in a new `~/.ssh`) spares a public key.
        if let Some(p) = whole {
            if !ends_pub(&k.name, at + m as usize) {
                return p;
            }
        }
        if let Some(p) = UNSEEN_NAMES.get(&*k) {
            return *p;
        }
        // Then `*/name`: the name in any new directory here (a new browser profile).
        k.name = [0; NAME_CAP];
        k.name[0] = b'*';
        k.name[1] = b'/';
        if bpf_probe_read_kernel_str(k.name.as_mut_ptr().add(2) as *mut _, PART_CAP as u32, fname as *const _) <= 0 {
            return 0;
        }
        UNSEEN_NAMES.get(&*k).copied().unwrap_or(0)
    }
}

/// A file two or three levels of new directories below an existing one (`mkdir -p` in a new
/// home: `~/.config/gh/hosts.yml`, `~/.local/share/keyrings/login.keyring`): the nearest
/// directory above `parent`'s parent that has an `UNSEEN_DIRS` entry, if `SUBTREE`, gives its
/// policy (`pass insert a/b/new`); if `NAMED_BELOW`, `UNSEEN_NAMES` for the new directories'
/// names (`.config/gh/`), then with the file's (`.config/gh/hosts.yml`), as
/// `monitor_common::below_bytes` builds them. Called when `parent`'s parent has no entry
/// ([`DEEPER`]): every directory a plan has seen there has one.
#[inline(never)]
fn deep_policy(dentry: *const u8, parent: *const u8) -> u32 {
    // The new directories, top first once found: [grand, parent] or [great, grand, parent].
    let mut news: [*const u8; 3] = [core::ptr::null(); 3];
    let mut below = parent;
    let mut found = None;
    for level in 0..2 {
        // SAFETY: d_parent and d_inode (BTF offsets) are read through bpf_probe_read_kernel,
        // which returns Err on a fault; the root is its own parent.
        let (up, top) = unsafe {
            let Ok(g) = bpf_probe_read_kernel(below.add(koff!(dentry_parent)) as *const *const u8) else { return 0 };
            let Ok(t) = bpf_probe_read_kernel(g.add(koff!(dentry_parent)) as *const *const u8) else { return 0 };
            if t == g {
                return 0;
            }
            let Ok(inode) = bpf_probe_read_kernel(t.add(koff!(dentry_inode)) as *const *const u8) else { return 0 };
            (g, inode)
        };
        let Some(dir) = inode_key(top) else { return 0 };
        // SAFETY: the value is copied out at once; no reference into the map is kept.
        let v = unsafe { UNSEEN_DIRS.get(&dir) }.copied();
        if level == 0 {
            news = [up, parent, core::ptr::null()];
        } else {
            news = [up, news[0], parent];
        }
        if let Some(v) = v {
            found = Some((dir, v));
            break;
        }
        below = up;
    }
    let Some((dir, v)) = found else { return 0 };
    if v & protect::SUBTREE != 0 {
        return v & !protect::DIR_FLAGS;
    }
    if v & protect::NAMED_BELOW == 0 {
        return 0;
    }
    let Some(k) = name_key(dir) else { return 0 };
    // Each name in a PART_CAP slot of its own, at a constant offset (`below_bytes`).
    let [a, b, c] = news;
    if !read_name(k, a, 0) || !read_name(k, b, PART_CAP) {
        return 0;
    }
    let file_at = if c.is_null() {
        2 * PART_CAP
    } else {
        if !read_name(k, c, 2 * PART_CAP) {
            return 0;
        }
        3 * PART_CAP
    };
    // SAFETY: the value is copied out at once; no reference into the map is kept.
    let whole = unsafe { UNSEEN_NAMES.get(&*k) }.copied();
    // Two calls that differ only in a constant, not one with `file_at`: 6.1's verifier loses
    // the bounds of a variable offset into the key once spilled, and refuses the string write.
    let f = if file_at == 2 * PART_CAP { read_name_len(k, dentry, 2 * PART_CAP) } else { read_name_len(k, dentry, 3 * PART_CAP) };
    if f <= 0 {
        return whole.unwrap_or(0);
    }
    // The whole directory's entry (`~/.gnupg/private-keys-v1.d/`) spares a public key.
    if let Some(p) = whole {
        if !ends_pub(&k.name, file_at + f as usize - 1) {
            return p;
        }
    }
    // SAFETY: the value is copied out at once; no reference into the map is kept.
    unsafe { UNSEEN_NAMES.get(&*k) }.copied().unwrap_or(0)
}

/// Reads `d`'s name into the `PART_CAP` bytes of `k.name` at `at` (a constant at each call);
/// its length with the NUL, or ≤ 0 if it could not be read.
#[inline(always)]
fn read_name_len(k: &mut NameKey, d: *const u8, at: usize) -> i64 {
    // SAFETY: `d_name.name` (BTF offset + 8, as above) and its bytes are read through the
    // fault-checked kernel helpers; the string read writes at most PART_CAP bytes at `at`,
    // and every caller's `at` is at most NAME_CAP - PART_CAP.
    unsafe {
        let Ok(name) = bpf_probe_read_kernel(d.add(koff!(dentry_name) + 8) as *const *const u8) else { return -1 };
        bpf_probe_read_kernel_str(k.name.as_mut_ptr().add(at) as *mut _, PART_CAP as u32, name as *const _)
    }
}

/// [`read_name_len`], as whether it read one.
#[inline(always)]
fn read_name(k: &mut NameKey, d: *const u8, at: usize) -> bool {
    read_name_len(k, d, at) > 0
}

/// Whether the name that ends at `end` (its NUL) in `name` ends in `.pub`.
#[inline(always)]
fn ends_pub(name: &[u8; NAME_CAP], end: usize) -> bool {
    if end < 4 || end >= NAME_CAP {
        return false;
    }
    let at = |i: usize| name[(end - i) & (NAME_CAP - 1)];
    at(4) == b'.' && at(3) == b'p' && at(2) == b'u' && at(1) == b'b'
}
