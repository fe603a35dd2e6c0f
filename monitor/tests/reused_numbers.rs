//! Inode numbers of protected objects that are gone. ext4 gives a freed number to the next file
//! made on the filesystem, at once: a harmless file that gets the number of a deleted key, or of
//! a `~/.bashrc` that `sed -i` replaced, is not the protected file, and a tracked process that
//! made it must be able to read and write it (a directory: a file made in it). Each trial
//! retires a protected object while a tracked process makes files (or directories) until one
//! has its number, then uses it.
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
/// for 3 s), then writes and reads it again; as a directory (`dir`), a file in it.
const MAKER: &str = r#"import os,sys,time
print('ready',flush=True)
d,want,kind=sys.stdin.readline().split()
p=os.path.join(d,'notes')
end=time.time()+3
while time.time()<end:
    if kind=='dir':
        os.mkdir(p)
    else:
        open(p,'w').write('harmless\n')
    if os.stat(p).st_ino==int(want):
        f=os.path.join(p,'list.txt') if kind=='dir' else p
        if kind=='dir':
            open(f,'w').write('harmless\n')
        open(f,'a').write('more\n')
        print('reused',open(f).read(),flush=True)
        sys.exit(0)
    os.rmdir(p) if kind=='dir' else os.unlink(p)
print('never',flush=True)
"#;

/// How a protected object is retired.
#[derive(Clone, Copy)]
enum Retire {
    /// Deleted (a credential removed, a `~/.ssh` remade).
    Delete,
    /// Replaced by a new file renamed over it (`sed -i`, most editors, tools rewriting a file).
    Replace,
    /// An empty directory removed (`rm -r`, `pass rm -r`).
    RemoveDir,
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

/// An empty directory of a `**` tree (`~/.password-store/new`: the kernel refuses a file made
/// in it until a plan has seen it; the gate holds only directories with protected files)
/// removed: a new directory that gets its number, in the home, is no part of the tree, and
/// neither is the file made in it.
#[test]
fn a_removed_secret_directorys_number_given_to_a_new_directory_is_not_refused() {
    trials("reuseddir", start, ".password-store/new", Retire::RemoveDir);
}

fn trials(tag: &str, start: fn(&std::path::Path, &str) -> Daemon, rel: &str, retire: Retire) {
    if !common::can_load_ebpf() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let u = User::add(tag, true);
    let object = u.home.join(rel);
    // What is retired is made again for each trial; the maker makes its file next to it, or
    // its directory in the home.
    let make = || match retire {
        Retire::RemoveDir => {
            std::fs::create_dir_all(&object).unwrap();
            u.chown(&object);
        }
        _ => {
            u.write(rel, "SECRET-OR-RC-5f3a\n");
        }
    };
    let (maker_dir, kind) = match retire {
        Retire::RemoveDir => {
            u.write(".password-store/web/site.gpg", "SECRET-OR-RC-5f3a\n");
            (u.home.clone(), "dir")
        }
        _ => (object.parent().unwrap().to_path_buf(), "file"),
    };
    make();
    let d = start(tmp.path(), "");
    let trials = 24;
    let (mut reused, mut refused) = (0, 0);
    for i in 0..trials {
        if i > 0 || !matches!(retire, Retire::Replace) {
            make();
        }
        // Half the trials retire an object the plan has seen, half one just made.
        if i % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_millis(400));
        }
        let mut w = u.exec(&d, "reuser", &[common::python(), "-c", MAKER]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(w.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready");
        let ino = std::fs::metadata(&object).unwrap().ino();
        match retire {
            Retire::Delete => std::fs::remove_file(&object).unwrap(),
            Retire::Replace => {
                let new = u.write(&format!("{rel}.sed-new"), "# edited\n");
                std::fs::rename(new, &object).unwrap();
            }
            Retire::RemoveDir => std::fs::remove_dir_all(&object).unwrap(),
        }
        writeln!(w.stdin.as_mut().unwrap(), "{} {ino} {kind}", maker_dir.display()).unwrap();
        let mut got = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut got);
        let _ = w.wait();
        if !got.starts_with("never") {
            reused += 1;
            if !got.contains("harmless\nmore") {
                refused += 1;
            }
        }
        let _ = std::fs::remove_dir_all(maker_dir.join("notes"));
        let _ = std::fs::remove_file(maker_dir.join("notes"));
    }
    let alerts: Vec<String> = d.records().iter().filter(|v| v["kind"] == "alert").map(|v| v["summary"].to_string()).collect();
    assert_eq!(refused, 0, "{trials} trials, {reused} numbers reused: {refused} new files refused: {alerts:?}");
    assert!(reused >= trials / 2, "{trials} trials: only {reused} numbers reused");
    d.stop();
}
