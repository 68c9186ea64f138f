//! Controller scenarios against a stateful fake API server (tower-test) and
//! fake nodes: every request is recorded with its method, path, query and
//! body, and answered from state the requests themselves change: a status
//! written by server-side apply *replaces* the stored status (as apply by
//! one field manager does), pod label patches change the pods the next
//! list returns. Each pass therefore reads what the previous pass wrote;
//! a status that dropped `leader` would be seen to drop it.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::coordination::Wake;
use crate::coordination::fake::FakeNodes;
use crate::live_settings as live;
use crate::validate::validate;
use rstore_node::admin::ReplicationSettings;

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

/// The fake API server's state.
#[derive(Default)]
struct ApiState {
    pods: Vec<Value>,
    store: Value,
    secrets: std::collections::BTreeMap<String, Value>,
    /// Objects applied by path (StatefulSet, Services, PDB).
    objects: std::collections::BTreeMap<String, Value>,
    seen: Vec<Seen>,
}

/// A fake API server shared by several passes.
#[derive(Clone)]
struct FakeApi {
    state: Arc<Mutex<ApiState>>,
}

impl FakeApi {
    fn new(store: &ReplicatedStore, pods: Vec<Value>) -> Self {
        Self {
            state: Arc::new(Mutex::new(ApiState {
                pods,
                store: serde_json::to_value(store).unwrap(),
                secrets: Default::default(),
                objects: Default::default(),
                seen: Vec::new(),
            })),
        }
    }

    /// A client whose requests this fake answers (until it is dropped).
    fn client(&self) -> (Client, tokio::task::JoinHandle<()>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let state = self.state.clone();
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
                let mut state = state.lock().unwrap();
                let (code, answer) = answer(&mut state, &entry);
                state.seen.push(entry);
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                );
            }
        });
        (Client::new(service, "default"), server)
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }

    fn store(&self) -> ReplicatedStore {
        serde_json::from_value(self.state.lock().unwrap().store.clone()).unwrap()
    }

    fn status(&self) -> ReplicatedStoreStatus {
        self.store().status.unwrap_or_default()
    }

    fn label(&self, pod: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        state
            .pods
            .iter()
            .find(|p| p["metadata"]["name"] == pod)
            .and_then(|p| p["metadata"]["labels"]["rstore.dev/role"].as_str())
            .map(str::to_string)
    }

    fn set_pods(&self, pods: Vec<Value>) {
        self.state.lock().unwrap().pods = pods;
    }

    fn set_object_status(&self, path: &str, status: Value) {
        self.state.lock().unwrap().objects.get_mut(path).unwrap()["status"] = status;
    }

    /// The user edits the spec (its generation moves on).
    fn set_spec(&self, spec: Value) {
        let mut state = self.state.lock().unwrap();
        state.store["spec"] = spec;
        let generation = state.store["metadata"]["generation"].as_i64().unwrap_or(1);
        state.store["metadata"]["generation"] = json!(generation + 1);
    }

    fn annotate(&self, key: &str, value: &str) {
        self.state.lock().unwrap().store["metadata"]["annotations"] = json!({ key: value });
    }
}

fn ctx_for(client: Client, nodes: Arc<FakeNodes>) -> Arc<Context> {
    ctx_with(client, nodes, test_settings())
}

fn test_settings() -> Settings {
    Settings {
        default_image: Some("rstore:test".into()),
        network_policy: false,
        operator_namespace: "rstore-system".into(),
    }
}

fn ctx_with(client: Client, nodes: Arc<FakeNodes>, settings: Settings) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Arc::new(Metrics::default()),
        nodes,
        settings,
    ))
}

