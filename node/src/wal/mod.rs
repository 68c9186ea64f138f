//! Write-ahead log: the unit of durability and of replication.
//!
//! Every change is a [`Record`] `(epoch, end offset, payload)`; offsets are
//! logical byte positions in the log (like Redis's `master_repl_offset`), so
//! a record's bytes, and therefore its offset, are identical on the leader and
//! on every follower. The framing is documented in [`format`].
//!
//! Layout: segment files `<dir>/<start offset, 20 digits>.wal`; records never
//! span segments. A segment is sealed (fsynced, whatever the policy) before the
//! next one is created and the directory is fsynced after every creation or
//! removal, so only the *last* segment can ever have a torn tail, and anything
//! wrong elsewhere is real corruption.
//!
//! Concurrency: [`Wal::append`] only encodes into an in-memory buffer under a
//! short mutex; one writer thread takes everything pending, does one `write()`
//! per segment touched and one fsync per policy (group commit), then publishes
//! [`WalProgress`] through a [`Signal`], then runs the progress hook
//! ([`Wal::on_progress`]: the engine recomputes its commit offset there). A failed write or
//! fsync is sticky ([`WalError::Failed`]): like PostgreSQL after its fsync
//! panic fix, we never retry an fsync and pretend the data is safe.
//!
//! Lock order (never taken the other way round): `control` (serializes the
//! rare operations that rewrite files: truncate, reset, retention, reader
//! boundary checks) -> `io` (the open tail segment; held by the writer while it
//! writes and syncs) -> `state` (offsets and the pending buffer; never held
//! across I/O on the hot path).

pub mod format;
mod reader;
mod recovery;
pub mod sim;
mod stats;
pub mod storage;
mod writer;

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

pub use format::{MAX_PAYLOAD, encoded_len};
pub use reader::WalReader;
pub use sim::SimStorage;
pub use stats::{FSYNC_BUCKETS_SECS, WalStats};
pub use storage::{AppendFile, OsStorage, ReadFile, Storage};

use crate::signal::{Signal, Watcher};
use format::{SEGMENT_HEADER_LEN, segment_file_name};
use stats::StatsInner;

/// Default segment size (64 MiB), like Kafka's segment roll but smaller so
/// retention is finer grained.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Appends block (briefly) once this much is waiting for the writer thread, so
/// a slow disk cannot make the buffer grow without bound.
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// One sparse index entry per this many log bytes; bounds the scan needed to
/// check that an offset is a record boundary.
const INDEX_INTERVAL: u64 = 64 << 10;
/// How many rewrites (truncate/reset) readers can be checked against.
const MAX_REWRITES_KEPT: usize = 64;

/// When log writes are fsynced, and therefore when they are acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync as soon as data is there; acknowledge after fsync.
    Always,
    /// Group commit: gather appends for `batch_delay`, then one fsync;
    /// acknowledge after fsync.
    Batch,
    /// write() promptly, fsync at most once per interval; acknowledge after
    /// write() (Redis `appendfsync everysec` semantics).
    Interval(Duration),
    /// write() promptly, fsync only when sealing a segment and on close;
    /// acknowledge after write().
    Never,
}

impl FsyncPolicy {
    /// Whether acknowledgement waits for fsync (otherwise for write()).
    pub fn acks_durable(&self) -> bool {
        matches!(self, FsyncPolicy::Always | FsyncPolicy::Batch)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid fsync policy {0:?}: expected always, batch, interval:MS or never")]
pub struct ParseFsyncPolicyError(String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "batch" => Ok(FsyncPolicy::Batch),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let millis = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| ParseFsyncPolicyError(s.to_string()))?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(millis)))
            }
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Batch => f.write_str("batch"),
            FsyncPolicy::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct WalOptions {
    pub dir: PathBuf,
    /// A segment is rolled when the next record would take it past this size
    /// (a single larger record gets a segment of its own).
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Group-commit gather window for [`FsyncPolicy::Batch`] (PostgreSQL's
    /// `commit_delay`).
    pub batch_delay: Duration,
}

impl WalOptions {
    /// 64 MiB segments, `always`, 200 µs batch window.
    pub fn new(dir: impl Into<PathBuf>) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: FsyncPolicy::Always,
            batch_delay: Duration::from_micros(200),
        }
    }
}

