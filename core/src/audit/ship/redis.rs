//! Redis stream sink (replication): every instance appends its records to one capped stream,
//! `gatehouse:audit:stream`, one entry per shipped batch: `instance`, `first` and `last` (the
//! batch's sequence numbers) and `records` (its lines as stored, each ending in a newline).
//! One entry per batch, not per record: appending a record as its own entry cost Redis more
//! CPU than the whole request it recorded (a script step and a stream insertion each).
//!
//! An entry's id is `N-0`, N the number of records appended to the stream so far, this
//! batch's included (kept in `gatehouse:audit:stream:records`), so the cap `stream_max_len`
//! counts records, not entries: `MINID ~ N-max_len+1` drops the entries whose records are all
//! older than the newest `max_len`.
//!
//! Each instance's last shipped record is kept under `gatehouse:audit:shipped:INSTANCE`: a
//! batch appends only the records after it and then moves it, so a batch retried after a
//! timeout adds only what the stream does not hold yet. The records travel as a plain
//! `XADD` argument, never through a script (Lua costs Redis about 1.3 ns a byte of
//! argument); a crash between the append and the move sends the batch again, and readers
//! keep one copy of a record seen twice ([`read_stream`]). Two instances racing for the next
//! id: the one that lost takes a later count and appends again. A SIEM or another node reading
//! the stream keeps the records when a node is lost with its disk. [`read_stream`] (which
//! also reads entries of one record each, `instance`, `seq`, `record`, as older versions
//! wrote them) and [`verify_stream`] let `gatehouse audit verify --stream` compare it with
//! the local log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{ShipError, ShipLine, Sink};
use crate::audit::chain::{self, AuditKey, BodyIn};
use crate::error::AuditError;

pub const STREAM_KEY: &str = "gatehouse:audit:stream";
const CURSOR_PREFIX: &str = "gatehouse:audit:shipped:";
/// Records appended to the stream so far (the ids of its entries).
const COUNT_KEY: &str = "gatehouse:audit:stream:records";
/// Deadline of one Redis call.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Entries read per `XRANGE` call.
const PAGE: usize = 1000;

/// Raises the record count to at least ARGV[1] (after it was lost, or behind a stream an
/// older version wrote, whose ids are times). KEYS: record count.
const RAISE_SCRIPT: &str = r"
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
if c < want then
  redis.call('SET', KEYS[1], want)
  return want
end
return c
";

/// How often an append whose id lost a race to another instance's is retried.
const ID_RETRIES: usize = 8;

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
    /// The instance's cursor as this sink last read or wrote it; `None`: read it again
    /// (at the start and after an error).
    cursor: Option<Option<i64>>,
    instance: String,
    max_len: u64,
    raise: redis::Script,
}

