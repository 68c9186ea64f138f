//! Planned switchover against real processes: a fenced leader accepts no
//! write and acknowledges none, yet keeps streaming the records it already
//! has to the followers already connected, so the operator can wait for its
//! target to hold the whole log before promoting it (zero loss). New
//! followers are refused while it is fenced.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use rstore_node::admin::LinkStatus;
use rstore_testkit::{DEADLINE, Node, Reply, err_text, wait_until};

/// The leader drops a follower it has not heard from for 5 s; pauses stay
/// well below that so the stream under test survives them.
const MAX_PAUSE: Duration = Duration::from_secs(4);

/// A follower of `leader` with these extra flags, once its link is up.
fn follower(leader: &Node, node_id: &str, extra: &[&str]) -> Node {
    let repl = leader.addrs.repl.to_string();
    let mut args = vec!["--follow", repl.as_str(), "--fsync", "never"];
    args.extend_from_slice(extra);
    let node = Node::start_named(node_id, &args);
    wait_until(DEADLINE, "the follower link to come up", || {
        (node.status().link == Some(LinkStatus::Up)).then_some(())
    });
    node
}

/// `POST /promote` and its answer (the node's status). Raw HTTP: the
/// admin client does not return the answer's body.
fn promote(node: &Node, epoch: u64) -> serde_json::Value {
    let body = format!(r#"{{"epoch": {epoch}}}"#);
    let r = node.http("POST", "/promote", Some(&body));
    assert_eq!(r.status, 200, "POST /promote {body}: {}", r.body);
    r.json()
}

/// The keyspace digest. Raw HTTP: the admin client does not ask for it
/// (`GET /status?digest=1`).
fn digest(node: &Node) -> String {
    let r = node.http("GET", "/status?digest=1", None);
    r.json()["digest"].as_str().unwrap().to_string()
}

fn get(node: &Node, key: &str) -> Reply {
    node.raw().cmd_str(&["GET", key])
}

#[test]
fn a_fenced_leader_streams_its_whole_log_to_connected_followers_and_refuses_new_ones() {
    let leader = Node::start_named("leader", &["--role", "leader", "--fsync", "never"]);
    let target = follower(&leader, "target", &[]);
    let mut c = leader.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    let end = leader.status().offsets.appended;
    wait_until(DEADLINE, "the target to catch up", || {
        (target.status().offsets.appended == end).then_some(())
    });

    // The target stalls while the leader takes a backlog larger than the
    // socket buffers between them: at the fence most of it exists only in
    // the leader's log.
    target.pause();
    let paused_at = Instant::now();
    let value = vec![b'v'; 64 << 10];
    for chunk in 0..4 {
        let mut pipe = redis::pipe();
        for i in 0..64 {
            pipe.cmd("SET")
                .arg(format!("big{}", chunk * 64 + i))
                .arg(&value)
                .ignore();
        }
        pipe.query::<()>(&mut c).unwrap();
    }
    let fence = leader.fence(2);
    assert_eq!(fence.epoch, 2, "{fence:?}");
    assert_eq!(fence.last_epoch, 1, "{fence:?}");
    let last = fence.last_offset;
    let st = leader.status();
    assert_eq!(st.offsets.appended, last, "{st:?}");
    assert!(st.fenced, "{st:?}");
    let acked = st.followers[0].received;
    assert!(
        last - acked > 12 << 20,
        "the target was not behind at the fence (acked {acked} of {last}): the test proves nothing"
    );

    // The fenced leader takes no write.
    let mut raw = leader.raw();
    match raw.cmd_str(&["SET", "after-fence", "1"]) {
        Reply::Error(e) => assert!(e.starts_with("FENCED"), "{e}"),
        other => panic!("write on a fenced leader: {other:?}"),
    }

    target.resume();
    let paused = paused_at.elapsed();
    assert!(
        paused < MAX_PAUSE,
        "the target was paused {paused:?}: the leader may have dropped it (machine too slow)"
    );
    // Everything the leader had at the fence reaches the target, nothing more.
    wait_until(
        DEADLINE,
        "the target to hold the fenced leader's log",
        || (target.status().offsets.appended >= last).then_some(()),
    );
    let ts = target.status();
    assert_eq!(ts.offsets.appended, last, "{ts:?}");
    assert_eq!(ts.last_log_epoch, 1, "{ts:?}");
    assert_eq!(
        ts.link,
        Some(LinkStatus::Up),
        "heartbeats keep the link up: {ts:?}"
    );
    wait_until(DEADLINE, "the leader to see the target's ack", || {
        (leader.status().followers.first().map(|f| f.received) == Some(last)).then_some(())
    });
    wait_until(DEADLINE, "the target to apply the log", || {
        (target.status().offsets.applied == last).then_some(())
    });
    assert_eq!(digest(&target), digest(&leader));
    assert_eq!(leader.status().offsets.appended, last, "nothing new logged");

    // A follower that arrives now is refused: the fenced leader only
    // finishes what it started.
    let late = Node::start_named(
        "late",
        &[
            "--follow",
            &leader.addrs.repl.to_string(),
            "--fsync",
            "never",
        ],
    );
    wait_until(
        DEADLINE,
        "the fenced leader to refuse a new follower",
        || late.stderr().contains("NOTLEADER").then_some(()),
    );
    let ls = late.status();
    assert_eq!(ls.offsets.appended, 0, "{ls:?}");
    assert_ne!(ls.link, Some(LinkStatus::Up), "{ls:?}");
    let st = leader.status();
    assert_eq!(st.followers.len(), 1, "{st:?}");
    assert_eq!(st.followers[0].node_id, "target", "{st:?}");

    // The switchover completes: promote the target, repoint the old leader.
    // Nothing diverged, so nothing is cut.
    let promoted = promote(&target, 2);
    assert_eq!(promoted["role"], "leader", "{promoted}");
    leader.follow(&target, 2);
    let mut tc = target.client();
    let _: () = redis::cmd("SET")
        .arg("after-switch")
        .arg("1")
        .query(&mut tc)
        .unwrap();
    let end = target.status().offsets.appended;
    wait_until(DEADLINE, "the old leader to follow the new one", || {
        (leader.status().offsets.applied == end).then_some(())
    });
    assert_eq!(get(&leader, "after-switch"), Reply::Bulk(b"1".to_vec()));
    assert_eq!(get(&target, "big255"), Reply::Bulk(value));
    assert_eq!(digest(&target), digest(&leader));
    assert!(
        !leader.stderr().contains("truncating"),
        "the old leader cut its log:\n{}",
        leader.stderr()
    );
}

#[test]
fn a_write_waiting_when_its_leader_is_fenced_is_indeterminate_and_stays_invisible_there() {
    let semi_sync = [
        "--replication-mode",
        "semi-sync",
        "--sync-replicas",
        "1",
        "--sync-timeout",
        "20000",
    ];
    let mut flags = vec!["--role", "leader", "--fsync", "never"];
    flags.extend_from_slice(&semi_sync);
    let leader = Node::start_named("leader", &flags);
    let target = follower(&leader, "target", &semi_sync);
    let mut c = leader.client();
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let committed = leader.status().offsets.committed;

    // The target stalls, so the next write waits for its ack ...
    target.pause();
    let paused_at = Instant::now();
    let writer = std::thread::spawn(move || {
        redis::cmd("SET")
            .arg("pending")
            .arg("x")
            .query::<()>(&mut c)
            .map_err(|e| err_text(&e))
    });
    wait_until(DEADLINE, "the write to be logged", || {
        (leader.status().offsets.appended > committed).then_some(())
    });
    // ... and the fence answers it: indeterminate, never OK.
    let fence = leader.fence(2);
    let last = fence.last_offset;
    assert!(last > committed, "{fence:?}");
    let answer = writer.join().unwrap();
    let err = answer.expect_err("a fenced leader acknowledged a write");
    assert!(
        err.starts_with("FENCED") && err.contains("indeterminate"),
        "{err}"
    );

    target.resume();
    let paused = paused_at.elapsed();
    assert!(
        paused < MAX_PAUSE,
        "the target was paused {paused:?}: the leader may have dropped it (machine too slow)"
    );
    // The record still reaches the target, which acknowledges it to the
    // fenced leader ...
    wait_until(
        DEADLINE,
        "the fenced leader to see the target's ack",
        || (leader.status().followers.first().map(|f| f.received) == Some(last)).then_some(()),
    );
    // ... but the fenced leader's commit stays where the fence left it:
    // the write becomes visible neither there nor on the target.
    let st = leader.status();
    assert_eq!(st.offsets.committed, committed, "{st:?}");
    assert_eq!(get(&leader, "pending"), Reply::Nil);
    // `appended` is the end of the local log, received records included
    // before they are committed or applied.
    let ts = target.status();
    assert_eq!(ts.offsets.appended, last, "{ts:?}");
    assert!(ts.offsets.applied < last, "{ts:?}");
    assert!(ts.offsets.committed <= committed, "{ts:?}");
    assert_eq!(ts.last_log_epoch, 1, "{ts:?}");
    assert_eq!(get(&target, "pending"), Reply::Nil);

    // Promoted, the target makes its whole log history: an indeterminate
    // write may land, and here it does.
    let promoted = promote(&target, 2);
    assert_eq!(promoted["last_log_epoch"], 2, "{promoted}");
    assert_eq!(get(&target, "pending"), Reply::Bulk(b"x".to_vec()));
    assert_eq!(get(&target, "before"), Reply::Bulk(b"1".to_vec()));
}

#[test]
fn a_fenced_leader_promoted_again_makes_its_followers_reconnect_and_count() {
    let semi_sync = [
        "--replication-mode",
        "semi-sync",
        "--sync-replicas",
        "1",
        "--sync-timeout",
        "5000",
    ];
    let mut flags = vec!["--role", "leader", "--fsync", "never"];
    flags.extend_from_slice(&semi_sync);
    let leader = Node::start_named("leader", &flags);
    let target = follower(&leader, "target", &semi_sync);
    let mut c = leader.client();
    let _: () = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query(&mut c)
        .unwrap();

    // The operator calls the switchover off: the fenced leader leads again,
    // at a new epoch. Its promotion forgets the follower table, so the
    // stream opened under epoch 1 ends and the follower handshakes again;
    // otherwise its acks would count for nothing and writes would time out.
    leader.fence(2);
    let promoted = promote(&leader, 3);
    assert_eq!(promoted["role"], "leader", "{promoted}");
    wait_until(DEADLINE, "the follower to be registered again", || {
        let st = leader.status();
        (st.followers.len() == 1).then_some(())
    });
    let mut c = leader.client();
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("2")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("semi-sync write after the re-promotion: {e}"));
    let end = leader.status().offsets.appended;
    wait_until(
        DEADLINE,
        "the follower to apply the new epoch's write",
        || (target.status().offsets.applied == end).then_some(()),
    );
    assert_eq!(target.status().last_log_epoch, 3);
    assert_eq!(get(&target, "after"), Reply::Bulk(b"2".to_vec()));
}

