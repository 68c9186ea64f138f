//! JSON bodies of the admin API. The operator depends on these shapes; change
//! them only together with it.

use serde::{Deserialize, Serialize};

pub use crate::domain::{
    AckLevel, FollowerState, LinkStatus, OnSyncTimeout, ReplicationMode, ReplicationSettings, Role,
};

/// Log offsets of a node. Offsets are logical byte positions in the log:
/// the same offset means the same state on every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offsets {
    /// End of the local log: the last record appended, whether written
    /// by this node as leader or received from a leader as follower
    /// (received records count before they are committed or applied).
    pub appended: u64,
    /// End of the last record known to be on stable storage locally.
    pub durable: u64,
    /// End of the last record applied to the visible keyspace.
    pub applied: u64,
    /// End of the last record acknowledged per the replication mode.
    pub committed: u64,
}

/// One follower as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerStatus {
    pub node_id: String,
    /// Remote address of the replication connection.
    pub addr: String,
    pub received: u64,
    pub durable: u64,
    pub applied: u64,
    /// Leader appended offset minus the follower's acked offset (at ack level).
    pub lag_bytes: u64,
    /// Milliseconds since the follower last acknowledged everything it had
    /// been sent; 0 when caught up.
    pub lag_ms: u64,
    /// "snapshot", "catching-up" or "streaming".
    pub state: FollowerState,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub node_id: String,
    pub role: Role,
    pub epoch: u64,
    /// True once fenced at `epoch` without a promote or follow since.
    pub fenced: bool,
    /// Epoch of the last record in this node's log: the last entry of its
    /// epoch history, so a leader promoted since its last record reports
    /// the epoch it was promoted at (0 for an empty history). Same value as
    /// [`FenceResponse::last_epoch`]. Together with `offsets.appended` (the
    /// end of the local log, received-but-uncommitted records included) it
    /// ranks failover candidates: the highest `(last_log_epoch, appended)`
    /// holds the most recent history. Absent from nodes older than the
    /// field, hence 0 by default.
    #[serde(default)]
    pub last_log_epoch: u64,
    pub offsets: Offsets,
    /// Replication address of the leader this node follows (followers).
    pub leader: Option<String>,
    /// Followers connected to this node (leaders).
    pub followers: Vec<FollowerStatus>,
    pub mode: ReplicationMode,
    /// Every replication setting in force (`GET /config`); absent from
    /// nodes older than the field.
    #[serde(default)]
    pub settings: Option<ReplicationSettings>,
    /// True while semi-sync/sync acknowledgement is degraded to async.
    pub degraded: bool,
    /// Follower link state: "up", "down", "connecting", "snapshot";
    /// absent on leaders.
    pub link: Option<LinkStatus>,
    /// Follower: snapshot transfer in progress, bytes (received, total).
    #[serde(default)]
    pub snapshot_progress: Option<(u64, u64)>,
    /// Hex digest of the keyspace at `offsets.applied`; only with
    /// `GET /status?digest=1` (it walks every key).
    pub digest: Option<String>,
    pub keys: u64,
}

/// `POST /fence`: stop accepting the old epoch's writes and stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRequest {
    pub epoch: u64,
}

/// Answer to `POST /fence`: where this node's log ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceResponse {
    pub node_id: String,
    /// Epoch of the last record in this node's log.
    pub last_epoch: u64,
    /// End offset of this node's log.
    pub last_offset: u64,
    /// The epoch the node is now fenced at.
    pub epoch: u64,
}

/// `POST /promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteRequest {
    pub epoch: u64,
}

/// `POST /follow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowRequest {
    /// Replication address (`host:port`) of the leader.
    pub leader: String,
    pub epoch: u64,
}

/// Error body of every non-2xx admin answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
