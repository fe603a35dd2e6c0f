//! Where the daemon's CPU goes under a flood, as a flame graph (issue 16: "prove it with the
//! stage timers and a flame graph"). `perf record` samples every thread of the daemon while a
//! tracked loop runs (DWARF unwinding: the release build keeps no frame pointers, its
//! `.eh_frame` is enough); the stacks are folded (`thread;outer;…;inner count`, what every
//! flame-graph tool reads) and drawn as an SVG here, so no other tool is needed to see them.
//! The stage timers say how long each stage takes; this says what inside them, and what runs
//! outside them (decoding, the JSON writer, the kernel's share).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

/// Samples per second and thread: a few thousand samples in a few seconds' flood.
const HZ: &str = "999";
/// Bytes of user stack copied per sample for DWARF unwinding: perf copies this much at every
/// sample of every thread, which slows the daemon it measures (246 against 175 ticks of daemon
/// CPU for the same million opens, with and without stacks). 4 KiB holds the daemon's own
/// frames; the outermost ones of the deepest stacks (tokio's) are cut.
/// One figure varies from run to run on this machine whatever the stack size: the kernel's copy
/// of the event file's bytes (`copy_folio_from_iter_atomic`), between 3% and 40% of the samples
/// in runs minutes apart. The table says what it was in the run it shows.
const STACK_BYTES: &str = "4096";

pub struct Recording {
    perf: Child,
    data: PathBuf,
}