/// What the API server answers to `seen` (status code, body), changing its
/// state as it would.
fn answer(state: &mut ApiState, seen: &Seen) -> (u16, Value) {
    const SECRETS: &str = "/api/v1/namespaces/ns/secrets";
    match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", p) if p.starts_with(SECRETS) => {
            let name = p.rsplit('/').next().unwrap();
            match state.secrets.get(name) {
                Some(secret) => (200, secret.clone()),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            }
        }
        ("POST", SECRETS) => {
            // stringData becomes data, as the API server stores it.
            let mut secret: k8s_openapi::api::core::v1::Secret =
                serde_json::from_value(seen.body.clone()).unwrap();
            let data = secret.string_data.take().unwrap_or_default();
            secret.data = Some(
                data.into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                    .collect(),
            );
            let stored = serde_json::to_value(&secret).unwrap();
            let name = secret.metadata.name.unwrap();
            state.secrets.insert(name, stored.clone());
            (201, stored)
        }
        ("DELETE", p) if p.starts_with(NETWORKING) => match state.objects.remove(p) {
            Some(o) => (200, o),
            None => (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": "not found"}),
            ),
        },
        ("GET", p)
            if p.starts_with("/apis/apps/v1/")
                || p.starts_with("/api/v1/namespaces/ns/services/")
                || p.starts_with("/apis/policy/v1/")
                || p.starts_with(NETWORKING) =>
        {
            match state.objects.get(p) {
                Some(o) => (200, o.clone()),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            }
        }
        ("PATCH", p) if seen.query.contains("fieldManager=rstore-operator") && p != STATUS => {
            // Apply: what was sent, keeping the status the cluster wrote.
            let mut object = seen.body.clone();
            if let Some(status) = state.objects.get(p).map(|o| o["status"].clone()) {
                object["status"] = status;
            }
            state.objects.insert(p.to_string(), object.clone());
            (200, object)
        }
        _ => (200, answer_ok(state, seen)),
    }
}

fn answer_ok(state: &mut ApiState, seen: &Seen) -> Value {
    const STORE: &str = "/apis/rstore.dev/v1alpha1/namespaces/ns/replicatedstores/rs";
    match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", "/api/v1/namespaces/ns/pods") => {
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": state.pods})
        }
        ("GET", STORE) => state.store.clone(),
        ("PATCH", p) if p.starts_with("/api/v1/namespaces/ns/pods/") => {
            let name = p.rsplit('/').next().unwrap();
            let Some(pod) = state
                .pods
                .iter_mut()
                .find(|p| p["metadata"]["name"] == name)
            else {
                return json!({"kind": "Status", "code": 404});
            };
            for (k, v) in seen.body["metadata"]["labels"].as_object().unwrap() {
                let labels = pod["metadata"]["labels"].as_object_mut().unwrap();
                if v.is_null() {
                    labels.remove(k);
                } else {
                    labels.insert(k.clone(), v.clone());
                }
            }
            pod.clone()
        }
        ("DELETE", p) if p.starts_with("/api/v1/namespaces/ns/pods/") => {
            let name = p.rsplit('/').next().unwrap();
            state
                .pods
                .iter()
                .find(|p| p["metadata"]["name"] == name)
                .cloned()
                .unwrap_or(Value::Null)
        }
        ("PATCH", STATUS) => {
            // Apply by the only manager of status: the applied object is
            // the whole status; a field left out is gone.
            state.store["status"] = seen.body["status"].clone();
            state.store.clone()
        }
        ("PATCH", STORE) => {
            if let Some(annotations) = seen.body["metadata"]["annotations"].as_object() {
                for (k, v) in annotations {
                    if v.is_null() {
                        if let Some(a) = state.store["metadata"]["annotations"].as_object_mut() {
                            a.remove(k);
                        }
                    } else {
                        state.store["metadata"]["annotations"][k] = v.clone();
                    }
                }
            }
            state.store.clone()
        }
        // Server-side apply of owned objects and events: the object as sent.
        _ => seen.body.clone(),
    }
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
/// and every request it made but reads.
async fn run(
    store: &ReplicatedStore,
    pods: Vec<Value>,
    nodes: Arc<FakeNodes>,
) -> (Result<Action, Error>, Vec<Seen>) {
    run_in(&FakeApi::new(store, pods), store, nodes, test_settings()).await
}

/// [`run`] against `api` with these controller settings.
async fn run_in(
    api: &FakeApi,
    store: &ReplicatedStore,
    nodes: Arc<FakeNodes>,
    settings: Settings,
) -> (Result<Action, Error>, Vec<Seen>) {
    let (client, server) = api.client();
    let ctx = ctx_with(client, nodes, settings);
    let result = reconcile(Arc::new(store.clone()), ctx.clone()).await;
    if let Err(err) = &result {
        error_policy(Arc::new(store.clone()), err, ctx.clone());
    }
    // Only reconcile's own requests: its failover driver is tested below.
    ctx.drivers.stop("ns", "rs");
    drop(ctx);
    server.await.unwrap();
    let seen: Vec<Seen> = api
        .take_seen()
        .into_iter()
        .filter(|s| s.method != "GET")
        .collect();
    (result, seen)
}

