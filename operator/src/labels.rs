//! Names and labels shared by every object the operator makes.

use std::collections::BTreeMap;

/// Label the operator puts on pods to say which role each holds.
pub const ROLE_LABEL: &str = "rstore.dev/role";
/// Value of [`ROLE_LABEL`] on the leader pod.
pub const ROLE_LEADER: &str = "leader";
/// Value of [`ROLE_LABEL`] on follower pods.
pub const ROLE_FOLLOWER: &str = "follower";
/// Field manager of every server-side apply the operator does.
pub const FIELD_MANAGER: &str = "rstore-operator";
/// `app.kubernetes.io/name` of every object.
pub const APP_NAME: &str = "rstore";
/// `app.kubernetes.io/component` of the store members.
pub const COMPONENT: &str = "store";

/// Client (RESP) port.
pub const RESP_PORT: i32 = 6379;
/// Replication stream port.
pub const REPL_PORT: i32 = 7379;
/// Admin HTTP port.
pub const ADMIN_PORT: i32 = 8080;

/// Labels that select every member of the store `name`.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
    ])
}

/// Labels on every object of the store `name`.
pub fn common_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        FIELD_MANAGER.to_string(),
    );
    labels.insert(
        "app.kubernetes.io/component".to_string(),
        COMPONENT.to_string(),
    );
    labels
}

/// Selector labels plus a role.
pub fn role_selector(name: &str, role: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(ROLE_LABEL.to_string(), role.to_string());
    labels
}

/// Headless Service giving each member a stable DNS name.
pub fn headless_service_name(name: &str) -> String {
    format!("{name}-headless")
}

/// Service that selects the leader (clients write here).
pub fn leader_service_name(name: &str) -> String {
    format!("{name}-leader")
}

/// Service that selects ready followers (clients read here).
pub fn read_service_name(name: &str) -> String {
    format!("{name}-read")
}

/// Secret holding the token of the members' admin API (owned by the store).
pub fn admin_token_secret_name(name: &str) -> String {
    format!("{name}-admin-token")
}

/// Pod name of member `ordinal`.
pub fn pod_name(name: &str, ordinal: i32) -> String {
    format!("{name}-{ordinal}")
}

/// Ordinal of a StatefulSet pod of store `name`, if `pod` is one.
pub fn pod_ordinal(name: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(name)?.strip_prefix('-')?.parse().ok()
}

/// Stable DNS name of a member: `<pod>.<name>-headless.<ns>.svc`.
pub fn pod_host(name: &str, namespace: &str, pod: &str) -> String {
    format!("{pod}.{}.{namespace}.svc", headless_service_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_round_trip() {
        assert_eq!(pod_ordinal("rs", &pod_name("rs", 4)), Some(4));
        assert_eq!(pod_ordinal("rs", "rs-x"), None);
        assert_eq!(pod_ordinal("rs", "rsa-1"), None);
        assert_eq!(pod_ordinal("rs-a", "rs-a-2"), Some(2));
    }

    #[test]
    fn pod_host_uses_headless_service() {
        assert_eq!(pod_host("rs", "ns", "rs-0"), "rs-0.rs-headless.ns.svc");
    }
}
