//! Failover safety against real processes: no acknowledged write lost in
//! semi-sync/sync, fencing of a deposed leader, divergence on rejoin,
//! lossless visibility. The test drives the steps the operator takes:
//! fence followers at epoch+1, promote the highest (epoch, offset),
//! repoint the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rstore_node::admin::LinkStatus;
use rstore_testkit::{Node, wait_until};

const LONG: Duration = Duration::from_secs(60);

struct Cluster {
    _tmp: tempfile::TempDir,
    leader: Node,
    followers: Vec<Node>,
}

fn cluster(mode_flags: &[&str], followers: usize) -> Cluster {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut lflags = vec!["--role", "leader"];
    lflags.extend_from_slice(mode_flags);
    let leader = Node::start_in(&tmp.path().join("n0"), "n0", &lflags);
    let repl = leader.addrs.repl.to_string();
    let fs = (1..=followers)
        .map(|i| {
            let mut flags = vec!["--follow", repl.as_str()];
            flags.extend_from_slice(mode_flags);
            Node::start_in(&tmp.path().join(format!("n{i}")), &format!("n{i}"), &flags)
        })
        .collect::<Vec<_>>();
    for f in &fs {
        wait_until(LONG, "followers to connect", || {
            (f.status().link == Some(LinkStatus::Up)).then_some(())
        });
    }
    Cluster {
        _tmp: tmp,
        leader,
        followers: fs,
    }
}

/// Stop flag, acknowledged-write counter, and the writer threads (each
/// returns its last acknowledged value per key).
type Writers = (
    Arc<AtomicBool>,
    Arc<AtomicUsize>,
    Vec<std::thread::JoinHandle<HashMap<String, u64>>>,
);

/// Writers that record every acknowledged write until the first error.
fn start_writers(node: &Node, threads: usize) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let handles = (0..threads)
        .map(|t| {
            let (stop, acked) = (stop.clone(), acked.clone());
            let mut c = node.client();
            std::thread::spawn(move || {
                let mut mine = HashMap::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{t}:{}", i % 200);
                    match redis::cmd("SET").arg(&key).arg(i).query::<()>(&mut c) {
                        Ok(()) => {
                            mine.insert(key, i);
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                    i += 1;
                }
                mine
            })
        })
        .collect();
    (stop, acked, handles)
}

/// The operator's failover: fence all followers at `epoch`, promote the
/// highest (last epoch, last offset), repoint the rest. Returns the index
/// of the new leader.
fn fail_over(followers: &[Node], epoch: u64) -> usize {
    let fenced: Vec<(u64, u64)> = followers
        .iter()
        .map(|f| {
            let r = f.fence(epoch);
            (r.last_epoch, r.last_offset)
        })
        .collect();
    let best = (0..followers.len())
        .max_by_key(|&i| fenced[i])
        .expect("a follower");
    followers[best].promote(epoch);
    for (i, f) in followers.iter().enumerate() {
        if i != best {
            f.follow(&followers[best], epoch);
        }
    }
    best
}

fn check_no_acked_write_lost(mode: &[&str]) {
    for round in 0..2 {
        let mut c = cluster(mode, 2);
        let (stop, acked, writers) = start_writers(&c.leader, 4);
        wait_until(LONG, "some acknowledged writes", || {
            (acked.load(Ordering::Relaxed) > 300).then_some(())
        });
        c.leader.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut expected: HashMap<String, u64> = HashMap::new();
        for w in writers {
            expected.extend(w.join().expect("writer"));
        }
        let best = fail_over(&c.followers, 2);
        let new_leader = &c.followers[best];
        let mut conn = new_leader.client();
        let mut missing = Vec::new();
        for (key, acked_value) in &expected {
            let v: Option<u64> = redis::cmd("GET").arg(key).query(&mut conn).expect("get");
            // Later unacknowledged writes may also be there, never older.
            if v.is_none_or(|v| v < *acked_value) {
                missing.push((key.clone(), *acked_value, v));
            }
        }
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged writes lost or older after failover: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        // The new leader takes writes; the other follower converges on it.
        let _: () = redis::cmd("SET")
            .arg("after")
            .arg("failover")
            .query(&mut conn)
            .expect("write to new leader");
        let other = &c.followers[1 - best];
        other.wait_applied(new_leader.status().offsets.appended, LONG);
        assert_eq!(other.digest(), new_leader.digest());
        assert_eq!(new_leader.status().epoch, 2);
    }
}

