//! Just enough of a BTF reader to find struct member offsets in the running kernel.
//!
//! The kernel programs read a few `task_struct` fields (`real_parent`, `tgid`, `exit_code`) whose
//! offsets change with every kernel build. Rust eBPF code cannot emit CO-RE relocations, so the
//! daemon looks the offsets up in `/sys/kernel/btf/vmlinux` and hands them to the programs as
//! read-only globals. aya's own BTF parser keeps these lookups crate-private.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source} (this kernel has no BTF: CONFIG_DEBUG_INFO_BTF=y is required)")]
    Read { path: String, source: std::io::Error },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("BTF struct {0} has no member {1}")]
    NoMember(String, String),
}

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    name_off: u32,
    kind: u32,
    /// size, or the referenced type id for modifiers and typedefs.
    size_or_type: u32,
    members: Vec<Member>,
}

pub struct Btf {
    types: Vec<Type>, // index = type id; id 0 is void
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
            return Err(BtfError::Malformed("bad magic (big-endian BTF is not supported)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let tsec = data.get(hdr_len + type_off..hdr_len + type_off + type_len).ok_or(BtfError::Malformed("type section"))?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len).ok_or(BtfError::Malformed("string section"))?;

        let mut types = vec![Type { name_off: 0, kind: 0, size_or_type: 0, members: vec![] }];
        let mut off = 0;
        while off < tsec.len() {
            let name_off = u32_at(tsec, off)?;
            let info = u32_at(tsec, off + 4)?;
            let size_or_type = u32_at(tsec, off + 8)?;
            off += 12;
            let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
            let mut members = Vec::new();
            let extra = match kind {
                1 => 4,                      // INT
                3 => 12,                     // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = off + 12 * i;
                        let raw = u32_at(tsec, m + 8)?;
                        // With kind_flag the low 24 bits are the bit offset, the top 8 the bitfield size.
                        let bit_offset = if kind_flag == 1 { raw & 0x00ff_ffff } else { raw };
                        members.push(Member { name_off: u32_at(tsec, m)?, type_id: u32_at(tsec, m + 4)?, bit_offset });
                    }
                    12 * vlen
                }
                6 => 8 * vlen,               // ENUM
                13 => 8 * vlen,              // FUNC_PROTO
                14 => 4,                     // VAR
                15 => 12 * vlen,             // DATASEC
                17 => 4,                     // DECL_TAG
                19 => 12 * vlen,             // ENUM64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown kind")),
            };
            off += extra;
            types.push(Type { name_off, kind, size_or_type, members });
        }
        Ok(Self { types, strings: strings.to_vec() })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    /// Follows typedefs and modifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t) if matches!(t.kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `member` in struct `name`, looking through anonymous structs and unions
    /// (randomized-layout kernels wrap `task_struct` fields in one).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && !t.members.is_empty() && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        self.find_member(id as u32, member.as_bytes(), 0, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember(name.into(), member.into()))
    }

    fn find_member(&self, id: u32, member: &[u8], base_bits: u32, depth: u32) -> Option<u32> {
        let t = self.types.get(id as usize)?;
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some(base_bits + m.bit_offset);
            }
        }
        for m in t.members.iter().filter(|m| m.name_off == 0) {
            let inner = self.resolve(m.type_id);
            if matches!(self.types.get(inner as usize).map(|t| t.kind), Some(KIND_STRUCT | KIND_UNION)) {
                if let Some(found) = self.find_member(inner, member, base_bits + m.bit_offset, depth + 1) {
                    return Some(found);
                }
            }
        }
        None
    }
}

/// The kernel struct offsets the kernel programs need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskOffsets {
    pub real_parent: u32,
    pub tgid: u32,
    pub exit_code: u32,
    pub comm: u32,
    /// fd → inode: `task->files->fdt->fd[fd]->f_inode->i_ino` (stdio pipe matching).
    pub files: u32,
    pub files_fdt: u32,
    pub fdt_fd: u32,
    pub fdt_max_fds: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    /// `inode->i_mode`: only pipes and sockets are registered as stdio at a provisional exec.
    pub inode_mode: u32,
    /// Protected-inode keys: `inode->i_sb->s_dev`; the parent directory of an opened file:
    /// `file->f_path.dentry->d_parent->d_inode`.
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub file_dentry: u32,
    pub dentry_parent: u32,
    pub dentry_inode: u32,
    /// procfs secrets of other processes: `inode->i_sb->s_magic`, `dentry->d_name`.
    pub sb_magic: u32,
    pub dentry_name: u32,
    /// The running image: `task->mm->exe_file`.
    pub task_mm: u32,
    pub mm_exe_file: u32,
    /// `mm_struct.arg_start`/`arg_end`: the new image's argv, read at a provisional exec.
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `file->f_mode` (FMODE_READ/WRITE), for the LSM deny.
    pub file_f_mode: u32,
    /// `task->signal->live` (group death on kernels whose exit tracepoint lacks `group_dead`).
    pub task_signal: u32,
    pub signal_live: u32,
    /// `signal_struct->tty`: a configured command with a terminal is not held at exec.
    pub signal_tty: u32,
    /// `linux_binprm->file`: the image an exec is about to run (LSM exec deny).
    pub bprm_file: u32,
    /// `task->thread_info.status` (x86: TS_COMPAT marks an ia32 syscall), `NO_FIELD` elsewhere.
    pub ti_status: u32,
    /// The peer of a connected unix socket (`protect::KILL_CONNECT`).
    pub unix: UnixOffsets,
}

