//! The failover brain: one pure function from what the operator observed to
//! what it should do next. No I/O and no Kubernetes types, so the
//! Kubernetes controller and `rstore-operator local` run the very same
//! rules, and every rule below is a plain unit test (`tests.rs`).
//!
//! [`decide`] takes an [`Observation`] (per member: its `/status` probe or
//! the error, whether its pod or process exists, consecutive failed probes,
//! what its last good probe said, its current role label; the settings; and
//! the [`Recorded`] state the previous pass wrote) and returns a [`Plan`]:
//! the steps to take now, the state to record *before* taking them, the
//! events to publish and the role labels members should carry. Drivers
//! re-run it from fresh observations after every batch of steps, so an
//! operator that dies at any point resumes from what it recorded.
//!
//! Rules:
//! - Epochs: `E` is the highest epoch any member reports or the record
//!   holds. A failover always targets `E + 1` (or the epoch its record
//!   names, when it is resumed).
//! - Bootstrap: `E == 0`, every member answers and is idle: promote the
//!   lowest ordinal at epoch 1; the others follow it.
//! - The leader is the one member that claims leadership, unfenced, at `E`.
//!   It becomes the recorded leader (a promotion that was not recorded, an
//!   interrupted failover, is adopted, never ignored). The recorded leader
//!   changes only when a member is promoted; a leader that is down or
//!   restarting is a reason to fail over, never a reason to forget it.
//! - Detection: the recorded leader has failed after `failure_threshold`
//!   consecutive failed probes, at once when its pod or process is gone or
//!   being deleted, and at once when it answers but does not lead at `E`
//!   (it restarted, was fenced, or was superseded). Two members claiming
//!   leadership at `E`, or none with none recorded, also start a failover.
//!   A follower's health never does.
//! - Fence: every answering member except a chosen-and-promoted one is
//!   fenced at the target epoch; the old leader too, when it answers.
//! - Safety rule: go on only when the fenced followers intersect every
//!   possible acknowledgement set: `fenced >= followers - K + 1` in
//!   semi-sync, every follower in sync, at least one in async (whose loss,
//!   the bytes the old leader had committed past the new leader at its last
//!   probe, is recorded as `lost_bytes`). A fenced old leader holds every
//!   write it acknowledged, so it satisfies the rule by itself. Otherwise
//!   wait, keep fencing, and say why (`FailoverBlocked`).
//! - Choose: the fenced member with the highest (last log epoch, log end);
//!   a switchover's target wins ties, then the lowest ordinal. Members
//!   still loading a snapshot are never chosen.
//! - Promote it at the target epoch; repoint every other answering member
//!   (the old leader too when it returns: it truncates its diverged tail).
//!   A promotion that has not succeeded within [`STEP_GRACE_MS`] moves to
//!   another fenced member that holds the chosen one's whole log, if any,
//!   at the next epoch (all fenced again first, so a late promotion of the
//!   first choice is refused; else it is retried, and `FailoverBlocked`
//!   says why); members that
//!   still do not follow after [`STEP_GRACE_MS`] no longer hold back the
//!   relabel (an event names them; the steady state repoints them).
//! - Relabel: leader label off the old pod before it goes on the new one
//!   (an empty leader Service beats a wrong one); the follower label only
//!   on members following the leader at its epoch. A member that misses
//!   fewer than `failure_threshold` probes keeps its label (no flapping).
//! - Record: every phase's duration, `lost_bytes`, reason, old and new
//!   leader, in [`FailoverRecord`].
//! - Switchover (planned, zero loss): fence the leader, wait until the
//!   target's log reaches the leader's end (at most `switchover_timeout_ms`,
//!   after which the highest member is kept, usually the old leader), then
//!   fence the rest and go on as above with the target preferred.
//! - A leader whose pod is being deleted but still answers (it hands over
//!   on SIGTERM: fenced at its own epoch, streaming its tail) is replaced by
//!   a switchover to the most up-to-date follower, whether or not it has
//!   fenced itself yet, so nothing it acknowledged is lost even in async
//!   mode; once it stops answering it is simply failed over.
//! - Scale-down: when the desired member count leaves out the leader's
//!   ordinal, a switchover to the most up-to-date follower that stays
//!   comes first; [`statefulset_replicas`] keeps the leader's pod until then.

use std::collections::BTreeMap;

use rstore_node::admin::{LinkStatus, ReplicationMode, Role, StatusResponse};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Failover settings from the spec or the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Desired member count.
    pub replicas: u32,
    pub mode: ReplicationMode,
    /// Semi-sync: follower acks a write waits for (K).
    pub sync_replicas: u32,
    /// Consecutive failed probes before the leader counts as failed.
    pub failure_threshold: u32,
    /// How long a switchover waits for its target to catch up.
    pub switchover_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            replicas: 3,
            mode: ReplicationMode::SemiSync,
            sync_replicas: 1,
            failure_threshold: 3,
            switchover_timeout_ms: 10_000,
        }
    }
}

/// Whether a member's pod or process exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Running (it may still fail its probes).
    Running,
    /// The pod or process is gone, or its container is not running.
    Gone,
    /// The pod is being deleted.
    Deleting,
}

/// The role label a member carries (Kubernetes: `rstore.dev/role`; local
/// mode: membership of the leader or read proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleLabel {
    Leader,
    Follower,
}

impl RoleLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleLabel::Leader => "leader",
            RoleLabel::Follower => "follower",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "leader" => Some(RoleLabel::Leader),
            "follower" => Some(RoleLabel::Follower),
            _ => None,
        }
    }
}

/// What the last successful probe of a member said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastSeen {
    pub epoch: u64,
    pub committed: u64,
    pub appended: u64,
}

