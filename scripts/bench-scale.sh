#!/usr/bin/env bash
# Scale (issue 16): IDLE_N idle implicit-TLS connections (handshake + EHLO, then held) really
# opened to one `smtpsd --sink`, and sessions/s and server CPU per session with 1 and 2 workers
# with the spread of connections and CPU across the SO_REUSEPORT workers. Writes the section
# between `<!-- bench-scale: begin -->` and `<!-- bench-scale: end -->` of BENCHMARKS.md (the
# rest of the file is kept).
#
# Usage (as root): scripts/bench-scale.sh
# Environment (defaults in brackets):
#     IDLE_N [100000]       idle connections to open; if the open-file limit cannot be raised
#                           that far, the highest count it allows (the reason is reported)
#     SOURCE_IPS [127.0.0.2-127.0.0.9]  client source addresses (smtps-loadgen --source-ips)
#     SETUP_WINDOW [64]     connections in setup at once per load thread (--setup-window)
#     HOLD [40]             seconds each idle client holds its connections after setup
#     PROBES [5]            fresh sessions (connect -> 221) timed while they are held
#     EXTRA [200]           when IDLE_N was lowered to the fd limit: connections opened past
#                           it, to record the server's own error
#     DURATION [6] ROUNDS [3] WORKERS_LIST ["1 2"]  the sessions load per worker count
#     OUT [BENCHMARKS.md] ('-': print the section only)   WORK [/tmp/smtps-bench-scale]
#
# System settings changed (and put back on exit, also on failure): the script's own open-file
# limit (prlimit on itself; children inherit it), net.ipv4.ip_local_port_range. Every process
# it starts is killed on exit. Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IDLE_N=${IDLE_N:-100000}
SOURCE_IPS=${SOURCE_IPS:-127.0.0.2-127.0.0.9}
SETUP_WINDOW=${SETUP_WINDOW:-64}
HOLD=${HOLD:-40}
PROBES=${PROBES:-5}
EXTRA=${EXTRA:-200}
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-3}
WORKERS_LIST=${WORKERS_LIST:-1 2}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
WORK=${WORK:-/tmp/smtps-bench-scale}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
LOADGEN=$BIN/smtps-loadgen
IDLE_PORT=39465 SCALE_PORT=39466

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-scale: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it raises limits and changes sysctls)"

