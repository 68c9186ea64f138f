//! rstore-node: a Redis-protocol key-value store node with a checksummed
//! write-ahead log and leader -> follower replication.
//!
//! Layout:
//! - [`resp`]: RESP2/RESP3 codec (two-phase decoding, limits).
//! - [`wal`]: segmented, CRC-checked write-ahead log and fsync policies;
//!   [`snapshot`]: checkpoint files of the whole keyspace.
//! - [`keyspace`]: the in-memory sharded map; [`record`]: the physical,
//!   idempotent change records that the WAL carries.
//! - [`engine`]: the state machine tying keyspace, log, offsets, epochs and
//!   commit (visibility) together; [`commands`]: Redis command semantics.
//! - [`server`]: the RESP data plane; [`admin`]: HTTP admin API, metrics and
//!   the client the operator uses; [`replication`]: leader/follower streams.
//! - [`context`]: the node-wide state those servers share.
//! - [`node`]: wires them into a running node; [`config`]: flags;
//!   [`domain`]: roles and replication settings, shared by all of them.

pub mod admin;
pub mod commands;
pub mod config;
pub mod context;
pub mod domain;
pub mod engine;
pub mod keyspace;
pub mod meta;
pub mod node;
pub mod record;
pub mod replication;
pub mod resp;
pub mod server;
pub mod signal;
pub mod snapshot;
pub mod stats;
pub mod wal;
