//! The operator scenarios on a kind cluster: the same scenarios
//! (`rstore_e2e::k8s::scenarios`) that `tests/k8s_operator.rs`,
//! `tests/k8s_day2.rs` and `tests/k8s_api.rs` run against the real API
//! server of this machine in every CI run. `tests/kind/run.sh` creates the
//! cluster, loads the image, installs the chart and runs these with
//! `--ignored`; they compile in every CI run.
//!
//! What only the stand-in kubelet can do (hold a pod's restarts, so an
//! operator killed mid-failover stays down) stays in `tests/k8s_day2.rs`.

use rstore_e2e::k8s::platform::Platform;
use rstore_e2e::k8s::scenarios;
use rstore_e2e::kind;

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn the_example_store_serves_and_fails_over_on_pod_delete() {
    scenarios::the_example_store_serves_and_fails_over_on_pod_delete(kind::platform()).await;
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn the_leader_process_killed_with_sigkill_fails_over_and_returns() {
    scenarios::the_leader_process_killed_with_sigkill_fails_over_and_returns(kind::platform())
        .await;
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn the_leader_process_stopped_with_sigstop_fails_over_and_returns_as_follower() {
    scenarios::the_leader_process_stopped_with_sigstop_fails_over_and_returns_as_follower(
        kind::platform(),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn scale_3_to_5_to_3_never_removes_the_leader() {
    scenarios::scale_3_to_5_to_3_never_removes_the_leader(kind::platform()).await;
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn deleting_the_store_removes_what_it_owns_and_keeps_the_volumes_unless_asked() {
    scenarios::deleting_the_store_removes_what_it_owns_and_keeps_the_volumes_unless_asked(
        kind::platform(),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn invalid_specs_are_rejected_with_the_crds_messages() {
    let p = kind::platform();
    let ns = p.namespace("kind-validation").await;
    scenarios::invalid_specs_are_rejected_with_the_crds_messages(p.client().await, &ns).await;
}