/// SIGTERM of a leader (a pod deletion, a rolling update) hands over: it
/// fences itself and exits only once a follower holds its whole log, so
/// even writes acknowledged in async mode survive the failover that
/// follows.
#[test]
fn a_leader_stopped_with_sigterm_waits_until_a_follower_has_its_whole_log() {
    let mut leader = Node::start_named("leader", &["--role", "leader", "--fsync", "never"]);
    let target = follower(&leader, "target", &[]);
    let mut c = leader.client();
    // A backlog the follower has not received: it is paused.
    target.pause();
    let value = vec![b'v'; 64 << 10];
    for chunk in 0..4 {
        let mut pipe = redis::pipe();
        for i in 0..64 {
            pipe.cmd("SET")
                .arg(format!("big{}", chunk * 64 + i))
                .arg(&value)
                .ignore();
        }
        pipe.query::<()>(&mut c).unwrap();
    }
    let end = leader.status().offsets.appended;
    let received = leader.status().followers[0].received;
    assert!(received < end, "the follower already has the backlog");
    // Stop the leader while its follower is still paused; let the follower
    // go on a moment later, as a slow network would.
    let resume_later = {
        let pid = target.addrs.pid;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            rstore_testkit::signal(pid, "CONT");
        })
    };
    let exit = leader.terminate();
    resume_later.join().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        leader.stderr().contains("handed over"),
        "{}",
        leader.stderr()
    );
    assert_eq!(target.status().offsets.appended, end);
    // Every acknowledged write is there once the follower is promoted.
    target.promote(2);
    for i in 0..256 {
        match get(&target, &format!("big{i}")) {
            Reply::Bulk(v) => assert_eq!(v.len(), value.len()),
            other => panic!("big{i} lost: {other:?}"),
        }
    }
}

