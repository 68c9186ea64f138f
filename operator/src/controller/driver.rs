//! The Kubernetes driver of the failover brain: one task per
//! ReplicatedStore that probes its members on its own timer (every
//! `probePeriodMs`, [`ProbeClock`]), wakes at once when reconcile sees a
//! pod change (a leader pod deleted; such a pass reacts but its failed
//! probes do not count toward `failureThreshold`), runs
//! [`coordination::run_pass`], records the
//! brain's state in the resource's status (server-side apply, the whole
//! status every time, so the leader is never dropped), moves the role
//! labels on pods and publishes an Event per phase.
//!
//! Status is written only here (and by reconcile for an invalid spec), and
//! it is read back with a consistent GET at the start of every pass, so a
//! restarted operator resumes from exactly what the last pass wrote.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use tokio::sync::{Notify, watch};

use super::{Context, members, publish, publish_about, selector_string, status};
use crate::brain::{Event, FailoverReason, Plan, RoleLabel, Settings, Step};
use crate::build::pod::RESTART_HASH_ANNOTATION;
use crate::coordination::admin::AdminToken;
use crate::coordination::{self, Driver, Member, PassInput, ProbeClock, ProbeTracker, Wake};
use crate::crd::{MemberStatus, ReplicatedStore, ReplicatedStoreStatus};
use crate::error::Error;
use crate::labels::{self, ROLE_LABEL};
use crate::live_settings;
use crate::rollout::{self, RolloutInput, RolloutMember, RolloutStep};
use crate::validate::{ValidatedStore, validate};
use rstore_node::admin::{ReplicationSettings, StatusResponse};

/// Annotation requesting a planned switchover to the named pod.
pub const SWITCHOVER_ANNOTATION: &str = "rstore.dev/switchover-to";

/// How often a driver reads its store's admin token Secret again.
const TOKEN_REFRESH: Duration = Duration::from_secs(10);

/// What a driver task keeps between passes.
#[derive(Default)]
pub(crate) struct TaskState {
    pub tracker: ProbeTracker,
    /// The admin token, read again every [`TOKEN_REFRESH`]: a Secret
    /// deleted and recreated holds a new token, which the members read
    /// from their volume once the kubelet updates it.
    pub token: Option<AdminToken>,
    pub token_read_at: Option<std::time::Instant>,
    /// The member a rolling update waits on, and since when (unix ms).
    pub rollout_wait: Option<(String, u64)>,
    /// A switchover the rolling update asked for.
    pub rollout_switchover: Option<String>,
    /// Replication settings: what each member last reported, the leader's
    /// before the operator last changed them, and refused changes.
    pub live: LiveSettings,
}

/// What the driver remembers about live replication settings.
#[derive(Default)]
pub(crate) struct LiveSettings {
    /// Settings each member reported at its last good probe.
    reported: HashMap<String, ReplicationSettings>,
    /// The leader's settings before the driver changed them, and when
    /// (unix ms): writes it acknowledged just before may not meet the new
    /// rule yet, so a failover soon after counts them too.
    leader_before: Option<(ReplicationSettings, u64)>,
    /// Members that refused the settings: what was tried, and when.
    refused: HashMap<String, (ReplicationSettings, u64)>,
}

/// How long a leader's previous settings still count for a failover.
const SETTINGS_HISTORY_MS: u64 = 60_000;
/// How long before a refused settings change is tried again.
const SETTINGS_RETRY_MS: u64 = 10_000;

/// A running driver task.
struct Handle {
    spec: watch::Sender<ValidatedStore>,
    poke: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// Driver tasks by (namespace, name).
#[derive(Default)]
pub struct Drivers {
    tasks: Mutex<HashMap<(String, String), Handle>>,
}

impl Drivers {
    /// Start the store's driver (or hand it the new spec) and wake it.
    pub fn ensure(&self, ctx: &Arc<Context>, validated: &ValidatedStore) {
        let key = (validated.namespace.clone(), validated.name.clone());
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        if let Some(handle) = tasks.get(&key)
            && !handle.task.is_finished()
        {
            handle.spec.send_if_modified(|old| {
                let changed = old != validated;
                if changed {
                    *old = validated.clone();
                }
                changed
            });
            handle.poke.notify_one();
            return;
        }
        let (spec, spec_rx) = watch::channel(validated.clone());
        let poke = Arc::new(Notify::new());
        let task = tokio::spawn(run(ctx.clone(), spec_rx, poke.clone()));
        tasks.insert(key, Handle { spec, poke, task });
    }

