//! A stand-in kubelet for the test cluster: it registers a Ready Node, binds
//! pending pods to it (no scheduler), and runs each pod's container as a
//! real process:
//!
//! - the image's binary is looked up by the basename of the container's
//!   command (`/usr/local/bin/rstore-node` -> `target/debug/rstore-node`),
//!   or, without a command, the image's entrypoint (rstore images:
//!   `rstore-node`);
//! - args and env are resolved as the kubelet does: `$(VAR)` expansion,
//!   `value`, downward API `fieldRef` (metadata.name/namespace/uid/labels/
//!   annotations, spec.nodeName/serviceAccountName, status.podIP/hostIP),
//!   `secretKeyRef` and `configMapKeyRef`, `envFrom`;
//! - each pod gets its own network namespace (`ip netns`) with a veth on a
//!   bridge and its own address, and an /etc/hosts (through
//!   `/etc/netns/<ns>/hosts`) with every pod's DNS names
//!   (`<hostname>.<subdomain>.<namespace>.svc[.cluster.local]`); where
//!   network namespaces cannot be made it says so and falls back to one
//!   loopback address per pod (binds to 0.0.0.0 rewritten to that address;
//!   `RSTORE_K8S_NETNS=0` forces this);
//! - volumes are folders: a PVC is `<cluster>/volumes/<ns>/<claim>` and
//!   outlives the pod; emptyDir, Secret, ConfigMap and projected volumes are
//!   written per pod (Secret and ConfigMap ones again every 2 s while it
//!   runs, as the kubelet's sync updates them); an argument or env value naming a mount path is
//!   rewritten to the folder (there is no mount namespace), and a pod with a
//!   ServiceAccount token gets a kubeconfig with that token (`KUBECONFIG`),
//!   which kube clients read before the in-cluster files;
//! - startup, liveness and readiness probes (httpGet, tcpSocket, exec) run
//!   with their periods and thresholds, and the pod's status, conditions
//!   and container status are written, so EndpointSlices follow readiness;
//! - a deleted pod's process gets SIGTERM, then SIGKILL after its grace
//!   period, and the pod is removed; an exited container is restarted per
//!   `restartPolicy` with a short backoff (restartCount counts).
//!
//! Containers run as the test's user (root here): `runAsUser` and the
//! security context are not applied. Only the first container of a pod
//! runs; init containers are not supported.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Node, Pod, Probe, Secret, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::process::Janitor;

/// What the kubelet needs from the cluster, and how it runs pods.
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    /// Node name.
    pub node_name: String,
    /// Binary basename (`rstore-node`) -> the binary to run.
    pub binaries: BTreeMap<String, PathBuf>,
    /// Cluster folder (`pods/`, `volumes/` go there).
    pub dir: PathBuf,
    /// Admin kubeconfig (the kubelet's own credentials).
    pub kubeconfig: PathBuf,
    /// The cluster CA, for the pods' kubeconfigs.
    pub ca_cert: PathBuf,
    /// The API server's loopback port (pods reach it through a forwarder
    /// on the bridge address, port 443).
    pub api_port: u16,
    /// Third octet of the pod network 10.213.X.0/24 (chosen by the cluster,
    /// so the API server's certificate names the gateway 10.213.X.1).
    pub subnet: u8,
    /// First restart delay (doubled per restart, up to 8 s).
    pub restart_backoff: Duration,
    /// Longest wait between SIGTERM and SIGKILL of a deleted pod.
    pub max_grace: Duration,
}

/// The pod network's gateway (the bridge's address) for `subnet`.
pub fn gateway(subnet: u8) -> String {
    format!("10.213.{subnet}.1")
}

/// A third octet for 10.213.X.0/24 that no interface uses yet.
pub fn pick_subnet() -> u8 {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let start = (std::process::id() % 200) as u8 + 1;
    (0..254u16)
        .map(|i| ((u16::from(start) + i - 1) % 254 + 1) as u8)
        .find(|x| !out.contains(&format!("10.213.{x}.")))
        .unwrap_or(start)
}

