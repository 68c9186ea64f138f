//! The failover brain and its shared driver half (`coordination::run_pass`)
//! against real `rstore-node` processes on loopback, with Kubernetes left
//! out (labels and the record kept in memory, as a mocked API would): a
//! semi-sync K=1 cluster of three under a continuous writer loses no
//! acknowledged write when its leader is killed with SIGKILL or paused with
//! SIGSTOP; the old leader, back, truncates its tail and follows.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rstore_e2e::local::{Workload, missing};
use rstore_node::admin::ReplicationMode;
use rstore_operator::brain::{Event, Plan, Presence, Recorded, RoleLabel, Settings};
use rstore_operator::coordination::{self, Driver, HttpNodeAdmin, Member, PassInput, ProbeTracker};
use rstore_operator::crd::MemberStatus;
use rstore_testkit::{Node, wait_until};

const LONG: Duration = Duration::from_secs(60);
const FLAGS: [&str; 6] = [
    "--replication-mode",
    "semi-sync",
    "--sync-replicas",
    "1",
    "--sync-timeout",
    "1000",
];

/// Labels, record and events in memory.
#[derive(Default)]
struct MemoryDriver {
    labels: Mutex<BTreeMap<String, Option<RoleLabel>>>,
    events: Mutex<Vec<String>>,
}

impl Driver for MemoryDriver {
    fn persist<'a>(
        &'a self,
        _plan: &'a Plan,
        _members: &'a [MemberStatus],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn label<'a>(
        &'a self,
        member: &'a Member,
        role: Option<RoleLabel>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.labels
                .lock()
                .unwrap()
                .insert(member.name.clone(), role);
            Ok(())
        })
    }
    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            eprintln!("event {}: {}", event.reason.as_str(), event.message);
            self.events
                .lock()
                .unwrap()
                .push(event.reason.as_str().to_string());
        })
    }
}

/// The brain driven on a 100 ms probe timer over real nodes.
struct Brain {
    admin: HttpNodeAdmin,
    driver: MemoryDriver,
    tracker: ProbeTracker,
    recorded: Recorded,
    settings: Settings,
}

impl Brain {
    fn new() -> Self {
        Self {
            admin: HttpNodeAdmin::new(Duration::from_millis(300), Duration::from_secs(5)),
            driver: MemoryDriver::default(),
            tracker: ProbeTracker::default(),
            recorded: Recorded::default(),
            settings: Settings {
                replicas: 3,
                mode: ReplicationMode::SemiSync,
                sync_replicas: 1,
                failure_threshold: 3,
                ..Settings::default()
            },
        }
    }

