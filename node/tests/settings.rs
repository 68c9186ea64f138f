//! Replication settings changed through the admin API while the node runs
//! (`GET/POST /config`): no restart, effective at once, kept across restarts.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use rstore_node::admin::ReplicationMode;
use rstore_testkit::{Node, err_text};

fn settings_body(mode: &str, sync_replicas: u64, timeout_ms: u64) -> String {
    format!(
        r#"{{"mode": "{mode}", "sync_replicas": {sync_replicas}, "sync_timeout_ms": {timeout_ms}, "on_sync_timeout": "block", "ack_level": "durable"}}"#
    )
}

#[test]
fn a_semi_sync_leader_switched_to_async_takes_writes_at_once_and_keeps_it_after_a_restart() {
    let mut node = Node::leader(&[
        "--replication-mode",
        "semi-sync",
        "--sync-replicas",
        "1",
        "--sync-timeout",
        "300",
    ]);
    let mut c = node.client();
    // No follower: a semi-sync write cannot be acknowledged.
    let err = redis::cmd("SET")
        .arg("before")
        .arg("1")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err_text(&err).contains("TIMEOUT"), "{}", err_text(&err));
    let config = node.http("GET", "/config", None).json();
    assert_eq!(config["mode"], "semi-sync", "{config}");
    assert_eq!(config["sync_timeout_ms"], 300, "{config}");

    let r = node.http("POST", "/config", Some(&settings_body("async", 1, 300)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["mode"], "async");
    // The same connection, no restart: writes are acknowledged now, and the
    // write that timed out (durable, never taken back) becomes visible.
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("2")
        .query(&mut c)
        .unwrap();
    let got: Option<String> = redis::cmd("GET").arg("before").query(&mut c).unwrap();
    assert_eq!(got.as_deref(), Some("1"));
    let status = node.status();
    assert_eq!(status.mode, ReplicationMode::Async, "{status:?}");
    assert_eq!(
        status.settings.map(|s| s.mode),
        Some(ReplicationMode::Async),
        "{status:?}"
    );

    // A restart with the same (semi-sync) flags keeps what the API set.
    node.terminate();
    node.restart();
    assert_eq!(node.http("GET", "/config", None).json()["mode"], "async");
    let mut c = node.client();
    let _: () = redis::cmd("SET")
        .arg("restarted")
        .arg("3")
        .query(&mut c)
        .unwrap();
    let got: Option<String> = redis::cmd("GET").arg("after").query(&mut c).unwrap();
    assert_eq!(got.as_deref(), Some("2"));
}

#[test]
fn invalid_or_malformed_settings_are_refused_with_a_reason_and_change_nothing() {
    let node = Node::leader(&[]);
    let r = node.http(
        "POST",
        "/config",
        Some(&settings_body("semi-sync", 0, 1000)),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("sync_replicas"), "{}", r.body);
    let r = node.http("POST", "/config", Some(&settings_body("eventual", 1, 1000)));
    assert!(
        r.status == 400 || r.status == 422,
        "{} {}",
        r.status,
        r.body
    );
    let r = node.http("POST", "/config", Some("{\"mode\": \"async\"}"));
    assert!(
        r.status == 400 || r.status == 422,
        "{} {}",
        r.status,
        r.body
    );
    let config = node.http("GET", "/config", None).json();
    assert_eq!(config["mode"], "async", "{config}");
    assert!(
        !node.dir.join("settings.auto.json").exists(),
        "nothing saved"
    );
}
