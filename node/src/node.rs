//! A running node: binds the listeners, starts the servers and background
//! tasks, and shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, StartRole};
use crate::context::Shared;
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::replication::{self, LinkInfo};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Handle of a started node.
pub struct Node {
    pub shared: Arc<Shared>,
    pub data_addr: SocketAddr,
    pub repl_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { what, addr, source })
}

impl Node {
    /// Recover the data directory, bind every listener and start serving.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let opts = EngineOptions::from_config(&config);
        let engine = tokio::task::spawn_blocking(move || Engine::open(opts))
            .await
            .map_err(|e| NodeError::Config(format!("recovery task failed: {e}")))??;
        let data = bind("the RESP listener", config.listen).await?;
        let repl = bind("the replication listener", config.repl_listen).await?;
        let admin = bind("the admin listener", config.admin_listen).await?;
        let data_addr = data.local_addr().map_err(|source| NodeError::Bind {
            what: "the RESP listener",
            addr: config.listen,
            source,
        })?;
        let repl_addr = repl.local_addr().unwrap_or(config.repl_listen);
        let admin_addr = admin.local_addr().unwrap_or(config.admin_listen);
        write_listen_file(&config.data_dir, data_addr, repl_addr, admin_addr)?;
        engine.resume(
            config.role == Some(StartRole::Leader),
            config.follow.clone(),
        )?;
        let started_unix = crate::engine::now_ms() / 1000;
        let shared = Arc::new(Shared {
            engine: engine.clone(),
            run_id: format!("{:040x}", rand::random::<u128>()),
            started: Instant::now(),
            started_unix,
            port: data_addr.port(),
            link: Arc::new(LinkInfo::default()),
            next_client_id: AtomicU64::new(1),
            config,
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(crate::server::serve(
                data,
                shared.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(crate::admin::server::serve(
                admin,
                shared.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(replication::leader::serve(
                repl,
                shared.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(replication::follower::run(
                shared.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(expiry_cycle(engine.clone(), shutdown_rx.clone())),
            tokio::spawn(checkpointer(engine.clone(), shutdown_rx)),
        ];
        tracing::info!(%data_addr, %repl_addr, %admin_addr, node_id = %engine.opts.node_id, "rstore-node serving");
        Ok(Node {
            shared,
            data_addr,
            repl_addr,
            admin_addr,
            shutdown_tx,
            tasks,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.shared.engine
    }

    /// Stop accepting, let in-flight commands finish, fsync and close. A
    /// leader hands over first ([`hand_over`]).
    pub async fn shutdown(self) -> Result<(), NodeError> {
        hand_over(&self.shared.engine, HANDOVER_WAIT).await;
        self.shutdown_tx.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let engine = self.shared.engine.clone();
        tokio::task::spawn_blocking(move || engine.close())
            .await
            .map_err(|e| NodeError::Config(format!("close task failed: {e}")))??;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// How long a stopping leader waits for a follower to take its whole log.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

/// A leader asked to stop (SIGTERM: a pod deletion, a rolling update)
/// fences itself, so no write is acknowledged from then on, keeps
/// streaming, and waits up to `wait` until a follower has received its
/// whole log. The failover that follows then promotes a member that has
/// every write this leader ever acknowledged, in async mode too, and
/// writes pause only for the detection and promotion.
pub async fn hand_over(engine: &Engine, wait: Duration) {
    let role = engine.role();
    if role.role != crate::admin::Role::Leader || role.fenced || engine.followers().is_empty() {
        return;
    }
    if let Err(e) = engine.fence(role.epoch) {
        tracing::warn!("cannot fence before stopping: {e}");
        return;
    }
    let end = engine.wal().last_offset();
    let started = Instant::now();
    loop {
        let followers = engine.followers();
        if followers.is_empty() {
            // They went away too (the whole cluster is stopping).
            tracing::info!("stopping leader: no follower left to hand over to");
            return;
        }
        if let Some(f) = followers.iter().find(|f| f.received >= end) {
            tracing::info!(
                follower = %f.node_id,
                offset = end,
                waited_ms = started.elapsed().as_millis() as u64,
                "stopping leader handed over: a follower has its whole log"
            );
            return;
        }
        if started.elapsed() >= wait {
            tracing::warn!(
                offset = end,
                "stopping leader: no follower reached the end of its log within {wait:?}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `<data-dir>/listen.json`: the addresses actually bound (port 0 picks
/// free ports), for scripts, tests and the local supervisor.
fn write_listen_file(
    dir: &std::path::Path,
    data: SocketAddr,
    repl: SocketAddr,
    admin: SocketAddr,
) -> Result<(), NodeError> {
    let body = serde_json::json!({
        "pid": std::process::id(),
        "data": data.to_string(),
        "repl": repl.to_string(),
        "admin": admin.to_string(),
    });
    let tmp = dir.join("listen.json.tmp");
    std::fs::write(&tmp, body.to_string())
        .and_then(|()| std::fs::rename(&tmp, dir.join("listen.json")))
        .map_err(|e| {
            NodeError::Config(format!(
                "cannot write {}: {e}",
                dir.join("listen.json").display()
            ))
        })
}

/// Active expiry (leader only): walk the shards and delete expired keys as
/// logged writes, ten shards every 10 ms (the whole keyspace each ~1 s).
async fn expiry_cycle(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut cursor = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        engine.expire_step(&mut cursor, 10);
        // Safety net for deferred appends nobody waited on (a client that
        // vanished mid-pipeline): they reach the disk within 10 ms.
        engine.wal().kick();
        // And for log progress made outside the writer's hook (a reader's
        // flush when a follower connects): it commits within 10 ms.
        engine.recompute_commit();
    }
}

/// Take a checkpoint whenever enough log has accumulated.
async fn checkpointer(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if engine.checkpoint_due() {
            let e = engine.clone();
            match tokio::task::spawn_blocking(move || e.checkpoint()).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::error!("checkpoint failed: {err}"),
                Err(err) => tracing::error!("checkpoint task failed: {err}"),
            }
        }
    }
}
