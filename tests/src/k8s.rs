//! A real Kubernetes control plane for the tests, as controller-runtime's
//! envtest does it: etcd, kube-apiserver (own CA, serving and client
//! certificates, service-account keys, RBAC on) and kube-controller-manager
//! on loopback, built from pinned Go modules by `tests/cluster/build.sh` and
//! cached outside the repository.
//!
//! One cluster per test binary ([`shared`]), one namespace per test
//! ([`Cluster::namespace`]). The cluster's processes stop when it is dropped
//! and, for the shared one (statics are never dropped), when the test binary
//! exits, through a janitor process that also removes its temporary folder.
//!
//! Environment: `RSTORE_K8S_BIN` (use these binaries, build nothing),
//! `RSTORE_K8S_CACHE` (build cache root), `RSTORE_SKIP_K8S=1` (skip the
//! tests that need the cluster), `RSTORE_K8S_KEEP=1` (keep the folder and
//! the test namespaces, for a look after a failure).

#[path = "cluster/certs.rs"]
pub mod certs;
#[path = "cluster/components.rs"]
pub mod components;
#[path = "cluster/kubelet.rs"]
pub mod kubelet;
#[path = "cluster/platform.rs"]
pub mod platform;
#[path = "cluster/process.rs"]
pub mod process;
#[path = "cluster/scenario.rs"]
pub mod scenario;
#[path = "cluster/scenarios.rs"]
pub mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use certs::Pki;
use kubelet::{Kubelet, KubeletOptions};
use process::{Janitor, Proc, free_port};

/// The service range (the `kubernetes` Service gets its first address).
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
const KUBERNETES_SERVICE_IP: &str = "10.0.0.1";
/// Service-account token issuer.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Controllers the controller-manager runs: what the operator's objects
/// need (StatefulSet, Deployment for the chart, EndpointSlices, PDBs,
/// garbage collection through owner references, PVC protection and binding,
/// namespace deletion, ServiceAccounts and their tokens). Node lifecycle is
/// off: the tests never wait for Kubernetes' node status.
pub const CONTROLLERS: &[&str] = &[
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "statefulset-controller",
    "deployment-controller",
    "replicaset-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "disruption-controller",
    "persistentvolume-binder-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    "clusterrole-aggregation-controller",
    "pod-garbage-collector-controller",
];

/// How to start a cluster.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Folder for everything (certificates, kubeconfig, etcd data, logs):
    /// kept when given (`tests/cluster/up.sh`), else a temporary folder
    /// removed when the cluster stops.
    pub dir: Option<PathBuf>,
}

/// A running control plane.
pub struct Cluster {
    /// Root folder: `pki/`, `etcd/`, `logs/`, `kubeconfig`.
    pub dir: PathBuf,
    /// Admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// Folder with kube-apiserver, kube-controller-manager, etcd, kubectl, helm.
    pub bin: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    pub pki: Pki,
    /// `host:port` of etcd's client endpoint.
    pub etcd: String,
    /// The API server's loopback port.
    pub api_port: u16,
    /// Third octet of the pod network 10.213.X.0/24 of the stand-in kubelet.
    pub pod_subnet: u8,
    procs: Mutex<Vec<Proc>>,
    janitor: Arc<Janitor>,
    namespaces: AtomicU32,
    kubelet: OnceLock<Result<Kubelet, String>>,
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster shared by the tests of this test binary, started (and its
/// components built, the first time on a machine) on first use. None when
/// `RSTORE_SKIP_K8S=1`: the caller returns early (the test is skipped).
///
/// Panics with the reason when the cluster cannot start.
pub fn shared() -> Option<&'static Cluster> {
    if std::env::var("RSTORE_SKIP_K8S").is_ok_and(|v| v == "1") {
        eprintln!("rstore-e2e: RSTORE_SKIP_K8S=1: skipping a test that needs kube-apiserver");
        return None;
    }
    match SHARED.get_or_init(|| Cluster::start(Options::default())) {
        Ok(c) => Some(c),
        Err(e) => panic!("the test Kubernetes cluster did not start: {e}"),
    }
}

impl Cluster {
    /// Build what is missing, start etcd, kube-apiserver and
    /// kube-controller-manager, and wait until the API server is ready and
    /// the controllers run.
    pub fn start(opts: Options) -> Result<Cluster, String> {
        let started = Instant::now();
        let bin = components::bin_dir()?;
        let (dir, temporary) = match opts.dir {
            Some(d) => {
                std::fs::create_dir_all(&d)
                    .map_err(|e| format!("create cluster folder {}: {e}", d.display()))?;
                (d, false)
            }
            None => {
                let d = tempfile::Builder::new()
                    .prefix("rstore-k8s-")
                    .tempdir()
                    .map_err(|e| format!("create a temporary cluster folder: {e}"))?;
                (d.keep(), true)
            }
        };
        let keep = std::env::var("RSTORE_K8S_KEEP").is_ok_and(|v| v == "1");
        let janitor = Arc::new(Janitor::start(
            (temporary && !keep).then_some(dir.as_path()),
        ));
        // Pods reach the API server through the pod network's gateway.
        let pod_subnet = kubelet::pick_subnet();
        let pki = certs::generate(
            &dir.join("pki"),
            &[KUBERNETES_SERVICE_IP, &kubelet::gateway(pod_subnet)],
        )?;

        let etcd_port = free_port();
        let peer_port = free_port();
        let api_port = free_port();
        let etcd = format!("127.0.0.1:{etcd_port}");
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &server,
            &pki.ca_cert,
            &pki.admin_cert,
            &pki.admin_key,
        )?;

