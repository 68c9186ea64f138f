//! Reconcile scenarios against a mocked API server (tower-test) and fake
//! nodes: every request the operator makes is recorded with its method,
//! path, query and body, and answered as the API server would.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::coordination::fake::FakeNodes;

/// One request the operator sent.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

impl Seen {
    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

/// The fake API server's state: the pods it lists.
#[derive(Clone, Default)]
struct ApiState {
    pods: Vec<Value>,
    store: Value,
}

fn store(spec: Value) -> ReplicatedStore {
    serde_json::from_value(json!({
        "apiVersion": "rstore.dev/v1alpha1",
        "kind": "ReplicatedStore",
        "metadata": {"name": "rs", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn pod(i: i32, role: Option<&str>) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/name": "rstore",
        "app.kubernetes.io/instance": "rs",
        "app.kubernetes.io/managed-by": "rstore-operator",
        "app.kubernetes.io/component": "store",
    });
    if let Some(role) = role {
        labels["rstore.dev/role"] = json!(role);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("rs-{i}"), "namespace": "ns", "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// Run one reconcile of `store` with `pods` and `nodes`; returns the result
/// and every request made.
async fn run(
    store: &ReplicatedStore,
    pods: Vec<Value>,
    nodes: Arc<FakeNodes>,
) -> (Result<Action, Error>, Vec<Seen>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let state = ApiState {
        pods,
        store: serde_json::to_value(store).unwrap(),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in_server = seen.clone();
    let server = tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let entry = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or("").to_string(),
                body,
            };
            let answer = answer(&state, &entry);
            seen_in_server.lock().unwrap().push(entry);
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(Metrics::default()),
        nodes,
        Settings {
            default_image: Some("rstore:test".into()),
        },
    ));
    let result = reconcile(Arc::new(store.clone()), ctx.clone()).await;
    if let Err(err) = &result {
        error_policy(Arc::new(store.clone()), err, ctx.clone());
    }
    drop(ctx);
    server.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

/// What the API server answers to `seen`.
fn answer(state: &ApiState, seen: &Seen) -> Value {
    match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", "/api/v1/namespaces/ns/pods") => {
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": state.pods})
        }
        ("PATCH", p) if p.starts_with("/api/v1/namespaces/ns/pods/") => {
            let name = p.rsplit('/').next().unwrap();
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}})
        }
        ("PATCH", "/apis/rstore.dev/v1alpha1/namespaces/ns/replicatedstores/rs/status") => {
            let mut store = state.store.clone();
            store["status"] = seen.body["status"].clone();
            store
        }
        // Server-side apply and events: the object as sent.
        _ => seen.body.clone(),
    }
}

const STS: &str = "/apis/apps/v1/namespaces/ns/statefulsets/rs";
const STATUS: &str = "/apis/rstore.dev/v1alpha1/namespaces/ns/replicatedstores/rs/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

fn applies(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.method == "PATCH" && s.query.contains("fieldManager=rstore-operator"))
        .filter(|s| s.path != STATUS)
        .collect()
}

fn status_patch(seen: &[Seen]) -> Option<ReplicatedStoreStatus> {
    seen.iter()
        .find(|s| s.is("PATCH", STATUS))
        .map(|s| serde_json::from_value(s.body["status"].clone()).unwrap())
}

fn condition<'a>(
    status: &'a ReplicatedStoreStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

fn sts_replicas(seen: &[Seen]) -> i64 {
    seen.iter().find(|s| s.is("PATCH", STS)).unwrap().body["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn create_applies_every_object_then_reports_progress() {
    let (result, seen) = run(&store(json!({})), vec![], Arc::new(FakeNodes::default())).await;
    assert!(result.is_ok());
    assert!(seen[0].is("GET", "/api/v1/namespaces/ns/pods"));
    assert!(
        seen[0].query.contains("app.kubernetes.io%2Finstance%3Drs"),
        "{}",
        seen[0].query
    );
    let paths: Vec<&str> = applies(&seen).iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/ns/services/rs-headless",
            "/api/v1/namespaces/ns/services/rs-leader",
            "/api/v1/namespaces/ns/services/rs-read",
            "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/rs",
            STS,
        ]
    );
    for apply in applies(&seen) {
        assert!(apply.query.contains("force=true"), "{}", apply.query);
        assert_eq!(apply.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    }
    assert_eq!(sts_replicas(&seen), 3);
    let status = status_patch(&seen).unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.ready.as_deref(), Some("0/3"));
    assert_eq!(condition(&status, "Available").status, "False");
    assert_eq!(condition(&status, "Progressing").status, "True");
    assert!(!seen.iter().any(|s| s.path == EVENTS));
}

