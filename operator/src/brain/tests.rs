//! The brain's rules, one sentence each. Most tests drive a small simulated
//! cluster ([`Sim`]) whose nodes follow the admin API's epoch rules, feeding
//! every pass's record into the next, as the drivers do.

#![allow(clippy::unwrap_used)]

use super::*;
use rstore_node::admin::{Offsets, StatusResponse};

/// One simulated node with the admin API's epoch semantics.
#[derive(Debug, Clone)]
struct SimNode {
    name: String,
    ordinal: i32,
    role: Role,
    epoch: u64,
    fenced: bool,
    leader: Option<String>,
    log_epoch: u64,
    end: u64,
    committed: u64,
    presence: Presence,
    answering: bool,
    failures: u32,
    label: Option<RoleLabel>,
    snapshot: bool,
    last_seen: Option<LastSeen>,
    /// Answers `/status` but refuses `/follow` (or `/promote`).
    refuse_follow: bool,
    refuse_promote: bool,
}

impl SimNode {
    fn addr(&self) -> String {
        format!("{}:7379", self.name)
    }

    /// Answers (a pod being deleted runs until its process exits).
    fn up(&self) -> bool {
        self.presence != Presence::Gone && self.answering
    }

    fn status(&self) -> StatusResponse {
        StatusResponse {
            node_id: self.name.clone(),
            role: self.role,
            epoch: self.epoch,
            fenced: self.fenced,
            offsets: Offsets {
                appended: self.end,
                durable: self.end,
                applied: self.end,
                committed: self.committed,
            },
            leader: self.leader.clone(),
            followers: Vec::new(),
            mode: ReplicationMode::SemiSync,
            degraded: false,
            settings: None,
            link: None,
            snapshot_progress: self.snapshot.then_some((1, 2)),
            digest: None,
            keys: 0,
            last_log_epoch: self.log_epoch,
        }
    }
}

/// A simulated cluster plus what the brain recorded.
#[derive(Debug, Clone)]
struct Sim {
    nodes: Vec<SimNode>,
    recorded: Recorded,
    settings: Settings,
    now: u64,
    switchover_to: Option<String>,
    log: Vec<String>,
}

impl Sim {
    /// A healthy cluster of `n` at epoch `epoch`, `rs-0` leading, labels in place.
    fn healthy(n: i32, epoch: u64) -> Sim {
        let nodes = (0..n)
            .map(|i| SimNode {
                name: format!("rs-{i}"),
                ordinal: i,
                role: if i == 0 { Role::Leader } else { Role::Follower },
                epoch,
                fenced: false,
                leader: (i != 0).then(|| "rs-0:7379".to_string()),
                log_epoch: epoch,
                end: 1000,
                committed: 1000,
                presence: Presence::Running,
                answering: true,
                failures: 0,
                label: Some(if i == 0 {
                    RoleLabel::Leader
                } else {
                    RoleLabel::Follower
                }),
                snapshot: false,
                last_seen: None,
                refuse_follow: false,
                refuse_promote: false,
            })
            .collect();
        let mut sim = Sim {
            nodes,
            recorded: Recorded {
                leader: Some("rs-0".into()),
                epoch,
                ..Recorded::default()
            },
            settings: Settings {
                replicas: u32::try_from(n).unwrap(),
                ..Settings::default()
            },
            now: 1_000_000,
            switchover_to: None,
            log: Vec::new(),
        };
        sim.probe();
        sim
    }

    /// `n` idle members that never had an epoch.
    fn fresh(n: i32) -> Sim {
        let mut sim = Sim::healthy(n, 0);
        for node in &mut sim.nodes {
            node.role = Role::Idle;
            node.leader = None;
            node.label = None;
            node.end = 0;
            node.committed = 0;
        }
        sim.recorded = Recorded::default();
        sim
    }

    fn node(&mut self, name: &str) -> &mut SimNode {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// One probe round: failures count up, last seen is kept.
    fn probe(&mut self) {
        for n in &mut self.nodes {
            if n.up() {
                n.failures = 0;
                n.last_seen = Some(LastSeen {
                    epoch: n.epoch,
                    committed: n.committed,
                    appended: n.end,
                });
            } else {
                n.failures += 1;
            }
        }
    }

    fn observe(&self) -> Observation {
        Observation {
            now_ms: self.now,
            settings: self.settings.clone(),
            members: self
                .nodes
                .iter()
                .map(|n| MemberView {
                    name: n.name.clone(),
                    ordinal: n.ordinal,
                    repl_addr: n.addr(),
                    presence: n.presence,
                    probe: if n.up() {
                        Ok(n.status())
                    } else {
                        Err("connection refused".into())
                    },
                    failures: n.failures,
                    failing_since_ms: (n.failures > 0)
                        .then(|| self.now - u64::from(n.failures) * 500),
                    last_seen: n.last_seen,
                    label: n.label,
                })
                .collect(),
            recorded: self.recorded.clone(),
            switchover_to: self.switchover_to.clone(),
        }
    }

    /// Take one step as a node would; `Err` when the node refuses.
    fn apply(&mut self, step: &Step) -> Result<(), String> {
        self.now += 3;
        self.log.push(format!("{step:?}"));
        let leader_pos = |sim: &Sim, addr: &str| {
            sim.nodes
                .iter()
                .find(|n| n.addr() == addr && n.up())
                .map(|n| (n.log_epoch, n.end))
        };
        match step {
            Step::Label { member, role } => {
                self.node(member).label = *role;
                Ok(())
            }
            Step::Fence { member, epoch } => {
                let n = self.node(member);
                if !n.up() || *epoch < n.epoch {
                    return Err(format!("fence {member} refused"));
                }
                n.epoch = *epoch;
                n.fenced = true;
                Ok(())
            }
            Step::Promote { member, epoch } => {
                let n = self.node(member);
                if !n.up() || n.refuse_promote || *epoch < n.epoch || *epoch <= n.log_epoch {
                    return Err(format!("promote {member} refused"));
                }
                n.role = Role::Leader;
                n.epoch = *epoch;
                n.log_epoch = *epoch;
                n.fenced = false;
                n.leader = None;
                n.committed = n.end;
                Ok(())
            }
            Step::Follow {
                member,
                leader_addr,
                epoch,
                ..
            } => {
                let pos = leader_pos(self, leader_addr);
                let n = self.node(member);
                if !n.up() || n.refuse_follow || *epoch < n.epoch {
                    return Err(format!("follow {member} refused"));
                }
                n.role = Role::Follower;
                n.epoch = *epoch;
                n.fenced = false;
                n.leader = Some(leader_addr.clone());
                // Truncate the diverged tail and catch up at once.
                if let Some((log_epoch, end)) = pos {
                    n.log_epoch = log_epoch;
                    n.end = end;
                    n.committed = end;
                }
                Ok(())
            }
        }
    }

    /// One driver pass: decide, record, act, re-decide, until quiet.
    fn pass(&mut self) -> Vec<Plan> {
        let mut plans = Vec::new();
        for _ in 0..20 {
            let plan = decide(&self.observe());
            self.recorded = plan.record.clone();
            let steps = plan.steps.clone();
            plans.push(plan);
            if steps.is_empty() {
                break;
            }
            for step in &steps {
                let _ = self.apply(step);
            }
        }
        plans
    }

    /// Passes on a 500 ms probe timer until nothing is left to do.
    fn settle(&mut self) -> Vec<Plan> {
        let mut plans = Vec::new();
        for _ in 0..40 {
            self.now += 500;
            self.probe();
            let batch = self.pass();
            let quiet =
                batch.len() == 1 && batch[0].steps.is_empty() && batch[0].record.failover.is_none();
            plans.extend(batch);
            if quiet {
                break;
            }
        }
        plans
    }

    fn leaders(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.up() && n.role == Role::Leader && !n.fenced)
            .map(|n| n.name.clone())
            .collect()
    }

