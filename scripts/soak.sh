#!/usr/bin/env bash
# Soak: smtpsd under mixed load for DURATION seconds (default 120, the CI version; 1800 for
# the full run), then the verdict:
#   - zero crashes (the daemon still runs, no panic in its log);
#   - VmRSS after the load within 10 % of its level at the end of the warm-up;
#   - open descriptors back to the baseline taken before the load;
#   - the ledger check: every message acknowledged with 250 stored exactly once, byte-exact;
#     nothing unacknowledged stored; no partial file ever seen in new/ during the run.
# The load (crates/smtpsd/tests/clients/fault_clients.py, `load --mixed`): well-behaved
# senders over implicit TLS and STARTTLS; ~10 % of sessions abusive (garbage, smuggling
# attempts, STARTTLS injection, oversized lines and messages, handshake stalls, vanishing
# clients mid-handshake/command/DATA/BDAT, slow drip, connection floods from 127.0.0.2).
# Loopback only; every loop is bounded in time. Needs python3 and openssl; builds smtpsd with
# cargo unless SMTPSD names a binary. Exit status: 0 when every check holds.
#
#   scripts/soak.sh [DURATION] [--keep]     (--keep: leave the work directory for a look)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-120}
KEEP=${2:-}
WORKERS=${SOAK_WORKERS:-10}   # SOAK_PAUSE: seconds between a worker's sessions (0.02)
case "$DURATION" in '' | *[!0-9]*) echo "usage: $0 [SECONDS] [--keep]" >&2; exit 2 ;; esac
WARMUP=$((DURATION / 10 > 20 ? DURATION / 10 : 20))
CLIENTS=crates/smtpsd/tests/clients/fault_clients.py

if [ -z "${SMTPSD:-}" ]; then
    cargo build -q -p smtpsd
    SMTPSD="${CARGO_TARGET_DIR:-target}/debug/smtpsd"
fi