/// One member as the driver sees it now.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Pod or member name (also the node id).
    pub name: String,
    pub ordinal: i32,
    /// Replication address followers dial.
    pub repl_addr: String,
    pub presence: Presence,
    /// `/status`, or why it did not answer.
    pub probe: Result<StatusResponse, String>,
    /// Consecutive failed probes (0 when the last one answered).
    pub failures: u32,
    /// When the current run of failed probes began (unix ms).
    pub failing_since_ms: Option<u64>,
    /// The last successful probe.
    pub last_seen: Option<LastSeen>,
    /// The role label the member carries now.
    pub label: Option<RoleLabel>,
}

impl MemberView {
    /// What it answered; a pod being deleted still runs until it exits.
    fn status(&self) -> Option<&StatusResponse> {
        match self.presence {
            Presence::Running | Presence::Deleting => self.probe.as_ref().ok(),
            Presence::Gone => None,
        }
    }

    fn is_fenced_at(&self, epoch: u64) -> bool {
        self.status().is_some_and(|s| s.fenced && s.epoch == epoch)
    }

    fn leads_at(&self, epoch: u64) -> bool {
        self.status()
            .is_some_and(|s| s.role == Role::Leader && !s.fenced && s.epoch == epoch)
    }

    fn follows(&self, leader: &MemberView, epoch: u64) -> bool {
        self.status().is_some_and(|s| {
            s.role == Role::Follower
                && s.epoch == epoch
                && !s.fenced
                && s.leader.as_deref() == Some(leader.repl_addr.as_str())
        })
    }

    /// Answers, or has missed fewer probes than `threshold` while running.
    fn merely_suspected(&self, threshold: u32) -> bool {
        self.presence == Presence::Running && self.probe.is_err() && self.failures < threshold
    }

    fn loading_snapshot(&self) -> bool {
        self.status()
            .is_some_and(|s| s.snapshot_progress.is_some() || s.link == Some(LinkStatus::Snapshot))
    }

    /// (last log epoch, log end) of a member that answers.
    fn log_position(&self) -> Option<(u64, u64)> {
        self.status()
            .map(|s| (s.last_log_epoch, s.offsets.appended))
    }
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Wall clock, unix milliseconds.
    pub now_ms: u64,
    pub settings: Settings,
    /// Every member that exists or should (sorted by ordinal or not).
    pub members: Vec<MemberView>,
    /// What the previous pass recorded.
    pub recorded: Recorded,
    /// A requested planned switchover target (member name).
    pub switchover_to: Option<String>,
}

impl Observation {
    fn member(&self, name: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.name == name)
    }

    fn max_epoch(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.status().map(|s| s.epoch))
            .max()
            .unwrap_or(0)
            .max(self.recorded.epoch)
    }
}

/// State the brain keeps between passes (the resource's status, or
/// `cluster.json` in local mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The last promoted leader; kept while it is down.
    pub leader: Option<String>,
    pub epoch: u64,
    /// A failover or switchover in progress.
    pub failover: Option<FailoverProgress>,
    /// The last completed failover or switchover.
    pub last_failover: Option<FailoverRecord>,
}

/// Why a failover started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailoverReason {
    /// The leader missed `failureThreshold` probes in a row.
    LeaderUnreachable,
    /// The leader's pod or process is gone or being deleted.
    LeaderGone,
    /// The leader answers but does not lead the newest epoch (it restarted,
    /// was fenced, or was superseded).
    LeaderNotLeading,
    /// Several members claim leadership of the newest epoch.
    SplitLeadership,
    /// Nobody leads and nobody is recorded as leader.
    NoLeader,
    /// A planned switchover.
    Switchover,
}

impl FailoverReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverReason::LeaderUnreachable => "LeaderUnreachable",
            FailoverReason::LeaderGone => "LeaderGone",
            FailoverReason::LeaderNotLeading => "LeaderNotLeading",
            FailoverReason::SplitLeadership => "SplitLeadership",
            FailoverReason::NoLeader => "NoLeader",
            FailoverReason::Switchover => "Switchover",
        }
    }
}

/// Phases of a failover in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Switchover: fencing the leader so it takes no more writes.
    FencingLeader,
    /// Switchover: waiting for the target to reach the leader's log end.
    CatchingUp,
    /// Fencing the followers until the safety rule holds; then choose.
    Fencing,
    /// Promoting the chosen member.
    Promoting,
    /// Pointing every other member at the new leader.
    Repointing,
    /// Moving the role labels.
    Relabeling,
}

/// A failover in progress, recorded before each step so that a restarted
/// operator resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverProgress {
    pub reason: FailoverReason,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_leader: Option<String>,
    /// The epoch the new leader gets.
    pub epoch: u64,
    /// The member chosen for promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_leader: Option<String>,
    /// Switchover target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// When detection began (first failed probe), unix ms.
    pub started_at_ms: u64,
    /// When the current phase began, unix ms.
    pub phase_started_at_ms: u64,
    #[serde(default)]
    pub detect_ms: u64,
    #[serde(default)]
    pub fence_ms: u64,
    #[serde(default)]
    pub promote_ms: u64,
    #[serde(default)]
    pub repoint_ms: u64,
    /// The old leader's committed offset at its last good probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_leader_committed: Option<u64>,
    /// Switchover: the fenced leader's log end the target must reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_end: Option<u64>,
    #[serde(default)]
    pub lost_bytes: u64,
    /// The new leader's log end when it was chosen: where the old
    /// leader's history forks off.
    #[serde(default)]
    pub fork_offset: u64,
    /// Why the failover cannot go on, while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// The old leader hands over by itself: its pod is being deleted, it
    /// fenced itself on SIGTERM and exits once a follower holds its whole
    /// log. Once it stops answering there is nothing left to wait for (its
    /// pod may already be back under the same name, answering nothing yet).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handing_over: bool,
}

