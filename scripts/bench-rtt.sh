#!/usr/bin/env bash
# Latency in round trips (issue 16): the client-visible time from connect() to the banner, to
# the reply to the first EHLO, to the 250 after a message's final dot and to the reply to QUIT,
# for smtpsd and every peer of scripts/bench-peers.sh (Postfix, stunnel + smtp-sink, aiosmtpd),
# over implicit TLS and STARTTLS, in one run, through `smtps-loadgen delay-proxy` (a fixed
# one-way delay each way: this kernel has no netem), measured by `smtps-loadgen rtt` (one
# session at a time). Writes the section between `<!-- bench-rtt: begin -->` and
# `<!-- bench-rtt: end -->` of BENCHMARKS.md (the rest of the file is kept) with the machine,
# the versions, the commit, the commands, the table, the expected flights and the proxy's log of
# one session per setup.
#
# Usage (as root, on Debian 12; network only for Debian's and PyPI's package registries):
#     scripts/bench-rtt.sh
# Environment (defaults in brackets):
#     DELAY_MS [10]     one-way delay of the proxy (a round trip is 2 x DELAY_MS)
#     SESSIONS [5]      timed sessions per setup and round (after one warm-up session)
#     ROUNDS [3]        rounds; each round runs every setup once, the order alternating
#     OUT [BENCHMARKS.md]   the report ('-': print the section only)
#     WORK [/tmp/smtps-bench-rtt]  certificate, configurations, logs, raw results
#     CARGO_TARGET_DIR [target]
#
# The peers are installed, configured and started by the functions of scripts/bench-peers.sh
# (sourced), on ports of their own; everything started here is stopped on exit and
# /etc/postfix's own main.cf and master.cf are put back (bench-peers.sh's cleanup trap).
set -euo pipefail
cd "$(dirname "$0")/.."
DELAY_MS=${DELAY_MS:-10}
SESSIONS=${SESSIONS:-5}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-/tmp/smtps-bench-rtt}
OUT=${OUT:-$PWD/BENCHMARKS.md}
BENCH_PEERS_SOURCED=1
# shellcheck source=scripts/bench-peers.sh
. scripts/bench-peers.sh
ROOT=$PWD

# Ports of this script (bench-peers.sh's are 31xxx-34xxx); each delay proxy listens on its
# target's port + 10000.
SMTPSD_IMPLICIT=35465 SMTPSD_STARTTLS=35587
POSTFIX_IMPLICIT=36465 POSTFIX_STARTTLS=36587
STUNNEL_IMPLICIT=37465 SINK_PLAIN=37025
AIO_IMPLICIT=38465 AIO_STARTTLS=38587
SETUPS="smtpsd/implicit smtpsd/starttls postfix/implicit postfix/starttls stunnel/implicit aiosmtpd/implicit aiosmtpd/starttls"

target_port() { # PEER/TLS
    case $1 in
        smtpsd/implicit) echo "$SMTPSD_IMPLICIT" ;;
        smtpsd/starttls) echo "$SMTPSD_STARTTLS" ;;
        postfix/implicit) echo "$POSTFIX_IMPLICIT" ;;
        postfix/starttls) echo "$POSTFIX_STARTTLS" ;;
        stunnel/implicit) echo "$STUNNEL_IMPLICIT" ;;
        aiosmtpd/implicit) echo "$AIO_IMPLICIT" ;;
        aiosmtpd/starttls) echo "$AIO_STARTTLS" ;;
    esac
}

install_peers
log "building smtpsd and smtps-loadgen (release)"
cargo build --release -q -p smtpsd -p smtps-loadgen
mkdir -p "$WORK"
RESULTS=$WORK/results.txt SESSION_LINES=$WORK/sessions.txt COMMANDS=$WORK/commands.txt
rm -f "$RESULTS" "$SESSION_LINES" "$COMMANDS" "$WORK"/chunks-*.log
for setup in $SETUPS; do
    port=$(target_port "$setup")
    for p in "$port" $((port + 10000)); do
        port_free "$p" || die "port $p is in use; stop what listens there first"
    done
