//! Snapshot file format: round trip, corruption, streaming install, latest(),
//! value kinds and format versions (files built by hand to the documented
//! layout, so the layout itself is pinned).
#![allow(clippy::unwrap_used)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rstore_node::keyspace::{Value, ValueKind};
use rstore_node::snapshot::{
    self, SnapshotEntry, SnapshotError, SnapshotMeta, SnapshotReader, SnapshotWriter, file_name,
};

type Entry = (Vec<u8>, Vec<u8>, u64);

fn entries(n: usize) -> Vec<Entry> {
    let mut out: Vec<Entry> = (0..n)
        .map(|i| {
            (
                format!("key:{i}").into_bytes(),
                vec![(i % 251) as u8; i % 300],
                if i % 3 == 0 {
                    0
                } else {
                    1_700_000_000_000 + i as u64
                },
            )
        })
        .collect();
    out.push((Vec::new(), Vec::new(), 0)); // empty key and value
    out.push((b"big".to_vec(), vec![7u8; 300 << 10], 5)); // larger than a block
    out
}

fn meta(end: u64) -> SnapshotMeta {
    SnapshotMeta {
        start_offset: end / 2,
        end_offset: end,
        epoch: 3,
        keys: 0,
        epoch_history: vec![(1, 0), (2, 100), (3, end / 3)],
    }
}

fn write(dir: &Path, es: &[Entry], m: &SnapshotMeta) -> (PathBuf, u64) {
    let mut w = SnapshotWriter::create(dir).unwrap();
    for (k, v, e) in es {
        w.add(k, Value::String(v), *e).unwrap();
    }
    w.finish(m).unwrap()
}

fn read_entries(path: &Path) -> Result<(SnapshotMeta, Vec<SnapshotEntry>), SnapshotError> {
    let mut r = SnapshotReader::open(path)?;
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        out.push(e);
    }
    // Stays finished.
    assert!(r.next_entry()?.is_none());
    Ok((r.meta().clone(), out))
}

/// Entries as `(key, string value, expiry)`; every one must be a string.
fn read_all(path: &Path) -> Result<(SnapshotMeta, Vec<Entry>), SnapshotError> {
    let (m, es) = read_entries(path)?;
    let out = es
        .into_iter()
        .map(|e| {
            assert_eq!(e.kind, ValueKind::String);
            (e.key, e.payload, e.expire_at_ms)
        })
        .collect();
    Ok((m, out))
}

#[test]
fn write_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let es = entries(5000);
    let (path, size) = write(dir.path(), &es, &meta(12345));
    assert_eq!(path, dir.path().join(file_name(12345)));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    let (m, got) = read_all(&path).unwrap();
    assert_eq!(got, es);
    // keys is the real count, the rest is stored as given.
    assert_eq!(
        m,
        SnapshotMeta {
            keys: es.len() as u64,
            ..meta(12345)
        }
    );
    // The loader sizes the keyspace from the count before reading.
    assert_eq!(
        SnapshotReader::open(&path).unwrap().key_count_hint(),
        es.len()
    );
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // An empty keyspace is a valid snapshot too.
    let (path, _) = write(dir.path(), &[], &meta(20000));
    let (m, got) = read_all(&path).unwrap();
    assert!(got.is_empty());
    assert_eq!(m.keys, 0);
}

