//! The running local cluster: its main loop (probe, pass, record), the
//! reports of the members' supervisors, switchover requests, and a clean
//! stop.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rstore_node::admin::StatusResponse;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::driver::{self, LocalDriver};
use super::netns::{self, Net, NetworkRecord};
use super::options::{LocalError, LocalOptions, find_node_binary};
use super::proxy::{self, Endpoint, ProxyOptions, Route, Routes};
use super::state::{
    self, ClusterFile, MemberRecord, SwitchoverOutcome, SwitchoverRequest, SwitchoverState,
};
use super::supervisor::{self, Backoff, MemberSpec, SupervisorEvent};
use crate::brain::{FailoverReason, Presence, Recorded, Settings};
use crate::coordination::{
    HttpNodeAdmin, Member, PassInput, PassOutcome, ProbeTracker, Wake, now_ms, probe_all, run_pass,
};

/// How often the loop re-observes while a failover or switchover runs.
const QUICK_PASS: Duration = Duration::from_millis(50);
/// Deadline of fence, promote and follow calls (they write the node's
/// metadata durably).
const ACTION_TIMEOUT: Duration = Duration::from_secs(2);
/// A switchover request older than this is dropped, so a forgotten one
/// never moves the leader by surprise later.
const SWITCHOVER_EXPIRY_MS: u64 = 60_000;
/// Lock file that keeps a second operator off the data dir.
const LOCK_FILE: &str = "operator.lock";
/// Longest wait for every member's first start before passes run anyway.
const FIRST_SPAWN: Duration = Duration::from_secs(5);
/// Rewrite `cluster.json` at least this often even when nothing changed
/// (its `updatedAtMs` tells readers the operator is alive).
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The members of the cluster in `dir`: those recorded (same names), then
/// new ones up to `replicas`. With `net` every member gets its namespace's
/// address and the standard ports; without, recorded loopback ports are
/// kept and other members get fresh ones.
fn plan_members(
    dir: &Path,
    previous: &ClusterFile,
    replicas: u32,
    net: Option<&Net>,
) -> Result<Vec<MemberSpec>, LocalError> {
    let have = previous.members.len();
    if (replicas as usize) < have {
        return Err(LocalError::ScaleDown {
            dir: dir.to_path_buf(),
            have,
            want: replicas,
        });
    }
    let unset = SocketAddr::from(([0, 0, 0, 0], 0));
    let spec = |name: String, ordinal: u32, addrs: [SocketAddr; 3]| MemberSpec {
        data_dir: dir.join(&name),
        log: dir.join(format!("{name}.log")),
        name,
        ordinal,
        data: addrs[0],
        repl: addrs[1],
        admin: addrs[2],
        netns: None,
    };
    let mut specs: Vec<MemberSpec> = previous
        .members
        .iter()
        .map(|m| {
            let on_loopback = [m.data, m.repl, m.admin]
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() != 0);
            let addrs = if on_loopback {
                [m.data, m.repl, m.admin]
            } else {
                [unset; 3]
            };
            spec(m.name.clone(), m.ordinal, addrs)
        })
        .collect();
    specs.sort_by_key(|s| s.ordinal);
    let mut ordinal = specs.last().map_or(0, |s| s.ordinal + 1);
    while specs.len() < replicas as usize {
        specs.push(spec(format!("member-{ordinal}"), ordinal, [unset; 3]));
        ordinal += 1;
    }
    if let Some(net) = net {
        for s in &mut specs {
            let [data, repl, admin] = net.member_addrs(s.ordinal).ok_or_else(|| {
                LocalError::Netns(format!(
                    "{} (ordinal {}) does not fit in the cluster's /24 (ordinals up to {})",
                    s.name,
                    s.ordinal,
                    netns::MAX_ORDINAL
                ))
            })?;
            (s.data, s.repl, s.admin) = (data, repl, admin);
            s.netns = Some(net.namespace(s.ordinal));
        }
        return Ok(specs);
    }
    let mut taken: HashSet<u16> = specs
        .iter()
        .filter(|s| s.data != unset)
        .flat_map(|s| [s.data.port(), s.repl.port(), s.admin.port()])
        .collect();
    for s in specs.iter_mut().filter(|s| s.data == unset) {
        let ports = supervisor::pick_ports(3, &taken).map_err(LocalError::Ports)?;
        taken.extend(&ports);
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        (s.data, s.repl, s.admin) = (at(ports[0]), at(ports[1]), at(ports[2]));
    }
    Ok(specs)
}

