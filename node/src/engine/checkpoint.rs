//! Checkpoints (fuzzy snapshots of the readable keyspace, then log
//! trimming), snapshot install on a follower, and the divergence cut.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::keyspace::{Entry, Keyspace, SHARDS};
use crate::meta;
use crate::record;
use crate::snapshot::{SnapshotMeta, SnapshotReader, SnapshotWriter};

use super::visibility::Pending;
use super::{Engine, EngineError};

pub(super) fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Load the latest snapshot into `base`: (start offset, end offset, bytes).
pub(super) fn load_snapshot(
    dir: &Path,
    base: &mut Keyspace,
) -> Result<(u64, u64, u64), EngineError> {
    let snap_err = |e: crate::snapshot::SnapshotError| EngineError::Snapshot(e.to_string());
    let Some(path) = crate::snapshot::latest(dir).map_err(snap_err)? else {
        return Ok((0, 0, 0));
    };
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut reader = SnapshotReader::open(&path).map_err(snap_err)?;
    base.reserve(reader.key_count_hint());
    while let Some(e) = reader.next_entry().map_err(snap_err)? {
        base.set_value(&e.key, e.value(), e.expire_at_ms);
    }
    let m = reader.meta();
    tracing::info!(path = %path.display(), keys = m.keys, start = m.start_offset, end = m.end_offset, "loaded snapshot");
    Ok((m.start_offset, m.end_offset, bytes))
}

impl Engine {
    /// Divergence: cut the log after `offset` and rebuild memory from disk.
    pub fn truncate_and_reload(&self, offset: u64) -> Result<(), EngineError> {
        let _ck = self.checkpoint_lock.lock();
        let mut st = self.state.lock();
        let snap_dir = snapshot_dir(&self.opts.data_dir);
        self.wal.truncate_after(offset)?;
        st.meta
            .epoch_history
            .retain(|(_, start)| *start < offset || (offset == 0 && *start == 0));
        if offset == 0 {
            st.meta.epoch_history.clear();
        }
        meta::store(&self.opts.data_dir, &st.meta)?;
        let mut base = Keyspace::new();
        let (start, snap_end, _) = load_snapshot(&snap_dir, &mut base)?;
        if snap_end > offset {
            return Err(EngineError::Snapshot(format!(
                "local snapshot ends at {snap_end}, after the divergence point {offset}: a full resync is needed"
            )));
        }
        let mut reader = self.wal.reader(start.max(self.wal.first_offset()))?;
        loop {
            let batch = reader.next_batch(4 << 20)?;
            if batch.is_empty() {
                break;
            }
            for rec in &batch {
                let muts = record::decode(&rec.payload).map_err(|e| {
                    EngineError::Corrupt(format!("record ending at {}: {e}", rec.offset))
                })?;
                for m in &muts {
                    base.apply(m);
                }
            }
        }
        *self.base.write() = base;
        st.pending = Pending::default();
        st.received.clear();
        st.applied = self.wal.last_offset();
        st.committed = st.committed.min(st.applied);
        self.applied_signal.publish(st.applied);
        tracing::warn!(offset, "truncated diverged log tail and rebuilt state");
        Ok(())
    }

    /// Follower: replace everything with a snapshot received from the leader.
    pub fn install_snapshot(&self, path: &Path) -> Result<SnapshotMeta, EngineError> {
        let _ck = self.checkpoint_lock.lock();
        let mut base = Keyspace::new();
        let mut reader =
            SnapshotReader::open(path).map_err(|e| EngineError::Snapshot(e.to_string()))?;
        base.reserve(reader.key_count_hint());
        while let Some(e) = reader
            .next_entry()
            .map_err(|e| EngineError::Snapshot(e.to_string()))?
        {
            base.set_value(&e.key, e.value(), e.expire_at_ms);
        }
        let smeta = reader.meta().clone();
        let mut st = self.state.lock();
        self.wal.reset(smeta.start_offset)?;
        *self.base.write() = base;
        st.pending = Pending::default();
        st.received.clear();
        st.applied = smeta.start_offset;
        st.committed = smeta.start_offset;
        st.meta.epoch_history = smeta.epoch_history.clone();
        st.meta.epoch = st.meta.epoch.max(smeta.epoch);
        meta::store(&self.opts.data_dir, &st.meta)?;
        self.last_checkpoint_offset
            .store(smeta.start_offset, Ordering::Relaxed);
        self.consistent_at
            .store(smeta.end_offset, Ordering::Relaxed);
        self.applied_signal.publish(st.applied);
        Ok(smeta)
    }

    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// False while replaying the log tail of a snapshot this node loaded
    /// (its keyspace mixes states between the snapshot's start and end).
    pub fn consistent(&self) -> bool {
        self.applied() >= self.consistent_at.load(Ordering::Relaxed)
    }

