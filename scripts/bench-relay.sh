#!/usr/bin/env bash
# The relay front's benchmark (issue 13): what the whole chain costs the server side, per
# implicit-TLS session and per message over persistent TLS connections, on loopback, in one run:
#
#   (a) postfix  Postfix terminating TLS itself (implicit TLS, smtpd_tls_wrappermode=yes);
#   (b) relay    smtpsd --relay smtp://127.0.0.1:PLAIN+xclient in front of Postfix's plain
#                listener (smtpd_authorized_xclient_hosts=127.0.0.1, no TLS): TLS at smtpsd,
#                each transaction relayed in real time;
#   (c) nginx    Debian's nginx mail proxy (libnginx-mod-mail; `xclient on; smtp_auth none;`,
#                auth_http answered by a location of the same nginx, so no extra process) in
#                front of the same plain listener.
#
# Two more setups take the session loads and msg_2k_conn: (a') postfix-nt and (c') nginx-nt, the
# same as (a) and (c) but with OpenSSL's NumTickets = 0 (Postfix: an OpenSSL config file named by
# -o tls_config_file/tls_config_name on a second implicit-TLS service; nginx: a second mail server
# with `ssl_conf_command NumTickets 0`). With only the usual "tickets off" settings (Postfix's
# smtpd_tls_session_cache_timeout = 0, nginx's ssl_session_tickets off) OpenSSL still sends a TLS
# 1.3 NewSessionTicket after the handshake; NumTickets = 0 is what matches smtpsd --no-resumption,
# which sends none.
# One isolated Postfix instance serves all of them (config, queue and data under $WORK; `postfix -c`;
# nothing in /etc/postfix or /etc/nginx is read or written): the implicit-TLS service for (a) and
# the plain XCLIENT service for (b) and (c) share main.cf, so restrictions, queue work (every
# message is queued, fsync'd by cleanup, then discarded by discard(8)) and logging are the same.
# Server CPU = utime+stime (with reaped children's) summed over the process trees of every
# program in the chain, as smtps-loadgen --pid measures it: Postfix's master (smtpd, cleanup,
# qmgr, discard, ... are its children), smtpsd, nginx's master (its workers are children).
# Every TLS server uses the same ECDSA P-256 certificate, TLS 1.3 only, no session cache or
# tickets: every handshake is full. Loads, as scripts/bench-peers.sh runs them:
#   sess_implicit  sessions --tls implicit --workers 32 (connect, handshake, banner, EHLO, QUIT)
#   sess_paced     the same at a fixed offered rate (PACED_RATE/s): latency not bound by
#                  saturation (Little's law)
#   msg_2k         messages --connections 16 --size 2048 (MAIL+RCPT+DATA pipelined, persistent)
#   msg_100k       messages --connections 16 --size 102400
#   msg_2k_conn    messages --connections 16 --size 2048 --per-connection 1: one message per
#                  TLS connection (connect, handshake, EHLO, MAIL+RCPT+DATA, body, QUIT), as
#                  most submission clients send; the fronts open a backend connection for each
# Before each measured run: Postfix's queue is empty (bounded wait) and the 1-minute load average
# is below LOAD_MAX (bounded wait; what it was is recorded either way). Rounds rotate the order of
# the setups. The section "Relay front: ..." of $OUT is (re)written between its markers;
# a hand-written reading between the notes markers inside it is kept.
#
# Usage (as root, on Debian 12; needs network only to Debian's package registry):
#     scripts/bench-relay.sh
# Environment (defaults in brackets):
#     DURATION [6]          seconds per load run
#     ROUNDS [3]            rounds; each runs every load against every setup
#     PACED_RATE [200]      offered sessions/s for sess_paced
#     LOAD_MAX [0.5]        wait before each run until the 1-min load average is below this,
#     IDLE_MIN [0.95]       or the machine was this idle over the last IDLE_WINDOW [10] s
#                           (this script's own previous run keeps the average up for minutes)
#     LOAD_WAIT [900]       ... for at most this many seconds per run
#     LOAD_WAIT_TOTAL [3600]  ... and this many in all (then runs go ahead, load recorded)
#     LOADS [sess_implicit sess_paced msg_2k msg_100k msg_2k_conn]
#     WORKERS [2]           smtpsd --workers and nginx worker_processes (the machine's cores)
#     OUT [BENCHMARKS.md]   the report ('-' for standard output only)
#     WORK [/tmp/smtps-bench-relay]  certificate, configurations, queue, logs, raw results
#     PF_LOG [0]            1: Postfix logs to $WORK/postfix.log (postlogd); else to syslog,
#                           as in bench-peers.sh (no /dev/log here: dropped)
#     CARGO_TARGET_DIR [target]
# Everything is bounded: each load run has a duration and a timeout; every process started here
# is stopped on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-3}
PACED_RATE=${PACED_RATE:-200}
LOAD_MAX=${LOAD_MAX:-0.5}
LOAD_WAIT=${LOAD_WAIT:-900}
LOAD_WAIT_TOTAL=${LOAD_WAIT_TOTAL:-3600}
IDLE_MIN=${IDLE_MIN:-0.95}
IDLE_WINDOW=${IDLE_WINDOW:-10}
LOADS=${LOADS:-sess_implicit sess_paced msg_2k msg_100k msg_2k_conn}
WORKERS=${WORKERS:-2}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
WORK=${WORK:-/tmp/smtps-bench-relay}
PF_LOG=${PF_LOG:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SETUPS="postfix relay nginx postfix-nt nginx-nt"
# The loads the -nt setups take part in (where the TLS handshake is part of the operation).
NT_LOADS="sess_implicit sess_paced msg_2k_conn"

# Ports below the ephemeral range (32768-60999 here), checked free before use.
PF_TLS=24465 PF_PLAIN=24025 RELAY_TLS=24466 NGINX_TLS=24467 NGINX_AUTH=24080
PF_TLS_NT=24468 NGINX_TLS_NT=24469

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-relay: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs and starts Postfix and nginx)"

