//! The ReplicatedStore API against a real kube-apiserver (with etcd and the
//! controller-manager, see `rstore_e2e::k8s`): the committed CRD is accepted,
//! its validation rejects bad specs with its messages, server-side apply of
//! the status behaves as the operator expects, and `kubectl get rstore`
//! prints the columns.
//!
//! The first run on a machine builds the Kubernetes components
//! (tests/cluster/build.sh); `RSTORE_SKIP_K8S=1` skips these tests.

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rstore_e2e::k8s::scenarios::{self, store};
use rstore_e2e::k8s::{self, Cluster};
use rstore_operator::controller::status;
use rstore_operator::crd::{ReplicatedStore, ReplicatedStoreStatus};
use rstore_operator::validate::ValidationError;
use serde_json::{Value, json};

const CRD_FILE: &str = "crds/replicatedstores.rstore.dev.yaml";
/// The operator's field manager (operator/src/labels.rs).
const OPERATOR: &str = "rstore-operator";

async fn setup(prefix: &str) -> Option<(&'static Cluster, Client, k8s::TestNamespace)> {
    let cluster = k8s::shared()?;
    let client = cluster.client().await;
    cluster.install_crds(&client, CRD_FILE).await;
    let ns = cluster.namespace(prefix).await;
    Some((cluster, client, ns))
}

#[tokio::test]
async fn crd_validation_rejects_invalid_specs_with_its_messages() {
    let Some((_cluster, client, ns)) = setup("k8s-api-validation").await else {
        return;
    };
    scenarios::invalid_specs_are_rejected_with_the_crds_messages(client, &ns).await;
}

/// Server-side apply of the status subresource: a field manager that applies
/// a status without `leader` removes the `leader` it applied before (the bug
/// that a mocked API missed), while the operator's status writing, which
/// always sends the whole status it keeps, keeps the leader.
#[tokio::test]
async fn status_apply_keeps_the_leader_only_when_sent() {
    let Some((_cluster, client, ns)) = setup("k8s-api-status").await else {
        return;
    };
    let api: Api<ReplicatedStore> = Api::namespaced(client, &ns);
    api.create(
        &PostParams::default(),
        &store("demo", json!({"replicas": 3})),
    )
    .await
    .expect("create demo");
    let apply = PatchParams::apply(OPERATOR).force();
    let status_patch = |status: Value| {
        json!({
            "apiVersion": "rstore.dev/v1alpha1",
            "kind": "ReplicatedStore",
            "status": status,
        })
    };
    let leader = |s: &ReplicatedStore| s.status.as_ref().and_then(|s| s.leader.clone());

    api.patch_status(
        "demo",
        &apply,
        &Patch::Apply(status_patch(
            json!({"leader": "x-0", "epoch": 1, "replicas": 3}),
        )),
    )
    .await
    .expect("apply a status with a leader");
    let got = api.get("demo").await.expect("get demo");
    assert_eq!(leader(&got).as_deref(), Some("x-0"));

    // The same manager applies a status without `leader`: SSA removes it.
    api.patch_status(
        "demo",
        &apply,
        &Patch::Apply(status_patch(
            json!({"epoch": 1, "replicas": 3, "readyReplicas": 2}),
        )),
    )
    .await
    .expect("apply a status without a leader");
    let got = api.get("demo").await.expect("get demo");
    assert_eq!(
        leader(&got),
        None,
        "server-side apply removes a field its manager owned and no longer sends"
    );
    assert_eq!(got.status.as_ref().map(|s| s.ready_replicas), Some(2));

    // The operator's way: start from the recorded status and change what
    // changed (here the status it writes for an invalid spec), then apply
    // the whole status. The leader stays.
    api.patch_status(
        "demo",
        &apply,
        &Patch::Apply(status_patch(
            json!({"leader": "x-0", "epoch": 2, "replicas": 3}),
        )),
    )
    .await
    .expect("apply a status with a leader again");
    let previous: ReplicatedStoreStatus = api
        .get("demo")
        .await
        .expect("get demo")
        .status
        .expect("status recorded");
    let now: Time = serde_json::from_value(json!("2025-01-01T00:00:00Z")).expect("a Time");
    let next = status::invalid(&previous, &ValidationError::NoImage, Some(1), &now);
    api.patch_status(
        "demo",
        &apply,
        &Patch::Apply(status_patch(
            serde_json::to_value(&next).expect("status as JSON"),
        )),
    )
    .await
    .expect("apply the operator's status");
    let got = api.get("demo").await.expect("get demo");
    let st = got.status.expect("status");
    assert_eq!(
        st.leader.as_deref(),
        Some("x-0"),
        "the operator keeps the leader"
    );
    assert_eq!(st.epoch, 2);
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "InvalidSpec"),
        "conditions written: {:?}",
        st.conditions
    );
}

#[tokio::test]
async fn kubectl_get_rstore_prints_the_columns() {
    let Some((cluster, client, ns)) = setup("k8s-api-kubectl").await else {
        return;
    };
    let api: Api<ReplicatedStore> = Api::namespaced(client, &ns);
    api.create(
        &PostParams::default(),
        &store(
            "demo",
            json!({"replicas": 3, "replication": {"mode": "sync"}}),
        ),
    )
    .await
    .expect("create demo");
    api.patch_status(
        "demo",
        &PatchParams::apply(OPERATOR).force(),
        &Patch::Apply(json!({
            "apiVersion": "rstore.dev/v1alpha1",
            "kind": "ReplicatedStore",
            "status": {"leader": "demo-1", "epoch": 4, "replicas": 3, "readyReplicas": 2, "ready": "2/3"},
        })),
    )
    .await
    .expect("apply status");

    let started = Instant::now();
    // The short name and the printer columns come from the CRD.
    let out = cluster
        .kubectl_run(&["-n", &ns, "get", "rstore"], None)
        .expect("kubectl get rstore");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "LEADER", "EPOCH", "READY", "MODE", "AGE"],
        "{out}"
    );
    let row: Vec<&str> = lines
        .get(1)
        .unwrap_or_else(|| panic!("no row: {out}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[..5], ["demo", "demo-1", "4", "2/3", "sync"], "{out}");
    eprintln!(
        "kubectl get rstore ({:.2} s):\n{out}",
        started.elapsed().as_secs_f64()
    );

    // The full resource name and the API resource list agree.
    let out = cluster
        .kubectl_run(
            &["api-resources", "--api-group=rstore.dev", "-o", "wide"],
            None,
        )
        .expect("kubectl api-resources");
    assert!(
        out.contains("replicatedstores")
            && out.contains("rstore")
            && out.contains("ReplicatedStore"),
        "{out}"
    );
}