/// Starts sampling process `pid` (every thread) into `data`.
pub fn record(pid: u32, data: &Path) -> anyhow::Result<Recording> {
    let missing = crate::setup::missing(&["linux-perf"]);
    if !missing.is_empty() {
        crate::setup::apt_install(&missing)?;
    }
    let perf = Command::new("perf")
        .args(["record", "-q", "-F", HZ, "--call-graph", &format!("dwarf,{STACK_BYTES}"), "-p", &pid.to_string(), "-o"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("perf record")?;
    // perf attaches after it has read the process's threads and maps; give it that moment.
    std::thread::sleep(std::time::Duration::from_millis(500));
    Ok(Recording { perf, data: data.to_path_buf() })
}

impl Recording {
    /// Stops sampling and folds what was sampled.
    pub fn finish(self) -> anyhow::Result<BTreeMap<String, u64>> {
        // SAFETY: kill(2) on the perf child this struct owns and has not yet waited for.
        unsafe { libc::kill(self.perf.id() as i32, libc::SIGINT) };
        let out = self.perf.wait_with_output()?;
        if !out.status.success() && !self.data.exists() {
            bail!("perf record: {}", String::from_utf8_lossy(&out.stderr));
        }
        let script = Command::new("perf").args(["script", "-F", "comm,ip,sym,dso", "-i"]).arg(&self.data).stderr(Stdio::null()).output().context("perf script")?;
        Ok(fold(&String::from_utf8_lossy(&script.stdout)))
    }
}

/// `perf script` output to folded stacks: a sample is a header line (the thread's name) and
/// its frames innermost first, then a blank line.
pub fn fold(script: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut thread: Option<String> = None;
    let mut frames: Vec<String> = Vec::new();
    let mut flush = |thread: &mut Option<String>, frames: &mut Vec<String>| {
        if let Some(t) = thread.take() {
            let mut stack = vec![t];
            stack.extend(frames.drain(..).rev());
            *out.entry(stack.join(";")).or_insert(0) += 1;
        }
        frames.clear();
    };
    for line in script.lines() {
        if line.trim().is_empty() {
            flush(&mut thread, &mut frames);
        } else if !line.starts_with(char::is_whitespace) {
            flush(&mut thread, &mut frames);
            thread = Some(line.split_whitespace().next().unwrap_or("?").replace(';', ":"));
        } else if thread.is_some() {
            frames.push(frame(line.trim()));
        }
    }
    flush(&mut thread, &mut frames);
    out
}

/// One frame line (`ADDR SYMBOL+0xOFF (DSO)`) to its function's name: no address, offset or
/// Rust hash; an unknown symbol is named by its object file.
fn frame(line: &str) -> String {
    let rest = line.split_once(' ').map_or("", |(_, r)| r).trim();
    let (sym, dso) = match rest.rfind(" (") {
        Some(i) if rest.ends_with(')') => (&rest[..i], &rest[i + 2..rest.len() - 1]),
        _ => (rest, ""),
    };
    let sym = sym.rfind("+0x").map_or(sym, |i| &sym[..i]);
    let sym = match sym.rfind("::h") {
        Some(i) if sym.len() - i == 19 && sym[i + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => &sym[..i],
        _ => sym,
    };
    let name = if (sym.is_empty() || sym == "[unknown]") && (dso.is_empty() || dso.starts_with('[')) {
        // perf ends an unwinding it could not take further with `ffffffffffffffff [unknown]`.
        "[unknown]".to_string()
    } else if sym.is_empty() || sym == "[unknown]" {
        format!("[{}]", Path::new(dso).file_name().map_or("unknown".into(), |f| f.to_string_lossy()))
    } else if dso.starts_with("[kernel") {
        // The flame-graph convention for the kernel's frames.
        format!("{sym}_[k]")
    } else {
        sym.to_string()
    };
    name.replace(';', ":")
}

/// The summary the report shows: samples per thread, and the functions whose stacks hold most
/// samples (inclusive, each counted once per sample), the daemon's own first.
pub fn summary(folded: &BTreeMap<String, u64>) -> Value {
    let total: u64 = folded.values().sum();
    let mut threads: BTreeMap<&str, u64> = BTreeMap::new();
    let mut inclusive: HashMap<&str, u64> = HashMap::new();
    let mut leaf: HashMap<&str, u64> = HashMap::new();
    let mut kernel = 0;
    for (stack, &n) in folded {
        let mut parts = stack.split(';');
        *threads.entry(parts.next().unwrap_or("?")).or_default() += n;
        let frames: Vec<&str> = parts.collect();
        let mut seen = HashSet::new();
        for f in &frames {
            if seen.insert(*f) {
                *inclusive.entry(f).or_default() += n;
            }
        }
        if let Some(l) = frames.last() {
            *leaf.entry(l).or_default() += n;
            if l.ends_with("_[k]") || l.starts_with("[kernel") {
                kernel += n;
            }
        }
    }
    let share = |n: u64| n as f64 / total.max(1) as f64;
    let top = |m: &HashMap<&str, u64>, keep: &dyn Fn(&str) -> bool, k: usize| -> Vec<Value> {
        let mut v: Vec<(&str, u64)> = m.iter().filter(|(f, _)| keep(f)).map(|(f, n)| (*f, *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter().take(k).map(|(f, n)| json!({"frame": f, "share": share(n)})).collect()
    };
    let own = |f: &str| f.starts_with("monitor::") || f.starts_with("<monitor::");
    json!({
        "samples": total,
        "threads": threads.iter().map(|(t, n)| (t.to_string(), json!(share(*n)))).collect::<serde_json::Map<_, _>>(),
        "in_kernel": share(kernel),
        "inclusive_own": top(&inclusive, &own, 16),
        "self_top": top(&leaf, &|_| true, 12),
    })
}

/// A flame graph of `folded` as SVG: the outermost frame at the bottom, a frame's width its
/// share of the samples; frames narrower than 0.1% are left out (their samples still count in
/// their parents' widths). Hovering a frame shows its name and share.
pub fn svg(folded: &BTreeMap<String, u64>, title: &str) -> String {
    #[derive(Default)]
    struct Node {
        n: u64,
        kids: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for (stack, &n) in folded {
        root.n += n;
        let mut at = &mut root;
        for f in stack.split(';') {
            at = at.kids.entry(f.to_string()).or_default();
            at.n += n;
        }
    }
    fn depth(n: &Node) -> usize {
        1 + n.kids.values().map(depth).max().unwrap_or(0)
    }
    const W: f64 = 1200.0;
    const ROW: f64 = 16.0;
    let rows = depth(&root);
    let height = rows as f64 * ROW + 40.0;
    let total = root.n.max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" font-family=\"monospace\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fdfdf6\"/>\n<text x=\"{}\" y=\"20\" font-size=\"14\" text-anchor=\"middle\">{}</text>\n",
        W / 2.0,
        esc(title)
    );
    fn draw(s: &mut String, name: &str, n: &Node, x: f64, level: usize, total: f64, height: f64) {
        let w = n.n as f64 / total * W;
        if w < W * 0.001 {
            return;
        }
        let y = height - (level as f64 + 1.0) * ROW;
        // A warm colour per name, stable across runs.
        let h = name.bytes().fold(2166136261u32, |a, b| (a ^ b as u32).wrapping_mul(16777619));
        let (r, g, b) = (205 + h % 50, 80 + (h >> 8) % 130, 40 + (h >> 16) % 40);
        let label = format!("{} ({:.1}%)", name, n.n as f64 / total * 100.0);
        let _ = write!(s, "<g><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"rgb({r},{g},{b})\" rx=\"2\"/>", esc(&label), (w - 0.5).max(0.1), ROW - 1.0);
        let fits = ((w - 6.0) / 6.6) as usize;
        if fits >= 3 {
            let text: String = if name.chars().count() <= fits { name.to_string() } else { name.chars().take(fits - 2).chain("..".chars()).collect() };
            let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>", x + 3.0, y + ROW - 4.5, esc(&text));
        }
        s.push_str("</g>\n");
        let mut cx = x;
        for (k, kid) in &n.kids {
            draw(s, k, kid, cx, level + 1, total, height);
            cx += kid.n as f64 / total * W;
        }
    }
    draw(&mut s, "all", &root, 0.0, 0, total, height);
    s.push_str("</svg>\n");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "tokio-runtime-w 4242 [001] 1.000:\n\t    55aa0001 core::fmt::write+0x1a (/x/mcpmon)\n\t    55aa0002 monitor::daemon::Pipeline::on_event::{{closure}}::h0123456789abcdef+0x10 (/x/mcpmon)\n\t    55aa0003 [unknown] (/usr/lib/libc.so.6)\n\tffffffffffffffff [unknown] ([unknown])\n\nmcpmon 4241 [000] 1.001:\n\tffffffff81000001 do_syscall_64+0x71 ([kernel.kallsyms])\n\t    55aa0004 monitor::events::decode::decode+0x5 (/x/mcpmon)\n\n";

    #[test]
    fn perf_script_folds_to_thread_and_frames_outermost_first() {
        let f = fold(SCRIPT);
        assert_eq!(f.get("tokio-runtime-w;[unknown];[libc.so.6];monitor::daemon::Pipeline::on_event::{{closure}};core::fmt::write"), Some(&1));
        assert_eq!(f.get("mcpmon;monitor::events::decode::decode;do_syscall_64_[k]"), Some(&1));
        let s = summary(&f);
        assert_eq!(s["samples"], 2);
        assert_eq!(s["threads"]["mcpmon"], 0.5);
        assert_eq!(s["inclusive_own"].as_array().unwrap().len(), 2);
        let svg = svg(&f, "t");
        assert!(svg.contains("on_event::{{closure}} (50.0%)") && svg.ends_with("</svg>\n"));
    }
}