    fn labelled(&self, role: RoleLabel) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.label == Some(role))
            .map(|n| n.name.clone())
            .collect()
    }

    fn kill(&mut self, name: &str) {
        let n = self.node(name);
        n.presence = Presence::Gone;
        n.answering = false;
    }

    /// The process comes back; a former leader restarts idle (never
    /// self-promotes), keeping its epoch and log.
    fn restart(&mut self, name: &str) {
        let n = self.node(name);
        n.presence = Presence::Running;
        n.answering = true;
        n.fenced = false;
        if n.role == Role::Leader {
            n.role = Role::Idle;
        }
    }
}

fn events(plans: &[Plan]) -> Vec<EventReason> {
    plans
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.reason))
        .collect()
}

fn completed(plans: &[Plan]) -> Option<FailoverRecord> {
    plans.iter().find_map(|p| p.completed.clone())
}

fn steps(plans: &[Plan]) -> Vec<Step> {
    plans.iter().flat_map(|p| p.steps.clone()).collect()
}

// ---------------------------------------------------------------- bootstrap

#[test]
fn a_fresh_cluster_promotes_the_lowest_ordinal_at_epoch_1_and_the_others_follow() {
    let mut sim = Sim::fresh(3);
    let plans = sim.settle();
    let all = steps(&plans);
    assert_eq!(
        all[0],
        Step::Promote {
            member: "rs-0".into(),
            epoch: 1
        }
    );
    assert_eq!(sim.leaders(), ["rs-0"]);
    assert_eq!(sim.recorded.leader.as_deref(), Some("rs-0"));
    assert_eq!(sim.recorded.epoch, 1);
    assert_eq!(sim.labelled(RoleLabel::Leader), ["rs-0"]);
    assert_eq!(sim.labelled(RoleLabel::Follower), ["rs-1", "rs-2"]);
    assert!(completed(&plans).is_none(), "bootstrap is not a failover");
}

#[test]
fn bootstrap_waits_until_every_member_answers() {
    let mut sim = Sim::fresh(3);
    sim.node("rs-2").answering = false;
    let plan = decide(&sim.observe());
    assert!(plan.steps.is_empty());
    assert!(plan.waiting.unwrap().contains("rs-2"));
}

#[test]
fn bootstrap_refuses_a_member_that_is_not_idle_at_epoch_0() {
    let mut sim = Sim::fresh(2);
    sim.node("rs-1").role = Role::Follower;
    let plan = decide(&sim.observe());
    assert!(plan.steps.is_empty());
    assert!(plan.waiting.unwrap().contains("not idle"));
}

// ---------------------------------------------------------------- steady state

#[test]
fn a_healthy_cluster_needs_nothing() {
    let mut sim = Sim::healthy(3, 4);
    let plans = sim.settle();
    assert_eq!(plans.len(), 1);
    assert!(plans[0].steps.is_empty() && plans[0].events.is_empty());
    assert_eq!(plans[0].record, sim.recorded);
}

#[test]
fn new_and_stray_members_are_pointed_at_the_leader_and_then_labelled() {
    let mut sim = Sim::healthy(4, 2);
    sim.node("rs-2").epoch = 1; // an old epoch
    sim.node("rs-3").role = Role::Idle; // a scale-up
    sim.node("rs-3").leader = None;
    sim.node("rs-3").label = None;
    let plan = decide(&sim.observe());
    let follows: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Follow { .. }))
        .map(Step::member)
        .collect();
    assert_eq!(follows, ["rs-2", "rs-3"]);
    sim.settle();
    assert_eq!(sim.labelled(RoleLabel::Follower), ["rs-1", "rs-2", "rs-3"]);
}

#[test]
fn a_stale_leader_of_an_older_epoch_is_demoted_and_repointed() {
    let mut sim = Sim::healthy(3, 5);
    let stale = sim.node("rs-2");
    stale.role = Role::Leader;
    stale.epoch = 4;
    stale.leader = None;
    let plans = sim.settle();
    assert!(steps(&plans).contains(&Step::Follow {
        member: "rs-2".into(),
        leader: "rs-0".into(),
        leader_addr: "rs-0:7379".into(),
        epoch: 5
    }));
    assert_eq!(sim.leaders(), ["rs-0"]);
    assert!(completed(&plans).is_none());
}

