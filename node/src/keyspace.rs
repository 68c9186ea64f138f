//! The in-memory keyspace: a fixed number of hash-table shards.
//!
//! Shards exist so that work over the whole keyspace can proceed in small,
//! stable steps while writes continue: a snapshot copies one shard per lock
//! hold, SCAN's cursor is a shard index (so a full iteration returns every
//! key that existed throughout, exactly as Redis promises), and the active
//! expiry cycle walks shards round-robin.
//!
//! Each entry is one allocation holding the value's kind, the key and the
//! value's bytes (`[u8 kind][u32 key len][key][payload]`) behind a thin
//! reference-counted pointer (`triomphe::ThinArc`: one word, the length and
//! count live in the allocation), plus the absolute expiry: 16 bytes per
//! table slot. Slots are what a half-empty table wastes after it doubles
//! (24-byte slots with a fat `Arc<[u8]>` cost 1M keys about 16 MiB more).
//! A snapshot takes a reference instead of a copy. The kind costs one byte
//! per key; [`Entry::value_ref`] reads the entry back as a [`Value`].

use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use triomphe::ThinArc;

use crate::record::Mutation;

/// Entries up to this size are laid out in [`SCRATCH`] first.
const SCRATCH_MAX: usize = 64 << 10;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Number of shards; a power of two.
pub const SHARDS: usize = 1024;

/// What kind of value a key holds: the one-byte tag stored with each entry
/// (and, with the same numbering, in snapshot files, so the numbers of
/// existing kinds never change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueKind {
    String = 0,
}

impl ValueKind {
    /// The tag as stored.
    pub const fn as_byte(self) -> u8 {
        self as u8
    }

    /// The kind a stored tag names; `None` for a tag this build does not know.
    pub const fn from_byte(byte: u8) -> Option<ValueKind> {
        match byte {
            0 => Some(ValueKind::String),
            _ => None,
        }
    }
}

/// A borrowed view of a stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A Redis string: any bytes.
    String(&'a [u8]),
}

impl<'a> Value<'a> {
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::String(_) => ValueKind::String,
        }
    }

    /// The bytes stored for this value (for a string, the string itself).
    pub fn payload(&self) -> &'a [u8] {
        match *self {
            Value::String(bytes) => bytes,
        }
    }

    /// The value stored as `kind` with these bytes; the inverse of
    /// [`Value::kind`] and [`Value::payload`].
    pub fn from_parts(kind: ValueKind, payload: &'a [u8]) -> Value<'a> {
        match kind {
            ValueKind::String => Value::String(payload),
        }
    }
}

/// Bytes before the key in an entry's allocation: kind, key length.
const KEY_AT: usize = 1 + 4;

/// A stored key with its value and expiry.
#[derive(Clone, Debug)]
pub struct Entry {
    /// `[u8 kind][u32 key len][key][payload]`.
    kv: ThinArc<(), u8>,
    /// Absolute expiry in Unix milliseconds; 0 = none.
    pub expire_at_ms: u64,
}

impl Entry {
    fn new(key: &[u8], value: Value<'_>, expire_at_ms: u64) -> Entry {
        // Laid out in a per-thread scratch buffer with memcpy, then copied
        // once into an allocation of exactly the right size. (Collecting a
        // chained byte iterator into the Arc copied byte by byte: a tenth
        // of a SET's instructions.)
        let kind = value.kind().as_byte();
        let len = (key.len() as u32).to_le_bytes();
        let payload = value.payload();
        let fill = |buf: &mut Vec<u8>| {
            buf.clear();
            buf.push(kind);
            buf.extend_from_slice(&len);
            buf.extend_from_slice(key);
            buf.extend_from_slice(payload);
        };
        let total = KEY_AT + key.len() + payload.len();
        let kv = if total <= SCRATCH_MAX {
            SCRATCH.with_borrow_mut(|buf| {
                fill(buf);
                ThinArc::from_header_and_slice((), buf)
            })
        } else {
            let mut buf = Vec::with_capacity(total);
            fill(&mut buf);
            ThinArc::from_header_and_slice((), &buf)
        };
        Entry { kv, expire_at_ms }
    }

