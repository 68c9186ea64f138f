//! `rstore-operator status`, `switchover`, `partition` and `heal`: tools
//! for a running local cluster, which they reach through its data dir
//! (`cluster.json`, the switchover request file), the members' admin APIs
//! and (`--netns` clusters) the members' network links.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use futures::future::join_all;
use rstore_node::admin::{AdminClient, StatusResponse};

use super::netns;
use super::state::{self, ClusterFile, MemberRecord, SwitchoverOutcome, SwitchoverRequest};
use super::supervisor;
use crate::brain::{
    self, FailoverProgress, FailoverRecord, MemberView, Observation, Plan, Presence, RoleLabel,
    Settings,
};
use crate::coordination::{self, Member, now_ms};
use crate::crd::MemberStatus;

/// Deadline of each live probe the tools make.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn load(dir: &Path) -> Result<ClusterFile, String> {
    state::load(dir).map_err(|e| e.to_string())?.ok_or_else(|| {
        format!(
            "no local cluster in {}: start one with `rstore-operator local --data-dir {}`",
            dir.display(),
            dir.display()
        )
    })
}

fn operator_running(file: &ClusterFile) -> Option<u32> {
    file.operator_pid
        .filter(|pid| supervisor::is_local_operator(*pid))
}

/// Every member's `/status`, or why it did not answer.
async fn probe(file: &ClusterFile) -> Vec<Result<StatusResponse, String>> {
    join_all(file.members.iter().map(|m| async move {
        AdminClient::with_timeout(m.admin.to_string(), PROBE_TIMEOUT)
            .status()
            .await
            .map_err(|e| e.to_string())
    }))
    .await
}

/// The text of `rstore-operator status`.
pub async fn status(dir: &Path) -> Result<String, String> {
    let file = load(dir)?;
    let live = probe(&file).await;
    Ok(render_status(dir, &file, &live, now_ms()))
}

/// The recorded leader's process id (`rstore-operator status --leader-pid`).
pub fn leader_pid(dir: &Path) -> Result<u32, String> {
    let file = load(dir)?;
    let leader = file.leader.as_deref().ok_or("the cluster has no leader")?;
    file.member(leader)
        .and_then(|m| m.pid)
        .ok_or_else(|| format!("the leader {leader} has no running process"))
}