#[test]
fn a_follower_failure_never_starts_a_failover() {
    let mut sim = Sim::healthy(3, 2);
    sim.kill("rs-2");
    let plans = sim.settle();
    assert!(events(&plans).is_empty());
    assert_eq!(sim.leaders(), ["rs-0"]);
    assert_eq!(sim.recorded.epoch, 2);
    assert_eq!(
        sim.labelled(RoleLabel::Follower),
        ["rs-1"],
        "a dead follower leaves the read set"
    );
}

#[test]
fn a_member_that_misses_fewer_probes_than_the_threshold_keeps_its_label() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-1").answering = false;
    sim.probe();
    let plan = decide(&sim.observe());
    assert!(plan.steps.is_empty());
    sim.probe();
    sim.probe();
    let plan = decide(&sim.observe());
    assert_eq!(
        plan.steps,
        [Step::Label {
            member: "rs-1".into(),
            role: None
        }]
    );
}

// ---------------------------------------------------------------- detection

#[test]
fn a_leader_that_misses_fewer_probes_than_the_threshold_is_only_suspected() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").answering = false;
    sim.probe();
    sim.probe();
    let plan = decide(&sim.observe());
    assert!(plan.steps.is_empty());
    assert!(plan.events.is_empty());
    assert!(plan.waiting.unwrap().contains("missed 2 of 3"));
    assert_eq!(plan.record.leader.as_deref(), Some("rs-0"));
}

#[test]
fn a_leader_that_misses_threshold_probes_is_failed_and_fenced_at_the_next_epoch() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").answering = false;
    for _ in 0..3 {
        sim.probe();
    }
    let plan = decide(&sim.observe());
    assert_eq!(plan.events[0].reason, EventReason::FailoverStarted);
    let fo = plan.record.failover.as_ref().unwrap();
    assert_eq!(fo.reason, FailoverReason::LeaderUnreachable);
    assert_eq!(fo.epoch, 3);
    assert_eq!(fo.detect_ms, 1500, "from the first failed probe");
    assert_eq!(
        plan.steps,
        [
            Step::Fence {
                member: "rs-1".into(),
                epoch: 3
            },
            Step::Fence {
                member: "rs-2".into(),
                epoch: 3
            },
        ]
    );
    assert_eq!(
        plan.record.leader.as_deref(),
        Some("rs-0"),
        "the last leader is kept until a new one is promoted"
    );
}

#[test]
fn a_leader_whose_process_is_gone_fails_over_at_once() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").presence = Presence::Gone;
    let plan = decide(&sim.observe());
    assert_eq!(
        plan.record.failover.as_ref().unwrap().reason,
        FailoverReason::LeaderGone
    );
    // Being deleted and no longer answering: gone (one that still answers
    // hands over by switchover, below).
    sim.node("rs-0").presence = Presence::Deleting;
    sim.node("rs-0").answering = false;
    let plan = decide(&sim.observe());
    assert_eq!(
        plan.record.failover.as_ref().unwrap().reason,
        FailoverReason::LeaderGone
    );
}

#[test]
fn a_leader_pod_missing_from_the_list_fails_over_with_its_name_kept() {
    let mut sim = Sim::healthy(3, 2);
    sim.nodes.remove(0);
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.old_leader.as_deref(), Some("rs-0"));
    assert_eq!(done.new_leader, "rs-1");
}

#[test]
fn the_epoch_target_is_above_the_highest_epoch_any_member_reports() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-2").epoch = 7; // fenced earlier by an operator that died
    sim.node("rs-2").fenced = true;
    sim.kill("rs-0");
    let plan = decide(&sim.observe());
    assert_eq!(plan.record.failover.unwrap().epoch, 8);
}

// ---------------------------------------------------------------- the whole failover

#[test]
fn a_killed_leader_is_replaced_by_the_most_up_to_date_follower_with_every_phase_timed() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-1").end = 900;
    sim.node("rs-2").end = 1000;
    sim.kill("rs-0");
    let plans = sim.settle();
    assert_eq!(sim.leaders(), ["rs-2"]);
    assert_eq!(sim.recorded.leader.as_deref(), Some("rs-2"));
    assert_eq!(sim.recorded.epoch, 3);
    assert!(sim.recorded.failover.is_none());
    let done = completed(&plans).unwrap();
    assert_eq!(sim.recorded.last_failover.as_ref(), Some(&done));
    assert_eq!(done.reason, FailoverReason::LeaderGone);
    assert_eq!(done.old_leader.as_deref(), Some("rs-0"));
    assert_eq!(done.new_leader, "rs-2");
    assert!(done.fence_ms > 0 && done.promote_ms > 0 && done.repoint_ms > 0);
    assert!(done.relabel_ms > 0);
    assert_eq!(
        done.total_ms,
        done.detect_ms + done.fence_ms + done.promote_ms + done.repoint_ms + done.relabel_ms,
    );
    assert_eq!(done.lost_bytes, 0);
    assert_eq!(
        events(&plans),
        [
            EventReason::FailoverStarted,
            EventReason::LeaderFenced,
            EventReason::Promoted,
            EventReason::FailoverCompleted
        ]
    );
    // rs-1 now follows rs-2 at epoch 3.
    let rs1 = sim.node("rs-1").clone();
    assert_eq!(
        (rs1.role, rs1.epoch, rs1.leader.as_deref()),
        (Role::Follower, 3, Some("rs-2:7379"))
    );
}

#[test]
fn ties_go_to_the_lowest_ordinal_and_the_log_epoch_outranks_the_offset() {
    let mut sim = Sim::healthy(4, 3);
    sim.kill("rs-0");
    sim.settle();
    assert_eq!(sim.leaders(), ["rs-1"], "equal logs: lowest ordinal");

    let mut sim = Sim::healthy(4, 3);
    sim.node("rs-1").log_epoch = 2;
    sim.node("rs-1").end = 5000; // longer, but an older epoch's history
    sim.node("rs-3").end = 900;
    sim.kill("rs-0");
    sim.settle();
    assert_eq!(sim.leaders(), ["rs-2"]);
}

