//! `rstore-test-cluster --state-dir DIR [--no-kubelet]`: start the tests'
//! Kubernetes control plane (`rstore_e2e::k8s`, the same flags as `cargo
//! test` uses) and the stand-in kubelet (pods run as `rstore-node` and
//! `rstore-operator` processes from this binary's folder) in the
//! foreground, write `DIR/env` (`export KUBECONFIG=...`, `export
//! PATH=<kubectl and helm>:$PATH`) once it is ready, and stop everything on
//! SIGTERM or SIGINT. `tests/cluster/up.sh` runs it in the background and
//! `tests/cluster/down.sh` stops it.

use std::path::PathBuf;
use std::time::Duration;

use rstore_e2e::k8s::{Cluster, Options};

fn usage() -> ! {
    eprintln!("usage: rstore-test-cluster --state-dir DIR [--no-kubelet]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut state: Option<PathBuf> = None;
    let mut kubelet = true;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--state-dir" => state = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--no-kubelet" => kubelet = false,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let Some(state) = state else { usage() };
    if let Err(e) = std::fs::create_dir_all(&state) {
        eprintln!("rstore-test-cluster: create {}: {e}", state.display());
        std::process::exit(1);
    }
    let env_file = state.join("env");
    let _ = std::fs::remove_file(&env_file);

    let cluster = match Cluster::start(Options {
        dir: Some(state.join("cluster")),
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rstore-test-cluster: {e}");
            std::process::exit(1);
        }
    };

    if kubelet {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(std::path::Path::to_path_buf))
            .unwrap_or_default();
        let mut binaries = std::collections::BTreeMap::new();
        for b in ["rstore-node", "rstore-operator"] {
            let path = dir.join(b);
            if !path.exists() {
                eprintln!(
                    "rstore-test-cluster: {} is missing: cargo build -p rstore-node -p rstore-operator",
                    path.display()
                );
                std::process::exit(1);
            }
            binaries.insert(b.to_string(), path);
        }
        match cluster.start_kubelet(binaries) {
            Ok(k) => {
                cluster.set_kubelet(k);
            }
            Err(e) => {
                eprintln!("rstore-test-cluster: {e}");
                std::process::exit(1);
            }
        }
    }

    let env = format!(
        "# written by tests/cluster/up.sh; source it: . tests/cluster/.state/env\n\
         export KUBECONFIG={}\n\
         export PATH={}:$PATH\n",
        cluster.kubeconfig.display(),
        cluster.bin.display()
    );
    if let Err(e) = std::fs::write(&env_file, env) {
        eprintln!("rstore-test-cluster: write {}: {e}", env_file.display());
        std::process::exit(1);
    }
    eprintln!("rstore-test-cluster: ready; {}", env_file.display());

    // Wait for SIGTERM/SIGINT, or for a component to die.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for signal handling");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let signals = std::thread::spawn(move || {
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let dead = cluster.wait_for_exit(Duration::from_millis(200), || {
        stop.load(std::sync::atomic::Ordering::SeqCst)
    });
    let _ = std::fs::remove_file(&env_file);
    cluster.stop();
    match dead {
        Some(what) => {
            eprintln!("rstore-test-cluster: stopped because {what}");
            std::process::exit(1);
        }
        None => {
            let _ = signals.join();
            eprintln!("rstore-test-cluster: stopped");
        }
    }
}
