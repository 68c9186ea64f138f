//! Steps shared by the operator scenarios on the test cluster
//! (`tests/k8s_operator.rs`, `tests/k8s_day2.rs`): `helm install` of the
//! chart, a store from the chart's example applied with `kubectl`, its
//! Service proxies, writes and checks through them, waits on its status,
//! the operator's Lease and logs, and a continuous writer that measures
//! write pauses and keeps every acknowledged key for a loss check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use rstore_operator::crd::{ReplicatedStore, ReplicatedStoreStatus};
use serde_json::{Value, json};

use super::platform::Platform;
use super::{Cluster, TestNamespace, components, run};

/// Password of the example store (its Secret `demo-password`).
pub const PASSWORD: &str = "change-me";
/// Namespace of the chart's release.
pub const OPERATOR_NS: &str = "rstore-system";
/// Name of the operator's leader election Lease (the chart's default).
pub const OPERATOR_LEASE: &str = "rstore-operator";
/// Keys written by [`write_keys`].
pub const KEYS: usize = 100;

/// A Redis connection (password of the example) with a 3 s connect
/// timeout and 5 s read and write timeouts.
pub fn redis_at(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    rstore_testkit::try_connect(
        &format!("redis://:{PASSWORD}@{addr}/"),
        Duration::from_secs(3),
        Duration::from_secs(5),
    )
}

