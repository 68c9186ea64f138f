//! The append path, the group-commit writer thread, and the file operations
//! that rewrite the log (truncate, reset).

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Instant;

use super::format::{
    MAX_PAYLOAD, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, encode_record_with,
    encoded_len, segment_header,
};
use super::{Chunk, FsyncPolicy, Io, MAX_PENDING_BYTES, Segment, Shared, State, WalError};

/// Chunk buffers kept for reuse; more would just pin memory.
const MAX_SPARE_BUFFERS: usize = 4;

impl Shared {
    /// Encodes one record into the pending buffer. `expected_end` is the
    /// follower's check that the record lands where the leader put it.
    pub(crate) fn push(
        &self,
        epoch: u64,
        expected_end: Option<u64>,
        payload: &[u8],
        wake_writer: bool,
    ) -> Result<u64, WalError> {
        self.push_with(
            epoch,
            expected_end,
            payload.len(),
            |buf| buf.extend_from_slice(payload),
            wake_writer,
        )
    }

    /// [`Self::push`] with the payload written by `write` straight into the
    /// pending buffer (exactly `payload_len` bytes, checked).
    pub(crate) fn push_with(
        &self,
        epoch: u64,
        expected_end: Option<u64>,
        payload_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
        wake_writer: bool,
    ) -> Result<u64, WalError> {
        if payload_len > MAX_PAYLOAD {
            return Err(WalError::TooLarge {
                len: payload_len,
                max: MAX_PAYLOAD,
            });
        }
        let len = encoded_len(payload_len);
        let mut guard = self.state.lock();
        loop {
            guard.check_open()?;
            // Backpressure; a single huge record may always go alone.
            if guard.pending_bytes == 0 || guard.pending_bytes + len as usize <= MAX_PENDING_BYTES {
                break;
            }
            self.space_cv.wait(&mut guard);
        }
        let st = &mut *guard;
        if epoch < st.last_epoch {
            return Err(WalError::EpochRegression {
                last: st.last_epoch,
                got: epoch,
            });
        }
        let end = st.appended + len;
        if let Some(got) = expected_end
            && got != end
        {
            return Err(WalError::OffsetMismatch { expected: end, got });
        }
        let needs_roll = st.segments.back().is_none_or(|tail| {
            tail.end > tail.start && (tail.end - tail.start) + len > self.opts.segment_bytes
        });
        if needs_roll {
            st.segments
                .push_back(Segment::new(&self.opts.dir, st.appended));
        }
        let Some(seg_start) = st.segments.back().map(|tail| tail.start) else {
            return Err(WalError::Failed("no tail segment".to_string()));
        };
        let new_chunk = st
            .pending
            .last()
            .is_none_or(|chunk| chunk.seg_start != seg_start);
        if new_chunk {
            let buf = st.spare.pop().unwrap_or_default();
            st.pending.push(Chunk { seg_start, buf });
        }
        let last = st.pending.len() - 1;
        if let Err(written) =
            encode_record_with(&mut st.pending[last].buf, epoch, end, payload_len, write)
        {
            // Nothing of the record is buffered: undo the bookkeeping.
            if new_chunk && let Some(chunk) = st.pending.pop() {
                st.spare.push(chunk.buf);
            }
            if needs_roll {
                st.segments.pop_back();
            }
            return Err(WalError::Failed(format!(
                "record encoder wrote {written} bytes after announcing {payload_len}"
            )));
        }
        if let Some(tail) = st.segments.back_mut() {
            tail.note_record(end);
        }
        st.pending_bytes += len as usize;
        st.appended = end;
        st.last_epoch = epoch;
        let wake = wake_writer && st.writer_idle;
        drop(guard);
        if wake {
            self.writer_cv.notify_one();
        }
        Ok(end)
    }

    /// Wake the writer thread if it is idle and records are pending.
    pub(crate) fn kick(&self) {
        let st = self.state.lock();
        let wake = st.writer_idle && !st.pending.is_empty();
        drop(st);
        if wake {
            self.writer_cv.notify_one();
        }
    }