/// Render the status table from the file and live probes (one per member).
pub fn render_status(
    dir: &Path,
    file: &ClusterFile,
    live: &[Result<StatusResponse, String>],
    now: u64,
) -> String {
    let mut out = String::new();
    let operator = match operator_running(file) {
        Some(pid) => format!("operator pid {pid}"),
        None => "operator not running".to_string(),
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let _ = writeln!(out, "cluster {} ({operator})", dir.display());
    let _ = writeln!(
        out,
        "leader {}  epoch {}  mode {}{}",
        file.leader.as_deref().unwrap_or("none"),
        file.epoch,
        file.mode.as_deref().unwrap_or("?"),
        match (file.mode.as_deref(), file.sync_replicas) {
            (Some("semi-sync"), Some(k)) => format!(" (K={k})"),
            _ => String::new(),
        }
    );
    if let (Some(listen), Some(read)) = (file.listen, file.read_listen) {
        let _ = writeln!(
            out,
            "endpoints: leader {listen} (redis-cli -p {}), read {read} (redis-cli -p {})",
            listen.port(),
            read.port()
        );
    }
    if let Some(net) = &file.network {
        let _ = writeln!(
            out,
            "network: a namespace per member on bridge {} ({}, operator at {})",
            net.bridge, net.cidr, net.gateway
        );
    }
    if file.updated_at_ms > 0 {
        let _ = writeln!(out, "state written {}", ago(now, file.updated_at_ms));
    }

    // Roles, offsets and the lag (the leader's view of its followers) as
    // the operator records them.
    let statuses = live_statuses(file, live);
    let header = [
        "MEMBER", "PID", "ROLE", "EPOCH", "OFFSET", "LAG", "LABEL", "DATA", "REPL", "ADMIN",
    ];
    let mut rows: Vec<[String; 10]> = Vec::new();
    let mut notes = Vec::new();
    for (i, m) in file.members.iter().enumerate() {
        let answered = live.get(i).is_some_and(Result::is_ok);
        let status = statuses.iter().find(|s| s.name == m.name);
        let (role, epoch, offset) = match status.filter(|_| answered) {
            Some(s) => (s.role.clone(), s.epoch.to_string(), s.offset.to_string()),
            None => (
                format!("{}?", m.role),
                m.epoch.to_string(),
                m.offset.to_string(),
            ),
        };
        let lag = status
            .and_then(|s| Some(format!("{}B/{}ms", s.lag_bytes?, s.lag_ms.unwrap_or(0))))
            .or_else(|| {
                m.lag_bytes
                    .map(|b| format!("{b}B/{}ms", m.lag_ms.unwrap_or(0)))
            })
            .unwrap_or_else(|| "-".to_string());
        rows.push([
            m.name.clone(),
            m.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            role,
            epoch,
            offset,
            lag,
            m.label.map_or("-", RoleLabel::as_str).to_string(),
            m.data.to_string(),
            m.repl.to_string(),
            m.admin.to_string(),
        ]);
        if let Some(link) = &m.link
            && netns::link_up(link) == Some(false)
        {
            notes.push(format!(
                "{}: PARTITIONED (link {link} is down; `rstore-operator heal {}` restores it)",
                m.name, m.name
            ));
        }
        if let Some(Err(err)) = live.get(i) {
            notes.push(format!(
                "{}: not answering ({err}); last known role shown with '?'",
                m.name
            ));
        } else if let Some(message) = &m.message {
            notes.push(format!("{}: {message}", m.name));
        }
        if m.restarts > 0 {
            notes.push(format!(
                "{}: restarted {} time(s); log {}",
                m.name,
                m.restarts,
                m.log.display()
            ));
        }
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        text
    };
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", line(&header));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    for note in notes {
        let _ = writeln!(out, "  {note}");
    }
    let _ = writeln!(out);
    if let Some(fo) = &file.failover_in_progress {
        let _ = writeln!(out, "failover in progress: {}", describe_progress(fo, now));
    }
    if let Some(waiting) = &file.waiting {
        let _ = writeln!(out, "waiting: {waiting}");
    }
    match &file.last_failover {
        Some(record) => {
            let _ = writeln!(out, "last failover: {}", describe_record(record, now));
        }
        None => {
            let _ = writeln!(out, "last failover: none");
        }
    }
    if let Some(s) = &file.switchover {
        let _ = writeln!(
            out,
            "last switchover request: to {} {}{}",
            s.target,
            match s.state {
                SwitchoverOutcome::Pending => "pending",
                SwitchoverOutcome::Completed => "completed",
                SwitchoverOutcome::Rejected => "rejected",
            },
            s.message
                .as_deref()
                .map_or(String::new(), |m| format!(": {m}"))
        );
    }
    out
}

/// One line for a completed failover, phase by phase.
pub fn describe_record(r: &FailoverRecord, now: u64) -> String {
    format!(
        "{} {} -> {} at epoch {}, {}: detect {} ms, fence {} ms, promote {} ms, repoint {} ms, relabel {} ms, total {} ms, lost {} bytes",
        r.reason.as_str(),
        r.old_leader.as_deref().unwrap_or("none"),
        r.new_leader,
        r.epoch,
        ago(now, r.started_at_ms),
        r.detect_ms,
        r.fence_ms,
        r.promote_ms,
        r.repoint_ms,
        r.relabel_ms,
        r.total_ms,
        r.lost_bytes
    )
}

fn describe_progress(p: &FailoverProgress, now: u64) -> String {
    format!(
        "{} {} -> {} to epoch {}, phase {:?}, started {}{}",
        p.reason.as_str(),
        p.old_leader.as_deref().unwrap_or("none"),
        p.new_leader
            .as_deref()
            .or(p.target.as_deref())
            .unwrap_or("?"),
        p.epoch,
        p.phase,
        ago(now, p.started_at_ms),
        p.blocked
            .as_deref()
            .map_or(String::new(), |b| format!(" (blocked: {b})"))
    )
}

