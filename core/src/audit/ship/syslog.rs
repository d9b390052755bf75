//! Syslog sink: one RFC 5424 datagram per record, the record's JSON line as the message,
//! to a local socket (`unix:///dev/log`) or a collector (`udp://HOST:PORT`).
//!
//! `<PRI>1 TS HOST gatehouse PID KIND - {record}`: facility authpriv, severity notice
//! (warning for records with an incident id), the record's own timestamp, its event kind as
//! MSGID. The last record sent is kept in `.ship-syslog.cursor` in the log directory, so a
//! restart resumes after it. A unix socket refuses datagrams while the daemon is down (the
//! records wait in the log); UDP cannot tell, so a collector outage over UDP loses what was
//! sent meanwhile.

use std::path::PathBuf;

use super::{ShipError, ShipLine, Sink};
use crate::config::SyslogTarget;

/// Facility `authpriv` (10): security/authorization messages, kept private by syslog
/// daemons.
const FACILITY: u8 = 10;
const NOTICE: u8 = 5;
const WARNING: u8 = 4;
/// Largest datagram sent; a longer record is sent as a stub naming it (seq, ts, kind,
/// length), so the collector sees no gap and knows where to look.
const MAX_DATAGRAM: usize = 60_000;

enum Sock {
    Unix(tokio::net::UnixDatagram),
    Udp(tokio::net::UdpSocket),
}

pub struct SyslogSink {
    target: SyslogTarget,
    sock: Option<Sock>,
    host: String,
    pid: u32,
    cursor_file: PathBuf,
}

impl SyslogSink {
    /// A sink for `target`; its cursor lives in `log_dir`.
    pub fn new(target: SyslogTarget, log_dir: &std::path::Path) -> SyslogSink {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_string());
        SyslogSink {
            target,
            sock: None,
            host,
            pid: std::process::id(),
            cursor_file: log_dir.join(".ship-syslog.cursor"),
        }
    }

    fn err(&self, what: &str, source: std::io::Error) -> ShipError {
        ShipError::Io {
            sink: "syslog",
            what: format!("{what} {}", self.target),
            source,
        }
    }

    async fn connect(&mut self) -> Result<(), ShipError> {
        if self.sock.is_some() {
            return Ok(());
        }
        let sock = match &self.target {
            SyslogTarget::Unix(path) => {
                let s = tokio::net::UnixDatagram::unbound().map_err(|e| self.err("socket", e))?;
                s.connect(path).map_err(|e| self.err("connecting to", e))?;
                Sock::Unix(s)
            }
            SyslogTarget::Udp(addr) => {
                let resolved = tokio::net::lookup_host(addr.as_str())
                    .await
                    .map_err(|e| self.err("resolving", e))?
                    .next()
                    .ok_or_else(|| self.err("resolving", std::io::Error::other("no address")))?;
                let bind = if resolved.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let s = tokio::net::UdpSocket::bind(bind)
                    .await
                    .map_err(|e| self.err("socket for", e))?;
                s.connect(resolved)
                    .await
                    .map_err(|e| self.err("connecting to", e))?;
                Sock::Udp(s)
            }
        };
        self.sock = Some(sock);
        Ok(())
    }

    /// The RFC 5424 datagram of a record.
    fn message(&self, line: &ShipLine) -> String {
        let alert = line.text.contains("\"incident_id\":\"");
        let pri = FACILITY * 8 + if alert { WARNING } else { NOTICE };
        let kind: String = line
            .kind()
            .unwrap_or("-")
            .chars()
            .filter(char::is_ascii_graphic)
            .take(32)
            .collect();
        let kind = if kind.is_empty() {
            "-".to_string()
        } else {
            kind
        };
        let ts = line.ts().unwrap_or("-");
        let head = format!(
            "<{pri}>1 {ts} {} gatehouse {} {kind} - ",
            self.host, self.pid
        );
        if head.len() + line.text.len() <= MAX_DATAGRAM {
            return format!("{head}{}", line.text);
        }
        let stub = serde_json::json!({
            "seq": line.seq,
            "ts": ts,
            "event": {"event": kind},
            "truncated": true,
            "length": line.text.len(),
        });
        format!("{head}{stub}")
    }
}

#[async_trait::async_trait]
impl Sink for SyslogSink {
    fn name(&self) -> &'static str {
        "syslog"
    }

    async fn resume_after(&mut self) -> Result<Option<u64>, ShipError> {
        match tokio::fs::read_to_string(&self.cursor_file).await {
            Ok(t) => Ok(t.trim().parse().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("reading the cursor of", e)),
        }
    }

    async fn send(&mut self, batch: &[ShipLine]) -> (usize, Option<ShipError>) {
        if let Err(e) = self.connect().await {
            return (0, Some(e));
        }
        for (i, line) in batch.iter().enumerate() {
            let msg = self.message(line);
            let r = match &self.sock {
                Some(Sock::Unix(s)) => s.send(msg.as_bytes()).await,
                Some(Sock::Udp(s)) => s.send(msg.as_bytes()).await,
                None => Err(std::io::Error::other("not connected")),
            };
            if let Err(e) = r {
                self.sock = None;
                return (i, Some(self.err("sending to", e)));
            }
        }
        (batch.len(), None)
    }

    async fn committed(&mut self, seq: u64) {
        // Best effort: a lost cursor (read-only disk) resends at most what followed it.
        let tmp = self.cursor_file.with_extension("cursor.tmp");
        if tokio::fs::write(&tmp, format!("{seq}\n")).await.is_ok() {
            let _ = tokio::fs::rename(&tmp, &self.cursor_file).await;
        }
    }
}
