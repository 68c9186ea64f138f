//! Leader -> follower replication.
//!
//! Followers connect to the leader's replication port and say where their
//! log ends and which epochs it holds; the leader answers stream, truncate
//! (divergence) or snapshot, then streams WAL records unchanged. Followers
//! append them to their own WAL, apply what the leader has committed and
//! acknowledge received/durable/applied offsets. See [`wire`] for framing.

pub mod follower;
pub mod leader;
pub mod wire;
use std::time::Instant;

use parking_lot::Mutex;

use crate::domain::LinkStatus;

/// The follower's view of its link to the leader (INFO, ROLE, /status).
#[derive(Debug, Default)]
pub struct LinkInfo {
    inner: Mutex<LinkState>,
}

#[derive(Debug, Default, Clone)]
pub struct LinkState {
    pub status: LinkStatus,
    pub last_io: Option<Instant>,
    /// Snapshot transfer progress: (received, total) bytes.
    pub snapshot_progress: Option<(u64, u64)>,
    /// The leader's log end as last reported.
    pub leader_offset: u64,
    pub last_error: Option<String>,
}

impl LinkInfo {
    pub fn status(&self) -> LinkStatus {
        self.inner.lock().status
    }

    pub fn set_status(&self, status: LinkStatus) {
        self.inner.lock().status = status;
    }

    pub fn touch(&self, leader_offset: u64) {
        let mut s = self.inner.lock();
        s.last_io = Some(Instant::now());
        s.leader_offset = leader_offset;
    }

    pub fn last_io_secs(&self) -> Option<u64> {
        self.inner.lock().last_io.map(|t| t.elapsed().as_secs())
    }

    pub fn update(&self, f: impl FnOnce(&mut LinkState)) {
        f(&mut self.inner.lock());
    }

    pub fn snapshot(&self) -> LinkState {
        self.inner.lock().clone()
    }
}
