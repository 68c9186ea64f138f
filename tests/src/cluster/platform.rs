//! What an operator scenario needs from a Kubernetes cluster, so that one
//! scenario runs on either: the real control plane of this machine
//! ([`Cluster`]: kube-apiserver and controllers with the stand-in kubelet,
//! every CI run) or a kind cluster ([`crate::kind::Kind`], with Docker,
//! `tests/kind/run.sh`). A scenario takes a `&dyn Platform` and does not
//! care which. What only one of them can do (hold a pod's restarts, read
//! a process's pid) stays with that one's own tests.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use kube::Client;

use super::scenario::{OPERATOR_NS, install_operator, operator_pods};
use super::{Cluster, TestNamespace, process};

/// A boxed future borrowing the platform.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A Kubernetes cluster with the operator installed by the chart.
pub trait Platform: Send + Sync {
    /// For messages: "real API server", "kind".
    fn name(&self) -> &'static str;
    /// Run kubectl with `args` (and `stdin`); stdout, or the error.
    fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String>;
    /// A client with cluster-admin rights (one per test: it is tied to
    /// the test's runtime).
    fn client(&self) -> Fut<'_, Client>;
    /// A fresh namespace whose name starts with `prefix`, deleted when
    /// the guard drops.
    fn namespace<'a>(&'a self, prefix: &'a str) -> Fut<'a, TestNamespace>;
    /// The chart installed (`helm install`, once), its operator running.
    fn ensure_operator(&self);
    /// A local address that reaches Service `service` port `port`: each
    /// new connection goes to a ready endpoint of that moment (as a client
    /// in the cluster reaching the Service would).
    fn service_addr(&self, namespace: &str, service: &str, port: u16)
    -> Result<SocketAddr, String>;
    /// Send `signal` (`KILL`, `STOP`, `CONT`) to the process of the pod's
    /// container, as a crash or a hang on its node would.
    fn signal_pod(&self, namespace: &str, pod: &str, signal: &str) -> Result<(), String>;
    /// The operator pods' logs (the last `tail` lines of each, or all).
    fn operator_logs(&self, tail: Option<usize>) -> String;
    /// `GET path` from port `port` of the pod (its body), as a scraper in
    /// the cluster would.
    fn pod_get(&self, namespace: &str, pod: &str, port: u16, path: &str) -> Result<String, String>;
    /// Whether the volume of claim `claim` holds files (None: this
    /// platform cannot look).
    fn volume_has_data(&self, namespace: &str, claim: &str) -> Option<bool>;
}

impl Platform for Cluster {
    fn name(&self) -> &'static str {
        "real API server"
    }

    fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        Cluster::kubectl_run(self, args, stdin)
    }

    fn client(&self) -> Fut<'_, Client> {
        Box::pin(Cluster::client(self))
    }

    fn namespace<'a>(&'a self, prefix: &'a str) -> Fut<'a, TestNamespace> {
        Box::pin(Cluster::namespace(self, prefix))
    }

    fn ensure_operator(&self) {
        install_operator(self);
    }

    fn service_addr(
        &self,
        namespace: &str,
        service: &str,
        port: u16,
    ) -> Result<SocketAddr, String> {
        self.kubelet().service_proxy(namespace, service, port)
    }

    fn signal_pod(&self, namespace: &str, pod: &str, signal: &str) -> Result<(), String> {
        let pid = self
            .kubelet()
            .pod_pid(namespace, pod)
            .ok_or_else(|| format!("pod {namespace}/{pod} has no running process"))?;
        process::signal(pid, signal);
        Ok(())
    }

    fn operator_logs(&self, tail: Option<usize>) -> String {
        let kubelet = self.kubelet();
        operator_pods(self)
            .iter()
            .filter_map(|p| kubelet.pod(OPERATOR_NS, p).map(|rt| (p, rt)))
            .map(|(p, rt)| {
                let log = match tail {
                    Some(n) => process::tail(&rt.log, n),
                    None => std::fs::read_to_string(&rt.log).unwrap_or_default(),
                };
                format!("--- {p}:\n{log}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn pod_get(&self, namespace: &str, pod: &str, port: u16, path: &str) -> Result<String, String> {
        use std::io::{Read, Write};
        let ip = self
            .kubelet()
            .pod(namespace, pod)
            .map(|rt| rt.ip)
            .ok_or_else(|| format!("pod {namespace}/{pod} does not run here"))?;
        let addr: SocketAddr = format!("{ip}:{port}")
            .parse()
            .map_err(|e| format!("address of {pod}: {e}"))?;
        let timeout = std::time::Duration::from_secs(3);
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
            _ => Err(format!("GET {path} from {addr}: {text:.200}")),
        }
    }

    fn volume_has_data(&self, namespace: &str, claim: &str) -> Option<bool> {
        // The stand-in kubelet's PVC folders.
        let dir = self.dir.join("volumes").join(namespace).join(claim);
        Some(std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()))
    }
}
