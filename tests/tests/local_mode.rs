//! `rstore-operator local` end to end: the real operator binary supervises
//! real node processes; clients write through its leader endpoint with a
//! Redis client while the leader is killed with `kill -9`, a switchover
//! moves it, and the operator itself is stopped and restarted.

use std::time::{Duration, Instant};

use rstore_e2e::local::{LocalCluster, Workload, missing};
use rstore_node::admin::StatusResponse;
use rstore_testkit::{Admin, alive, signal, wait_until};

/// Bound of each wait; the tests as a whole stay well under a minute.
const SETTLE: Duration = Duration::from_secs(20);
/// Longest pause of acknowledged writes a switchover may cause.
const MAX_SWITCHOVER_PAUSE: Duration = Duration::from_millis(1500);

fn status(addr: std::net::SocketAddr) -> StatusResponse {
    Admin::new(addr).status().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn kill_9_of_the_leader_fails_over_fast_and_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cluster = LocalCluster::start(&tmp.path().join("c"), 3, &[]);
    let (old_leader, old_epoch) = cluster.wait_settled(SETTLE);
    let listen = cluster.listen();

    let workload = Workload::start(listen, 4);
    wait_until(SETTLE, "writes through the leader endpoint", || {
        (workload.count() >= 200).then_some(())
    });
    let pid = cluster.member_pid(&old_leader).expect("leader pid");
    let kill_started = Instant::now();
    signal(pid, "-9");
    // Writes sent from now on can only be acknowledged by a new leader.
    let killed_at = Instant::now();

    let resumed_at = wait_until(SETTLE, "a write acknowledged after the kill", || {
        workload.first_ack_sent_after(killed_at)
    });
    // Conservative: from before the `kill` command ran.
    let write_gap = resumed_at - kill_started;
    println!("kill -9 of {old_leader} to the first acknowledged write: {write_gap:?}");
    assert!(
        write_gap < Duration::from_secs(5),
        "writes resumed only after {write_gap:?}"
    );
    let (new_leader, new_epoch) = wait_until(SETTLE, "the new leader recorded", || {
        cluster.settled_leader().filter(|(l, _)| *l != old_leader)
    });
    assert!(new_epoch > old_epoch, "epoch {old_epoch} -> {new_epoch}");
    let state = cluster.must_state();
    let last = &state["lastFailover"];
    assert_eq!(last["reason"], "LeaderGone", "{last}");
    assert_eq!(last["oldLeader"], old_leader.as_str());
    assert_eq!(last["newLeader"], new_leader.as_str());
    assert_eq!(last["lostBytes"], 0);
    println!("failover phases: {last}");

    // Keep writing on the new leader a moment, then check the set.
    let before = workload.count();
    wait_until(SETTLE, "writes on the new leader", || {
        (workload.count() >= before + 200).then_some(())
    });
    let acked = workload.finish();
    let lost = missing(cluster.data_addr(&new_leader), &acked);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged keys missing on {new_leader}: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );

    // The killed member is restarted by the supervisor and follows.
    wait_until(SETTLE, "the old leader back as a follower", || {
        let m = cluster.member(&old_leader);
        let restarted = cluster
            .member_pid(&old_leader)
            .is_some_and(|p| p != pid && alive(p));
        (restarted && m["role"] == "follower" && m["label"] == "follower").then_some(())
    });
    // It truncated nothing it should keep and caught up: every
    // acknowledged key is on it too.
    let leader_end = status(cluster.admin_addr(&new_leader)).offsets.committed;
    let old_admin = cluster.admin_addr(&old_leader);
    wait_until(SETTLE, "the old leader to catch up", || {
        (status(old_admin).offsets.applied >= leader_end).then_some(())
    });
    let lost = missing(cluster.data_addr(&old_leader), &acked);
    assert!(
        lost.is_empty(),
        "{} keys missing on the rejoined {old_leader}",
        lost.len()
    );

    // Reads through the read endpoint see the data.
    let read = cluster.read_listen();
    let sample: std::collections::BTreeMap<String, String> = acked
        .iter()
        .take(50)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(missing(read, &sample).is_empty());

    let out = cluster.tool(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in cluster.member_names() {
        assert!(text.contains(&name), "{name} missing from:\n{text}");
    }
    assert!(text.contains("last failover: LeaderGone"), "{text}");
    println!("{text}");
    assert!(cluster.stop(), "the operator exits 0 on SIGTERM");
}