/// One log record. `offset` is the log position at its END.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub epoch: u64,
    pub offset: u64,
    pub payload: Bytes,
}

impl Record {
    /// Log position where this record begins (the previous record's end).
    pub fn start_offset(&self) -> u64 {
        self.offset - encoded_len(self.payload.len())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalProgress {
    /// End of the last appended record (may still be in memory only).
    pub appended: u64,
    /// Handed to the OS with write(): survives a process crash.
    pub written: u64,
    /// fsynced: survives a power loss.
    pub durable: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("WAL corrupt: {} at byte {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        /// Byte position in that file.
        offset: u64,
        reason: String,
    },
    #[error("WAL failed and accepts no more writes (restart to recover): {0}")]
    Failed(String),
    #[error("offset {0} is not a record boundary in the WAL")]
    NotBoundary(u64),
    #[error("offset {requested} is older than the retained WAL, which starts at {first}")]
    Truncated { requested: u64, first: u64 },
    #[error("offset {requested} is beyond the end of the WAL at {last}")]
    Beyond { requested: u64, last: u64 },
    #[error("record ends at offset {got}, but the next record must end at {expected}")]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("record epoch {got} is lower than the log's last epoch {last}")]
    EpochRegression { last: u64, got: u64 },
    #[error("record payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("replay of the record ending at offset {offset} failed: {reason}")]
    Replay { offset: u64, reason: String },
    #[error("log was rewritten at offset {rewritten_at} under a reader at offset {offset}")]
    ReaderInvalidated { offset: u64, rewritten_at: u64 },
    #[error("WAL is closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A segment as tracked in memory. `end` includes records still pending in
/// the writer's buffer.
#[derive(Debug)]
pub(crate) struct Segment {
    pub start: u64,
    pub end: u64,
    pub path: PathBuf,
    /// Sparse, increasing record end offsets within this segment.
    pub index: Vec<u64>,
}

impl Segment {
    pub fn new(dir: &Path, start: u64) -> Segment {
        Segment {
            start,
            end: start,
            path: dir.join(segment_file_name(start)),
            index: Vec::new(),
        }
    }

    pub fn note_record(&mut self, end: u64) {
        let last = self.index.last().copied().unwrap_or(self.start);
        if end - last >= INDEX_INTERVAL {
            self.index.push(end);
        }
        self.end = end;
    }

    /// Largest known boundary strictly before `offset` (to scan from).
    pub fn scan_base(&self, offset: u64) -> u64 {
        let i = self.index.partition_point(|&e| e < offset);
        if i == 0 {
            self.start
        } else {
            self.index[i - 1]
        }
    }

    pub fn disk_len(&self) -> u64 {
        SEGMENT_HEADER_LEN + (self.end - self.start)
    }
}

/// Encoded records waiting for the writer, all destined for one segment.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub seg_start: u64,
    pub buf: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub appended: u64,
    pub written: u64,
    pub durable: u64,
    pub last_epoch: u64,
    /// Never empty while open; the back is the tail being appended to.
    pub segments: VecDeque<Segment>,
    pub pending: Vec<Chunk>,
    pub pending_bytes: usize,
    /// Drained chunk buffers kept for reuse, to avoid reallocating.
    pub spare: Vec<Vec<u8>>,
    pub failed: Option<String>,
    pub shutdown: bool,
    pub writer_exited: bool,
    pub writer_idle: bool,
    pub last_sync: Instant,
    /// Bumped by every truncate/reset; readers compare it.
    pub generation: u64,
    /// `(generation, offset)` of recent rewrites: records after `offset` may
    /// have changed.
    pub rewrites: VecDeque<(u64, u64)>,
}

impl State {
    pub fn progress(&self) -> WalProgress {
        WalProgress {
            appended: self.appended,
            written: self.written,
            durable: self.durable,
        }
    }

    pub fn check_open(&self) -> Result<(), WalError> {
        if let Some(reason) = &self.failed {
            return Err(WalError::Failed(reason.clone()));
        }
        if self.shutdown {
            return Err(WalError::Closed);
        }
        Ok(())
    }

    pub fn first_offset(&self) -> u64 {
        self.segments.front().map_or(self.appended, |s| s.start)
    }

    /// Segment holding the record that ENDS at `offset` (`start < offset <=
    /// end`), or the first segment when `offset` is the log's start.
    pub fn segment_ending_at(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.start < offset)
            .saturating_sub(1)
    }

    /// Segment to READ from at `offset` (the last one starting at or before).
    pub fn segment_reading_at(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.start <= offset)
            .saturating_sub(1)
    }

