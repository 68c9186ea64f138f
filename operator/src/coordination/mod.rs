//! The drivers' shared half: probe members, count their failed probes, and
//! carry out the failover brain's plans ([`crate::brain`]) through the
//! nodes' admin API and a [`Driver`] (the Kubernetes controller or local
//! mode) that records state, moves role labels and publishes events.
//!
//! One pass ([`run_pass`]): build an observation, decide, record the
//! decision *before* acting on it, take the steps, re-probe the members
//! they touched, decide again, until the brain has nothing left to do now.
//! An operator that dies anywhere in a pass resumes from what it recorded.

pub mod admin;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, join_all};
use rstore_node::admin::{Role, StatusResponse};

pub use admin::{HttpNodeAdmin, Member, NodeAdmin};

use crate::brain::{
    self, Event, FailoverRecord, LastSeen, MemberView, Observation, Plan, Presence, Recorded,
    RoleLabel, Settings, Step,
};
use crate::crd::MemberStatus;

/// Most decisions one pass makes (a whole failover needs about six).
const MAX_ROUNDS: usize = 24;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What the driver does besides the admin calls.
pub trait Driver: Send + Sync {
    /// Record `plan.record` durably; called before any of its steps.
    fn persist<'a>(
        &'a self,
        plan: &'a Plan,
        members: &'a [MemberStatus],
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Put `role` on `member` (or take its label off).
    fn label<'a>(
        &'a self,
        member: &'a Member,
        role: Option<RoleLabel>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Publish and log one of the brain's events.
    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()>;
}

/// Consecutive failed probes and the last good probe, per member.
#[derive(Debug, Default, Clone)]
pub struct ProbeTracker {
    tracks: HashMap<String, Track>,
}

#[derive(Debug, Default, Clone)]
struct Track {
    failures: u32,
    failing_since_ms: Option<u64>,
    last_seen: Option<LastSeen>,
}

impl ProbeTracker {
    /// Count one timed probe of `name`.
    pub fn record(&mut self, name: &str, probe: &Result<StatusResponse, String>, now_ms: u64) {
        let track = self.tracks.entry(name.to_string()).or_default();
        match probe {
            Ok(status) => {
                track.failures = 0;
                track.failing_since_ms = None;
                track.last_seen = Some(last_seen(status));
            }
            Err(_) => {
                track.failures = track.failures.saturating_add(1);
                track.failing_since_ms.get_or_insert(now_ms);
            }
        }
    }

    /// Count a pass's probes, one per member. Only a pass on the probe
    /// timer counts a failure toward `failureThreshold`: extra passes (a
    /// pod event, a failover under way) would otherwise reach N failures
    /// sooner than N probe periods. An answer always ends a run of failures.
    pub fn record_pass(
        &mut self,
        members: &[Member],
        probes: &[Result<StatusResponse, String>],
        now_ms: u64,
        wake: Wake,
    ) {
        for (member, probe) in members.iter().zip(probes) {
            match probe {
                Ok(_) => self.record(&member.name, probe, now_ms),
                Err(_) if wake == Wake::Timer => self.record(&member.name, probe, now_ms),
                Err(_) => {}
            }
        }
    }

    /// A member seen answering outside the timer (after a step).
    fn seen(&mut self, name: &str, status: &StatusResponse) {
        let track = self.tracks.entry(name.to_string()).or_default();
        track.last_seen = Some(last_seen(status));
    }

    /// Forget members that no longer exist.
    pub fn retain(&mut self, names: &[&str]) {
        self.tracks.retain(|k, _| names.contains(&k.as_str()));
    }

    pub fn failures(&self, name: &str) -> u32 {
        self.tracks.get(name).map_or(0, |t| t.failures)
    }
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The probe timer (every `probePeriod`): its failed probes count.
    Timer,
    /// Something changed (a pod event): react now, count nothing failed.
    Poke,
    /// A short re-run while a failover or bootstrap is under way.
    Quick,
}

/// The probe timer of a driver: a tick every period measured from the
/// previous tick, not from the end of the previous pass (a pass that takes
/// part of a period does not stretch it; one that overruns delays the next
/// tick instead of bunching ticks up), plus pokes and quick re-runs.
#[derive(Debug)]
pub struct ProbeClock {
    ticker: tokio::time::Interval,
    period: Duration,
}

