//! The `rstore-operator` binary's local-mode tools, as a user runs them.
//! (Having an integration test also makes `cargo test --workspace` build
//! the binary, which the end-to-end tests in `tests/` run.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rstore-operator"))
        .args(args)
        .output()
        .expect("run rstore-operator")
}

fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rstore-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn help_lists_the_local_mode_commands() {
    let out = operator(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["local", "status", "switchover", "crd", "render", "run"] {
        assert!(text.contains(command), "{command} missing from:\n{text}");
    }
    let out = operator(&["local", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--replicas",
        "--listen",
        "--read-listen",
        "--data-dir",
        "--replication-mode",
        "--sync-replicas",
        "--sync-timeout-ms",
        "--on-sync-timeout",
        "--ack-level",
        "--fsync",
        "--probe-period-ms",
        "--probe-timeout-ms",
        "--failure-threshold",
        "--node-bin",
        "--requirepass",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn status_and_switchover_without_a_cluster_fail_with_a_clear_message() {
    let dir = empty_dir("none");
    let dir_arg = dir.display().to_string();
    for args in [
        vec!["status", "--data-dir", &dir_arg],
        vec!["switchover", "--data-dir", &dir_arg],
    ] {
        let out = operator(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no local cluster in"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_local_flags_are_refused_before_anything_starts() {
    let dir = empty_dir("flags");
    let dir_arg = dir.display().to_string();
    let out = operator(&["local", "--data-dir", &dir_arg, "--fsync", "sometimes"]);
    assert!(!out.status.success());
    let out = operator(&[
        "local",
        "--data-dir",
        &dir_arg,
        "--node-bin",
        "/no/such/rstore-node",
    ]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--node-bin"), "{text}");
    assert!(
        !dir.join("cluster.json").exists(),
        "nothing is recorded for a cluster that never started"
    );
    let _ = std::fs::remove_dir_all(dir);
}
