//! `<data-dir>/cluster.json`: what a local cluster is (members, their
//! ports), what the brain recorded (epoch, leader, a failover in progress,
//! the last failover) and what the last pass saw (roles, offsets, labels).
//!
//! It is the brain's durable record in local mode, so it is written
//! atomically (temporary file, fsync, rename, fsync of the folder) and read
//! back when `rstore-operator local` restarts on the same data dir. Scripts,
//! tests and `rstore-operator status` read it too; field names are
//! camelCase like the Kubernetes status.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::netns::NetworkRecord;
use crate::brain::{FailoverProgress, FailoverRecord, Recorded, RoleLabel};

/// File name of the cluster state inside the data dir.
pub const CLUSTER_FILE: &str = "cluster.json";
/// File name of a pending switchover request inside the data dir.
pub const SWITCHOVER_REQUEST_FILE: &str = "switchover-request";
/// Version of the `cluster.json` layout.
pub const FORMAT_VERSION: u32 = 1;

/// Failure reading or writing the state files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid cluster state ({source}); move it away to start a new cluster in this folder"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the cluster state: {0}")]
    Encode(serde_json::Error),
}

/// The whole `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFile {
    pub version: u32,
    /// The `rstore-operator local` process that keeps this file (absent once
    /// it stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_pid: Option<u32>,
    /// Leader endpoint (`--listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Read endpoint (`--read-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_listen: Option<SocketAddr>,
    /// `async`, `semi-sync` or `sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_replicas: Option<u32>,
    /// `--netns`: the bridge and subnet joining the members' namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRecord>,
    /// The recorded epoch (the brain's [`Recorded::epoch`]).
    #[serde(default)]
    pub epoch: u64,
    /// The recorded leader: kept while it is down, changed only by a
    /// promotion.
    #[serde(default)]
    pub leader: Option<String>,
    /// A failover or switchover in progress.
    #[serde(default)]
    pub failover_in_progress: Option<FailoverProgress>,
    /// The last completed failover or switchover, phase by phase.
    #[serde(default)]
    pub last_failover: Option<FailoverRecord>,
    /// Why the brain cannot act now, when it cannot.
    #[serde(default)]
    pub waiting: Option<String>,
    /// The last planned switchover requested with `rstore-operator switchover`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverState>,
    /// When this file was written, unix ms.
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Set by a clean stop (Ctrl-C, SIGTERM) that left the recorded leader
    /// leading with its whole log (no failover in progress, it stopped on
    /// its own at SIGTERM); cleared when an operator starts. The next start
    /// then resumes that leader at the same epoch instead of failing over.
    #[serde(default)]
    pub clean_shutdown: bool,
    pub members: Vec<MemberRecord>,
}

impl ClusterFile {
    /// An empty cluster (no member yet, nothing recorded).
    pub fn new() -> Self {
        Self {
            version: FORMAT_VERSION,
            operator_pid: None,
            listen: None,
            read_listen: None,
            mode: None,
            sync_replicas: None,
            network: None,
            epoch: 0,
            leader: None,
            failover_in_progress: None,
            last_failover: None,
            waiting: None,
            switchover: None,
            updated_at_ms: 0,
            clean_shutdown: false,
            members: Vec::new(),
        }
    }

    /// The brain's state, as the last pass recorded it.
    pub fn recorded(&self) -> Recorded {
        Recorded {
            leader: self.leader.clone(),
            epoch: self.epoch,
            failover: self.failover_in_progress.clone(),
            last_failover: self.last_failover.clone(),
        }
    }

    /// Take over the brain's state.
    pub fn set_recorded(&mut self, recorded: &Recorded) {
        self.leader.clone_from(&recorded.leader);
        self.epoch = recorded.epoch;
        self.failover_in_progress.clone_from(&recorded.failover);
        self.last_failover.clone_from(&recorded.last_failover);
    }

    pub fn member(&self, name: &str) -> Option<&MemberRecord> {
        self.members.iter().find(|m| m.name == name)
    }
}

impl Default for ClusterFile {
    fn default() -> Self {
        Self::new()
    }
}

