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

    fn volume_has_data(&self, namespace: &str, claim: &str) -> Option<bool> {
        // The stand-in kubelet's PVC folders.
        let dir = self.dir.join("volumes").join(namespace).join(claim);
        Some(std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()))
    }
}
