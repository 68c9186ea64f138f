#!/usr/bin/env bash
# A self-healing rstore cluster on this machine: builds rstore-node and
# rstore-operator (release; a no-op when they are up to date), then runs
# `rstore-operator local` with the flags given. Ctrl-C stops it; running it
# again on the same --data-dir resumes the same cluster.
#   scripts/local-cluster.sh [--replicas 3] [--data-dir ./rstore-local] [...]
# Leader endpoint 127.0.0.1:6379, read endpoint 127.0.0.1:6380;
# `target/release/rstore-operator local --help` lists every flag.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p rstore-node -p rstore-operator --manifest-path "$root/Cargo.toml"
# Where cargo put them (CARGO_TARGET_DIR moves the target folder).
target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac  # relative: to where cargo ran
exec "$target/release/rstore-operator" local "$@"
