//! Fake nodes for tests: the admin API's role/epoch semantics in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use rstore_node::admin::{
    AdminError, FenceResponse, FollowerStatus, ReplicationMode, ReplicationSettings, Role,
    StatusResponse,
};

use super::admin::{Member, NodeAdmin};

fn status(name: &str, role: Role, epoch: u64, leader: Option<&str>) -> StatusResponse {
    StatusResponse {
        node_id: name.to_string(),
        role,
        epoch,
        fenced: false,
        offsets: rstore_node::admin::Offsets::default(),
        leader: leader.map(str::to_string),
        followers: Vec::new(),
        mode: rstore_node::admin::ReplicationMode::SemiSync,
        degraded: false,
        settings: None,
        link: None,
        snapshot_progress: None,
        digest: None,
        keys: 0,
        last_log_epoch: epoch,
    }
}

#[derive(Debug, Clone)]
struct Node {
    role: Role,
    epoch: u64,
    /// Epoch of the last record in the log.
    log_epoch: u64,
    leader: Option<String>,
    fenced: bool,
    down: bool,
    /// Log end (reported as every offset).
    end: u64,
    fail_promote: Option<String>,
    /// Replication settings in force; `None`: a node too old to report
    /// them (and to take `POST /config`).
    settings: Option<ReplicationSettings>,
    refuse_config: Option<String>,
}

/// In-memory nodes keyed by member name; records every mutating call.
#[derive(Debug, Default)]
pub struct FakeNodes {
    nodes: Mutex<BTreeMap<String, Node>>,
    calls: Mutex<Vec<String>>,
    /// Mutating calls must carry this admin token (as `--admin-token`).
    token: Mutex<Option<String>>,
}

impl FakeNodes {
    /// `n` idle nodes `rs-0..rs-n` at epoch 0.
    pub fn idle(n: i32) -> Self {
        let fake = Self::default();
        for i in 0..n {
            fake.add(&format!("rs-{i}"));
        }
        fake
    }

    /// Add an idle node (a scale-up).
    pub fn add(&self, name: &str) {
        self.nodes.lock().unwrap().insert(
            name.to_string(),
            Node {
                role: Role::Idle,
                epoch: 0,
                log_epoch: 0,
                leader: None,
                fenced: false,
                down: false,
                end: 0,
                fail_promote: None,
                settings: None,
                refuse_config: None,
            },
        );
    }

    /// The process restarted: a former leader comes back idle (it never
    /// promotes itself), keeping its epoch.
    pub fn restart(&self, name: &str) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(name) {
            n.down = false;
            n.fenced = false;
            if n.role == Role::Leader {
                n.role = Role::Idle;
            }
        }
    }

    pub fn set_down(&self, name: &str, down: bool) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(name) {
            n.down = down;
        }
    }

    /// The node's log ends at `end`.
    pub fn set_end(&self, name: &str, end: u64) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(name) {
            n.end = end;
        }
    }

    /// The node fenced itself at its own epoch (a leader handing over on
    /// SIGTERM); no admin call.
    pub fn fence_self(&self, name: &str) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(name) {
            n.fenced = true;
        }
    }

    pub fn fail_promote(&self, name: &str, why: &str) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(name) {
            n.fail_promote = Some(why.to_string());
        }
    }

    /// Every node reports `settings` and takes `POST /config`.
    pub fn report_settings(&self, settings: &ReplicationSettings) {
        for node in self.nodes.lock().unwrap().values_mut() {
            node.settings = Some(*settings);
        }
    }

    /// The settings `name` has in force.
    pub fn settings(&self, name: &str) -> Option<ReplicationSettings> {
        self.nodes.lock().unwrap().get(name)?.settings
    }

    /// Answer `POST /config` on `name` with 400 and `why`.
    pub fn refuse_config(&self, name: &str, why: &str) {
        if let Some(n) = self.nodes.lock().unwrap().get_mut(name) {
            n.refuse_config = Some(why.to_string());
        }
    }

    /// Refuse mutating calls that do not carry `token` (401).
    pub fn require_token(&self, token: &str) {
        *self.token.lock().unwrap() = Some(token.to_string());
    }

    /// Mutating calls so far, as `"promote rs-0 1"` / `"follow rs-1 rs-0:7379 1"`
    /// / `"config rs-0 sync 1"` (mode and sync replicas).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn refused(member: &Member, op: &str) -> AdminError {
        AdminError::Transport {
            addr: member.admin_addr.clone(),
            op: op.to_string(),
            reason: "connection refused".to_string(),
        }
    }

    pub fn snapshot(&self, member: &Member) -> Result<StatusResponse, AdminError> {
        let nodes = self.nodes.lock().unwrap();
        let node = nodes
            .get(&member.name)
            .filter(|n| !n.down)
            .ok_or_else(|| Self::refused(member, "GET /status"))?;
        let mut s = status(&member.name, node.role, node.epoch, node.leader.as_deref());
        s.fenced = node.fenced;
        s.last_log_epoch = node.log_epoch;
        s.offsets = rstore_node::admin::Offsets {
            appended: node.end,
            durable: node.end,
            applied: node.end,
            committed: node.end,
        };
        if let Some(settings) = &node.settings {
            s.mode = settings.mode;
            s.settings = Some(*settings);
        }
        if node.role == Role::Leader {
            s.followers = nodes
                .iter()
                .filter(|(_, n)| {
                    n.role == Role::Follower
                        && n.epoch == node.epoch
                        && n.leader.as_deref() == Some(member.repl_addr.as_str())
                })
                .map(|(name, _)| FollowerStatus {
                    node_id: name.clone(),
                    addr: String::new(),
                    received: 0,
                    durable: 0,
                    applied: 0,
                    lag_bytes: 0,
                    lag_ms: 0,
                    state: rstore_node::admin::FollowerState::Streaming,
                })
                .collect();
        }
        Ok(s)
    }

    fn mutate(
        &self,
        member: &Member,
        op: &str,
        call: String,
        f: impl FnOnce(&mut Node) -> Result<(), String>,
    ) -> Result<(), AdminError> {
        let mut nodes = self.nodes.lock().unwrap();
        let node = nodes
            .get_mut(&member.name)
            .filter(|n| !n.down)
            .ok_or_else(|| Self::refused(member, op))?;
        if let Some(want) = self.token.lock().unwrap().as_deref()
            && member.admin_token.as_ref().map(|t| t.0.as_str()) != Some(want)
        {
            return Err(AdminError::Status {
                addr: member.admin_addr.clone(),
                op: op.to_string(),
                status: 401,
                message: "admin token does not match".to_string(),
            });
        }
        self.calls.lock().unwrap().push(call);
        f(node).map_err(|message| AdminError::Status {
            addr: member.admin_addr.clone(),
            op: op.to_string(),
            status: 409,
            message,
        })
    }
}