const STS: &str = "/apis/apps/v1/namespaces/ns/statefulsets/rs";
const NETWORKING: &str = "/apis/networking.k8s.io/";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/rs";
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

fn events(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.is("POST", EVENTS))
        .map(|s| s.body["reason"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- reconcile

#[tokio::test]
async fn create_applies_every_object_and_leaves_status_to_the_driver() {
    let (result, seen) = run(&store(json!({})), vec![], Arc::new(FakeNodes::default())).await;
    assert!(result.is_ok());
    let secret = seen
        .iter()
        .find(|s| s.is("POST", "/api/v1/namespaces/ns/secrets"))
        .expect("the admin token Secret is created");
    assert_eq!(secret.body["metadata"]["name"], "rs-admin-token");
    assert_eq!(
        secret.body["metadata"]["ownerReferences"][0]["uid"],
        "uid-1"
    );
    assert_eq!(
        secret.body["stringData"]["token"].as_str().unwrap().len(),
        64
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
    assert!(events(&seen).is_empty());
}

#[tokio::test]
async fn scale_down_keeps_the_recorded_leader_and_says_why() {
    let mut scaled = store(json!({"replicas": 3}));
    scaled.status = Some(ReplicatedStoreStatus {
        leader: Some("rs-4".into()),
        epoch: 1,
        ..ReplicatedStoreStatus::default()
    });
    let pods = (0..5).map(|i| pod(i, None)).collect();
    let (result, seen) = run(&scaled, pods, Arc::new(FakeNodes::idle(5))).await;
    assert!(result.is_ok());
    assert_eq!(
        sts_replicas(&seen),
        5,
        "the StatefulSet keeps the leader's ordinal"
    );
    assert_eq!(events(&seen), ["ScaleDownBlocked"]);
}

#[tokio::test]
async fn the_network_policy_admits_the_operator_from_its_own_namespace_only() {
    let settings = Settings {
        network_policy: true,
        ..test_settings()
    };
    let s = store(json!({}));
    let api = FakeApi::new(&s, vec![]);
    let (result, seen) = run_in(&api, &s, Arc::new(FakeNodes::default()), settings).await;
    assert!(result.is_ok());
    let policy = seen.iter().find(|s| s.is("PATCH", NETPOL)).unwrap();
    assert_eq!(
        policy.body["spec"]["ingress"][1]["from"][1]["namespaceSelector"],
        json!({"matchLabels": {"kubernetes.io/metadata.name": "rstore-system"}})
    );
}

#[tokio::test]
async fn turning_the_network_policy_off_deletes_the_one_the_operator_made() {
    let s = store(json!({}));
    let owned = |uid: &str| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "rs", "namespace": "ns", "ownerReferences": [{
                   "apiVersion": "rstore.dev/v1alpha1", "kind": "ReplicatedStore",
                   "name": "rs", "uid": uid, "controller": true}]},
               "spec": {"podSelector": {}}})
    };
    let api = FakeApi::new(&s, vec![]);
    api.state
        .lock()
        .unwrap()
        .objects
        .insert(NETPOL.to_string(), owned("uid-1"));
    let (result, seen) = run_in(&api, &s, Arc::new(FakeNodes::default()), test_settings()).await;
    assert!(result.is_ok());
    assert!(seen.iter().any(|s| s.is("DELETE", NETPOL)), "{seen:#?}");
    assert!(!api.state.lock().unwrap().objects.contains_key(NETPOL));

    // Someone else's policy of that name is left alone; none is no error.
    let theirs = FakeApi::new(&s, vec![]);
    theirs
        .state
        .lock()
        .unwrap()
        .objects
        .insert(NETPOL.to_string(), owned("uid-other"));
    let (result, seen) = run_in(&theirs, &s, Arc::new(FakeNodes::default()), test_settings()).await;
    assert!(result.is_ok());
    assert!(!seen.iter().any(|s| s.method == "DELETE"));
    let (result, seen) = run(&s, vec![], Arc::new(FakeNodes::default())).await;
    assert!(result.is_ok());
    assert!(!seen.iter().any(|s| s.method == "DELETE"));
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
    assert_eq!(events(&seen), ["InvalidSpec"]);
}

