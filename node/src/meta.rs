//! The node's persisted identity: epoch, role and epoch history.
//!
//! Written atomically (temp file, fsync, rename, fsync dir) on every role or
//! epoch change, so a restarted node comes back with the epoch it last
//! promised and never resurrects a leadership it lost.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::admin::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub node_id: String,
    /// Highest epoch this node has seen or been fenced at.
    pub epoch: u64,
    pub role: Role,
    /// Replication address of the leader (followers).
    pub leader: Option<String>,
    /// `(epoch, start offset)` for every epoch in this node's log, ascending:
    /// the first record of `epoch` starts at `start offset`. Kafka's leader
    /// epoch cache: it finds where two logs diverge.
    pub epoch_history: Vec<(u64, u64)>,
}

impl NodeMeta {
    pub fn new(node_id: String) -> NodeMeta {
        NodeMeta {
            node_id,
            epoch: 0,
            role: Role::Idle,
            leader: None,
            epoch_history: Vec::new(),
        }
    }
}

fn path(dir: &Path) -> PathBuf {
    dir.join("node.json")
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot read or write node metadata {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node metadata {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Load `node.json`, or None for a new data directory.
pub fn load(dir: &Path) -> Result<Option<NodeMeta>, MetaError> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| MetaError::Parse { path: p, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MetaError::Io { path: p, source }),
    }
}

/// Durably replace `node.json`.
pub fn store(dir: &Path, meta: &NodeMeta) -> Result<(), MetaError> {
    let p = path(dir);
    let tmp = dir.join("node.json.tmp");
    let io = |source| MetaError::Io {
        path: p.clone(),
        source,
    };
    let body = serde_json::to_vec_pretty(meta).map_err(|source| MetaError::Parse {
        path: p.clone(),
        source,
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&body).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &p).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Epoch of the record that starts at `offset` per `history`.
pub fn epoch_at(history: &[(u64, u64)], offset: u64) -> u64 {
    history
        .iter()
        .take_while(|(_, start)| *start <= offset)
        .last()
        .map(|(e, _)| *e)
        .unwrap_or(0)
}

/// Where a follower's log must be cut to agree with a leader (Kafka's
/// OffsetsForLeaderEpoch). Take the largest epoch both could share: the
/// leader's largest epoch not above the follower's last one. Records of that
/// epoch are identical on both up to where either log leaves it (the next
/// epoch's start, or the log end); everything after that point on the
/// follower diverges or is simply absent on the leader.
pub fn divergence_point(
    leader_history: &[(u64, u64)],
    leader_end: u64,
    follower_history: &[(u64, u64)],
    follower_end: u64,
) -> u64 {
    let Some(&(follower_last, _)) = follower_history.last() else {
        return 0;
    };
    let Some(&(common, _)) = leader_history
        .iter()
        .rev()
        .find(|(e, _)| *e <= follower_last)
    else {
        return 0;
    };
    let end_of = |history: &[(u64, u64)], log_end: u64| {
        history
            .iter()
            .find(|(e, _)| *e > common)
            .map(|(_, start)| *start)
            .unwrap_or(log_end)
    };
    end_of(leader_history, leader_end).min(end_of(follower_history, follower_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_load_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        let mut m = NodeMeta::new("n1".into());
        m.epoch = 3;
        m.role = Role::Follower;
        m.leader = Some("10.0.0.1:7379".into());
        m.epoch_history = vec![(1, 0), (3, 500)];
        store(dir.path(), &m).expect("store");
        assert_eq!(load(dir.path()).expect("load"), Some(m));
    }

    #[test]
    fn corrupt_meta_is_an_error_not_a_fresh_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("node.json"), b"{not json").expect("write");
        assert!(matches!(load(dir.path()), Err(MetaError::Parse { .. })));
    }

    #[test]
    fn divergence_cuts_where_the_logs_leave_their_common_epoch() {
        // Leader: epoch 1 from 0, epoch 2 from 100 (it took over at 100).
        let leader = [(1, 0), (2, 100)];
        // Old epoch-1 leader wrote up to 150 that nobody else got.
        assert_eq!(divergence_point(&leader, 300, &[(1, 0)], 150), 100);
        // A follower of epoch 2 that is simply behind keeps everything.
        assert_eq!(
            divergence_point(&leader, 300, &[(1, 0), (2, 100)], 250),
            250
        );
        // A follower behind in epoch 1 keeps everything.
        assert_eq!(divergence_point(&leader, 300, &[(1, 0)], 80), 80);
        // A follower ahead of the leader in the leader's epoch is cut to the
        // leader's end.
        assert_eq!(
            divergence_point(&leader, 300, &[(1, 0), (2, 100)], 350),
            300
        );
        // A follower that led an epoch the leader never had (3, from 120)
        // is cut where its own epoch 2 ended.
        let leader4 = [(1, 0), (2, 100), (4, 200)];
        assert_eq!(
            divergence_point(&leader4, 300, &[(1, 0), (2, 100), (3, 120)], 180),
            120
        );
        // Empty follower log, or no epoch in common.
        assert_eq!(divergence_point(&leader, 300, &[], 0), 0);
        assert_eq!(divergence_point(&[(5, 0)], 300, &[(1, 0)], 50), 0);
        assert_eq!(epoch_at(&leader, 99), 1);
        assert_eq!(epoch_at(&leader, 100), 2);
    }
}
