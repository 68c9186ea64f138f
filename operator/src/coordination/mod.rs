//! Member coordination through the nodes' admin API: probe every member,
//! decide (pure, [`decide`]), act, probe again, and report member statuses
//! and the role labels pods should carry. Kubernetes-free: it takes members
//! and a [`NodeAdmin`], so the local mode and the failover logic reuse it,
//! and tests drive it with fake nodes.

pub mod admin;
pub mod decide;

use std::collections::BTreeMap;

use futures::future::join_all;

pub use admin::{HttpNodeAdmin, Member, NodeAdmin};
pub use decide::{Decision, Previous, Probe, Step, decide, desired_labels};

use crate::crd::MemberStatus;
use rstore_node::admin::Role;

/// An admin call that was made, for events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub step: Step,
    /// `Err` carries the node's error text.
    pub result: Result<(), String>,
}

/// Everything one coordination pass learned and did.
#[derive(Debug, Clone)]
pub struct Report {
    pub decision: Decision,
    pub done: Vec<Done>,
    /// Members as probed after the steps, sorted by ordinal.
    pub members: Vec<MemberStatus>,
    /// Role label per pod (`None`: no label).
    pub labels: BTreeMap<String, Option<&'static str>>,
}

impl Report {
    /// The first failed step, if any.
    pub fn first_failure(&self) -> Option<&Done> {
        self.done.iter().find(|d| d.result.is_err())
    }
}

/// Probe every member concurrently.
pub async fn probe_all(admin: &dyn NodeAdmin, members: &[Member]) -> Vec<Probe> {
    join_all(members.iter().map(|member| async move {
        Probe {
            member: member.clone(),
            status: admin.status(member).await.map_err(|e| e.to_string()),
        }
    }))
    .await
}

/// One pass: probe, decide, act, re-probe when something was done.
pub async fn coordinate(
    admin: &dyn NodeAdmin,
    members: &[Member],
    desired_replicas: i32,
    previous: &Previous,
) -> Report {
    let mut probes = probe_all(admin, members).await;
    let decision = decide(&probes, desired_replicas, previous);
    let done = execute(admin, members, &decision.steps).await;
    if !done.is_empty() {
        probes = probe_all(admin, members).await;
    }
    let labels = desired_labels(&probes, decision.leader.as_deref(), decision.epoch);
    let members = member_statuses(&probes, &labels, decision.leader.as_deref());
    Report {
        decision,
        done,
        members,
        labels,
    }
}

/// Run `steps` in order; a failed promotion stops the follows that need it.
async fn execute(admin: &dyn NodeAdmin, members: &[Member], steps: &[Step]) -> Vec<Done> {
    let mut done = Vec::new();
    for step in steps {
        let name = match step {
            Step::Promote { member, .. } | Step::Follow { member, .. } => member,
        };
        let Some(member) = members.iter().find(|m| &m.name == name) else {
            continue;
        };
        let result = match step {
            Step::Promote { epoch, .. } => admin.promote(member, *epoch).await,
            Step::Follow {
                leader_addr, epoch, ..
            } => admin.follow(member, leader_addr, *epoch).await,
        }
        .map_err(|e| e.to_string());
        let failed_promotion = matches!(step, Step::Promote { .. }) && result.is_err();
        match &result {
            Ok(()) => tracing::info!(?step, "member coordinated"),
            Err(err) => tracing::warn!(?step, %err, "member coordination failed"),
        }
        done.push(Done {
            step: step.clone(),
            result,
        });
        if failed_promotion {
            break;
        }
    }
    done
}

