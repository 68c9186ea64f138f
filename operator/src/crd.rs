//! The `ReplicatedStore` custom resource (`replicatedstores.rstore.dev/v1alpha1`).
//!
//! The schema carries the validation the API server can do by itself
//! (ranges, enums, patterns, CEL rules between fields) and the defaults, so
//! `kubectl apply` rejects a bad spec before the operator ever sees it. The
//! operator repeats the same checks in [`crate::validate`] (it cannot trust
//! that the CRD installed in a cluster is the current one).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, PodSecurityContext, ResourceRequirements, SecurityContext,
    Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::brain::{FailoverProgress, FailoverRecord};

/// API group of the CRD.
pub const GROUP: &str = "rstore.dev";
/// API version of the CRD.
pub const VERSION: &str = "v1alpha1";
/// Largest `metadata.name`: StatefulSet pods carry a
/// `controller-revision-hash` label of `<name>-<10 chars>`, and label values
/// stop at 63 characters.
pub const MAX_NAME_LEN: usize = 52;
/// Upper bound on members: replication fans out from one leader.
pub const MAX_REPLICAS: i32 = 15;

/// Desired state of a replicated rstore cluster: one leader and
/// `replicas - 1` followers, all members of one StatefulSet.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rstore.dev",
    version = "v1alpha1",
    kind = "ReplicatedStore",
    namespaced,
    status = "ReplicatedStoreStatus",
    shortname = "rstore",
    category = "all",
    derive = "PartialEq",
    doc = "A replicated rstore cluster: one leader, followers, Services for writes and reads.",
    validation = Rule::new("size(self.metadata.name) <= 52").message("metadata.name must be at most 52 characters (StatefulSet pod labels are limited to 63)"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader", description = "Pod that currently holds the leader role"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch", description = "Current leadership epoch"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.ready", description = "Ready members / desired members"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.replication.mode", description = "Replication acknowledgement mode"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.replication.mode != 'semi-sync' || self.replication.syncReplicas < self.replicas")
        .message("replication.syncReplicas must be less than replicas: semi-sync waits for that many followers (use mode async for a single member)")
)]
pub struct ReplicatedStoreSpec {
    /// Number of members (leader included).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 15))]
    pub replicas: i32,

    /// Container image with the `rstore-node` binary. Defaults to the image
    /// the operator was started with (`--node-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Image pull policy of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// How writes are acknowledged.
    #[serde(default)]
    pub replication: ReplicationSpec,

    /// When the local log is flushed to disk.
    #[serde(default)]
    pub durability: DurabilitySpec,

    /// Persistent volume of every member.
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory of the node container. Defaults to requests of
    /// 100m CPU and 128Mi memory, with no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Password for clients and for replication connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Failure detection (used by automatic failover).
    #[serde(default)]
    pub failover: FailoverSpec,

    /// Pod placement.
    #[serde(default)]
    pub scheduling: SchedulingSpec,

    /// Secrets for pulling the node image from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// Pod security context of the members. Replaces the default (non-root
    /// user 10001, fsGroup 10001, RuntimeDefault seccomp) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,

    /// Security context of the node container. Replaces the default
    /// (non-root, read-only root filesystem, no privilege escalation, every
    /// capability dropped) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

fn default_replicas() -> i32 {
    3
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Acknowledgement mode of writes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    /// Acknowledge after the local log (per durability); followers lag.
    Async,
    /// Acknowledge after `syncReplicas` followers reached `ackLevel`.
    #[default]
    SemiSync,
    /// Acknowledge after every follower reached `ackLevel`.
    Sync,
}

impl ReplicationMode {
    /// The node flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Async => "async",
            ReplicationMode::SemiSync => "semi-sync",
            ReplicationMode::Sync => "sync",
        }
    }
}

/// What a leader does when followers do not acknowledge in time.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnSyncTimeout {
    /// Fail the write as indeterminate; never report it as success.
    #[default]
    Block,
    /// Fall back to async acknowledgement (visible in status and metrics).
    Degrade,
}

impl OnSyncTimeout {
    /// The node flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            OnSyncTimeout::Block => "block",
            OnSyncTimeout::Degrade => "degrade",
        }
    }
}