impl ProbeClock {
    /// First tick at once.
    pub fn new(period: Duration) -> Self {
        Self {
            ticker: Self::ticker(tokio::time::Instant::now(), period),
            period,
        }
    }

    fn ticker(start: tokio::time::Instant, period: Duration) -> tokio::time::Interval {
        let mut ticker = tokio::time::interval_at(start, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    }

    /// A new period (the spec changed) starts counting from now.
    pub fn set_period(&mut self, period: Duration) {
        if period != self.period {
            self.period = period;
            self.ticker = Self::ticker(tokio::time::Instant::now() + period, period);
        }
    }

    /// Wait for the next pass: the timer, a `poke`, or after `quick` (while
    /// something is under way), whichever comes first.
    pub async fn next(&mut self, poke: &tokio::sync::Notify, quick: Option<Duration>) -> Wake {
        let quick = async {
            match quick {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.ticker.tick() => Wake::Timer,
            () = poke.notified() => Wake::Poke,
            () = quick => Wake::Quick,
        }
    }
}

fn last_seen(status: &StatusResponse) -> LastSeen {
    LastSeen {
        epoch: status.epoch,
        committed: status.offsets.committed,
        appended: status.offsets.appended,
    }
}

/// Probe every member concurrently, each within `timeout`. A member whose
/// pod is being deleted is probed too: its process runs until it exits,
/// and a leader among them is handing over (fenced, streaming its tail),
/// which the brain must see to wait for that tail instead of fencing the
/// followers that are taking it.
pub async fn probe_all(
    admin: &dyn NodeAdmin,
    members: &[Member],
    timeout: std::time::Duration,
) -> Vec<Result<StatusResponse, String>> {
    join_all(members.iter().map(|member| async move {
        if member.presence == Presence::Gone {
            return Err("not running".to_string());
        }
        match tokio::time::timeout(timeout, admin.status(member)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }))
    .await
}

/// An admin call or label change that was made, for events, metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub step: Step,
    /// `Err` carries the node's (or API's) error text.
    pub result: Result<(), String>,
}

/// What one pass saw and did.
#[derive(Debug, Clone)]
pub struct PassOutcome {
    /// The last decision (nothing left to do now, or why not).
    pub plan: Plan,
    pub done: Vec<Done>,
    /// Members as last probed, by ordinal.
    pub members: Vec<MemberStatus>,
    /// Failovers that completed during the pass.
    pub completed: Vec<FailoverRecord>,
    /// Set when recording failed: nothing after it was done.
    pub persist_error: Option<String>,
}

/// Everything a pass starts from.
pub struct PassInput<'a> {
    pub settings: Settings,
    pub members: Vec<Member>,
    /// This tick's probes, one per member (from [`probe_all`]).
    pub probes: Vec<Result<StatusResponse, String>>,
    pub recorded: Recorded,
    pub switchover_to: Option<String>,
    pub tracker: &'a mut ProbeTracker,
}

/// One pass: decide, record, act, re-probe, decide again.
pub async fn run_pass(
    admin: &dyn NodeAdmin,
    driver: &dyn Driver,
    input: PassInput<'_>,
) -> PassOutcome {
    let PassInput {
        settings,
        mut members,
        mut probes,
        mut recorded,
        switchover_to,
        tracker,
    } = input;
    let mut done = Vec::new();
    let mut completed = Vec::new();
    let mut plan;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let obs = observation(
            &settings,
            &members,
            &probes,
            &recorded,
            &switchover_to,
            tracker,
        );
        plan = brain::decide(&obs);
        if plan.record != recorded {
            let statuses = member_statuses(&members, &probes, &plan);
            if let Err(err) = driver.persist(&plan, &statuses).await {
                tracing::warn!(%err, "cannot record the failover state; not acting on it");
                return PassOutcome {
                    members: statuses,
                    plan,
                    done,
                    completed,
                    persist_error: Some(err),
                };
            }
            recorded = plan.record.clone();
        }
        for event in &plan.events {
            driver.event(event).await;
        }
        if let Some(record) = &plan.completed {
            completed.push(record.clone());
        }
        if plan.steps.is_empty() || rounds >= MAX_ROUNDS {
            break;
        }
        let before = done.len();
        let touched = execute(admin, driver, &mut members, &plan.steps, &mut done).await;
        if done[before..].iter().all(|d| d.result.is_err()) {
            // Nothing went through (a member vanished, an API refusal):
            // deciding again now would only repeat it; the next tick will.
            break;
        }
        // Fresh observations of every member a step touched.
        let again = join_all(touched.iter().map(|&i| admin.status(&members[i]))).await;
        for (i, result) in touched.into_iter().zip(again) {
            let result = result.map_err(|e| e.to_string());
            if let Ok(status) = &result {
                tracker.seen(&members[i].name, status);
            }
            probes[i] = result;
        }
    }
    PassOutcome {
        members: member_statuses(&members, &probes, &plan),
        plan,
        done,
        completed,
        persist_error: None,
    }
}

