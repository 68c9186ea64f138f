//! Day-2 operations on a real API server with the stand-in kubelet and the
//! real operator installed by `helm install` (two replicas, one active
//! through a Lease): scaling 3 -> 5 -> 3, a scale-down that would remove
//! the leader (switchover first, under a continuous writer), deleting the
//! resource (garbage collection, volumes kept unless asked), the operator
//! killed in the middle of a failover (the standby takes the Lease and
//! completes it from status), operator HA (the standby takes the
//! Lease and completes a failover), a rolling update under a continuous
//! writer (followers first, then a switchover, then the old leader), a
//! replication settings change applied to running members without a
//! restart, and the members' admin API refusing calls without the token.
//!
//! The scenarios run one at a time (they kill operator processes and
//! measure write pauses on a 2-core machine), each bounded in time, each in
//! its own namespace, deleted at the end. The figures they measure are
//! printed with a `day2:` prefix. `RSTORE_SKIP_K8S=1` skips them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;
use rstore_e2e::k8s::scenario::{
    OPERATOR_NS, Store, Writer, check_keys, condition, deploy, is_true, kubectl, lease,
    lost_writes, operator_log, operator_pods, patch_spec, pod_uid, redis_at, settled, sts_replicas,
    until, wait_failover, wait_member, write_keys,
};
use rstore_e2e::k8s::{self, Cluster, process, scenarios};
use serde_json::{Value, json};

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Pace of the continuous writers (about 200 writes a second: the pause
/// resolution, without starving the control plane of the 2 cores).
const PACE: Duration = Duration::from_millis(5);

/// Undo steps run when a scenario ends, failed or not (resume a stopped
/// process, release a held restart).
#[derive(Default)]
struct Cleanup(Vec<Box<dyn FnOnce() + Send>>);

impl Cleanup {
    fn add(&mut self, f: impl FnOnce() + Send + 'static) {
        self.0.push(Box::new(f));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_pid(cluster: &Cluster, ns: &str, pod: &str) -> u32 {
    cluster
        .kubelet()
        .pod_pid(ns, pod)
        .unwrap_or_else(|| panic!("pod {ns}/{pod} has no running process"))
}

// ------------------------------------------------------------------- 1

#[tokio::test]
async fn scale_3_to_5_to_3_never_removes_the_leader() {
    let Some(cluster) = k8s::shared() else { return };
    let _serial = SERIAL.lock().await;
    scenarios::scale_3_to_5_to_3_never_removes_the_leader(cluster).await;
}

// ------------------------------------------------------------------- 2

#[tokio::test]
async fn scale_down_that_would_remove_the_leader_switches_over_first() {
    let Some(cluster) = k8s::shared() else { return };
    shrink(cluster, "shrink", &Value::Null, 2).await;
}

#[tokio::test]
async fn scale_3_to_1_in_async_mode_switches_over_to_the_remaining_member_first() {
    let Some(cluster) = k8s::shared() else { return };
    shrink(
        cluster,
        "shrinkone",
        &json!({"replication": {"mode": "async"}}),
        1,
    )
    .await;
}

/// 3 members with the leader moved to the highest ordinal, then scaled
/// down to `to` under a continuous writer: the operator switches over to
/// a remaining member before the StatefulSet shrinks; nothing
/// acknowledged is lost; the longest write pause stays within 1.5 s.
async fn shrink(cluster: &'static Cluster, name: &str, spec: &Value, to: i32) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let store = deploy(cluster, name, spec).await;
    let top = format!("{name}-2");
    let remaining: Vec<String> = (0..to).map(|i| format!("{name}-{i}")).collect();
    let client = cluster.client().await;
    let s = &store;

    // Leadership to the highest ordinal first.
    kubectl(
        cluster,
        &store.ns,
        &[
            "annotate",
            "rstore",
            name,
            &format!("rstore.dev/switchover-to={top}"),
            "--overwrite",
        ],
    );
    until(
        cluster,
        &format!("{top} to lead"),
        Duration::from_secs(60),
        || async {
            let r = s.api.get(&s.name).await.ok()?;
            let annotated = r.annotations().contains_key("rstore.dev/switchover-to");
            let st = r.status.unwrap_or_default();
            (st.leader.as_deref() == Some(top.as_str()) && settled(&st, 3) && !annotated)
                .then_some(())
        },
    )
    .await;
    let st1 = store.status().await;
    rstore_testkit::figure!(
        "day2: {name}: switchover to {top} by annotation: {:?}",
        st1.last_failover.as_ref().map(|f| (f.total_ms, f.epoch))
    );

    let writer = Writer::start(store.leader_svc, "w", PACE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let at_patch = writer.at();
    patch_spec(cluster, &store, json!({ "replicas": to }));

    // Timeline: the StatefulSet's replicas (read first), the leader, the
    // top pod.
    let mut timeline: Vec<String> = Vec::new();
    let mut last = (None, None, None);
    let mut leader_when_shrunk: Option<Option<String>> = None;
    let mut leader_when_pod_deleted: Option<Option<String>> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let replicas = sts_replicas(&store, &client).await;
        let pod = store.pods.get_opt(&top).await.ok().flatten();
        let pod_state = match &pod {
            None => "gone",
            Some(p) if p.metadata.deletion_timestamp.is_some() => "deleting",
            Some(_) => "running",
        };
        let st = store.status().await;
        if replicas.is_some_and(|r| r < 3) && leader_when_shrunk.is_none() {
            leader_when_shrunk = Some(st.leader.clone());
        }
        if pod_state != "running" && leader_when_pod_deleted.is_none() {
            leader_when_pod_deleted = Some(st.leader.clone());
        }
        let now = (replicas, st.leader.clone(), Some(pod_state));
        if now != last {
            timeline.push(format!(
                "+{:.2} s: StatefulSet replicas {replicas:?}, leader {:?}, pod {top} {pod_state}",
                t.elapsed().as_secs_f64(),
                st.leader
            ));
            last = now;
        }
        if replicas == Some(to) && pod_state == "gone" && settled(&st, to) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scale-down to {to} within 120 s: {st:?}\ntimeline:\n{}\noperator log:\n{}",
            timeline.join("\n"),
            operator_log(cluster)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = writer.stop();
    let lost = lost_writes(store.leader_svc, "w", &report);
    eprintln!("day2: {name} timeline:\n{}", timeline.join("\n"));
    rstore_testkit::figure!(
        "day2: {name} writer (patch at +{at_patch:.1} s): {}",
        report.summary()
    );

    let st = store.status().await;
    let f = st.last_failover.clone().expect("lastFailover");
    assert_eq!(f.reason.as_str(), "Switchover", "{f:?}");
    assert_eq!(f.old_leader.as_deref(), Some(top.as_str()), "{f:?}");
    assert!(remaining.contains(&f.new_leader), "{f:?}");
    assert_eq!(st.epoch, st1.epoch + 1, "one switchover, no other failover");
    assert_eq!(st.leader.as_deref(), Some(f.new_leader.as_str()));
    let shrunk_with = leader_when_shrunk.expect("the StatefulSet shrank");
    assert!(
        shrunk_with.is_some() && shrunk_with.as_deref() != Some(top.as_str()),
        "the StatefulSet shrank only after the switchover (leader then: {shrunk_with:?})"
    );
    let deleted_with = leader_when_pod_deleted.expect("the top pod went");
    assert!(
        deleted_with.as_deref() != Some(top.as_str()),
        "pod {top} removed only once it no longer led (leader then: {deleted_with:?})"
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(
        report.acked.len() > 100,
        "the writer made progress: {}",
        report.summary()
    );
    rstore_testkit::figure!(
        "day2: {name}: 3 -> {to} ({}) with the leader on {top}: switchover {} ms (fence {} ms, promote {} ms) to {}, settled in {:.1} s, \
         {} acknowledged writes, 0 lost, longest write pause {:.3} s; scenario {:.1} s",
        spec["replication"]["mode"].as_str().unwrap_or("semi-sync"),
        f.total_ms,
        f.fence_ms,
        f.promote_ms,
        f.new_leader,
        took.as_secs_f64(),
        report.acked.len(),
        report.longest_pause.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.longest_pause <= Duration::from_millis(1500),
        "longest write pause {:?} over the 1.5 s goal: {}",
        report.longest_pause,
        report.summary()
    );
}

// ------------------------------------------------------------------- 3

#[tokio::test]
async fn deleting_the_store_removes_what_it_owns_and_keeps_the_volumes_unless_asked() {
    let Some(cluster) = k8s::shared() else { return };
    let _serial = SERIAL.lock().await;
    scenarios::deleting_the_store_removes_what_it_owns_and_keeps_the_volumes_unless_asked(cluster)
        .await;
}

// ------------------------------------------------------------------- 4

/// Who completes a failover whose operator was killed in the middle.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Takeover {
    /// The killed operator is held down; the standby takes the Lease.
    Standby,
    /// The standby is frozen (SIGSTOP, restarts held); the killed
    /// operator's container is restarted by the kubelet and resumes.
    Restart,
}

#[tokio::test]
async fn the_operator_killed_in_the_middle_of_a_failover_is_replaced_by_the_standby_which_completes_it()
 {
    let Some(cluster) = k8s::shared() else { return };
    operator_killed_mid_failover(cluster, "opkill", Takeover::Standby).await;
}

#[tokio::test]
async fn the_operator_killed_in_the_middle_of_a_failover_completes_it_when_restarted() {
    let Some(cluster) = k8s::shared() else { return };
    operator_killed_mid_failover(cluster, "oprestart", Takeover::Restart).await;
}

async fn operator_killed_mid_failover(cluster: &'static Cluster, name: &str, takeover: Takeover) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let store = deploy(cluster, name, &Value::Null).await;
    let client = cluster.client().await;
    let kubelet = cluster.kubelet();
    let ns = store.ns.name.clone();
    write_keys(&store, "k");
    let st = store.status().await;
    let leader = st.leader.clone().expect("a leader");
    let followers = store.followers_of(&leader);
    let (active, _) = lease(&client).await.expect("the operator Lease");

    // One follower frozen and the leader dead (its restart held): the
    // safety rule (2 fenced followers of 2, K = 1) blocks the failover,
    // which stays in progress in status.
    let mut cleanup = Cleanup::default();
    let frozen = followers[1].clone();
    let frozen_pid = pod_pid(cluster, &ns, &frozen);
    process::signal(frozen_pid, "STOP");
    cleanup.add(move || process::signal(frozen_pid, "CONT"));
    kubelet.hold_restarts(&ns, &leader, true);
    {
        let (ns, leader) = (ns.clone(), leader.clone());
        cleanup.add(move || {
            if let Some(c) = k8s::shared() {
                c.kubelet().hold_restarts(&ns, &leader, false);
            }
        });
    }
    let t = Instant::now();
    process::signal(pod_pid(cluster, &ns, &leader), "KILL");
    let s = &store;
    let progress = until(
        cluster,
        "a failover in progress",
        Duration::from_secs(20),
        || async { s.status().await.failover },
    )
    .await;
    let in_progress_after = t.elapsed();

    // Kill the active operator now. Standby: keep it down, so the standby
    // must take the Lease and finish the failover from what status
    // recorded. Restart: freeze the standby (and hold its restarts), so the
    // killed operator's restarted container must do it.
    let held = match takeover {
        Takeover::Standby => active.clone(),
        Takeover::Restart => {
            let standby = operator_pods(cluster)
                .into_iter()
                .find(|p| *p != active)
                .expect("a standby operator pod");
            let pid = pod_pid(cluster, OPERATOR_NS, &standby);
            process::signal(pid, "STOP");
            cleanup.add(move || process::signal(pid, "CONT"));
            standby
        }
    };
    kubelet.hold_restarts(OPERATOR_NS, &held, true);
    {
        let h = held.clone();
        cleanup.add(move || {
            if let Some(c) = k8s::shared() {
                c.kubelet().hold_restarts(OPERATOR_NS, &h, false);
            }
        });
    }
    let restarts_before = kubelet.pod(OPERATOR_NS, &active).map(|p| p.restarts);
    let operator_pid = pod_pid(cluster, OPERATOR_NS, &active);
    process::signal(operator_pid, "KILL");
    let t_kill = Instant::now();
    // After `kill` returned: a renewal computed before that is older.
    let killed_at = k8s_openapi::jiff::Timestamp::now();
    rstore_testkit::figure!(
        "day2: {name}: failover in progress {:.2} s after SIGKILL of {leader} (phase {:?}, blocked: {:?}); operator {active} killed",
        in_progress_after.as_secs_f64(),
        progress.phase,
        progress.blocked
    );
    // An operator is active again: the Lease renewed after the kill.
    let c = &client;
    let holder = until(
        cluster,
        "an operator to hold the Lease again",
        Duration::from_secs(40),
        || async move {
            let (holder, l) = lease(c).await?;
            let renewed = l.spec?.renew_time?.0;
            (renewed > killed_at).then_some((holder, renewed))
        },
    )
    .await;
    let back_after = t_kill.elapsed();
    rstore_testkit::figure!(
        "day2: {name}: killed at {killed_at}, Lease renewed at {} by {} (restarts of {active}: {:?})",
        holder.1,
        holder.0,
        kubelet.pod(OPERATOR_NS, &active).map(|p| p.restarts)
    );
    let holder = holder.0;
    match takeover {
        Takeover::Standby => assert_ne!(holder, active, "the killed operator is held down"),
        Takeover::Restart => {
            assert_eq!(holder, active, "the standby is frozen");
            let restarts = kubelet.pod(OPERATOR_NS, &active).map(|p| p.restarts);
            assert!(
                restarts > restarts_before,
                "{active} was restarted ({restarts_before:?} -> {restarts:?})"
            );
        }
    }
    // Still blocked on the frozen follower: the new operator read the
    // failover from status and keeps it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mid = store.status().await;
    assert!(
        mid.failover
            .as_ref()
            .is_some_and(|f| f.epoch == progress.epoch),
        "the failover in progress is kept across the operator's restart: {:?}",
        mid.failover
    );
    assert_eq!(
        mid.leader.as_deref(),
        Some(leader.as_str()),
        "no leader forgotten"
    );
    let t_cont = Instant::now();
    process::signal(frozen_pid, "CONT");
    let after = wait_failover(
        cluster,
        &store,
        st.epoch,
        t,
        "leader SIGKILL, operator SIGKILL",
    )
    .await;
    let completed_after_cont = t_cont.elapsed();
    let f = after.last_failover.clone().expect("lastFailover");
    assert_eq!(f.old_leader.as_deref(), Some(leader.as_str()));
    assert!(followers.contains(&f.new_leader), "{f:?}");
    assert_eq!(f.epoch, progress.epoch, "the same failover completed");
    check_keys(&store, "k");
    kubelet.hold_restarts(&ns, &leader, false);
    wait_member(&store, &leader, &["follower"]).await;
    drop(cleanup);
    rstore_testkit::figure!(
        "day2: {name}: operator {active} killed mid-failover ({}); {holder} active {:.1} s later; the failover to {} (epoch {}) completed {:.2} s after the frozen follower resumed, total {} ms; {leader} back as a follower; scenario {:.1} s",
        match takeover {
            Takeover::Standby => "its restart held, the standby takes over",
            Takeover::Restart => "the standby frozen, its own restart takes over",
        },
        back_after.as_secs_f64(),
        f.new_leader,
        f.epoch,
        completed_after_cont.as_secs_f64(),
        f.total_ms,
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------- 5

fn last_election_line(cluster: &Cluster, pod: &str) -> Option<&'static str> {
    let rt = cluster.kubelet().pod(OPERATOR_NS, pod)?;
    let log = std::fs::read_to_string(&rt.log).unwrap_or_default();
    log.lines().rev().find_map(|l| {
        if l.contains("leading: this operator replica is active") {
            Some("leading")
        } else if l.contains("standing by: another operator replica is active") {
            Some("standing by")
        } else {
            None
        }
    })
}

#[tokio::test]
async fn operator_ha_the_standby_takes_the_lease_and_completes_a_failover() {
    let Some(cluster) = k8s::shared() else { return };
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let store = deploy(cluster, "ha", &Value::Null).await;
    let client = cluster.client().await;
    let kubelet = cluster.kubelet();
    let pods = operator_pods(cluster);
    assert_eq!(
        pods.len(),
        2,
        "the chart runs two operator replicas: {pods:?}"
    );
    eprintln!(
        "{}",
        kubectl(cluster, OPERATOR_NS, &["get", "lease", "-o", "wide"])
    );
    let (active, l) = lease(&client).await.expect("the operator Lease");
    assert!(
        pods.contains(&active),
        "the Lease is held by an operator pod: {active}"
    );
    let standby = pods
        .iter()
        .find(|p| **p != active)
        .expect("a standby")
        .clone();
    let spec = l.spec.clone().unwrap_or_default();
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15) as u64);
    let transitions = spec.lease_transitions.unwrap_or(0);
    // Exactly one acts: the holder says it leads, the other stands by.
    let c = &client;
    until(
        cluster,
        "the holder to lead and the other to stand by",
        Duration::from_secs(30),
        || {
            let (a, s) = (active.clone(), standby.clone());
            async move {
                let holder = lease(c).await?.0;
                (holder == a
                    && last_election_line(cluster, &a) == Some("leading")
                    && last_election_line(cluster, &s) == Some("standing by"))
                .then_some(())
            }
        },
    )
    .await;

    // The active replica's process killed, and kept down.
    let mut cleanup = Cleanup::default();
    kubelet.hold_restarts(OPERATOR_NS, &active, true);
    {
        let a = active.clone();
        cleanup.add(move || {
            if let Some(c) = k8s::shared() {
                c.kubelet().hold_restarts(OPERATOR_NS, &a, false);
            }
        });
    }
    let renewed = lease(&client)
        .await
        .and_then(|(_, l)| l.spec?.renew_time)
        .map(|t| t.0);
    let pid = pod_pid(cluster, OPERATOR_NS, &active);
    let t = Instant::now();
    process::signal(pid, "KILL");
    let killed_at = k8s_openapi::jiff::Timestamp::now();
    let since_renewal = renewed.map(|r| killed_at.duration_since(r).as_secs_f64());
    let s = standby.clone();
    until(
        cluster,
        "the standby to take the Lease",
        duration * 3,
        || {
            let s = s.clone();
            async move { (lease(c).await?.0 == s).then_some(()) }
        },
    )
    .await;
    let takeover = t.elapsed();
    let (_, l) = lease(&client).await.expect("Lease");
    let after = l.spec.unwrap_or_default();
    assert_eq!(
        after.lease_transitions.unwrap_or(0),
        transitions + 1,
        "one new term"
    );
    rstore_testkit::figure!(
        "day2: ha: {standby} took the Lease {:.2} s after SIGKILL of {active} (last renewal {:.2} s before the kill; lease {} s)",
        takeover.as_secs_f64(),
        since_renewal.unwrap_or(-1.0),
        duration.as_secs()
    );
    // Renew every duration/3, take over once a renewal is `duration` old:
    // at most duration + duration/3 after the kill.
    assert!(
        takeover <= duration + duration / 3 + Duration::from_secs(1),
        "takeover in {takeover:?}"
    );

    // A failover now is the new active replica's.
    write_keys(&store, "k");
    let standby_log_path = kubelet.pod(OPERATOR_NS, &standby).expect("standby pod").log;
    let log_len = std::fs::metadata(&standby_log_path)
        .map(|m| m.len())
        .unwrap_or(0) as usize;
    let st = store.status().await;
    let leader = st.leader.clone().expect("a leader");
    // Kept down until the failover is done, so leadership moves (a leader
    // back before the choice may be chosen again).
    kubelet.hold_restarts(&store.ns, &leader, true);
    {
        let (ns, l) = (store.ns.name.clone(), leader.clone());
        cleanup.add(move || {
            if let Some(c) = k8s::shared() {
                c.kubelet().hold_restarts(&ns, &l, false);
            }
        });
    }
    let t1 = Instant::now();
    process::signal(pod_pid(cluster, &store.ns, &leader), "KILL");
    let after = wait_failover(
        cluster,
        &store,
        st.epoch,
        t1,
        "leader SIGKILL after the operator takeover",
    )
    .await;
    let failover_took = t1.elapsed();
    check_keys(&store, "k");
    let standby_log = std::fs::read(&standby_log_path).unwrap_or_default();
    let new_lines =
        String::from_utf8_lossy(&standby_log[log_len.min(standby_log.len())..]).into_owned();
    assert!(
        new_lines.contains("FailoverCompleted"),
        "the new active replica ran the failover; its log since:\n{new_lines}"
    );

    let f = after.last_failover.clone().expect("lastFailover");
    assert_ne!(f.new_leader, leader, "leadership moved");
    kubelet.hold_restarts(&store.ns, &leader, false);
    wait_member(&store, &leader, &["follower"]).await;

    // The old active replica comes back as a standby.
    kubelet.hold_restarts(OPERATOR_NS, &active, false);
    let a = active.clone();
    until(
        cluster,
        "the old active replica to stand by",
        Duration::from_secs(30),
        || {
            let a = a.clone();
            async move { (last_election_line(cluster, &a) == Some("standing by")).then_some(()) }
        },
    )
    .await;
    assert_eq!(lease(&client).await.map(|l| l.0), Some(standby.clone()));
    drop(cleanup);
    rstore_testkit::figure!(
        "day2: ha: takeover {:.2} s; failover after it: {} -> {} in {} ms (writes back after {:.2} s); {active} restarted as standby; scenario {:.1} s",
        takeover.as_secs_f64(),
        leader,
        f.new_leader,
        f.total_ms,
        failover_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------- 6

#[tokio::test]
async fn rolling_update_replaces_followers_then_switches_over_then_the_old_leader() {
    let Some(cluster) = k8s::shared() else { return };
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let store = deploy(cluster, "roll", &Value::Null).await;
    let client = cluster.client().await;
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &store.ns);
    let revisions = |sts: &StatefulSet| {
        let st = sts.status.clone().unwrap_or_default();
        (st.current_revision, st.update_revision)
    };
    let (current, update) = revisions(&sts_api.get("roll").await.expect("StatefulSet"));
    let old_revision = update.clone().expect("updateRevision");
    assert_eq!(current.as_deref(), Some(old_revision.as_str()));
    // The StatefulSet controller labels each pod it creates with its
    // revision (the rollout reads it).
    let pod_revision = |p: &Pod| p.labels().get("controller-revision-hash").cloned();
    for i in 0..3 {
        let p = store.pods.get(&store.member(i)).await.expect("pod");
        assert_eq!(
            pod_revision(&p).as_deref(),
            Some(old_revision.as_str()),
            "{}",
            store.member(i)
        );
    }
    let st0 = store.status().await;
    let old_leader = st0.leader.clone().expect("a leader");
    let mut uids = BTreeMap::new();
    for i in 0..3 {
        let n = store.member(i);
        uids.insert(n.clone(), pod_uid(&store.pods, &n).await.expect("uid"));
    }

    let writer = Writer::start(store.leader_svc, "w", PACE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_patch = writer.at();
    let t = Instant::now();
    patch_spec(
        cluster,
        &store,
        json!({"resources": {"requests": {"cpu": "150m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}}),
    );

    let mut timeline: Vec<String> = Vec::new();
    let mut deleted: Vec<(String, Option<String>, f64)> = Vec::new();
    let mut leader = Some(old_leader.clone());
    let mut leader_changes: Vec<(Option<String>, f64)> = Vec::new();
    let mut rolling_seen: Vec<String> = Vec::new();
    let mut new_revision: Option<String> = None;
    let mut overlaps: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let st = store.status().await;
        let now = t.elapsed().as_secs_f64();
        if st.leader != leader {
            timeline.push(format!(
                "+{now:.2} s: leader {:?} -> {:?}",
                leader, st.leader
            ));
            leader = st.leader.clone();
            leader_changes.push((leader.clone(), now));
        }
        if let Some(c) = condition(&st, "Progressing")
            && c.reason == "RollingUpdate"
            && !rolling_seen.contains(&c.message)
        {
            timeline.push(format!(
                "+{now:.2} s: Progressing RollingUpdate: {}",
                c.message
            ));
            rolling_seen.push(c.message.clone());
        }
        if new_revision.is_none() {
            let (_, u) = revisions(&sts_api.get("roll").await.expect("StatefulSet"));
            if u.as_deref() != Some(old_revision.as_str()) {
                new_revision = u;
            }
        }
        let mut all_new = new_revision.is_some();
        for i in 0..3 {
            let n = store.member(i);
            let p = store.pods.get_opt(&n).await.ok().flatten();
            let replaced = match &p {
                None => true,
                Some(p) => {
                    p.metadata.deletion_timestamp.is_some() || p.uid() != uids.get(&n).cloned()
                }
            };
            if replaced && !deleted.iter().any(|(d, _, _)| *d == n) {
                timeline.push(format!("+{now:.2} s: {n} deleted (leader {:?})", st.leader));
                deleted.push((n.clone(), st.leader.clone(), now));
                // One member down at a time: every other one is there and
                // ready (read after the deletion was seen).
                for j in (0..3).filter(|j| *j != i) {
                    let other = store.member(j);
                    let p = store.pods.get_opt(&other).await.ok().flatten();
                    let ok = p
                        .as_ref()
                        .is_some_and(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p));
                    if !ok {
                        let why = match &p {
                            None => "has no pod".to_string(),
                            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                                "is being deleted".to_string()
                            }
                            Some(_) => "is not ready".to_string(),
                        };
                        timeline.push(format!(
                            "+{now:.2} s: VIOLATION: {n} deleted while {other} {why}"
                        ));
                        overlaps.push(format!("{n} deleted while {other} {why}"));
                    }
                }
            }
            let ok = p.as_ref().is_some_and(|p| {
                p.metadata.deletion_timestamp.is_none() && pod_revision(p) == new_revision
            });
            all_new &= ok;
        }
        if all_new
            && settled(&st, 3)
            && condition(&st, "Progressing").is_some_and(|c| c.status == "False")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rolling update within 300 s: {st:?}\ntimeline:\n{}\noperator log:\n{}",
            timeline.join("\n"),
            operator_log(cluster)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = writer.stop();
    let lost = lost_writes(store.leader_svc, "w", &report);
    eprintln!("day2: roll timeline:\n{}", timeline.join("\n"));
    rstore_testkit::figure!(
        "day2: roll writer (patch at +{at_patch:.1} s): {}",
        report.summary()
    );

    let st = store.status().await;
    assert!(
        overlaps.is_empty(),
        "a member was deleted while another was down: {overlaps:?}"
    );
    // Followers first, then the old leader, each once.
    let order: Vec<&str> = deleted.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(order.len(), 3, "each member replaced once: {order:?}");
    assert_eq!(order[2], old_leader, "the old leader last: {order:?}");
    // The switchover came after both followers and before the old leader.
    assert_eq!(
        leader_changes.len(),
        1,
        "one leader change: {leader_changes:?}"
    );
    let (new_leader, switched_at) = leader_changes[0].clone();
    let new_leader = new_leader.expect("a new leader");
    assert!(
        deleted[1].2 <= switched_at && switched_at <= deleted[2].2,
        "{timeline:?}"
    );
    assert_eq!(
        deleted[2].1.as_deref(),
        Some(new_leader.as_str()),
        "the old leader was deleted once it no longer led"
    );
    let f = st.last_failover.clone().expect("lastFailover");
    assert_eq!(f.reason.as_str(), "Switchover", "{f:?}");
    assert_eq!(f.old_leader.as_deref(), Some(old_leader.as_str()));
    assert_eq!(st.epoch, st0.epoch + 1, "exactly one leadership change");
    assert!(
        !rolling_seen.is_empty(),
        "Progressing said RollingUpdate during the update"
    );
    assert!(is_true(&st, "Available"));
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(
        report.acked.len() > 100,
        "the writer made progress: {}",
        report.summary()
    );
    let goal = if report.longest_pause <= Duration::from_millis(1500) {
        "meets"
    } else {
        "MISSES"
    };
    rstore_testkit::figure!(
        "day2: roll: 3 members replaced in {:.1} s ({order:?}; switchover {old_leader} -> {new_leader} in {} ms at +{switched_at:.1} s); \
         {} acknowledged writes, 0 lost, longest write pause {:.3} s ({goal} the 1.5 s goal); scenario {:.1} s",
        took.as_secs_f64(),
        f.total_ms,
        report.acked.len(),
        report.longest_pause.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.longest_pause <= Duration::from_millis(1500),
        "longest write pause {:?} over the 1.5 s goal: {}",
        report.longest_pause,
        report.summary()
    );
}

// ------------------------------------------------------------------- 7

/// An HTTP/1.1 request with optional headers; (code, body).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let r = rstore_testkit::http(addr, method, path, headers, Some(body));
    (r.status, r.body)
}

/// The fields of `/status` an admin call could change.
fn role_of(addr: SocketAddr) -> Value {
    let (code, body) = http(addr, "GET", "/status", &[], "");
    assert_eq!(code, 200, "GET /status needs no token: {body}");
    let v: Value = serde_json::from_str(&body).expect("status JSON");
    json!({"role": v["role"], "epoch": v["epoch"], "fenced": v["fenced"], "leader": v["leader"]})
}

#[tokio::test]
async fn admin_calls_without_the_token_are_refused_and_change_nothing() {
    let Some(cluster) = k8s::shared() else { return };
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let store = deploy(cluster, "auth", &Value::Null).await;
    let st = store.status().await;
    let epoch = st.epoch as u64;
    let mut refused = 0;
    for i in 0..3 {
        let member = store.member(i);
        let ip = store
            .pods
            .get(&member)
            .await
            .expect("pod")
            .status
            .and_then(|s| s.pod_ip)
            .expect("pod IP");
        let admin: SocketAddr = format!("{ip}:8080").parse().expect("admin address");
        let before = role_of(admin);
        let calls = [
            ("/fence", json!({"epoch": epoch + 5})),
            ("/promote", json!({"epoch": epoch + 5})),
            (
                "/follow",
                json!({"leader": "10.0.0.99:7379", "epoch": epoch + 5}),
            ),
        ];
        for (path, body) in &calls {
            for headers in [
                &[][..],
                &["Authorization: Bearer not-the-token"][..],
                &["Authorization: token"][..],
            ] {
                let (code, text) = http(admin, "POST", path, headers, &body.to_string());
                assert_eq!(
                    code, 401,
                    "POST {path} to {member} with {headers:?}: {text}"
                );
                refused += 1;
            }
        }
        assert_eq!(role_of(admin), before, "{member} unchanged");
    }
    // Nothing happened to the cluster: same leader, same epoch, no failover,
    // writes go on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = store.status().await;
    assert_eq!(after.leader, st.leader);
    assert_eq!(after.epoch, st.epoch);
    assert!(after.last_failover.is_none(), "{:?}", after.last_failover);
    let mut c = redis_at(store.leader_svc).expect("connect");
    let _: () = redis::cmd("SET")
        .arg("still")
        .arg("ok")
        .query(&mut c)
        .expect("write after");
    rstore_testkit::figure!(
        "day2: auth: {refused} admin calls without (or with a wrong) token refused with 401 on 3 members, none changed; scenario {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The store's admin token, from its Secret (None while it is missing).
async fn admin_token(store: &Store, client: &kube::Client) -> Option<String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &store.ns);
    let secret = api
        .get_opt(&format!("{}-admin-token", store.name))
        .await
        .ok()??;
    let bytes = secret.data?.get("token")?.0.clone();
    String::from_utf8(bytes).ok()
}

/// Whether member `i` takes `token`: a mutating call with it and a body
/// that cannot parse gets past the token check (400) instead of 401, and
/// changes nothing.
async fn takes_token(store: &Store, i: usize, token: &str) -> Option<bool> {
    let pod = store.pods.get(&store.member(i)).await.ok()?;
    let ip = pod.status?.pod_ip?;
    let admin: SocketAddr = format!("{ip}:8080").parse().ok()?;
    let auth = format!("Authorization: Bearer {token}");
    match http(admin, "POST", "/fence", &[&auth], "not json").0 {
        401 => Some(false),
        400 | 422 => Some(true),
        _ => None,
    }
}

#[tokio::test]
async fn a_deleted_admin_token_secret_is_replaced_and_reaches_the_running_members() {
    let Some(cluster) = k8s::shared() else { return };
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let store = deploy(cluster, "rotate", &Value::Null).await;
    let client = cluster.client().await;
    let before = store.status().await;
    let old = admin_token(&store, &client).await.expect("the admin token");
    for i in 0..3 {
        assert_eq!(takes_token(&store, i, &old).await, Some(true));
    }
    let pods_before: Vec<Option<String>> = {
        let mut uids = Vec::new();
        for i in 0..3 {
            uids.push(pod_uid(&store.pods, &store.member(i)).await);
        }
        uids
    };

    // Someone deletes the Secret: the operator makes a new token, the
    // kubelet updates the members' volume, the members take the new token
    // and refuse the old one, with no pod restarted.
    let t = Instant::now();
    kubectl(
        cluster,
        &store.ns,
        &["delete", "secret", &format!("{}-admin-token", store.name)],
    );
    let s = &store;
    let c = &client;
    let o = &old;
    let new = until(
        cluster,
        "a new admin token Secret",
        Duration::from_secs(60),
        || async move { admin_token(s, c).await.filter(|t| t != o) },
    )
    .await;
    let recreated = t.elapsed();
    let n = &new;
    until(
        cluster,
        "every member to take the new token and refuse the old one",
        Duration::from_secs(60),
        || async move {
            for i in 0..3 {
                if takes_token(s, i, n).await != Some(true)
                    || takes_token(s, i, o).await != Some(false)
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let reached = t.elapsed();
    for (i, uid) in pods_before.iter().enumerate() {
        assert_eq!(
            &pod_uid(&store.pods, &store.member(i)).await,
            uid,
            "no member pod was replaced"
        );
    }

    // The operator can still fail the store over with it.
    let leader = before.leader.clone().expect("a leader");
    let t_kill = Instant::now();
    process::signal(pod_pid(cluster, &store.ns, &leader), "KILL");
    let after = wait_failover(
        cluster,
        &store,
        before.epoch,
        t_kill,
        "leader SIGKILL with the new token",
    )
    .await;
    assert!(after.epoch > before.epoch);
    rstore_testkit::figure!(
        "day2: rotate: admin token Secret deleted: recreated by the operator in {:.1} s, taken by all 3 running members (old one refused) {:.1} s after the delete, no pod restarted; a failover with it then took {:.2} s; scenario {:.1} s",
        recreated.as_secs_f64(),
        reached.as_secs_f64(),
        t_kill.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The replication settings `/status` reports for a member, through its
/// pod IP (the admin port needs no token for reads).
async fn member_settings(store: &Store, member: &str) -> Option<Value> {
    let ip = store.pods.get(member).await.ok()?.status?.pod_ip?;
    let admin: SocketAddr = format!("{ip}:8080").parse().ok()?;
    let (code, body) = http(admin, "GET", "/config", &[], "");
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

#[tokio::test]
async fn a_replication_settings_change_restarts_no_pod_and_reaches_every_member() {
    let Some(cluster) = k8s::shared() else { return };
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let store = deploy(cluster, "cfg", &Value::Null).await;
    let st0 = store.status().await;
    let mut before = BTreeMap::new();
    for i in 0..3 {
        let n = store.member(i);
        let uid = pod_uid(&store.pods, &n).await.expect("uid");
        before.insert(n.clone(), (uid, pod_pid(cluster, &store.ns, &n)));
        let s = member_settings(&store, &n).await.expect("GET /config");
        assert_eq!(s["sync_replicas"], 1, "{n}: {s}");
    }

    let writer = Writer::start(store.leader_svc, "cfg", PACE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    patch_spec(
        cluster,
        &store,
        json!({"replication": {"syncReplicas": 2, "syncTimeoutMs": 3000, "ackLevel": "durable"}}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut applied_in = None;
    loop {
        let mut on_all = true;
        for i in 0..3 {
            let s = member_settings(&store, &store.member(i)).await;
            on_all &= s.is_some_and(|s| {
                s["sync_replicas"] == 2
                    && s["sync_timeout_ms"] == 3000
                    && s["ack_level"] == "durable"
            });
        }
        if on_all {
            applied_in.get_or_insert(t.elapsed());
            let st = store.status().await;
            if st.members.iter().all(|m| m.settings_in_sync == Some(true)) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the settings did not reach every member in 60 s\noperator log:\n{}",
            operator_log(cluster)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = writer.stop();

    // No pod was replaced and no process restarted.
    for (n, (uid, pid)) in &before {
        assert_eq!(
            pod_uid(&store.pods, n).await.as_ref(),
            Some(uid),
            "{n} replaced"
        );
        assert_eq!(pod_pid(cluster, &store.ns, n), *pid, "{n} restarted");
    }
    let st = store.status().await;
    assert_eq!(st.leader, st0.leader, "no switchover for a settings change");
    assert_eq!(st.epoch, st0.epoch);
    // Semi-sync K=2 with two followers: writes go on, and none was lost.
    let lost = lost_writes(store.leader_svc, "cfg", &report);
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        report.errors.is_empty(),
        "writes failed during the change: {:?}",
        report.errors
    );
    rstore_testkit::figure!(
        "day2: settings: syncReplicas 1 -> 2 on 3 members in {:.2} s without a restart; {}; scenario {:.1} s",
        applied_in.unwrap_or_default().as_secs_f64(),
        report.summary(),
        started.elapsed().as_secs_f64()
    );
}
