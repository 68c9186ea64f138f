//! Operator scenarios that run on any [`Platform`]: the real control
//! plane of this machine (`tests/k8s_operator.rs`, `tests/k8s_day2.rs`,
//! `tests/k8s_api.rs`, every CI run) and a kind cluster
//! (`tests/kind_e2e.rs`, `tests/kind/run.sh`). One source: a scenario
//! takes a cluster and does not care which. The steps they share are in
//! [`super::scenario`].

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rstore_operator::crd::{ReplicatedStore, ReplicatedStoreStatus};
use serde_json::{Value, json};

use super::platform::Platform;
use super::scenario::{
    KEYS, OPERATOR_NS, Store, assert_no_rbac_denials, check_keys, deploy, deploy_example,
    endpoints, failover_under_writer, kubectl, operator_metric, patch_spec, pod_ips, pod_uid,
    redis_at, settled, sts_replicas, until, wait_member, wait_old_leader_back, write_keys,
};

// ------------------------------------------------ the example store

/// The chart's example applied with kubectl: the operator runs as the
/// chart's ServiceAccount; the leader and read Services select the right
/// pods; `kubectl get rstore` prints the columns; writes through the
/// leader Service, reads through the read Service, READONLY on a
/// follower; then the leader pod deleted under a continuous writer: no
/// acknowledged write lost, the pod back as a follower.
pub async fn the_example_store_serves_and_fails_over_on_pod_delete(cluster: &dyn Platform) {
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
    let followers = store.followers_of(&leader);

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
    let failovers = operator_metric(cluster, "rstore_failovers_total");
    let timed = operator_metric(cluster, "rstore_failover_duration_seconds_count");
    let t = Instant::now();
    let (after, _) = failover_under_writer(cluster, &store, "leader pod deleted", || {
        cluster
            .kubectl_run(&["-n", ns, "delete", "pod", &leader, "--wait=false"], None)
            .expect("delete the leader pod");
    })
    .await;
    check_keys(&store, "k");
    // The active operator counted and timed it on /metrics.
    until(
        cluster,
        "the failover on the operator's /metrics",
        Duration::from_secs(20),
        || async {
            (operator_metric(cluster, "rstore_failovers_total") > failovers
                && operator_metric(cluster, "rstore_failover_duration_seconds_count") > timed)
                .then_some(())
        },
    )
    .await;
    // The StatefulSet recreates the pod under the same name and volume.
    let role = wait_old_leader_back(&store, &leader, &after).await;
    rstore_testkit::figure!(
        "k8s: demo: {leader} back as {role} {:.2} s after its pod was deleted",
        t.elapsed().as_secs_f64()
    );
    assert_no_rbac_denials(cluster);
}

/// The example store `name` with some keys written, then `signal` sent to
/// its leader's process under a continuous writer (see
/// [`failover_under_writer`]); the keys are checked after the failover.
/// The store, the old leader, the status after, and when the signal went.
async fn signal_the_leader(
    cluster: &dyn Platform,
    name: &str,
    signal: &str,
) -> (Store, String, ReplicatedStoreStatus, Instant) {
    let store = deploy_example(cluster, name).await;
    let leader = store.status().await.leader.expect("a leader");
    write_keys(&store, "k");
    let t = Instant::now();
    let what = format!("leader SIG{signal}");
    let (after, _) = failover_under_writer(cluster, &store, &what, || {
        cluster
            .signal_pod(&store.ns, &leader, signal)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    })
    .await;
    check_keys(&store, "k");
    (store, leader, after, t)
}

/// The leader's process killed with SIGKILL under a continuous writer:
/// no acknowledged write lost; the restarted container comes back.
pub async fn the_leader_process_killed_with_sigkill_fails_over_and_returns(cluster: &dyn Platform) {
    let (store, leader, after, t) = signal_the_leader(cluster, "kill", "KILL").await;
    // The container restarts at once (restartPolicy Always).
    let role = wait_old_leader_back(&store, &leader, &after).await;
    rstore_testkit::figure!(
        "k8s: kill: {leader} back as {role} {:.2} s after SIGKILL ({})",
        t.elapsed().as_secs_f64(),
        cluster.name()
    );
    assert_no_rbac_denials(cluster);
}

