//! Services: a headless one for stable peer DNS, `<name>-leader` for writes
//! and `<name>-read` for reads, selected by the `rstore.dev/role` label the
//! operator puts on pods.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object_meta;
use crate::labels;
use crate::validate::ValidatedStore;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// `<name>-headless`: DNS for every member, ready or not, so a follower can
/// reach its leader and the operator can reach an idle member before either
/// passes readiness.
pub fn headless(store: &ValidatedStore) -> Service {
    Service {
        metadata: object_meta(store, labels::headless_service_name(&store.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels::selector_labels(&store.name)),
            ports: Some(vec![
                port("resp", labels::RESP_PORT),
                port("repl", labels::REPL_PORT),
                port("admin", labels::ADMIN_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn client_service(store: &ValidatedStore, name: String, role: &str) -> Service {
    Service {
        metadata: object_meta(store, name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(labels::role_selector(&store.name, role)),
            ports: Some(vec![port("resp", labels::RESP_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `<name>-leader`: the one pod labelled leader (clients write here).
pub fn leader(store: &ValidatedStore) -> Service {
    client_service(
        store,
        labels::leader_service_name(&store.name),
        labels::ROLE_LEADER,
    )
}

/// `<name>-read`: ready followers (clients read here).
pub fn read(store: &ValidatedStore) -> Service {
    client_service(
        store,
        labels::read_service_name(&store.name),
        labels::ROLE_FOLLOWER,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::build::test_support::store;

    #[test]
    fn headless_publishes_not_ready_members() {
        let svc = headless(&store("  {}"));
        assert_eq!(svc.metadata.name.as_deref(), Some("rs-headless"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<_> = spec.ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [6379, 7379, 8080]);
        assert!(!spec.selector.unwrap().contains_key(labels::ROLE_LABEL));
    }

    #[test]
    fn client_services_select_by_role() {
        let s = store("  {}");
        for (svc, name, role) in [
            (leader(&s), "rs-leader", "leader"),
            (read(&s), "rs-read", "follower"),
        ] {
            assert_eq!(svc.metadata.name.as_deref(), Some(name));
            let spec = svc.spec.unwrap();
            let selector = spec.selector.unwrap();
            assert_eq!(selector[labels::ROLE_LABEL], role);
            assert_eq!(selector["app.kubernetes.io/instance"], "rs");
            let ports = spec.ports.unwrap();
            assert_eq!(ports.len(), 1);
            assert_eq!(ports[0].port, 6379);
            assert_eq!(
                ports[0].target_port,
                Some(IntOrString::String("resp".into()))
            );
        }
    }
}