/// A completed failover or switchover (`status.lastFailover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    pub reason: FailoverReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_leader: Option<String>,
    pub new_leader: String,
    pub epoch: u64,
    /// When detection began (RFC 3339).
    pub started_at: String,
    /// The same instant, unix ms.
    pub started_at_ms: u64,
    pub detect_ms: u64,
    pub fence_ms: u64,
    pub promote_ms: u64,
    pub repoint_ms: u64,
    pub relabel_ms: u64,
    pub total_ms: u64,
    /// Bytes the old leader had committed past the new leader at its last
    /// probe (async: acknowledged writes lost; 0 in semi-sync and sync). In
    /// async mode, corrected when the old leader returns with its log: what
    /// it had past the fork.
    pub lost_bytes: u64,
    /// The new leader's log end when it was chosen (where histories fork).
    #[serde(default)]
    pub fork_offset: u64,
}

/// One action for a driver to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `POST /fence {epoch}`.
    Fence { member: String, epoch: u64 },
    /// `POST /promote {epoch}`.
    Promote { member: String, epoch: u64 },
    /// `POST /follow {leader: leader_addr, epoch}`.
    Follow {
        member: String,
        leader: String,
        leader_addr: String,
        epoch: u64,
    },
    /// Set (or with `None` remove) the member's role label.
    Label {
        member: String,
        role: Option<RoleLabel>,
    },
}

impl Step {
    pub fn member(&self) -> &str {
        match self {
            Step::Fence { member, .. }
            | Step::Promote { member, .. }
            | Step::Follow { member, .. }
            | Step::Label { member, .. } => member,
        }
    }
}

/// Event reasons of a failover's phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReason {
    FailoverStarted,
    LeaderFenced,
    Promoted,
    FailoverBlocked,
    FailoverCompleted,
    /// The chosen member's promotion kept failing; another member that
    /// holds its whole log is promoted instead.
    PromotionRetargeted,
    /// Members that answer but did not follow the new leader in time; the
    /// labels move without them.
    RepointIncomplete,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::FailoverStarted => "FailoverStarted",
            EventReason::LeaderFenced => "LeaderFenced",
            EventReason::Promoted => "Promoted",
            EventReason::FailoverBlocked => "FailoverBlocked",
            EventReason::FailoverCompleted => "FailoverCompleted",
            EventReason::PromotionRetargeted => "PromotionRetargeted",
            EventReason::RepointIncomplete => "RepointIncomplete",
        }
    }

    /// Warnings: something needs attention.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventReason::FailoverStarted
                | EventReason::FailoverBlocked
                | EventReason::PromotionRetargeted
                | EventReason::RepointIncomplete
        )
    }
}

/// An event to publish (and log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub reason: EventReason,
    pub message: String,
    /// A planned switchover starting is no cause for alarm.
    pub planned: bool,
}

impl Event {
    fn new(reason: EventReason, message: String) -> Self {
        Self {
            reason,
            message,
            planned: false,
        }
    }

