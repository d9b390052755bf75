//! An alert webhook receiver: HTTP/1.1 on a loopback port (keep-alive, content-length
//! bodies), recording every POST (its `Idempotency-Key` and JSON body) and answering 200, or
//! 503 to the next calls after [`Webhook::fail_next`]; `stop` closes the port (calls are
//! refused) and `resume` opens it again on the same port.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub struct Call {
    pub idempotency_key: Option<String>,
    pub body: Value,
    pub at: Instant,
}

/// What the receiver shares with its connections.
#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<Call>>,
    /// How many of the next calls are answered 503.
    fail_next: AtomicUsize,
}

pub struct Webhook {
    pub port: u16,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

async fn serve_conn(mut s: tokio::net::TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
        buf.drain(..head_end + len);
        shared.calls.lock().unwrap().push(Call {
            idempotency_key: header("idempotency-key"),
            body,
            at: Instant::now(),
        });
        let failing = shared
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let status: &[u8] = if failing {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        };
        if s.write_all(status).await.is_err() {
            return;
        }
    }
}

fn spawn(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.spawn(serve_conn(s, shared.clone()));
        }
    })
}

impl Webhook {
    pub async fn start() -> Webhook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let task = Some(spawn(listener, shared.clone()));
        Webhook { port, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Closes the port and every connection: calls are refused.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.task = Some(spawn(listener, self.shared.clone()));
    }

    /// Answers the next `n` calls 503 (each still recorded).
    pub fn fail_next(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Waits (deadline `limit`) for a call matching `pred`.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Call) -> bool,
    ) -> Call {
        let start = Instant::now();
        loop {
            if let Some(c) = self.calls().into_iter().find(|c| pred(c)) {
                return c;
            }
            assert!(
                start.elapsed() < limit,
                "no webhook call {what} within {limit:?}; calls: {:#?}",
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