#[test]
fn semi_sync_failover_loses_no_acknowledged_write() {
    check_no_acked_write_lost(&[
        "--replication-mode",
        "semi-sync",
        "--sync-replicas",
        "1",
        "--fsync",
        "batch",
    ]);
}

#[test]
fn sync_failover_loses_no_acknowledged_write() {
    check_no_acked_write_lost(&["--replication-mode", "sync", "--fsync", "batch"]);
}

#[test]
fn async_failover_loss_window_is_measured() {
    let mut c = cluster(
        &["--replication-mode", "async", "--fsync", "interval:1000"],
        2,
    );
    let (stop, acked, writers) = start_writers(&c.leader, 4);
    wait_until(LONG, "some acknowledged writes", || {
        (acked.load(Ordering::Relaxed) > 2000).then_some(())
    });
    c.leader.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut expected: HashMap<String, u64> = HashMap::new();
    for w in writers {
        expected.extend(w.join().expect("writer"));
    }
    let best = fail_over(&c.followers, 2);
    let mut conn = c.followers[best].client();
    let lost = expected
        .iter()
        .filter(|(k, v)| {
            let got: Option<u64> = redis::cmd("GET").arg(k).query(&mut conn).expect("get");
            got.is_none_or(|g| g < **v)
        })
        .count();
    // Async acknowledges before followers have the write: a window exists.
    // It is reported, not asserted to be zero.
    println!(
        "async failover: {lost} of {} latest acknowledged keys lost or older",
        expected.len()
    );
    let other = &c.followers[1 - best];
    other.wait_applied(c.followers[best].status().offsets.appended, LONG);
    assert_eq!(other.digest(), c.followers[best].digest());
}

#[test]
fn deposed_leader_cannot_acknowledge_after_fencing_and_rejoins_by_truncating() {
    let mode = [
        "--replication-mode",
        "semi-sync",
        "--sync-replicas",
        "1",
        "--sync-timeout",
        "1500",
    ];
    let c = cluster(&mode, 2);
    let mut old = c.leader.client();
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut old)
        .expect("write");
    // The leader is paused (a GC pause, a partition) while it is replaced.
    c.leader.pause();
    let best = fail_over(&c.followers, 2);
    let new_leader = &c.followers[best];
    let mut nc = new_leader.client();
    let _: () = redis::cmd("SET")
        .arg("new")
        .arg("epoch2")
        .query(&mut nc)
        .expect("new leader write");
    c.leader.resume();
    // The deposed leader cannot get a write acknowledged: its followers are
    // fenced, so the write times out as indeterminate (never OK) ...
    let err = redis::cmd("SET")
        .arg("lost")
        .arg("x")
        .query::<()>(&mut old)
        .expect_err("a deposed leader must not acknowledge");
    let text = err.to_string();
    assert!(
        text.contains("TIMEOUT") || text.contains("indeterminate"),
        "{text}"
    );
    // ... and no reader sees it (lossless visibility).
    let mut reader = c.leader.client();
    let seen: Option<String> = redis::cmd("GET")
        .arg("lost")
        .query(&mut reader)
        .expect("get");
    assert_eq!(seen, None);

    // The operator repoints it: it truncates the unacknowledged tail and
    // converges on the new leader.
    c.leader.fence(2);
    c.leader.follow(new_leader, 2);
    c.leader
        .wait_applied(new_leader.status().offsets.appended, LONG);
    wait_until(LONG, "the old leader to converge", || {
        (c.leader.digest() == new_leader.digest()).then_some(())
    });
    let mut rc = c.leader.client();
    let lost: Option<String> = redis::cmd("GET").arg("lost").query(&mut rc).expect("get");
    assert_eq!(lost, None, "the diverged write must be gone");
    let new: Option<String> = redis::cmd("GET").arg("new").query(&mut rc).expect("get");
    assert_eq!(new.as_deref(), Some("epoch2"));
    assert!(
        c.leader.log().contains("diverged"),
        "log:\n{}",
        c.leader.log()
    );
}

