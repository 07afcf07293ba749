#!/usr/bin/env bash
# Side-by-side benchmarks of smtpsd against the SMTPS listeners users would otherwise run, on
# loopback, on this machine, in one run: Postfix smtpd (implicit TLS and STARTTLS, mail
# discarded after its normal queue work), stunnel4 in front of Postfix's smtp-sink, and aiosmtpd
# with an SSL context. Writes BENCHMARKS.md (figures, smtpsd's ratio to each peer, the machine,
# the versions and the exact commands) and, with PROFILE=1, includes scripts/profile.sh's
# callgrind counts. The marked sections of other scripts (bench-relay.sh, bench-rtt.sh) are kept
# as they are (scripts/bench-report.py --keep-sections; tested by scripts/test_bench_report.py).
#
# Usage (as root, on Debian 12; needs network only to Debian's and PyPI's package registries):
#     scripts/bench-peers.sh
# Environment (defaults in brackets):
#     DURATION [6]      seconds per load run
#     RUNS [2]          rounds; each round runs every load against every peer in turn
#     IDLE_N [2000]     idle connections (smtpsd, stunnel, aiosmtpd)
#     POSTFIX_IDLE_N [200]  idle connections for Postfix (one smtpd process each)
#     PACED_RATE [200]  offered implicit-TLS sessions/s for the latency-at-fixed-load run
#     PROFILE [1]       also run scripts/profile.sh (callgrind) and include its figures
#     OUT [BENCHMARKS.md]   the report
#     WORK [/tmp/smtps-bench]  certificates, configurations, logs, the Maildir, raw results
#     CARGO_TARGET_DIR [target]
#
# Everything is bounded: each load run has a duration and a timeout; every peer started here
# is stopped on exit (trap), and /etc/postfix's own main.cf and master.cf are put back.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-6}
RUNS=${RUNS:-2}
IDLE_N=${IDLE_N:-2000}
POSTFIX_IDLE_N=${POSTFIX_IDLE_N:-200}
PACED_RATE=${PACED_RATE:-200}
PROFILE=${PROFILE:-1}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
WORK=${WORK:-/tmp/smtps-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
LOADGEN=$BIN/smtps-loadgen
VENV=/var/tmp/smtps-bench-venv
AIOSMTPD_VERSION=1.4.6

# Ports: unusual ones, checked free before use (SO_REUSEPORT would silently share a port with
# another smtpsd, e.g. a `smtpsd --dev` on 2465).
SMTPSD_IMPLICIT=31465 SMTPSD_STARTTLS=31587
SMTPSD1_IMPLICIT=31466
MAILDIR_IMPLICIT=31467
POSTFIX_IMPLICIT=32465 POSTFIX_STARTTLS=32587
STUNNEL_IMPLICIT=33465 SINK_PLAIN=33025
AIO_IMPLICIT=34465 AIO_STARTTLS=34587

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-peers: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs and starts Postfix)"

# --- installation (idempotent) -----------------------------------------------------------------
install_peers() {
    local missing=()
    for pkg in postfix stunnel4 python3-venv openssl procps iproute2 util-linux valgrind; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        echo "postfix postfix/mailname string mx.test" | debconf-set-selections
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
    if ! "$VENV/bin/python" -c "import aiosmtpd" 2>/dev/null; then
        log "installing aiosmtpd $AIOSMTPD_VERSION into $VENV"
        /usr/bin/python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q "aiosmtpd==$AIOSMTPD_VERSION"
    fi
    command -v cargo >/dev/null || die "cargo is needed to build smtpsd and smtps-loadgen"
}

