//! Reconcile errors. Each has a category: the metric label, the Event
//! reason and the requeue policy.

use std::time::Duration;

use crate::validate::ValidationError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid; waits for the user to change it.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] ValidationError),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed ({action}): {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// The failover brain's state could not be recorded in status.
    #[error("cannot record status: {0}")]
    Status(String),
    /// A body could not be (de)serialized.
    #[error("serialization failed: {0}")]
    Serialization(#[from] serde_json::Error),
}

impl Error {
    /// Short stable name: metric label and Event reason suffix.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Kube { .. } => "kube_api",
            Error::Status(_) => "status",
            Error::Serialization(_) => "serialization",
        }
    }

    /// When to try again.
    pub fn requeue_after(&self) -> Duration {
        match self {
            // A spec change triggers a reconcile anyway; this is a backstop.
            Error::InvalidSpec(_) => Duration::from_secs(300),
            Error::Kube { .. } | Error::Status(_) => Duration::from_secs(10),
            Error::Serialization(_) => Duration::from_secs(60),
        }
    }

    /// Wrap a kube error with what we were doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}
