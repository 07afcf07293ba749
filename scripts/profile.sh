#!/usr/bin/env bash
# Instruction counts of smtpsd's hot paths under callgrind: one
# `smtpsd --sink --workers 1 --no-resumption` (no tickets, like the peers of bench-peers.sh)
# under `valgrind --tool=callgrind`, driven by smtps-loadgen with fixed counts (not
# durations), phase by phase; the counters are zeroed before and dumped after each phase
# (callgrind_control), so start-up, warm-up and shutdown are not in the figures. Then the
# same sessions on the native process under perf.
#
# Prints a Markdown section (instructions per session and per message, top 15 functions by
# their own instructions in each phase) on standard output and writes it to $WORK/profile.md.
# callgrind counts instructions, not time: the figures repeat for the same binary and inputs
# whatever else the machine is doing.
#
# Environment: WORK [/tmp/smtps-profile], CARGO_TARGET_DIR [target], SESSIONS [300],
# MESSAGES [3000], LARGE_MESSAGES [300], SMTPSD [the release build here: set it to another
# build's binary to compare two revisions instruction for instruction].
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/smtps-profile}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
SESSIONS=${SESSIONS:-300}
MESSAGES=${MESSAGES:-3000}
LARGE_MESSAGES=${LARGE_MESSAGES:-300}
BIN=$CARGO_TARGET_DIR/release
SMTPSD=${SMTPSD:-$BIN/smtpsd}
IMPLICIT=36465 STARTTLS=36587

