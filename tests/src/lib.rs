//! Helpers for end-to-end tests beyond the shared test kit
//! (`rstore-testkit`: node processes, waits, the admin client, Redis
//! clients): the operator binary, `rstore-operator local` clusters, the
//! Kubernetes test cluster and kind.

pub mod k8s;
pub mod kind;
pub mod local;

use std::path::PathBuf;
use std::process::Command;

/// The `rstore-operator` binary beside the test binaries
/// (`target/<profile>/rstore-operator`), or `RSTORE_OPERATOR_BIN`.
///
/// `cargo test --workspace` builds it (the operator crate has an
/// integration test, which makes cargo build its binary). When it is
/// missing (`cargo test -p rstore-e2e` alone on a fresh tree), it and
/// `rstore-node` are built once here with the same cargo and profile.
pub fn operator_binary() -> PathBuf {
    if let Ok(p) = std::env::var("RSTORE_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let dir = rstore_testkit::profile_dir();
    let bin = dir.join("rstore-operator");
    if !bin.exists() || !dir.join("rstore-node").exists() {
        static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        BUILT.get_or_init(|| {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-p", "rstore-operator", "-p", "rstore-node"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build of the binaries failed");
        });
    }
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}