fn observation(
    settings: &Settings,
    members: &[Member],
    probes: &[Result<StatusResponse, String>],
    recorded: &Recorded,
    switchover_to: &Option<String>,
    tracker: &ProbeTracker,
) -> Observation {
    Observation {
        now_ms: now_ms(),
        settings: settings.clone(),
        members: members
            .iter()
            .zip(probes)
            .map(|(m, probe)| {
                let track = tracker.tracks.get(&m.name).cloned().unwrap_or_default();
                MemberView {
                    name: m.name.clone(),
                    ordinal: m.ordinal,
                    repl_addr: m.repl_addr.clone(),
                    presence: m.presence,
                    probe: probe.clone(),
                    failures: track.failures,
                    failing_since_ms: track.failing_since_ms,
                    last_seen: track.last_seen,
                    label: m.role_label,
                }
            })
            .collect(),
        recorded: recorded.clone(),
        switchover_to: switchover_to.clone(),
    }
}

/// Take `steps` in order, fences of one batch together; returns the
/// indexes of members whose admin state a successful step changed.
async fn execute(
    admin: &dyn NodeAdmin,
    driver: &dyn Driver,
    members: &mut [Member],
    steps: &[Step],
    done: &mut Vec<Done>,
) -> Vec<usize> {
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let index = |name: &str| names.iter().position(|m| m == name);
    let mut touched = Vec::new();
    // Fences go out together: a dead member must not delay the others.
    let fences: Vec<(usize, u64)> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Fence { member, epoch } => index(member).map(|i| (i, *epoch)),
            _ => None,
        })
        .collect();
    let results = join_all(
        fences
            .iter()
            .map(|&(i, epoch)| admin.fence(&members[i], epoch)),
    )
    .await;
    for ((i, epoch), result) in fences.into_iter().zip(results) {
        let result = result.map(|_| ()).map_err(|e| e.to_string());
        log_step(&members[i].name, "fence", epoch, &result);
        if result.is_ok() {
            touched.push(i);
        }
        done.push(Done {
            step: Step::Fence {
                member: members[i].name.clone(),
                epoch,
            },
            result,
        });
    }
    for step in steps {
        let Some(i) = index(step.member()) else {
            continue;
        };
        let result = match step {
            Step::Fence { .. } => continue,
            Step::Promote { epoch, .. } => admin
                .promote(&members[i], *epoch)
                .await
                .map_err(|e| e.to_string()),
            Step::Follow {
                leader_addr, epoch, ..
            } => admin
                .follow(&members[i], leader_addr, *epoch)
                .await
                .map_err(|e| e.to_string()),
            Step::Label { role, .. } => {
                let result = driver.label(&members[i], *role).await;
                if result.is_ok() {
                    members[i].role_label = *role;
                }
                result
            }
        };
        let failed_promotion = matches!(step, Step::Promote { .. }) && result.is_err();
        match (step, &result) {
            (Step::Label { role, .. }, Ok(())) => {
                tracing::info!(member = %members[i].name, role = role.map_or("none", RoleLabel::as_str), "relabelled");
            }
            (Step::Label { .. }, Err(err)) => {
                tracing::warn!(member = %members[i].name, %err, "relabel failed");
            }
            (_, Ok(())) => {
                tracing::info!(?step, "member coordinated");
                touched.push(i);
            }
            (_, Err(err)) => tracing::warn!(?step, %err, "member coordination failed"),
        }
        done.push(Done {
            step: step.clone(),
            result,
        });
        if failed_promotion {
            break;
        }
    }
    touched.sort_unstable();
    touched.dedup();
    touched
}

