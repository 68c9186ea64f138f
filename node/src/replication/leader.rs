//! Leader side: accept followers, decide how each starts (stream, truncate,
//! snapshot), stream the log, collect acknowledgements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::wire::{self, Decision, Hello, HelloReply, Message, WireError};
use crate::config::same_secret;
use crate::context::Shared;
use crate::domain::{FollowerState, Role};
use crate::engine::{Engine, FollowerProgress, RoleState};
use crate::wal::WalError;

/// Records per frame, bytes.
const BATCH_BYTES: usize = 1 << 20;
/// Heartbeat period: followers time out after several missed ones.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// A follower silent this long is dropped (it acks at least every second).
const FOLLOWER_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(300);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SNAPSHOT_CHUNK: usize = 1 << 20;

static NEXT_FOLLOWER: AtomicU64 = AtomicU64::new(1);

/// Accept follower connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        match serve_follower(stream, peer.to_string(), shared, shutdown).await {
                            Ok(()) | Err(WireError::Closed) => tracing::info!(%peer, "follower stream ended"),
                            Err(e) => tracing::warn!(%peer, "follower stream ended: {e}"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("replication accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn refuse(stream: &mut TcpStream, msg: String) -> WireError {
    tracing::warn!("refusing follower: {msg}");
    let _ = wire::write(stream, &Message::Error(msg.clone())).await;
    WireError::Remote(msg)
}

async fn serve_follower(
    mut stream: TcpStream,
    peer: String,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WireError> {
    stream.set_nodelay(true)?;
    let engine = shared.engine.clone();
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, wire::read(&mut stream)).await {
        Ok(Ok(Message::Hello(h))) => h,
        Ok(Ok(other)) => {
            return Err(refuse(&mut stream, format!("expected hello, got {other:?}")).await);
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(refuse(&mut stream, "no hello within 10s".into()).await),
    };
    if let Some(expected) = &shared.config.requirepass
        && !hello
            .password
            .as_deref()
            .is_some_and(|given| same_secret(given.as_bytes(), expected.as_bytes()))
    {
        return Err(refuse(
            &mut stream,
            "WRONGPASS replication password mismatch".into(),
        )
        .await);
    }
    if hello.version != wire::PROTOCOL_VERSION {
        return Err(refuse(
            &mut stream,
            format!("unsupported replication protocol {}", hello.version),
        )
        .await);
    }
    let role = engine.role();
    if role.role != Role::Leader || role.fenced {
        return Err(refuse(
            &mut stream,
            format!(
                "NOTLEADER this node is {:?} (fenced: {})",
                role.role, role.fenced
            ),
        )
        .await);
    }
    if hello.epoch > role.epoch {
        return Err(refuse(
            &mut stream,
            format!(
                "EPOCH follower {} is at epoch {}, newer than this leader's {}: this leader is stale",
                hello.node_id, hello.epoch, role.epoch
            ),
        )
        .await);
    }
    let (decision, start) = decide(&engine, &hello);
    tracing::info!(follower = %hello.node_id, %peer, ?decision, start, "follower connected");

    let id = NEXT_FOLLOWER.fetch_add(1, Ordering::Relaxed);
    engine.register_follower(
        id,
        FollowerProgress {
            node_id: hello.node_id.clone(),
            addr: peer.clone(),
            state: if decision == Decision::Snapshot {
                FollowerState::Snapshot
            } else {
                FollowerState::CatchingUp
            },
            ..Default::default()
        },
    );
    let _guard = Registration(engine.clone(), id);

    let start = match decision {
        Decision::Snapshot => {
            engine.stats.resyncs_full.fetch_add(1, Ordering::Relaxed);
            send_snapshot(&engine, &mut stream, id).await?
        }
        Decision::Stream | Decision::Truncate => {
            engine.stats.resyncs_partial.fetch_add(1, Ordering::Relaxed);
            let reply = HelloReply {
                leader_id: engine.opts.node_id.clone(),
                epoch: role.epoch,
                decision,
                offset: start,
                snapshot_len: 0,
                leader_end: engine.wal().last_offset(),
            };
            wire::write(&mut stream, &Message::HelloReply(reply)).await?;
            start
        }
    };
    engine.update_follower(id, |p| {
        p.received = start;
        p.durable = start;
        p.applied = start;
        p.sent = start;
        p.state = FollowerState::CatchingUp;
        p.caught_up_at = Some(Instant::now());
    });
    // A follower that loads a snapshot or rebuilds its state after a
    // truncation may be silent for long before its first ack; one that just
    // streams acks within a second, so silence means it is gone.
    let first_ack = if decision == Decision::Stream {
        FOLLOWER_TIMEOUT
    } else {
        FIRST_ACK_TIMEOUT
    };
    stream_log(
        &engine,
        stream,
        id,
        start,
        role.epoch,
        first_ack,
        &mut shutdown,
    )
    .await
}

/// Where and how a follower starts (DESIGN invariants 5 and 6).
fn decide(engine: &Engine, hello: &Hello) -> (Decision, u64) {
    let wal = engine.wal();
    if hello.force_snapshot {
        return (Decision::Snapshot, 0);
    }
    let leader_end = wal.last_offset();
    let point = crate::meta::divergence_point(
        &engine.epoch_history(),
        leader_end,
        &hello.epoch_history,
        hello.last_offset,
    );
    if point < wal.first_offset() || (point == 0 && wal.first_offset() > 0) {
        return (Decision::Snapshot, 0);
    }
    // The follower must start on a record boundary we can read from.
    if wal.reader(point).is_err() {
        return (Decision::Snapshot, 0);
    }
    if point < hello.last_offset {
        (Decision::Truncate, point)
    } else {
        (Decision::Stream, point)
    }
}

/// Ship a snapshot (the latest usable one, or a fresh checkpoint); returns
/// the offset to stream from (the snapshot's start).
async fn send_snapshot(
    engine: &Arc<Engine>,
    stream: &mut TcpStream,
    id: u64,
) -> Result<u64, WireError> {
    let (meta, path) = loop {
        let existing = engine
            .latest_snapshot()
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        let (meta, path) = match existing {
            Some(found) => found,
            None => {
                let e = engine.clone();
                tokio::task::spawn_blocking(move || e.checkpoint())
                    .await
                    .map_err(|e| WireError::Malformed(e.to_string()))?
                    .map_err(|e| WireError::Malformed(e.to_string()))?
            }
        };
        // Pin the log from the snapshot's start for the transfer and the
        // catch-up after it, then make sure no trim slipped in between.
        engine.update_follower(id, |p| p.received = meta.start_offset);
        if meta.start_offset >= engine.wal().first_offset() {
            break (meta, path);
        }
    };
    let file = tokio::fs::File::open(&path).await?;
    let len = file.metadata().await?.len();
    let reply = HelloReply {
        leader_id: engine.opts.node_id.clone(),
        epoch: engine.role().epoch,
        decision: Decision::Snapshot,
        offset: meta.start_offset,
        snapshot_len: len,
        leader_end: engine.wal().last_offset(),
    };
    wire::write(stream, &Message::HelloReply(reply)).await?;
    let mut reader = BufReader::new(file);
    let mut buf = vec![0u8; SNAPSHOT_CHUNK];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        wire::write(
            stream,
            &Message::SnapshotChunk(bytes::Bytes::copy_from_slice(&buf[..n])),
        )
        .await?;
        engine
            .stats
            .snapshot_bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }
    wire::write(stream, &Message::SnapshotEnd).await?;
    tracing::info!(
        bytes = len,
        start = meta.start_offset,
        end = meta.end_offset,
        "snapshot sent"
    );
    Ok(meta.start_offset)
}

/// Whether a stream opened while leading at `term` goes on under `role`.
///
/// A fenced leader keeps streaming: it appends nothing new, but followers
/// that are already connected still receive every record it has, so a
/// planned switchover can wait for its target to hold the whole log before
/// promoting it (new followers are refused at the handshake). The stream
/// ends when the node stops leading, or leads again at a new epoch (a
/// promotion forgets the follower table: the follower reconnects and is
/// counted again).
fn keeps_streaming(role: &RoleState, term: u64) -> bool {
    role.role == Role::Leader && (role.fenced || role.epoch == term)
}

async fn stream_log(
    engine: &Arc<Engine>,
    stream: TcpStream,
    id: u64,
    start: u64,
    term: u64,
    first_ack: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WireError> {
    let (mut rd, mut wr) = stream.into_split();
    let mut reader = match engine.wal().reader(start) {
        Ok(r) => r,
        Err(WalError::Truncated { .. }) => {
            return Err(WireError::Malformed(
                "log moved past the follower during the snapshot; it will retry".into(),
            ));
        }
        Err(e) => return Err(WireError::Malformed(e.to_string())),
    };
    // Acks arrive on their own task so a slow send never delays them.
    let mut acker = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut limit = first_ack;
            loop {
                // Followers ack at least every second: silence means a dead
                // or partitioned follower, which must stop counting.
                let msg = match tokio::time::timeout(limit, wire::read(&mut rd)).await {
                    Ok(m) => m,
                    Err(_) => {
                        return WireError::Malformed(format!(
                            "no ack from the follower for {limit:?}"
                        ));
                    }
                };
                limit = FOLLOWER_TIMEOUT;
                match msg {
                    Ok(Message::Ack {
                        received,
                        durable,
                        applied,
                    }) => engine.update_follower(id, |p| {
                        p.received = received;
                        p.durable = durable;
                        p.applied = applied;
                        if received >= p.sent {
                            p.caught_up_at = Some(Instant::now());
                        }
                        // Caught up with the log end: from now on the
                        // follower no longer pins the leader's log.
                        if p.state != FollowerState::Streaming && received >= log_end(&engine) {
                            p.state = FollowerState::Streaming;
                        }
                    }),
                    Ok(other) => {
                        return WireError::Malformed(format!("unexpected {other:?} from follower"));
                    }
                    Err(e) => return e,
                }
            }
        })
    };
    let mut progress = engine.wal().subscribe();
    let mut commits = engine.subscribe_commit();
    let mut roles = engine.subscribe_role();
    // The role may have changed between the handshake and the subscription.
    let mut leading = keeps_streaming(&roles.borrow_and_update(), term);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut sent_to = start;
    // Ends the stream on shutdown or once this node no longer leads the
    // term.
    let stopping =
        engine.until_shutdown_or_role(shutdown.clone(), move |r| !keeps_streaming(r, term));
    tokio::pin!(stopping);
    let result = loop {
        // Checked before every batch too: a long catch-up must not outlive
        // the leadership it was started under.
        match roles.has_changed() {
            Ok(true) => leading = keeps_streaming(&roles.borrow_and_update(), term),
            Ok(false) => {}
            Err(_) => leading = false,
        }
        if !leading {
            break Ok(());
        }
        let batch = match reader.next_batch(BATCH_BYTES) {
            Ok(b) => b,
            Err(e) => break Err(WireError::Malformed(format!("reading the log: {e}"))),
        };
        if !batch.is_empty() {
            let end = batch.last().map(|r| r.offset).unwrap_or(start);
            let commit = engine.offsets().committed;
            if let Err(e) = wire::write(
                &mut wr,
                &Message::Records {
                    commit,
                    records: batch,
                },
            )
            .await
            {
                break Err(e);
            }
            engine.update_follower(id, |p| p.sent = end);
            sent_to = end;
            continue;
        }
        tokio::select! {
            r = progress.changed() => {
                if r.is_err() { break Ok(()) }
                // Let the connections that are ready run first, so one
                // send carries their records too: under load every write
                // wakes this task, and each send to a follower costs about
                // what a client's reply does.
                tokio::task::yield_now().await;
            }
            r = commits.changed() => {
                if r.is_err() { break Ok(()) }
                // The next records carry the commit offset too: when more
                // are on their way (appended after what was sent), they
                // tell the follower, and a heartbeat would be one more send.
                tokio::task::yield_now().await;
                if engine.wal().last_offset() > sent_to {
                    continue;
                }
                let msg = Message::Heartbeat { leader_end: engine.wal().last_offset(), commit: commits.borrow_and_update() };
                if let Err(e) = wire::write(&mut wr, &msg).await { break Err(e) }
            }
            _ = heartbeat.tick() => {
                let msg = Message::Heartbeat { leader_end: engine.wal().last_offset(), commit: engine.offsets().committed };
                if let Err(e) = wire::write(&mut wr, &msg).await { break Err(e) }
            }
            r = &mut acker => break Err(match r {
                Ok(WireError::Closed) | Err(_) => WireError::Closed,
                Ok(e) => e,
            }),
            () = &mut stopping => break Ok(()),
        }
    };
    acker.abort();
    result
}

fn log_end(engine: &Engine) -> u64 {
    engine.wal().last_offset()
}

/// Removes the follower from the leader's table when its stream ends.
struct Registration(Arc<Engine>, u64);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.remove_follower(self.1);
        self.0.recompute_commit();
    }
}
