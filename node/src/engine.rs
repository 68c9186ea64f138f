//! The state machine: keyspace + log + offsets + role, behind one lock.
//!
//! Write path (leader): under the lock, a command reads the current view and
//! emits mutations; they are applied and appended to the WAL as one record
//! (the offset order is the apply order). Outside the lock the connection
//! waits for acknowledgement: the local fsync policy (async), plus follower
//! acks (semi-sync/sync).
//!
//! Visibility (DESIGN invariant 3): in async mode a write is applied to the
//! readable keyspace at once, as Redis does. In semi-sync/sync it goes to a
//! *pending* overlay that writers read through but readers do not; it moves
//! into the readable keyspace when the commit offset passes it. This is
//! MySQL's AFTER_SYNC: no reader sees a write that a failover can take back.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::config::Config;
use crate::domain::{AckLevel, OnSyncTimeout, ReplicationMode, ReplicationSettings, Role};
use crate::keyspace::{Entry, Keyspace, SHARDS};
use crate::meta::{self, NodeMeta};
use crate::record::{self, Mutation};
use crate::snapshot::{SnapshotMeta, SnapshotReader, SnapshotWriter};
use crate::stats::Stats;
use crate::wal::{Record, Wal, WalError, WalOptions};

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

/// What one follower has acknowledged (kept by the leader).
#[derive(Debug, Clone, Default)]
pub struct FollowerProgress {
    pub node_id: String,
    pub addr: String,
    pub received: u64,
    pub durable: u64,
    pub applied: u64,
    /// Offset the leader has sent (for lag in bytes).
    pub sent: u64,
    /// When the follower last acked everything it had been sent.
    pub caught_up_at: Option<std::time::Instant>,
    pub state: String,
}

/// A value as a writer sees it.
#[derive(Debug, Clone)]
pub struct Current {
    pub value: Bytes,
    pub expire_at_ms: u64,
}

/// Uncommitted changes of a semi-sync/sync leader.
#[derive(Default)]
struct Pending {
    /// Latest uncommitted state per key (None = deleted), with the offset of
    /// the last record that touched it.
    keys: HashMap<Bytes, (Option<Current>, u64)>,
    /// Records not yet committed, in offset order.
    records: VecDeque<(u64, Vec<Mutation>)>,
    /// Offset of the newest uncommitted FLUSHALL (0 = none): keys not in
    /// `keys` are gone for writers.
    flush_offset: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

struct State {
    /// The readable keyspace (committed state on a semi-sync/sync leader).
    base: Keyspace,
    pending: Pending,
    /// Follower: records appended but not yet committed by the leader.
    received: VecDeque<(u64, Vec<Mutation>)>,
    /// Offset of the state in `base`.
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
    commit_tx: watch::Sender<u64>,
    applied_tx: watch::Sender<u64>,
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

fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// Settings set through the admin API, kept across restarts (PostgreSQL's
/// `postgresql.auto.conf`): they override the flags.
const SETTINGS_FILE: &str = "settings.auto.json";

fn load_settings(data_dir: &Path) -> Result<Option<ReplicationSettings>, EngineError> {
    let path = data_dir.join(SETTINGS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::Io(format!("{}: {e}", path.display()))),
    };
    let settings: ReplicationSettings = serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::Corrupt(format!("{}: {e}", path.display())))?;
    settings
        .validate()
        .map_err(|e| EngineError::Corrupt(format!("{}: {e}", path.display())))?;
    Ok(Some(settings))
}

