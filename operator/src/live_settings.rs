//! Replication settings applied live: the spec's `replication` block as
//! the node's admin API takes it (`POST /config`), which members differ
//! from it, and how the failover brain should count acknowledgements while
//! a change is on its way. Pure; the Kubernetes driver does the calls.
//!
//! These settings are left out of the pod template's restart hash
//! ([`crate::build::pod::restart_hash`]), so changing them restarts no pod:
//! the driver pushes them to every member whose `/status` reports other
//! settings, and the node persists them across restarts
//! (`settings.auto.json`, which overrides its flags). A node too old to
//! report its settings is left alone.

use rstore_node::admin::{
    AckLevel, OnSyncTimeout, ReplicationMode, ReplicationSettings, StatusResponse,
};

use crate::crd::{self, ReplicationSpec};

/// The node's settings for `spec`.
pub fn desired(spec: &ReplicationSpec) -> ReplicationSettings {
    ReplicationSettings {
        mode: mode(spec.mode),
        sync_replicas: usize::try_from(spec.sync_replicas).unwrap_or(1),
        sync_timeout_ms: u64::try_from(spec.sync_timeout_ms).unwrap_or(1),
        on_sync_timeout: match spec.on_sync_timeout {
            crd::OnSyncTimeout::Block => OnSyncTimeout::Block,
            crd::OnSyncTimeout::Degrade => OnSyncTimeout::Degrade,
        },
        ack_level: match spec.ack_level {
            crd::AckLevel::Received => AckLevel::Received,
            crd::AckLevel::Durable => AckLevel::Durable,
            crd::AckLevel::Applied => AckLevel::Applied,
        },
    }
}

/// The node's spelling of a CRD replication mode.
pub fn mode(mode: crd::ReplicationMode) -> ReplicationMode {
    match mode {
        crd::ReplicationMode::Async => ReplicationMode::Async,
        crd::ReplicationMode::SemiSync => ReplicationMode::SemiSync,
        crd::ReplicationMode::Sync => ReplicationMode::Sync,
    }
}

/// One line for events and logs: `semi-sync (2 replicas, 1000 ms, block, received)`.
pub fn describe(s: &ReplicationSettings) -> String {
    let mode = match s.mode {
        ReplicationMode::Async => "async",
        ReplicationMode::SemiSync => "semi-sync",
        ReplicationMode::Sync => "sync",
    };
    let on_timeout = match s.on_sync_timeout {
        OnSyncTimeout::Block => "block",
        OnSyncTimeout::Degrade => "degrade",
    };
    let ack = match s.ack_level {
        AckLevel::Received => "received",
        AckLevel::Durable => "durable",
        AckLevel::Applied => "applied",
    };
    format!(
        "{mode} ({} sync replicas, {} ms timeout, {on_timeout}, ack {ack})",
        s.sync_replicas, s.sync_timeout_ms
    )
}

/// A member whose settings differ from the desired ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outdated {
    /// Index into the members (and probes).
    pub index: usize,
    pub name: String,
    /// What it reports now.
    pub current: ReplicationSettings,
}

/// Members (by name, with their probes) whose reported settings differ
/// from `desired`, the leader first: it is the one whose settings decide
/// acknowledgements. A member that cannot be reached, or does not report
/// its settings (a node older than `POST /config`), is not listed.
pub fn outdated(
    names: &[&str],
    probes: &[Result<StatusResponse, String>],
    desired: &ReplicationSettings,
    leader: Option<&str>,
) -> Vec<Outdated> {
    let mut out: Vec<Outdated> = names
        .iter()
        .zip(probes)
        .enumerate()
        .filter_map(|(index, (name, probe))| {
            let current = probe.as_ref().ok()?.settings?;
            (current != *desired).then(|| Outdated {
                index,
                name: (*name).to_string(),
                current,
            })
        })
        .collect();
    out.sort_by_key(|o| Some(o.name.as_str()) != leader);
    out
}

/// Acknowledgements a failover must account for while settings change:
/// the mode and sync replicas of the brain's safety rule (DESIGN.md,
/// "safety rule") come from what the leader last *reported*, not from the
/// spec, because its acknowledgements were given under those. When it
/// reported different settings recently (`previous`), the stricter of the
/// two counts, since writes acknowledged just before the change may not
/// yet meet the new rule: sync needs every follower fenced, then
/// semi-sync with the fewest sync replicas, then async.
pub fn for_failover(
    spec: (ReplicationMode, u32),
    leader_reported: Option<&ReplicationSettings>,
    previous: Option<&ReplicationSettings>,
) -> (ReplicationMode, u32) {
    let as_pair =
        |s: &ReplicationSettings| (s.mode, u32::try_from(s.sync_replicas).unwrap_or(u32::MAX));
    let Some(now) = leader_reported.map(as_pair) else {
        return spec;
    };
    match previous.map(as_pair) {
        Some(before) if strictness(before) > strictness(now) => before,
        _ => now,
    }
}

