//! The StatefulSet of all members: identical pods (roles are given at run
//! time by the operator, not baked into the template) and one volume each.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{object_meta, pod};
use crate::labels;
use crate::validate::ValidatedStore;

/// Name of the data volume claim template (and of the volume in the pod).
pub const DATA_VOLUME: &str = "data";

/// The StatefulSet `<name>` running `replicas` members.
pub fn build(store: &ValidatedStore, replicas: i32) -> StatefulSet {
    StatefulSet {
        metadata: object_meta(store, store.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(labels::headless_service_name(&store.name)),
            // Pods start idle and the operator gives each its role, so there
            // is no start-up order to keep: create them all at once.
            pod_management_policy: Some("Parallel".to_string()),
            // The operator replaces members itself, followers first and
            // the leader last after a switchover (crate::rollout).
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(labels::selector_labels(&store.name)),
                ..LabelSelector::default()
            },
            template: pod::template(store),
            volume_claim_templates: Some(vec![claim_template(store)]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(
                        if store.spec.storage.delete_claims_on_delete {
                            "Delete"
                        } else {
                            "Retain"
                        }
                        .to_string(),
                    ),
                    // A member removed by scale-down keeps its log, so
                    // scaling back up catches up instead of a full snapshot.
                    when_scaled: Some("Retain".to_string()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn claim_template(store: &ValidatedStore) -> PersistentVolumeClaim {
    let storage = &store.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(labels::common_labels(&store.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::build::test_support::store;

    #[test]
    fn statefulset_shape() {
        let sts = build(&store("  replicas: 5"), 5);
        let spec = sts.spec.unwrap();
        assert_eq!(
            spec.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete"),
            "the operator rolls members itself, leader last"
        );
        assert_eq!(spec.replicas, Some(5));
        assert_eq!(spec.service_name.as_deref(), Some("rs-headless"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.selector.match_labels.unwrap(),
            labels::selector_labels("rs")
        );
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(!template_labels.contains_key(labels::ROLE_LABEL));
        let retention = spec.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    }

    #[test]
    fn replicas_come_from_the_caller() {
        // Coordination may hold a scale-down back to keep the leader.
        let sts = build(&store("  replicas: 3"), 5);
        assert_eq!(sts.spec.unwrap().replicas, Some(5));
    }

    #[test]
    fn claim_template_from_storage_spec() {
        let sts = build(
            &store("  storage: {size: 5Gi, storageClassName: fast, deleteClaimsOnDelete: true}"),
            3,
        );
        let spec = sts.spec.unwrap();
        let claim = &spec.volume_claim_templates.unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let cspec = claim.spec.as_ref().unwrap();
        assert_eq!(cspec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            cspec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "5Gi"
        );
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
    }
}
