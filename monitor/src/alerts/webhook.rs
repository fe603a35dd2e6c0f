//! HTTP webhook: each alert is POSTed as JSON (`http://host:port/path`; put a TLS-terminating
//! relay in front for https). Failed posts are retried with backoff; an alert that exhausts its
//! retries is dropped and counted. The queue in front is bounded, so a dead endpoint never slows
//! the event path.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use crate::metrics::Metrics;

pub const RETRIES: u32 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or("only http:// URLs (use a local TLS relay for https)")?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port {p:?}"))?),
            None => (hostport, 80),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Self { host: host.into(), port, path: path.into() })
    }
}

/// One POST; Ok(status code).
pub async fn post(t: &Target, body: &str) -> Result<u16, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect((t.host.as_str(), t.port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nUser-Agent: mcpmon\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        t.path,
        t.host,
        t.port,
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut head)).await.map_err(|_| "response timed out".to_string())?.map_err(|e| format!("read: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad response {line:?}"))
}

pub async fn run(t: Target, mut rx: mpsc::Receiver<String>, metrics: Arc<Mutex<Metrics>>) {
    while let Some(body) = rx.recv().await {
        let mut delivered = false;
        for attempt in 0..=RETRIES {
            match post(&t, &body).await {
                Ok(code) if (200..300).contains(&code) => {
                    delivered = true;
                    break;
                }
                Ok(code) => tracing::warn!(host = %t.host, port = t.port, path = %t.path, status = code, attempt = attempt + 1, "webhook refused"),
                Err(e) => tracing::warn!(host = %t.host, port = t.port, path = %t.path, error = %e, attempt = attempt + 1, "webhook failed"),
            }
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        if let Ok(mut m) = metrics.lock() {
            if delivered { m.sink("webhook", 1, 0) } else { m.sink("webhook", 0, 1) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn urls() {
        assert_eq!(Target::parse("http://127.0.0.1:8080/hook").unwrap(), Target { host: "127.0.0.1".into(), port: 8080, path: "/hook".into() });
        assert_eq!(Target::parse("http://siem.local").unwrap().port, 80);
        assert!(Target::parse("https://x").is_err() && Target::parse("http://:80/").is_err());
    }
}
