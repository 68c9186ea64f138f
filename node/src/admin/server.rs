//! The admin HTTP server: health, status, role changes and Prometheus metrics.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::types::*;
use crate::config::same_secret;
use crate::context::Shared;
use crate::engine::EngineError;
use crate::stats::HistogramCounts;

type AppState = Arc<Shared>;

/// Build the admin router (exposed for in-process tests). The calls that
/// change the node's role (fence, promote, follow) need the admin token
/// when one is configured; reads (health, status, metrics) do not.
pub fn router(shared: Arc<Shared>) -> Router {
    let mutating = Router::new()
        .route("/fence", post(fence))
        .route("/promote", post(promote))
        .route("/follow", post(follow))
        .route("/config", post(set_config))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/config", get(config))
        .route("/metrics", get(metrics))
        .merge(mutating)
        .with_state(shared)
}

/// `Authorization: Bearer <token>` must match `--admin-token` or what
/// `--admin-token-file` holds now (compared in constant time); checked
/// before the body is read, so an unauthorized call changes nothing
/// whatever it carries. A token file that cannot be read refuses the call.
async fn require_token(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let expected = match s.config.admin_token_now() {
        Ok(Some(token)) => token,
        Ok(None) => return next.run(request).await,
        Err(why) => {
            tracing::error!(%why, "admin call refused: no admin token to check it against");
            return error(StatusCode::SERVICE_UNAVAILABLE, &why);
        }
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same_secret(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => error(StatusCode::UNAUTHORIZED, "admin token does not match"),
        None => error(
            StatusCode::UNAUTHORIZED,
            "this call needs the admin token: Authorization: Bearer <token>",
        ),
    }
}

/// Serve the admin API until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(shared);
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = res {
        tracing::error!("admin server failed: {e}");
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

fn engine_error(e: EngineError) -> Response {
    let status = match e {
        EngineError::Epoch(_) => StatusCode::CONFLICT,
        EngineError::Settings(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// Liveness: the process serves HTTP and its log has not failed.
async fn healthz(State(s): State<AppState>) -> Response {
    if let Some(reason) = s.engine.wal().failure() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("write-ahead log failed: {reason}"),
        );
    }
    if let Some(reason) = s.engine.poisoned() {
        return error(StatusCode::SERVICE_UNAVAILABLE, reason);
    }
    (StatusCode::OK, "ok\n").into_response()
}

/// Readiness: able to serve its role (an unfenced leader, or a follower
/// whose link is up). Idle nodes are not ready.
async fn readyz(State(s): State<AppState>) -> Response {
    if s.engine.wal().failure().is_some() || s.engine.poisoned().is_some() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "storage failed");
    }
    let r = s.engine.role();
    let ready = match r.role {
        Role::Leader => !r.fenced,
        // A follower is ready once linked and past the end of any snapshot
        // it loaded: before that its reads could mix states.
        Role::Follower => !r.fenced && s.link.status() == LinkStatus::Up && s.engine.consistent(),
        Role::Idle => false,
    };
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: role {:?}, fenced {}, link {}",
                r.role,
                r.fenced,
                s.link.status().as_str()
            ),
        )
    }
}

/// Build the `/status` body.
/// `with_digest` adds the keyspace digest: a pass over every key under the
/// engine lock (about 0.4 s at 1M keys), so only on request.
pub fn status_of(s: &Shared, with_digest: bool) -> StatusResponse {
    let e = &s.engine;
    let r = e.role();
    let offsets = e.offsets();
    let followers = e
        .followers()
        .into_iter()
        .map(|f| {
            let acked = e
                .settings()
                .ack_level
                .pick(f.received, f.durable, f.applied);
            FollowerStatus {
                node_id: f.node_id,
                addr: f.addr,
                received: f.received,
                durable: f.durable,
                applied: f.applied,
                lag_bytes: offsets.appended.saturating_sub(acked),
                lag_ms: if acked >= offsets.appended {
                    0
                } else {
                    f.caught_up_at
                        .map(|t| t.elapsed().as_millis() as u64)
                        .unwrap_or(0)
                },
                state: f.state,
            }
        })
        .collect();
    let digest = with_digest.then(|| format!("{:016x}", e.digest().0));
    StatusResponse {
        node_id: e.opts.node_id.clone(),
        role: r.role,
        epoch: r.epoch,
        fenced: r.fenced,
        last_log_epoch: e.last_log_epoch(),
        offsets,
        leader: r.leader,
        followers,
        mode: e.settings().mode,
        settings: Some(e.settings()),
        degraded: e.degraded(),
        link: (r.role == Role::Follower).then(|| s.link.status()),
        snapshot_progress: s.link.snapshot().snapshot_progress,
        digest,
        keys: e.keys() as u64,
    }
}