fn ago(now: u64, then: u64) -> String {
    let ms = now.saturating_sub(then);
    if ms < 10_000 {
        format!("{ms} ms ago")
    } else if ms < 600_000 {
        format!("{} s ago", ms / 1000)
    } else {
        format!("{} min ago", ms / 60_000)
    }
}

/// The follower a switchover without `--to` goes to: the brain's own
/// choice ([`brain::best_follower`], the rule it uses to hand over from a
/// leader being deleted), made from the live probes.
pub fn choose_target(
    file: &ClusterFile,
    live: &[Result<StatusResponse, String>],
) -> Option<String> {
    let obs = observation(file, live);
    let leader = obs
        .members
        .iter()
        .find(|m| Some(m.name.as_str()) == file.leader.as_deref())?;
    // The epoch the brain calls the cluster's: the highest any member
    // reports or the record holds.
    let epoch = live
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|s| s.epoch))
        .fold(file.epoch, u64::max);
    brain::best_follower(&obs, leader, epoch, i32::MAX)
}

/// The brain's view of the recorded members with these probes.
fn observation(file: &ClusterFile, live: &[Result<StatusResponse, String>]) -> Observation {
    let members = file
        .members
        .iter()
        .zip(live)
        .map(|(m, probe)| MemberView {
            name: m.name.clone(),
            ordinal: i32::try_from(m.ordinal).unwrap_or(i32::MAX),
            repl_addr: m.repl.to_string(),
            presence: presence(m, probe),
            probe: probe.clone(),
            failures: 0,
            failing_since_ms: None,
            last_seen: None,
            label: m.label,
        })
        .collect();
    Observation {
        now_ms: now_ms(),
        settings: Settings {
            replicas: u32::try_from(file.members.len()).unwrap_or(u32::MAX),
            ..Settings::default()
        },
        members,
        recorded: file.recorded(),
        switchover_to: None,
    }
}

/// A member answers, or has a process recorded.
fn presence(m: &MemberRecord, probe: &Result<StatusResponse, String>) -> Presence {
    if probe.is_ok() || m.pid.is_some() {
        Presence::Running
    } else {
        Presence::Gone
    }
}

/// What the operator records per member (role, epoch, offset, lag),
/// computed from the live probes by the same code the running operator
/// uses ([`coordination::member_statuses`]), by member name.
fn live_statuses(file: &ClusterFile, live: &[Result<StatusResponse, String>]) -> Vec<MemberStatus> {
    let members: Vec<Member> = file
        .members
        .iter()
        .zip(live)
        .map(|(m, probe)| Member {
            name: m.name.clone(),
            ordinal: i32::try_from(m.ordinal).unwrap_or(i32::MAX),
            admin_addr: m.admin.to_string(),
            repl_addr: m.repl.to_string(),
            pod_ready: probe.is_ok(),
            role_label: m.label,
            presence: presence(m, probe),
            admin_token: None,
        })
        .collect();
    let plan = Plan {
        record: file.recorded(),
        steps: Vec::new(),
        events: Vec::new(),
        waiting: None,
        completed: None,
    };
    let probes: Vec<_> = live.iter().take(members.len()).cloned().collect();
    coordination::member_statuses(&members, &probes, &plan)
}

