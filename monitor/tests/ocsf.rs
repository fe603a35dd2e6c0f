//! `--alert-format ocsf` end to end: the real daemon with the shipped rules, a real process
//! under `mcpmon exec` reading an SSH key (killed) and cloud credentials (denied); the alerts on
//! the event stream, in the alert file and at the webhook are OCSF Detection Findings that the
//! vendored OCSF schema (tests/data/ocsf/1.6.0) accepts, while events stay in mcpmon's format.
mod common;
mod ocsf_schema;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use common::daemon::{exec_cmd, Daemon};
use serde_json::{json, Value};

const CLASS: &str = "events/findings/detection_finding.json";

fn schema() -> ocsf_schema::Schema {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ocsf").join(monitor::alerts::ocsf::OCSF_VERSION);
    let s = ocsf_schema::Schema::load(&root);
    assert_eq!(s.version, monitor::alerts::ocsf::OCSF_VERSION, "vendored schema is the version the records claim");
    s
}

fn assert_valid(s: &ocsf_schema::Schema, v: &Value) {
    let errs = s.validate(CLASS, v);
    assert!(errs.is_empty(), "not a valid OCSF {} Detection Finding:\n{}\n{v:#}", s.version, errs.join("\n"));
    assert_eq!(v["class_uid"].as_u64(), Some(s.class_uid(CLASS)));
    assert_eq!(v["category_uid"].as_u64(), Some(s.class_uid(CLASS) / 1000));
    assert_eq!(v["type_uid"].as_u64(), Some(v["class_uid"].as_u64().unwrap() * 100 + v["activity_id"].as_u64().unwrap()));
}

/// The validator itself must reject what OCSF rejects (else every other check here is void).
#[test]
fn the_validator_rejects_broken_findings() {
    let s = schema();
    let a = json!({"kind": "alert", "schema": 1, "time": "2026-12-01T06:05:21.000000Z", "host": "h", "rule": {"id": "r", "severity": "high", "mitre": ["T1059"]}, "action": {"type": "alert", "result": "alerted"}, "summary": "s", "process": {"pid": 1, "exe": "/bin/sh", "argv": ["sh"], "uid": 0, "ppid": 0, "ancestry": [1]}});
    let good = monitor::alerts::ocsf::to_ocsf(&a).unwrap();
    assert_valid(&s, &good);
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        s.validate(CLASS, &v)
    };
    assert!(!broken(&|v| v["severity_id"] = 9.into()).is_empty(), "enum");
    assert!(!broken(&|v| v["finding_info"]["mcp_tool"] = "x".into()).is_empty(), "unknown attribute");
    assert!(!broken(&|v| drop(v["finding_info"].as_object_mut().unwrap().remove("uid"))).is_empty(), "required uid");
    assert!(!broken(&|v| v["evidences"][0]["process"]["pid"] = "1".into()).is_empty(), "type");
    assert!(!broken(&|v| v["evidences"][0] = json!({})).is_empty(), "at_least_one");
    assert!(!broken(&|v| v["time"] = "2026-12-01".into()).is_empty(), "timestamp");
}

/// Incidents and suppressed repeats (made by the daemon's own code paths) are valid findings too.
#[test]
fn incidents_and_suppressions_are_valid_findings() {
    use monitor::{
        alerts::{incident::Incidents, ocsf::to_ocsf, throttle::Throttle},
        output::alert::{ActionRecord, Alert, ProcessRef, RuleRef, ServerRef},
        rules::Severity,
    };
    let s = schema();
    let mut inc = Incidents::new(Duration::from_secs(5));
    let t0 = Instant::now();
    let alert = |rule: &str, sev: Severity| {
        let mut a = Alert::new(RuleRef::builtin(rule, sev, "d", &["execution"], &["T1059.004"]), ActionRecord::alerted(), rule.into(), "2026-12-01T06:05:21.000000Z".into());
        a.host = Some("h".into());
        a.server = Some(ServerRef::named(7, "s"));
        a.process = Some(ProcessRef { pid: 42, ppid: Some(Some(41)), uid: 0, exe: Some(Some("/bin/sh".into())), argv: Some(vec!["sh".into()]), ancestry: Some(vec![42, 41]) });
        a.file = Some(Some("/etc/x".into()));
        a.mcp = Some(json!({"state": "call", "tool": "run", "id": "1"}));
        a
    };
    let first = inc.admit(alert("a", Severity::Medium), t0).unwrap();
    assert_valid(&s, &to_ocsf(&serde_json::to_value(monitor::output::Record::Alert(Box::new(first))).unwrap()).unwrap());
    assert!(inc.admit(alert("b", Severity::Low), t0).is_none(), "folded");
    let closed = inc.flush(t0 + Duration::from_secs(60), true, "2026-12-01T06:05:30.000000Z");
    assert_eq!(closed.len(), 1);
    let o = to_ocsf(&serde_json::to_value(&closed[0]).unwrap()).unwrap();
    assert_valid(&s, &o);
    assert_eq!(o["count"], 2);
    let mut th = Throttle::new(Duration::from_secs(10));
    for _ in 0..3 {
        th.admit(&alert("c", Severity::Low), t0);
    }
    let rep = th.flush(t0 + Duration::from_secs(60), true, "2026-12-01T06:05:40.000000Z");
    assert_eq!(rep.len(), 1);
    let o = to_ocsf(&serde_json::to_value(&rep[0]).unwrap()).unwrap();
    assert_valid(&s, &o);
    assert_eq!(o["count"], 2, "two repeats after the first");
}

