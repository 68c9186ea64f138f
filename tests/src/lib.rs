//! Helpers for end-to-end tests: spawn real `rstore-node` processes on
//! loopback ports and talk to them with real Redis clients and the admin
//! HTTP API.

pub mod k8s;
pub mod kind;
pub mod local;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rstore_node::admin::StatusResponse;

/// The `rstore-node` binary built by the same `cargo test` run.
pub fn node_binary() -> PathBuf {
    if let Ok(p) = std::env::var("RSTORE_NODE_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>/rstore-node
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = dir.join("rstore-node");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p rstore-node` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// The `rstore-operator` binary beside the test binaries
/// (`target/<profile>/rstore-operator`), or `RSTORE_OPERATOR_BIN`.
///
/// `cargo test --workspace` builds it (the operator crate has an
/// integration test, which makes cargo build its binary). When it is
/// missing (`cargo test -p rstore-e2e` alone on a fresh tree), it and
/// `rstore-node` are built once here with the same cargo and profile.
pub fn operator_binary() -> PathBuf {
    if let Ok(p) = std::env::var("RSTORE_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf();
    let bin = dir.join("rstore-operator");
    if !bin.exists() || !dir.join("rstore-node").exists() {
        static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        BUILT.get_or_init(|| {
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "-p", "rstore-operator", "-p", "rstore-node"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build of the binaries failed");
        });
    }
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// Poll `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `rstore-node` process.
pub struct NodeProc {
    pub id: String,
    pub dir: PathBuf,
    pub data: SocketAddr,
    pub repl: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
}

fn read_listen(dir: &Path) -> Option<(u32, SocketAddr, SocketAddr, SocketAddr)> {
    let text = std::fs::read_to_string(dir.join("listen.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let addr = |k: &str| v.get(k)?.as_str()?.parse().ok();
    Some((
        v.get("pid")?.as_u64()? as u32,
        addr("data")?,
        addr("repl")?,
        addr("admin")?,
    ))
}

impl NodeProc {
    /// Start a node in `dir` with `extra` flags (on loopback port 0 unless
    /// the flags say otherwise).
    pub fn start(dir: &Path, id: &str, extra: &[&str]) -> NodeProc {
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        let has = |flag: &str| extra.contains(&flag);
        for (flag, default) in [
            ("--listen", "127.0.0.1:0"),
            ("--repl-listen", "127.0.0.1:0"),
            ("--admin-listen", "127.0.0.1:0"),
        ] {
            if !has(flag) {
                args.push(flag.into());
                args.push(default.into());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = NodeProc {
            id: id.into(),
            dir: dir.to_path_buf(),
            data: "0.0.0.0:0".parse().expect("addr"),
            repl: "0.0.0.0:0".parse().expect("addr"),
            admin: "0.0.0.0:0".parse().expect("addr"),
            args,
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("data dir");
        let _ = std::fs::remove_file(self.dir.join("listen.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(node_binary())
            .args(&self.args)
            .env("RSTORE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rstore-node");
        let pid = child.id();
        self.child = Some(child);
        let (_, data, repl, admin) = wait_for(
            &format!("{} to listen", self.id),
            Duration::from_secs(30),
            || {
                if let Some(c) = self.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    panic!(
                        "{} exited during start-up ({status}); log:\n{}",
                        self.id,
                        self.log()
                    );
                }
                read_listen(&self.dir).filter(|(p, ..)| *p == pid)
            },
        );
        self.data = data;
        self.repl = repl;
        self.admin = admin;
    }

    /// The node's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Restart with the same flags and the same ports.
    pub fn restart(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "restart of a running node");
        self.pin_ports();
        let keep: Vec<String> = self.args.clone();
        self.args = keep;
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn();
    }

    /// Replace port-0 flags by the ports bound, so restarts keep them.
    fn pin_ports(&mut self) {
        for (flag, addr) in [
            ("--listen", self.data),
            ("--repl-listen", self.repl),
            ("--admin-listen", self.admin),
        ] {
            if let Some(i) = self.args.iter().position(|a| a == flag) {
                self.args[i + 1] = addr.to_string();
            }
        }
    }

    /// Remove a flag (and its value) from the restart arguments.
    pub fn drop_flag(&mut self, flag: &str, has_value: bool) {
        if let Some(i) = self.args.iter().position(|a| a == flag) {
            self.args.drain(i..i + if has_value { 2 } else { 1 });
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// SIGSTOP: the process stays, silent (a paused or partitioned leader).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Graceful stop (SIGTERM); returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        self.signal("-TERM");
        match self.child.take() {
            Some(mut c) => c.wait().map(|s| s.success()).unwrap_or(false),
            None => true,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.data)
    }

    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        wait_for("redis connection", Duration::from_secs(10), || {
            client.get_connection().ok()
        })
    }

    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(self.admin, method, path, body)
    }

    pub fn status(&self) -> StatusResponse {
        let (code, body) = self.http("GET", "/status", None);
        assert_eq!(code, 200, "status of {}: {body}", self.id);
        serde_json::from_str(&body).expect("status json")
    }

    /// POST /fence; returns (last epoch, last offset).
    pub fn fence(&self, epoch: u64) -> (u64, u64) {
        let (code, body) = self.http("POST", "/fence", Some(&format!("{{\"epoch\":{epoch}}}")));
        assert_eq!(code, 200, "fence {}: {body}", self.id);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        (
            v["last_epoch"].as_u64().expect("last_epoch"),
            v["last_offset"].as_u64().expect("last_offset"),
        )
    }

    pub fn promote(&self, epoch: u64) {
        let (code, body) = self.http("POST", "/promote", Some(&format!("{{\"epoch\":{epoch}}}")));
        assert_eq!(code, 200, "promote {}: {body}", self.id);
    }

    pub fn follow(&self, leader: &NodeProc, epoch: u64) {
        let body = format!("{{\"leader\":\"{}\",\"epoch\":{epoch}}}", leader.repl);
        let (code, resp) = self.http("POST", "/follow", Some(&body));
        assert_eq!(code, 200, "follow {}: {resp}", self.id);
    }

    /// (digest, applied offset) via DEBUG DIGEST-OFFSET.
    pub fn digest(&self) -> (String, u64) {
        let mut c = self.client();
        redis::cmd("DEBUG")
            .arg("DIGEST-OFFSET")
            .query(&mut c)
            .expect("digest")
    }

    /// Wait until this follower has applied at least `offset`.
    pub fn wait_applied(&self, offset: u64, timeout: Duration) {
        wait_for(&format!("{} to apply {offset}", self.id), timeout, || {
            (self.status().offsets.applied >= offset).then_some(())
        });
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
    }
}

/// Minimal blocking HTTP/1.1 client (Connection: close).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_with_headers(addr, method, path, &[], body.unwrap_or(""))
}

/// [`http`] with extra header lines (e.g. `Authorization: Bearer ...`).
pub fn http_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
