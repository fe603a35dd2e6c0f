//! Observability end to end: a real Prometheus (Debian's) scrapes a real `mcpmon run` while real
//! MCP traffic and rule hits happen; every query of every dashboard panel must return data.
//! Alerts also go to a rotated file and to a webhook that fails first (retry), and repeats are
//! throttled into a count.
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::daemon::{exec_cmd, Daemon, MCPMON};
use serde_json::{json, Value};

/// A webhook endpoint on loopback: answers 500 to the first request, 200 after; keeps bodies.
fn webhook() -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for s in l.incoming().flatten() {
            n += 1;
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let mut s = s;
            if n == 1 {
                let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n");
            } else {
                g.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
            }
        }
    });
    (url, got)
}

struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn prometheus(bin: &Path, target: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mcpmon\n    static_configs:\n      - targets: ['{target}']\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Prometheus { child, addr, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::http_get(&p.addr, "/-/ready").is_none() {
        assert!(Instant::now() < deadline, "prometheus never became ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

fn query(p: &Prometheus, q: &str) -> Vec<Value> {
    let body = common::http_get(&p.addr, &format!("/api/v1/query?query={}", common::urlencode(q))).unwrap_or_else(|| panic!("query failed: {q}"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The panel queries of a Grafana dashboard, with Grafana's variables filled in.
fn panel_queries(path: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = vec![];
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$__range", "10m").replace("$server", ".+");
            out.push((p["title"].as_str().unwrap().to_string(), e));
        }
    }
    out
}

#[test]
fn prometheus_scrapes_and_every_dashboard_panel_has_data() {
    if !common::can_load_ebpf() {
        return;
    }
    let Some(prom_bin) = common::tool("/usr/bin/prometheus") else { return };
    let Some(peers) = common::peers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home/obs");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "KEY\n").unwrap();
    std::fs::write(home.join(".aws/credentials"), "[default]\n").unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("obs:x:4343:4343::{}:/bin/sh\n", home.display())).unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let (hook, received) = webhook();
    let d = Daemon::start(&[
        "--passwd",
        passwd.to_str().unwrap(),
        "--alerts-file",
        alerts.to_str().unwrap(),
        "--alert-webhook",
        &hook,
        "--alert-throttle-secs",
        "60",
    ]);
    let metrics = d.metrics_url();
    let target = metrics.trim_start_matches("http://").trim_end_matches("/metrics").to_string();
    let body = common::http_get(&target, "/metrics").expect("metrics endpoint");
    assert!(body.contains("# TYPE mcpmon_events_total counter"), "{body}");
    // Before anything happened, every series a dashboard queries has a sample (0), so panels
    // show 0 rather than "No data". The duration histogram is per server: none exists yet.
    let dashboards = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut queried = std::collections::BTreeSet::new();
    for f in std::fs::read_dir(&dashboards).unwrap().flatten().filter(|f| f.path().extension().is_some_and(|e| e == "json")) {
        let text = std::fs::read_to_string(f.path()).unwrap();
        for (i, _) in text.match_indices("mcpmon_") {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in queried.iter().filter(|n| !n.starts_with("mcpmon_tool_call_duration_seconds")) {
        assert!(body.lines().any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))), "{name} has no sample at start:\n{body}");
    }
    let prom = prometheus(&prom_bin, &target);

    // Real MCP traffic through the official client SDK and a Python SDK server.
    let server = peers.join("venv/bin/mcp-server-time");
    let socket = d.socket.to_str().unwrap().to_string();
    let cmd = [MCPMON, "exec", "--name", "time", "--socket", &socket, "--", server.to_str().unwrap()];
    common::mcp_client(&peers, json!([{"tool": "get_current_time", "arguments": {"timezone": "UTC"}}, {"tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}]), None, &cmd);
    // A kill in the kernel, and four identical credential reads (one alert + a count of three).
    let key = home.join(".ssh/id_rsa");
    exec_cmd(&d.socket, "thief", &[], &["/bin/sh", "-c", &format!("cat {}", key.display())]).stdout(Stdio::null()).status().unwrap();
    let creds = home.join(".aws/credentials");
    exec_cmd(&d.socket, "nosy", &[], &["/bin/sh", "-c", &format!("for i in 1 2 3 4; do cat {} >/dev/null; done", creds.display())]).status().unwrap();
    d.expect("kill alert", |v| v["kind"] == "alert" && v["rule"]["id"] == "ssh-private-key-read");

    // Prometheus has scraped it all (and enough samples for rate windows).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let calls = query(&prom, "sum(mcpmon_tool_calls_total{server=\"time\"})");
        let kills = query(&prom, "sum(mcpmon_kills_total{where=\"kernel\"})");
        let hooked = query(&prom, "sum(mcpmon_alert_sink_sent_total{sink=\"webhook\"})");
        let val = |r: &Vec<Value>| r.first().and_then(|x| x["value"][1].as_str()).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        if val(&calls) >= 2.0 && val(&kills) >= 1.0 && val(&hooked) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus never saw the traffic: calls {calls:?} kills {kills:?} webhook {hooked:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));

    let dash = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut checked = 0;
    for f in ["mcpmon-fleet.json", "mcpmon-server.json"] {
        for (title, q) in panel_queries(&dash.join(f)) {
            let r = query(&prom, &q);
            assert!(!r.is_empty(), "{f}: panel {title:?}: no data for {q}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} queries");
    // The server dashboard's variable lists the server.
    let servers = query(&prom, "count by (server) (mcpmon_tool_calls_total)");
    assert!(servers.iter().any(|s| s["metric"]["server"] == "time"), "{servers:?}");

    let (_, recs) = d.stop_with_records();
    // Throttled: one credential alert for "nosy", and the three repeats reported as a count.
    let cred: Vec<&Value> = recs.iter().filter(|v| v["kind"] == "alert" && v["rule"]["id"] == "cloud-credentials-read" && v["server"]["name"] == "nosy").collect();
    assert_eq!(cred.len(), 1, "{cred:?}");
    let sup = recs.iter().find(|v| v["kind"] == "alert_suppressed" && v["rule"] == "cloud-credentials-read").expect("suppressed count reported");
    assert_eq!(sup["count"], 3, "{sup}");
    // The alert file and the webhook (after one failed attempt) got the kill alert.
    let file = std::fs::read_to_string(&alerts).unwrap();
    assert!(file.lines().any(|l| l.contains("ssh-private-key-read") && l.contains("killed_in_kernel")), "{file}");
    assert!(file.lines().all(|l| serde_json::from_str::<Value>(l).map(|v| v["kind"] == "alert" || v["kind"] == "alert_suppressed").unwrap_or(false)), "only alerts: {file}");
    let hooked = received.lock().unwrap().clone();
    assert!(hooked.iter().any(|b| b.contains("ssh-private-key-read")), "{hooked:?}");
}
