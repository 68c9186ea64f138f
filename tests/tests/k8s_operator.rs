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