/// A running stand-in kubelet (its own thread and tokio runtime).
pub struct Kubelet {
    state: Arc<State>,
    handle: tokio::runtime::Handle,
    shutdown: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A pod as the kubelet runs it.
#[derive(Clone, Debug)]
pub struct PodRuntime {
    pub uid: String,
    pub ip: String,
    /// Pid of the running container process.
    pub pid: Option<u32>,
    /// Container output (all restarts appended).
    pub log: PathBuf,
    pub restarts: i32,
    /// Network namespace name (None in loopback mode).
    pub netns: Option<String>,
}

struct State {
    opts: KubeletOptions,
    janitor: Arc<Janitor>,
    net: Net,
    /// "ns/name" -> runtime.
    pods: Mutex<HashMap<String, PodRuntime>>,
    /// uid -> (ip, DNS names), for the hosts files.
    hosts: Mutex<BTreeMap<String, (String, Vec<String>)>>,
    /// Free host numbers (2..=254) of the pod network.
    free_ips: Mutex<Vec<u8>>,
    messages: Mutex<Vec<String>>,
    /// "ns/name" of pods whose exited container is not restarted for now
    /// ([`Kubelet::hold_restarts`]).
    held: Mutex<std::collections::HashSet<String>>,
}

#[derive(Clone, Debug)]
enum Net {
    /// Network namespaces on bridge `bridge`, addresses 10.213.X.n.
    Netns {
        bridge: String,
        subnet: u8,
        id: String,
    },
    /// No namespaces: 127.0.X.n on lo.
    Loopback { subnet: u8 },
}

impl Net {
    fn ip(&self, n: u8) -> String {
        match self {
            Net::Netns { subnet, .. } => format!("10.213.{subnet}.{n}"),
            Net::Loopback { subnet } => format!("127.0.{subnet}.{n}"),
        }
    }
    fn host_ip(&self) -> String {
        match self {
            Net::Netns { subnet, .. } => gateway(*subnet),
            Net::Loopback { .. } => "127.0.0.1".to_string(),
        }
    }
}

fn log_line(state: &State, msg: String) {
    eprintln!("rstore-kubelet: {msg}");
    state
        .messages
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(msg);
}

impl Kubelet {
    /// Register the node and start running pods. The network is set up
    /// before this returns (its failure falls back to loopback, said on
    /// stderr).
    pub fn start(opts: KubeletOptions, janitor: Arc<Janitor>) -> Result<Kubelet, String> {
        let net = setup_network(&opts, &janitor);
        let state = Arc::new(State {
            opts,
            janitor,
            net,
            pods: Mutex::new(HashMap::new()),
            hosts: Mutex::new(BTreeMap::new()),
            free_ips: Mutex::new((2..=254).rev().collect()),
            messages: Mutex::new(Vec::new()),
            held: Mutex::new(std::collections::HashSet::new()),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel::<tokio::runtime::Handle>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("rstore-kubelet".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("kubelet runtime: {e}")));
                        return;
                    }
                };
                let _ = handle_tx.send(rt.handle().clone());
                rt.block_on(run(st, shutdown_rx, ready_tx));
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(|e| format!("start the kubelet thread: {e}"))?;
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("the kubelet did not register its node within 60 s".into()),
        }
        let handle = handle_rx
            .recv_timeout(Duration::from_secs(1))
            .map_err(|_| "the kubelet runtime did not start".to_string())?;
        Ok(Kubelet {
            state,
            handle,
            shutdown,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn node_name(&self) -> &str {
        &self.state.opts.node_name
    }

    /// "netns" (a network namespace per pod) or "loopback".
    pub fn network_mode(&self) -> &'static str {
        match self.state.net {
            Net::Netns { .. } => "netns",
            Net::Loopback { .. } => "loopback",
        }
    }

    /// The pod as run now (None when this kubelet does not run it).
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodRuntime> {
        self.state
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// Pid of the pod's running container process.
    pub fn pod_pid(&self, namespace: &str, name: &str) -> Option<u32> {
        self.pod(namespace, name).and_then(|p| p.pid)
    }

    /// A local proxy (127.0.0.1) to Service `service` port `port` in
    /// `namespace`, like kube-proxy: each connection goes to a ready
    /// endpoint of the Service at that moment. It runs on the kubelet's
    /// runtime, so sync and async tests can use it.
    pub fn service_proxy(
        &self,
        namespace: &str,
        service: &str,
        port: u16,
    ) -> Result<SocketAddr, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let kubeconfig = self.state.opts.kubeconfig.clone();
        let (ns, svc) = (namespace.to_string(), service.to_string());
        self.handle.spawn(async move {
            let started = async {
                let client = admin_client(&kubeconfig).await?;
                service_proxy(client, &ns, &svc, port).await
            }
            .await;
            match started {
                Ok((addr, task)) => {
                    let _ = tx.send(Ok(addr));
                    let _ = task.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("the proxy for Service {namespace}/{service} did not start"))?
    }

    /// Hold (or release) restarts of the pod's container: while held, a
    /// container that exits stays down (its status says CrashLoopBackOff)
    /// and the pod object stays, as when a node's runtime is gone. A test
    /// kills a process that must not come back right away; releasing the
    /// hold restarts it.
    pub fn hold_restarts(&self, namespace: &str, name: &str, hold: bool) {
        let key = format!("{namespace}/{name}");
        let mut held = self.state.held.lock().unwrap_or_else(|e| e.into_inner());
        if hold {
            held.insert(key);
        } else {
            held.remove(&key);
        }
    }

    /// Lines the kubelet printed (pod starts, exits, probe failures).
    pub fn messages(&self) -> Vec<String> {
        self.state
            .messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stop every pod process and the kubelet. Idempotent; also on drop.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn setup_network(opts: &KubeletOptions, janitor: &Janitor) -> Net {
    let id = format!(
        "{:04x}",
        (std::process::id() ^ u32::from(opts.subnet) << 8) & 0xffff
    );
    let bridge = format!("rsbr{id}");
    let gw = gateway(opts.subnet);
    let probe = format!("rs{id}-probe");
    let attempt = || -> Result<(), String> {
        if std::env::var("RSTORE_K8S_NETNS").is_ok_and(|v| v == "0") {
            return Err("RSTORE_K8S_NETNS=0".into());
        }
        // Can this process make network namespaces at all?
        sh(&["ip", "netns", "add", &probe])?;
        let _ = sh(&["ip", "netns", "del", &probe]);
        sh(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        janitor.on_cleanup(&format!("ip link del {bridge}"));
        // Catch-alls for pods whose own cleanup did not run.
        janitor.on_cleanup(&format!(
            "ip netns list | awk '/^rs{id}-/ {{print $1}}' | xargs -r -n1 ip netns del"
        ));
        janitor.on_cleanup(&format!("rm -rf /etc/netns/rs{id}-*"));
        sh(&["ip", "addr", "add", &format!("{gw}/24"), "dev", &bridge])?;
        sh(&["ip", "link", "set", &bridge, "up"])?;
        Ok(())
    };
    match attempt() {
        Ok(()) => Net::Netns {
            bridge,
            subnet: opts.subnet,
            id,
        },
        Err(e) => {
            let _ = sh(&["ip", "link", "del", &bridge]);
            eprintln!(
                "rstore-kubelet: network namespaces are unavailable ({e}): falling back to one \
                 loopback address per pod (127.0.{}.N); pods' DNS names do not resolve",
                opts.subnet
            );
            Net::Loopback {
                subnet: opts.subnet,
            }
        }
    }
}

async fn run(
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let client = match admin_client(&state.opts.kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if let Err(e) = register_node(&client, &state).await {
        let _ = ready.send(Err(e));
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    if let Net::Netns { .. } = state.net {
        let listen: SocketAddr = match format!("{}:443", state.net.host_ip()).parse() {
            Ok(a) => a,
            Err(e) => {
                let _ = ready.send(Err(format!("gateway address: {e}")));
                return;
            }
        };
        let target: SocketAddr = ([127, 0, 0, 1], state.opts.api_port).into();
        match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => {
                tasks.spawn(forward(l, move || async move { Some(target) }));
            }
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "bind the API server forwarder on {listen}: {e}"
                )));
                return;
            }
        }
    }
    tasks.spawn(heartbeat(client.clone(), state.opts.node_name.clone()));
    let _ = ready.send(Ok(()));

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<String, (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
            }
            ev = events.next() => {
                let pod = match ev {
                    Some(Ok(Event::Apply(p) | Event::InitApply(p))) => Some(p),
                    Some(Ok(Event::Delete(p))) => {
                        if let Some((tx, _)) = workers.get(&p.uid().unwrap_or_default()) {
                            let _ = tx.send(None);
                        }
                        None
                    }
                    Some(Ok(_)) => None,
                    Some(Err(e)) => {
                        log_line(&state, format!("pod watch error: {e}"));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        None
                    }
                    None => break,
                };
                let Some(pod) = pod else { continue };
                let spec = pod.spec.clone().unwrap_or_default();
                let uid = pod.uid().unwrap_or_default();
                if spec.node_name.is_none() && pod.metadata.deletion_timestamp.is_none() {
                    tokio::spawn(bind(client.clone(), pod.clone(), state.opts.node_name.clone()));
                    continue;
                }
                if spec.node_name.as_deref() != Some(state.opts.node_name.as_str()) {
                    continue;
                }
                if let Some((tx, _)) = workers.get(&uid) {
                    let _ = tx.send(Some(pod));
                    continue;
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                if phase == "Succeeded" || phase == "Failed" {
                    continue;
                }
                let (tx, rx) = watch::channel(Some(pod));
                let st = state.clone();
                let c = client.clone();
                let done = done_tx.clone();
                let u = uid.clone();
                let handle = tokio::spawn(async move {
                    pod_worker(st, c, rx).await;
                    let _ = done.send(u);
                });
                workers.insert(uid, (tx, handle));
            }
        }
    }
    // Shutdown: stop every pod (they are killed, not deleted from the API).
    for (_, (tx, _)) in workers.iter() {
        let _ = tx.send(None);
    }
    for (_, (_, handle)) in workers.drain() {
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    }
    tasks.abort_all();
}

async fn admin_client(kubeconfig: &Path) -> Result<Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("read {}: {e}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("load {}: {e}", kubeconfig.display()))?;
    Client::try_from(config).map_err(|e| format!("kube client: {e}"))
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn node_status(state: &State) -> Value {
    let t = now();
    let cond = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!({
        "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"},
        "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"},
        "conditions": [
            cond("Ready", "True", "KubeletReady"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": state.net.host_ip()},
            {"type": "Hostname", "address": state.opts.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "rstore-test", "systemUUID": "rstore-test", "bootID": "rstore-test",
            "kernelVersion": "", "osImage": "rstore stand-in kubelet",
            "containerRuntimeVersion": "rstore-kubelet://0.1", "kubeletVersion": "v1.34.0",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

async fn register_node(client: &Client, state: &State) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = &state.opts.node_name;
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "rstore.dev/stand-in-kubelet": "true"}},
        "spec": {},
    }))
    .map_err(|e| format!("node object: {e}"))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("register node {name}: {e}")),
    }
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": node_status(state)})),
        )
        .await
        .map_err(|e| format!("node {name} status: {e}"))?;
    // Admission adds a not-ready taint to a node created before it is
    // Ready; the node lifecycle controller, which would remove it, is off.
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .map_err(|e| format!("node {name} taints: {e}"))?;
    Ok(())
}