// ---------------------------------------------------------------- the driver

/// A store, its pods and nodes, driven pass by pass; every pass reads the
/// status and labels the previous one wrote.
struct Scenario {
    api: FakeApi,
    nodes: Arc<FakeNodes>,
    state: driver::TaskState,
    /// Every status any pass wrote, in order.
    written: Vec<ReplicatedStoreStatus>,
}

impl Scenario {
    fn new(spec: Value, members: i32) -> Self {
        let pods = (0..members).map(|i| pod(i, None)).collect();
        Self {
            api: FakeApi::new(&store(spec), pods),
            nodes: Arc::new(FakeNodes::idle(members)),
            state: driver::TaskState::default(),
            written: Vec::new(),
        }
    }

    /// A reconcile (objects and the admin token Secret); the nodes then
    /// obey only that token, as pods started with it would.
    async fn reconcile(&mut self) {
        let (client, server) = self.api.client();
        let ctx = ctx_for(client, self.nodes.clone());
        reconcile(Arc::new(self.api.store()), ctx.clone())
            .await
            .unwrap();
        ctx.drivers.stop("ns", "rs");
        drop(ctx);
        server.await.unwrap();
        self.api.take_seen();
        let token = self.api.state.lock().unwrap().secrets["rs-admin-token"]["data"]["token"]
            .as_str()
            .map(str::to_string)
            .unwrap();
        let decoded: k8s_openapi::ByteString = serde_json::from_value(json!(token)).unwrap();
        self.nodes
            .require_token(&String::from_utf8(decoded.0).unwrap());
    }

    /// One driver pass (a probe tick); returns its requests.
    async fn pass(&mut self) -> Vec<Seen> {
        self.pass_on(Wake::Timer).await
    }

    /// One driver pass woken by `wake`; returns its requests.
    async fn pass_on(&mut self, wake: Wake) -> Vec<Seen> {
        let (client, server) = self.api.client();
        let ctx = ctx_for(client, self.nodes.clone());
        let validated = validate(&self.api.store(), Some("rstore:test")).unwrap();
        driver::pass(&ctx, &validated, &mut self.state, wake)
            .await
            .unwrap()
            .unwrap();
        drop(ctx);
        server.await.unwrap();
        let seen = self.api.take_seen();
        self.written.extend(
            seen.iter()
                .filter(|s| s.is("PATCH", STATUS))
                .map(|s| serde_json::from_value(s.body["status"].clone()).unwrap()),
        );
        seen
    }

    /// Passes until one changes nothing (at most `max`).
    async fn settle(&mut self, max: usize) -> Vec<Seen> {
        let mut all = Vec::new();
        for _ in 0..max {
            let seen = self.pass().await;
            let quiet = !seen.iter().any(|s| s.method != "GET");
            all.extend(seen);
            if quiet {
                break;
            }
        }
        all
    }
}

#[tokio::test]
async fn the_driver_bootstraps_then_a_healthy_cluster_costs_only_reads() {
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    let seen = sc.settle(5).await;
    assert_eq!(sc.nodes.calls()[0], "promote rs-0 1");
    assert!(sc.nodes.calls()[1].starts_with("follow rs-1 rs-0.rs-headless.ns.svc:7379 1"));
    assert_eq!(sc.api.label("rs-0").as_deref(), Some("leader"));
    assert_eq!(sc.api.label("rs-2").as_deref(), Some("follower"));
    assert!(events(&seen).contains(&"Following".to_string()));
    let status = sc.api.status();
    assert_eq!(status.leader.as_deref(), Some("rs-0"));
    assert_eq!(status.epoch, 1);
    assert_eq!(status.ready.as_deref(), Some("3/3"));
    assert_eq!(status.members[0].role, "leader");
    assert_eq!(condition(&status, "Available").status, "True");
    assert_eq!(condition(&status, "Progressing").reason, "UpToDate");
    assert_eq!(condition(&status, "Degraded").status, "False");

    let calls = sc.nodes.calls().len();
    let seen = sc.pass().await;
    assert_eq!(sc.nodes.calls().len(), calls, "no admin calls");
    assert!(
        seen.iter().all(|s| s.method == "GET"),
        "a healthy pass only reads: {seen:#?}"
    );
}

