//! Keyspace checkpoints (snapshots): one file that is both the local
//! checkpoint and what the leader ships, byte for byte, to a new follower.
//!
//! A snapshot is "fuzzy": entries were copied in chunks while the log advanced
//! from `start_offset` to `end_offset`; loading it and replaying the log
//! records that end after `start_offset` gives a consistent state because
//! records are idempotent. This module only stores what it is given.
//!
//! File format, version 2 (all integers little endian):
//! ```text
//! header  (16): magic "RSTSNAP1" | u32 version = 2 | u32 reserved
//! block*      : u32 data_len | u32 entries | u32 crc32c(data_len, entries, data) | data
//!               data = entry*: u8 kind | u32 key_len | u32 value_len | u64 expire_at_ms
//!                              | key | value
//! meta        : u64 start | u64 end | u64 epoch | u64 keys | u32 n | n x (u64 epoch, u64 start)
//! footer  (40): u64 blocks_end | u32 meta_len | u32 meta_crc | u64 entries
//!               | u32 file_crc (crc32c of every byte before it) | u32 reserved | magic "RSNAPEND"
//! ```
//! `kind` is the value's type, numbered as [`ValueKind`] numbers it (the
//! numbers never change): 0 = string, whose `value` is the string's bytes.
//! A kind this build does not know is refused as corruption (at the entry's
//! offset) rather than skipped, since dropping keys silently would be worse.
//!
//! Versions: the writer always writes the newest; the reader accepts
//! - 1: entries have no `kind` byte (`u32 key_len | u32 value_len |
//!   u64 expire_at_ms | key | value`) and every value is a string;
//! - 2: as above.
//!
//! Any other version is refused at byte 8. A node that only knows version 1
//! refuses version 2 files, so a follower must be upgraded before the
//! leader that ships it snapshots.
//!
//! Blocks of ~64 KiB give early, localized errors (file and offset) while
//! streaming; the footer's whole-file CRC and entry count catch anything the
//! blocks cannot (a dropped or duplicated block, a cut file). The meta sits
//! at the end because its end offset is known only when the copy finishes;
//! readers find it through the fixed-size footer.
//!
//! Durability: written to a temp file, fsynced, renamed to
//! `snapshot-<end offset, 20 digits>.snap`, directory fsynced; only then are
//! older snapshots removed, so a crash leaves either the old or the new one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::keyspace::{Value, ValueKind};

const HEADER_MAGIC: [u8; 8] = *b"RSTSNAP1";
const FOOTER_MAGIC: [u8; 8] = *b"RSNAPEND";
/// The version written.
const VERSION: u32 = 2;
/// The oldest version read: entries without a kind byte, all strings.
const VERSION_STRINGS_ONLY: u32 = 1;
const HEADER_LEN: u64 = 16;
const FOOTER_LEN: u64 = 40;
const BLOCK_HEADER_LEN: usize = 12;
/// kind, key_len, value_len, expire_at_ms.
const ENTRY_HEADER_LEN: usize = 1 + 16;
/// Version 1: key_len, value_len, expire_at_ms.
const ENTRY_HEADER_LEN_V1: usize = 16;
/// Entries are grouped until a block reaches this size.
const BLOCK_TARGET: usize = 64 << 10;
/// Largest block a reader accepts: bounds what a corrupt length can allocate.
/// (A single entry bigger than this cannot be stored.)
const MAX_BLOCK: usize = 1 << 30;
/// Buffered I/O so a million small entries cost a few hundred syscalls.
const IO_BUFFER: usize = 1 << 20;
/// An epoch history longer than this is certainly corrupt.
const MAX_HISTORY: u32 = 1 << 20;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Log offset when the copy started: replay records ending after it.
    pub start_offset: u64,
    /// Log offset when the copy finished: the state is consistent once the
    /// log is replayed at least to here.
    pub end_offset: u64,
    pub epoch: u64,
    /// Number of entries (set by [`SnapshotWriter::finish`] from the actual
    /// count of [`SnapshotWriter::add`] calls).
    pub keys: u64,
    /// `(epoch, start offset)` pairs, oldest first.
    pub epoch_history: Vec<(u64, u64)>,
}

/// One entry read back from a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub key: Vec<u8>,
    pub kind: ValueKind,
    /// The value's bytes as stored (for a string, the string).
    pub payload: Vec<u8>,
    /// Absolute expiry in Unix milliseconds; 0 = none.
    pub expire_at_ms: u64,
}

