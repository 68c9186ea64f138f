#!/usr/bin/env bash
# Replication benchmarks, rstore vs Debian's redis-server, in one run:
#   1. SET throughput against a leader with 2 async followers vs a redis
#      master with 2 replicas (both at fsync once a second).
#   2. rstore semi-sync K=1 vs rstore async, same topology.
#   3. Snapshot bootstrap of a new follower from a leader holding BOOT_KEYS
#      keys (100-byte values) while a SET load runs, vs a redis full sync
#      (repl-diskless-sync yes, delay 0).
# Environment:
#   N=200000 CLIENTS=50 REPEAT=2   throughput runs (best of REPEAT, interleaved)
#   BOOT_KEYS=1000000              keys loaded before the bootstrap
#   LOAD_CLIENTS=10                clients of the background SET load
#   SKIP_BUILD=1 KEEP_TMP=1
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-200000}"
CLIENTS="${CLIENTS:-50}"
REPEAT="${REPEAT:-2}"
BOOT_KEYS="${BOOT_KEYS:-1000000}"
LOAD_CLIENTS="${LOAD_CLIENTS:-10}"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-300}"

need redis-server; need redis-benchmark; need redis-cli; need python3; need curl
build_rstore

REDIS_DUR=(--appendonly yes --appendfsync everysec)
RSTORE_DUR=(--fsync interval:1000)

status() { curl -sf "http://127.0.0.1:$1/status"; }
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

wait_redis_replicas() { # master-port count
    local i
    for ((i = 0; i < 600; i++)); do
        if [[ "$(redis-cli -p "$1" info replication | tr -d '\r' | grep -c 'state=online')" -ge "$2" ]]; then return 0; fi
        sleep 0.1
    done
    die "redis master on $1: fewer than $2 replicas online"
}

wait_rstore_followers() { # admin-port data-port count
    local i n
    # A follower of an empty leader reports "catching-up" until it acks a
    # record; one write moves both to "streaming".
    redis-cli -p "$2" set bench:warmup 1 >/dev/null
    for ((i = 0; i < 100; i++)); do
        n=$(status "$1" | jq_py "sum(1 for f in d['followers'] if f['state'] == 'streaming')" 2>/dev/null || echo 0)
        if [[ "$n" -ge "$3" ]]; then return 0; fi
        sleep 0.2
    done
    status "$1" >&2 || true
    die "rstore leader (admin $1): fewer than $3 followers streaming"
}

# rstore cluster: leader + 2 followers with the given extra flags.
# Sets CL_PORT, CL_ADMIN, CL_PIDS.
start_rstore_cluster() { # prefix [flags...]
    local p=$1; shift
    CL_PORT=$(free_port)
    start_rstore "${p}_l" "$CL_PORT" --role leader "${RSTORE_DUR[@]}" "$@"
    CL_PIDS=("$LAST_PID")
    local lrepl_var="${p}_l_REPL" ladmin_var="${p}_l_ADMIN"
    CL_ADMIN=${!ladmin_var}
    local f
    for f in f1 f2; do
        start_rstore "${p}_$f" "$(free_port)" --follow "127.0.0.1:${!lrepl_var}" "${RSTORE_DUR[@]}" "$@"
        CL_PIDS+=("$LAST_PID")
    done
    wait_rstore_followers "$CL_ADMIN" "$CL_PORT" 2
}

ROWS=()
add_row() { ROWS+=("$1|$2|$3|$4"); }

# ---------------------------------------------------------------- 1. async vs redis replicas
log "1. leader + 2 async followers vs redis master + 2 replicas"
rport=$(free_port)
start_redis redis-m "$rport" "${REDIS_DUR[@]}"
RPIDS=("$LAST_PID")
for r in r1 r2; do
    start_redis "redis-$r" "$(free_port)" "${REDIS_DUR[@]}" --replicaof 127.0.0.1 "$rport"
    RPIDS+=("$LAST_PID")
