//! The one test kit of the workspace, shared by `rstore-node`'s integration
//! tests (`node/tests`) and the end-to-end tests (`rstore-e2e`, `tests/`):
//!
//! - [`Node`]: a real `rstore-node` process on free loopback ports and its
//!   own (temporary) data directory; kill -9, SIGSTOP/SIGCONT, SIGTERM,
//!   restart on the same data directory and ports; its stderr captured to
//!   a file per run and printed when the test fails.
//! - [`wait_until`]: poll until something holds, failing with a message
//!   that says what was waited for.
//! - [`Admin`]: the node's admin API through the crate's own
//!   [`rstore_node::admin::AdminClient`], from blocking code; [`http`] is
//!   the one raw HTTP helper, for requests the client cannot send
//!   (malformed, unauthenticated) or answers it does not return.
//! - Redis helpers: [`connect`], [`try_connect`], [`err_text`],
//!   [`expect_err`], and a raw RESP client ([`Raw`], [`Reply`]).
//! - Processes: [`signal`], [`alive`], [`free_port`], [`tail`].
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod admin;
mod node;
mod process;
mod resp;

use std::time::{Duration, Instant};

pub use admin::{Admin, HttpResponse, block_on, http};
pub use node::{Addrs, Node, StartFailure, node_binary, profile_dir};
pub use process::{alive, free_port, signal, tail};
pub use resp::{Raw, Reply, connect, encode_cmd, err_text, expect_err, try_connect};

/// Generous deadline for anything that should happen "soon".
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Poll `f` every 10 ms until it returns `Some`, and return that; panic
/// with "timed out after `timeout` waiting for `what`" when it has not
/// within `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Like [`wait_until`], but gives up quietly (`None`) after `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Record a measured figure: print it on stderr (shown with
/// `--nocapture` or when the test fails) and, when `RSTORE_FIGURES`
/// names a file, append it there as one line, so a CI run (`.ci/run`)
/// can print every figure its passing tests measured.
pub fn record_figure(line: &str) {
    eprintln!("{line}");
    let Some(path) = std::env::var_os("RSTORE_FIGURES") else {
        return;
    };
    use std::io::Write;
    let one_line = line.replace('\n', "\n    ");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per figure: lines from tests running in parallel do
        // not interleave.
        let _ = f.write_all(format!("{one_line}\n").as_bytes());
    }
}

/// [`record_figure`] with `format!` arguments.
#[macro_export]
macro_rules! figure {
    ($($arg:tt)*) => {
        $crate::record_figure(&format!($($arg)*))
    };
}
