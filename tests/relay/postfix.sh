#!/usr/bin/env bash
# Postfix behind the relay front. An isolated Postfix instance (config, queue, data and log
# under $WORK; the system's port 25 untouched) with one smtpd(8) on 127.0.0.1:<free port>:
#   smtpd_authorized_xclient_hosts = 127.0.0.1   the front names each client with XCLIENT
#   check_recipient_access inline:{reject@relay.test=REJECT ...}   a policy to pass through
#   relay_domains = relay.test, relay_transport = deliver   a pipe(8) that writes each message
#       to $WORK/pfmail/QUEUEID.PID.eml (LF line ends, no header added) and its recipients
#       beside it (.rcpt), so deliveries can be compared byte for byte.
# smtpsd --relay smtp://127.0.0.1:PORT+xclient --users ... (implicit TLS and STARTTLS on
# 127.0.0.1) is the front; clients connect from 127.0.0.2 to .5. Claims (PASS/FAIL each):
#   identity (implicit TLS, STARTTLS, AUTH), reject at RCPT, <LF>.<LF> smuggling, pipelining,
#   5 recipients, BDAT, a 50 MiB message, 100 parallel clients, the same (20 MiB, 10 clients)
#   with every core busy (a yes per core), and Postfix stopped for 3 s
#   while two senders loop (small messages; 4 MiB ones, cut mid-body by the stop): 4xx, never
#   a 250 that is lost, then Postfix started again and mail flows. Last, a second front
#   talks STARTTLS to a second smtpd of the same Postfix (+starttls, --relay-ca): the same
#   identity claims, a 20 MiB message and 10 parallel clients, and Postfix's log shows the TLS
#   session from the front.
# Needs run.sh's environment (WORK, SMTPSD, CERT, KEY, USERS, USER_NAME, USER_PASSWORD,
# CLIENTS). BIG_MIB (50) and PARALLEL (100) size the bulk step.
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/relay/common.sh
. "$HERE/common.sh"

PF="$WORK/postfix"
PFLOG="$WORK/postfix.log"
MAIL="$WORK/pfmail"
SENT="$WORK/pfsent"
SENDER_PIDS=()
YES_PIDS=()
mkdir -p "$PF" "$WORK/pfqueue" "$WORK/pfdata" "$MAIL" "$SENT"
chown postfix "$WORK/pfdata"
chown nobody "$MAIL"