async fn heartbeat(client: Client, name: String) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t = now();
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "KubeletReady",
             "lastHeartbeatTime": t}
        ]}});
        let _ = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await;
    }
}

async fn bind(client: Client, pod: Pod, node: String) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let scheduler = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.clone())
        .unwrap_or_else(|| "default-scheduler".into());
    if scheduler != "default-scheduler" {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.uid()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let res: Result<Value, _> = pods
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    match res {
        Ok(_) => {}
        // Already bound (a second event for the same pod) or gone.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
        Err(e) => eprintln!("rstore-kubelet: bind {ns}/{name}: {e}"),
    }
}

/// Accept connections on `listener` and pipe each to the address `target`
/// gives at that moment (None: close it).
async fn forward<F, Fut>(listener: tokio::net::TcpListener, target: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<SocketAddr>> + Send,
{
    let target = Arc::new(target);
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let Some(addr) = target().await else { return };
            let Ok(Ok(mut outbound)) =
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                    .await
            else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

// ---------------------------------------------------------------- pods

/// What the worker knows of the container's current run.
#[derive(Clone, Debug, Default)]
struct RunState {
    started_at: Option<String>,
    pod_started_at: Option<String>,
    started: bool,
    ready: bool,
    restarts: i32,
    last_terminated: Option<Value>,
    waiting: Option<(String, String)>,
    terminated: Option<Value>,
    ready_since: Option<String>,
    phase: String,
}

struct PodEnv {
    ns: String,
    name: String,
    uid: String,
    ip: String,
    n: u8,
    netns: Option<String>,
    dir: PathBuf,
}

async fn pod_worker(state: Arc<State>, client: Client, mut rx: watch::Receiver<Option<Pod>>) {
    let Some(mut pod) = rx.borrow().clone() else {
        return;
    };
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let key = format!("{ns}/{name}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    let Some(n) = state
        .free_ips
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
    else {
        log_line(&state, format!("{key}: no free pod address"));
        return;
    };
    let ip = state.net.ip(n);
    let short = &uid[..uid.len().min(8)];
    let dir = state
        .opts
        .dir
        .join("pods")
        .join(format!("{ns}_{name}_{short}"));
    let log = dir.join("container.log");
    let mut env = PodEnv {
        ns: ns.clone(),
        name: name.clone(),
        uid: uid.clone(),
        ip: ip.clone(),
        n,
        netns: None,
        dir,
    };
    if let Err(e) = std::fs::create_dir_all(&env.dir) {
        log_line(&state, format!("{key}: create {}: {e}", env.dir.display()));
    }
    match setup_pod_net(&state, &env).await {
        Ok(netns) => env.netns = netns,
        Err(e) => log_line(&state, format!("{key}: pod network: {e}")),
    }
    state.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(
        key.clone(),
        PodRuntime {
            uid: uid.clone(),
            ip: ip.clone(),
            pid: None,
            log: log.clone(),
            restarts: 0,
            netns: env.netns.clone(),
        },
    );
    // After the insert: write_hosts writes the files of the pods in `pods`.
    add_hosts(&state, &pod, &ip);

    let mut rs = RunState {
        pod_started_at: Some(now()),
        phase: "Pending".into(),
        ..RunState::default()
    };
    let mut backoff = state.opts.restart_backoff;
    let mut deleted_from_api = false;
    'runs: loop {
        if pod.metadata.deletion_timestamp.is_some() {
            break;
        }
        let container = match pod.spec.as_ref().and_then(|s| s.containers.first()) {
            Some(c) => c.clone(),
            None => break,
        };
        // Resolve the command line and environment (Secrets may appear later).
        let launch = match prepare(&state, &client, &pod, &container, &env).await {
            Ok(l) => l,
            Err(e) => {
                rs.waiting = Some(("CreateContainerConfigError".into(), e.clone()));
                write_status(&pods, &pod, &env, &state, &rs).await;
                log_line(&state, format!("{key}: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    r = rx.changed() => {
                        if r.is_err() { deleted_from_api = true; break 'runs; }
                        match rx.borrow().clone() { Some(p) => pod = p, None => { deleted_from_api = true; break 'runs; } }
                    }
                }
                continue;
            }
        };
        let mut cmd = launch.command(&env);
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log);
        let (stdout, stderr) = match out.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (std::process::Stdio::from(a), std::process::Stdio::from(b)),
            Err(e) => {
                log_line(&state, format!("{key}: open {}: {e}", log.display()));
                (std::process::Stdio::null(), std::process::Stdio::null())
            }
        };
        cmd.stdout(stdout)
            .stderr(stderr)
            .stdin(std::process::Stdio::null());
        cmd.kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                rs.waiting = Some(("RunContainerError".into(), format!("{e}")));
                write_status(&pods, &pod, &env, &state, &rs).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        state.janitor.watch(pid);
        if let Some(p) = state
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key)
        {
            p.pid = Some(pid);
            p.restarts = rs.restarts;
        }
        log_line(
            &state,
            format!(
                "{key}: started {} (pid {pid}, ip {ip}, restart {})",
                launch.program.display(),
                rs.restarts
            ),
        );
        rs.waiting = None;
        rs.terminated = None;
        rs.started_at = Some(now());
        rs.phase = "Running".into();
        rs.started = container.startup_probe.is_none();
        rs.ready = false;
        write_status(&pods, &pod, &env, &state, &rs).await;

        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<ProbeEvent>();
        let prober = tokio::spawn(run_probes(
            container.clone(),
            env.ip.clone(),
            env.netns.clone(),
            probe_tx,
        ));
        let run_started = Instant::now();
        let mut stop_reason: Option<&str> = None;
        // Secret and ConfigMap volumes follow their objects while the
        // container runs, as the kubelet's periodic sync does.
        let mut volume_sync = tokio::time::interval(VOLUME_SYNC);
        volume_sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let exit = loop {
            tokio::select! {
                status = child.wait() => break status.ok(),
                _ = volume_sync.tick() => {
                    if let Err(e) = refresh_volumes(&state, &client, &pod, &env).await {
                        log_line(&state, format!("{key}: volume sync: {e}"));
                    }
                }
                ev = probe_rx.recv() => match ev {
                    Some(ProbeEvent::Started) => {
                        rs.started = true;
                        write_status(&pods, &pod, &env, &state, &rs).await;
                    }
                    Some(ProbeEvent::Ready(r)) if r != rs.ready => {
                        rs.ready = r;
                        rs.ready_since = Some(now());
                        write_status(&pods, &pod, &env, &state, &rs).await;
                    }
                    Some(ProbeEvent::Ready(_)) => {}
                    Some(ProbeEvent::Failed(what)) => {
                        log_line(&state, format!("{key}: {what} failed: restarting the container"));
                        stop_reason = Some("liveness");
                        terminate(&mut child, Duration::from_secs(
                            pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).clamp(0, 30) as u64,
                        )).await;
                    }
                    None => {}
                },
                r = rx.changed() => {
                    let next = if r.is_err() { None } else { rx.borrow().clone() };
                    match next {
                        None => {
                            deleted_from_api = true;
                            stop_reason = Some("deleted");
                            terminate(&mut child, Duration::from_secs(2)).await;
                        }
                        Some(p) => {
                            pod = p;
                            if pod.metadata.deletion_timestamp.is_some() && stop_reason.is_none() {
                                stop_reason = Some("deleted");
                                let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64;
                                let grace = Duration::from_secs(grace).min(state.opts.max_grace);
                                log_line(&state, format!("{key}: deleted: stopping (grace {grace:?})"));
                                terminate(&mut child, grace).await;
                            }
                        }
                    }
                }
            }
        };
        prober.abort();
        state.janitor.forget(pid);
        if let Some(p) = state
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key)
        {
            p.pid = None;
        }
        let code = exit.and_then(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.code().or_else(|| s.signal().map(|sig| 128 + sig))
        });
        let code = code.unwrap_or(-1);
        log_line(&state, format!("{key}: container exited with {code}"));
        let term = json!({
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": rs.started_at,
            "finishedAt": now(),
        });
        rs.ready = false;
        rs.started = false;
        if stop_reason == Some("deleted") || pod.metadata.deletion_timestamp.is_some() {
            rs.terminated = Some(term);
            break;
        }
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        if !restart {
            rs.terminated = Some(term);
            rs.phase = if code == 0 { "Succeeded" } else { "Failed" }.into();
            write_status(&pods, &pod, &env, &state, &rs).await;
            // The pod keeps its record; its network goes.
            break;
        }
        rs.last_terminated = Some(term);
        rs.restarts += 1;
        if run_started.elapsed() > Duration::from_secs(30) {
            backoff = state.opts.restart_backoff;
        }
        rs.waiting = Some((
            "CrashLoopBackOff".into(),
            format!("back-off {backoff:?} restarting failed container"),
        ));
        write_status(&pods, &pod, &env, &state, &rs).await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            r = rx.changed() => {
                let next = if r.is_err() { None } else { rx.borrow().clone() };
                match next {
                    None => { deleted_from_api = true; break 'runs; }
                    Some(p) => pod = p,
                }
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(8));
        let held = |state: &State| {
            state
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
        };
        if held(&state) {
            log_line(&state, format!("{key}: restart held"));
            while held(&state) && pod.metadata.deletion_timestamp.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    r = rx.changed() => {
                        let next = if r.is_err() { None } else { rx.borrow().clone() };
                        match next {
                            None => { deleted_from_api = true; break 'runs; }
                            Some(p) => pod = p,
                        }
                    }
                }
            }
            backoff = state.opts.restart_backoff;
        }
    }

    // The pod is gone or being deleted: finish the deletion as the kubelet
    // does (grace 0 once the container stopped), and release the network.
    if !deleted_from_api && pod.metadata.deletion_timestamp.is_some() {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => log_line(&state, format!("{key}: delete: {e}")),
        }
    }
    // Out of `pods` first: write_hosts then no longer writes this pod's
    // hosts file while its folder is removed.
    {
        let mut map = state.pods.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|p| p.uid == uid) {
            map.remove(&key);
        }
    }
    remove_hosts(&state, &uid);
    teardown_pod_net(&state, &env).await;
    state
        .free_ips
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(0, n);
}

