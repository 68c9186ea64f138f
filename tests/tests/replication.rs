//! Replication against real node processes: catch-up, snapshot bootstrap,
//! retention fallback, bad input on the replication port, epochs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rstore_node::admin::{FollowerState, LinkStatus};
use rstore_testkit::{Node, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn info_field(node: &Node, section: &str, field: &str) -> String {
    let mut c = node.client();
    let text: String = redis::cmd("INFO").arg(section).query(&mut c).expect("info");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}:\n{text}"))
        .trim()
        .to_string()
}

fn load(node: &Node, prefix: &str, n: usize, value_len: usize) {
    let mut c = node.client();
    let value = "v".repeat(value_len);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET")
                .arg(format!("{prefix}:{i}"))
                .arg(&value)
                .ignore();
        }
        p.query::<()>(&mut c).expect("load");
    }
}

fn assert_converged(leader: &Node, follower: &Node) {
    let end = leader.status().offsets.appended;
    follower.wait_applied(end, LONG);
    wait_until(LONG, "digests to match", || {
        let (l, lo) = leader.digest();
        let (f, fo) = follower.digest();
        (lo == fo && l == f).then_some(())
    });
}

#[test]
fn follower_catches_up_and_resumes_from_its_offset_after_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let leader = Node::start_in(&tmp.path().join("l"), "leader", &["--role", "leader"]);
    let repl = leader.addrs.repl.to_string();
    let mut follower = Node::start_in(&tmp.path().join("f"), "f1", &["--follow", &repl]);
    load(&leader, "a", 2000, 20);
    assert_converged(&leader, &follower);

    // Followers serve reads and refuse writes.
    let mut fc = follower.client();
    let v: Option<String> = redis::cmd("GET").arg("a:7").query(&mut fc).expect("get");
    assert_eq!(v.as_deref(), Some("v".repeat(20).as_str()));
    let err = redis::cmd("SET")
        .arg("x")
        .arg("y")
        .query::<()>(&mut fc)
        .expect_err("readonly");
    assert!(err.to_string().contains("read only replica"), "{err}");
    assert_eq!(info_field(&follower, "replication", "role"), "slave");
    assert_eq!(
        info_field(&follower, "replication", "master_link_status"),
        "up"
    );

    follower.kill9();
    load(&leader, "b", 2000, 20);
    follower.restart();
    assert_converged(&leader, &follower);
    assert_eq!(
        info_field(&leader, "stats", "sync_full"),
        "0",
        "restart must not need a snapshot"
    );
    assert_eq!(info_field(&leader, "stats", "sync_partial_ok"), "2");
}

