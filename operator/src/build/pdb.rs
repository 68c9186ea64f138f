//! PodDisruptionBudget: voluntary disruptions (drains) take one member at a
//! time, so a drain never removes the leader and its sync followers at once.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::labels;
use crate::validate::ValidatedStore;

/// The store's PDB (`<name>`), at most one member unavailable.
pub fn build(store: &ValidatedStore) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: object_meta(store, store.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector_labels(&store.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::build::test_support::store;

    #[test]
    fn one_member_at_a_time() {
        let pdb = build(&store("  {}"));
        assert_eq!(pdb.metadata.name.as_deref(), Some("rs"));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert!(spec.min_available.is_none());
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap(),
            labels::selector_labels("rs")
        );
    }
}