    /// Writes chunks to their segments, creating (and sealing the previous)
    /// segment where a chunk starts a new one.
    pub(crate) fn write_chunks(&self, io: &mut Io, chunks: &[Chunk]) -> Result<(), WalError> {
        for chunk in chunks {
            if io.file.is_none() || io.seg_start != chunk.seg_start {
                if io.file.is_some() && io.dirty {
                    // Seal the old segment so that only the last segment can
                    // ever be torn (recovery relies on it).
                    self.sync_io(io)?;
                }
                io.file = None;
                self.create_segment(io, chunk.seg_start)?;
            }
            if chunk.buf.is_empty() {
                continue;
            }
            let Some(file) = io.file.as_mut() else {
                return Err(WalError::Failed("no open segment".to_string()));
            };
            // The path only for the error: formatting it on every write cost
            // a tenth of an acknowledged SET's instructions.
            let seg_start = io.seg_start;
            file.append(&chunk.buf).map_err(|e| {
                let path = self
                    .opts
                    .dir
                    .join(super::format::segment_file_name(seg_start));
                WalError::io("write", &path, e)
            })?;
            io.dirty = true;
            self.stats.record_write(chunk.buf.len());
        }
        Ok(())
    }

    /// Creates a segment file with its header, durably (file and directory).
    fn create_segment(&self, io: &mut Io, start: u64) -> Result<(), WalError> {
        let path = self.opts.dir.join(super::format::segment_file_name(start));
        let mut file = self
            .storage
            .create(&path)
            .map_err(|e| WalError::io("create", &path, e))?;
        file.append(&segment_header(start))
            .map_err(|e| WalError::io("write header", &path, e))?;
        file.sync().map_err(|e| WalError::io("fsync", &path, e))?;
        self.storage
            .sync_dir(&self.opts.dir)
            .map_err(|e| WalError::io("fsync directory", &self.opts.dir, e))?;
        io.file = Some(file);
        io.seg_start = start;
        io.dirty = false;
        Ok(())
    }

    pub(crate) fn sync_io(&self, io: &mut Io) -> Result<(), WalError> {
        if !io.dirty {
            return Ok(());
        }
        let path = self
            .opts
            .dir
            .join(super::format::segment_file_name(io.seg_start));
        let Some(file) = io.file.as_mut() else {
            return Ok(());
        };
        let started = Instant::now();
        file.sync().map_err(|e| WalError::io("fsync", &path, e))?;
        self.stats.record_fsync(started.elapsed());
        io.dirty = false;
        Ok(())
    }

    /// Synchronously writes (and, if `sync`, fsyncs) everything pending, with
    /// both locks held. Used by the rare control operations.
    pub(crate) fn write_out(
        &self,
        io: &mut Io,
        st: &mut State,
        sync: bool,
    ) -> Result<(), WalError> {
        st.check_open()?;
        let chunks = std::mem::take(&mut st.pending);
        st.pending_bytes = 0;
        let target = st.appended;
        let result = self
            .write_chunks(io, &chunks)
            .and_then(|()| if sync { self.sync_io(io) } else { Ok(()) });
        match result {
            Ok(()) => {
                st.written = target;
                if sync {
                    st.durable = target;
                    st.last_sync = Instant::now();
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "WAL write failed; log is now read-only");
                st.failed = Some(err.to_string());
            }
        }
        self.progress.publish(st.progress());
        self.space_cv.notify_all();
        st.check_open()
    }