#[test]
fn async_old_leader_with_a_diverged_tail_truncates_on_rejoin() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut a = Node::start_in(&tmp.path().join("a"), "a", &["--role", "leader"]);
    let arepl = a.addrs.repl.to_string();
    let mut b = Node::start_in(&tmp.path().join("b"), "b", &["--follow", &arepl]);
    let mut ac = a.client();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut ac)
            .expect("set");
    }
    b.wait_applied(a.status().offsets.appended, LONG);
    // The follower goes away; the leader writes a tail only it has.
    b.kill9();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("tail{i}"))
            .arg(i)
            .query(&mut ac)
            .expect("set");
    }
    let _: () = redis::cmd("SET")
        .arg("k1")
        .arg("changed-on-a")
        .query(&mut ac)
        .expect("set");
    a.kill9();
    // b becomes leader at epoch 2 and takes different writes.
    b.restart();
    b.fence(2);
    b.promote(2);
    let mut bc = b.client();
    for i in 0..30 {
        let _: () = redis::cmd("SET")
            .arg(format!("b{i}"))
            .arg(i)
            .query(&mut bc)
            .expect("set");
    }
    // a restarts (as leader before: it comes back idle, never leading),
    // then follows b and must cut exactly its diverged tail.
    a.drop_flag("--role", true);
    a.restart();
    assert_ne!(
        a.status().role,
        rstore_node::admin::Role::Leader,
        "a restarted leader never self-promotes"
    );
    a.follow(&b, 2);
    a.wait_applied(b.status().offsets.appended, LONG);
    wait_until(LONG, "a to converge on b", || {
        (a.digest() == b.digest()).then_some(())
    });
    let mut ac = a.client();
    let tail: Option<String> = redis::cmd("GET").arg("tail0").query(&mut ac).expect("get");
    assert_eq!(tail, None);
    let k1: String = redis::cmd("GET").arg("k1").query(&mut ac).expect("get");
    assert_eq!(k1, "1");
}

#[test]
fn semi_sync_writes_are_invisible_until_committed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let leader = Node::start_in(
        &tmp.path().join("l"),
        "l",
        &[
            "--role",
            "leader",
            "--replication-mode",
            "semi-sync",
            "--sync-replicas",
            "1",
            "--sync-timeout",
            "20000",
        ],
    );
    let mut writer = leader.client();
    let mut reader = leader.client();
    // No follower yet: the write waits for an ack.
    let pending = std::thread::spawn(move || {
        let r: redis::RedisResult<()> = redis::cmd("SET").arg("k").arg("v").query(&mut writer);
        (r, writer)
    });
    wait_until(LONG, "the write to be logged", || {
        (leader.status().offsets.appended > 0).then_some(())
    });
    let seen: Option<String> = redis::cmd("GET").arg("k").query(&mut reader).expect("get");
    assert_eq!(seen, None, "an uncommitted write must not be visible");
    assert_eq!(leader.status().offsets.committed, 0);
    // A follower arrives and acknowledges: the write commits.
    let repl = leader.addrs.repl.to_string();
    let _f = Node::start_in(
        &tmp.path().join("f"),
        "f",
        &[
            "--follow",
            &repl,
            "--replication-mode",
            "semi-sync",
            "--sync-replicas",
            "1",
        ],
    );
    let (r, mut writer) = pending.join().expect("writer");
    r.expect("acknowledged once the follower has it");
    let seen: Option<String> = redis::cmd("GET").arg("k").query(&mut reader).expect("get");
    assert_eq!(seen.as_deref(), Some("v"));
    // A connection reads its own writes in a pipeline.
    let (_, v): ((), String) = redis::pipe()
        .cmd("SET")
        .arg("k2")
        .arg("v2")
        .cmd("GET")
        .arg("k2")
        .query(&mut writer)
        .expect("pipeline");
    assert_eq!(v, "v2");
}

#[test]
fn degrade_mode_is_explicit_and_visible() {
    let tmp = tempfile::tempdir().expect("tmp");
    let leader = Node::start_in(
        &tmp.path().join("l"),
        "l",
        &[
            "--role",
            "leader",
            "--replication-mode",
            "semi-sync",
            "--sync-timeout",
            "300",
            "--on-sync-timeout",
            "degrade",
        ],
    );
    let mut c = leader.client();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut c)
        .expect("degraded write succeeds");
    assert!(leader.status().degraded);
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut c)
        .expect("info");
    assert!(info.contains("rstore_degraded:1"), "{info}");
    let metrics = leader.admin().metrics().expect("GET /metrics");
    assert!(
        metrics.contains("rstore_replication_degraded 1"),
        "{metrics}"
    );
    // A follower catches up: back to semi-sync.
    let repl = leader.addrs.repl.to_string();
    let _f = Node::start_in(
        &tmp.path().join("f"),
        "f",
        &["--follow", &repl, "--replication-mode", "semi-sync"],
    );
    let _: () = redis::cmd("SET")
        .arg("k2")
        .arg("v")
        .query(&mut c)
        .expect("write");
    wait_until(LONG, "degraded mode to end", || {
        (!leader.status().degraded).then_some(())
    });
}
