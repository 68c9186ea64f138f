//! The replication wire format.
//!
//! Every frame is `[u32 body length][u32 CRC-32C of body][body]`, body[0]
//! being the message type. Lengths are checked against a bound before any
//! allocation, and a CRC mismatch ends the connection: a damaged stream is
//! never applied.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wal::{MAX_PAYLOAD, Record};

/// Largest frame body: one maximal record plus headers.
pub const MAX_FRAME: usize = MAX_PAYLOAD + (1 << 20);
/// Protocol version spoken in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

const T_HELLO: u8 = 1;
const T_HELLO_REPLY: u8 = 2;
const T_ERROR: u8 = 3;
const T_SNAPSHOT_CHUNK: u8 = 4;
const T_SNAPSHOT_END: u8 = 5;
const T_RECORDS: u8 = 6;
const T_HEARTBEAT: u8 = 7;
const T_ACK: u8 = 8;

/// Follower -> leader, first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub node_id: String,
    pub password: Option<String>,
    pub epoch: u64,
    /// End of the follower's log.
    pub last_offset: u64,
    pub epoch_history: Vec<(u64, u64)>,
    /// Ask for a snapshot whatever the logs say (local state unusable).
    pub force_snapshot: bool,
}

/// How the follower must start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Stream from `offset` (the follower's end).
    Stream,
    /// Truncate to `offset` (divergence), then stream from there.
    Truncate,
    /// Receive a snapshot, then stream from its start.
    Snapshot,
}

/// Leader -> follower answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    pub leader_id: String,
    pub epoch: u64,
    pub decision: Decision,
    pub offset: u64,
    /// Snapshot size in bytes (Decision::Snapshot).
    pub snapshot_len: u64,
    pub leader_end: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    HelloReply(HelloReply),
    Error(String),
    SnapshotChunk(Bytes),
    SnapshotEnd,
    Records {
        commit: u64,
        records: Vec<Record>,
    },
    Heartbeat {
        leader_end: u64,
        commit: u64,
    },
    Ack {
        received: u64,
        durable: u64,
        applied: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("frame checksum mismatch (stream damaged)")]
    BadCrc,
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("{0}")]
    Remote(String),
}

fn json<T: Serialize>(t: &T) -> Vec<u8> {
    serde_json::to_vec(t).unwrap_or_default()
}

/// Encode a message as one frame.
pub fn encode(msg: &Message) -> BytesMut {
    let mut body = BytesMut::new();
    match msg {
        Message::Hello(h) => {
            body.put_u8(T_HELLO);
            body.put_slice(&json(h));
        }
        Message::HelloReply(r) => {
            body.put_u8(T_HELLO_REPLY);
            body.put_slice(&json(r));
        }
        Message::Error(e) => {
            body.put_u8(T_ERROR);
            body.put_slice(e.as_bytes());
        }
        Message::SnapshotChunk(b) => {
            body.put_u8(T_SNAPSHOT_CHUNK);
            body.put_slice(b);
        }
        Message::SnapshotEnd => body.put_u8(T_SNAPSHOT_END),
        Message::Records { commit, records } => {
            body.put_u8(T_RECORDS);
            body.put_u64_le(*commit);
            body.put_u32_le(records.len() as u32);
            for r in records {
                body.put_u64_le(r.epoch);
                body.put_u64_le(r.offset);
                body.put_u32_le(r.payload.len() as u32);
                body.put_slice(&r.payload);
            }
        }
        Message::Heartbeat { leader_end, commit } => {
            body.put_u8(T_HEARTBEAT);
            body.put_u64_le(*leader_end);
            body.put_u64_le(*commit);
        }
        Message::Ack {
            received,
            durable,
            applied,
        } => {
            body.put_u8(T_ACK);
            body.put_u64_le(*received);
            body.put_u64_le(*durable);
            body.put_u64_le(*applied);
        }
    }
    let mut frame = BytesMut::with_capacity(8 + body.len());
    frame.put_u32_le(body.len() as u32);
    frame.put_u32_le(crc32c::crc32c(&body));
    frame.put_slice(&body);
    frame
}