/// How far a follower must have taken a record before it counts as an ack.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AckLevel {
    /// In the follower's memory.
    #[default]
    Received,
    /// On the follower's disk.
    Durable,
    /// Visible to readers on the follower.
    Applied,
}

impl AckLevel {
    /// The node flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckLevel::Received => "received",
            AckLevel::Durable => "durable",
            AckLevel::Applied => "applied",
        }
    }
}

/// Replication acknowledgement settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// async, semi-sync or sync.
    #[serde(default)]
    pub mode: ReplicationMode,
    /// Semi-sync: follower acks a write waits for. Must be below `replicas`.
    #[serde(default = "default_sync_replicas")]
    #[schemars(range(min = 1, max = 14))]
    pub sync_replicas: i32,
    /// Milliseconds a write waits for acks before `onSyncTimeout` applies.
    #[serde(default = "default_sync_timeout_ms")]
    #[schemars(range(min = 1, max = 600000))]
    pub sync_timeout_ms: i32,
    /// block or degrade.
    #[serde(default)]
    pub on_sync_timeout: OnSyncTimeout,
    /// received, durable or applied.
    #[serde(default)]
    pub ack_level: AckLevel,
}

fn default_sync_replicas() -> i32 {
    1
}

fn default_sync_timeout_ms() -> i32 {
    1000
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        Self {
            mode: ReplicationMode::default(),
            sync_replicas: default_sync_replicas(),
            sync_timeout_ms: default_sync_timeout_ms(),
            on_sync_timeout: OnSyncTimeout::default(),
            ack_level: AckLevel::default(),
        }
    }
}

/// Local durability.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurabilitySpec {
    /// always, batch (group commit), interval:MS or never.
    #[serde(default = "default_fsync")]
    #[schemars(regex(pattern = r"^(always|batch|never|interval:[1-9][0-9]{0,6})$"))]
    pub fsync: String,
}

fn default_fsync() -> String {
    "batch".to_string()
}

impl Default for DurabilitySpec {
    fn default() -> Self {
        Self {
            fsync: default_fsync(),
        }
    }
}

/// Persistent volume of each member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of each member's volume (immutable).
    #[serde(default = "default_storage_size")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage.size is immutable: StatefulSet volume claim templates cannot change"))]
    pub size: Quantity,
    /// StorageClass of the volumes; the cluster default when empty (immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage.storageClassName is immutable"))]
    pub storage_class_name: Option<String>,
    /// Delete the volumes when the ReplicatedStore is deleted. By default
    /// they are kept, so deleting the resource never deletes the data.
    #[serde(default)]
    pub delete_claims_on_delete: bool,
}

fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_string())
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            delete_claims_on_delete: false,
        }
    }
}

/// Password settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret (in the same namespace) holding the password.
    pub password_secret_ref: SecretKeyRef,
}

/// A key in a Secret of the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "password".to_string()
}

/// Failure detection settings of the failover brain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.probeTimeoutMs <= self.probePeriodMs")
        .message("failover.probeTimeoutMs must not exceed failover.probePeriodMs")
)]
pub struct FailoverSpec {
    /// Milliseconds between admin probes of each member.
    #[serde(default = "default_probe_period")]
    #[schemars(range(min = 50, max = 60000))]
    pub probe_period_ms: i32,
    /// Milliseconds one probe may take.
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 10, max = 60000))]
    pub probe_timeout_ms: i32,
    /// Consecutive failed probes of the leader before failover starts.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
}

fn default_probe_period() -> i32 {
    500
}

fn default_probe_timeout() -> i32 {
    300
}

fn default_failure_threshold() -> i32 {
    3
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            probe_period_ms: default_probe_period(),
            probe_timeout_ms: default_probe_timeout(),
            failure_threshold: default_failure_threshold(),
        }
    }
}

/// Default spreading of members when no `affinity` is given.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AntiAffinity {
    /// Prefer one member per node (scheduling still succeeds on few nodes).
    #[default]
    Preferred,
    /// At most one member per node.
    Required,
    /// No default spreading.
    Disabled,
}

