//! Crash safety of the real binary: kill -9 under concurrent load keeps
//! every acknowledged write; a torn WAL tail is dropped; corruption in the
//! middle of the log refuses to start with an error naming file and offset;
//! SIGTERM shuts down cleanly.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redis::Commands;
use rstore_testkit::{DEADLINE, Node, wait_until};

const WRITERS: usize = 8;

/// What one writer thread saw acknowledged.
#[derive(Default)]
struct Acked {
    /// key -> value of every acknowledged SET.
    sets: HashMap<String, u64>,
    /// Highest value an acknowledged INCR of this writer's counter returned.
    counter: i64,
}

fn verify(node: &Node, acked: &[Acked], round: usize) {
    let mut c = node.client();
    for (t, a) in acked.iter().enumerate() {
        let keys: Vec<&String> = a.sets.keys().collect();
        for chunk in keys.chunks(500) {
            let values: Vec<Option<u64>> = c.mget(chunk).unwrap();
            for (k, v) in chunk.iter().zip(values) {
                assert_eq!(
                    v,
                    Some(a.sets[*k]),
                    "round {round}: acknowledged SET {k} lost after kill -9"
                );
            }
        }
        let counter: Option<i64> = c.get(format!("ctr_{t}")).unwrap();
        let counter = counter.unwrap_or(0);
        assert!(
            counter >= a.counter,
            "round {round}: counter ctr_{t} = {counter} < acknowledged {}",
            a.counter
        );
    }
}

