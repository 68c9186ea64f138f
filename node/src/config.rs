//! Command-line flags (each with an `RSTORE_*` environment fallback).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use crate::domain::{AckLevel, OnSyncTimeout};
use crate::domain::{ReplicationMode, ReplicationSettings};
use crate::wal::FsyncPolicy;

/// Whether `given` is the secret `expected` (`--requirepass`,
/// `--admin-token`), in time that does not depend on where they first
/// differ, so a client cannot find a secret byte by byte by timing its
/// refusals. Every check of a secret goes through here.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Role at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartRole {
    Leader,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "rstore-node",
    version,
    about = "rstore store node: Redis protocol, WAL, replication"
)]
pub struct Config {
    /// RESP data-plane address.
    #[arg(long, env = "RSTORE_LISTEN", default_value = "0.0.0.0:6379")]
    pub listen: SocketAddr,
    /// Replication stream address.
    #[arg(long, env = "RSTORE_REPL_LISTEN", default_value = "0.0.0.0:7379")]
    pub repl_listen: SocketAddr,
    /// HTTP admin API and metrics address.
    #[arg(long, env = "RSTORE_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// Where the WAL, snapshots and node metadata live.
    #[arg(long, env = "RSTORE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Stable identity of this node [default: the host name].
    #[arg(long, env = "RSTORE_NODE_ID")]
    pub node_id: Option<String>,
    /// Start as leader (standalone or bootstrap): a data directory that
    /// records this node as leader resumes leading at its epoch; any other
    /// is promoted at an epoch above its own and its log's. Without this
    /// flag a restart never self-promotes: a former leader comes back idle
    /// and waits to be told (the operator decides).
    #[arg(long, env = "RSTORE_ROLE", conflicts_with = "follow")]
    pub role: Option<StartRole>,
    /// Replication address (HOST:PORT) of a leader to follow.
    #[arg(long, env = "RSTORE_FOLLOW")]
    pub follow: Option<String>,
    #[arg(long, env = "RSTORE_REPLICATION_MODE", default_value = "async", value_parser = ReplicationMode::from_str)]
    pub replication_mode: ReplicationMode,
    /// Semi-sync: follower acks required per write.
    #[arg(long, env = "RSTORE_SYNC_REPLICAS", default_value_t = 1)]
    pub sync_replicas: usize,
    /// Milliseconds a write waits for follower acks.
    #[arg(long, env = "RSTORE_SYNC_TIMEOUT", default_value_t = 5000)]
    pub sync_timeout: u64,
    #[arg(
        long,
        env = "RSTORE_ON_SYNC_TIMEOUT",
        value_enum,
        default_value = "block"
    )]
    pub on_sync_timeout: OnSyncTimeout,
    #[arg(long, env = "RSTORE_ACK_LEVEL", value_enum, default_value = "durable")]
    pub ack_level: AckLevel,
    /// always | batch | interval:MS | never
    #[arg(long, env = "RSTORE_FSYNC", default_value = "batch", value_parser = FsyncPolicy::from_str)]
    pub fsync: FsyncPolicy,
    /// Password for clients and for replication connections.
    #[arg(long, env = "RSTORE_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// Token that every mutating admin call (fence, promote, follow) must
    /// carry as `Authorization: Bearer <token>`; without it those calls are
    /// open to anyone who reaches the admin port.
    #[arg(long, env = "RSTORE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin token, read again on every mutating admin
    /// call: a token that changes (a Kubernetes Secret volume, which the
    /// kubelet updates in place) takes effect without a restart. An
    /// unreadable or empty file refuses every mutating call.
    #[arg(long, env = "RSTORE_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,

    /// Largest accepted bulk string (value or argument), bytes.
    #[arg(long, env = "RSTORE_MAX_BULK_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_bulk_bytes: usize,
    /// Most arguments in one command.
    #[arg(long, env = "RSTORE_MAX_ARGS", default_value_t = 1024 * 1024)]
    pub max_args: usize,
    /// Worker threads serving clients and replication [default: one less
    /// than the CPUs this process may use (its cgroup quota counts), at
    /// least 1]. Writes take one lock in turn, so a worker per CPU only
    /// makes them contend for it; the CPU left over serves the WAL writer
    /// thread, its fsyncs and the kernel's network work. Measured on 2
    /// CPUs: bench/README.md, "Engine rebuild".
    #[arg(long, env = "RSTORE_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Most simultaneous client connections.
    #[arg(long, env = "RSTORE_MAX_CLIENTS", default_value_t = 10_000)]
    pub max_clients: usize,
    /// Close a client whose unsent replies exceed this many bytes.
    #[arg(long, env = "RSTORE_CLIENT_OUTPUT_LIMIT", default_value_t = 256 * 1024 * 1024)]
    pub client_output_limit: usize,
    /// WAL segment size, bytes.
    #[arg(long, env = "RSTORE_WAL_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub wal_segment_bytes: u64,
    /// Log kept behind the latest snapshot for lagging followers, bytes;
    /// a follower further behind takes a snapshot instead.
    #[arg(long, env = "RSTORE_WAL_RETENTION_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub wal_retention_bytes: u64,
    /// Take a checkpoint after this many log bytes since the last one.
    #[arg(long, env = "RSTORE_SNAPSHOT_EVERY_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub snapshot_every_bytes: u64,
    /// Log format: text or json.
    #[arg(long, env = "RSTORE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Config {
    /// `--threads`, or its default for a machine with `cpus` CPUs.
    pub fn worker_threads(&self, cpus: usize) -> usize {
        match self.threads {
            Some(n) => usize::from(n),
            None => cpus.saturating_sub(1).max(1),
        }
    }

    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "rstore-node".to_string())
    }

    pub fn sync_timeout(&self) -> Duration {
        Duration::from_millis(self.sync_timeout)
    }

    /// The replication settings the flags ask for (the data directory's
    /// `settings.auto.json`, written by `POST /config`, overrides them).
    pub fn replication_settings(&self) -> ReplicationSettings {
        ReplicationSettings {
            mode: self.replication_mode,
            sync_replicas: self.sync_replicas,
            sync_timeout_ms: self.sync_timeout,
            on_sync_timeout: self.on_sync_timeout,
            ack_level: self.ack_level,
        }
    }

    /// A config for tests and embedding: loopback, port 0 everywhere.
    pub fn for_tests(data_dir: PathBuf) -> Config {
        let mut c = Config::parse_from(["rstore-node"]);
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.listen = any;
        c.repl_listen = any;
        c.admin_listen = any;
        c.data_dir = data_dir;
        c.node_id = Some("test-node".into());
        c
    }

    /// The admin token mutating calls need now: `--admin-token`, or the
    /// trimmed content of `--admin-token-file` read at this moment; None
    /// when neither is set (calls are open).
    pub fn admin_token_now(&self) -> Result<Option<String>, String> {
        if let Some(token) = &self.admin_token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the admin token file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("the admin token file {} is empty", path.display()));
        }
        Ok(Some(token.to_string()))
    }

    /// Check combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.replication_mode == ReplicationMode::SemiSync && self.sync_replicas == 0 {
            return Err("--sync-replicas must be at least 1 in semi-sync mode".into());
        }
        self.replication_settings()
            .validate()
            .map_err(|e| format!("replication settings: {e}"))?;
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err("--admin-token must not be empty (leave it unset to disable)".into());
        }
        if self.admin_token_file.is_some() {
            self.admin_token_now()?;
        }
        if self.max_bulk_bytes == 0 || self.max_args == 0 {
            return Err("--max-bulk-bytes and --max-args must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    #[test]
    fn same_secret_accepts_only_the_exact_secret() {
        assert!(super::same_secret(b"s3cret", b"s3cret"));
        assert!(!super::same_secret(b"s3cret", b"s3creT"));
        assert!(!super::same_secret(b"s3cre", b"s3cret"));
        assert!(!super::same_secret(b"", b"s3cret"));
    }

    use clap::Parser;

    use super::Config;

    #[test]
    fn an_admin_token_file_must_be_readable_and_not_empty_at_start_and_excludes_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let path = file.to_str().unwrap();
        let parse = || Config::try_parse_from(["rstore-node", "--admin-token-file", path]).unwrap();
        let missing = parse().validate().unwrap_err();
        assert!(
            missing.contains("cannot read the admin token file"),
            "{missing}"
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(parse().validate().unwrap_err().contains("is empty"));
        std::fs::write(&file, " t0ken \n").unwrap();
        let c = parse();
        c.validate().unwrap();
        assert_eq!(c.admin_token_now().unwrap().as_deref(), Some("t0ken"));
        assert!(
            Config::try_parse_from([
                "rstore-node",
                "--admin-token",
                "x",
                "--admin-token-file",
                path
            ])
            .is_err(),
            "one or the other"
        );
    }

    #[test]
    fn worker_threads_default_to_one_less_than_the_cpus_and_zero_is_refused() {
        let c = Config::try_parse_from(["rstore-node"]).unwrap();
        assert_eq!(c.threads, None);
        assert_eq!(c.worker_threads(1), 1);
        assert_eq!(c.worker_threads(2), 1);
        assert_eq!(c.worker_threads(8), 7);
        let c = Config::try_parse_from(["rstore-node", "--threads", "4"]).unwrap();
        assert_eq!(c.threads, Some(4));
        assert_eq!(c.worker_threads(2), 4, "an explicit count wins");
        let err = Config::try_parse_from(["rstore-node", "--threads", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--threads"), "{err}");
    }
}
