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
//! Each instance's last shipped record is kept under `gatehouse:audit:shipped:INSTANCE`,
//! updated by the same script that appends, so a batch retried after a timeout adds only
//! what the stream does not hold yet: no duplicates, no gaps. A SIEM or another node reading
//! the stream keeps the records when a node is lost with its disk. [`read_stream`] (which
//! also reads entries of one record each, `instance`, `seq`, `record`, as older versions
//! wrote them) and [`verify_stream`] let `gatehouse audit verify --stream` compare it with
//! the local log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

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

/// Appends a batch as one entry and moves the cursor, atomically. Only the records after the
/// cursor are appended: a batch held already (a retry after a timeout) adds nothing, one
/// held in part (another shipper of the same instance got ahead) adds its rest.
/// KEYS: stream, cursor, record count. ARGV: max_len, instance, first seq, last seq, records,
/// records in the batch, index (`SEQ END` per record, END the offset after its line: read
/// only to cut a batch held in part). Returns the cursor.
const APPEND_SCRIPT: &str = r"
local last = tonumber(redis.call('GET', KEYS[2]) or '-1')
local upto = tonumber(ARGV[4])
if upto <= last then
  return last
end
local first = tonumber(ARGV[3])
local records = ARGV[5]
local n = tonumber(ARGV[6])
if first <= last then
  local from, kept, start = nil, 0, 0
  for seq, stop in string.gmatch(ARGV[7], '(%d+) (%d+)') do
    seq = tonumber(seq)
    if seq > last then
      if not from then
        from = seq
        records = string.sub(records, start + 1)
      end
      kept = kept + 1
    end
    start = tonumber(stop)
  end
  first, n = from, kept
end
local total = redis.call('INCRBY', KEYS[3], n)
local function add(total)
  local min = total - tonumber(ARGV[1]) + 1
  if min < 0 then min = 0 end
  return redis.pcall('XADD', KEYS[1], 'MINID', '~', min, total .. '-0',
    'instance', ARGV[2], 'first', first, 'last', ARGV[4], 'records', records)
end
local r = add(total)
if type(r) == 'table' and r.err then
  -- The count was lost (or the stream was written by an older version, whose ids are
  -- times): go on from the stream's newest id.
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local top = 0
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      top = tonumber(string.match(info[i + 1], '^(%d+)')) or 0
    end
  end
  total = top + n
  redis.call('SET', KEYS[3], total)
  r = add(total)
  if type(r) == 'table' and r.err then
    return r
  end
end
redis.call('SET', KEYS[2], ARGV[4])
return upto
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
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return (0, None);
        };
        let mut records = Vec::with_capacity(batch.iter().map(|l| l.text.len() + 1).sum());
        let mut index = String::with_capacity(batch.len() * 16);
        for l in batch {
            records.extend_from_slice(l.text.as_bytes());
            records.push(b'\n');
            let _ = writeln!(index, "{} {}", l.seq, records.len());
        }
        let mut inv = self.script.prepare_invoke();
        inv.key(STREAM_KEY)
            .key(self.cursor_key())
            .key(COUNT_KEY)
            .arg(self.max_len)
            .arg(&self.instance)
            .arg(first.seq)
            .arg(last.seq)
            .arg(records)
            .arg(batch.len())
            .arg(index);
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
