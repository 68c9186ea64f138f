//! HTTP client for a node's admin API (used by the operator).

/// Client for one node's admin endpoint.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// `host:port` of the admin listener.
    pub addr: String,
}

/// Failure talking to a node's admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin request to {addr} failed: {reason}")]
    Transport { addr: String, reason: String },
}
