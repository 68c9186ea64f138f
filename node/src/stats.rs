//! Counters and latency histograms exported by INFO and /metrics.
//!
//! What every command counts (commands by kind, errors, hits and misses,
//! network bytes, latencies) is counted by the connection that ran it, in
//! its own [`ClientCounters`]: an increment is a load and a store on a
//! cache line no other thread writes. Shared atomics cost a locked
//! instruction each, and with several worker threads the line they live on
//! moves between cores on every command (a SET made about ten such
//! increments). Readers (INFO, /metrics) add up the live connections'
//! counters and what closed connections left behind, under one lock taken
//! only to connect, disconnect and read.
//!
//! Rare, node-wide events (connections accepted, resyncs, checkpoints...)
//! stay plain shared atomics on [`Stats`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A counter with one writer (the connection that owns it) and any number
/// of readers. `add` is a relaxed load and store, not a read-modify-write:
/// correct only because nothing else writes it. A task that moves between
/// worker threads is handed over with a happens-before edge, so its next
/// load sees its last store.
#[derive(Debug, Default)]
pub struct OwnedCounter(AtomicU64);

impl OwnedCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket latency histogram with one writer (Prometheus semantics
/// once summed: see [`HistogramCounts::cumulative`]).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [OwnedCounter; LATENCY_BUCKETS.len()],
    count: OwnedCounter,
    sum_micros: OwnedCounter,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_micros.add(d.as_micros() as u64);
    }

    pub fn counts(&self) -> HistogramCounts {
        HistogramCounts {
            buckets: std::array::from_fn(|i| self.buckets[i].get()),
            count: self.count.get(),
            sum_micros: self.sum_micros.get(),
        }
    }
}

/// A histogram's values at one moment; these add up across connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramCounts {
    /// Per bucket (not cumulative); observations above the last bound are
    /// only in `count`.
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    pub count: u64,
    pub sum_micros: u64,
}

impl HistogramCounts {
    fn add(&mut self, other: &HistogramCounts) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_micros += other.sum_micros;
    }

    /// (cumulative bucket counts by upper bound, count, sum in seconds).
    pub fn cumulative(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                acc += c;
                (*b, acc)
            })
            .collect();
        (buckets, self.count, self.sum_micros as f64 / 1e6)
    }
}

/// What one connection counts. Aligned so that two connections' counters
/// never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ClientCounters {
    pub commands: OwnedCounter,
    pub read_commands: OwnedCounter,
    pub write_commands: OwnedCounter,
    pub other_commands: OwnedCounter,
    pub command_errors: OwnedCounter,
    pub keyspace_hits: OwnedCounter,
    pub keyspace_misses: OwnedCounter,
    pub net_input_bytes: OwnedCounter,
    pub net_output_bytes: OwnedCounter,
    pub read_latency: Histogram,
    pub write_latency: Histogram,
    pub sync_wait_latency: Histogram,
}

impl ClientCounters {
    pub fn totals(&self) -> ClientTotals {
        ClientTotals {
            commands: self.commands.get(),
            read_commands: self.read_commands.get(),
            write_commands: self.write_commands.get(),
            other_commands: self.other_commands.get(),
            command_errors: self.command_errors.get(),
            keyspace_hits: self.keyspace_hits.get(),
            keyspace_misses: self.keyspace_misses.get(),
            net_input_bytes: self.net_input_bytes.get(),
            net_output_bytes: self.net_output_bytes.get(),
            read_latency: self.read_latency.counts(),
            write_latency: self.write_latency.counts(),
            sync_wait_latency: self.sync_wait_latency.counts(),
        }
    }
}

/// [`ClientCounters`] as plain numbers, summed over connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientTotals {
    pub commands: u64,
    pub read_commands: u64,
    pub write_commands: u64,
    pub other_commands: u64,
    pub command_errors: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub net_input_bytes: u64,
    pub net_output_bytes: u64,
    pub read_latency: HistogramCounts,
    pub write_latency: HistogramCounts,
    pub sync_wait_latency: HistogramCounts,
}

impl ClientTotals {
    fn add(&mut self, o: &ClientTotals) {
        self.commands += o.commands;
        self.read_commands += o.read_commands;
        self.write_commands += o.write_commands;
        self.other_commands += o.other_commands;
        self.command_errors += o.command_errors;
        self.keyspace_hits += o.keyspace_hits;
        self.keyspace_misses += o.keyspace_misses;
        self.net_input_bytes += o.net_input_bytes;
        self.net_output_bytes += o.net_output_bytes;
        self.read_latency.add(&o.read_latency);
        self.write_latency.add(&o.write_latency);
        self.sync_wait_latency.add(&o.sync_wait_latency);
    }
}