async fn status(State(s): State<AppState>, uri: axum::http::Uri) -> Json<StatusResponse> {
    let with_digest = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "digest=1" || kv == "digest=true" || kv == "digest")
    });
    Json(status_of(&s, with_digest))
}

async fn fence(State(s): State<AppState>, Json(req): Json<FenceRequest>) -> Response {
    match s.engine.fence(req.epoch) {
        Ok((last_epoch, last_offset)) => Json(FenceResponse {
            node_id: s.engine.opts.node_id.clone(),
            last_epoch,
            last_offset,
            epoch: req.epoch,
        })
        .into_response(),
        Err(e) => engine_error(e),
    }
}

/// `GET /config`: the replication settings in force.
async fn config(State(s): State<AppState>) -> Response {
    Json(s.engine.settings()).into_response()
}

/// `POST /config`: change the replication settings without a restart.
async fn set_config(State(s): State<AppState>, Json(req): Json<ReplicationSettings>) -> Response {
    match s.engine.set_settings(req) {
        Ok(now) => Json(now).into_response(),
        Err(e) => engine_error(e),
    }
}

async fn promote(State(s): State<AppState>, Json(req): Json<PromoteRequest>) -> Response {
    match s.engine.promote(req.epoch) {
        Ok(()) => Json(status_of(&s, false)).into_response(),
        Err(e) => engine_error(e),
    }
}

async fn follow(State(s): State<AppState>, Json(req): Json<FollowRequest>) -> Response {
    if req.leader.trim().is_empty() || !req.leader.contains(':') {
        return error(
            StatusCode::BAD_REQUEST,
            "leader must be HOST:PORT of the leader's replication listener",
        );
    }
    match s.engine.follow(req.leader, req.epoch) {
        Ok(()) => Json(status_of(&s, false)).into_response(),
        Err(e) => engine_error(e),
    }
}

/// Resident set size of this process, from /proc.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &str,
    h: &HistogramCounts,
    header: bool,
) {
    if header {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    }
    let (buckets, count, sum) = h.cumulative();
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, c) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "{name}_sum{braces} {sum}\n{name}_count{braces} {count}"
    );
}

