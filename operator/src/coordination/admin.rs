//! The seam between coordination and the nodes: a small trait over the
//! admin API, implemented by [`HttpNodeAdmin`] (the real
//! [`AdminClient`]) and by fakes in tests.

use std::time::Duration;

use futures::future::BoxFuture;
use rstore_node::admin::{AdminClient, AdminError, FenceResponse, StatusResponse};

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
    /// Pod Ready condition.
    pub pod_ready: bool,
    /// Current value of the `rstore.dev/role` label.
    pub role_label: Option<String>,
}

/// Admin operations coordination needs. Object-safe so the controller can
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
}

/// [`NodeAdmin`] over HTTP with the node crate's [`AdminClient`].
#[derive(Debug, Clone)]
pub struct HttpNodeAdmin {
    timeout: Duration,
}

impl HttpNodeAdmin {
    /// Every request gets `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    fn client(&self, member: &Member) -> AdminClient {
        AdminClient::with_timeout(member.admin_addr.clone(), self.timeout)
    }
}

impl NodeAdmin for HttpNodeAdmin {
    fn status<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<StatusResponse, AdminError>> {
        Box::pin(async move { self.client(member).status().await })
    }

    fn promote<'a>(
        &'a self,
        member: &'a Member,
        epoch: u64,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move { self.client(member).promote(epoch).await })
    }

    fn follow<'a>(
        &'a self,
        member: &'a Member,
        leader_repl_addr: &'a str,
        epoch: u64,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move { self.client(member).follow(leader_repl_addr, epoch).await })
    }

    fn fence<'a>(
        &'a self,
        member: &'a Member,
        epoch: u64,
    ) -> BoxFuture<'a, Result<FenceResponse, AdminError>> {
        Box::pin(async move { self.client(member).fence(epoch).await })
    }
}
