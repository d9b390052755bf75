//! Writing a queue: chaining its records onto the head (sequence, timestamp, `prev`, MAC)
//! and appending them with one write(2) under the log's lock and the directory lock; then
//! handing the pen on or refusing the queue.

use std::sync::atomic::Ordering;

use super::pen::Attempt;
use super::{Head, Inner, LOCK_FILE, Shard, Turn, lock, lock_any, release_lock};
use crate::audit::chain;
use crate::audit::checkpoint::ChainHead;
use crate::audit::segment::{Tail, io_err, newest_tail, recover, seg_len, write_batch};
use crate::error::AuditError;

/// A copy of an error for every record of a failed batch (io errors do not clone).
fn copy_err(e: &AuditError) -> AuditError {
    match e {
        AuditError::Io { path, source } => AuditError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), "audit write failed"),
        },
        AuditError::Tampered {
            path,
            line,
            problem,
        } => AuditError::Tampered {
            path: path.clone(),
            line: *line,
            problem: problem.clone(),
        },
        AuditError::Busy => AuditError::Busy,
        AuditError::Broken { path, problem } => AuditError::Broken {
            path: path.clone(),
            problem: problem.clone(),
        },
        AuditError::CutTail { path, problem } => AuditError::CutTail {
            path: path.clone(),
            problem: problem.clone(),
        },
        AuditError::Closed | AuditError::Encode(_) | AuditError::Key(_) | AuditError::Query(_) => {
            AuditError::Closed
        }
    }
}

impl Inner {
    /// Chains one record onto `chunks` (the batch being built; the caller holds the log's
    /// lock and the directory lock); its sequence number.
    pub(super) fn append(
        &self,
        h: &mut Head,
        chunks: &mut Vec<(String, String)>,
        closes: &mut Vec<(ChainHead, String)>,
        json: &str,
        size: usize,
    ) -> Result<u64, AuditError> {
        let st = match h.chain.as_mut() {
            Some(st) => st,
            None => {
                let st = recover(&self.dir, &self.key)?;
                if st.next_seq < h.written {
                    // Records this server confirmed are gone: never start a new chain over
                    // them. Refused until the directory is restored or the server restarts.
                    return Err(AuditError::Tampered {
                        path: self.dir.clone(),
                        line: 0,
                        problem: format!(
                            "the log holds {} records but this server wrote {}: the directory was moved, truncated or replaced",
                            st.next_seq, h.written
                        ),
                    });
                }
                h.chain.insert(st)
            }
        };
        // Timestamps never go backwards within the chain.
        let ms = crate::store::now_ms().max(st.last_ms);
        if ms != st.last_ms || st.last_ts.0.is_empty() {
            st.last_ts = chain::timestamp(ms);
            st.last_ms = ms;
        }
        let (ts, date) = &st.last_ts;
        if st.head_date != *date {
            if st.next_seq > 0 && !st.head_date.is_empty() {
                closes.push((
                    ChainHead {
                        seq: st.next_seq - 1,
                        hash: st.prev.clone(),
                        date: st.head_date.clone(),
                    },
                    date.clone(),
                ));
            }
            st.head_date.clone_from(date);
        }
        if chunks.last().is_none_or(|(d, _)| d != date) {
            chunks.push((date.clone(), String::with_capacity(size)));
        }
        let Some((_, text)) = chunks.last_mut() else {
            return Err(AuditError::Closed);
        };
        let start = text.len();
        chain::push_line(text, &self.key, st.next_seq, ts, &st.prev, json);
        chain::set_line_hash(&mut st.prev, text.get(start..).unwrap_or_default());
        text.push('\n');
        let seq = st.next_seq;
        st.next_seq += 1;
        Ok(seq)
    }