#[test]
fn relabelling_takes_the_leader_label_off_the_old_pod_before_putting_it_on_the_new_one() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").answering = false;
    for _ in 0..3 {
        sim.probe();
    }
    let plans = sim.settle();
    let labels: Vec<Step> = steps(&plans)
        .into_iter()
        .filter(|s| matches!(s, Step::Label { .. }))
        .collect();
    let off = labels
        .iter()
        .position(|s| {
            *s == Step::Label {
                member: "rs-0".into(),
                role: None,
            }
        })
        .unwrap();
    let on = labels
        .iter()
        .position(|s| {
            *s == Step::Label {
                member: "rs-1".into(),
                role: Some(RoleLabel::Leader),
            }
        })
        .unwrap();
    assert!(off < on, "{labels:?}");
    assert_eq!(sim.labelled(RoleLabel::Leader), ["rs-1"]);
}

#[test]
fn a_promoted_member_loses_its_follower_label_before_gaining_the_leader_label() {
    let mut sim = Sim::healthy(3, 2);
    sim.kill("rs-0");
    let plans = sim.settle();
    let labels: Vec<Step> = steps(&plans)
        .into_iter()
        .filter(|s| matches!(s, Step::Label { .. }))
        .collect();
    assert_eq!(
        labels[0],
        Step::Label {
            member: "rs-0".into(),
            role: None
        }
    );
    assert!(labels.contains(&Step::Label {
        member: "rs-1".into(),
        role: Some(RoleLabel::Leader)
    }));
    assert_eq!(sim.labelled(RoleLabel::Follower), ["rs-2"]);
}

#[test]
fn the_old_leader_returns_as_a_follower_of_the_new_epoch() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").end = 1200; // an unreplicated tail
    sim.kill("rs-0");
    sim.settle();
    sim.restart("rs-0");
    let plans = sim.settle();
    assert!(
        events(&plans).is_empty(),
        "no second failover: {:?}",
        events(&plans)
    );
    let old = sim.node("rs-0").clone();
    assert_eq!(
        (old.role, old.epoch, old.leader.as_deref(), old.end),
        (Role::Follower, 3, Some("rs-1:7379"), 1000),
        "it truncated its diverged tail"
    );
    assert_eq!(sim.labelled(RoleLabel::Follower), ["rs-0", "rs-2"]);
}

#[test]
fn a_leader_that_restarts_before_detection_completes_is_failed_over_not_forgotten() {
    // The bug this brain fixes: a restarted leader came back idle, status
    // lost the leader, and nobody ever led again.
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").answering = false;
    sim.probe(); // one missed probe, below the threshold
    sim.restart("rs-0");
    sim.node("rs-0").role = Role::Idle;
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.reason, FailoverReason::LeaderNotLeading);
    assert_eq!(sim.leaders().len(), 1);
    assert_eq!(sim.recorded.epoch, 3);
    assert_eq!(sim.labelled(RoleLabel::Leader), sim.leaders());
    assert!(plans.iter().all(|p| p.record.leader.is_some()));
}

// ---------------------------------------------------------------- the safety rule

#[test]
fn semi_sync_blocks_until_fenced_followers_intersect_every_ack_set() {
    // 3 members, K=1: an ack set is any one follower, so both must be fenced.
    let mut sim = Sim::healthy(3, 2);
    sim.kill("rs-0");
    sim.node("rs-2").answering = false;
    let plans = sim.settle();
    assert!(sim.leaders().is_empty(), "no promotion with rs-2 unknown");
    let last = plans.last().unwrap();
    let fo = last.record.failover.as_ref().unwrap();
    assert_eq!(fo.phase, Phase::Fencing);
    assert!(
        fo.blocked
            .as_ref()
            .unwrap()
            .contains("1 of 2 followers fenced")
    );
    assert!(last.waiting.as_ref().unwrap().contains("needs 2"));
    assert_eq!(
        events(&plans)
            .iter()
            .filter(|e| **e == EventReason::FailoverBlocked)
            .count(),
        1,
        "blocked is announced once, not every pass"
    );
    assert_eq!(last.record.leader.as_deref(), Some("rs-0"));

    // rs-2 comes back: the failover goes on.
    sim.node("rs-2").answering = true;
    let plans = sim.settle();
    assert!(completed(&plans).is_some());
    assert_eq!(sim.leaders().len(), 1);
}

#[test]
fn semi_sync_with_k_2_of_4_followers_goes_on_with_3_fenced() {
    let mut sim = Sim::healthy(5, 2);
    sim.settings.sync_replicas = 2;
    sim.kill("rs-0");
    sim.kill("rs-4");
    let plans = sim.settle();
    assert!(completed(&plans).is_some());
    // With two followers gone it must wait.
    let mut sim = Sim::healthy(5, 2);
    sim.settings.sync_replicas = 2;
    sim.kill("rs-0");
    sim.kill("rs-3");
    sim.kill("rs-4");
    sim.settle();
    assert!(sim.leaders().is_empty());
}

#[test]
fn sync_mode_blocks_while_any_follower_is_unreachable() {
    let mut sim = Sim::healthy(3, 2);
    sim.settings.mode = ReplicationMode::Sync;
    sim.kill("rs-0");
    sim.kill("rs-2");
    let plans = sim.settle();
    assert!(sim.leaders().is_empty());
    assert!(
        plans
            .last()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .contains("needs 2")
    );
}

#[test]
fn async_mode_goes_on_with_the_reachable_and_counts_the_bytes_lost() {
    let mut sim = Sim::healthy(3, 2);
    sim.settings.mode = ReplicationMode::Async;
    sim.node("rs-0").end = 1500;
    sim.node("rs-0").committed = 1500;
    sim.probe(); // the old leader's last probe saw 1500 committed
    sim.node("rs-1").end = 1200;
    sim.kill("rs-0");
    sim.kill("rs-2");
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.new_leader, "rs-1");
    assert_eq!(done.lost_bytes, 300);
}