/// Pod placement. Everything but `antiAffinity` is passed to the pods as is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Default member spreading across nodes, used when `affinity` is empty.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
    /// Full affinity of the pods; replaces the default anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedStoreStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pod name of the current leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Current leadership epoch (0 before the first promotion).
    #[serde(default)]
    pub epoch: i64,
    /// Desired members.
    #[serde(default)]
    pub replicas: i32,
    /// Members that are ready and in their role.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready_replicas/replicas`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Per-member role, offsets and lag from the last probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Available, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// A failover or switchover in progress: the failover brain records
    /// each phase here before acting, so a restarted operator resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverProgress>,
    /// The last completed failover or switchover, phase by phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
}

/// One member as last probed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub name: String,
    /// leader, follower, idle or unknown (not reachable).
    pub role: String,
    /// The member's epoch.
    #[serde(default)]
    pub epoch: i64,
    /// Applied offset of the member's log.
    #[serde(default)]
    pub offset: i64,
    /// Bytes behind the leader (followers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Milliseconds behind the leader (followers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,
    /// Pod ready and member answering in its role.
    #[serde(default)]
    pub ready: bool,
    /// Why the member is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// StatefulSet revision its pod runs (`controller-revision-hash`), so a
    /// rolling update shows who runs what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Whether the replication settings the member reports are the spec's
    /// (they are applied live, without a restart); absent when it does not
    /// report them (unreachable, or a node older than the feature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_in_sync: Option<bool>,
}

/// The CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&ReplicatedStore::crd())?;
    Ok(format!(
        "# Generated by `rstore-operator crd`; do not edit.\n# Regenerate: cargo run -p rstore-operator -- crd > crds/replicatedstores.rstore.dev.yaml\n{body}"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec_json(crd: &serde_json::Value) -> &serde_json::Value {
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    }

    #[test]
    fn crd_names_and_columns() {
        let crd = ReplicatedStore::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("replicatedstores.rstore.dev")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["rstore".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Leader", "Epoch", "Ready", "Mode", "Age"]);
    }

    #[test]
    fn schema_has_defaults_ranges_and_cel_rules() {
        let crd = serde_json::to_value(ReplicatedStore::crd()).unwrap();
        let spec = spec_json(&crd);
        assert_eq!(spec["properties"]["replicas"]["default"], 3);
        assert_eq!(
            spec["properties"]["replicas"]["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(
            spec["properties"]["replication"]["default"]["mode"],
            "semi-sync"
        );
        let text = serde_json::to_string(&crd).unwrap();
        for rule in [
            "self.replication.mode != 'semi-sync' || self.replication.syncReplicas < self.replicas",
            "self.probeTimeoutMs <= self.probePeriodMs",
            "size(self.metadata.name) <= 52",
            "self == oldSelf",
        ] {
            assert!(text.contains(rule), "missing CEL rule {rule}");
        }
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let rs: ReplicatedStore = serde_yaml::from_str(
            "apiVersion: rstore.dev/v1alpha1\nkind: ReplicatedStore\nmetadata: {name: a}\nspec: {}\n",
        )
        .unwrap();
        assert_eq!(rs.spec.replicas, 3);
        assert_eq!(rs.spec.replication, ReplicationSpec::default());
        assert_eq!(rs.spec.durability.fsync, "batch");
        assert_eq!(rs.spec.storage.size.0, "1Gi");
        assert_eq!(rs.spec.failover.failure_threshold, 3);
        assert_eq!(rs.spec.failover.probe_period_ms, 500);
        assert_eq!(rs.spec.failover.probe_timeout_ms, 300);
    }

    /// crds/ and the chart's copy must be exactly what the code generates.
    #[test]
    fn committed_crds_match_the_code() {
        let generated = crd_yaml().unwrap();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        for path in [
            "crds/replicatedstores.rstore.dev.yaml",
            "charts/rstore/crds/replicatedstores.rstore.dev.yaml",
        ] {
            let committed = std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_default();
            assert!(
                committed == generated,
                "{path} is out of date with operator/src/crd.rs; regenerate with:\n  \
                 cargo run -p rstore-operator -- crd > {path}"
            );
        }
    }
}