fn parse_json<T: serde::de::DeserializeOwned>(b: &Bytes) -> Result<T, WireError> {
    serde_json::from_slice(b).map_err(|e| WireError::Malformed(e.to_string()))
}

fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), WireError> {
    if buf.remaining() < n {
        return Err(WireError::Malformed(format!("truncated {what}")));
    }
    Ok(())
}

/// Decode a frame body (after length and CRC checks).
pub fn decode(mut body: Bytes) -> Result<Message, WireError> {
    need(&body, 1, "type")?;
    let t = body.get_u8();
    Ok(match t {
        T_HELLO => Message::Hello(parse_json(&body)?),
        T_HELLO_REPLY => Message::HelloReply(parse_json(&body)?),
        T_ERROR => Message::Error(String::from_utf8_lossy(&body).into_owned()),
        T_SNAPSHOT_CHUNK => Message::SnapshotChunk(body),
        T_SNAPSHOT_END => Message::SnapshotEnd,
        T_RECORDS => {
            need(&body, 12, "records header")?;
            let commit = body.get_u64_le();
            let n = body.get_u32_le() as usize;
            let mut records = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                need(&body, 20, "record header")?;
                let epoch = body.get_u64_le();
                let offset = body.get_u64_le();
                let len = body.get_u32_le() as usize;
                need(&body, len, "record payload")?;
                records.push(Record {
                    epoch,
                    offset,
                    payload: body.split_to(len),
                });
            }
            Message::Records { commit, records }
        }
        T_HEARTBEAT => {
            need(&body, 16, "heartbeat")?;
            Message::Heartbeat {
                leader_end: body.get_u64_le(),
                commit: body.get_u64_le(),
            }
        }
        T_ACK => {
            need(&body, 24, "ack")?;
            Message::Ack {
                received: body.get_u64_le(),
                durable: body.get_u64_le(),
                applied: body.get_u64_le(),
            }
        }
        other => {
            return Err(WireError::Malformed(format!(
                "unknown message type {other}"
            )));
        }
    })
}

/// Read one frame.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Message, WireError> {
    let mut header = [0u8; 8];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    if len == 0 {
        return Err(WireError::Malformed("empty frame".into()));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if crc32c::crc32c(&body) != crc {
        return Err(WireError::BadCrc);
    }
    match decode(Bytes::from(body))? {
        Message::Error(e) => Err(WireError::Remote(e)),
        m => Ok(m),
    }
}

/// Write one frame.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, msg: &Message) -> Result<(), WireError> {
    w.write_all(&encode(msg)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_damage_is_detected() {
        let msgs = vec![
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                node_id: "n".into(),
                password: Some("p".into()),
                epoch: 2,
                last_offset: 10,
                epoch_history: vec![(1, 0), (2, 5)],
                force_snapshot: false,
            }),
            Message::Records {
                commit: 7,
                records: vec![Record {
                    epoch: 2,
                    offset: 40,
                    payload: Bytes::from_static(b"abc"),
                }],
            },
            Message::Heartbeat {
                leader_end: 3,
                commit: 2,
            },
            Message::Ack {
                received: 1,
                durable: 2,
                applied: 3,
            },
            Message::SnapshotChunk(Bytes::from_static(b"xyz")),
            Message::SnapshotEnd,
        ];
        for m in &msgs {
            let frame = encode(m).freeze();
            let mut r = &frame[..];
            assert_eq!(&read(&mut r).await.expect("decodes"), m);
            // Flip one body byte: the CRC catches it.
            let mut bad = frame.to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 0x40;
            let mut r = &bad[..];
            assert!(matches!(read(&mut r).await, Err(WireError::BadCrc)));
            // Cut short: never a message.
            let mut r = &frame[..frame.len() - 1];
            assert!(read(&mut r).await.is_err());
        }
        let mut huge = Vec::new();
        huge.extend_from_slice(&(u32::MAX).to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        let mut r = &huge[..];
        assert!(matches!(read(&mut r).await, Err(WireError::TooLarge(_))));
        let err = encode(&Message::Error("nope".into())).freeze();
        let mut r = &err[..];
        assert!(matches!(read(&mut r).await, Err(WireError::Remote(e)) if e == "nope"));
    }
}
