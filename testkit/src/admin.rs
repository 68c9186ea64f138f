//! A node's admin API from blocking test code: [`Admin`] wraps the crate's
//! own [`AdminClient`]; [`http`] is the one raw HTTP/1.1 helper, for what
//! the client cannot send (malformed bodies, missing or wrong tokens) or
//! answers it does not hand back (bodies of `POST /promote`,
//! `GET /status?digest=1`, unknown paths).

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use rstore_node::admin::{AdminClient, AdminError, FenceResponse, StatusResponse};

use crate::DEADLINE;

/// Per-request deadline of [`Admin`] (the client's default is 5 s; test
/// machines are slower than production ones).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The kit's tokio runtime (one worker), for async calls from blocking code.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rstore-testkit")
            .enable_all()
            .build()
            .expect("the test kit's tokio runtime")
    })
}

/// Run `f` to completion on the kit's runtime and wait for it on this
/// thread. Works from plain threads and from inside another runtime (an
/// async test), which `Runtime::block_on` does not.
pub fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("the test kit's runtime dropped a task")
}

/// One node's admin API through [`AdminClient`], blocking.
#[derive(Debug, Clone)]
pub struct Admin {
    client: AdminClient,
}

impl Admin {
    /// The admin listener at `addr`, with a 15 s deadline per request.
    pub fn new(addr: SocketAddr) -> Admin {
        Admin {
            client: AdminClient::with_timeout(addr.to_string(), ADMIN_TIMEOUT),
        }
    }

    /// Send `token` with every call (the node's `--admin-token`).
    pub fn with_token(self, token: Option<String>) -> Admin {
        Admin {
            client: self.client.with_token(token),
        }
    }

    /// The async client, for async tests.
    pub fn client(&self) -> &AdminClient {
        &self.client
    }

    pub fn status(&self) -> Result<StatusResponse, AdminError> {
        let c = self.client.clone();
        block_on(async move { c.status().await })
    }

    pub fn healthz(&self) -> Result<(), AdminError> {
        let c = self.client.clone();
        block_on(async move { c.healthz().await })
    }

    pub fn readyz(&self) -> Result<(), AdminError> {
        let c = self.client.clone();
        block_on(async move { c.readyz().await })
    }

    pub fn fence(&self, epoch: u64) -> Result<FenceResponse, AdminError> {
        let c = self.client.clone();
        block_on(async move { c.fence(epoch).await })
    }

    pub fn promote(&self, epoch: u64) -> Result<(), AdminError> {
        let c = self.client.clone();
        block_on(async move { c.promote(epoch).await })
    }

    /// `leader` is the leader's replication address (`host:port`).
    pub fn follow(&self, leader: &str, epoch: u64) -> Result<(), AdminError> {
        let c = self.client.clone();
        let leader = leader.to_string();
        block_on(async move { c.follow(&leader, epoch).await })
    }

    pub fn metrics(&self) -> Result<String, AdminError> {
        let c = self.client.clone();
        block_on(async move { c.metrics().await })
    }
}

/// A raw HTTP answer.
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

/// A tiny blocking HTTP/1.1 client (`Connection: close`, reads to EOF),
/// with extra header lines (e.g. `Authorization: Bearer ...`). Use
/// [`Admin`] unless the test is about the HTTP exchange itself.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = body.unwrap_or("");
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
