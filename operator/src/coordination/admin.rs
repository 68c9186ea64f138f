//! The seam between coordination and the nodes: a small trait over the
//! admin API, implemented by [`HttpNodeAdmin`] (the real
//! [`AdminClient`]) and by fakes in tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use rstore_node::admin::{
    AdminClient, AdminError, FenceResponse, ReplicationSettings, StatusResponse,
};

use crate::brain::{Presence, RoleLabel};

/// One store member as Kubernetes shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Pod name (also the node id).
    pub name: String,
    /// StatefulSet ordinal.
    pub ordinal: i32,
    /// `host:port` of the admin API.
    pub admin_addr: String,
    /// `host:port` of the replication listener (what followers dial).
    pub repl_addr: String,
    /// Pod Ready condition (local mode: the node's `/readyz`).
    pub pod_ready: bool,
    /// The role label it carries now (`rstore.dev/role`, or proxy membership).
    pub role_label: Option<RoleLabel>,
    /// Whether its pod or process exists.
    pub presence: Presence,
    /// Token the member's admin API wants for fence, promote and follow.
    pub admin_token: Option<AdminToken>,
}

/// A secret admin token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Admin operations coordination (and the live settings) need. Object-safe so the controller can
/// hold any implementation behind an `Arc<dyn NodeAdmin>`.
pub trait NodeAdmin: Send + Sync {
    fn status<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<StatusResponse, AdminError>>;
    fn promote<'a>(
        &'a self,
        member: &'a Member,
        epoch: u64,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    fn follow<'a>(
        &'a self,
        member: &'a Member,
        leader_repl_addr: &'a str,
        epoch: u64,
    ) -> BoxFuture<'a, Result<(), AdminError>>;
    fn fence<'a>(
        &'a self,
        member: &'a Member,
        epoch: u64,
    ) -> BoxFuture<'a, Result<FenceResponse, AdminError>>;
    /// Apply replication settings live (`POST /config`); the node persists
    /// them and answers with the settings now in force.
    fn set_config<'a>(
        &'a self,
        member: &'a Member,
        settings: &'a ReplicationSettings,
    ) -> BoxFuture<'a, Result<ReplicationSettings, AdminError>>;
}

/// [`NodeAdmin`] over HTTP with the node crate's [`AdminClient`]. One
/// client (and so one connection pool) per member address and kind of
/// call, so probes every few hundred milliseconds reuse their connection.
#[derive(Debug)]
pub struct HttpNodeAdmin {
    probe_timeout: Duration,
    action_timeout: Duration,
    clients: Mutex<HashMap<(String, bool), AdminClient>>,
}

/// Addresses remembered at most (pod IPs change as pods come and go).
const MAX_CLIENTS: usize = 512;

impl HttpNodeAdmin {
    /// Probes (`/status`) get `probe_timeout`; fence, promote and follow,
    /// which write the node's metadata to disk, get `action_timeout`.
    pub fn new(probe_timeout: Duration, action_timeout: Duration) -> Self {
        Self {
            probe_timeout,
            action_timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, member: &Member, probe: bool) -> AdminClient {
        let token = member.admin_token.as_ref().map(|t| t.0.clone());
        let timeout = if probe {
            self.probe_timeout
        } else {
            self.action_timeout
        };
        let make = || AdminClient::with_timeout(member.admin_addr.clone(), timeout);
        let Ok(mut clients) = self.clients.lock() else {
            return make().with_token(token);
        };
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients
            .entry((member.admin_addr.clone(), probe))
            .or_insert_with(make)
            .clone()
            .with_token(token)
    }
}

impl HttpNodeAdmin {
    /// `GET /readyz` through the member's pooled probe client (local mode
    /// reads it where Kubernetes has the pod's Ready condition).
    pub async fn readyz(&self, member: &Member) -> Result<(), AdminError> {
        self.client(member, true).readyz().await
    }
}

impl NodeAdmin for HttpNodeAdmin {
    fn status<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<StatusResponse, AdminError>> {
        Box::pin(async move { self.client(member, true).status().await })
    }

    fn promote<'a>(
        &'a self,
        member: &'a Member,
        epoch: u64,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move { self.client(member, false).promote(epoch).await })
    }

    fn follow<'a>(
        &'a self,
        member: &'a Member,
        leader_repl_addr: &'a str,
        epoch: u64,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            self.client(member, false)
                .follow(leader_repl_addr, epoch)
                .await
        })
    }

    fn fence<'a>(
        &'a self,
        member: &'a Member,
        epoch: u64,
    ) -> BoxFuture<'a, Result<FenceResponse, AdminError>> {
        Box::pin(async move { self.client(member, false).fence(epoch).await })
    }

    fn set_config<'a>(
        &'a self,
        member: &'a Member,
        settings: &'a ReplicationSettings,
    ) -> BoxFuture<'a, Result<ReplicationSettings, AdminError>> {
        Box::pin(async move { self.client(member, false).set_config(settings).await })
    }
}
