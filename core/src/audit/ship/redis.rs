//! Redis stream sink (replication): every instance appends its records to one capped stream,
//! `gatehouse:audit:stream`, as entries `instance`, `seq`, `record` (the line as stored).
//!
//! Each instance's last shipped record is kept under `gatehouse:audit:shipped:INSTANCE`,
//! updated by the same script that appends, so a batch retried after a timeout adds only
//! what the stream does not hold yet: no duplicates, no gaps. The stream is capped
//! (`MAXLEN ~`), so it holds the newest records of every instance; a SIEM or another node
//! reading it keeps them when a node is lost with its disk. [`read_stream`] and
//! [`verify_stream`] let `gatehouse audit verify --stream` compare it with the local log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::{ShipError, ShipLine, Sink};
use crate::audit::chain::{self, AuditKey, BodyIn};
use crate::error::AuditError;

pub const STREAM_KEY: &str = "gatehouse:audit:stream";
const CURSOR_PREFIX: &str = "gatehouse:audit:shipped:";
/// Deadline of one Redis call.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Entries read per `XRANGE` call.
const PAGE: usize = 1000;

/// Appends records newer than the instance's cursor and moves the cursor, atomically.
/// KEYS: stream, cursor. ARGV: maxlen, instance, then seq, record pairs.
const APPEND_SCRIPT: &str = r"
local last = tonumber(redis.call('GET', KEYS[2]) or '-1')
for i = 3, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'instance', ARGV[2], 'seq', ARGV[i], 'record', ARGV[i + 1])
    last = seq
  end
end
redis.call('SET', KEYS[2], last)
return last
";

/// This log's instance id (`instance-id` in the log directory, created once): tells the
/// instances' chains apart in the shared stream.
pub fn instance_id(log_dir: &Path) -> std::io::Result<String> {
    let path = log_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut r = [0u8; 8];
    crate::secret::random_bytes(&mut r).map_err(std::io::Error::other)?;
    let id = crate::secret::hex_lower(r);
    std::fs::create_dir_all(log_dir)?;
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

pub struct RedisSink {
    client: redis::Client,
    con: Option<ConnectionManager>,
    instance: String,
    max_len: u64,
    script: redis::Script,
}

impl RedisSink {
    pub fn new(url: &url::Url, instance: String, max_len: u64) -> Result<RedisSink, ShipError> {
        Ok(RedisSink {
            client: crate::store::redis::client(url).map_err(ShipError::Store)?,
            con: None,
            instance,
            max_len,
            script: redis::Script::new(APPEND_SCRIPT),
        })
    }

    fn cursor_key(&self) -> String {
        format!("{CURSOR_PREFIX}{}", self.instance)
    }

    async fn con(&mut self) -> Result<ConnectionManager, ShipError> {
        if let Some(c) = &self.con {
            return Ok(c.clone());
        }
        let c = within(ConnectionManager::new_with_config(
            self.client.clone(),
            crate::store::redis::manager_settings(),
        ))
        .await?;
        self.con = Some(c.clone());
        Ok(c)
    }
}

async fn within<T>(fut: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ShipError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(r) => r.map_err(ShipError::Redis),
        Err(_) => Err(ShipError::Timeout),
    }
}

#[async_trait::async_trait]
impl Sink for RedisSink {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn resume_after(&mut self) -> Result<Option<u64>, ShipError> {
        let mut con = self.con().await?;
        let key = self.cursor_key();
        let v: Option<String> = within(redis::cmd("GET").arg(&key).query_async(&mut con)).await?;
        Ok(v.and_then(|s| s.parse::<i64>().ok())
            .and_then(|n| u64::try_from(n).ok()))
    }

    async fn send(&mut self, batch: &[ShipLine]) -> (usize, Option<ShipError>) {
        let mut con = match self.con().await {
            Ok(c) => c,
            Err(e) => return (0, Some(e)),
        };
        let mut inv = self.script.prepare_invoke();
        inv.key(STREAM_KEY)
            .key(self.cursor_key())
            .arg(self.max_len)
            .arg(&self.instance);
        for l in batch {
            inv.arg(l.seq).arg(&l.text);
        }
        match within(inv.invoke_async::<i64>(&mut con)).await {
            Ok(last) => {
                let held = batch
                    .iter()
                    .take_while(|l| i64::try_from(l.seq).is_ok_and(|s| s <= last))
                    .count();
                (held, None)
            }
            // Nothing is known to be held: the next attempt asks the cursor again.
            Err(e) => (0, Some(e)),
        }
    }
}

/// One entry of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub instance: String,
    pub seq: u64,
    pub record: String,
}