    /// Warning events need attention (Kubernetes `Warning`, log level warn).
    pub fn is_warning(&self) -> bool {
        self.reason.is_warning() && !self.planned
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// State to record before the steps are taken.
    pub record: Recorded,
    /// Steps in order (the driver may run consecutive fences together).
    pub steps: Vec<Step>,
    pub events: Vec<Event>,
    /// Why nothing (more) can be done now, when that is so.
    pub waiting: Option<String>,
    /// Set in the pass that completes a failover.
    pub completed: Option<FailoverRecord>,
}

impl Plan {
    /// The leader to send writes to, once it leads at the recorded epoch.
    pub fn leader(&self) -> Option<&str> {
        self.record.leader.as_deref()
    }
}

/// Decide what to do now. See the module documentation for the rules.
pub fn decide(obs: &Observation) -> Plan {
    let mut plan = Plan {
        record: obs.recorded.clone(),
        steps: Vec::new(),
        events: Vec::new(),
        waiting: None,
        completed: None,
    };
    let max_epoch = obs.max_epoch();
    plan.record.epoch = max_epoch.max(plan.record.epoch);
    if let Some(progress) = obs.recorded.failover.clone() {
        continue_failover(obs, &mut plan, progress);
        return plan;
    }
    if max_epoch == 0 {
        bootstrap(obs, &mut plan);
        return plan;
    }

    let claimants: Vec<&MemberView> = obs
        .members
        .iter()
        .filter(|m| m.leads_at(max_epoch))
        .collect();
    let recorded = obs.recorded.leader.as_deref().and_then(|l| obs.member(l));
    if let (true, Some(old)) = (claimants.is_empty(), recorded)
        && let Some(target) = hand_over_target(obs, old, max_epoch)
    {
        let message = format!(
            "leader {} is being deleted and fenced itself to hand over: switchover to {target}",
            old.name
        );
        start_failover(
            obs,
            &mut plan,
            FailoverReason::Switchover,
            Some(&old.name),
            Some(&target),
            message,
        );
        return plan;
    }
    match (claimants.as_slice(), recorded) {
        ([leader], _) => {
            plan.record.leader = Some(leader.name.clone());
            steady(obs, &mut plan, leader, max_epoch);
        }
        ([], Some(old)) if old.merely_suspected(obs.settings.failure_threshold) => {
            plan.waiting = Some(format!(
                "leader {} missed {} of {} probes ({})",
                old.name,
                old.failures,
                obs.settings.failure_threshold,
                old.probe.as_ref().err().map(String::as_str).unwrap_or("")
            ));
        }
        ([], Some(old)) => {
            let (reason, why) = match (old.presence, &old.probe) {
                (Presence::Gone, _) => (FailoverReason::LeaderGone, "is gone".to_string()),
                (Presence::Deleting, _) => {
                    (FailoverReason::LeaderGone, "is being deleted".to_string())
                }
                (Presence::Running, Err(err)) => (
                    FailoverReason::LeaderUnreachable,
                    format!("missed {} probes in a row ({err})", old.failures),
                ),
                (Presence::Running, Ok(s)) => (
                    FailoverReason::LeaderNotLeading,
                    format!(
                        "answers as {:?}{} at epoch {} while the cluster is at epoch {max_epoch}",
                        s.role,
                        if s.fenced { " (fenced)" } else { "" },
                        s.epoch
                    ),
                ),
            };
            let message = format!("leader {} {why}", old.name);
            start_failover(obs, &mut plan, reason, Some(&old.name), None, message);
        }
        ([], None) => {
            let message = match obs.recorded.leader.as_deref() {
                Some(gone) => format!("leader {gone} is gone"),
                None => format!("no member leads epoch {max_epoch} and none is recorded"),
            };
            let reason = if obs.recorded.leader.is_some() {
                FailoverReason::LeaderGone
            } else {
                FailoverReason::NoLeader
            };
            let old = obs.recorded.leader.clone();
            start_failover(obs, &mut plan, reason, old.as_deref(), None, message);
        }
        (many, recorded) => {
            let names: Vec<&str> = many.iter().map(|m| m.name.as_str()).collect();
            let message = format!(
                "members {} all claim leadership at epoch {max_epoch}",
                names.join(", ")
            );
            let old = recorded.map(|r| r.name.clone());
            start_failover(
                obs,
                &mut plan,
                FailoverReason::SplitLeadership,
                old.as_deref(),
                None,
                message,
            );
        }
    }
    plan
}

/// First leader of a new cluster.
fn bootstrap(obs: &Observation, plan: &mut Plan) {
    if obs.members.is_empty() {
        plan.waiting = Some("no members exist yet".to_string());
        return;
    }
    let silent: Vec<&str> = obs
        .members
        .iter()
        .filter(|m| m.status().is_none())
        .map(|m| m.name.as_str())
        .collect();
    if !silent.is_empty() {
        plan.waiting = Some(format!(
            "waiting for every member to answer before choosing the first leader (not answering: {})",
            silent.join(", ")
        ));
        return;
    }
    if let Some(busy) = obs
        .members
        .iter()
        .find(|m| m.status().is_some_and(|s| s.role != Role::Idle))
    {
        plan.waiting = Some(format!(
            "member {} is not idle at epoch 0; refusing to bootstrap",
            busy.name
        ));
        return;
    }
    let Some(first) = obs.members.iter().min_by_key(|m| m.ordinal) else {
        return;
    };
    plan.steps.push(Step::Promote {
        member: first.name.clone(),
        epoch: 1,
    });
    plan.record.leader = Some(first.name.clone());
    plan.record.epoch = 1;
    for m in obs.members.iter().filter(|m| m.name != first.name) {
        plan.steps.push(follow_step(m, first, 1));
    }
}

/// A healthy leader at `epoch`: repoint strays, fix labels, and start a
/// requested switchover.
fn steady(obs: &Observation, plan: &mut Plan, leader: &MemberView, epoch: u64) {
    account_returning_leader(obs, plan);
    for m in &obs.members {
        if m.name == leader.name || m.status().is_none() || m.follows(leader, epoch) {
            continue;
        }
        plan.steps.push(follow_step(m, leader, epoch));
    }
    if !plan.steps.is_empty() {
        // New labels follow once the members answer in their new role;
        // removals need not wait (a member whose follow keeps failing must
        // not keep a dead follower in the read set).
        let removals = label_steps(obs, Some(leader), epoch)
            .into_iter()
            .filter(|s| matches!(s, Step::Label { role: None, .. }));
        plan.steps.splice(0..0, removals);
        return;
    }
    plan.steps = label_steps(obs, Some(leader), epoch);
    if !plan.steps.is_empty() {
        return;
    }
    let scale_down = scale_down_target(obs, leader, epoch);
    let deleting = (leader.presence == Presence::Deleting)
        .then(|| best_follower(obs, leader, epoch, i32::MAX))
        .flatten();
    let requested = obs.switchover_to.as_deref().filter(|t| *t != leader.name);
    if let Some(target) = requested.or(deleting.as_deref()).or(scale_down.as_deref()) {
        match obs.member(target) {
            Some(t) if t.follows(leader, epoch) && !t.loading_snapshot() => {
                let message = if requested.is_some() {
                    format!("switchover from {} to {target} requested", leader.name)
                } else if deleting.is_some() {
                    format!(
                        "leader {} is being deleted: handing over to {target}",
                        leader.name
                    )
                } else {
                    format!(
                        "scale-down to {} members removes leader {}: switchover to {target}",
                        obs.settings.replicas, leader.name
                    )
                };
                start_failover(
                    obs,
                    plan,
                    FailoverReason::Switchover,
                    Some(&leader.name),
                    Some(target),
                    message,
                );
            }
            Some(_) => {
                plan.waiting = Some(format!(
                    "switchover target {target} is not a streaming follower of {}; waiting",
                    leader.name
                ));
            }
            None => {
                plan.waiting = Some(format!(
                    "switchover target {target} is not a member of this cluster"
                ));
            }
        }
    }
}

/// Async mode: the old leader of the last failover, back and not yet
/// repointed, still holds its history; what it has past the fork is what
/// the failover took back (its last probe before the failure may have been
/// up to a probe period old). The record keeps the larger figure.
fn account_returning_leader(obs: &Observation, plan: &mut Plan) {
    if obs.settings.mode != ReplicationMode::Async {
        return;
    }
    let Some(record) = plan.record.last_failover.as_mut() else {
        return;
    };
    let Some(old) = record.old_leader.as_deref().and_then(|o| obs.member(o)) else {
        return;
    };
    let Some(s) = old.status() else { return };
    if s.epoch >= record.epoch || s.last_log_epoch >= record.epoch {
        return; // already repointed (and truncated)
    }
    let past = s.offsets.appended.saturating_sub(record.fork_offset);
    if past > record.lost_bytes {
        plan.events.push(Event::new(
            EventReason::FailoverCompleted,
            format!(
                "{} returned with {past} bytes past the fork at offset {}: the failover to {} lost them (async)",
                old.name, record.fork_offset, record.new_leader
            ),
        ));
        record.lost_bytes = past;
    }
}

/// How long a failover retries one member's promotion, or waits for every
/// member to follow the new leader, before it moves on without it.
pub const STEP_GRACE_MS: u64 = 2_000;

/// Another fenced member whose log holds all of `chosen`'s (same or higher
/// (log epoch, end)): promoting it instead loses nothing the safety rule
/// protected, as the chooser could have picked it on a tie.
fn as_complete_candidate<'a>(
    obs: &'a Observation,
    chosen: &MemberView,
    epoch: u64,
) -> Option<&'a MemberView> {
    let needed = chosen.log_position()?;
    obs.members
        .iter()
        .filter(|m| {
            m.name != chosen.name
                && m.is_fenced_at(epoch)
                && !m.loading_snapshot()
                && m.log_position().is_some_and(|p| p >= needed)
        })
        .max_by_key(|m| (m.log_position(), std::cmp::Reverse(m.ordinal)))
}