        let cluster = Cluster {
            dir: dir.clone(),
            kubeconfig,
            bin,
            server,
            pki,
            etcd,
            api_port,
            pod_subnet,
            procs: Mutex::new(Vec::new()),
            janitor,
            namespaces: AtomicU32::new(0),
            kubelet: OnceLock::new(),
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(cluster.bin.join("etcd"));
        cmd.args(etcd_args(&dir.join("etcd"), &etcd_url, &peer_url));
        cluster.spawn("etcd", cmd)?;

        let mut cmd = Command::new(cluster.bin.join("kube-apiserver"));
        cmd.args(apiserver_args(&cluster.pki, &dir, &etcd_url, api_port));
        cluster.spawn("kube-apiserver", cmd)?;
        cluster.wait_ready(Duration::from_secs(120))?;

        let mut cmd = Command::new(cluster.bin.join("kube-controller-manager"));
        cmd.args(controller_manager_args(&cluster.pki, &cluster.kubeconfig));
        cluster.spawn("kube-controller-manager", cmd)?;
        // The controllers run once the default ServiceAccount exists.
        cluster.wait_kubectl(
            "the ServiceAccount controller to create default/default",
            Duration::from_secs(90),
            &[
                "-n",
                "default",
                "get",
                "serviceaccount",
                "default",
                "-o",
                "name",
            ],
        )?;

        eprintln!(
            "rstore-e2e: Kubernetes {} ready in {:.1} s at {} (KUBECONFIG={}, logs in {})",
            cluster.version(),
            started.elapsed().as_secs_f64(),
            cluster.server,
            cluster.kubeconfig.display(),
            cluster.dir.join("logs").display()
        );
        Ok(cluster)
    }

    /// Start a process of this cluster (logs in `logs/<name>.log`), stopped
    /// with the cluster.
    pub fn spawn(&self, name: &str, cmd: Command) -> Result<u32, String> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let proc = Proc::spawn(name, cmd, &log)?;
        let pid = proc.pid();
        self.janitor.watch(pid);
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(proc);
        Ok(pid)
    }

