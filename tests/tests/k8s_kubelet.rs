//! The stand-in kubelet (`rstore_e2e::k8s::kubelet`) against the real API
//! server: a pod runs as a real `rstore-node` process at its own address,
//! with its args and env resolved as the kubelet would, probes drive its
//! Ready condition, a killed container restarts, a deleted pod's process
//! stops, and a StatefulSet's pods find each other by DNS name.
//!
//! `RSTORE_SKIP_K8S=1` skips these tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use rstore_e2e::k8s::{self, Cluster};
use rstore_testkit::{Admin, wait_until};

fn apply(cluster: &Cluster, ns: &str, yaml: &str) {
    cluster
        .kubectl_run(&["-n", ns, "apply", "-f", "-"], Some(yaml))
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
}

async fn wait_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods.get_opt(name).await.expect("get pod");
        if let Some(p) = pod
            && ok(&p)
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for pod {name} to be {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map(|c| c.restart_count)
        .unwrap_or(0)
}

fn pod_ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP")
}

fn admin(ip: &str) -> SocketAddr {
    format!("{ip}:8080").parse().expect("admin address")
}

fn node_id(ip: &str) -> String {
    Admin::new(admin(ip))
        .status()
        .unwrap_or_else(|e| panic!("{e}"))
        .node_id
}

const POD: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: pw}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: solo
  labels: {app: solo, tier: cache}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 5
  containers:
  - name: rstore
    image: rstore:0.1.0
    command: [/usr/local/bin/rstore-node]
    args:
    - --listen=0.0.0.0:6379
    - --repl-listen=0.0.0.0:7379
    - --admin-listen=0.0.0.0:8080
    - --data-dir=/data/node
    - --node-id=$(POD_NAME).$(TIER)
    - --role=leader
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: TIER, valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}}
    - {name: RSTORE_REQUIREPASS, valueFrom: {secretKeyRef: {name: pw, key: password}}}
    ports: [{name: admin, containerPort: 8080}, {name: resp, containerPort: 6379}]
    startupProbe: {tcpSocket: {port: admin}, periodSeconds: 1, failureThreshold: 30}
    readinessProbe: {httpGet: {path: /readyz, port: admin}, periodSeconds: 1}
    livenessProbe: {httpGet: {path: /healthz, port: admin}, periodSeconds: 2}
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, emptyDir: {}}
"#;

#[tokio::test]
async fn a_pod_runs_as_a_process_with_its_env_probes_restarts_and_deletion() {
    let Some(cluster) = k8s::shared() else { return };
    let kubelet = cluster.kubelet();
    eprintln!("pod network: {}", kubelet.network_mode());
    let ns = cluster.namespace("k8s-kubelet-pod").await;
    let client = cluster.client().await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);

    let started = Instant::now();
    apply(cluster, &ns, POD);
    let pod = wait_pod(&pods, "solo", "Ready", Duration::from_secs(60), is_ready).await;
    eprintln!(
        "pod Ready {:.2} s after kubectl apply",
        started.elapsed().as_secs_f64()
    );
    let spec = pod.spec.clone().expect("spec");
    assert_eq!(
        spec.node_name.as_deref(),
        Some(kubelet.node_name()),
        "bound"
    );
    let ip = pod_ip(&pod);
    let rt = kubelet.pod(&ns, "solo").expect("the kubelet runs solo");
    assert_eq!(rt.ip, ip);
    if kubelet.network_mode() == "netns" {
        assert!(ip.starts_with("10.213."), "pod address {ip}");
    }

    // $(VAR) expansion of downward API values; the Secret's password.
    assert_eq!(node_id(&ip), "solo.cache");
    let url = format!("redis://:s3cret@{ip}:6379/");
    let mut con = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect to the pod with the Secret's password");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let denied = redis::Client::open(format!("redis://{ip}:6379/").as_str())
        .expect("redis url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .and_then(|mut c| redis::cmd("GET").arg("k").query::<Option<String>>(&mut c));
    assert!(denied.is_err(), "no password: {denied:?}");

    // kill -9: the container restarts (restartPolicy Always), same pod,
    // same address, its emptyDir kept.
    let pid = kubelet.pod_pid(&ns, "solo").expect("pid");
    let t = Instant::now();
    k8s::process::signal(pid, "KILL");
    let pod = wait_pod(
        &pods,
        "solo",
        "restarted and Ready",
        Duration::from_secs(60),
        |p| restarts(p) >= 1 && is_ready(p),
    )
    .await;
    eprintln!(
        "restarted and Ready {:.2} s after kill -9",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(pod_ip(&pod), ip);
    assert_ne!(kubelet.pod_pid(&ns, "solo"), Some(pid));
    let mut con = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("reconnect");
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
    assert_eq!(
        v.as_deref(),
        Some("v"),
        "the emptyDir outlives the container"
    );

    // Delete: the process gets SIGTERM and the pod goes away.
    let pid = kubelet.pod_pid(&ns, "solo").expect("pid");
    let t = Instant::now();
    cluster
        .kubectl_run(&["-n", &ns, "delete", "pod", "solo", "--timeout=60s"], None)
        .expect("kubectl delete pod");
    eprintln!("pod deleted in {:.2} s", t.elapsed().as_secs_f64());
    assert!(pods.get_opt("solo").await.expect("get").is_none());
    wait_until(Duration::from_secs(10), "the pod's process to exit", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert!(kubelet.pod(&ns, "solo").is_none());
}

const STS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kv-headless}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: kv}
  ports: [{name: repl, port: 7379}]