/// SIGTERM, then SIGKILL after `grace`; waits for the exit.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        super::process::signal(pid, "CONT");
        super::process::signal(pid, "TERM");
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

async fn setup_pod_net(state: &State, env: &PodEnv) -> Result<Option<String>, String> {
    let Net::Netns { bridge, id, .. } = &state.net else {
        return Ok(None);
    };
    let netns = format!("rs{id}-{}", env.n);
    let veth = format!("rsv{id}h{}", env.n);
    // A leftover of an earlier pod with this number.
    let _ = sh(&["ip", "netns", "del", &netns]);
    let _ = std::fs::remove_dir_all(format!("/etc/netns/{netns}"));
    sh(&["ip", "netns", "add", &netns])?;
    state.janitor.on_cleanup(&format!("ip netns del {netns}"));
    state
        .janitor
        .on_cleanup(&format!("rm -rf /etc/netns/{netns}"));
    sh(&[
        "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
    ])?;
    sh(&["ip", "link", "set", &veth, "master", bridge, "up"])?;
    let addr = format!("{}/24", env.ip);
    sh(&["ip", "-n", &netns, "addr", "add", &addr, "dev", "eth0"])?;
    sh(&["ip", "-n", &netns, "link", "set", "eth0", "up"])?;
    sh(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
    sh(&[
        "ip",
        "-n",
        &netns,
        "route",
        "add",
        "default",
        "via",
        &state.net.host_ip(),
    ])?;
    let etc = PathBuf::from(format!("/etc/netns/{netns}"));
    std::fs::create_dir_all(&etc).map_err(|e| format!("create {}: {e}", etc.display()))?;
    // Names not in hosts fail at once instead of waiting for a DNS server.
    std::fs::write(
        etc.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .map_err(|e| format!("write resolv.conf of {netns}: {e}"))?;
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n")
        .map_err(|e| format!("write hosts of {netns}: {e}"))?;
    Ok(Some(netns))
}

async fn teardown_pod_net(state: &State, env: &PodEnv) {
    if let Some(netns) = &env.netns {
        let _ = sh(&["ip", "netns", "del", netns]);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{netns}"));
        state.janitor.cleanup_done(&format!("ip netns del {netns}"));
        state
            .janitor
            .cleanup_done(&format!("rm -rf /etc/netns/{netns}"));
    }
}

fn pod_names(pod: &Pod) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    let mut names = Vec::new();
    if let Some(sub) = &spec.subdomain {
        names.push(format!("{hostname}.{sub}.{ns}.svc.cluster.local"));
        names.push(format!("{hostname}.{sub}.{ns}.svc"));
    }
    names
}

fn add_hosts(state: &State, pod: &Pod, ip: &str) {
    state
        .hosts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            pod.uid().unwrap_or_default(),
            (ip.to_string(), pod_names(pod)),
        );
    write_hosts(state);
}