/// The sequence that lost the leader before: healthy, the leader's probes
/// fail N times, a follower is promoted, the old leader returns as a
/// follower; each pass fed by the status the previous one wrote.
#[tokio::test]
async fn a_dead_leader_is_failed_over_and_returns_as_a_follower_across_passes() {
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    sc.settle(5).await;
    sc.nodes.set_down("rs-0", true);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.extend(sc.pass().await);
        assert_eq!(
            sc.api.status().leader.as_deref(),
            Some("rs-0"),
            "only suspected"
        );
    }
    assert!(events(&seen).is_empty());
    let seen = sc.pass().await; // third failed probe
    assert_eq!(
        events(&seen)
            .into_iter()
            .filter(|e| !e.ends_with("Failed"))
            .collect::<Vec<_>>(),
        // Phase events as they happen; action events after the pass.
        [
            "FailoverStarted",
            "LeaderFenced",
            "Promoted",
            "FailoverCompleted",
            "Following"
        ]
    );
    let status = sc.api.status();
    assert_eq!(status.leader.as_deref(), Some("rs-1"));
    assert_eq!(status.epoch, 2);
    assert!(status.failover.is_none());
    let last = status.last_failover.clone().unwrap();
    assert_eq!(last.old_leader.as_deref(), Some("rs-0"));
    assert_eq!(last.new_leader, "rs-1");
    assert_eq!(last.lost_bytes, 0);
    assert!(!last.started_at.is_empty());
    assert_eq!(sc.api.label("rs-0"), None, "old leader's label removed");
    assert_eq!(sc.api.label("rs-1").as_deref(), Some("leader"));
    assert_eq!(sc.api.label("rs-2").as_deref(), Some("follower"));

    // The old leader restarts idle and is repointed, not re-promoted.
    sc.nodes.restart("rs-0");
    sc.settle(5).await;
    assert!(
        sc.nodes
            .calls()
            .iter()
            .any(|c| c.starts_with("follow rs-0 rs-1.rs-headless.ns.svc:7379 2")),
        "{:?}",
        sc.nodes.calls()
    );
    assert_eq!(sc.api.label("rs-0").as_deref(), Some("follower"));
    assert_eq!(sc.api.status().leader.as_deref(), Some("rs-1"));
    assert!(
        sc.written.iter().skip(1).all(|s| s.leader.is_some()),
        "no status written after bootstrap ever dropped the leader"
    );
}

/// Pod events wake the driver at once, but their probes are no timer
/// ticks: a burst of them must not fail over a leader that has not missed
/// `failureThreshold` probes on the probe timer.
#[tokio::test]
async fn passes_woken_by_pod_events_do_not_count_toward_the_failure_threshold() {
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    sc.settle(5).await;
    sc.nodes.set_down("rs-0", true);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.extend(sc.pass_on(Wake::Poke).await);
    }
    seen.extend(sc.pass().await);
    seen.extend(sc.pass().await);
    assert!(events(&seen).is_empty(), "{:?}", events(&seen));
    assert_eq!(sc.api.status().epoch, 1);
    let seen = sc.pass().await; // the third timed failure
    assert!(events(&seen).contains(&"FailoverCompleted".to_string()));
    assert_eq!(sc.api.status().leader.as_deref(), Some("rs-1"));
}

/// The bug: a leader pod that is deleted (and recreated by its StatefulSet)
/// used to leave the cluster with no writer for good.
#[tokio::test]
async fn a_deleted_leader_pod_is_replaced_at_once_and_rejoins_as_a_follower() {
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    sc.settle(5).await;
    // The pod is being deleted: no probe needs to fail first.
    let mut deleting = pod(0, Some("leader"));
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    sc.api.set_pods(vec![
        deleting,
        pod(1, Some("follower")),
        pod(2, Some("follower")),
    ]);
    sc.nodes.set_down("rs-0", true);
    let seen = sc.pass().await;
    assert!(events(&seen).contains(&"FailoverCompleted".to_string()));
    assert_eq!(sc.api.status().leader.as_deref(), Some("rs-1"));
    // Recreated without a label, the node back idle at epoch 1.
    sc.api.set_pods(vec![
        pod(0, None),
        pod(1, Some("leader")),
        pod(2, Some("follower")),
    ]);
    sc.nodes.restart("rs-0");
    sc.settle(5).await;
    assert_eq!(sc.api.label("rs-0").as_deref(), Some("follower"));
    let status = sc.api.status();
    assert_eq!(status.leader.as_deref(), Some("rs-1"));
    assert_eq!(condition(&status, "Available").status, "True");
}