/// `rstore-operator partition` (`heal` false) and `rstore-operator heal`
/// (`heal` true): take a member's link to the bridge down or up.
pub fn partition(dir: &Path, member: &str, heal: bool) -> Result<String, String> {
    let file = load(dir)?;
    let what = if heal { "heal" } else { "partition" };
    if file.network.is_none() {
        return Err(format!(
            "the cluster in {} does not run its members in network namespaces; {what} needs one started with `rstore-operator local --netns` (as root)",
            dir.display()
        ));
    }
    let m = file.member(member).ok_or_else(|| {
        format!(
            "{member} is not a member of this cluster (members: {})",
            file.members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let link = m.link.as_deref().ok_or_else(|| {
        format!(
            "cluster.json records no network link for {member}; restart the cluster with --netns"
        )
    })?;
    if netns::link_up(link).is_none() {
        return Err(format!(
            "{member}'s link {link} does not exist: is `rstore-operator local --netns` running on {}?",
            dir.display()
        ));
    }
    netns::set_link(link, heal)?;
    let addr =
        m.ip.map_or_else(|| m.data.ip().to_string(), |ip| ip.to_string());
    Ok(if heal {
        format!("healed {member} ({addr}): link {link} is up again")
    } else {
        format!(
            "partitioned {member} ({addr}): link {link} is down; neither the operator nor the other members reach it until `rstore-operator heal {member}`"
        )
    })
}

/// `rstore-operator switchover`: ask the running operator to move the
/// leadership to `to` (or the most caught-up follower) and wait for it.
pub async fn switchover(dir: &Path, to: Option<&str>, timeout: Duration) -> Result<String, String> {
    let file = load(dir)?;
    if operator_running(&file).is_none() {
        return Err(format!(
            "no rstore-operator local is running on {}; start it first",
            dir.display()
        ));
    }
    let leader = file
        .leader
        .clone()
        .ok_or("the cluster has no leader yet; try again once it has one")?;
    let target = match to {
        Some(t) => {
            if file.member(t).is_none() {
                return Err(format!(
                    "{t} is not a member of this cluster (members: {})",
                    file.members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if t == leader {
                return Ok(format!("{t} is already the leader (epoch {})", file.epoch));
            }
            t.to_string()
        }
        None => {
            let live = probe(&file).await;
            choose_target(&file, &live).ok_or_else(|| {
                format!("no streaming follower of {leader} to switch over to; see `rstore-operator status`")
            })?
        }
    };
    let request = SwitchoverRequest {
        to: target.clone(),
        requested_at_ms: now_ms(),
    };
    state::save_switchover(dir, &request).map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_waiting = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(Some(now)) = state::load(dir) {
            if let Some(s) = now
                .switchover
                .as_ref()
                .filter(|s| s.target == request.to && s.requested_at_ms == request.requested_at_ms)
            {
                match s.state {
                    SwitchoverOutcome::Completed => {
                        let detail = now
                            .last_failover
                            .as_ref()
                            .filter(|r| r.new_leader == target)
                            .map(|r| format!("\n{}", describe_record(r, now_ms())))
                            .unwrap_or_default();
                        return Ok(format!(
                            "switchover done: {leader} -> {target}, leader {} at epoch {}{detail}",
                            now.leader.as_deref().unwrap_or("none"),
                            now.epoch
                        ));
                    }
                    SwitchoverOutcome::Rejected => {
                        return Err(format!(
                            "switchover to {target} failed: {}",
                            s.message.as_deref().unwrap_or("rejected")
                        ));
                    }
                    SwitchoverOutcome::Pending => {
                        last_waiting.clone_from(&s.message);
                    }
                }
            }
            if operator_running(&now).is_none() {
                let _ = state::remove_switchover(dir);
                return Err("the local operator stopped before the switchover completed".into());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            // A forgotten request must not move the leader later.
            let _ = state::remove_switchover(dir);
            return Err(format!(
                "switchover to {target} did not complete within {} s{}",
                timeout.as_secs(),
                last_waiting.map_or(String::new(), |w| format!(" (last: {w})"))
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use rstore_node::admin::{FollowerStatus, LinkStatus, Offsets, ReplicationMode};

    use super::*;
    use rstore_node::admin::Role;

    use crate::brain::FailoverReason;

    fn record(i: u32) -> MemberRecord {
        MemberRecord {
            name: format!("member-{i}"),
            node_id: format!("member-{i}"),
            ordinal: i,
            pid: Some(100 + i),
            data: ([127, 0, 0, 1], 20000 + i as u16).into(),
            repl: ([127, 0, 0, 1], 21000 + i as u16).into(),
            admin: ([127, 0, 0, 1], 22000 + i as u16).into(),
            data_dir: PathBuf::from(format!("/d/member-{i}")),
            log: PathBuf::from(format!("/d/member-{i}.log")),
            netns: None,
            ip: None,
            link: None,
            role: "follower".into(),
            epoch: 2,
            offset: 10,
            lag_bytes: None,
            lag_ms: None,
            label: Some(RoleLabel::Follower),
            message: None,
            restarts: 0,
        }
    }

    fn live(name: &str, role: Role, applied: u64, leader: Option<&str>) -> StatusResponse {
        StatusResponse {
            node_id: name.into(),
            role,
            epoch: 2,
            fenced: false,
            last_log_epoch: 2,
            offsets: Offsets {
                appended: applied,
                durable: applied,
                applied,
                committed: applied,
            },
            leader: leader.map(str::to_string),
            followers: Vec::new(),
            mode: ReplicationMode::SemiSync,
            degraded: false,
            settings: None,
            link: None,
            snapshot_progress: None,
            digest: None,
            keys: 0,
        }
    }

    fn cluster() -> ClusterFile {
        let mut file = ClusterFile::new();
        file.epoch = 2;
        file.leader = Some("member-0".into());
        file.mode = Some("semi-sync".into());
        file.sync_replicas = Some(1);
        file.members = (0..3).map(record).collect();
        file.members[0].role = "leader".into();
        file.members[0].label = Some(RoleLabel::Leader);
        file
    }

    #[test]
    fn a_switchover_without_a_target_takes_the_brains_choice() {
        let file = cluster();
        let repl = "127.0.0.1:21000";
        let probes = vec![
            Ok(live("member-0", Role::Leader, 100, None)),
            Ok(live("member-1", Role::Follower, 90, Some(repl))),
            Ok(live("member-2", Role::Follower, 95, Some(repl))),
        ];
        assert_eq!(choose_target(&file, &probes).as_deref(), Some("member-2"));
        // Equal logs: the lowest ordinal.
        let probes = vec![
            Ok(live("member-0", Role::Leader, 100, None)),
            Ok(live("member-1", Role::Follower, 95, Some(repl))),
            Ok(live("member-2", Role::Follower, 95, Some(repl))),
        ];
        assert_eq!(choose_target(&file, &probes).as_deref(), Some("member-1"));
        // Ranked by (last log epoch, log end), not by applied offset.
        let mut ahead = live("member-1", Role::Follower, 80, Some(repl));
        ahead.offsets.appended = 99;
        let probes = vec![
            Ok(live("member-0", Role::Leader, 100, None)),
            Ok(ahead.clone()),
            Ok(live("member-2", Role::Follower, 95, Some(repl))),
        ];
        assert_eq!(choose_target(&file, &probes).as_deref(), Some("member-1"));
        let mut older = live("member-2", Role::Follower, 120, Some(repl));
        older.last_log_epoch = 1;
        let probes = vec![
            Ok(live("member-0", Role::Leader, 100, None)),
            Ok(live("member-1", Role::Follower, 90, Some(repl))),
            Ok(older),
        ];
        assert_eq!(choose_target(&file, &probes).as_deref(), Some("member-1"));
        // Loading a snapshot: never chosen.
        ahead.link = Some(LinkStatus::Snapshot);
        let probes = vec![
            Ok(live("member-0", Role::Leader, 100, None)),
            Ok(ahead),
            Ok(live("member-2", Role::Follower, 95, Some(repl))),
        ];
        assert_eq!(choose_target(&file, &probes).as_deref(), Some("member-2"));
        // Down or following someone else: not a candidate.
        let probes = vec![
            Ok(live("member-0", Role::Leader, 100, None)),
            Err("down".into()),
            Ok(live("member-2", Role::Follower, 95, Some("elsewhere:1"))),
        ];
        assert_eq!(choose_target(&file, &probes), None);
    }

    #[test]
    fn the_status_table_shows_roles_as_the_operator_records_them() {
        let file = cluster();
        let repl = "127.0.0.1:21000";
        let mut fenced = live("member-1", Role::Follower, 90, Some(repl));
        fenced.fenced = true;
        let mut fenced_leader = live("member-0", Role::Leader, 100, None);
        fenced_leader.fenced = true;
        let probes = vec![
            Ok(fenced_leader),
            Ok(fenced),
            Ok(live("member-2", Role::Idle, 0, None)),
        ];
        let text = render_status(Path::new("/d"), &file, &probes, 3_000);
        let row = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap();
        let roles: Vec<String> = coordination_roles(&file, &probes);
        for (name, role) in ["member-0", "member-1", "member-2"].iter().zip(&roles) {
            let cells: Vec<&str> = row(name).split_whitespace().collect();
            assert_eq!(cells[2], role, "{text}");
        }
        assert_eq!(roles[0], "fenced", "a fenced leader");
    }

    /// The roles `cluster.json` gets from the running operator's pass.
    fn coordination_roles(
        file: &ClusterFile,
        probes: &[Result<StatusResponse, String>],
    ) -> Vec<String> {
        live_statuses(file, probes)
            .into_iter()
            .map(|s| s.role)
            .collect()
    }

    #[test]
    fn the_status_table_shows_members_lag_and_the_last_failover() {
        let mut file = cluster();
        file.last_failover = Some(FailoverRecord {
            reason: FailoverReason::LeaderGone,
            old_leader: Some("member-1".into()),
            new_leader: "member-0".into(),
            epoch: 2,
            started_at: "1970-01-01T00:00:01Z".into(),
            started_at_ms: 1_000,
            detect_ms: 0,
            fence_ms: 4,
            promote_ms: 6,
            repoint_ms: 20,
            relabel_ms: 1,
            total_ms: 31,
            lost_bytes: 0,
            fork_offset: 0,
        });
        file.members[2].restarts = 1;
        let repl = "127.0.0.1:21000";
        let mut leader = live("member-0", Role::Leader, 100, None);
        leader.followers.push(FollowerStatus {
            node_id: "member-1".into(),
            addr: "x".into(),
            received: 97,
            durable: 97,
            applied: 97,
            lag_bytes: 3,
            lag_ms: 1,
            state: rstore_node::admin::FollowerState::Streaming,
        });
        let probes = vec![
            Ok(leader),
            Ok(live("member-1", Role::Follower, 97, Some(repl))),
            Err("connection refused".into()),
        ];
        let text = render_status(Path::new("/d"), &file, &probes, 3_000);
        assert!(
            text.contains("leader member-0  epoch 2  mode semi-sync (K=1)"),
            "{text}"
        );
        assert!(text.contains("MEMBER"), "{text}");
        let row1 = text.lines().find(|l| l.starts_with("member-1")).unwrap();
        assert!(
            row1.contains("follower") && row1.contains("3B/1ms"),
            "{row1}"
        );
        let row2 = text.lines().find(|l| l.starts_with("member-2")).unwrap();
        assert!(row2.contains("follower?"), "last known role: {row2}");
        assert!(
            text.contains("member-2: not answering (connection refused)"),
            "{text}"
        );
        assert!(text.contains("restarted 1 time(s)"), "{text}");
        assert!(
            text.contains("last failover: LeaderGone member-1 -> member-0 at epoch 2, 2000 ms ago: detect 0 ms, fence 4 ms, promote 6 ms, repoint 20 ms, relabel 1 ms, total 31 ms, lost 0 bytes"),
            "{text}"
        );
    }

    #[test]
    fn partition_explains_what_it_needs() {
        let dir = crate::local::test_dir::TestDir::new();
        let err = partition(dir.path(), "member-0", false).unwrap_err();
        assert!(err.contains("no local cluster in"), "{err}");

        // A cluster started without --netns.
        state::save(dir.path(), &cluster()).unwrap();
        let err = partition(dir.path(), "member-0", false).unwrap_err();
        assert!(err.contains("local --netns"), "{err}");
        let err = partition(dir.path(), "member-0", true).unwrap_err();
        assert!(
            err.starts_with("the cluster in") && err.contains("heal needs"),
            "{err}"
        );

        // With namespaces: an unknown member, then a link that is gone
        // (the cluster is not running).
        let mut file = cluster();
        let net = crate::local::netns::Net {
            id: "000000".into(),
            subnet: 250,
        };
        file.network = Some(net.record());
        for m in &mut file.members {
            m.link = Some(net.link(m.ordinal));
        }
        state::save(dir.path(), &file).unwrap();
        let err = partition(dir.path(), "member-7", false).unwrap_err();
        assert!(
            err.contains("not a member") && err.contains("member-2"),
            "{err}"
        );
        let err = partition(dir.path(), "member-1", false).unwrap_err();
        assert!(
            err.contains("rsh-000000-1 does not exist") && err.contains("--netns"),
            "{err}"
        );
    }
}
