//! The node's vocabulary: roles and replication settings. Shared by the
//! engine, the flags, the admin API (which re-exports these types) and the
//! operator (through the admin API), so each has exactly one definition.

use serde::{Deserialize, Serialize};

/// Role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes and streams its log to followers.
    Leader,
    /// Replicates from a leader, serves reads.
    Follower,
    /// Neither: waiting for the admin API (or fenced with no leader yet).
    Idle,
}

/// Replication acknowledgement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    Async,
    SemiSync,
    Sync,
}

impl ReplicationMode {
    /// The spelling of the flag and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Async => "async",
            ReplicationMode::SemiSync => "semi-sync",
            ReplicationMode::Sync => "sync",
        }
    }
}

impl std::str::FromStr for ReplicationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<ReplicationMode, String> {
        match s {
            "async" => Ok(ReplicationMode::Async),
            "semi-sync" | "semisync" => Ok(ReplicationMode::SemiSync),
            "sync" => Ok(ReplicationMode::Sync),
            other => Err(format!(
                "unknown replication mode '{other}' (expected async, semi-sync or sync)"
            )),
        }
    }
}

/// Where a follower's replication stream stands, as its leader sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FollowerState {
    /// Receiving a snapshot: its offsets do not count for commits yet.
    Snapshot,
    /// Receiving the log behind the leader's end.
    #[default]
    CatchingUp,
    /// Has caught up once; receives records as they are written.
    Streaming,
}

impl FollowerState {
    /// The spelling of the admin API (`followers[].state`).
    pub fn as_str(self) -> &'static str {
        match self {
            FollowerState::Snapshot => "snapshot",
            FollowerState::CatchingUp => "catching-up",
            FollowerState::Streaming => "streaming",
        }
    }
}

/// A follower's link to its leader, as the follower sees it (INFO's
/// `master_link_status`, ROLE's state, `/status` `link`, readiness).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    /// Not connected (and not trying right now: backing off, or no leader).
    #[default]
    Down,
    /// Dialing the leader or waiting for its handshake answer.
    Connecting,
    /// Receiving a snapshot from the leader.
    Snapshot,
    /// Streaming the leader's log.
    Up,
}

impl LinkStatus {
    /// The spelling of the admin API (`link`).
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStatus::Down => "down",
            LinkStatus::Connecting => "connecting",
            LinkStatus::Snapshot => "snapshot",
            LinkStatus::Up => "up",
        }
    }
}

/// How a semi-sync/sync leader reacts when followers do not acknowledge in
/// `--sync-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnSyncTimeout {
    /// Report the write as indeterminate and keep requiring acks.
    Block,
    /// Fall back to async until followers catch up (visible in INFO/metrics).
    Degrade,
}

/// Which follower progress counts as an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AckLevel {
    Received,
    Durable,
    Applied,
}

impl AckLevel {
    /// Of a follower's (received, durable, applied) offsets, the one this
    /// level counts.
    pub fn pick(self, received: u64, durable: u64, applied: u64) -> u64 {
        match self {
            AckLevel::Received => received,
            AckLevel::Durable => durable,
            AckLevel::Applied => applied,
        }
    }
}

/// The replication settings a node can change while it runs (`POST
/// /config`): what a leader needs before it acknowledges a write, and what
/// a follower waits for before it shows one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationSettings {
    pub mode: ReplicationMode,
    /// Semi-sync: follower acks required per write.
    pub sync_replicas: usize,
    /// How long a write waits for follower acks, milliseconds.
    pub sync_timeout_ms: u64,
    pub on_sync_timeout: OnSyncTimeout,
    pub ack_level: AckLevel,
}

impl ReplicationSettings {
    /// Combinations the types cannot rule out.
    pub fn validate(&self) -> Result<(), String> {
        if self.mode == ReplicationMode::SemiSync && self.sync_replicas == 0 {
            return Err("sync_replicas must be at least 1 in semi-sync mode".into());
        }
        if self.mode != ReplicationMode::Async && self.sync_timeout_ms == 0 {
            return Err("sync_timeout_ms must be positive in semi-sync and sync modes".into());
        }
        Ok(())
    }

    /// Whether writes wait for followers and stay invisible until then.
    pub fn lossless(&self) -> bool {
        self.mode != ReplicationMode::Async
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn settings(mode: ReplicationMode, k: usize) -> ReplicationSettings {
        ReplicationSettings {
            mode,
            sync_replicas: k,
            sync_timeout_ms: 1000,
            on_sync_timeout: OnSyncTimeout::Block,
            ack_level: AckLevel::Durable,
        }
    }

    #[test]
    fn semi_sync_without_a_replica_to_wait_for_is_refused() {
        let err = settings(ReplicationMode::SemiSync, 0)
            .validate()
            .unwrap_err();
        assert!(err.contains("sync_replicas"), "{err}");
        assert!(settings(ReplicationMode::SemiSync, 1).validate().is_ok());
        assert!(settings(ReplicationMode::Async, 0).validate().is_ok());
    }

    #[test]
    fn a_zero_sync_timeout_is_refused_where_writes_wait() {
        let mut s = settings(ReplicationMode::Sync, 1);
        s.sync_timeout_ms = 0;
        assert!(s.validate().is_err());
        s.mode = ReplicationMode::Async;
        assert!(s.validate().is_ok());
    }

    #[test]
    fn settings_use_the_flag_spellings_on_the_wire() {
        let json = serde_json::to_value(settings(ReplicationMode::SemiSync, 2)).unwrap();
        assert_eq!(json["mode"], "semi-sync");
        assert_eq!(json["on_sync_timeout"], "block");
        assert_eq!(json["ack_level"], "durable");
        let back: ReplicationSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back, settings(ReplicationMode::SemiSync, 2));
        for m in [
            ReplicationMode::Async,
            ReplicationMode::SemiSync,
            ReplicationMode::Sync,
        ] {
            assert_eq!(m.as_str().parse::<ReplicationMode>(), Ok(m));
        }
    }

    #[test]
    fn link_and_follower_states_keep_their_admin_api_spellings() {
        for l in [
            LinkStatus::Down,
            LinkStatus::Connecting,
            LinkStatus::Snapshot,
            LinkStatus::Up,
        ] {
            assert_eq!(serde_json::to_value(l).unwrap(), l.as_str());
        }
        for f in [
            FollowerState::Snapshot,
            FollowerState::CatchingUp,
            FollowerState::Streaming,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
        // What older nodes sent as free strings still reads.
        let l: LinkStatus = serde_json::from_str("\"snapshot\"").unwrap();
        assert_eq!(l, LinkStatus::Snapshot);
        let f: FollowerState = serde_json::from_str("\"catching-up\"").unwrap();
        assert_eq!(f, FollowerState::CatchingUp);
    }
}