    /// Verifies that `offset` (within the log, at or before `written`) is a
    /// record boundary by scanning from the nearest indexed boundary, and
    /// returns the epoch of the record ending there (0 at the log's start).
    pub(crate) fn check_boundary(&self, st: &State, offset: u64) -> Result<u64, WalError> {
        if offset == st.first_offset() {
            return Ok(0);
        }
        let segment = &st.segments[st.segment_ending_at(offset)];
        let mut pos = segment.scan_base(offset);
        let path = &segment.path;
        let mut file = self
            .storage
            .open_read(path)
            .map_err(|e| WalError::io("open", path, e))?;
        file.seek(SeekFrom::Start(SEGMENT_HEADER_LEN + (pos - segment.start)))
            .map_err(|e| WalError::io("seek", path, e))?;
        let mut file = BufReader::with_capacity(64 << 10, file);
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        let mut payload = Vec::new();
        while pos < offset {
            let file_pos = SEGMENT_HEADER_LEN + (pos - segment.start);
            let corrupt = |reason: String| WalError::Corrupt {
                file: path.clone(),
                offset: file_pos,
                reason,
            };
            file.read_exact(&mut header)
                .map_err(|e| corrupt(format!("reading record header: {e}")))?;
            let parsed = RecordHeader::parse(&header);
            parsed.check_position(pos).map_err(corrupt)?;
            payload.resize(parsed.len as usize, 0);
            file.read_exact(&mut payload)
                .map_err(|e| corrupt(format!("reading record payload: {e}")))?;
            parsed.check_crc(&header, &payload).map_err(corrupt)?;
            pos = parsed.end;
            if pos == offset {
                return Ok(parsed.epoch);
            }
        }
        Err(WalError::NotBoundary(offset))
    }

    /// Cuts the files so the log ends at `offset`: later segments are removed
    /// newest first (a crash part-way leaves a longer but consistent log),
    /// then the segment holding `offset` is cut and synced.
    pub(crate) fn truncate_files(
        &self,
        io: &mut Io,
        st: &mut State,
        offset: u64,
    ) -> Result<(), WalError> {
        let keep = st.segment_ending_at(offset);
        io.file = None;
        while st.segments.len() > keep + 1 {
            if let Some(segment) = st.segments.pop_back() {
                self.storage
                    .remove(&segment.path)
                    .map_err(|e| WalError::io("remove", &segment.path, e))?;
            }
        }
        self.storage
            .sync_dir(&self.opts.dir)
            .map_err(|e| WalError::io("fsync directory", &self.opts.dir, e))?;
        let Some(tail) = st.segments.back_mut() else {
            return Err(WalError::Failed("no segment left".to_string()));
        };
        self.storage
            .truncate(&tail.path, SEGMENT_HEADER_LEN + (offset - tail.start))
            .map_err(|e| WalError::io("truncate", &tail.path, e))?;
        tail.end = offset;
        tail.index.retain(|&e| e <= offset);
        let file = self
            .storage
            .open_append(&tail.path)
            .map_err(|e| WalError::io("open", &tail.path, e))?;
        io.file = Some(file);
        io.seg_start = tail.start;
        io.dirty = false;
        st.appended = offset;
        st.written = offset;
        st.durable = offset;
        Ok(())
    }

    /// Removes every segment and starts an empty one at `offset`.
    pub(crate) fn reset_files(
        &self,
        io: &mut Io,
        st: &mut State,
        offset: u64,
    ) -> Result<(), WalError> {
        let dropped = st.pending_bytes;
        if dropped > 0 {
            tracing::warn!(bytes = dropped, "WAL reset discards unwritten records");
        }
        st.pending.clear();
        st.pending_bytes = 0;
        io.file = None;
        io.dirty = false;
        while let Some(segment) = st.segments.pop_back() {
            self.storage
                .remove(&segment.path)
                .map_err(|e| WalError::io("remove", &segment.path, e))?;
        }
        self.create_segment(io, offset)?;
        st.segments.push_back(Segment::new(&self.opts.dir, offset));
        st.appended = offset;
        st.written = offset;
        st.durable = offset;
        st.last_epoch = 0;
        Ok(())
    }
}

