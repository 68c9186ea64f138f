//! Signals, liveness, free ports and log tails.

use std::path::Path;
use std::process::{Command, Stdio};

/// Send a signal with the `kill` utility: `sig` by name or number, with or
/// without its dash (`"TERM"`, `"-TERM"`, `"-9"`, `"STOP"`). Failures are
/// ignored: the process may be gone.
pub fn signal(pid: u32, sig: &str) {
    send_signal(pid, sig);
}

/// [`signal`], true when `kill` succeeded.
pub(crate) fn send_signal(pid: u32, sig: &str) -> bool {
    let sig = sig.trim_start_matches('-');
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a process exists (and is no zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// A free TCP port on 127.0.0.1 (bound then released; the kernel does not
/// hand it out again right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// The last `lines` lines of a file ("" when unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