/// The leader's process stopped with SIGSTOP (a hung node) under a
/// continuous writer: found by the probes, failed over, no acknowledged
/// write lost; resumed, the old leader is a follower.
pub async fn the_leader_process_stopped_with_sigstop_fails_over_and_returns_as_follower(
    cluster: &dyn Platform,
) {
    let (store, leader, after, t) = signal_the_leader(cluster, "stop", "STOP").await;
    assert_ne!(after.leader.as_deref(), Some(leader.as_str()));
    // Resumed, the old leader is fenced and repointed: a follower.
    cluster
        .signal_pod(&store.ns, &leader, "CONT")
        .expect("SIGCONT the old leader");
    wait_member(&store, &leader, &["follower"]).await;
    rstore_testkit::figure!(
        "k8s: stop: {leader} back as a follower {:.2} s after SIGSTOP",
        t.elapsed().as_secs_f64()
    );
    assert_no_rbac_denials(cluster);
}

// ------------------------------------------------------------- scaling

/// Scale 3 -> 5 -> 3: the leader is never removed nor replaced, no
/// failover, the new members catch up, the removed members' volumes
/// are kept (`whenScaled: Retain`).
pub async fn scale_3_to_5_to_3_never_removes_the_leader(cluster: &dyn Platform) {
    let started = Instant::now();
    let store = deploy(cluster, "scale", &Value::Null).await;
    let client = cluster.client().await;
    let st0 = store.status().await;
    let leader = st0.leader.clone().expect("a leader");
    let leader_uid = pod_uid(&store.pods, &leader).await.expect("leader pod");
    write_keys(&store, "a");

    // The leader's pod stays the same pod throughout.
    let check_leader = |st: &ReplicatedStoreStatus, uid: Option<String>| {
        assert_eq!(st.leader.as_deref(), Some(leader.as_str()), "leader kept");
        assert_eq!(st.epoch, st0.epoch, "no failover: {:?}", st.last_failover);
        assert_eq!(
            uid.as_deref(),
            Some(leader_uid.as_str()),
            "leader pod never replaced"
        );
    };

    let t = Instant::now();
    patch_spec(cluster, &store, json!({"replicas": 5}));
    let s = &store;
    until(
        cluster,
        "5 ready members",
        Duration::from_secs(120),
        || async {
            let st = s.status().await;
            check_leader(&st, pod_uid(&s.pods, &leader).await);
            settled(&st, 5).then_some(())
        },
    )
    .await;
    let up = t.elapsed();
    write_keys(&store, "b");
    // The new members have every write.
    let st = store.status().await;
    let leader_offset = st
        .members
        .iter()
        .find(|m| m.name == leader)
        .map(|m| m.offset)
        .expect("leader member");
    until(
        cluster,
        "members 3 and 4 caught up",
        Duration::from_secs(30),
        || async {
            let st = s.status().await;
            ["scale-3", "scale-4"]
                .iter()
                .all(|n| {
                    st.members
                        .iter()
                        .any(|m| m.name == *n && m.role == "follower" && m.offset >= leader_offset)
                })
                .then_some(())
        },
    )
    .await;

    let t = Instant::now();
    patch_spec(cluster, &store, json!({"replicas": 3}));
    until(
        cluster,
        "3 members again",
        Duration::from_secs(120),
        || async {
            let st = s.status().await;
            check_leader(&st, pod_uid(&s.pods, &leader).await);
            let replicas = sts_replicas(s, &client).await;
            let gone = pod_uid(&s.pods, "scale-3").await.is_none()
                && pod_uid(&s.pods, "scale-4").await.is_none();
            (settled(&st, 3) && replicas == Some(3) && gone).then_some(())
        },
    )
    .await;
    let down = t.elapsed();
    let st = store.status().await;
    let names: Vec<&str> = st.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["scale-0", "scale-1", "scale-2"], "members listed");
    assert_eq!(st.ready.as_deref(), Some("3/3"));
    // Scale-down keeps the removed members' volumes (whenScaled: Retain).
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &store.ns);
    for claim in ["data-scale-3", "data-scale-4"] {
        assert!(
            pvcs.get_opt(claim).await.expect("get PVC").is_some(),
            "{claim} kept after scale-down"
        );
    }
    check_keys(&store, "a");
    check_keys(&store, "b");
    rstore_testkit::figure!(
        "day2: scale: 3 -> 5 ready in {:.1} s, 5 -> 3 settled in {:.1} s, leader {leader} kept at epoch {}; scenario {:.1} s",
        up.as_secs_f64(),
        down.as_secs_f64(),
        st.epoch,
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------ deletion

/// Whether the named object of kind K exists (and is not being deleted).
async fn exists<K>(client: &kube::Client, ns: &str, name: &str) -> bool
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.expect("get").is_some()
}