/// One member of the local cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    /// Member name, also the node id (`member-<ordinal>`).
    pub name: String,
    pub node_id: String,
    pub ordinal: u32,
    /// The running node process, if any.
    #[serde(default)]
    pub pid: Option<u32>,
    /// RESP data plane.
    pub data: SocketAddr,
    /// Replication listener (what followers dial; stable across restarts).
    pub repl: SocketAddr,
    /// Admin HTTP API.
    pub admin: SocketAddr,
    /// The node's own data dir.
    pub data_dir: PathBuf,
    /// The node's stdout and stderr.
    pub log: PathBuf,
    /// `--netns`: the member's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// `--netns`: the member's address in its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    /// `--netns`: the host side of its veth pair (down while partitioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `leader`, `fenced`, `follower`, `idle`, `unknown` (not answering)
    /// or `stopped`.
    #[serde(default = "unknown")]
    pub role: String,
    #[serde(default)]
    pub epoch: u64,
    /// Applied offset.
    #[serde(default)]
    pub offset: u64,
    /// Bytes behind the leader (followers, from the leader's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Milliseconds behind the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Which proxy routes to it: `leader`, `follower`, or none.
    #[serde(default)]
    pub label: Option<RoleLabel>,
    /// Why it is not ready, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How many times the supervisor restarted it.
    #[serde(default)]
    pub restarts: u32,
}

fn unknown() -> String {
    "unknown".to_string()
}

/// The state of the last `rstore-operator switchover` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverState {
    pub target: String,
    pub requested_at_ms: u64,
    pub state: SwitchoverOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a switchover request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchoverOutcome {
    Pending,
    Completed,
    Rejected,
}

/// The `switchover-request` file: written by `rstore-operator switchover`,
/// removed by the running operator once the switchover completed or the
/// request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverRequest {
    pub to: String,
    pub requested_at_ms: u64,
}

pub fn cluster_path(dir: &Path) -> PathBuf {
    dir.join(CLUSTER_FILE)
}

pub fn switchover_path(dir: &Path) -> PathBuf {
    dir.join(SWITCHOVER_REQUEST_FILE)
}

/// Read `cluster.json`; `Ok(None)` when there is none (a new cluster).
pub fn load(dir: &Path) -> Result<Option<ClusterFile>, StateError> {
    let path = cluster_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StateError::Parse { path, source })
}

/// Write `cluster.json` atomically and durably.
pub fn save(dir: &Path, file: &ClusterFile) -> Result<(), StateError> {
    let mut body = serde_json::to_vec_pretty(file).map_err(StateError::Encode)?;
    body.push(b'\n');
    write_atomic(&cluster_path(dir), &body)
}