impl SnapshotEntry {
    pub fn value(&self) -> Value<'_> {
        Value::from_parts(self.kind, &self.payload)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O error: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot corrupt: {} at byte {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("snapshot entry too large: {0} bytes")]
    TooLarge(usize),
    #[error("snapshot stream ended after {got} of {expected} bytes")]
    Incomplete { expected: u64, got: u64 },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// File name of the snapshot whose copy ended at `end_offset`.
pub fn file_name(end_offset: u64) -> String {
    format!("snapshot-{end_offset:020}.snap")
}

/// Inverse of [`file_name`]; temp files and anything else give `None`.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Completed snapshots in `dir`, sorted by end offset.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(end) = entry.file_name().to_str().and_then(parse_file_name) {
            out.push((end, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest completed snapshot in `dir` (temp files are ignored).
pub fn latest(dir: &Path) -> Result<Option<PathBuf>, SnapshotError> {
    Ok(list(dir)?.pop().map(|(_, path)| path))
}

fn temp_path(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".snapshot-{}-{n}.tmp", std::process::id()))
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Removes completed snapshots older than `keep_end` (best effort: a failure
/// only costs disk space, so it is logged, not returned).
fn remove_older(dir: &Path, keep_end: u64) {
    match list(dir) {
        Ok(all) => {
            for (end, path) in all {
                if end < keep_end
                    && let Err(e) = std::fs::remove_file(&path)
                {
                    tracing::warn!(path = %path.display(), error = %e, "removing old snapshot");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing snapshots for cleanup"),
    }
}

/// A writer that counts and checksums everything it passes on.
struct CrcWriter {
    inner: BufWriter<File>,
    crc: u32,
    written: u64,
}

impl CrcWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Streams entries into a temp file; [`SnapshotWriter::finish`] publishes it.
/// Dropping an unfinished writer deletes the temp file.
pub struct SnapshotWriter {
    dir: PathBuf,
    temp: PathBuf,
    out: Option<CrcWriter>,
    block: Vec<u8>,
    block_entries: u32,
    entries: u64,
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("temp", &self.temp)
            .field("entries", &self.entries)
            .finish()
    }
}

impl SnapshotWriter {
    pub fn create(dir: &Path) -> Result<SnapshotWriter, SnapshotError> {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let temp = temp_path(dir);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io_err("create", &temp))?;
        let mut out = CrcWriter {
            inner: BufWriter::with_capacity(IO_BUFFER, file),
            crc: 0,
            written: 0,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&HEADER_MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out.write(&header).map_err(io_err("write", &temp))?;
        Ok(SnapshotWriter {
            dir: dir.to_path_buf(),
            temp,
            out: Some(out),
            block: Vec::with_capacity(BLOCK_TARGET + 1024),
            block_entries: 0,
            entries: 0,
        })
    }

    pub fn add(
        &mut self,
        key: &[u8],
        value: Value<'_>,
        expire_at_ms: u64,
    ) -> Result<(), SnapshotError> {
        let payload = value.payload();
        let size = ENTRY_HEADER_LEN + key.len() + payload.len();
        if size > MAX_BLOCK {
            return Err(SnapshotError::TooLarge(size));
        }
        if !self.block.is_empty() && self.block.len() + size > BLOCK_TARGET {
            self.flush_block()?;
        }
        self.block.push(value.kind().as_byte());
        // Both fit in u32: size <= MAX_BLOCK < 2^32.
        self.block
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.block
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.block.extend_from_slice(&expire_at_ms.to_le_bytes());
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(payload);
        self.block_entries += 1;
        self.entries += 1;
        Ok(())
    }

    fn out(&mut self) -> Result<&mut CrcWriter, SnapshotError> {
        self.out.as_mut().ok_or_else(|| SnapshotError::Io {
            op: "write",
            path: self.temp.clone(),
            source: io::Error::other("snapshot writer already finished"),
        })
    }

    fn flush_block(&mut self) -> Result<(), SnapshotError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut header = [0u8; BLOCK_HEADER_LEN];
        header[..4].copy_from_slice(&(self.block.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&self.block_entries.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..8]), &self.block);
        header[8..12].copy_from_slice(&crc.to_le_bytes());
        let temp = self.temp.clone();
        let block = std::mem::take(&mut self.block);
        let out = self.out()?;
        out.write(&header)
            .and_then(|()| out.write(&block))
            .map_err(io_err("write", &temp))?;
        self.block = block;
        self.block.clear();
        self.block_entries = 0;
        Ok(())
    }

    /// Writes meta and footer, fsyncs, renames to
    /// `snapshot-<end_offset>.snap`, fsyncs the directory and removes older
    /// snapshots. Returns the path and the file size.
    pub fn finish(mut self, meta: &SnapshotMeta) -> Result<(PathBuf, u64), SnapshotError> {
        self.flush_block()?;
        let entries = self.entries;
        let temp = self.temp.clone();
        let mut out = self.out.take().ok_or_else(|| SnapshotError::Io {
            op: "finish",
            path: temp.clone(),
            source: io::Error::other("snapshot writer already finished"),
        })?;
        let meta = SnapshotMeta {
            keys: entries,
            ..meta.clone()
        };
        let meta_bytes = encode_meta(&meta);
        let blocks_end = out.written;
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[..8].copy_from_slice(&blocks_end.to_le_bytes());
        footer[8..12].copy_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        footer[12..16].copy_from_slice(&crc32c::crc32c(&meta_bytes).to_le_bytes());
        footer[16..24].copy_from_slice(&entries.to_le_bytes());
        let file_crc =
            crc32c::crc32c_append(crc32c::crc32c_append(out.crc, &meta_bytes), &footer[..24]);
        footer[24..28].copy_from_slice(&file_crc.to_le_bytes());
        footer[32..40].copy_from_slice(&FOOTER_MAGIC);
        out.write(&meta_bytes)
            .and_then(|()| out.write(&footer))
            .map_err(io_err("write", &temp))?;
        let size = out.written;
        let file = out
            .inner
            .into_inner()
            .map_err(|e| io_err("write", &temp)(e.into_error()))?;
        file.sync_all().map_err(io_err("fsync", &temp))?;
        drop(file);
        let path = self.dir.join(file_name(meta.end_offset));
        std::fs::rename(&temp, &path).map_err(io_err("rename", &temp))?;
        sync_dir(&self.dir)?;
        remove_older(&self.dir, meta.end_offset);
        tracing::debug!(path = %path.display(), size, entries, "snapshot written");
        Ok((path, size))
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // Unfinished (error or abandoned): don't leave the temp file behind.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn encode_meta(meta: &SnapshotMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(36 + 16 * meta.epoch_history.len());
    for v in [meta.start_offset, meta.end_offset, meta.epoch, meta.keys] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(meta.epoch_history.len() as u32).to_le_bytes());
    for &(epoch, start) in &meta.epoch_history {
        out.extend_from_slice(&epoch.to_le_bytes());
        out.extend_from_slice(&start.to_le_bytes());
    }
    out
}

fn decode_meta(bytes: &[u8]) -> Result<SnapshotMeta, String> {
    let u64_at = |at: usize| -> Result<u64, String> {
        bytes
            .get(at..at + 8)
            .map(|b| {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(b);
                u64::from_le_bytes(raw)
            })
            .ok_or_else(|| "meta truncated".to_string())
    };
    let n = bytes
        .get(32..36)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "meta truncated".to_string())?;
    if n > MAX_HISTORY || bytes.len() != 36 + 16 * n as usize {
        return Err(format!(
            "meta length {} does not fit {n} epochs",
            bytes.len()
        ));
    }
    let epoch_history = (0..n as usize)
        .map(|i| Ok((u64_at(36 + 16 * i)?, u64_at(44 + 16 * i)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(SnapshotMeta {
        start_offset: u64_at(0)?,
        end_offset: u64_at(8)?,
        epoch: u64_at(16)?,
        keys: u64_at(24)?,
        epoch_history,
    })
}

/// Streams the entries of a snapshot file, verifying each block's CRC as it
/// goes and the whole-file CRC and entry count at the end: `next_entry`
/// returns `Ok(None)` only once the entire file has been verified.
pub struct SnapshotReader {
    path: PathBuf,
    file: BufReader<File>,
    /// Format version from the header: decides the entry layout.
    version: u32,
    meta: SnapshotMeta,
    /// Meta bytes and the first 24 footer bytes: the tail of the whole-file
    /// CRC, read once at open.
    tail: Vec<u8>,
    file_crc: u32,
    expected_entries: u64,
    blocks_end: u64,
    pos: u64,
    crc: u32,
    block: Vec<u8>,
    block_pos: usize,
    block_left: u32,
    block_start: u64,
    entries: u64,
    done: bool,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish()
    }
}

impl SnapshotReader {
    /// Opens a snapshot and reads its meta (checked by its own CRC).
    pub fn open(path: &Path) -> Result<SnapshotReader, SnapshotError> {
        let corrupt = |offset: u64, reason: String| SnapshotError::Corrupt {
            file: path.to_path_buf(),
            offset,
            reason,
        };
        let mut file = File::open(path).map_err(io_err("open", path))?;
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        if len < HEADER_LEN + FOOTER_LEN {
            return Err(corrupt(0, format!("file too short ({len} bytes)")));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact(&mut header).map_err(io_err("read", path))?;
        if header[..8] != HEADER_MAGIC {
            return Err(corrupt(0, "bad magic: not an rstore snapshot".to_string()));
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if !(VERSION_STRINGS_ONLY..=VERSION).contains(&version) {
            return Err(corrupt(
                8,
                format!(
                    "unsupported version {version} (this build reads {VERSION_STRINGS_ONLY} to {VERSION})"
                ),
            ));
        }
        let footer_at = len - FOOTER_LEN;
        let mut footer = [0u8; FOOTER_LEN as usize];
        file.seek(SeekFrom::Start(footer_at))
            .and_then(|_| file.read_exact(&mut footer))
            .map_err(io_err("read", path))?;
        if footer[32..40] != FOOTER_MAGIC {
            return Err(corrupt(
                footer_at,
                "bad footer magic (file cut short?)".to_string(),
            ));
        }
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&footer[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        let u32_at = |at: usize| {
            u32::from_le_bytes([footer[at], footer[at + 1], footer[at + 2], footer[at + 3]])
        };
        let blocks_end = u64_at(0);
        let meta_len = u64::from(u32_at(8));
        if blocks_end < HEADER_LEN || blocks_end.checked_add(meta_len) != Some(footer_at) {
            return Err(corrupt(
                footer_at,
                format!(
                    "footer layout inconsistent (blocks end {blocks_end}, meta {meta_len} bytes)"
                ),
            ));
        }
        let mut tail = vec![0u8; meta_len as usize];
        file.seek(SeekFrom::Start(blocks_end))
            .and_then(|_| file.read_exact(&mut tail))
            .map_err(io_err("read", path))?;
        if crc32c::crc32c(&tail) != u32_at(12) {
            return Err(corrupt(blocks_end, "meta CRC mismatch".to_string()));
        }
        let meta = decode_meta(&tail).map_err(|reason| corrupt(blocks_end, reason))?;
        tail.extend_from_slice(&footer[..24]);
        file.seek(SeekFrom::Start(HEADER_LEN))
            .map_err(io_err("seek", path))?;
        Ok(SnapshotReader {
            path: path.to_path_buf(),
            file: BufReader::with_capacity(IO_BUFFER, file),
            version,
            meta,
            tail,
            file_crc: u32_at(24),
            expected_entries: u64_at(16),
            blocks_end,
            pos: HEADER_LEN,
            crc: crc32c::crc32c(&header),
            block: Vec::new(),
            block_pos: 0,
            block_left: 0,
            block_start: HEADER_LEN,
            entries: 0,
            done: false,
        })
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// How many keys the file says it holds, for sizing the keyspace
    /// before loading; bounded by what its blocks can hold (an entry takes
    /// at least 16 bytes), so a count that passed its CRC but lies cannot
    /// make the loader reserve more memory than the file could fill.
    pub fn key_count_hint(&self) -> usize {
        let room = self.blocks_end.saturating_sub(HEADER_LEN) / 16;
        let keys = self.meta.keys.min(self.expected_entries).min(room);
        usize::try_from(keys).unwrap_or(usize::MAX)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's format version (1 or 2).
    pub fn version(&self) -> u32 {
        self.version
    }

    fn corrupt(&self, offset: u64, reason: String) -> SnapshotError {
        SnapshotError::Corrupt {
            file: self.path.clone(),
            offset,
            reason,
        }
    }

    /// The next entry, or `None` after the last one once the whole file has
    /// been verified.
    pub fn next_entry(&mut self) -> Result<Option<SnapshotEntry>, SnapshotError> {
        if self.done {
            return Ok(None);
        }
        while self.block_left == 0 {
            if self.block_pos != self.block.len() {
                return Err(self.corrupt(
                    self.block_start,
                    "trailing bytes after block entries".to_string(),
                ));
            }
            if self.pos == self.blocks_end {
                return self.finish().map(|()| None);
            }
            self.read_block()?;
        }
        let start = self.block_pos;
        let entry_offset = self.block_start + (BLOCK_HEADER_LEN + start) as u64;
        let rest = &self.block[start..];
        let header_len = if self.version == VERSION_STRINGS_ONLY {
            ENTRY_HEADER_LEN_V1
        } else {
            ENTRY_HEADER_LEN
        };
        if rest.len() < header_len {
            return Err(self.corrupt(entry_offset, "entry header past block end".to_string()));
        }
        // Version 1 has no kind byte: every value is a string.
        let (kind, fixed) = if self.version == VERSION_STRINGS_ONLY {
            (ValueKind::String, rest)
        } else {
            match ValueKind::from_byte(rest[0]) {
                Some(kind) => (kind, &rest[1..]),
                None => {
                    return Err(self.corrupt(
                        entry_offset,
                        format!(
                            "unknown value kind {} (written by a newer version?)",
                            rest[0]
                        ),
                    ));
                }
            }
        };
        let key_len = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]) as usize;
        let value_len = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]) as usize;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&fixed[8..16]);
        let expire_at_ms = u64::from_le_bytes(raw);
        let body = &rest[header_len..];
        if key_len.saturating_add(value_len) > body.len() {
            return Err(self.corrupt(entry_offset, "entry past block end".to_string()));
        }
        let key = body[..key_len].to_vec();
        let payload = body[key_len..key_len + value_len].to_vec();
        self.block_pos = start + header_len + key_len + value_len;
        self.block_left -= 1;
        self.entries += 1;
        Ok(Some(SnapshotEntry {
            key,
            kind,
            payload,
            expire_at_ms,
        }))
    }

    fn read_block(&mut self) -> Result<(), SnapshotError> {
        self.block_start = self.pos;
        let mut header = [0u8; BLOCK_HEADER_LEN];
        if self.blocks_end - self.pos < BLOCK_HEADER_LEN as u64 {
            return Err(self.corrupt(self.pos, "block header past end of blocks".to_string()));
        }
        self.file
            .read_exact(&mut header)
            .map_err(io_err("read", &self.path))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let count = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let stored = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let available = self.blocks_end - self.pos - BLOCK_HEADER_LEN as u64;
        if len > MAX_BLOCK || len as u64 > available {
            return Err(self.corrupt(self.pos, format!("block length {len} past end of blocks")));
        }
        self.block.resize(len, 0);
        self.file
            .read_exact(&mut self.block)
            .map_err(io_err("read", &self.path))?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..8]), &self.block);
        if crc != stored {
            return Err(self.corrupt(self.pos, "block CRC mismatch".to_string()));
        }
        if count == 0 {
            return Err(self.corrupt(self.pos, "empty block".to_string()));
        }
        self.crc = crc32c::crc32c_append(crc32c::crc32c_append(self.crc, &header), &self.block);
        self.pos += (BLOCK_HEADER_LEN + len) as u64;
        self.block_pos = 0;
        self.block_left = count;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SnapshotError> {
        let crc = crc32c::crc32c_append(self.crc, &self.tail);
        if crc != self.file_crc {
            return Err(self.corrupt(0, "whole-file CRC mismatch".to_string()));
        }
        if self.entries != self.expected_entries {
            return Err(self.corrupt(
                self.blocks_end,
                format!(
                    "{} entries, footer says {}",
                    self.entries, self.expected_entries
                ),
            ));
        }
        self.done = true;
        Ok(())
    }
}

/// Follower side: streams exactly `expected_len` bytes from the leader into
/// a temp file, fsyncs, verifies the whole file, then publishes it as a
/// snapshot (rename + directory fsync) and removes older ones. On any error
/// the temp file is removed and nothing is published.
pub fn install(dir: &Path, src: impl Read, expected_len: u64) -> Result<PathBuf, SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let temp = temp_path(dir);
    let result = install_into(dir, &temp, src, expected_len);
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn install_into(
    dir: &Path,
    temp: &Path,
    src: impl Read,
    expected_len: u64,
) -> Result<PathBuf, SnapshotError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(io_err("create", temp))?;
    let mut out = BufWriter::with_capacity(IO_BUFFER, file);
    let mut limited = BufReader::with_capacity(IO_BUFFER, src.take(expected_len));
    let got = io::copy(&mut limited, &mut out).map_err(io_err("receive into", temp))?;
    if got != expected_len {
        return Err(SnapshotError::Incomplete {
            expected: expected_len,
            got,
        });
    }
    let file = out
        .into_inner()
        .map_err(|e| io_err("write", temp)(e.into_error()))?;
    file.sync_all().map_err(io_err("fsync", temp))?;
    drop(file);
    let mut reader = SnapshotReader::open(temp)?;
    while reader.next_entry()?.is_some() {}
    let end = reader.meta().end_offset;
    drop(reader);
    let path = dir.join(file_name(end));
    std::fs::rename(temp, &path).map_err(io_err("rename", temp))?;
    sync_dir(dir)?;
    remove_older(dir, end);
    Ok(path)
}
