//! On-disk framing of WAL segments and records.
//!
//! A segment file is named `<start offset, 20 digits>.wal` and holds
//! ```text
//! segment header (16 bytes): magic "RSTWAL01" | u64 LE start offset
//! record*:
//!   u32 LE crc32c over every following byte of the record (len..payload)
//!   u32 LE payload length
//!   u64 LE epoch
//!   u64 LE end offset   (logical log position just after this record)
//!   payload
//! ```
//! Offsets are logical byte positions in the whole log (like Redis's
//! `master_repl_offset`): a record's end offset is the previous record's end
//! plus [`encoded_len`] of its payload, so the file position of any logical
//! offset `o` in a segment starting at `s` is `SEGMENT_HEADER_LEN + (o - s)`.
//! Because every record carries its own end offset and that offset is
//! determined by its position, a record copied to the wrong place, a gap or a
//! stale tail is detected just like a bad CRC. The CRC covers the length, so a
//! flipped length bit cannot make us read a wrong payload.

/// Magic bytes at the start of every segment file (format version 1).
pub const SEGMENT_MAGIC: [u8; 8] = *b"RSTWAL01";
/// Size of the segment file header.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// Size of the per-record header (crc, len, epoch, end offset).
pub const RECORD_HEADER_LEN: u64 = 24;
/// Largest payload accepted. Bounds the memory a corrupt length can make
/// recovery or a reader allocate.
pub const MAX_PAYLOAD: usize = 256 << 20;

/// Encoded size of a record with a payload of `payload_len` bytes: header plus
/// payload. This is also how far the record advances the log offset.
pub fn encoded_len(payload_len: usize) -> u64 {
    RECORD_HEADER_LEN + payload_len as u64
}

/// File name of the segment that starts at logical offset `start`.
pub fn segment_file_name(start: u64) -> String {
    format!("{start:020}.wal")
}

/// Inverse of [`segment_file_name`]; anything else in the directory (temp
/// files, editors' leftovers) is not a segment.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn segment_header(start: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..].copy_from_slice(&start.to_le_bytes());
    header
}

/// Checks a complete segment header against the start offset in the file name.
pub(crate) fn check_segment_header(header: &[u8], start: u64) -> Result<(), String> {
    if header.len() < SEGMENT_HEADER_LEN as usize {
        return Err(format!(
            "segment header truncated to {} bytes",
            header.len()
        ));
    }
    if header[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".to_string());
    }
    let stored = read_u64(&header[8..16]);
    if stored != start {
        return Err(format!(
            "segment header says start offset {stored}, file name says {start}"
        ));
    }
    Ok(())
}

/// Appends the framed record to `buf`.
#[cfg(test)]
pub(crate) fn encode_record_into(buf: &mut Vec<u8>, epoch: u64, end_offset: u64, payload: &[u8]) {
    let wrote = encode_record_with(buf, epoch, end_offset, payload.len(), |b| {
        b.extend_from_slice(payload)
    });
    assert!(wrote.is_ok(), "copying a slice writes its length");
}

