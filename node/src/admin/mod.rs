//! Admin HTTP API: health, status, role changes, metrics; and the client
//! the operator uses to drive nodes.

pub mod client;
pub mod server;
pub mod types;

pub use client::{AdminClient, AdminError};
pub use types::*;