LOGS_SHOWN=''
show_logs() {
    LOGS_SHOWN=1
    echo "---- postfix.log (last 80 lines) ----"
    tail -n 80 "$PFLOG" 2> /dev/null || true
    echo "---- postfix-front.log (last 80 lines) ----"
    tail -n 80 "$WORK/postfix-front.log" 2> /dev/null || true
}
cleanup() {
    local status=$?
    for pid in "${SENDER_PIDS[@]}" "${YES_PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
    stop_front
    timeout 30 postfix -c "$PF" stop > /dev/null 2>&1 || true
    if [ "$status" != 0 ] && [ -z "$LOGS_SHOWN" ]; then
        echo "postfix: stopped early (status $status)"
        show_logs
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# pipe(8) runs this as nobody: the message on standard input, then the file name and the
# recipients as arguments.
cat > "$WORK/pf-deliver.sh" << 'EOF'
#!/bin/sh
set -e
file=$1.$$
shift
cat > "$file.tmp"
printf '%s\n' "$@" > "$file.rcpt"
mv "$file.tmp" "$file.eml"
EOF
chmod 755 "$WORK/pf-deliver.sh"

# The TLS smtpd's certificate, signed by a CA of its own: the front verifies it as any WebPKI
# client does (a self-signed CA certificate serving as the server's own is refused).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/pf-ca.key" -out "$WORK/pf-ca.pem" -subj "/CN=relay test CA" 2> /dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$WORK/pf-tls.key" -out "$WORK/pf-tls.csr" 2> /dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' \
    > "$WORK/pf-tls.ext"
openssl x509 -req -in "$WORK/pf-tls.csr" -CA "$WORK/pf-ca.pem" -CAkey "$WORK/pf-ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/pf-tls.ext" -out "$WORK/pf-tls.pem" 2> /dev/null

REJECT_TEXT="refused by the relay test policy"
write_config() { # write_config PORT TLS_PORT
    cat > "$PF/main.cf" << CONF
compatibility_level = 3.6
queue_directory = $WORK/pfqueue
data_directory = $WORK/pfdata
maillog_file = $PFLOG
maillog_file_prefixes = $WORK
mail_owner = postfix
setgid_group = postdrop
myhostname = backend.relay.test
mydomain = backend.relay.test
myorigin = backend.relay.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
local_transport = error:no local delivery in this instance
default_transport = error:only relay.test is delivered
relay_domains = relay.test
relay_transport = deliver
smtpd_authorized_xclient_hosts = 127.0.0.1
smtpd_recipient_restrictions =
    check_recipient_access inline:{ { reject@relay.test = REJECT $REJECT_TEXT } },
    permit_mynetworks, reject_unauth_destination
smtpd_client_event_limit_exceptions = 127.0.0.0/8
message_size_limit = 104857600
smtputf8_enable = no
biff = no
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
CONF
    cat > "$PF/master.cf" << CONF
127.0.0.1:$1 inet n - n - 150 smtpd
127.0.0.1:$2 inet n - n - 20 smtpd -o smtpd_tls_security_level=may
    -o smtpd_tls_cert_file=$WORK/pf-tls.pem -o smtpd_tls_key_file=$WORK/pf-tls.key
    -o smtpd_tls_loglevel=1
pickup        unix  n - n 60   1 pickup
cleanup       unix  n - n -    0 cleanup
qmgr          unix  n - n 300  1 qmgr
rewrite       unix  - - n -    - trivial-rewrite
bounce        unix  - - n -    0 bounce
defer         unix  - - n -    0 bounce
trace         unix  - - n -    0 bounce
verify        unix  - - n -    1 verify
flush         unix  n - n 1000? 0 flush
proxymap      unix  - - n -    - proxymap
showq         unix  n - n -    - showq
error         unix  - - n -    - error
retry         unix  - - n -    - error
discard       unix  - - n -    - discard
anvil         unix  - - n -    1 anvil
tlsmgr        unix  - - n 1000? 1 tlsmgr
scache        unix  - - n -    1 scache
postlog       unix-dgram n - n - 1 postlogd
deliver       unix  - n n -    20 pipe user=nobody argv=$WORK/pf-deliver.sh $MAIL/\${queue_id} \${recipient}
CONF
}
start_postfix() {
    postfix -c "$PF" start > /dev/null 2>> "$WORK/postfix.stderr" || return 1
    wait_for 10 listening "$PORT"
}

# A free port, bound by Postfix a moment later: another process may take it in between, so a
# failed start is retried with a new one (3 times at most).
for attempt in 1 2 3; do
    read -r PORT TLS_PORT <<< "$(python3 "$CLIENTS" free-ports 2 | tr '\n' ' ')"
    write_config "$PORT" "$TLS_PORT"
    postfix -c "$PF" check
    start_postfix && break
    echo "postfix: did not listen on :$PORT (attempt $attempt)"
    timeout 30 postfix -c "$PF" stop > /dev/null 2>&1 || true
    [ "$attempt" = 3 ] && { cat "$WORK/postfix.stderr"; tail -20 "$PFLOG"; exit 1; }
done
echo "==> postfix $(postconf -d -h mail_version): smtpd on 127.0.0.1:$PORT" \
    "(XCLIENT for 127.0.0.1, smtpd_forbid_bare_newline=$(postconf -c "$PF" -h smtpd_forbid_bare_newline))"

start_front postfix "smtp://127.0.0.1:$PORT+xclient"
ARGS=(--implicit "$FRONT_IMPLICIT" --starttls "$FRONT_STARTTLS" --cafile "$CERT" --mail "$MAIL"
    --sent "$SENT" --backend postfix --log "$PFLOG" --tag "pf$$")

echo "==> identity: implicit TLS and STARTTLS from 127.0.0.2, with and without AUTH"
py identity "${ARGS[@]}" --user "$USER_NAME" --password "$USER_PASSWORD"

# The front's own log lines (docs/LOGGING.md): a message line naming Postfix's queue id, and a
# session line per client.
summary=$(grep -m1 -o 'event=message_summary queue_id=[0-9A-Za-z]* .*result=accepted code=250' \
    "$WORK/postfix-front.log" || true)
echo "  front log: ${summary:-no message_summary line}"
queue_id=$(sed -n 's/.*queue_id=\([0-9A-Za-z]*\) .*/\1/p' <<< "$summary")
[ -n "$queue_id" ] && grep -q "$queue_id: client=" "$PFLOG" && status=0 || status=1
check "$status" "the front's message_summary line names the queue id Postfix gave the message ($queue_id)"
grep -q 'event=session_summary client=127.0.0.2:[0-9]* .*messages=1 .*result=quit' \
    "$WORK/postfix-front.log" && status=0 || status=1
check "$status" "the front writes a session_summary line per client (client=127.0.0.2, messages=1, result=quit)"

echo "==> Postfix's recipient restriction through the front"
py reject "${ARGS[@]}" --reject-text "$REJECT_TEXT"

echo "==> smuggling: <LF>.<LF> and a pipelined transaction inside one body"
py smuggle "${ARGS[@]}" --direct "$PORT"

echo "==> pipelining, 5 recipients, BDAT, ${BIG_MIB:-50} MiB, ${PARALLEL:-100} parallel clients"
py bulk "${ARGS[@]}" --big-mib "${BIG_MIB:-50}" --parallel "${PARALLEL:-100}"

echo "==> every core busy (a yes per core): a 20 MiB message and 10 parallel clients"
for _ in $(seq "$(nproc)"); do
    yes > /dev/null &
    YES_PIDS+=("$!")
done
py bulk "${ARGS[@]}" --tag "pfbusy$$" --big-mib 20 --parallel 10
kill "${YES_PIDS[@]}" 2> /dev/null || true
YES_PIDS=()

echo "==> outage: Postfix stopped for 3 s while two senders loop through implicit TLS" \
    "(small messages, 3 a session; 4 MiB messages, one a session, often cut mid-body)"
for kind in small:0:3 big:4096:1; do
    IFS=: read -r name kib per <<< "$kind"
    python3 "$CLIENTS" outage-sender "${ARGS[@]}" --duration 9 --per-session "$per" \
        --body-kib "$kib" --name "$name" --ledger "$WORK/outage-$name.jsonl" \
        > "$WORK/outage-$name.out" 2>&1 &
    SENDER_PIDS+=("$!")
done
sleep 2
STOP_TIME=$(date +%s.%N)
postfix -c "$PF" stop > /dev/null 2>&1 && status=0 || status=$?
check "$status" "postfix -c \$PF stop while the senders loop (it returns once the master is gone)"
wait_for 5 eval '! listening "$PORT"' || fail "Postfix still listens 5 s after the stop"
STOPPED_TIME=$(date +%s.%N)
sleep 3
START_TIME=$(date +%s.%N)
# The port was free for 3 s: a test elsewhere on the machine may have taken it meanwhile, or
# the master may still be on its way out. Say why, and try twice more.
for attempt in 1 2 3; do
    start_postfix && status=0 && break || status=$?
    echo "  postfix did not start again (attempt $attempt): $(tail -3 "$WORK/postfix.stderr" | tr '\n' ' ')"
    ss -ltnp "sport = :$PORT" 2> /dev/null | tail -n +2 | sed 's/^/  holds the port: /'
    timeout 30 postfix -c "$PF" stop > /dev/null 2>&1 || true
    sleep 1
done
check "$status" "Postfix started again, listening on :$PORT"
for pid in "${SENDER_PIDS[@]}"; do
    for _ in $(seq 300); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2> /dev/null; then
        fail "an outage sender ran over its time (9 s + 30 s)"
        kill "$pid" 2> /dev/null || true
    fi
    wait "$pid" || fail "an outage sender failed: $(tail -5 "$WORK"/outage-*.out)"
done
SENDER_PIDS=()
cat "$WORK"/outage-*.out | sed 's/^/  /'
# Deliveries cut off by the stop are made again from the queue after the restart: wait (30 s
# at most) for Postfix's queue to empty before reading what was delivered.
queue_empty() { postqueue -c "$PF" -p 2> /dev/null | grep -q '^Mail queue is empty'; }
wait_for 30 queue_empty || fail "Postfix's queue is not empty 30 s after the restart"
py check-outage "${ARGS[@]}" --ledger "$WORK/outage-small.jsonl" --ledger "$WORK/outage-big.jsonl" \
    --stop-time "$STOP_TIME" --stopped-time "$STOPPED_TIME" --start-time "$START_TIME"
grep -m3 'smtps-relay.*session=' "$WORK/postfix-front.log" | sed 's/^/  front log: /' || true

if grep -qi panic "$WORK/postfix-front.log"; then fail "panic in the front's log"; fi
kill -0 "$FRONT_PID" 2> /dev/null || fail "the front is gone"
# Every client is gone: the front holds no backend connection (each session's ended with it,
# QUIT or a close mid-message) and no client socket.
front_backend_sockets() { ss -Htanp "( dport = :$PORT )" 2> /dev/null | grep -c "pid=$FRONT_PID," || true; }
wait_for 10 eval '[ "$(front_backend_sockets)" = 0 ]' && status=0 || status=1
check "$status" "after the clients left, the front holds no connection to Postfix ($(front_backend_sockets) left)"
# Only its listening sockets remain (one per listener and worker: SO_REUSEPORT).
open_sockets=$(ss -Htanp 2> /dev/null | grep "pid=$FRONT_PID," | grep -vc '^LISTEN' || true)
listening=$(ss -Htlnp 2> /dev/null | grep -c "pid=$FRONT_PID," || true)
[ "$open_sockets" = 0 ] && status=0 || status=1
check "$status" "after the clients left, the front holds no client or backend socket ($open_sockets; $listening listening)"
fds=$(find "/proc/$FRONT_PID/fd" -mindepth 1 2> /dev/null | wc -l)
echo "  front: $fds descriptors open, $(awk '/VmRSS/{print $2, $3}' "/proc/$FRONT_PID/status") resident"
stop_front

echo "==> STARTTLS to the backend: a second front, smtp://127.0.0.1:$TLS_PORT+xclient+starttls"
start_front postfix-tls "smtp://127.0.0.1:$TLS_PORT+xclient+starttls" --relay-ca "$WORK/pf-ca.pem"
TLS_ARGS=(--implicit "$FRONT_IMPLICIT" --starttls "$FRONT_STARTTLS" --cafile "$CERT" --mail "$MAIL"
    --sent "$SENT" --backend postfix --log "$PFLOG" --tag "pftls$$")
py identity "${TLS_ARGS[@]}" --user "$USER_NAME" --password "$USER_PASSWORD"
echo "==> over STARTTLS to the backend: pipelining, 5 recipients, BDAT, 20 MiB, 10 parallel clients"
py bulk "${TLS_ARGS[@]}" --big-mib 20 --parallel 10
tls_line=$(grep -m1 "TLS connection established from [^ ]*\[127.0.0.1\]" "$PFLOG" || true)
echo "  postfix log: ${tls_line#*]: }"
[ -n "$tls_line" ] && status=0 || status=1
check "$status" "Postfix's log shows the TLS session from the front (before XCLIENT named the client)"
if grep -qi panic "$WORK/postfix-tls-front.log"; then fail "panic in the TLS front's log"; fi
[ "$FAIL" = 0 ] || show_logs
exit "$FAIL"
