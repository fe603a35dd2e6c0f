//! A minimal HTTP/1.1 endpoint: `GET /metrics` answers the Prometheus text format, anything else
//! 404. One request per connection; requests are bounded and time out, so a stuck scraper
//! cannot hold the daemon.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::Metrics;

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, metrics: Arc<Mutex<Metrics>>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => if let Ok((s, _)) = r {
                tokio::spawn(answer(s, metrics.clone()));
            },
            _ = shutdown.changed() => if *shutdown.borrow() { break },
        }
    }
}

async fn answer(mut s: TcpStream, metrics: Arc<Mutex<Metrics>>) {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while n < buf.len() {
            match s.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    n += k;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    if read.is_err() {
        return;
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let (status, body, ctype) = if req.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
        let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
        ("200 OK", body, "text/plain; version=0.0.4; charset=utf-8")
    } else {
        ("404 Not Found", "try /metrics\n".to_string(), "text/plain")
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.shutdown().await;
}