fn store_settings(data_dir: &Path, settings: &ReplicationSettings) -> Result<(), EngineError> {
    use std::io::Write;
    let path = data_dir.join(SETTINGS_FILE);
    let tmp = data_dir.join(format!("{SETTINGS_FILE}.tmp"));
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
    let json = serde_json::to_vec_pretty(settings).map_err(|e| EngineError::Io(e.to_string()))?;
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
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
            state: Mutex::new(State {
                base,
                pending: Pending::default(),
                received: VecDeque::new(),
                applied,
                committed: applied,
                meta: node_meta,
                fenced: false,
                degraded: false,
                poisoned: None,
            }),
            commit_tx: watch::channel(applied).0,
            applied_tx: watch::channel(applied).0,
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
        Ok(Arc::new(engine))
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

    /// Change the replication settings while running, and keep them across
    /// restarts. Taking effect at once:
    /// - a leader that leaves semi-sync/sync commits (and shows) what is
    ///   locally durable, as an async leader would have;
    /// - a leader entering semi-sync/sync holds new writes back until
    ///   followers acknowledge them; writes already acknowledged stay so;
    /// - a waiting write sees a new timeout only from its next wait.
    pub fn set_settings(
        &self,
        settings: ReplicationSettings,
    ) -> Result<ReplicationSettings, EngineError> {
        settings.validate().map_err(EngineError::Settings)?;
        // Under the state lock: a write decides on lossless visibility and
        // appends under it, so no write straddles the change.
        let st = self.state.lock();
        let old = *self.settings.read();
        if old != settings {
            store_settings(&self.opts.data_dir, &settings)?;
            *self.settings.write() = settings;
            tracing::info!(from = ?old, to = ?settings, "replication settings changed");
        }
        drop(st);
        self.recompute_commit();
        // A follower that now applies without waiting for the leader's
        // commit catches up with what it holds.
        if settings.mode == ReplicationMode::Async {
            let mut st = self.state.lock();
            if st.meta.role == Role::Follower {
                self.apply_received(&mut st, u64::MAX);
            }
        }
        Ok(settings)
    }

    // ---------------------------------------------------------------- reads

    /// Run `f` on the readable keyspace.
    pub fn read<R>(&self, f: impl FnOnce(&Keyspace, u64) -> R) -> R {
        let st = self.state.lock();
        f(&st.base, now_ms())
    }

    pub fn applied(&self) -> u64 {
        self.state.lock().applied
    }

    pub fn subscribe_applied(&self) -> watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    pub fn subscribe_commit(&self) -> watch::Receiver<u64> {
        self.commit_tx.subscribe()
    }

    pub fn subscribe_role(&self) -> watch::Receiver<RoleState> {
        self.role_tx.subscribe()
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
        let mut view = WriteView {
            base: &mut st.base,
            pending: &mut st.pending,
            lossless,
            now_ms: now_ms(),
            muts: Vec::new(),
        };
        let out = f(&mut view);
        let muts = std::mem::take(&mut view.muts);
        if muts.is_empty() {
            return Ok((out, None));
        }
        let payload = record::encode(&muts);
        let offset = match self.wal.append_deferred(st.meta.epoch, &payload) {
            Ok(o) => o,
            Err(e) => {
                // Memory already holds the change; the log does not.
                let reason = format!("change applied in memory could not be logged: {e}");
                tracing::error!("{reason}; refusing further commands");
                st.poisoned = Some(reason);
                return Err(EngineError::Wal(e));
            }
        };
        self.stats.writes_logged.fetch_add(1, Ordering::Relaxed);
        if lossless {
            for m in &muts {
                if let Some(key) = mutation_key(m)
                    && let Some(slot) = st.pending.keys.get_mut(key)
                {
                    slot.1 = offset;
                }
                if matches!(m, Mutation::FlushAll) {
                    st.pending.flush_offset = offset;
                }
            }
            st.pending.records.push_back((offset, muts));
        } else {
            st.applied = offset;
            self.applied_tx.send_replace(offset);
        }
        Ok((out, Some(offset)))
    }

    /// Wait until the write ending at `offset` is acknowledged per the
    /// replication mode. Errors say whether the outcome is indeterminate.
    pub async fn wait_acked(&self, offset: u64) -> Result<(), AckError> {
        // Writes are appended with the writer asleep; one kick per batch.
        self.wal.kick();
        let settings = self.settings();
        if settings.mode == ReplicationMode::Async {
            self.wal.wait_acked(offset).await.map_err(AckError::Wal)?;
            // Fenced while the write was in flight: it is in the log, but
            // the fence already answered for this leader; do not claim it.
            return if self.leading() {
                Ok(())
            } else {
                Err(AckError::Fenced)
            };
        }
        let mut rx = self.commit_tx.subscribe();
        let mut roles = self.role_tx.subscribe();
        let timeout = Duration::from_millis(settings.sync_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if *rx.borrow_and_update() >= offset {
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

    fn required_acks(&self) -> usize {
        let settings = self.settings();
        match settings.mode {
            ReplicationMode::Async => 0,
            ReplicationMode::SemiSync => settings.sync_replicas,
            ReplicationMode::Sync => self.followers.lock().len().max(1),
        }
    }

    /// Offset acknowledged by followers per mode and `--ack-level`
    /// (u64::MAX when no follower acks are needed).
    fn quorum_offset(&self) -> u64 {
        let settings = self.settings();
        let level = settings.ack_level;
        let followers = self.followers.lock();
        let mut acks: Vec<u64> = followers
            .values()
            .filter(|f| f.state == "streaming" || f.state == "catching-up")
            .map(|f| match level {
                AckLevel::Received => f.received,
                AckLevel::Durable => f.durable,
                AckLevel::Applied => f.applied,
            })
            .collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        match settings.mode {
            ReplicationMode::Async => u64::MAX,
            ReplicationMode::SemiSync => acks
                .get(settings.sync_replicas.saturating_sub(1))
                .copied()
                .unwrap_or(0),
            // Every connected follower, and at least one: a sync leader
            // that loses all followers must not silently turn async.
            ReplicationMode::Sync => acks.last().copied().unwrap_or(0),
        }
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
        if st.meta.role != Role::Leader || st.fenced {
            return;
        }
        let quorum = self.quorum_offset();
        let appended = self.wal.last_offset();
        if st.degraded && quorum >= appended {
            tracing::info!("followers caught up: leaving degraded (async) mode");
            st.degraded = false;
        }
        let target = if st.degraded {
            local
        } else {
            local.min(quorum)
        };
        if target > st.committed {
            self.commit_to(&mut st, target);
        }
    }

    /// Move pending records up to `offset` into the readable keyspace.
    fn commit_to(&self, st: &mut State, offset: u64) {
        st.committed = offset;
        while st
            .pending
            .records
            .front()
            .is_some_and(|(o, _)| *o <= offset)
        {
            let Some((o, muts)) = st.pending.records.pop_front() else {
                break;
            };
            for m in &muts {
                st.base.apply(m);
                if let Some(key) = mutation_key(m)
                    && st.pending.keys.get(key).is_some_and(|(_, last)| *last <= o)
                {
                    st.pending.keys.remove(key);
                }
            }
            if st.pending.flush_offset != 0 && st.pending.flush_offset <= o {
                st.pending.flush_offset = 0;
            }
            st.applied = o;
        }
        if st.pending.is_empty() && st.meta.role == Role::Leader {
            st.applied = st.applied.max(offset.min(self.wal.last_offset()));
        }
        self.commit_tx.send_replace(offset);
        self.applied_tx.send_replace(st.applied);
    }

    // ------------------------------------------------------- follower side

    /// Follower: append a record from the leader unchanged and apply what
    /// the leader has committed.
    pub fn append_replicated(&self, rec: &Record, leader_commit: u64) -> Result<(), EngineError> {
        let muts = record::decode(&rec.payload)
            .map_err(|e| EngineError::Corrupt(format!("record ending at {}: {e}", rec.offset)))?;
        let mut st = self.state.lock();
        if st.meta.role != Role::Follower || st.fenced {
            return Err(EngineError::Fenced(st.meta.epoch));
        }
        self.wal.append_record(rec)?;
        let start = rec.offset - crate::wal::encoded_len(rec.payload.len());
        if st
            .meta
            .epoch_history
            .last()
            .is_none_or(|(e, _)| *e < rec.epoch)
        {
            st.meta.epoch_history.push((rec.epoch, start));
            st.meta.epoch = st.meta.epoch.max(rec.epoch);
            meta::store(&self.opts.data_dir, &st.meta)?;
        }
        st.received.push_back((rec.offset, muts));
        let commit = if self.settings().mode == ReplicationMode::Async {
            u64::MAX
        } else {
            leader_commit
        };
        self.apply_received(&mut st, commit);
        Ok(())
    }

    /// Follower: adopt a leader's (higher) epoch learned in the handshake.
    pub fn observe_epoch(&self, epoch: u64) -> Result<(), EngineError> {
        let mut st = self.state.lock();
        if epoch > st.meta.epoch {
            st.meta.epoch = epoch;
            meta::store(&self.opts.data_dir, &st.meta)?;
            self.publish_role(&st);
        }
        Ok(())
    }

    /// Follower: the leader's commit offset advanced (heartbeat).
    pub fn leader_committed(&self, leader_commit: u64) {
        let mut st = self.state.lock();
        let commit = if self.settings().mode == ReplicationMode::Async {
            u64::MAX
        } else {
            leader_commit
        };
        self.apply_received(&mut st, commit);
    }

    fn apply_received(&self, st: &mut State, commit: u64) {
        let before = st.applied;
        while st.received.front().is_some_and(|(o, _)| *o <= commit) {
            let Some((o, muts)) = st.received.pop_front() else {
                break;
            };
            for m in &muts {
                st.base.apply(m);
            }
            st.applied = o;
        }
        st.committed = st.committed.max(commit.min(st.applied));
        if st.applied != before {
            self.applied_tx.send_replace(st.applied);
        }
    }

    // ------------------------------------------------------ roles, epochs

    fn publish_role(&self, st: &State) {
        self.role_tx.send_replace(RoleState {
            role: st.meta.role,
            epoch: st.meta.epoch,
            fenced: st.fenced,
            leader: st.meta.leader.clone(),
        });
    }

    /// Epoch of the last record in the log.
    pub fn last_log_epoch(&self) -> u64 {
        let st = self.state.lock();
        st.meta.epoch_history.last().map(|(e, _)| *e).unwrap_or(0)
    }

    pub fn epoch_history(&self) -> Vec<(u64, u64)> {
        self.state.lock().meta.epoch_history.clone()
    }

    /// Stop accepting writes and the stream of any epoch below `epoch`.
    /// Returns (last log epoch, last log offset).
    pub fn fence(&self, epoch: u64) -> Result<(u64, u64), EngineError> {
        let mut st = self.state.lock();
        if epoch < st.meta.epoch {
            return Err(EngineError::Epoch(format!(
                "fence epoch {epoch} is older than this node's epoch {}",
                st.meta.epoch
            )));
        }
        st.meta.epoch = epoch;
        st.fenced = true;
        meta::store(&self.opts.data_dir, &st.meta)?;
        // Uncommitted writes of a fenced leader stay unacknowledged; their
        // waiters get an indeterminate error through the role channel.
        self.publish_role(&st);
        let last_epoch = st.meta.epoch_history.last().map(|(e, _)| *e).unwrap_or(0);
        tracing::warn!(epoch, "fenced");
        Ok((last_epoch, self.wal.last_offset()))
    }

    /// Become leader at `epoch` (must exceed every epoch in the log).
    pub fn promote(&self, epoch: u64) -> Result<(), EngineError> {
        let mut st = self.state.lock();
        let last_epoch = st.meta.epoch_history.last().map(|(e, _)| *e).unwrap_or(0);
        if epoch < st.meta.epoch || epoch <= last_epoch {
            return Err(EngineError::Epoch(format!(
                "promote epoch {epoch} must be above the log's last epoch {last_epoch} and not below the node's epoch {}",
                st.meta.epoch
            )));
        }
        // Everything this node received becomes part of its history.
        self.apply_received(&mut st, u64::MAX);
        let end = self.wal.last_offset();
        st.meta.epoch = epoch;
        st.meta.role = Role::Leader;
        st.meta.leader = None;
        st.meta.epoch_history.push((epoch, end));
        st.fenced = false;
        st.degraded = false;
        st.committed = st.committed.max(st.applied);
        meta::store(&self.opts.data_dir, &st.meta)?;
        self.followers.lock().clear();
        self.publish_role(&st);
        self.applied_tx.send_replace(st.applied);
        tracing::info!(epoch, offset = end, "promoted to leader");
        Ok(())
    }

    /// Follow `leader` at `epoch`. A leader that is told to follow drops its
    /// uncommitted overlay (those writes were never acknowledged).
    pub fn follow(&self, leader: String, epoch: u64) -> Result<(), EngineError> {
        let mut st = self.state.lock();
        if epoch < st.meta.epoch {
            return Err(EngineError::Epoch(format!(
                "follow epoch {epoch} is older than this node's epoch {}",
                st.meta.epoch
            )));
        }
        // Uncommitted writes of a former leader are in its log: they become
        // received records, applied if the new leader commits them (or cut
        // away by the divergence check when it does not have them).
        let pending = std::mem::take(&mut st.pending);
        st.received.extend(pending.records);
        st.meta.epoch = epoch;
        st.meta.role = Role::Follower;
        st.meta.leader = Some(leader.clone());
        st.fenced = false;
        st.degraded = false;
        meta::store(&self.opts.data_dir, &st.meta)?;
        self.followers.lock().clear();
        self.publish_role(&st);
        tracing::info!(epoch, %leader, "following");
        Ok(())
    }

    /// Resume the persisted role after a restart. A former leader comes
    /// back fenced (idle) unless `--role leader` told it to lead.
    pub fn resume(&self, start_as_leader: bool, follow: Option<String>) -> Result<(), EngineError> {
        let (role, epoch, leader) = {
            let st = self.state.lock();
            (st.meta.role, st.meta.epoch, st.meta.leader.clone())
        };
        if let Some(addr) = follow {
            return self.follow(addr, epoch);
        }
        match (role, start_as_leader) {
            (Role::Leader, true) => {
                let st = self.state.lock();
                self.publish_role(&st);
                Ok(())
            }
            (_, true) => self.promote(epoch.max(self.last_log_epoch()) + 1),
            (Role::Follower, false) => match leader {
                Some(addr) => self.follow(addr, epoch),
                None => Ok(()),
            },
            (Role::Leader, false) => {
                let mut st = self.state.lock();
                tracing::warn!(
                    epoch,
                    "was leader before restart: waiting for the operator (never self-promotes)"
                );
                st.meta.role = Role::Idle;
                meta::store(&self.opts.data_dir, &st.meta)?;
                self.publish_role(&st);
                Ok(())
            }
            (Role::Idle, false) => Ok(()),
        }
    }

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
        st.base = base;
        st.pending = Pending::default();
        st.received.clear();
        st.applied = self.wal.last_offset();
        st.committed = st.committed.min(st.applied);
        self.applied_tx.send_replace(st.applied);
        tracing::warn!(offset, "truncated diverged log tail and rebuilt state");
        Ok(())
    }

    /// Follower: replace everything with a snapshot received from the leader.
    pub fn install_snapshot(&self, path: &Path) -> Result<SnapshotMeta, EngineError> {
        let _ck = self.checkpoint_lock.lock();
        let mut base = Keyspace::new();
        let mut reader =
            SnapshotReader::open(path).map_err(|e| EngineError::Snapshot(e.to_string()))?;
        while let Some((k, v, exp)) = reader
            .next_entry()
            .map_err(|e| EngineError::Snapshot(e.to_string()))?
        {
            base.set(&k, &v, exp);
        }
        let smeta = reader.meta().clone();
        let mut st = self.state.lock();
        self.wal.reset(smeta.start_offset)?;
        st.base = base;
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
        self.applied_tx.send_replace(st.applied);
        Ok(smeta)
    }

    // ------------------------------------------------------- replication

    pub fn register_follower(&self, id: u64, progress: FollowerProgress) {
        self.followers.lock().insert(id, progress);
    }

    pub fn update_follower(&self, id: u64, f: impl FnOnce(&mut FollowerProgress)) {
        if let Some(p) = self.followers.lock().get_mut(&id) {
            f(p);
        }
        self.recompute_commit();
    }

    pub fn remove_follower(&self, id: u64) {
        self.followers.lock().remove(&id);
    }

    /// Oldest log offset a follower still being bootstrapped or catching
    /// up needs (PostgreSQL's replication slot, bounded): a follower more
    /// than `max(4 x retention, 1 GiB)` behind is let go and will take a
    /// snapshot instead.
    fn follower_pin(&self, last: u64) -> u64 {
        let limit = (4 * self.opts.wal_retention_bytes).max(1 << 30);
        self.followers
            .lock()
            .values()
            .filter(|f| f.state != "streaming")
            .map(|f| f.received)
            .filter(|r| last.saturating_sub(*r) <= limit)
            .min()
            .unwrap_or(u64::MAX)
    }

    pub fn followers(&self) -> Vec<FollowerProgress> {
        let mut v: Vec<_> = self.followers.lock().values().cloned().collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
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
        self.state.lock().base.len()
    }

    pub fn digest(&self) -> (u64, u64) {
        let st = self.state.lock();
        (st.base.digest(), st.applied)
    }

    // ------------------------------------------------ expiry, checkpoints

    /// One step of the active expiry cycle (leader only): delete expired
    /// keys in `shards` shards starting at `*cursor`, as logged writes.
    pub fn expire_step(&self, cursor: &mut usize, shards: usize) -> usize {
        let mut expired = Vec::new();
        {
            let st = self.state.lock();
            if st.meta.role != Role::Leader || st.fenced {
                return 0;
            }
            let now = now_ms();
            for i in 0..shards {
                st.base
                    .expired_in_shard((*cursor + i) % SHARDS, now, &mut expired);
            }
        }
        *cursor = (*cursor + shards) % SHARDS;
        if expired.is_empty() {
            return 0;
        }
        let res = self.write(|view| {
            let mut n = 0;
            for key in &expired {
                // Re-check under the write lock: it may have been rewritten.
                if view.get(key).is_none() {
                    n += 1;
                }
            }
            n
        });
        match res {
            Ok((n, _)) => {
                self.wal.kick();
                self.stats
                    .expired_keys
                    .fetch_add(n as u64, Ordering::Relaxed);
                n
            }
            Err(_) => 0,
        }
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
            self.state.lock().base.clone_shard(shard, &mut chunk);
            for e in &chunk {
                writer
                    .add(e.key(), e.value(), e.expire_at_ms)
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

    /// Graceful shutdown: flush and fsync the log.
    pub fn close(&self) -> Result<(), EngineError> {
        self.wal.close()?;
        Ok(())
    }
}

/// Load the latest snapshot into `base`: (start offset, end offset, bytes).
fn load_snapshot(dir: &Path, base: &mut Keyspace) -> Result<(u64, u64, u64), EngineError> {
    let snap_err = |e: crate::snapshot::SnapshotError| EngineError::Snapshot(e.to_string());
    let Some(path) = crate::snapshot::latest(dir).map_err(snap_err)? else {
        return Ok((0, 0, 0));
    };
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut reader = SnapshotReader::open(&path).map_err(snap_err)?;
    while let Some((k, v, exp)) = reader.next_entry().map_err(snap_err)? {
        base.set(&k, &v, exp);
    }
    let m = reader.meta();
    tracing::info!(path = %path.display(), keys = m.keys, start = m.start_offset, end = m.end_offset, "loaded snapshot");
    Ok((m.start_offset, m.end_offset, bytes))
}

fn mutation_key(m: &Mutation) -> Option<&Bytes> {
    match m {
        Mutation::Set { key, .. } | Mutation::Del { key } | Mutation::Expire { key, .. } => {
            Some(key)
        }
        Mutation::FlushAll => None,
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

/// A write command's view: reads see the newest state (including
/// uncommitted writes), changes are recorded for the log.
pub struct WriteView<'a> {
    base: &'a mut Keyspace,
    pending: &'a mut Pending,
    lossless: bool,
    pub now_ms: u64,
    muts: Vec<Mutation>,
}

impl WriteView<'_> {
    fn raw_get(&self, key: &[u8]) -> Option<Current> {
        if self.lossless {
            if let Some((state, _)) = self.pending.keys.get(key) {
                return state.clone();
            }
            if self.pending.flush_offset != 0 {
                return None;
            }
        }
        self.base.get(key).map(|e| Current {
            value: Bytes::copy_from_slice(e.value()),
            expire_at_ms: e.expire_at_ms,
        })
    }

    fn raw_exists(&self, key: &[u8]) -> Option<u64> {
        if self.lossless {
            if let Some((state, _)) = self.pending.keys.get(key) {
                return state.as_ref().map(|c| c.expire_at_ms);
            }
            if self.pending.flush_offset != 0 {
                return None;
            }
        }
        self.base.get(key).map(|e| e.expire_at_ms)
    }

    /// The live value of `key`. An expired key is deleted (and the delete
    /// logged) here: the leader decides expiry.
    pub fn get(&mut self, key: &[u8]) -> Option<Current> {
        let cur = self.raw_get(key)?;
        if cur.expire_at_ms != 0 && cur.expire_at_ms <= self.now_ms {
            self.record(Mutation::Del {
                key: Bytes::copy_from_slice(key),
            });
            return None;
        }
        Some(cur)
    }

    /// Expiry of a live key (Some(0) = persistent), without copying it.
    pub fn live_expiry(&mut self, key: &[u8]) -> Option<u64> {
        let exp = self.raw_exists(key)?;
        if exp != 0 && exp <= self.now_ms {
            self.record(Mutation::Del {
                key: Bytes::copy_from_slice(key),
            });
            return None;
        }
        Some(exp)
    }

    pub fn set(&mut self, key: Bytes, value: Bytes, expire_at_ms: u64) {
        self.record(Mutation::Set {
            key,
            value,
            expire_at_ms,
        });
    }

    /// Delete a live key; false if it did not exist.
    pub fn del(&mut self, key: &[u8]) -> bool {
        if self.live_expiry(key).is_none() {
            return false;
        }
        self.record(Mutation::Del {
            key: Bytes::copy_from_slice(key),
        });
        true
    }

    /// Set the expiry of a live key (0 = persist); false if absent.
    pub fn set_expiry(&mut self, key: &[u8], expire_at_ms: u64) -> bool {
        if self.live_expiry(key).is_none() {
            return false;
        }
        self.record(Mutation::Expire {
            key: Bytes::copy_from_slice(key),
            expire_at_ms,
        });
        true
    }

    pub fn flush_all(&mut self) {
        self.record(Mutation::FlushAll);
    }

    fn record(&mut self, m: Mutation) {
        if self.lossless {
            match &m {
                Mutation::Set {
                    key,
                    value,
                    expire_at_ms,
                } => {
                    self.pending.keys.insert(
                        key.clone(),
                        (
                            Some(Current {
                                value: value.clone(),
                                expire_at_ms: *expire_at_ms,
                            }),
                            u64::MAX,
                        ),
                    );
                }
                Mutation::Del { key } => {
                    self.pending.keys.insert(key.clone(), (None, u64::MAX));
                }
                Mutation::Expire { key, expire_at_ms } => {
                    let cur = self.raw_get(key).map(|c| Current {
                        value: c.value,
                        expire_at_ms: *expire_at_ms,
                    });
                    self.pending.keys.insert(key.clone(), (cur, u64::MAX));
                }
                Mutation::FlushAll => {
                    self.pending.keys.clear();
                    // Marks "everything below is gone" until the record's
                    // offset is known; fixed up by the caller.
                    self.pending.flush_offset = u64::MAX;
                }
            }
        } else {
            self.base.apply(&m);
        }
        self.muts.push(m);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn options(dir: &Path, mode: ReplicationMode) -> EngineOptions {
        let mut config = Config::for_tests(dir.to_path_buf());
        config.replication_mode = mode;
        config.sync_replicas = 1;
        EngineOptions::from_config(&config)
    }

    fn leader(dir: &Path, mode: ReplicationMode) -> Arc<Engine> {
        let engine = Engine::open(options(dir, mode)).expect("open");
        engine.resume(true, None).expect("lead");
        engine
    }

    fn visible(engine: &Engine, key: &[u8]) -> bool {
        engine.read(|ks, _now| ks.get(key).is_some())
    }

    async fn write_key(engine: &Engine, key: &'static [u8]) -> u64 {
        let (_, offset) = engine
            .write(|v| v.set(Bytes::from_static(key), Bytes::from_static(b"v"), 0))
            .expect("write");
        let offset = offset.expect("a change");
        engine.wal().kick();
        engine.wal().wait_acked(offset).await.expect("durable");
        offset
    }

    #[tokio::test]
    async fn a_leader_leaving_semi_sync_shows_the_writes_it_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let engine = leader(dir.path(), ReplicationMode::SemiSync);
        write_key(&engine, b"held").await;
        engine.recompute_commit();
        assert!(!visible(&engine, b"held"), "no follower acked it yet");

        let mut async_settings = engine.settings();
        async_settings.mode = ReplicationMode::Async;
        engine.set_settings(async_settings).expect("settings");
        assert!(visible(&engine, b"held"), "async commits what is durable");
        assert_eq!(engine.offsets().committed, engine.wal().last_offset());

        // And back: new writes wait for a follower again.
        let mut semi = async_settings;
        semi.mode = ReplicationMode::SemiSync;
        engine.set_settings(semi).expect("settings");
        write_key(&engine, b"held-again").await;
        engine.recompute_commit();
        assert!(!visible(&engine, b"held-again"));
        assert!(visible(&engine, b"held"));
        engine.close().unwrap();
    }

    #[tokio::test]
    async fn settings_set_while_running_survive_a_restart_and_override_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let engine = leader(dir.path(), ReplicationMode::Async);
        let wanted = ReplicationSettings {
            mode: ReplicationMode::Sync,
            sync_replicas: 2,
            sync_timeout_ms: 750,
            on_sync_timeout: OnSyncTimeout::Degrade,
            ack_level: AckLevel::Applied,
        };
        assert_eq!(engine.set_settings(wanted).unwrap(), wanted);
        engine.close().unwrap();
        drop(engine);

        let reopened = Engine::open(options(dir.path(), ReplicationMode::Async)).unwrap();
        assert_eq!(
            reopened.settings(),
            wanted,
            "the saved settings win over the flags"
        );
        reopened.close().unwrap();
    }

    #[tokio::test]
    async fn invalid_settings_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = leader(dir.path(), ReplicationMode::Async);
        let before = engine.settings();
        let mut bad = before;
        bad.mode = ReplicationMode::SemiSync;
        bad.sync_replicas = 0;
        let err = engine.set_settings(bad).unwrap_err();
        assert!(matches!(err, EngineError::Settings(_)), "{err}");
        assert_eq!(engine.settings(), before);
        assert!(!dir.path().join(SETTINGS_FILE).exists(), "nothing saved");
        engine.close().unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_settings_file_stops_the_start_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), b"{ not json").unwrap();
        let err = Engine::open(options(dir.path(), ReplicationMode::Async))
            .err()
            .expect("refused");
        assert!(err.to_string().contains(SETTINGS_FILE), "{err}");
    }
}
