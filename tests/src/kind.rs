//! Helpers for the kind end-to-end scenarios (`tests/kind_e2e.rs`): a kube
//! client for the current kubeconfig, a namespace per scenario, waiting on
//! ReplicatedStore status, and `kubectl port-forward` to Services.
//!
//! They need a cluster with the operator installed (`tests/kind/run.sh`);
//! nothing here runs without one.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rstore_operator::crd::ReplicatedStore;
use serde_json::json;

/// Failure of an e2e helper, with what it was doing.
#[derive(Debug)]
pub struct E2eError(pub String);

impl std::fmt::Display for E2eError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for E2eError {}

pub type Result<T> = std::result::Result<T, E2eError>;

fn err(what: impl std::fmt::Display) -> E2eError {
    E2eError(what.to_string())
}

/// Client for the current kubeconfig (kind sets it).
pub async fn client() -> Result<Client> {
    Client::try_default()
        .await
        .map_err(|e| err(format!("no Kubernetes cluster: {e}")))
}

/// Create (or reuse) namespace `name`.
pub async fn namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).map_err(err)?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(err(format!("create namespace {name}: {e}"))),
    }
}

/// Apply a ReplicatedStore from a JSON spec (server-side apply).
pub async fn apply_store(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<()> {
    let api: Api<ReplicatedStore> = Api::namespaced(client.clone(), ns);
    let body = json!({
        "apiVersion": "rstore.dev/v1alpha1",
        "kind": "ReplicatedStore",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply("rstore-e2e").force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| err(format!("apply ReplicatedStore {ns}/{name}: {e}")))?;
    Ok(())
}

/// Delete a ReplicatedStore.
pub async fn delete_store(client: &Client, ns: &str, name: &str) -> Result<()> {
    let api: Api<ReplicatedStore> = Api::namespaced(client.clone(), ns);
    api.delete(name, &DeleteParams::foreground())
        .await
        .map_err(|e| err(format!("delete ReplicatedStore {ns}/{name}: {e}")))?;
    Ok(())
}

/// Poll `check` every second until it returns `Some` or `timeout` passes;
/// the error says what was awaited and the last observation.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing observed");
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(observed) => last = observed,
        }
        if Instant::now() > deadline {
            return Err(err(format!(
                "timed out after {timeout:?} waiting for {what}; last: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wait until the store is Available with `ready` ready members; returns it.
pub async fn wait_available(
    client: &Client,
    ns: &str,
    name: &str,
    ready: i32,
    timeout: Duration,
) -> Result<ReplicatedStore> {
    let api: Api<ReplicatedStore> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("{ns}/{name} Available with {ready} ready members"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let store = api.get(name).await.map_err(|e| e.to_string())?;
                let status = store.status.clone().unwrap_or_default();
                let available = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True");
                if available
                    && status.ready_replicas == ready
                    && status.members.len() == usize::try_from(ready).unwrap_or(0)
                {
                    Ok(Some(store))
                } else {
                    Err(format!("{}: {:?}", store.name_any(), status))
                }
            }
        },
    )
    .await
}

/// `kubectl port-forward svc/NAME LOCAL:PORT`, stopped on drop.
pub struct PortForward {
    child: Child,
    pub local_port: u16,
}

impl PortForward {
    /// Forward a free local port to `port` of Service `svc`.
    pub async fn service(ns: &str, svc: &str, port: u16) -> Result<Self> {
        let local_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| err(format!("no free local port: {e}")))?
            .port();
        let child = Command::new("kubectl")
            .args([
                "-n",
                ns,
                "port-forward",
                &format!("svc/{svc}"),
                &format!("{local_port}:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| err(format!("cannot run kubectl port-forward: {e}")))?;
        let forward = Self { child, local_port };
        wait_for(
            &format!("port-forward to {ns}/svc/{svc}"),
            Duration::from_secs(30),
            || async move {
                Ok(std::net::TcpStream::connect(("127.0.0.1", local_port))
                    .ok()
                    .map(|_| ()))
            },
        )
        .await?;
        Ok(forward)
    }

    /// `redis://` URL of the forwarded port.
    pub fn url(&self, password: Option<&str>) -> String {
        match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.local_port),
            None => format!("redis://127.0.0.1:{}/", self.local_port),
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
