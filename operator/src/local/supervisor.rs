//! Node processes of a local cluster: start each member's `rstore-node`,
//! report every start and exit to the main loop at once (an exit is a
//! `Presence::Gone` member, which is what makes a `kill -9` failover fast),
//! restart it with backoff, and stop it gracefully on shutdown.
//!
//! Nodes get neither `--role` nor `--follow`: they wait for the admin API,
//! and the brain tells them what to be. The one exception is the recorded
//! leader after a clean stop of the whole cluster: its first start gets
//! `--role leader`, so it leads again at its persisted epoch (never a
//! restart after a crash). Each node runs in its own process
//! group, so a Ctrl-C in the terminal reaches the operator only and it
//! stops the nodes itself, in order. Nothing here needs `unsafe`: signals
//! other than SIGKILL go through the `kill` utility, and process checks read
//! `/proc` (Linux).

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Where one member lives: its name, folders and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    pub name: String,
    pub ordinal: u32,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub data: SocketAddr,
    pub repl: SocketAddr,
    pub admin: SocketAddr,
    /// The network namespace it runs in (`--netns`), if any.
    pub netns: Option<String>,
}

/// How to start a node (everything but the per-member flags).
#[derive(Debug, Clone)]
pub struct NodeCommand {
    pub bin: PathBuf,
    /// Flags every member gets (replication and durability settings).
    pub args: Vec<String>,
    /// Environment every member gets (e.g. `RSTORE_REQUIREPASS`, kept off
    /// the command line so `ps` does not show it).
    pub env: Vec<(String, String)>,
}

/// Restart delays: `initial` for the first restart, doubling up to `max`;
/// back to `initial` once a run lasted `reset_after`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
    /// How long a stopping node gets after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(30),
            stop_grace: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before a restart: `previous` is the delay before the
    /// last one (`None` before the first), `uptime` how long the last run
    /// lasted.
    pub fn next(&self, previous: Option<Duration>, uptime: Duration) -> Duration {
        match previous {
            Some(previous) if uptime < self.reset_after => {
                (previous * 2).min(self.max).max(self.initial)
            }
            _ => self.initial,
        }
    }
}

/// What a member's supervisor reports to the main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A node process was started (at `spec`'s addresses).
    Started { spec: MemberSpec, pid: u32 },
    /// The node process exited (or was killed).
    Exited {
        ordinal: u32,
        pid: u32,
        status: String,
        uptime: Duration,
    },
    /// The node could not be started at all.
    SpawnFailed { ordinal: u32, error: String },
    /// The supervisor stopped its node for good (shutdown); `clean` when
    /// the node was running and exited successfully on SIGTERM (it closed
    /// its log).
    Stopped { ordinal: u32, clean: bool },
}

