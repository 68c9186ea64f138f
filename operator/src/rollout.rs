//! Rolling updates, followers first, planned purely. The StatefulSet uses
//! the `OnDelete` strategy, so no pod changes until the operator deletes
//! it; [`plan`] says which one next:
//! - nothing while a failover runs, or while any member is missing (its
//!   pod deleted and not yet recreated by the StatefulSet), not ready,
//!   being deleted, or lagging more than `max_lag_bytes` (the previous step
//!   has not settled);
//! - outdated followers one at a time, highest ordinal first;
//! - then a planned switchover to the most caught-up updated follower;
//! - then the old leader, by then a follower like the others.
//!
//! A member whose pod runs an older revision but carries the same restart
//! hash as the update revision (`rstore.dev/restart-hash`, see
//! [`crate::build::pod::restart_hash`]) differs only in replication
//! settings, which the driver applies through the admin API: it is not
//! replaced, and the leader is not switched over for it. A pod without the
//! annotation (created by an operator that did not set it) is replaced
//! whenever its revision differs, as before.
//!
//! A step that waits on the same member for longer than `stuck_after_ms`
//! is reported as stuck (Degraded): the update stops there instead of
//! tearing down the next member.

use crate::brain::RoleLabel;

/// One member as the rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutMember {
    pub name: String,
    pub ordinal: i32,
    /// The pod's `controller-revision-hash`.
    pub revision: Option<String>,
    /// The pod's `rstore.dev/restart-hash` annotation.
    pub restart_hash: Option<String>,
    /// Pod ready and answering in its role.
    pub ready: bool,
    pub being_deleted: bool,
    /// Bytes behind the leader (followers).
    pub lag_bytes: Option<u64>,
    pub label: Option<RoleLabel>,
}

/// Everything [`plan`] looks at.
#[derive(Debug, Clone)]
pub struct RolloutInput {
    /// The StatefulSet's `status.updateRevision`.
    pub update_revision: Option<String>,
    /// The restart hash of the StatefulSet's pod template.
    pub restart_hash: Option<String>,
    /// The StatefulSet's `spec.replicas`: every ordinal below it should
    /// have a member; one without (a deleted pod the StatefulSet has not
    /// recreated yet) is as unsettled as a member that is not ready.
    pub replicas: i32,
    pub members: Vec<RolloutMember>,
    pub leader: Option<String>,
    pub failover_in_progress: bool,
    /// A follower further behind than this is not caught up.
    pub max_lag_bytes: u64,
    pub now_ms: u64,
    /// The member the last plan waited on, and since when.
    pub waiting_on: Option<(String, u64)>,
    pub stuck_after_ms: u64,
}

/// The next rollout step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutStep {
    /// Every member runs the update revision, or differs from it only in
    /// settings applied without a restart (or there is none to reach).
    Done,
    /// Delete this pod so its StatefulSet recreates it updated.
    Delete(String),
    /// Hand leadership to this updated follower first.
    Switchover(String),
    /// Wait for `member` (the reason says why).
    Wait { member: String, reason: String },
    /// Waited on `member` longer than allowed: stop and say so.
    Stuck { member: String, reason: String },
}

/// The next step; see the module documentation.
pub fn plan(input: &RolloutInput) -> RolloutStep {
    let Some(target) = input.update_revision.as_deref() else {
        return RolloutStep::Done;
    };
    let outdated = |m: &RolloutMember| {
        m.revision.as_deref() != Some(target)
            && (m.restart_hash.is_none() || m.restart_hash != input.restart_hash)
    };
    if !input.members.iter().any(outdated) {
        return RolloutStep::Done;
    }
    let leader = input.leader.as_deref();
    let missing = (0..input.replicas)
        .find(|o| !input.members.iter().any(|m| m.ordinal == *o))
        .map(|o| member_name(input, o));
    let unsettled = missing
        .map(|m| (m, "does not exist yet (its pod is being recreated)"))
        .or_else(|| {
            input.members.iter().find_map(|m| {
                let why = if m.being_deleted {
                    "is being replaced"
                } else if !m.ready {
                    "is not ready"
                } else if Some(m.name.as_str()) != leader
                    && m.lag_bytes.is_some_and(|l| l > input.max_lag_bytes)
                {
                    "has not caught up"
                } else {
                    return None;
                };
                Some((m.name.clone(), why))
            })
        });
    if input.failover_in_progress {
        return wait(
            input,
            leader.unwrap_or("the leader"),
            "a failover is in progress",
        );
    }
    if let Some((member, why)) = unsettled {
        return wait(input, &member, why);
    }
    let mut followers: Vec<&RolloutMember> = input
        .members
        .iter()
        .filter(|m| Some(m.name.as_str()) != leader)
        .collect();
    followers.sort_by_key(|m| std::cmp::Reverse(m.ordinal));
    if let Some(next) = followers.iter().find(|m| outdated(m)) {
        return RolloutStep::Delete(next.name.clone());
    }
    // Only the leader is left: move leadership to an updated follower.
    let best = followers
        .iter()
        .filter(|m| m.label == Some(RoleLabel::Follower))
        .min_by_key(|m| (m.lag_bytes.unwrap_or(u64::MAX), m.ordinal));
    match (leader, best) {
        (Some(_), Some(to)) => RolloutStep::Switchover(to.name.clone()),
        (Some(l), None) => wait(input, l, "has no updated follower to hand over to"),
        (None, _) => wait(input, "the leader", "there is no leader"),
    }
}

