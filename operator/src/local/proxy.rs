//! The leader and read endpoints of a local cluster: TCP proxies that route
//! each new connection by the members' role labels, which the brain moves
//! (through the local driver) in a [`watch`] channel of [`Routes`].
//!
//! - Leader endpoint: every connection goes to the member labelled
//!   `leader`. When that label moves or is removed, every connection to the
//!   old leader is closed at once, so clients reconnect and reach the new
//!   one instead of writing into a fenced or dead node.
//! - Read endpoint: new connections round-robin over the members labelled
//!   `follower` that are ready (their link to the current leader is up and
//!   they load no snapshot: what the node's `/readyz` says), the leader when
//!   there is none; a connection is closed when its member loses every
//!   label (a follower whose link blinks keeps its readers: WAITOFFSET
//!   never answers from older state).
//!
//! With nowhere to send a new connection (a failover in progress), the
//! proxy holds it up to [`ProxyOptions::wait_for_target`] for a target to
//! appear, then closes it. A connect to a member that does not answer (cut
//! off the network) is abandoned as soon as the member loses its role.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use rstore_node::admin::{LinkStatus, Role, StatusResponse};

use crate::brain::RoleLabel;

/// Where a member serves clients, and the label it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    /// The member's RESP address.
    pub data: SocketAddr,
    pub label: Option<RoleLabel>,
    /// Follower ready to serve reads (see [`ready_follower`]).
    pub ready: bool,
}

/// Whether a member that answered `status` serves consistent reads for the
/// leader whose replication address is `leader_repl`, at `epoch`: an
/// unfenced follower of that leader at that epoch, its link up, loading no
/// snapshot (the node's `/readyz` also checks the tail replay after a
/// snapshot, which `/status` does not show: callers check both).
pub fn ready_follower(status: &StatusResponse, leader_repl: &str, epoch: u64) -> bool {
    status.role == Role::Follower
        && !status.fenced
        && status.epoch == epoch
        && status.leader.as_deref() == Some(leader_repl)
        && status.link == Some(LinkStatus::Up)
        && status.snapshot_progress.is_none()
}

/// Every member's route, in ordinal order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub members: Vec<Route>,
}

impl Routes {
    /// The member labelled leader (the brain never labels two).
    pub fn leader(&self) -> Option<&Route> {
        self.members
            .iter()
            .find(|r| r.label == Some(RoleLabel::Leader))
    }

    /// Members labelled follower that are ready to serve reads.
    pub fn ready_followers(&self) -> impl Iterator<Item = &Route> {
        self.members
            .iter()
            .filter(|r| r.label == Some(RoleLabel::Follower) && r.ready)
    }

    /// The `turn`-th ready follower, round robin; the leader when no
    /// follower is ready.
    pub fn read_target(&self, turn: usize) -> Option<&Route> {
        let count = self.ready_followers().count();
        if count == 0 {
            return self.leader();
        }
        self.ready_followers().nth(turn % count)
    }

    /// Set whether a member is ready to serve reads; true when it changed.
    pub fn set_ready(&mut self, name: &str, ready: bool) -> bool {
        match self.members.iter_mut().find(|r| r.name == name) {
            Some(r) if r.ready != ready => {
                r.ready = ready;
                true
            }
            _ => false,
        }
    }

    /// The label a member carries now.
    pub fn label(&self, name: &str) -> Option<RoleLabel> {
        self.members
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.label)
    }

    /// Set a member's label; true when it changed.
    pub fn set_label(&mut self, name: &str, label: Option<RoleLabel>) -> bool {
        match self.members.iter_mut().find(|r| r.name == name) {
            Some(r) if r.label != label => {
                r.label = label;
                true
            }
            _ => false,
        }
    }

    /// Whether a connection made to `route` for `endpoint` may stay open.
    pub fn still_serves(&self, endpoint: Endpoint, route: &Route) -> bool {
        let current = self
            .members
            .iter()
            .find(|r| r.name == route.name && r.data == route.data);
        match endpoint {
            Endpoint::Leader => current.is_some_and(|r| r.label == Some(RoleLabel::Leader)),
            Endpoint::Read => current.is_some_and(|r| r.label.is_some()),
        }
    }

    fn target(&self, endpoint: Endpoint, turn: &AtomicUsize) -> Option<Route> {
        match endpoint {
            Endpoint::Leader => self.leader().cloned(),
            Endpoint::Read => self
                .read_target(turn.fetch_add(1, Ordering::Relaxed))
                .cloned(),
        }
    }
}