/// A leader whose pod is being deleted fences itself on SIGTERM (at its
/// own epoch) and keeps streaming its tail until a follower holds its
/// whole log: while it does, the failover is a switchover to the most
/// up-to-date streaming follower (which waits for that tail), not a
/// failover that would fence the followers at once and cut the stream.
fn hand_over_target(obs: &Observation, old: &MemberView, epoch: u64) -> Option<String> {
    let handing_over = old.presence == Presence::Deleting
        && old
            .status()
            .is_some_and(|s| s.role == Role::Leader && s.fenced && s.epoch == epoch);
    handing_over
        .then(|| best_follower(obs, old, epoch, i32::MAX))
        .flatten()
}

/// When the desired member count leaves the leader's ordinal out, the
/// member to hand leadership to first: the most up-to-date streaming
/// follower that stays, lowest ordinal on ties.
fn scale_down_target(obs: &Observation, leader: &MemberView, epoch: u64) -> Option<String> {
    let desired = i32::try_from(obs.settings.replicas).unwrap_or(i32::MAX);
    if leader.ordinal < desired {
        return None;
    }
    best_follower(obs, leader, epoch, desired)
}

/// The most up-to-date streaming follower below ordinal `below`, lowest
/// ordinal on ties.
pub fn best_follower(
    obs: &Observation,
    leader: &MemberView,
    epoch: u64,
    below: i32,
) -> Option<String> {
    obs.members
        .iter()
        .filter(|m| {
            m.ordinal < below
                && m.presence == Presence::Running
                && m.follows(leader, epoch)
                && !m.loading_snapshot()
        })
        .max_by_key(|m| (m.log_position(), std::cmp::Reverse(m.ordinal)))
        .map(|m| m.name.clone())
}

fn follow_step(member: &MemberView, leader: &MemberView, epoch: u64) -> Step {
    Step::Follow {
        member: member.name.clone(),
        leader: leader.name.clone(),
        leader_addr: leader.repl_addr.clone(),
        epoch,
    }
}

fn start_failover(
    obs: &Observation,
    plan: &mut Plan,
    reason: FailoverReason,
    old_leader: Option<&str>,
    target: Option<&str>,
    message: String,
) {
    let now = obs.now_ms;
    let old = old_leader.and_then(|name| obs.member(name));
    let started = old
        .and_then(|o| o.failing_since_ms)
        .filter(|t| *t <= now)
        .unwrap_or(now);
    let epoch = plan.record.epoch + 1;
    let progress = FailoverProgress {
        reason,
        phase: if reason == FailoverReason::Switchover {
            Phase::FencingLeader
        } else {
            Phase::Fencing
        },
        old_leader: old_leader.map(str::to_string),
        epoch,
        new_leader: None,
        target: target.map(str::to_string),
        started_at_ms: started,
        phase_started_at_ms: now,
        detect_ms: now - started,
        fence_ms: 0,
        promote_ms: 0,
        repoint_ms: 0,
        old_leader_committed: old.and_then(|o| o.last_seen).map(|s| s.committed),
        leader_end: None,
        lost_bytes: 0,
        fork_offset: 0,
        blocked: None,
        handing_over: reason == FailoverReason::Switchover
            && old.is_some_and(|o| o.presence == Presence::Deleting),
    };
    let mut started = Event::new(
        EventReason::FailoverStarted,
        format!("{message}: {} to epoch {epoch}", reason.as_str()),
    );
    started.planned = reason == FailoverReason::Switchover;
    plan.events.push(started);
    continue_failover(obs, plan, progress);
}