    pub fn note_rewrite(&mut self, offset: u64) {
        self.generation += 1;
        self.rewrites.push_back((self.generation, offset));
        if self.rewrites.len() > MAX_REWRITES_KEPT {
            self.rewrites.pop_front();
        }
    }
}

/// The open tail segment, owned by whoever holds the `io` lock.
pub(crate) struct Io {
    pub file: Option<Box<dyn AppendFile>>,
    pub seg_start: u64,
    /// Bytes were appended since the last sync.
    pub dirty: bool,
}

pub(crate) struct Shared {
    pub opts: WalOptions,
    pub storage: Arc<dyn Storage>,
    pub control: Mutex<()>,
    pub io: Mutex<Io>,
    pub state: Mutex<State>,
    /// Wakes the writer thread (new data, shutdown).
    pub writer_cv: Condvar,
    /// Wakes appenders blocked on MAX_PENDING_BYTES.
    pub space_cv: Condvar,
    pub progress: Signal<WalProgress>,
    /// Run after the hot path (the writer thread, inline writes) published
    /// progress, with no WAL lock held. See [`Wal::on_progress`].
    pub progress_hook: OnceLock<Box<dyn Fn() + Send + Sync>>,
    pub stats: StatsInner,
}

struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(err) = close_handle(self) {
            tracing::warn!(error = %err, dir = %self.shared.opts.dir.display(), "closing WAL on drop");
        }
    }
}

fn close_handle(handle: &Handle) -> Result<(), WalError> {
    {
        let mut st = handle.shared.state.lock();
        st.shutdown = true;
    }
    handle.shared.writer_cv.notify_all();
    handle.shared.space_cv.notify_all();
    if let Some(thread) = handle.writer.lock().take() {
        if thread.thread().id() == std::thread::current().id() {
            // Dropped from the writer thread itself (its progress hook held
            // the last reference to the log's owner): it cannot wait for
            // itself; it sees `shutdown` once the hook returns and finishes
            // what is pending, as the join would have waited for.
            return Ok(());
        }
        if thread.join().is_err() {
            return Err(WalError::Failed("WAL writer thread panicked".to_string()));
        }
    }
    let st = handle.shared.state.lock();
    match &st.failed {
        Some(reason) => Err(WalError::Failed(reason.clone())),
        None => Ok(()),
    }
}

/// Handle to an open log. Cheap to clone; all clones share one writer thread,
/// which stops when [`Wal::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Wal {
    handle: Arc<Handle>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.handle.shared.opts.dir)
            .field("progress", &self.progress())
            .finish()
    }
}

impl Wal {
    /// Opens (or creates) the log in `opts.dir` on the real file system.
    ///
    /// Records that end at or before `start_offset` (the checkpoint's start)
    /// are skipped; every later record is passed to `replay` in order. A torn
    /// tail of the last segment is cut off with a warning; corruption anywhere
    /// else is [`WalError::Corrupt`]. An empty directory starts at
    /// `start_offset`; so does a log that ends before it (its segments only
    /// hold what the checkpoint already covers, and are removed).
    pub fn open<E: fmt::Display>(
        opts: WalOptions,
        start_offset: u64,
        replay: impl FnMut(&Record) -> Result<(), E>,
    ) -> Result<Wal, WalError> {
        Wal::open_with_storage(opts, Arc::new(OsStorage), start_offset, replay)
    }

