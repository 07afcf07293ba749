#!/usr/bin/env bash
# What a PROXY protocol listener costs the server per session: one smtpsd with two implicit-TLS
# listeners, one plain and one `+proxy` (trusting 127.0.0.1), driven by smtps-loadgen directly
# and with `--proxy v1` / `--proxy v2` (a header with a fake client from 192.0.2.0/24 in front of
# every ClientHello, as HAProxy's send-proxy-v2 sends it).
#
#   1. Instructions per session under callgrind (the same process, counters zeroed and dumped
#      around each phase: deterministic, whatever else the machine does).
#   2. Server CPU per session (utime+stime from /proc, as smtps-loadgen measures it) on the native
#      process, the three loads alternating round by round; median of ROUNDS.
#
#   scripts/bench-proxy.sh [ROUNDS [DURATION]]      (defaults: 5 rounds of 5 s per load)
# Environment: SESSIONS [300] for the callgrind phases, WORK [a temp dir].
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
DURATION=${2:-5}
SESSIONS=${SESSIONS:-300}
WORK=${WORK:-$(mktemp -d /tmp/smtps-bench-proxy.XXXXXX)}
mkdir -p "$WORK"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$CARGO_TARGET_DIR/release
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2> /dev/null || true; done
}
trap cleanup EXIT

command -v valgrind > /dev/null || { echo "bench-proxy.sh: valgrind is needed" >&2; exit 1; }
cargo build --release -q -p smtpsd -p smtps-loadgen
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" 2> /dev/null

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 600); do
        (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    exit 1
}
DIRECT=$(free_port)
PROXIED=$(free_port)
SMTPSD_ARGS=(--sink --listen "127.0.0.1:$DIRECT=implicit-tls"
    --listen "127.0.0.1:$PROXIED=implicit-tls+proxy" --proxy-trusted 127.0.0.1
    --cert "$WORK/cert.pem" --key "$WORK/key.pem" --hostname mx.test --log-level warn
    --no-resumption --max-connections 50000 --max-connections-per-ip 50000
    --timeout-handshake 60 --timeout-command 60)
LG=("$BIN/smtps-loadgen")

# Loads: NAME PORT [loadgen proxy args]
loads=(direct proxy_v1 proxy_v2)
port_of() { [ "$1" = direct ] && echo "$DIRECT" || echo "$PROXIED"; }
proxy_args() {
    case $1 in
        proxy_v1) echo "--proxy v1" ;;
        proxy_v2) echo "--proxy v2" ;;
        *) ;;
    esac
}

echo "==> 1. callgrind: instructions per implicit-TLS session ($SESSIONS sessions a phase)"
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN/smtpsd" "${SMTPSD_ARGS[@]}" --workers 1 2> "$WORK/valgrind.log" &
VG=$!
PIDS+=("$VG")
wait_port "$DIRECT"
"${LG[@]}" sessions --target "127.0.0.1:$DIRECT" --ca "$WORK/cert.pem" --workers 2 --count 20 \
    --timeout 120 > /dev/null
"${LG[@]}" sessions --target "127.0.0.1:$PROXIED" --ca "$WORK/cert.pem" --workers 2 --count 20 \
    --timeout 120 --proxy v2 > /dev/null
DUMPS=0
for load in "${loads[@]}"; do
    callgrind_control -z "$VG" > /dev/null
    # shellcheck disable=SC2046
    "${LG[@]}" sessions --target "127.0.0.1:$(port_of "$load")" --tls implicit --ca "$WORK/cert.pem" \
        --threads 1 --workers 4 --timeout 120 --count "$SESSIONS" $(proxy_args "$load") \
        > "$WORK/$load.summary"
    callgrind_control --dump="$load" "$VG" > /dev/null
    DUMPS=$((DUMPS + 1))
    file=$WORK/callgrind.out.$DUMPS
    for _ in $(seq 200); do
        grep -q '^totals:' "$file" 2> /dev/null && break
        sleep 0.1
    done
    total=$(sed -n 's/^summary: //p' "$file")
    echo "$load $((total / SESSIONS))" | tee -a "$WORK/instructions.txt"
done
kill "$VG" 2> /dev/null || true
wait "$VG" 2> /dev/null || true

echo "==> 2. native: server CPU per session, $ROUNDS rounds of ${DURATION}s per load"
"$BIN/smtpsd" "${SMTPSD_ARGS[@]}" --workers 2 2> "$WORK/native.log" &
NATIVE=$!
PIDS+=("$NATIVE")
wait_port "$DIRECT"
for round in $(seq "$ROUNDS"); do
    order=("${loads[@]}")
    [ $((round % 2)) = 0 ] && order=(proxy_v2 proxy_v1 direct)
    for load in "${order[@]}"; do
        # shellcheck disable=SC2046
        line=$("${LG[@]}" sessions --target "127.0.0.1:$(port_of "$load")" --tls implicit \
            --ca "$WORK/cert.pem" --workers 32 --duration "$DURATION" --timeout 30 --pid "$NATIVE" \
            --label "$load" $(proxy_args "$load") 2>> "$WORK/loadgen.log")
        echo "round=$round load=$load $line" | tee -a "$WORK/results.txt"
    done
done

python3 - "$WORK/results.txt" "$WORK/instructions.txt" << 'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    load = re.search(r"load=(\w+)", line).group(1)
    cpu = re.search(r"server_cpu_us_per_op=([0-9.]+)", line)
    if cpu:
        rows.setdefault(load, []).append(float(cpu.group(1)))
instructions = dict(line.split() for line in open(sys.argv[2]))
base_i = int(instructions["direct"])
base_c = statistics.median(rows["direct"])
print(f"\n| listener | instructions per session (callgrind) | vs direct | server CPU per session, µs (median [range]) | vs direct |")
print("|---|---|---|---|---|")
for load in ("direct", "proxy_v1", "proxy_v2"):
    i = int(instructions[load])
    c = rows[load]
    m = statistics.median(c)
    print(f"| {load} | {i:,} | {100 * (i - base_i) / base_i:+.2f}% | {m:.1f} [{min(c):.1f}–{max(c):.1f}] | {100 * (m - base_c) / base_c:+.1f}% |")
PY
echo "(work directory: $WORK)"
