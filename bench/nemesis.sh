#!/usr/bin/env bash
# The long nemesis: tests/tests/nemesis.rs (semi-sync K=1 and sync, seeded
# faults on `rstore-operator local`: kill -9 / SIGSTOP of the leader, kill -9
# of a follower, kill -9 of the operator mid-failover, and, as root with
# `ip netns`, a network partition of the leader), many rounds, release build.
#   bench/nemesis.sh [SEED] [ROUNDS]     defaults: a fresh seed, 50 rounds
# Environment: RSTORE_NEMESIS_NETNS=0|1 (default: namespaces where they
# work), RSTORE_NEMESIS_KEEP=1 (keep data dirs and logs).
# A failure prints the seed; run the same SEED and ROUNDS to replay it.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SEED="${1:-${RSTORE_NEMESIS_SEED:-$(date +%s)}}"
ROUNDS="${2:-${RSTORE_NEMESIS_ROUNDS:-50}}"
[[ "$SEED" =~ ^[0-9]+$ && "$ROUNDS" =~ ^[0-9]+$ ]] || {
    echo "usage: bench/nemesis.sh [SEED] [ROUNDS]  (both numbers)" >&2
    exit 2
}

echo "nemesis: seed $SEED, $ROUNDS rounds per replication mode (replay: bench/nemesis.sh $SEED $ROUNDS)"
start=$(date +%s)
cd "$REPO_ROOT"
rc=0
RSTORE_NEMESIS_SEED="$SEED" RSTORE_NEMESIS_ROUNDS="$ROUNDS" \
    cargo test --release -p rstore-e2e --test nemesis -- --nocapture --test-threads 1 || rc=$?
echo "nemesis: seed $SEED, $ROUNDS rounds: $([[ $rc == 0 ]] && echo passed || echo FAILED) in $(($(date +%s) - start)) s"
exit "$rc"