fn member_statuses(
    probes: &[Probe],
    labels: &BTreeMap<String, Option<&'static str>>,
    leader: Option<&str>,
) -> Vec<MemberStatus> {
    let leader_status = leader
        .and_then(|name| probes.iter().find(|p| p.member.name == name))
        .and_then(|p| p.status.as_ref().ok());
    let mut out: Vec<(i32, MemberStatus)> = probes
        .iter()
        .map(|p| {
            let in_role = labels.get(&p.member.name).copied().flatten().is_some();
            let mut status = MemberStatus {
                name: p.member.name.clone(),
                role: "unknown".to_string(),
                ready: p.member.pod_ready && in_role,
                ..MemberStatus::default()
            };
            match &p.status {
                Ok(s) => {
                    status.role = match s.role {
                        Role::Leader => "leader",
                        Role::Follower => "follower",
                        Role::Idle => "idle",
                    }
                    .to_string();
                    status.epoch = to_i64(s.epoch);
                    status.offset = to_i64(s.offsets.applied);
                    if let Some(f) = leader_status
                        .and_then(|l| l.followers.iter().find(|f| f.node_id == p.member.name))
                    {
                        status.lag_bytes = Some(to_i64(f.lag_bytes));
                        status.lag_ms = Some(to_i64(f.lag_ms));
                    }
                    if !p.member.pod_ready {
                        status.message = Some("pod is not ready".to_string());
                    } else if !in_role {
                        status.message = Some("not yet following the leader".to_string());
                    }
                }
                Err(err) => status.message = Some(err.clone()),
            }
            (p.member.ordinal, status)
        })
        .collect();
    out.sort_by_key(|(ordinal, _)| *ordinal);
    out.into_iter().map(|(_, s)| s).collect()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod fake;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::decide::tests::member;
    use super::fake::FakeNodes;
    use super::*;

    #[tokio::test]
    async fn fresh_cluster_gets_a_leader_and_followers() {
        let nodes = FakeNodes::idle(3);
        let members: Vec<Member> = (0..3).map(member).collect();
        let report = coordinate(&nodes, &members, 3, &Previous::default()).await;
        assert_eq!(report.decision.leader.as_deref(), Some("rs-0"));
        assert_eq!(report.done.len(), 3);
        assert!(report.first_failure().is_none());
        assert_eq!(report.labels["rs-0"], Some("leader"));
        assert_eq!(report.labels["rs-2"], Some("follower"));
        assert!(report.members.iter().all(|m| m.ready && m.epoch == 1));
        assert_eq!(report.members[1].lag_bytes, Some(0));
        assert_eq!(
            nodes.calls(),
            [
                "promote rs-0 1",
                "follow rs-1 rs-0:7379 1",
                "follow rs-2 rs-0:7379 1"
            ]
        );

        // Second pass: nothing to do.
        let again = coordinate(
            &nodes,
            &members,
            3,
            &Previous {
                leader: Some("rs-0".into()),
                epoch: 1,
            },
        )
        .await;
        assert!(again.done.is_empty());
        assert_eq!(nodes.calls().len(), 3);
    }

    #[tokio::test]
    async fn failed_promotion_stops_the_follows() {
        let nodes = FakeNodes::idle(2);
        nodes.fail_promote("rs-0", "disk full");
        let members: Vec<Member> = (0..2).map(member).collect();
        let report = coordinate(&nodes, &members, 2, &Previous::default()).await;
        assert_eq!(report.done.len(), 1);
        assert!(
            report
                .first_failure()
                .unwrap()
                .result
                .as_ref()
                .unwrap_err()
                .contains("disk full")
        );
        assert!(report.labels.values().all(Option::is_none));
    }

    #[tokio::test]
    async fn unreachable_member_is_reported() {
        let nodes = FakeNodes::idle(2);
        nodes.set_down("rs-1", true);
        let members: Vec<Member> = (0..2).map(member).collect();
        let report = coordinate(&nodes, &members, 2, &Previous::default()).await;
        assert!(report.done.is_empty());
        assert_eq!(report.members[1].role, "unknown");
        assert!(
            report.members[1]
                .message
                .as_ref()
                .unwrap()
                .contains("refused")
        );
        assert!(report.decision.waiting.unwrap().contains("rs-1"));
    }
}