fn member_record(spec: &MemberSpec, net: Option<&Net>) -> MemberRecord {
    MemberRecord {
        name: spec.name.clone(),
        node_id: spec.name.clone(),
        ordinal: spec.ordinal,
        pid: None,
        data: spec.data,
        repl: spec.repl,
        admin: spec.admin,
        data_dir: spec.data_dir.clone(),
        log: spec.log.clone(),
        netns: spec.netns.clone(),
        ip: net.map(|_| spec.data.ip()),
        link: net.map(|n| n.link(spec.ordinal)),
        role: "stopped".to_string(),
        epoch: 0,
        offset: 0,
        lag_bytes: None,
        lag_ms: None,
        label: None,
        message: None,
        restarts: 0,
    }
}

/// A member as the main loop tracks it.
#[derive(Debug)]
struct MemberState {
    spec: MemberSpec,
    pid: Option<u32>,
    presence: Presence,
    /// Starts in this run of the operator.
    starts: u32,
    /// Restarts recorded by earlier runs.
    earlier_restarts: u32,
    /// Its supervisor reported once (started, or could not start).
    reported: bool,
}

/// A running local cluster.
pub struct Cluster {
    dir: PathBuf,
    /// Held until the operator exits.
    _lock: std::fs::File,
    settings: Settings,
    probe_period: Duration,
    probe_timeout: Duration,
    admin: HttpNodeAdmin,
    members: Vec<MemberState>,
    tracker: ProbeTracker,
    file: ClusterFile,
    /// What `cluster.json` holds (the last successful write).
    on_disk: ClusterFile,
    last_save: Instant,
    started_at: Instant,
    routes: watch::Sender<Routes>,
    events: mpsc::UnboundedReceiver<SupervisorEvent>,
    stop_nodes: watch::Sender<bool>,
    stop_proxies: watch::Sender<bool>,
    supervisors: Vec<JoinHandle<()>>,
    proxies: Vec<JoinHandle<()>>,
    /// `--netns`: the namespaces, links and bridge to remove on stop.
    net: Option<Net>,
    /// The endpoints actually bound.
    pub listen: SocketAddr,
    pub read_listen: SocketAddr,
}