    fn key_len(&self) -> usize {
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.kv.slice[1..KEY_AT]);
        u32::from_le_bytes(len) as usize
    }

    pub fn key(&self) -> &[u8] {
        &self.kv.slice[KEY_AT..KEY_AT + self.key_len()]
    }

    pub fn kind(&self) -> ValueKind {
        // Only `Entry::new` writes the tag, from a `ValueKind`.
        ValueKind::from_byte(self.kv.slice[0]).unwrap_or(ValueKind::String)
    }

    /// The stored value.
    pub fn value_ref(&self) -> Value<'_> {
        Value::from_parts(self.kind(), self.payload())
    }

    /// The stored bytes: a string's contents. Every value is a string
    /// today; once other kinds exist, callers check [`Entry::kind`] first
    /// (or match on [`Entry::value_ref`]).
    pub fn value(&self) -> &[u8] {
        self.payload()
    }

    fn payload(&self) -> &[u8] {
        &self.kv.slice[KEY_AT + self.key_len()..]
    }

    /// True when the entry has an expiry at or before `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms != 0 && self.expire_at_ms <= now_ms
    }
}

#[derive(Default)]
struct Shard {
    table: HashTable<Entry>,
    /// Entries with an expiry, so the expiry cycle can skip shards without.
    volatile: usize,
}

/// The sharded map. Not synchronized: the engine owns it behind its lock.
pub struct Keyspace {
    shards: Vec<Shard>,
    hasher: DefaultHashBuilder,
    len: usize,
}

impl Default for Keyspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Keyspace {
    pub fn new() -> Keyspace {
        Keyspace {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: DefaultHashBuilder::default(),
            len: 0,
        }
    }

    fn locate(&self, key: &[u8]) -> (usize, u64) {
        let hash = self.hasher.hash_one(key);
        // Middle bits pick the shard: hashbrown uses the top 7 bits for its
        // control bytes and the low bits for the bucket.
        (((hash >> 32) as usize) & (SHARDS - 1), hash)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Make room for `keys` more keys spread evenly over the shards, so a
    /// load that knows its count (a snapshot says how many keys it holds)
    /// sizes each table once instead of rehashing it at every doubling.
    /// Exactly the even share: a margin could cross a power of two and
    /// double a shard's slots, where growing the few fuller shards once
    /// costs less.
    pub fn reserve(&mut self, keys: usize) {
        let per_shard = keys.div_ceil(SHARDS);
        let hasher = &self.hasher;
        for shard in &mut self.shards {
            shard.table.reserve(per_shard, |e| hasher.hash_one(e.key()));
        }
    }

    /// The smallest number of keys any shard holds without growing.
    #[cfg(test)]
    fn min_shard_capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.table.capacity())
            .min()
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys with an expiry.
    pub fn volatile_len(&self) -> usize {
        self.shards.iter().map(|s| s.volatile).sum()
    }

