//! Live-update helpers: a local webhook receiver and a reader of the event stream's
//! named events, shared by the tests of the console, the inbox and the notifications.
//! Test helpers: a failure panics, naming what did not happen.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// A local webhook receiver: every POST body, as JSON.
pub async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if data.len() < head_end + 4 + length {
                        continue;
                    }
                    let body = &data[head_end + 4..head_end + 4 + length];
                    let _ = tx.send(serde_json::from_slice(body).unwrap_or(Value::Null));
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    (url, rx)
}

/// The next event named `name` whose data satisfies `check`, skipping others; panics
/// if none comes within `within` or the stream ends.
pub async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<(String, Value)>,
    name: &str,
    check: impl Fn(&Value) -> bool,
    within: Duration,
) -> Value {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let (got, data) = timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {name} event in time"))
            .expect("the event stream ended");
        if got == name && check(&data) {
            return data;
        }
    }
}

/// A local webhook receiver that answers every POST with `head` (a status line and
/// headers, e.g. `307 Temporary Redirect\r\nLocation: http://…`) and counts the POSTs
/// it got; for the tests of what the server does with answers other than 2xx.
pub async fn answering_receiver(head: &str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&posts);
    let answer = format!("HTTP/1.1 {head}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (counted, answer) = (Arc::clone(&counted), answer.clone());
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&data).contains("\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                }
                if data.starts_with(b"POST ") {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, posts)
}

/// Reads the event stream `response` (`GET /api/events`, status checked by the caller)
/// on a task of its own: each `event:`/`data:` block as its name and JSON data (`null`
/// if the data is not JSON). The channel closes when the stream ends.
pub fn read_events(mut response: reqwest::Response) -> mpsc::UnboundedReceiver<(String, Value)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !name.is_empty() {
                    let value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if tx.send((name, value)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}
