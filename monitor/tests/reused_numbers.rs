//! Inode numbers of protected files that are gone. ext4 gives a freed number to the next file
//! made on the filesystem, at once: a harmless file that gets the number of a deleted key, or of
//! a `~/.bashrc` that `sed -i` replaced, is not the protected file, and a tracked process that
//! made it must be able to read and write it. Each trial retires a protected file while a
//! tracked process makes files until one has its number, then uses that file.
mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::MetadataExt,
    process::Stdio,
};

use common::{
    daemon::Daemon,
    user::{start, start_without_gate, User},
};

/// Makes `notes` in the directory it is given until it has the inode number it is given (or
/// for 3 s), then writes and reads it again.
const MAKER: &str = "import os,sys,time\nprint('ready',flush=True)\nd,want=sys.stdin.readline().split()\np=os.path.join(d,'notes')\nend=time.time()+3\nwhile time.time()<end:\n    open(p,'w').write('harmless\\n')\n    if os.stat(p).st_ino==int(want):\n        open(p,'a').write('more\\n')\n        print('reused',open(p).read(),flush=True)\n        sys.exit(0)\n    os.unlink(p)\nprint('never',flush=True)\n";

/// How a protected file is retired.
#[derive(Clone, Copy)]
enum Retire {
    /// Deleted (a credential removed, a `~/.ssh` remade).
    Delete,
    /// Replaced by a new file renamed over it (`sed -i`, most editors, tools rewriting a file).
    Replace,
}

/// A read-protected credential deleted, with the gate.
#[test]
fn a_deleted_credentials_number_given_to_a_new_file_is_not_refused() {
    trials("reused", start, ".aws/credentials", Retire::Delete);
}

/// The same without the gate, where the plan's holds (`keep.rs`) keep the numbers.
#[test]
fn a_deleted_credentials_number_given_to_a_new_file_is_not_refused_without_the_gate() {
    trials("reusednogate", start_without_gate, ".aws/credentials", Retire::Delete);
}

/// A write-protected file (`persistence-write`, killed in the kernel) replaced.
#[test]
fn a_replaced_bashrcs_number_given_to_a_new_file_is_not_refused() {
    trials("reusedrc", start, ".bashrc", Retire::Replace);
}

fn trials(tag: &str, start: fn(&std::path::Path, &str) -> Daemon, rel: &str, retire: Retire) {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add(tag, true);
    let file = u.write(rel, "SECRET-OR-RC-5f3a\n");
    let dir = file.parent().unwrap().to_path_buf();
    let d = start(tmp.path(), "");
    let trials = 24;
    let (mut reused, mut refused) = (0, 0);
    for i in 0..trials {
        if i > 0 || matches!(retire, Retire::Delete) {
            u.write(rel, "SECRET-OR-RC-5f3a\n");
        }
        // Half the trials retire a file the plan has seen, half one just made.
        if i % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_millis(400));
        }
        let mut w = u.exec(&d, "reuser", &[common::python(), "-c", MAKER]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(w.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready");
        let ino = std::fs::metadata(&file).unwrap().ino();
        match retire {
            Retire::Delete => std::fs::remove_file(&file).unwrap(),
            Retire::Replace => {
                let new = u.write(&format!("{rel}.sed-new"), "# edited\n");
                std::fs::rename(new, &file).unwrap();
            }
        }
        writeln!(w.stdin.as_mut().unwrap(), "{} {ino}", dir.display()).unwrap();
        let mut got = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut got);
        let _ = w.wait();
        if !got.starts_with("never") {
            reused += 1;
            if !got.contains("harmless\nmore") {
                refused += 1;
            }
        }
        let _ = std::fs::remove_file(dir.join("notes"));
    }
    let alerts: Vec<String> = d.records().iter().filter(|v| v["kind"] == "alert").map(|v| v["summary"].to_string()).collect();
    assert_eq!(refused, 0, "{trials} trials, {reused} numbers reused: {refused} new files refused: {alerts:?}");
    assert!(reused >= trials / 2, "{trials} trials: only {reused} numbers reused");
    d.stop();
}
