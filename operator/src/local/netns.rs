//! `rstore-operator local --netns`: every member in its own network
//! namespace, so that a member can be cut off the network
//! (`rstore-operator partition`) like a machine whose cable is pulled.
//!
//! Layout, for a cluster whose data dir hashes to `<id>` (6 hex digits, so
//! clusters side by side never share a name) on the subnet `10.213.X.0/24`
//! (one per cluster, chosen among those no interface of this machine uses):
//! - bridge `rsb-<id>` in the root namespace, address `10.213.X.1/24`: the
//!   operator and its proxies reach the members through it;
//! - per member `i`: namespace `rs-<id>-<i>` with `eth0` at `10.213.X.(i+2)`
//!   and `lo` up, joined to the bridge by the veth pair `eth0` /
//!   `rsh-<id>-<i>` (the host side, which a partition takes down).
//!
//! Nodes run under `ip netns exec rs-<id>-<i>` and bind their data, repl and
//! admin ports (6379, 7379, 8080: each namespace has its own ports) on
//! their address. No route leaves the subnet: members reach only each other
//! and the root namespace's bridge address.
//!
//! Everything here is made with iproute2 (`ip`), needs root (or
//! `CAP_NET_ADMIN` + `CAP_SYS_ADMIN`), and is removed on a clean stop; a
//! start removes what a killed operator of the same data dir left.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// Ports every member uses inside its namespace.
pub const DATA_PORT: u16 = 6379;
pub const REPL_PORT: u16 = 7379;
pub const ADMIN_PORT: u16 = 8080;

/// The highest ordinal that still gets an address (`10.213.X.254`).
pub const MAX_ORDINAL: u32 = 252;

/// The network of a `--netns` cluster as `cluster.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRecord {
    /// The data dir's hash every name carries.
    pub id: String,
    /// The bridge in the root namespace.
    pub bridge: String,
    /// `10.213.X.0/24`.
    pub cidr: String,
    /// The bridge's address (the operator's side).
    pub gateway: Ipv4Addr,
}

impl NetworkRecord {
    /// The third octet of the subnet.
    pub fn subnet(&self) -> u8 {
        self.gateway.octets()[2]
    }
}

/// A `--netns` cluster's names and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub id: String,
    pub subnet: u8,
}