/// A webhook receiver on loopback: every POST body, answered 200.
fn receiver() -> (String, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/siem", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() {
                let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = (&c).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, rx)
}

/// A home with an SSH key and AWS credentials, found through a test passwd; the shipped rules.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let home = dir.join("users/mallory");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    let key = home.join(".ssh/id_ed25519");
    std::fs::write(&key, "SECRET-KEY\n").unwrap();
    let aws = home.join(".aws/credentials");
    std::fs::write(&aws, "[default]\naws_secret_access_key=SECRET\n").unwrap();
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, format!("root:x:0:0:root:/root:/bin/sh\nmallory:x:4242:4242::{}:/bin/sh\n", home.display())).unwrap();
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".yaml") {
            std::fs::copy(e.path(), rules.join(e.file_name())).unwrap();
        }
    }
    (key, aws, passwd, rules)
}

fn finding_for<'a>(recs: &'a [Value], server: &str, rule: &str) -> Option<&'a Value> {
    recs.iter().find(|v| v["class_uid"] == 2004 && v["finding_info"]["analytic"]["uid"] == rule && v["unmapped"]["mcpmon"]["server"]["name"] == server)
}

#[test]
fn real_alerts_are_valid_ocsf_on_the_stream_the_file_and_the_webhook() {
    if !common::can_load_ebpf() {
        return;
    }
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let (key, aws, passwd, rules) = setup(dir.path());
    let (url, posts) = receiver();
    let alerts_file = dir.path().join("alerts.jsonl");
    let d = Daemon::start(&[
        "--passwd", passwd.to_str().unwrap(), "--rules", rules.to_str().unwrap(), "--alert-format", "ocsf",
        "--alerts-file", alerts_file.to_str().unwrap(), "--alert-webhook", &url,
    ]);
    d.expect("rules_loaded", |v| v["kind"] == "rules_loaded");
    let run = |name: &str, script: String| exec_cmd(&d.socket, name, &[], &["/bin/sh", "-c", &script]).stdin(Stdio::null()).output().unwrap();
    let out = run("keyreader", format!("cat {}", key.display()));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SECRET"), "the key was read");
    let out = run("awsreader", format!("cat {}; echo status=$?", aws.display()));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SECRET"), "the credentials were read");

    // The event stream: the alerts as findings, the kernel events native.
    let ssh = d.expect("an OCSF finding for the SSH key read", |v| finding_for(std::slice::from_ref(v), "keyreader", "ssh-private-key-read").is_some());
    let cloud = d.expect("an OCSF finding for the credentials read", |v| finding_for(std::slice::from_ref(v), "awsreader", "cloud-credentials-read").is_some());
    for f in [&ssh, &cloud] {
        assert_valid(&s, f);
        assert!(f.get("kind").is_none(), "no native fields at the top: {f}");
    }
    assert_eq!((ssh["severity_id"].as_u64(), ssh["action_id"].as_u64(), ssh["disposition_id"].as_u64()), (Some(5), Some(2), Some(2)), "{ssh}");
    assert_eq!(ssh["unmapped"]["mcpmon"]["action"]["result"], "denied_and_killed_in_kernel");
    let ev = &ssh["evidences"][0];
    assert_eq!(ev["file"]["path"], key.display().to_string());
    assert_eq!(ev["process"]["file"]["name"], "cat");
    assert!(ssh["finding_info"]["attacks"].as_array().unwrap().iter().any(|a| a["sub_technique"]["uid"] == "T1552.004"), "{ssh}");
    assert_eq!(cloud["disposition_id"], 2, "denied: {cloud}");
    let pid = ev["process"]["pid"].clone();
    d.expect("the kernel event, native", |v| v["kind"] == "open" && v["pid"] == pid);
    d.expect("the killed reader's exit, native", |v| v["kind"] == "exit" && v["pid"] == pid && v["signal"] == 9);
    assert!(d.records().iter().all(|v| v["kind"] != "alert"), "no native alert on the stream");

    // The sinks carry the same findings.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut hooked: Vec<Value> = vec![];
    while hooked.len() < 2 && Instant::now() < deadline {
        if let Ok(b) = posts.recv_timeout(Duration::from_millis(200)) {
            hooked.push(serde_json::from_str(&b).unwrap());
        }
    }
    let filed = || -> Vec<Value> { common::json_lines(&alerts_file) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while filed().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (sink, recs) in [("webhook", hooked), ("file", filed())] {
        for (server, rule, want) in [("keyreader", "ssh-private-key-read", &ssh), ("awsreader", "cloud-credentials-read", &cloud)] {
            let f = finding_for(&recs, server, rule).unwrap_or_else(|| panic!("{sink}: no finding for {rule}: {recs:?}"));
            assert_valid(&s, f);
            assert_eq!(f, want, "{sink} carries what the stream does");
        }
    }
    let (_, recs) = d.stop_with_records();
    assert!(recs.iter().any(|v| v["kind"] == "stats"), "non-alert records stay native");
}
