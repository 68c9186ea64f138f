//! Roles, epochs and fencing: every leadership change goes through an
//! epoch above the last one, persisted before it is acted on.

use crate::domain::Role;
use crate::meta;

use super::{Engine, EngineError, RoleState, State};

impl Engine {
    pub(super) fn publish_role(&self, st: &State) {
        self.role_tx.send_replace(RoleState {
            role: st.meta.role,
            epoch: st.meta.epoch,
            fenced: st.fenced,
            leader: st.meta.leader.clone(),
        });
    }

    /// Epoch of the last record in the log.
    pub fn last_log_epoch(&self) -> u64 {
        let st = self.state.lock();
        st.meta.epoch_history.last().map(|(e, _)| *e).unwrap_or(0)
    }

    pub fn epoch_history(&self) -> Vec<(u64, u64)> {
        self.state.lock().meta.epoch_history.clone()
    }

    /// Stop accepting writes and the stream of any epoch below `epoch`.
    /// Returns (last log epoch, last log offset).
    pub fn fence(&self, epoch: u64) -> Result<(u64, u64), EngineError> {
        let mut st = self.state.lock();
        if epoch < st.meta.epoch {
            return Err(EngineError::Epoch(format!(
                "fence epoch {epoch} is older than this node's epoch {}",
                st.meta.epoch
            )));
        }
        st.meta.epoch = epoch;
        st.fenced = true;
        meta::store(&self.opts.data_dir, &st.meta)?;
        // Uncommitted writes of a fenced leader stay unacknowledged; their
        // waiters get an indeterminate error through the role channel.
        self.publish_role(&st);
        let last_epoch = st.meta.epoch_history.last().map(|(e, _)| *e).unwrap_or(0);
        tracing::warn!(epoch, "fenced");
        Ok((last_epoch, self.wal.last_offset()))
    }

    /// Become leader at `epoch` (must exceed every epoch in the log).
    pub fn promote(&self, epoch: u64) -> Result<(), EngineError> {
        let mut st = self.state.lock();
        let last_epoch = st.meta.epoch_history.last().map(|(e, _)| *e).unwrap_or(0);
        if epoch < st.meta.epoch || epoch <= last_epoch {
            return Err(EngineError::Epoch(format!(
                "promote epoch {epoch} must be above the log's last epoch {last_epoch} and not below the node's epoch {}",
                st.meta.epoch
            )));
        }
        // Everything this node received becomes part of its history.
        self.apply_received(&mut st, u64::MAX);
        let end = self.wal.last_offset();
        st.meta.epoch = epoch;
        st.meta.role = Role::Leader;
        st.meta.leader = None;
        st.meta.epoch_history.push((epoch, end));
        st.fenced = false;
        st.degraded = false;
        st.committed = st.committed.max(st.applied);
        meta::store(&self.opts.data_dir, &st.meta)?;
        self.followers.lock().clear();
        self.publish_role(&st);
        self.applied_signal.publish(st.applied);
        tracing::info!(epoch, offset = end, "promoted to leader");
        Ok(())
    }

    /// Follow `leader` at `epoch`. A leader that is told to follow drops its
    /// uncommitted overlay (those writes were never acknowledged).
    pub fn follow(&self, leader: String, epoch: u64) -> Result<(), EngineError> {
        let mut st = self.state.lock();
        if epoch < st.meta.epoch {
            return Err(EngineError::Epoch(format!(
                "follow epoch {epoch} is older than this node's epoch {}",
                st.meta.epoch
            )));
        }
        // Uncommitted writes of a former leader are in its log: they become
        // received records, applied if the new leader commits them (or cut
        // away by the divergence check when it does not have them).
        let pending = std::mem::take(&mut st.pending);
        st.received.extend(pending.records);
        st.meta.epoch = epoch;
        st.meta.role = Role::Follower;
        st.meta.leader = Some(leader.clone());
        st.fenced = false;
        st.degraded = false;
        meta::store(&self.opts.data_dir, &st.meta)?;
        self.followers.lock().clear();
        self.publish_role(&st);
        tracing::info!(epoch, %leader, "following");
        Ok(())
    }

    /// Resume the persisted role after a restart. A former leader comes
    /// back fenced (idle) unless `--role leader` told it to lead.
    pub fn resume(&self, start_as_leader: bool, follow: Option<String>) -> Result<(), EngineError> {
        let (role, epoch, leader) = {
            let st = self.state.lock();
            (st.meta.role, st.meta.epoch, st.meta.leader.clone())
        };
        if let Some(addr) = follow {
            return self.follow(addr, epoch);
        }
        match (role, start_as_leader) {
            (Role::Leader, true) => {
                let st = self.state.lock();
                self.publish_role(&st);
                Ok(())
            }
            (_, true) => self.promote(epoch.max(self.last_log_epoch()) + 1),
            (Role::Follower, false) => match leader {
                Some(addr) => self.follow(addr, epoch),
                None => Ok(()),
            },
            (Role::Leader, false) => {
                let mut st = self.state.lock();
                tracing::warn!(
                    epoch,
                    "was leader before restart: waiting for the operator (never self-promotes)"
                );
                st.meta.role = Role::Idle;
                meta::store(&self.opts.data_dir, &st.meta)?;
                self.publish_role(&st);
                Ok(())
            }
            (Role::Idle, false) => Ok(()),
        }
    }
}
