//! Active expiry (Redis's cycle): the leader finds expired keys shard by
//! shard and deletes them as logged writes, so followers never decide
//! expiry on their own clock.

use std::sync::atomic::Ordering;

use crate::domain::Role;
use crate::keyspace::SHARDS;

use super::{Engine, now_ms};

impl Engine {
    /// One step of the active expiry cycle (leader only): delete expired
    /// keys in `shards` shards starting at `*cursor`, as logged writes.
    pub fn expire_step(&self, cursor: &mut usize, shards: usize) -> usize {
        let mut expired = Vec::new();
        {
            let st = self.state.lock();
            if st.meta.role != Role::Leader || st.fenced {
                return 0;
            }
            let now = now_ms();
            let base = self.base.read();
            for i in 0..shards {
                base.expired_in_shard((*cursor + i) % SHARDS, now, &mut expired);
            }
        }
        *cursor = (*cursor + shards) % SHARDS;
        if expired.is_empty() {
            return 0;
        }
        let res = self.write(|view| {
            let mut n = 0;
            for key in &expired {
                // Re-check under the write lock: it may have been rewritten.
                if view.get(key).is_none() {
                    n += 1;
                }
            }
            n
        });
        match res {
            Ok((n, _)) => {
                self.wal.kick();
                self.stats
                    .expired_keys
                    .fetch_add(n as u64, Ordering::Relaxed);
                n
            }
            Err(_) => 0,
        }
    }
}