#[tokio::test]
async fn a_switchover_annotation_moves_the_leader_and_is_cleared() {
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    sc.settle(5).await;
    sc.api.annotate(driver::SWITCHOVER_ANNOTATION, "rs-2");
    let seen = sc.settle(10).await;
    assert!(events(&seen).contains(&"FailoverCompleted".to_string()));
    let status = sc.api.status();
    assert_eq!(status.leader.as_deref(), Some("rs-2"));
    assert_eq!(
        status.last_failover.unwrap().reason,
        crate::brain::FailoverReason::Switchover
    );
    assert_eq!(sc.api.label("rs-2").as_deref(), Some("leader"));
    assert_eq!(sc.api.label("rs-0").as_deref(), Some("follower"));
    assert!(
        sc.api
            .store()
            .annotations()
            .get(driver::SWITCHOVER_ANNOTATION)
            .is_none()
    );
}

#[tokio::test]
async fn semi_sync_failover_blocked_by_an_unreachable_follower_says_why() {
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    sc.settle(5).await;
    sc.nodes.set_down("rs-0", true);
    sc.nodes.set_down("rs-2", true);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.extend(sc.pass().await);
    }
    assert_eq!(
        events(&seen)
            .iter()
            .filter(|e| *e == "FailoverBlocked")
            .count(),
        1
    );
    let status = sc.api.status();
    assert_eq!(
        status.leader.as_deref(),
        Some("rs-0"),
        "the last leader is kept"
    );
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.reason, "FailoverBlocked");
    assert!(degraded.message.contains("1 of 2 followers fenced"));
    assert!(status.failover.is_some());
    // rs-2 returns: the failover completes.
    sc.nodes.set_down("rs-2", false);
    sc.settle(5).await;
    assert_eq!(sc.api.status().leader.as_deref(), Some("rs-1"));
}

fn revisioned(i: i32, role: Option<&str>, revision: &str) -> Value {
    let mut p = pod(i, role);
    p["metadata"]["labels"]["controller-revision-hash"] = json!(revision);
    p
}

/// A spec change rolls followers first, one at a time, then switches over
/// and replaces the old leader last; writes never lose their leader.
#[tokio::test]
async fn a_rolling_update_replaces_followers_first_and_the_leader_after_a_switchover() {
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    sc.api
        .set_pods((0..3).map(|i| revisioned(i, None, "old")).collect());
    sc.settle(5).await;
    assert_eq!(sc.api.status().leader.as_deref(), Some("rs-0"));
    // The StatefulSet controller reports a new revision.
    sc.api
        .set_object_status(STS, json!({"updateRevision": "new", "replicas": 3}));
    let mut deleted = Vec::new();
    let mut switched_before_leader = false;
    for _ in 0..40 {
        let seen = sc.pass().await;
        let status = sc.api.status();
        if status.last_failover.as_ref().is_some_and(|f| {
            f.reason == crate::brain::FailoverReason::Switchover
                && f.old_leader.as_deref() == Some("rs-0")
        }) && !deleted.contains(&"rs-0".to_string())
        {
            switched_before_leader = true;
        }
        for d in seen.iter().filter(|s| s.method == "DELETE") {
            let name = d.path.rsplit('/').next().unwrap().to_string();
            // The StatefulSet recreates it at the new revision; its node
            // restarts (idle, never self-promoting).
            let ordinal: i32 = name.rsplit_once('-').unwrap().1.parse().unwrap();
            let mut pods = sc.api.state.lock().unwrap().pods.clone();
            pods[usize::try_from(ordinal).unwrap()] = revisioned(ordinal, None, "new");
            sc.api.set_pods(pods);
            sc.nodes.restart(&name);
            deleted.push(name);
        }
        let condition_progressing = condition(&status, "Progressing").reason.clone();
        if deleted.len() == 3
            && condition_progressing != "RollingUpdate"
            && status.failover.is_none()
        {
            break;
        }
    }
    assert_eq!(
        deleted,
        ["rs-2", "rs-1", "rs-0"],
        "followers first, leader last"
    );
    assert!(
        sc.api
            .status()
            .members
            .iter()
            .all(|m| m.revision.as_deref() == Some("new")),
        "status shows each member's revision"
    );
    assert!(
        switched_before_leader,
        "the leader moved before its pod went"
    );
    let status = sc.api.status();
    assert_ne!(status.leader.as_deref(), Some("rs-0"));
    assert_eq!(condition(&status, "Available").status, "True");
    assert_eq!(sc.api.label("rs-0").as_deref(), Some("follower"));
}