    /// Stop the store's driver (the resource is being deleted).
    pub fn stop(&self, namespace: &str, name: &str) {
        if let Ok(mut tasks) = self.tasks.lock()
            && let Some(handle) = tasks.remove(&(namespace.to_string(), name.to_string()))
        {
            handle.task.abort();
        }
    }
}

/// Brain settings from a validated spec.
pub fn settings(store: &ValidatedStore) -> Settings {
    let spec = &store.spec;
    Settings {
        replicas: u32::try_from(spec.replicas).unwrap_or(1),
        mode: live_settings::mode(spec.replication.mode),
        sync_replicas: u32::try_from(spec.replication.sync_replicas).unwrap_or(1),
        failure_threshold: u32::try_from(spec.failover.failure_threshold).unwrap_or(3),
        ..Settings::default()
    }
}

fn millis(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

async fn run(ctx: Arc<Context>, mut spec: watch::Receiver<ValidatedStore>, poke: Arc<Notify>) {
    let mut state = TaskState::default();
    let mut period = probe_period(&spec.borrow());
    let mut clock = ProbeClock::new(period);
    let mut busy = false;
    loop {
        // A failover in progress is driven on a short timer too.
        let wake = clock
            .next(&poke, busy.then(|| period.min(QUICK_PASS)))
            .await;
        let validated = spec.borrow_and_update().clone();
        period = probe_period(&validated);
        clock.set_period(period);
        busy = match pass(&ctx, &validated, &mut state, wake).await {
            Ok(Some(busy)) => busy,
            Ok(None) => return, // the resource is gone
            Err(err) => {
                tracing::warn!(name = %validated.name, category = err.category(), %err, "failover pass failed");
                ctx.metrics.error(err.category());
                false
            }
        };
    }
}

/// How soon a pass follows one that left a failover under way.
const QUICK_PASS: Duration = Duration::from_millis(100);

fn probe_period(validated: &ValidatedStore) -> Duration {
    millis(validated.spec.failover.probe_period_ms).max(Duration::from_millis(50))
}

/// One pass; `Ok(None)` when the resource no longer exists, else whether
/// a failover is in progress.
pub(crate) async fn pass(
    ctx: &Arc<Context>,
    validated: &ValidatedStore,
    state: &mut TaskState,
    wake: Wake,
) -> Result<Option<bool>, Error> {
    let TaskState {
        tracker,
        token,
        token_read_at,
        rollout_wait,
        rollout_switchover,
        live,
    } = state;
    let name = &validated.name;
    let namespace = &validated.namespace;
    let stores: Api<ReplicatedStore> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(store) = stores
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("get {name}")))?
    else {
        return Ok(None);
    };
    if store.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let previous = store.status.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = pods_api
        .list(&ListParams::default().labels(&selector_string(&labels::selector_labels(name))))
        .await
        .map_err(Error::kube("list member pods"))?;
    let mut members = members::from_pods(name, namespace, &pods.items);
    if token.is_none() || token_read_at.is_none_or(|t| t.elapsed() >= TOKEN_REFRESH) {
        *token = super::admin_token(ctx, namespace, name).await?;
        if token.is_none() {
            // Deleted by hand: a new one now (the reconciler would only
            // on its next periodic pass; watching Secrets would need list
            // and watch on every Secret). Members read it from their
            // volume once the kubelet updates it.
            super::ensure_admin_token(ctx, validated).await?;
            *token = super::admin_token(ctx, namespace, name).await?;
        }
        *token_read_at = Some(std::time::Instant::now());
    }
    for member in &mut members {
        member.admin_token = token.clone();
    }
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    tracker.retain(&names);
    live.reported
        .retain(|name, _| names.contains(&name.as_str()));
    live.refused
        .retain(|name, _| names.contains(&name.as_str()));
    let probes = coordination::probe_all(
        ctx.admin.as_ref(),
        &members,
        millis(validated.spec.failover.probe_timeout_ms),
    )
    .await;
    let now = coordination::now_ms();
    tracker.record_pass(&members, &probes, now, wake);
    for (member, probe) in members.iter().zip(&probes) {
        if let Ok(reported) = probe
            && let Some(settings) = &reported.settings
        {
            live.reported.insert(member.name.clone(), *settings);
        }
    }
    if live
        .leader_before
        .as_ref()
        .is_some_and(|(_, at)| now.saturating_sub(*at) > SETTINGS_HISTORY_MS)
    {
        live.leader_before = None;
    }
    let desired_settings = live_settings::desired(&validated.spec.replication);
    let mut brain_settings = settings(validated);
    (brain_settings.mode, brain_settings.sync_replicas) = live_settings::for_failover(
        (brain_settings.mode, brain_settings.sync_replicas),
        previous.leader.as_ref().and_then(|l| live.reported.get(l)),
        live.leader_before.as_ref().map(|(s, _)| s),
    );
    let requested = store.annotations().get(SWITCHOVER_ANNOTATION).cloned();
    let switchover_to = requested.clone().or_else(|| rollout_switchover.clone());
    // The spec as stored may be invalid now; the last valid one drives the
    // brain (a failover must not wait for a typo to be fixed) and the
    // InvalidSpec conditions stay.
    let invalid = validate(&store, ctx.settings.default_image.as_deref()).err();
    let driver = KubeDriver {
        ctx: ctx.clone(),
        store: store.clone(),
        pods: pods_api,
        desired_replicas: validated.replicas(),
        last: Mutex::new(previous.clone()),
        invalid: invalid.clone(),
        rollout: Mutex::new(None),
        settings_in_sync: Mutex::new(in_sync(&members, &probes, &desired_settings)),
        revisions: pods
            .items
            .iter()
            .filter_map(|p| {
                Some((
                    p.metadata.name.clone()?,
                    p.labels().get(REVISION_LABEL)?.clone(),
                ))
            })
            .collect(),
    };
    let outcome = coordination::run_pass(
        ctx.admin.as_ref(),
        &driver,
        PassInput {
            settings: brain_settings,
            members: members.clone(),
            probes: probes.clone(),
            recorded: status::recorded(&previous),
            switchover_to: switchover_to.clone(),
            tracker,
        },
    )
    .await;
    if let Some(err) = outcome.persist_error {
        return Err(Error::Status(err));
    }
    for done in &outcome.done {
        record_action(ctx, &store, done).await;
    }
    for record in &outcome.completed {
        ctx.metrics
            .failover(record.reason.as_str(), record.total_ms as f64 / 1000.0);
    }
    if rollout_switchover.as_ref().is_some_and(|t| {
        outcome.plan.record.failover.is_none() && outcome.plan.record.leader.as_ref() == Some(t)
    }) {
        *rollout_switchover = None;
    }
    let step = if outcome.plan.record.failover.is_some() {
        None
    } else {
        let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
        let sts = statefulsets
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("get StatefulSet {name}")))?;
        let replicas = sts
            .as_ref()
            .and_then(|sts| sts.spec.as_ref())
            .and_then(|spec| spec.replicas)
            .unwrap_or(0);
        // The template's restart hash: the one of the revision the
        // StatefulSet creates pods at (it is part of that template).
        let restart_hash = sts
            .as_ref()
            .and_then(|sts| sts.spec.as_ref())
            .and_then(|spec| spec.template.metadata.as_ref())
            .and_then(|meta| meta.annotations.as_ref())
            .and_then(|a| a.get(RESTART_HASH_ANNOTATION))
            .cloned();
        let update_revision = sts
            .and_then(|sts| sts.status)
            .and_then(|st| st.update_revision);
        let step = rollout::plan(&RolloutInput {
            update_revision,
            restart_hash,
            replicas,
            members: rollout_members(&pods.items, &outcome.members),
            leader: outcome.plan.record.leader.clone(),
            failover_in_progress: false,
            max_lag_bytes: ROLLOUT_MAX_LAG_BYTES,
            now_ms: coordination::now_ms(),
            waiting_on: rollout_wait.clone(),
            stuck_after_ms: ROLLOUT_STUCK_AFTER_MS,
        });
        // A failed step (e.g. a pod the operator may not delete) must not
        // keep the status from being written: it says what the update waits on.
        if let Err(err) = roll(
            ctx,
            &store,
            &driver.pods,
            &step,
            rollout_wait,
            rollout_switchover,
        )
        .await
        {
            tracing::warn!(%name, category = err.category(), %err, "rolling update step failed");
            ctx.metrics.error(err.category());
            publish(
                ctx,
                &store,
                EventType::Warning,
                "RollingUpdateFailed",
                "Update",
                err.to_string(),
            )
            .await;
        }
        Some(step)
    };
    if let Ok(mut r) = driver.rollout.lock() {
        *r = step;
    }
    // Settings are pushed outside a failover: during one, the brain alone
    // talks to the members.
    if outcome.plan.record.failover.is_none() {
        let synced = apply_settings(
            ctx,
            &store,
            &members,
            &probes,
            &desired_settings,
            outcome.plan.record.leader.as_deref(),
            live,
        )
        .await;
        if let Ok(mut map) = driver.settings_in_sync.lock() {
            map.extend(synced);
        }
    }
    // The final status of the pass (members and conditions move even when
    // the brain's record does not).
    driver
        .write(&outcome.plan, &outcome.members)
        .await
        .map_err(Error::Status)?;
    // A switchover request is done once one completed, or when it can
    // never be carried out.
    let switchover_done = outcome
        .completed
        .iter()
        .any(|r| r.reason == FailoverReason::Switchover)
        || outcome
            .plan
            .waiting
            .as_deref()
            .is_some_and(|w| w.contains("is not a member"))
        || (requested.is_some()
            && requested == outcome.plan.record.leader
            && outcome.plan.record.failover.is_none());
    if switchover_done && requested.is_some() {
        let patch = serde_json::json!({"metadata": {"annotations": {SWITCHOVER_ANNOTATION: null}}});
        stores
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube(format!(
                "clear {SWITCHOVER_ANNOTATION} on {name}"
            )))?;
    }
    Ok(Some(outcome.plan.record.failover.is_some()))
}

