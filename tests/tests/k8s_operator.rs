//! The user's path on a real API server: `helm install` of charts/rstore
//! (the operator pod runs as the rstore-operator process under the chart's
//! ServiceAccount token, so the chart's RBAC is enforced), `kubectl apply`
//! of the example ReplicatedStore, whose pods the stand-in kubelet runs as
//! rstore-node processes; then writes through the leader Service, reads
//! through the read Service, READONLY on followers, and failovers through
//! the real operator under a continuous writer: the leader pod deleted,
//! its process killed with SIGKILL, and stopped with SIGSTOP.
//!
//! The scenarios are `rstore_e2e::k8s::scenarios`, the same ones
//! `tests/kind_e2e.rs` runs on kind. The operator is installed once per
//! test binary (one cluster); each test has its own namespace and store.
//! `RSTORE_SKIP_K8S=1` skips them.

use rstore_e2e::k8s::{self, scenarios};

#[tokio::test]
async fn helm_install_then_the_example_store_serves_and_fails_over_on_pod_delete() {
    let Some(cluster) = k8s::shared() else { return };
    scenarios::the_example_store_serves_and_fails_over_on_pod_delete(cluster).await;
}

#[tokio::test]
async fn the_leader_process_killed_with_sigkill_fails_over_and_returns() {
    let Some(cluster) = k8s::shared() else { return };
    scenarios::the_leader_process_killed_with_sigkill_fails_over_and_returns(cluster).await;
}

#[tokio::test]
async fn the_leader_process_stopped_with_sigstop_fails_over_and_returns_as_follower() {
    let Some(cluster) = k8s::shared() else { return };
    scenarios::the_leader_process_stopped_with_sigstop_fails_over_and_returns_as_follower(cluster)
        .await;
}

/// The chart README's CRD upgrade step, run as written over the CRD that
/// `helm install` created and an older release then changed (here: its
/// schema description, as a new chart version would change a field's):
/// it succeeds and leaves the committed CRD in place.
#[tokio::test]
async fn the_documented_crd_upgrade_step_applies_over_the_helm_installed_crd() {
    let Some(cluster) = k8s::shared() else { return };
    rstore_e2e::k8s::scenario::install_operator(cluster);
    let crd = "crd/replicatedstores.rstore.dev";
    let path = "{.spec.versions[0].schema.openAPIV3Schema.description}";
    let description = |c: &k8s::Cluster| {
        c.kubectl_run(&["get", crd, "-o", &format!("jsonpath={path}")], None)
            .expect("read the CRD")
    };
    let committed = description(cluster);
    assert!(!committed.is_empty());
    // An older chart's CRD, written by another field manager.
    let live = cluster
        .kubectl_run(&["get", crd, "-o", "json"], None)
        .expect("get the CRD");
    let mut old: serde_json::Value = serde_json::from_str(&live).expect("CRD JSON");
    old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] =
        "an older release's description".into();
    cluster
        .kubectl_run(&["replace", "-f", "-"], Some(&old.to_string()))
        .expect("write the older CRD");
    assert_ne!(description(cluster), committed);

    // The documented step, word for word (from the workspace root).
    let readme =
        std::fs::read_to_string(k8s::components::workspace_root().join("charts/rstore/README.md"))
            .expect("read the chart README");
    let step = readme
        .lines()
        .find(|l| l.starts_with("kubectl apply") && l.contains("crds/"))
        .expect("the README documents a kubectl apply of the CRD");
    let args: Vec<String> = step
        .split_whitespace()
        .skip(1)
        .map(|a| {
            if a.starts_with("charts/") {
                k8s::components::workspace_root()
                    .join(a)
                    .display()
                    .to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster
        .kubectl_run(&args, None)
        .unwrap_or_else(|e| panic!("the chart README's CRD step `{step}` failed: {e}"));
    assert_eq!(
        description(cluster),
        committed,
        "the committed CRD is in place"
    );
}
