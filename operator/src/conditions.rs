//! Status conditions, merged with the previous ones so that
//! `lastTransitionTime` only moves when a condition's status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types the operator maintains.
pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// A condition as computed by this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// The new condition list: `desired` in order, each keeping the previous
/// `lastTransitionTime` when its status did not change.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition `type_` in `conditions`, if set and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_survives_unchanged_status() {
        let first = merge(
            &[],
            &[Desired::new(AVAILABLE, false, "NoLeader", "x")],
            Some(1),
            &time(100),
        );
        assert_eq!(first[0].last_transition_time, time(100));
        let same = merge(
            &first,
            &[Desired::new(AVAILABLE, false, "Other", "y")],
            Some(2),
            &time(200),
        );
        assert_eq!(same[0].last_transition_time, time(100));
        assert_eq!(same[0].reason, "Other");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Desired::new(AVAILABLE, true, "LeaderReady", "")],
            Some(2),
            &time(300),
        );
        assert_eq!(flipped[0].last_transition_time, time(300));
        assert_eq!(flipped[0].status, "True");
        assert!(is_true(&flipped, AVAILABLE));
    }
}