/// Run one member: start, watch, restart with backoff, until `stop`.
/// `lead_first`: its first start gets `--role leader` (see the module
/// documentation); restarts never do.
pub async fn supervise(
    mut spec: MemberSpec,
    command: Arc<NodeCommand>,
    events: mpsc::UnboundedSender<SupervisorEvent>,
    mut stop: watch::Receiver<bool>,
    backoff: Backoff,
    lead_first: bool,
) {
    let mut delay = None;
    let mut lead = lead_first;
    let mut clean = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let log_start = std::fs::metadata(&spec.log).map_or(0, |m| m.len());
        let started = Instant::now();
        let mut uptime = Duration::ZERO;
        let spawned = spawn_node(&spec, &command, lead);
        lead = false;
        match spawned {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                let _ = events.send(SupervisorEvent::Started {
                    spec: spec.clone(),
                    pid,
                });
                let status = tokio::select! {
                    status = child.wait() => status,
                    _ = stop.changed() => {
                        clean = terminate(&mut child, &spec.name, backoff.stop_grace).await;
                        break;
                    }
                };
                uptime = started.elapsed();
                let status = match status {
                    Ok(s) => s.to_string(),
                    Err(err) => format!("cannot wait for it: {err}"),
                };
                tracing::warn!(
                    member = %spec.name,
                    pid,
                    %status,
                    uptime_ms = u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
                    log = %spec.log.display(),
                    "node exited; restarting it"
                );
                let _ = events.send(SupervisorEvent::Exited {
                    ordinal: spec.ordinal,
                    pid,
                    status,
                    uptime,
                });
                if spec.netns.is_none() && address_in_use(&spec.log, log_start) {
                    // Another program took one of its ports while it was
                    // down: move the member. The brain repoints followers
                    // to a leader's new replication address.
                    match pick_ports(3, &HashSet::new()) {
                        Ok(ports) => {
                            tracing::warn!(member = %spec.name, "a port of this member is taken by another program; moving it to new ports");
                            spec.data.set_port(ports[0]);
                            spec.repl.set_port(ports[1]);
                            spec.admin.set_port(ports[2]);
                        }
                        Err(err) => {
                            tracing::warn!(member = %spec.name, %err, "cannot find free ports")
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(member = %spec.name, %error, "cannot start the node");
                let _ = events.send(SupervisorEvent::SpawnFailed {
                    ordinal: spec.ordinal,
                    error,
                });
            }
        }
        let wait = backoff.next(delay, uptime);
        delay = Some(wait);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
    let _ = events.send(SupervisorEvent::Stopped {
        ordinal: spec.ordinal,
        clean,
    });
}

fn spawn_node(spec: &MemberSpec, command: &NodeCommand, lead: bool) -> Result<Child, String> {
    std::fs::create_dir_all(&spec.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", spec.data_dir.display()))?;
    // A stale listen.json must not be mistaken for this run's.
    let _ = std::fs::remove_file(spec.data_dir.join("listen.json"));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("cannot open {}: {e}", spec.log.display()))?;
    let _ = writeln!(
        log,
        "=== rstore-operator local: starting {} (data {}, repl {}, admin {}{}) at unix ms {}",
        spec.name,
        spec.data,
        spec.repl,
        spec.admin,
        spec.netns
            .as_deref()
            .map_or(String::new(), |ns| format!(", network namespace {ns}")),
        crate::coordination::now_ms()
    );
    let stderr = log
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", spec.log.display()))?;
    // In a namespace, `ip netns exec` execs the node in place: the pid is
    // the node's.
    let mut cmd = match &spec.netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(&command.bin);
            cmd
        }
        None => Command::new(&command.bin),
    };
    cmd.arg("--node-id")
        .arg(&spec.name)
        .arg("--data-dir")
        .arg(&spec.data_dir)
        .arg("--listen")
        .arg(spec.data.to_string())
        .arg("--repl-listen")
        .arg(spec.repl.to_string())
        .arg("--admin-listen")
        .arg(spec.admin.to_string())
        .args(&command.args)
        .args(if lead { &["--role", "leader"][..] } else { &[] })
        // The brain alone decides roles: never let the environment start a
        // node as a leader or follower.
        .env_remove("RSTORE_ROLE")
        .env_remove("RSTORE_FOLLOW")
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn().map_err(|e| match &spec.netns {
        Some(ns) => format!(
            "cannot run ip netns exec {ns} {}: {e}",
            command.bin.display()
        ),
        None => format!("cannot run {}: {e}", command.bin.display()),
    })
}

/// SIGTERM, then SIGKILL after `grace`; true when the node exited
/// successfully on its own.
async fn terminate(child: &mut Child, name: &str, grace: Duration) -> bool {
    let Some(pid) = child.id() else {
        return false;
    };
    // A paused node (SIGSTOP) would hold SIGTERM until continued.
    let _ = signal(pid, "CONT");
    if let Err(err) = signal(pid, "TERM") {
        tracing::warn!(member = %name, pid, %err, "cannot send SIGTERM");
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => {
            tracing::info!(member = %name, pid, %status, "node stopped");
            status.success()
        }
        Ok(Err(err)) => {
            tracing::warn!(member = %name, pid, %err, "cannot wait for the node");
            false
        }
        Err(_) => {
            tracing::warn!(member = %name, pid, "node did not stop within {} ms; killing it", grace.as_millis());
            let _ = child.kill().await;
            false
        }
    }
}

/// Whether the node's log since `offset` says a port was taken.
fn address_in_use(log: &Path, offset: u64) -> bool {
    let Ok(mut f) = std::fs::File::open(log) else {
        return false;
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return false;
    }
    let mut tail = String::new();
    let _ = f.take(64 * 1024).read_to_string(&mut tail);
    tail.contains("Address already in use") || tail.contains("os error 98")
}

/// Send `sig` (a name such as `TERM`) to `pid` with the `kill` utility.
pub fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{sig} {pid} failed ({status})"))
    }
}

