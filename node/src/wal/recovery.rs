//! Opening the log: scan every segment, replay, cut a torn tail, refuse on
//! corruption.
//!
//! Torn tail versus corruption: a crash can only tear the end of the *last*
//! segment (segments are sealed with fsync before the next is created). So an
//! invalid record is a torn tail when it is in the last segment and no valid
//! record follows it anywhere in that file; records are self-locating (their
//! end offset must match their position), so "a valid record follows" is a
//! precise test, not a guess. Everything else names the file and byte.

use std::collections::VecDeque;
use std::fmt::Display;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;

use super::format::{
    RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, check_segment_header, decode_at,
    parse_segment_file_name, segment_file_name, segment_header,
};
use super::storage::Storage;
use super::{Record, Segment, WalError, WalOptions};

pub(crate) struct Recovered {
    pub segments: VecDeque<Segment>,
    pub end: u64,
    pub last_epoch: u64,
}

pub(crate) fn recover<E: Display>(
    storage: &dyn Storage,
    opts: &WalOptions,
    start_offset: u64,
    replay: &mut impl FnMut(&Record) -> Result<(), E>,
) -> Result<Recovered, WalError> {
    let dir = &opts.dir;
    storage
        .create_dir_all(dir)
        .map_err(|e| WalError::io("create directory", dir, e))?;
    let mut starts: Vec<u64> = storage
        .list(dir)
        .map_err(|e| WalError::io("list", dir, e))?
        .iter()
        .filter_map(|name| parse_segment_file_name(name))
        .collect();
    starts.sort_unstable();
    let Some(&first) = starts.first() else {
        return fresh(storage, dir, start_offset);
    };
    if first > start_offset {
        return Err(WalError::Corrupt {
            file: dir.join(segment_file_name(first)),
            offset: 0,
            reason: format!(
                "log starts at offset {first}, after the checkpoint's start {start_offset}: \
                 the records in between are missing"
            ),
        });
    }

    let mut segments = VecDeque::with_capacity(starts.len());
    let mut end = first;
    let mut last_epoch = 0;
    for (i, &start) in starts.iter().enumerate() {
        let is_last = i + 1 == starts.len();
        let path = dir.join(segment_file_name(start));
        let corrupt = |offset: usize, reason: String| WalError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason,
        };
        if start != end {
            return Err(corrupt(
                0,
                format!("gap: segment starts at offset {start}, the previous one ends at {end}"),
            ));
        }
        let data = read_all(storage, &path)?;
        let mut segment = Segment::new(dir, start);
        if data.len() < SEGMENT_HEADER_LEN as usize {
            if !is_last {
                return Err(corrupt(
                    0,
                    format!("segment header truncated to {} bytes", data.len()),
                ));
            }
            // Crash between creating the file and syncing its header.
            tracing::warn!(file = %path.display(), "WAL segment header torn; rewriting it");
            rewrite_header(storage, dir, &path, start)?;
            segments.push_back(segment);
            continue;
        }
        check_segment_header(&data, start).map_err(|reason| corrupt(0, reason))?;

        let data = Bytes::from(data);
        let mut pos = SEGMENT_HEADER_LEN as usize;
        let mut offset = start;
        while pos < data.len() {
            match decode_at(&data[pos..], offset) {
                Ok(decoded) => {
                    let record_end = decoded.end;
                    let epoch = decoded.epoch;
                    let consumed = decoded.consumed;
                    if record_end > start_offset {
                        let header = RECORD_HEADER_LEN as usize;
                        let record = Record {
                            epoch,
                            offset: record_end,
                            payload: data.slice(pos + header..pos + consumed),
                        };
                        replay(&record).map_err(|e| WalError::Replay {
                            offset: record_end,
                            reason: e.to_string(),
                        })?;
                    }
                    last_epoch = epoch;
                    segment.note_record(record_end);
                    offset = record_end;
                    pos += consumed;
                }
                Err(reason) => {
                    if is_last && !valid_record_after(&data, pos + 1, start) {
                        tracing::warn!(
                            file = %path.display(),
                            at = pos,
                            dropped_bytes = data.len() - pos,
                            %reason,
                            "WAL torn tail truncated"
                        );
                        storage
                            .truncate(&path, pos as u64)
                            .map_err(|e| WalError::io("truncate", &path, e))?;
                        break;
                    }
                    return Err(corrupt(pos, reason));
                }
            }
        }
        end = offset;
        segments.push_back(segment);
    }

    if end < start_offset {
        // Everything here is already covered by the checkpoint (e.g. a reset
        // interrupted by a crash after the snapshot was installed).
        tracing::warn!(
            log_end = end,
            start_offset,
            "WAL ends before the checkpoint start; discarding it and starting fresh"
        );
        while let Some(segment) = segments.pop_back() {
            storage
                .remove(&segment.path)
                .map_err(|e| WalError::io("remove", &segment.path, e))?;
        }
        return fresh(storage, dir, start_offset);
    }
    Ok(Recovered {
        segments,
        end,
        last_epoch,
    })
}

/// Is there a complete, valid record starting anywhere at or after byte
/// `from` of this segment's contents?
fn valid_record_after(data: &[u8], from: usize, seg_start: u64) -> bool {
    let header_len = RECORD_HEADER_LEN as usize;
    let first = from.max(SEGMENT_HEADER_LEN as usize);
    if data.len() < header_len {
        return false;
    }
    (first..=data.len() - header_len).any(|pos| {
        let header = RecordHeader::parse(&data[pos..pos + header_len]);
        let logical = seg_start + (pos as u64 - SEGMENT_HEADER_LEN);
        // Position check first: it is cheap and rejects almost everything.
        header.check_position(logical).is_ok()
            && pos + header.total_len() as usize <= data.len()
            && header
                .check_crc(
                    &data[pos..pos + header_len],
                    &data[pos + header_len..pos + header.total_len() as usize],
                )
                .is_ok()
    })
}

fn read_all(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>, WalError> {
    let mut data = Vec::new();
    storage
        .open_read(path)
        .and_then(|mut file| file.read_to_end(&mut data))
        .map_err(|e| WalError::io("read", path, e))?;
    Ok(data)
}

fn rewrite_header(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    start: u64,
) -> Result<(), WalError> {
    let mut file = storage
        .create(path)
        .map_err(|e| WalError::io("create", path, e))?;
    file.append(&segment_header(start))
        .map_err(|e| WalError::io("write header", path, e))?;
    file.sync().map_err(|e| WalError::io("fsync", path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))
}

fn fresh(storage: &dyn Storage, dir: &Path, start: u64) -> Result<Recovered, WalError> {
    let path = dir.join(segment_file_name(start));
    rewrite_header(storage, dir, &path, start)?;
    Ok(Recovered {
        segments: VecDeque::from([Segment::new(dir, start)]),
        end: start,
        last_epoch: 0,
    })
}
