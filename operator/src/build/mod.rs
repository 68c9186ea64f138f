//! Pure builders: every Kubernetes object of a store from a
//! [`ValidatedStore`](crate::validate::ValidatedStore). No I/O; each object
//! kind has its own module and tests.

pub mod netpol;
pub mod pdb;
pub mod pod;
pub mod secret;
pub mod service;
pub mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ObjectMeta;

use crate::labels;
use crate::validate::ValidatedStore;

/// Every object the operator owns for one store.
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    pub statefulset: StatefulSet,
    pub headless: Service,
    pub leader: Service,
    pub read: Service,
    pub pdb: PodDisruptionBudget,
}

/// Build all objects. `statefulset_replicas` is what the StatefulSet should
/// run now: the spec's count, unless coordination holds a scale-down back
/// (never remove the leader).
pub fn build_all(store: &ValidatedStore, statefulset_replicas: i32) -> Objects {
    Objects {
        statefulset: statefulset::build(store, statefulset_replicas),
        headless: service::headless(store),
        leader: service::leader(store),
        read: service::read(store),
        pdb: pdb::build(store),
    }
}

impl Objects {
    /// All objects as one multi-document YAML stream.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let docs = [
            serde_yaml::to_string(&self.headless)?,
            serde_yaml::to_string(&self.leader)?,
            serde_yaml::to_string(&self.read)?,
            serde_yaml::to_string(&self.pdb)?,
            serde_yaml::to_string(&self.statefulset)?,
        ];
        Ok(docs
            .iter()
            .map(|d| format!("---\n{d}"))
            .collect::<Vec<_>>()
            .join(""))
    }
}

/// Metadata shared by every owned object: name, namespace, labels, owner.
pub(crate) fn object_meta(store: &ValidatedStore, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(store.namespace.clone()),
        labels: Some(labels::common_labels(&store.name)),
        owner_references: store.owner.clone().map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_support {
    use crate::crd::ReplicatedStore;
    use crate::validate::{ValidatedStore, validate};

    /// A validated store from an inline spec (indented by two spaces).
    pub fn store(spec: &str) -> ValidatedStore {
        let doc = format!(
            "apiVersion: rstore.dev/v1alpha1\nkind: ReplicatedStore\nmetadata:\n  name: rs\n  namespace: ns\n  uid: u-1\nspec:\n{spec}"
        );
        let rs: ReplicatedStore = serde_yaml::from_str(&doc).unwrap();
        validate(&rs, Some("rstore:test")).unwrap()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_object_is_labelled_and_owned() {
        let store = test_support::store("  {}");
        let objs = build_all(&store, 3);
        let metas = [
            &objs.statefulset.metadata,
            &objs.headless.metadata,
            &objs.leader.metadata,
            &objs.read.metadata,
            &objs.pdb.metadata,
        ];
        for meta in metas {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/name"], "rstore");
            assert_eq!(labels["app.kubernetes.io/instance"], "rs");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "rstore-operator");
            assert_eq!(labels["app.kubernetes.io/component"], "store");
            let owners = meta.owner_references.as_ref().unwrap();
            assert_eq!(owners[0].uid, "u-1");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("ns"));
        }
    }

    #[test]
    fn yaml_stream_has_every_kind() {
        let yaml = build_all(&test_support::store("  {}"), 3)
            .to_yaml()
            .unwrap();
        for kind in ["StatefulSet", "Service", "PodDisruptionBudget"] {
            assert!(yaml.contains(&format!("kind: {kind}")), "{kind}");
        }
        assert_eq!(yaml.matches("---\n").count(), 5);
    }
}