done
wait_redis_replicas "$rport" 2
start_rstore_cluster async
for pipe in 1 16; do
    rs=$(pair_ops "$rport" "$CL_PORT" set "$CLIENTS" "$N" "$pipe" "$REPEAT")
    read -r r s <<<"$rs"
    add_row "SET P=$pipe, 2 replicas" "redis $r" "rstore async $s" "$(ratio "$s" "$r")"
    log "  SET -P $pipe: redis $r  rstore async $s"
done
for pid in "${CL_PIDS[@]}" "${RPIDS[@]}"; do stop_pid "$pid"; done

# ---------------------------------------------------------------- 2. semi-sync vs async
# Two rstore clusters side by side, async and semi-sync K=1, with the same
# fsync policy; SET at CLIENTS clients, interleaved.
semi_vs_async() { # label n fsync [semi-sync-only flags...]
    local label=$1 n=$2 fsync=$3; shift 3
    local aport apids sport spids a s rs
    RSTORE_DUR=(--fsync "$fsync")
    start_rstore_cluster "a_${fsync//[:]/_}"
    aport=$CL_PORT; apids=("${CL_PIDS[@]}")
    start_rstore_cluster "s_${fsync//[:]/_}_$#" --replication-mode semi-sync --sync-replicas 1 "$@"
    sport=$CL_PORT; spids=("${CL_PIDS[@]}")
    rs=$(pair_ops "$aport" "$sport" set "$CLIENTS" "$n" 1 "$REPEAT")
    read -r a s <<<"$rs"
    add_row "SET P=1 semi-sync K=1, $label" "async $a" "semi-sync $s" "$(ratio "$s" "$a")"
    log "  $label: async $a  semi-sync $s"
    for pid in "${apids[@]}" "${spids[@]}"; do stop_pid "$pid"; done
    RSTORE_DUR=(--fsync interval:1000)
}
log "2. rstore semi-sync K=1 vs async"
# Same flags as the async row (the default --ack-level durable; a follower
# counts a record durable per its own --fsync, i.e. written for interval).
semi_vs_async "fsync interval:1000, ack durable" "$N" interval:1000
semi_vs_async "fsync batch, ack durable" "$N" batch
semi_vs_async "fsync interval:1000, ack received" "$N" interval:1000 --ack-level received

# ---------------------------------------------------------------- 3. snapshot bootstrap
start_load() { # port -> LOAD_PID
    redis-benchmark -h 127.0.0.1 -p "$1" -t set -c "$LOAD_CLIENTS" -n 1000000000 \
        -r 1000000 -d 100 -q >/dev/null 2>&1 &
    LOAD_PID=$!
    BENCH_PIDS+=("$LOAD_PID")
}

log "3. snapshot bootstrap of $BOOT_KEYS keys under a $LOAD_CLIENTS-client SET load"
# rstore
lport=$(free_port)
start_rstore boot_l "$lport" --role leader "${RSTORE_DUR[@]}"
lpid=$LAST_PID
load_keys "$lport" "$BOOT_KEYS"
lrss0=$(rss_kib "$lpid")
start_load "$lport"
sleep 2
fport=$(free_port)
t0=$(date +%s.%N)
target=$(info_field "$lport" replication master_repl_offset)
start_rstore boot_f "$fport" --follow "127.0.0.1:$boot_l_REPL" "${RSTORE_DUR[@]}"
fpid=$LAST_PID
lrss_peak=$lrss0
ok=0
while true; do
    now=$(date +%s.%N)
    if awk -v a="$t0" -v b="$now" -v t="$BOOT_TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then break; fi
    kill -0 "$fpid" 2>/dev/null || die "new follower exited during bootstrap (see $BENCH_TMP/boot_f/node.log)"
    # INFO replication carries the same fields as /status (rstore_applied_offset =
    # offsets.applied, master_link_status:up = link "up") without /status's
    # full-keyspace digest, which would perturb the measurement.
    inf=$(redis-cli -p "$fport" info replication 2>/dev/null | tr -d '\r' || true)
    applied=$(awk -F: '$1 == "rstore_applied_offset" { print $2 }' <<<"$inf")
    link=$(awk -F: '$1 == "master_link_status" { print $2 }' <<<"$inf")
    rss=$(rss_kib "$lpid"); ((rss > lrss_peak)) && lrss_peak=$rss
    if [[ "$link" == up && -n "$applied" && "$applied" -ge "$target" ]]; then ok=1; break; fi
    sleep 0.05