fn remove_hosts(state: &State, uid: &str) {
    state
        .hosts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(uid);
    write_hosts(state);
}

/// Rewrite every pod's hosts file in place (it is bind-mounted by
/// `ip netns exec`, so the inode must stay).
fn write_hosts(state: &State) {
    let Net::Netns { .. } = state.net else { return };
    let hosts = state.hosts.lock().unwrap_or_else(|e| e.into_inner());
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    text.push_str(&format!(
        "{} kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local\n",
        state.net.host_ip()
    ));
    for (ip, names) in hosts.values() {
        if !names.is_empty() {
            text.push_str(&format!("{ip} {}\n", names.join(" ")));
        }
    }
    let pods = state.pods.lock().unwrap_or_else(|e| e.into_inner());
    for p in pods.values() {
        if let Some(netns) = &p.netns {
            let _ = std::fs::write(format!("/etc/netns/{netns}/hosts"), &text);
        }
    }
}

// ------------------------------------------------------- command and env

struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Launch {
    fn command(&self, env: &PodEnv) -> tokio::process::Command {
        let mut cmd = match &env.netns {
            Some(netns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", netns]).arg(&self.program);
                c
            }
            None => tokio::process::Command::new(&self.program),
        };
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.cwd);
        cmd
    }
}

/// `$(VAR)` expansion as the kubelet does it: `$$` is a literal `$`, an
/// unknown variable stays as written.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if tail.starts_with("$(") {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[2..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&tail[..=end]),
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn field_ref(pod: &Pod, path: &str, ip: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let key_of = |p: &str, prefix: &str| -> Option<String> {
        p.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Some(match path {
        "metadata.name" => meta.name.clone()?,
        "metadata.namespace" => meta.namespace.clone()?,
        "metadata.uid" => meta.uid.clone()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone()?,
        "status.podIP" | "status.podIPs" => ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        p if p.starts_with("metadata.labels") => meta
            .labels
            .as_ref()?
            .get(&key_of(p, "metadata.labels")?)?
            .clone(),
        p if p.starts_with("metadata.annotations") => meta
            .annotations
            .as_ref()?
            .get(&key_of(p, "metadata.annotations")?)?
            .clone(),
        _ => return None,
    })
}

async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => {
            let mut m: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                m.insert(k, v.into_bytes());
            }
            Ok(Some(m))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(format!("get secret {ns}/{name}: {e}")),
    }
}

async fn config_map_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(c)) => {
            let mut m: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in c.binary_data.unwrap_or_default() {
                m.insert(k, v.0);
            }
            Ok(Some(m))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(format!("get configmap {ns}/{name}: {e}")),
    }
}

fn set_var(
    vars: &mut Vec<(String, String)>,
    map: &mut HashMap<String, String>,
    k: String,
    v: String,
) {
    if let Some(slot) = vars.iter_mut().find(|(n, _)| *n == k) {
        slot.1 = v.clone();
    } else {
        vars.push((k.clone(), v.clone()));
    }
    map.insert(k, v);
}