/// Reads the whole stream (in pages).
pub async fn read_stream(url: &url::Url) -> Result<Vec<StreamEntry>, ShipError> {
    let client = crate::store::redis::client(url).map_err(ShipError::Store)?;
    let mut con = within(client.get_multiplexed_async_connection()).await?;
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        // Each entry: [id, [field, value, ...]].
        let reply: Vec<(String, Vec<String>)> = within(
            redis::cmd("XRANGE")
                .arg(STREAM_KEY)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut con),
        )
        .await?;
        let n = reply.len();
        for (id, fields) in reply {
            let get = |k: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv.first().is_some_and(|f| f == k))
                    .and_then(|kv| kv.get(1).cloned())
                    .unwrap_or_default()
            };
            out.push(StreamEntry {
                instance: get("instance"),
                seq: get("seq").parse().unwrap_or(u64::MAX),
                record: get("record"),
                id: id.clone(),
            });
            start = format!("({id}");
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// What the stream's copy showed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamReport {
    /// Records per instance.
    pub instances: BTreeMap<String, u64>,
    /// Records of this instance compared with the local log.
    pub compared: u64,
}

/// Checks the stream's copy: each instance's records form a chain (consecutive, linked,
/// MAC valid with the shared secret) from its oldest entry kept, and every record of
/// `instance` (this log's) is in the local log unchanged — so records removed or changed
/// locally, at the tail too, are found.
pub fn verify_stream(
    entries: &[StreamEntry],
    key: &AuditKey,
    log_dir: &Path,
    instance: &str,
) -> Result<StreamReport, AuditError> {
    let mut report = StreamReport::default();
    let mut chains: BTreeMap<&str, (u64, String)> = BTreeMap::new();
    let mut ours: BTreeMap<u64, String> = BTreeMap::new();
    let bad = |e: &StreamEntry, problem: String| AuditError::Broken {
        path: std::path::PathBuf::from(format!("redis:{STREAM_KEY}#{}", e.id)),
        problem: format!("instance {}: {problem}", e.instance),
    };
    for e in entries {
        let (body, mac) = chain::split_line(&e.record)
            .ok_or_else(|| bad(e, format!("record {} is malformed in the stream", e.seq)))?;
        if !key.mac_ok(body.as_bytes(), mac) {
            return Err(bad(
                e,
                format!(
                    "record {} in the stream was changed: its MAC does not verify",
                    e.seq
                ),
            ));
        }
        let rec: BodyIn = serde_json::from_str(&body)
            .map_err(|_| bad(e, format!("record {} is not JSON", e.seq)))?;
        if rec.seq != e.seq {
            return Err(bad(
                e,
                format!("entry says record {} but holds record {}", e.seq, rec.seq),
            ));
        }
        if let Some((last, hash)) = chains.get(e.instance.as_str())
            && (rec.seq != last + 1 || !chain::ct_str_eq(&rec.prev, hash))
        {
            return Err(bad(
                e,
                format!(
                    "record {} does not follow record {last} in the stream: records are missing or reordered",
                    rec.seq
                ),
            ));
        }
        chains.insert(&e.instance, (rec.seq, chain::line_hash(&e.record)));
        *report.instances.entry(e.instance.clone()).or_default() += 1;
        if e.instance == instance {
            ours.insert(rec.seq, chain::line_hash(&e.record));
        }
    }
    let (Some(&first), Some(&last)) = (ours.keys().next(), ours.keys().next_back()) else {
        return Ok(report);
    };
    // Walk the local log over the same records.
    let mut found = 0u64;
    for path in chain::segments(log_dir).map_err(|source| AuditError::Io {
        path: log_dir.to_path_buf(),
        source,
    })? {
        let text = std::fs::read_to_string(&path).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        for (i, line) in text.lines().enumerate() {
            let Some(seq) = crate::audit::head::seq_of(line.as_bytes()) else {
                continue;
            };
            if seq < first || seq > last {
                continue;
            }
            if let Some(h) = ours.get(&seq) {
                if !chain::ct_str_eq(h, &chain::line_hash(line)) {
                    return Err(AuditError::Tampered {
                        path: path.clone(),
                        line: i + 1,
                        problem: format!(
                            "record {seq} differs from the copy in the Redis stream: it was changed locally"
                        ),
                    });
                }
                found += 1;
            }
        }
    }
    if found < ours.len() as u64 {
        let missing: Vec<u64> = {
            let mut seen = std::collections::BTreeSet::new();
            for path in chain::segments(log_dir).unwrap_or_default() {
                if let Ok(t) = std::fs::read_to_string(&path) {
                    seen.extend(
                        t.lines()
                            .filter_map(|l| crate::audit::head::seq_of(l.as_bytes())),
                    );
                }
            }
            ours.keys().filter(|s| !seen.contains(s)).copied().collect()
        };
        let (a, b) = (
            missing.first().copied().unwrap_or(first),
            missing.last().copied().unwrap_or(last),
        );
        return Err(AuditError::Broken {
            path: log_dir.to_path_buf(),
            problem: format!(
                "{} record(s) of this instance held by the Redis stream are missing from the local log (records {a}..{b}): they were removed locally",
                missing.len()
            ),
        });
    }
    report.compared = found;
    Ok(report)
}
