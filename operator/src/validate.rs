//! Pure validation: a `ReplicatedStore` as the API server stored it, to the
//! checked, fully-defaulted input of the builders.
//!
//! The CRD schema already rejects most bad specs; this repeats those checks
//! (the installed CRD may be older than the operator) and adds the ones the
//! schema cannot express. Every error names the field and says what to do.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::crd::{
    MAX_NAME_LEN, MAX_REPLICAS, ReplicatedStore, ReplicatedStoreSpec, ReplicationMode,
};

/// A spec the operator refuses, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("metadata.name is missing")]
    MissingName,
    #[error(
        "metadata.name {name:?} is not a valid name: use at most {MAX_NAME_LEN} lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
    )]
    BadName { name: String },
    #[error("spec.replicas is {0}: it must be between 1 and {MAX_REPLICAS}")]
    Replicas(i32),
    #[error(
        "spec.image is empty and the operator has no default node image (--node-image): set spec.image"
    )]
    NoImage,
    #[error(
        "spec.replication.syncReplicas is {sync_replicas} with {replicas} replicas: semi-sync needs 1 <= syncReplicas < replicas (use mode async for a single member)"
    )]
    SyncReplicas { sync_replicas: i32, replicas: i32 },
    #[error("spec.replication.syncTimeoutMs is {0}: it must be at least 1")]
    SyncTimeout(i32),
    #[error("spec.durability.fsync is {0:?}: use always, batch, never or interval:MS with MS >= 1")]
    Fsync(String),
    #[error("spec.storage.size {0:?} is not a quantity such as 1Gi or 500Mi")]
    StorageSize(String),
    #[error(
        "spec.failover: probeTimeoutMs ({timeout}) must be between 10 and probePeriodMs ({period}), probePeriodMs at least 50, failureThreshold ({threshold}) at least 1"
    )]
    Failover {
        period: i32,
        timeout: i32,
        threshold: i32,
    },
    #[error("spec.auth.passwordSecretRef: name and key must not be empty")]
    AuthSecret,
}

/// A checked store: everything the builders need, nothing optional that
/// they would have to default again.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedStore {
    pub name: String,
    pub namespace: String,
    /// Controller reference to the ReplicatedStore; `None` when rendering a
    /// manifest that was never stored (no uid), so rendered output carries
    /// no owner reference the garbage collector would act on.
    pub owner: Option<OwnerReference>,
    pub generation: Option<i64>,
    pub image: String,
    pub spec: ReplicatedStoreSpec,
}

impl ValidatedStore {
    /// Desired member count.
    pub fn replicas(&self) -> i32 {
        self.spec.replicas
    }
}

/// Validate `store`. `default_image` is the operator's `--node-image`.
pub fn validate(
    store: &ReplicatedStore,
    default_image: Option<&str>,
) -> Result<ValidatedStore, ValidationError> {
    let name = store
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingName)?;
    if !is_store_name(&name) {
        return Err(ValidationError::BadName { name });
    }
    let namespace = store
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let spec = &store.spec;
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        return Err(ValidationError::Replicas(spec.replicas));
    }
    let image = spec
        .image
        .as_deref()
        .or(default_image)
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or(ValidationError::NoImage)?
        .to_string();
    let repl = &spec.replication;
    if repl.mode == ReplicationMode::SemiSync && !(1..spec.replicas).contains(&repl.sync_replicas) {
        return Err(ValidationError::SyncReplicas {
            sync_replicas: repl.sync_replicas,
            replicas: spec.replicas,
        });
    }
    if repl.sync_timeout_ms < 1 {
        return Err(ValidationError::SyncTimeout(repl.sync_timeout_ms));
    }
    if !is_fsync(&spec.durability.fsync) {
        return Err(ValidationError::Fsync(spec.durability.fsync.clone()));
    }
    if !is_quantity(&spec.storage.size.0) {
        return Err(ValidationError::StorageSize(spec.storage.size.0.clone()));
    }
    let f = &spec.failover;
    if f.probe_period_ms < 50
        || f.probe_timeout_ms < 10
        || f.probe_timeout_ms > f.probe_period_ms
        || f.failure_threshold < 1
    {
        return Err(ValidationError::Failover {
            period: f.probe_period_ms,
            timeout: f.probe_timeout_ms,
            threshold: f.failure_threshold,
        });
    }
    if let Some(auth) = &spec.auth {
        let r = &auth.password_secret_ref;
        if r.name.trim().is_empty() || r.key.trim().is_empty() {
            return Err(ValidationError::AuthSecret);
        }
    }
    Ok(ValidatedStore {
        owner: store.controller_owner_ref(&()),
        generation: store.metadata.generation,
        name,
        namespace,
        image,
        spec: spec.clone(),
    })
}

