//! The status a reconcile writes: leader, epoch, members, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::brain::{self, Plan, Recorded};
use crate::conditions::{self, AVAILABLE, DEGRADED, Desired, PROGRESSING};
use crate::crd::{MemberStatus, ReplicatedStoreStatus};
use crate::rollout::RolloutStep;
use crate::validate::ValidationError;

/// Status for a spec that failed validation: everything observed before is
/// kept, the conditions say why nothing is reconciled.
pub fn invalid(
    previous: &ReplicatedStoreStatus,
    err: &ValidationError,
    generation: Option<i64>,
    now: &Time,
) -> ReplicatedStoreStatus {
    let message = err.to_string();
    let desired = [
        Desired::new(
            AVAILABLE,
            conditions::is_true(&previous.conditions, AVAILABLE),
            "InvalidSpec",
            "spec is invalid; the cluster is left as it was",
        ),
        Desired::new(PROGRESSING, false, "InvalidSpec", message.clone()),
        Desired::new(DEGRADED, true, "InvalidSpec", message),
    ];
    ReplicatedStoreStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous.conditions, &desired, generation, now),
        ..previous.clone()
    }
}

/// Status after a pass of the failover brain: what it recorded (leader,
/// epoch, failover in progress, last failover), the members as probed,
/// and conditions.
pub fn from_plan(
    previous: &ReplicatedStoreStatus,
    desired_replicas: i32,
    plan: &Plan,
    members: &[MemberStatus],
    rollout: Option<&RolloutStep>,
    generation: Option<i64>,
    now: &Time,
) -> ReplicatedStoreStatus {
    let ready_replicas =
        i32::try_from(members.iter().filter(|m| m.ready).count()).unwrap_or(i32::MAX);
    let record = &plan.record;
    let leader = record.leader.clone();
    let leader_ready = leader.as_ref().is_some_and(|l| {
        members
            .iter()
            .any(|m| &m.name == l && m.ready && m.role == "leader")
    });

    let available = match (&leader, leader_ready) {
        (Some(l), true) => Desired::new(
            AVAILABLE,
            true,
            "LeaderReady",
            format!("{l} accepts writes"),
        ),
        (Some(l), false) => Desired::new(
            AVAILABLE,
            false,
            "LeaderNotReady",
            format!("leader {l} is not ready"),
        ),
        (None, _) => Desired::new(
            AVAILABLE,
            false,
            "NoLeader",
            "no member holds the leader role",
        ),
    };

    let leader_ordinal = leader
        .as_deref()
        .and_then(|l| l.rsplit_once('-'))
        .and_then(|(_, o)| o.parse().ok());
    let (_, scale_down_blocked) = brain::statefulset_replicas(desired_replicas, leader_ordinal);
    let waiting = plan.waiting.clone();
    let degraded = if let Some(blocked) = record.failover.as_ref().and_then(|f| f.blocked.clone()) {
        Desired::new(DEGRADED, true, "FailoverBlocked", blocked)
    } else if let Some(fo) = &record.failover {
        Desired::new(
            DEGRADED,
            true,
            "FailoverInProgress",
            format!(
                "{} in phase {:?} to epoch {}",
                fo.reason.as_str(),
                fo.phase,
                fo.epoch
            ),
        )
    } else if let Some(RolloutStep::Stuck { reason, .. }) = rollout {
        Desired::new(DEGRADED, true, "RolloutStuck", reason.clone())
    } else if let Some(b) = scale_down_blocked {
        Desired::new(DEGRADED, true, "ScaleDownBlocked", b)
    } else if let (Some(w), true) = (&waiting, record.epoch > 0) {
        Desired::new(DEGRADED, true, "Waiting", w.clone())
    } else if ready_replicas < desired_replicas && leader.is_some() {
        Desired::new(
            DEGRADED,
            true,
            "MembersNotReady",
            format!("{ready_replicas} of {desired_replicas} members ready"),
        )
    } else {
        Desired::new(DEGRADED, false, "AsExpected", "")
    };

    let existing = members.len();
    let in_sync = existing == usize::try_from(desired_replicas).unwrap_or(0)
        && ready_replicas == desired_replicas
        && leader_ready
        && record.failover.is_none();
    let rolling = match rollout {
        Some(RolloutStep::Delete(pod)) => Some(format!("rolling update: replacing {pod}")),
        Some(RolloutStep::Switchover(to)) => {
            Some(format!("rolling update: switching over to {to}"))
        }
        Some(RolloutStep::Wait { reason, .. } | RolloutStep::Stuck { reason, .. }) => {
            Some(reason.clone())
        }
        Some(RolloutStep::Done) | None => None,
    };
    let progressing = if let Some(message) = rolling {
        Desired::new(PROGRESSING, true, "RollingUpdate", message)
    } else if in_sync {
        Desired::new(
            PROGRESSING,
            false,
            "UpToDate",
            format!("{desired_replicas} members ready"),
        )
    } else if let Some(w) = &waiting {
        Desired::new(PROGRESSING, true, "Waiting", w.clone())
    } else {
        Desired::new(
            PROGRESSING,
            true,
            "Reconciling",
            format!("{ready_replicas} of {desired_replicas} members ready, {existing} pods"),
        )
    };

    let desired = [available, progressing, degraded];
    ReplicatedStoreStatus {
        observed_generation: generation,
        leader,
        epoch: i64::try_from(record.epoch).unwrap_or(i64::MAX),
        replicas: desired_replicas,
        ready_replicas,
        ready: Some(format!("{ready_replicas}/{desired_replicas}")),
        members: members.to_vec(),
        conditions: conditions::merge(&previous.conditions, &desired, generation, now),
        failover: record.failover.clone(),
        last_failover: record.last_failover.clone(),
    }
}

/// What the brain recorded, read back from a status.
pub fn recorded(status: &ReplicatedStoreStatus) -> Recorded {
    Recorded {
        leader: status.leader.clone(),
        epoch: u64::try_from(status.epoch).unwrap_or(0),
        failover: status.failover.clone(),
        last_failover: status.last_failover.clone(),
    }
}
