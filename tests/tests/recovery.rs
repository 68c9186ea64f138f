//! Restart = latest checkpoint + log tail, against a real process.

use std::time::Duration;

use rstore_testkit::{Node, wait_until};

#[test]
fn restart_loads_the_checkpoint_and_replays_the_tail() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut node = Node::start_in(
        &tmp.path().join("n"),
        "n",
        &[
            "--role",
            "leader",
            "--fsync",
            "always",
            "--wal-segment-bytes",
            "65536",
            "--snapshot-every-bytes",
            "262144",
            "--wal-retention-bytes",
            "0",
        ],
    );
    let mut c = node.client();
    for i in 0..5000 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("value-{i}-{}", "x".repeat(60)))
            .query(&mut c)
            .expect("set");
    }
    let _: () = redis::cmd("SET")
        .arg("ttl")
        .arg("v")
        .arg("EX")
        .arg(1000)
        .query(&mut c)
        .expect("set");
    let _: () = redis::cmd("DEL").arg("k1").query(&mut c).expect("del");
    // A checkpoint has run and the log before it is gone.
    wait_until(Duration::from_secs(60), "a checkpoint", || {
        let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).ok()?;
        let ck: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("rstore_last_checkpoint_offset:"))?
            .trim()
            .parse()
            .ok()?;
        (ck > 0).then_some(())
    });
    let first_segment = std::fs::read_dir(tmp.path().join("n").join("wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .min()
        .expect("a segment");
    assert_ne!(
        first_segment,
        format!("{:020}.wal", 0),
        "the log before the checkpoint is removed"
    );
    // A tail after the checkpoint.
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("tail{i}"))
            .arg(i)
            .query(&mut c)
            .expect("set");
    }
    let before = node.digest();
    node.kill9();
    node.restart();
    assert_eq!(
        node.digest(),
        before,
        "checkpoint + tail must rebuild the same state at the same offset"
    );
    let mut c = node.client();
    let v: Option<String> = redis::cmd("GET").arg("k1").query(&mut c).expect("get");
    assert_eq!(v, None);
    let ttl: i64 = redis::cmd("TTL").arg("ttl").query(&mut c).expect("ttl");
    assert!(ttl > 900, "expiry survives: {ttl}");
    let t: i64 = redis::cmd("GET").arg("tail99").query(&mut c).expect("get");
    assert_eq!(t, 99);
}
