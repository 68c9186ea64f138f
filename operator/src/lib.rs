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
//! - [`brain`]: the failover brain, pure: from observations (probes,
//!   presence, failures, what was recorded) to the next steps, the state to
//!   record, events and role labels. Bootstrap, failover, switchover.
//! - [`coordination`]: the drivers' shared half: probe members through the
//!   [`coordination::NodeAdmin`] trait, count failed probes, and run the
//!   brain's plans (record, act, re-probe, decide again).
//! - [`local`]: `rstore-operator local`, the same brain over node
//!   processes on this machine, with TCP proxies as its endpoints.
//! - [`rollout`]: rolling updates planned purely (followers first, the
//!   leader after a switchover); [`live_settings`]: replication settings
//!   applied to running members through the admin API instead of a restart.
//! - [`controller`]: `reconcile` (validate -> build -> apply -> hand over
//!   to the store's failover driver, which probes on its own timer, runs
//!   the brain, relabels pods and writes status), `error_policy`, `run`;
//!   [`conditions`]:
//!   condition merging; [`error`]: error categories; [`metrics`] and
//!   [`http`]: `/metrics` and `/healthz`.

pub mod brain;
pub mod build;
pub mod conditions;
pub mod controller;
pub mod coordination;
pub mod crd;
pub mod error;
pub mod http;
pub mod labels;
pub mod live_settings;
pub mod local;
pub mod metrics;
pub mod render;
pub mod rollout;
pub mod validate;