STARTED_PIDS=()
RESTORE_SYSCTLS=()
cleanup() {
    set +e
    local pid s
    for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in "${STARTED_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for s in "${RESTORE_SYSCTLS[@]}"; do
        sysctl -q -w "$s" >/dev/null || echo "bench-scale: could not restore $s" >&2
    done
    RESTORE_SYSCTLS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set_sysctl() { # NAME VALUE: set it, remembering the old value for cleanup
    local old
    old=$(sysctl -n "$1" | tr '\t' ' ')
    [ "$old" = "$2" ] && return 0
    if sysctl -q -w "$1=$2" >/dev/null 2>"$WORK/sysctl.err"; then
        RESTORE_SYSCTLS+=("$1=$old")
        echo "sysctl $1: $old -> $2 (restored at exit)" >>"$LIMITS"
    else
        echo "sysctl $1: could not set $2: $(cat "$WORK/sysctl.err")" >>"$LIMITS"
    fi
}
port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
wait_port() {
    local i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 10 s (see $WORK/*.log)"
}
start_smtpsd() { # NAME WORKERS PORT: sets SMTPSD_PID
    port_free "$3" || die "port $3 is in use; stop what listens there first"
    "$BIN/smtpsd" --sink --listen "127.0.0.1:$3=implicit-tls" --cert "$WORK/cert.pem" \
        --key "$WORK/key.pem" --hostname mx.test --workers "$2" --max-connections 1000000 \
        --max-connections-per-ip 1000000 --log-level warn --no-resumption 2>"$WORK/$1.log" &
    SMTPSD_PID=$!
    STARTED_PIDS+=("$SMTPSD_PID")
    wait_port "$3"
}
stop_pid() { # PID: TERM, then KILL after 10 s
    local i
    kill "$1" 2>/dev/null || return 0
    for i in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}
rollup() { # PID KEY: a field of /proc/PID/smaps_rollup, KiB
    awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/smaps_rollup"
}
fd_limit() { awk '/^Max open files/ {print $4}' "/proc/$1/limits"; }

mkdir -p "$WORK"
LIMITS=$WORK/limits.txt IDLE=$WORK/idle.txt PROBE_LINES=$WORK/probes.txt
SCALE=$WORK/scale.txt COMMANDS=$WORK/commands.txt
rm -f "$LIMITS" "$IDLE" "$PROBE_LINES" "$SCALE" "$COMMANDS" "$WORK"/idle-*.err "$WORK"/*.log
log "building smtpsd and smtps-loadgen (release)"
cargo build --release -q -p smtpsd -p smtps-loadgen
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,DNS:mx.test,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" 2>/dev/null
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- limits ------------------------------------------------------------------------------------
# Per process: the server needs a descriptor per connection (plus ~30), each client process one
# per connection (plus 64). The limit is raised on this shell, whose children inherit it.
want=$((IDLE_N + 1000))
echo "open files before: soft $(ulimit -Sn), hard $(ulimit -Hn)" >>"$LIMITS"
if out=$(prlimit --pid $$ --nofile="$want:$want" 2>&1); then
    echo "prlimit --nofile=$want:$want: done" >>"$LIMITS"
else
    echo "prlimit --nofile=$want:$want: failed: $out" >>"$LIMITS"
    capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
    if (( (0x$capeff >> 24) & 1 )); then
        echo "CAP_SYS_RESOURCE: present (CapEff $capeff)" >>"$LIMITS"
    else
        echo "CAP_SYS_RESOURCE: absent (CapEff $capeff): no process here may raise its hard limit" >>"$LIMITS"
    fi
    ulimit -Sn "$(ulimit -Hn)"
fi
HARD=$(ulimit -Hn)
echo "open files now: soft $(ulimit -Sn), hard $HARD; fs.nr_open $(sysctl -n fs.nr_open), fs.file-max $(sysctl -n fs.file-max)" >>"$LIMITS"
N=$IDLE_N
if [ "$HARD" -lt $((IDLE_N + 100)) ]; then
    N=$((HARD - 100))
    echo "idle connections: $IDLE_N wanted, $N opened: one process may hold at most $HARD descriptors and the server is one process (100 kept for the fresh sessions timed during the hold)" >>"$LIMITS"
fi
# Ports: with IP_BIND_ADDRESS_NO_PORT each source address gives a port range of connections to
# the one server port; widen the range so that N/addresses fits with room to spare.
set_sysctl net.ipv4.ip_local_port_range "10000 65000"
echo "net.core.somaxconn $(sysctl -n net.core.somaxconn) (not changed: smtps-server listens with a backlog of 1024 and the clients keep at most SETUP_WINDOW x threads connections in setup)" >>"$LIMITS"
per_client=$((HARD - 1000))
CLIENTS=$(( (N + per_client - 1) / per_client ))
[ "$CLIENTS" -ge 2 ] || CLIENTS=2

# --- idle connections --------------------------------------------------------------------------
log "idle: $N connections to one smtpsd (2 workers) from $CLIENTS client processes"
start_smtpsd smtpsd-idle 2 "$IDLE_PORT"
IPID=$SMTPSD_PID
echo "smtpsd --sink --listen 127.0.0.1:$IDLE_PORT=implicit-tls --cert \$WORK/cert.pem --key \$WORK/key.pem --hostname mx.test --workers 2 --max-connections 1000000 --max-connections-per-ip 1000000 --log-level warn --no-resumption" >>"$COMMANDS"
sleep 0.5
rss_before=$(rollup "$IPID" Rss) pss_before=$(rollup "$IPID" Pss)
SETUP_BOUND=$(( N / 500 + 60 ))
CLIENT_PIDS=()
t0=$(date +%s.%N)
for c in $(seq "$CLIENTS"); do
    share=$(( N / CLIENTS + (c <= N % CLIENTS ? 1 : 0) ))
    args=(idle --target "127.0.0.1:$IDLE_PORT" --ca "$WORK/cert.pem" --connections "$share"
        --source-ips "$SOURCE_IPS" --setup-window "$SETUP_WINDOW" --hold "$HOLD"
        --duration "$SETUP_BOUND" --timeout 30 --label "idle/$c")
    echo "smtps-loadgen ${args[*]}" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    timeout $((SETUP_BOUND + HOLD + 120)) "$LOADGEN" "${args[@]}" \
        >"$WORK/idle-$c.out" 2>"$WORK/idle-$c.err" &
    CLIENT_PIDS+=($!)
    STARTED_PIDS+=($!)
done
# Wait (bounded) until every client reports its setup done.
for _ in $(seq $(( (SETUP_BOUND + 60) * 2 ))); do
    done_n=$(cat "$WORK"/idle-*.err 2>/dev/null | grep -c '^idle: ' || true)
    [ "$done_n" -ge "$CLIENTS" ] && break
    alive=0
    for pid in "${CLIENT_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    sleep 0.5
done
t1=$(date +%s.%N)
sleep 1
{
    echo "target_n=$IDLE_N n=$N clients=$CLIENTS server_fd_limit=$(fd_limit "$IPID") client_fd_limit=$(ulimit -Sn)"
    echo "wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')"
    echo "rss_before_kib=$rss_before pss_before_kib=$pss_before"
    echo "rss_after_kib=$(rollup "$IPID" Rss) pss_after_kib=$(rollup "$IPID" Pss) vmrss_after_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$IPID/status")"
    echo "server_fds=$(ls "/proc/$IPID/fd" | wc -l) established_sockets=$(ss -Htn state established "sport = :$IDLE_PORT" | wc -l)"
    grep -h '^idle: ' "$WORK"/idle-*.err
} >>"$IDLE"
python3 scripts/bench-scale-workers.py "$IPID" | sed 's/^/worker /' >>"$IDLE"
log "$(grep -h '^idle: ' "$WORK"/idle-*.err | tr '\n' ' ')"

log "timing $PROBES fresh sessions while the connections are held"
for i in $(seq "$PROBES"); do
    args=(sessions --target "127.0.0.1:$IDLE_PORT" --ca "$WORK/cert.pem" --workers 1 --threads 1
        --count 1 --timeout 10 --label "probe/$i")
    [ "$i" = 1 ] && echo "smtps-loadgen ${args[*]}" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    line=$(timeout 30 "$LOADGEN" "${args[@]}" 2>&1) || line="failed=1 $line"
    echo "probe=$i $line" | tee -a "$PROBE_LINES" >&2
    sleep 1
done
if [ "$N" -lt "$IDLE_N" ]; then
    log "opening $EXTRA more connections past the descriptor limit (to record the error)"
    args=(idle --target "127.0.0.1:$IDLE_PORT" --ca "$WORK/cert.pem" --connections "$EXTRA"
        --source-ips "$SOURCE_IPS" --hold 1 --duration 5 --timeout 5 --label beyond)
    echo "smtps-loadgen ${args[*]}" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    line=$(timeout 60 "$LOADGEN" "${args[@]}" 2>/dev/null) || line="failed=1 $line"
    {
        echo "beyond $line"
        echo "beyond_server_log_lines=$(grep -c 'accept failed' "$WORK/smtpsd-idle.log" || true)"
        grep -m1 'accept failed' "$WORK/smtpsd-idle.log" | sed 's/^/beyond_first_error /' || true
    } >>"$IDLE"
fi
log "waiting for the idle clients to end their hold"
for pid in "${CLIENT_PIDS[@]}"; do wait "$pid" || echo "client $pid exit $?" >>"$IDLE"; done
cat "$WORK"/idle-*.out >>"$IDLE"
stop_pid "$IPID"

# --- sessions/s with 1 and 2 workers ------------------------------------------------------------
for round in $(seq "$ROUNDS"); do
    order=$WORKERS_LIST
    [ $((round % 2)) = 0 ] && order=$(echo "$WORKERS_LIST" | tr ' ' '\n' | tac | tr '\n' ' ')
    for w in $order; do
        start_smtpsd "smtpsd-$w" "$w" "$SCALE_PORT"
        sleep 0.3
        python3 scripts/bench-scale-workers.py "$SMTPSD_PID" >"$WORK/threads-before.txt"
        args=(sessions --target "127.0.0.1:$SCALE_PORT" --ca "$WORK/cert.pem" --workers 32
            --duration "$DURATION" --timeout 30 --pid "$SMTPSD_PID" --label "scale/$w")
        [ "$round" = 1 ] && echo "smtps-loadgen ${args[*]}  # smtpsd as above with --workers $w, port $SCALE_PORT" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
        line=$(timeout $((DURATION + 120)) "$LOADGEN" "${args[@]}" 2>/dev/null) || line="failed=1"
        echo "server_workers=$w round=$round $line" | tee -a "$SCALE" >&2
        # Per worker thread: CPU ticks during the load (the threads wait in epoll_wait again).
        python3 scripts/bench-scale-workers.py "$SMTPSD_PID" | while read -r l; do
            epfd=$(sed 's/.*epfd=\([0-9]*\).*/\1/' <<<"$l")
            before=$(grep "epfd=$epfd " "$WORK/threads-before.txt" | sed 's/.*cpu_ticks=\([0-9-]*\).*/\1/')
            echo "thread server_workers=$w round=$round before_ticks=$before $l"
        done >>"$SCALE"
        stop_pid "$SMTPSD_PID"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
cleanup

{
    echo "machine_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "machine_cores=$(nproc)"
    echo "memory=$(free -h | awk '/^Mem:/ {print $2}')"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "rustc=$(rustc --version)"
    echo "rustls=$(awk '/^name = "rustls"$/ {getline; sub(/version = /, ""); gsub(/"/, ""); print; exit}' Cargo.lock)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates/smtpsd crates/smtps-server crates/smtps-loadgen || echo ' (with uncommitted changes in crates/)')"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "settings=IDLE_N=$IDLE_N SOURCE_IPS=$SOURCE_IPS SETUP_WINDOW=$SETUP_WINDOW HOLD=$HOLD PROBES=$PROBES EXTRA=$EXTRA DURATION=$DURATION ROUNDS=$ROUNDS WORKERS_LIST='$WORKERS_LIST'"
    echo "loadavg=$LOAD_START → $LOAD_END"
} >"$WORK/meta.txt"
log "writing the scale section of $OUT"
python3 scripts/bench-scale-report.py --work "$WORK" --out "$OUT"
log "done (raw results in $WORK)"
