//! The RESP data plane: accept loop and per-connection command pipeline.
//!
//! A connection parses every complete request in its buffer (pipelining),
//! executes them in order, then waits once for the acknowledgement of the
//! highest write offset in the batch before sending the replies: one fsync
//! or replication round trip serves the whole pipeline, and many
//! connections share each group commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::admin::{ReplicationMode, Role};
use crate::commands::{self, Action, Ctx, Kind, Session};
use crate::context::Shared;
use crate::resp::{self, Limits};
use crate::stats::{ClientCounters, ClientSlot, Stats};

/// Replies buffered before they are flushed mid-pipeline.
const FLUSH_BYTES: usize = 64 * 1024;
/// Requests executed before replies are flushed mid-pipeline.
const MAX_BATCH: usize = 1024;

/// Accept clients until `shutdown` becomes true; then wait for in-flight
/// connections to finish their current batch.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        if let Err(e) = handle(stream, peer.to_string(), shared, shutdown).await {
                            tracing::debug!(%peer, "connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    // In-flight connections see the same shutdown signal and finish.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 10s of shutdown; closing them");
    }
}

struct Pending {
    offset: u64,
    start: usize,
    end: usize,
    began: Instant,
}

async fn handle(
    mut stream: TcpStream,
    addr: String,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stats = &shared.engine.stats;
    let clients = stats.connected_clients.fetch_add(1, Ordering::Relaxed) + 1;
    Stats::inc(&stats.connections_total);
    let slot = stats.register_client();
    let counters = slot.counters.clone();
    let _guard = ClientGuard(shared.clone(), slot);
    if clients as usize > shared.config.max_clients {
        Stats::inc(&stats.rejected_connections);
        stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await?;
        return Ok(());
    }
    stream.set_nodelay(true)?;
    let limits = Limits {
        max_bulk_len: shared.config.max_bulk_bytes,
        max_args: shared.config.max_args,
        ..Limits::default()
    };
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let mut sess = Session::new(id, addr, shared.config.requirepass.is_some(), counters);
    // Ends when the connection must close: the node shuts down, or it stops
    // being the unfenced leader it was (clients then reconnect through the
    // leader endpoint instead of talking to a stale leader). Made once;
    // polled first in every round, which between wake-ups costs an atomic
    // swap (see `Gated`), so a client that always has a request ready
    // cannot keep it from running.
    let mut closing = {
        let mut leader_before = None;
        shared
            .engine
            .until_shutdown_or_role(shutdown, move |r: &crate::engine::RoleState| {
                let now_leader = r.role == Role::Leader && !r.fenced;
                let demoted = leader_before == Some(true) && !now_leader;
                if demoted {
                    tracing::info!(client = id, "closing client: node is no longer the leader");
                }
                leader_before = Some(now_leader);
                demoted
            })
    };
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let mut close = false;
        let mut batch = 0;
        // True when the batch stopped at a limit with requests still buffered.
        let mut more = false;
        loop {
            let args = match resp::parse_request(&mut inbuf, &limits) {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    Stats::inc(&stats.protocol_errors);
                    settle(&shared, &sess.counters, &mut out, &mut pending).await;
                    resp::encode_error(&format!("ERR {e}"), &mut out);
                    close = true;
                    break;
                }
            };
            if args.is_empty() {
                continue;
            }
            let spec = commands::lookup(&args[0]);
            let kind = spec.map_or(Kind::Other, |s| s.kind);
            // Lossless visibility: a read after this connection's own
            // unacknowledged write must wait for it, or it would not see it.
            // The mode is read per command: `POST /config` changes it live.
            if kind == Kind::Read && !pending.is_empty() && shared.engine.settings().lossless() {
                settle(&shared, &sess.counters, &mut out, &mut pending).await;
            }
            let began = Instant::now();
            let action = {
                let mut ctx = Ctx {
                    shared: &shared,
                    sess: &mut sess,
                    out: &mut out,
                };
                commands::execute(&mut ctx, spec, &args)
            };
            match action {
                Action::Done => observe(&sess.counters, kind, began),
                Action::Write {
                    offset,
                    reply_start,
                } => pending.push(Pending {
                    offset,
                    start: reply_start,
                    end: out.len(),
                    began,
                }),
                Action::Close => close = true,
                Action::WaitReplicas {
                    replicas,
                    timeout_ms,
                } => {
                    settle(&shared, &sess.counters, &mut out, &mut pending).await;
                    let n =
                        wait_replicas(&shared, sess.last_write_offset, replicas, timeout_ms).await;
                    resp::encode_int(n as i64, &mut out);
                }
                Action::WaitOffset { offset, timeout_ms } => {
                    settle(&shared, &sess.counters, &mut out, &mut pending).await;
                    wait_offset(&shared, offset, timeout_ms, &mut out).await;
                }
            }
            batch += 1;
            if close {
                break;
            }
            if out.len() >= FLUSH_BYTES || batch >= MAX_BATCH {
                more = true;
                break;
            }
        }
        settle(&shared, &sess.counters, &mut out, &mut pending).await;
        if out.len() > shared.config.client_output_limit {
            tracing::warn!(
                client = sess.id,
                bytes = out.len(),
                "client output limit exceeded; closing"
            );
            return Ok(());
        }
        if !out.is_empty() {
            sess.counters.net_output_bytes.add(out.len() as u64);
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        if more {
            continue;
        }
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(16 * 1024);
        }
        tokio::select! {
            biased;
            () = &mut closing => return Ok(()),
            n = stream.read_buf(&mut inbuf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                sess.counters.net_input_bytes.add(n as u64);
            }
        }
    }
}