impl Net {
    pub fn bridge(&self) -> String {
        format!("rsb-{}", self.id)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    pub fn namespace(&self, ordinal: u32) -> String {
        format!("rs-{}-{ordinal}", self.id)
    }

    /// The host side of the member's veth pair.
    pub fn link(&self, ordinal: u32) -> String {
        format!("rsh-{}-{ordinal}", self.id)
    }

    /// The member's address, if its ordinal fits in the /24.
    pub fn member_ip(&self, ordinal: u32) -> Option<Ipv4Addr> {
        (ordinal <= MAX_ORDINAL)
            .then(|| u8::try_from(ordinal + 2).ok())
            .flatten()
            .map(|host| Ipv4Addr::new(10, 213, self.subnet, host))
    }

    /// Data, repl and admin addresses of a member.
    pub fn member_addrs(&self, ordinal: u32) -> Option<[SocketAddr; 3]> {
        let ip = self.member_ip(ordinal)?;
        let at = |port| SocketAddr::V4(SocketAddrV4::new(ip, port));
        Some([at(DATA_PORT), at(REPL_PORT), at(ADMIN_PORT)])
    }

    pub fn record(&self) -> NetworkRecord {
        NetworkRecord {
            id: self.id.clone(),
            bridge: self.bridge(),
            cidr: format!("10.213.{}.0/24", self.subnet),
            gateway: self.gateway(),
        }
    }

    /// Make the bridge and every member's namespace and link. On error,
    /// what was made is removed again.
    pub fn setup(&self, ordinals: &[u32]) -> Result<(), String> {
        let result = self.try_setup(ordinals);
        if result.is_err() {
            remove_leftovers(&self.id);
        }
        result
    }

    fn try_setup(&self, ordinals: &[u32]) -> Result<(), String> {
        // Namespaces first: `ip netns add` is what fails without root, and
        // its error is the clearest.
        for &ordinal in ordinals {
            ip(&["netns", "add", &self.namespace(ordinal)])?;
        }
        let bridge = self.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for &ordinal in ordinals {
            let ns = self.namespace(ordinal);
            let link = self.link(ordinal);
            let addr = self
                .member_ip(ordinal)
                .ok_or_else(|| format!("member ordinal {ordinal} does not fit in a /24"))?;
            ip(&[
                "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &link, "master", &bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Remove the namespaces, links and bridge (best effort; what remains
    /// is returned as messages).
    pub fn teardown(&self) -> Vec<String> {
        remove_leftovers(&self.id)
    }
}

/// A short, stable hash of a (canonical) data dir: FNV-1a, 24 bits.
pub fn cluster_id(dir: &Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in dir.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{:06x}", (hash ^ (hash >> 24)) & 0x00ff_ffff)
}

/// A free third octet for `10.213.X.0/24`: `preferred` when no interface
/// uses it, else the first free one from a start derived from `id`.
pub fn choose_subnet(id: &str, preferred: Option<u8>) -> Result<u8, String> {
    let used = used_subnets()?;
    let free = |x: u8| x != 0 && x != 255 && !used.contains(&x);
    if let Some(p) = preferred.filter(|p| free(*p)) {
        return Ok(p);
    }
    let seed = u32::from_str_radix(id, 16).unwrap_or(0);
    // Start in the upper half: the Kubernetes test harness starts low.
    let start = 128 + seed % 126;
    (0..254u32)
        .filter_map(|i| u8::try_from((start - 1 + i) % 254 + 1).ok())
        .find(|x| free(*x))
        .ok_or_else(|| "every subnet of 10.213.0.0/16 is in use on this machine".to_string())
}

/// Third octets of the `10.213.X.*` addresses on this machine's interfaces.
fn used_subnets() -> Result<Vec<u8>, String> {
    let out = ip(&["-4", "-o", "addr", "show"])?;
    Ok(out
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("10.213."))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect())
}

/// Remove every namespace and link of cluster `id` (a killed operator's
/// leftovers, or ours on stop). Returns what could not be removed.
pub fn remove_leftovers(id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let ns_prefix = format!("rs-{id}-");
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&ns_prefix))
        {
            if let Err(err) = ip(&["netns", "del", name]) {
                problems.push(err);
            }
        }
    }
    let link_prefix = format!("rsh-{id}-");
    let bridge = format!("rsb-{id}");
    if let Ok(list) = ip(&["-o", "link", "show"]) {
        let names: Vec<String> = list
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| n.starts_with(&link_prefix) || *n == bridge)
            .collect();
        // Links before the bridge they are attached to.
        for name in names.iter().filter(|n| **n != bridge) {
            if let Err(err) = ip(&["link", "del", name]) {
                // Deleting a namespace deletes its end of the pair, and
                // with it ours: gone meanwhile is fine.
                if link_exists(name) {
                    problems.push(err);
                }
            }
        }
        if names.contains(&bridge)
            && let Err(err) = ip(&["link", "del", &bridge])
        {
            problems.push(err);
        }
    }
    problems
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether a link is administratively up (`None` when it does not exist).
pub fn link_up(name: &str) -> Option<bool> {
    let flags =
        std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("flags")).ok()?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & 1 == 1)
}

/// Take a link down (a partition) or up (heal it).
pub fn set_link(name: &str, up: bool) -> Result<(), String> {
    ip(&["link", "set", name, if up { "up" } else { "down" }]).map(|_| ())
}

/// Run `ip <args>`; its stdout, or an error naming the command and its
/// stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let shown = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e} (is iproute2 installed?)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_differ_per_data_dir() {
        let a = cluster_id(Path::new("/tmp/a/rstore-local"));
        let b = cluster_id(Path::new("/tmp/b/rstore-local"));
        assert_eq!(a.len(), 6);
        assert_ne!(a, b);
        assert_eq!(a, cluster_id(Path::new("/tmp/a/rstore-local")), "stable");
        let net = Net { id: a, subnet: 200 };
        // Interface names have at most 15 bytes.
        assert!(
            net.link(MAX_ORDINAL).len() <= 15,
            "{}",
            net.link(MAX_ORDINAL)
        );
        assert!(net.bridge().len() <= 15);
        assert_eq!(net.member_ip(0), Some(Ipv4Addr::new(10, 213, 200, 2)));
        assert_eq!(
            net.member_ip(MAX_ORDINAL),
            Some(Ipv4Addr::new(10, 213, 200, 254))
        );
        assert_eq!(net.member_ip(MAX_ORDINAL + 1), None);
        let [data, repl, admin] = net.member_addrs(1).unwrap();
        assert_eq!(data.to_string(), "10.213.200.3:6379");
        assert_eq!(repl.to_string(), "10.213.200.3:7379");
        assert_eq!(admin.to_string(), "10.213.200.3:8080");
        let record = net.record();
        assert_eq!(record.cidr, "10.213.200.0/24");
        assert_eq!(record.subnet(), 200);
    }
}
