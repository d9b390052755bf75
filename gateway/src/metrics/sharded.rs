//! Counters and histograms that a request updates without a lock and without writing a cache
//! line another worker writes.
//!
//! Why: prometheus_client's `Histogram` takes a mutex on every `observe`, and its `Counter` is
//! one atomic that every worker thread increments, so the line holding it moves between cores
//! on each request. Here each value is split into [`SHARDS`] cache-line-aligned shards; a thread
//! always adds to the same shard (its own as long as there are no more threads than shards,
//! and a shared one, still exact, beyond), and the exposition adds the shards up. Adds are
//! atomic, so counts are exact under any concurrency; a scrape sees each shard's latest value.
//! The exposition is prometheus_client's own encoder fed with the sums: the same text.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per value: more than the worker threads of most machines (one per core) plus the
/// main runtime's; threads beyond share shards.
pub(crate) const SHARDS: usize = 16;

/// Two cache lines: adjacent-line prefetching pulls pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, dealt round-robin at its first update.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

fn shard() -> usize {
    SHARD.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(Some(i));
            i
        }
    })
}

/// A monotonic counter (OpenMetrics `counter`, exposed as `<name>_total`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardedCounter(Arc<[Padded<AtomicU64>; SHARDS]>);

impl ShardedCounter {
    pub(crate) fn inc(&self) {
        if let Some(s) = self.0.get(shard()) {
            s.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's share of a histogram.
#[derive(Debug)]
struct HistShard {
    /// Observations per bucket (not cumulative; the encoder accumulates).
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

/// A histogram with fixed upper bounds (OpenMetrics `histogram`); `+Inf` is added last, as
/// prometheus_client does.
#[derive(Debug, Clone)]
pub(crate) struct ShardedHistogram(Arc<HistInner>);

#[derive(Debug)]
struct HistInner {
    bounds: Box<[f64]>,
    shards: Box<[Padded<HistShard>]>,
}

impl ShardedHistogram {
    pub(crate) fn new(bounds: impl IntoIterator<Item = f64>) -> ShardedHistogram {
        let bounds: Box<[f64]> = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        let shards = (0..SHARDS)
            .map(|_| {
                Padded(HistShard {
                    buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
                    count: AtomicU64::new(0),
                    sum: AtomicU64::new(0f64.to_bits()),
                })
            })
            .collect();
        ShardedHistogram(Arc::new(HistInner { bounds, shards }))
    }

    pub(crate) fn observe(&self, v: f64) {
        let Some(Padded(s)) = self.0.shards.get(shard()) else {
            return;
        };
        // The first bucket whose bound holds `v`; NaN goes to the last (as prometheus_client).
        let i = if v.is_nan() {
            self.0.bounds.len().saturating_sub(1)
        } else {
            self.0
                .bounds
                .iter()
                .position(|b| *b >= v)
                .unwrap_or(self.0.bounds.len().saturating_sub(1))
        };
        if let Some(b) = s.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        s.count.fetch_add(1, Ordering::Relaxed);
        // This thread is (nearly always) the shard's only writer: the first exchange wins.
        let _ = s
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// (sum, count, per-bucket counts) over every shard.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.0.bounds.iter().map(|b| (*b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0u64);
        for Padded(s) in self.0.shards.iter() {
            sum += f64::from_bits(s.sum.load(Ordering::Relaxed));
            count = count.wrapping_add(s.count.load(Ordering::Relaxed));
            for (total, b) in buckets.iter_mut().zip(s.buckets.iter()) {
                total.1 = total.1.wrapping_add(b.load(Ordering::Relaxed));
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_adds_to_its_own_shard_and_totals_are_exact() {
        let c = ShardedCounter::default();
        let h = ShardedHistogram::new([0.25, 1.0]);
        std::thread::scope(|s| {
            for _ in 0..(SHARDS * 2) {
                s.spawn(|| {
                    for i in 0..1000 {
                        c.inc();
                        h.observe(if i % 2 == 0 { 0.125 } else { 2.0 });
                    }
                });
            }
        });
        assert_eq!(c.get(), (SHARDS * 2 * 1000) as u64);
        let (sum, count, buckets) = h.totals();
        assert_eq!(count, (SHARDS * 2 * 1000) as u64);
        assert_eq!(sum, (SHARDS * 2 * 500) as f64 * 2.125);
        assert_eq!(
            buckets,
            vec![
                (0.25, (SHARDS * 1000) as u64),
                (1.0, 0),
                (f64::INFINITY, (SHARDS * 1000) as u64)
            ]
        );
        let used =
            c.0.iter()
                .filter(|s| s.0.load(Ordering::Relaxed) > 0)
                .count();
        assert!(used > 1, "updates spread over shards ({used})");
    }
}
