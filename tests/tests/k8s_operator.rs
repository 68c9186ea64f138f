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
//! has its own namespace and store. `RSTORE_SKIP_K8S=1` skips them.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use rstore_e2e::k8s::{self, Cluster, kubelet::Kubelet};
use rstore_operator::crd::{ReplicatedStore, ReplicatedStoreStatus};

const PASSWORD: &str = "change-me";
const OPERATOR_NS: &str = "rstore-system";
const KEYS: usize = 100;

fn redis_at(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://:{PASSWORD}@{addr}/").as_str())?
        .get_connection_with_timeout(Duration::from_secs(3))
}

/// `helm install` the chart once per cluster, waiting for the operator.
fn install_operator(cluster: &Cluster) {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let done = INSTALLED.get_or_init(|| {
        cluster.kubelet();
        let chart = k8s::components::workspace_root().join("charts/rstore");
        let t = Instant::now();
        let out = k8s::run(
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
        eprintln!(
            "helm install in {:.1} s:\n{}",
            t.elapsed().as_secs_f64(),
            out.lines().take(5).collect::<Vec<_>>().join("\n")
        );
        Ok(())
    });
    if let Err(e) = done {
        panic!("helm install of charts/rstore: {e}");
    }
}

fn operator_log(kubelet: &Kubelet, cluster: &Cluster) -> String {
    let pods = cluster
        .kubectl_run(&["-n", OPERATOR_NS, "get", "pods", "-o", "name"], None)
        .unwrap_or_default();
    pods.lines()
        .filter_map(|p| p.strip_prefix("pod/"))
        .filter_map(|p| kubelet.pod(OPERATOR_NS, p))
        .map(|rt| k8s::process::tail(&rt.log, 40))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A deployed example store: its name, namespace, API and Service proxies.
struct Store {
    name: String,
    ns: k8s::TestNamespace,
    api: Api<ReplicatedStore>,
    pods: Api<Pod>,
    slices: Api<EndpointSlice>,
    leader_svc: SocketAddr,
    read_svc: SocketAddr,
}

impl Store {
    async fn status(&self) -> ReplicatedStoreStatus {
        self.api
            .get(&self.name)
            .await
            .expect("get ReplicatedStore")
            .status
            .unwrap_or_default()
    }

    fn member(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }
}

/// `kubectl apply -f` the chart's example as `name` in a new namespace,
/// and wait until it is Available with 3 ready members.
async fn deploy_example(cluster: &'static Cluster, name: &str) -> Store {
    install_operator(cluster);
    let kubelet = cluster.kubelet();
    let ns = cluster.namespace(&format!("k8s-op-{name}")).await;
    let client = cluster.client().await;
    let root = k8s::components::workspace_root();
    let example = std::fs::read_to_string(root.join("charts/rstore/examples/replicatedstore.yaml"))
        .expect("read the example");
    let example = example
        .replace("namespace: default", &format!("namespace: {}", &*ns))
        .replace("name: demo", &format!("name: {name}"));
    let t = Instant::now();
    cluster
        .kubectl_run(&["apply", "-f", "-"], Some(&example))
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
            operator_log(kubelet, cluster)
        );
    }
    let store = Store {
        name: name.to_string(),
        api: Api::namespaced(client.clone(), &ns),
        pods: Api::namespaced(client.clone(), &ns),
        slices: Api::namespaced(client.clone(), &ns),
        leader_svc: kubelet
            .service_proxy(&ns, &format!("{name}-leader"), 6379)
            .expect("leader Service proxy"),
        read_svc: kubelet
            .service_proxy(&ns, &format!("{name}-read"), 6379)
            .expect("read Service proxy"),
        ns,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = store.status().await;
        if st.ready_replicas == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 ready members within 120 s: {st:?}\noperator log:\n{}",
            operator_log(kubelet, cluster)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{name}: Available with 3/3 ready {:.1} s after kubectl apply",
        t.elapsed().as_secs_f64()
    );
    store
}

/// Ready endpoint addresses of Service `name`.
async fn endpoints(slices: &Api<EndpointSlice>, name: &str) -> Vec<String> {
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

async fn pod_ips(pods: &Api<Pod>, names: &[String]) -> Vec<String> {
    let mut ips = Vec::new();
    for n in names {
        let p = pods.get(n).await.expect("get pod");
        ips.extend(p.status.and_then(|s| s.pod_ip));
    }
    ips.sort();
    ips
}

/// Write KEYS keys through the leader Service (each acknowledged).
fn write_keys(store: &Store, prefix: &str) {
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
fn check_keys(store: &Store, prefix: &str) {
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
async fn wait_failover(
    cluster: &Cluster,
    store: &Store,
    epoch: i64,
    since: Instant,
    what: &str,
) -> ReplicatedStoreStatus {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = store.status().await;
        if st.epoch > epoch && st.last_failover.is_some() {
            let ok = redis_at(store.leader_svc).and_then(|mut c| {
                redis::cmd("SET")
                    .arg("after")
                    .arg("failover")
                    .query::<()>(&mut c)
            });
            if ok.is_ok() {
                let f = st.last_failover.clone().expect("lastFailover");
                eprintln!(
                    "{}: {what}: writes through {}-leader resumed after {:.2} s; {:?} -> {} at epoch {}, \
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
            operator_log(cluster.kubelet(), cluster)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `member` is back as a ready member in `roles`.
async fn wait_member(store: &Store, member: &str, roles: &[&str]) -> String {
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

fn assert_no_rbac_denials(cluster: &Cluster) {
    let log = operator_log(cluster.kubelet(), cluster);
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
    rstore_e2e::wait_for("reads through demo-read", Duration::from_secs(20), || {
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

    // Failover: delete the leader pod.
    let t = Instant::now();
    cluster
        .kubectl_run(&["-n", ns, "delete", "pod", &leader, "--wait=false"], None)
        .expect("delete the leader pod");
    wait_failover(cluster, &store, st.epoch, t, "leader pod deleted").await;
    check_keys(&store, "k");
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
    k8s::process::signal(pid, "KILL");
    let after = wait_failover(cluster, &store, st.epoch, t, "leader SIGKILL").await;
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
    eprintln!(
        "kill: {leader} back as {role} {:.2} s after SIGKILL (restarts: {})",
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
    k8s::process::signal(pid, "STOP");
    let after = wait_failover(cluster, &store, st.epoch, t, "leader SIGSTOP").await;
    assert_ne!(after.leader.as_deref(), Some(leader.as_str()));
    check_keys(&store, "k");
    // Resumed, the old leader is fenced and repointed: a follower.
    k8s::process::signal(pid, "CONT");
    wait_member(&store, &leader, &["follower"]).await;
    eprintln!(
        "stop: {leader} back as a follower {:.2} s after SIGSTOP",
        t.elapsed().as_secs_f64()
    );
    assert_no_rbac_denials(cluster);
}
