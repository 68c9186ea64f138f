//! Pods to [`Member`]s, and role labels back onto pods.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::brain::{Presence, RoleLabel};
use crate::coordination::Member;
use crate::labels::{self, ROLE_LABEL};

/// Members from the store's pods, with their admin address (pod IP when
/// known, else the stable DNS name), replication address (always the DNS
/// name, which survives pod restarts) and presence: a pod being deleted,
/// or whose container is waiting or terminated, has no running node.
pub fn from_pods(name: &str, namespace: &str, pods: &[Pod]) -> Vec<Member> {
    let mut members: Vec<Member> = pods
        .iter()
        .filter_map(|pod| {
            let pod_name = pod.name_any();
            let ordinal = labels::pod_ordinal(name, &pod_name)?;
            let host = labels::pod_host(name, namespace, &pod_name);
            let status = pod.status.as_ref();
            let ip = status
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty());
            let admin_host = match ip {
                Some(ip) if ip.contains(':') => format!("[{ip}]"),
                Some(ip) => ip,
                None => host.clone(),
            };
            let pod_ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let container_down = status
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.state.as_ref().is_some_and(|st| st.running.is_none()))
                });
            let presence = if pod.metadata.deletion_timestamp.is_some() {
                Presence::Deleting
            } else if container_down {
                Presence::Gone
            } else {
                Presence::Running
            };
            Some(Member {
                name: pod_name,
                ordinal,
                admin_addr: format!("{admin_host}:{}", labels::ADMIN_PORT),
                repl_addr: format!("{host}:{}", labels::REPL_PORT),
                pod_ready,
                role_label: pod
                    .labels()
                    .get(ROLE_LABEL)
                    .and_then(|v| RoleLabel::parse(v)),
                presence,
                admin_token: None,
            })
        })
        .collect();
    members.sort_by_key(|m| m.ordinal);
    members
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn members_from_pods() {
        let pods: Vec<Pod> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "rs-1", "labels": {"rstore.dev/role": "follower"}},
             "status": {"podIP": "10.0.0.2", "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "rs-0"}},
            {"metadata": {"name": "rs-2", "deletionTimestamp": "2024-01-01T00:00:00Z"}},
            {"metadata": {"name": "rs-3"}, "status": {"containerStatuses": [
                {"name": "rstore", "image": "i", "imageID": "", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
            {"metadata": {"name": "other-0"}}
        ]))
        .unwrap();
        let members = from_pods("rs", "ns", &pods);
        assert_eq!(members.len(), 4);
        assert_eq!(members[0].presence, Presence::Running);
        assert_eq!(members[2].presence, Presence::Deleting);
        assert_eq!(members[3].presence, Presence::Gone);
        assert_eq!(members[0].name, "rs-0");
        assert_eq!(members[0].admin_addr, "rs-0.rs-headless.ns.svc:8080");
        assert!(!members[0].pod_ready);
        assert_eq!(members[1].admin_addr, "10.0.0.2:8080");
        assert_eq!(members[1].repl_addr, "rs-1.rs-headless.ns.svc:7379");
        assert!(members[1].pod_ready);
        assert_eq!(members[1].role_label, Some(RoleLabel::Follower));
    }
}
