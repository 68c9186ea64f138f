//! The commit rule, pure (as raft-rs keeps its core free of I/O): from the
//! replication settings, the followers' acknowledgements and the local
//! log's durability to the offset a leader may report as committed.
//!
//! DESIGN invariant 2: async = local durability per `--fsync`; semi-sync =
//! K followers at `--ack-level`; sync = every connected follower, and at
//! least one (a sync leader that loses all followers must not silently turn
//! async). `degrade` falls back to local durability until the followers
//! have caught up again.

use crate::domain::{AckLevel, FollowerState, ReplicationMode, ReplicationSettings};

/// What one follower has acknowledged, as the commit rule counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerAck {
    pub state: FollowerState,
    pub received: u64,
    pub durable: u64,
    pub applied: u64,
}

impl FollowerAck {
    /// The acknowledged offset at `level`; None for a follower still
    /// loading a snapshot (its offsets say nothing about this log yet).
    pub fn at(&self, level: AckLevel) -> Option<u64> {
        if self.state == FollowerState::Snapshot {
            return None;
        }
        Some(level.pick(self.received, self.durable, self.applied))
    }
}

/// Offset acknowledged by enough followers for `settings`: u64::MAX when
/// no follower ack is needed (async), 0 when too few followers answer.
pub fn quorum_offset(
    settings: &ReplicationSettings,
    followers: impl IntoIterator<Item = FollowerAck>,
) -> u64 {
    if settings.mode == ReplicationMode::Async {
        return u64::MAX;
    }
    let mut acks: Vec<u64> = followers
        .into_iter()
        .filter_map(|f| f.at(settings.ack_level))
        .collect();
    acks.sort_unstable_by(|a, b| b.cmp(a));
    match settings.mode {
        ReplicationMode::Async => u64::MAX,
        ReplicationMode::SemiSync => acks
            .get(settings.sync_replicas.saturating_sub(1))
            .copied()
            .unwrap_or(0),
        ReplicationMode::Sync => acks.last().copied().unwrap_or(0),
    }
}

/// Follower acks a write needs (for the timeout message).
pub fn required_acks(settings: &ReplicationSettings, connected: usize) -> usize {
    match settings.mode {
        ReplicationMode::Async => 0,
        ReplicationMode::SemiSync => settings.sync_replicas,
        ReplicationMode::Sync => connected.max(1),
    }
}

/// One recomputation of a leader's commit offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// The offset the leader may report committed (never above `local`).
    pub offset: u64,
    /// Whether the leader stays (or is) degraded to async.
    pub degraded: bool,
}

/// `local`: the local log's acknowledged end (per `--fsync`); `quorum`:
/// from [`quorum_offset`]; `appended`: the local log's end. A degraded
/// leader commits on local durability alone and leaves degraded mode once
/// the quorum has everything it appended.
pub fn commit(local: u64, quorum: u64, appended: u64, degraded: bool) -> Commit {
    let degraded = degraded && quorum < appended;
    let offset = if degraded { local } else { local.min(quorum) };
    Commit { offset, degraded }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OnSyncTimeout;

    fn settings(mode: ReplicationMode, k: usize, level: AckLevel) -> ReplicationSettings {
        ReplicationSettings {
            mode,
            sync_replicas: k,
            sync_timeout_ms: 1000,
            on_sync_timeout: OnSyncTimeout::Block,
            ack_level: level,
        }
    }

    fn streaming(received: u64, durable: u64, applied: u64) -> FollowerAck {
        FollowerAck {
            state: FollowerState::Streaming,
            received,
            durable,
            applied,
        }
    }

    #[test]
    fn async_needs_no_follower() {
        let s = settings(ReplicationMode::Async, 1, AckLevel::Durable);
        assert_eq!(quorum_offset(&s, []), u64::MAX);
        assert_eq!(required_acks(&s, 3), 0);
    }

    #[test]
    fn semi_sync_commits_what_the_kth_best_follower_acknowledged() {
        let s = settings(ReplicationMode::SemiSync, 2, AckLevel::Durable);
        let followers = [
            streaming(50, 10, 5),
            streaming(50, 30, 5),
            streaming(50, 20, 5),
        ];
        assert_eq!(quorum_offset(&s, followers), 20);
        let one = settings(ReplicationMode::SemiSync, 1, AckLevel::Durable);
        assert_eq!(quorum_offset(&one, followers), 30);
    }

    #[test]
    fn semi_sync_with_fewer_followers_than_k_commits_nothing() {
        let s = settings(ReplicationMode::SemiSync, 2, AckLevel::Durable);
        assert_eq!(quorum_offset(&s, [streaming(50, 40, 40)]), 0);
        assert_eq!(required_acks(&s, 1), 2);
    }

    #[test]
    fn sync_waits_for_the_slowest_connected_follower_and_at_least_one() {
        let s = settings(ReplicationMode::Sync, 1, AckLevel::Durable);
        let followers = [streaming(50, 40, 0), streaming(50, 25, 0)];
        assert_eq!(quorum_offset(&s, followers), 25);
        assert_eq!(quorum_offset(&s, []), 0, "no follower: nothing commits");
        assert_eq!(required_acks(&s, 0), 1);
        assert_eq!(required_acks(&s, 3), 3);
    }

    #[test]
    fn the_ack_level_picks_which_follower_offset_counts() {
        let f = [streaming(90, 60, 30)];
        for (level, want) in [
            (AckLevel::Received, 90),
            (AckLevel::Durable, 60),
            (AckLevel::Applied, 30),
        ] {
            let s = settings(ReplicationMode::SemiSync, 1, level);
            assert_eq!(quorum_offset(&s, f), want, "{level:?}");
        }
    }

    #[test]
    fn a_follower_loading_a_snapshot_does_not_count() {
        let s = settings(ReplicationMode::SemiSync, 1, AckLevel::Received);
        let loading = FollowerAck {
            state: FollowerState::Snapshot,
            ..streaming(90, 90, 90)
        };
        assert_eq!(quorum_offset(&s, [loading]), 0);
        let catching_up = FollowerAck {
            state: FollowerState::CatchingUp,
            ..streaming(70, 70, 70)
        };
        assert_eq!(quorum_offset(&s, [loading, catching_up]), 70);
    }

    #[test]
    fn the_commit_never_passes_local_durability() {
        assert_eq!(commit(100, u64::MAX, 120, false).offset, 100);
        assert_eq!(commit(100, 80, 120, false).offset, 80);
        assert_eq!(commit(100, 150, 150, false).offset, 100);
    }

    #[test]
    fn a_degraded_leader_commits_locally_until_the_quorum_catches_up() {
        let c = commit(100, 40, 120, true);
        assert_eq!(
            c,
            Commit {
                offset: 100,
                degraded: true
            }
        );
        let c = commit(120, 120, 120, true);
        assert_eq!(
            c,
            Commit {
                offset: 120,
                degraded: false
            }
        );
        assert!(
            !commit(100, 40, 120, false).degraded,
            "only a timeout degrades"
        );
    }
}