#[test]
fn semi_sync_reports_no_loss_when_the_new_leader_has_the_old_commit() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").end = 1500; // uncommitted tail, never acknowledged
    sim.probe();
    sim.kill("rs-0");
    let plans = sim.settle();
    assert_eq!(completed(&plans).unwrap().lost_bytes, 0);
}

#[test]
fn a_fenced_old_leader_that_answers_satisfies_the_rule_on_its_own() {
    // A leader that restarted (idle, answering) while both followers are
    // down: its own log holds every write it acknowledged.
    let mut sim = Sim::healthy(3, 2);
    sim.restart("rs-0");
    sim.node("rs-0").role = Role::Idle;
    sim.kill("rs-1");
    sim.kill("rs-2");
    let plans = sim.settle();
    assert!(completed(&plans).is_some());
    assert_eq!(sim.leaders(), ["rs-0"]);
    assert_eq!(sim.recorded.epoch, 3);
}

#[test]
fn a_member_loading_a_snapshot_is_never_chosen() {
    let mut sim = Sim::healthy(3, 2);
    sim.settings.mode = ReplicationMode::Async;
    sim.node("rs-1").snapshot = true;
    sim.node("rs-1").end = 5000;
    sim.kill("rs-0");
    sim.settle();
    assert_eq!(sim.leaders(), ["rs-2"]);
}

// ---------------------------------------------------------------- interruptions

/// Run a failover, but let the operator die after the `cut`-th decision:
/// its steps are never taken. A fresh run from what it recorded completes.
#[test]
fn a_failover_interrupted_after_any_decision_is_completed_by_the_next_run() {
    let mut cut = 0;
    loop {
        let mut sim = Sim::healthy(3, 2);
        sim.node("rs-1").end = 800;
        sim.kill("rs-0");
        let mut decisions = 0;
        let mut interrupted = false;
        'run: for _ in 0..10 {
            sim.now += 500;
            sim.probe();
            for _ in 0..20 {
                let plan = decide(&sim.observe());
                sim.recorded = plan.record.clone();
                if plan.steps.is_empty() {
                    break;
                }
                if decisions == cut {
                    interrupted = true;
                    break 'run; // recorded, steps not taken: the operator died
                }
                decisions += 1;
                for step in &plan.steps {
                    let _ = sim.apply(step);
                }
            }
        }
        if !interrupted {
            assert!(cut > 3, "the failover took only {cut} decisions");
            break;
        }
        // A new operator: nothing but the record and fresh observations.
        for node in &mut sim.nodes {
            node.last_seen = None;
        }
        sim.settle();
        assert_eq!(sim.leaders(), ["rs-2"], "cut at decision {cut}");
        assert_eq!(sim.recorded.leader.as_deref(), Some("rs-2"));
        assert!(sim.recorded.failover.is_none(), "cut {cut}");
        assert_eq!(sim.labelled(RoleLabel::Leader), ["rs-2"], "cut {cut}");
        assert_eq!(sim.labelled(RoleLabel::Follower), ["rs-1"], "cut {cut}");
        cut += 1;
    }
}

/// The operator dies after some steps of a batch, not all.
#[test]
fn a_failover_interrupted_mid_batch_is_completed_by_the_next_run() {
    for cut in 0..12 {
        let mut sim = Sim::healthy(4, 2);
        sim.kill("rs-0");
        let mut taken = 0;
        'run: for _ in 0..20 {
            let plan = decide(&sim.observe());
            sim.recorded = plan.record.clone();
            if plan.steps.is_empty() {
                break;
            }
            for step in &plan.steps {
                if taken == cut {
                    break 'run;
                }
                taken += 1;
                let _ = sim.apply(step);
            }
        }
        sim.settle();
        assert_eq!(sim.leaders(), ["rs-1"], "cut after {cut} steps");
        assert!(sim.recorded.failover.is_none());
        assert_eq!(sim.labelled(RoleLabel::Follower), ["rs-2", "rs-3"]);
    }
}

#[test]
fn a_promotion_that_was_never_recorded_is_adopted() {
    // The operator fenced and promoted rs-2 at epoch 3, then died before
    // writing anything: the record still says rs-0 at epoch 2.
    let mut sim = Sim::healthy(3, 2);
    sim.kill("rs-0");
    sim.node("rs-1").epoch = 3;
    sim.node("rs-1").fenced = true;
    let _ = sim.apply(&Step::Fence {
        member: "rs-2".into(),
        epoch: 3,
    });
    let _ = sim.apply(&Step::Promote {
        member: "rs-2".into(),
        epoch: 3,
    });
    let plans = sim.settle();
    assert_eq!(sim.leaders(), ["rs-2"]);
    assert_eq!(sim.recorded.leader.as_deref(), Some("rs-2"));
    assert_eq!(sim.recorded.epoch, 3);
    assert!(
        !steps(&plans)
            .iter()
            .any(|s| matches!(s, Step::Promote { .. })),
        "no second promotion"
    );
    assert_eq!(sim.node("rs-1").leader.as_deref(), Some("rs-2:7379"));
}

#[test]
fn a_member_fenced_at_a_higher_epoch_than_recorded_is_taken_into_account() {
    // An interrupted failover fenced rs-1 at 3 and died; rs-0 still leads
    // at 2 and must not stay leader of an older epoch forever.
    let mut sim = Sim::healthy(3, 2);
    let _ = sim.apply(&Step::Fence {
        member: "rs-1".into(),
        epoch: 3,
    });
    let plans = sim.settle();
    assert!(completed(&plans).is_some());
    assert_eq!(sim.leaders().len(), 1);
    assert!(sim.recorded.epoch >= 3);
    let leader = sim.leaders()[0].clone();
    assert_eq!(sim.labelled(RoleLabel::Leader), [leader]);
    assert_eq!(sim.labelled(RoleLabel::Follower).len(), 2);
}

