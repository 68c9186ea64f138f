//! Helpers for local-mode tests: run the real `rstore-operator local`
//! binary on a temporary data dir, read its `cluster.json`, and write
//! through its leader endpoint while recording every acknowledged key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use rstore_testkit::{DEADLINE, connect, node_binary, signal, try_connect, wait_until};

use crate::operator_binary;

/// One running `rstore-operator local`.
pub struct LocalCluster {
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl LocalCluster {
    /// Start `rstore-operator local` on `dir` with `replicas` members, its
    /// endpoints on free loopback ports, and `extra` flags.
    pub fn start(dir: &Path, replicas: u32, extra: &[&str]) -> LocalCluster {
        // Builds both binaries when they are missing.
        let _ = operator_binary();
        let mut args: Vec<String> = [
            "local",
            "--replicas",
            &replicas.to_string(),
            "--listen",
            "127.0.0.1:0",
            "--read-listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.display().to_string(),
            "--node-bin",
            &node_binary().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cluster = LocalCluster {
            dir: dir.to_path_buf(),
            args,
            child: None,
        };
        cluster.spawn();
        cluster
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("operator.log"))
            .expect("operator log");
        let err = log.try_clone().expect("operator log");
        let child = Command::new(operator_binary())
            .args(&self.args)
            .env("RSTORE_LOG", "info,rstore_operator=debug")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn rstore-operator local");
        let pid = child.id();
        self.child = Some(child);
        wait_until(DEADLINE, "the operator to write cluster.json", || {
            self.check_running();
            self.state()
                .filter(|s| s["operatorPid"].as_u64() == Some(u64::from(pid)))
                .map(|_| ())
        });
    }

    /// Start again after [`LocalCluster::stop`] or a kill, same flags and
    /// the same endpoints: clients started before (a [`Workload`]) keep
    /// their address, as they would with a fixed `--listen`.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running operator");
        if let Some(state) = self.state() {
            for (flag, key) in [("--listen", "listen"), ("--read-listen", "readListen")] {
                let Some(bound) = state[key].as_str() else {
                    continue;
                };
                if let Some(i) = self.args.iter().position(|a| a == flag)
                    && let Some(value) = self.args.get_mut(i + 1)
                    && value.ends_with(":0")
                {
                    *value = bound.to_string();
                }
            }
        }
        self.spawn();
    }