impl Cluster {
    /// Take over the data dir, start the proxies and the nodes.
    pub async fn start(options: LocalOptions) -> Result<Self, LocalError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|source| LocalError::DataDir {
            path: options.data_dir.clone(),
            source,
        })?;
        let dir = options
            .data_dir
            .canonicalize()
            .map_err(|source| LocalError::DataDir {
                path: options.data_dir.clone(),
                source,
            })?;
        let lock = lock_data_dir(&dir)?;
        let previous = state::load(&dir)?;
        let bin = find_node_binary(options.node_bin.as_deref())?;
        let previous = previous.unwrap_or_default();
        let replicas = options.replicas.unwrap_or_else(|| {
            u32::try_from(previous.members.len())
                .ok()
                .filter(|n| *n > 0)
                .unwrap_or(3)
        });
        if replicas == 0 {
            return Err(LocalError::NoReplicas);
        }
        // Nodes a dead operator left behind hold the members' ports and
        // data dirs: stop them before starting ours.
        let mut stale: Vec<(u32, PathBuf)> = previous
            .members
            .iter()
            .filter_map(|m| m.pid.map(|pid| (pid, dir.join(&m.name))))
            .collect();
        for m in &previous.members {
            let member_dir = dir.join(&m.name);
            if let Some(pid) = listen_file_pid(&member_dir) {
                stale.push((pid, member_dir));
            }
        }
        supervisor::stop_stale_nodes(&stale, Duration::from_secs(5)).await;

        // Network namespaces a killed operator of this data dir left.
        let id = netns::cluster_id(&dir);
        if options.netns || previous.network.is_some() {
            let leftovers_id = id.clone();
            let problems = blocking(move || netns::remove_leftovers(&leftovers_id)).await?;
            for problem in problems {
                tracing::warn!("cannot remove a leftover of an earlier run: {problem}");
            }
        }
        let net = if options.netns {
            let preferred = previous.network.as_ref().map(NetworkRecord::subnet);
            let chosen_id = id.clone();
            let subnet = blocking(move || netns::choose_subnet(&chosen_id, preferred))
                .await?
                .map_err(LocalError::Netns)?;
            Some(Net { id, subnet })
        } else {
            None
        };
        let specs = plan_members(&dir, &previous, replicas, net.as_ref())?;
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| LocalError::Listen { what, addr, source })
        };
        let leader_listener = bind("leader", options.listen).await?;
        let read_listener = bind("read", options.read_listen).await?;
        let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
        let listen = local(&leader_listener, options.listen);
        let read_listen = local(&read_listener, options.read_listen);

        let resume_leader = clean_resume_leader(&dir, &previous);
        let mut file = previous;
        // A crash from now on is not a clean stop.
        file.clean_shutdown = false;
        file.version = state::FORMAT_VERSION;
        file.operator_pid = Some(std::process::id());
        file.listen = Some(listen);
        file.read_listen = Some(read_listen);
        file.mode = Some(options.mode.as_str().to_string());
        file.sync_replicas = Some(options.sync_replicas);
        file.network = net.as_ref().map(Net::record);
        file.members = specs
            .iter()
            .map(|spec| {
                let mut record = member_record(spec, net.as_ref());
                if let Some(old) = file.member(&spec.name) {
                    record.restarts = old.restarts;
                }
                record
            })
            .collect();
        let earlier_restarts: Vec<u32> = file.members.iter().map(|m| m.restarts).collect();
        driver::save(&dir, &file).await.map_err(LocalError::Write)?;
        if let Some(net) = &net {
            let made = net.clone();
            let ordinals: Vec<u32> = specs.iter().map(|s| s.ordinal).collect();
            blocking(move || made.setup(&ordinals))
                .await?
                .map_err(LocalError::Netns)?;
            tracing::info!(
                bridge = %net.bridge(),
                subnet = %net.record().cidr,
                "network namespaces ready: {} (member i at 10.213.{}.(i+2)); `rstore-operator partition <member>` cuts one off",
                specs
                    .iter()
                    .filter_map(|s| s.netns.as_deref())
                    .collect::<Vec<_>>()
                    .join(", "),
                net.subnet
            );
        }

        let (routes, routes_rx) = watch::channel(Routes {
            members: specs
                .iter()
                .map(|s| Route {
                    name: s.name.clone(),
                    data: s.data,
                    label: None,
                    ready: false,
                })
                .collect(),
        });
        let (stop_proxies, stop_proxies_rx) = watch::channel(false);
        let proxy_options = ProxyOptions::default();
        let proxies = vec![
            tokio::spawn(proxy::serve(
                leader_listener,
                Endpoint::Leader,
                routes_rx.clone(),
                stop_proxies_rx.clone(),
                proxy_options,
            )),
            tokio::spawn(proxy::serve(
                read_listener,
                Endpoint::Read,
                routes_rx,
                stop_proxies_rx,
                proxy_options,
            )),
        ];

        let command = Arc::new(options.node_command(bin.clone()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let (stop_nodes, stop_nodes_rx) = watch::channel(false);
        let supervisors = specs
            .iter()
            .map(|spec| {
                tokio::spawn(supervisor::supervise(
                    spec.clone(),
                    command.clone(),
                    events_tx.clone(),
                    stop_nodes_rx.clone(),
                    Backoff::default(),
                    resume_leader.as_deref() == Some(spec.name.as_str()),
                ))
            })
            .collect();
        if let Some(leader) = &resume_leader {
            tracing::info!(
                %leader,
                epoch = file.epoch,
                "the cluster was stopped cleanly: {leader} leads again at epoch {}",
                file.epoch
            );
        }
        tracing::info!(
            dir = %dir.display(),
            node = %bin.display(),
            members = specs.len(),
            epoch = file.epoch,
            leader = file.leader.as_deref().unwrap_or("none"),
            "local cluster starting: leader endpoint {listen}, read endpoint {read_listen}"
        );
        let members = specs
            .into_iter()
            .zip(earlier_restarts)
            .map(|(spec, earlier_restarts)| MemberState {
                spec,
                pid: None,
                presence: Presence::Gone,
                starts: 0,
                earlier_restarts,
                reported: false,
            })
            .collect();
        Ok(Self {
            dir,
            _lock: lock,
            settings: Settings {
                replicas,
                mode: options.mode,
                sync_replicas: options.sync_replicas,
                failure_threshold: options.failure_threshold.max(1),
                switchover_timeout_ms: options.switchover_timeout_ms,
            },
            probe_period: options.probe_period,
            probe_timeout: options.probe_timeout,
            admin: HttpNodeAdmin::new(options.probe_timeout, ACTION_TIMEOUT),
            members,
            tracker: ProbeTracker::default(),
            on_disk: file.clone(),
            file,
            last_save: Instant::now(),
            started_at: Instant::now(),
            routes,
            events,
            stop_nodes,
            stop_proxies,
            supervisors,
            proxies,
            net,
            listen,
            read_listen,
        })
    }

    /// Probe, decide and act until `shutdown` resolves; returns its value.
    pub async fn serve<T>(&mut self, shutdown: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.probe_period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quick: Option<Instant> = None;
        loop {
            let quick_pass = async {
                match quick {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                why = &mut shutdown => return why,
                Some(event) = self.events.recv() => {
                    if self.on_event(event) {
                        self.pass(Wake::Poke).await;
                    }
                }
                _ = ticker.tick() => self.pass(Wake::Timer).await,
                () = quick_pass => self.pass(Wake::Quick).await,
            }
            // Re-observe quickly while something is under way: a first
            // leader to choose, a failover, a requested switchover.
            let busy = self.file.epoch == 0
                || self.file.failover_in_progress.is_some()
                || self
                    .file
                    .switchover
                    .as_ref()
                    .is_some_and(|s| s.state == SwitchoverOutcome::Pending);
            quick = busy.then(|| Instant::now() + QUICK_PASS);
        }
    }

    /// Take in a supervisor's report; true when a pass should run now.
    fn on_event(&mut self, event: SupervisorEvent) -> bool {
        match event {
            SupervisorEvent::Started { spec, pid } => {
                let Some(m) = self.member_mut(spec.ordinal) else {
                    return false;
                };
                m.starts += 1;
                m.reported = true;
                m.pid = Some(pid);
                m.presence = Presence::Running;
                let moved = m.spec != spec;
                m.spec = spec.clone();
                if m.starts > 1 {
                    tracing::info!(member = %spec.name, pid, "node restarted");
                } else {
                    tracing::info!(member = %spec.name, pid, data = %spec.data, repl = %spec.repl, admin = %spec.admin, "node started");
                }
                if moved {
                    self.routes.send_modify(|routes| {
                        if let Some(r) = routes.members.iter_mut().find(|r| r.name == spec.name) {
                            r.data = spec.data;
                        }
                    });
                }
                false
            }
            SupervisorEvent::Exited { ordinal, .. } => {
                if let Some(m) = self.member_mut(ordinal) {
                    m.pid = None;
                    m.presence = Presence::Gone;
                }
                true
            }
            SupervisorEvent::SpawnFailed { ordinal, .. } => {
                if let Some(m) = self.member_mut(ordinal) {
                    m.reported = true;
                    m.pid = None;
                    m.presence = Presence::Gone;
                }
                false
            }
            SupervisorEvent::Stopped { .. } => false,
        }
    }

    fn member_mut(&mut self, ordinal: u32) -> Option<&mut MemberState> {
        self.members.iter_mut().find(|m| m.spec.ordinal == ordinal)
    }

    fn coordination_members(&self) -> Vec<Member> {
        let routes = self.routes.borrow();
        self.members
            .iter()
            .map(|m| Member {
                name: m.spec.name.clone(),
                ordinal: i32::try_from(m.spec.ordinal).unwrap_or(i32::MAX),
                admin_addr: m.spec.admin.to_string(),
                repl_addr: m.spec.repl.to_string(),
                pod_ready: false,
                role_label: routes.label(&m.spec.name),
                presence: m.presence,
                admin_token: None,
            })
            .collect()
    }

    /// Bring the file's member entries up to date with the processes.
    fn refresh_members(&mut self) {
        for m in &self.members {
            if let Some(record) = self.file.members.iter_mut().find(|r| r.name == m.spec.name) {
                record.pid = m.pid;
                record.data = m.spec.data;
                record.repl = m.spec.repl;
                record.admin = m.spec.admin;
                record.restarts = m.earlier_restarts + m.starts.saturating_sub(1);
            }
        }
    }

    /// One observation and pass. Failed probes count towards detection
    /// only on the probe timer (the rule is `ProbeTracker::record_pass`,
    /// the Kubernetes driver's too).
    async fn pass(&mut self, wake: Wake) {
        if !self.members.iter().all(|m| m.reported) && self.started_at.elapsed() < FIRST_SPAWN {
            // A member not yet started is not gone: wait for every
            // supervisor's first report before judging anyone.
            return;
        }
        let mut members = self.coordination_members();
        let (probes, readyz) = tokio::join!(
            probe_all(&self.admin, &members, self.probe_timeout),
            self.readyz_all(&members),
        );
        self.tracker.record_pass(&members, &probes, now_ms(), wake);
        for (m, p) in members.iter_mut().zip(&probes) {
            m.pod_ready = p.is_ok();
        }
        self.refresh_members();
        let switchover_to = self.switchover_target();
        let driver = LocalDriver::new(&self.dir, &self.routes, self.file.clone());
        let outcome = run_pass(
            &self.admin,
            &driver,
            PassInput {
                settings: self.settings.clone(),
                members,
                probes: probes.clone(),
                recorded: self.file.recorded(),
                switchover_to: switchover_to.as_ref().map(|r| r.to.clone()),
                tracker: &mut self.tracker,
            },
        )
        .await;
        let (base, persisted) = driver.into_file();
        if persisted {
            self.on_disk = base.clone();
        }
        self.route_reads(&outcome.plan.record, &probes, &readyz);
        self.after_pass(base, &outcome, switchover_to.as_ref())
            .await;
    }

    /// `GET /readyz` of every running member, concurrently, each within
    /// the probe timeout.
    async fn readyz_all(&self, members: &[Member]) -> Vec<bool> {
        let timeout = self.probe_timeout;
        join_all(members.iter().map(|m| async move {
            if m.presence != Presence::Running {
                return false;
            }
            // The probes' pooled client: no new connection per pass.
            matches!(
                tokio::time::timeout(timeout, self.admin.readyz(m)).await,
                Ok(Ok(()))
            )
        }))
        .await
    }

    /// Let the read endpoint route only to ready followers of the recorded
    /// leader: `/readyz` answered, and this pass's probe shows the member
    /// linked to that leader at the recorded epoch. A member repointed in
    /// this pass turns ready at the next one.
    fn route_reads(
        &self,
        record: &Recorded,
        probes: &[Result<StatusResponse, String>],
        readyz: &[bool],
    ) {
        let leader_repl = record
            .leader
            .as_deref()
            .and_then(|l| self.members.iter().find(|m| m.spec.name == l))
            .map(|m| m.spec.repl.to_string());
        let ready: Vec<(String, bool)> = self
            .members
            .iter()
            .zip(probes.iter().zip(readyz))
            .map(|(m, (probe, readyz))| {
                let linked = leader_repl.as_deref().is_some_and(|repl| {
                    probe
                        .as_ref()
                        .is_ok_and(|s| proxy::ready_follower(s, repl, record.epoch))
                });
                (m.spec.name.clone(), *readyz && linked)
            })
            .collect();
        self.routes.send_if_modified(|routes| {
            let mut changed = false;
            for (name, ready) in &ready {
                changed |= routes.set_ready(name, *ready);
            }
            changed
        });
    }

    /// The switchover to pass to the brain, from the request file.
    fn switchover_target(&mut self) -> Option<SwitchoverRequest> {
        let request = match state::load_switchover(&self.dir) {
            Ok(Some(request)) => request,
            Ok(None) => return None,
            Err(why) => {
                self.finish_switchover(String::new(), 0, SwitchoverOutcome::Rejected, why);
                return None;
            }
        };
        let done_before = self.file.switchover.as_ref().is_some_and(|s| {
            s.requested_at_ms == request.requested_at_ms
                && s.target == request.to
                && s.state != SwitchoverOutcome::Pending
        });
        if done_before {
            let _ = state::remove_switchover(&self.dir);
            return None;
        }
        let reject = if !self.members.iter().any(|m| m.spec.name == request.to) {
            Some(format!(
                "{} is not a member of this cluster (members: {})",
                request.to,
                self.members
                    .iter()
                    .map(|m| m.spec.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else if now_ms().saturating_sub(request.requested_at_ms) > SWITCHOVER_EXPIRY_MS {
            Some(format!(
                "the request is older than {} s; dropped",
                SWITCHOVER_EXPIRY_MS / 1000
            ))
        } else {
            None
        };
        if let Some(why) = reject {
            tracing::warn!(target = %request.to, "switchover request rejected: {why}");
            self.finish_switchover(
                request.to,
                request.requested_at_ms,
                SwitchoverOutcome::Rejected,
                why,
            );
            return None;
        }
        let leads = self.file.leader.as_deref() == Some(request.to.as_str())
            && self.file.failover_in_progress.is_none()
            && self.routes.borrow().leader().map(|r| r.name.as_str()) == Some(request.to.as_str());
        if leads {
            let message = format!("{} is already the leader", request.to);
            self.finish_switchover(
                request.to,
                request.requested_at_ms,
                SwitchoverOutcome::Completed,
                message,
            );
            return None;
        }
        if self
            .file
            .switchover
            .as_ref()
            .is_none_or(|s| s.requested_at_ms != request.requested_at_ms || s.target != request.to)
        {
            tracing::info!(target = %request.to, "switchover requested");
        }
        Some(request)
    }

    fn finish_switchover(
        &mut self,
        target: String,
        requested_at_ms: u64,
        outcome: SwitchoverOutcome,
        message: String,
    ) {
        self.file.switchover = Some(SwitchoverState {
            target,
            requested_at_ms,
            state: outcome,
            message: Some(message),
        });
        if let Err(err) = state::remove_switchover(&self.dir) {
            tracing::warn!(%err, "cannot remove the switchover request");
        }
    }

    async fn after_pass(
        &mut self,
        base: ClusterFile,
        outcome: &PassOutcome,
        switchover_to: Option<&SwitchoverRequest>,
    ) {
        let mut next = driver::compose(
            &base,
            &outcome.plan.record,
            outcome.plan.waiting.as_deref(),
            &outcome.members,
            &self.routes.borrow(),
        );
        if outcome.persist_error.is_some() {
            // Nothing was done on that decision: keep the last record.
            next.set_recorded(&base.recorded());
        }
        if let Some(request) = switchover_to {
            let target = request.to.as_str();
            let requested_at_ms = request.requested_at_ms;
            let switchover = outcome
                .completed
                .iter()
                .rev()
                .find(|r| r.reason == FailoverReason::Switchover);
            next.switchover = Some(match switchover {
                Some(record) => {
                    let reached = record.new_leader == target;
                    let message = format!(
                        "{} -> {} at epoch {} in {} ms",
                        record.old_leader.as_deref().unwrap_or("none"),
                        record.new_leader,
                        record.epoch,
                        record.total_ms
                    );
                    if let Err(err) = state::remove_switchover(&self.dir) {
                        tracing::warn!(%err, "cannot remove the switchover request");
                    }
                    SwitchoverState {
                        target: target.to_string(),
                        requested_at_ms,
                        state: if reached {
                            SwitchoverOutcome::Completed
                        } else {
                            SwitchoverOutcome::Rejected
                        },
                        message: Some(if reached {
                            message
                        } else {
                            format!("{target} did not catch up in time; {message}")
                        }),
                    }
                }
                None => SwitchoverState {
                    target: target.to_string(),
                    requested_at_ms,
                    state: SwitchoverOutcome::Pending,
                    message: outcome.plan.waiting.clone(),
                },
            });
        }
        let changed = {
            let mut a = next.clone();
            a.updated_at_ms = self.on_disk.updated_at_ms;
            a != self.on_disk
        };
        if changed || self.last_save.elapsed() >= HEARTBEAT {
            match driver::save(&self.dir, &next).await {
                Ok(()) => {
                    self.last_save = Instant::now();
                    self.on_disk = next.clone();
                }
                Err(err) => tracing::warn!(%err, "cannot write the cluster state"),
            }
        }
        self.file = next;
    }

    /// Stop the proxies, then the nodes, and write the final state.
    pub async fn stop(mut self) {
        self.stop_proxies.send_replace(true);
        for proxy in self.proxies.drain(..) {
            let _ = proxy.await;
        }
        // Whether the recorded leader leads now, by the last pass: labelled
        // leader (it led at the recorded epoch) with no failover under way.
        let leading = self
            .file
            .leader
            .clone()
            .filter(|l| {
                self.file.failover_in_progress.is_none()
                    && self.routes.borrow().leader().map(|r| r.name.as_str()) == Some(l.as_str())
            })
            .and_then(|l| self.members.iter().find(|m| m.spec.name == l))
            .map(|m| m.spec.ordinal);
        self.stop_nodes.send_replace(true);
        for supervisor in self.supervisors.drain(..) {
            let _ = supervisor.await;
        }
        let mut stopped_cleanly = HashSet::new();
        while let Ok(event) = self.events.try_recv() {
            if let SupervisorEvent::Stopped {
                ordinal,
                clean: true,
            } = event
            {
                stopped_cleanly.insert(ordinal);
            }
        }
        // It also closed its log on SIGTERM (a crash the last pass did not
        // see yet would not count): the next start may resume it as leader.
        self.file.clean_shutdown = leading.is_some_and(|o| stopped_cleanly.contains(&o));
        if let Some(net) = self.net.take() {
            let bridge = net.bridge();
            match blocking(move || net.teardown()).await {
                Ok(problems) if problems.is_empty() => {
                    tracing::info!(%bridge, "network namespaces, links and bridge removed");
                }
                Ok(problems) => {
                    for problem in problems {
                        tracing::warn!("cannot remove the cluster's network: {problem}");
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot remove the cluster's network"),
            }
        }
        for m in &mut self.members {
            m.pid = None;
            m.presence = Presence::Gone;
        }
        self.refresh_members();
        self.file.operator_pid = None;
        self.file.updated_at_ms = now_ms();
        for m in &mut self.file.members {
            m.role = "stopped".to_string();
            m.label = None;
            m.lag_bytes = None;
            m.lag_ms = None;
            m.message = None;
        }
        match driver::save(&self.dir, &self.file).await {
            Ok(()) => tracing::info!(
                epoch = self.file.epoch,
                leader = self.file.leader.as_deref().unwrap_or("none"),
                clean = self.file.clean_shutdown,
                "local cluster stopped; `rstore-operator local` on the same --data-dir resumes it{}",
                if self.file.clean_shutdown {
                    " with the same leader and epoch"
                } else {
                    " (the leader did not stop cleanly: a failover picks the next one)"
                }
            ),
            Err(err) => tracing::warn!(%err, "cannot write the final cluster state"),
        }
    }
}

/// Run blocking work (the `ip` commands of `--netns`) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LocalError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LocalError::Netns(format!("the network setup task failed: {e}")))
}

/// Hold `<data-dir>/operator.lock` for as long as the operator runs (the
/// kernel releases it when the process dies, even by SIGKILL), so two
/// operators never drive one cluster.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, LocalError> {
    let path = dir.join(LOCK_FILE);
    let data_dir_err = |source| LocalError::DataDir {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(data_dir_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LocalError::AlreadyRunning {
            pid: state::load(dir).ok().flatten().and_then(|f| f.operator_pid),
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(data_dir_err(source)),
    }
}

/// The member to start with `--role leader`: the recorded leader, when the
/// last stop was clean (see [`ClusterFile::clean_shutdown`]), no failover
/// is in progress, and its node metadata still says it leads at the
/// recorded epoch (so `--role leader` resumes that epoch instead of
/// promoting above it). Otherwise none: nodes never promote themselves,
/// and the brain fails over from the recorded leader as after a crash.
fn clean_resume_leader(dir: &Path, previous: &ClusterFile) -> Option<String> {
    if !previous.clean_shutdown || previous.failover_in_progress.is_some() {
        return None;
    }
    let leader = previous.leader.as_deref()?;
    previous.member(leader)?;
    let meta = rstore_node::meta::load(&dir.join(leader)).ok().flatten()?;
    (meta.role == rstore_node::admin::Role::Leader && meta.epoch == previous.epoch)
        .then(|| leader.to_string())
}

/// The pid a member's node wrote into its `listen.json`.
fn listen_file_pid(member_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(member_dir.join("listen.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    u32::try_from(value.get("pid")?.as_u64()?).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::local::test_dir::TestDir;

    #[test]
    fn a_new_cluster_gets_members_on_distinct_ports() {
        let dir = TestDir::new();
        let specs = plan_members(dir.path(), &ClusterFile::new(), 3, None).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["member-0", "member-1", "member-2"]);
        let ports: HashSet<u16> = specs
            .iter()
            .flat_map(|s| [s.data.port(), s.repl.port(), s.admin.port()])
            .collect();
        assert_eq!(ports.len(), 9);
        assert_eq!(specs[1].data_dir, dir.path().join("member-1"));
        assert_eq!(specs[1].log, dir.path().join("member-1.log"));
    }

    #[test]
    fn a_resumed_cluster_keeps_its_ports_and_may_grow_but_not_shrink() {
        let dir = TestDir::new();
        let first = plan_members(dir.path(), &ClusterFile::new(), 2, None).unwrap();
        let mut file = ClusterFile::new();
        file.members = first.iter().map(|s| member_record(s, None)).collect();
        let again = plan_members(dir.path(), &file, 2, None).unwrap();
        assert_eq!(again, first, "same names, same ports");
        let grown = plan_members(dir.path(), &file, 3, None).unwrap();
        assert_eq!(&grown[..2], &first[..]);
        assert_eq!(grown[2].name, "member-2");
        let err = plan_members(dir.path(), &file, 1, None).unwrap_err();
        assert!(
            matches!(err, LocalError::ScaleDown { have: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn members_in_namespaces_get_their_address_and_the_standard_ports() {
        let dir = TestDir::new();
        let net = Net {
            id: "abc123".to_string(),
            subnet: 200,
        };
        let specs = plan_members(dir.path(), &ClusterFile::new(), 2, Some(&net)).unwrap();
        assert_eq!(specs[1].data.to_string(), "10.213.200.3:6379");
        assert_eq!(specs[1].repl.to_string(), "10.213.200.3:7379");
        assert_eq!(specs[1].admin.to_string(), "10.213.200.3:8080");
        assert_eq!(specs[1].netns.as_deref(), Some("rs-abc123-1"));
        let record = member_record(&specs[1], Some(&net));
        assert_eq!(record.link.as_deref(), Some("rsh-abc123-1"));
        assert_eq!(record.ip, Some("10.213.200.3".parse().unwrap()));
        // Back without --netns: fresh loopback ports, same names.
        let mut file = ClusterFile::new();
        file.members = specs.iter().map(|s| member_record(s, Some(&net))).collect();
        let plain = plan_members(dir.path(), &file, 2, None).unwrap();
        assert_eq!(plain[1].name, "member-1");
        assert!(
            plain
                .iter()
                .all(|s| s.data.ip().is_loopback() && s.netns.is_none())
        );
    }

    #[test]
    fn only_a_clean_stop_resumes_the_recorded_leader_at_its_epoch() {
        use rstore_node::admin::Role;
        use rstore_node::meta::{self, NodeMeta};

        let dir = TestDir::new();
        let specs = plan_members(dir.path(), &ClusterFile::new(), 2, None).unwrap();
        let mut file = ClusterFile::new();
        file.members = specs.iter().map(|s| member_record(s, None)).collect();
        file.leader = Some("member-1".to_string());
        file.epoch = 3;
        file.clean_shutdown = true;
        let node_meta = |role, epoch| {
            let mut m = NodeMeta::new("member-1".to_string());
            m.role = role;
            m.epoch = epoch;
            std::fs::create_dir_all(dir.path().join("member-1")).unwrap();
            meta::store(&dir.path().join("member-1"), &m).unwrap();
        };
        assert_eq!(
            clean_resume_leader(dir.path(), &file),
            None,
            "no node metadata"
        );
        node_meta(Role::Leader, 3);
        assert_eq!(
            clean_resume_leader(dir.path(), &file).as_deref(),
            Some("member-1")
        );

        let mut crashed = file.clone();
        crashed.clean_shutdown = false;
        assert_eq!(clean_resume_leader(dir.path(), &crashed), None);
        let mut failing_over = file.clone();
        failing_over.failover_in_progress = Some(crate::brain::FailoverProgress {
            reason: FailoverReason::LeaderGone,
            phase: crate::brain::Phase::Fencing,
            old_leader: Some("member-1".to_string()),
            epoch: 4,
            new_leader: None,
            target: None,
            started_at_ms: 0,
            phase_started_at_ms: 0,
            detect_ms: 0,
            fence_ms: 0,
            promote_ms: 0,
            repoint_ms: 0,
            old_leader_committed: None,
            leader_end: None,
            lost_bytes: 0,
            fork_offset: 0,
            blocked: None,
            handing_over: false,
        });
        assert_eq!(clean_resume_leader(dir.path(), &failing_over), None);
        // It restarted idle, or was fenced above the record: not resumed.
        node_meta(Role::Idle, 3);
        assert_eq!(clean_resume_leader(dir.path(), &file), None);
        node_meta(Role::Leader, 4);
        assert_eq!(clean_resume_leader(dir.path(), &file), None);
    }

    #[test]
    fn a_second_operator_on_the_same_data_dir_is_refused() {
        let dir = TestDir::new();
        let held = lock_data_dir(dir.path()).unwrap();
        let err = lock_data_dir(dir.path()).unwrap_err();
        assert!(matches!(err, LocalError::AlreadyRunning { .. }), "{err}");
        drop(held);
        lock_data_dir(dir.path()).unwrap();
    }
}