#[test]
fn two_members_claiming_leadership_of_one_epoch_are_resolved() {
    let mut sim = Sim::healthy(3, 2);
    let rogue = sim.node("rs-2");
    rogue.role = Role::Leader;
    rogue.leader = None;
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.reason, FailoverReason::SplitLeadership);
    assert_eq!(sim.leaders().len(), 1);
    assert_eq!(sim.labelled(RoleLabel::Leader).len(), 1);
    assert_eq!(sim.labelled(RoleLabel::Follower).len(), 2);
}

#[test]
fn a_chosen_member_that_dies_before_promotion_is_replaced_above_its_epoch() {
    let mut sim = Sim::healthy(4, 2);
    sim.settings.sync_replicas = 2;
    sim.kill("rs-0");
    // Run until rs-1 is chosen, then kill it.
    let mut chosen_epoch = 0;
    for _ in 0..10 {
        let plan = decide(&sim.observe());
        sim.recorded = plan.record.clone();
        if let Some(fo) = &plan.record.failover
            && fo.phase == Phase::Promoting
        {
            chosen_epoch = fo.epoch;
            break;
        }
        for s in &plan.steps {
            let _ = sim.apply(s);
        }
    }
    assert_eq!(chosen_epoch, 3);
    sim.kill("rs-1");
    sim.settle();
    assert_eq!(sim.leaders(), ["rs-2"]);
    assert_eq!(sim.node("rs-2").epoch, 4, "above the abandoned epoch");
}

// ---------------------------------------------------------------- switchover

#[test]
fn a_switchover_fences_the_leader_waits_for_the_target_and_loses_nothing() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").end = 1300; // the target is behind
    sim.switchover_to = Some("rs-2".into());
    sim.now += 500;
    sim.probe();
    let plans = sim.pass();
    let first = steps(&plans);
    assert_eq!(
        first[0],
        Step::Fence {
            member: "rs-0".into(),
            epoch: 3
        },
        "the leader is fenced first"
    );
    let fo = plans.last().unwrap().record.failover.clone().unwrap();
    assert_eq!(fo.phase, Phase::CatchingUp);
    assert_eq!(fo.leader_end, Some(1300));
    assert!(sim.leaders().is_empty(), "no promotion before catch-up");
    // The stream delivers the rest.
    sim.node("rs-2").end = 1300;
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.reason, FailoverReason::Switchover);
    assert_eq!(done.new_leader, "rs-2");
    assert_eq!(done.lost_bytes, 0);
    assert_eq!(sim.leaders(), ["rs-2"]);
    assert_eq!(sim.node("rs-0").leader.as_deref(), Some("rs-2:7379"));
    // The annotation stays; a switchover to the current leader is a no-op.
    let plans = sim.settle();
    assert!(events(&plans).is_empty());
}

#[test]
fn a_switchover_with_nothing_written_since_the_last_promotion_still_moves_leadership() {
    // rs-0 was promoted at epoch 2 and nothing was written since: it
    // reports log epoch 2, its followers the epoch of their last record.
    let mut sim = Sim::healthy(3, 2);
    for f in ["rs-1", "rs-2"] {
        sim.node(f).log_epoch = 1;
    }
    sim.switchover_to = Some("rs-2".into());
    sim.now += 500;
    sim.probe();
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(
        done.new_leader, "rs-2",
        "the caught-up target, not the old leader"
    );
    assert_eq!(done.lost_bytes, 0);
    assert_eq!(sim.leaders(), ["rs-2"]);
    assert_eq!(sim.node("rs-0").leader.as_deref(), Some("rs-2:7379"));
}

#[test]
fn a_switchover_whose_target_never_catches_up_keeps_the_most_up_to_date_member() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").end = 1300;
    sim.switchover_to = Some("rs-2".into());
    let mut plans = Vec::new();
    for _ in 0..40 {
        sim.now += 500;
        sim.probe();
        plans.extend(sim.pass());
        if completed(&plans).is_some() {
            break;
        }
    }
    assert!(events(&plans).contains(&EventReason::FailoverBlocked));
    assert_eq!(completed(&plans).unwrap().new_leader, "rs-0");
    assert_eq!(
        sim.leaders(),
        ["rs-0"],
        "nothing lost: the old leader is kept"
    );
    assert_eq!(sim.recorded.epoch, 3);
}

#[test]
fn a_switchover_to_a_non_member_or_a_lagging_member_only_waits() {
    let mut sim = Sim::healthy(3, 2);
    sim.switchover_to = Some("rs-9".into());
    let plan = decide(&sim.observe());
    assert!(plan.steps.is_empty());
    assert!(plan.waiting.unwrap().contains("not a member"));
    sim.switchover_to = Some("rs-1".into());
    sim.node("rs-1").snapshot = true;
    let plan = decide(&sim.observe());
    assert!(plan.steps.is_empty());
    assert!(plan.waiting.unwrap().contains("not a streaming follower"));
}

#[test]
fn a_leader_that_dies_during_a_switchover_turns_it_into_a_failover() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").end = 1300;
    sim.switchover_to = Some("rs-2".into());
    sim.pass();
    sim.kill("rs-0");
    let plans = sim.settle();
    assert!(completed(&plans).is_some());
    assert_eq!(sim.leaders().len(), 1);
}

// ---------------------------------------------------------------- scale-down guard

#[test]
fn scale_down_never_removes_the_leader() {
    assert_eq!(statefulset_replicas(3, Some(0)), (3, None));
    let (n, why) = statefulset_replicas(3, Some(4));
    assert_eq!(n, 5);
    assert!(why.unwrap().contains("member 4"));
    assert_eq!(statefulset_replicas(3, None), (3, None));
}

