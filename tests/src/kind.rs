//! The kind cluster as a [`Platform`], so `tests/kind_e2e.rs` runs the same
//! operator scenarios (`crate::k8s::scenarios`) as the real-API-server tests
//! do here. It needs what `tests/kind/run.sh` sets up: the current kubeconfig
//! on a kind cluster, the image loaded, the chart installed in
//! `rstore-system`; `kubectl` and `docker` on the PATH. Nothing here runs
//! without one.
//!
//! - Services are reached through a local proxy: each connection goes to a
//!   ready endpoint of that moment (read from its EndpointSlices), through a
//!   `kubectl port-forward` to that pod (one per pod, restarted when it
//!   ends), as a client inside the cluster reaching the Service would.
//! - A pod's process is signalled on its kind node (`docker exec` of
//!   `crictl` and `kill`), as a crash or hang on that node would.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::Value;

use crate::k8s::platform::{Fut, Platform};
use crate::k8s::scenario::OPERATOR_NS;
use crate::k8s::{TestNamespace, run};

/// The kind cluster of the current kubeconfig.
pub struct Kind {
    namespaces: AtomicU32,
    forwards: Arc<Forwards>,
}

/// Running port-forwards by (namespace, pod, port).
type Forwards = Mutex<HashMap<(String, String, u16), Forward>>;

/// A `kubectl port-forward pod/NAME LOCAL:PORT` child.
struct Forward {
    child: Child,
    local: u16,
}

/// The kind platform (one per test binary).
pub fn platform() -> &'static Kind {
    static KIND: OnceLock<Kind> = OnceLock::new();
    KIND.get_or_init(|| Kind {
        namespaces: AtomicU32::new(0),
        forwards: Arc::new(Mutex::new(HashMap::new())),
    })
}

fn kubectl(args: &[&str]) -> Result<String, String> {
    run(Command::new("kubectl").args(args), None)
}

impl Platform for Kind {
    fn name(&self) -> &'static str {
        "kind"
    }

    fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        run(Command::new("kubectl").args(args), stdin)
    }

    fn client(&self) -> Fut<'_, Client> {
        Box::pin(async {
            Client::try_default()
                .await
                .expect("a kube client for the current kubeconfig (the kind cluster)")
        })
    }

    fn namespace<'a>(&'a self, prefix: &'a str) -> Fut<'a, TestNamespace> {
        Box::pin(async move {
            let n = self.namespaces.fetch_add(1, Ordering::SeqCst);
            // The process id keeps reruns on one cluster apart.
            let name = format!("{prefix}-{}-{n}", std::process::id() % 100_000);
            kubectl(&["create", "namespace", &name])
                .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(60);
            while kubectl(&["-n", &name, "get", "serviceaccount", "default"]).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the default ServiceAccount of {name} within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            TestNamespace::new(name, "kubectl".into(), None)
        })
    }

    fn ensure_operator(&self) {
        if let Err(e) = kubectl(&[
            "-n",
            OPERATOR_NS,
            "wait",
            "--for=condition=Available",
            "deployment",
            "--all",
            "--timeout=180s",
        ]) {
            panic!("no operator in {OPERATOR_NS} (tests/kind/run.sh installs the chart): {e}");
        }
    }

    fn service_addr(
        &self,
        namespace: &str,
        service: &str,
        port: u16,
    ) -> Result<SocketAddr, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (ns, svc, forwards) = (
            namespace.to_string(),
            service.to_string(),
            self.forwards.clone(),
        );
        std::thread::Builder::new()
            .name(format!("svc-{service}"))
            .spawn(move || {
                for client in listener.incoming().flatten() {
                    let (ns, svc, forwards) = (ns.clone(), svc.clone(), forwards.clone());
                    std::thread::spawn(move || {
                        if let Err(e) = relay(client, &ns, &svc, port, &forwards) {
                            eprintln!("kind: Service {ns}/{svc}: {e}");
                        }
                    });
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(addr)
    }

    fn signal_pod(&self, namespace: &str, pod: &str, signal: &str) -> Result<(), String> {
        let node = kubectl(&[
            "-n",
            namespace,
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.spec.nodeName}",
        ])?;
        // The pod's sandbox, its (only) container, that container's pid.
        let script = r#"set -e
p=$(crictl pods -q --namespace "^$1\$" --name "^$2\$" --state ready | head -n1)
c=$(crictl ps -q --pod "$p" | head -n1)
pid=$(crictl inspect --output go-template --template '{{.info.pid}}' "$c")
kill -s "$3" "$pid""#;
        run(
            Command::new("docker").args([
                "exec",
                node.trim(),
                "sh",
                "-c",
                script,
                "sh",
                namespace,
                pod,
                signal,
            ]),
            None,
        )
        .map(|_| ())
    }

    fn operator_logs(&self, tail: Option<usize>) -> String {
        let tail = tail.map_or_else(|| "-1".to_string(), |n| n.to_string());
        kubectl(&[
            "-n",
            OPERATOR_NS,
            "logs",
            "-l",
            "app.kubernetes.io/name=rstore-operator",
            "--prefix",
            "--tail",
            &tail,
        ])
        .unwrap_or_else(|e| format!("(no operator logs: {e})"))
    }

    fn pod_get(&self, namespace: &str, pod: &str, port: u16, path: &str) -> Result<String, String> {
        // The API server's pod proxy.
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{path}");
        kubectl(&["get", "--raw", &path])
    }

    fn volume_has_data(&self, _namespace: &str, _claim: &str) -> Option<bool> {
        None
    }
}

/// The name of a ready endpoint pod of Service `svc`.
fn ready_endpoint(ns: &str, svc: &str) -> Result<String, String> {
    let out = kubectl(&[
        "-n",
        ns,
        "get",
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={svc}"),
        "-o",
        "json",
    ])?;
    let list: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .filter(|e| e["conditions"]["ready"].as_bool() != Some(false))
        .find_map(|e| e["targetRef"]["name"].as_str().map(str::to_string))
        .ok_or_else(|| format!("no ready endpoint of Service {ns}/{svc}"))
}

/// Connect to `pod:port` through its port-forward (started, or restarted
/// when it ended).
fn connect_pod(forwards: &Forwards, ns: &str, pod: &str, port: u16) -> Result<TcpStream, String> {
    let key = (ns.to_string(), pod.to_string(), port);
    let mut map = forwards.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = map.get_mut(&key) {
        let ended = !matches!(f.child.try_wait(), Ok(None));
        if !ended && let Ok(s) = TcpStream::connect(("127.0.0.1", f.local)) {
            return Ok(s);
        }
        let _ = f.child.kill();
        let _ = f.child.wait();
        map.remove(&key);
    }
    let local = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("kubectl")
        .args([
            "-n",
            ns,
            "port-forward",
            &format!("pod/{pod}"),
            &format!("{local}:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run kubectl port-forward: {e}"))?;
    map.insert(key, Forward { child, local });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", local)) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(format!("port-forward to {ns}/{pod}:{port} did not start"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Relay one client connection to a ready endpoint of the Service.
fn relay(
    client: TcpStream,
    ns: &str,
    svc: &str,
    port: u16,
    forwards: &Forwards,
) -> Result<(), String> {
    let pod = ready_endpoint(ns, svc)?;
    let upstream = connect_pod(forwards, ns, &pod, port)?;
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    };
    let (c2, u2) = (
        client.try_clone().map_err(|e| e.to_string())?,
        upstream.try_clone().map_err(|e| e.to_string())?,
    );
    let back = std::thread::spawn(move || pipe(u2, c2));
    pipe(client, upstream);
    let _ = back.join();
    Ok(())
}