impl NodeAdmin for FakeNodes {
    fn status<'a>(
        &'a self,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<StatusResponse, AdminError>> {
        Box::pin(async move { self.snapshot(member) })
    }

    fn promote<'a>(
        &'a self,
        member: &'a Member,
        epoch: u64,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            self.mutate(
                member,
                "POST /promote",
                format!("promote {} {epoch}", member.name),
                |n| {
                    if let Some(why) = &n.fail_promote {
                        return Err(why.clone());
                    }
                    if epoch < n.epoch || epoch <= n.log_epoch {
                        return Err(format!(
                            "epoch {epoch} is below {} or not above the log's {}",
                            n.epoch, n.log_epoch
                        ));
                    }
                    n.role = Role::Leader;
                    n.epoch = epoch;
                    n.log_epoch = epoch;
                    n.leader = None;
                    n.fenced = false;
                    Ok(())
                },
            )
        })
    }

    fn follow<'a>(
        &'a self,
        member: &'a Member,
        leader_repl_addr: &'a str,
        epoch: u64,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        Box::pin(async move {
            let call = format!("follow {} {leader_repl_addr} {epoch}", member.name);
            // Following streams the leader's history: its log epoch comes along.
            let leader_name = leader_repl_addr
                .split(['.', ':'])
                .next()
                .unwrap_or_default()
                .to_string();
            let leader_log_epoch = self
                .nodes
                .lock()
                .unwrap()
                .get(&leader_name)
                .map(|l| l.log_epoch);
            self.mutate(member, "POST /follow", call, |n| {
                if let Some(e) = leader_log_epoch {
                    n.log_epoch = n.log_epoch.max(e);
                }
                if epoch < n.epoch {
                    return Err(format!("epoch {epoch} is older than {}", n.epoch));
                }
                n.role = Role::Follower;
                n.epoch = epoch;
                n.leader = Some(leader_repl_addr.to_string());
                n.fenced = false;
                Ok(())
            })
        })
    }

    fn fence<'a>(
        &'a self,
        member: &'a Member,
        epoch: u64,
    ) -> BoxFuture<'a, Result<FenceResponse, AdminError>> {
        Box::pin(async move {
            let last_epoch = self.snapshot(member)?.epoch;
            self.mutate(
                member,
                "POST /fence",
                format!("fence {} {epoch}", member.name),
                |n| {
                    n.fenced = true;
                    n.epoch = epoch;
                    Ok(())
                },
            )?;
            Ok(FenceResponse {
                node_id: member.name.clone(),
                last_epoch,
                last_offset: 0,
                epoch,
            })
        })
    }

    fn set_config<'a>(
        &'a self,
        member: &'a Member,
        settings: &'a ReplicationSettings,
    ) -> BoxFuture<'a, Result<ReplicationSettings, AdminError>> {
        Box::pin(async move {
            let mode = match settings.mode {
                ReplicationMode::Async => "async",
                ReplicationMode::SemiSync => "semi-sync",
                ReplicationMode::Sync => "sync",
            };
            let call = format!("config {} {mode} {}", member.name, settings.sync_replicas);
            let mut refused = None;
            let mut old_node = false;
            self.mutate(member, "POST /config", call, |n| {
                if n.settings.is_none() {
                    old_node = true;
                    return Err("not found".to_string());
                }
                if let Some(why) = &n.refuse_config {
                    refused = Some(why.clone());
                    return Err(why.clone());
                }
                n.settings = Some(*settings);
                Ok(())
            })
            .map_err(|err| match (err, refused, old_node) {
                (AdminError::Status { addr, op, .. }, Some(message), _) => AdminError::Status {
                    addr,
                    op,
                    status: 400,
                    message,
                },
                (AdminError::Status { addr, op, .. }, None, true) => AdminError::Status {
                    addr,
                    op,
                    status: 404,
                    message: "not found".to_string(),
                },
                (err, _, _) => err,
            })?;
            Ok(*settings)
        })
    }
}
