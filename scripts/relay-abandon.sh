#!/usr/bin/env bash
# A relay front (smtpsd --relay) to a sink backend (smtpsd --sink), a `yes` on every core, and
# ROUNDS rounds of N clients that pipeline a group and abandon it at each stage (see
# relay-abandon.py); after each round: the front's descriptors, resident memory, its sockets
# by state, and the connections still open to the backend (all should stay flat: 2 listening
# sockets, no connection left).
#   N=600 ROUNDS=4 scripts/relay-abandon.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-600}
ROUNDS=${ROUNDS:-4}
cargo build --release -q -p smtpsd
BIN=target/release/smtpsd
WORK=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2> /dev/null || true; pkill -P $$ yes 2> /dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/key.pem" \
    -out "$WORK/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2> /dev/null
read -r SINK FRONT_PORT <<< "$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')"
"$BIN" --sink --listen "127.0.0.1:$SINK=plain" --hostname sink.test --workers 1 > "$WORK/sink.log" 2>&1 &
PIDS+=($!)
"$BIN" --relay "smtp://127.0.0.1:$SINK" --listen "127.0.0.1:$FRONT_PORT=implicit-tls" \
    --cert "$WORK/cert.pem" --key "$WORK/key.pem" --workers 2 --hostname front.test > "$WORK/front.log" 2>&1 &
FRONT=$!
PIDS+=("$FRONT")
sleep 1
for _ in $(seq "$(nproc)"); do yes > /dev/null & done
echo "start: fds $(ls /proc/$FRONT/fd | wc -l), $(grep VmRSS /proc/$FRONT/status | tr -s ' \t' ' ')"
for round in $(seq "$ROUNDS"); do
    python3 scripts/relay-abandon.py "$N" "$FRONT_PORT" "$WORK/cert.pem"
    sleep 2
    states=$(ss -tanp 2> /dev/null | grep "pid=$FRONT," | awk '{print $1}' | sort | uniq -c | tr -s ' \n' ' ')
    backend=$(ss -tan state established | grep -c ":$SINK " || true)
    echo "round $round: fds $(ls /proc/$FRONT/fd | wc -l), $(grep VmRSS /proc/$FRONT/status | tr -s ' \t' ' '), front sockets:$states, to the backend: $backend"
done
echo "messages relayed: $(grep -c 'event=message_summary' "$WORK/front.log"), panics: $(grep -ci panic "$WORK/front.log" || true)"