    fn members(&self, nodes: &[Node], gone: &[bool]) -> Vec<Member> {
        let labels = self.driver.labels.lock().unwrap();
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Member {
                name: n.id.clone(),
                ordinal: i32::try_from(i).unwrap(),
                admin_addr: n.addrs.admin.to_string(),
                repl_addr: n.addrs.repl.to_string(),
                pod_ready: true,
                role_label: labels.get(&n.id).copied().flatten(),
                presence: if gone[i] {
                    Presence::Gone
                } else {
                    Presence::Running
                },
                admin_token: None,
            })
            .collect()
    }

    /// One tick: probe everything, then one pass.
    async fn tick(&mut self, nodes: &[Node], gone: &[bool]) -> Plan {
        let members = self.members(nodes, gone);
        let probes =
            coordination::probe_all(&self.admin, &members, Duration::from_millis(300)).await;
        let now = coordination::now_ms();
        for (m, p) in members.iter().zip(&probes) {
            self.tracker.record(&m.name, p, now);
        }
        let out = coordination::run_pass(
            &self.admin,
            &self.driver,
            PassInput {
                settings: self.settings.clone(),
                members,
                probes,
                recorded: self.recorded.clone(),
                switchover_to: None,
                tracker: &mut self.tracker,
            },
        )
        .await;
        self.recorded = out.plan.record.clone();
        out.plan
    }

    /// Ticks until `done` holds of the plan (or the deadline passes).
    async fn until(
        &mut self,
        nodes: &[Node],
        gone: &[bool],
        what: &str,
        done: impl Fn(&Plan, &MemoryDriver) -> bool,
    ) {
        let deadline = Instant::now() + LONG;
        loop {
            let plan = self.tick(nodes, gone).await;
            if done(&plan, &self.driver) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last plan {plan:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn leader_label(&self) -> Option<String> {
        self.driver
            .labels
            .lock()
            .unwrap()
            .iter()
            .find(|(_, r)| **r == Some(RoleLabel::Leader))
            .map(|(n, _)| n.clone())
    }
}

fn settled(plan: &Plan, driver: &MemoryDriver) -> bool {
    plan.steps.is_empty()
        && plan.record.failover.is_none()
        && driver
            .labels
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.is_some())
            .count()
            == 3
}

fn start_cluster(dir: &std::path::Path) -> Vec<Node> {
    (0..3)
        .map(|i| Node::start_in(&dir.join(format!("n{i}")), &format!("n{i}"), &FLAGS))
        .collect()
}

enum Fault {
    Kill,
    Pause,
}

async fn failover_loses_nothing(fault: Fault) {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(tmp.path());
    let mut gone = vec![false; 3];
    let mut brain = Brain::new();
    brain.until(&nodes, &gone, "bootstrap", settled).await;
    assert_eq!(brain.leader_label().as_deref(), Some("n0"));
    assert_eq!(brain.recorded.epoch, 1);

    let workload = Workload::start(nodes[0].addrs.data, 4);
    wait_until(LONG, "acknowledged writes", || {
        (workload.count() > 300).then_some(())
    });
    let started = Instant::now();
    match fault {
        Fault::Kill => {
            nodes[0].kill9();
            gone[0] = true; // the supervisor or kubelet sees the exit
        }
        Fault::Pause => nodes[0].pause(),
    }
    brain
        .until(&nodes, &gone, "failover", |plan, _| {
            plan.record.last_failover.is_some() && plan.record.failover.is_none()
        })
        .await;
    let took = started.elapsed();
    let record = brain.recorded.last_failover.clone().unwrap();
    eprintln!("failover in {took:?}: {record:?}");
    assert_eq!(record.old_leader.as_deref(), Some("n0"));
    assert_eq!(record.epoch, 2);
    assert_eq!(record.lost_bytes, 0);
    let new = nodes
        .iter()
        .position(|n| n.id == record.new_leader)
        .unwrap();
    assert_ne!(new, 0);
    assert_eq!(brain.leader_label(), Some(record.new_leader.clone()));

    if let Fault::Pause = fault {
        // The paused leader wakes up: whatever its clients were waiting on
        // must not be acknowledged (its followers are fenced or moved on).
        nodes[0].resume();
        // And a write sent to it now, after the failover, is refused (it
        // is fenced, or its followers are: it can never be acknowledged).
        let mut stale = nodes[0].client();
        let reply = redis::cmd("SET")
            .arg("sent-to-the-old-leader")
            .arg(1)
            .query::<()>(&mut stale);
        assert!(
            reply.is_err(),
            "the resumed old leader acknowledged a write after the failover"
        );
    }
    let expected = workload.finish();
    let lost = missing(nodes[new].addrs.data, &expected);
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        expected.len(),
        &lost[..lost.len().min(5)]
    );
    let mut conn = nodes[new].client();
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("failover")
        .query(&mut conn)
        .unwrap();
    let stale: Option<String> = redis::cmd("GET")
        .arg("sent-to-the-old-leader")
        .query(&mut conn)
        .unwrap();
    assert_eq!(stale, None, "a refused write is not on the new leader");

    // The old leader returns (restarted, or resumed) and follows.
    if let Fault::Kill = fault {
        nodes[0].restart();
        gone[0] = false;
    }
    brain
        .until(&nodes, &gone, "the old leader to follow", settled)
        .await;
    let old = nodes[0].status();
    assert_eq!(old.epoch, 2);
    assert_eq!(
        old.leader.as_deref(),
        Some(nodes[new].addrs.repl.to_string().as_str())
    );
    let end = nodes[new].status().offsets.appended;
    nodes[0].wait_applied(end, LONG);
    assert_eq!(
        nodes[0].digest(),
        nodes[new].digest(),
        "it truncated and caught up"
    );
    assert_eq!(brain.recorded.leader, Some(record.new_leader.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_with_no_acknowledged_write_lost() {
    failover_loses_nothing(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_never_acknowledges_again() {
    failover_loses_nothing(Fault::Pause).await;
}