#[tokio::test]
async fn members_are_coordinated_labelled_and_reported_then_nothing_changes() {
    let nodes = Arc::new(FakeNodes::idle(3));
    let pods = (0..3).map(|i| pod(i, None)).collect();
    let (result, seen) = run(&store(json!({})), pods, nodes.clone()).await;
    assert!(result.is_ok());
    assert_eq!(nodes.calls().len(), 3);
    assert_eq!(nodes.calls()[0], "promote rs-0 1");
    assert!(nodes.calls()[1].starts_with("follow rs-1 rs-0.rs-headless.ns.svc:7379 1"));

    let relabels: Vec<(&str, &Value)> = seen
        .iter()
        .filter(|s| s.method == "PATCH" && s.path.starts_with("/api/v1/namespaces/ns/pods/"))
        .map(|s| {
            (
                s.path.rsplit('/').next().unwrap(),
                &s.body["metadata"]["labels"]["rstore.dev/role"],
            )
        })
        .collect();
    assert_eq!(relabels.len(), 3);
    assert!(relabels.contains(&("rs-0", &json!("leader"))));
    assert!(relabels.contains(&("rs-2", &json!("follower"))));
    let events: Vec<&str> = seen
        .iter()
        .filter(|s| s.is("POST", EVENTS))
        .map(|s| s.body["reason"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["Promoted", "Following", "Following"]);

    let status = status_patch(&seen).unwrap();
    assert_eq!(status.leader.as_deref(), Some("rs-0"));
    assert_eq!(status.epoch, 1);
    assert_eq!(status.ready.as_deref(), Some("3/3"));
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.ready));
    assert_eq!(status.members[0].role, "leader");
    assert_eq!(condition(&status, "Available").status, "True");
    assert_eq!(condition(&status, "Progressing").reason, "UpToDate");
    assert_eq!(condition(&status, "Degraded").status, "False");

    // In sync: same pods now labelled, same nodes, the status just written.
    let mut synced = store(json!({}));
    synced.status = Some(status);
    let pods = vec![
        pod(0, Some("leader")),
        pod(1, Some("follower")),
        pod(2, Some("follower")),
    ];
    let (result, seen) = run(&synced, pods, nodes.clone()).await;
    assert!(result.is_ok());
    assert_eq!(nodes.calls().len(), 3, "no admin calls");
    assert_eq!(
        seen.len(),
        6,
        "one list and five idempotent applies: {seen:#?}"
    );
    assert!(status_patch(&seen).is_none());
    assert!(!seen.iter().any(|s| s.path == EVENTS));
}

#[tokio::test]
async fn scale_up_applies_more_members_and_new_ones_follow() {
    let nodes = Arc::new(FakeNodes::idle(3));
    let pods: Vec<Value> = (0..3).map(|i| pod(i, None)).collect();
    run(&store(json!({"replicas": 3})), pods, nodes.clone())
        .await
        .0
        .unwrap();
    // Scale to 5: the StatefulSet is applied with 5; two new idle members.
    let (_, seen) = run(
        &store(json!({"replicas": 5})),
        (0..3).map(|i| pod(i, None)).collect(),
        nodes.clone(),
    )
    .await;
    assert_eq!(sts_replicas(&seen), 5);
    nodes.add("rs-3");
    nodes.add("rs-4");
    let pods = (0..5).map(|i| pod(i, None)).collect();
    let mut scaled = store(json!({"replicas": 5}));
    scaled.status = Some(ReplicatedStoreStatus {
        leader: Some("rs-0".into()),
        epoch: 1,
        ..ReplicatedStoreStatus::default()
    });
    let (_, seen) = run(&scaled, pods, nodes.clone()).await;
    let calls = nodes.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("follow rs-3 rs-0.rs-headless.ns.svc:7379 1")),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c.starts_with("follow rs-4")));
    let status = status_patch(&seen).unwrap();
    assert_eq!(status.ready.as_deref(), Some("5/5"));
}

#[tokio::test]
async fn scale_down_keeps_the_leader_and_says_why() {
    // Leader is rs-4; asking for 3 members would remove it.
    let nodes = Arc::new(FakeNodes::idle(5));
    let member = crate::coordination::decide::tests::member;
    nodes.promote(&member(4), 1).await.unwrap();
    for i in 0..4 {
        nodes
            .follow(&member(i), "rs-4.rs-headless.ns.svc:7379", 1)
            .await
            .unwrap();
    }
    let pods = (0..5).map(|i| pod(i, None)).collect();
    let (result, seen) = run(&store(json!({"replicas": 3})), pods, nodes.clone()).await;
    assert!(result.is_ok());
    assert_eq!(
        sts_replicas(&seen),
        5,
        "the StatefulSet keeps the leader's ordinal"
    );
    let status = status_patch(&seen).unwrap();
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ScaleDownBlocked")
    );
    assert!(degraded.message.contains("rs-4") || degraded.message.contains("member 4"));
    assert!(
        seen.iter()
            .any(|s| s.is("POST", EVENTS) && s.body["reason"] == "ScaleDownBlocked")
    );
}

#[tokio::test]
async fn deleted_store_makes_no_requests() {
    let mut deleting = store(json!({}));
    deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    let (result, seen) = run(&deleting, vec![pod(0, None)], Arc::new(FakeNodes::idle(1))).await;
    assert!(result.is_ok());
    assert!(
        seen.is_empty(),
        "garbage collection removes owned objects: {seen:?}"
    );
}

#[tokio::test]
async fn invalid_spec_is_reported_and_nothing_applied() {
    let (result, seen) = run(
        &store(json!({"replicas": 1})),
        vec![],
        Arc::new(FakeNodes::default()),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.category(), "invalid_spec");
    assert!(applies(&seen).is_empty());
    let status = status_patch(&seen).unwrap();
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(degraded.message.contains("syncReplicas"));
    assert!(
        seen.iter()
            .any(|s| s.is("POST", EVENTS) && s.body["reason"] == "InvalidSpec")
    );
}
