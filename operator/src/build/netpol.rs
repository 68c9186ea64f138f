//! Optional NetworkPolicy (operator flag `--network-policy`, chart value
//! `networkPolicy.enabled`): clients reach the RESP port from anywhere; the
//! replication and admin ports only from the store's own members and from
//! the operator's pods (label `app.kubernetes.io/name=rstore-operator`) in
//! the operator's own namespace only: pod labels are anyone's to set in a
//! namespace of their own, the `kubernetes.io/metadata.name` label of a
//! namespace is set by the API server. The admin token guards the admin API
//! anyway; this closes the ports themselves. Metrics scrapers need a rule
//! of their own. With the flag off, the driver deletes the policy it made.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::labels;
use crate::validate::ValidatedStore;

/// `app.kubernetes.io/name` of the operator's own pods (the chart's).
pub const OPERATOR_APP_NAME: &str = "rstore-operator";

fn port(number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_string()),
        ..NetworkPolicyPort::default()
    }
}

/// Namespace label the API server sets to the namespace's own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The store's NetworkPolicy (`<name>`); `operator_namespace`: where the
/// operator's pods run.
pub fn build(store: &ValidatedStore, operator_namespace: &str) -> NetworkPolicy {
    let members = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels::selector_labels(&store.name)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                operator_namespace.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                OPERATOR_APP_NAME.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: object_meta(store, store.name.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector_labels(&store.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(labels::RESP_PORT)]),
                    from: None,
                },
                NetworkPolicyIngressRule {
                    ports: Some(vec![port(labels::REPL_PORT), port(labels::ADMIN_PORT)]),
                    from: Some(vec![members, operator]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::build::test_support::store;

    #[test]
    fn clients_reach_resp_and_only_members_and_the_operator_reach_the_rest() {
        let np = build(&store("  {}"), "rstore-system");
        let spec = np.spec.unwrap();
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 2);
        let open = &rules[0];
        assert!(open.from.is_none(), "RESP is open to clients");
        assert_eq!(
            open.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(labels::RESP_PORT))
        );
        let closed = &rules[1];
        let ports: Vec<_> = closed
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.port.clone().unwrap())
            .collect();
        assert_eq!(
            ports,
            [
                IntOrString::Int(labels::REPL_PORT),
                IntOrString::Int(labels::ADMIN_PORT)
            ]
        );
        let from = closed.from.as_ref().unwrap();
        assert_eq!(
            from[0].pod_selector.as_ref().unwrap().match_labels,
            Some(labels::selector_labels("rs"))
        );
        assert_eq!(
            from[1]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app.kubernetes.io/name"],
            OPERATOR_APP_NAME
        );
        assert_eq!(np.metadata.owner_references.unwrap()[0].uid, "u-1");
    }

    #[test]
    fn the_operator_is_admitted_from_its_own_namespace_only() {
        let np = build(&store("  {}"), "rstore-system");
        let rules = np.spec.unwrap().ingress.unwrap();
        let operator = &rules[1].from.as_ref().unwrap()[1];
        let namespaces = operator.namespace_selector.as_ref().unwrap();
        assert_eq!(
            namespaces.match_labels,
            Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                "rstore-system".to_string()
            )])),
            "an empty selector admits pods labelled as the operator in any namespace"
        );
        assert!(namespaces.match_expressions.is_none());
        // Members are matched in the store's own namespace (no namespace
        // selector: the policy's namespace).
        assert!(
            rules[1].from.as_ref().unwrap()[0]
                .namespace_selector
                .is_none()
        );
    }
}
