//! rstore-operator: reconciles `ReplicatedStore` resources into running
//! rstore clusters.
//!
//! Layout (a pipeline, each step its own module and error type):
//! - [`crd`]: the `ReplicatedStore` resource, its schema, defaults and the
//!   CRD YAML (`rstore-operator crd`).
pub mod build;
pub mod crd;
pub mod labels;
pub mod render;
pub mod validate;
pub mod coordination;