#[test]
fn corruption_is_detected_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let es = entries(3000);
    let (path, size) = write(dir.path(), &es, &meta(999));
    let original = std::fs::read(&path).unwrap();

    // Flip one bit at many positions across the file: every flip is caught,
    // either at open (header, meta, footer) or while streaming, and never
    // yields entries that differ from what was written.
    let step = (size as usize / 997).max(1);
    for pos in (0..original.len())
        .step_by(step)
        .chain([original.len() - 1, 20, 30])
    {
        let mut damaged = original.clone();
        damaged[pos] ^= 0x04;
        std::fs::write(&path, &damaged).unwrap();
        match read_all(&path) {
            Ok(_) => panic!("flip at byte {pos} not detected"),
            Err(SnapshotError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(file, path, "{reason}");
                assert!(
                    offset <= pos as u64 || offset == 0 || pos as u64 >= size - 40,
                    "flip at {pos}, reported {offset}: {reason}"
                );
            }
            Err(other) => panic!("flip at {pos}: unexpected {other}"),
        }
    }
    // A block flip names that block's offset.
    let mut damaged = original.clone();
    damaged[16 + 12 + 100] ^= 1;
    std::fs::write(&path, &damaged).unwrap();
    let err = read_all(&path).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Corrupt { offset: 16, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(path.to_str().unwrap()));

    // Cut short anywhere: refused.
    for cut in [0, 10, 100, original.len() / 2, original.len() - 1] {
        std::fs::write(&path, &original[..cut]).unwrap();
        assert!(
            matches!(read_all(&path), Err(SnapshotError::Corrupt { .. })),
            "cut at {cut}"
        );
    }
    // A block duplicated (lengths all consistent): caught by the whole-file check.
    let block_len = u32::from_le_bytes(original[16..20].try_into().unwrap()) as usize;
    let block = original[16..16 + 12 + block_len].to_vec();
    let mut doubled = original[..16 + 12 + block_len].to_vec();
    doubled.extend_from_slice(&block);
    let blocks_end_old = u64::from_le_bytes(
        original[original.len() - 40..original.len() - 32]
            .try_into()
            .unwrap(),
    );
    doubled.extend_from_slice(&original[16 + 12 + block_len..]);
    let n = doubled.len();
    let new_end = blocks_end_old + block.len() as u64;
    doubled[n - 40..n - 32].copy_from_slice(&new_end.to_le_bytes());
    std::fs::write(&path, &doubled).unwrap();
    assert!(matches!(
        read_all(&path),
        Err(SnapshotError::Corrupt { .. })
    ));
}

#[test]
fn install_from_a_byte_stream() {
    let leader = tempfile::tempdir().unwrap();
    let follower = tempfile::tempdir().unwrap();
    let es = entries(2000);
    let (path, size) = write(leader.path(), &es, &meta(4242));
    let bytes = std::fs::read(&path).unwrap();

    // Small reads, like a network stream.
    struct Trickle(Cursor<Vec<u8>>);
    impl std::io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(777);
            self.0.read(&mut buf[..n])
        }
    }
    // The stream may carry more after the snapshot (the log tail).
    let mut stream = bytes.clone();
    stream.extend_from_slice(b"next frame");
    let installed = snapshot::install(follower.path(), Trickle(Cursor::new(stream)), size).unwrap();
    assert_eq!(installed, follower.path().join(file_name(4242)));
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        bytes,
        "byte-for-byte copy"
    );
    assert_eq!(read_all(&installed).unwrap().1, es);

    // Short stream: error, nothing published, no temp left.
    let other = tempfile::tempdir().unwrap();
    let err =
        snapshot::install(other.path(), Cursor::new(bytes[..1000].to_vec()), size).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Incomplete { got: 1000, .. }),
        "{err}"
    );
    // Corrupt stream: error, nothing published.
    let mut bad = bytes.clone();
    bad[5000] ^= 0xff;
    assert!(matches!(
        snapshot::install(other.path(), Cursor::new(bad), size),
        Err(SnapshotError::Corrupt { .. })
    ));
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    assert_eq!(snapshot::latest(other.path()).unwrap(), None);
    // Installing a newer one replaces the follower's older snapshot.
    let (newer, newer_size) = write(leader.path(), &es[..10], &meta(9000));
    let f = std::fs::File::open(&newer).unwrap();
    let p = snapshot::install(follower.path(), f, newer_size).unwrap();
    assert_eq!(snapshot::list(follower.path()).unwrap(), vec![(9000, p)]);
}