/// A replaced member whose new pod never turns Ready stops the update
/// there: Degraded with reason RolloutStuck once it waited too long, and
/// no other member is torn down.
#[tokio::test]
async fn a_rolling_update_stuck_on_a_member_that_never_becomes_ready_stops_and_says_so() {
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    sc.api
        .set_pods((0..3).map(|i| revisioned(i, None, "old")).collect());
    sc.settle(5).await;
    sc.api
        .set_object_status(STS, json!({"updateRevision": "new", "replicas": 3}));
    let seen = sc.pass().await;
    let deleted: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(deleted, ["rs-2"], "the highest follower goes first");
    // Recreated at the new revision; its node runs but the pod never
    // passes its readiness probe.
    let mut pods = sc.api.state.lock().unwrap().pods.clone();
    let mut unready = revisioned(2, None, "new");
    unready["status"]["conditions"][0]["status"] = json!("False");
    pods[2] = unready;
    sc.api.set_pods(pods);
    sc.nodes.restart("rs-2");
    let mut seen = sc.settle(5).await;
    let status = sc.api.status();
    assert_eq!(condition(&status, "Progressing").reason, "RollingUpdate");
    assert!(
        condition(&status, "Progressing")
            .message
            .contains("rs-2 is not ready")
    );
    // Ten minutes and more pass waiting on it.
    let (member, since) = sc.state.rollout_wait.clone().unwrap();
    assert_eq!(member, "rs-2");
    sc.state.rollout_wait = Some((member, since - driver::ROLLOUT_STUCK_AFTER_MS - 1));
    for _ in 0..3 {
        seen.extend(sc.pass().await);
    }
    let status = sc.api.status();
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, "RolloutStuck");
    assert!(degraded.message.contains("rs-2"), "{}", degraded.message);
    assert!(
        !seen.iter().any(|s| s.method == "DELETE"),
        "no other member is replaced while the update is stuck"
    );
    assert_eq!(
        status.leader.as_deref(),
        Some("rs-0"),
        "no switchover either"
    );
    assert_eq!(sc.api.label("rs-0").as_deref(), Some("leader"));
}

// ------------------------------------------------------- live settings

const HASH_PATH: &str = "/spec/template/metadata/annotations/rstore.dev~1restart-hash";

/// The restart hash of the template the last reconcile applied.
fn applied_restart_hash(api: &FakeApi) -> String {
    api.state.lock().unwrap().objects[STS]
        .pointer(HASH_PATH)
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

/// A pod at `revision` created from a template with restart hash `hash`.
fn hashed(i: i32, role: Option<&str>, revision: &str, hash: &str) -> Value {
    let mut p = revisioned(i, role, revision);
    p["metadata"]["annotations"] = json!({ "rstore.dev/restart-hash": hash });
    p
}

/// A healthy cluster of pods at revision "old" from the applied template,
/// whose nodes report `reported` (the spec's settings when `None`).
async fn settled_with_settings(spec: Value, reported: Option<ReplicationSettings>) -> Scenario {
    let mut sc = Scenario::new(spec, 3);
    sc.reconcile().await;
    let desired = live::desired(&sc.api.store().spec.replication);
    sc.nodes.report_settings(&reported.unwrap_or(desired));
    let hash = applied_restart_hash(&sc.api);
    sc.api
        .set_pods((0..3).map(|i| hashed(i, None, "old", &hash)).collect());
    sc.api
        .set_object_status(STS, json!({"updateRevision": "old", "replicas": 3}));
    sc.settle(5).await;
    assert_eq!(sc.api.status().leader.as_deref(), Some("rs-0"));
    sc
}

fn config_calls(nodes: &FakeNodes) -> Vec<String> {
    nodes
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("config"))
        .collect()
}

