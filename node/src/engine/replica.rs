//! The follower side: records from the leader are appended unchanged and
//! applied once the leader has committed them (at once in async mode).

use crate::domain::{ReplicationMode, Role};
use crate::meta;
use crate::record;
use crate::wal::Record;

use super::{Engine, EngineError, State};

impl Engine {
    /// Follower: append a record from the leader unchanged and apply what
    /// the leader has committed.
    pub fn append_replicated(&self, rec: &Record, leader_commit: u64) -> Result<(), EngineError> {
        let muts = record::decode(&rec.payload)
            .map_err(|e| EngineError::Corrupt(format!("record ending at {}: {e}", rec.offset)))?;
        let mut st = self.state.lock();
        if st.meta.role != Role::Follower || st.fenced {
            return Err(EngineError::Fenced(st.meta.epoch));
        }
        self.wal.append_record(rec)?;
        let start = rec.offset - crate::wal::encoded_len(rec.payload.len());
        if st
            .meta
            .epoch_history
            .last()
            .is_none_or(|(e, _)| *e < rec.epoch)
        {
            st.meta.epoch_history.push((rec.epoch, start));
            st.meta.epoch = st.meta.epoch.max(rec.epoch);
            meta::store(&self.opts.data_dir, &st.meta)?;
        }
        st.received.push_back((rec.offset, muts));
        let commit = if self.settings().mode == ReplicationMode::Async {
            u64::MAX
        } else {
            leader_commit
        };
        self.apply_received(&mut st, commit);
        Ok(())
    }

    /// Follower: adopt a leader's (higher) epoch learned in the handshake.
    pub fn observe_epoch(&self, epoch: u64) -> Result<(), EngineError> {
        let mut st = self.state.lock();
        if epoch > st.meta.epoch {
            st.meta.epoch = epoch;
            meta::store(&self.opts.data_dir, &st.meta)?;
            self.publish_role(&st);
        }
        Ok(())
    }

    /// Follower: the leader's commit offset advanced (heartbeat).
    pub fn leader_committed(&self, leader_commit: u64) {
        let mut st = self.state.lock();
        let commit = if self.settings().mode == ReplicationMode::Async {
            u64::MAX
        } else {
            leader_commit
        };
        self.apply_received(&mut st, commit);
    }

    pub(super) fn apply_received(&self, st: &mut State, commit: u64) {
        let before = st.applied;
        if st.received.front().is_some_and(|(o, _)| *o <= commit) {
            let mut base = self.base.write();
            while st.received.front().is_some_and(|(o, _)| *o <= commit) {
                let Some((o, muts)) = st.received.pop_front() else {
                    break;
                };
                for m in &muts {
                    base.apply(m);
                }
                st.applied = o;
            }
        }
        st.committed = st.committed.max(commit.min(st.applied));
        if st.applied != before {
            self.applied_signal.publish(st.applied);
        }
    }
}