/// Live connections' counters (slots reused) and the totals of closed ones.
#[derive(Default)]
struct Clients {
    live: Vec<Option<Arc<ClientCounters>>>,
    free: Vec<usize>,
    retired: ClientTotals,
}

/// A connection's place in [`Stats`]: its counters, returned with
/// [`Stats::retire_client`] when it closes.
pub struct ClientSlot {
    index: usize,
    pub counters: Arc<ClientCounters>,
}

/// Node-wide counters.
#[derive(Default)]
pub struct Stats {
    pub connections_total: AtomicU64,
    pub connected_clients: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub expired_keys: AtomicU64,
    pub sync_timeouts: AtomicU64,
    pub degrade_events: AtomicU64,
    pub checkpoints: AtomicU64,
    pub resyncs_partial: AtomicU64,
    pub resyncs_full: AtomicU64,
    pub snapshot_bytes_sent: AtomicU64,
    clients: Mutex<Clients>,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Fresh counters for a new connection, counted until it is retired.
    pub fn register_client(&self) -> ClientSlot {
        let counters = Arc::new(ClientCounters::default());
        let mut c = self.clients.lock();
        let index = match c.free.pop() {
            Some(i) => {
                c.live[i] = Some(counters.clone());
                i
            }
            None => {
                c.live.push(Some(counters.clone()));
                c.live.len() - 1
            }
        };
        ClientSlot { index, counters }
    }

    /// A connection closed: what it counted moves into the retired totals
    /// (in one step under the lock, so no reader counts it twice or not at
    /// all) and its slot is reused.
    pub fn retire_client(&self, slot: &ClientSlot) {
        let mut c = self.clients.lock();
        let Some(counters) = c.live.get_mut(slot.index).and_then(Option::take) else {
            return;
        };
        let totals = counters.totals();
        c.retired.add(&totals);
        c.free.push(slot.index);
    }

    /// Everything every connection has counted, open or closed.
    pub fn client_totals(&self) -> ClientTotals {
        let c = self.clients.lock();
        let mut sum = c.retired;
        for counters in c.live.iter().flatten() {
            sum.add(&counters.totals());
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_open_and_closed_connections_once_each() {
        let stats = Stats::default();
        let a = stats.register_client();
        let b = stats.register_client();
        a.counters.commands.add(3);
        b.counters.commands.add(4);
        a.counters.keyspace_hits.inc();
        assert_eq!(stats.client_totals().commands, 7);
        stats.retire_client(&a);
        // Retiring twice must not count it twice.
        stats.retire_client(&a);
        let t = stats.client_totals();
        assert_eq!((t.commands, t.keyspace_hits), (7, 1));
        // The freed slot is reused and starts from zero.
        let c = stats.register_client();
        assert_eq!(c.index, a.index);
        c.counters.commands.inc();
        assert_eq!(stats.client_totals().commands, 8);
        stats.retire_client(&b);
        stats.retire_client(&c);
        assert_eq!(stats.client_totals().commands, 8);
    }

    #[test]
    fn histograms_sum_across_connections_into_cumulative_buckets() {
        let stats = Stats::default();
        let a = stats.register_client();
        let b = stats.register_client();
        a.counters.read_latency.observe(Duration::from_micros(40));
        b.counters.read_latency.observe(Duration::from_millis(3));
        // Above the last bound: counted, in no finite bucket.
        b.counters.read_latency.observe(Duration::from_secs(2));
        stats.retire_client(&b);
        let (buckets, count, sum) = stats.client_totals().read_latency.cumulative();
        assert_eq!(count, 3);
        assert!((sum - 2.00304).abs() < 1e-9, "{sum}");
        let at = |le: f64| buckets.iter().find(|(b, _)| *b == le).expect("a bound").1;
        assert_eq!(at(0.000_05), 1);
        assert_eq!(at(0.002_5), 1);
        assert_eq!(at(0.005), 2);
        assert_eq!(at(1.0), 2);
    }

    #[test]
    fn an_owned_counter_written_from_moving_threads_loses_nothing() {
        // One writer at a time, handed from thread to thread with a join
        // (the happens-before edge a task migration has).
        let c = Arc::new(OwnedCounter::default());
        for _ in 0..4 {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    c.inc();
                }
            })
            .join()
            .expect("writer thread");
        }
        assert_eq!(c.get(), 40_000);
    }
}
