//! Pure decisions: from what every member said (`/status` probes) to the
//! admin calls to make, the role labels to set and how many members the
//! StatefulSet may run. No I/O, so every rule here is a plain unit test.
//!
//! Rules (safety first; anything unclear waits and says why):
//! - Bootstrap: no member has ever had an epoch, every member answers and is
//!   idle: promote the lowest ordinal at epoch 1; the others follow it.
//! - Restore: no leader, but the leader recorded in status is back at the
//!   recorded epoch and no member has a higher one (a restarted node never
//!   promotes itself): promote it again at epoch + 1. Its log holds every
//!   acknowledged write (it acknowledged them), so nothing is lost.
//! - Otherwise no leader: wait (choosing another member is failover, which
//!   must fence first).
//! - With a leader at epoch E: every other answering member that is not
//!   following it at E is told to follow it at E (a stale leader of a
//!   lower epoch included: the node truncates its diverged tail).
//! - Scale-down never removes the leader: the StatefulSet keeps
//!   `leader ordinal + 1` members until failover/switchover exists.

use std::collections::BTreeMap;

use rstore_node::admin::{Role, StatusResponse};

use super::admin::Member;
use crate::labels::{ROLE_FOLLOWER, ROLE_LEADER};

/// One member and what its admin API said (or why it did not answer).
#[derive(Debug, Clone)]
pub struct Probe {
    pub member: Member,
    pub status: Result<StatusResponse, String>,
}

impl Probe {
    fn ok(&self) -> Option<&StatusResponse> {
        self.status.as_ref().ok()
    }
}

/// Where the last reconcile left the cluster (from the resource's status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Previous {
    pub leader: Option<String>,
    pub epoch: u64,
}

/// An admin call to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `POST /promote {epoch}` on `member`.
    Promote { member: String, epoch: u64 },
    /// `POST /follow {leader, epoch}` on `member`; `leader_addr` is the
    /// leader's replication address.
    Follow {
        member: String,
        leader: String,
        leader_addr: String,
        epoch: u64,
    },
}

/// What coordination should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The leader after the steps (pod name).
    pub leader: Option<String>,
    /// The leader's epoch after the steps.
    pub epoch: u64,
    /// Admin calls, in order (a promotion before the follows that need it).
    pub steps: Vec<Step>,
    /// Why coordination cannot make progress, when it cannot.
    pub waiting: Option<String>,
    /// Members the StatefulSet may run.
    pub statefulset_replicas: i32,
    /// Set when a scale-down is held back to keep the leader.
    pub scale_down_blocked: Option<String>,
}

/// Decide from `probes` (every existing member pod), the desired member
/// count and the previous status.
pub fn decide(probes: &[Probe], desired_replicas: i32, previous: &Previous) -> Decision {
    let max_epoch = probes
        .iter()
        .filter_map(|p| p.ok().map(|s| s.epoch))
        .max()
        .unwrap_or(0)
        .max(previous.epoch);
    let mut decision = Decision {
        leader: None,
        epoch: max_epoch,
        steps: Vec::new(),
        waiting: None,
        statefulset_replicas: desired_replicas,
        scale_down_blocked: None,
    };

    let leaders: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.ok().is_some_and(|s| s.role == Role::Leader && !s.fenced))
        .collect();
    let top_epoch = leaders.iter().filter_map(|p| p.ok().map(|s| s.epoch)).max();
    let current: Vec<&Probe> = leaders
        .iter()
        .copied()
        .filter(|p| p.ok().map(|s| s.epoch) == top_epoch)
        .collect();

    let leader: Option<(&Member, u64)> = match current.as_slice() {
        [only] => only.ok().map(|s| (&only.member, s.epoch)),
        [] => None,
        many => {
            let names: Vec<&str> = many.iter().map(|p| p.member.name.as_str()).collect();
            decision.waiting = Some(format!(
                "members {} all claim leadership at epoch {}; refusing to act",
                names.join(", "),
                top_epoch.unwrap_or(0)
            ));
            block_scale_down(
                &mut decision,
                desired_replicas,
                previous_leader(probes, previous),
            );
            return decision;
        }
    };

    let (leader, epoch) = match leader {
        Some((member, epoch)) if epoch >= max_epoch => (member.clone(), epoch),
        Some((member, epoch)) => {
            decision.waiting = Some(format!(
                "leader {} is at epoch {epoch} but epoch {max_epoch} exists: a failover is in progress or was interrupted",
                member.name
            ));
            block_scale_down(&mut decision, desired_replicas, Some(member.ordinal));
            return decision;
        }
        None => match elect(probes, previous, max_epoch) {
            Ok(member) => {
                let epoch = max_epoch + 1;
                decision.steps.push(Step::Promote {
                    member: member.name.clone(),
                    epoch,
                });
                (member.clone(), epoch)
            }
            Err(why) => {
                decision.waiting = Some(why);
                block_scale_down(
                    &mut decision,
                    desired_replicas,
                    previous_leader(probes, previous),
                );
                return decision;
            }
        },
    };

    for probe in probes {
        if probe.member.name == leader.name {
            continue;
        }
        let Some(status) = probe.ok() else { continue };
        if follows(status, &leader, epoch) {
            continue;
        }
        if status.epoch > epoch {
            // Fenced at a newer epoch: a failover owns this member.
            continue;
        }
        decision.steps.push(Step::Follow {
            member: probe.member.name.clone(),
            leader: leader.name.clone(),
            leader_addr: leader.repl_addr.clone(),
            epoch,
        });
    }
    decision.leader = Some(leader.name.clone());
    decision.epoch = epoch;
    block_scale_down(&mut decision, desired_replicas, Some(leader.ordinal));
    decision
}