/// Advance a failover in progress as far as the observation allows.
fn continue_failover(obs: &Observation, plan: &mut Plan, mut fo: FailoverProgress) {
    let now = obs.now_ms;
    let max_epoch = obs.max_epoch();
    if max_epoch > fo.epoch {
        // Someone went past our target (another operator, a hand-made
        // promotion): start over above it, keeping the original timing.
        fo.epoch = max_epoch + 1;
        fo.phase = Phase::Fencing;
        fo.new_leader = None;
    }
    // A promotion at the target epoch that was not recorded (the operator
    // died right after it) is adopted.
    if matches!(
        fo.phase,
        Phase::FencingLeader | Phase::CatchingUp | Phase::Fencing
    ) && let Some(promoted) = obs.members.iter().find(|m| m.leads_at(fo.epoch))
    {
        fo.new_leader = Some(promoted.name.clone());
        fo.phase = Phase::Promoting;
    }
    loop {
        match fo.phase {
            Phase::FencingLeader => {
                let old = fo.old_leader.as_deref().and_then(|l| obs.member(l));
                match old {
                    Some(o) if o.is_fenced_at(fo.epoch) => {
                        fo.leader_end = o.log_position().map(|(_, end)| end);
                        fo.phase = Phase::CatchingUp;
                        fo.phase_started_at_ms = now;
                    }
                    Some(o) if o.status().is_some() => {
                        plan.steps.push(Step::Fence {
                            member: o.name.clone(),
                            epoch: fo.epoch,
                        });
                        break;
                    }
                    Some(o) if o.merely_suspected(obs.settings.failure_threshold) => {
                        plan.waiting = Some(format!(
                            "switchover: leader {} does not answer; waiting before treating it as failed",
                            o.name
                        ));
                        break;
                    }
                    _ => {
                        // The leader died during the switchover: it is a
                        // failover now, with the same safety rule.
                        fo.phase = Phase::Fencing;
                    }
                }
            }
            Phase::CatchingUp => {
                let target = fo.target.as_deref().and_then(|t| obs.member(t));
                let end = fo.leader_end.unwrap_or(0);
                let reached = target.and_then(MemberView::log_position).map(|(_, o)| o);
                let caught_up = reached.is_some_and(|o| o >= end);
                let waited = now.saturating_sub(fo.phase_started_at_ms);
                // A leader that exited streams nothing more: waiting is vain.
                // One handing over exits only once a follower holds its
                // whole log, so its silence is not worth the probes a
                // merely slow leader gets.
                let leader_gone = fo
                    .old_leader
                    .as_deref()
                    .and_then(|l| obs.member(l))
                    .is_none_or(|o| {
                        o.status().is_none()
                            && (fo.handing_over
                                || !o.merely_suspected(obs.settings.failure_threshold))
                    });
                if !caught_up && !leader_gone && waited < obs.settings.switchover_timeout_ms {
                    plan.waiting = Some(format!(
                        "switchover: waiting for {} to reach offset {end} (at {})",
                        fo.target.as_deref().unwrap_or("?"),
                        reached.map_or("unknown".to_string(), |o| o.to_string())
                    ));
                    break;
                }
                if !caught_up && !leader_gone {
                    plan.events.push(Event::new(
                        EventReason::FailoverBlocked,
                        format!(
                            "switchover target {} did not reach offset {end} within {} ms; the most up-to-date member is kept",
                            fo.target.as_deref().unwrap_or("?"),
                            obs.settings.switchover_timeout_ms
                        ),
                    ));
                }
                fo.phase = Phase::Fencing;
            }
            Phase::Fencing => {
                if fence_and_choose(obs, plan, &mut fo) {
                    continue;
                }
                break;
            }
            Phase::Promoting => {
                let chosen = fo.new_leader.as_deref().and_then(|n| obs.member(n));
                match chosen {
                    Some(c) if c.leads_at(fo.epoch) => {
                        fo.promote_ms = now.saturating_sub(fo.phase_started_at_ms);
                        fo.blocked = None;
                        fo.phase = Phase::Repointing;
                        fo.phase_started_at_ms = now;
                        plan.record.leader = Some(c.name.clone());
                        plan.record.epoch = fo.epoch;
                        plan.events.push(Event::new(
                            EventReason::Promoted,
                            format!("{} promoted to leader at epoch {}", c.name, fo.epoch),
                        ));
                    }
                    Some(c) if c.is_fenced_at(fo.epoch) => {
                        let waited = now.saturating_sub(fo.phase_started_at_ms);
                        if waited >= STEP_GRACE_MS {
                            if let Some(other) = as_complete_candidate(obs, c, fo.epoch) {
                                // Not at this epoch: a promotion of the first
                                // choice still in flight could land later,
                                // and two leaders would share it. Fenced
                                // again one epoch up, a late promotion at
                                // this one is refused; the other member wins
                                // the choice (it holds at least as much log,
                                // and ties go to it).
                                plan.events.push(Event::new(
                                    EventReason::PromotionRetargeted,
                                    format!(
                                        "promoting {} did not succeed within {waited} ms; fencing again at epoch {} to promote {}, which holds its whole log",
                                        c.name,
                                        fo.epoch + 1,
                                        other.name
                                    ),
                                ));
                                fo.target = Some(other.name.clone());
                                fo.epoch += 1;
                                fo.phase = Phase::Fencing;
                                fo.phase_started_at_ms = now;
                                fo.new_leader = None;
                                fo.blocked = None;
                                continue;
                            } else {
                                let why = format!(
                                    "promoting {} keeps failing and no other fenced member holds its whole log; retrying it",
                                    c.name
                                );
                                if fo.blocked.as_deref() != Some(why.as_str()) {
                                    plan.events.push(Event::new(
                                        EventReason::FailoverBlocked,
                                        why.clone(),
                                    ));
                                }
                                plan.waiting = Some(why.clone());
                                fo.blocked = Some(why);
                            }
                        }
                        plan.steps.push(Step::Promote {
                            member: c.name.clone(),
                            epoch: fo.epoch,
                        });
                        break;
                    }
                    Some(c) if c.merely_suspected(obs.settings.failure_threshold) => {
                        plan.waiting =
                            Some(format!("promoting {}: it does not answer; waiting", c.name));
                        break;
                    }
                    _ => {
                        // It died or changed under us, perhaps promoted:
                        // choose again above its epoch, so two leaders can
                        // never share one.
                        fo.epoch += 1;
                        fo.phase = Phase::Fencing;
                        fo.new_leader = None;
                    }
                }
            }
            Phase::Repointing | Phase::Relabeling => {
                let leader = fo.new_leader.as_deref().and_then(|n| obs.member(n));
                let Some(leader) = leader.filter(|l| l.leads_at(fo.epoch)) else {
                    if leader.is_some_and(|l| l.merely_suspected(obs.settings.failure_threshold)) {
                        plan.waiting = Some(format!(
                            "new leader {} does not answer; waiting",
                            fo.new_leader.as_deref().unwrap_or("?")
                        ));
                        break;
                    }
                    // The new leader was promoted and then failed: this
                    // failover is over; the next pass detects that failure.
                    complete(obs, plan, fo);
                    return;
                };
                if fo.phase == Phase::Repointing {
                    let stragglers: Vec<&MemberView> = obs
                        .members
                        .iter()
                        .filter(|m| {
                            m.name != leader.name
                                && m.status().is_some()
                                && !m.follows(leader, fo.epoch)
                        })
                        .collect();
                    let waited = now.saturating_sub(fo.phase_started_at_ms);
                    if !stragglers.is_empty() && waited < STEP_GRACE_MS {
                        plan.steps
                            .extend(stragglers.iter().map(|m| follow_step(m, leader, fo.epoch)));
                        break;
                    }
                    if !stragglers.is_empty() {
                        // Writes wait for the leader label: a member that
                        // answers but keeps refusing to follow must not hold
                        // it back. It is repointed in the steady state.
                        let names: Vec<&str> = stragglers.iter().map(|m| m.name.as_str()).collect();
                        plan.events.push(Event::new(
                            EventReason::RepointIncomplete,
                            format!(
                                "{} did not follow {} within {waited} ms; relabelling without them (they are repointed later)",
                                names.join(", "),
                                leader.name
                            ),
                        ));
                    }
                    fo.repoint_ms = waited;
                    fo.phase = Phase::Relabeling;
                    fo.phase_started_at_ms = now;
                }
                plan.steps = label_steps(obs, Some(leader), fo.epoch);
                if !plan.steps.is_empty() {
                    break;
                }
                complete(obs, plan, fo);
                return;
            }
        }
    }
    plan.record.failover = Some(fo);
}

