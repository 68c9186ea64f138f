#!/usr/bin/env bash
# Cost of the leader endpoint of `rstore-operator local`: redis-benchmark
# SET and GET through the leader endpoint (the operator's TCP proxy) vs
# directly to the leader's data port, same cluster, same run, interleaved.
#   N=200000       requests per redis-benchmark run
#   CLIENTS=50     concurrent clients
#   REPEAT=3       runs per cell, proxy and direct interleaved; the best counts
#   MODE=semi-sync replication mode of the cluster (K=1), or async / sync
#   SKIP_BUILD=1   use the existing target/release binaries
#   KEEP_TMP=1     keep logs and data directories
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-200000}"
CLIENTS="${CLIENTS:-50}"
REPEAT="${REPEAT:-3}"
MODE="${MODE:-semi-sync}"
OPERATOR_BIN="$REPO_ROOT/target/release/rstore-operator"

need redis-benchmark; need redis-cli; need python3
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building rstore-node and rstore-operator (release)"
    (cd "$REPO_ROOT" && cargo build --release -p rstore-node -p rstore-operator) >&2
fi
[[ -x "$OPERATOR_BIN" && -x "$RSTORE_BIN" ]] || die "release binaries missing (unset SKIP_BUILD)"

# The operator stops its nodes on SIGTERM; give it the time to (lib.sh's
# cleanup would SIGKILL it after 0.5 s and orphan them).
OPERATOR_PID=""
stop_operator() {
    [[ -n "$OPERATOR_PID" ]] || return 0
    kill -TERM "$OPERATOR_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$OPERATOR_PID" 2>/dev/null || break
        sleep 0.1
    done
    wait "$OPERATOR_PID" 2>/dev/null || true
    OPERATOR_PID=""
}
on_exit() {
    local rc=$?
    stop_operator
    (exit "$rc")
    bench_cleanup
}
trap on_exit EXIT

DIR="$BENCH_TMP/local"
LISTEN=$(free_port)
READ=$(free_port)
log "starting rstore-operator local ($MODE) with its leader endpoint on $LISTEN"
RSTORE_LOG=warn "$OPERATOR_BIN" local --replicas 3 --data-dir "$DIR" \
    --listen "127.0.0.1:$LISTEN" --read-listen "127.0.0.1:$READ" \
    --replication-mode "$MODE" --node-bin "$RSTORE_BIN" >"$BENCH_TMP/operator.log" 2>&1 &
OPERATOR_PID=$!

# The leader's data port once it leads and carries the leader label.
leader_port() {
    python3 - "$DIR/cluster.json" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
m = [m for m in s.get("members", []) if m["name"] == s.get("leader")]
if not m or m[0].get("label") != "leader" or m[0].get("role") != "leader" or s.get("failoverInProgress"):
    sys.exit(1)
print(m[0]["data"].rsplit(":", 1)[1])
PY
}
DIRECT=""
for ((i = 0; i < 300; i++)); do
    kill -0 "$OPERATOR_PID" 2>/dev/null || { tail -20 "$BENCH_TMP/operator.log" >&2; die "rstore-operator local exited"; }
    if DIRECT=$(leader_port 2>/dev/null) && [[ "$(redis-cli -p "$LISTEN" ping 2>/dev/null)" == PONG ]]; then
        break
    fi
    DIRECT=""
    sleep 0.1
done
[[ -n "$DIRECT" ]] || die "no leader after 30 s (see $BENCH_TMP/operator.log)"
log "leader data port $DIRECT, leader endpoint $LISTEN"

ROWS=()
for pipe in 1 16; do
    for test in set get; do
        rs=$(pair_ops "$LISTEN" "$DIRECT" "$test" "$CLIENTS" "$N" "$pipe" "$REPEAT")
        read -r p d <<<"$rs"
        ROWS+=("$(printf '%-3s P=%-2s|%s|%s|%s' "${test^^}" "$pipe" "$p" "$d" "$(ratio "$p" "$d")")")
        log "  ${test^^} -P $pipe: proxy $p  direct $d"
    done
done

echo
echo "leader endpoint (proxy) vs the leader directly, rstore-operator local $MODE$([[ $MODE == semi-sync ]] && echo ' K=1'), 3 members, $CLIENTS clients, -n $N, -r 1000000 -d 100, $(nproc) cores (client shares them)"
printf '%-10s %14s %14s %8s\n' "row" "proxy ops/s" "direct ops/s" "ratio"
for row in "${ROWS[@]}"; do
    IFS='|' read -r name p d q <<<"$row"
    printf '%-10s %14s %14s %8s\n' "$name" "$p" "$d" "$q"
done