    pub fn last_checkpoint_offset(&self) -> u64 {
        self.last_checkpoint_offset.load(Ordering::Relaxed)
    }

    pub fn checkpoint_running(&self) -> bool {
        self.checkpoint_running.load(Ordering::Relaxed)
    }

    /// True when enough log has accumulated since the last checkpoint.
    pub fn checkpoint_due(&self) -> bool {
        self.wal
            .last_offset()
            .saturating_sub(self.last_checkpoint_offset())
            >= self.opts.snapshot_every_bytes
    }

    /// Write a snapshot of the readable keyspace without blocking writes:
    /// one shard is copied (reference counts only) per lock hold. Blocking;
    /// run it on a blocking thread. Then trims the log behind it.
    pub fn checkpoint(&self) -> Result<(SnapshotMeta, PathBuf), EngineError> {
        let _ck = self.checkpoint_lock.lock();
        self.checkpoint_running.store(true, Ordering::Relaxed);
        let res = self.checkpoint_inner();
        self.checkpoint_running.store(false, Ordering::Relaxed);
        res
    }

    fn checkpoint_inner(&self) -> Result<(SnapshotMeta, PathBuf), EngineError> {
        let snap_err = |e: crate::snapshot::SnapshotError| EngineError::Snapshot(e.to_string());
        let dir = snapshot_dir(&self.opts.data_dir);
        let start = self.state.lock().applied;
        let mut writer = SnapshotWriter::create(&dir).map_err(snap_err)?;
        let mut chunk: Vec<Entry> = Vec::new();
        let mut keys = 0u64;
        for shard in 0..SHARDS {
            chunk.clear();
            self.base.read().clone_shard(shard, &mut chunk);
            for e in &chunk {
                writer
                    .add(e.key(), e.value_ref(), e.expire_at_ms)
                    .map_err(snap_err)?;
            }
            keys += chunk.len() as u64;
        }
        let (end, epoch, history) = {
            let st = self.state.lock();
            (st.applied, st.meta.epoch, st.meta.epoch_history.clone())
        };
        let smeta = SnapshotMeta {
            start_offset: start,
            end_offset: end,
            epoch,
            keys,
            epoch_history: history,
        };
        let (path, bytes) = writer.finish(&smeta).map_err(snap_err)?;
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
        self.last_checkpoint_offset.store(start, Ordering::Relaxed);
        // Keep everything after the snapshot's start (needed to recover)
        // and a retention window for followers that reconnect.
        let last = self.wal.last_offset();
        let cut = start
            .min(last.saturating_sub(self.opts.wal_retention_bytes))
            .min(self.follower_pin(last));
        self.wal.remove_before(cut)?;
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::info!(start, end, keys, bytes, "checkpoint written");
        Ok((smeta, path))
    }

    /// Latest snapshot file usable to bootstrap a follower: its log tail
    /// must still be retained.
    pub fn latest_snapshot(&self) -> Result<Option<(SnapshotMeta, PathBuf)>, EngineError> {
        let dir = snapshot_dir(&self.opts.data_dir);
        let Some(path) =
            crate::snapshot::latest(&dir).map_err(|e| EngineError::Snapshot(e.to_string()))?
        else {
            return Ok(None);
        };
        let reader =
            SnapshotReader::open(&path).map_err(|e| EngineError::Snapshot(e.to_string()))?;
        let m = reader.meta().clone();
        if m.start_offset < self.wal.first_offset() {
            return Ok(None);
        }
        Ok(Some((m, path)))
    }
}
