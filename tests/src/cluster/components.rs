//! The Kubernetes binaries (kube-apiserver, kube-controller-manager, etcd,
//! kubectl, helm), built by `tests/cluster/build.sh` from the Go module pinned
//! in `tests/cluster/components/go.mod` into a cache outside the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Binaries that build.sh puts in its bin folder.
pub const BINARIES: [&str; 5] = [
    "kube-apiserver",
    "kube-controller-manager",
    "etcd",
    "kubectl",
    "helm",
];

/// The workspace root (the tests crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("tests crate has a parent folder")
        .to_path_buf()
}

/// `tests/cluster/build.sh`.
pub fn build_script() -> PathBuf {
    workspace_root().join("tests/cluster/build.sh")
}

/// The folder holding the component binaries: `RSTORE_K8S_BIN` when set
/// (checked, never built), else what `tests/cluster/build.sh` prints (it
/// builds what is missing, which takes a while the first time on a machine).
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("RSTORE_K8S_BIN") {
        let dir = PathBuf::from(dir);
        return match missing(&dir) {
            None => Ok(dir),
            Some(b) => Err(format!(
                "RSTORE_K8S_BIN={} has no executable {b}",
                dir.display()
            )),
        };
    }
    let script = build_script();
    let started = Instant::now();
    // stderr goes through, so a cold build shows its progress.
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): the Kubernetes components could not be built; its output is above",
            script.display(),
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{} printed no bin folder", script.display()))?;
    if let Some(b) = missing(&dir) {
        return Err(format!(
            "{} reported {} but {b} is not there",
            script.display(),
            dir.display()
        ));
    }
    let took = started.elapsed();
    if took.as_secs() >= 5 {
        eprintln!(
            "rstore-e2e: Kubernetes components built in {:.0} s into {}",
            took.as_secs_f64(),
            dir.display()
        );
    }
    Ok(dir)
}

fn missing(dir: &Path) -> Option<&'static str> {
    BINARIES.into_iter().find(|b| !dir.join(b).is_file())
}