/// The container's environment, in order, as the kubelet builds it.
async fn resolve_env(
    client: &Client,
    pod: &Pod,
    c: &Container,
    ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut map: HashMap<String, String> = HashMap::new();
    for from in c.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(s) = &from.secret_ref {
            let d = secret_data(client, &ns, &s.name).await?;
            match d {
                Some(d) => d,
                None if s.optional == Some(true) => BTreeMap::new(),
                None => return Err(format!("secret \"{}\" not found", s.name)),
            }
        } else if let Some(cm) = &from.config_map_ref {
            match config_map_data(client, &ns, &cm.name).await? {
                Some(d) => d,
                None if cm.optional == Some(true) => BTreeMap::new(),
                None => return Err(format!("configmap \"{}\" not found", cm.name)),
            }
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            set_var(
                &mut vars,
                &mut map,
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    for EnvVar {
        name,
        value,
        value_from,
    } in c.env.clone().unwrap_or_default()
    {
        let v = if let Some(src) = value_from {
            if let Some(f) = src.field_ref {
                field_ref(pod, &f.field_path, ip, host_ip).unwrap_or_default()
            } else if let Some(s) = src.secret_key_ref {
                let data = secret_data(client, &ns, &s.name).await?;
                match data.and_then(|d| d.get(&s.key).cloned()) {
                    Some(b) => String::from_utf8_lossy(&b).into_owned(),
                    None if s.optional == Some(true) => continue,
                    None => {
                        return Err(format!(
                            "secret \"{}\" key \"{}\" not found (env {name})",
                            s.name, s.key
                        ));
                    }
                }
            } else if let Some(cm) = src.config_map_key_ref {
                let data = config_map_data(client, &ns, &cm.name).await?;
                match data.and_then(|d| d.get(&cm.key).cloned()) {
                    Some(b) => String::from_utf8_lossy(&b).into_owned(),
                    None if cm.optional == Some(true) => continue,
                    None => {
                        return Err(format!(
                            "configmap \"{}\" key \"{}\" not found (env {name})",
                            cm.name, cm.key
                        ));
                    }
                }
            } else if let Some(r) = src.resource_field_ref {
                let res = c.resources.clone().unwrap_or_default();
                let (group, key) = r.resource.split_once('.').unwrap_or(("", ""));
                let q = match group {
                    "limits" => res.limits.and_then(|l| l.get(key).cloned()),
                    "requests" => res.requests.and_then(|l| l.get(key).cloned()),
                    _ => None,
                };
                q.map(|q| q.0).unwrap_or_else(|| "0".into())
            } else {
                String::new()
            }
        } else {
            expand(&value.unwrap_or_default(), &map)
        };
        set_var(&mut vars, &mut map, name, v);
    }
    Ok(vars)
}

/// Rewrite `s` when it is, or ends with (after `=`), a path under one of
/// the mounts (longest mount path first).
fn rewrite_paths(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let try_one = |v: &str| -> Option<String> {
        mounts.iter().find_map(|(mp, host)| {
            let mp = mp.trim_end_matches('/');
            if v == mp {
                Some(host.display().to_string())
            } else {
                v.strip_prefix(mp)
                    .filter(|r| r.starts_with('/'))
                    .map(|r| format!("{}{r}", host.display()))
            }
        })
    };
    if let Some(r) = try_one(s) {
        return r;
    }
    if let Some((k, v)) = s.split_once('=')
        && let Some(r) = try_one(v)
    {
        return format!("{k}={r}");
    }
    s.to_string()
}

/// Bind addresses of all interfaces become the pod's address (loopback
/// mode only: pods share the host's network there).
fn rewrite_any_addr(s: &str, ip: &str) -> String {
    s.replace("0.0.0.0:", &format!("{ip}:"))
}

async fn prepare(
    state: &State,
    client: &Client,
    pod: &Pod,
    c: &Container,
    env: &PodEnv,
) -> Result<Launch, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_ip = state.net.host_ip();
    let mut vars = resolve_env(client, pod, c, &env.ip, &host_ip).await?;

    // Volumes -> folders.
    let volumes: HashMap<String, Volume> = spec
        .volumes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut token_dir: Option<PathBuf> = None;
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let Some(v) = volumes.get(&m.name) else {
            return Err(format!(
                "volume {} of mount {} not in the pod",
                m.name, m.mount_path
            ));
        };
        let mut host = volume_dir(state, client, pod, v, env).await?;
        if let Some(sub) = &m.sub_path
            && !sub.is_empty()
        {
            host = host.join(sub);
            std::fs::create_dir_all(&host)
                .map_err(|e| format!("create {}: {e}", host.display()))?;
        }
        if m.mount_path.trim_end_matches('/') == "/var/run/secrets/kubernetes.io/serviceaccount" {
            token_dir = Some(host.clone());
        }
        mounts.push((m.mount_path.clone(), host));
    }
    mounts.sort_by_key(|(mp, _)| std::cmp::Reverse(mp.len()));

    let netns = env.netns.is_some();
    let fix = |s: &str| -> String {
        let s = rewrite_paths(s, &mounts);
        if netns {
            s
        } else {
            rewrite_any_addr(&s, &env.ip)
        }
    };
    for (_, v) in vars.iter_mut() {
        *v = fix(v);
    }
    let map: HashMap<String, String> = vars.iter().cloned().collect();

    // Command: the container's, else the image's entrypoint.
    let mut argv: Vec<String> = Vec::new();
    match &c.command {
        Some(cmd) if !cmd.is_empty() => argv.extend(cmd.iter().map(|a| expand(a, &map))),
        _ => {
            let image = c.image.clone().unwrap_or_default();
            if image.contains("rstore") {
                argv.push("rstore-node".into());
            } else {
                return Err(format!(
                    "image {image:?} has no known entrypoint: give the container a command"
                ));
            }
        }
    }
    argv.extend(
        c.args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| fix(&expand(a, &map))),
    );
    let first = argv.remove(0);
    let base = Path::new(&first)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    let program = match state.opts.binaries.get(&base) {
        Some(p) => p.clone(),
        None if Path::new(&first).is_absolute() && Path::new(&first).exists() => {
            PathBuf::from(&first)
        }
        None => {
            return Err(format!(
                "no binary for {first:?} (image {:?}); known: {:?}",
                c.image.clone().unwrap_or_default(),
                state.opts.binaries.keys().collect::<Vec<_>>()
            ));
        }
    };

    let home = env.dir.join("home");
    std::fs::create_dir_all(&home).map_err(|e| format!("create {}: {e}", home.display()))?;
    let cwd = match &c.working_dir {
        Some(w) if !w.is_empty() => {
            let r = PathBuf::from(rewrite_paths(w, &mounts));
            if r.as_path() == Path::new(w) {
                home.clone()
            } else {
                r
            }
        }
        _ => home.clone(),
    };
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    let mut all = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOSTNAME".to_string(), hostname),
        ("HOME".to_string(), home.display().to_string()),
        ("KUBERNETES_SERVICE_HOST".to_string(), host_ip.clone()),
        (
            "KUBERNETES_SERVICE_PORT".to_string(),
            if netns {
                "443".to_string()
            } else {
                state.opts.api_port.to_string()
            },
        ),
    ];
    // A ServiceAccount token: a kubeconfig with it (kube clients read
    // KUBECONFIG before the in-cluster files, which cannot be at their
    // fixed path here).
    if let Some(dir) = &token_dir {
        let server = if netns {
            format!("https://{host_ip}:443")
        } else {
            format!("https://127.0.0.1:{}", state.opts.api_port)
        };
        let kubeconfig = env.dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: sa\n  user:\n    tokenFile: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: sa\n    namespace: {ns}\ncurrent-context: c\n",
            ca = dir.join("ca.crt").display(),
            token = dir.join("token").display(),
            ns = env.ns,
        );
        std::fs::write(&kubeconfig, text)
            .map_err(|e| format!("write {}: {e}", kubeconfig.display()))?;
        all.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    }
    for (k, v) in vars {
        if let Some(slot) = all.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            all.push((k, v));
        }
    }
    Ok(Launch {
        program,
        args: argv,
        env: all,
        cwd,
    })
}

/// How often a running pod's Secret and ConfigMap volumes are rewritten
/// from their objects (the real kubelet: about a minute).
const VOLUME_SYNC: Duration = Duration::from_secs(2);

/// Rewrite the pod's Secret and ConfigMap volumes from the objects now.
async fn refresh_volumes(
    state: &State,
    client: &Client,
    pod: &Pod,
    env: &PodEnv,
) -> Result<(), String> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in volumes
        .iter()
        .filter(|v| v.secret.is_some() || v.config_map.is_some())
    {
        volume_dir(state, client, pod, v, env).await?;
    }
    Ok(())
}