/// Higher: more followers must be fenced before a promotion.
fn strictness((mode, sync_replicas): (ReplicationMode, u32)) -> (u8, std::cmp::Reverse<u32>) {
    match mode {
        ReplicationMode::Async => (0, std::cmp::Reverse(0)),
        ReplicationMode::SemiSync => (1, std::cmp::Reverse(sync_replicas)),
        ReplicationMode::Sync => (2, std::cmp::Reverse(0)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(mode: ReplicationMode, sync_replicas: usize) -> ReplicationSettings {
        ReplicationSettings {
            mode,
            sync_replicas,
            sync_timeout_ms: 1000,
            on_sync_timeout: OnSyncTimeout::Block,
            ack_level: AckLevel::Received,
        }
    }

    fn reporting(name: &str, s: Option<ReplicationSettings>) -> Result<StatusResponse, String> {
        let mut status: StatusResponse = serde_json::from_value(serde_json::json!({
            "node_id": name, "role": "follower", "epoch": 1, "fenced": false,
            "offsets": {"appended": 0, "durable": 0, "applied": 0, "committed": 0},
            "leader": null, "followers": [], "mode": "semi-sync", "degraded": false,
            "link": null, "digest": null, "keys": 0
        }))
        .unwrap();
        status.settings = s;
        Ok(status)
    }

    #[test]
    fn the_spec_maps_to_the_nodes_settings_field_by_field() {
        let spec: ReplicationSpec = serde_json::from_value(serde_json::json!({
            "mode": "sync", "syncReplicas": 2, "syncTimeoutMs": 250,
            "onSyncTimeout": "degrade", "ackLevel": "applied"
        }))
        .unwrap();
        assert_eq!(
            desired(&spec),
            ReplicationSettings {
                mode: ReplicationMode::Sync,
                sync_replicas: 2,
                sync_timeout_ms: 250,
                on_sync_timeout: OnSyncTimeout::Degrade,
                ack_level: AckLevel::Applied,
            }
        );
        assert_eq!(
            describe(&desired(&spec)),
            "sync (2 sync replicas, 250 ms timeout, degrade, ack applied)"
        );
    }

    #[test]
    fn members_with_other_settings_are_outdated_leader_first() {
        let want = settings(ReplicationMode::Sync, 1);
        let old = settings(ReplicationMode::SemiSync, 1);
        let probes = vec![
            reporting("rs-0", Some(old)),
            reporting("rs-1", Some(want)),
            reporting("rs-2", Some(old)),
        ];
        let out = outdated(&["rs-0", "rs-1", "rs-2"], &probes, &want, Some("rs-2"));
        let names: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["rs-2", "rs-0"]);
        assert_eq!(out[0].index, 2);
        assert_eq!(out[0].current, old);
    }

    #[test]
    fn unreachable_members_and_nodes_that_report_no_settings_are_left_alone() {
        let want = settings(ReplicationMode::Sync, 1);
        let probes = vec![reporting("rs-0", None), Err("connection refused".into())];
        assert!(outdated(&["rs-0", "rs-1"], &probes, &want, Some("rs-0")).is_empty());
    }

    #[test]
    fn a_failover_counts_acks_as_the_leader_gave_them_not_as_the_spec_wants() {
        let spec = (ReplicationMode::SemiSync, 2);
        // Nothing reported: the spec.
        assert_eq!(for_failover(spec, None, None), spec);
        // The leader still acknowledges with one follower: a failover must
        // fence as for one, though the spec already says two.
        let leader = settings(ReplicationMode::SemiSync, 1);
        assert_eq!(
            for_failover(spec, Some(&leader), None),
            (ReplicationMode::SemiSync, 1)
        );
        // Just moved from 1 to 2: writes acknowledged by one follower
        // moments ago still count.
        let now = settings(ReplicationMode::SemiSync, 2);
        assert_eq!(
            for_failover(spec, Some(&now), Some(&leader)),
            (ReplicationMode::SemiSync, 1)
        );
        // Moved from 2 to sync: sync is the stricter rule now.
        assert_eq!(
            for_failover(
                (ReplicationMode::Sync, 2),
                Some(&settings(ReplicationMode::Sync, 2)),
                Some(&now)
            ),
            (ReplicationMode::Sync, 2)
        );
        // From sync to async: writes acknowledged by every follower moments
        // ago are still protected.
        assert_eq!(
            for_failover(
                (ReplicationMode::Async, 1),
                Some(&settings(ReplicationMode::Async, 1)),
                Some(&settings(ReplicationMode::Sync, 1))
            ),
            (ReplicationMode::Sync, 1)
        );
    }
}