#[test]
fn latest_picks_newest_and_finish_removes_older() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(snapshot::latest(dir.path()).unwrap(), None);
    assert_eq!(snapshot::latest(&dir.path().join("missing")).unwrap(), None);
    // Stray files: an abandoned temp (unfinished writer), junk names.
    std::fs::write(dir.path().join(".snapshot-1-1.tmp"), b"partial").unwrap();
    std::fs::write(dir.path().join("snapshot-123.snap"), b"junk").unwrap();
    let (a, _) = write(dir.path(), &entries(10), &meta(100));
    assert_eq!(snapshot::latest(dir.path()).unwrap(), Some(a.clone()));
    let (b, _) = write(dir.path(), &entries(10), &meta(1000));
    assert_eq!(snapshot::latest(dir.path()).unwrap(), Some(b.clone()));
    assert!(!a.exists(), "older snapshot removed");
    // An unfinished writer (error/abandon) leaves nothing behind.
    let mut w = SnapshotWriter::create(dir.path()).unwrap();
    w.add(b"k", Value::String(b"v"), 0).unwrap();
    drop(w);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want = vec![
        ".snapshot-1-1.tmp".to_string(),
        "snapshot-123.snap".to_string(),
        file_name(1000),
    ];
    want.sort();
    assert_eq!(names, want);
    assert_eq!(snapshot::latest(dir.path()).unwrap(), Some(b));
}

/// Throughput check for the record, not a timed assertion:
/// `cargo test --release -p rstore-node --test snapshot_file -- --ignored --nocapture`
#[test]
#[ignore]
fn million_keys_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![b'v'; 100];
    let started = Instant::now();
    let mut w = SnapshotWriter::create(dir.path()).unwrap();
    for i in 0..1_000_000u64 {
        w.add(format!("key:{i:010}").as_bytes(), Value::String(&value), 0)
            .unwrap();
    }
    let (path, size) = w.finish(&meta(1)).unwrap();
    let wrote = started.elapsed();
    let started = Instant::now();
    let mut r = SnapshotReader::open(&path).unwrap();
    let mut n = 0;
    while r.next_entry().unwrap().is_some() {
        n += 1;
    }
    let read = started.elapsed();
    assert_eq!(n, 1_000_000);
    eprintln!(
        "1M keys x 100 B: {size} bytes, write+fsync {wrote:?} ({:.0} MB/s), verify+read {read:?} ({:.0} MB/s)",
        size as f64 / wrote.as_secs_f64() / 1e6,
        size as f64 / read.as_secs_f64() / 1e6
    );
}

// --- Value kinds and versions, against files built by hand. ---

/// A version 1 entry: no kind byte.
fn entry_v1(key: &[u8], value: &[u8], expire_at_ms: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&expire_at_ms.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// A version 2 entry: the kind byte, then the version 1 layout.
fn entry_v2(kind: u8, key: &[u8], value: &[u8], expire_at_ms: u64) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&entry_v1(key, value, expire_at_ms));
    out
}

/// A whole snapshot file as the format doc describes it: header, one block
/// per element of `blocks` (each a list of encoded entries), meta, footer,
/// with every CRC right.
fn build_file(version: u32, blocks: &[Vec<Vec<u8>>], m: &SnapshotMeta) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend_from_slice(b"RSTSNAP1");
    file.extend_from_slice(&version.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    let mut entries = 0u64;
    for block in blocks {
        let data = block.concat();
        let mut header = Vec::new();
        header.extend_from_slice(&(data.len() as u32).to_le_bytes());
        header.extend_from_slice(&(block.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header), &data);
        header.extend_from_slice(&crc.to_le_bytes());
        file.extend_from_slice(&header);
        file.extend_from_slice(&data);
        entries += block.len() as u64;
    }
    let blocks_end = file.len() as u64;
    let mut meta_bytes = Vec::new();
    for v in [m.start_offset, m.end_offset, m.epoch, entries] {
        meta_bytes.extend_from_slice(&v.to_le_bytes());
    }
    meta_bytes.extend_from_slice(&(m.epoch_history.len() as u32).to_le_bytes());
    for &(epoch, start) in &m.epoch_history {
        meta_bytes.extend_from_slice(&epoch.to_le_bytes());
        meta_bytes.extend_from_slice(&start.to_le_bytes());
    }
    file.extend_from_slice(&meta_bytes);
    file.extend_from_slice(&blocks_end.to_le_bytes());
    file.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    file.extend_from_slice(&crc32c::crc32c(&meta_bytes).to_le_bytes());
    file.extend_from_slice(&entries.to_le_bytes());
    let file_crc = crc32c::crc32c(&file);
    file.extend_from_slice(&file_crc.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(b"RSNAPEND");
    file
}

#[test]
fn a_version_2_file_round_trips_each_value_with_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let es = entries(2000);
    let (path, _) = write(dir.path(), &es, &meta(777));
    let mut r = SnapshotReader::open(&path).unwrap();
    assert_eq!(r.version(), 2);
    let mut n = 0;
    while let Some(e) = r.next_entry().unwrap() {
        let (k, v, exp) = &es[n];
        assert_eq!(e.kind, ValueKind::String);
        assert_eq!(
            (&e.key, e.value(), e.expire_at_ms),
            (k, Value::String(v), *exp)
        );
        n += 1;
    }
    assert_eq!(n, es.len());
}