    /// The entry for `key`, expired or not (callers decide about expiry).
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        let (shard, hash) = self.locate(key);
        self.shards[shard].table.find(hash, |e| e.key() == key)
    }

    /// Store a string under `key`.
    pub fn set(&mut self, key: &[u8], value: &[u8], expire_at_ms: u64) {
        self.set_value(key, Value::String(value), expire_at_ms);
    }

    /// Store any kind of value under `key`, replacing what was there.
    pub fn set_value(&mut self, key: &[u8], value: Value<'_>, expire_at_ms: u64) {
        let (idx, hash) = self.locate(key);
        let hasher = &self.hasher;
        let shard = &mut self.shards[idx];
        let entry = Entry::new(key, value, expire_at_ms);
        match shard.table.find_mut(hash, |e| e.key() == key) {
            Some(slot) => {
                if slot.expire_at_ms != 0 {
                    shard.volatile -= 1;
                }
                *slot = entry;
            }
            None => {
                shard
                    .table
                    .insert_unique(hash, entry, |e| hasher.hash_one(e.key()));
                self.len += 1;
            }
        }
        if expire_at_ms != 0 {
            shard.volatile += 1;
        }
    }

    /// Remove `key`; true if it existed.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let (idx, hash) = self.locate(key);
        let shard = &mut self.shards[idx];
        match shard.table.find_entry(hash, |e| e.key() == key) {
            Ok(occupied) => {
                let (removed, _) = occupied.remove();
                if removed.expire_at_ms != 0 {
                    shard.volatile -= 1;
                }
                self.len -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Change the expiry of an existing key; false if absent.
    pub fn set_expire(&mut self, key: &[u8], expire_at_ms: u64) -> bool {
        let (idx, hash) = self.locate(key);
        let shard = &mut self.shards[idx];
        match shard.table.find_mut(hash, |e| e.key() == key) {
            Some(slot) => {
                match (slot.expire_at_ms != 0, expire_at_ms != 0) {
                    (false, true) => shard.volatile += 1,
                    (true, false) => shard.volatile -= 1,
                    _ => {}
                }
                slot.expire_at_ms = expire_at_ms;
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        for shard in &mut self.shards {
            // Drop the allocation too: FLUSHALL should give memory back.
            *shard = Shard::default();
        }
        self.len = 0;
    }

    /// Apply one logged change.
    pub fn apply(&mut self, m: &Mutation) {
        match m {
            Mutation::Set {
                key,
                value,
                expire_at_ms,
            } => self.set(key, value, *expire_at_ms),
            Mutation::Del { key } => {
                self.remove(key);
            }
            Mutation::Expire { key, expire_at_ms } => {
                self.set_expire(key, *expire_at_ms);
            }
            Mutation::FlushAll => self.clear(),
        }
    }

    /// Visit every entry of one shard (snapshot chunks, SCAN, KEYS).
    pub fn for_each_in_shard(&self, shard: usize, mut f: impl FnMut(&Entry)) {
        if let Some(s) = self.shards.get(shard) {
            for e in s.table.iter() {
                f(e);
            }
        }
    }

    /// Cheap clones (reference-count bumps) of one shard's entries.
    pub fn clone_shard(&self, shard: usize, out: &mut Vec<Entry>) {
        self.for_each_in_shard(shard, |e| out.push(e.clone()));
    }

    /// Keys in `shard` expired at `now_ms`, if the shard has volatile keys.
    pub fn expired_in_shard(&self, shard: usize, now_ms: u64, out: &mut Vec<Vec<u8>>) {
        if self.shards.get(shard).is_some_and(|s| s.volatile > 0) {
            self.for_each_in_shard(shard, |e| {
                if e.is_expired(now_ms) {
                    out.push(e.key().to_vec());
                }
            });
        }
    }

    /// Order-independent digest of the whole keyspace (key, value, expiry),
    /// stable across processes and builds, so two nodes at the same offset
    /// can be compared.
    pub fn digest(&self) -> u64 {
        let mut acc: u64 = 0;
        for shard in &self.shards {
            for e in shard.table.iter() {
                let mut h = fnv1a(FNV_OFFSET, e.key());
                h = fnv1a(h, &[0xff]);
                // Strings hash as before kinds existed, so digests of
                // string-only keyspaces still match older builds'.
                if e.kind() != ValueKind::String {
                    h = fnv1a(h, &[e.kind().as_byte()]);
                }
                h = fnv1a(h, e.payload());
                h = fnv1a(h, &e.expire_at_ms.to_le_bytes());
                acc = acc.wrapping_add(mix(h));
            }
        }
        acc
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 finalizer: spreads FNV's weak high bits before summing.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn set_get_remove_and_counts() {
        let mut ks = Keyspace::new();
        ks.set(b"a", b"1", 0);
        ks.set(b"b", b"2", 10);
        ks.set(b"a", b"11", 5);
        assert_eq!(ks.len(), 2);
        assert_eq!(ks.volatile_len(), 2);
        let a = ks.get(b"a").expect("a present");
        assert_eq!(
            (a.key(), a.value(), a.expire_at_ms),
            (&b"a"[..], &b"11"[..], 5)
        );
        assert!(ks.set_expire(b"a", 0));
        assert_eq!(ks.volatile_len(), 1);
        assert!(ks.remove(b"b"));
        assert!(!ks.remove(b"b"));
        assert_eq!((ks.len(), ks.volatile_len()), (1, 0));
        assert!(!ks.set_expire(b"zz", 1));
    }

    #[test]
    fn entries_above_the_scratch_size_are_stored_whole_too() {
        let mut ks = Keyspace::new();
        let big: Vec<u8> = (0..SCRATCH_MAX + 1000).map(|i| (i % 251) as u8).collect();
        ks.set(b"big", &big, 7);
        ks.set(b"small", b"v", 0);
        let e = ks.get(b"big").expect("stored");
        assert_eq!(
            (e.key(), e.value(), e.expire_at_ms),
            (&b"big"[..], &big[..], 7)
        );
        assert_eq!(
            ks.get(b"small").map(|e| e.value().to_vec()),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn a_string_keeps_its_kind_and_value_through_the_keyspace() {
        let mut ks = Keyspace::new();
        ks.set(b"s", b"hello", 0);
        ks.set_value(b"t", Value::String(b""), 7);
        let s = ks.get(b"s").expect("s present");
        assert_eq!(s.kind(), ValueKind::String);
        assert_eq!(s.value_ref(), Value::String(b"hello"));
        assert_eq!(s.value(), b"hello");
        assert_eq!(s.key(), b"s");
        let t = ks.get(b"t").expect("t present");
        assert_eq!((t.value_ref(), t.expire_at_ms), (Value::String(b""), 7));
        let v = t.value_ref();
        assert_eq!(Value::from_parts(v.kind(), v.payload()), v);
    }

    #[test]
    fn value_kind_tags_are_fixed_and_unknown_tags_are_refused() {
        assert_eq!(ValueKind::String.as_byte(), 0);
        assert_eq!(ValueKind::from_byte(0), Some(ValueKind::String));
        for unknown in 1..=u8::MAX {
            assert_eq!(ValueKind::from_byte(unknown), None);
        }
    }

    #[test]
    fn an_entry_takes_a_thin_pointer_and_its_expiry_in_the_table() {
        // The table slot: a one-word pointer and the expiry.
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        // The allocation's data: one kind byte more than `[u32 len][key][value]`.
        let e = Entry::new(b"key", Value::String(b"value"), 0);
        assert_eq!(e.kv.slice.len(), 1 + 4 + 3 + 5);
        let empty = Entry::new(b"", Value::String(b""), 0);
        assert_eq!(empty.kv.slice.len(), 1 + 4);
        assert_eq!((empty.key(), empty.value()), (&b""[..], &b""[..]));
    }

    #[test]
    fn digest_depends_on_content_not_order() {
        let mut x = Keyspace::new();
        let mut y = Keyspace::new();
        for i in 0..500u32 {
            x.set(&i.to_le_bytes(), b"v", 0);
        }
        for i in (0..500u32).rev() {
            y.set(&i.to_le_bytes(), b"v", 0);
        }
        assert_eq!(x.digest(), y.digest());
        y.set(&7u32.to_le_bytes(), b"w", 0);
        assert_ne!(x.digest(), y.digest());
        y.set(&7u32.to_le_bytes(), b"v", 1);
        assert_ne!(x.digest(), y.digest());
    }

    #[test]
    fn a_string_only_keyspace_digests_as_before_kinds_existed() {
        let mut ks = Keyspace::new();
        ks.set(b"k", b"v", 9);
        let mut h = fnv1a(FNV_OFFSET, b"k");
        h = fnv1a(h, &[0xff]);
        h = fnv1a(h, b"v");
        h = fnv1a(h, &9u64.to_le_bytes());
        assert_eq!(ks.digest(), mix(h));
    }

    #[test]
    fn apply_mutations_and_flush() {
        let mut ks = Keyspace::new();
        ks.apply(&Mutation::Set {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            expire_at_ms: 0,
        });
        ks.apply(&Mutation::Expire {
            key: Bytes::from_static(b"k"),
            expire_at_ms: 99,
        });
        assert_eq!(ks.get(b"k").map(|e| e.expire_at_ms), Some(99));
        let mut expired = Vec::new();
        for s in 0..SHARDS {
            ks.expired_in_shard(s, 100, &mut expired);
        }
        assert_eq!(expired, vec![b"k".to_vec()]);
        ks.apply(&Mutation::FlushAll);
        assert!(ks.is_empty());
        assert_eq!(ks.volatile_len(), 0);
    }

    #[test]
    fn reserve_sizes_every_shard_for_its_share_and_keeps_the_keys() {
        let mut ks = Keyspace::new();
        ks.set(b"before", b"v", 0);
        ks.reserve(100 * SHARDS);
        assert!(
            ks.min_shard_capacity() >= 100,
            "{}",
            ks.min_shard_capacity()
        );
        assert_eq!(
            ks.get(b"before").map(|e| e.value().to_vec()),
            Some(b"v".to_vec())
        );
        for i in 0..1000u32 {
            ks.set(&i.to_le_bytes(), b"x", 0);
        }
        assert_eq!(ks.len(), 1001);
    }
}