    fn check_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!(
                "rstore-operator local exited ({status}); log:\n{}",
                self.log()
            );
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The operator's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("operator.log")).unwrap_or_default()
    }

    /// `cluster.json`, if readable.
    pub fn state(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.dir.join("cluster.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// `cluster.json`, which must be there.
    pub fn must_state(&self) -> Value {
        self.state().expect("cluster.json")
    }

    /// The leader endpoint the operator bound.
    pub fn listen(&self) -> SocketAddr {
        self.must_state()["listen"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("listen in cluster.json")
    }

    pub fn read_listen(&self) -> SocketAddr {
        self.must_state()["readListen"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("readListen in cluster.json")
    }

    /// A member's entry in `cluster.json`.
    pub fn member(&self, name: &str) -> Value {
        self.must_state()["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no member {name} in cluster.json"))
    }

    pub fn member_names(&self) -> Vec<String> {
        self.must_state()["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (leader name, epoch) once the leader is labelled and no failover
    /// runs.
    pub fn settled_leader(&self) -> Option<(String, u64)> {
        let s = self.state()?;
        if !s["failoverInProgress"].is_null() {
            return None;
        }
        let leader = s["leader"].as_str()?.to_string();
        let m = s["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == leader.as_str())?;
        let epoch = s["epoch"].as_u64()?;
        (m["label"] == "leader" && m["role"] == "leader").then_some((leader, epoch))
    }

    /// Wait for a settled leader and every member labelled follower.
    pub fn wait_settled(&mut self, timeout: Duration) -> (String, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running();
            if let Some(leader) = self.settled_leader() {
                let all_in = self.must_state()["members"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().all(|m| !m["label"].is_null()));
                if all_in {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no settled cluster within {timeout:?}: {}\noperator log:\n{}",
                self.state().map(|s| s.to_string()).unwrap_or_default(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A member's RESP address.
    pub fn data_addr(&self, name: &str) -> SocketAddr {
        self.member(name)["data"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("data address")
    }

    pub fn admin_addr(&self, name: &str) -> SocketAddr {
        self.member(name)["admin"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("admin address")
    }

    pub fn member_pid(&self, name: &str) -> Option<u32> {
        self.member(name)["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
    }

    /// Run `rstore-operator <args> --data-dir <dir>`.
    pub fn tool(&self, args: &[&str]) -> Output {
        Command::new(operator_binary())
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .output()
            .expect("run rstore-operator")
    }

    /// SIGTERM and wait; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Collect the operator process after it was killed (`kill -9`), so
    /// that [`LocalCluster::restart`] may start a new one. Its nodes keep
    /// running until the next operator stops them.
    pub fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Every node pid recorded in `cluster.json`.
    pub fn node_pids(&self) -> Vec<u32> {
        self.state()
            .and_then(|s| {
                s["members"].as_array().map(|ms| {
                    ms.iter()
                        .filter_map(|m| m["pid"].as_u64().and_then(|p| u32::try_from(p).ok()))
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let pids = self.node_pids();
        if !self.stop() {
            // The operator could not stop its nodes: do it here.
            for pid in pids {
                signal(pid, "CONT");
                signal(pid, "KILL");
            }
        }
    }
}

/// One acknowledged write: key, value, when it was sent and acknowledged.
type Ack = (String, String, Instant, Instant);

/// Writers through an endpoint: unique keys, every acknowledged one
/// recorded with the time of its acknowledgement.
pub struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Ack>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workload {
    /// `clients` threads writing `w<client>-<n>` = `v<n>` through `addr`,
    /// reconnecting after any error (the write then is indeterminate and
    /// not recorded; its key is never written again).
    pub fn start(addr: SocketAddr, clients: usize) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|client| {
                let stop = stop.clone();
                let acked = acked.clone();
                std::thread::spawn(move || {
                    let url = format!("redis://{addr}/");
                    let mut conn: Option<redis::Connection> = None;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            conn =
                                try_connect(&url, Duration::from_secs(3), Duration::from_secs(5))
                                    .ok();
                            if conn.is_none() {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                        }
                        let Some(c) = conn.as_mut() else { continue };
                        n += 1;
                        let key = format!("w{client}-{n}");
                        let value = format!("v{n}");
                        let sent = Instant::now();
                        match redis::cmd("SET").arg(&key).arg(&value).query::<String>(c) {
                            Ok(reply) if reply == "OK" => {
                                if let Ok(mut a) = acked.lock() {
                                    a.push((key, value, sent, Instant::now()));
                                }
                            }
                            _ => {
                                conn = None;
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                })
            })
            .collect();
        Workload {
            stop,
            acked,
            threads,
        }
    }

    /// Acknowledged writes so far.
    pub fn count(&self) -> usize {
        self.acked.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Every write acknowledged so far, key to value (the writers go on).
    pub fn acked(&self) -> BTreeMap<String, String> {
        self.acked_before(None)
    }

    /// The writes acknowledged before `t` (all of them with `None`).
    pub fn acked_before(&self, t: Option<Instant>) -> BTreeMap<String, String> {
        self.acked
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|(_, _, _, at)| t.is_none_or(|t| *at < t))
                    .map(|(k, v, _, _)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When the first write sent after `t` was acknowledged, if one was.
    pub fn first_ack_sent_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .ok()?
            .iter()
            .filter(|(_, _, sent, _)| *sent > t)
            .map(|(_, _, _, acked)| *acked)
            .min()
    }

    /// The longest time between two consecutive acknowledgements (of any
    /// client) within `[from, to]`: how long writes paused.
    pub fn longest_pause(&self, from: Instant, to: Instant) -> Duration {
        let Ok(acked) = self.acked.lock() else {
            return Duration::ZERO;
        };
        let mut times: Vec<Instant> = acked.iter().map(|(_, _, _, at)| *at).collect();
        times.sort();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for t in times.into_iter().filter(|t| *t > from).chain([to]) {
            longest = longest.max(t.saturating_duration_since(last));
            last = t;
            if t >= to {
                break;
            }
        }
        longest
    }

    /// Stop the writers; every acknowledged key with its value.
    pub fn finish(mut self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.acked
            .lock()
            .map(|a| {
                a.iter()
                    .map(|(k, v, _, _)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The keys of `expected` that `addr` does not hold with their value.
pub fn missing(addr: SocketAddr, expected: &BTreeMap<String, String>) -> Vec<String> {
    let mut conn = connect(&format!("redis://{addr}/"));
    let keys: Vec<&String> = expected.keys().collect();
    let mut missing = Vec::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query(&mut conn)
            .expect("MGET");
        for (key, value) in chunk.iter().zip(values) {
            if value.as_deref() != expected.get(*key).map(String::as_str) {
                missing.push((*key).clone());
            }
        }
    }
    missing
}