/// DNS-1035 label short enough for StatefulSet pod labels.
fn is_store_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last().is_some_and(|b| *b != b'-')
}

fn is_fsync(value: &str) -> bool {
    match value {
        "always" | "batch" | "never" => true,
        other => other
            .strip_prefix("interval:")
            .and_then(|ms| ms.parse::<u32>().ok())
            .is_some_and(|ms| ms >= 1),
    }
}

/// A positive Kubernetes quantity: a decimal number and an optional binary
/// or decimal suffix (the forms storage requests use).
fn is_quantity(value: &str) -> bool {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        value
            .strip_suffix(suffix)
            .and_then(|number| number.parse::<f64>().ok())
            .is_some_and(|n| n > 0.0 && n.is_finite())
            && value.chars().next().is_some_and(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store(yaml_spec: &str) -> ReplicatedStore {
        let doc = format!(
            "apiVersion: rstore.dev/v1alpha1\nkind: ReplicatedStore\nmetadata:\n  name: rs\n  namespace: ns\n  uid: u-1\nspec:\n{yaml_spec}"
        );
        serde_yaml::from_str(&doc).unwrap()
    }

    fn check(yaml_spec: &str) -> Result<ValidatedStore, ValidationError> {
        validate(&store(yaml_spec), Some("rstore:dev"))
    }

    #[test]
    fn defaults_are_valid() {
        let v = check("  {}").unwrap();
        assert_eq!(v.replicas(), 3);
        assert_eq!(v.image, "rstore:dev");
        assert_eq!(v.namespace, "ns");
        let owner = v.owner.unwrap();
        assert_eq!(owner.kind, "ReplicatedStore");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn rendering_without_uid_has_no_owner() {
        let mut s = store("  {}");
        s.metadata.uid = None;
        assert!(validate(&s, Some("img")).unwrap().owner.is_none());
    }

    #[test]
    fn spec_image_wins_over_default() {
        assert_eq!(check("  image: mine:1").unwrap().image, "mine:1");
        let err = validate(&store("  {}"), None).unwrap_err();
        assert_eq!(err, ValidationError::NoImage);
        assert!(err.to_string().contains("set spec.image"));
    }

    #[test]
    fn semi_sync_needs_enough_followers() {
        let err = check("  replicas: 1").unwrap_err();
        assert_eq!(
            err,
            ValidationError::SyncReplicas {
                sync_replicas: 1,
                replicas: 1
            }
        );
        assert!(err.to_string().contains("use mode async"), "{err}");
        check("  replicas: 1\n  replication: {mode: async}").unwrap();
        let err = check("  replicas: 3\n  replication: {syncReplicas: 3}").unwrap_err();
        assert!(
            err.to_string()
                .contains("syncReplicas is 3 with 3 replicas")
        );
        check("  replicas: 3\n  replication: {mode: sync, syncReplicas: 3}").unwrap();
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("  replicas: 0", "spec.replicas is 0"),
            ("  replicas: 16", "spec.replicas is 16"),
            ("  durability: {fsync: sometimes}", "spec.durability.fsync"),
            (
                "  durability: {fsync: 'interval:0'}",
                "spec.durability.fsync",
            ),
            ("  storage: {size: lots}", "spec.storage.size"),
            (
                "  failover: {probePeriodMs: 100, probeTimeoutMs: 500}",
                "probeTimeoutMs (500)",
            ),
            (
                "  auth: {passwordSecretRef: {name: ''}}",
                "spec.auth.passwordSecretRef",
            ),
            (
                "  replication: {syncTimeoutMs: 0}",
                "spec.replication.syncTimeoutMs",
            ),
        ];
        for (spec, expected) in cases {
            let err = check(spec).unwrap_err().to_string();
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn names_must_fit_dns_and_label_limits() {
        for bad in ["Rs", "1rs", "rs-", "r_s", &"a".repeat(53)] {
            let mut s = store("  {}");
            s.metadata.name = Some(bad.to_string());
            let err = validate(&s, Some("i")).unwrap_err();
            assert!(matches!(err, ValidationError::BadName { .. }), "{bad}");
        }
        let mut s = store("  {}");
        s.metadata.name = Some("a".repeat(52));
        validate(&s, Some("i")).unwrap();
    }

    #[test]
    fn fsync_and_quantity_forms() {
        for ok in ["always", "batch", "never", "interval:10"] {
            assert!(is_fsync(ok), "{ok}");
        }
        for ok in ["1Gi", "500Mi", "10G", "1073741824", "1.5Gi"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "-1Gi", "1Xi", "0"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
