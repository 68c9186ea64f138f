//! The leader's table of followers: what each has acknowledged, which
//! feeds the commit rule ([`super::quorum`]) and pins the log a follower
//! still needs.

use crate::domain::FollowerState;

use super::Engine;
use super::quorum::{self, FollowerAck};

/// What one follower has acknowledged (kept by the leader).
#[derive(Debug, Clone, Default)]
pub struct FollowerProgress {
    pub node_id: String,
    pub addr: String,
    pub received: u64,
    pub durable: u64,
    pub applied: u64,
    /// Offset the leader has sent (for lag in bytes).
    pub sent: u64,
    /// When the follower last acked everything it had been sent.
    pub caught_up_at: Option<std::time::Instant>,
    pub state: FollowerState,
}

impl FollowerProgress {
    /// What the commit rule counts of this follower.
    pub fn ack(&self) -> FollowerAck {
        FollowerAck {
            state: self.state,
            received: self.received,
            durable: self.durable,
            applied: self.applied,
        }
    }
}

impl Engine {
    pub fn register_follower(&self, id: u64, progress: FollowerProgress) {
        self.followers.lock().insert(id, progress);
    }

    pub fn update_follower(&self, id: u64, f: impl FnOnce(&mut FollowerProgress)) {
        if let Some(p) = self.followers.lock().get_mut(&id) {
            f(p);
        }
        self.recompute_commit();
    }

    pub fn remove_follower(&self, id: u64) {
        self.followers.lock().remove(&id);
    }

    /// Oldest log offset a follower still being bootstrapped or catching
    /// up needs (PostgreSQL's replication slot, bounded): a follower more
    /// than `max(4 x retention, 1 GiB)` behind is let go and will take a
    /// snapshot instead.
    pub(super) fn follower_pin(&self, last: u64) -> u64 {
        let limit = (4 * self.opts.wal_retention_bytes).max(1 << 30);
        self.followers
            .lock()
            .values()
            .filter(|f| f.state != FollowerState::Streaming)
            .map(|f| f.received)
            .filter(|r| last.saturating_sub(*r) <= limit)
            .min()
            .unwrap_or(u64::MAX)
    }

    pub fn followers(&self) -> Vec<FollowerProgress> {
        let mut v: Vec<_> = self.followers.lock().values().cloned().collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }

    /// Offset acknowledged by enough followers for the settings in force.
    pub(super) fn quorum_offset(&self) -> u64 {
        let settings = self.settings();
        let followers = self.followers.lock();
        quorum::quorum_offset(&settings, followers.values().map(FollowerProgress::ack))
    }

    /// Follower acks a write needs under the settings in force.
    pub(super) fn required_acks(&self) -> usize {
        quorum::required_acks(&self.settings(), self.followers.lock().len())
    }
}