async fn volume_dir(
    state: &State,
    client: &Client,
    pod: &Pod,
    v: &Volume,
    env: &PodEnv,
) -> Result<PathBuf, String> {
    let mk = |p: PathBuf| -> Result<PathBuf, String> {
        std::fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
        Ok(p)
    };
    let per_pod = env.dir.join("volumes").join(&v.name);
    if let Some(pvc) = &v.persistent_volume_claim {
        return mk(state
            .opts
            .dir
            .join("volumes")
            .join(&env.ns)
            .join(&pvc.claim_name));
    }
    if let Some(h) = &v.host_path {
        return mk(PathBuf::from(&h.path));
    }
    if v.empty_dir.is_some() {
        return mk(per_pod);
    }
    let dir = mk(per_pod)?;
    let write = |name: &str, data: &[u8]| -> Result<(), String> {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        // Replaced whole (written aside, renamed), as the kubelet swaps a
        // Secret volume's contents: a reader never sees half a file.
        let tmp = p.with_extension("kubelet-tmp");
        std::fs::write(&tmp, data).map_err(|e| format!("write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &p).map_err(|e| format!("rename to {}: {e}", p.display()))
    };
    let items = |data: BTreeMap<String, Vec<u8>>,
                 items: Option<Vec<k8s_openapi::api::core::v1::KeyToPath>>|
     -> Result<(), String> {
        match items {
            Some(items) => {
                for it in items {
                    if let Some(d) = data.get(&it.key) {
                        write(&it.path, d)?;
                    }
                }
            }
            None => {
                for (k, d) in &data {
                    write(k, d)?;
                }
            }
        }
        Ok(())
    };
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        match secret_data(client, &env.ns, &name).await? {
            Some(d) => items(d, s.items.clone())?,
            None if s.optional == Some(true) => {}
            None => return Err(format!("secret \"{name}\" not found (volume {})", v.name)),
        }
    } else if let Some(cm) = &v.config_map {
        match config_map_data(client, &env.ns, &cm.name).await? {
            Some(d) => items(d, cm.items.clone())?,
            None if cm.optional == Some(true) => {}
            None => {
                return Err(format!(
                    "configmap \"{}\" not found (volume {})",
                    cm.name, v.name
                ));
            }
        }
    } else if let Some(p) = &v.projected {
        for src in p.sources.clone().unwrap_or_default() {
            if let Some(t) = src.service_account_token {
                let token = sa_token(client, pod, t.audience.clone(), t.expiration_seconds).await?;
                write(&t.path, token.as_bytes())?;
            }
            if let Some(cm) = src.config_map {
                if cm.name == "kube-root-ca.crt" {
                    let ca = std::fs::read(&state.opts.ca_cert)
                        .map_err(|e| format!("read {}: {e}", state.opts.ca_cert.display()))?;
                    write("ca.crt", &ca)?;
                } else if let Some(d) = config_map_data(client, &env.ns, &cm.name).await? {
                    items(d, cm.items.clone())?;
                }
            }
            if let Some(s) = src.secret
                && let Some(d) = secret_data(client, &env.ns, &s.name).await?
            {
                items(d, s.items.clone())?;
            }
            if let Some(d) = src.downward_api {
                for it in d.items.unwrap_or_default() {
                    if let Some(f) = it.field_ref {
                        let v = field_ref(pod, &f.field_path, &env.ip, &state.net.host_ip())
                            .unwrap_or_default();
                        write(&it.path, v.as_bytes())?;
                    }
                }
            }
        }
    }
    Ok(dir)
}

async fn sa_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let mut spec = json!({
        // Longer than a test run; the real kubelet refreshes it instead.
        "expirationSeconds": expiration.unwrap_or(3607).max(86400),
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid()},
    });
    if let Some(a) = audience {
        spec["audiences"] = json!([a]);
    }
    let req =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let resp: Value = api
        .create_subresource("token", &sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("token for serviceaccount {ns}/{sa}: {e}"))?;
    resp["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no token in the TokenRequest answer for {ns}/{sa}"))
}

// ----------------------------------------------------------------- status

async fn write_status(pods: &Api<Pod>, pod: &Pod, env: &PodEnv, state: &State, rs: &RunState) {
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .cloned()
        .unwrap_or_default();
    let t = now();
    let cond = |type_: &str, ok: bool| {
        json!({"type": type_, "status": if ok { "True" } else { "False" },
               "lastTransitionTime": if type_ == "Ready" || type_ == "ContainersReady" { rs.ready_since.clone().unwrap_or_else(|| t.clone()) } else { rs.pod_started_at.clone().unwrap_or_else(|| t.clone()) }})
    };
    let running = rs.waiting.is_none() && rs.terminated.is_none() && rs.started_at.is_some();
    let state_json = if let Some((reason, message)) = &rs.waiting {
        json!({"waiting": {"reason": reason, "message": message}})
    } else if let Some(term) = &rs.terminated {
        json!({"terminated": term})
    } else if running {
        json!({"running": {"startedAt": rs.started_at}})
    } else {
        json!({"waiting": {"reason": "ContainerCreating"}})
    };
    let pid = state
        .pods
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&format!("{}/{}", env.ns, env.name))
        .and_then(|p| p.pid);
    let mut cs = json!({
        "name": container.name,
        "image": container.image.clone().unwrap_or_default(),
        "imageID": "",
        "ready": rs.ready && running,
        "started": rs.started && running,
        "restartCount": rs.restarts,
        "state": state_json,
    });
    if let Some(pid) = pid {
        cs["containerID"] = json!(format!("rstore-kubelet://{}/{pid}", env.uid));
    }
    if let Some(last) = &rs.last_terminated {
        cs["lastState"] = json!({"terminated": last});
    }
    let ready = rs.ready && running;
    let status = json!({
        "phase": rs.phase,
        "hostIP": state.net.host_ip(),
        "hostIPs": [{"ip": state.net.host_ip()}],
        "podIP": env.ip,
        "podIPs": [{"ip": env.ip}],
        "startTime": rs.pod_started_at,
        "conditions": [
            cond("PodReadyToStartContainers", true),
            cond("Initialized", true),
            cond("ContainersReady", ready),
            cond("Ready", ready),
            cond("PodScheduled", true),
        ],
        "containerStatuses": [cs],
    });
    if let Err(e) = pods
        .patch_status(
            &env.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        match e {
            kube::Error::Api(a) if a.code == 404 => {}
            e => log_line(state, format!("{}/{}: status: {e}", env.ns, env.name)),
        }
    }
}

// ----------------------------------------------------------------- probes

enum ProbeEvent {
    Started,
    Ready(bool),
    Failed(String),
}

fn port_of(c: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => c
            .ports
            .clone()
            .unwrap_or_default()
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// One probe: Ok(()) on success, Err(why) on failure.
async fn probe_once(c: &Container, p: &Probe, ip: &str, netns: Option<&str>) -> Result<(), String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let ip: IpAddr = ip.parse().map_err(|e| format!("pod ip {ip}: {e}"))?;
    if let Some(h) = &p.http_get {
        let port = port_of(c, &h.port).ok_or("unknown probe port")?;
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let addr = SocketAddr::new(ip, port);
        let fut = async {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("GET {addr}{path}: {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| format!("GET {addr}{path}: {e}"))?;
            let mut buf = vec![0u8; 256];
            let mut got = 0;
            while got < 12 {
                let n = s
                    .read(&mut buf[got..])
                    .await
                    .map_err(|e| format!("GET {addr}{path}: {e}"))?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            let code: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("GET {addr}{path}: bad answer {head:?}"))?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("GET {addr}{path}: HTTP {code}"))
            }
        };
        return tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("GET {addr}{path}: timed out after {timeout:?}"))?;
    }
    if let Some(t) = &p.tcp_socket {
        let port = port_of(c, &t.port).ok_or("unknown probe port")?;
        let addr = SocketAddr::new(ip, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
            Err(_) => Err(format!("connect {addr}: timed out")),
        };
    }
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return Ok(());
        }
        let mut c = match netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", ns]).args(&cmd);
                c
            }
            None => {
                let mut c = tokio::process::Command::new(&cmd[0]);
                c.args(&cmd[1..]);
                c
            }
        };
        c.kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        return match tokio::time::timeout(timeout, c.status()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("exec {cmd:?}: {s}")),
            Ok(Err(e)) => Err(format!("exec {cmd:?}: {e}")),
            Err(_) => Err(format!("exec {cmd:?}: timed out")),
        };
    }
    Ok(())
}