/// Appends a framed record whose payload `write` appends to `buf`; it must
/// write exactly `payload_len` bytes (checked: on a mismatch nothing is
/// left in `buf` and the count is returned as the error).
pub(crate) fn encode_record_with(
    buf: &mut Vec<u8>,
    epoch: u64,
    end_offset: u64,
    payload_len: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<(), usize> {
    let start = buf.len();
    buf.reserve(RECORD_HEADER_LEN as usize + payload_len);
    buf.extend_from_slice(&[0u8; 4]);
    // Callers check MAX_PAYLOAD first, so the length fits in u32.
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&epoch.to_le_bytes());
    buf.extend_from_slice(&end_offset.to_le_bytes());
    write(buf);
    let written = buf.len() - start - RECORD_HEADER_LEN as usize;
    if written != payload_len {
        buf.truncate(start);
        return Err(written);
    }
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Fixed-size record header as read from disk, not yet trusted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordHeader {
    pub crc: u32,
    pub len: u32,
    pub epoch: u64,
    pub end: u64,
}

impl RecordHeader {
    pub fn parse(bytes: &[u8]) -> RecordHeader {
        RecordHeader {
            crc: read_u32(&bytes[0..4]),
            len: read_u32(&bytes[4..8]),
            epoch: read_u64(&bytes[8..16]),
            end: read_u64(&bytes[16..24]),
        }
    }

    pub fn total_len(&self) -> u64 {
        encoded_len(self.len as usize)
    }

    /// Cheap plausibility checks that need no payload: the length is sane and
    /// the end offset matches where the record sits (`start` = logical offset
    /// of its first byte).
    pub fn check_position(&self, start: u64) -> Result<(), String> {
        if self.len as usize > MAX_PAYLOAD {
            return Err(format!(
                "record length {} exceeds the maximum {MAX_PAYLOAD}",
                self.len
            ));
        }
        let expected = start + self.total_len();
        if self.end != expected {
            return Err(format!(
                "record end offset {} does not match its position (expected {expected})",
                self.end
            ));
        }
        Ok(())
    }

    /// `header_bytes` are the 24 raw header bytes this was parsed from.
    pub fn check_crc(&self, header_bytes: &[u8], payload: &[u8]) -> Result<(), String> {
        let actual = crc32c::crc32c_append(crc32c::crc32c(&header_bytes[4..24]), payload);
        if actual != self.crc {
            return Err(format!(
                "CRC mismatch (stored {:#010x}, computed {actual:#010x})",
                self.crc
            ));
        }
        Ok(())
    }
}

/// A record decoded from a byte slice.
pub(crate) struct Decoded<'a> {
    pub epoch: u64,
    pub end: u64,
    pub payload: &'a [u8],
    /// Bytes consumed (header + payload).
    pub consumed: usize,
}

/// Decodes the record at the start of `buf`, whose first byte is at logical
/// offset `start`. The error says why the bytes are not a valid record.
pub(crate) fn decode_at(buf: &[u8], start: u64) -> Result<Decoded<'_>, String> {
    let header_len = RECORD_HEADER_LEN as usize;
    if buf.len() < header_len {
        return Err(format!(
            "incomplete record header ({} of {header_len} bytes)",
            buf.len()
        ));
    }
    let header = RecordHeader::parse(&buf[..header_len]);
    if header.len as usize > MAX_PAYLOAD {
        return Err(format!(
            "record length {} exceeds the maximum {MAX_PAYLOAD}",
            header.len
        ));
    }
    let total = header_len + header.len as usize;
    if buf.len() < total {
        return Err(format!(
            "incomplete record ({} of {total} bytes)",
            buf.len()
        ));
    }
    let payload = &buf[header_len..total];
    header.check_crc(&buf[..header_len], payload)?;
    header.check_position(start)?;
    Ok(Decoded {
        epoch: header.epoch,
        end: header.end,
        payload,
        consumed: total,
    })
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_every_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode_record_into(&mut buf, 7, 100 + encoded_len(5), b"hello");
        let decoded = decode_at(&buf, 100).expect("valid record");
        assert_eq!((decoded.epoch, decoded.payload), (7, &b"hello"[..]));
        assert_eq!(decoded.consumed as u64, encoded_len(5));
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_at(&damaged, 100).is_err(),
                "flip of bit {bit} undetected"
            );
        }
        assert!(decode_at(&buf, 101).is_err(), "misplaced record accepted");
    }

    #[test]
    fn a_payload_writer_that_breaks_its_announced_length_leaves_nothing_behind() {
        let mut buf = b"earlier".to_vec();
        let short = encode_record_with(&mut buf, 1, 200, 5, |b| b.extend_from_slice(b"hey"));
        assert_eq!(short, Err(3));
        let long = encode_record_with(&mut buf, 1, 200, 2, |b| b.extend_from_slice(b"hey"));
        assert_eq!(long, Err(3));
        assert_eq!(buf, b"earlier", "the buffer is as it was");
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal.tmp"),
            None
        );
    }
}
