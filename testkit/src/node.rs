//! A real `rstore-node` process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rstore_node::admin::{FenceResponse, StatusResponse};

use crate::admin::{Admin, HttpResponse, http};
use crate::process::{send_signal, tail};
use crate::resp::{Raw, connect};
use crate::{DEADLINE, wait_until};

/// Lines of a node's log printed when a test fails with the node alive.
const LOG_LINES_ON_FAILURE: usize = 200;

/// `target/<profile>`: where cargo puts the workspace's binaries, the
/// parent of the running test binary's `deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf()
}

/// The `rstore-node` binary built by the same `cargo test` run
/// (`target/<profile>/rstore-node`), or `RSTORE_NODE_BIN`.
pub fn node_binary() -> PathBuf {
    if let Ok(p) = std::env::var("RSTORE_NODE_BIN") {
        return PathBuf::from(p);
    }
    let bin = profile_dir().join("rstore-node");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p rstore-node` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// Addresses a node bound, from `<data-dir>/listen.json`.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub pid: u32,
    /// RESP (clients).
    pub data: SocketAddr,
    /// Replication.
    pub repl: SocketAddr,
    /// Admin HTTP.
    pub admin: SocketAddr,
}

fn read_listen(dir: &Path) -> Option<Addrs> {
    let text = std::fs::read_to_string(dir.join("listen.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let addr = |k: &str| v.get(k)?.as_str()?.parse().ok();
    Some(Addrs {
        pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
        data: addr("data")?,
        repl: addr("repl")?,
        admin: addr("admin")?,
    })
}

/// Why a node did not come up: its exit status and stderr.
#[derive(Debug)]
pub struct StartFailure {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A running `rstore-node` child process: started on free loopback ports
/// (port 0, read back from `listen.json`), its stderr in a file per run
/// beside its data directory. Killed (SIGCONT, SIGKILL) on drop; when the
/// test is failing, the tail of its log is printed first.
pub struct Node {
    pub id: String,
    /// The data directory.
    pub dir: PathBuf,
    /// Addresses of the current (or last) run.
    pub addrs: Addrs,
    /// Every flag but the binary: addresses, data dir, id, the test's.
    args: Vec<String>,
    child: Option<Child>,
    /// Runs started so far (the log of run N is `<dir>.<N>.log`).
    runs: usize,
    /// The temporary folder holding `dir`, when the node owns it.
    _root: Option<tempfile::TempDir>,
}

impl Node {
    /// A standalone leader (`--fsync always` unless `extra` says otherwise).
    pub fn leader(extra: &[&str]) -> Node {
        let mut args = vec!["--role", "leader"];
        if !extra.contains(&"--fsync") {
            args.extend_from_slice(&["--fsync", "always"]);
        }
        args.extend_from_slice(extra);
        Node::start(&args)
    }

    /// Start with exactly these flags (besides addresses, data dir and
    /// `--node-id it-node`) on a temporary data directory.
    pub fn start(extra: &[&str]) -> Node {
        Node::start_named("it-node", extra)
    }

    /// Like [`Node::start`] with its own `--node-id`.
    pub fn start_named(node_id: &str, extra: &[&str]) -> Node {
        let root = tempfile::tempdir().expect("temporary folder");
        let dir = root.path().join("data");
        Node::start_with(dir, Some(root), node_id, extra)
    }

    /// Start on the data directory `dir` (created if missing; the caller
    /// owns it), with `extra` flags. Address flags in `extra` replace the
    /// default of port 0 on loopback.
    pub fn start_in(dir: &Path, node_id: &str, extra: &[&str]) -> Node {
        Node::start_with(dir.to_path_buf(), None, node_id, extra)
    }

    fn start_with(
        dir: PathBuf,
        root: Option<tempfile::TempDir>,
        node_id: &str,
        extra: &[&str],
    ) -> Node {
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            node_id.into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        for (flag, default) in [
            ("--listen", "127.0.0.1:0"),
            ("--repl-listen", "127.0.0.1:0"),
            ("--admin-listen", "127.0.0.1:0"),
        ] {
            if !extra.contains(&flag) {
                args.push(flag.into());
                args.push(default.into());
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut node = Node {
            id: node_id.into(),
            dir,
            addrs: Addrs {
                pid: 0,
                data: unbound,
                repl: unbound,
                admin: unbound,
            },
            args,
            child: None,
            runs: 0,
            _root: root,
        };
        node.spawn();
        node
    }

    /// [`Node::try_spawn`], panicking with the node's stderr on failure.
    pub fn spawn(&mut self) {
        if let Err(f) = self.try_spawn() {
            panic!(
                "rstore-node {} did not start ({}); stderr:\n{}",
                self.id, f.status, f.stderr
            );
        }
    }

    /// Start the binary on the data directory (after the first run, on the
    /// ports it bound then) and wait for its `listen.json`, or for it to
    /// exit (then its status and stderr are returned).
    pub fn try_spawn(&mut self) -> Result<(), StartFailure> {
        assert!(self.child.is_none(), "node {} already running", self.id);
        if self.runs > 0 {
            self.pin_ports();
        }
        std::fs::create_dir_all(&self.dir).expect("data dir");
        let _ = std::fs::remove_file(self.dir.join("listen.json"));
        self.runs += 1;
        let stderr = std::fs::File::create(self.log_path(self.runs)).expect("node log file");
        let child = Command::new(node_binary())
            .args(&self.args)
            .env("RSTORE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn rstore-node");
        let pid = child.id();
        self.child = Some(child);
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(a) = read_listen(&self.dir).filter(|a| a.pid == pid) {
                self.addrs = a;
                return Ok(());
            }
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Err(StartFailure {
                    status,
                    stderr: self.stderr(),
                });
            }
            if Instant::now() > end {
                panic!(
                    "rstore-node {} wrote no listen.json within {DEADLINE:?}; stderr:\n{}",
                    self.id,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Start again on the same data directory, flags and ports.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Replace the port-0 address flags by the ports bound, so a restart
    /// keeps them (followers and clients hold those addresses).
    fn pin_ports(&mut self) {
        for (flag, addr) in [
            ("--listen", self.addrs.data),
            ("--repl-listen", self.addrs.repl),
            ("--admin-listen", self.addrs.admin),
        ] {
            if let Some(i) = self.args.iter().position(|a| a == flag)
                && self.args[i + 1].ends_with(":0")
                && addr.port() != 0
            {
                self.args[i + 1] = addr.to_string();
            }
        }
    }

    /// Remove a flag (and its value) from the next runs' arguments.
    pub fn drop_flag(&mut self, flag: &str, has_value: bool) {
        if let Some(i) = self.args.iter().position(|a| a == flag) {
            self.args.drain(i..i + if has_value { 2 } else { 1 });
        }
    }

    fn log_path(&self, run: usize) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{run}.log"));
        self.dir.with_file_name(name)
    }

    /// Stderr of the current (or last) run.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs)).unwrap_or_default()
    }

    /// Stderr of every run so far, in order.
    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|r| std::fs::read_to_string(self.log_path(r)).unwrap_or_default())
            .collect()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// SIGKILL and reap (nothing when not running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, silent (a GC pause, a stalled disk, a
    /// partition).
    pub fn pause(&self) {
        self.must_signal("STOP");
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.must_signal("CONT");
    }

    fn must_signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("node not running").id();
        assert!(send_signal(pid, sig), "kill -{sig} {pid} failed");
    }

    /// SIGTERM and wait for the exit (panics if it takes over [`DEADLINE`]).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("node not running");
        assert!(send_signal(c.id(), "TERM"), "kill -TERM failed");
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = c.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "node {} did not exit within {DEADLINE:?} of SIGTERM",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://<data address>/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addrs.data)
    }

    /// A redis-crate connection (no password), see [`connect`].
    pub fn client(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// A raw RESP connection to the data port.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.addrs.data)
    }

    /// The WAL directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join("wal")
    }

    /// The admin API (through [`rstore_node::admin::AdminClient`]).
    pub fn admin(&self) -> Admin {
        Admin::new(self.addrs.admin)
    }

    /// `GET /status` (panics unless it succeeds).
    pub fn status(&self) -> StatusResponse {
        self.admin()
            .status()
            .unwrap_or_else(|e| panic!("status of {}: {e}", self.id))
    }

    /// `POST /fence` (panics unless it succeeds).
    pub fn fence(&self, epoch: u64) -> FenceResponse {
        self.admin()
            .fence(epoch)
            .unwrap_or_else(|e| panic!("fence {}: {e}", self.id))
    }

    /// `POST /promote` (panics unless it succeeds).
    pub fn promote(&self, epoch: u64) {
        self.admin()
            .promote(epoch)
            .unwrap_or_else(|e| panic!("promote {}: {e}", self.id));
    }

    /// `POST /follow` of `leader`'s replication address (panics unless it
    /// succeeds).
    pub fn follow(&self, leader: &Node, epoch: u64) {
        self.admin()
            .follow(&leader.addrs.repl.to_string(), epoch)
            .unwrap_or_else(|e| panic!("follow {}: {e}", self.id));
    }

    /// A raw HTTP request to the admin port (see [`http`]).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        http(self.addrs.admin, method, path, &[], body)
    }

    /// (digest, applied offset) via `DEBUG DIGEST-OFFSET`.
    pub fn digest(&self) -> (String, u64) {
        let mut c = self.client();
        redis::cmd("DEBUG")
            .arg("DIGEST-OFFSET")
            .query(&mut c)
            .expect("digest")
    }

    /// Wait until this node has applied at least `offset`.
    pub fn wait_applied(&self, offset: u64, timeout: Duration) {
        wait_until(timeout, &format!("{} to apply {offset}", self.id), || {
            (self.status().offsets.applied >= offset).then_some(())
        });
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() && self.runs > 0 {
            eprintln!(
                "---- rstore-node {} (data {}), run {}: last {LOG_LINES_ON_FAILURE} lines of stderr ----\n{}\n---- end of {} ----",
                self.id,
                self.dir.display(),
                self.runs,
                tail(&self.log_path(self.runs), LOG_LINES_ON_FAILURE),
                self.id
            );
        }
        if let Some(c) = &self.child {
            send_signal(c.id(), "CONT");
        }
        self.kill9();
    }
}
