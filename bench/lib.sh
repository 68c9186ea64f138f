# Shared helpers for bench/run.sh and bench/replication.sh (sourced, not run).
# Starts redis-server and rstore-node processes on loopback with temporary
# data directories and kills exactly the processes it started on exit.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RSTORE_BIN="${RSTORE_BIN:-$REPO_ROOT/target/release/rstore-node}"
BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/rstore-bench.XXXXXX")"
BENCH_PIDS=()
KEEP_TMP="${KEEP_TMP:-0}"

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bench_cleanup() {
    local rc=$?
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    # Give them a moment to exit gracefully, then make sure.
    sleep 0.5
    for pid in "${BENCH_PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "$KEEP_TMP" == 1 || $rc -ne 0 ]]; then
        log "logs and data kept in $BENCH_TMP"
    else
        rm -rf "$BENCH_TMP"
    fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install -y redis-server redis-tools python3)"; }

build_rstore() {
    if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
        log "building rstore-node (release)"
        (cd "$REPO_ROOT" && cargo build --release -p rstore-node) >&2
    fi
    [[ -x "$RSTORE_BIN" ]] || die "$RSTORE_BIN missing (unset SKIP_BUILD)"
}

# Free TCP port on loopback (asks the kernel; tiny race is acceptable here).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_ping() { # port [timeout-s]
    local port=$1 t=${2:-60} i
    for ((i = 0; i < t * 10; i++)); do
        if [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; then return 0; fi
        sleep 0.1
    done
    die "nothing answers PING on port $port after ${t}s"
}

# start_redis NAME PORT [redis-server args...]; sets LAST_PID
start_redis() {
    local name=$1 port=$2; shift 2
    local dir="$BENCH_TMP/$name"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' \
        --daemonize no --protected-mode no --logfile "$dir/redis.log" "$@" &
    LAST_PID=$!
    BENCH_PIDS+=("$LAST_PID")
    wait_ping "$port"
}

# start_rstore NAME PORT [rstore-node args...]; repl/admin ports are picked
# here and exported as <NAME>_REPL / <NAME>_ADMIN; sets LAST_PID.
start_rstore() {
    local name=$1 port=$2; shift 2
    local dir="$BENCH_TMP/$name" repl admin
    repl=$(free_port); admin=$(free_port)
    mkdir -p "$dir"
    RUST_LOG="${RUST_LOG:-warn}" "$RSTORE_BIN" --listen "127.0.0.1:$port" \
        --repl-listen "127.0.0.1:$repl" --admin-listen "127.0.0.1:$admin" \
        --data-dir "$dir/data" --node-id "$name" "$@" >"$dir/node.log" 2>&1 &
    LAST_PID=$!
    BENCH_PIDS+=("$LAST_PID")
    printf -v "${name}_REPL" '%s' "$repl"
    printf -v "${name}_ADMIN" '%s' "$admin"
    # Ready when listen.json exists (written once every listener is bound)
    # and the data port answers PING.
    local i
    for ((i = 0; i < 600; i++)); do
        kill -0 "$LAST_PID" 2>/dev/null || { tail -20 "$dir/node.log" >&2; die "rstore-node $name exited at start"; }
        if [[ -f "$dir/data/listen.json" && "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; then return 0; fi
        sleep 0.1
    done
    die "rstore-node $name not ready after 60s (no listen.json or no PONG; see $dir/node.log)"
}

stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# bench_ops PORT TEST CLIENTS N PIPELINE [extra args] -> ops/s on stdout
bench_ops() {
    local port=$1 test=$2 clients=$3 n=$4 pipe=$5; shift 5
    local out
    out=$(redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -c "$clients" -n "$n" \
        -r 1000000 -d 100 -P "$pipe" -q --csv "$@" 2>/dev/null) || die "redis-benchmark failed on port $port"
    # CSV: "test","rps",...; take the data line's second field.
    printf '%s\n' "$out" | awk -F'","' -v t="$(echo "$test" | tr a-z A-Z)" \
        '$1 == "\"" t { gsub(/"/, "", $2); print $2; exit }'
}

# pair_ops PORT_A PORT_B TEST CLIENTS N PIPE REPEAT -> "opsA opsB": best of
# REPEAT runs each, interleaved A,B,A,B so background noise hits both alike.
pair_ops() {
    local a=0 b=0 v i
    for ((i = 0; i < $7; i++)); do
        v=$(bench_ops "$1" "$3" "$4" "$5" "$6"); a=$(awk -v x="$a" -v y="$v" 'BEGIN { print (y > x) ? y : x }')
        v=$(bench_ops "$2" "$3" "$4" "$5" "$6"); b=$(awk -v x="$b" -v y="$v" 'BEGIN { print (y > x) ? y : x }')
    done
    echo "$a $b"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# load_keys PORT COUNT: exactly COUNT distinct keys key:%07d with 100-byte values
load_keys() {
    local port=$1 count=$2
    python3 - "$count" <<'EOF' | redis-cli -p "$port" --pipe >/dev/null
import sys
n = int(sys.argv[1])
val = b"x" * 100
out = sys.stdout.buffer
chunk = []
for i in range(n):
    k = b"key:%07d" % i
    chunk.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(k), k, val))
    if len(chunk) == 10000:
        out.write(b"".join(chunk)); chunk = []
out.write(b"".join(chunk))
EOF
    local got
    got=$(redis-cli -p "$port" dbsize)
    [[ "$got" -ge "$count" ]] || die "load on port $port: dbsize $got < $count"
}

info_field() { # port section field
    redis-cli -p "$1" info "$2" | tr -d '\r' | awk -F: -v f="$3" '$1 == f { print $2; exit }'
}