/// Whether each member that reports its settings runs `desired`.
fn in_sync(
    members: &[Member],
    probes: &[Result<StatusResponse, String>],
    desired: &ReplicationSettings,
) -> BTreeMap<String, bool> {
    members
        .iter()
        .zip(probes)
        .filter_map(|(m, p)| {
            let reported = p.as_ref().ok()?.settings.as_ref()?;
            Some((m.name.clone(), reported == desired))
        })
        .collect()
}

/// Push `desired` to every member that reports other settings, the leader
/// first (`POST /config`, applied live and persisted by the node). Returns
/// whether each member it called is in sync now. A refusal (the node
/// finds the settings invalid) is a Warning event once per member and
/// settings, retried every [`SETTINGS_RETRY_MS`].
async fn apply_settings(
    ctx: &Context,
    store: &ReplicatedStore,
    members: &[Member],
    probes: &[Result<StatusResponse, String>],
    desired: &ReplicationSettings,
    leader: Option<&str>,
    live: &mut LiveSettings,
) -> BTreeMap<String, bool> {
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    live.refused.retain(|_, (tried, _)| tried == desired);
    let now = coordination::now_ms();
    let mut synced = BTreeMap::new();
    for outdated in live_settings::outdated(&names, probes, desired, leader) {
        let Some(member) = members.get(outdated.index) else {
            continue;
        };
        let name = &member.name;
        let retry_at = live.refused.get(name).map(|(_, at)| at + SETTINGS_RETRY_MS);
        if retry_at.is_some_and(|at| now < at) {
            continue;
        }
        let change = format!(
            "{} -> {}",
            live_settings::describe(&outdated.current),
            live_settings::describe(desired)
        );
        match ctx.admin.set_config(member, desired).await {
            Ok(in_force) => {
                live.refused.remove(name);
                if Some(name.as_str()) == leader {
                    live.leader_before = Some((outdated.current, now));
                }
                live.reported.insert(name.clone(), in_force);
                synced.insert(name.clone(), in_force == *desired);
                ctx.metrics.member_action("configure", true);
                tracing::info!(member = %name, "replication settings applied: {change}");
                publish_about(
                    ctx,
                    store,
                    Some(name),
                    EventType::Normal,
                    "SettingsApplied",
                    "Configure",
                    format!("{name}: {change}"),
                )
                .await;
            }
            Err(err) => {
                ctx.metrics.member_action("configure", false);
                let first = retry_at.is_none();
                live.refused.insert(name.clone(), (*desired, now));
                if first {
                    tracing::warn!(member = %name, %err, "replication settings not applied: {change}");
                    publish_about(
                        ctx,
                        store,
                        Some(name),
                        EventType::Warning,
                        "SettingsFailed",
                        "Configure",
                        format!("{name}: {change}: {err}"),
                    )
                    .await;
                } else {
                    tracing::debug!(member = %name, %err, "replication settings still not applied");
                }
            }
        }
    }
    synced
}