    /// [`Wal::open`] on any [`Storage`] (tests use [`SimStorage`]).
    pub fn open_with_storage<E: fmt::Display>(
        opts: WalOptions,
        storage: Arc<dyn Storage>,
        start_offset: u64,
        mut replay: impl FnMut(&Record) -> Result<(), E>,
    ) -> Result<Wal, WalError> {
        let recovered = recovery::recover(&*storage, &opts, start_offset, &mut replay)?;
        let tail_start = recovered
            .segments
            .back()
            .map_or(recovered.end, |segment| segment.start);
        let tail_path = opts.dir.join(segment_file_name(tail_start));
        let file = storage
            .open_append(&tail_path)
            .map_err(|e| WalError::io("open", &tail_path, e))?;
        let end = recovered.end;
        let progress = Signal::new(WalProgress {
            appended: end,
            written: end,
            durable: end,
        });
        tracing::info!(
            dir = %opts.dir.display(),
            first = recovered.segments.front().map_or(end, |s| s.start),
            end,
            segments = recovered.segments.len(),
            fsync = %opts.fsync,
            "WAL opened"
        );
        let shared = Arc::new(Shared {
            storage,
            control: Mutex::new(()),
            io: Mutex::new(Io {
                file: Some(file),
                seg_start: tail_start,
                dirty: false,
            }),
            state: Mutex::new(State {
                appended: end,
                written: end,
                // Recovery only trusts what it read back; treat it as durable
                // (a crash-restarted process cannot know better).
                durable: end,
                last_epoch: recovered.last_epoch,
                segments: recovered.segments,
                pending: Vec::new(),
                pending_bytes: 0,
                spare: Vec::new(),
                failed: None,
                shutdown: false,
                writer_exited: false,
                writer_idle: false,
                last_sync: Instant::now(),
                generation: 0,
                rewrites: VecDeque::new(),
            }),
            writer_cv: Condvar::new(),
            space_cv: Condvar::new(),
            progress,
            progress_hook: OnceLock::new(),
            stats: StatsInner::default(),
            opts,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("wal-writer".to_string())
            .spawn(move || writer::run(thread_shared))
            .map_err(|e| WalError::io("spawn writer thread for", &shared.opts.dir, e))?;
        Ok(Wal {
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(thread)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    pub fn options(&self) -> &WalOptions {
        &self.shared().opts
    }

    /// Leader: appends a new record after the current end and returns its end
    /// offset. Only copies into memory; see [`Wal::wait_acked`].
    pub fn append(&self, epoch: u64, payload: &[u8]) -> Result<u64, WalError> {
        self.shared().push(epoch, None, payload, true)
    }

    /// Like [`Wal::append`], but leaves the writer thread asleep: the
    /// caller appends a batch (a pipeline) and then calls [`Wal::kick`]
    /// once, or waits with [`Wal::wait_acked`], which kicks. Saves a
    /// thread wake-up per record.
    pub fn append_deferred(&self, epoch: u64, payload: &[u8]) -> Result<u64, WalError> {
        self.shared().push(epoch, None, payload, false)
    }

    /// [`Wal::append_deferred`] with the payload written by `write` straight
    /// into the log's buffer: exactly `payload_len` bytes, or the append
    /// fails and nothing of it is logged.
    pub fn append_deferred_with(
        &self,
        epoch: u64,
        payload_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<u64, WalError> {
        self.shared()
            .push_with(epoch, None, payload_len, write, false)
    }

    /// Wake the writer for records appended with [`Wal::append_deferred`].
    pub fn kick(&self) {
        self.shared().kick();
    }

    /// Get deferred appends up to `offset` on their way without waiting
    /// for their acknowledgement: where acknowledging needs no fsync
    /// (interval, never), write them from the calling task unless the
    /// writer is busy (no thread wake-up per write), after letting the
    /// worker's other ready connections append theirs (see
    /// [`Wal::wait_acked`]); otherwise wake the writer.
    pub async fn flush_or_kick(&self, offset: u64) {
        let shared = self.shared();
        if shared.opts.fsync.acks_durable() {
            shared.kick();
            return;
        }
        requeue().await;
        if shared.progress.get().written >= offset {
            return;
        }
        if !shared.write_inline() {
            shared.kick();
        }
    }

    /// Follower: appends a record received from the leader unchanged.
    pub fn append_record(&self, rec: &Record) -> Result<(), WalError> {
        self.shared()
            .push(rec.epoch, Some(rec.offset), &rec.payload, true)
            .map(|_| ())
    }

    pub fn last_offset(&self) -> u64 {
        self.shared().state.lock().appended
    }

    /// Epoch of the last record; 0 if the log holds none (also right after
    /// [`Wal::reset`] or a truncation to the log's start).
    pub fn last_epoch(&self) -> u64 {
        self.shared().state.lock().last_epoch
    }

    /// Oldest offset a reader can start from.
    pub fn first_offset(&self) -> u64 {
        self.shared().state.lock().first_offset()
    }

    /// Current progress. Unlike values seen through [`Wal::subscribe`],
    /// `appended` here is always current.
    pub fn progress(&self) -> WalProgress {
        self.shared().state.lock().progress()
    }

    /// Notified whenever `written` or `durable` move (and on failure/close);
    /// `appended` in these values is only as fresh as the last publication.
    /// After a truncate or reset the values can go backwards.
    pub fn subscribe(&self) -> Watcher<WalProgress> {
        self.shared().progress.subscribe()
    }

    /// Set the function run after each write or fsync of the hot path
    /// publishes progress (once; later calls are ignored). It runs on the
    /// writer thread or on the task that wrote inline, with no WAL lock
    /// held, so it may take the caller's own locks; it is not run for the
    /// control operations (truncate, reset, reader flushes), whose callers
    /// hold their own locks.
    pub fn on_progress(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.shared().progress_hook.set(hook);
    }

    /// Why the log failed, if it did (sticky until restart).
    pub fn failure(&self) -> Option<String> {
        self.shared().state.lock().failed.clone()
    }

    pub fn stats(&self) -> WalStats {
        self.shared().stats.snapshot()
    }

    /// Resolves once `offset` is acknowledged per the fsync policy (fsynced
    /// for always/batch, written for interval/never). Errors with
    /// [`WalError::Failed`] if the log failed first, [`WalError::Closed`] if
    /// it was closed first, [`WalError::Beyond`] if nothing was appended up
    /// to `offset`.
    pub async fn wait_acked(&self, offset: u64) -> Result<(), WalError> {
        let shared = self.shared();
        let durable = shared.opts.fsync.acks_durable();
        let acked = |p: &WalProgress| if durable { p.durable } else { p.written };
        let mut rx = shared.progress.subscribe();
        if acked(&rx.borrow_and_update()) < offset {
            if !durable {
                // Let the other connections this worker thread has ready
                // run first and append theirs: one write(2) then carries
                // them all, as Redis writes its AOF once per pass of its
                // event loop. (The requeue costs no I/O poll; with nothing
                // else queued this task simply runs again.)
                requeue().await;
                if acked(&rx.borrow_and_update()) >= offset {
                    return Ok(());
                }
            }
            // "Handed to the OS" needs no fsync: write it from here when the
            // writer is not busy; otherwise (or for fsync) wake the writer.
            let wrote_inline = !durable && shared.write_inline();
            if !wrote_inline {
                shared.kick();
            }
        }
        loop {
            if acked(&rx.borrow_and_update()) >= offset {
                return Ok(());
            }
            {
                let st = shared.state.lock();
                if acked(&st.progress()) >= offset {
                    return Ok(());
                }
                if let Some(reason) = &st.failed {
                    return Err(WalError::Failed(reason.clone()));
                }
                if st.writer_exited {
                    return Err(WalError::Closed);
                }
                if offset > st.appended {
                    return Err(WalError::Beyond {
                        requested: offset,
                        last: st.appended,
                    });
                }
            }
            if rx.changed().await.is_err() {
                return Err(WalError::Closed);
            }
        }
    }

    /// A reader positioned at `offset`, which must be a record boundary
    /// between [`Wal::first_offset`] and [`Wal::last_offset`]. Readers return
    /// only records already handed to the OS (`written`).
    pub fn reader(&self, offset: u64) -> Result<WalReader, WalError> {
        let shared = self.shared();
        let _control = shared.control.lock();
        let needs_flush = {
            let st = shared.state.lock();
            check_range(&st, offset)?;
            offset > st.written
        };
        if needs_flush {
            let mut io = shared.io.lock();
            let mut st = shared.state.lock();
            let sync = shared.opts.fsync.acks_durable();
            shared.write_out(&mut io, &mut st, sync)?;
        }
        let generation = {
            let st = shared.state.lock();
            shared.check_boundary(&st, offset)?;
            st.generation
        };
        Ok(WalReader::new(
            Arc::clone(&self.handle.shared),
            offset,
            generation,
        ))
    }

    /// Divergence: drops every record ending after `offset` (a boundary), on
    /// disk and in memory, durably. Must not race with appends (a follower
    /// calls it before it resumes appending).
    pub fn truncate_after(&self, offset: u64) -> Result<(), WalError> {
        let shared = self.shared();
        let _control = shared.control.lock();
        let mut io = shared.io.lock();
        let mut st = shared.state.lock();
        shared.write_out(&mut io, &mut st, true)?;
        check_range(&st, offset)?;
        let epoch = shared.check_boundary(&st, offset)?;
        if offset == st.appended {
            return Ok(());
        }
        let result = shared.truncate_files(&mut io, &mut st, offset);
        if let Err(err) = &result {
            st.failed = Some(err.to_string());
        } else {
            st.last_epoch = epoch;
            st.note_rewrite(offset);
            tracing::info!(offset, epoch, "WAL truncated");
        }
        shared.progress.publish(st.progress());
        result
    }

    /// Retention: deletes whole segments that end at or before `offset`. The
    /// tail segment is always kept.
    pub fn remove_before(&self, offset: u64) -> Result<(), WalError> {
        let shared = self.shared();
        let _control = shared.control.lock();
        let victims: Vec<PathBuf> = {
            let mut st = shared.state.lock();
            let mut victims = Vec::new();
            while st.segments.len() > 1 && st.segments[0].end <= offset {
                if let Some(segment) = st.segments.pop_front() {
                    victims.push(segment.path);
                }
            }
            victims
        };
        if victims.is_empty() {
            return Ok(());
        }
        for path in &victims {
            shared
                .storage
                .remove(path)
                .map_err(|e| WalError::io("remove", path, e))?;
        }
        shared
            .storage
            .sync_dir(&shared.opts.dir)
            .map_err(|e| WalError::io("fsync directory", &shared.opts.dir, e))?;
        tracing::debug!(
            removed = victims.len(),
            before = offset,
            "WAL segments removed"
        );
        Ok(())
    }

    /// Discards the whole log and restarts it empty at `offset` (a follower
    /// that loaded a snapshot). Records appended but not yet written are
    /// discarded too.
    pub fn reset(&self, offset: u64) -> Result<(), WalError> {
        let shared = self.shared();
        let _control = shared.control.lock();
        let mut io = shared.io.lock();
        let mut st = shared.state.lock();
        st.check_open()?;
        let result = shared.reset_files(&mut io, &mut st, offset);
        if let Err(err) = &result {
            st.failed = Some(err.to_string());
        } else {
            st.note_rewrite(offset);
            tracing::info!(offset, "WAL reset");
        }
        shared.progress.publish(st.progress());
        shared.space_cv.notify_all();
        result
    }

    /// Bytes the segment files take (headers included; counts records still
    /// in the writer's buffer).
    pub fn disk_bytes(&self) -> u64 {
        let st = self.shared().state.lock();
        st.segments.iter().map(Segment::disk_len).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.shared().state.lock().segments.len()
    }

    /// Writes and fsyncs everything (whatever the policy) and stops the
    /// writer thread. Later appends fail with [`WalError::Closed`]. Returns
    /// [`WalError::Failed`] if the log had failed (then not everything is
    /// durable).
    pub fn close(&self) -> Result<(), WalError> {
        close_handle(&self.handle)
    }
}

fn check_range(st: &State, offset: u64) -> Result<(), WalError> {
    let first = st.first_offset();
    if offset < first {
        return Err(WalError::Truncated {
            requested: offset,
            first,
        });
    }
    if offset > st.appended {
        return Err(WalError::Beyond {
            requested: offset,
            last: st.appended,
        });
    }
    Ok(())
}

/// Puts the calling task at the back of its worker's run queue, once.
///
/// A task that wakes itself while it is being polled is rescheduled by
/// tokio as a yield: behind the tasks already queued on that worker, with
/// no poll of the I/O driver in between (`tokio::task::yield_now` defers
/// the wake until the driver has been polled: an `epoll_wait` per call).
fn requeue() -> impl std::future::Future<Output = ()> {
    let mut queued = false;
    std::future::poll_fn(move |cx| {
        if queued {
            return std::task::Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}
