//! HTTP client for a node's admin API (used by the operator).
//!
//! One [`AdminClient`] talks to one node. Every request has its own deadline,
//! and every error names the node and the request, so an operator log line or
//! status condition says exactly which member failed and how.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{
    ErrorBody, FenceRequest, FenceResponse, FollowRequest, PromoteRequest, ReplicationSettings,
    StatusResponse,
};

/// Default per-request deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest admin answer we read; anything bigger is a broken or hostile peer.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Client for one node's admin endpoint.
#[derive(Clone)]
pub struct AdminClient {
    /// `host:port` of the admin listener.
    pub addr: String,
    timeout: Duration,
    /// Sent as `Authorization: Bearer <token>` (the node's `--admin-token`).
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Failure talking to a node's admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Connection refused, reset, DNS failure, malformed HTTP...
    #[error("admin request {op} to {addr} failed: {reason}")]
    Transport {
        addr: String,
        op: String,
        reason: String,
    },
    /// No complete answer within the deadline.
    #[error("admin request {op} to {addr} timed out after {timeout:?}")]
    Timeout {
        addr: String,
        op: String,
        timeout: Duration,
    },
    /// The node answered with a non-2xx status.
    #[error("admin request {op} to {addr} was refused with HTTP {status}: {message}")]
    Status {
        addr: String,
        op: String,
        status: u16,
        /// The node's `ErrorBody.error`, or the raw body when it is not one.
        message: String,
    },
    /// The node answered 2xx with a body we could not decode.
    #[error("admin request {op} to {addr} returned an invalid body: {reason}")]
    BadBody {
        addr: String,
        op: String,
        reason: String,
    },
}

impl AdminError {
    /// The HTTP status when the node answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the node could not be reached at all (down, not yet
    /// listening, or too slow): the caller may retry later.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            AdminError::Transport { .. } | AdminError::Timeout { .. }
        )
    }
}

impl AdminClient {
    /// A client for the admin listener at `addr` (`host:port`), with
    /// [`DEFAULT_TIMEOUT`] per request.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with_timeout(addr, DEFAULT_TIMEOUT)
    }

    /// A client with a custom per-request deadline.
    pub fn with_timeout(addr: impl Into<String>, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            addr: addr.into(),
            timeout,
            token: None,
            http,
        }
    }

    /// Send `token` with every call (the node's `--admin-token`).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The per-request deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<StatusResponse, AdminError> {
        let body = self.call(Method::GET, "/status", None).await?;
        self.decode("GET /status", &body)
    }

    /// `GET /config`: the replication settings in force.
    pub async fn config(&self) -> Result<ReplicationSettings, AdminError> {
        let body = self.call(Method::GET, "/config", None).await?;
        self.decode("GET /config", &body)
    }

    /// `POST /config`: change the replication settings while the node
    /// runs (kept across its restarts); returns the settings now in force.
    pub async fn set_config(
        &self,
        settings: &ReplicationSettings,
    ) -> Result<ReplicationSettings, AdminError> {
        let req = self.encode("POST /config", settings)?;
        let body = self.call(Method::POST, "/config", Some(req)).await?;
        self.decode("POST /config", &body)
    }

    /// `GET /healthz`: Ok when the node answers 2xx.
    pub async fn healthz(&self) -> Result<(), AdminError> {
        self.call(Method::GET, "/healthz", None).await.map(|_| ())
    }

    /// `GET /readyz`: Ok when the node is ready to serve.
    pub async fn readyz(&self) -> Result<(), AdminError> {
        self.call(Method::GET, "/readyz", None).await.map(|_| ())
    }

    /// `POST /fence {epoch}`.
    pub async fn fence(&self, epoch: u64) -> Result<FenceResponse, AdminError> {
        let req = self.encode("POST /fence", &FenceRequest { epoch })?;
        let body = self.call(Method::POST, "/fence", Some(req)).await?;
        self.decode("POST /fence", &body)
    }

    /// `POST /promote {epoch}`.
    pub async fn promote(&self, epoch: u64) -> Result<(), AdminError> {
        let req = self.encode("POST /promote", &PromoteRequest { epoch })?;
        self.call(Method::POST, "/promote", Some(req))
            .await
            .map(|_| ())
    }

    /// `POST /follow {leader, epoch}`; `leader` is the leader's replication
    /// address (`host:port`).
    pub async fn follow(&self, leader: &str, epoch: u64) -> Result<(), AdminError> {
        let req = self.encode(
            "POST /follow",
            &FollowRequest {
                leader: leader.to_string(),
                epoch,
            },
        )?;
        self.call(Method::POST, "/follow", Some(req))
            .await
            .map(|_| ())
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String, AdminError> {
        let body = self.call(Method::GET, "/metrics", None).await?;
        String::from_utf8(body.to_vec()).map_err(|e| AdminError::BadBody {
            addr: self.addr.clone(),
            op: "GET /metrics".into(),
            reason: e.to_string(),
        })
    }

    fn encode<T: Serialize>(&self, op: &str, value: &T) -> Result<Bytes, AdminError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| AdminError::Transport {
                addr: self.addr.clone(),
                op: op.into(),
                reason: format!("cannot encode request: {e}"),
            })
    }

    fn decode<T: DeserializeOwned>(&self, op: &str, body: &[u8]) -> Result<T, AdminError> {
        serde_json::from_slice(body).map_err(|e| AdminError::BadBody {
            addr: self.addr.clone(),
            op: op.into(),
            reason: e.to_string(),
        })
    }

    /// One request under the deadline; returns the body of a 2xx answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, AdminError> {
        let op = format!("{method} {path}");
        match tokio::time::timeout(self.timeout, self.call_inner(&op, method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(AdminError::Timeout {
                addr: self.addr.clone(),
                op,
                timeout: self.timeout,
            }),
        }
    }

    async fn call_inner(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, AdminError> {
        let transport = |reason: String| AdminError::Transport {
            addr: self.addr.clone(),
            op: op.to_string(),
            reason,
        };
        let uri = format!("http://{}{}", self.addr, path);
        let mut builder = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| transport(format!("invalid request for {uri}: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| transport(error_chain(&e)))?;
        let status = response.status();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| transport(format!("reading body: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        Err(AdminError::Status {
            addr: self.addr.clone(),
            op: op.to_string(),
            status: status.as_u16(),
            message: error_message(status, &bytes),
        })
    }
}

/// The node's `ErrorBody` message, else the (short) raw body, else the
/// status's reason phrase.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(err) = serde_json::from_slice::<ErrorBody>(body) {
        return err.error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("no body").to_string();
    }
    text.chars().take(200).collect()
}

