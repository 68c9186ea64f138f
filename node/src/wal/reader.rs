//! Sequential reader for replication and catch-up.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::format::{RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, decode_at};
use super::storage::ReadFile;
use super::{Record, Shared, WalError};

/// Read-ahead size. Reads never go past `written`, so a record being written
/// concurrently is never half-read.
const READ_CHUNK: u64 = 256 << 10;

/// Reads records in order from a boundary offset. Keeps its file open and
/// buffers ahead, so sequential batches cost one read() per 256 KiB.
pub struct WalReader {
    shared: Arc<Shared>,
    /// End offset of the last record returned (= start of the next one).
    offset: u64,
    generation: u64,
    file: Option<Box<dyn ReadFile>>,
    file_seg_start: u64,
    file_path: PathBuf,
    /// Bytes of the log from logical `offset` on (after `consumed`).
    buf: Vec<u8>,
    consumed: usize,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("offset", &self.offset)
            .finish()
    }
}

impl WalReader {
    pub(crate) fn new(shared: Arc<Shared>, offset: u64, generation: u64) -> WalReader {
        WalReader {
            shared,
            offset,
            generation,
            file: None,
            file_seg_start: 0,
            file_path: PathBuf::new(),
            buf: Vec::new(),
            consumed: 0,
        }
    }

    /// The offset the next record starts at (end of the last one returned).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Up to about `max_bytes` of encoded records (always at least one if any
    /// is available); empty when caught up with `written`.
    pub fn next_batch(&mut self, max_bytes: usize) -> Result<Vec<Record>, WalError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        loop {
            let Some((seg_start, seg_end, seg_path)) = self.locate()? else {
                return Ok(out);
            };
            if self.file.is_none() || self.file_seg_start != seg_start {
                let mut file = self
                    .shared
                    .storage
                    .open_read(&seg_path)
                    .map_err(|e| WalError::io("open", &seg_path, e))?;
                file.seek(SeekFrom::Start(
                    SEGMENT_HEADER_LEN + (self.offset - seg_start),
                ))
                .map_err(|e| WalError::io("seek", &seg_path, e))?;
                self.file = Some(file);
                self.file_seg_start = seg_start;
                self.file_path = seg_path;
                self.buf.clear();
                self.consumed = 0;
            }
            while self.offset < seg_end {
                if bytes >= max_bytes && !out.is_empty() {
                    return Ok(out);
                }
                let available = &self.buf[self.consumed..];
                let header_len = RECORD_HEADER_LEN as usize;
                let needed = if available.len() >= header_len {
                    RecordHeader::parse(&available[..header_len]).total_len() as usize
                } else {
                    header_len
                };
                if available.len() >= needed {
                    let decoded =
                        decode_at(available, self.offset).map_err(|reason| self.corrupt(reason))?;
                    out.push(Record {
                        epoch: decoded.epoch,
                        offset: decoded.end,
                        payload: Bytes::copy_from_slice(decoded.payload),
                    });
                    bytes += decoded.consumed;
                    self.consumed += decoded.consumed;
                    self.offset = decoded.end;
                    continue;
                }
                self.fill(seg_end, needed)?;
            }
        }
    }

    /// Where to read next, from the current log state; `None` when caught up.
    fn locate(&mut self) -> Result<Option<(u64, u64, PathBuf)>, WalError> {
        let st = self.shared.state.lock();
        if st.generation != self.generation {
            let oldest_kept = st.rewrites.front().map_or(u64::MAX, |&(g, _)| g);
            let lowest = st
                .rewrites
                .iter()
                .filter(|&&(g, _)| g > self.generation)
                .map(|&(_, at)| at)
                .min();
            let forgotten = oldest_kept > self.generation + 1;
            match lowest {
                Some(at) if at < self.offset => {
                    return Err(WalError::ReaderInvalidated {
                        offset: self.offset,
                        rewritten_at: at,
                    });
                }
                _ if forgotten => {
                    return Err(WalError::ReaderInvalidated {
                        offset: self.offset,
                        rewritten_at: 0,
                    });
                }
                _ => {}
            }
            // Our position survived the rewrite, but buffered bytes past it
            // and the file handle may be stale.
            self.generation = st.generation;
            self.file = None;
            self.buf.clear();
            self.consumed = 0;
        }
        let first = st.first_offset();
        if self.offset < first {
            return Err(WalError::Truncated {
                requested: self.offset,
                first,
            });
        }
        if self.offset > st.appended {
            return Err(WalError::Beyond {
                requested: self.offset,
                last: st.appended,
            });
        }
        if self.offset >= st.written {
            return Ok(None);
        }
        let segment = &st.segments[st.segment_reading_at(self.offset)];
        Ok(Some((
            segment.start,
            segment.end.min(st.written),
            segment.path.clone(),
        )))
    }

    /// Reads more of the current segment, never past `limit` (a boundary at or
    /// before `written`).
    fn fill(&mut self, limit: u64, needed: usize) -> Result<(), WalError> {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        let buffered_end = self.offset + self.buf.len() as u64;
        if buffered_end >= limit {
            return Err(self.corrupt(format!(
                "record crosses the end of written data at offset {limit}"
            )));
        }
        let want = (limit - buffered_end).min(READ_CHUNK.max(needed as u64));
        let Some(file) = self.file.as_mut() else {
            return Err(WalError::Failed("reader has no open file".to_string()));
        };
        let old_len = self.buf.len();
        self.buf.resize(old_len + want as usize, 0);
        if let Err(e) = file.read_exact(&mut self.buf[old_len..]) {
            self.buf.truncate(old_len);
            return Err(self.corrupt(format!("segment shorter than the written log: {e}")));
        }
        Ok(())
    }

    fn corrupt(&self, reason: String) -> WalError {
        WalError::Corrupt {
            file: self.file_path.clone(),
            offset: SEGMENT_HEADER_LEN + (self.offset - self.file_seg_start),
            reason,
        }
    }
}