/// The writer thread: waits for pending data, gathers (batch), writes,
/// fsyncs per policy, publishes progress. Exits after a final flush + fsync
/// once shutdown is requested, or at once if the log has failed.
pub(crate) fn run(shared: Arc<Shared>) {
    let policy = shared.opts.fsync;
    loop {
        let mut st = shared.state.lock();
        let mut interval_due = false;
        loop {
            if st.failed.is_some() && st.shutdown {
                finish(&shared, st);
                return;
            }
            if st.shutdown {
                if st.pending.is_empty() && st.durable == st.written {
                    finish(&shared, st);
                    return;
                }
                break;
            }
            if st.failed.is_none() && !st.pending.is_empty() {
                break;
            }
            if let FsyncPolicy::Interval(every) = policy
                && st.failed.is_none()
                && st.written > st.durable
            {
                let deadline = st.last_sync + every;
                if Instant::now() >= deadline {
                    interval_due = true;
                    break;
                }
                st.writer_idle = true;
                shared.writer_cv.wait_until(&mut st, deadline);
                st.writer_idle = false;
                continue;
            }
            st.writer_idle = true;
            shared.writer_cv.wait(&mut st);
            st.writer_idle = false;
        }
        let shutting_down = st.shutdown;
        drop(st);

        if policy == FsyncPolicy::Batch && !shutting_down && !shared.opts.batch_delay.is_zero() {
            // Group commit window: let concurrent writers join this fsync.
            std::thread::sleep(shared.opts.batch_delay);
        }

        let mut io = shared.io.lock();
        shared.write_step(&mut io, |last_sync| match policy {
            FsyncPolicy::Always | FsyncPolicy::Batch => true,
            FsyncPolicy::Interval(every) => {
                shutting_down || interval_due || last_sync.elapsed() >= every
            }
            FsyncPolicy::Never => shutting_down,
        });
        drop(io);
        shared.progressed();
    }
}

impl Shared {
    /// Runs the progress hook; the caller holds no WAL lock.
    fn progressed(&self) {
        if let Some(hook) = self.progress_hook.get() {
            hook();
        }
    }

    /// One batch: take the pending chunks, write them (and fsync when
    /// `sync_now(last_sync)` says so), publish the progress. The caller
    /// holds the I/O lock. Returns false when the log has failed.
    fn write_step(&self, io: &mut Io, sync_now: impl FnOnce(Instant) -> bool) -> bool {
        let mut st = self.state.lock();
        if st.failed.is_some() {
            return false;
        }
        let chunks = std::mem::take(&mut st.pending);
        st.pending_bytes = 0;
        let target = st.appended;
        let sync_now = sync_now(st.last_sync);
        drop(st);
        self.space_cv.notify_all();

        let result = self
            .write_chunks(io, &chunks)
            .and_then(|()| if sync_now { self.sync_io(io) } else { Ok(()) });

        let mut st = self.state.lock();
        for mut chunk in chunks {
            if st.spare.len() < MAX_SPARE_BUFFERS && chunk.buf.capacity() <= (8 << 20) {
                chunk.buf.clear();
                st.spare.push(chunk.buf);
            }
        }
        match result {
            Ok(()) => {
                st.written = target;
                if sync_now {
                    st.durable = target;
                    st.last_sync = Instant::now();
                }
            }
            Err(err) => {
                // Sticky: never retry, never claim durability we lost.
                tracing::error!(error = %err, "WAL write/fsync failed; log is now read-only");
                st.failed = Some(err.to_string());
                st.pending.clear();
                st.pending_bytes = 0;
                self.space_cv.notify_all();
            }
        }
        self.progress.publish(st.progress());
        true
    }

    /// For `--fsync interval` and `never`, whose acknowledgement is "handed
    /// to the OS": write the pending records on the calling thread (a
    /// write(2) into the page cache, as Redis does from its event loop)
    /// instead of handing them to the writer thread and waiting to be
    /// woken, which cost two context switches per acknowledged write. The
    /// writer thread still owns the interval fsync (it is woken when the
    /// log turns dirty). Returns false when another thread is writing: the
    /// caller waits for its progress as before.
    pub(crate) fn write_inline(&self) -> bool {
        let Some(mut io) = self.io.try_lock() else {
            return false;
        };
        let was_clean = {
            let st = self.state.lock();
            if st.shutdown || st.failed.is_some() || st.pending.is_empty() {
                return false;
            }
            st.written == st.durable
        };
        let wrote = self.write_step(&mut io, |_| false);
        drop(io);
        self.progressed();
        if wrote && was_clean {
            // The writer may be asleep without a deadline (nothing was
            // dirty); it must arm the interval fsync for what we wrote.
            let idle = self.state.lock().writer_idle;
            if idle {
                self.writer_cv.notify_one();
            }
        }
        wrote
    }
}

fn finish(shared: &Shared, mut st: parking_lot::MutexGuard<'_, super::State>) {
    st.writer_exited = true;
    shared.progress.publish(st.progress());
    shared.space_cv.notify_all();
}
