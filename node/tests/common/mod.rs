//! Shared helpers for the integration tests that run the real `rstore-node`
//! binary: start it on port 0, find its addresses in `listen.json`, kill or
//! stop it, restart it on the same data directory, and talk HTTP or raw RESP.
#![allow(dead_code)] // each test crate uses a different subset
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Generous deadline for anything that should happen "soon".
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Poll `f` until it returns `Some`, or panic with `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Addresses from `<data-dir>/listen.json`.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub pid: u32,
    pub data: SocketAddr,
    pub repl: SocketAddr,
    pub admin: SocketAddr,
}

fn read_listen(dir: &Path) -> Option<Addrs> {
    let text = std::fs::read_to_string(dir.join("listen.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(Addrs {
        pid: u32::try_from(v["pid"].as_u64()?).ok()?,
        data: v["data"].as_str()?.parse().ok()?,
        repl: v["repl"].as_str()?.parse().ok()?,
        admin: v["admin"].as_str()?.parse().ok()?,
    })
}

/// A running `rstore-node` child process; killed (SIGKILL) on drop.
pub struct Node {
    root: tempfile::TempDir,
    pub dir: PathBuf,
    node_id: String,
    extra: Vec<String>,
    child: Option<Child>,
    stderr_path: PathBuf,
    runs: usize,
    pub addrs: Addrs,
}

/// Why a node did not come up: its exit status and stderr.
#[derive(Debug)]
pub struct StartFailure {
    pub status: ExitStatus,
    pub stderr: String,
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

    /// Start with exactly these flags (besides addresses and data dir).
    pub fn start(extra: &[&str]) -> Node {
        Node::start_named("it-node", extra)
    }

    /// Like [`Node::start`] with its own `--node-id` (tests that run
    /// several nodes tell them apart in the leader's follower list).
    pub fn start_named(node_id: &str, extra: &[&str]) -> Node {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let mut node = Node {
            stderr_path: root.path().join("stderr-0.log"),
            root,
            dir,
            node_id: node_id.to_string(),
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
            child: None,
            runs: 0,
            addrs: Addrs {
                pid: 0,
                data: SocketAddr::from(([127, 0, 0, 1], 0)),
                repl: SocketAddr::from(([127, 0, 0, 1], 0)),
                admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
        };
        if let Err(f) = node.try_spawn() {
            panic!("rstore-node did not start: {f:?}");
        }
        node
    }

    /// Spawn the binary on `self.dir` and wait for its `listen.json`, or
    /// for it to exit (then its stderr is returned).
    pub fn try_spawn(&mut self) -> Result<(), StartFailure> {
        assert!(self.child.is_none(), "node already running");
        let _ = std::fs::remove_file(self.dir.join("listen.json"));
        self.runs += 1;
        self.stderr_path = self.root.path().join(format!("stderr-{}.log", self.runs));
        let stderr = std::fs::File::create(&self.stderr_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rstore-node"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(["--repl-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--node-id", &self.node_id])
            .args(&self.extra)
            .env("RSTORE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.child = Some(child);
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(a) = read_listen(&self.dir).filter(|a| a.pid == pid) {
                self.addrs = a;
                return Ok(());
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Err(StartFailure {
                    status,
                    stderr: self.stderr(),
                });
            }
            if Instant::now() > end {
                panic!(
                    "rstore-node wrote no listen.json within {DEADLINE:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stderr of the current (or last) run.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, silent (a GC pause, a stalled disk).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("node not running").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// `GET /status` as JSON (panics unless 200).
    pub fn status(&self) -> serde_json::Value {
        let r = self.http("GET", "/status", None);
        assert_eq!(r.status, 200, "GET /status: {}", r.body);
        r.json()
    }

    /// SIGTERM and wait for the exit (panics if it takes over the deadline).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("node not running");
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node did not exit within {DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Start again on the same data directory (same flags).
    pub fn restart(&mut self) {
        if let Err(f) = self.try_spawn() {
            panic!("rstore-node did not restart: {f:?}");
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addrs.data)
    }

    /// A redis-crate connection (no password).
    pub fn client(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// A raw TCP connection to the data port.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.addrs.data)
    }

    /// The WAL directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join("wal")
    }

    /// HTTP request to the admin port.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        http(self.addrs.admin, method, path, body)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn connect(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).unwrap();
    let con = client
        .get_connection_with_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    con.set_read_timeout(Some(DEADLINE)).unwrap();
    con
}

/// Exact error text of a server error reply ("CODE detail"), as Redis sent it.
pub fn err_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => format!("<not a server error: {e}>"),
    }
}

/// Run a command that must fail; returns its exact error text.
pub fn expect_err(con: &mut redis::Connection, cmd: &redis::Cmd) -> String {
    match cmd.query::<redis::Value>(con) {
        Ok(v) => panic!("expected an error from {:?}, got {v:?}", cmd_name(cmd)),
        Err(e) => err_text(&e),
    }
}

fn cmd_name(cmd: &redis::Cmd) -> String {
    String::from_utf8_lossy(&cmd.get_packed_command()).replace("\r\n", " ")
}

// ------------------------------------------------------------------ raw RESP

/// A parsed reply, RESP2 and RESP3.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Double(String),
    Bool(bool),
    Verbatim(String),
    BigNum(String),
}

/// A raw TCP client that writes bytes and parses replies itself.
pub struct Raw {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Send a command as a RESP array of bulk strings.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        self.send(&encode_cmd(args));
        self.read().unwrap()
    }

    pub fn cmd_str(&mut self, args: &[&str]) -> Reply {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.cmd(&a)
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        assert!(buf.ends_with(b"\r\n"), "line without CRLF: {buf:?}");
        buf.truncate(buf.len() - 2);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The first byte of the next reply (peeked, not consumed).
    pub fn peek_type(&mut self) -> u8 {
        self.reader.fill_buf().unwrap()[0]
    }

    /// Read one reply; Err on EOF or I/O error.
    pub fn read(&mut self) -> std::io::Result<Reply> {
        let line = self.line()?;
        let (t, rest) = line.split_at(1);
        let int = |s: &str| -> i64 { s.parse().unwrap_or_else(|_| panic!("bad length {s:?}")) };
        Ok(match t {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(int(rest)),
            "_" => Reply::Nil,
            "#" => Reply::Bool(rest == "t"),
            "," => Reply::Double(rest.into()),
            "(" => Reply::BigNum(rest.into()),
            "$" | "=" => {
                let n = int(rest);
                if n < 0 {
                    Reply::Nil
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    assert_eq!(&buf[n as usize..], b"\r\n", "bulk terminator");
                    buf.truncate(n as usize);
                    if t == "=" {
                        Reply::Verbatim(String::from_utf8_lossy(&buf).into_owned())
                    } else {
                        Reply::Bulk(buf)
                    }
                }
            }
            "*" | "~" | ">" => {
                let n = int(rest);
                if n < 0 {
                    Reply::Nil
                } else {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    if t == "~" {
                        Reply::Set(items)
                    } else {
                        Reply::Array(items)
                    }
                }
            }
            "%" => {
                let n = int(rest);
                let mut items = Vec::new();
                for _ in 0..n {
                    let k = self.read()?;
                    let v = self.read()?;
                    items.push((k, v));
                }
                Reply::Map(items)
            }
            other => panic!("unknown reply type {other:?} in {line:?}"),
        })
    }

    /// True when the server closed the connection (EOF or reset) within
    /// the deadline, after consuming whatever else it sent.
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        let end = Instant::now() + DEADLINE;
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
            if Instant::now() > end {
                return false;
            }
        }
    }
}

pub fn encode_cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---------------------------------------------------------------- HTTP/1.1

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// A tiny blocking HTTP/1.1 client (`Connection: close`, reads to EOF).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    HttpResponse { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = s.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
}
