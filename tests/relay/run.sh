#!/usr/bin/env bash
# smtpsd as a relay front (--relay) before real MTAs, loopback only:
#   postfix.sh  Debian's Postfix (an isolated instance, XCLIENT from the front): client
#               identity and AUTH as Postfix sees them, the front's Received: line, Postfix's
#               RCPT verdicts, <LF>.<LF> smuggling, pipelining, 5 recipients, BDAT, a 50 MiB
#               message, 100 parallel clients, Postfix stopped and started under a sender.
#   exim.sh     Debian's Exim (exim4-daemon-heavy unpacked beside Postfix, never installed;
#               PROXY v2 from the front): client identity, Received: lines, byte-exact bodies.
# Clients (tests/relay/clients.py, Python smtplib and raw sockets) connect from 127.0.0.2 to .5
# to the front on 127.0.0.1; each claim prints one PASS/FAIL line, and a failing step prints
# the logs of its backend and front.
#
# Installs what it needs with apt-get (non-interactive; Postfix with "No configuration").
# Runs as root on Debian 12; every wait is bounded, each step under a deadline; about 40 s
# here once the packages are in (plus the smtpsd build). Exit status 0 only when every step
# passed (a skipped Exim step counts as passed, its SKIP line says why).
#   SMTPSD=path/to/smtpsd tests/relay/run.sh [--keep]   (default: cargo build -p smtpsd)
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/relay
KEEP=${1:-}
START=$(date +%s)

need=()
command -v postfix > /dev/null || need+=(postfix)
command -v openssl > /dev/null || need+=(openssl)
command -v python3 > /dev/null || need+=(python3)
command -v ss > /dev/null || need+=(iproute2)
if [ "${#need[@]}" -gt 0 ]; then
    echo "==> installing ${need[*]}"
    # "No configuration": no system Postfix instance is set up (nor started) by the package.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    timeout 300 apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi

if [ -z "${SMTPSD:-}" ]; then
    cargo build -q -p smtpsd
    SMTPSD="${CARGO_TARGET_DIR:-target}/debug/smtpsd"
fi
SMTPSD=$(realpath "$SMTPSD")
CLIENTS=$(realpath "$HERE/clients.py")

WORK=$(mktemp -d /tmp/smtpsd-relay.XXXXXX)
chmod 755 "$WORK"
cleanup() {
    # The steps clean up after themselves; this catches what a killed step left running.
    local pid
    [ -f "$WORK/postfix/main.cf" ] && timeout 30 postfix -c "$WORK/postfix" stop > /dev/null 2>&1 || true
    for pidfile in "$WORK"/*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        [ -n "$pid" ] && kill "$pid" 2> /dev/null || true
    done
    if [ "$KEEP" = --keep ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# A certificate for localhost/127.0.0.1 and a user for AUTH.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2> /dev/null
USER_NAME=alice USER_PASSWORD="relay secret 1"
echo "$USER_NAME:$(printf '%s\n' "$USER_PASSWORD" | "$SMTPSD" hash-password)" > "$WORK/users"
export WORK SMTPSD CLIENTS USER_NAME USER_PASSWORD
export CERT="$WORK/cert.pem" KEY="$WORK/key.pem" USERS="$WORK/users"

passed=0 failed=0 skipped=0
for step in postfix:200 exim:300; do
    name=${step%:*} limit=${step#*:}
    echo "==> $name backend"
    started=$(date +%s)
    timeout "$limit" bash "$HERE/$name.sh" 2>&1 | tee "$WORK/$name.out" && status=0 || status=$?
    [ "$status" = 124 ] && echo "FAIL: the $name step ran over its ${limit} s deadline"
    echo "==> $name backend: $(($(date +%s) - started)) s"
    skipped=$((skipped + $(grep -c '^SKIP:' "$WORK/$name.out" || true)))
    if [ "$status" = 0 ] && ! grep -q '^FAIL:' "$WORK/$name.out"; then
        passed=$((passed + 1))
    else
        echo "==> $name backend: FAILED"
        failed=$((failed + 1))
    fi
done
checks=$(cat "$WORK"/*.out | grep -c '^PASS:' || true)
bad=$(cat "$WORK"/*.out | grep -c '^FAIL:' || true)
echo "relay: $passed steps passed, $failed failed ($checks checks passed, $bad failed," \
    "$skipped skipped) in $(($(date +%s) - START)) s"
[ "$failed" = 0 ]
