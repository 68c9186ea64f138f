//! The operator's member coordination (what it does to pods on kind)
//! against real `rstore-node` processes on loopback, with Kubernetes left
//! out: members found, the first promoted at epoch 1, the others following,
//! statuses probed; a scale-up member follows; a restarted leader is
//! promoted again at a new epoch; a write on the leader reaches followers.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rstore_e2e::{NodeProc, wait_for};
use rstore_operator::coordination::{HttpNodeAdmin, Member, Previous, Report, Step, coordinate};

fn member(i: i32, node: &NodeProc) -> Member {
    Member {
        name: node.id.clone(),
        ordinal: i,
        admin_addr: node.admin.to_string(),
        repl_addr: node.repl.to_string(),
        pod_ready: true,
        role_label: None,
    }
}

fn members(nodes: &[NodeProc]) -> Vec<Member> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| member(i32::try_from(i).unwrap(), n))
        .collect()
}

async fn settle(admin: &HttpNodeAdmin, nodes: &[NodeProc], previous: &Previous) -> Report {
    // Followers connect asynchronously: coordinate until a pass has nothing
    // left to do and every member carries its role label.
    let mut last = None;
    for _ in 0..30 {
        let report = coordinate(
            admin,
            &members(nodes),
            i32::try_from(nodes.len()).unwrap(),
            previous,
        )
        .await;
        if report.done.is_empty() && report.labels.values().all(Option::is_some) {
            return report;
        }
        last = Some(report);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("coordination did not settle: {last:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_found_first_promoted_others_follow_scale_up_follows() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--replication-mode",
        "semi-sync",
        "--sync-replicas",
        "1",
        "--fsync",
        "never",
    ];
    let mut nodes: Vec<NodeProc> = (0..3)
        .map(|i| {
            NodeProc::start(
                &dir.path().join(format!("rs-{i}")),
                &format!("rs-{i}"),
                &flags,
            )
        })
        .collect();
    let admin = HttpNodeAdmin::new(Duration::from_secs(2));

    // Bootstrap: first member promoted at epoch 1, the others follow it.
    let first = coordinate(&admin, &members(&nodes), 3, &Previous::default()).await;
    assert_eq!(first.decision.leader.as_deref(), Some("rs-0"));
    assert_eq!(first.decision.epoch, 1);
    assert!(first.first_failure().is_none(), "{first:#?}");
    assert!(matches!(first.done[0].step, Step::Promote { epoch: 1, .. }));
    assert_eq!(first.done.len(), 3);
    let previous = Previous {
        leader: Some("rs-0".into()),
        epoch: 1,
    };
    let settled = settle(&admin, &nodes, &previous).await;
    assert_eq!(settled.labels["rs-0"], Some("leader"));
    assert_eq!(settled.labels["rs-1"], Some("follower"));
    assert_eq!(
        settled
            .members
            .iter()
            .filter(|m| m.role == "follower")
            .count(),
        2
    );

    // Scale-up: a new idle member is told to follow the leader, nobody else.
    nodes.push(NodeProc::start(&dir.path().join("rs-3"), "rs-3", &flags));
    let scaled = coordinate(&admin, &members(&nodes), 4, &previous).await;
    let steps: Vec<&Step> = scaled.done.iter().map(|d| &d.step).collect();
    assert!(
        matches!(steps.as_slice(), [Step::Follow { member, epoch: 1, .. }] if member == "rs-3"),
        "{steps:?}"
    );
    settle(&admin, &nodes, &previous).await;
}

/// Data path and restart, on top of the coordination above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn writes_reach_followers_and_a_restarted_leader_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--replication-mode",
        "semi-sync",
        "--sync-replicas",
        "1",
        "--fsync",
        "never",
    ];
    let mut nodes: Vec<NodeProc> = (0..3)
        .map(|i| {
            NodeProc::start(
                &dir.path().join(format!("rs-{i}")),
                &format!("rs-{i}"),
                &flags,
            )
        })
        .collect();
    let admin = HttpNodeAdmin::new(Duration::from_secs(2));
    let previous = Previous {
        leader: Some("rs-0".into()),
        epoch: 1,
    };
    coordinate(&admin, &members(&nodes), 3, &Previous::default()).await;
    settle(&admin, &nodes, &previous).await;

    // A write on the leader reaches both followers.
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut nodes[0].client())
        .unwrap();
    for follower in &nodes[1..] {
        wait_for("the write on a follower", Duration::from_secs(10), || {
            let v: Option<String> = redis::cmd("GET")
                .arg("k")
                .query(&mut follower.client())
                .ok()?;
            v.filter(|v| v == "v")
        });
    }

    // The leader restarts: it never promotes itself; coordination restores
    // it at a new epoch and repoints the followers.
    nodes[0].kill9();
    nodes[0].restart(&[]);
    let restored = settle(&admin, &nodes, &previous).await;
    assert_eq!(restored.decision.leader.as_deref(), Some("rs-0"));
    assert_eq!(restored.decision.epoch, 2);
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query(&mut nodes[0].client())
        .unwrap();
    assert_eq!(
        v.as_deref(),
        Some("v"),
        "the acknowledged write survived the restart"
    );
}
