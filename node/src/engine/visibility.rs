//! The visibility overlay (DESIGN invariant 3, MySQL's AFTER_SYNC).
//!
//! In async mode a write is applied to the readable keyspace at once, as
//! Redis does. In semi-sync/sync it goes to a *pending* overlay that writers
//! read through but readers do not; [`Pending::commit_into`] moves it into
//! the readable keyspace once the commit offset passes it, so no reader sees
//! a write that a failover can take back.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::Current;
use crate::keyspace::Keyspace;
use crate::record::Mutation;

/// Uncommitted changes of a semi-sync/sync leader.
#[derive(Default)]
pub(super) struct Pending {
    /// Latest uncommitted state per key (None = deleted), with the offset of
    /// the last record that touched it (u64::MAX until the record is logged).
    keys: HashMap<Bytes, (Option<Current>, u64)>,
    /// Records not yet committed, in offset order.
    pub(super) records: VecDeque<(u64, Vec<Mutation>)>,
    /// Offset of the newest uncommitted FLUSHALL (0 = none): keys not in
    /// `keys` are gone for writers.
    flush_offset: u64,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record holding `muts` (written through a lossless view) was
    /// logged ending at `offset`: the overlay's keys now wait for it.
    pub(super) fn logged(&mut self, offset: u64, muts: Vec<Mutation>) {
        for m in &muts {
            if let Some(key) = mutation_key(m)
                && let Some(slot) = self.keys.get_mut(key)
            {
                slot.1 = offset;
            }
            if matches!(m, Mutation::FlushAll) {
                self.flush_offset = offset;
            }
        }
        self.records.push_back((offset, muts));
    }

    /// Apply the records ending at or before `offset` to `base`, in log
    /// order, and forget the overlay entries nothing newer touched.
    /// Returns the end offset of the last record applied.
    pub(super) fn commit_into(&mut self, base: &mut Keyspace, offset: u64) -> Option<u64> {
        let mut applied = None;
        while self.records.front().is_some_and(|(o, _)| *o <= offset) {
            let Some((o, muts)) = self.records.pop_front() else {
                break;
            };
            for m in &muts {
                base.apply(m);
                if let Some(key) = mutation_key(m)
                    && self.keys.get(key).is_some_and(|(_, last)| *last <= o)
                {
                    self.keys.remove(key);
                }
            }
            if self.flush_offset != 0 && self.flush_offset <= o {
                self.flush_offset = 0;
            }
            applied = Some(o);
        }
        applied
    }
}

fn mutation_key(m: &Mutation) -> Option<&Bytes> {
    match m {
        Mutation::Set { key, .. } | Mutation::Del { key } | Mutation::Expire { key, .. } => {
            Some(key)
        }
        Mutation::FlushAll => None,
    }
}

/// A write command's view: reads see the newest state (including
/// uncommitted writes), changes are recorded for the log.
pub struct WriteView<'a> {
    pub(super) base: &'a mut Keyspace,
    pub(super) pending: &'a mut Pending,
    /// Semi-sync/sync (not degraded): changes go to the overlay.
    pub(super) lossless: bool,
    pub now_ms: u64,
    pub(super) muts: Vec<Mutation>,
}