/// `helm install` the chart (default values: two operator replicas, one
/// active through the Lease) once per cluster, waiting for the operator.
pub fn install_operator(cluster: &Cluster) {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let done = INSTALLED.get_or_init(|| {
        cluster.kubelet();
        let chart = components::workspace_root().join("charts/rstore");
        let t = Instant::now();
        let out = run(
            cluster.helm().args([
                "install",
                "rstore",
                chart.to_str().expect("utf-8 path"),
                "-n",
                OPERATOR_NS,
                "--create-namespace",
                "--wait",
                "--timeout",
                "120s",
            ]),
            None,
        )?;
        rstore_testkit::figure!(
            "k8s: helm install --wait in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        eprintln!("{}", out.lines().take(5).collect::<Vec<_>>().join("\n"));
        Ok(())
    });
    if let Err(e) = done {
        panic!("helm install of charts/rstore: {e}");
    }
}

/// Names of the operator's pods (not being deleted), sorted.
pub fn operator_pods(cluster: &dyn Platform) -> Vec<String> {
    let out = cluster
        .kubectl_run(&["-n", OPERATOR_NS, "get", "pods", "-o", "json"], None)
        .unwrap_or_default();
    let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut pods: Vec<String> = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    pods.sort();
    pods
}

/// The last 40 lines of every operator pod's log.
pub fn operator_log(cluster: &dyn Platform) -> String {
    cluster.operator_logs(Some(40))
}

/// The sum of metric `name`'s samples (every label set) over the operator
/// pods' `/metrics` (port 8080); a pod that does not answer counts 0.
pub fn operator_metric(cluster: &dyn Platform, name: &str) -> f64 {
    operator_pods(cluster)
        .iter()
        .filter_map(|pod| cluster.pod_get(OPERATOR_NS, pod, 8080, "/metrics").ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The operator Lease's holder and its `spec` (None before the first
/// election).
pub async fn lease(client: &kube::Client) -> Option<(String, Lease)> {
    let api: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NS);
    let lease = api.get_opt(OPERATOR_LEASE).await.ok()??;
    let holder = lease.spec.as_ref()?.holder_identity.clone()?;
    Some((holder, lease))
}

/// A deployed store: its name, namespace, API and Service proxies.
pub struct Store {
    pub name: String,
    pub ns: TestNamespace,
    pub api: Api<ReplicatedStore>,
    pub pods: Api<Pod>,
    pub slices: Api<EndpointSlice>,
    pub leader_svc: SocketAddr,
    pub read_svc: SocketAddr,
    pub replicas: i32,
}

impl Store {
    pub async fn status(&self) -> ReplicatedStoreStatus {
        self.api
            .get(&self.name)
            .await
            .expect("get ReplicatedStore")
            .status
            .unwrap_or_default()
    }

    /// Pod name of member `i`.
    pub fn member(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    /// Pod names of the members other than `leader`.
    pub fn followers_of(&self, leader: &str) -> Vec<String> {
        (0..self.replicas as usize)
            .map(|i| self.member(i))
            .filter(|p| p != leader)
            .collect()
    }
}

/// Merge `patch` into `doc` (objects key by key, anything else replaced).
pub fn merge(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                merge(d.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (d, p) => *d = p.clone(),
    }
}

/// `kubectl apply -f` the chart's example as `name` in a new namespace,
/// and wait until it is Available with 3 ready members.
pub async fn deploy_example(cluster: &dyn Platform, name: &str) -> Store {
    deploy(cluster, name, &Value::Null).await
}

/// Like [`deploy_example`], with `spec_patch` merged into the example's
/// spec (e.g. `{"replicas": 2}`), waiting for `spec.replicas` ready members.
pub async fn deploy(cluster: &dyn Platform, name: &str, spec_patch: &Value) -> Store {
    cluster.ensure_operator();
    let ns = cluster.namespace(&format!("k8s-op-{name}")).await;
    let client = cluster.client().await;
    let root = components::workspace_root();
    let example = std::fs::read_to_string(root.join("charts/rstore/examples/replicatedstore.yaml"))
        .expect("read the example");
    let example = example
        .replace("namespace: default", &format!("namespace: {}", &*ns))
        .replace("name: demo", &format!("name: {name}"));
    let mut replicas = 3;
    let manifest = if spec_patch.is_null() {
        example
    } else {
        let mut docs = Vec::new();
        for doc in super::split_yaml(&example) {
            let mut v: Value = serde_yaml::from_str(doc).expect("parse the example");
            if v.is_null() {
                continue;
            }
            if v["kind"] == "ReplicatedStore" {
                merge(&mut v["spec"], spec_patch);
                replicas = v["spec"]["replicas"].as_i64().unwrap_or(3) as i32;
            }
            docs.push(serde_yaml::to_string(&v).expect("YAML"));
        }
        docs.join("---\n")
    };
    let t = Instant::now();
    cluster
        .kubectl_run(&["apply", "-f", "-"], Some(&manifest))
        .expect("kubectl apply the example");
    if let Err(e) = cluster.kubectl_run(
        &[
            "-n",
            &ns,
            "wait",
            &format!("rstore/{name}"),
            "--for=condition=Available",
            "--timeout=120s",
        ],
        None,
    ) {
        panic!(
            "{name} never became Available: {e}\noperator log:\n{}",
            operator_log(cluster)
        );
    }
    let store = Store {
        name: name.to_string(),
        api: Api::namespaced(client.clone(), &ns),
        pods: Api::namespaced(client.clone(), &ns),
        slices: Api::namespaced(client.clone(), &ns),
        leader_svc: cluster
            .service_addr(&ns, &format!("{name}-leader"), 6379)
            .expect("leader Service proxy"),
        read_svc: cluster
            .service_addr(&ns, &format!("{name}-read"), 6379)
            .expect("read Service proxy"),
        ns,
        replicas,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = store.status().await;
        if st.ready_replicas == replicas {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{replicas} ready members within 120 s: {st:?}\noperator log:\n{}",
            operator_log(cluster)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rstore_testkit::figure!(
        "k8s: {name}: Available with {replicas}/{replicas} ready {:.1} s after kubectl apply",
        t.elapsed().as_secs_f64()
    );
    store
}

/// Ready endpoint addresses of Service `name`.
pub async fn endpoints(slices: &Api<EndpointSlice>, name: &str) -> Vec<String> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await
        .expect("list EndpointSlices");
    let mut ips: Vec<String> = list
        .items
        .into_iter()
        .flat_map(|s| s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| e.addresses)
        .collect();
    ips.sort();
    ips
}

pub async fn pod_ips(pods: &Api<Pod>, names: &[String]) -> Vec<String> {
    let mut ips = Vec::new();
    for n in names {
        let p = pods.get(n).await.expect("get pod");
        ips.extend(p.status.and_then(|s| s.pod_ip));
    }
    ips.sort();
    ips
}

/// Write KEYS keys through the leader Service (each acknowledged).
pub fn write_keys(store: &Store, prefix: &str) {
    let mut w = redis_at(store.leader_svc).expect("connect through the leader Service");
    for i in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg(i)
            .query(&mut w)
            .expect("SET through the leader Service");
    }
}

/// Every acknowledged key is there, read through the leader Service.
pub fn check_keys(store: &Store, prefix: &str) {
    let mut c = redis_at(store.leader_svc).expect("connect to the leader");
    for i in 0..KEYS {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("{prefix}{i}"))
            .query(&mut c)
            .expect("GET through the leader Service");
        assert_eq!(v, Some(i.to_string()), "{prefix}{i} survives the failover");
    }
}

/// Wait until a failover past `epoch` is recorded and a write through the
/// leader Service succeeds; the time from `since`, and the status.
pub async fn wait_failover(
    cluster: &dyn Platform,
    store: &Store,
    epoch: i64,
    since: Instant,
    what: &str,
) -> ReplicatedStoreStatus {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = store.status().await;
        if st.epoch > epoch && st.last_failover.is_some() && st.failover.is_none() {
            let ok = redis_at(store.leader_svc).and_then(|mut c| {
                redis::cmd("SET")
                    .arg("after")
                    .arg("failover")
                    .query::<()>(&mut c)
            });
            if ok.is_ok() {
                let f = st.last_failover.clone().expect("lastFailover");
                rstore_testkit::figure!(
                    "k8s: {}: {what}: writes through {}-leader resumed after {:.2} s; {:?} -> {} at epoch {}, \
                     reason {:?}: detect {} ms, fence {} ms, promote {} ms, repoint {} ms, relabel {} ms, \
                     total {} ms, lost {} bytes",
                    store.name,
                    store.name,
                    since.elapsed().as_secs_f64(),
                    f.old_leader,
                    f.new_leader,
                    f.epoch,
                    f.reason,
                    f.detect_ms,
                    f.fence_ms,
                    f.promote_ms,
                    f.repoint_ms,
                    f.relabel_ms,
                    f.total_ms,
                    f.lost_bytes
                );
                assert_eq!(f.lost_bytes, 0, "semi-sync loses nothing");
                return st;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no failover within 90 s: {st:?}\noperator log:\n{}",
            operator_log(cluster)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until the failed-over `old_leader` is back as a ready member:
/// a follower, or the leader again when it was back before the operator
/// chose (it holds every record; ties go to the lowest ordinal), which
/// `after` (the status after the failover) says. Its role.
pub async fn wait_old_leader_back(
    store: &Store,
    old_leader: &str,
    after: &ReplicatedStoreStatus,
) -> String {
    let roles: &[&str] = if after.leader.as_deref() == Some(old_leader) {
        &["leader"]
    } else {
        &["follower"]
    };
    wait_member(store, old_leader, roles).await
}

/// Wait until `member` is back as a ready member in `roles`.
pub async fn wait_member(store: &Store, member: &str, roles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = store.status().await;
        if let Some(m) = st
            .members
            .iter()
            .find(|m| m.name == member && m.ready && roles.contains(&m.role.as_str()))
        {
            return m.role.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{member} back as a ready {roles:?} within 60 s: {:?}",
            st.members
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No line of the operator's log says the API server denied its
/// ServiceAccount something.
pub fn assert_no_rbac_denials(cluster: &dyn Platform) {
    // The whole log of every operator pod: a denial early in the run must
    // not scroll out of sight.
    let log = cluster.operator_logs(None);
    let denied: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("system:serviceaccount:") && l.contains(" cannot "))
        .collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC denied the operator something:\n{}",
        denied.join("\n")
    );
}

// ------------------------------------------------------ waits and edits

/// Poll `f` every 100 ms until it returns Some, failing after `timeout`
/// with `what` and the operator's log.
pub async fn until<T, F, Fut>(cluster: &dyn Platform, what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\noperator log:\n{}",
            operator_log(cluster)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn condition<'a>(
    st: &'a ReplicatedStoreStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    st.conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(st: &ReplicatedStoreStatus, type_: &str) -> bool {
    condition(st, type_).is_some_and(|c| c.status == "True")
}

/// Available, no failover running, `n` members listed, all ready.
pub fn settled(st: &ReplicatedStoreStatus, n: i32) -> bool {
    is_true(st, "Available")
        && st.failover.is_none()
        && st.ready_replicas == n
        && st.members.len() == n as usize
        && st.members.iter().all(|m| m.ready)
}

pub fn kubectl(cluster: &dyn Platform, ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    cluster
        .kubectl_run(&all, None)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

pub fn patch_spec(cluster: &dyn Platform, store: &Store, spec: Value) {
    kubectl(
        cluster,
        &store.ns,
        &[
            "patch",
            "rstore",
            &store.name,
            "--type=merge",
            "-p",
            &json!({ "spec": spec }).to_string(),
        ],
    );
}

pub async fn pod_uid(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.uid())
}

pub async fn sts_replicas(store: &Store, client: &kube::Client) -> Option<i32> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &store.ns);
    api.get_opt(&store.name)
        .await
        .ok()
        .flatten()
        .and_then(|s| s.spec)
        .and_then(|s| s.replicas)
}

// ------------------------------------------------------ continuous writer

/// What a [`Writer`] saw.
#[derive(Debug, Clone, Default)]
pub struct WriterReport {
    /// Indexes `i` of the keys `<prefix><i>` whose SET was acknowledged.
    pub acked: Vec<u64>,
    pub attempts: u64,
    /// Failed attempts by error code or kind.
    pub errors: BTreeMap<String, u64>,
    /// The longest time between two consecutive acknowledgements, and
    /// when it began (from the writer's start).
    pub longest_pause: Duration,
    pub longest_pause_at: Duration,
    /// Every pause over 200 ms: (start from the writer's start, length).
    pub pauses: Vec<(Duration, Duration)>,
    pub ran: Duration,
}

impl WriterReport {
    /// One line for the test output.
    pub fn summary(&self) -> String {
        let pauses: Vec<String> = self
            .pauses
            .iter()
            .map(|(at, len)| format!("{:.2} s at +{:.1} s", len.as_secs_f64(), at.as_secs_f64()))
            .collect();
        format!(
            "{} of {} writes acknowledged in {:.1} s; longest pause {:.3} s at +{:.1} s; pauses > 200 ms: [{}]; errors: {:?}",
            self.acked.len(),
            self.attempts,
            self.ran.as_secs_f64(),
            self.longest_pause.as_secs_f64(),
            self.longest_pause_at.as_secs_f64(),
            pauses.join(", "),
            self.errors
        )
    }
}

/// A thread writing `SET <prefix><i> <i>` through an address (a Service
/// proxy) every `pace`, reconnecting after any error (a new connection
/// goes to the Service's endpoint of that moment).
/// Dropped without [`Writer::stop`] (a failed test), it stops writing.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<WriterReport>>,
    pub started: Instant,
}

impl Writer {
    pub fn start(addr: SocketAddr, prefix: &str, pace: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let (s, a, prefix) = (stop.clone(), acked.clone(), prefix.to_string());
        let handle = std::thread::Builder::new()
            .name(format!("writer-{prefix}"))
            .spawn(move || {
                let mut report = WriterReport::default();
                let mut conn: Option<redis::Connection> = None;
                let mut last_ok: Option<Instant> = None;
                let mut i: u64 = 0;
                while !s.load(Ordering::SeqCst) {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match redis_at(addr) {
                            Ok(c) => conn.insert(c),
                            Err(e) => {
                                *report
                                    .errors
                                    .entry(format!("connect {:?}", e.kind()))
                                    .or_default() += 1;
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                        },
                    };
                    report.attempts += 1;
                    let res = redis::cmd("SET")
                        .arg(format!("{prefix}{i}"))
                        .arg(i)
                        .query::<()>(c);
                    match res {
                        Ok(()) => {
                            let now = Instant::now();
                            if let Some(last) = last_ok {
                                let gap = now - last;
                                if gap > report.longest_pause {
                                    report.longest_pause = gap;
                                    report.longest_pause_at = last - started;
                                }
                                if gap > Duration::from_millis(200) {
                                    report.pauses.push((last - started, gap));
                                }
                            }
                            last_ok = Some(now);
                            report.acked.push(i);
                            a.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(pace);
                        }
                        Err(e) => {
                            let kind = e
                                .code()
                                .map(str::to_string)
                                .unwrap_or_else(|| format!("{:?}", e.kind()));
                            *report.errors.entry(kind).or_default() += 1;
                            conn = None;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    i += 1;
                }
                report.ran = started.elapsed();
                report
            })
            .expect("start the writer thread");
        Writer {
            stop,
            acked,
            handle: Some(handle),
            started,
        }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Seconds since the writer started (for timelines).
    pub fn at(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn stop(mut self) -> WriterReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("a running writer")
            .join()
            .expect("the writer thread panicked")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The acknowledged keys of `report` missing (or wrong) when read through
/// `addr` (the leader Service), by index.
pub fn lost_writes(addr: SocketAddr, prefix: &str, report: &WriterReport) -> Vec<u64> {
    let mut lost = Vec::new();
    let mut c = redis_at(addr).expect("connect to check the acknowledged writes");
    for chunk in report.acked.chunks(500) {
        let mut cmd = redis::cmd("MGET");
        for i in chunk {
            cmd.arg(format!("{prefix}{i}"));
        }
        let values: Vec<Option<String>> = cmd.query(&mut c).expect("MGET the acknowledged keys");
        for (i, v) in chunk.iter().zip(values) {
            if v != Some(i.to_string()) {
                lost.push(*i);
            }
        }
    }
    lost
}

/// A failover under load: a [`Writer`] through the leader Service (a
/// SET every 5 ms) runs before `fault`, through the failover (waited for
/// with [`wait_failover`]) and for 50 more acknowledged writes after it;
/// then every acknowledged write must be on the new leader. Records the
/// writer's longest pause as a figure. Returns the status after the
/// failover and the writer's report.
pub async fn failover_under_writer(
    cluster: &dyn Platform,
    store: &Store,
    what: &str,
    fault: impl FnOnce(),
) -> (ReplicatedStoreStatus, WriterReport) {
    let before = store.status().await;
    let prefix = format!("w-{}-", store.name);
    let writer = Writer::start(store.leader_svc, &prefix, Duration::from_millis(5));
    until_acked(&writer, 50, "the writer's first 50 writes").await;
    let t = Instant::now();
    fault();
    let after = wait_failover(cluster, store, before.epoch, t, what).await;
    let acked = writer.acked();
    until_acked(&writer, acked + 50, "50 writes after the failover").await;
    let report = writer.stop();
    let lost = lost_writes(store.leader_svc, &prefix, &report);
    rstore_testkit::figure!(
        "k8s: {}: {what}: writer {}; acknowledged writes lost: {}",
        store.name,
        report.summary(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{what}: {} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    (after, report)
}

async fn until_acked(writer: &Writer, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while writer.acked() < n {
        assert!(Instant::now() < deadline, "{what} within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
