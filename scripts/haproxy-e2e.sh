#!/usr/bin/env bash
# Scale-out behind a real HAProxy (TCP mode, TLS passed through, `send-proxy-v2`): two smtpsd
# nodes with `+proxy` listeners (implicit TLS and STARTTLS-required), `--proxy-trusted
# 127.0.0.1`, a shared `--ticket-keys` file and `--max-connections-per-ip 2`; HAProxy balances
# round robin with `check check-send-proxy` health checks. Loopback only: HAProxy and the
# nodes listen on 127.0.0.1, clients connect from 127.0.0.2 and 127.0.0.3 (or 127.0.0.1 for
# openssl s_client), and every connection reaches a node from HAProxy's 127.0.0.1.
#
# Claims, one PASS/FAIL line each (exit 1 if any fails; the logs of HAProxy and both nodes are
# printed then):
#   - the health checks see both nodes UP, and the nodes read their PROXY v2 LOCAL headers
#     (no connection is closed for a bad, missing or untrusted header in the whole run);
#   - round robin: smtplib sends through each front (SMTP_SSL; SMTP + starttls()) from
#     127.0.0.2 and 127.0.0.3, both nodes store messages, each message is stored exactly once,
#     and its Received: header names the real client (the one that sent it), never 127.0.0.1;
#   - the per-address limit counts the real client: 127.0.0.2 gets 421 after 4 held
#     connections (2 per node, 2 nodes), while 127.0.0.3 still gets 220;
#   - a TLS session begun on one node resumes on the other (shared ticket keys), TLS 1.3
#     and 1.2 (openssl s_client -sess_out, then -sess_in; the banners name the two nodes);
#   - failover: node2 is killed (-9) while a sender loops through the implicit front; every
#     message acknowledged with 250 is stored (exactly once), and acknowledgements go on after
#     the kill, all from node1; HAProxy marks node2 DOWN.
# Needs haproxy (apt-get installs it when missing), python3 and openssl; builds smtpsd with
# cargo unless SMTPSD names a binary. Every wait is bounded; the run takes about 30 s.
#
#   scripts/haproxy-e2e.sh [--keep]     (--keep: leave the work directory for a look)
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=${1:-}
CLIENTS=scripts/haproxy/clients.py
if ! command -v haproxy > /dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    timeout 300 apt-get install -y -qq --no-install-recommends haproxy > /dev/null
fi
if [ -z "${SMTPSD:-}" ]; then
    cargo build -q -p smtpsd
    SMTPSD="${CARGO_TARGET_DIR:-target}/debug/smtpsd"
fi