impl WriteView<'_> {
    fn raw_get(&self, key: &[u8]) -> Option<Current> {
        if self.lossless {
            if let Some((state, _)) = self.pending.keys.get(key) {
                return state.clone();
            }
            if self.pending.flush_offset != 0 {
                return None;
            }
        }
        self.base.get(key).map(|e| Current {
            value: Bytes::copy_from_slice(e.value()),
            expire_at_ms: e.expire_at_ms,
        })
    }

    fn raw_exists(&self, key: &[u8]) -> Option<u64> {
        if self.lossless {
            if let Some((state, _)) = self.pending.keys.get(key) {
                return state.as_ref().map(|c| c.expire_at_ms);
            }
            if self.pending.flush_offset != 0 {
                return None;
            }
        }
        self.base.get(key).map(|e| e.expire_at_ms)
    }

    /// The live value of `key`. An expired key is deleted (and the delete
    /// logged) here: the leader decides expiry.
    pub fn get(&mut self, key: &[u8]) -> Option<Current> {
        let cur = self.raw_get(key)?;
        if cur.expire_at_ms != 0 && cur.expire_at_ms <= self.now_ms {
            self.record(Mutation::Del {
                key: Bytes::copy_from_slice(key),
            });
            return None;
        }
        Some(cur)
    }

    /// Expiry of a live key (Some(0) = persistent), without copying it.
    pub fn live_expiry(&mut self, key: &[u8]) -> Option<u64> {
        let exp = self.raw_exists(key)?;
        if exp != 0 && exp <= self.now_ms {
            self.record(Mutation::Del {
                key: Bytes::copy_from_slice(key),
            });
            return None;
        }
        Some(exp)
    }

    pub fn set(&mut self, key: Bytes, value: Bytes, expire_at_ms: u64) {
        self.record(Mutation::Set {
            key,
            value,
            expire_at_ms,
        });
    }

    /// Delete a live key; false if it did not exist.
    pub fn del(&mut self, key: &[u8]) -> bool {
        if self.live_expiry(key).is_none() {
            return false;
        }
        self.record(Mutation::Del {
            key: Bytes::copy_from_slice(key),
        });
        true
    }

    /// Set the expiry of a live key (0 = persist); false if absent.
    pub fn set_expiry(&mut self, key: &[u8], expire_at_ms: u64) -> bool {
        if self.live_expiry(key).is_none() {
            return false;
        }
        self.record(Mutation::Expire {
            key: Bytes::copy_from_slice(key),
            expire_at_ms,
        });
        true
    }

    pub fn flush_all(&mut self) {
        self.record(Mutation::FlushAll);
    }

    fn record(&mut self, m: Mutation) {
        if self.lossless {
            match &m {
                Mutation::Set {
                    key,
                    value,
                    expire_at_ms,
                } => {
                    self.pending.keys.insert(
                        key.clone(),
                        (
                            Some(Current {
                                value: value.clone(),
                                expire_at_ms: *expire_at_ms,
                            }),
                            u64::MAX,
                        ),
                    );
                }
                Mutation::Del { key } => {
                    self.pending.keys.insert(key.clone(), (None, u64::MAX));
                }
                Mutation::Expire { key, expire_at_ms } => {
                    let cur = self.raw_get(key).map(|c| Current {
                        value: c.value,
                        expire_at_ms: *expire_at_ms,
                    });
                    self.pending.keys.insert(key.clone(), (cur, u64::MAX));
                }
                Mutation::FlushAll => {
                    self.pending.keys.clear();
                    // Marks "everything below is gone" until the record's
                    // offset is known; fixed up by the caller.
                    self.pending.flush_offset = u64::MAX;
                }
            }
        } else {
            self.base.apply(&m);
        }
        self.muts.push(m);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Run one write command through a view, then log it at `offset`.
    fn write(
        base: &mut Keyspace,
        pending: &mut Pending,
        lossless: bool,
        offset: u64,
        f: impl FnOnce(&mut WriteView<'_>),
    ) {
        let mut view = WriteView {
            base,
            pending,
            lossless,
            now_ms: 1_000,
            muts: Vec::new(),
        };
        f(&mut view);
        let muts = std::mem::take(&mut view.muts);
        // As Engine::write: a command that changed nothing logs nothing.
        if lossless && !muts.is_empty() {
            pending.logged(offset, muts);
        }
    }

    fn value(base: &Keyspace, key: &str) -> Option<Vec<u8>> {
        base.get(key.as_bytes()).map(|e| e.value().to_vec())
    }

    #[test]
    fn an_async_write_is_readable_at_once() {
        let (mut base, mut pending) = (Keyspace::new(), Pending::default());
        write(&mut base, &mut pending, false, 10, |v| {
            v.set(b("k"), b("v"), 0)
        });
        assert_eq!(value(&base, "k").as_deref(), Some(&b"v"[..]));
        assert!(pending.is_empty());
    }

    #[test]
    fn a_lossless_write_is_seen_by_writers_but_not_readers_until_committed() {
        let (mut base, mut pending) = (Keyspace::new(), Pending::default());
        write(&mut base, &mut pending, true, 10, |v| {
            v.set(b("k"), b("v1"), 0)
        });
        assert_eq!(value(&base, "k"), None, "readers see only committed state");
        write(&mut base, &mut pending, true, 20, |v| {
            let cur = v.get(b"k").expect("the writer reads its own pending write");
            assert_eq!(cur.value, b("v1"));
            v.set(b("k"), b("v2"), 0);
        });
        assert_eq!(pending.commit_into(&mut base, 15), Some(10));
        assert_eq!(value(&base, "k").as_deref(), Some(&b"v1"[..]));
        // The overlay still holds v2 for writers: the newer record touched it.
        write(&mut base, &mut pending, true, 30, |v| {
            assert_eq!(v.get(b"k").map(|c| c.value), Some(b("v2")));
        });
        assert_eq!(pending.commit_into(&mut base, 20), Some(20));
        assert_eq!(value(&base, "k").as_deref(), Some(&b"v2"[..]));
        assert!(pending.is_empty());
        assert!(pending.keys.is_empty(), "nothing newer touched k");
    }

    #[test]
    fn a_commit_below_the_first_record_applies_nothing() {
        let (mut base, mut pending) = (Keyspace::new(), Pending::default());
        write(&mut base, &mut pending, true, 10, |v| {
            v.set(b("k"), b("v"), 0)
        });
        assert_eq!(pending.commit_into(&mut base, 9), None);
        assert_eq!(value(&base, "k"), None);
    }

    #[test]
    fn an_uncommitted_flushall_hides_every_committed_key_from_writers_only() {
        let mut base = Keyspace::new();
        base.set(b"old", b"v", 0);
        let mut pending = Pending::default();
        write(&mut base, &mut pending, true, 10, |v| v.flush_all());
        write(&mut base, &mut pending, true, 20, |v| {
            assert!(v.get(b"old").is_none(), "flushed for writers");
            v.set(b("new"), b("n"), 0);
        });
        assert!(value(&base, "old").is_some(), "readers still see it");
        pending.commit_into(&mut base, 10);
        assert_eq!(value(&base, "old"), None);
        assert_eq!(value(&base, "new"), None, "its record is not committed yet");
        pending.commit_into(&mut base, 20);
        assert_eq!(value(&base, "new").as_deref(), Some(&b"n"[..]));
    }

    #[test]
    fn an_expired_key_is_deleted_by_the_writer_that_finds_it_and_the_delete_is_logged() {
        let mut base = Keyspace::new();
        base.set(b"k", b"v", 500);
        let mut pending = Pending::default();
        let mut view = WriteView {
            base: &mut base,
            pending: &mut pending,
            lossless: false,
            now_ms: 1_000,
            muts: Vec::new(),
        };
        assert!(view.get(b"k").is_none());
        assert!(matches!(view.muts.as_slice(), [Mutation::Del { key }] if key == &b("k")));
    }
}
