//! A lock-free histogram with fixed buckets, for metrics written by one thread and read by
//! another (the metrics endpoint sums every shard's at scrape time). Observing is a bucket
//! search and three relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};

/// Fixed-bucket histogram of `u64` observations (in the caller's unit, e.g. microseconds).
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds, ascending (the `+Inf` bucket is implicit).
    bounds: &'static [u64],
    /// Per-bucket counts, `bounds.len() + 1` long (not cumulative).
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A histogram's contents at one instant, mergeable across shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// Per-bucket counts (not cumulative), `bounds.len() + 1` long.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// [`AtomicHistogram::observe`] for a histogram that only one thread ever observes into
    /// (a shard's own): plain loads and stores instead of locked adds, which on x86 also
    /// wait for the store buffer to drain. Another thread observing into it would lose
    /// counts (never tear them).
    pub fn observe_one_writer(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        let c = &self.counts[i];
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        self.sum.store(
            self.sum.load(Ordering::Relaxed).wrapping_add(v),
            Ordering::Relaxed,
        );
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// Adds another snapshot of a histogram with the same buckets.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Per-bucket (not cumulative) `(upper bound, count)` pairs, the last one `+Inf`, with
    /// bounds divided by `scale` (e.g. 1e6 to report microseconds as seconds). This is the
    /// form `prometheus-client`'s encoder takes (it accumulates when writing).
    pub fn buckets(&self, scale: f64) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let bound = self
                    .bounds
                    .get(i)
                    .map_or(f64::INFINITY, |b| *b as f64 / scale);
                (bound, *c)
            })
            .collect()
    }
}

/// Latency buckets in microseconds: 50 µs to 30 s.
pub const LATENCY_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_sum_and_merge() {
        let h = AtomicHistogram::new(&[10, 100]);
        for v in [1, 10, 11, 100, 1000] {
            h.observe(v);
        }
        let mut s = h.snapshot();
        assert_eq!(s.counts, [2, 2, 1]);
        assert_eq!(s.sum, 1122);
        s.merge(&h.snapshot());
        assert_eq!(s.count(), 10);
        let c = s.buckets(1.0);
        assert_eq!(c, [(10.0, 4), (100.0, 4), (f64::INFINITY, 2)]);
    }

    /// One thread observing with plain stores, another reading meanwhile: the reader never
    /// sees a count go down, and sees every observation once the writer is done.
    #[test]
    fn one_writer_observations_reach_another_thread() {
        let h = std::sync::Arc::new(AtomicHistogram::new(&[10, 100]));
        let w = h.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..200_000u64 {
                w.observe_one_writer(i % 150);
            }
        });
        let mut last = 0;
        while !writer.is_finished() {
            let n = h.snapshot().count();
            assert!(n >= last);
            last = n;
        }
        writer.join().unwrap();
        let s = h.snapshot();
        assert_eq!(s.count(), 200_000);
        assert_eq!(s.counts[0], 200_000 / 150 * 11 + 11);
        assert_eq!(s.sum, (0..200_000u64).map(|i| i % 150).sum::<u64>());
    }
}
