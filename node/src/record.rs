//! The change records carried by the WAL and the replication stream.
//!
//! Records are *physical* and *idempotent*: they carry the resulting value,
//! never the operation (an INCR is logged as the SET of its result). That is
//! what lets a fuzzy snapshot (copied in chunks while writes continue) plus a
//! replay of the log from the snapshot's start produce exactly the state at
//! the log's end, and what makes a follower's state a pure function of the
//! records it holds.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One change to the keyspace. A WAL record holds one or more of these,
/// applied atomically (MSET, a multi-key DEL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Replace the key's value and expiry (`expire_at_ms` 0 = no expiry).
    Set {
        key: Bytes,
        value: Bytes,
        expire_at_ms: u64,
    },
    /// Remove the key if present.
    Del { key: Bytes },
    /// Change only the expiry of an existing key (0 = persist).
    Expire { key: Bytes, expire_at_ms: u64 },
    /// Remove every key.
    FlushAll,
}

const TAG_SET: u8 = 1;
const TAG_DEL: u8 = 2;
const TAG_EXPIRE: u8 = 3;
const TAG_FLUSHALL: u8 = 4;

/// A record payload that does not decode: the log or stream is corrupt even
/// though its CRC matched (a bug or a foreign file), never silently skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed change record: {0}")]
pub struct DecodeError(pub &'static str);

/// Size of the payload [`encode_into`] writes for `mutations`.
pub fn encoded_len(mutations: &[Mutation]) -> usize {
    mutations
        .iter()
        .map(|m| match m {
            Mutation::Set { key, value, .. } => 1 + 4 + key.len() + 4 + value.len() + 8,
            Mutation::Del { key } => 1 + 4 + key.len(),
            Mutation::Expire { key, .. } => 1 + 4 + key.len() + 8,
            Mutation::FlushAll => 1,
        })
        .sum()
}

/// Encode mutations as a WAL payload.
pub fn encode(mutations: &[Mutation]) -> Bytes {
    let mut out = BytesMut::with_capacity(encoded_len(mutations));
    encode_into(mutations, &mut out);
    out.freeze()
}

/// Append the payload of `mutations` to `out`: exactly
/// [`encoded_len`] bytes. The leader encodes straight into the log's
/// buffer this way, with no intermediate copy of the values.
pub fn encode_into(mutations: &[Mutation], out: &mut impl BufMut) {
    for m in mutations {
        match m {
            Mutation::Set {
                key,
                value,
                expire_at_ms,
            } => {
                out.put_u8(TAG_SET);
                put_bytes(out, key);
                put_bytes(out, value);
                out.put_u64_le(*expire_at_ms);
            }
            Mutation::Del { key } => {
                out.put_u8(TAG_DEL);
                put_bytes(out, key);
            }
            Mutation::Expire { key, expire_at_ms } => {
                out.put_u8(TAG_EXPIRE);
                put_bytes(out, key);
                out.put_u64_le(*expire_at_ms);
            }
            Mutation::FlushAll => out.put_u8(TAG_FLUSHALL),
        }
    }
}

fn put_bytes(out: &mut impl BufMut, b: &[u8]) {
    // Values are bounded by the protocol's bulk limit (512 MiB) < u32::MAX.
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn get_bytes(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError("truncated length"));
    }
    let len = buf.get_u32_le() as usize;
    if buf.remaining() < len {
        return Err(DecodeError("truncated bytes"));
    }
    Ok(buf.split_to(len))
}

fn get_u64(buf: &mut Bytes) -> Result<u64, DecodeError> {
    if buf.remaining() < 8 {
        return Err(DecodeError("truncated integer"));
    }
    Ok(buf.get_u64_le())
}

/// Decode a WAL payload (zero-copy: keys and values borrow `payload`).
pub fn decode(payload: &Bytes) -> Result<Vec<Mutation>, DecodeError> {
    let mut buf = payload.clone();
    let mut out = Vec::with_capacity(1);
    while buf.has_remaining() {
        let tag = buf.get_u8();
        let m = match tag {
            TAG_SET => {
                let key = get_bytes(&mut buf)?;
                let value = get_bytes(&mut buf)?;
                let expire_at_ms = get_u64(&mut buf)?;
                Mutation::Set {
                    key,
                    value,
                    expire_at_ms,
                }
            }
            TAG_DEL => Mutation::Del {
                key: get_bytes(&mut buf)?,
            },
            TAG_EXPIRE => {
                let key = get_bytes(&mut buf)?;
                let expire_at_ms = get_u64(&mut buf)?;
                Mutation::Expire { key, expire_at_ms }
            }
            TAG_FLUSHALL => Mutation::FlushAll,
            _ => return Err(DecodeError("unknown mutation tag")),
        };
        out.push(m);
    }
    if out.is_empty() {
        return Err(DecodeError("empty record"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_is_exactly_what_encode_into_writes() {
        let muts = vec![
            Mutation::Set {
                key: Bytes::from_static(b"key"),
                value: Bytes::from(vec![7u8; 300]),
                expire_at_ms: 42,
            },
            Mutation::Del {
                key: Bytes::from_static(b"gone"),
            },
            Mutation::Expire {
                key: Bytes::from_static(b"key"),
                expire_at_ms: 0,
            },
            Mutation::FlushAll,
        ];
        let mut out = Vec::new();
        encode_into(&muts, &mut out);
        assert_eq!(out.len(), encoded_len(&muts));
        assert_eq!(out, encode(&muts).to_vec());
        assert_eq!(decode(&Bytes::from(out)).expect("decodes"), muts);
    }

    #[test]
    fn round_trip_every_kind() {
        let ms = vec![
            Mutation::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                expire_at_ms: 42,
            },
            Mutation::Del {
                key: Bytes::from_static(b"gone"),
            },
            Mutation::Expire {
                key: Bytes::from_static(b"k"),
                expire_at_ms: 0,
            },
            Mutation::FlushAll,
        ];
        assert_eq!(decode(&encode(&ms)), Ok(ms));
    }

    #[test]
    fn truncated_and_unknown_payloads_are_errors() {
        let full = encode(&[Mutation::Del {
            key: Bytes::from_static(b"abc"),
        }]);
        for cut in 1..full.len() {
            assert!(decode(&full.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert!(decode(&Bytes::from_static(&[9])).is_err());
        assert!(decode(&Bytes::new()).is_err());
    }
}
