//! Counters for /metrics: fsync latency histogram and write volume.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fsync latency buckets.
pub const FSYNC_BUCKETS_SECS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A point-in-time copy of the WAL's I/O counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalStats {
    /// Data-file fsyncs (directory syncs are not counted).
    pub fsync_count: u64,
    pub fsync_total_micros: u64,
    pub fsync_max_micros: u64,
    /// Cumulative, as Prometheus `le` buckets: `(upper_bound_secs, fsyncs
    /// that took at most that long)`; `+Inf` is `fsync_count`.
    pub fsync_buckets: Vec<(f64, u64)>,
    /// write() calls that handed log bytes to the OS.
    pub write_count: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatsInner {
    fsync_count: AtomicU64,
    fsync_total_micros: AtomicU64,
    fsync_max_micros: AtomicU64,
    /// Non-cumulative per-bucket counts; the last slot is the overflow.
    buckets: [AtomicU64; FSYNC_BUCKETS_SECS.len() + 1],
    write_count: AtomicU64,
    bytes_written: AtomicU64,
}

impl StatsInner {
    pub fn record_fsync(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        self.fsync_total_micros.fetch_add(micros, Ordering::Relaxed);
        self.fsync_max_micros.fetch_max(micros, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = FSYNC_BUCKETS_SECS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(FSYNC_BUCKETS_SECS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_write(&self, bytes: usize) {
        self.write_count.fetch_add(1, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> WalStats {
        let mut cumulative = 0;
        let fsync_buckets = FSYNC_BUCKETS_SECS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        WalStats {
            fsync_count: self.fsync_count.load(Ordering::Relaxed),
            fsync_total_micros: self.fsync_total_micros.load(Ordering::Relaxed),
            fsync_max_micros: self.fsync_max_micros.load(Ordering::Relaxed),
            fsync_buckets,
            write_count: self.write_count.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }
}