# --- helpers -------------------------------------------------------------------------------------
port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
wait_port() {
    local i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on 127.0.0.1:$1 after 10 s (see $WORK/*.log)"
}
STARTED_PIDS=()
POSTFIX_STARTED=0
cleanup() {
    set +e
    for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    if [ "$POSTFIX_STARTED" = 1 ]; then postfix stop >/dev/null 2>&1; fi
    for f in main.cf master.cf; do
        if [ -e "/etc/postfix/$f.smtps-bench-orig" ]; then
            mv -f "/etc/postfix/$f.smtps-bench-orig" "/etc/postfix/$f"
        elif [ -e "/etc/postfix/$f.smtps-bench-none" ]; then
            rm -f "/etc/postfix/$f" "/etc/postfix/$f.smtps-bench-none"
        fi
    done
    sleep 0.5
    for pid in "${STARTED_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    rm -rf "$WORK/maildir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- certificate: ECDSA P-256, the same for every peer ------------------------------------------
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,DNS:mx.test,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -addext "keyUsage=critical,digitalSignature" \
        -addext "extendedKeyUsage=serverAuth" 2>/dev/null
    chmod 644 "$WORK/cert.pem" "$WORK/key.pem"
}

# --- peers ---------------------------------------------------------------------------------------
start_smtpsd() { # NAME WORKERS IMPLICIT_PORT STARTTLS_PORT|- DELIVERY...
    local name=$1 workers=$2 implicit=$3 starttls=$4
    shift 4
    local listen=(--listen "127.0.0.1:$implicit=implicit-tls")
    [ "$starttls" = - ] || listen+=(--listen "127.0.0.1:$starttls=starttls")
    "$BIN/smtpsd" "$@" "${listen[@]}" --cert "$WORK/cert.pem" --key "$WORK/key.pem" \
        --hostname mx.test --workers "$workers" --max-connections 50000 \
        --max-connections-per-ip 50000 --log-level warn --no-resumption 2>"$WORK/$name.log" &
    STARTED_PIDS+=($!)
    eval "PID_${name//-/_}=$!"
    wait_port "$implicit"
}

start_postfix() {
    for f in main.cf master.cf; do
        if [ ! -e "/etc/postfix/$f.smtps-bench-orig" ] && [ ! -e "/etc/postfix/$f.smtps-bench-none" ]; then
            if [ -e "/etc/postfix/$f" ]; then
                cp -p "/etc/postfix/$f" "/etc/postfix/$f.smtps-bench-orig"
            else
                touch "/etc/postfix/$f.smtps-bench-none"
            fi
        fi
    done
    cat >/etc/postfix/main.cf <<EOF
# Written by smtps scripts/bench-peers.sh; the original is put back when it ends.
compatibility_level = 3.6
myhostname = mx.test
mydomain = test
myorigin = \$myhostname
mydestination =
inet_interfaces = loopback-only
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
# TLS: the same ECDSA P-256 certificate, TLS 1.3 only, no session cache or tickets.
smtpd_tls_chain_files = $WORK/key.pem, $WORK/cert.pem
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.3
smtpd_tls_mandatory_protocols = >=TLSv1.3
smtpd_tls_session_cache_database =
smtpd_tls_session_cache_timeout = 0
smtpd_tls_loglevel = 0
smtpd_tls_received_header = no
EOF
    cat >/etc/postfix/master.cf <<EOF
# Written by smtps scripts/bench-peers.sh; the original is put back when it ends.
127.0.0.1:$POSTFIX_STARTTLS inet n - n - - smtpd
127.0.0.1:$POSTFIX_IMPLICIT inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
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
    postfix check >"$WORK/postfix.log" 2>&1 || { cat "$WORK/postfix.log" >&2; die "postfix check failed"; }
    postfix stop >/dev/null 2>&1 || true
    postfix start >>"$WORK/postfix.log" 2>&1 || { cat "$WORK/postfix.log" >&2; die "postfix start failed"; }
    POSTFIX_STARTED=1
    wait_port "$POSTFIX_IMPLICIT"
    wait_port "$POSTFIX_STARTTLS"
    PID_postfix=$(head -1 /var/spool/postfix/pid/master.pid | tr -d ' ')
}

start_stunnel_sink() {
    # smtp-sink: Postfix's single-process SMTP sink (advertises PIPELINING), plain on loopback.
    smtp-sink -u postfix -m 60000 "127.0.0.1:$SINK_PLAIN" 1024 >"$WORK/smtp-sink.log" 2>&1 &
    STARTED_PIDS+=($!)
    PID_sink=$!
    cat >"$WORK/stunnel.conf" <<EOF
foreground = yes
pid =
syslog = no
debug = 3
output = $WORK/stunnel.log
[smtps]
accept = 127.0.0.1:$STUNNEL_IMPLICIT
connect = 127.0.0.1:$SINK_PLAIN
cert = $WORK/cert.pem
key = $WORK/key.pem
sslVersionMin = TLSv1.3
options = NO_TICKET
sessionCacheSize = 1
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
EOF
    stunnel4 "$WORK/stunnel.conf" >>"$WORK/stunnel.log" 2>&1 &
    STARTED_PIDS+=($!)
    PID_stunnel=$!
    wait_port "$SINK_PLAIN"
    wait_port "$STUNNEL_IMPLICIT"
}

start_aiosmtpd() {
    cat >"$WORK/aiosmtpd_peer.py" <<'EOF'
"""aiosmtpd with an SSL context: implicit TLS on one port, STARTTLS on another; messages are
accepted and discarded (aiosmtpd.handlers.Sink). Runs until killed."""
import asyncio
import ssl
import sys

from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP

cert, key, implicit_port, starttls_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.minimum_version = ssl.TLSVersion.TLSv1_3
context.options |= ssl.OP_NO_TICKET
context.load_cert_chain(cert, key)


async def main():
    loop = asyncio.get_running_loop()
    implicit = await loop.create_server(
        lambda: SMTP(Sink(), hostname="mx.test"), "127.0.0.1", implicit_port, ssl=context,
        backlog=1024)
    starttls = await loop.create_server(
        lambda: SMTP(Sink(), hostname="mx.test", tls_context=context, require_starttls=False),
        "127.0.0.1", starttls_port, backlog=1024)
    async with implicit, starttls:
        await asyncio.gather(implicit.serve_forever(), starttls.serve_forever())


asyncio.run(main())
EOF
    "$VENV/bin/python" "$WORK/aiosmtpd_peer.py" "$WORK/cert.pem" "$WORK/key.pem" \
        "$AIO_IMPLICIT" "$AIO_STARTTLS" >"$WORK/aiosmtpd.log" 2>&1 &
    STARTED_PIDS+=($!)
    PID_aiosmtpd=$!
    wait_port "$AIO_IMPLICIT"
    wait_port "$AIO_STARTTLS"
}

stop_pid() { # PID: SIGTERM, wait (bounded), then SIGKILL
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

# A fresh process before the idle-memory run, so that memory its allocator kept from the
# earlier loads (or, for Postfix, smtpd processes still waiting for work) does not hide the
# cost of new connections.
restart_peer() {
    case $1 in
        smtpsd)
            stop_pid "$PID_smtpsd"
            start_smtpsd smtpsd 2 "$SMTPSD_IMPLICIT" "$SMTPSD_STARTTLS" --sink
            ;;
        postfix)
            postfix stop >/dev/null 2>&1 || true
            local i
            for i in $(seq 100); do kill -0 "$PID_postfix" 2>/dev/null || break; sleep 0.1; done
            start_postfix
            ;;
        stunnel)
            stop_pid "$PID_stunnel"
            stop_pid "$PID_sink"
            start_stunnel_sink
            ;;
        aiosmtpd)
            stop_pid "$PID_aiosmtpd"
            start_aiosmtpd
            ;;
    esac
}

# --- loads ---------------------------------------------------------------------------------------
RESULTS=$WORK/results.txt
COMMANDS=$WORK/commands.txt
run_load() { # PEER LOAD ROUND PIDS LOADGEN-ARGS...
    local peer=$1 load=$2 round=$3 pids=$4
    shift 4
    local args=("$@" --ca "$WORK/cert.pem" --pid "$pids")
    local line
    if [ "$round" = 1 ]; then
        echo "$peer $load: smtps-loadgen ${args[*]}" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
    fi
    line=$(timeout $((DURATION + 120)) "$LOADGEN" "${args[@]}" 2>>"$WORK/loadgen.log") || line="failed=1"
    echo "peer=$peer load=$load round=$round uptime_load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /) $line" | tee -a "$RESULTS" >&2
}

loads_for() { # PEER -> the loads it takes part in
    case $1 in
        smtpsd) echo "sess_implicit sess_aes256 sess_paced sess_starttls msg_2k msg_100k idle" ;;
        postfix) echo "sess_implicit sess_paced sess_starttls msg_2k msg_100k idle" ;;
        stunnel) echo "sess_implicit sess_paced msg_2k msg_100k idle" ;;
        aiosmtpd) echo "sess_implicit sess_paced sess_starttls msg_2k msg_100k idle" ;;
        smtpsd-maildir) echo "msg_2k" ;;
        smtpsd-1w) echo "sess_implicit msg_2k" ;;
    esac
}

run_peer_load() { # PEER LOAD ROUND
    local peer=$1 load=$2 round=$3 implicit starttls pids idle_n=$IDLE_N
    case $peer in
        smtpsd) implicit=$SMTPSD_IMPLICIT starttls=$SMTPSD_STARTTLS pids=$PID_smtpsd ;;
        smtpsd-1w) implicit=$SMTPSD1_IMPLICIT starttls=- pids=$PID_smtpsd_1w ;;
        smtpsd-maildir) implicit=$MAILDIR_IMPLICIT starttls=- pids=$PID_smtpsd_maildir ;;
        postfix) implicit=$POSTFIX_IMPLICIT starttls=$POSTFIX_STARTTLS pids=$PID_postfix idle_n=$POSTFIX_IDLE_N ;;
        stunnel) implicit=$STUNNEL_IMPLICIT starttls=- pids=$PID_stunnel,$PID_sink ;;
        aiosmtpd) implicit=$AIO_IMPLICIT starttls=$AIO_STARTTLS pids=$PID_aiosmtpd ;;
    esac
    local common=(--duration "$DURATION" --timeout 30 --label "$peer/$load")
    case $load in
        sess_implicit) run_load "$peer" "$load" "$round" "$pids" sessions --target "127.0.0.1:$implicit" --tls implicit --workers 32 "${common[@]}" ;;
        sess_aes256) run_load "$peer" "$load" "$round" "$pids" sessions --target "127.0.0.1:$implicit" --tls implicit --workers 32 --suites TLS13_AES_256_GCM_SHA384 "${common[@]}" ;;
        sess_paced) run_load "$peer" "$load" "$round" "$pids" sessions --target "127.0.0.1:$implicit" --tls implicit --workers 32 --rate "$PACED_RATE" "${common[@]}" ;;
        sess_starttls) run_load "$peer" "$load" "$round" "$pids" sessions --target "127.0.0.1:$starttls" --tls starttls --workers 32 "${common[@]}" ;;
        msg_2k) run_load "$peer" "$load" "$round" "$pids" messages --target "127.0.0.1:$implicit" --tls implicit --connections 16 --size 2048 "${common[@]}" --settle 1 ;;
        msg_100k) run_load "$peer" "$load" "$round" "$pids" messages --target "127.0.0.1:$implicit" --tls implicit --connections 16 --size 102400 "${common[@]}" --settle 1 ;;
        idle) restart_peer "$peer"
            sleep 1
            case $peer in
                smtpsd) pids=$PID_smtpsd ;;
                postfix) pids=$PID_postfix ;;
                stunnel) pids=$PID_stunnel,$PID_sink ;;
                aiosmtpd) pids=$PID_aiosmtpd ;;
            esac
            run_load "$peer" "$load" "$round" "$pids" idle --target "127.0.0.1:$implicit" --tls implicit --connections "$idle_n" --hold 2 --timeout 60 --label "$peer/$load" ;;
    esac
}

# scripts/bench-rtt.sh sources this file (BENCH_PEERS_SOURCED=1) for the installation, the
# certificate and the peers' start-up and clean-up: stop here.
if [ "${BENCH_PEERS_SOURCED:-0}" = 1 ]; then return 0; fi

# --- main ----------------------------------------------------------------------------------------
install_peers
log "building smtpsd and smtps-loadgen (release)"
cargo build --release -q -p smtpsd -p smtps-loadgen
mkdir -p "$WORK"
rm -f "$RESULTS" "$COMMANDS" "$WORK/loadgen.log"
for port in $SMTPSD_IMPLICIT $SMTPSD_STARTTLS $SMTPSD1_IMPLICIT $MAILDIR_IMPLICIT $POSTFIX_IMPLICIT \
    $POSTFIX_STARTTLS $STUNNEL_IMPLICIT $SINK_PLAIN $AIO_IMPLICIT $AIO_STARTTLS; do
    port_free "$port" || die "port $port is in use; stop what listens there first"
done
ulimit -n "$(ulimit -Hn)"
make_cert
rm -rf "$WORK/maildir"

log "starting the peers on loopback"
start_smtpsd smtpsd 2 "$SMTPSD_IMPLICIT" "$SMTPSD_STARTTLS" --sink
start_smtpsd smtpsd-1w 1 "$SMTPSD1_IMPLICIT" - --sink
start_smtpsd smtpsd-maildir 2 "$MAILDIR_IMPLICIT" - --maildir "$WORK/maildir"
start_postfix
start_stunnel_sink
start_aiosmtpd

PEERS="smtpsd postfix stunnel aiosmtpd smtpsd-maildir smtpsd-1w"
for round in $(seq "$RUNS"); do
    for load in sess_implicit sess_aes256 sess_paced sess_starttls msg_2k msg_100k idle; do
        # Alternate the order each round so that no peer always runs first.
        order=$PEERS
        [ $((round % 2)) = 0 ] && order=$(echo "$PEERS" | tr ' ' '\n' | tac | tr '\n' ' ')
        for peer in $order; do
            case " $(loads_for "$peer") " in *" $load "*) run_peer_load "$peer" "$load" "$round" ;; esac
        done
    done
done

log "stopping the peers"
cleanup
trap - EXIT

if [ "$PROFILE" = 1 ]; then
    log "profiling smtpsd under callgrind (scripts/profile.sh)"
    WORK=$WORK/profile CARGO_TARGET_DIR=$CARGO_TARGET_DIR scripts/profile.sh >"$WORK/profile.log" 2>&1 \
        || log "profile.sh failed: see $WORK/profile.log"
fi

log "writing $OUT"
{
    echo "machine_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "machine_cores=$(nproc)"
    echo "fd_hard=$(ulimit -Hn)"
    echo "machine_memory=$(free -h | awk '/^Mem:/ {print $2}')"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "postfix=$(postconf -h mail_version 2>/dev/null || postconf -d -h mail_version)"
    echo "stunnel=$(stunnel4 -version 2>&1 | grep -m1 '^stunnel [0-9]')"
    echo "openssl=$(openssl version)"
    echo "aiosmtpd=$("$VENV/bin/python" -c 'import aiosmtpd; print(aiosmtpd.__version__)') (Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'))"
    echo "rustc=$(rustc --version)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet -- crates || echo ' (with uncommitted changes in crates/)')"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "settings=DURATION=$DURATION RUNS=$RUNS IDLE_N=$IDLE_N POSTFIX_IDLE_N=$POSTFIX_IDLE_N PACED_RATE=$PACED_RATE"
    echo "paced_rate=$PACED_RATE"
} >"$WORK/meta.txt"
# Rendered beside OUT, then moved over it: the sections other scripts own (bench-relay.sh,
# bench-rtt.sh: <!-- bench-NAME: begin --> ... end -->) are carried over from the old OUT.
"$VENV/bin/python" scripts/bench-report.py --results "$RESULTS" --meta "$WORK/meta.txt" \
    --commands "$COMMANDS" --profile "$WORK/profile/profile.md" --notes scripts/bench-notes.md \
    --keep-sections "$OUT" >"$OUT.new"
mv -f "$OUT.new" "$OUT"
log "done: $OUT"
