//! rstore-operator: reconciles `ReplicatedStore` resources into running
//! rstore clusters.
//!
//! Layout (a pipeline, each step its own module and error type):
//! - [`crd`]: the `ReplicatedStore` resource, its schema, defaults and the
//!   CRD YAML (`rstore-operator crd`).
//! - [`validate`]: pure checks, spec -> [`validate::ValidatedStore`].
//! - [`build`]: pure builders, one module per object kind (StatefulSet and
//!   pod template, Services, PodDisruptionBudget); [`labels`]: names and
//!   labels; [`render`]: `rstore-operator render FILE`.
//! - [`coordination`]: talking to the members through their admin API
//!   behind the [`coordination::NodeAdmin`] trait: probe, decide (pure),
//!   act, report. Kubernetes-free, reused by failover.
//! - [`controller`]: `reconcile` (validate -> coordinate -> build -> apply ->
//!   relabel -> events -> status), `error_policy`, `run`; [`conditions`]:
//!   condition merging; [`error`]: error categories; [`metrics`] and
//!   [`http`]: `/metrics` and `/healthz`.

pub mod build;
pub mod conditions;
pub mod controller;
pub mod coordination;
pub mod crd;
pub mod error;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod render;
pub mod validate;