/// hyper-util's errors say "client error (Connect)" and hide the cause in
/// `source()`: walk the chain so "connection refused" reaches the log.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot HTTP server answering every connection with `response`,
    /// recording the request it saw.
    async fn serve_once(response: impl Into<String>) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let response = response.into();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if seen.len() >= head_end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            sock.write_all(response.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
            String::from_utf8_lossy(&seen).to_string()
        });
        (addr, task)
    }

    const STATUS_JSON: &str = r#"{"node_id":"n0","role":"leader","epoch":3,"fenced":false,
        "offsets":{"appended":10,"durable":10,"applied":10,"committed":10},
        "leader":null,"followers":[],"mode":"semi-sync","degraded":false,
        "link":null,"digest":null,"keys":1}"#;

    #[tokio::test]
    async fn status_decodes_the_node_answer() {
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
            STATUS_JSON.len(),
            STATUS_JSON
        );
        let (addr, seen) = serve_once(resp).await;
        let status = AdminClient::new(&addr).status().await.unwrap();
        assert_eq!(status.epoch, 3);
        assert_eq!(status.role, crate::admin::Role::Leader);
        assert!(seen.await.unwrap().starts_with("GET /status HTTP/1.1"));
    }

    #[tokio::test]
    async fn follow_sends_json_body() {
        let (addr, seen) =
            serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}").await;
        AdminClient::new(&addr)
            .follow("rs-0.rs:7379", 4)
            .await
            .unwrap();
        let req = seen.await.unwrap();
        assert!(req.starts_with("POST /follow HTTP/1.1"), "{req}");
        assert!(
            req.ends_with(r#"{"leader":"rs-0.rs:7379","epoch":4}"#),
            "{req}"
        );
    }

    #[tokio::test]
    async fn error_status_carries_the_error_body() {
        let body = r#"{"error":"epoch 2 is older than 5"}"#;
        let resp = format!(
            "HTTP/1.1 409 Conflict\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
            body.len(),
            body
        );
        let (addr, _seen) = serve_once(resp).await;
        let err = AdminClient::new(&addr).promote(2).await.unwrap_err();
        assert_eq!(err.status(), Some(409));
        let text = err.to_string();
        assert!(text.contains(&addr), "{text}");
        assert!(text.contains("POST /promote"), "{text}");
        assert!(text.contains("epoch 2 is older than 5"), "{text}");
    }

    #[tokio::test]
    async fn bad_json_is_reported_as_bad_body() {
        let (addr, _seen) =
            serve_once("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nnope!")
                .await;
        let err = AdminClient::new(&addr).status().await.unwrap_err();
        assert!(matches!(err, AdminError::BadBody { .. }), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_is_transport_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = AdminClient::new(&addr).healthz().await.unwrap_err();
        assert!(err.is_unreachable());
        assert!(matches!(err, AdminError::Transport { .. }), "{err}");
        assert!(err.to_string().contains(&addr));
    }

    #[tokio::test]
    async fn silent_node_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let _hold = tokio::spawn(async move {
            let (_sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let client = AdminClient::with_timeout(&addr, Duration::from_millis(200));
        let err = client.status().await.unwrap_err();
        assert!(matches!(err, AdminError::Timeout { .. }), "{err}");
        assert!(err.is_unreachable());
    }
}
