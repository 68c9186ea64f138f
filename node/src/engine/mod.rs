//! The node's state machine: keyspace, log, offsets, role and commit, tied
//! together behind one lock so the offset order is the apply order.
//!
//! Write path (leader): under the lock, a command reads the current view and
//! emits mutations; they are applied (or staged, see [`visibility`]) and
//! appended to the WAL as one record. Outside the lock the connection waits
//! for acknowledgement per the commit rule in [`quorum`].
//!
//! The parts, each in its own file with its own tests:
//! - [`visibility`]: the pending overlay of semi-sync/sync writes and the
//!   [`WriteView`] commands write through;
//! - [`quorum`]: the pure commit rule (acks, mode, ack level, K);
//! - `followers`: the leader's table of follower progress;
//! - `replica`: the follower side (append the leader's records, apply on
//!   its commit);
//! - `roles`: fence, promote, follow, resume; epochs;
//! - `checkpoint`: snapshots, snapshot install, divergence truncation;
//! - `expiry`: the active expiry cycle;
//! - `settings`: replication settings changed while running.

mod checkpoint;
mod expiry;
mod followers;
pub mod quorum;
mod replica;
mod roles;
mod settings;
#[cfg(test)]
mod tests;
pub mod visibility;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::signal::{Gated, Signal, Watcher};

use crate::config::Config;
use crate::domain::{OnSyncTimeout, ReplicationMode, ReplicationSettings, Role};
use crate::keyspace::Keyspace;
use crate::meta::{self, NodeMeta};
use crate::record::{self, Mutation};
use crate::stats::Stats;

use crate::wal::{Record, Wal, WalError, WalOptions};
use checkpoint::{load_snapshot, snapshot_dir};
pub use followers::FollowerProgress;
use settings::{SETTINGS_FILE, load_settings};
use visibility::Pending;
pub use visibility::WriteView;

/// Current wall-clock time in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("READONLY You can't write against a read only replica.")]
    ReadOnly,
    #[error("FENCED this node was fenced at epoch {0}; write not accepted")]
    Fenced(u64),
    #[error("IOERR write-ahead log failed: {0}")]
    Wal(#[from] WalError),
    #[error("IOERR {0}")]
    Io(String),
    #[error("ERR node state is corrupt: {0}")]
    Corrupt(String),
    #[error("ERR {0}")]
    Meta(#[from] meta::MetaError),
    #[error("EPOCH {0}")]
    Epoch(String),
    #[error("ERR snapshot: {0}")]
    Snapshot(String),
    #[error("ERR invalid replication settings: {0}")]
    Settings(String),
}

/// Settings the engine needs (a slice of [`Config`]).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub node_id: String,
    pub data_dir: PathBuf,
    /// The flags' replication settings; a `settings.auto.json` in the data
    /// directory (written by [`Engine::set_settings`]) overrides them.
    pub replication: ReplicationSettings,
    pub wal: WalOptions,
    pub wal_retention_bytes: u64,
    pub snapshot_every_bytes: u64,
}

impl EngineOptions {
    pub fn from_config(c: &Config) -> EngineOptions {
        EngineOptions {
            node_id: c.node_id(),
            data_dir: c.data_dir.clone(),
            replication: c.replication_settings(),
            wal: WalOptions {
                dir: c.data_dir.join("wal"),
                segment_bytes: c.wal_segment_bytes,
                fsync: c.fsync,
                batch_delay: Duration::from_micros(200),
            },
            wal_retention_bytes: c.wal_retention_bytes,
            snapshot_every_bytes: c.snapshot_every_bytes,
        }
    }
}

/// Role, epoch and leader as one value, published on a watch channel so
/// connections and the replication client react to changes at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    pub role: Role,
    pub epoch: u64,
    pub fenced: bool,
    pub leader: Option<String>,
}

/// A value as a writer sees it.
#[derive(Debug, Clone)]
pub struct Current {
    pub value: Bytes,
    pub expire_at_ms: u64,
}

struct State {
    pending: Pending,
    /// Follower: records appended but not yet committed by the leader.
    received: VecDeque<(u64, Vec<Mutation>)>,
    /// Offset of the state in [`Engine::base`].
    applied: u64,
    committed: u64,
    meta: NodeMeta,
    fenced: bool,
    degraded: bool,
    /// A write reached memory but not the log: serving would be lying.
    poisoned: Option<String>,
}