/// Which endpoint a proxy serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Leader,
    Read,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Leader => "leader",
            Endpoint::Read => "read",
        }
    }
}

/// Proxy timing.
#[derive(Debug, Clone, Copy)]
pub struct ProxyOptions {
    /// How long a new connection waits for a target before it is closed.
    pub wait_for_target: Duration,
    /// Deadline of each connection attempt to a member.
    pub connect_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            wait_for_target: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Accept connections on `listener` until `shutdown` turns true; every
/// connection is closed then too.
pub async fn serve(
    listener: TcpListener,
    endpoint: Endpoint,
    routes: watch::Receiver<Routes>,
    mut shutdown: watch::Receiver<bool>,
    options: ProxyOptions,
) {
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((client, peer)) => {
                let routes = routes.clone();
                let shutdown = shutdown.clone();
                let turn = turn.clone();
                tokio::spawn(async move {
                    proxy_connection(client, peer, endpoint, routes, shutdown, &turn, options)
                        .await;
                });
            }
            Err(err) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(endpoint = endpoint.as_str(), %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

/// Find a target for one client connection, then relay bytes both ways
/// until either side closes or the target loses its role.
async fn proxy_connection(
    mut client: TcpStream,
    peer: SocketAddr,
    endpoint: Endpoint,
    mut routes: watch::Receiver<Routes>,
    mut shutdown: watch::Receiver<bool>,
    turn: &AtomicUsize,
    options: ProxyOptions,
) {
    let deadline = Instant::now() + options.wait_for_target;
    let (route, mut upstream) = loop {
        let target = routes.borrow_and_update().target(endpoint, turn);
        if let Some(route) = target {
            // A member cut off the network does not refuse: the connect
            // hangs. Give up on it as soon as it loses its role, so the
            // client reaches the new leader without waiting out the attempt.
            let attempt =
                tokio::time::timeout(options.connect_timeout, TcpStream::connect(route.data));
            tokio::pin!(attempt);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut attempt => break Some(outcome),
                    changed = routes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if !routes.borrow_and_update().still_serves(endpoint, &route) {
                            break None;
                        }
                    }
                    _ = shutdown.changed() => return,
                }
            };
            match outcome {
                Some(Ok(Ok(stream))) => break (route, stream),
                Some(Ok(Err(err))) => {
                    tracing::debug!(endpoint = endpoint.as_str(), member = %route.name, %err, "cannot reach member")
                }
                Some(Err(_)) => {
                    tracing::debug!(endpoint = endpoint.as_str(), member = %route.name, "connect timed out")
                }
                None => {
                    tracing::debug!(endpoint = endpoint.as_str(), member = %route.name, "member lost its role while connecting; trying again");
                    continue;
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::info!(
                endpoint = endpoint.as_str(),
                %peer,
                "no member to serve this connection within {} ms; closing it",
                options.wait_for_target.as_millis()
            );
            return;
        }
        // Retry on a label change, or after a short pause when the target
        // refused (a member restarting keeps its label a moment).
        let pause = (deadline - now).min(Duration::from_millis(50));
        tokio::select! {
            changed = routes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tracing::debug!(endpoint = endpoint.as_str(), %peer, member = %route.name, "connection routed");
    let relay = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(relay);
    loop {
        tokio::select! {
            result = &mut relay => {
                if let Err(err) = result {
                    tracing::debug!(endpoint = endpoint.as_str(), %peer, %err, "connection ended");
                }
                return;
            }
            changed = routes.changed() => {
                if changed.is_err() || !routes.borrow_and_update().still_serves(endpoint, &route) {
                    tracing::debug!(endpoint = endpoint.as_str(), %peer, member = %route.name, "member lost its role; closing the connection");
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// A route; followers are ready.
    fn route(name: &str, port: u16, label: Option<RoleLabel>) -> Route {
        Route {
            name: name.to_string(),
            data: SocketAddr::from(([127, 0, 0, 1], port)),
            label,
            ready: label == Some(RoleLabel::Follower),
        }
    }

    #[test]
    fn the_leader_endpoint_follows_the_leader_label() {
        let mut routes = Routes {
            members: vec![
                route("m-0", 1, Some(RoleLabel::Follower)),
                route("m-1", 2, Some(RoleLabel::Leader)),
                route("m-2", 3, None),
            ],
        };
        assert_eq!(routes.leader().map(|r| r.name.as_str()), Some("m-1"));
        assert!(routes.set_label("m-1", None));
        assert!(!routes.set_label("m-1", None), "no change, no notification");
        assert_eq!(routes.leader(), None);
    }

    #[test]
    fn reads_round_robin_over_followers_and_fall_back_to_the_leader() {
        let mut routes = Routes {
            members: vec![
                route("m-0", 1, Some(RoleLabel::Leader)),
                route("m-1", 2, Some(RoleLabel::Follower)),
                route("m-2", 3, None),
                route("m-3", 4, Some(RoleLabel::Follower)),
            ],
        };
        let picks: Vec<&str> = (0..4)
            .map(|turn| routes.read_target(turn).unwrap().name.as_str())
            .collect();
        assert_eq!(picks, ["m-1", "m-3", "m-1", "m-3"]);
        routes.set_label("m-1", None);
        routes.set_label("m-3", None);
        assert_eq!(routes.read_target(7).unwrap().name, "m-0");
        routes.set_label("m-0", None);
        assert_eq!(routes.read_target(0), None);
    }

    #[test]
    fn reads_go_only_to_ready_followers() {
        let mut routes = Routes {
            members: vec![
                route("m-0", 1, Some(RoleLabel::Leader)),
                route("m-1", 2, Some(RoleLabel::Follower)),
                route("m-2", 3, Some(RoleLabel::Follower)),
            ],
        };
        assert!(routes.set_ready("m-2", false));
        assert!(
            !routes.set_ready("m-2", false),
            "no change, no notification"
        );
        let picks: Vec<&str> = (0..4)
            .map(|turn| routes.read_target(turn).unwrap().name.as_str())
            .collect();
        assert_eq!(
            picks, ["m-1"; 4],
            "a follower that is not ready gets no reads"
        );
        routes.set_ready("m-1", false);
        assert_eq!(
            routes.read_target(0).unwrap().name,
            "m-0",
            "no ready follower: the leader"
        );
        routes.set_ready("m-2", true);
        assert_eq!(routes.read_target(0).unwrap().name, "m-2");
    }

    fn follower_status(leader: &str, epoch: u64) -> StatusResponse {
        StatusResponse {
            node_id: "m-1".into(),
            role: Role::Follower,
            epoch,
            fenced: false,
            last_log_epoch: epoch,
            offsets: rstore_node::admin::Offsets::default(),
            leader: Some(leader.to_string()),
            followers: Vec::new(),
            mode: rstore_node::admin::ReplicationMode::SemiSync,
            degraded: false,
            settings: None,
            link: Some(LinkStatus::Up),
            snapshot_progress: None,
            digest: None,
            keys: 0,
        }
    }

    #[test]
    fn a_follower_is_ready_once_linked_to_the_current_leader_and_past_any_snapshot() {
        let leader = "127.0.0.1:7001";
        let up = follower_status(leader, 3);
        assert!(ready_follower(&up, leader, 3));
        // Another leader, or the same one at an older epoch (not repointed).
        assert!(!ready_follower(&up, "127.0.0.1:7002", 3));
        assert!(!ready_follower(&up, leader, 4));
        for link in [
            LinkStatus::Down,
            LinkStatus::Connecting,
            LinkStatus::Snapshot,
        ] {
            let mut s = up.clone();
            s.link = Some(link);
            assert!(!ready_follower(&s, leader, 3), "link {link:?}");
        }
        let mut loading = up.clone();
        loading.snapshot_progress = Some((10, 100));
        assert!(!ready_follower(&loading, leader, 3));
        let mut fenced = up.clone();
        fenced.fenced = true;
        assert!(!ready_follower(&fenced, leader, 3));
        let mut leading = up;
        leading.role = Role::Leader;
        leading.leader = None;
        assert!(!ready_follower(&leading, leader, 3));
    }

    #[test]
    fn connections_stay_only_while_their_member_keeps_its_role() {
        let leader = route("m-0", 1, Some(RoleLabel::Leader));
        let mut routes = Routes {
            members: vec![leader.clone(), route("m-1", 2, Some(RoleLabel::Follower))],
        };
        assert!(routes.still_serves(Endpoint::Leader, &leader));
        routes.set_label("m-0", Some(RoleLabel::Follower));
        assert!(!routes.still_serves(Endpoint::Leader, &leader));
        assert!(
            routes.still_serves(Endpoint::Read, &leader),
            "a demoted leader still serves reads"
        );
        routes.set_label("m-0", None);
        assert!(!routes.still_serves(Endpoint::Read, &leader));
        // Same name at a new address (a restart on other ports) is another
        // target.
        routes.set_label("m-0", Some(RoleLabel::Leader));
        routes.members[0].data = SocketAddr::from(([127, 0, 0, 1], 9));
        assert!(!routes.still_serves(Endpoint::Leader, &leader));
    }

    /// A backend that greets each connection with its name, then echoes.
    async fn backend(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if conn
                        .write_all(format!("{name}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    struct TestProxy {
        addr: SocketAddr,
        routes: watch::Sender<Routes>,
        _shutdown: watch::Sender<bool>,
    }

    async fn proxy(endpoint: Endpoint, members: Vec<Route>, wait_ms: u64) -> TestProxy {
        let options = ProxyOptions {
            wait_for_target: Duration::from_millis(wait_ms),
            connect_timeout: Duration::from_millis(500),
        };
        proxy_with(endpoint, members, options).await
    }

    async fn proxy_with(
        endpoint: Endpoint,
        members: Vec<Route>,
        options: ProxyOptions,
    ) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (routes, rx) = watch::channel(Routes { members });
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(serve(listener, endpoint, rx, shutdown_rx, options));
        TestProxy {
            addr,
            routes,
            _shutdown: shutdown,
        }
    }

    /// Connect and read the backend's greeting.
    async fn greeting(addr: SocketAddr) -> (String, BufReader<TcpStream>) {
        let conn = TcpStream::connect(addr).await.unwrap();
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        (line.trim().to_string(), reader)
    }

    /// Whether the proxy closed the connection within a second.
    async fn closed(reader: &mut BufReader<TcpStream>) -> bool {
        let mut buf = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(1), reader.read_to_end(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_leader_change_closes_connections_to_the_old_leader() {
        let a = backend("a").await;
        let b = backend("b").await;
        let p = proxy(
            Endpoint::Leader,
            vec![
                Route {
                    name: "a".into(),
                    data: a,
                    label: Some(RoleLabel::Leader),
                    ready: false,
                },
                Route {
                    name: "b".into(),
                    data: b,
                    label: Some(RoleLabel::Follower),
                    ready: true,
                },
            ],
            2000,
        )
        .await;
        let (name, mut conn) = greeting(p.addr).await;
        assert_eq!(name, "a");
        conn.get_mut().write_all(b"ping\n").await.unwrap();
        let mut echo = String::new();
        conn.read_line(&mut echo).await.unwrap();
        assert_eq!(echo, "ping\n", "bytes flow both ways");

        // A follower's label changing leaves the leader's clients alone.
        p.routes.send_modify(|r| {
            r.set_label("b", None);
        });
        conn.get_mut().write_all(b"still\n").await.unwrap();
        echo.clear();
        conn.read_line(&mut echo).await.unwrap();
        assert_eq!(echo, "still\n");

        // The brain's relabel order: old leader off, then the new one on.
        p.routes.send_modify(|r| {
            r.set_label("a", None);
        });
        assert!(closed(&mut conn).await, "old leader's connection closed");
        p.routes.send_modify(|r| {
            r.set_label("b", Some(RoleLabel::Leader));
        });
        let (name, _conn) = greeting(p.addr).await;
        assert_eq!(name, "b", "a new connection reaches the new leader");
    }

    #[tokio::test]
    async fn a_connection_waits_for_a_leader_then_gives_up() {
        let a = backend("a").await;
        let p = proxy(
            Endpoint::Leader,
            vec![Route {
                name: "a".into(),
                data: a,
                label: None,
                ready: false,
            }],
            1500,
        )
        .await;
        // Labelled while the client waits: it is served.
        let routes = p.routes.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            routes.send_modify(|r| {
                r.set_label("a", Some(RoleLabel::Leader));
            });
        });
        let (name, _conn) = greeting(p.addr).await;
        assert_eq!(name, "a");

        // No leader at all: closed after the wait.
        p.routes.send_modify(|r| {
            r.set_label("a", None);
        });
        let started = std::time::Instant::now();
        let mut conn = BufReader::new(TcpStream::connect(p.addr).await.unwrap());
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1200) && waited < Duration::from_secs(4),
            "waited {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_dead_leader_is_retried_until_the_label_moves() {
        let b = backend("b").await;
        // A port nothing listens on: the old leader was killed.
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let p = proxy(
            Endpoint::Leader,
            vec![
                Route {
                    name: "a".into(),
                    data: dead,
                    label: Some(RoleLabel::Leader),
                    ready: false,
                },
                Route {
                    name: "b".into(),
                    data: b,
                    label: None,
                    ready: false,
                },
            ],
            3000,
        )
        .await;
        let routes = p.routes.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            routes.send_modify(|r| {
                r.set_label("a", None);
                r.set_label("b", Some(RoleLabel::Leader));
            });
        });
        let (name, _conn) = greeting(p.addr).await;
        assert_eq!(name, "b");
    }

    /// A port whose connects hang (its accept queue is full, so the
    /// kernel drops new SYNs), like a member cut off the network; `None`
    /// when this kernel answers anyway.
    async fn unanswering() -> Option<(SocketAddr, Vec<TcpStream>, tokio::net::TcpListener)> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(conn)) => held.push(conn),
                Ok(Err(_)) => return None,
                Err(_) => return Some((addr, held, listener)),
            }
        }
        None
    }

    #[tokio::test]
    async fn a_hanging_connect_is_dropped_when_the_leader_label_moves() {
        let Some((silent, _held, _listener)) = unanswering().await else {
            eprintln!("skipped: this kernel answers connects to a full accept queue");
            return;
        };
        let b = backend("b").await;
        let p = proxy_with(
            Endpoint::Leader,
            vec![
                Route {
                    name: "a".into(),
                    data: silent,
                    label: Some(RoleLabel::Leader),
                    ready: false,
                },
                Route {
                    name: "b".into(),
                    data: b,
                    label: Some(RoleLabel::Follower),
                    ready: true,
                },
            ],
            ProxyOptions {
                wait_for_target: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(3),
            },
        )
        .await;
        let routes = p.routes.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            routes.send_modify(|r| {
                r.set_label("a", None);
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            routes.send_modify(|r| {
                r.set_label("b", Some(RoleLabel::Leader));
            });
        });
        let started = std::time::Instant::now();
        let (name, _conn) = greeting(p.addr).await;
        assert_eq!(name, "b");
        // Well before the 3 s connect timeout would have let it go.
        assert!(
            started.elapsed() < Duration::from_millis(2000),
            "served after {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn the_read_endpoint_spreads_connections_over_followers() {
        let a = backend("a").await;
        let b = backend("b").await;
        let c = backend("c").await;
        let p = proxy(
            Endpoint::Read,
            vec![
                Route {
                    name: "a".into(),
                    data: a,
                    label: Some(RoleLabel::Leader),
                    ready: false,
                },
                Route {
                    name: "b".into(),
                    data: b,
                    label: Some(RoleLabel::Follower),
                    ready: true,
                },
                Route {
                    name: "c".into(),
                    data: c,
                    label: Some(RoleLabel::Follower),
                    ready: true,
                },
            ],
            1000,
        )
        .await;
        let mut seen = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..4 {
            let (name, conn) = greeting(p.addr).await;
            seen.push(name);
            conns.push(conn);
        }
        seen.sort();
        assert_eq!(seen, ["b", "b", "c", "c"]);
        // A follower that loses its label loses its readers.
        p.routes.send_modify(|r| {
            r.set_label("b", None);
        });
        let mut open = 0;
        for conn in &mut conns {
            if !closed(conn).await {
                open += 1;
            }
        }
        assert_eq!(open, 2, "only c's connections stay");
        // With no follower left, reads go to the leader.
        p.routes.send_modify(|r| {
            r.set_label("c", None);
        });
        let (name, _conn) = greeting(p.addr).await;
        assert_eq!(name, "a");
    }
}
