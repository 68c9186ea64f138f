//! Follower side: connect to the leader, start as it decides (stream,
//! truncate, snapshot), append and apply its records, acknowledge.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::wire::{self, Decision, Hello, Message, WireError};
use crate::admin::{LinkStatus, ReplicationMode, Role};
use crate::context::Shared;
use crate::engine::{Engine, EngineError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// No frame from the leader for this long = link down (heartbeats are 250ms).
const LINK_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Follow whichever leader the engine's role names, reconnecting forever.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let engine = shared.engine.clone();
    let mut roles = engine.subscribe_role();
    let mut backoff = RETRY_MIN;
    let mut force_snapshot = false;
    loop {
        let role = roles.borrow_and_update().clone();
        let leader = match (&role.role, role.fenced, &role.leader) {
            (Role::Follower, false, Some(l)) => l.clone(),
            _ => {
                shared.link.set_status(LinkStatus::Down);
                tokio::select! {
                    r = roles.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
                continue;
            }
        };
        shared.link.set_status(LinkStatus::Connecting);
        let session = follow_once(&shared, &leader, force_snapshot, &mut roles);
        let outcome = tokio::select! {
            r = session => r,
            _ = shutdown.changed() => return,
        };
        shared.link.set_status(LinkStatus::Down);
        match outcome {
            Ok(()) => {
                backoff = RETRY_MIN;
                continue;
            }
            Err(FollowError::NeedSnapshot(why)) => {
                tracing::warn!(%leader, "local state unusable ({why}); asking for a snapshot");
                force_snapshot = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(%leader, "replication link failed: {e}; retrying in {backoff:?}");
                shared.link.update(|s| s.last_error = Some(e.to_string()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = roles.changed() => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(RETRY_MAX);
        let _ = &mut force_snapshot;
    }
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("need a snapshot: {0}")]
    NeedSnapshot(String),
    #[error("{0}")]
    Protocol(String),
}

/// One connection to the leader; Ok(()) when the role changed.
async fn follow_once(
    shared: &Shared,
    leader: &str,
    force_snapshot: bool,
    roles: &mut watch::Receiver<crate::engine::RoleState>,
) -> Result<(), FollowError> {
    let engine = &shared.engine;
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(leader))
        .await
        .map_err(|_| FollowError::Protocol(format!("connect to {leader} timed out")))?
        .map_err(WireError::from)?;
    stream.set_nodelay(true).map_err(WireError::from)?;
    let my_epoch = engine.role().epoch;
    let hello = Hello {
        version: wire::PROTOCOL_VERSION,
        node_id: engine.opts.node_id.clone(),
        password: shared.config.requirepass.clone(),
        epoch: my_epoch,
        last_offset: engine.wal().last_offset(),
        epoch_history: engine.epoch_history(),
        force_snapshot,
    };
    wire::write(&mut stream, &Message::Hello(hello)).await?;
    let reply = match tokio::time::timeout(LINK_TIMEOUT * 3, wire::read(&mut stream)).await {
        Ok(Ok(Message::HelloReply(r))) => r,
        Ok(Ok(other)) => {
            return Err(FollowError::Protocol(format!(
                "expected hello reply, got {other:?}"
            )));
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(FollowError::Protocol(
                "leader did not answer the handshake".into(),
            ));
        }
    };
    if reply.epoch < my_epoch {
        // A deposed leader still running: never take its stream.
        return Err(FollowError::Protocol(format!(
            "leader {} is at epoch {}, older than this node's epoch {my_epoch}; refusing its stream",
            reply.leader_id, reply.epoch
        )));
    }
    engine.observe_epoch(reply.epoch)?;
    match reply.decision {
        Decision::Stream => {
            if reply.offset != engine.wal().last_offset() {
                return Err(FollowError::NeedSnapshot(format!(
                    "leader wants to stream from {} but the local log ends at {}",
                    reply.offset,
                    engine.wal().last_offset()
                )));
            }
        }
        Decision::Truncate => {
            tracing::warn!(
                to = reply.offset,
                from = engine.wal().last_offset(),
                "log diverged from the leader's: truncating"
            );
            if let Err(e) = engine.truncate_and_reload(reply.offset) {
                return Err(FollowError::NeedSnapshot(e.to_string()));
            }
        }
        Decision::Snapshot => {
            shared.link.set_status(LinkStatus::Snapshot);
            receive_snapshot(shared, &mut stream, reply.snapshot_len).await?;
        }
    }
    shared.link.set_status(LinkStatus::Up);
    shared.link.touch(reply.leader_end);
    tracing::info!(%leader, epoch = reply.epoch, from = engine.wal().last_offset(), "replicating");
    stream_records(shared, stream, roles).await
}

async fn receive_snapshot(
    shared: &Shared,
    stream: &mut TcpStream,
    len: u64,
) -> Result<(), FollowError> {
    let engine = &shared.engine;
    let dir = engine.opts.data_dir.join("snapshots");
    let tmp = engine.opts.data_dir.join("incoming.snap.tmp");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(WireError::from)?;
    let mut received = 0u64;
    shared.link.update(|s| s.snapshot_progress = Some((0, len)));
    loop {
        match tokio::time::timeout(LINK_TIMEOUT * 10, wire::read(stream)).await {
            Ok(Ok(Message::SnapshotChunk(b))) => {
                received += b.len() as u64;
                if received > len {
                    return Err(FollowError::Protocol(format!(
                        "snapshot larger than announced {len} bytes"
                    )));
                }
                file.write_all(&b).await.map_err(WireError::from)?;
                shared
                    .link
                    .update(|s| s.snapshot_progress = Some((received, len)));
            }
            Ok(Ok(Message::SnapshotEnd)) => break,
            Ok(Ok(other)) => {
                return Err(FollowError::Protocol(format!(
                    "unexpected {other:?} during snapshot"
                )));
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(FollowError::Protocol("snapshot transfer stalled".into())),
        }
    }
    if received != len {
        return Err(FollowError::Protocol(format!(
            "snapshot ended at {received} of {len} bytes"
        )));
    }
    file.sync_all().await.map_err(WireError::from)?;
    drop(file);
    let engine2 = engine.clone();
    let installed = tokio::task::spawn_blocking(move || -> Result<_, FollowError> {
        let src = std::fs::File::open(&tmp).map_err(WireError::from)?;
        let path = crate::snapshot::install(&dir, src, len)
            .map_err(|e| FollowError::Protocol(format!("snapshot from leader rejected: {e}")))?;
        let _ = std::fs::remove_file(&tmp);
        let meta = engine2.install_snapshot(&path)?;
        Ok(meta)
    })
    .await
    .map_err(|e| FollowError::Protocol(e.to_string()))??;
    shared.link.update(|s| s.snapshot_progress = None);
    tracing::info!(
        keys = installed.keys,
        start = installed.start_offset,
        end = installed.end_offset,
        "snapshot installed"
    );
    Ok(())
}

fn ack_offsets(engine: &Engine) -> (u64, u64, u64) {
    let o = engine.offsets();
    // Durable per this follower's --fsync policy (handed to the OS for
    // interval/never), matching what the leader itself counts as acked.
    (o.appended, engine.wal_acked(), o.applied)
}

/// Sends acks, skipping ones that would repeat the last.
struct Acker {
    wr: tokio::net::tcp::OwnedWriteHalf,
    last: Option<(u64, u64, u64)>,
    sent_at: std::time::Instant,
}

impl Acker {
    /// Send the offsets if any moved.
    async fn send(&mut self, engine: &Engine) -> Result<(), WireError> {
        let now = ack_offsets(engine);
        if self.last == Some(now) {
            return Ok(());
        }
        self.write(now).await
    }

    /// Send the offsets if the one the leader counts (`--ack-level`) moved:
    /// the prompt acks of semi-sync/sync. The others ride along, and the
    /// periodic ack carries any change they make alone. (An ack per offset
    /// that moves is up to three sends per batch of records, each waking
    /// the leader.)
    async fn send_counted(&mut self, engine: &Engine) -> Result<(), WireError> {
        let now = ack_offsets(engine);
        let level = engine.settings().ack_level;
        let counted =
            |(received, durable, applied): (u64, u64, u64)| level.pick(received, durable, applied);
        if self.last.is_some_and(|last| counted(last) == counted(now)) {
            return Ok(());
        }
        self.write(now).await
    }

    async fn write(&mut self, now: (u64, u64, u64)) -> Result<(), WireError> {
        self.last = Some(now);
        self.sent_at = std::time::Instant::now();
        let (received, durable, applied) = now;
        wire::write(
            &mut self.wr,
            &Message::Ack {
                received,
                durable,
                applied,
            },
        )
        .await
    }
}

async fn stream_records(
    shared: &Shared,
    stream: TcpStream,
    roles: &mut watch::Receiver<crate::engine::RoleState>,
) -> Result<(), FollowError> {
    let engine = &shared.engine;
    let (mut rd, wr) = stream.into_split();
    let mut acker = Acker {
        wr,
        last: None,
        sent_at: std::time::Instant::now(),
    };
    acker.send(engine).await?;
    // Frames are read on their own task: a read cut short by select! would
    // lose part of a frame, so the loop below only sees whole messages.
    let (tx, mut frames) = tokio::sync::mpsc::channel(64);
    let reader = tokio::spawn(async move {
        loop {
            let msg = tokio::time::timeout(LINK_TIMEOUT, wire::read(&mut rd)).await;
            let msg = match msg {
                Ok(m) => m.map_err(FollowError::from),
                Err(_) => Err(FollowError::Protocol(
                    "no data from the leader for 3s".into(),
                )),
            };
            let stop = msg.is_err();
            if tx.send(msg).await.is_err() || stop {
                return;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    let mut progress = engine.wal().subscribe();
    let mut applied = engine.subscribe_applied();
    // Async leaders do not wait for acks: batch them (WAIT still sees them
    // within a few ms). Semi-sync/sync acks go out at once.
    let ack_period = |lazy: bool| Duration::from_millis(if lazy { 5 } else { 250 });
    let mut lazy = engine.settings().mode == ReplicationMode::Async;
    let mut tick = tokio::time::interval(ack_period(lazy));
    roles.borrow_and_update();
    loop {
        // `POST /config` may change the mode while the stream runs.
        let now_lazy = engine.settings().mode == ReplicationMode::Async;
        if now_lazy != lazy {
            lazy = now_lazy;
            tick = tokio::time::interval(ack_period(lazy));
        }
        tokio::select! {
            msg = frames.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                match msg? {
                    Message::Records { commit, records } => {
                        let end = records.last().map(|r| r.offset).unwrap_or(0);
                        for rec in &records {
                            engine.append_replicated(rec, commit)?;
                        }
                        shared.link.touch(end);
                        if !lazy {
                            acker.send_counted(engine).await?;
                        }
                    }
                    Message::Heartbeat { leader_end, commit } => {
                        engine.leader_committed(commit);
                        shared.link.touch(leader_end);
                    }
                    other => return Err(FollowError::Protocol(format!("unexpected {other:?} from leader"))),
                }
            }
            // Durability and apply progress produce acks of their own.
            r = progress.changed(), if !lazy => {
                if r.is_err() { return Ok(()) }
                acker.send_counted(engine).await?;
            }
            r = applied.changed(), if !lazy => {
                if r.is_err() { return Ok(()) }
                acker.send_counted(engine).await?;
            }
            _ = tick.tick() => {
                // Whatever moved since the last ack: async's batched acks,
                // and in semi-sync/sync the offsets the prompt acks left
                // out. Every mode: an ack at least every second, the
                // follower's heartbeat (the leader drops followers it has
                // not heard from).
                if acker.sent_at.elapsed() >= Duration::from_secs(1) {
                    acker.last = None;
                }
                acker.send(engine).await?;
            }
            r = roles.changed() => {
                // Fenced, promoted or repointed: drop this stream now.
                let _ = r;
                return Ok(());
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
