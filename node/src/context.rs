//! The node-wide context every connection, the admin API and the
//! replication tasks share: the engine, the configuration and the facts
//! fixed at start-up.
//!
//! It lives here, not with the commands, so that the admin server and the
//! replication tasks can reach it without depending on command semantics
//! (which themselves use admin types such as `Role`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::config::Config;
use crate::engine::Engine;
use crate::replication::LinkInfo;

/// Shared, read-only context of the node (`Arc<Shared>`).
pub struct Shared {
    pub engine: Arc<Engine>,
    pub config: Config,
    pub started: Instant,
    pub started_unix: u64,
    pub run_id: String,
    /// Data-plane port actually bound (for INFO/HELLO).
    pub port: u16,
    /// Follower link, maintained by the replication client.
    pub link: Arc<LinkInfo>,
    /// Source of CLIENT ID values, unique for the life of the process.
    pub next_client_id: AtomicU64,
}