    /// Takes the cross-process lock if we do not hold it (false: another process holds it),
    /// and drops the chain head if another process appended since we last held it.
    pub(super) fn take_lock(&self, h: &mut Head) -> Result<bool, AuditError> {
        if h.locked {
            return Ok(true);
        }
        match h.lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(AuditError::Io {
                    path: self.dir.join(LOCK_FILE),
                    source: e,
                });
            }
        }
        h.locked = true;
        let today = chain::segment_name(&chain::timestamp(crate::store::now_ms()).1);
        let unchanged = h
            .chain
            .as_ref()
            .and_then(|st| st.tail.as_ref())
            .is_some_and(|(p, len)| {
                p.file_name().is_some_and(|n| *n == *today)
                    && std::fs::metadata(p).is_ok_and(|m| m.len() == *len)
            });
        if !unchanged {
            let current = newest_tail(&self.dir).map_err(io_err(&self.dir))?;
            if h.chain.as_ref().is_none_or(|st| st.tail != current) {
                h.chain = None;
                h.segment = None;
            }
        }
        Ok(true)
    }

    /// One attempt to write `shard`'s queue: takes the log's lock without waiting for it,
    /// takes the directory lock, chains every queued record and appends them with one
    /// write(2) before letting the lock go. The callers of the batch get their outcome; the
    /// return value carries `own`'s.
    pub(super) fn try_write(&self, shard: &Shard, own: u64) -> Result<Attempt, AuditError> {
        let mut h = match self.head.try_lock() {
            Ok(h) => h,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(Attempt::Contended),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        self.write_locked(&mut h, shard, own)
    }

    /// [`try_write`](Inner::try_write) with the log's lock held.
    pub(super) fn write_locked(
        &self,
        h: &mut Head,
        shard: &Shard,
        own: u64,
    ) -> Result<Attempt, AuditError> {
        if !self.take_lock(h)? {
            return Ok(Attempt::DirBusy);
        }
        let records = std::mem::take(&mut lock(&shard.0).records);
        // The batch's text in one allocation: each line is its event plus the chain fields.
        let size: usize = records
            .iter()
            .map(|r| r.json.len() + chain::LINE_OVERHEAD)
            .sum();
        let mut chunks: Vec<(String, String)> = Vec::new();
        let mut closes = Vec::new();
        let mut first = None;
        let mut chained = Ok(());
        for r in &records {
            match self.append(h, &mut chunks, &mut closes, &r.json, size) {
                Ok(seq) => {
                    first.get_or_insert(seq);
                }
                Err(e) => {
                    chained = Err(e);
                    break;
                }
            }
        }
        let result = chained.and_then(|()| self.commit(h, &chunks));
        if result.is_ok() {
            h.closes.append(&mut closes);
        }
        if result.is_err() {
            // Nothing of the batch is confirmed: re-read the head before the next record.
            h.chain = None;
            h.segment = None;
            release_lock(h);
        }
        let first = first.unwrap_or(0);
        let mut own_seq = None;
        for (i, r) in records.into_iter().enumerate() {
            let seq = first + i as u64;
            if r.ticket == own {
                own_seq = Some(seq);
            } else if let Some(w) = r.waiter {
                let outcome = match &result {
                    Ok(()) => Ok(seq),
                    Err(e) => Err(copy_err(e)),
                };
                let _ = w.send(Turn::Done(outcome));
            }
        }
        match (result, own_seq) {
            (Ok(()), seq) => Ok(Attempt::Wrote(seq.map(Ok))),
            (Err(e), seq) => {
                tracing::error!(error = %e, "audit log write failed; refusing the recorded actions");
                match seq {
                    Some(_) => Ok(Attempt::Wrote(Some(Err(e)))),
                    None => Err(e),
                }
            }
        }
    }

    /// Appends a chained batch to its segment(s) and notes what the syncer must sync.
    pub(super) fn commit(
        &self,
        h: &mut Head,
        chunks: &[(String, String)],
    ) -> Result<(), AuditError> {
        let mut segment = h.segment.take();
        let len = write_batch(&self.dir, chunks, &mut segment)?;
        if let Some(st) = h.chain.as_mut()
            && let Some(seg) = &segment
        {
            let len = match len {
                Tail::Grew(n) => match &st.tail {
                    Some((p, l)) if *p == seg.path => l + n,
                    _ => seg_len(seg),
                },
                Tail::Is(n) => n,
            };
            st.tail = Some((seg.path.clone(), len));
        }
        if let Some(st) = h.chain.as_ref() {
            h.written = h.written.max(st.next_seq);
        }
        let first_dirty = h.unsynced.is_none();
        let Head {
            chain,
            unsynced,
            unsynced_head,
            ..
        } = &mut *h;
        *unsynced = match (&segment, chain.as_ref()) {
            (Some(seg), Some(st)) if st.next_seq > 0 => {
                unsynced_head.seq = st.next_seq - 1;
                unsynced_head.hash.clone_from(&st.prev);
                unsynced_head.date.clone_from(&st.head_date);
                Some(seg.file.clone())
            }
            _ => None,
        };
        h.segment = segment;
        self.written_next.store(h.written, Ordering::Release);
        if first_dirty {
            self.syncer.unpark();
        }
        for w in lock_any(&self.watchers).iter() {
            w.notify_one();
        }
        Ok(())
    }

    /// After a write: puts the pen down when the queue is empty, or hands it to the first
    /// caller still waiting in it. False when records are queued and nobody waits for them
    /// (their callers gave up): the holder writes them itself.
    pub(super) fn pass_pen(&self, shard: &Shard) -> bool {
        let mut q = lock(&shard.0);
        if q.records.is_empty() {
            q.writing = false;
            return true;
        }
        for r in &mut q.records {
            if let Some(w) = r.waiter.take()
                && w.send(Turn::Write).is_ok()
            {
                return true;
            }
        }
        false
    }

    /// Refuses every queued record with `e` and puts the pen down (the writer gave up).
    pub(super) fn refuse_queue(&self, shard: &Shard, e: &AuditError) {
        let records = {
            let mut q = lock(&shard.0);
            q.writing = false;
            std::mem::take(&mut q.records)
        };
        for r in records {
            if let Some(w) = r.waiter {
                let _ = w.send(Turn::Done(Err(copy_err(e))));
            }
        }
    }

    /// Writes the queue now, blocking (a dropped pen, a record nobody waits for). The pen is
    /// put down or handed on. When another process (a CLI command) holds the directory for
    /// a moment, a waiting caller takes the pen and retries; records nobody waits for go to
    /// the syncer thread, which may block until the lock is free (refusing them lost a
    /// connection's answers whenever a CLI command wrote at the same time).
    pub(super) fn write_now(&self, shard: &Shard) {
        if !self.write_queue(shard, None) && !self.pass_pen(shard) {
            lock(&shard.0).writing = false;
            self.deferred.store(true, Ordering::Release);
            self.syncer.unpark();
        }
    }

    /// On the syncer thread: writes the queues left for it (see [`Inner::write_now`]),
    /// waiting for the directory lock up to [`super::CONFIRM_TIMEOUT`], then refusing them.
    pub(super) fn write_deferred(&self) {
        if !self.deferred.swap(false, Ordering::AcqRel) {
            return;
        }
        for shard in &self.shards {
            {
                let mut q = lock(&shard.0);
                if q.writing || q.records.is_empty() {
                    continue;
                }
                q.writing = true;
            }
            let deadline = std::time::Instant::now() + super::CONFIRM_TIMEOUT;
            if !self.write_queue(shard, Some(deadline)) {
                self.refuse_queue(shard, &AuditError::Busy);
            }
        }
    }

    /// Writes `shard`'s queue, holding its pen, until the pen is put down or handed on
    /// (true). While the directory lock is taken: retries until `wait_until` (blocking the
    /// thread), or at once gives up with the pen still held (false). A failed write refuses
    /// the queue (true).
    fn write_queue(&self, shard: &Shard, wait_until: Option<std::time::Instant>) -> bool {
        loop {
            let mut h = self.head();
            let attempt = self.write_locked(&mut h, shard, u64::MAX);
            drop(h);
            match attempt {
                Ok(Attempt::Wrote(_)) => {
                    if self.pass_pen(shard) {
                        return true;
                    }
                }
                Ok(Attempt::Contended | Attempt::DirBusy) => match wait_until {
                    Some(t) if std::time::Instant::now() < t => {
                        std::thread::sleep(super::LOCK_RETRY);
                    }
                    _ => return false,
                },
                Err(e) => {
                    self.refuse_queue(shard, &e);
                    return true;
                }
            }
        }
    }
}
