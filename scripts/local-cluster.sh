#!/usr/bin/env bash
# Start a leader and N-1 followers of rstore-node on this machine (loopback),
# for trying rstore without Kubernetes. Ctrl-C stops them all.
#   scripts/local-cluster.sh [replicas=3] [data-dir=./rstore-local] [extra node flags...]
# Leader: redis-cli -p 6379; followers: 6380, 6381, ... (read-only).
# Admin APIs: http://127.0.0.1:8080/status, 8081, ...
set -euo pipefail
replicas=${1:-3}
dir=${2:-./rstore-local}
shift $(( $# > 2 ? 2 : $# ))
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${RSTORE_NODE:-$root/target/release/rstore-node}
[ -x "$bin" ] || cargo build --release -p rstore-node --manifest-path "$root/Cargo.toml"
mkdir -p "$dir"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for i in $(seq 0 $((replicas - 1))); do
  role=(--role leader)
  [ "$i" -gt 0 ] && role=(--follow 127.0.0.1:7379)
  "$bin" "${role[@]}" --node-id "node-$i" \
    --listen "127.0.0.1:$((6379 + i))" --repl-listen "127.0.0.1:$((7379 + i))" \
    --admin-listen "127.0.0.1:$((8080 + i))" --data-dir "$dir/node-$i" "$@" \
    2>"$dir/node-$i.log" &
  pids+=($!)
  echo "node-$i: redis-cli -p $((6379 + i))   admin http://127.0.0.1:$((8080 + i))/status   log $dir/node-$i.log"
done
wait
