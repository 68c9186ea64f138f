//! Engine tests on a real data directory (tempdir) and real fsync.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::settings::SETTINGS_FILE;
use super::*;
use crate::config::Config;
use crate::domain::{AckLevel, OnSyncTimeout, ReplicationMode, ReplicationSettings};

fn options(dir: &Path, mode: ReplicationMode) -> EngineOptions {
    let mut config = Config::for_tests(dir.to_path_buf());
    config.replication_mode = mode;
    config.sync_replicas = 1;
    EngineOptions::from_config(&config)
}

fn leader(dir: &Path, mode: ReplicationMode) -> Arc<Engine> {
    let engine = Engine::open(options(dir, mode)).expect("open");
    engine.resume(true, None).expect("lead");
    engine
}

fn visible(engine: &Engine, key: &[u8]) -> bool {
    engine.read(|ks, _now| ks.get(key).is_some())
}

async fn write_key(engine: &Engine, key: &'static [u8]) -> u64 {
    let (_, offset) = engine
        .write(|v| v.set(Bytes::from_static(key), Bytes::from_static(b"v"), 0))
        .expect("write");
    let offset = offset.expect("a change");
    engine.wal().kick();
    engine.wal().wait_acked(offset).await.expect("durable");
    offset
}

#[tokio::test]
async fn a_leader_leaving_semi_sync_shows_the_writes_it_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = leader(dir.path(), ReplicationMode::SemiSync);
    write_key(&engine, b"held").await;
    engine.recompute_commit();
    assert!(!visible(&engine, b"held"), "no follower acked it yet");

    let mut async_settings = engine.settings();
    async_settings.mode = ReplicationMode::Async;
    engine.set_settings(async_settings).expect("settings");
    assert!(visible(&engine, b"held"), "async commits what is durable");
    assert_eq!(engine.offsets().committed, engine.wal().last_offset());

    // And back: new writes wait for a follower again.
    let mut semi = async_settings;
    semi.mode = ReplicationMode::SemiSync;
    engine.set_settings(semi).expect("settings");
    write_key(&engine, b"held-again").await;
    engine.recompute_commit();
    assert!(!visible(&engine, b"held-again"));
    assert!(visible(&engine, b"held"));
    engine.close().unwrap();
}

#[tokio::test]
async fn settings_set_while_running_survive_a_restart_and_override_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let engine = leader(dir.path(), ReplicationMode::Async);
    let wanted = ReplicationSettings {
        mode: ReplicationMode::Sync,
        sync_replicas: 2,
        sync_timeout_ms: 750,
        on_sync_timeout: OnSyncTimeout::Degrade,
        ack_level: AckLevel::Applied,
    };
    assert_eq!(engine.set_settings(wanted).unwrap(), wanted);
    engine.close().unwrap();
    drop(engine);

    let reopened = Engine::open(options(dir.path(), ReplicationMode::Async)).unwrap();
    assert_eq!(
        reopened.settings(),
        wanted,
        "the saved settings win over the flags"
    );
    reopened.close().unwrap();
}

#[tokio::test]
async fn invalid_settings_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = leader(dir.path(), ReplicationMode::Async);
    let before = engine.settings();
    let mut bad = before;
    bad.mode = ReplicationMode::SemiSync;
    bad.sync_replicas = 0;
    let err = engine.set_settings(bad).unwrap_err();
    assert!(matches!(err, EngineError::Settings(_)), "{err}");
    assert_eq!(engine.settings(), before);
    assert!(!dir.path().join(SETTINGS_FILE).exists(), "nothing saved");
    engine.close().unwrap();
}

#[tokio::test]
async fn a_corrupt_settings_file_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(SETTINGS_FILE), b"{ not json").unwrap();
    let err = Engine::open(options(dir.path(), ReplicationMode::Async))
        .err()
        .expect("refused");
    assert!(err.to_string().contains(SETTINGS_FILE), "{err}");
}

#[tokio::test]
async fn a_read_completes_while_a_writer_holds_the_state_lock() {
    let dir = tempfile::tempdir().unwrap();
    let engine = leader(dir.path(), ReplicationMode::Async);
    write_key(&engine, b"k").await;
    // A writer appending to the log holds `state`; readers must not wait.
    let held = engine.state.lock();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = Arc::clone(&engine);
    std::thread::spawn(move || {
        let _ = tx.send((visible(&reader, b"k"), reader.applied()));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(5));
    drop(held);
    let (seen, applied) = got.expect("the read waited for the state lock");
    assert!(seen);
    assert_eq!(applied, engine.wal().last_offset());
    engine.close().unwrap();
}
