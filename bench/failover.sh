#!/usr/bin/env bash
# Failover of `rstore-operator local`, from a client's point of view:
#   1. kill -9 of the leader, RUNS times (defaults: semi-sync K=1, probes
#      every 500 ms, 3 failed probes to detect a hung leader);
#   2. SIGSTOP of the leader, RUNS times (found only by failed probes);
#   3. async mode, kill -9, RUNS times: acknowledged writes lost per run vs
#      the lostBytes the operator reports (converted to writes with the
#      measured log bytes per SET);
#   4. as root with `ip netns`: async mode, "crash behind" (both followers
#      cut off for 300 ms, then the leader's link goes down and it is
#      killed): the classic async loss, counted against lostBytes.
# Each run prints kill -> first write acknowledged through the leader
# endpoint, the brain's phases (cluster.json lastFailover), and the
# acknowledged writes lost; then the medians and a final check of every
# acknowledged key on the final leader. The driver is the Rust binary
# tests/src/bin/rstore-failover-bench.rs (it reuses the test kit).
# Environment:
#   RUNS=10 CLIENTS=4   runs per scenario, writers through the leader endpoint
#   NETNS=auto|0|1      scenario 4 (auto: when `ip netns add` works)
#   SKIP_BUILD=1        use the existing target/release binaries
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-10}"
CLIENTS="${CLIENTS:-4}"
NETNS="${NETNS:-auto}"
REL="$REPO_ROOT/target/release"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building rstore-node, rstore-operator and rstore-failover-bench (release)"
    # Two builds: `--bin` would also filter the other packages' binaries
    # out, leaving a stale rstore-operator behind.
    (cd "$REPO_ROOT" && cargo build --release -p rstore-node -p rstore-operator \
        && cargo build --release -p rstore-e2e --bin rstore-failover-bench) >&2
fi
for b in rstore-node rstore-operator rstore-failover-bench; do
    [[ -x "$REL/$b" ]] || { log "ERROR: $REL/$b missing (unset SKIP_BUILD)"; exit 1; }
done
export RSTORE_NODE_BIN="$REL/rstore-node" RSTORE_OPERATOR_BIN="$REL/rstore-operator"
bench() { "$REL/rstore-failover-bench" --runs "$RUNS" --clients "$CLIENTS" "$@"; }

if [[ "$NETNS" == auto ]]; then
    probe="rs-bench-probe-$$"
    if ip netns add "$probe" 2>/dev/null; then
        ip netns del "$probe"
        NETNS=1
    else
        NETNS=0
    fi
fi

echo "failover of rstore-operator local, $(nproc) cores, $RUNS runs per scenario, $CLIENTS writers"
bench --fault kill --label "kill -9, semi-sync K=1 (defaults)"
bench --fault stop --label "SIGSTOP, semi-sync K=1 (defaults)"
bench --fault kill --label "kill -9, async" -- --replication-mode async
if [[ "$NETNS" == 1 ]]; then
    bench --fault crash-behind --label "crash behind, async (--netns)" -- --replication-mode async --netns
else
    echo "(crash-behind scenario skipped: needs root and ip netns; NETNS=1 forces it)"
fi
