//! Admin HTTP API: health, status, role changes, metrics.

pub mod client;
pub mod types;

pub use client::{AdminClient, AdminError};
pub use types::*;