/// The store's owned objects that still exist.
async fn owned_left(client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let mut left = Vec::new();
    if exists::<StatefulSet>(client, ns, name).await {
        left.push(format!("statefulset/{name}"));
    }
    for svc in [
        format!("{name}-headless"),
        format!("{name}-leader"),
        format!("{name}-read"),
    ] {
        if exists::<Service>(client, ns, &svc).await {
            left.push(format!("service/{svc}"));
        }
    }
    if exists::<PodDisruptionBudget>(client, ns, name).await {
        left.push(format!("pdb/{name}"));
    }
    let secret = format!("{name}-admin-token");
    if exists::<Secret>(client, ns, &secret).await {
        left.push(format!("secret/{secret}"));
    }
    for i in 0..3 {
        let pod = format!("{name}-{i}");
        if exists::<Pod>(client, ns, &pod).await {
            left.push(format!("pod/{pod}"));
        }
    }
    left
}

async fn claims(client: &kube::Client, ns: &str) -> Vec<String> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mut names: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("list PVCs")
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| c.name_any())
        .collect();
    names.sort();
    names
}

/// Delete the store; wait until the garbage collector removed what it
/// owns; the claims left.
async fn delete_store(
    cluster: &dyn Platform,
    store: &Store,
    client: &kube::Client,
) -> (Duration, Vec<String>) {
    let (ns, name) = (&*store.ns, store.name.as_str());
    let left = owned_left(client, ns, name).await;
    assert_eq!(left.len(), 9, "every owned object exists before: {left:?}");
    // Each one is owned by the store (the Secret too).
    let uid = store
        .api
        .get(name)
        .await
        .expect("store")
        .uid()
        .expect("uid");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get(&format!("{name}-admin-token"))
        .await
        .expect("admin token Secret");
    assert!(
        secret
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true)),
        "the admin token Secret is owned by the store: {:?}",
        secret.owner_references()
    );
    let t = Instant::now();
    kubectl(cluster, ns, &["delete", "rstore", name, "--wait=false"]);
    until(
        cluster,
        "the garbage collector to remove the store's objects",
        Duration::from_secs(90),
        || async {
            let gone = store.api.get_opt(name).await.expect("get store").is_none();
            (gone && owned_left(client, ns, name).await.is_empty()).then_some(())
        },
    )
    .await;
    let took = t.elapsed();
    // Give the garbage collector time to (wrongly) take the claims too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    (took, claims(client, ns).await)
}