fn log_step(member: &str, what: &str, epoch: u64, result: &Result<(), String>) {
    match result {
        Ok(()) => tracing::info!(%member, epoch, "{what} done"),
        Err(err) => tracing::warn!(%member, epoch, %err, "{what} failed"),
    }
}

/// Per-member status for the resource (or `cluster.json`), by ordinal.
pub fn member_statuses(
    members: &[Member],
    probes: &[Result<StatusResponse, String>],
    plan: &Plan,
) -> Vec<MemberStatus> {
    let leader_status = plan
        .leader()
        .and_then(|name| members.iter().position(|m| m.name == name))
        .and_then(|i| probes[i].as_ref().ok());
    let mut out: Vec<(i32, MemberStatus)> = members
        .iter()
        .zip(probes)
        .map(|(m, probe)| {
            let in_role = m.role_label.is_some();
            let mut status = MemberStatus {
                name: m.name.clone(),
                role: "unknown".to_string(),
                ready: m.pod_ready && in_role,
                ..MemberStatus::default()
            };
            match probe {
                Ok(s) => {
                    status.role = match s.role {
                        Role::Leader if s.fenced => "fenced",
                        Role::Leader => "leader",
                        Role::Follower => "follower",
                        Role::Idle => "idle",
                    }
                    .to_string();
                    status.epoch = to_i64(s.epoch);
                    status.offset = to_i64(s.offsets.applied);
                    if let Some(f) =
                        leader_status.and_then(|l| l.followers.iter().find(|f| f.node_id == m.name))
                    {
                        status.lag_bytes = Some(to_i64(f.lag_bytes));
                        status.lag_ms = Some(to_i64(f.lag_ms));
                    }
                    if !m.pod_ready {
                        status.message = Some("not ready".to_string());
                    } else if !in_role {
                        status.message = Some("not yet following the leader".to_string());
                    }
                }
                Err(err) => status.message = Some(err.clone()),
            }
            (m.ordinal, status)
        })
        .collect();
    out.sort_by_key(|(ordinal, _)| *ordinal);
    out.into_iter().map(|(_, s)| s).collect()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod fake;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::fake::FakeNodes;
    use super::*;

    /// A driver that keeps what it was told.
    #[derive(Default)]
    pub struct Recorder {
        pub records: Mutex<Vec<Recorded>>,
        pub labels: Mutex<Vec<(String, Option<RoleLabel>)>>,
        pub events: Mutex<Vec<String>>,
        pub fail_persist: Mutex<bool>,
    }

    impl Recorder {
        /// Give `members` the labels this driver was last told to set.
        fn relabel(&self, members: &mut [Member]) {
            let labels = self.labels.lock().unwrap();
            for m in members {
                m.role_label = labels
                    .iter()
                    .rev()
                    .find(|(n, _)| *n == m.name)
                    .and_then(|(_, r)| *r);
            }
        }
    }

    impl Driver for Recorder {
        fn persist<'a>(
            &'a self,
            plan: &'a Plan,
            _members: &'a [MemberStatus],
        ) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                if *self.fail_persist.lock().unwrap() {
                    return Err("status write refused".to_string());
                }
                self.records.lock().unwrap().push(plan.record.clone());
                Ok(())
            })
        }
        fn label<'a>(
            &'a self,
            member: &'a Member,
            role: Option<RoleLabel>,
        ) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                self.labels
                    .lock()
                    .unwrap()
                    .push((member.name.clone(), role));
                Ok(())
            })
        }
        fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                self.events
                    .lock()
                    .unwrap()
                    .push(event.reason.as_str().to_string());
            })
        }
    }

    pub fn member(i: i32) -> Member {
        Member {
            name: format!("rs-{i}"),
            ordinal: i,
            admin_addr: format!("rs-{i}:8080"),
            repl_addr: format!("rs-{i}:7379"),
            pod_ready: true,
            role_label: None,
            presence: Presence::Running,
            admin_token: None,
        }
    }

    async fn pass(
        nodes: &FakeNodes,
        driver: &Recorder,
        members: &[Member],
        recorded: &Recorded,
        tracker: &mut ProbeTracker,
    ) -> PassOutcome {
        let probes = probe_all(nodes, members, std::time::Duration::from_secs(1)).await;
        for (m, p) in members.iter().zip(&probes) {
            tracker.record(&m.name, p, now_ms());
        }
        run_pass(
            nodes,
            driver,
            PassInput {
                settings: Settings::default(),
                members: members.to_vec(),
                probes,
                recorded: recorded.clone(),
                switchover_to: None,
                tracker,
            },
        )
        .await
    }

    #[tokio::test]
    async fn a_pass_bootstraps_labels_and_records_before_acting() {
        let nodes = FakeNodes::idle(3);
        let driver = Recorder::default();
        let mut members: Vec<Member> = (0..3).map(member).collect();
        let mut tracker = ProbeTracker::default();
        let out = pass(
            &nodes,
            &driver,
            &members,
            &Recorded::default(),
            &mut tracker,
        )
        .await;
        assert_eq!(out.plan.leader(), Some("rs-0"));
        assert_eq!(
            nodes.calls(),
            [
                "promote rs-0 1",
                "follow rs-1 rs-0:7379 1",
                "follow rs-2 rs-0:7379 1"
            ]
        );
        // The record naming the leader was written before the promotion.
        assert_eq!(
            driver.records.lock().unwrap()[0].leader.as_deref(),
            Some("rs-0")
        );
        assert_eq!(driver.labels.lock().unwrap().len(), 3);
        assert!(out.members.iter().all(|m| m.epoch == 1));

        // The next pass, from what this one recorded and labelled, is quiet.
        driver.relabel(&mut members);
        let again = pass(&nodes, &driver, &members, &out.plan.record, &mut tracker).await;
        assert!(again.done.is_empty());
        assert_eq!(nodes.calls().len(), 3);
    }

    #[tokio::test]
    async fn nothing_is_done_when_the_decision_cannot_be_recorded() {
        let nodes = FakeNodes::idle(2);
        let driver = Recorder::default();
        *driver.fail_persist.lock().unwrap() = true;
        let members: Vec<Member> = (0..2).map(member).collect();
        let mut tracker = ProbeTracker::default();
        let out = pass(
            &nodes,
            &driver,
            &members,
            &Recorded::default(),
            &mut tracker,
        )
        .await;
        assert!(out.persist_error.unwrap().contains("refused"));
        assert!(nodes.calls().is_empty());
    }

    #[tokio::test]
    async fn a_failed_promotion_stops_the_follows() {
        let nodes = FakeNodes::idle(2);
        nodes.fail_promote("rs-0", "disk full");
        let driver = Recorder::default();
        let members: Vec<Member> = (0..2).map(member).collect();
        let mut tracker = ProbeTracker::default();
        let out = pass(
            &nodes,
            &driver,
            &members,
            &Recorded::default(),
            &mut tracker,
        )
        .await;
        let failure = out.done.iter().find(|d| d.result.is_err()).unwrap();
        assert!(failure.result.as_ref().unwrap_err().contains("disk full"));
        assert!(!nodes.calls().iter().any(|c| c.starts_with("follow")));
    }

    /// A leader pod being deleted fences itself and streams its tail for a
    /// few seconds (the node's hand-over): it must be probed, so the brain
    /// hands over by switchover and leaves the followers unfenced until
    /// the target holds that tail.
    #[tokio::test]
    async fn a_leader_pod_being_deleted_is_probed_and_hands_over_before_its_followers_are_fenced() {
        let nodes = FakeNodes::idle(3);
        let driver = Recorder::default();
        let mut members: Vec<Member> = (0..3).map(member).collect();
        let mut tracker = ProbeTracker::default();
        let mut recorded = Recorded::default();
        for _ in 0..2 {
            let out = pass(&nodes, &driver, &members, &recorded, &mut tracker).await;
            recorded = out.plan.record;
            driver.relabel(&mut members);
        }
        nodes.set_end("rs-0", 1400);
        nodes.set_end("rs-1", 1000);
        nodes.set_end("rs-2", 1000);
        nodes.fence_self("rs-0");
        members[0].presence = Presence::Deleting;
        let before = nodes.calls().len();
        let out = pass(&nodes, &driver, &members, &recorded, &mut tracker).await;
        recorded = out.plan.record;
        let fo = recorded.failover.clone().unwrap();
        assert_eq!(fo.reason, brain::FailoverReason::Switchover);
        assert_eq!(fo.phase, brain::Phase::CatchingUp);
        assert_eq!(fo.target.as_deref(), Some("rs-1"));
        assert_eq!(
            nodes.calls()[before..],
            ["fence rs-0 2"],
            "only the leader is fenced while its tail streams"
        );

        // The tail arrives; the process exits and its pod is gone.
        nodes.set_end("rs-1", 1400);
        nodes.set_down("rs-0", true);
        members[0].presence = Presence::Gone;
        let mut passes = 0;
        while recorded.failover.is_some() {
            passes += 1;
            assert!(passes < 5, "no hand-over after {passes} passes");
            let out = pass(&nodes, &driver, &members, &recorded, &mut tracker).await;
            recorded = out.plan.record;
        }
        let done = recorded.last_failover.unwrap();
        assert_eq!(done.reason, brain::FailoverReason::Switchover);
        assert_eq!(done.new_leader, "rs-1");
        assert_eq!(done.lost_bytes, 0);
    }

    #[test]
    fn only_timed_probes_count_toward_the_failure_threshold() {
        let members = [member(0)];
        let failed = [Err("connection refused".to_string())];
        let mut tracker = ProbeTracker::default();
        for wake in [Wake::Poke, Wake::Quick, Wake::Poke] {
            tracker.record_pass(&members, &failed, 1, wake);
        }
        assert_eq!(tracker.failures("rs-0"), 0, "pokes come as fast as events");
        tracker.record_pass(&members, &failed, 2, Wake::Timer);
        tracker.record_pass(&members, &failed, 3, Wake::Timer);
        assert_eq!(tracker.failures("rs-0"), 2);
        // An answer ends the run whenever it comes.
        let nodes = FakeNodes::idle(1);
        let answered = [Ok(nodes.snapshot(&members[0]).unwrap())];
        tracker.record_pass(&members, &answered, 4, Wake::Poke);
        assert_eq!(tracker.failures("rs-0"), 0);
    }

    #[tokio::test]
    async fn the_probe_timer_ticks_every_period_however_long_a_pass_takes() {
        let period = Duration::from_millis(200);
        let mut clock = ProbeClock::new(period);
        let poke = tokio::sync::Notify::new();
        let started = tokio::time::Instant::now();
        let mut timed = 0;
        while timed < 4 {
            if clock.next(&poke, None).await == Wake::Timer {
                timed += 1;
            }
            // A pass that takes most of a period.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // Ticks at 0, 200, 400, 600 ms (+ the last pass); sleeping a period
        // after each pass would take 4 x 350 ms.
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1_100), "{took:?}");
        // A poke wakes it at once, and is no timer tick; nor is a quick re-run.
        let mut clock = ProbeClock::new(Duration::from_secs(60));
        assert_eq!(
            clock.next(&poke, None).await,
            Wake::Timer,
            "first tick at once"
        );
        poke.notify_one();
        assert_eq!(clock.next(&poke, None).await, Wake::Poke);
        assert_eq!(
            clock.next(&poke, Some(Duration::from_millis(1))).await,
            Wake::Quick
        );
    }

    #[tokio::test]
    async fn a_dead_leader_is_failed_over_across_passes_fed_by_their_own_records() {
        let nodes = FakeNodes::idle(3);
        let driver = Recorder::default();
        let mut members: Vec<Member> = (0..3).map(member).collect();
        let mut tracker = ProbeTracker::default();
        let mut recorded = Recorded::default();
        for _ in 0..2 {
            let out = pass(&nodes, &driver, &members, &recorded, &mut tracker).await;
            recorded = out.plan.record;
            driver.relabel(&mut members);
        }
        nodes.set_down("rs-0", true);
        let mut passes = 0;
        while recorded.last_failover.is_none() {
            passes += 1;
            assert!(passes < 10, "no failover after {passes} passes");
            let out = pass(&nodes, &driver, &members, &recorded, &mut tracker).await;
            assert!(
                out.plan.record.leader.is_some(),
                "the leader is never forgotten"
            );
            recorded = out.plan.record;
        }
        assert_eq!(passes, 3, "three failed probes, then the failover");
        assert_eq!(recorded.leader.as_deref(), Some("rs-1"));
        assert_eq!(recorded.epoch, 2);
        assert!(
            driver.events.lock().unwrap().ends_with(
                &[
                    "FailoverStarted",
                    "LeaderFenced",
                    "Promoted",
                    "FailoverCompleted"
                ]
                .map(String::from)
            )
        );
    }
}