#[test]
fn a_switchover_starting_is_not_a_warning_but_a_failover_is() {
    let mut sim = Sim::healthy(3, 2);
    sim.switchover_to = Some("rs-1".into());
    let plan = decide(&sim.observe());
    let started = &plan.events[0];
    assert_eq!(started.reason, EventReason::FailoverStarted);
    assert!(!started.is_warning());
    let mut sim = Sim::healthy(3, 2);
    sim.kill("rs-0");
    let plan = decide(&sim.observe());
    assert!(plan.events[0].is_warning());
}

#[test]
fn a_dead_followers_label_comes_off_even_while_another_member_is_being_repointed() {
    let mut sim = Sim::healthy(3, 2);
    sim.kill("rs-2");
    sim.node("rs-1").epoch = 1; // needs a follow
    let plan = decide(&sim.observe());
    let removal = plan
        .steps
        .iter()
        .position(|s| {
            *s == Step::Label {
                member: "rs-2".into(),
                role: None,
            }
        })
        .unwrap();
    let follow = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::Follow { member, .. } if member == "rs-1"))
        .unwrap();
    assert!(removal < follow, "{:?}", plan.steps);
}

#[test]
fn a_scale_down_that_would_remove_the_leader_first_switches_over_to_a_remaining_member() {
    let mut sim = Sim::healthy(5, 2);
    // rs-4 leads; the spec now asks for 3 members.
    for n in &mut sim.nodes {
        n.role = Role::Follower;
        n.leader = Some("rs-4:7379".into());
        n.label = Some(RoleLabel::Follower);
    }
    let rs4 = sim.node("rs-4");
    rs4.role = Role::Leader;
    rs4.leader = None;
    rs4.label = Some(RoleLabel::Leader);
    sim.recorded.leader = Some("rs-4".into());
    sim.node("rs-2").end = 1000;
    sim.node("rs-1").end = 900;
    sim.node("rs-0").end = 1000;
    sim.node("rs-3").end = 1000; // goes away with the scale-down
    sim.settings.replicas = 3;
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.reason, FailoverReason::Switchover);
    assert_eq!(
        done.new_leader, "rs-0",
        "most up to date of those that stay"
    );
    assert_eq!(done.lost_bytes, 0);
    assert_eq!(statefulset_replicas(3, Some(0)), (3, None));
    // Once moved, nothing more happens.
    let plans = sim.settle();
    assert!(events(&plans).is_empty());
}

#[test]
fn a_leader_pod_being_deleted_hands_over_by_switchover_and_loses_nothing_even_in_async() {
    let mut sim = Sim::healthy(3, 2);
    sim.settings.mode = ReplicationMode::Async;
    sim.node("rs-0").end = 1400; // acknowledged locally, not yet streamed
    sim.node("rs-0").committed = 1400;
    sim.node("rs-0").presence = Presence::Deleting;
    sim.now += 500;
    sim.probe();
    let plans = sim.pass();
    let fo = plans.last().unwrap().record.failover.clone().unwrap();
    assert_eq!(fo.reason, FailoverReason::Switchover);
    assert_eq!(fo.phase, Phase::CatchingUp);
    assert_eq!(fo.target.as_deref(), Some("rs-1"));
    // Its stream delivers the tail, then it exits.
    sim.node("rs-1").end = 1400;
    sim.kill("rs-0");
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.new_leader, "rs-1");
    assert_eq!(done.lost_bytes, 0);
    assert_eq!(sim.node("rs-1").end, 1400);
}

#[test]
fn a_leader_being_deleted_that_fenced_itself_hands_over_before_any_follower_is_fenced() {
    let mut sim = Sim::healthy(3, 2);
    sim.settings.mode = ReplicationMode::Async;
    // SIGTERM: it fenced itself at its own epoch with a tail not yet streamed.
    sim.node("rs-0").end = 1400;
    sim.node("rs-0").committed = 1400;
    sim.node("rs-0").fenced = true;
    sim.node("rs-0").presence = Presence::Deleting;
    sim.now += 500;
    sim.probe();
    let plans = sim.pass();
    let fo = plans.last().unwrap().record.failover.clone().unwrap();
    assert_eq!(fo.reason, FailoverReason::Switchover);
    assert_eq!(fo.phase, Phase::CatchingUp);
    assert_eq!(fo.target.as_deref(), Some("rs-1"));
    assert!(
        !sim.node("rs-1").fenced && !sim.node("rs-2").fenced,
        "a fenced follower would stop taking the tail: {:?}",
        steps(&plans)
    );
    // The tail arrives, the old leader exits; nothing it acknowledged is lost.
    sim.node("rs-1").end = 1400;
    sim.kill("rs-0");
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.reason, FailoverReason::Switchover);
    assert_eq!(done.new_leader, "rs-1");
    assert_eq!(done.lost_bytes, 0);
    assert_eq!(sim.leaders(), ["rs-1"]);
}

#[test]
fn a_leader_handing_over_whose_pod_is_back_but_silent_does_not_hold_the_switchover() {
    let mut sim = Sim::healthy(3, 2);
    sim.settings.mode = ReplicationMode::Async;
    sim.node("rs-0").end = 1400;
    sim.node("rs-0").committed = 1400;
    sim.node("rs-0").fenced = true;
    sim.node("rs-0").presence = Presence::Deleting;
    sim.now += 500;
    sim.probe();
    let plans = sim.pass();
    let fo = plans.last().unwrap().record.failover.clone().unwrap();
    assert!(fo.handing_over);
    assert_eq!(fo.phase, Phase::CatchingUp);
    assert_eq!(fo.target.as_deref(), Some("rs-1"));
    // It handed its whole log to rs-2 (not the target) and exited; its pod
    // is already back under the same name, its node not answering yet.
    sim.node("rs-2").end = 1400;
    let old = sim.node("rs-0");
    old.presence = Presence::Running;
    old.answering = false;
    old.fenced = false;
    old.role = Role::Idle;
    sim.now += 100;
    sim.probe();
    let mut plans = sim.pass();
    let fo = plans.last().unwrap().record.failover.clone();
    assert!(
        fo.as_ref().is_none_or(|f| f.phase != Phase::CatchingUp),
        "no wait for probes of a pod that can stream nothing: {fo:?}"
    );
    plans.extend(sim.settle());
    let done = completed(&plans).unwrap();
    assert_eq!(done.new_leader, "rs-2", "it holds the whole log");
    assert_eq!(done.lost_bytes, 0);
}