/// Prometheus text exposition of the node's metrics.
pub fn metrics_text(s: &Shared) -> String {
    let e = &s.engine;
    let st = &e.stats;
    let clients = st.client_totals();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(8192);
    let mut counter = |name: &str, help: &str, kind: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    counter(
        "rstore_commands_total",
        "Commands processed by type.",
        "counter",
        &[
            ("type=\"read\"", clients.read_commands),
            ("type=\"write\"", clients.write_commands),
            ("type=\"other\"", clients.other_commands),
        ],
    );
    counter(
        "rstore_command_errors_total",
        "Commands answered with an error.",
        "counter",
        &[("", clients.command_errors)],
    );
    counter(
        "rstore_protocol_errors_total",
        "Connections closed for malformed RESP.",
        "counter",
        &[("", load(&st.protocol_errors))],
    );
    counter(
        "rstore_connected_clients",
        "Open client connections.",
        "gauge",
        &[("", load(&st.connected_clients))],
    );
    counter(
        "rstore_connections_total",
        "Client connections accepted.",
        "counter",
        &[("", load(&st.connections_total))],
    );
    counter(
        "rstore_rejected_connections_total",
        "Connections refused at --max-clients.",
        "counter",
        &[("", load(&st.rejected_connections))],
    );
    counter(
        "rstore_keys",
        "Keys in the readable keyspace.",
        "gauge",
        &[("", e.keys() as u64)],
    );
    counter(
        "rstore_expired_keys_total",
        "Keys deleted by expiry.",
        "counter",
        &[("", load(&st.expired_keys))],
    );
    counter(
        "rstore_keyspace_hits_total",
        "GET hits.",
        "counter",
        &[("", clients.keyspace_hits)],
    );
    counter(
        "rstore_keyspace_misses_total",
        "GET misses.",
        "counter",
        &[("", clients.keyspace_misses)],
    );
    let offsets = e.offsets();
    counter(
        "rstore_offset_bytes",
        "Log offsets of this node.",
        "gauge",
        &[
            ("kind=\"appended\"", offsets.appended),
            ("kind=\"durable\"", offsets.durable),
            ("kind=\"applied\"", offsets.applied),
            ("kind=\"committed\"", offsets.committed),
        ],
    );
    let r = e.role();
    counter("rstore_epoch", "Current epoch.", "gauge", &[("", r.epoch)]);
    counter(
        "rstore_role",
        "1 for the node's current role.",
        "gauge",
        &[
            ("role=\"leader\"", u64::from(r.role == Role::Leader)),
            ("role=\"follower\"", u64::from(r.role == Role::Follower)),
            ("role=\"idle\"", u64::from(r.role == Role::Idle)),
        ],
    );
    counter(
        "rstore_fenced",
        "1 while fenced.",
        "gauge",
        &[("", u64::from(r.fenced))],
    );
    counter(
        "rstore_replication_degraded",
        "1 while semi-sync/sync runs degraded as async.",
        "gauge",
        &[("", u64::from(e.degraded()))],
    );
    counter(
        "rstore_sync_timeouts_total",
        "Writes whose follower acks timed out.",
        "counter",
        &[("", load(&st.sync_timeouts))],
    );
    counter(
        "rstore_degrade_events_total",
        "Switches from semi-sync/sync to async.",
        "counter",
        &[("", load(&st.degrade_events))],
    );
    counter(
        "rstore_wal_bytes",
        "Bytes of log on disk.",
        "gauge",
        &[("", e.wal().disk_bytes())],
    );
    counter(
        "rstore_wal_segments",
        "Log segment files.",
        "gauge",
        &[("", e.wal().segment_count() as u64)],
    );
    counter(
        "rstore_snapshot_bytes",
        "Size of the latest snapshot.",
        "gauge",
        &[("", e.snapshot_bytes())],
    );
    counter(
        "rstore_checkpoints_total",
        "Snapshots written.",
        "counter",
        &[("", load(&st.checkpoints))],
    );
    counter(
        "rstore_resyncs_total",
        "Follower resynchronisations served, by kind.",
        "counter",
        &[
            ("kind=\"partial\"", load(&st.resyncs_partial)),
            ("kind=\"full\"", load(&st.resyncs_full)),
        ],
    );
    counter(
        "rstore_snapshot_sent_bytes_total",
        "Snapshot bytes shipped to followers.",
        "counter",
        &[("", load(&st.snapshot_bytes_sent))],
    );
    counter(
        "rstore_net_input_bytes_total",
        "Bytes read from clients.",
        "counter",
        &[("", clients.net_input_bytes)],
    );
    counter(
        "rstore_net_output_bytes_total",
        "Bytes written to clients.",
        "counter",
        &[("", clients.net_output_bytes)],
    );
    counter(
        "rstore_resident_memory_bytes",
        "Resident set size.",
        "gauge",
        &[("", rss_bytes().unwrap_or(0))],
    );
    let followers = e.followers();
    let _ = writeln!(
        out,
        "# HELP rstore_follower_lag_bytes Leader log end minus the follower's acked offset.\n# TYPE rstore_follower_lag_bytes gauge"
    );
    for f in &followers {
        let _ = writeln!(
            out,
            "rstore_follower_lag_bytes{{follower=\"{}\"}} {}",
            f.node_id,
            offsets.appended.saturating_sub(f.received)
        );
    }
    let _ = writeln!(
        out,
        "# HELP rstore_follower_acked_offset_bytes Offsets acknowledged by each follower.\n# TYPE rstore_follower_acked_offset_bytes gauge"
    );
    for f in &followers {
        for (kind, v) in [
            ("received", f.received),
            ("durable", f.durable),
            ("applied", f.applied),
        ] {
            let _ = writeln!(
                out,
                "rstore_follower_acked_offset_bytes{{follower=\"{}\",kind=\"{kind}\"}} {v}",
                f.node_id
            );
        }
    }
    histogram(
        &mut out,
        "rstore_command_duration_seconds",
        "Command latency including acknowledgement.",
        "type=\"read\"",
        &clients.read_latency,
        true,
    );
    histogram(
        &mut out,
        "rstore_command_duration_seconds",
        "",
        "type=\"write\"",
        &clients.write_latency,
        false,
    );
    histogram(
        &mut out,
        "rstore_sync_wait_seconds",
        "Time writes waited for follower acks.",
        "",
        &clients.sync_wait_latency,
        true,
    );
    let ws = e.wal().stats();
    let _ = writeln!(
        out,
        "# HELP rstore_fsync_duration_seconds WAL fsync latency.\n# TYPE rstore_fsync_duration_seconds histogram"
    );
    for (le, c) in &ws.fsync_buckets {
        let _ = writeln!(
            out,
            "rstore_fsync_duration_seconds_bucket{{le=\"{le}\"}} {c}"
        );
    }
    let _ = writeln!(
        out,
        "rstore_fsync_duration_seconds_bucket{{le=\"+Inf\"}} {n}\nrstore_fsync_duration_seconds_sum {}\nrstore_fsync_duration_seconds_count {n}",
        ws.fsync_total_micros as f64 / 1e6,
        n = ws.fsync_count
    );
    let _ = writeln!(
        out,
        "# HELP rstore_wal_written_bytes_total Log bytes handed to the OS.\n# TYPE rstore_wal_written_bytes_total counter\nrstore_wal_written_bytes_total {}",
        ws.bytes_written
    );
    out
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics_text(&s),
    )
        .into_response()
}