/// Write `bytes` to `path` so that a reader (or a crash) sees either the
/// old or the new content, never a mix: temporary file, fsync, rename,
/// fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(write_err)?;
    f.write_all(bytes).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(write_err)?;
    if let Some(parent) = path.parent() {
        // The rename itself is durable only once the folder is.
        let dir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

/// Read a pending switchover request; `Ok(None)` when there is none,
/// `Err` with a message when the file is unreadable or malformed.
pub fn load_switchover(dir: &Path) -> Result<Option<SwitchoverRequest>, String> {
    let path = switchover_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{} is not a switchover request: {e}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

pub fn save_switchover(dir: &Path, request: &SwitchoverRequest) -> Result<(), StateError> {
    let body = serde_json::to_vec(request).map_err(StateError::Encode)?;
    write_atomic(&switchover_path(dir), &body)
}

/// Remove the switchover request (no error when it is already gone).
pub fn remove_switchover(dir: &Path) -> Result<(), String> {
    let path = switchover_path(dir);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(format!("cannot remove {}: {err}", path.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::brain::{FailoverReason, Phase};
    use crate::local::test_dir::TestDir;

    fn member(i: u32) -> MemberRecord {
        MemberRecord {
            name: format!("member-{i}"),
            node_id: format!("member-{i}"),
            ordinal: i,
            pid: Some(1000 + i),
            data: format!("127.0.0.1:{}", 20000 + i).parse().unwrap(),
            repl: format!("127.0.0.1:{}", 21000 + i).parse().unwrap(),
            admin: format!("127.0.0.1:{}", 22000 + i).parse().unwrap(),
            data_dir: PathBuf::from(format!("/tmp/x/member-{i}")),
            log: PathBuf::from(format!("/tmp/x/member-{i}.log")),
            netns: None,
            ip: None,
            link: None,
            role: "follower".to_string(),
            epoch: 3,
            offset: 42,
            lag_bytes: Some(0),
            lag_ms: None,
            label: Some(RoleLabel::Follower),
            message: None,
            restarts: 1,
        }
    }

    fn sample() -> ClusterFile {
        let mut file = ClusterFile::new();
        file.operator_pid = Some(77);
        file.listen = Some("127.0.0.1:6379".parse().unwrap());
        file.mode = Some("semi-sync".to_string());
        file.epoch = 3;
        file.leader = Some("member-1".to_string());
        file.failover_in_progress = Some(FailoverProgress {
            reason: FailoverReason::LeaderGone,
            phase: Phase::Promoting,
            old_leader: Some("member-0".to_string()),
            epoch: 4,
            new_leader: Some("member-1".to_string()),
            target: None,
            started_at_ms: 10,
            phase_started_at_ms: 20,
            detect_ms: 0,
            fence_ms: 10,
            promote_ms: 0,
            repoint_ms: 0,
            old_leader_committed: Some(100),
            leader_end: None,
            lost_bytes: 0,
            fork_offset: 0,
            blocked: None,
            handing_over: false,
        });
        file.last_failover = Some(FailoverRecord {
            reason: FailoverReason::Switchover,
            old_leader: Some("member-2".to_string()),
            new_leader: "member-0".to_string(),
            epoch: 3,
            started_at: String::new(),
            started_at_ms: 5,
            detect_ms: 0,
            fence_ms: 1,
            promote_ms: 2,
            repoint_ms: 3,
            relabel_ms: 4,
            total_ms: 10,
            lost_bytes: 0,
            fork_offset: 0,
        });
        file.waiting = Some("promoting member-1: it does not answer; waiting".to_string());
        file.members = (0..3).map(member).collect();
        file
    }

    #[test]
    fn cluster_json_round_trips_through_the_disk() {
        let dir = TestDir::new();
        assert_eq!(load(dir.path()).unwrap(), None, "no file is a new cluster");
        let file = sample();
        save(dir.path(), &file).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(file.clone()));
        assert!(
            !dir.path().join("cluster.json.tmp").exists(),
            "the temporary file is renamed away"
        );
        // And the brain's record comes back as it was recorded.
        let mut again = ClusterFile::new();
        again.set_recorded(&file.recorded());
        assert_eq!(again.recorded(), file.recorded());
    }

    #[test]
    fn cluster_json_uses_camel_case_names_scripts_can_rely_on() {
        let value = serde_json::to_value(sample()).unwrap();
        for key in [
            "epoch",
            "leader",
            "failoverInProgress",
            "lastFailover",
            "waiting",
            "members",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        let m = &value["members"][0];
        for key in [
            "name", "nodeId", "pid", "data", "repl", "admin", "role", "offset", "label",
        ] {
            assert!(m.get(key).is_some(), "missing members[].{key}");
        }
        assert_eq!(m["data"], "127.0.0.1:20000");
        assert_eq!(m["label"], "follower");
        assert_eq!(value["lastFailover"]["newLeader"], "member-0");
        assert_eq!(value["lastFailover"]["totalMs"], 10);
    }

    #[test]
    fn a_corrupt_cluster_json_is_an_error_not_a_new_cluster() {
        let dir = TestDir::new();
        std::fs::write(dir.path().join(CLUSTER_FILE), "{not json").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("move it away"), "{err}");
    }

    #[test]
    fn switchover_requests_round_trip_and_removal_is_idempotent() {
        let dir = TestDir::new();
        assert_eq!(load_switchover(dir.path()).unwrap(), None);
        let request = SwitchoverRequest {
            to: "member-2".to_string(),
            requested_at_ms: 9,
        };
        save_switchover(dir.path(), &request).unwrap();
        assert_eq!(load_switchover(dir.path()).unwrap(), Some(request));
        remove_switchover(dir.path()).unwrap();
        remove_switchover(dir.path()).unwrap();
        assert_eq!(load_switchover(dir.path()).unwrap(), None);
        std::fs::write(switchover_path(dir.path()), "member-1").unwrap();
        assert!(load_switchover(dir.path()).is_err());
    }
}