#[test]
fn the_writer_lays_out_version_2_exactly_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let es: Vec<Entry> = vec![
        (b"a".to_vec(), b"1".to_vec(), 0),
        (b"key".to_vec(), b"value".to_vec(), 1_700_000_000_123),
        (Vec::new(), Vec::new(), 0),
    ];
    let (path, _) = write(dir.path(), &es, &meta(50));
    let by_hand = build_file(
        2,
        &[es.iter()
            .map(|(k, v, exp)| entry_v2(0, k, v, *exp))
            .collect()],
        &meta(50),
    );
    assert_eq!(std::fs::read(&path).unwrap(), by_hand);
}

#[test]
fn a_version_1_file_still_loads_with_every_value_a_string() {
    let dir = tempfile::tempdir().unwrap();
    let es = entries(300);
    // Old layout, several blocks of up to 100 entries.
    let blocks: Vec<Vec<Vec<u8>>> = es
        .chunks(100)
        .map(|chunk| {
            chunk
                .iter()
                .map(|(k, v, exp)| entry_v1(k, v, *exp))
                .collect()
        })
        .collect();
    let path = dir.path().join(file_name(600));
    std::fs::write(&path, build_file(1, &blocks, &meta(600))).unwrap();
    assert_eq!(SnapshotReader::open(&path).unwrap().version(), 1);
    let (m, got) = read_all(&path).unwrap();
    assert_eq!(got, es);
    assert_eq!(
        m,
        SnapshotMeta {
            keys: es.len() as u64,
            ..meta(600)
        }
    );
    // And a follower accepts it from a leader that still writes version 1.
    let follower = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let len = bytes.len() as u64;
    let installed = snapshot::install(follower.path(), Cursor::new(bytes), len).unwrap();
    assert_eq!(read_all(&installed).unwrap().1, es);
}

#[test]
fn an_unknown_value_kind_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let first = entry_v2(0, b"fine", b"string", 0);
    let second = entry_v2(7, b"odd", b"payload", 0);
    // Header (16), block header (12), then the first entry.
    let second_at = 16 + 12 + first.len() as u64;
    let path = dir.path().join(file_name(10));
    std::fs::write(&path, build_file(2, &[vec![first, second]], &meta(10))).unwrap();
    let mut r = SnapshotReader::open(&path).unwrap();
    assert_eq!(r.next_entry().unwrap().unwrap().key, b"fine");
    let err = r.next_entry().unwrap_err();
    match &err {
        SnapshotError::Corrupt {
            file,
            offset,
            reason,
        } => {
            assert_eq!(file, &path);
            assert_eq!(*offset, second_at, "{reason}");
            assert!(reason.contains("unknown value kind 7"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    let text = err.to_string();
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(text.contains(&format!("at byte {second_at}")), "{text}");
}

#[test]
fn an_unknown_version_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name(10));
    for version in [0u32, 3, u32::MAX] {
        let blocks = [vec![entry_v2(0, b"k", b"v", 0)]];
        std::fs::write(&path, build_file(version, &blocks, &meta(10))).unwrap();
        let err = SnapshotReader::open(&path).unwrap_err();
        match &err {
            SnapshotError::Corrupt {
                file,
                offset,
                reason,
            } => {
                assert_eq!(file, &path);
                assert_eq!(*offset, 8, "{reason}");
                assert!(
                    reason.contains(&format!("unsupported version {version}")),
                    "{reason}"
                );
            }
            other => panic!("version {version}: unexpected {other}"),
        }
    }
}