impl RedisSink {
    pub fn new(url: &url::Url, instance: String, max_len: u64) -> Result<RedisSink, ShipError> {
        Ok(RedisSink {
            client: crate::store::redis::client(url).map_err(ShipError::Store)?,
            con: None,
            cursor: None,
            instance,
            max_len,
            raise: redis::Script::new(RAISE_SCRIPT),
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
        self.cursor = None;
        let mut con = self.con().await?;
        let key = self.cursor_key();
        let v: Option<String> = within(redis::cmd("GET").arg(&key).query_async(&mut con)).await?;
        Ok(v.and_then(|s| s.parse::<i64>().ok())
            .and_then(|n| u64::try_from(n).ok()))
    }

    /// Appends the records after the instance's cursor as one entry, then moves the cursor
    /// (read from Redis at the start and after an error, else as this sink last wrote it).
    /// No script carries the records: passing a batch through Lua cost Redis more than the
    /// append (about 1.3 ns a byte). A crash between the append and the cursor's move sends
    /// the batch again: [`read_stream`] keeps one copy of a record seen twice.
    async fn send(&mut self, batch: &[ShipLine]) -> (usize, Option<ShipError>) {
        let mut con = match self.con().await {
            Ok(c) => c,
            Err(e) => return (0, Some(e)),
        };
        let cursor_key = self.cursor_key();
        let cursor: Option<i64> = match self.cursor.take() {
            Some(c) => c,
            None => match within(con.get(&cursor_key)).await {
                Ok(c) => c,
                Err(e) => return (0, Some(e)),
            },
        };
        let held = |last: i64| {
            batch
                .iter()
                .take_while(|l| i64::try_from(l.seq).is_ok_and(|s| s <= last))
                .count()
        };
        let done = cursor.map_or(0, held);
        let rest = batch.get(done..).unwrap_or_default();
        let (Some(first), Some(last)) = (rest.first(), rest.last()) else {
            self.cursor = Some(cursor);
            return (batch.len(), None);
        };
        let mut records = Vec::with_capacity(rest.iter().map(|l| l.text.len() + 1).sum());
        for l in rest {
            records.extend_from_slice(l.text.as_bytes());
            records.push(b'\n');
        }
        let n = rest.len() as u64;
        let mut appended = false;
        for _ in 0..ID_RETRIES {
            let total: u64 = match within(con.incr(COUNT_KEY, n)).await {
                Ok(t) => t,
                Err(e) => return (done, Some(e)),
            };
            let min = total.saturating_sub(self.max_len) + 1;
            let mut xadd = redis::cmd("XADD");
            xadd.arg(STREAM_KEY)
                .arg("MINID")
                .arg("~")
                .arg(min)
                .arg(format!("{total}-0"))
                .arg("instance")
                .arg(&self.instance)
                .arg("first")
                .arg(first.seq)
                .arg("last")
                .arg(last.seq)
                .arg("records")
                .arg(&records);
            match within(xadd.query_async::<String>(&mut con)).await {
                Ok(_) => {
                    appended = true;
                    break;
                }
                Err(ShipError::Redis(e)) if e.to_string().contains("equal or smaller") => {
                    // Another instance's append took a later id first (the next count is
                    // higher), or the count is behind the stream: raise it to the top.
                    let top = match top_id(&mut con).await {
                        Ok(t) => t,
                        Err(e) => return (done, Some(e)),
                    };
                    let mut inv = self.raise.prepare_invoke();
                    inv.key(COUNT_KEY).arg(top);
                    if let Err(e) = within(inv.invoke_async::<u64>(&mut con)).await {
                        return (done, Some(e));
                    }
                }
                Err(e) => return (done, Some(e)),
            }
        }
        if !appended {
            return (done, Some(ShipError::Contended));
        }
        let moved: Result<(), ShipError> =
            within(con.set(&cursor_key, i64::try_from(last.seq).unwrap_or(i64::MAX))).await;
        match moved {
            Ok(()) => {
                self.cursor = Some(i64::try_from(last.seq).ok());
                (batch.len(), None)
            }
            // Appended, but the cursor did not move: the batch may come again (kept once).
            Err(e) => (batch.len(), Some(e)),
        }
    }
}

/// The first part of the stream's newest id (0 when there is no stream).
async fn top_id(con: &mut ConnectionManager) -> Result<u64, ShipError> {
    let last: Vec<(String, Vec<String>)> = within(
        redis::cmd("XREVRANGE")
            .arg(STREAM_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(con),
    )
    .await?;
    Ok(last
        .first()
        .and_then(|(id, _)| id.split('-').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0))
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
    let mut out: Vec<StreamEntry> = Vec::new();
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
            };
            let instance = get("instance").unwrap_or_default();
            match get("records") {
                // A batch: each line is a record; its seq is read from the line (an
                // unreadable one is kept as `u64::MAX`, for the check to refuse).
                Some(records) => {
                    let first = get("first").and_then(|s| s.parse::<u64>().ok());
                    for (i, line) in records.lines().enumerate() {
                        let seq = crate::audit::head::seq_of(line.as_bytes())
                            .filter(|s| first.is_some_and(|f| *s >= f))
                            .unwrap_or(u64::MAX);
                        out.push(StreamEntry {
                            id: format!("{id}#{i}"),
                            instance: instance.clone(),
                            seq,
                            record: line.to_string(),
                        });
                    }
                }
                None => out.push(StreamEntry {
                    instance,
                    seq: get("seq").and_then(|s| s.parse().ok()).unwrap_or(u64::MAX),
                    record: get("record").unwrap_or_default(),
                    id: id.clone(),
                }),
            }
            start = format!("({id}");
        }
        if n < PAGE {
            return Ok(once_each(out));
        }
    }
}

/// The entries with a record seen twice (a batch appended again after a crash between its
/// append and the cursor's move) kept once; a record that differs from its twin is kept,
/// for the check to find.
fn once_each(entries: Vec<StreamEntry>) -> Vec<StreamEntry> {
    use std::hash::{Hash, Hasher};
    let mut seen: std::collections::HashMap<(String, u64), u64> = std::collections::HashMap::new();
    entries
        .into_iter()
        .filter(|e| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            e.record.hash(&mut h);
            let h = h.finish();
            seen.insert((e.instance.clone(), e.seq), h) != Some(h)
        })
        .collect()
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
