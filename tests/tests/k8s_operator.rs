//! The user's path on a real API server: `helm install` of charts/rstore
//! (the operator pod runs as the rstore-operator process under the chart's
//! ServiceAccount token, so the chart's RBAC is enforced), `kubectl apply`
//! of the example ReplicatedStore, whose pods the stand-in kubelet runs as
//! rstore-node processes; then writes through the leader Service, reads
//! through the read Service, READONLY on followers, and failovers through
//! the real operator: the leader pod deleted, its process killed with
//! SIGKILL, and stopped with SIGSTOP.
//!
//! The operator is installed once per test binary (one cluster); each test
//! has its own namespace and store. `RSTORE_SKIP_K8S=1` skips them. The
//! shared steps are in `rstore_e2e::k8s::scenario`.

use std::time::{Duration, Instant};

use rstore_e2e::k8s;
use rstore_e2e::k8s::scenario::{
    KEYS, OPERATOR_NS, assert_no_rbac_denials, check_keys, deploy_example, endpoints,
    failover_under_writer, pod_ips, redis_at, wait_member, write_keys,
};

#[tokio::test]
async fn helm_install_then_the_example_store_serves_and_fails_over_on_pod_delete() {
    let Some(cluster) = k8s::shared() else { return };
    let store = deploy_example(cluster, "demo").await;
    let ns = &store.ns;
    let sa = cluster
        .kubectl_run(
            &[
                "-n",
                OPERATOR_NS,
                "get",
                "pods",
                "-o",
                "jsonpath={.items[0].spec.serviceAccountName}",
            ],
            None,
        )
        .expect("operator pod");
    assert_eq!(
        sa, "rstore",
        "the operator pod runs as the chart's ServiceAccount"
    );

    let st = store.status().await;
    let leader = st.leader.clone().expect("a leader");
    let followers: Vec<String> = (0..3)
        .map(|i| store.member(i))
        .filter(|p| *p != leader)
        .collect();

    // The leader and read Services select the right pods.
    let want_leader = pod_ips(&store.pods, std::slice::from_ref(&leader)).await;
    let want_read = pod_ips(&store.pods, &followers).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (l, r) = (
            endpoints(&store.slices, "demo-leader").await,
            endpoints(&store.slices, "demo-read").await,
        );
        if l == want_leader && r == want_read {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "endpoints: leader {l:?} (want {want_leader:?}), read {r:?} (want {want_read:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kubectl get rstore shows the columns.
    let table = cluster
        .kubectl_run(&["-n", ns, "get", "rstore"], None)
        .expect("kubectl get rstore");
    eprintln!("{table}");
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(row[0], "demo");
    assert_eq!(row[1], leader);
    assert_eq!(row[3], "3/3");
    assert_eq!(row[4], "semi-sync");

    // Writes through the leader Service, reads through the read Service,
    // READONLY on a follower.
    write_keys(&store, "k");
    let mut r = redis_at(store.read_svc).expect("connect through demo-read");
    rstore_testkit::wait_until(Duration::from_secs(20), "reads through demo-read", || {
        redis::cmd("GET")
            .arg(format!("k{}", KEYS - 1))
            .query::<Option<String>>(&mut r)
            .ok()
            .flatten()
            .filter(|v| *v == (KEYS - 1).to_string())
    });
    let err = redis::cmd("SET")
        .arg("nope")
        .arg(1)
        .query::<()>(&mut r)
        .expect_err("a follower refuses writes");
    assert!(
        err.to_string()
            .contains("You can't write against a read only replica"),
        "READONLY on a follower, got: {err}"
    );

    // Failover: delete the leader pod, under a continuous writer.
    let t = Instant::now();
    let (after, _) = failover_under_writer(cluster, &store, "leader pod deleted", || {
        cluster
            .kubectl_run(&["-n", ns, "delete", "pod", &leader, "--wait=false"], None)
            .expect("delete the leader pod");
    })
    .await;
    assert_ne!(after.leader.as_deref(), Some(leader.as_str()));
    check_keys(&store, "k");
    // The StatefulSet recreates the pod; it rejoins as a follower.
    wait_member(&store, &leader, &["follower"]).await;
    rstore_testkit::figure!(
        "k8s: demo: {leader} back as a follower {:.2} s after its pod was deleted",
        t.elapsed().as_secs_f64()
    );
    assert_no_rbac_denials(cluster);
}

#[tokio::test]
async fn the_leader_process_killed_with_sigkill_fails_over_and_returns() {
    let Some(cluster) = k8s::shared() else { return };
    let store = deploy_example(cluster, "kill").await;
    let st = store.status().await;
    let leader = st.leader.clone().expect("a leader");
    write_keys(&store, "k");
    let pid = cluster
        .kubelet()
        .pod_pid(&store.ns, &leader)
        .expect("the leader's pid");
    let t = Instant::now();
    let (after, _) = failover_under_writer(cluster, &store, "leader SIGKILL", || {
        k8s::process::signal(pid, "KILL")
    })
    .await;
    check_keys(&store, "k");
    // The container restarts at once (restartPolicy Always) and comes back
    // as a follower; when it is back before the operator chose, it can be
    // chosen again (it holds every committed record; ties go to the lowest
    // ordinal), at a new epoch.
    let roles: &[&str] = if after.leader.as_deref() == Some(leader.as_str()) {
        &["leader"]
    } else {
        &["follower"]
    };
    let role = wait_member(&store, &leader, roles).await;
    rstore_testkit::figure!(
        "k8s: kill: {leader} back as {role} {:.2} s after SIGKILL (restarts: {})",
        t.elapsed().as_secs_f64(),
        cluster
            .kubelet()
            .pod(&store.ns, &leader)
            .map(|p| p.restarts)
            .unwrap_or_default()
    );
    assert_no_rbac_denials(cluster);
}

#[tokio::test]
async fn the_leader_process_stopped_with_sigstop_fails_over_and_returns_as_follower() {
    let Some(cluster) = k8s::shared() else { return };
    let store = deploy_example(cluster, "stop").await;
    let st = store.status().await;
    let leader = st.leader.clone().expect("a leader");
    write_keys(&store, "k");
    let pid = cluster
        .kubelet()
        .pod_pid(&store.ns, &leader)
        .expect("the leader's pid");
    let t = Instant::now();
    let (after, _) = failover_under_writer(cluster, &store, "leader SIGSTOP", || {
        k8s::process::signal(pid, "STOP")
    })
    .await;
    assert_ne!(after.leader.as_deref(), Some(leader.as_str()));
    check_keys(&store, "k");
    // Resumed, the old leader is fenced and repointed: a follower.
    k8s::process::signal(pid, "CONT");
    wait_member(&store, &leader, &["follower"]).await;
    rstore_testkit::figure!(
        "k8s: stop: {leader} back as a follower {:.2} s after SIGSTOP",
        t.elapsed().as_secs_f64()
    );
    assert_no_rbac_denials(cluster);
}