#[test]
fn kill_9_under_load_keeps_every_acknowledged_write() {
    let mut node = Node::leader(&[]);
    let acked: Vec<Arc<Mutex<Acked>>> = (0..WRITERS)
        .map(|_| Arc::new(Mutex::new(Acked::default())))
        .collect();
    let mut total_acks = 0u64;
    for round in 0..5 {
        if round > 0 {
            node.restart();
            let snapshot: Vec<Acked> = acked
                .iter()
                .map(|a| {
                    let a = a.lock().unwrap();
                    Acked {
                        sets: a.sets.clone(),
                        counter: a.counter,
                    }
                })
                .collect();
            verify(&node, &snapshot, round);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let url = node.url();
        let threads: Vec<_> = (0..WRITERS)
            .map(|t| {
                let acked = acked[t].clone();
                let stop = stop.clone();
                let acks = acks.clone();
                let url = url.clone();
                std::thread::spawn(move || {
                    let mut c = rstore_testkit::connect(&url);
                    let mut n = round as u64 * 1_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("k_{t}_{n}");
                        if c.set::<_, _, ()>(&key, n).is_err() {
                            return;
                        }
                        acked.lock().unwrap().sets.insert(key, n);
                        let v: i64 = match c.incr(format!("ctr_{t}"), 1) {
                            Ok(v) => v,
                            Err(_) => return,
                        };
                        {
                            let mut a = acked.lock().unwrap();
                            a.counter = a.counter.max(v);
                        }
                        acks.fetch_add(2, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // Kill mid-load, once a few hundred writes have been acknowledged.
        let want = 400 + 100 * round as u64;
        wait_until(DEADLINE * 4, "writers to get acknowledgements", || {
            (acks.load(Ordering::Relaxed) >= want).then_some(())
        });
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        total_acks += acks.load(Ordering::Relaxed);
        eprintln!(
            "round {round}: killed after {} acknowledged writes",
            acks.load(Ordering::Relaxed)
        );
    }
    node.restart();
    let snapshot: Vec<Acked> = acked
        .iter()
        .map(|a| {
            let a = a.lock().unwrap();
            Acked {
                sets: a.sets.clone(),
                counter: a.counter,
            }
        })
        .collect();
    verify(&node, &snapshot, 5);
    assert!(total_acks >= 5 * 400);
}

fn segments(node: &Node) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(node.wal_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

fn write_keys(node: &Node, range: std::ops::Range<usize>) {
    let mut c = node.client();
    let value = "v".repeat(100);
    for i in range {
        let _: () = c.set(format!("key:{i}"), format!("{i}:{value}")).unwrap();
    }
}

fn present(node: &Node, n: usize) -> Vec<bool> {
    let mut c = node.client();
    let value = "v".repeat(100);
    (0..n)
        .map(|i| {
            let v: Option<String> = c.get(format!("key:{i}")).unwrap();
            if let Some(v) = &v {
                assert_eq!(*v, format!("{i}:{value}"), "key:{i} has a wrong value");
            }
            v.is_some()
        })
        .collect()
}

#[test]
fn torn_tail_is_dropped_on_restart() {
    let mut node = Node::leader(&["--wal-segment-bytes", "65536"]);
    let n = 1500;
    write_keys(&node, 0..n);
    node.kill9();
    let segs = segments(&node);
    assert!(segs.len() >= 2, "expected several segments, got {segs:?}");
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);

    node.restart();
    let got = present(&node, n);
    let missing: Vec<usize> = (0..n).filter(|i| !got[*i]).collect();
    assert!(
        missing.is_empty() || missing == vec![n - 1],
        "only the torn last record may be lost; missing {missing:?}"
    );
    // The node keeps working and appending after the cut.
    write_keys(&node, n..n + 10);
    node.kill9();
    node.restart();
    let got = present(&node, n + 10);
    assert!(got[n..].iter().all(|p| *p), "writes after the cut survive");
}

#[test]
fn corruption_in_an_older_segment_refuses_to_start() {
    let mut node = Node::leader(&["--wal-segment-bytes", "65536"]);
    write_keys(&node, 0..2000);
    node.kill9();
    let segs = segments(&node);
    assert!(segs.len() >= 3, "expected several segments, got {segs:?}");
    let victim = &segs[segs.len() / 2 - 1];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(victim, &bytes).unwrap();

    let failure = node
        .try_spawn()
        .expect_err("node started on a corrupt WAL (it must refuse)");
    assert!(!failure.status.success(), "{:?}", failure.status);
    eprintln!(
        "flipped byte {mid} of {}; node said:\n{}",
        victim.display(),
        failure.stderr
    );
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        failure.stderr.contains(&name),
        "error does not name the file {name}:\n{}",
        failure.stderr
    );
    assert!(
        failure.stderr.contains("corrupt"),
        "error does not say corrupt:\n{}",
        failure.stderr
    );
    // The offset is named: "at byte N", with N within a record of the flip.
    let offset: usize = failure
        .stderr
        .split("at byte ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
        })
        .unwrap_or_else(|| panic!("no 'at byte N' in:\n{}", failure.stderr));
    assert!(
        offset <= mid && mid - offset < 4096,
        "reported offset {offset} is not the record holding byte {mid}"
    );
    // Still refuses on a second try: nothing was "repaired" by truncation.
    let again = node.try_spawn().expect_err("second start must also refuse");
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read(victim).unwrap(),
        bytes,
        "the corrupt file was modified"
    );
}

#[test]
fn sigterm_exits_zero_and_keeps_everything() {
    let mut node = Node::leader(&["--fsync", "never"]);
    write_keys(&node, 0..500);
    {
        let mut c = node.client();
        for _ in 0..100 {
            let _: i64 = c.incr("ctr", 1).unwrap();
        }
    }
    let status = node.terminate();
    assert!(status.success(), "SIGTERM exit status {status:?}");
    assert!(
        node.stderr().contains("shut down cleanly"),
        "{}",
        node.stderr()
    );
    node.restart();
    assert!(present(&node, 500).iter().all(|p| *p));
    let mut c = node.client();
    let ctr: i64 = c.get("ctr").unwrap();
    assert_eq!(ctr, 100);
    let status = node.terminate();
    assert!(status.success(), "second SIGTERM exit status {status:?}");
}
