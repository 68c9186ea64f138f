//! The status a reconcile writes: leader, epoch, members, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions::{self, AVAILABLE, DEGRADED, Desired, PROGRESSING};
use crate::coordination::Report;
use crate::crd::ReplicatedStoreStatus;
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

/// Status after a reconcile with coordination `report` (`None`: no member
/// pods yet).
pub fn from_report(
    previous: &ReplicatedStoreStatus,
    desired_replicas: i32,
    existing_pods: usize,
    report: Option<&Report>,
    generation: Option<i64>,
    now: &Time,
) -> ReplicatedStoreStatus {
    let members = report.map(|r| r.members.clone()).unwrap_or_default();
    let ready_replicas =
        i32::try_from(members.iter().filter(|m| m.ready).count()).unwrap_or(i32::MAX);
    let leader = report.and_then(|r| r.decision.leader.clone());
    let epoch = report.map(|r| r.decision.epoch).unwrap_or(0);
    let leader_ready = leader
        .as_ref()
        .is_some_and(|l| members.iter().any(|m| &m.name == l && m.ready));

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

    let waiting = report.and_then(|r| r.decision.waiting.clone());
    let failure = report.and_then(|r| r.first_failure()).map(|d| {
        format!(
            "{:?} failed: {}",
            d.step,
            d.result.as_ref().err().map(String::as_str).unwrap_or("")
        )
    });
    let blocked = report.and_then(|r| r.decision.scale_down_blocked.clone());
    let degraded = if let Some(b) = &blocked {
        Desired::new(DEGRADED, true, "ScaleDownBlocked", b.clone())
    } else if let Some(f) = &failure {
        Desired::new(DEGRADED, true, "MemberError", f.clone())
    } else if let (Some(w), true) = (&waiting, epoch > 0) {
        Desired::new(DEGRADED, true, "NoLeader", w.clone())
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

    let in_sync = existing_pods == usize::try_from(desired_replicas).unwrap_or(0)
        && ready_replicas == desired_replicas
        && leader_ready;
    let progressing = if in_sync {
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
            format!("{ready_replicas} of {desired_replicas} members ready, {existing_pods} pods"),
        )
    };

    let desired = [available, progressing, degraded];
    ReplicatedStoreStatus {
        observed_generation: generation,
        leader,
        epoch: i64::try_from(epoch).unwrap_or(i64::MAX),
        replicas: desired_replicas,
        ready_replicas,
        ready: Some(format!("{ready_replicas}/{desired_replicas}")),
        members,
        conditions: conditions::merge(&previous.conditions, &desired, generation, now),
        last_failover: previous.last_failover.clone(),
    }
}