#[test]
fn a_switchover_moves_the_leader_with_no_acknowledged_write_lost() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cluster = LocalCluster::start(&tmp.path().join("c"), 3, &[]);
    let (old_leader, old_epoch) = cluster.wait_settled(SETTLE);
    let target = cluster
        .member_names()
        .into_iter()
        .find(|n| *n != old_leader)
        .expect("a follower");

    let workload = Workload::start(cluster.listen(), 4);
    wait_until(SETTLE, "writes through the leader endpoint", || {
        (workload.count() >= 200).then_some(())
    });
    let asked_at = Instant::now();
    let out = cluster.tool(&["switchover", "--to", &target]);
    let took = asked_at.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "switchover failed: {}{}\noperator log:\n{}",
        text,
        String::from_utf8_lossy(&out.stderr),
        cluster.log()
    );
    println!("switchover command took {took:?}: {text}");
    let pause = workload.longest_pause(asked_at, asked_at + took);
    println!("longest pause between acknowledged writes during the switchover: {pause:?}");
    // The design's promise: writes paused for at most about a second.
    assert!(
        pause <= MAX_SWITCHOVER_PAUSE,
        "writes paused {pause:?} during the switchover (at most {MAX_SWITCHOVER_PAUSE:?})"
    );
    let state = cluster.must_state();
    assert_eq!(state["leader"], target.as_str());
    assert!(state["epoch"].as_u64() > Some(old_epoch));
    assert_eq!(state["lastFailover"]["reason"], "Switchover");
    assert_eq!(state["lastFailover"]["lostBytes"], 0);

    let before = workload.count();
    wait_until(SETTLE, "writes on the new leader", || {
        (workload.count() >= before + 200).then_some(())
    });
    let acked = workload.finish();
    let lost = missing(cluster.data_addr(&target), &acked);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged keys missing after the switchover",
        lost.len(),
        acked.len()
    );
    // Without --to: the most caught-up follower; the leader moves again.
    let out = cluster.tool(&["switchover"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(cluster.must_state()["leader"], target.as_str());
    // A member that does not exist is refused.
    let out = cluster.tool(&["switchover", "--to", "member-9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a member"));
}

#[test]
fn a_restarted_operator_resumes_the_same_cluster_with_its_data() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cluster =
        LocalCluster::start(&tmp.path().join("c"), 2, &["--replication-mode", "sync"]);
    let (leader, epoch) = cluster.wait_settled(SETTLE);
    let workload = Workload::start(cluster.listen(), 2);
    wait_until(SETTLE, "writes", || (workload.count() >= 100).then_some(()));
    let acked = workload.finish();
    let before = cluster.must_state();
    let pids = cluster.node_pids();
    assert_eq!(pids.len(), 2);

    assert!(cluster.stop(), "the operator exits 0 on SIGTERM");
    for pid in &pids {
        assert!(!alive(*pid), "node {pid} outlived the operator");
    }
    let stopped = cluster.must_state();
    assert!(stopped["operatorPid"].is_null());
    assert_eq!(stopped["epoch"].as_u64(), Some(epoch));
    assert_eq!(
        stopped["cleanShutdown"],
        true,
        "{stopped}\n{}",
        cluster.log()
    );

    // After a clean stop: the same leader at the same epoch, no failover,
    // every acknowledged write there.
    cluster.restart();
    let (resumed_leader, clean_epoch) = cluster.wait_settled(SETTLE);
    assert_eq!(
        (resumed_leader.as_str(), clean_epoch),
        (leader.as_str(), epoch),
        "a clean restart resumes the same leader at the same epoch; log:\n{}",
        cluster.log()
    );
    let running = cluster.must_state();
    assert_eq!(running["cleanShutdown"], false, "cleared when starting");
    assert_eq!(
        running["lastFailover"], before["lastFailover"],
        "no failover on a clean restart"
    );
    let lost = missing(cluster.listen(), &acked);
    assert!(
        lost.is_empty(),
        "{} keys lost across a clean restart",
        lost.len()
    );
    assert!(cluster.stop(), "the operator exits 0 on SIGTERM");

    // Kill -9 of the operator leaves its nodes behind; the next start
    // stops them first.
    cluster.restart();
    cluster.wait_settled(SETTLE);
    let orphans = cluster.node_pids();
    signal(cluster.pid().expect("operator pid"), "-9");
    cluster.reap();
    assert!(
        orphans.iter().all(|p| alive(*p)),
        "nodes survive a dead operator"
    );
    cluster.restart();
    let (_, resumed_epoch) = cluster.wait_settled(SETTLE);
    for pid in &orphans {
        assert!(!alive(*pid), "stale node {pid} still runs");
    }

    // A second operator on the same data dir is refused.
    let mut second = std::process::Command::new(rstore_e2e::operator_binary())
        .args([
            "local",
            "--listen",
            "127.0.0.1:0",
            "--read-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&cluster.dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a second operator");
    let refused = wait_until(SETTLE, "the second operator to give up", || {
        second.try_wait().ok().flatten()
    });
    assert!(!refused.success());
    let output = second.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("another rstore-operator local"), "{text}");
    assert!(resumed_epoch >= epoch);
    let after = cluster.must_state();
    for (a, b) in before["members"]
        .as_array()
        .expect("members")
        .iter()
        .zip(after["members"].as_array().expect("members"))
    {
        for key in ["name", "data", "repl", "admin"] {
            assert_eq!(a[key], b[key], "{key} changed across restarts");
        }
    }
    let lost = missing(cluster.listen(), &acked);
    assert!(lost.is_empty(), "{} keys lost across restarts", lost.len());
}
