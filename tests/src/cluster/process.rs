//! Processes of a test cluster: each one logs to a file and is stopped on
//! drop; a janitor process stops them even when the test binary never drops
//! them (a cluster shared through a static) or is killed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use rstore_testkit::{free_port, signal, tail};

/// A `bash` process that reads pids on its stdin (`+PID` to watch, `-PID`
/// to forget) and cleanup commands (`!CMD` to add, `~CMD` to drop) and,
/// when its stdin closes (this process dropped it, exited or was killed),
/// sends SIGTERM to every watched pid, SIGKILL to those still alive 5 s
/// later, runs the cleanup commands (network namespaces, a bridge), and
/// removes `remove_dir` if given. It ignores SIGINT and
/// SIGTERM so that a Ctrl-C on the test run still gets everything cleaned.
pub struct Janitor {
    stdin: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
}

const JANITOR: &str = r#"
trap '' INT TERM HUP
declare -A pids
declare -A cmds
order=()
while read -r line; do
  case "$line" in
    +*) pids[${line#+}]=1 ;;
    -*) unset "pids[${line#-}]" ;;
    !*) cmds["${line#!}"]=1; order+=("${line#!}") ;;
    ~*) unset "cmds[${line#\~}]" ;;
  esac
done
if [ ${#pids[@]} -gt 0 ]; then
  kill -TERM "${!pids[@]}" 2>/dev/null
  for _ in $(seq 50); do
    alive=0
    for p in "${!pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  kill -KILL "${!pids[@]}" 2>/dev/null
fi
for c in "${order[@]}"; do
  if [ -n "${cmds[$c]:-}" ]; then bash -c "$c" >/dev/null 2>&1; unset "cmds[$c]"; fi
done
if [ -n "$1" ]; then rm -rf -- "$1"; fi
exit 0
"#;

impl Janitor {
    /// Start a janitor; it removes `remove_dir` at the end when given.
    pub fn start(remove_dir: Option<&Path>) -> Janitor {
        let dir = remove_dir
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(JANITOR)
            .arg("rstore-janitor")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the test cluster's janitor (bash)");
        let stdin = child.stdin.take();
        Janitor {
            stdin: Mutex::new(stdin),
            child: Mutex::new(child),
        }
    }

    fn send(&self, line: String) {
        let mut guard = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stdin) = guard.as_mut() {
            // A janitor that died cannot be helped; Drop still stops things.
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    pub fn watch(&self, pid: u32) {
        self.send(format!("+{pid}"));
    }

    pub fn forget(&self, pid: u32) {
        self.send(format!("-{pid}"));
    }

    /// Run the shell command `cmd` (one line) at cleanup.
    pub fn on_cleanup(&self, cmd: &str) {
        self.send(format!("!{cmd}"));
    }

    /// Drop a cleanup command (its work was done).
    pub fn cleanup_done(&self, cmd: &str) {
        self.send(format!("~{cmd}"));
    }

    /// Close its stdin and wait (bounded) for it to finish cleaning up.
    pub fn finish(&self) {
        drop(self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A long-running process with its output in a log file, stopped (SIGTERM,
/// then SIGKILL after a grace period) on drop.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    grace: Duration,
}

impl Proc {
    /// Spawn `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc, String> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("create log folder {}: {e}", dir.display()))?;
        }
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("open log {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("clone log handle {}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
            grace: Duration::from_secs(5),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process exited: its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Send a signal by name (TERM, KILL, STOP, CONT) with `kill`.
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.signal("CONT");
        self.signal("TERM");
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