/// The node's state machine. Shared as `Arc<Engine>`.
pub struct Engine {
    pub opts: EngineOptions,
    /// Replication settings in force: changeable while running.
    settings: RwLock<ReplicationSettings>,
    wal: Wal,
    state: Mutex<State>,
    /// The readable keyspace (committed state on a semi-sync/sync leader).
    /// Readers take only its read lock, never `state`: a GET does not queue
    /// behind a write's log append. Lock order: `state`, then `base`.
    base: RwLock<Keyspace>,
    commit_signal: Signal<u64>,
    applied_signal: Signal<u64>,
    role_tx: watch::Sender<RoleState>,
    followers: Mutex<HashMap<u64, FollowerProgress>>,
    checkpoint_lock: Mutex<()>,
    last_checkpoint_offset: AtomicU64,
    /// The state is a consistent prefix only once `applied` reaches this
    /// (the end of a fuzzy snapshot this node loaded).
    consistent_at: AtomicU64,
    snapshot_bytes: AtomicU64,
    checkpoint_running: AtomicBool,
    pub stats: Stats,
}

impl Engine {
    /// Open the data directory: latest snapshot + log replay. Refuses to
    /// start on corruption (the error names the file and offset).
    pub fn open(opts: EngineOptions) -> Result<Arc<Engine>, EngineError> {
        std::fs::create_dir_all(&opts.data_dir)
            .map_err(|e| EngineError::Io(format!("{}: {e}", opts.data_dir.display())))?;
        let snap_dir = snapshot_dir(&opts.data_dir);
        std::fs::create_dir_all(&snap_dir)
            .map_err(|e| EngineError::Io(format!("{}: {e}", snap_dir.display())))?;
        let mut node_meta =
            meta::load(&opts.data_dir)?.unwrap_or_else(|| NodeMeta::new(opts.node_id.clone()));
        node_meta.node_id = opts.node_id.clone();
        let settings = match load_settings(&opts.data_dir)? {
            Some(saved) if saved != opts.replication => {
                tracing::warn!(
                    flags = ?opts.replication,
                    in_force = ?saved,
                    "replication settings set through the admin API ({SETTINGS_FILE}) override the flags"
                );
                saved
            }
            Some(saved) => saved,
            None => opts.replication,
        };

        let mut base = Keyspace::new();
        let (start, snap_end, snap_bytes) = load_snapshot(&snap_dir, &mut base)?;
        let mut replay_err = None;
        let mut log_epochs: Vec<(u64, u64)> = Vec::new();
        let wal = Wal::open(opts.wal.clone(), start, |rec: &Record| {
            if log_epochs.last().is_none_or(|(e, _)| *e != rec.epoch) {
                log_epochs.push((rec.epoch, rec.start_offset()));
            }
            match record::decode(&rec.payload) {
                Ok(ms) => {
                    for m in &ms {
                        base.apply(m);
                    }
                    Ok(())
                }
                Err(e) => {
                    replay_err = Some(format!("record ending at offset {}: {e}", rec.offset));
                    Err(e)
                }
            }
        })?;
        if let Some(e) = replay_err {
            return Err(EngineError::Corrupt(e));
        }
        let applied = wal.last_offset();
        if snap_end > applied {
            // A follower that crashed between installing a snapshot and
            // receiving the log up to its end: the state is consistent only
            // once the leader's records reach `snap_end` again.
            tracing::warn!(
                snap_end,
                applied,
                "snapshot is ahead of the log: catching up from the leader"
            );
        }
        // Records of an epoch the history lacks (a crash between the append
        // and the metadata write): the log is the truth.
        let known = node_meta.epoch_history.last().map(|(e, _)| *e).unwrap_or(0);
        for (epoch, start) in log_epochs {
            if epoch > known {
                node_meta.epoch_history.push((epoch, start));
            }
        }
        node_meta.epoch = node_meta.epoch.max(wal.last_epoch());
        let role_state = RoleState {
            role: node_meta.role,
            epoch: node_meta.epoch,
            fenced: false,
            leader: node_meta.leader.clone(),
        };
        tracing::info!(
            keys = base.len(),
            applied,
            epoch = node_meta.epoch,
            role = ?node_meta.role,
            "recovered data directory"
        );
        let engine = Engine {
            wal,
            base: RwLock::new(base),
            state: Mutex::new(State {
                pending: Pending::default(),
                received: VecDeque::new(),
                applied,
                committed: applied,
                meta: node_meta,
                fenced: false,
                degraded: false,
                poisoned: None,
            }),
            commit_signal: Signal::new(applied),
            applied_signal: Signal::new(applied),
            role_tx: watch::channel(role_state).0,
            followers: Mutex::new(HashMap::new()),
            checkpoint_lock: Mutex::new(()),
            last_checkpoint_offset: AtomicU64::new(start),
            consistent_at: AtomicU64::new(snap_end),
            snapshot_bytes: AtomicU64::new(snap_bytes),
            checkpoint_running: AtomicBool::new(false),
            stats: Stats::default(),
            settings: RwLock::new(settings),
            opts,
        };
        let engine = Arc::new(engine);
        // The commit offset follows local durability: recomputed right where
        // the log publishes its progress (on the WAL writer thread, or on
        // the task that wrote inline), not by a task woken for each change.
        let weak = Arc::downgrade(&engine);
        engine.wal.on_progress(Box::new(move || {
            if let Some(engine) = weak.upgrade() {
                engine.on_wal_progress();
            }
        }));
        Ok(engine)
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Local log offset acknowledged per `--fsync` (fsynced for always and
    /// batch, handed to the OS for interval and never).
    pub fn wal_acked(&self) -> u64 {
        let p = self.wal.progress();
        if self.opts.wal.fsync.acks_durable() {
            p.durable
        } else {
            p.written
        }
    }

    fn lossless(&self, st: &State) -> bool {
        self.settings().lossless() && !st.degraded
    }

    /// The replication settings in force.
    pub fn settings(&self) -> ReplicationSettings {
        *self.settings.read()
    }

    // ---------------------------------------------------------------- reads

    /// Run `f` on the readable keyspace.
    pub fn read<R>(&self, f: impl FnOnce(&Keyspace, u64) -> R) -> R {
        let base = self.base.read();
        f(&base, now_ms())
    }

    pub fn applied(&self) -> u64 {
        // Published on every change under the state lock; reading the
        // channel keeps WAITOFFSET and readiness off that lock.
        self.applied_signal.get()
    }

    pub fn subscribe_applied(&self) -> Watcher<u64> {
        self.applied_signal.subscribe()
    }

    pub fn subscribe_commit(&self) -> Watcher<u64> {
        self.commit_signal.subscribe()
    }

    pub fn subscribe_role(&self) -> watch::Receiver<RoleState> {
        self.role_tx.subscribe()
    }

    /// A future that resolves when `shutdown` changes, or at the first role
    /// for which `stop` says so. `stop` sees the role as it is now, then
    /// after every change (it may keep state, such as what the role was).
    ///
    /// Made once and kept by a loop that polls it every round (a client
    /// connection, a follower's log stream): a fresh channel wait per round
    /// costs a registration and a removal each, and the [`Gated`] wrapper
    /// makes a poll between wake-ups one atomic swap.
    pub fn until_shutdown_or_role(
        &self,
        mut shutdown: watch::Receiver<bool>,
        mut stop: impl FnMut(&RoleState) -> bool + Send + 'static,
    ) -> Gated<impl std::future::Future<Output = ()> + Send + 'static> {
        let mut roles = self.subscribe_role();
        let stop_now = stop(&roles.borrow_and_update());
        Gated::new(async move {
            if stop_now {
                return;
            }
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    changed = roles.changed() => {
                        if changed.is_err() || stop(&roles.borrow_and_update()) {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Whether this node holds the leader role (fenced or not), without
    /// cloning the role state: checked on every write command.
    pub fn is_leader(&self) -> bool {
        self.role_tx.borrow().role == Role::Leader
    }

    pub fn role(&self) -> RoleState {
        self.role_tx.borrow().clone()
    }

    // --------------------------------------------------------------- writes

    /// Execute a write command. `f` reads through the view and records its
    /// changes; returns its result and the record's end offset (None when
    /// nothing changed, which needs no acknowledgement).
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut WriteView<'_>) -> R,
    ) -> Result<(R, Option<u64>), EngineError> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if let Some(p) = &st.poisoned {
            return Err(EngineError::Corrupt(p.clone()));
        }
        if st.meta.role != Role::Leader {
            return Err(EngineError::ReadOnly);
        }
        if st.fenced {
            return Err(EngineError::Fenced(st.meta.epoch));
        }
        if let Some(reason) = self.wal.failure() {
            return Err(EngineError::Wal(WalError::Failed(reason)));
        }
        let lossless = self.lossless(st);
        // The keyspace's write lock is held only while the command runs:
        // readers wait for that, not for the log append below. (An async
        // write is readable before it is logged, as in Redis; if the append
        // then fails the node refuses everything further, see `poisoned`.)
        let (out, muts) = {
            let mut base = self.base.write();
            let mut view = WriteView {
                base: &mut base,
                pending: &mut st.pending,
                lossless,
                now_ms: now_ms(),
                muts: Vec::new(),
            };
            let out = f(&mut view);
            (out, std::mem::take(&mut view.muts))
        };
        if muts.is_empty() {
            return Ok((out, None));
        }
        let offset =
            match self
                .wal
                .append_deferred_with(st.meta.epoch, record::encoded_len(&muts), |buf| {
                    record::encode_into(&muts, buf)
                }) {
                Ok(o) => o,
                Err(e) => {
                    // Memory already holds the change; the log does not.
                    let reason = format!("change applied in memory could not be logged: {e}");
                    tracing::error!("{reason}; refusing further commands");
                    st.poisoned = Some(reason);
                    return Err(EngineError::Wal(e));
                }
            };
        if lossless {
            st.pending.logged(offset, muts);
        } else {
            st.applied = offset;
            self.applied_signal.publish(offset);
        }
        Ok((out, Some(offset)))
    }

    /// Wait until the write ending at `offset` is acknowledged per the
    /// replication mode. Errors say whether the outcome is indeterminate.
    pub async fn wait_acked(&self, offset: u64) -> Result<(), AckError> {
        let settings = self.settings();
        if settings.mode == ReplicationMode::Async {
            // The log writes (or kicks its writer) itself, see
            // `Wal::wait_acked`.
            self.wal.wait_acked(offset).await.map_err(AckError::Wal)?;
            // Fenced while the write was in flight: it is in the log, but
            // the fence already answered for this leader; do not claim it.
            return if self.leading() {
                Ok(())
            } else {
                Err(AckError::Fenced)
            };
        }
        // Writes are appended with the writer asleep; one flush or kick per
        // batch (followers are streamed what has been written).
        self.wal.flush_or_kick(offset).await;
        let mut rx = self.commit_signal.subscribe();
        let mut roles = self.role_tx.subscribe();
        let timeout = Duration::from_millis(settings.sync_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if rx.borrow_and_update() >= offset {
                return Ok(());
            }
            if let Some(reason) = self.wal.failure() {
                return Err(AckError::Wal(WalError::Failed(reason)));
            }
            if !self.leading() {
                return Err(AckError::Fenced);
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, rx.changed()) => match changed {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => return Err(AckError::Fenced),
                    Err(_) => {
                        if settings.on_sync_timeout == OnSyncTimeout::Degrade {
                            self.degrade();
                            self.wal.wait_acked(offset).await.map_err(AckError::Wal)?;
                            // A fence may have landed meanwhile, as in async.
                            return if self.leading() {
                                Ok(())
                            } else {
                                Err(AckError::Fenced)
                            };
                        }
                        self.stats.sync_timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(AckError::Timeout {
                            needed: self.required_acks(),
                            timeout_ms: settings.sync_timeout_ms,
                        });
                    }
                },
                // A fence or demotion ends the wait at once.
                _ = roles.changed() => continue,
            }
        }
    }

    /// True while this node is an unfenced leader.
    fn leading(&self) -> bool {
        // The role channel is updated under the state lock on every change;
        // reading it avoids contending with writers for that lock.
        let r = self.role_tx.borrow();
        r.role == Role::Leader && !r.fenced
    }

    /// Switch a semi-sync/sync leader to async until followers catch up.
    fn degrade(&self) {
        let mut st = self.state.lock();
        if !st.degraded {
            tracing::warn!("followers did not acknowledge in time: degrading to async replication");
            st.degraded = true;
            self.stats.degrade_events.fetch_add(1, Ordering::Relaxed);
        }
        drop(st);
        self.recompute_commit();
    }

    pub fn degraded(&self) -> bool {
        self.state.lock().degraded
    }

    /// Recompute the commit offset from local durability and follower acks
    /// and make newly committed writes visible.
    ///
    /// A fenced leader's commit offset stays where the fence found it: it
    /// still streams its log to connected followers (a planned switchover
    /// waits for that), but their acks must neither acknowledge a write (the
    /// fence answered for this leader) nor make one visible here.
    pub fn recompute_commit(&self) {
        let local = self.wal_acked();
        let mut st = self.state.lock();
        self.recompute_commit_locked(&mut st, local);
    }

    /// The log wrote or synced more (the WAL's progress hook, run by the
    /// thread that wrote): commit what that allows.
    ///
    /// An async leader's commit offset gates nothing: its writes are
    /// acknowledged on the log alone and its followers apply what they
    /// receive. So a connection that finds the state lock taken (another
    /// write is running) does not wait for it; the next write's progress,
    /// or the expiry cycle's backstop within 10 ms, moves the offset. (Two
    /// worker threads otherwise took turns spinning on that lock, and
    /// parking_lot's spin yields the CPU to whatever else is runnable.)
    fn on_wal_progress(&self) {
        if self.settings().mode != ReplicationMode::Async {
            self.recompute_commit();
            return;
        }
        let local = self.wal_acked();
        if let Some(mut st) = self.state.try_lock() {
            self.recompute_commit_locked(&mut st, local);
        }
    }

    fn recompute_commit_locked(&self, st: &mut State, local: u64) {
        if st.meta.role != Role::Leader || st.fenced {
            return;
        }
        let commit = quorum::commit(
            local,
            self.quorum_offset(),
            self.wal.last_offset(),
            st.degraded,
        );
        if st.degraded && !commit.degraded {
            tracing::info!("followers caught up: leaving degraded (async) mode");
        }
        st.degraded = commit.degraded;
        if commit.offset > st.committed {
            self.commit_to(st, commit.offset);
        }
    }

    /// Move pending records up to `offset` into the readable keyspace.
    fn commit_to(&self, st: &mut State, offset: u64) {
        st.committed = offset;
        // The keyspace's write lock only when there is something to move
        // (an async leader applies its writes as it makes them).
        if !st.pending.is_empty()
            && let Some(applied) = st.pending.commit_into(&mut self.base.write(), offset)
        {
            st.applied = applied;
        }
        if st.pending.is_empty() && st.meta.role == Role::Leader {
            st.applied = st.applied.max(offset.min(self.wal.last_offset()));
        }
        self.commit_signal.publish(offset);
        // An async leader applied its writes when it made them: a commit
        // then moves nothing, and waking WAITOFFSET waiters would be noise.
        let applied = st.applied;
        self.applied_signal.publish_if(|v| {
            let moved = *v != applied;
            *v = applied;
            moved
        });
    }

    /// Offsets: (appended, durable, applied, committed).
    pub fn offsets(&self) -> crate::admin::Offsets {
        let p = self.wal.progress();
        let st = self.state.lock();
        crate::admin::Offsets {
            appended: p.appended,
            durable: p.durable,
            applied: st.applied,
            committed: st.committed,
        }
    }

    pub fn fenced(&self) -> bool {
        self.state.lock().fenced
    }

    pub fn poisoned(&self) -> Option<String> {
        self.state.lock().poisoned.clone()
    }

    pub fn keys(&self) -> usize {
        self.base.read().len()
    }

    pub fn digest(&self) -> (u64, u64) {
        let st = self.state.lock();
        (self.base.read().digest(), st.applied)
    }

    /// Graceful shutdown: flush and fsync the log.
    pub fn close(&self) -> Result<(), EngineError> {
        self.wal.close()?;
        Ok(())
    }
}

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error(
        "TIMEOUT write not acknowledged by {needed} replica(s) within {timeout_ms} ms; its outcome is indeterminate (it is logged and may survive or be lost in a failover)"
    )]
    Timeout { needed: usize, timeout_ms: u64 },
    #[error(
        "IOERR write-ahead log failed before the write was durable; its outcome is indeterminate: {0}"
    )]
    Wal(WalError),
    #[error(
        "FENCED leadership ended before the write was acknowledged; its outcome is indeterminate"
    )]
    Fenced,
}