command -v valgrind >/dev/null || { echo "profile.sh: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p smtpsd -p smtps-loadgen
mkdir -p "$WORK"
rm -f "$WORK"/callgrind.out*
if [ ! -e "$WORK/cert.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
fi
for port in $IMPLICIT $STARTTLS; do
    if ss -Hltn "sport = :$port" | grep -q .; then
        echo "profile.sh: port $port is in use" >&2
        exit 1
    fi
done

valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$SMTPSD" --sink --workers 1 --listen "127.0.0.1:$IMPLICIT=implicit-tls" \
    --listen "127.0.0.1:$STARTTLS=starttls" --cert "$WORK/cert.pem" --key "$WORK/key.pem" \
    --hostname mx.test --log-level warn --no-resumption --timeout-handshake 60 --timeout-command 60 \
    2>"$WORK/valgrind.log" &
VG=$!
trap 'kill $VG 2>/dev/null; sleep 1; kill -9 $VG 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$IMPLICIT") 2>/dev/null && break
    sleep 0.1
done

LG=("$BIN/smtps-loadgen")
COMMON=(--ca "$WORK/cert.pem" --threads 1 --timeout 120)
phase() { # NAME COUNT LOADGEN-ARGS...
    local name=$1 count=$2
    shift 2
    callgrind_control -z "$VG" >/dev/null
    "${LG[@]}" "$@" "${COMMON[@]}" --count "$count" >"$WORK/$name.summary"
    callgrind_control --dump="$name" "$VG" >/dev/null
    DUMPS=$((DUMPS + 1))
    local file=$WORK/callgrind.out.$DUMPS i
    for i in $(seq 200); do # the dump is complete when its totals line is written
        grep -q '^totals:' "$file" 2>/dev/null && break
        sleep 0.1
    done
    mv "$file" "$WORK/callgrind.$name"
    echo "$name $count $(sed -n 's/^summary: //p' "$WORK/callgrind.$name")" >>"$WORK/totals.txt"
}
rm -f "$WORK/totals.txt"
DUMPS=0
# Warm-up: first connections, lazy initialisation, buffer pools.
"${LG[@]}" sessions --target "127.0.0.1:$IMPLICIT" --workers 2 "${COMMON[@]}" --count 20 >/dev/null
phase sessions_implicit "$SESSIONS" sessions --target "127.0.0.1:$IMPLICIT" --tls implicit --workers 4
phase sessions_starttls "$SESSIONS" sessions --target "127.0.0.1:$STARTTLS" --tls starttls --workers 4
phase messages_2k "$MESSAGES" messages --target "127.0.0.1:$IMPLICIT" --tls implicit --connections 4 --size 2048
phase messages_100k "$LARGE_MESSAGES" messages --target "127.0.0.1:$IMPLICIT" --tls implicit --connections 4 --size 102400

# The same sessions on the real CPU: valgrind's virtual CPU lacks SHA-NI and ADX, so aws-lc
# takes its slower SHA-256 and X25519 code paths under callgrind and their shares are inflated.
# perf samples the native process (cpu-clock: no hardware counters are needed).
kill $VG 2>/dev/null
wait $VG 2>/dev/null || true
PERF_OK=0
if command -v perf >/dev/null; then
    "$SMTPSD" --sink --workers 1 --listen "127.0.0.1:$IMPLICIT=implicit-tls" \
        --cert "$WORK/cert.pem" --key "$WORK/key.pem" --hostname mx.test --log-level warn --no-resumption \
        2>"$WORK/native.log" &
    NATIVE=$!
    trap 'kill $NATIVE 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$IMPLICIT") 2>/dev/null && break
        sleep 0.1
    done
    "${LG[@]}" sessions --target "127.0.0.1:$IMPLICIT" --workers 2 "${COMMON[@]}" --count 200 >/dev/null
    perf record -q -F 1999 -e cpu-clock -g -o "$WORK/perf.data" -p "$NATIVE" 2>"$WORK/perf.log" &
    PERF=$!
    sleep 0.5
    "${LG[@]}" sessions --target "127.0.0.1:$IMPLICIT" --tls implicit --workers 32 "${COMMON[@]}" \
        --count "$((SESSIONS * 10))" --pid "$NATIVE" >"$WORK/perf_sessions.summary"
    kill -INT $PERF 2>/dev/null
    wait $PERF 2>/dev/null || true
    kill $NATIVE 2>/dev/null
    [ -s "$WORK/perf.data" ] && PERF_OK=1
fi

set +o pipefail # `head` closes callgrind_annotate's pipe early
{
    echo "## Profile: instructions per operation (callgrind)"
    echo
    echo "\`scripts/profile.sh\`: \`smtpsd --sink --workers 1 --no-resumption\` under \`valgrind --tool=callgrind\`"
    echo "($(valgrind --version)), driven by \`smtps-loadgen --count N\`; counters zeroed before and"
    echo "dumped after each phase. The message phases include the setup of their 4 connections"
    echo "(4 handshakes spread over all messages). Instructions, not time: these repeat for the same"
    echo "binary and inputs whatever else the machine does."
    echo
    echo "| phase | operations | instructions (Ir) | Ir per operation |"
    echo "|---|---|---|---|"
    while read -r name count ir; do
        printf '| %s | %s | %s | %s |\n' "$name" "$count" "$(printf "%'d" "$ir")" "$(printf "%'d" $((ir / count)))"
    done <"$WORK/totals.txt"
    echo
    echo "Suites negotiated in the phases: $(sed -n 's/.* suite=\([^ ]*\).*/\1/p' "$WORK"/*.summary | sort -u | tr '\n' ' ')"
    echo
    clean() { sed -E 's|/root/\.cargo/registry/src/[^/]+/||; s|/rustc/[0-9a-f]+/||; s| \[[^]]*\]$||' | cut -c1-170; }
    for name in sessions_implicit sessions_starttls messages_2k messages_100k; do
        echo "### $name: top 15 functions by own instructions"
        echo
        echo '```'
        callgrind_annotate --inclusive=no --threshold=100 "$WORK/callgrind.$name" 2>/dev/null \
            | awk '/file:function/ {go=1; getline; next} go && NF > 0' \
            | grep -v '(100.0%)' | head -15 | clean
        echo '```'
        echo
        echo "$name: the smtps crates' own functions, inclusive (top 12)"
        echo
        echo '```'
        callgrind_annotate --inclusive=yes --threshold=100 "$WORK/callgrind.$name" 2>/dev/null \
            | awk '/file:function/ {go=1; getline; next} go && NF > 0' \
            | grep -v '(100.0%)' | grep -E ':(smtps_[a-z]+|smtpsd)::' | head -12 | clean
        echo '```'
        echo
    done
    if [ "$PERF_OK" = 1 ]; then
        echo "### sessions_implicit on the real CPU (perf, cpu-clock samples of the native process)"
        echo
        echo "$((SESSIONS * 10)) implicit-TLS sessions, 32 at a time, against \`smtpsd --sink --workers 1 --no-resumption\`"
        echo "outside valgrind ($(sed -n 's/.*server_cpu_us_per_op=\([^ ]*\).*/\1/p' "$WORK/perf_sessions.summary") µs of server CPU per session in this run). Share of"
        echo "samples by object, then the top 15 symbols by their own samples:"
        echo
        echo '```'
        perf report -i "$WORK/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null \
            | grep '%' | head -5 | sed -E 's/ +$//'
        echo
        perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
            | grep '%' | head -15 | sed -E 's/ +$//; s/ +- +-$//'
        echo '```'
        echo
    fi
} | tee "$WORK/profile.md"
