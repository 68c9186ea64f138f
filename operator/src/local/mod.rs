//! `rstore-operator local`: a self-healing cluster on one machine, run by
//! the same failover brain ([`crate::brain`]) and the same pass
//! ([`crate::coordination::run_pass`]) as the Kubernetes controller.
//!
//! Layout:
//! - [`supervisor`]: one task per member runs its `rstore-node` process,
//!   reports starts and exits at once, restarts it with backoff.
//! - [`proxy`]: the leader and read endpoints, routed by role labels.
//! - [`state`]: `cluster.json` (the brain's durable record, the members,
//!   their ports) and the switchover request file.
//! - [`driver`]: the [`crate::coordination::Driver`] of local mode.
//! - [`cli`]: `rstore-operator status`, `switchover`, `partition`, `heal`.
//! - [`netns`]: `--netns`, a network namespace per member, joined by veth
//!   links to a bridge (root only), so a member can be partitioned.
//! - [`options`]: the command line; [`cluster`]: the main loop.
//!
//! The main loop ([`Cluster::serve`]) probes every member each probe
//! period, counts failed probes ([`crate::coordination::ProbeTracker`])
//! and runs a pass; a member that exits triggers a pass at once (its
//! presence is `Gone`: no need to wait for probes to fail), and while a failover or switchover is in progress the
//! loop re-observes every 50 ms (those extra probes are not counted as
//! failures, so detection keeps its `failure_threshold x probe_period`).

pub mod cli;
pub mod cluster;
pub mod driver;
pub mod netns;
pub mod options;
pub mod proxy;
pub mod state;
pub mod supervisor;

pub use cluster::Cluster;
pub use options::{LocalError, LocalOptions, find_node_binary};

/// Run a local cluster until Ctrl-C or SIGTERM.
pub async fn run(options: LocalOptions) -> Result<(), LocalError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Listen before any node starts: a signal during start-up then stops
    // the cluster cleanly instead of killing the operator and orphaning
    // its nodes.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(LocalError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(LocalError::Signal)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(LocalError::Signal)?;
    let mut cluster = Cluster::start(options).await?;
    let shutdown = async {
        tokio::select! {
            _ = interrupt.recv() => "interrupt",
            _ = terminate.recv() => "SIGTERM",
            _ = hangup.recv() => "SIGHUP",
        }
    };
    let why = cluster.serve(shutdown).await;
    tracing::info!("{why}: stopping the local cluster");
    cluster.stop().await;
    Ok(())
}

/// A folder under the system temp dir, removed on drop (the operator crate
/// has no `tempfile` dependency).
#[cfg(test)]
pub(crate) mod test_dir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub struct TestDir(PathBuf);

    impl TestDir {
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "rstore-local-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            if let Err(err) = std::fs::create_dir_all(&path) {
                panic!("cannot create {}: {err}", path.display());
            }
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
