//! kind end-to-end scenarios: a real cluster with the operator installed by
//! the Helm chart (`tests/kind/run.sh` sets that up and runs these with
//! `--ignored`). They compile in every CI run; the same logic runs without
//! a cluster in the operator's mocked-API tests (create, scale, deletion).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, PostParams};
use rstore_e2e::kind::{self, PortForward};
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn store_becomes_available() {
    let client = kind::client().await.unwrap();
    let ns = "e2e-available";
    kind::namespace(&client, ns).await.unwrap();
    kind::apply_store(&client, ns, "avail", json!({"replicas": 3}))
        .await
        .unwrap();
    let store = kind::wait_available(&client, ns, "avail", 3, READY_TIMEOUT)
        .await
        .unwrap();
    let status = store.status.unwrap();
    assert_eq!(status.leader.as_deref(), Some("avail-0"));
    assert!(status.epoch >= 1);
    assert_eq!(
        status.members.iter().filter(|m| m.role == "leader").count(),
        1
    );
    assert_eq!(
        status
            .members
            .iter()
            .filter(|m| m.role == "follower")
            .count(),
        2
    );
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn write_through_leader_read_through_followers() {
    let client = kind::client().await.unwrap();
    let ns = "e2e-rw";
    kind::namespace(&client, ns).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "rw-password"},
        "stringData": {"password": "s3cret"},
    }))
    .unwrap();
    let _ = secrets.create(&PostParams::default(), &secret).await;
    kind::apply_store(
        &client,
        ns,
        "rw",
        json!({"replicas": 3, "auth": {"passwordSecretRef": {"name": "rw-password"}}}),
    )
    .await
    .unwrap();
    kind::wait_available(&client, ns, "rw", 3, READY_TIMEOUT)
        .await
        .unwrap();

    // Plain blocking redis connections: a few commands, no need for an
    // async client.
    let leader = PortForward::service(ns, "rw-leader", 6379).await.unwrap();
    let mut writer = redis::Client::open(leader.url(Some("s3cret")))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query(&mut writer)
        .unwrap();

    let read = PortForward::service(ns, "rw-read", 6379).await.unwrap();
    let reader = std::sync::Arc::new(std::sync::Mutex::new(
        redis::Client::open(read.url(Some("s3cret")))
            .unwrap()
            .get_connection()
            .unwrap(),
    ));
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query(&mut *reader.lock().unwrap())
        .unwrap();
    assert!(
        format!("{:?}", role[0]).contains("slave"),
        "read Service reached {role:?}"
    );
    let value: String = kind::wait_for("the write on a follower", Duration::from_secs(30), || {
        let reader = reader.clone();
        async move {
            let v: Option<String> = redis::cmd("GET")
                .arg("greeting")
                .query(&mut *reader.lock().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            Ok(v)
        }
    })
    .await
    .unwrap();
    assert_eq!(value, "hello");
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("x")
        .arg("y")
        .query(&mut *reader.lock().unwrap());
    assert!(refused.unwrap_err().to_string().contains("READONLY"));
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn scale_three_five_three() {
    let client = kind::client().await.unwrap();
    let ns = "e2e-scale";
    kind::namespace(&client, ns).await.unwrap();
    kind::apply_store(&client, ns, "sc", json!({"replicas": 3}))
        .await
        .unwrap();
    kind::wait_available(&client, ns, "sc", 3, READY_TIMEOUT)
        .await
        .unwrap();

    kind::apply_store(&client, ns, "sc", json!({"replicas": 5}))
        .await
        .unwrap();
    let five = kind::wait_available(&client, ns, "sc", 5, READY_TIMEOUT)
        .await
        .unwrap();
    let status = five.status.unwrap();
    assert_eq!(
        status.leader.as_deref(),
        Some("sc-0"),
        "scaling up keeps the leader"
    );
    assert_eq!(
        status
            .members
            .iter()
            .filter(|m| m.role == "follower")
            .count(),
        4
    );

    kind::apply_store(&client, ns, "sc", json!({"replicas": 3}))
        .await
        .unwrap();
    kind::wait_available(&client, ns, "sc", 3, READY_TIMEOUT)
        .await
        .unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    assert_eq!(sts.get("sc").await.unwrap().spec.unwrap().replicas, Some(3));
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn deleting_the_store_removes_everything_but_the_data() {
    let client = kind::client().await.unwrap();
    let ns = "e2e-delete";
    kind::namespace(&client, ns).await.unwrap();
    kind::apply_store(
        &client,
        ns,
        "gone",
        json!({"replicas": 3, "replication": {"mode": "async"}}),
    )
    .await
    .unwrap();
    kind::wait_available(&client, ns, "gone", 3, READY_TIMEOUT)
        .await
        .unwrap();
    kind::delete_store(&client, ns, "gone").await.unwrap();

    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels("app.kubernetes.io/instance=gone");
    kind::wait_for(
        "owned objects to be garbage-collected",
        Duration::from_secs(120),
        || {
            let (sts, svcs, pdbs, selector) =
                (sts.clone(), svcs.clone(), pdbs.clone(), selector.clone());
            async move {
                let left = sts
                    .list(&selector)
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .len()
                    + svcs
                        .list(&selector)
                        .await
                        .map_err(|e| e.to_string())?
                        .items
                        .len()
                    + pdbs
                        .list(&selector)
                        .await
                        .map_err(|e| e.to_string())?
                        .items
                        .len();
                if left == 0 {
                    Ok(Some(()))
                } else {
                    Err(format!("{left} objects left"))
                }
            }
        },
    )
    .await
    .unwrap();
    // Volumes are kept unless spec.storage.deleteClaimsOnDelete is set.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    assert_eq!(pvcs.list(&selector).await.unwrap().items.len(), 3);
}

#[tokio::test]
#[ignore = "needs a kind cluster (tests/kind/run.sh)"]
async fn deleting_the_leader_pod_fails_over_and_writes_resume() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::DeleteParams;
    use rstore_operator::crd::ReplicatedStore;

    let client = kind::client().await.unwrap();
    let ns = "e2e-failover";
    kind::namespace(&client, ns).await.unwrap();
    kind::apply_store(&client, ns, "fo", json!({"replicas": 3}))
        .await
        .unwrap();
    let store = kind::wait_available(&client, ns, "fo", 3, READY_TIMEOUT)
        .await
        .unwrap();
    let old_leader = store.status.unwrap().leader.unwrap();

    // Acknowledged writes through the leader Service (semi-sync, K=1).
    let acked: Vec<String> = {
        let leader = PortForward::service(ns, "fo-leader", 6379).await.unwrap();
        let mut c = redis::Client::open(leader.url(None))
            .unwrap()
            .get_connection()
            .unwrap();
        (0..200)
            .map(|i| {
                let key = format!("k{i}");
                let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut c).unwrap();
                key
            })
            .collect()
    };

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.delete(&old_leader, &DeleteParams::default())
        .await
        .unwrap();
    let stores: Api<ReplicatedStore> = Api::namespaced(client.clone(), ns);
    let failed_over = kind::wait_for("a new leader", Duration::from_secs(60), || {
        let (stores, old_leader) = (stores.clone(), old_leader.clone());
        async move {
            let status = stores
                .get("fo")
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            match (&status.leader, &status.last_failover) {
                (Some(l), Some(f)) if *l != old_leader && f.new_leader == *l => Ok(Some(status)),
                _ => Err(format!("{:?} {:?}", status.leader, status.last_failover)),
            }
        }
    })
    .await
    .unwrap();
    let record = failed_over.last_failover.unwrap();
    assert_eq!(record.old_leader.as_deref(), Some(old_leader.as_str()));
    assert_eq!(record.lost_bytes, 0);
    assert!(failed_over.epoch >= 2);

    // Writes through the leader Service resume, with nothing lost.
    let leader = PortForward::service(ns, "fo-leader", 6379).await.unwrap();
    let mut c = redis::Client::open(leader.url(None))
        .unwrap()
        .get_connection()
        .unwrap();
    for key in &acked {
        let v: Option<String> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
        assert!(v.is_some(), "{key} lost in the failover");
    }
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("failover")
        .query(&mut c)
        .unwrap();

    // The old leader's pod comes back as a follower.
    let store = kind::wait_available(&client, ns, "fo", 3, READY_TIMEOUT)
        .await
        .unwrap();
    let status = store.status.unwrap();
    let old = status
        .members
        .iter()
        .find(|m| m.name == old_leader)
        .unwrap();
    assert_eq!(old.role, "follower");
}
