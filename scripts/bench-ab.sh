#!/usr/bin/env bash
# A/B benchmark of smtpsd against an earlier revision of itself: the same loads as
# scripts/bench-peers.sh (implicit-TLS sessions, 2 KiB and 100 KiB messages over 16 persistent
# TLS connections), alternating old and new build round by round, reporting the server's CPU
# per operation (utime+stime from /proc, as smtps-loadgen measures it). For a change that must
# not cost CPU (a refactor of the connection engine, say).
#
#   scripts/bench-ab.sh OLD_REV [ROUNDS [DURATION]]     (defaults: 3 rounds of 6 s per load)
#
# The old revision is built in a git worktree under /tmp with its own target directory. Both
# servers run as bench-peers.sh runs smtpsd: --sink, 2 workers, no session resumption, loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OLD_REV=${1:?usage: $0 OLD_REV [ROUNDS [DURATION]]}
ROUNDS=${2:-3}
DURATION=${3:-6}
WORK=$(mktemp -d /tmp/smtps-ab.XXXXXX)
OLD_TREE=${OLD_TREE:-/tmp/smtps-ab-tree}
OLD_TARGET=${OLD_TARGET:-/tmp/smtps-ab-target}
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
}
trap cleanup EXIT

echo "==> building the new revision ($(git rev-parse --short HEAD)) and $OLD_REV (release)"
cargo build -q --release -p smtpsd -p smtps-loadgen
if [ ! -d "$OLD_TREE" ]; then git worktree add -f "$OLD_TREE" "$OLD_REV" -q; fi
git -C "$OLD_TREE" checkout -q --detach "$OLD_REV"
(cd "$OLD_TREE" && CARGO_TARGET_DIR=$OLD_TARGET cargo build -q --release -p smtpsd)
LOADGEN=$ROOT/target/release/smtps-loadgen

# The certificate of bench-peers.sh: an end-entity ECDSA P-256 certificate (webpki refuses a CA
# certificate used as a server's).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,DNS:mx.test,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" \
    -addext "extendedKeyUsage=serverAuth" 2> /dev/null

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
start() { # BINARY NAME -> PID PORT on stdout
    local port
    port=$(free_port)
    "$1" --listen "127.0.0.1:$port=implicit-tls" --cert "$WORK/cert.pem" --key "$WORK/key.pem" \
        --hostname mx.test --workers 2 --max-connections 50000 --max-connections-per-ip 50000 \
        --no-resumption --log-level warn --sink > /dev/null 2> "$WORK/$2.log" &
    local pid=$!
    for _ in $(seq 100); do
        (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break
        sleep 0.1
    done
    kill -0 "$pid" 2> /dev/null || { echo "$2 did not start" >&2; cat "$WORK/$2.log" >&2; exit 1; }
    echo "$pid $port"
}
read -r OLD_PID OLD_PORT <<< "$(start "$OLD_TARGET/release/smtpsd" old)"
PIDS+=("$OLD_PID")
read -r NEW_PID NEW_PORT <<< "$(start "$ROOT/target/release/smtpsd" new)"
PIDS+=("$NEW_PID")

load() { # NAME PORT PID LOAD
    local common=(--target "127.0.0.1:$2" --tls implicit --ca "$WORK/cert.pem" --pid "$3"
        --duration "$DURATION" --timeout 30 --label "$1/$4")
    case $4 in
        sess_implicit) "$LOADGEN" sessions --workers 32 "${common[@]}" ;;
        msg_2k) "$LOADGEN" messages --connections 16 --size 2048 --settle 1 "${common[@]}" ;;
        msg_100k) "$LOADGEN" messages --connections 16 --size 102400 --settle 1 "${common[@]}" ;;
    esac 2>> "$WORK/loadgen.log"
}

echo "==> $ROUNDS rounds of ${DURATION}s per load; old = $OLD_REV, new = $(git rev-parse --short HEAD)"
for round in $(seq "$ROUNDS"); do
    order="old new"
    [ $((round % 2)) = 0 ] && order="new old"
    for l in sess_implicit msg_2k msg_100k; do
        for side in $order; do
            if [ "$side" = old ]; then line=$(load old "$OLD_PORT" "$OLD_PID" "$l"); else line=$(load new "$NEW_PORT" "$NEW_PID" "$l"); fi
            echo "round=$round side=$side load=$l $line" | tee -a "$WORK/results.txt"
        done
    done
done

echo "==> server CPU per operation (µs), median of $ROUNDS rounds"
python3 - "$WORK/results.txt" << 'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    side = re.search(r"side=(\w+)", line).group(1)
    load = re.search(r"load=(\w+)", line).group(1)
    cpu = re.search(r"server_cpu_us_per_op=([0-9.]+)", line)
    if cpu:
        rows.setdefault((load, side), []).append(float(cpu.group(1)))
print(f"{'load':<16}{'old':>10}{'new':>10}{'new/old':>10}")
for load in ("sess_implicit", "msg_2k", "msg_100k"):
    old, new = rows.get((load, "old"), []), rows.get((load, "new"), [])
    if old and new:
        o, n = statistics.median(old), statistics.median(new)
        print(f"{load:<16}{o:>10.1f}{n:>10.1f}{n / o:>10.2f}   old {old} new {new}")
PY