    /// A process started with [`Cluster::spawn`] that exited, with the tail
    /// of its log.
    fn dead_process(&self) -> Option<String> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.iter_mut().find_map(|p| {
            p.exited().map(|status| {
                format!(
                    "{} exited ({status}); end of {}:\n{}",
                    p.name,
                    p.log.display(),
                    p.log_tail(30)
                )
            })
        })
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        self.wait_kubectl(
            "kube-apiserver /readyz",
            timeout,
            &["get", "--raw", "/readyz"],
        )
    }

    /// Run kubectl with `args` until it succeeds, failing early when a
    /// component died.
    fn wait_kubectl(&self, what: &str, timeout: Duration, args: &[&str]) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(dead) = self.dead_process() {
                return Err(format!("waiting for {what}: {dead}"));
            }
            match self.kubectl().args(args).stdin(Stdio::null()).output() {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) if Instant::now() >= deadline => {
                    return Err(format!(
                        "timed out after {timeout:?} waiting for {what} (last error: {}); logs in {}",
                        String::from_utf8_lossy(&out.stderr).trim(),
                        self.dir.join("logs").display()
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("cannot run kubectl: {e}")),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The server's version (`v1.34.x`), from the build cache's VERSIONS
    /// file or `kubectl version`.
    pub fn version(&self) -> String {
        let out = self
            .kubectl()
            .args(["version", "-o", "json"])
            .stdin(Stdio::null())
            .output();
        out.ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| {
                v["serverVersion"]["gitVersion"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "(unknown version)".to_string())
    }

    /// `kubectl --kubeconfig <admin>` from the build cache.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// `helm` with KUBECONFIG set and its caches inside the cluster folder.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("helm"));
        let home = self.dir.join("helm");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }

    /// Run kubectl with `args` (and `stdin` when given); its stdout, or an
    /// error with the command and its stderr.
    pub fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        run(self.kubectl().args(args), stdin)
    }

    /// A client for the admin kubeconfig. Make one per test: a client is
    /// tied to the tokio runtime of the test that made it.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.kubeconfig.display()));
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap_or_else(|e| panic!("load {}: {e}", self.kubeconfig.display()));
        Client::try_from(config).expect("kube client from the test kubeconfig")
    }

    /// A fresh namespace `<prefix>-<n>` whose default ServiceAccount exists
    /// (pods can be created in it); deleted when the returned guard drops
    /// (kept with `RSTORE_K8S_KEEP=1`).
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let n = self.namespaces.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{n}");
        let client = self.client().await;
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"rstore.dev/test": "true"}}
        }))
        .expect("namespace object");
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let sas: Api<ServiceAccount> = Api::namespaced(client, &name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if sas.get_opt("default").await.ok().flatten().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after 60 s waiting for the default ServiceAccount of namespace {name}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        TestNamespace::new(
            name,
            self.bin.join("kubectl"),
            Some(self.kubeconfig.clone()),
        )
    }

    /// Install (server-side apply, idempotent) the CRDs of a YAML file
    /// relative to the workspace root, e.g.
    /// `crds/replicatedstores.rstore.dev.yaml`, and wait until they are
    /// Established. Returns their names.
    pub async fn install_crds(&self, client: &Client, file: &str) -> Vec<String> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        use kube::api::{Patch, PatchParams};

        let path = components::workspace_root().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::new();
        for doc in split_yaml(&text) {
            let value: serde_yaml::Value = serde_yaml::from_str(doc)
                .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                .unwrap_or_else(|e| panic!("{} is not a CRD: {e}", path.display()));
            let name = crd.metadata.name.clone().expect("CRD has a name");
            api.patch(
                &name,
                &PatchParams::apply("rstore-e2e").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name} from {}: {e}", path.display()));
            names.push(name);
        }
        for name in &names {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let crd = api
                    .get(name)
                    .await
                    .unwrap_or_else(|e| panic!("get CRD {name}: {e}"));
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out after 30 s waiting for CRD {name} to be Established"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        names
    }

    /// The stand-in kubelet (see [`kubelet`]), started on first use with
    /// the `rstore-node` and `rstore-operator` binaries of this build.
    /// Panics when it cannot start.
    pub fn kubelet(&self) -> &Kubelet {
        let started = self.kubelet.get_or_init(|| {
            let mut binaries = std::collections::BTreeMap::new();
            binaries.insert("rstore-node".to_string(), rstore_testkit::node_binary());
            binaries.insert("rstore-operator".to_string(), crate::operator_binary());
            self.start_kubelet(binaries)
        });
        match started {
            Ok(k) => k,
            Err(e) => panic!("the stand-in kubelet did not start: {e}"),
        }
    }

    /// Start the stand-in kubelet with these binaries (basename -> path);
    /// [`Cluster::kubelet`] returns it afterwards.
    pub fn start_kubelet(
        &self,
        binaries: std::collections::BTreeMap<String, PathBuf>,
    ) -> Result<Kubelet, String> {
        let opts = KubeletOptions {
            node_name: "rstore-test-node".to_string(),
            binaries,
            dir: self.dir.clone(),
            kubeconfig: self.kubeconfig.clone(),
            ca_cert: self.pki.ca_cert.clone(),
            api_port: self.api_port,
            subnet: self.pod_subnet,
            restart_backoff: Duration::from_millis(500),
            max_grace: Duration::from_secs(10),
        };
        let k = Kubelet::start(opts, self.janitor.clone())?;
        eprintln!(
            "rstore-e2e: stand-in kubelet running node {} (pod network: {})",
            k.node_name(),
            k.network_mode()
        );
        Ok(k)
    }

    /// Use `kubelet` as this cluster's kubelet (for a caller that started
    /// it with its own binaries). False when one runs already.
    pub fn set_kubelet(&self, kubelet: Kubelet) -> bool {
        self.kubelet.set(Ok(kubelet)).is_ok()
    }

    /// Stop every process (newest first) and the janitor (which removes a
    /// temporary folder). Idempotent; also done on drop.
    pub fn stop(&self) {
        if let Some(Ok(k)) = self.kubelet.get() {
            k.stop();
        }
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut p) = procs.pop() {
            p.stop();
            self.janitor.forget(p.pid());
        }
        self.janitor.finish();
    }

    /// Wait until one of the cluster's processes exits (for a foreground
    /// `up` command); its description.
    pub fn wait_for_exit(&self, poll: Duration, stop: impl Fn() -> bool) -> Option<String> {
        loop {
            if let Some(dead) = self.dead_process() {
                return Some(dead);
            }
            if stop() {
                return None;
            }
            std::thread::sleep(poll);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A namespace for one test; deleted (without waiting) on drop.
pub struct TestNamespace {
    pub name: String,
    kubectl: PathBuf,
    kubeconfig: Option<PathBuf>,
}

impl TestNamespace {
    /// Guard for namespace `name`, deleted on drop with this `kubectl`
    /// (and `kubeconfig`, else kubectl's default).
    pub fn new(name: String, kubectl: PathBuf, kubeconfig: Option<PathBuf>) -> TestNamespace {
        TestNamespace {
            name,
            kubectl,
            kubeconfig,
        }
    }
}

impl std::ops::Deref for TestNamespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var("RSTORE_K8S_KEEP").is_ok_and(|v| v == "1") {
            return;
        }
        let mut cmd = Command::new(&self.kubectl);
        if let Some(k) = &self.kubeconfig {
            cmd.arg("--kubeconfig").arg(k);
        }
        let _ = cmd
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Run `cmd` (feeding `stdin` when given); stdout, or an error with the
/// command line and stderr.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let line = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {line}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("write stdin of {line}: {e}"))?;
    }
    let out: Output = child
        .wait_with_output()
        .map_err(|e| format!("wait for {line}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{line} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// The documents of a multi-document YAML text.
pub fn split_yaml(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..pos]);
            start = pos + line.len();
        }
        pos += line.len();
    }
    docs.push(&text[start..]);
    docs
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// etcd on loopback, data in `data`, no fsync (test data).
pub fn etcd_args(data: &Path, client_url: &str, peer_url: &str) -> Vec<String> {
    vec![
        "--name=rstore-test".into(),
        format!("--data-dir={}", p(data)),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=rstore-test={peer_url}"),
        "--initial-cluster-state=new".into(),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

/// kube-apiserver on 127.0.0.1:`port`: client certificates from the test
/// CA, RBAC, service-account tokens signed with the test key.
pub fn apiserver_args(pki: &Pki, dir: &Path, etcd_url: &str, port: u16) -> Vec<String> {
    vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", p(&dir.join("pki"))),
        format!("--tls-cert-file={}", p(&pki.serving_cert)),
        format!("--tls-private-key-file={}", p(&pki.serving_key)),
        format!("--client-ca-file={}", p(&pki.ca_cert)),
        "--authorization-mode=Node,RBAC".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--service-account-issuer={SA_ISSUER}"),
        format!("--service-account-key-file={}", p(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
        "--allow-privileged=true".into(),
        "--enable-priority-and-fairness=false".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

/// kube-controller-manager with [`CONTROLLERS`], talking to the API server
/// through `kubeconfig`, serving nothing itself.
pub fn controller_manager_args(pki: &Pki, kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", p(kubeconfig)),
        format!("--controllers={}", CONTROLLERS.join(",")),
        format!("--service-account-private-key-file={}", p(&pki.sa_key)),
        format!("--root-ca-file={}", p(&pki.ca_cert)),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--leader-elect=false".into(),
        "--secure-port=0".into(),
        "--use-service-account-credentials=false".into(),
        "--concurrent-statefulset-syncs=5".into(),
        "--v=1".into(),
    ]
}

/// A kubeconfig for `server` with a client certificate.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), String> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: rstore-test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: rstore-test
  context:
    cluster: rstore-test
    user: admin
    namespace: default
current-context: rstore-test
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display()
    );
    std::fs::write(path, text).map_err(|e| format!("write kubeconfig {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_yaml_documents() {
        let docs = super::split_yaml("a: 1\n---\nb: 2\n---\n");
        assert_eq!(docs, ["a: 1\n", "b: 2\n", ""]);
    }
}
