//! What `rstore-operator local` is told, how it finds the node binary,
//! and why it may refuse to run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rstore_node::admin::ReplicationMode;

use super::state::StateError;
use super::supervisor::NodeCommand;

/// Everything `rstore-operator local` is told on its command line.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Member count; `None` keeps the count recorded in `cluster.json`
    /// (3 for a new cluster).
    pub replicas: Option<u32>,
    pub listen: SocketAddr,
    pub read_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub mode: ReplicationMode,
    pub sync_replicas: u32,
    pub sync_timeout_ms: u64,
    /// `block` or `degrade`.
    pub on_sync_timeout: String,
    /// `received`, `durable` or `applied` (the node's default when unset).
    pub ack_level: Option<String>,
    /// `always`, `batch`, `interval:MS` or `never`.
    pub fsync: String,
    pub probe_period: Duration,
    pub probe_timeout: Duration,
    pub failure_threshold: u32,
    pub switchover_timeout_ms: u64,
    /// The `rstore-node` binary; found next to this executable or on PATH
    /// when unset.
    pub node_bin: Option<PathBuf>,
    pub requirepass: Option<String>,
    /// Extra flags for every node.
    pub node_args: Vec<String>,
    /// Run every member in its own network namespace (root only; see
    /// [`super::netns`]).
    pub netns: bool,
}

impl LocalOptions {
    /// Defaults for a data dir (the command line's defaults).
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            replicas: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 6379)),
            read_listen: SocketAddr::from(([127, 0, 0, 1], 6380)),
            data_dir,
            mode: ReplicationMode::SemiSync,
            sync_replicas: 1,
            sync_timeout_ms: 1000,
            on_sync_timeout: "block".to_string(),
            ack_level: None,
            fsync: "batch".to_string(),
            probe_period: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(300),
            failure_threshold: 3,
            switchover_timeout_ms: 10_000,
            node_bin: None,
            requirepass: None,
            node_args: Vec::new(),
            netns: false,
        }
    }

    pub(crate) fn node_command(&self, bin: PathBuf) -> NodeCommand {
        let mut args = vec![
            "--replication-mode".to_string(),
            self.mode.as_str().to_string(),
            "--sync-replicas".to_string(),
            self.sync_replicas.to_string(),
            "--sync-timeout".to_string(),
            self.sync_timeout_ms.to_string(),
            "--on-sync-timeout".to_string(),
            self.on_sync_timeout.clone(),
            "--fsync".to_string(),
            self.fsync.clone(),
        ];
        if let Some(level) = &self.ack_level {
            args.push("--ack-level".to_string());
            args.push(level.clone());
        }
        args.extend(self.node_args.iter().cloned());
        let env = self
            .requirepass
            .iter()
            .map(|p| ("RSTORE_REQUIREPASS".to_string(), p.clone()))
            .collect();
        NodeCommand { bin, args, env }
    }
}

/// Why `rstore-operator local` cannot run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot use the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "another rstore-operator local{} runs this cluster ({dir}); stop it first, or use another --data-dir",
        pid.map_or(String::new(), |p| format!(" (pid {p})"))
    )]
    AlreadyRunning { pid: Option<u32>, dir: PathBuf },
    #[error("cannot start: {0}")]
    Write(String),
    #[error("{0}")]
    NodeBinary(String),
    #[error("cannot listen on {addr} for the {what} endpoint: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "{dir} holds a cluster of {have} members; scaling a local cluster down is not supported (run with --replicas {have}, or use another --data-dir)"
    )]
    ScaleDown {
        dir: PathBuf,
        have: usize,
        want: u32,
    },
    #[error("--replicas must be at least 1")]
    NoReplicas,
    #[error("cannot choose ports for the members: {0}")]
    Ports(std::io::Error),
    #[error("cannot wait for signals: {0}")]
    Signal(std::io::Error),
    #[error(
        "--netns: {0} (network namespaces need root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, and iproute2; run without --netns to use loopback ports)"
    )]
    Netns(String),
}

/// Find the `rstore-node` binary: `explicit`, else next to this
/// executable, else on PATH.
pub fn find_node_binary(explicit: Option<&Path>) -> Result<PathBuf, LocalError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(LocalError::NodeBinary(format!(
                "--node-bin {} is not a file",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe().ok();
    if let Some(beside) = exe
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| dir.join("rstore-node"))
        .filter(|p| p.is_file())
    {
        return Ok(beside);
    }
    if let Some(on_path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("rstore-node"))
            .find(|p| p.is_file())
    }) {
        return Ok(on_path);
    }
    Err(LocalError::NodeBinary(format!(
        "cannot find rstore-node next to {} nor on PATH: build it (`cargo build --release -p rstore-node`, or use scripts/local-cluster.sh) or pass --node-bin",
        exe.map_or_else(|| "this program".to_string(), |e| e.display().to_string())
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn node_flags_carry_the_replication_settings_and_keep_the_password_off_the_command_line() {
        let mut options = LocalOptions::new(PathBuf::from("/x"));
        options.mode = ReplicationMode::Sync;
        options.ack_level = Some("applied".to_string());
        options.requirepass = Some("secret".to_string());
        options.node_args = vec!["--max-clients".to_string(), "10".to_string()];
        let cmd = options.node_command(PathBuf::from("/bin/rstore-node"));
        let joined = cmd.args.join(" ");
        assert!(joined.contains("--replication-mode sync"), "{joined}");
        assert!(joined.contains("--sync-timeout 1000"), "{joined}");
        assert!(joined.contains("--ack-level applied"), "{joined}");
        assert!(joined.ends_with("--max-clients 10"), "{joined}");
        assert!(!joined.contains("secret"));
        assert_eq!(
            cmd.env,
            [("RSTORE_REQUIREPASS".to_string(), "secret".to_string())]
        );
    }

    #[test]
    fn a_missing_node_binary_is_a_clear_error() {
        let err = find_node_binary(Some(Path::new("/no/such/rstore-node"))).unwrap_err();
        assert!(err.to_string().contains("--node-bin"), "{err}");
    }
}