#[test]
fn new_follower_bootstraps_from_a_snapshot_while_writes_continue() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Small segments, frequent checkpoints, no extra retention: the log
    // soon starts after 0, so a new follower cannot stream from scratch.
    let flags = [
        "--role",
        "leader",
        "--wal-segment-bytes",
        "1048576",
        "--snapshot-every-bytes",
        "33554432",
        "--wal-retention-bytes",
        "0",
    ];
    let leader = Node::start_in(&tmp.path().join("l"), "leader", &flags);
    // DESIGN/issue scale is 1M keys of 100 bytes; RSTORE_E2E_KEYS lowers it
    // on slow machines.
    let keys = std::env::var("RSTORE_E2E_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    load(&leader, "k", keys, 100);
    wait_until(LONG, "the leader to trim its log", || {
        let first: u64 = info_field(&leader, "replication", "repl_backlog_first_byte_offset")
            .parse()
            .ok()?;
        (first > 1).then_some(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let mut c = leader.client();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _: () = redis::cmd("SET")
                    .arg(format!("live:{}", i % 5000))
                    .arg(i)
                    .query(&mut c)
                    .expect("live write");
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    let repl = leader.addrs.repl.to_string();
    let follower = Node::start_in(&tmp.path().join("f"), "f1", &["--follow", &repl]);
    wait_until(LONG, "the follower link to come up", || {
        (follower.status().link == Some(LinkStatus::Up)).then_some(())
    });
    let before = written.load(Ordering::Relaxed);
    wait_until(
        LONG,
        "writes to continue during and after the bootstrap",
        || (written.load(Ordering::Relaxed) > before + 200).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert_converged(&leader, &follower);
    assert_eq!(info_field(&leader, "stats", "sync_full"), "1");
    assert_eq!(follower.status().keys, leader.status().keys);
    let ready = follower.admin().readyz();
    assert!(ready.is_ok(), "a caught-up follower is ready: {ready:?}");
}

#[test]
fn follower_beyond_retention_falls_back_to_a_snapshot() {
    let tmp = tempfile::tempdir().expect("tmp");
    let flags = [
        "--role",
        "leader",
        "--wal-segment-bytes",
        "65536",
        "--snapshot-every-bytes",
        "131072",
        "--wal-retention-bytes",
        "65536",
    ];
    let leader = Node::start_in(&tmp.path().join("l"), "leader", &flags);
    let repl = leader.addrs.repl.to_string();
    let mut follower = Node::start_in(&tmp.path().join("f"), "f1", &["--follow", &repl]);
    load(&leader, "a", 1000, 20);
    assert_converged(&leader, &follower);
    // Converged: the follower's log ends where the leader's does now.
    let lagged_at = leader.status().offsets.appended;
    follower.kill9();
    load(&leader, "b", 40_000, 40);
    wait_until(LONG, "the leader's log to move past the follower", || {
        let first: u64 = info_field(&leader, "replication", "repl_backlog_first_byte_offset")
            .parse()
            .ok()?;
        (first > lagged_at + 1).then_some(())
    });
    follower.restart();
    assert_converged(&leader, &follower);
    assert_eq!(info_field(&leader, "stats", "sync_full"), "1");
}

#[test]
fn replication_port_rejects_garbage_wrong_password_and_stale_epochs() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().expect("tmp");
    let leader = Node::start_in(
        &tmp.path().join("l"),
        "leader",
        &["--role", "leader", "--requirepass", "s3cret"],
    );
    // Garbage and a truncated frame: the connection is dropped, the leader
    // keeps serving.
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0xff; 64][..],
        &[10, 0, 0, 0, 1, 2][..],
    ] {
        let mut s = std::net::TcpStream::connect(leader.addrs.repl).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        s.write_all(junk).expect("send");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    let mut lc = rstore_testkit::connect(&format!("redis://:s3cret@{}/", leader.addrs.data));
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut lc)
        .expect("leader still serves");

    // Wrong password: refused, nothing applied.
    let repl = leader.addrs.repl.to_string();
    let wrong = Node::start_in(
        &tmp.path().join("w"),
        "wrong",
        &["--follow", &repl, "--requirepass", "nope"],
    );
    wait_until(LONG, "the refusal to be logged", || {
        wrong.log().contains("WRONGPASS").then_some(())
    });
    assert_eq!(wrong.status().offsets.appended, 0);
    assert_ne!(wrong.status().link, Some(LinkStatus::Up));

    // A follower fenced at a newer epoch refuses the old leader's stream
    // (and the old leader refuses it): nothing applied.
    let stale = Node::start_in(&tmp.path().join("s"), "stale", &["--requirepass", "s3cret"]);
    stale.fence(5);
    stale.follow(&leader, 5);
    wait_until(LONG, "the epoch refusal to be logged", || {
        (stale.log().contains("epoch") && stale.log().contains("stale")).then_some(())
    });
    assert_eq!(stale.status().offsets.appended, 0);
    assert_eq!(stale.status().epoch, 5);
    assert!(
        leader.log().contains("refusing follower"),
        "leader log:\n{}",
        leader.log()
    );
}

#[test]
fn waitoffset_gives_read_your_writes_on_a_follower() {
    let tmp = tempfile::tempdir().expect("tmp");
    let leader = Node::start_in(&tmp.path().join("l"), "leader", &["--role", "leader"]);
    let repl = leader.addrs.repl.to_string();
    let follower = Node::start_in(&tmp.path().join("f"), "f1", &["--follow", &repl]);
    let mut lc = leader.client();
    let mut fc = follower.client();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg("ryw")
            .arg(i)
            .query(&mut lc)
            .expect("set");
        let offset: u64 = redis::cmd("REPLOFFSET").query(&mut lc).expect("reploffset");
        assert!(offset > 0);
        let applied: u64 = redis::cmd("WAITOFFSET")
            .arg(offset)
            .arg(10_000)
            .query(&mut fc)
            .expect("waitoffset");
        assert!(applied >= offset);
        let v: i64 = redis::cmd("GET").arg("ryw").query(&mut fc).expect("get");
        assert_eq!(v, i, "a follower at offset {applied} must show write {i}");
    }
    // A future offset times out with an error, never an old answer.
    let err = redis::cmd("WAITOFFSET")
        .arg(u64::MAX / 2)
        .arg(100)
        .query::<u64>(&mut fc)
        .expect_err("timeout");
    assert!(err.to_string().contains("TIMEOUT"), "{err}");
    // WAIT counts the follower.
    let n: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut lc)
        .expect("wait");
    assert_eq!(n, 1);
}

#[test]
fn leader_drops_a_silent_follower_and_takes_it_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let leader = Node::start_in(&tmp.path().join("l"), "leader", &["--role", "leader"]);
    let repl = leader.addrs.repl.to_string();
    let follower = Node::start_in(&tmp.path().join("f"), "f1", &["--follow", &repl]);
    // Registered and acknowledging (a follower still silent since its
    // handshake could be loading a snapshot: the leader gives those longer).
    wait_until(LONG, "the follower to register and ack", || {
        let st = leader.status();
        (st.followers.len() == 1 && st.followers[0].state == FollowerState::Streaming).then_some(())
    });
    // A paused (or partitioned) follower stops acking: the leader lets it
    // go instead of counting it forever.
    follower.pause();
    wait_until(LONG, "the leader to drop the silent follower", || {
        leader.status().followers.is_empty().then_some(())
    });
    follower.resume();
    load(&leader, "after", 100, 10);
    wait_until(LONG, "the follower to come back", || {
        (leader.status().followers.len() == 1).then_some(())
    });
    assert_converged(&leader, &follower);
}