fn observe(counters: &ClientCounters, kind: Kind, began: Instant) {
    let h = match kind {
        Kind::Read => &counters.read_latency,
        Kind::Write => &counters.write_latency,
        Kind::Other => return,
    };
    h.observe(began.elapsed());
}

/// Wait for the batch's writes to be acknowledged; replace the reply of
/// every write that was not with the error that says why.
async fn settle(
    shared: &Shared,
    counters: &ClientCounters,
    out: &mut BytesMut,
    pending: &mut Vec<Pending>,
) {
    let Some(max) = pending.iter().map(|p| p.offset).max() else {
        return;
    };
    let engine = &shared.engine;
    // The replication wait is timed only where there is one (a clock read
    // per batch is a visible share of an async SET).
    let waited = (engine.settings().mode != ReplicationMode::Async).then(Instant::now);
    let result = engine.wait_acked(max).await;
    let now = Instant::now();
    if let Some(waited) = waited {
        counters.sync_wait_latency.observe(now - waited);
    }
    match result {
        Ok(()) => {
            for p in pending.iter() {
                counters.write_latency.observe(now - p.began);
            }
        }
        Err(e) => {
            // A fenced leader's commit offset froze at the fence: nothing
            // past it may be answered OK, even once it is locally durable.
            let committed = match (&e, engine.settings().mode) {
                (crate::engine::AckError::Fenced, _) => engine.offsets().committed,
                (_, ReplicationMode::Async) => engine.wal_acked(),
                _ => engine.offsets().committed,
            };
            let msg = e.to_string();
            let mut rebuilt = BytesMut::with_capacity(out.len());
            let mut cursor = 0;
            for p in pending.iter() {
                rebuilt.extend_from_slice(&out[cursor..p.start]);
                if p.offset <= committed {
                    rebuilt.extend_from_slice(&out[p.start..p.end]);
                } else {
                    resp::encode_error(&msg, &mut rebuilt);
                }
                cursor = p.end;
            }
            rebuilt.extend_from_slice(&out[cursor..]);
            *out = rebuilt;
        }
    }
    pending.clear();
}

/// WAIT: followers that acknowledged (received) this connection's last write.
async fn wait_replicas(shared: &Shared, offset: u64, replicas: u64, timeout_ms: u64) -> usize {
    let engine = &shared.engine;
    let count = || {
        engine
            .followers()
            .iter()
            .filter(|f| f.received >= offset)
            .count()
    };
    let deadline =
        (timeout_ms > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(timeout_ms));
    loop {
        let n = count();
        if n as u64 >= replicas || offset == 0 {
            return n;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// WAITOFFSET: block until this node has applied `offset`; never answer
/// from older state.
async fn wait_offset(shared: &Shared, offset: u64, timeout_ms: u64, out: &mut BytesMut) {
    let mut rx = shared.engine.subscribe_applied();
    let wait = async {
        loop {
            let applied = rx.borrow_and_update();
            if applied >= offset {
                return Some(applied);
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    };
    let res = if timeout_ms == 0 {
        wait.await
    } else {
        tokio::time::timeout(Duration::from_millis(timeout_ms), wait)
            .await
            .unwrap_or(None)
    };
    match res {
        Some(applied) => resp::encode_int(applied as i64, out),
        None => resp::encode_error(
            &format!(
                "TIMEOUT offset {offset} not applied within {timeout_ms} ms (applied {})",
                shared.engine.applied()
            ),
            out,
        ),
    }
}

/// Counts the connection out when it ends, however it ends.
struct ClientGuard(Arc<Shared>, ClientSlot);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let stats = &self.0.engine.stats;
        stats.retire_client(&self.1);
        stats.connected_clients.fetch_sub(1, Ordering::Relaxed);
    }
}