/// A follower further behind than this is not caught up (rolling update).
const ROLLOUT_MAX_LAG_BYTES: u64 = 1 << 20;
/// A rolling update waiting this long on one member is stuck.
pub(crate) const ROLLOUT_STUCK_AFTER_MS: u64 = 10 * 60 * 1000;
/// The pod label holding its StatefulSet revision.
const REVISION_LABEL: &str = "controller-revision-hash";

fn rollout_members(pods: &[Pod], members: &[MemberStatus]) -> Vec<RolloutMember> {
    members
        .iter()
        .filter_map(|m| {
            let pod = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(&m.name))?;
            let ordinal = m.name.rsplit_once('-')?.1.parse().ok()?;
            Some(RolloutMember {
                name: m.name.clone(),
                ordinal,
                revision: pod.labels().get(REVISION_LABEL).cloned(),
                restart_hash: pod.annotations().get(RESTART_HASH_ANNOTATION).cloned(),
                ready: m.ready,
                being_deleted: pod.metadata.deletion_timestamp.is_some(),
                lag_bytes: m.lag_bytes.and_then(|l| u64::try_from(l).ok()),
                label: RoleLabel::parse(&m.role).filter(|_| m.ready),
            })
        })
        .collect()
}

/// Carry out a rollout step; remember what it waits on.
async fn roll(
    ctx: &Context,
    store: &ReplicatedStore,
    pods: &Api<Pod>,
    step: &RolloutStep,
    waiting: &mut Option<(String, u64)>,
    switchover: &mut Option<String>,
) -> Result<(), Error> {
    match step {
        RolloutStep::Done => {
            *waiting = None;
            *switchover = None;
        }
        RolloutStep::Delete(pod) => {
            *waiting = None;
            tracing::info!(%pod, "rolling update: replacing member");
            pods.delete(pod, &DeleteParams::default())
                .await
                .map_err(Error::kube(format!("delete pod {pod}")))?;
            publish_about(
                ctx,
                store,
                Some(pod),
                EventType::Normal,
                "RollingUpdate",
                "Update",
                format!("{pod} deleted to run the new revision"),
            )
            .await;
        }
        RolloutStep::Switchover(to) => {
            *waiting = None;
            if switchover.as_deref() != Some(to.as_str()) {
                tracing::info!(%to, "rolling update: switchover before updating the leader");
                *switchover = Some(to.clone());
            }
        }
        RolloutStep::Wait { member, .. } | RolloutStep::Stuck { member, .. } => {
            if waiting.as_ref().is_none_or(|(m, _)| m != member) {
                *waiting = Some((member.clone(), coordination::now_ms()));
            }
        }
    }
    Ok(())
}

