//! tracefs: make sure it is mounted (aya attaches tracepoints through it) and read tracepoint
//! field offsets from the format files, so the kernel programs do not hard-code layouts of
//! non-syscall tracepoints, which change between kernel versions.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it on {path} failed: {source}")]
    Mount { path: String, source: std::io::Error },
    #[error("tracepoint {0}:{1} does not exist on this kernel ({2})")]
    NoTracepoint(String, String, std::io::Error),
    #[error("tracepoint {0}:{1} has no field {2}")]
    NoField(String, String, String),
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting it on /sys/kernel/tracing when no tracefs is mounted yet.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    if let Some(p) = CANDIDATES.iter().map(Path::new).find(|p| p.join("events").is_dir()) {
        return Ok(p.to_path_buf());
    }
    let target = CANDIDATES[0];
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    let (src, tgt, fstype) = (c("tracefs"), c(target), c("tracefs"));
    // SAFETY: valid NUL-terminated strings, no data argument.
    let r = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(TracefsError::Mount { path: target.into(), source: std::io::Error::last_os_error() });
    }
    Ok(PathBuf::from(target))
}

pub fn exists(root: &Path, category: &str, name: &str) -> bool {
    root.join("events").join(category).join(name).is_dir()
}

/// Offset of `field` in the record of tracepoint `category:name`.
pub fn field_offset(root: &Path, category: &str, name: &str, field: &str) -> Result<u32, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| TracefsError::NoTracepoint(category.into(), name.into(), e))?;
    parse_offset(&text, field).ok_or_else(|| TracefsError::NoField(category.into(), name.into(), field.into()))
}

/// Parses lines like `\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;`.
fn parse_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?.split(';').next()?;
        // The field name is the last word of the declaration, minus any array suffix.
        let fname = decl.split_whitespace().last()?.split('[').next()?;
        if fname != field {
            return None;
        }
        let off = line.split(';').find_map(|p| p.trim().strip_prefix("offset:"))?;
        off.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "name: sched_process_exec\nID: 313\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;\n";

    #[test]
    fn parses_offsets() {
        assert_eq!(parse_offset(EXEC, "filename"), Some(8));
        assert_eq!(parse_offset(EXEC, "pid"), Some(12));
        assert_eq!(parse_offset(EXEC, "old_pid"), Some(16));
        assert_eq!(parse_offset(EXEC, "comm"), Some(20));
        assert_eq!(parse_offset(EXEC, "nope"), None);
    }
}