/// Close a failover: its record, the completion event.
fn complete(obs: &Observation, plan: &mut Plan, fo: FailoverProgress) {
    let now = obs.now_ms;
    let relabel_ms = if fo.phase == Phase::Relabeling {
        now.saturating_sub(fo.phase_started_at_ms)
    } else {
        0
    };
    let record = FailoverRecord {
        reason: fo.reason,
        old_leader: fo.old_leader.clone(),
        new_leader: fo.new_leader.clone().unwrap_or_default(),
        epoch: fo.epoch,
        started_at: rfc3339(fo.started_at_ms),
        started_at_ms: fo.started_at_ms,
        detect_ms: fo.detect_ms,
        fence_ms: fo.fence_ms,
        promote_ms: fo.promote_ms,
        repoint_ms: fo.repoint_ms,
        relabel_ms,
        total_ms: now.saturating_sub(fo.started_at_ms),
        lost_bytes: fo.lost_bytes,
        fork_offset: fo.fork_offset,
    };
    plan.events.push(Event::new(
        EventReason::FailoverCompleted,
        format!(
            "{} {} -> {} at epoch {} in {} ms (detect {}, fence {}, promote {}, repoint {}, relabel {}), lost bytes {}",
            record.reason.as_str(),
            record.old_leader.as_deref().unwrap_or("none"),
            record.new_leader,
            record.epoch,
            record.total_ms,
            record.detect_ms,
            record.fence_ms,
            record.promote_ms,
            record.repoint_ms,
            record.relabel_ms,
            record.lost_bytes
        ),
    ));
    plan.record.failover = None;
    plan.record.last_failover = Some(record.clone());
    plan.completed = Some(record);
}