done
t1=$(date +%s.%N)
[[ $ok == 1 ]] || die "rstore follower not caught up after ${BOOT_TIMEOUT}s (applied=${applied:-?} target=$target link=${link:-?})"
s_boot=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
log "  rstore bootstrap: ${s_boot}s (target offset $target)"
# convergence: stop the load, wait for the follower to reach the leader's end, compare digests
stop_pid "$LOAD_PID"
final=$(info_field "$lport" replication master_repl_offset)
conv=no
for ((i = 0; i < 600; i++)); do
    applied=$(info_field "$fport" replication rstore_applied_offset)
    if [[ "$applied" -ge "$final" ]]; then conv=yes; break; fi
    sleep 0.1
done
ldig=$(redis-cli -p "$lport" debug digest); fdig=$(redis-cli -p "$fport" debug digest)
lkeys=$(redis-cli -p "$lport" dbsize); fkeys=$(redis-cli -p "$fport" dbsize)
digest_ok=$([[ $conv == yes && "$ldig" == "$fdig" ]] && echo match || echo "MISMATCH (leader $ldig/$lkeys keys @ $final, follower $fdig/$fkeys keys @ $applied)")
log "  digest after catch-up: $digest_ok"
stop_pid "$fpid"; stop_pid "$lpid"

# redis
rport=$(free_port)
start_redis redis-boot-m "$rport" "${REDIS_DUR[@]}" --repl-diskless-sync yes --repl-diskless-sync-delay 0
rmpid=$LAST_PID
load_keys "$rport" "$BOOT_KEYS"
start_load "$rport"
sleep 2
r2port=$(free_port)
t0=$(date +%s.%N)
start_redis redis-boot-r "$r2port" "${REDIS_DUR[@]}" --replicaof 127.0.0.1 "$rport"
ok=0
while true; do
    now=$(date +%s.%N)
    if awk -v a="$t0" -v b="$now" -v t="$BOOT_TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then break; fi
    inf=$(redis-cli -p "$r2port" info replication 2>/dev/null | tr -d '\r' || true)
    if grep -q '^master_link_status:up' <<<"$inf" && grep -q '^master_sync_in_progress:0' <<<"$inf"; then ok=1; break; fi
    sleep 0.05
done
t1=$(date +%s.%N)
[[ $ok == 1 ]] || die "redis replica not synced after ${BOOT_TIMEOUT}s"
r_boot=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
log "  redis full sync: ${r_boot}s"
stop_pid "$LOAD_PID"

add_row "bootstrap $BOOT_KEYS keys (s)" "redis $r_boot" "rstore $s_boot" "$(ratio "$s_boot" "$r_boot")"

echo
echo "replication: $CLIENTS clients, -n $N, -r 1000000 -d 100; redis appendfsync everysec, rstore --fsync interval:1000 unless the row says otherwise; $(nproc) cores shared by all nodes and the client"
printf '%-50s %20s %24s %8s\n' "row" "baseline" "rstore" "ratio"
for row in "${ROWS[@]}"; do
    IFS='|' read -r name b s q <<<"$row"
    printf '%-50s %20s %24s %8s\n' "$name" "$b" "$s" "$q"
done
echo "(throughput ratios: higher is better, goal >= 1.0 vs redis and >= 0.7 semi-sync/async;"
echo " bootstrap ratio is time rstore/redis: lower is better, goal <= 1.0)"
printf 'bootstrap: new follower digest vs leader after catch-up: %s; leader RSS %.0f MiB before, peak %.0f MiB during bootstrap\n' \
    "$digest_ok" "$(awk -v k="$lrss0" 'BEGIN{print k/1024}')" "$(awk -v k="$lrss_peak" 'BEGIN{print k/1024}')"