WORK=$(mktemp -d /tmp/smtpsd-soak.XXXXXX)
DAEMON_PID=
LOAD_PID=
cleanup() {
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2> /dev/null || true
    [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2> /dev/null || true
    if [ "$KEEP" = --keep ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2> /dev/null

"$SMTPSD" --listen 127.0.0.1:0=implicit-tls --listen 127.0.0.1:0=starttls-required \
    --cert "$WORK/cert.pem" --key "$WORK/key.pem" --maildir "$WORK/mail" --hostname mx.test \
    --timeout-handshake 2 --timeout-command 5 --timeout-data 5 --timeout-session 120 \
    --max-message-size 1M --max-connections-per-ip 60 --max-connections 1000 \
    2> "$WORK/smtpsd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do
    [ "$(grep -c 'listening on' "$WORK/smtpsd.log")" -ge 2 ] && break
    kill -0 "$DAEMON_PID" 2> /dev/null || break
    sleep 0.1
done
# One line per --listen, in order: implicit TLS first.
PORTS=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/smtpsd.log" | tr '\n' ' ')
read -r IMPLICIT STARTTLS _ <<< "$PORTS"
[ -n "${STARTTLS:-}" ] || { echo "soak: smtpsd did not start"; cat "$WORK/smtpsd.log"; exit 1; }

rss() { awk '/^VmRSS:/ { print $2 }' /proc/$DAEMON_PID/status; }
fds() { ls /proc/$DAEMON_PID/fd | wc -l; }
alive() { kill -0 "$DAEMON_PID" 2> /dev/null; }
settle_fds() { # waits (20 s at most) until the count stops changing and is <= $1
    local last now same=0
    last=$(fds)
    for _ in $(seq 200); do
        sleep 0.1
        now=$(fds)
        if [ "$now" = "$last" ] && [ "$now" -le "$1" ]; then same=$((same + 1)); else same=0; fi
        last=$now
        [ "$same" -ge 5 ] && break
    done
    echo "$last"
}

sleep 1
FDS_BASE=$(fds)
RSS_START=$(rss)
echo "soak: smtpsd pid $DAEMON_PID, implicit TLS :$IMPLICIT, STARTTLS :$STARTTLS;" \
    "duration ${DURATION}s, warm-up ${WARMUP}s, $WORKERS workers; baseline $FDS_BASE fds, RSS $RSS_START KiB"

python3 "$CLIENTS" --implicit-port "$IMPLICIT" --starttls-port "$STARTTLS" \
    --cafile "$WORK/cert.pem" --prefix soak --duration "$DURATION" \
    --mixed "$WORKERS" --abuse-ratio 0.1 --pause "${SOAK_PAUSE:-0.02}" \
    --abuse vanish-handshake,vanish-command,vanish-data,vanish-bdat,stall-handshake,slow-drip,garbage,smuggle,starttls-injection,long-line,oversized,flood \
    --flood-size 80 --stall-limit 10 --max-message-size 1048576 \
    --scan "$WORK/mail" --scan-interval 0.5 --ledger "$WORK/ledger.jsonl" \
    load > "$WORK/load.out" 2> "$WORK/load.err" &
LOAD_PID=$!

START=$(date +%s)
RSS_WARM=
RSS_MAX=0
FDS_MAX=0
echo "seconds rss_kib fds" > "$WORK/samples.txt"
while kill -0 "$LOAD_PID" 2> /dev/null; do
    NOW=$(($(date +%s) - START))
    [ "$NOW" -gt $((DURATION + 180)) ] && { echo "soak: the load ran over its time"; exit 1; }
    alive || break
    R=$(rss) F=$(fds)
    echo "$NOW $R $F" >> "$WORK/samples.txt"
    [ "$R" -gt "$RSS_MAX" ] && RSS_MAX=$R
    [ "$F" -gt "$FDS_MAX" ] && FDS_MAX=$F
    if [ -z "$RSS_WARM" ] && [ "$NOW" -ge "$WARMUP" ]; then
        RSS_WARM=$R
        echo "soak: warm-up done at ${NOW}s: RSS $RSS_WARM KiB, $F fds"
    fi
    if [ $((NOW % 300)) -lt 5 ] && [ "$NOW" -ge 5 ]; then echo "soak: ${NOW}s: RSS $R KiB, $F fds"; fi
    sleep 5
done
wait "$LOAD_PID" || true
LOAD_PID=

FAIL=0
fail() { echo "soak: FAIL: $*"; FAIL=1; }
if ! alive; then
    fail "smtpsd is gone (crash)"; cat "$WORK/smtpsd.log"; exit 1
fi
grep -qi panic "$WORK/smtpsd.log" && fail "panic in the log: $(grep -i -m3 panic "$WORK/smtpsd.log")"
[ -n "$RSS_WARM" ] || RSS_WARM=$(rss)
FDS_END=$(settle_fds "$FDS_BASE")
sleep 2
RSS_END=$(rss)
RSS_LIMIT=$((RSS_WARM + RSS_WARM / 10))

get() { sed -n "s/^$1=//p" "$WORK/load.out" | head -1; }
echo "soak: load: $(tr '\n' ' ' < "$WORK/load.out" | sed 's/note[0-9]*=[^=]*\( \|$\)//g' | cut -c1-2000)"
MESSAGES=$(get ledger_acked)
ABUSIVE=$(get abusive_sessions)
SESSIONS=$(get sessions)
[ "$(get hung_threads)" = 0 ] || fail "$(get hung_threads) client threads hung"
[ "${MESSAGES:-0}" -gt 0 ] || fail "no message was delivered"
[ "$(get scan_bad)" = "" ] || fail "$(get scan_bad) partial or foreign files seen in new/ during the run"
for v in $(grep -o '^violation_[a-z_]*=[0-9]*' "$WORK/load.out" || true); do fail "abusive client saw a violation: $v"; done
# The clients' notes: what a failed or odd session saw (at most 20).
grep '^note[0-9]*=' "$WORK/load.out" | sed 's/^/soak: client /' || true
[ -s "$WORK/load.err" ] && { echo "soak: load stderr:"; tail -20 "$WORK/load.err"; fail "the load script failed"; }

echo "soak: ledger check:"
if ! python3 "$CLIENTS" --maildir "$WORK/mail" check "$WORK/ledger.jsonl" > "$WORK/check.out"; then
    fail "ledger check: $(sed -n 's/^violations=//p' "$WORK/check.out") violations"
fi
sed 's/^/    /' "$WORK/check.out" | head -40

[ "$FDS_END" -le "$FDS_BASE" ] || fail "descriptors: $FDS_END after the load, $FDS_BASE before"
[ "$RSS_END" -le "$RSS_LIMIT" ] || fail "RSS $RSS_END KiB after the load, over 110 % of the warm-up level $RSS_WARM KiB"

cat << EOF
soak: summary: duration ${DURATION}s; well-behaved sessions ${SESSIONS:-0}, messages acknowledged ${MESSAGES:-0}; abusive sessions ${ABUSIVE:-0}
soak: RSS start $RSS_START KiB, after warm-up $RSS_WARM KiB, max $RSS_MAX KiB, after the load $RSS_END KiB (limit $RSS_LIMIT KiB)
soak: descriptors before $FDS_BASE, max $FDS_MAX, after $FDS_END; crashes 0
EOF
kill -TERM "$DAEMON_PID"
for _ in $(seq 100); do alive || break; sleep 0.1; done
DAEMON_PID=
if [ "$FAIL" = 0 ]; then echo "soak: PASS"; else echo "soak: FAILED"; fi
exit "$FAIL"