/// The pod name of `ordinal`, from the other members' names
/// (`<store>-<ordinal>`).
fn member_name(input: &RolloutInput, ordinal: i32) -> String {
    input
        .members
        .iter()
        .find_map(|m| m.name.rsplit_once('-').map(|(base, _)| base))
        .map_or_else(
            || format!("member {ordinal}"),
            |base| format!("{base}-{ordinal}"),
        )
}

fn wait(input: &RolloutInput, member: &str, why: &str) -> RolloutStep {
    let reason = format!("rolling update waits: {member} {why}");
    match &input.waiting_on {
        Some((same, since))
            if same == member && input.now_ms.saturating_sub(*since) >= input.stuck_after_ms =>
        {
            RolloutStep::Stuck {
                member: member.to_string(),
                reason: format!(
                    "rolling update stuck: {member} {why} for {} s; fix it, or roll back the change",
                    input.now_ms.saturating_sub(*since) / 1000
                ),
            }
        }
        _ => RolloutStep::Wait {
            member: member.to_string(),
            reason,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn member(i: i32, revision: &str) -> RolloutMember {
        RolloutMember {
            name: format!("rs-{i}"),
            ordinal: i,
            revision: Some(revision.to_string()),
            restart_hash: None,
            ready: true,
            being_deleted: false,
            lag_bytes: Some(0),
            label: Some(if i == 0 {
                RoleLabel::Leader
            } else {
                RoleLabel::Follower
            }),
        }
    }

    fn input(members: Vec<RolloutMember>) -> RolloutInput {
        RolloutInput {
            update_revision: Some("new".into()),
            restart_hash: None,
            replicas: i32::try_from(members.len()).unwrap(),
            members,
            leader: Some("rs-0".into()),
            failover_in_progress: false,
            max_lag_bytes: 1 << 20,
            now_ms: 1_000_000,
            waiting_on: None,
            stuck_after_ms: 600_000,
        }
    }

    #[test]
    fn an_up_to_date_cluster_is_done() {
        let i = input((0..3).map(|i| member(i, "new")).collect());
        assert_eq!(plan(&i), RolloutStep::Done);
        let mut none = i.clone();
        none.update_revision = None;
        assert_eq!(plan(&none), RolloutStep::Done);
    }

    #[test]
    fn followers_go_first_highest_ordinal_first_then_a_switchover_then_the_old_leader() {
        let mut members: Vec<RolloutMember> = (0..3).map(|i| member(i, "old")).collect();
        assert_eq!(
            plan(&input(members.clone())),
            RolloutStep::Delete("rs-2".into())
        );
        members[2].revision = Some("new".into());
        assert_eq!(
            plan(&input(members.clone())),
            RolloutStep::Delete("rs-1".into())
        );
        members[1].revision = Some("new".into());
        members[1].lag_bytes = Some(10);
        assert_eq!(
            plan(&input(members.clone())),
            RolloutStep::Switchover("rs-2".into()),
            "the most caught-up updated follower"
        );
        // After the switchover rs-2 leads and rs-0 is an outdated follower.
        let mut after = input(members.clone());
        after.leader = Some("rs-2".into());
        after.members[0].label = Some(RoleLabel::Follower);
        after.members[2].label = Some(RoleLabel::Leader);
        assert_eq!(plan(&after), RolloutStep::Delete("rs-0".into()));
    }

    #[test]
    fn nothing_moves_while_a_member_is_not_ready_lagging_replaced_or_a_failover_runs() {
        let members: Vec<RolloutMember> = (0..3).map(|i| member(i, "old")).collect();
        let mut i = input(members.clone());
        i.members[2].ready = false;
        assert!(matches!(plan(&i), RolloutStep::Wait { member, .. } if member == "rs-2"));
        let mut i = input(members.clone());
        i.members[1].lag_bytes = Some(2 << 20);
        assert!(
            matches!(plan(&i), RolloutStep::Wait { member, reason } if member == "rs-1" && reason.contains("caught up"))
        );
        let mut i = input(members.clone());
        i.members[1].being_deleted = true;
        assert!(matches!(plan(&i), RolloutStep::Wait { .. }));
        let mut i = input(members);
        i.failover_in_progress = true;
        assert!(
            matches!(plan(&i), RolloutStep::Wait { reason, .. } if reason.contains("failover"))
        );
    }

    #[test]
    fn nothing_moves_while_a_replaced_member_has_no_pod_yet() {
        // rs-2 was deleted and the StatefulSet has not recreated it: the
        // member list is short, and rs-1 must not go down too.
        let members: Vec<RolloutMember> = (0..2).map(|i| member(i, "old")).collect();
        let mut i = input(members);
        i.replicas = 3;
        assert!(
            matches!(plan(&i), RolloutStep::Wait { member, reason } if member == "rs-2" && reason.contains("does not exist")),
            "{:?}",
            plan(&i)
        );
    }

    #[test]
    fn a_member_that_never_becomes_ready_stops_the_update_as_stuck() {
        let mut members: Vec<RolloutMember> = (0..3).map(|i| member(i, "old")).collect();
        members[2].revision = Some("new".into());
        members[2].ready = false; // the new version does not start
        let mut i = input(members);
        i.waiting_on = Some(("rs-2".into(), i.now_ms - 700_000));
        match plan(&i) {
            RolloutStep::Stuck { member, reason } => {
                assert_eq!(member, "rs-2");
                assert!(reason.contains("stuck"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Never a deletion of another member meanwhile.
        i.waiting_on = Some(("rs-2".into(), i.now_ms - 1000));
        assert!(matches!(plan(&i), RolloutStep::Wait { .. }));
    }

    #[test]
    fn the_leader_waits_when_no_follower_is_updated_and_labelled() {
        let mut members: Vec<RolloutMember> = (0..2).map(|i| member(i, "new")).collect();
        members[0].revision = Some("old".into());
        members[1].label = None;
        assert!(matches!(
            plan(&input(members)),
            RolloutStep::Wait { member, .. } if member == "rs-0"
        ));
    }

    /// A member at `revision` whose pod carries restart hash `hash`.
    fn hashed(i: i32, revision: &str, hash: &str) -> RolloutMember {
        RolloutMember {
            restart_hash: Some(hash.to_string()),
            ..member(i, revision)
        }
    }

    /// The StatefulSet moved to revision "new" with restart hash `hash`.
    fn update_to(hash: &str, members: Vec<RolloutMember>) -> RolloutInput {
        RolloutInput {
            restart_hash: Some(hash.to_string()),
            ..input(members)
        }
    }

    #[test]
    fn a_settings_only_change_restarts_no_pod() {
        let members = (0..3).map(|i| hashed(i, "old", "h1")).collect();
        assert_eq!(plan(&update_to("h1", members)), RolloutStep::Done);
    }

    #[test]
    fn a_settings_only_change_neither_switches_over_nor_waits_on_anyone() {
        // Only the leader runs the old revision: no switchover for it.
        let mut members: Vec<RolloutMember> = (0..3).map(|i| hashed(i, "new", "h1")).collect();
        members[0].revision = Some("old".into());
        assert_eq!(plan(&update_to("h1", members.clone())), RolloutStep::Done);
        // A member that is not ready is no reason to wait: nothing is replaced.
        members[1].ready = false;
        assert_eq!(plan(&update_to("h1", members)), RolloutStep::Done);
    }

    #[test]
    fn an_image_change_still_restarts_followers_first_then_the_leader() {
        let mut members: Vec<RolloutMember> = (0..3).map(|i| hashed(i, "old", "h1")).collect();
        assert_eq!(
            plan(&update_to("h2", members.clone())),
            RolloutStep::Delete("rs-2".into())
        );
        members[2] = hashed(2, "new", "h2");
        assert_eq!(
            plan(&update_to("h2", members.clone())),
            RolloutStep::Delete("rs-1".into())
        );
        members[1] = hashed(1, "new", "h2");
        assert_eq!(
            plan(&update_to("h2", members.clone())),
            RolloutStep::Switchover("rs-1".into())
        );
        let mut after = update_to("h2", members);
        after.leader = Some("rs-1".into());
        after.members[0].label = Some(RoleLabel::Follower);
        after.members[1].label = Some(RoleLabel::Leader);
        assert_eq!(plan(&after), RolloutStep::Delete("rs-0".into()));
    }

    #[test]
    fn a_pod_without_a_restart_hash_is_restarted_as_before() {
        // Pods created before the annotation existed: a changed revision
        // may hide any change, so they are replaced.
        let members = (0..3).map(|i| member(i, "old")).collect();
        assert_eq!(
            plan(&update_to("h1", members)),
            RolloutStep::Delete("rs-2".into())
        );
        // And a StatefulSet without one (an older operator wrote it) does
        // not spare annotated pods either.
        let members = (0..3).map(|i| hashed(i, "old", "h1")).collect();
        assert_eq!(plan(&input(members)), RolloutStep::Delete("rs-2".into()));
    }

    #[test]
    fn settings_changed_during_an_image_rollout_spare_only_the_members_already_on_the_new_image() {
        // rs-2 was replaced for the new image (h2); then only the settings
        // changed (revision "new", still h2): rs-2 stays, rs-1 is next.
        let members = vec![
            hashed(0, "old", "h1"),
            hashed(1, "old", "h1"),
            hashed(2, "mid", "h2"),
        ];
        assert_eq!(
            plan(&update_to("h2", members)),
            RolloutStep::Delete("rs-1".into())
        );
    }
}