/// Deleting the store: the garbage collector removes what it owns
/// (StatefulSet, Services, PDB, admin token Secret, pods); the claims
/// (and their data, where the platform can look) are kept unless
/// `storage.deleteClaimsOnDelete`.
pub async fn deleting_the_store_removes_what_it_owns_and_keeps_the_volumes_unless_asked(
    cluster: &dyn Platform,
) {
    let started = Instant::now();
    let client = cluster.client().await;

    let store = deploy(cluster, "gone", &Value::Null).await;
    write_keys(&store, "k");
    let before = claims(&client, &store.ns).await;
    assert_eq!(before, ["data-gone-0", "data-gone-1", "data-gone-2"]);
    let (took, after) = delete_store(cluster, &store, &client).await;
    assert_eq!(after, before, "the volumes are kept by default");
    // Their data too, where the platform can look.
    assert_ne!(
        cluster.volume_has_data(&store.ns, "data-gone-0"),
        Some(false),
        "data-gone-0 keeps its files"
    );
    rstore_testkit::figure!(
        "day2: delete: StatefulSet, 3 Services, PDB, admin token Secret and pods gone {:.1} s after kubectl delete; PVCs kept: {after:?}",
        took.as_secs_f64()
    );

    let store = deploy(
        cluster,
        "gonec",
        &json!({"storage": {"size": "1Gi", "deleteClaimsOnDelete": true}}),
    )
    .await;
    assert_eq!(claims(&client, &store.ns).await.len(), 3);
    let t = Instant::now();
    let (took, _) = delete_store(cluster, &store, &client).await;
    let c = &client;
    let ns = store.ns.name.clone();
    until(
        cluster,
        "the claims to go (deleteClaimsOnDelete)",
        Duration::from_secs(60),
        || {
            let ns = ns.clone();
            async move {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), &ns);
                api.list(&Default::default())
                    .await
                    .ok()
                    .filter(|l| l.items.is_empty())
                    .map(|_| ())
            }
        },
    )
    .await;
    rstore_testkit::figure!(
        "day2: delete with deleteClaimsOnDelete: owned objects gone in {:.1} s, PVCs gone within {:.1} s of kubectl delete; scenario {:.1} s",
        took.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------- validation

pub fn store(name: &str, spec: Value) -> ReplicatedStore {
    serde_json::from_value(json!({
        "apiVersion": "rstore.dev/v1alpha1",
        "kind": "ReplicatedStore",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("ReplicatedStore from JSON")
}

/// Create a ReplicatedStore that the API server must reject: the status
/// code and message.
pub async fn rejected(api: &Api<ReplicatedStore>, name: &str, spec: Value) -> (u16, String) {
    match api
        .create(&PostParams::default(), &store(name, spec.clone()))
        .await
    {
        Ok(_) => panic!("the API server accepted an invalid ReplicatedStore {name}: {spec}"),
        Err(kube::Error::Api(e)) => (e.code, e.message),
        Err(e) => panic!("create {name}: unexpected error {e}"),
    }
}

/// The API server refuses invalid specs with the CRD's messages (schema
/// bounds, CEL rules, an immutable field), and fills the defaults of a
/// valid one. `client` may create ReplicatedStores in namespace `ns`.
pub async fn invalid_specs_are_rejected_with_the_crds_messages(client: kube::Client, ns: &str) {
    let api: Api<ReplicatedStore> = Api::namespaced(client, ns);

    let (code, msg) = rejected(
        &api,
        "sync-too-many",
        json!({"replicas": 3, "replication": {"mode": "semi-sync", "syncReplicas": 3}}),
    )
    .await;
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("replication.syncReplicas must be less than replicas"),
        "the CRD's CEL message, got: {msg}"
    );

    let (code, msg) = rejected(&api, "no-members", json!({"replicas": 0})).await;
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("spec.replicas") && msg.contains("greater than or equal to 1"),
        "the schema's minimum, got: {msg}"
    );

    let (code, msg) = rejected(
        &api,
        "slow-probe",
        json!({"failover": {"probePeriodMs": 100, "probeTimeoutMs": 500}}),
    )
    .await;
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("failover.probeTimeoutMs must not exceed failover.probePeriodMs"),
        "the CRD's CEL message, got: {msg}"
    );

    let long = "a".repeat(53);
    let (code, msg) = rejected(&api, &long, json!({})).await;
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("metadata.name must be at most 52 characters"),
        "the CRD's CEL message, got: {msg}"
    );

    // Immutable storage size (a CEL transition rule).
    api.create(
        &PostParams::default(),
        &store("fixed", json!({"replicas": 3, "storage": {"size": "1Gi"}})),
    )
    .await
    .expect("create a valid ReplicatedStore");
    let err = api
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"storage": {"size": "2Gi"}}})),
        )
        .await
        .expect_err("storage.size must be immutable");
    let msg = err.to_string();
    assert!(msg.contains("storage.size is immutable"), "{msg}");

    // A valid one is accepted, with the schema's defaults filled in.
    let created = api
        .create(&PostParams::default(), &store("ok", json!({})))
        .await
        .expect("create a ReplicatedStore with every default");
    let spec = serde_json::to_value(&created.spec).expect("spec as JSON");
    assert_eq!(spec["replicas"], 3, "{spec}");
    assert_eq!(spec["replication"]["mode"], "semi-sync", "{spec}");
}