# --- installation (idempotent) -----------------------------------------------------------------
install_peers() {
    local missing=() pkg made_policy=0
    for pkg in postfix nginx libnginx-mod-mail openssl procps iproute2 python3; do
        dpkg -s "$pkg" > /dev/null 2>&1 || missing+=("$pkg")
    done
    [ "${#missing[@]}" = 0 ] && return 0
    log "installing ${missing[*]}"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string mx.test" | debconf-set-selections
    # The packages' own services (nginx on :80, the system Postfix) must not start.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" || {
        [ "$made_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
        die "apt-get install failed"
    }
    [ "$made_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
}

# --- helpers -------------------------------------------------------------------------------------
port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
wait_port() {
    local _
    for _ in $(seq 100); do
        if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 10 s (see $WORK/*.log)"
}
stop_pid() { # PID: SIGTERM, wait (bounded), then SIGKILL
    local pid=$1 _
    kill "$pid" 2> /dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2> /dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2> /dev/null || true
}
PID_postfix='' PID_relay='' PID_nginx=''
POSTFIX_STARTED=0
cleanup() {
    set +e
    [ -n "$PID_relay" ] && stop_pid "$PID_relay"
    # nginx: SIGTERM to the master is its fast shutdown (workers too).
    [ -n "$PID_nginx" ] && stop_pid "$PID_nginx"
    if [ "$POSTFIX_STARTED" = 1 ]; then
        timeout 30 postfix -c "$WORK/postfix" stop > /dev/null 2>&1
        [ -n "$PID_postfix" ] && stop_pid "$PID_postfix"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU ticks of each process tree (root and descendants, reaped children included), as
# smtps-loadgen's procfs.rs counts them: prints NAME=TICKS for each NAME=PID argument.
tree_ticks() {
    python3 - "$@" << 'PY'
import os, sys
procs = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        text = open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    f = text[text.rfind(")") + 2:].split()
    procs[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]))
children = {}
for pid, (ppid, _) in procs.items():
    children.setdefault(ppid, []).append(pid)
out = []
for arg in sys.argv[1:]:
    name, root = arg.split("=")
    total, stack, seen = 0, [int(root)], set()
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in procs:
            continue
        seen.add(pid)
        total += procs[pid][1]
        stack.extend(children.get(pid, []))
    out.append(f"{name}={total}")
print(",".join(out))
PY
}

# --- certificate: ECDSA P-256, the same for every TLS server -----------------------------------
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,DNS:mx.test,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -addext "keyUsage=critical,digitalSignature" \
        -addext "extendedKeyUsage=serverAuth" 2> /dev/null
    chmod 644 "$WORK/cert.pem" "$WORK/key.pem"
}

# --- Postfix: one isolated instance, an implicit-TLS service and a plain XCLIENT service -------
PF=$WORK/postfix
PFQ=$WORK/pfqueue
start_postfix() {
    rm -rf "$PF" "$PFQ" "$WORK/pfdata"
    mkdir -p "$PF" "$PFQ" "$WORK/pfdata"
    chown postfix "$WORK/pfdata"
    local NL=$'\n' logging="# Logging: syslog, as in bench-peers.sh."
    [ "$PF_LOG" = 1 ] && logging="maillog_file = $WORK/postfix.log${NL}maillog_file_prefixes = $WORK"
    cat > "$PF/main.cf" << EOF
# Written by smtps scripts/bench-relay.sh: an isolated instance (postfix -c $PF).
compatibility_level = 3.6
queue_directory = $PFQ
data_directory = $WORK/pfdata
$logging
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test
mydomain = test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
# Every message is queued (written and fsync'd by cleanup, as always), then discarded.
default_transport = discard:benchmark
relay_transport = discard:benchmark
local_transport = discard:benchmark
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtpd_banner = \$myhostname ESMTP
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 300
message_size_limit = 20971520
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
# TLS (the implicit-TLS service only): the same ECDSA P-256 certificate, TLS 1.3 only, no
# session cache or tickets.
smtpd_tls_chain_files = $WORK/key.pem, $WORK/cert.pem
smtpd_tls_security_level = none
smtpd_tls_protocols = >=TLSv1.3
smtpd_tls_mandatory_protocols = >=TLSv1.3
smtpd_tls_session_cache_database =
smtpd_tls_session_cache_timeout = 0
smtpd_tls_loglevel = 0
smtpd_tls_received_header = no
EOF
    cat > "$PF/master.cf" << EOF
# Written by smtps scripts/bench-relay.sh.
# (a) Postfix terminating TLS itself.
127.0.0.1:$PF_TLS inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
# (a') the same, with OpenSSL's NumTickets = 0: no TLS 1.3 session ticket at all.
127.0.0.1:$PF_TLS_NT inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o tls_config_file=$WORK/openssl-postfix-nt.cnf
  -o tls_config_name=postfix_nt
# (b) and (c): the plain listener behind a front that names clients with XCLIENT.
127.0.0.1:$PF_PLAIN inet n - n - - smtpd
  -o smtpd_authorized_xclient_hosts=127.0.0.1
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    cat > "$WORK/openssl-postfix-nt.cnf" << EOF
# OpenSSL settings for (a') only (tls_config_name = postfix_nt): no TLS 1.3 session tickets.
postfix_nt = postfix_nt_settings
[postfix_nt_settings]
ssl_conf = postfix_nt_ssl
[postfix_nt_ssl]
system_default = postfix_nt_tls
[postfix_nt_tls]
NumTickets = 0
EOF
    postfix -c "$PF" check > "$WORK/postfix-start.log" 2>&1 \
        || { cat "$WORK/postfix-start.log" >&2; die "postfix check failed"; }
    timeout 60 postfix -c "$PF" start >> "$WORK/postfix-start.log" 2>&1 \
        || { cat "$WORK/postfix-start.log" >&2; die "postfix start failed"; }
    POSTFIX_STARTED=1
    wait_port "$PF_TLS"
    wait_port "$PF_TLS_NT"
    wait_port "$PF_PLAIN"
    PID_postfix=$(head -1 "$PFQ/pid/master.pid" | tr -d ' ')
}
queue_count() {
    find "$PFQ/maildrop" "$PFQ/incoming" "$PFQ/active" "$PFQ/deferred" "$PFQ/hold" \
        -type f 2> /dev/null | wc -l
}
wait_queue_empty() { # bounded: 120 s
    local _
    for _ in $(seq 1200); do
        [ "$(queue_count)" = 0 ] && return 0
        sleep 0.1
    done
    log "Postfix's queue still holds $(queue_count) messages after 120 s"
}

# --- (b) smtpsd as the relay front -------------------------------------------------------------
start_relay() {
    "$BIN/smtpsd" --relay "smtp://127.0.0.1:$PF_PLAIN+xclient" \
        --listen "127.0.0.1:$RELAY_TLS=implicit-tls" --cert "$WORK/cert.pem" --key "$WORK/key.pem" \
        --hostname mx.test --workers "$WORKERS" --max-connections 50000 \
        --max-connections-per-ip 50000 --log-level warn --no-resumption 2> "$WORK/smtpsd.log" &
    PID_relay=$!
    wait_port "$RELAY_TLS"
}

# --- (c) nginx mail proxy --------------------------------------------------------------------
NG=$WORK/nginx
start_nginx() {
    local module='' m
    for m in /usr/lib/nginx/modules/ngx_mail_module.so /usr/share/nginx/modules/ngx_mail_module.so; do
        [ -e "$m" ] && { module=$m; break; }
    done
    [ -n "$module" ] || die "ngx_mail_module.so not found (package libnginx-mod-mail)"
    rm -rf "$NG"
    mkdir -p "$NG/tmp"
    cat > "$NG/nginx.conf" << EOF
# Written by smtps scripts/bench-relay.sh (nginx -p $NG/ -c $NG/nginx.conf).
load_module $module;
daemon off;
master_process on;
worker_processes $WORKERS;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events {
    worker_connections 8192;
}
# The mail proxy's auth_http endpoint, in the same nginx: every client is sent to Postfix's
# plain listener (no AUTH: smtp_auth none asks after RCPT, once per connection).
http {
    access_log off;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_AUTH;
        location = /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port $PF_PLAIN;
            return 204;
        }
    }
}
mail {
    server_name mx.test;
    auth_http 127.0.0.1:$NGINX_AUTH/auth;
    xclient on;
    smtp_auth none;
    # What Postfix's plain listener offers (PIPELINING, so the client pipelines as with (a), (b)).
    smtp_capabilities PIPELINING "SIZE 20971520" ENHANCEDSTATUSCODES 8BITMIME;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {
        listen 127.0.0.1:$NGINX_TLS ssl;
        protocol smtp;
    }
    # (c') the same, with OpenSSL's NumTickets = 0: no TLS 1.3 session ticket at all.
    server {
        listen 127.0.0.1:$NGINX_TLS_NT ssl;
        protocol smtp;
        ssl_conf_command NumTickets 0;
    }
}
EOF
    nginx -t -q -e "$NG/error.log" -p "$NG/" -c "$NG/nginx.conf" \
        || { cat "$NG/error.log" >&2; die "nginx -t failed"; }
    nginx -e "$NG/error.log" -p "$NG/" -c "$NG/nginx.conf" > "$NG/stdout.log" 2>&1 &
    PID_nginx=$!
    wait_port "$NGINX_TLS"
    wait_port "$NGINX_TLS_NT"
    wait_port "$NGINX_AUTH"
}

# --- loads ---------------------------------------------------------------------------------------
RESULTS=$WORK/results.txt
COMMANDS=$WORK/commands.txt
WAITED_TOTAL=0
idle_fraction() { # SECONDS: the share of CPU time the whole machine spent idle over that window
    local a b
    a=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    sleep "$1"
    b=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; printf "%.3f", (t > 0 ? (y[1] - x[1]) / t : 0) }'
}
# Quiet: the 1-min load average is below LOAD_MAX, or, since this script's own previous run
# keeps that average up for minutes after it ends (Postfix's 16 smtpd processes and its queue
# daemons are all runnable at once), the machine was at least IDLE_MIN idle over the last
# IDLE_WINDOW seconds, which nobody else's job can be while it runs. Bounded: LOAD_WAIT per
# run, LOAD_WAIT_TOTAL in all; then the run goes ahead with quiet=no. Sets QUIET, WAITED, IDLE.
wait_quiet() {
    local start=$SECONDS load
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        IDLE=-
        if awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }'; then
            QUIET=load
            break
        fi
        IDLE=$(idle_fraction "$IDLE_WINDOW")
        if awk -v i="$IDLE" -v m="$IDLE_MIN" 'BEGIN { exit !(i >= m) }'; then
            QUIET=idle
            break
        fi
        if [ $((SECONDS - start)) -ge "$LOAD_WAIT" ] \
            || [ $((WAITED_TOTAL + SECONDS - start)) -ge "$LOAD_WAIT_TOTAL" ]; then
            QUIET=no
            break
        fi
    done
    WAITED=$((SECONDS - start))
    WAITED_TOTAL=$((WAITED_TOTAL + WAITED))
}

setup_pids() { # SETUP -> the --pid list and the NAME=PID list for the split
    case $1 in
        postfix | postfix-nt) PIDS=$PID_postfix SPLIT="postfix=$PID_postfix" ;;
        relay) PIDS=$PID_relay,$PID_postfix SPLIT="smtpsd=$PID_relay postfix=$PID_postfix" ;;
        nginx | nginx-nt) PIDS=$PID_nginx,$PID_postfix SPLIT="nginx=$PID_nginx postfix=$PID_postfix" ;;
    esac
}
port_of() {
    case $1 in
        postfix) echo "$PF_TLS" ;;
        relay) echo "$RELAY_TLS" ;;
        nginx) echo "$NGINX_TLS" ;;
        postfix-nt) echo "$PF_TLS_NT" ;;
        nginx-nt) echo "$NGINX_TLS_NT" ;;
    esac
}
load_args() { # LOAD SETUP -> smtps-loadgen arguments (without --pid)
    local target=(--target "127.0.0.1:$(port_of "$2")" --tls implicit --ca "$WORK/cert.pem")
    local common=(--duration "$DURATION" --timeout 30 --label "$2/$1")
    case $1 in
        sess_implicit) echo sessions "${target[@]}" --workers 32 "${common[@]}" ;;
        sess_paced) echo sessions "${target[@]}" --workers 32 --rate "$PACED_RATE" "${common[@]}" ;;
        msg_2k) echo messages "${target[@]}" --connections 16 --size 2048 "${common[@]}" --settle 1 ;;
        msg_100k) echo messages "${target[@]}" --connections 16 --size 102400 "${common[@]}" --settle 1 ;;
        msg_2k_conn) echo messages "${target[@]}" --connections 16 --size 2048 --per-connection 1 \
            "${common[@]}" --settle 1 ;;
        *) die "unknown load $1" ;;
    esac
}

run_load() { # SETUP LOAD ROUND
    local setup=$1 load=$2 round=$3 args line before after queue_after loadavg
    setup_pids "$setup"
    # shellcheck disable=SC2207 # the arguments have no spaces
    args=($(load_args "$load" "$setup") --pid "$PIDS")
    if [ "$round" = 1 ]; then
        echo "$setup $load: smtps-loadgen ${args[*]}" | sed "s|$WORK|\$WORK|g" >> "$COMMANDS"
    fi
    wait_queue_empty
    wait_quiet
    loadavg=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)
    # shellcheck disable=SC2086 # SPLIT is a list of NAME=PID words
    before=$(tree_ticks $SPLIT)
    line=$(timeout $((DURATION + 120)) "$LOADGEN" "${args[@]}" 2>> "$WORK/loadgen.log") \
        || line="failed=1"
    # shellcheck disable=SC2086
    after=$(tree_ticks $SPLIT)
    queue_after=$(queue_count)
    echo "setup=$setup load=$load round=$round quiet=$QUIET idle=$IDLE waited_s=$WAITED" \
        "uptime_load=$loadavg queue_after=$queue_after ticks_before=$before ticks_after=$after" \
        "$line" | tee -a "$RESULTS" >&2
}

warm_up() { # not measured: processes started, caches warm, Postfix's smtpd pool in use
    local setup port
    for setup in $SETUPS; do
        port=$(port_of "$setup")
        "$LOADGEN" sessions --target "127.0.0.1:$port" --ca "$WORK/cert.pem" --workers 8 \
            --count 100 --timeout 30 > /dev/null 2>> "$WORK/loadgen.log" \
            || die "warm-up sessions against $setup failed (see $WORK/loadgen.log)"
        "$LOADGEN" messages --target "127.0.0.1:$port" --ca "$WORK/cert.pem" --connections 16 \
            --count 300 --timeout 30 > "$WORK/warmup-$setup.txt" 2>> "$WORK/loadgen.log" \
            || die "warm-up messages against $setup failed (see $WORK/loadgen.log)"
        grep -q ' errors=0 replies=0 ' "$WORK/warmup-$setup.txt" \
            || die "warm-up messages against $setup: $(cat "$WORK/warmup-$setup.txt")"
    done
    wait_queue_empty
}

# --- main ----------------------------------------------------------------------------------------
install_peers
log "building smtpsd and smtps-loadgen (release)"
cargo build --release -q -p smtpsd -p smtps-loadgen
mkdir -p "$WORK/bin"
# Copies: a rebuild by someone else during the run must not change what is measured.
cp -f "$CARGO_TARGET_DIR/release/smtpsd" "$CARGO_TARGET_DIR/release/smtps-loadgen" "$WORK/bin/"
# What was built (HEAD may move during the run).
COMMIT=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- Cargo.toml Cargo.lock crates/smtpsd crates/smtps-relay \
    crates/smtps-server crates/smtps-conn crates/smtps-proto crates/smtps-tls \
    crates/smtps-proxy crates/smtps-loadgen 2> /dev/null \
    || COMMIT="$COMMIT (with uncommitted changes in the crates smtpsd and smtps-loadgen are built from)"
BIN=$WORK/bin
LOADGEN=$BIN/smtps-loadgen
rm -f "$RESULTS" "$COMMANDS" "$WORK/loadgen.log"
for port in $PF_TLS $PF_TLS_NT $PF_PLAIN $RELAY_TLS $NGINX_TLS $NGINX_TLS_NT $NGINX_AUTH; do
    port_free "$port" || die "port $port is in use; stop what listens there first"
done
ulimit -n "$(ulimit -Hn)"
make_cert

log "starting Postfix (isolated), smtpsd --relay and nginx on loopback"
start_postfix
start_relay
start_nginx
log "warm-up (not measured)"
warm_up

for round in $(seq "$ROUNDS"); do
    for load in $LOADS; do
        # The setups of this load, their order rotated round by round: each runs first,
        # second, ... in turn.
        all=()
        for setup in $SETUPS; do
            case $setup in
                *-nt) case " $NT_LOADS " in *" $load "*) all+=("$setup") ;; esac ;;
                *) all+=("$setup") ;;
            esac
        done
        shift_by=$(((round - 1) % ${#all[@]}))
        order=("${all[@]:shift_by}" "${all[@]:0:shift_by}")
        for setup in "${order[@]}"; do
            run_load "$setup" "$load" "$round"
        done
    done
done

log "stopping the peers"
cleanup
PID_relay='' PID_nginx='' POSTFIX_STARTED=0

{
    echo "machine_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "machine_cores=$(nproc)"
    echo "machine_memory=$(free -h | awk '/^Mem:/ {print $2}')"
    echo "kernel=$(uname -r)"
    # shellcheck disable=SC1091
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "postfix=$(postconf -d -h mail_version)"
    echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //') (Debian $(dpkg-query -W -f '${Version}' libnginx-mod-mail) with libnginx-mod-mail)"
    echo "openssl=$(openssl version)"
    echo "rustc=$(rustc --version)"
    echo "commit=$COMMIT"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "settings=DURATION=$DURATION ROUNDS=$ROUNDS PACED_RATE=$PACED_RATE WORKERS=$WORKERS LOAD_MAX=$LOAD_MAX IDLE_MIN=$IDLE_MIN IDLE_WINDOW=$IDLE_WINDOW LOAD_WAIT=$LOAD_WAIT LOAD_WAIT_TOTAL=$LOAD_WAIT_TOTAL"
    echo "paced_rate=$PACED_RATE"
    echo "workers=$WORKERS"
    echo "load_max=$LOAD_MAX"
    echo "idle_min=$IDLE_MIN"
    echo "idle_window=$IDLE_WINDOW"
} > "$WORK/meta.txt"

log "writing the report"
python3 - "$RESULTS" "$WORK/meta.txt" "$COMMANDS" "$OUT" << 'PY'
"""Renders the section "Relay front: ..." from results.txt and splices it into OUT between its
markers (or before "## Profile", or at the end), keeping the hand-written notes between the
notes markers of the section already there."""
import os
import re
import statistics
import sys
from collections import defaultdict

results, meta_path, commands_path, out = sys.argv[1:5]
BEGIN, END = "<!-- bench-relay: begin -->", "<!-- bench-relay: end -->"
NOTES_BEGIN, NOTES_END = "<!-- bench-relay: notes begin -->", "<!-- bench-relay: notes end -->"
SETUPS = [
    ("postfix", "(a) Postfix, TLS itself"),
    ("relay", "(b) smtpsd --relay → Postfix"),
    ("nginx", "(c) nginx mail proxy → Postfix"),
    ("postfix-nt", "(a′) as (a), NumTickets 0"),
    ("nginx-nt", "(c′) as (c), NumTickets 0"),
]
LOADS = [
    ("sess_implicit", "implicit-TLS session, 32 concurrent, back to back ¹"),
    ("sess_paced", None),
    ("msg_2k", "2 KiB message, 16 persistent TLS connections"),
    ("msg_100k", "100 KiB message, 16 persistent TLS connections"),
    ("msg_2k_conn", "2 KiB message, one per TLS connection (handshake, EHLO, message, QUIT), 16 concurrent ³"),
]
meta = dict(l.rstrip("\n").split("=", 1) for l in open(meta_path, encoding="utf-8") if "=" in l)
runs = defaultdict(list)
for line in open(results, encoding="utf-8"):
    kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
    if "setup" in kv:
        runs[(kv["setup"], kv["load"])].append(kv)


def num(v):
    try:
        return float(v.rstrip("/s"))
    except (AttributeError, ValueError):
        return None


def values(setup, load, key):
    return [v for v in (num(r.get(key)) for r in runs.get((setup, load), [])) if v is not None]


def fmt(v):
    if v is None:
        return "–"
    if v == 0:
        return "0"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def med(vals):
    return statistics.median(vals) if vals else None


def cell(vals):
    if not vals:
        return "–"
    m = med(vals)
    if len(vals) < 2:
        return fmt(m)
    return f"{fmt(m)} ({fmt(min(vals))}–{fmt(max(vals))})"


def split_us(setup, load, name):
    """µs per operation of one component, from the script's own tree samples."""
    out = []
    for r in runs.get((setup, load), []):
        b = dict(p.split("=") for p in r.get("ticks_before", "").split(",") if "=" in p)
        a = dict(p.split("=") for p in r.get("ticks_after", "").split(",") if "=" in p)
        ops = num(r.get("sessions") or r.get("messages"))
        if name in a and name in b and ops:
            out.append((int(a[name]) - int(b[name])) * 1e6 / 100 / ops)
    return out


paced = meta.get("paced_rate", "200")
labels = dict(LOADS)
labels["sess_paced"] = f"implicit-TLS session at {paced}/s offered ²"
loads = [l for l, _ in LOADS if any(runs.get((s, l)) for s, _ in SETUPS)]
lines = []
w = lines.append
w(BEGIN)
w("## Relay front: smtpsd in front of Postfix vs Postfix TLS vs nginx mail proxy\n")
w("Generated by `scripts/bench-relay.sh` (issue 13); `scripts/bench-peers.sh` keeps this section "
  "as it is when it rewrites the rest of the file. All on loopback, in one run, "
  "the setups alternating:\n")
w("- **(a)** Postfix terminating TLS itself: a `smtpd` service with `-o smtpd_tls_wrappermode=yes`;")
w("- **(b)** `smtpsd --relay smtp://127.0.0.1:PORT+xclient --workers "
  f"{meta.get('workers', '2')} --no-resumption`: TLS at smtpsd, each transaction relayed as it "
  "happens to Postfix's plain listener (`-o smtpd_authorized_xclient_hosts=127.0.0.1`, no TLS);")
w(f"- **(c)** nginx's mail proxy (`worker_processes {meta.get('workers', '2')}`, `protocol smtp; "
  "xclient on; smtp_auth none;`, `ssl_session_cache off; ssl_session_tickets off;`, its "
  "`auth_http` answered by an `http` location of the same nginx) in front of the same plain "
  "listener;")
w("- **(a′)** and **(c′)**: (a) and (c) with OpenSSL's `NumTickets = 0` (Postfix: "
  "`-o tls_config_file=... -o tls_config_name=postfix_nt` naming an OpenSSL config section "
  "with `NumTickets = 0`; nginx: `ssl_conf_command NumTickets 0;`), for the loads where the "
  "handshake is part of the operation. With only the usual settings of (a) and (c) "
  "(`smtpd_tls_session_cache_timeout = 0`; `ssl_session_tickets off`) OpenSSL 3.0 still sends "
  "a TLS 1.3 NewSessionTicket after every handshake; `NumTickets = 0` is what matches "
  "`smtpsd --no-resumption`, which sends none. The client never resumes, so every handshake "
  "is full in all five.\n")
w("One isolated Postfix instance (`postfix -c`, its own queue) serves all five setups with one "
  "`main.cf`: same restrictions, every message queued (cleanup writes and fsyncs it) and then "
  "discarded by `discard(8)`, as in the main table above. Every TLS server has the same ECDSA "
  "P-256 certificate, TLS 1.3 only, no session cache or tickets (every handshake full); the "
  "client offers X25519 only. **Server CPU is the whole chain's**: utime+stime with reaped "
  "children, summed over the process trees of Postfix's master (smtpd, cleanup, qmgr, discard, "
  "trivial-rewrite, ...), smtpsd, and nginx's master (its workers), as `smtps-loadgen --pid` "
  "counts it, divided by the operations completed.\n")
w("### Server CPU per operation, whole chain (µs; median of the rounds, range in brackets)\n")
w("| load | " + " | ".join(n for _, n in SETUPS) + " | (b) ÷ (a) | (b) ÷ (c) | (b) ÷ (a′) | (b) ÷ (c′) |")
w("|---|" + "---|" * (len(SETUPS) + 4))
for load in loads:
    meds = {s: med(values(s, load, "server_cpu_us_per_op")) for s, _ in SETUPS}
    def ratio(x, y):
        return f"{x / y:.2f}×" if x and y else "–"
    w(f"| {labels[load]} | " + " | ".join(cell(values(s, load, "server_cpu_us_per_op")) for s, _ in SETUPS)
      + f" | {ratio(meds['relay'], meds['postfix'])} | {ratio(meds['relay'], meds['nginx'])}"
      + f" | {ratio(meds['relay'], meds['postfix-nt'])} | {ratio(meds['relay'], meds['nginx-nt'])} |")
w("")
w("¹ A session (connect, TLS handshake, banner, EHLO, QUIT) never reaches MAIL, so neither "
  "smtpsd's relay nor nginx (with `smtp_auth none` it asks `auth_http` and connects to the "
  "backend only after RCPT) opens a backend connection for it: in (b) and (c) the session "
  "figures are the front's own TLS and SMTP work (Postfix only idles). "
  "² The same sessions at a fixed offered rate, below every setup's saturation: its latency is "
  "the chain's own, not Little's law's (see below). "
  "³ `--per-connection 1`: each connection sends one message and QUITs, and a new one "
  "follows, so the figure is a whole submission: full handshake, EHLO, the transaction, QUIT; "
  "(b) and (c) open a backend connection (greeting, EHLO, XCLIENT, EHLO) for each, and nginx "
  "asks its `auth_http` location once for each.\n")
w("A ratio below 1× means (b) costs less CPU than that setup. Where the CPU goes, split by "
  "program (µs per operation, medians; the script samples each tree itself around the load "
  "generator's run, so the parts may differ from the totals above by a clock tick or two):\n")
w("| load | (a) Postfix | (b) smtpsd | (b) Postfix | (c) nginx | (c) Postfix | (a′) Postfix | (c′) nginx | (c′) Postfix |")
w("|---|---|---|---|---|---|---|---|---|")
for load in loads:
    cells = [split_us("postfix", load, "postfix"), split_us("relay", load, "smtpsd"),
             split_us("relay", load, "postfix"), split_us("nginx", load, "nginx"),
             split_us("nginx", load, "postfix"), split_us("postfix-nt", load, "postfix"),
             split_us("nginx-nt", load, "nginx"), split_us("nginx-nt", load, "postfix")]
    w(f"| {load} | " + " | ".join(fmt(med(c)) for c in cells) + " |")
w("")
w("### Client-visible latency and throughput (medians of the rounds)\n")
w("| load | setup | ops/s | p50 ms | p99 ms | max ms | TLS suite | errors |")
w("|---|---|---|---|---|---|---|---|")
for load in loads:
    for s, name in SETUPS:
        rs = runs.get((s, load), [])
        if not rs:
            continue
        errs = sorted({f"{r.get('errors')} / replies {r.get('replies')}" for r in rs
                       if r.get("errors", "0") != "0" or r.get("replies", "0") != "0"})
        suites = sorted({r.get("suite", "-") for r in rs})
        w(f"| {load} | {name} | {fmt(med(values(s, load, 'rate')))} | "
          f"{fmt(med(values(s, load, 'p50_ms')))} | {fmt(med(values(s, load, 'p99_ms')))} | "
          f"{fmt(med(values(s, load, 'max_ms')))} | {', '.join(suites)} | "
          f"{'; '.join(errs) if errs else '0'} |")
w("")
w("Session latency is connect to the reply to QUIT; message latency is MAIL (pipelined with "
  "RCPT and DATA) to the 250 after the final dot (from the connect for `msg_2k_conn`), which "
  "in (b) comes only after Postfix's own 250. The saturated runs share two cores between the chain and the load generator, so their "
  "latencies are bound by throughput; the paced run is the one to read for a session's own "
  "latency. The suites differ: OpenSSL (Postfix, nginx) follows the client's order "
  "(AES-256-GCM first); smtpsd prefers AES-128-GCM.\n")
w("### Machine, versions, conditions\n")
w("| | |")
w("|---|---|")
for key, label in [("machine_model", "CPU"), ("machine_cores", "cores"),
                   ("machine_memory", "memory"), ("kernel", "kernel"), ("os", "OS"),
                   ("postfix", "Postfix"), ("nginx", "nginx"), ("openssl", "OpenSSL"),
                   ("rustc", "rustc"), ("commit", "smtps commit (smtpsd)"),
                   ("date", "run at (UTC)"), ("settings", "settings")]:
    w(f"| {label} | {meta.get(key, '–')} |")
allruns = [r for rs in runs.values() for r in rs]
loads1 = [num(r.get("uptime_load", "").split("/")[0]) for r in allruns]
loads1 = [v for v in loads1 if v is not None]
unquiet = sum(1 for r in allruns if r.get("quiet") == "no")
by_idle = sum(1 for r in allruns if r.get("quiet") == "idle")
idles = [num(r.get("idle")) for r in allruns]
idles = [v for v in idles if v is not None]
waited = sum(int(r.get("waited_s", "0")) for r in allruns)
left = [int(r.get("queue_after", "0")) for r in allruns if r.get("load", "").startswith("msg")]
if loads1:
    w(f"| 1-min load average at each run's start | {min(loads1):.2f} – {max(loads1):.2f}: "
      f"{len(allruns) - by_idle - unquiet} of {len(allruns)} runs started with it below "
      f"{meta.get('load_max', '0.5')}, {by_idle} after the machine was at least "
      f"{float(meta.get('idle_min', '0.95')):.0%} idle for {meta.get('idle_window', '10')} s "
      f"(the average still held this script's previous run"
      + (f"; idle {min(idles):.1%}–{max(idles):.1%}" if idles else "")
      + f"), {unquiet} after the bounded wait ran out; {waited} s waited in all |")
if left:
    w(f"| Postfix queue files left when a message run's last CPU sample was taken | "
      f"max {max(left)}, median {statistics.median(left):g} (their queue work is then not "
      "counted in that run; the next run waits for an empty queue) |")
w("")
notes = ""
if os.path.exists(out):
    text = open(out, encoding="utf-8").read()
    m = re.search(re.escape(NOTES_BEGIN) + r"\n(.*?)" + re.escape(NOTES_END), text, re.S)
    if m:
        notes = m.group(1)
w("### Reading the figures\n")
w(NOTES_BEGIN)
w(notes.rstrip("\n") if notes.strip() else "(to be written against these figures)")
w(NOTES_END)
w("")
w("### Commands\n")
w(f"As root on Debian 12: `{meta.get('settings', '')} scripts/bench-relay.sh` "
  "(installs postfix, nginx and libnginx-mod-mail if missing, builds the release binaries, "
  "starts the isolated Postfix, smtpsd and nginx on loopback, runs the loads below round by "
  "round, stops everything and rewrites this section). The configurations are written by the "
  "script (`$WORK/postfix/main.cf`, `master.cf`, `$WORK/nginx/nginx.conf`). Each load run, "
  "with the process ids of round 1 (`--pid`: every program of the chain):\n")
w("```")
w("smtpsd --relay smtp://127.0.0.1:24025+xclient --listen 127.0.0.1:24466=implicit-tls "
  "--cert $WORK/cert.pem --key $WORK/key.pem --hostname mx.test --workers "
  f"{meta.get('workers', '2')} --max-connections 50000 --max-connections-per-ip 50000 "
  "--log-level warn --no-resumption")
w("nginx -e $WORK/nginx/error.log -p $WORK/nginx/ -c $WORK/nginx/nginx.conf")
w("postfix -c $WORK/postfix start")
for line in open(commands_path, encoding="utf-8"):
    w(line.rstrip("\n"))
w("```")
w(END)
section = "\n".join(lines) + "\n"

if out == "-":
    sys.stdout.write(section)
    sys.exit(0)
text = open(out, encoding="utf-8").read() if os.path.exists(out) else ""
if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1].lstrip("\n")
    text = head + section + ("\n" + tail if tail else "")
elif "\n## Profile" in text:
    head, tail = text.split("\n## Profile", 1)
    text = head.rstrip("\n") + "\n\n" + section + "\n## Profile" + tail
else:
    text = text.rstrip("\n") + ("\n\n" if text else "") + section
open(out, "w", encoding="utf-8").write(text)
print(f"wrote the relay section into {out}", file=sys.stderr)
PY
log "done (raw results: $RESULTS)"