#[test]
fn a_deleted_leader_that_already_exited_is_failed_over_at_once() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").presence = Presence::Deleting;
    sim.node("rs-0").answering = false;
    let plan = decide(&sim.observe());
    let fo = plan.record.failover.unwrap();
    assert_eq!(fo.reason, FailoverReason::LeaderGone);
    assert_eq!(fo.phase, Phase::Fencing);
}

#[test]
fn a_switchover_stops_waiting_for_catch_up_once_the_old_leader_is_gone() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-0").end = 1300;
    sim.switchover_to = Some("rs-2".into());
    sim.now += 500;
    sim.probe();
    sim.pass();
    sim.kill("rs-0");
    sim.now += 100; // far below the switchover timeout
    let plans = sim.pass();
    assert!(
        plans.iter().any(|p| p
            .record
            .failover
            .as_ref()
            .is_none_or(|f| f.phase != Phase::CatchingUp)),
        "still waiting for a dead leader's stream"
    );
    sim.settle();
    assert_eq!(sim.leaders().len(), 1);
}

#[test]
fn in_async_mode_the_returning_old_leader_corrects_the_bytes_lost() {
    let mut sim = Sim::healthy(3, 2);
    sim.settings.mode = ReplicationMode::Async;
    sim.probe(); // last good probe: 1000 committed
    // It took writes after its last probe, then crashed.
    sim.node("rs-0").end = 1600;
    sim.node("rs-0").committed = 1600;
    sim.kill("rs-0");
    let plans = sim.settle();
    let done = completed(&plans).unwrap();
    assert_eq!(done.lost_bytes, 0, "its last probe saw nothing past 1000");
    assert_eq!(done.fork_offset, 1000);
    // It returns, still with its log, before it is repointed.
    sim.restart("rs-0");
    let plan = decide(&sim.observe());
    assert_eq!(plan.record.last_failover.as_ref().unwrap().lost_bytes, 600);
    assert!(plan.events.iter().any(|e| e.message.contains("600 bytes")));
    // Once repointed (and truncated) the figure stays.
    sim.settle();
    assert_eq!(sim.recorded.last_failover.as_ref().unwrap().lost_bytes, 600);
    assert_eq!(sim.node("rs-0").end, 1000);
}

// ---------------------------------------------------------------- steps that keep failing

#[test]
fn a_member_that_keeps_refusing_to_follow_does_not_keep_the_leader_label_off_the_new_leader() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-2").refuse_follow = true;
    sim.kill("rs-0");
    let plans = sim.settle();
    let done = completed(&plans).expect("the failover completes without rs-2");
    assert_eq!(done.new_leader, "rs-1");
    assert!(done.repoint_ms >= STEP_GRACE_MS);
    assert_eq!(sim.labelled(RoleLabel::Leader), ["rs-1"]);
    assert!(
        sim.labelled(RoleLabel::Follower).is_empty(),
        "rs-2 follows nobody: it is in no Service"
    );
    let why = plans
        .iter()
        .flat_map(|p| &p.events)
        .find(|e| e.reason == EventReason::RepointIncomplete)
        .unwrap();
    assert!(why.message.contains("rs-2"), "{}", why.message);
    // The steady state keeps repointing it, and labels it once it follows.
    sim.node("rs-2").refuse_follow = false;
    sim.settle();
    assert_eq!(sim.labelled(RoleLabel::Follower), ["rs-2"]);
}

#[test]
fn a_promotion_that_keeps_failing_moves_to_a_member_holding_the_whole_log() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-1").refuse_promote = true;
    sim.kill("rs-0");
    let plans = sim.settle();
    let done = completed(&plans).expect("another member is promoted");
    assert_eq!(done.new_leader, "rs-2");
    assert_eq!(done.lost_bytes, 0);
    assert!(events(&plans).contains(&EventReason::PromotionRetargeted));
    // One epoch up: a late promotion of rs-1 at the first target epoch
    // could not make a second leader at rs-2's epoch.
    let first = steps(&plans)
        .iter()
        .find_map(|s| match s {
            Step::Promote { member, epoch } if member == "rs-1" => Some(*epoch),
            _ => None,
        })
        .expect("rs-1 was tried first");
    assert_eq!(done.epoch, first + 1);
    assert!(steps(&plans).contains(&Step::Fence {
        member: "rs-1".into(),
        epoch: first + 1
    }));
    assert_eq!(sim.leaders(), ["rs-2"]);
    assert_eq!(sim.labelled(RoleLabel::Leader), ["rs-2"]);
}

#[test]
fn a_promotion_that_keeps_failing_is_retried_when_no_other_member_holds_the_whole_log() {
    let mut sim = Sim::healthy(3, 2);
    sim.node("rs-1").end = 1200; // acknowledged writes rs-2 does not have
    sim.node("rs-1").refuse_promote = true;
    sim.kill("rs-0");
    let plans = sim.settle();
    assert!(completed(&plans).is_none());
    assert!(sim.leaders().is_empty(), "rs-2 would lose 200 bytes");
    assert!(!steps(&plans).contains(&Step::Promote {
        member: "rs-2".into(),
        epoch: 3
    }));
    let fo = sim.recorded.failover.clone().unwrap();
    assert_eq!(fo.new_leader.as_deref(), Some("rs-1"));
    assert!(fo.blocked.unwrap().contains("no other fenced member"));
    assert_eq!(
        events(&plans)
            .iter()
            .filter(|e| **e == EventReason::FailoverBlocked)
            .count(),
        1,
        "said once"
    );
    // Once it can, it is promoted.
    sim.node("rs-1").refuse_promote = false;
    let plans = sim.settle();
    assert_eq!(completed(&plans).unwrap().new_leader, "rs-1");
}