/// `file->private_data`, `socket->sk`, `unix_sock->peer`, `unix_sock->path.dentry`: from a
/// connected unix socket's fd to the socket file it reached. All `NO_FIELD` when one is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixOffsets {
    pub file_private: u32,
    pub socket_sk: u32,
    pub unix_peer: u32,
    pub unix_path_dentry: u32,
}

impl UnixOffsets {
    fn from_btf(btf: &Btf) -> Self {
        let all = || -> Result<Self, BtfError> {
            Ok(Self {
                file_private: btf.member_offset("file", "private_data")?,
                socket_sk: btf.member_offset("socket", "sk")?,
                unix_peer: btf.member_offset("unix_sock", "peer")?,
                unix_path_dentry: btf.member_offset("unix_sock", "path")? + btf.member_offset("path", "dentry")?,
            })
        };
        let none = monitor_common::NO_FIELD;
        all().unwrap_or(Self { file_private: none, socket_sk: none, unix_peer: none, unix_path_dentry: none })
    }
}

impl TaskOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        Ok(Self {
            real_parent: btf.member_offset("task_struct", "real_parent")?,
            tgid: btf.member_offset("task_struct", "tgid")?,
            exit_code: btf.member_offset("task_struct", "exit_code")?,
            comm: btf.member_offset("task_struct", "comm")?,
            files: btf.member_offset("task_struct", "files")?,
            files_fdt: btf.member_offset("files_struct", "fdt")?,
            fdt_fd: btf.member_offset("fdtable", "fd")?,
            fdt_max_fds: btf.member_offset("fdtable", "max_fds")?,
            file_inode: btf.member_offset("file", "f_inode")?,
            inode_ino: btf.member_offset("inode", "i_ino")?,
            inode_mode: btf.member_offset("inode", "i_mode")?,
            inode_sb: btf.member_offset("inode", "i_sb")?,
            sb_dev: btf.member_offset("super_block", "s_dev")?,
            file_dentry: btf.member_offset("file", "f_path")? + btf.member_offset("path", "dentry")?,
            dentry_parent: btf.member_offset("dentry", "d_parent")?,
            dentry_inode: btf.member_offset("dentry", "d_inode")?,
            sb_magic: btf.member_offset("super_block", "s_magic")?,
            dentry_name: btf.member_offset("dentry", "d_name")?,
            task_mm: btf.member_offset("task_struct", "mm")?,
            mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
            mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
            mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
            file_f_mode: btf.member_offset("file", "f_mode")?,
            task_signal: btf.member_offset("task_struct", "signal")?,
            signal_live: btf.member_offset("signal_struct", "live")?,
            signal_tty: btf.member_offset("signal_struct", "tty")?,
            bprm_file: btf.member_offset("linux_binprm", "file")?,
            ti_status: match (btf.member_offset("task_struct", "thread_info"), btf.member_offset("thread_info", "status")) {
                (Ok(a), Ok(b)) => a + b,
                _ => monitor_common::NO_FIELD,
            },
            unix: UnixOffsets::from_btf(btf),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `struct s { int a; union { int b; struct { int c; }; }; }` laid out
    /// as a = 0, the union at 8 bytes, c at 4 bytes inside its anonymous struct.
    fn blob() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0c\0int\0".to_vec(); // s=1 a=3 b=5 c=7 int=9
        let mut t = Vec::new();
        let mut ty = |name: u32, info: u32, sz: u32, extra: &[u32]| {
            for v in [name, info, sz].iter().chain(extra) {
                t.extend_from_slice(&v.to_le_bytes());
            }
        };
        ty(9, 1 << 24, 4, &[32]); // 1: int
        ty(0, (KIND_STRUCT << 24) | 1, 8, &[7, 1, 32]); // 2: anon struct { c@32 }
        ty(0, (KIND_UNION << 24) | 2, 8, &[5, 1, 0, 0, 2, 0]); // 3: anon union { b@0, anon struct@0 }
        ty(1, (KIND_STRUCT << 24) | 2, 16, &[3, 1, 0, 0, 3, 64]); // 4: struct s { a@0, union@64 }
        let mut out = Vec::new();
        let hdr = [0x0001_eb9fu32, 24, 0, t.len() as u32, t.len() as u32, strings.len() as u32];
        for (i, v) in hdr.iter().enumerate() {
            if i == 0 {
                out.extend_from_slice(&0xeb9fu16.to_le_bytes());
                out.push(1);
                out.push(0);
            } else {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("s", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("s", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("s", "c").unwrap(), 12);
        assert!(matches!(btf.member_offset("s", "zz"), Err(BtfError::NoMember(..))));
        assert!(matches!(btf.member_offset("nope", "a"), Err(BtfError::NoStruct(_))));
    }

    #[test]
    fn running_kernel_task_struct() {
        // Present on every kernel mcpmon supports; skip only where the test machine has no BTF.
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: {VMLINUX} is not readable");
            return;
        };
        let off = TaskOffsets::from_btf(&btf).unwrap();
        assert!(off.real_parent > 0 && off.tgid > 0 && off.exit_code > 0);
        assert_ne!(off.real_parent, off.tgid);
        // Debian builds AF_UNIX in: the socket-connect kill has its offsets.
        assert_ne!(off.unix.unix_peer, monitor_common::NO_FIELD);
        assert!(off.unix.unix_path_dentry > 0 && off.unix.socket_sk > 0 && off.unix.file_private > 0);
    }
}