struct ProbeTrack {
    probe: Probe,
    next: Instant,
    ok_run: i32,
    fail_run: i32,
}

impl ProbeTrack {
    fn new(p: &Probe, start: Instant) -> ProbeTrack {
        ProbeTrack {
            probe: p.clone(),
            next: start + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            ok_run: 0,
            fail_run: 0,
        }
    }
    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64)
    }
    /// Run it if due: Some(true) when it crossed the success threshold,
    /// Some(false) the failure threshold.
    async fn step(&mut self, c: &Container, ip: &str, netns: Option<&str>) -> Option<bool> {
        if Instant::now() < self.next {
            return None;
        }
        self.next = Instant::now() + self.period();
        match probe_once(c, &self.probe, ip, netns).await {
            Ok(()) => {
                self.fail_run = 0;
                self.ok_run += 1;
                (self.ok_run >= self.probe.success_threshold.unwrap_or(1).max(1)).then_some(true)
            }
            Err(_) => {
                self.ok_run = 0;
                self.fail_run += 1;
                (self.fail_run >= self.probe.failure_threshold.unwrap_or(3).max(1)).then_some(false)
            }
        }
    }
}

async fn run_probes(
    c: Container,
    ip: String,
    netns: Option<String>,
    tx: mpsc::UnboundedSender<ProbeEvent>,
) {
    let start = Instant::now();
    let tick = Duration::from_millis(100);
    let netns = netns.as_deref();
    if let Some(p) = &c.startup_probe {
        let mut t = ProbeTrack::new(p, start);
        loop {
            match t.step(&c, &ip, netns).await {
                Some(true) => break,
                Some(false) => {
                    let _ = tx.send(ProbeEvent::Failed("startup probe".into()));
                    return;
                }
                None => tokio::time::sleep(tick).await,
            }
        }
        let _ = tx.send(ProbeEvent::Started);
    }
    let after = Instant::now();
    let mut ready = c
        .readiness_probe
        .as_ref()
        .map(|p| ProbeTrack::new(p, after));
    let mut live = c.liveness_probe.as_ref().map(|p| ProbeTrack::new(p, after));
    if ready.is_none() {
        let _ = tx.send(ProbeEvent::Ready(true));
    }
    loop {
        if let Some(r) = ready.as_mut()
            && let Some(ok) = r.step(&c, &ip, netns).await
        {
            let _ = tx.send(ProbeEvent::Ready(ok));
        }
        if let Some(l) = live.as_mut()
            && l.step(&c, &ip, netns).await == Some(false)
        {
            let _ = tx.send(ProbeEvent::Failed("liveness probe".into()));
            return;
        }
        tokio::time::sleep(tick).await;
    }
}

// --------------------------------------------------------- Service proxy

/// A local TCP proxy for a Service port (a stand-in for kube-proxy): each
/// connection to the returned 127.0.0.1 address goes to one ready endpoint
/// of the Service at that moment (from its EndpointSlices); none ready:
/// the connection is closed.
pub async fn service_proxy(
    client: Client,
    namespace: &str,
    service: &str,
    port: u16,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind a Service proxy: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("Service proxy address: {e}"))?;
    let ns = namespace.to_string();
    let svc = service.to_string();
    let handle = tokio::spawn(forward(listener, move || {
        let client = client.clone();
        let ns = ns.clone();
        let svc = svc.clone();
        async move { service_endpoint(&client, &ns, &svc, port).await }
    }));
    Ok((addr, handle))
}

/// One ready endpoint (address:targetPort) of `service` port `port`, from
/// its EndpointSlices; without any (the EndpointSlice controller drops
/// loopback addresses, so in loopback mode), from the ready pods its
/// selector matches.
pub async fn service_endpoint(
    client: &Client,
    ns: &str,
    service: &str,
    port: u16,
) -> Option<SocketAddr> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let spec = services.get_opt(service).await.ok()??.spec?;
    let sp = spec
        .ports
        .clone()?
        .into_iter()
        .find(|p| p.port == i32::from(port))?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .ok()?;
    for slice in list.items {
        let target = slice
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|p| {
                p.name == sp.name
                    || (sp.name.is_none() && p.name.as_deref().unwrap_or("").is_empty())
            });
        let Some(tp) = target.and_then(|p| p.port) else {
            continue;
        };
        for ep in slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            if let Some(a) = ep.addresses.first()
                && let Ok(ip) = a.parse::<IpAddr>()
            {
                return Some(SocketAddr::new(ip, u16::try_from(tp).ok()?));
            }
        }
    }
    let selector = spec.selector?;
    if selector.is_empty() {
        return None;
    }
    let labels = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&labels))
        .await
        .ok()?;
    for pod in list.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let Some(ip) = status.pod_ip.and_then(|ip| ip.parse::<IpAddr>().ok()) else {
            continue;
        };
        if !ready {
            continue;
        }
        let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
        let c = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned()
            .unwrap_or_default();
        if let Some(p) = port_of(&c, &target) {
            return Some(SocketAddr::new(ip, p));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_the_kubelet() {
        let vars: HashMap<String, String> = [("A", "1"), ("POD", "p-0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(expand("--id=$(POD)", &vars), "--id=p-0");
        assert_eq!(expand("$(A)$(A)x", &vars), "11x");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(MISSING)", &vars), "$(MISSING)");
        assert_eq!(expand("cost $5 $(", &vars), "cost $5 $(");
    }

    #[test]
    fn rewrites_mount_paths() {
        let mounts = vec![
            ("/data/sub".to_string(), PathBuf::from("/h/sub")),
            ("/data".to_string(), PathBuf::from("/h/data")),
        ];
        assert_eq!(
            rewrite_paths("--data-dir=/data", &mounts),
            "--data-dir=/h/data"
        );
        assert_eq!(rewrite_paths("/data/wal", &mounts), "/h/data/wal");
        assert_eq!(rewrite_paths("/data/sub/x", &mounts), "/h/sub/x");
        assert_eq!(rewrite_paths("/database", &mounts), "/database");
        assert_eq!(
            rewrite_paths("--listen=0.0.0.0:1", &mounts),
            "--listen=0.0.0.0:1"
        );
        assert_eq!(
            rewrite_any_addr("--listen=0.0.0.0:6379", "127.0.3.2"),
            "--listen=127.0.3.2:6379"
        );
    }
}