#[tokio::test]
async fn a_settings_change_is_applied_through_the_admin_api_without_restarting_pods() {
    let mut sc = settled_with_settings(json!({}), None).await;
    assert!(config_calls(&sc.nodes).is_empty(), "in sync from the start");
    let hash = applied_restart_hash(&sc.api);

    sc.api
        .set_spec(json!({"replication": {"mode": "sync", "syncTimeoutMs": 250}}));
    sc.reconcile().await;
    assert_eq!(
        applied_restart_hash(&sc.api),
        hash,
        "settings are not part of the restart hash"
    );
    // The template's args changed: the StatefulSet has a new revision.
    sc.api
        .set_object_status(STS, json!({"updateRevision": "new", "replicas": 3}));
    let seen = sc.settle(5).await;

    assert!(
        !seen.iter().any(|s| s.method == "DELETE"),
        "no pod is deleted"
    );
    let want = live::desired(&sc.api.store().spec.replication);
    assert_eq!(want.mode, rstore_node::admin::ReplicationMode::Sync);
    let calls = config_calls(&sc.nodes);
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls[0].starts_with("config rs-0 "),
        "leader first: {calls:?}"
    );
    for i in 0..3 {
        assert_eq!(sc.nodes.settings(&format!("rs-{i}")), Some(want));
    }
    let applied: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.is("POST", EVENTS) && s.body["reason"] == "SettingsApplied")
        .collect();
    assert_eq!(applied.len(), 3);
    let note = applied[0].body["note"].as_str().unwrap();
    assert!(
        note.contains("semi-sync") && note.contains("-> sync") && note.contains("250 ms"),
        "{note}"
    );
    let status = sc.api.status();
    assert!(
        status
            .members
            .iter()
            .all(|m| m.settings_in_sync == Some(true)),
        "{:?}",
        status.members
    );
    assert_eq!(condition(&status, "Progressing").reason, "UpToDate");
    assert_eq!(status.leader.as_deref(), Some("rs-0"), "no switchover");

    // Settled: a pass only reads.
    let seen = sc.pass().await;
    assert!(seen.iter().all(|s| s.method == "GET"), "{seen:#?}");
    assert_eq!(config_calls(&sc.nodes).len(), 3);
}

#[tokio::test]
async fn an_image_change_still_replaces_pods_that_carry_a_restart_hash() {
    let mut sc = settled_with_settings(json!({}), None).await;
    let hash = applied_restart_hash(&sc.api);
    sc.api.set_spec(json!({"image": "rstore:next"}));
    sc.reconcile().await;
    assert_ne!(applied_restart_hash(&sc.api), hash);
    sc.api
        .set_object_status(STS, json!({"updateRevision": "new", "replicas": 3}));
    let seen = sc.pass().await;
    let deleted: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(deleted, ["rs-2"], "followers first, as before");
    assert!(config_calls(&sc.nodes).is_empty());
}

#[tokio::test]
async fn members_that_report_no_settings_are_left_alone() {
    // Nodes older than POST /config: nothing to compare, nothing pushed.
    let mut sc = Scenario::new(json!({}), 3);
    sc.reconcile().await;
    sc.settle(5).await;
    sc.api.set_spec(json!({"replication": {"mode": "sync"}}));
    let seen = sc.settle(3).await;
    assert!(config_calls(&sc.nodes).is_empty());
    assert!(!events(&seen).contains(&"SettingsApplied".to_string()));
    assert!(
        sc.api
            .status()
            .members
            .iter()
            .all(|m| m.settings_in_sync.is_none())
    );
}

#[tokio::test]
async fn a_refused_settings_change_is_reported_once_and_retried_later() {
    let mut sc = settled_with_settings(json!({}), None).await;
    sc.nodes.refuse_config("rs-1", "sync_timeout_ms too large");
    sc.api
        .set_spec(json!({"replication": {"syncTimeoutMs": 250}}));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(sc.pass().await);
    }
    let failed = events(&seen)
        .into_iter()
        .filter(|e| e == "SettingsFailed")
        .count();
    assert_eq!(failed, 1, "one warning, not one per pass");
    let tries = config_calls(&sc.nodes)
        .iter()
        .filter(|c| c.starts_with("config rs-1 "))
        .count();
    assert_eq!(tries, 1, "not retried every probe period");
    let status = sc.api.status();
    let rs1 = status.members.iter().find(|m| m.name == "rs-1").unwrap();
    assert_eq!(rs1.settings_in_sync, Some(false));
    // The others took it.
    assert_eq!(sc.nodes.settings("rs-0").unwrap().sync_timeout_ms, 250);
}
