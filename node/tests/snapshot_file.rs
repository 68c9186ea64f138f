//! Snapshot file format: round trip, corruption, streaming install, latest().
#![allow(clippy::unwrap_used)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rstore_node::snapshot::{
    self, SnapshotError, SnapshotMeta, SnapshotReader, SnapshotWriter, file_name,
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
        w.add(k, v, *e).unwrap();
    }
    w.finish(m).unwrap()
}

fn read_all(path: &Path) -> Result<(SnapshotMeta, Vec<Entry>), SnapshotError> {
    let mut r = SnapshotReader::open(path)?;
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        out.push(e);
    }
    // Stays finished.
    assert!(r.next_entry()?.is_none());
    Ok((r.meta().clone(), out))
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
    w.add(b"k", b"v", 0).unwrap();
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
        w.add(format!("key:{i:010}").as_bytes(), &value, 0).unwrap();
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