/// Events for steady-state actions and for every failed step.
async fn record_action(ctx: &Context, store: &ReplicatedStore, done: &coordination::Done) {
    let (action, reason, note) = match &done.step {
        Step::Follow {
            member,
            leader,
            epoch,
            ..
        } => (
            "follow",
            "Following",
            format!("{member} follows {leader} at epoch {epoch}"),
        ),
        Step::Promote { member, epoch } => (
            "promote",
            "PromoteCalled",
            format!("{member} promoted at epoch {epoch}"),
        ),
        Step::Fence { member, epoch } => (
            "fence",
            "Fenced",
            format!("{member} fenced at epoch {epoch}"),
        ),
        Step::Label { member, role } => (
            "label",
            "Relabelled",
            format!(
                "{member} labelled {}",
                role.map_or("none", RoleLabel::as_str)
            ),
        ),
    };
    ctx.metrics.member_action(action, done.result.is_ok());
    let pod = done.step.member();
    match &done.result {
        Ok(()) if action == "follow" => {
            publish_about(
                ctx,
                store,
                Some(pod),
                EventType::Normal,
                reason,
                action,
                note,
            )
            .await;
        }
        Ok(()) => {}
        Err(err) => {
            publish_about(
                ctx,
                store,
                Some(pod),
                EventType::Warning,
                &format!("{}Failed", capitalized(action)),
                action,
                format!("{note}: {err}"),
            )
            .await;
        }
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

struct KubeDriver {
    ctx: Arc<Context>,
    store: ReplicatedStore,
    pods: Api<Pod>,
    desired_replicas: i32,
    /// The status last written (or read), for condition merging and to
    /// skip writes that change nothing.
    last: Mutex<ReplicatedStoreStatus>,
    invalid: Option<crate::validate::ValidationError>,
    /// The rolling update's step this pass, for conditions.
    rollout: Mutex<Option<RolloutStep>>,
    /// Pod name -> StatefulSet revision it runs.
    revisions: BTreeMap<String, String>,
    /// Pod name -> whether its node runs the spec's replication settings.
    settings_in_sync: Mutex<BTreeMap<String, bool>>,
}

impl KubeDriver {
    async fn write(&self, plan: &Plan, members: &[MemberStatus]) -> Result<(), String> {
        let previous = self
            .last
            .lock()
            .map(|s| s.clone())
            .map_err(|_| "status lock poisoned".to_string())?;
        let generation = self.store.metadata.generation;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let rollout = self.rollout.lock().ok().and_then(|r| r.clone());
        let in_sync = self
            .settings_in_sync
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let members: Vec<MemberStatus> = members
            .iter()
            .map(|m| MemberStatus {
                revision: self.revisions.get(&m.name).cloned(),
                settings_in_sync: in_sync.get(&m.name).copied(),
                ..m.clone()
            })
            .collect();
        let members = members.as_slice();
        let mut next = status::from_plan(
            &previous,
            self.desired_replicas,
            plan,
            members,
            rollout.as_ref(),
            generation,
            &now,
        );
        if let Some(err) = &self.invalid {
            next = status::invalid(&next, err, generation, &now);
        }
        if next == previous {
            return Ok(());
        }
        super::patch_status(
            &self.ctx,
            &self.store.name_any(),
            &self.store.namespace().unwrap_or_default(),
            &next,
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Ok(mut last) = self.last.lock() {
            *last = next;
        }
        Ok(())
    }
}

impl Driver for KubeDriver {
    fn persist<'a>(
        &'a self,
        plan: &'a Plan,
        members: &'a [MemberStatus],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.write(plan, members))
    }

    fn label<'a>(
        &'a self,
        member: &'a Member,
        role: Option<RoleLabel>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let patch = serde_json::json!({
                "metadata": {"labels": {ROLE_LABEL: role.map(RoleLabel::as_str)}}
            });
            self.pods
                .patch(&member.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| format!("label pod {}: {e}", member.name))
        })
    }

    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let name = self.store.name_any();
            if event.is_warning() {
                tracing::warn!(%name, reason = event.reason.as_str(), "{}", event.message);
            } else {
                tracing::info!(%name, reason = event.reason.as_str(), "{}", event.message);
            }
            let type_ = if event.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish(
                &self.ctx,
                &self.store,
                type_,
                event.reason.as_str(),
                "Failover",
                event.message.clone(),
            )
            .await;
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_spec() {
        let store: ReplicatedStore = serde_yaml::from_str(
            "apiVersion: rstore.dev/v1alpha1\nkind: ReplicatedStore\nmetadata: {name: a, namespace: n}\nspec:\n  replicas: 5\n  replication: {mode: sync}\n  failover: {failureThreshold: 7}\n",
        )
        .unwrap();
        let v = validate(&store, Some("img")).unwrap();
        let s = settings(&v);
        assert_eq!(s.replicas, 5);
        assert_eq!(s.mode, rstore_node::admin::ReplicationMode::Sync);
        assert_eq!(s.failure_threshold, 7);
        assert_eq!(
            Settings::default().switchover_timeout_ms,
            s.switchover_timeout_ms
        );
    }
}