/// The command line of a live (not zombie) process, from `/proc`.
pub fn process_args(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if state == 'Z' || state == 'X' {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether `pid` is an `rstore-node` serving `data_dir`.
pub fn is_node_for(pid: u32, data_dir: &Path) -> bool {
    let Some(args) = process_args(pid) else {
        return false;
    };
    let is_node = args
        .first()
        .is_some_and(|a| Path::new(a).file_name().is_some_and(|f| f == "rstore-node"));
    let dir = data_dir.to_string_lossy();
    is_node
        && args
            .windows(2)
            .any(|w| w[0] == "--data-dir" && w[1] == dir.as_ref())
}

/// Whether `pid` is another `rstore-operator local`.
pub fn is_local_operator(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    process_args(pid).is_some_and(|args| {
        args.first().is_some_and(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|f| f == "rstore-operator")
        }) && args.iter().any(|a| a == "local")
    })
}

/// Stop nodes left running by an operator that died (it could not stop
/// them): each `(pid, member data dir)` that still runs an `rstore-node`
/// for that folder gets SIGTERM, then SIGKILL.
pub async fn stop_stale_nodes(candidates: &[(u32, PathBuf)], grace: Duration) {
    let mut seen = HashSet::new();
    for (pid, dir) in candidates {
        if !seen.insert(*pid) || !is_node_for(*pid, dir) {
            continue;
        }
        tracing::warn!(pid, dir = %dir.display(), "stopping a node left running by a previous operator");
        let _ = signal(*pid, "CONT");
        let _ = signal(*pid, "TERM");
        let deadline = Instant::now() + grace;
        while is_node_for(*pid, dir) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if is_node_for(*pid, dir) {
            let _ = signal(*pid, "KILL");
            let deadline = Instant::now() + Duration::from_secs(2);
            while is_node_for(*pid, dir) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// `count` distinct loopback ports free right now and not in `avoid`.
///
/// They are drawn at random below the kernel's ephemeral range when it
/// leaves room (outgoing connections take ports from that range, so a port
/// chosen there could be taken while its member is down); otherwise the
/// kernel picks them.
pub fn pick_ports(count: usize, avoid: &HashSet<u16>) -> std::io::Result<Vec<u16>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (20_000u16, ephemeral_low);
    let mut held: Vec<TcpListener> = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    if high > low + 1000 {
        let span = u64::from(high - low);
        let mut next = random_u64() % span;
        let mut tries = 0;
        while ports.len() < count && tries < span {
            tries += 1;
            next = (next + 7919) % span;
            let Ok(port) = u16::try_from(u64::from(low) + next) else {
                continue;
            };
            if avoid.contains(&port) || ports.contains(&port) {
                continue;
            }
            if let Ok(l) = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))) {
                held.push(l);
                ports.push(port);
            }
        }
    }
    while ports.len() < count {
        let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let port = l.local_addr()?.port();
        if !avoid.contains(&port) && !ports.contains(&port) {
            ports.push(port);
        }
        held.push(l);
    }
    Ok(ports)
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_its_initial_delay_doubles_to_its_cap_and_resets_after_a_long_run() {
        let b = Backoff::default();
        let short = Duration::from_millis(10);
        let mut delay = None;
        let mut seen = Vec::new();
        for _ in 0..7 {
            let wait = b.next(delay, short);
            delay = Some(wait);
            seen.push(wait.as_millis());
        }
        assert_eq!(seen, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.next(delay, Duration::from_secs(31)), b.initial);
    }

    #[test]
    fn picked_ports_are_distinct_free_and_avoid_the_given_ones() {
        let first = pick_ports(3, &HashSet::new()).unwrap();
        let avoid: HashSet<u16> = first.iter().copied().collect();
        let second = pick_ports(6, &avoid).unwrap();
        let all: HashSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 9);
        for port in second {
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
        }
    }

    #[test]
    fn only_our_own_nodes_are_taken_for_stale_ones() {
        // This test process is no rstore-node, and no operator.
        assert!(!is_node_for(std::process::id(), Path::new("/tmp")));
        assert!(!is_local_operator(std::process::id()));
        assert!(process_args(std::process::id()).is_some());
        assert_eq!(process_args(u32::MAX), None);
    }

    #[test]
    fn a_bind_failure_in_this_run_of_the_log_is_recognised() {
        let dir = crate::local::test_dir::TestDir::new();
        let log = dir.path().join("m.log");
        std::fs::write(&log, "old run: Address already in use\n").unwrap();
        let len = std::fs::metadata(&log).unwrap().len();
        assert!(!address_in_use(&log, len), "an earlier run does not count");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(
            f,
            "cannot bind the RESP listener on 127.0.0.1:1: Address already in use (os error 98)"
        )
        .unwrap();
        assert!(address_in_use(&log, len));
    }
}