/// Whom to promote when nobody leads, or why nobody can be.
fn elect<'a>(
    probes: &'a [Probe],
    previous: &Previous,
    max_epoch: u64,
) -> Result<&'a Member, String> {
    if probes.is_empty() {
        return Err("no member pods exist yet".to_string());
    }
    if max_epoch == 0 {
        let silent: Vec<&str> = probes
            .iter()
            .filter(|p| p.ok().is_none())
            .map(|p| p.member.name.as_str())
            .collect();
        if !silent.is_empty() {
            return Err(format!(
                "waiting for every member to answer before choosing the first leader (not answering: {})",
                silent.join(", ")
            ));
        }
        if let Some(busy) = probes
            .iter()
            .find(|p| p.ok().is_some_and(|s| s.role != Role::Idle))
        {
            return Err(format!(
                "member {} is not idle at epoch 0; refusing to bootstrap",
                busy.member.name
            ));
        }
        return probes
            .iter()
            .min_by_key(|p| p.member.ordinal)
            .map(|p| &p.member)
            .ok_or_else(|| "no member pods exist yet".to_string());
    }
    let Some(name) = previous.leader.as_deref() else {
        return Err(format!(
            "no leader at epoch {max_epoch} and none recorded: automatic failover is required"
        ));
    };
    let Some(probe) = probes.iter().find(|p| p.member.name == name) else {
        return Err(format!(
            "no leader: former leader {name} is gone; automatic failover is required"
        ));
    };
    match probe.ok() {
        Some(status) if status.epoch == previous.epoch && previous.epoch == max_epoch => {
            Ok(&probe.member)
        }
        Some(status) => Err(format!(
            "no leader: former leader {name} is at epoch {} but the cluster reached epoch {max_epoch}; automatic failover is required",
            status.epoch
        )),
        None => Err(format!(
            "no leader: former leader {name} does not answer ({}); waiting for it (automatic failover is required to replace it)",
            probe
                .status
                .as_ref()
                .err()
                .map(String::as_str)
                .unwrap_or("unknown")
        )),
    }
}

fn previous_leader(probes: &[Probe], previous: &Previous) -> Option<i32> {
    let name = previous.leader.as_deref()?;
    probes
        .iter()
        .find(|p| p.member.name == name)
        .map(|p| p.member.ordinal)
}

fn block_scale_down(decision: &mut Decision, desired: i32, leader_ordinal: Option<i32>) {
    if let Some(ordinal) = leader_ordinal.filter(|o| *o >= desired) {
        decision.statefulset_replicas = ordinal + 1;
        decision.scale_down_blocked = Some(format!(
            "scale-down to {desired} would remove the leader (member {ordinal}); keeping {} members until a switchover moves leadership",
            ordinal + 1
        ));
    }
}