done
port_free "$SINK_PLAIN" || die "port $SINK_PLAIN is in use"
make_cert

log "starting the peers on loopback"
start_smtpsd smtpsd 2 "$SMTPSD_IMPLICIT" "$SMTPSD_STARTTLS" --sink
start_postfix
start_stunnel_sink
start_aiosmtpd
for setup in $SETUPS; do
    port=$(target_port "$setup")
    "$LOADGEN" delay-proxy --listen "127.0.0.1:$((port + 10000))" --target "127.0.0.1:$port" \
        --delay-ms "$DELAY_MS" --idle-timeout 60 --log "$WORK/chunks-${setup/\//-}.log" \
        2>>"$WORK/delay-proxy.log" &
    STARTED_PIDS+=($!)
    wait_port $((port + 10000))
done
{
    echo "smtpsd --sink --listen 127.0.0.1:$SMTPSD_IMPLICIT=implicit-tls --listen 127.0.0.1:$SMTPSD_STARTTLS=starttls --cert \$WORK/cert.pem --key \$WORK/key.pem --hostname mx.test --workers 2 --max-connections 50000 --max-connections-per-ip 50000 --log-level warn --no-resumption"
    for setup in $SETUPS; do
        port=$(target_port "$setup")
        echo "smtps-loadgen delay-proxy --listen 127.0.0.1:$((port + 10000)) --target 127.0.0.1:$port --delay-ms $DELAY_MS --idle-timeout 60 --log \$WORK/chunks-${setup/\//-}.log"
    done
} >"$COMMANDS"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
    order=$SETUPS
    [ $((round % 2)) = 0 ] && order=$(echo "$SETUPS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for setup in $order; do
        peer=${setup%/*} tls=${setup#*/}
        port=$(( $(target_port "$setup") + 10000 ))
        args=(rtt --target "127.0.0.1:$port" --tls "$tls" --ca "$WORK/cert.pem" --count "$SESSIONS"
            --warmup 1 --delay-ms "$DELAY_MS" --timeout 30 --label "$setup")
        [ "$round" = 1 ] && echo "smtps-loadgen ${args[*]}" | sed "s|$WORK|\$WORK|g" >>"$COMMANDS"
        line=$(timeout 300 "$LOADGEN" "${args[@]}" 2>"$WORK/rtt.err") || line="failed=1"
        sed "s|^|peer=$peer tls=$tls round=$round |" "$WORK/rtt.err" >>"$SESSION_LINES"
        echo "peer=$peer tls=$tls round=$round $line" | tee -a "$RESULTS" >&2
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

log "stopping the peers"
cleanup
trap - EXIT

{
    echo "machine_model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "machine_cores=$(nproc)"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "postfix=$(postconf -h mail_version 2>/dev/null || postconf -d -h mail_version)"
    echo "stunnel=$(stunnel4 -version 2>&1 | grep -m1 '^stunnel [0-9]')"
    echo "openssl=$(openssl version)"
    echo "aiosmtpd=$("$VENV/bin/python" -c 'import aiosmtpd; print(aiosmtpd.__version__)') (Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'))"
    echo "rustc=$(rustc --version)"
    echo "rustls=$(awk '/^name = "rustls"$/ {getline; sub(/version = /, ""); gsub(/"/, ""); print; exit}' Cargo.lock)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' (with uncommitted changes in crates/)')"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "delay_ms=$DELAY_MS"
    echo "settings=DELAY_MS=$DELAY_MS SESSIONS=$SESSIONS ROUNDS=$ROUNDS"
    echo "loadavg=$LOAD_START → $LOAD_END"
} >"$WORK/meta.txt"
log "writing the round-trip section of $OUT"
python3 scripts/bench-rtt-report.py --results "$RESULTS" --sessions "$SESSION_LINES" \
    --meta "$WORK/meta.txt" --commands "$COMMANDS" --chunks "$WORK" --out "$OUT" \
    --notes scripts/bench-rtt-notes.md
log "done (raw results: $RESULTS, $SESSION_LINES, $WORK/chunks-*.log)"