WORK=$(mktemp -d /tmp/smtpsd-haproxy.XXXXXX)
HAPROXY_PID='' NODE1_PID='' NODE2_PID='' SENDER_PID=''
FAIL=0
show_logs() {
    for log in haproxy node1 node2; do
        echo "---- $log.log (last 150 lines) ----"
        tail -n 150 "$WORK/$log.log" 2> /dev/null || true
    done
}
cleanup() {
    local status=$?
    for pid in "$SENDER_PID" "$HAPROXY_PID" "$NODE1_PID" "$NODE2_PID"; do
        [ -n "$pid" ] && kill "$pid" 2> /dev/null || true
    done
    for pid in "$SENDER_PID" "$HAPROXY_PID" "$NODE1_PID" "$NODE2_PID"; do
        for _ in $(seq 30); do
            [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null || break
            sleep 0.1
        done
        [ -n "$pid" ] && kill -9 "$pid" 2> /dev/null || true
    done
    if [ "$status" != 0 ] && [ "$FAIL" = 0 ]; then
        echo "haproxy-e2e: stopped early (status $status)"
        show_logs
    fi
    if [ "$KEEP" = --keep ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAIL=1; }
check() { # check STATUS TEXT...
    local status=$1
    shift
    if [ "$status" = 0 ]; then pass "$*"; else fail "$*"; fi
}
START=$(date +%s)

# --- 1. certificate and shared ticket keys -----------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2> /dev/null
{ "$SMTPSD" gen-ticket-key; "$SMTPSD" gen-ticket-key; } > "$WORK/ticket-keys"
chmod 600 "$WORK/ticket-keys"

# --- 2. two nodes ------------------------------------------------------------------------------
start_node() { # start_node N: sets NODEn_PID, NODEn_IMPLICIT, NODEn_STARTTLS
    local n=$1 pid ports implicit starttls
    "$SMTPSD" --listen 127.0.0.1:0=implicit-tls+proxy --listen 127.0.0.1:0=starttls-required+proxy \
        --proxy-trusted 127.0.0.1 --cert "$WORK/cert.pem" --key "$WORK/key.pem" \
        --maildir "$WORK/node$n" --hostname "node$n.test" --ticket-keys "$WORK/ticket-keys" \
        --max-connections-per-ip 2 2> "$WORK/node$n.log" &
    pid=$!
    for _ in $(seq 100); do
        [ "$(grep -c 'listening on' "$WORK/node$n.log")" -ge 2 ] && break
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    # One line per --listen, in order: implicit TLS first.
    ports=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/node$n.log" | tr '\n' ' ')
    read -r implicit starttls _ <<< "$ports"
    eval "NODE${n}_PID=$pid NODE${n}_IMPLICIT=${implicit:-} NODE${n}_STARTTLS=${starttls:-}"
    [ -n "${starttls:-}" ] || { echo "haproxy-e2e: node$n did not start"; cat "$WORK/node$n.log"; exit 1; }
}
start_node 1
start_node 2
echo "==> node1 (pid $NODE1_PID): implicit TLS :$NODE1_IMPLICIT, STARTTLS :$NODE1_STARTTLS;" \
    "node2 (pid $NODE2_PID): implicit TLS :$NODE2_IMPLICIT, STARTTLS :$NODE2_STARTTLS"

# --- 3. HAProxy --------------------------------------------------------------------------------
write_config() { # write_config FRONT_IMPLICIT FRONT_STARTTLS
    cat > "$WORK/haproxy.cfg" << EOF
global
    log stderr format raw local0 info
    stats socket $WORK/haproxy.sock mode 600 level admin
    maxconn 500

defaults
    mode tcp
    log global
    option tcplog
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s

frontend smtps_implicit
    bind 127.0.0.1:$1
    default_backend nodes_implicit

frontend smtps_starttls
    bind 127.0.0.1:$2
    default_backend nodes_starttls

backend nodes_implicit
    balance roundrobin
    source 127.0.0.1
    server node1 127.0.0.1:$NODE1_IMPLICIT send-proxy-v2 check check-send-proxy inter 300ms fall 2 rise 2
    server node2 127.0.0.1:$NODE2_IMPLICIT send-proxy-v2 check check-send-proxy inter 300ms fall 2 rise 2

backend nodes_starttls
    balance roundrobin
    source 127.0.0.1
    server node1 127.0.0.1:$NODE1_STARTTLS send-proxy-v2 check check-send-proxy inter 300ms fall 2 rise 2
    server node2 127.0.0.1:$NODE2_STARTTLS send-proxy-v2 check check-send-proxy inter 300ms fall 2 rise 2
EOF
}
listening() { [ -n "$(ss -ltnH "( sport = :$1 )" 2> /dev/null)" ]; }
# Free ports are picked, then bound by HAProxy: another process may take one in between, so
# a failed start is retried with new ports (3 times at most).
for attempt in 1 2 3; do
    read -r FRONT_IMPLICIT FRONT_STARTTLS <<< "$(python3 "$CLIENTS" free-ports 2)"
    write_config "$FRONT_IMPLICIT" "$FRONT_STARTTLS"
    haproxy -c -q -f "$WORK/haproxy.cfg" || { cat "$WORK/haproxy.cfg"; exit 1; }
    haproxy -f "$WORK/haproxy.cfg" -db >> "$WORK/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    for _ in $(seq 50); do
        kill -0 "$HAPROXY_PID" 2> /dev/null || break
        listening "$FRONT_IMPLICIT" && listening "$FRONT_STARTTLS" && [ -S "$WORK/haproxy.sock" ] && break
        sleep 0.1
    done
    if kill -0 "$HAPROXY_PID" 2> /dev/null && listening "$FRONT_IMPLICIT" && listening "$FRONT_STARTTLS"; then
        break
    fi
    echo "haproxy-e2e: HAProxy did not start (attempt $attempt)"
    kill "$HAPROXY_PID" 2> /dev/null || true
    wait "$HAPROXY_PID" 2> /dev/null || true
    HAPROXY_PID=
    [ "$attempt" = 3 ] && { cat "$WORK/haproxy.log"; exit 1; }
done
echo "==> haproxy (pid $HAPROXY_PID): implicit TLS front :$FRONT_IMPLICIT, STARTTLS front :$FRONT_STARTTLS"
python3 "$CLIENTS" wait-up "$WORK/haproxy.sock" 10 && status=0 || status=$?
check "$status" "HAProxy's health checks (check-send-proxy, TCP connect) see both nodes UP"

# --- 4. round robin and Received: --------------------------------------------------------------
echo "==> round robin: 10 messages through each front, from 127.0.0.2 and 127.0.0.3 in turn"
python3 "$CLIENTS" roundrobin --implicit "$FRONT_IMPLICIT" --starttls "$FRONT_STARTTLS" \
    --cafile "$WORK/cert.pem" --count 10 --ledger "$WORK/roundrobin.jsonl" | sed 's/^/  /'
python3 "$CLIENTS" check-roundrobin "$WORK/roundrobin.jsonl" "$WORK/node1" "$WORK/node2" \
    > "$WORK/roundrobin.out" && status=0 || status=$?
grep -v '^PASS\|^FAIL' "$WORK/roundrobin.out" | sed 's/^/  /' || true
grep '^PASS\|^FAIL' "$WORK/roundrobin.out" || true
[ "$status" = 0 ] || FAIL=1

# --- 5. the per-address limit counts the real client --------------------------------------------
echo "==> per-address limit (2 per node): connections from 127.0.0.2 held through the STARTTLS front"
python3 "$CLIENTS" hold --port "$FRONT_STARTTLS" --attempts 8 --expect 4 > "$WORK/hold.out" \
    && status=0 || status=$?
grep -v '^PASS\|^FAIL' "$WORK/hold.out" || true
grep '^PASS\|^FAIL' "$WORK/hold.out" || true
[ "$status" = 0 ] || FAIL=1

# --- 6. TLS session resumption across nodes ----------------------------------------------------
s_client() { # s_client OUT ARGS...: banner, session ticket, QUIT through the implicit front
    local output=$1
    shift
    (sleep 1; printf 'QUIT\r\n'; sleep 0.5) | timeout 15 openssl s_client \
        -connect "127.0.0.1:$FRONT_IMPLICIT" -CAfile "$WORK/cert.pem" -servername localhost \
        -ign_eof "$@" > "$output" 2>&1 || true
}
node_of() { grep -o -m1 '^220 node[12]\.test' "$1" | cut -c5- || true; }
session_of() { grep -o -m1 -E '^(New|Reused), TLSv1\.[23]' "$1" || echo "no handshake"; }
for version in tls1_3 tls1_2; do
    extra=()
    [ "$version" = tls1_2 ] && extra=(-tls1_2)
    first='' second=''
    # Round robin alternates, so the second connection lands on the other node; a health
    # check cannot shift it, but retry (4 times at most) rather than prove nothing.
    for _ in 1 2 3 4; do
        rm -f "$WORK/session-$version.pem"
        s_client "$WORK/first-$version.out" -sess_out "$WORK/session-$version.pem" "${extra[@]}"
        s_client "$WORK/second-$version.out" -sess_in "$WORK/session-$version.pem" "${extra[@]}"
        first=$(node_of "$WORK/first-$version.out") second=$(node_of "$WORK/second-$version.out")
        [ -n "$first" ] && [ -n "$second" ] && [ "$first" != "$second" ] && break
    done
    want=TLSv1.3
    [ "$version" = tls1_2 ] && want=TLSv1.2
    echo "  $version: first: ${first:-no banner}, $(session_of "$WORK/first-$version.out");" \
        "second: ${second:-no banner}, $(session_of "$WORK/second-$version.out")"
    if [ -n "$first" ] && [ -n "$second" ] && [ "$first" != "$second" ] \
        && [ "$(session_of "$WORK/first-$version.out")" = "New, $want" ] \
        && [ "$(session_of "$WORK/second-$version.out")" = "Reused, $want" ]; then
        pass "$want session begun on $first resumed on $second (shared ticket keys)"
    else
        fail "$want session begun on ${first:-?} not resumed on the other node (${second:-?})"
        sed 's/^/    /' "$WORK/second-$version.out" | tail -30
    fi
done

# --- 7. failover -------------------------------------------------------------------------------
echo "==> failover: a sender loops for 8 s through the implicit front (4 messages a session);" \
    "node2 is killed after 2 s, in one of its sessions"
python3 "$CLIENTS" failover --port "$FRONT_IMPLICIT" --cafile "$WORK/cert.pem" --duration 8 \
    --per-session 4 --status "$WORK/sender-status" --ledger "$WORK/failover.jsonl" \
    > "$WORK/failover.out" 2>&1 &
SENDER_PID=$!
sleep 2
# Kill while the sender is in a session on node2 (waiting 2 s at most for one to begin).
for _ in $(seq 200); do
    [ "$(cat "$WORK/sender-status" 2> /dev/null)" = node2.test ] && break
    sleep 0.01
done
IN_SESSION=$(cat "$WORK/sender-status" 2> /dev/null || echo -)
disown "$NODE2_PID" # no "Killed" job report
kill -9 "$NODE2_PID"
for _ in $(seq 100); do
    kill -0 "$NODE2_PID" 2> /dev/null || break
    sleep 0.01
done
kill -0 "$NODE2_PID" 2> /dev/null && fail "node2 still runs 1 s after kill -9"
NODE2_PID=
# Taken once node2 is reaped: a session begun later can only be served by node1.
KILL_TIME=$(date +%s.%N)
echo "  node2 killed at $KILL_TIME (sender's session then: $IN_SESSION)"
for _ in $(seq 100); do
    python3 "$CLIENTS" haproxy-servers "$WORK/haproxy.sock" > "$WORK/servers.out" 2> /dev/null || true
    grep -q 'nodes_implicit/node2 DOWN' "$WORK/servers.out" && break
    sleep 0.1
done
cat "$WORK/servers.out"
grep -q 'nodes_implicit/node2 DOWN' "$WORK/servers.out" && grep -q 'nodes_implicit/node1 UP' "$WORK/servers.out" \
    && status=0 || status=1
check "$status" "HAProxy marked node2 DOWN within 10 s of the kill, node1 stayed UP"
for _ in $(seq 300); do
    kill -0 "$SENDER_PID" 2> /dev/null || break
    sleep 0.1
done
if kill -0 "$SENDER_PID" 2> /dev/null; then
    fail "the failover sender ran over its time (8 s + 30 s)"
    kill "$SENDER_PID" 2> /dev/null || true
fi
wait "$SENDER_PID" && status=0 || status=$?
SENDER_PID=
[ "$status" = 0 ] || fail "the failover sender failed: $(tail -5 "$WORK/failover.out")"
python3 "$CLIENTS" check-failover "$WORK/failover.jsonl" "$WORK/node1" "$WORK/node2" "$KILL_TIME" \
    > "$WORK/check-failover.out" && status=0 || status=$?
grep -v '^PASS\|^FAIL' "$WORK/check-failover.out" | sed 's/^/  /' || true
grep '^PASS\|^FAIL' "$WORK/check-failover.out" || true
[ "$status" = 0 ] || FAIL=1

# Every connection from HAProxy (sessions and health checks) carried a PROXY v2 header the
# nodes accepted: the checks as LOCAL, none closed for a bad or missing header.
CHECKS1=$(grep -c 'event=proxy .*version=V2 command=Local' "$WORK/node1.log" || true)
CHECKS2=$(grep -c 'event=proxy .*version=V2 command=Local' "$WORK/node2.log" || true)
REFUSED=$(cat "$WORK/node1.log" "$WORK/node2.log" | grep -c 'reason=proxy_header\|not a trusted PROXY' || true)
[ "$CHECKS1" -gt 0 ] && [ "$CHECKS2" -gt 0 ] && [ "$REFUSED" = 0 ] && status=0 || status=1
check "$status" "health checks arrived with a PROXY v2 LOCAL header (node1 logged $CHECKS1, node2 $CHECKS2)," \
    "and no connection was closed for a bad, missing or untrusted header ($REFUSED)"
if grep -qi panic "$WORK/node1.log" "$WORK/node2.log"; then fail "panic in a node's log"; fi
kill -0 "$NODE1_PID" 2> /dev/null || fail "node1 is gone"
kill -0 "$HAPROXY_PID" 2> /dev/null || fail "haproxy is gone"
echo "haproxy-e2e: $(($(date +%s) - START)) s"
if [ "$FAIL" = 0 ]; then
    echo "haproxy-e2e: PASS"
else
    show_logs
    echo "haproxy-e2e: FAILED"
fi
exit "$FAIL"