/// True when `status` is a follower of `leader` at `epoch`.
pub fn follows(status: &StatusResponse, leader: &Member, epoch: u64) -> bool {
    status.role == Role::Follower
        && status.epoch == epoch
        && !status.fenced
        && status.leader.as_deref() == Some(leader.repl_addr.as_str())
}

/// The role label each member should carry now: `leader` on the leader,
/// `follower` on members following it at its epoch, none on the rest.
pub fn desired_labels(
    probes: &[Probe],
    leader: Option<&str>,
    epoch: u64,
) -> BTreeMap<String, Option<&'static str>> {
    let leader_member = leader.and_then(|name| probes.iter().find(|p| p.member.name == name));
    probes
        .iter()
        .map(|p| {
            let role = match (p.ok(), leader_member) {
                (Some(s), Some(l)) if p.member.name == l.member.name => {
                    (s.role == Role::Leader && s.epoch == epoch && !s.fenced).then_some(ROLE_LEADER)
                }
                (Some(s), Some(l)) => follows(s, &l.member, epoch).then_some(ROLE_FOLLOWER),
                _ => None,
            };
            (p.member.name.clone(), role)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use rstore_node::admin::{FollowerStatus, Offsets, ReplicationMode};

    pub fn member(i: i32) -> Member {
        Member {
            name: format!("rs-{i}"),
            ordinal: i,
            admin_addr: format!("rs-{i}:8080"),
            repl_addr: format!("rs-{i}:7379"),
            pod_ready: true,
            role_label: None,
        }
    }

    pub fn status(name: &str, role: Role, epoch: u64, leader: Option<&str>) -> StatusResponse {
        StatusResponse {
            node_id: name.to_string(),
            role,
            epoch,
            fenced: false,
            offsets: Offsets::default(),
            leader: leader.map(str::to_string),
            followers: Vec::<FollowerStatus>::new(),
            mode: ReplicationMode::SemiSync,
            degraded: false,
            link: None,
            snapshot_progress: None,
            digest: None,
            keys: 0,
        }
    }

    fn probe(i: i32, role: Role, epoch: u64, leader: Option<i32>) -> Probe {
        let leader = leader.map(|l| format!("rs-{l}:7379"));
        Probe {
            member: member(i),
            status: Ok(status(&format!("rs-{i}"), role, epoch, leader.as_deref())),
        }
    }

    fn silent(i: i32) -> Probe {
        Probe {
            member: member(i),
            status: Err("connection refused".into()),
        }
    }

    fn follow(i: i32, leader: i32, epoch: u64) -> Step {
        Step::Follow {
            member: format!("rs-{i}"),
            leader: format!("rs-{leader}"),
            leader_addr: format!("rs-{leader}:7379"),
            epoch,
        }
    }

    #[test]
    fn bootstrap_promotes_first_member_at_epoch_1_and_others_follow() {
        let probes = [
            probe(1, Role::Idle, 0, None),
            probe(0, Role::Idle, 0, None),
            probe(2, Role::Idle, 0, None),
        ];
        let d = decide(&probes, 3, &Previous::default());
        assert_eq!(d.leader.as_deref(), Some("rs-0"));
        assert_eq!(d.epoch, 1);
        assert_eq!(
            d.steps,
            [
                Step::Promote {
                    member: "rs-0".into(),
                    epoch: 1
                },
                follow(1, 0, 1),
                follow(2, 0, 1),
            ]
        );
        assert!(d.waiting.is_none());
    }

    #[test]
    fn bootstrap_waits_for_every_member() {
        let probes = [probe(0, Role::Idle, 0, None), silent(1)];
        let d = decide(&probes, 2, &Previous::default());
        assert!(d.steps.is_empty());
        assert!(d.waiting.unwrap().contains("rs-1"));
        let d = decide(&[], 3, &Previous::default());
        assert!(d.waiting.unwrap().contains("no member pods"));
    }

    #[test]
    fn in_sync_cluster_needs_nothing() {
        let probes = [
            probe(0, Role::Leader, 4, None),
            probe(1, Role::Follower, 4, Some(0)),
            probe(2, Role::Follower, 4, Some(0)),
        ];
        let d = decide(
            &probes,
            3,
            &Previous {
                leader: Some("rs-0".into()),
                epoch: 4,
            },
        );
        assert!(d.steps.is_empty());
        assert_eq!((d.leader.as_deref(), d.epoch), (Some("rs-0"), 4));
        let labels = desired_labels(&probes, d.leader.as_deref(), d.epoch);
        assert_eq!(labels["rs-0"], Some("leader"));
        assert_eq!(labels["rs-1"], Some("follower"));
    }

    #[test]
    fn new_and_stray_members_are_pointed_at_the_leader() {
        let probes = [
            probe(0, Role::Follower, 2, Some(1)),
            probe(1, Role::Leader, 2, None),
            probe(2, Role::Follower, 1, Some(0)), // old epoch
            probe(3, Role::Idle, 0, None),        // scale-up
            probe(4, Role::Leader, 1, None),      // stale leader
            silent(5),
        ];
        let d = decide(&probes, 6, &Previous::default());
        assert_eq!(d.leader.as_deref(), Some("rs-1"));
        assert_eq!(d.steps, [follow(2, 1, 2), follow(3, 1, 2), follow(4, 1, 2)]);
        let labels = desired_labels(&probes, d.leader.as_deref(), d.epoch);
        assert_eq!(labels["rs-0"], Some("follower"));
        assert_eq!(labels["rs-4"], None, "the stale leader loses its label");
        assert_eq!(labels["rs-5"], None);
    }

    #[test]
    fn restarted_leader_is_promoted_again_at_a_new_epoch() {
        let probes = [
            probe(0, Role::Follower, 3, None),
            probe(1, Role::Follower, 3, Some(0)),
        ];
        let prev = Previous {
            leader: Some("rs-0".into()),
            epoch: 3,
        };
        let d = decide(&probes, 2, &prev);
        assert_eq!(
            d.steps,
            [
                Step::Promote {
                    member: "rs-0".into(),
                    epoch: 4
                },
                follow(1, 0, 4)
            ]
        );
    }

    #[test]
    fn no_leader_after_bootstrap_waits_for_failover() {
        let prev = Previous {
            leader: Some("rs-0".into()),
            epoch: 3,
        };
        let d = decide(&[silent(0), probe(1, Role::Follower, 3, Some(0))], 2, &prev);
        assert!(d.steps.is_empty());
        assert!(
            d.waiting
                .unwrap()
                .contains("former leader rs-0 does not answer")
        );
        // Someone reached a newer epoch than the recorded leader: never
        // promote the old one.
        let d = decide(
            &[
                probe(0, Role::Follower, 3, None),
                probe(1, Role::Idle, 5, None),
            ],
            2,
            &prev,
        );
        assert!(d.steps.is_empty());
        assert!(d.waiting.unwrap().contains("epoch 5"));
    }

    #[test]
    fn two_leaders_at_one_epoch_are_not_touched() {
        let d = decide(
            &[
                probe(0, Role::Leader, 2, None),
                probe(1, Role::Leader, 2, None),
            ],
            2,
            &Previous::default(),
        );
        assert!(d.steps.is_empty());
        assert!(d.waiting.unwrap().contains("claim leadership"));
    }

    #[test]
    fn scale_down_never_removes_the_leader() {
        let probes: Vec<Probe> = (0..5)
            .map(|i| {
                if i == 4 {
                    probe(4, Role::Leader, 2, None)
                } else {
                    probe(i, Role::Follower, 2, Some(4))
                }
            })
            .collect();
        let d = decide(&probes, 3, &Previous::default());
        assert_eq!(d.statefulset_replicas, 5);
        assert!(d.scale_down_blocked.unwrap().contains("member 4"));
        let probes: Vec<Probe> = (0..5)
            .map(|i| {
                if i == 0 {
                    probe(0, Role::Leader, 2, None)
                } else {
                    probe(i, Role::Follower, 2, Some(0))
                }
            })
            .collect();
        let d = decide(&probes, 3, &Previous::default());
        assert_eq!(d.statefulset_replicas, 3);
        assert!(d.scale_down_blocked.is_none());
    }
}