---
apiVersion: v1
kind: Service
metadata: {name: kv}
spec:
  selector: {app: kv}
  ports: [{name: resp, port: 6379, targetPort: resp}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kv}
spec:
  serviceName: kv-headless
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: kv}}
  template:
    metadata: {labels: {app: kv}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 5
      containers:
      - name: rstore
        image: rstore:0.1.0
        command: [/usr/local/bin/rstore-node]
        args: [--listen=0.0.0.0:6379, --repl-listen=0.0.0.0:7379, --admin-listen=0.0.0.0:8080,
               --data-dir=/data, --node-id=$(POD_NAME)]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        ports: [{name: resp, containerPort: 6379}, {name: admin, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /readyz, port: admin}, periodSeconds: 1}
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

/// A StatefulSet's pods: PVC folders, endpoints that follow readiness, and
/// a follower that reaches its leader by the leader's DNS name.
#[tokio::test]
async fn statefulset_pods_reach_each_other_by_dns_and_endpoints_follow_readiness() {
    let Some(cluster) = k8s::shared() else { return };
    let kubelet = cluster.kubelet();
    let ns = cluster.namespace("k8s-kubelet-sts").await;
    let client = cluster.client().await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    apply(cluster, &ns, STS);

    // Neither member has a role yet, so neither is ready.
    let running = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|ph| ph == "Running")
    };
    let kv0 = wait_pod(&pods, "kv-0", "Running", Duration::from_secs(60), running).await;
    let kv1 = wait_pod(&pods, "kv-1", "Running", Duration::from_secs(60), running).await;
    let (ip0, ip1) = (pod_ip(&kv0), pod_ip(&kv1));
    assert_ne!(ip0, ip1);
    let svc = kubelet
        .service_proxy(&ns, "kv", 6379)
        .expect("Service proxy");
    assert!(
        redis::Client::open(format!("redis://{svc}/").as_str())
            .expect("url")
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err(),
        "no ready endpoint: the Service proxy closes the connection"
    );

    // kv-0 leads; kv-1 follows it by DNS name (the headless Service).
    Admin::new(admin(&ip0))
        .promote(1)
        .unwrap_or_else(|e| panic!("promote: {e}"));
    let leader = if kubelet.network_mode() == "netns" {
        format!("kv-0.kv-headless.{}.svc:7379", &*ns)
    } else {
        format!("{ip0}:7379")
    };
    Admin::new(admin(&ip1))
        .follow(&leader, 1)
        .unwrap_or_else(|e| panic!("follow: {e}"));
    wait_pod(&pods, "kv-0", "Ready", Duration::from_secs(30), is_ready).await;
    wait_pod(&pods, "kv-1", "Ready", Duration::from_secs(30), is_ready).await;

    // Through the Service: a write on the leader reaches the follower.
    let mut leader = redis::Client::open(format!("redis://{ip0}:6379/").as_str())
        .expect("url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect kv-0");
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg("1")
        .query(&mut leader)
        .expect("SET on the leader");
    let mut follower = redis::Client::open(format!("redis://{ip1}:6379/").as_str())
        .expect("url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect kv-1");
    wait_until(
        Duration::from_secs(20),
        "the write to replicate by DNS name",
        || {
            redis::cmd("GET")
                .arg("x")
                .query::<Option<String>>(&mut follower)
                .ok()
                .flatten()
                .filter(|v| v == "1")
        },
    );
    let mut via_svc = redis::Client::open(format!("redis://{svc}/").as_str())
        .expect("url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect through the Service proxy");
    let v: Option<String> = redis::cmd("GET")
        .arg("x")
        .query(&mut via_svc)
        .expect("GET through the Service");
    assert_eq!(v.as_deref(), Some("1"));

    // PVCs: created by the StatefulSet, their folders outlive the pods.
    let claims = cluster
        .kubectl_run(&["-n", &ns, "get", "pvc", "-o", "name"], None)
        .expect("get pvc");
    assert!(
        claims.contains("data-kv-0") && claims.contains("data-kv-1"),
        "{claims}"
    );
    let dir = cluster.dir.join("volumes").join(&*ns).join("data-kv-0");
    assert!(dir.is_dir(), "{} exists", dir.display());
    // `--wait=false`: kubectl's own wait for a deletion can hang when the
    // StatefulSet recreates the same name between kubectl's GET and the LIST
    // of its watch (its store then holds the new pod and no Deleted event
    // ever comes; later kubectl versions compare UIDs there). The wait below
    // for a pod with a new UID is the check that matters.
    cluster
        .kubectl_run(&["-n", &ns, "delete", "pod", "kv-0", "--wait=false"], None)
        .expect("delete kv-0");
    let kv0 = wait_pod(
        &pods,
        "kv-0",
        "recreated and Running",
        Duration::from_secs(60),
        |p| running(p) && p.metadata.uid != kv0.metadata.uid,
    )
    .await;
    let ip0 = pod_ip(&kv0);
    wait_until(
        Duration::from_secs(30),
        "the recreated kv-0 to serve",
        || std::net::TcpStream::connect_timeout(&admin(&ip0), Duration::from_secs(1)).ok(),
    );
    let st = Admin::new(admin(&ip0))
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        st.epoch >= 1,
        "the recreated pod kept its data and epoch (PVC folder): {st:?}"
    );
}