/// The fence phase: fence whom we can; when the safety rule holds, choose
/// and move to promotion (true), else say why (false).
fn fence_and_choose(obs: &Observation, plan: &mut Plan, fo: &mut FailoverProgress) -> bool {
    let old = fo.old_leader.as_deref();
    for m in &obs.members {
        if m.status().is_some() && !m.is_fenced_at(fo.epoch) {
            plan.steps.push(Step::Fence {
                member: m.name.clone(),
                epoch: fo.epoch,
            });
        }
    }
    if !plan.steps.is_empty() {
        return false;
    }
    let members = u32::try_from(obs.members.len()).unwrap_or(u32::MAX);
    let followers = obs.settings.replicas.max(members) - u32::from(old.is_some());
    let fenced = u32::try_from(
        obs.members
            .iter()
            .filter(|m| Some(m.name.as_str()) != old && m.is_fenced_at(fo.epoch))
            .count(),
    )
    .unwrap_or(u32::MAX);
    let old_fenced = old
        .and_then(|o| obs.member(o))
        .is_some_and(|o| o.is_fenced_at(fo.epoch));
    let required = match obs.settings.mode {
        ReplicationMode::Async => 1,
        ReplicationMode::SemiSync => (followers + 1)
            .saturating_sub(obs.settings.sync_replicas)
            .max(1),
        ReplicationMode::Sync => followers.max(1),
    };
    let candidates: Vec<&MemberView> = obs
        .members
        .iter()
        .filter(|m| m.is_fenced_at(fo.epoch) && !m.loading_snapshot())
        .collect();
    let blocked = if fenced < required && !old_fenced {
        Some(format!(
            "{fenced} of {followers} followers fenced at epoch {}; {:?} mode needs {required} to be sure no acknowledged write is lost",
            fo.epoch, obs.settings.mode
        ))
    } else if candidates.is_empty() {
        Some(format!(
            "no fenced member can be promoted at epoch {}",
            fo.epoch
        ))
    } else {
        None
    };
    if let Some(why) = blocked {
        if fo.blocked.as_deref() != Some(why.as_str()) {
            plan.events
                .push(Event::new(EventReason::FailoverBlocked, why.clone()));
        }
        plan.waiting = Some(why.clone());
        fo.blocked = Some(why);
        return false;
    }
    let target = fo.target.as_deref();
    // A switchover target that reached the fenced leader's log end holds
    // every record the leader had (it streamed them from it, and a fenced
    // leader appends nothing more), so it wins outright. Ranking it by
    // (log epoch, end) alone would keep the old leader whenever nothing was
    // written since the old leader's promotion: a leader reports the epoch
    // it was promoted at as its log epoch, its followers the epoch of their
    // last record, lower with no record since.
    let caught_up_target = |m: &MemberView| {
        Some(m.name.as_str()) == target
            && fo.reason == FailoverReason::Switchover
            && fo
                .leader_end
                .zip(m.log_position())
                .is_some_and(|(end, (_, reached))| reached >= end)
    };
    let Some(chosen) = candidates.iter().copied().max_by(|a, b| {
        let key = |m: &MemberView| {
            (
                caught_up_target(m),
                m.log_position().unwrap_or((0, 0)),
                Some(m.name.as_str()) == target,
                std::cmp::Reverse(m.ordinal),
            )
        };
        key(a).cmp(&key(b))
    }) else {
        return false;
    };
    let chosen_end = chosen.log_position().map_or(0, |(_, end)| end);
    fo.fork_offset = chosen_end;
    fo.lost_bytes = fo
        .old_leader_committed
        .map_or(0, |c| c.saturating_sub(chosen_end));
    fo.blocked = None;
    fo.fence_ms = obs.now_ms.saturating_sub(fo.phase_started_at_ms);
    fo.new_leader = Some(chosen.name.clone());
    fo.phase = Phase::Promoting;
    fo.phase_started_at_ms = obs.now_ms;
    let (log_epoch, end) = chosen.log_position().unwrap_or((0, 0));
    plan.events.push(Event::new(
        EventReason::LeaderFenced,
        format!(
            "{} of {followers} followers fenced at epoch {}{}; choosing {} (log epoch {log_epoch}, offset {end}){}",
            fenced,
            fo.epoch,
            if old_fenced { " with the old leader" } else { "" },
            chosen.name,
            if fo.lost_bytes > 0 {
                format!("; {} bytes acknowledged by the old leader are lost", fo.lost_bytes)
            } else {
                String::new()
            }
        ),
    ));
    true
}

/// The role label each member should carry with `leader` leading at
/// `epoch`; members merely suspected keep theirs.
pub fn desired_labels(
    obs: &Observation,
    leader: Option<&MemberView>,
    epoch: u64,
) -> BTreeMap<String, Option<RoleLabel>> {
    obs.members
        .iter()
        .map(|m| {
            let want = if m.merely_suspected(obs.settings.failure_threshold) {
                m.label
            } else {
                match leader {
                    Some(l) if l.name == m.name => l.leads_at(epoch).then_some(RoleLabel::Leader),
                    Some(l) => m.follows(l, epoch).then_some(RoleLabel::Follower),
                    None => None,
                }
            };
            (m.name.clone(), want)
        })
        .collect()
}

/// Label changes, removals (and the old leader's label) first, so the
/// leader Service is briefly empty rather than ever pointing at two pods.
fn label_steps(obs: &Observation, leader: Option<&MemberView>, epoch: u64) -> Vec<Step> {
    let desired = desired_labels(obs, leader, epoch);
    let mut first = Vec::new();
    let mut then = Vec::new();
    for m in &obs.members {
        let want = desired.get(&m.name).copied().flatten();
        if m.label == want {
            continue;
        }
        let step = Step::Label {
            member: m.name.clone(),
            role: want,
        };
        if want.is_none() || m.label == Some(RoleLabel::Leader) {
            first.push(step);
        } else {
            then.push(step);
        }
    }
    first.extend(then);
    first
}

fn rfc3339(unix_ms: u64) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Members a StatefulSet may run: never fewer than the leader's ordinal + 1
/// (scale-down never removes the leader), with the reason when held back.
pub fn statefulset_replicas(desired: i32, leader_ordinal: Option<i32>) -> (i32, Option<String>) {
    match leader_ordinal.filter(|o| *o >= desired) {
        Some(ordinal) => (
            ordinal + 1,
            Some(format!(
                "scale-down to {desired} would remove the leader (member {ordinal}); keeping {} members until a switchover moves leadership",
                ordinal + 1
            )),
        ),
        None => (desired, None),
    }
}

#[cfg(test)]
mod tests;
