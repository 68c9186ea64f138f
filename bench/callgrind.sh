#!/usr/bin/env bash
# Instructions per request (valgrind's callgrind), repeatable where wall
# time on a shared 2-core machine is not: rstore-node (and, with
# BASELINE_BIN, an older build) vs redis-server, at equal durability
# (rstore --fsync interval:1000, redis appendfsync everysec).
#
# Each cell runs the server under callgrind twice, once serving N requests
# and once serving none (start-up, PINGs, shutdown), and reports
# (Ir(N) - Ir(0)) / N: the instructions one request costs the server,
# system calls excluded (callgrind counts user-space instructions only).
#   N=20000        requests per cell (redis-benchmark -c 10 -r 1000 -d 100)
#   BASELINE_BIN=/path/to/old/rstore-node
#   SKIP_BUILD=1   use the existing target/release/rstore-node
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-20000}"
BASELINE_BIN="${BASELINE_BIN:-}"
need valgrind; need redis-server; need redis-benchmark; need redis-cli; need python3
build_rstore

# total_ir KIND BIN TEST PIPE COUNT -> Ir of one server run under callgrind
total_ir() {
    local kind=$1 bin=$2 test=$3 pipe=$4 count=$5
    local dir port pid
    dir=$(mktemp -d "$BENCH_TMP/cg.XXXXXX")
    port=$(free_port)
    if [[ "$kind" == redis ]]; then
        valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out.%p" \
            redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
            --appendonly yes --appendfsync everysec >"$dir/log" 2>&1 &
    else
        valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out.%p" \
            "$bin" --role leader --fsync interval:1000 --listen "127.0.0.1:$port" \
            --repl-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
            --data-dir "$dir/data" >"$dir/log" 2>&1 &
    fi
    pid=$!
    BENCH_PIDS+=("$pid")
    wait_ping "$port" 120
    if [[ "$test" == get ]]; then
        # GETs hit keys: the same SETs before both runs of a GET cell.
        redis-benchmark -p "$port" -t set -n 20000 -c 10 -r 1000 -d 100 -P 16 -q >/dev/null 2>&1
    fi
    if ((count > 0)); then
        redis-benchmark -p "$port" -t "$test" -n "$count" -c 10 -r 1000 -d 100 -P "$pipe" -q >/dev/null 2>&1
    fi
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    grep -h '^summary:\|^totals:' "$dir"/cg.out.* | awk '{ s += $2 } END { print s }'
}

per_request() { # kind bin test pipe
    local full none
    full=$(total_ir "$@" "$N")
    none=$(total_ir "$@" 0)
    echo $(((full - none) / N))
}

printf '\n%-9s | %12s | %12s' "row" "redis Ir/req" "rstore Ir/req"
[[ -n "$BASELINE_BIN" ]] && printf ' | %12s' "before Ir/req"
printf ' | rstore/redis'
[[ -n "$BASELINE_BIN" ]] && printf ' | rstore/before'
printf '\n'
for test in set get; do
    for pipe in 1 16; do
        r=$(per_request redis "" "$test" "$pipe")
        s=$(per_request rstore "$RSTORE_BIN" "$test" "$pipe")
        printf '%-9s | %12s | %12s' "${test^^} P=$pipe" "$r" "$s"
        if [[ -n "$BASELINE_BIN" ]]; then
            b=$(per_request rstore "$BASELINE_BIN" "$test" "$pipe")
            printf ' | %12s' "$b"
        fi
        printf ' | %12s' "$(ratio "$s" "$r")"
        [[ -n "$BASELINE_BIN" ]] && printf ' | %s' "$(ratio "$s" "$b")"
        printf '\n'
    done
done
echo "(Ir/req: user-space instructions per request, callgrind; N=$N, -c 10 -r 1000 -d 100)"