/// A fenced leader closes its clients' connections, idle or busy, so they
/// reconnect through the leader endpoint (to the new leader) instead of
/// staying on a node that no longer leads.
#[test]
fn a_fenced_leader_closes_its_client_connections_idle_or_busy() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let leader = Node::leader(&[]);
    let mut idle = leader.raw();
    assert_eq!(idle.cmd_str(&["SET", "k", "1"]), Reply::Simple("OK".into()));

    // Busy: a client whose next requests are always already buffered
    // (written ahead, replies drained by another thread), so the server
    // never finds it idle.
    let busy = std::net::TcpStream::connect(leader.addrs.data).unwrap();
    let mut drain = busy.try_clone().unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let reader = {
        let closed = Arc::clone(&closed);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0usize;
            loop {
                match drain.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            closed.store(true, Ordering::SeqCst);
            got
        })
    };
    let chunk = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".repeat(256);
    let mut writer = busy.try_clone().unwrap();
    let started = Instant::now();
    let mut fenced_at = None;
    while !closed.load(Ordering::SeqCst) {
        if writer.write_all(&chunk).is_err() {
            break; // reset by the server: closed
        }
        if fenced_at.is_none() && started.elapsed() > Duration::from_millis(300) {
            leader.fence(2);
            fenced_at = Some(Instant::now());
        }
        assert!(
            fenced_at.is_none_or(|t| t.elapsed() < DEADLINE),
            "a busy client of a fenced leader was never closed"
        );
    }
    let _ = busy.shutdown(std::net::Shutdown::Both);
    let got = reader.join().unwrap();
    assert!(fenced_at.is_some(), "closed before the fence");
    assert!(got > 0, "the busy client was served before the fence");
    assert!(idle.closed_by_server(), "the idle client was not closed");
}
