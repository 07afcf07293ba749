# shellcheck shell=bash
# Sourced by postfix.sh and exim.sh: PASS/FAIL lines, and the relay front.
# Needs run.sh's environment: WORK, SMTPSD, CERT, KEY, USERS, CLIENTS.

# shellcheck disable=SC2034 # read by the scripts that source this file
FAIL=0
FRONT_PID=''
pass() { echo "PASS: $*"; }
fail() {
    echo "FAIL: $*"
    FAIL=1
}
check() { # check STATUS TEXT...
    local status=$1
    shift
    if [ "$status" = 0 ]; then pass "$*"; else fail "$*"; fi
}
# py SUBCOMMAND ARGS...: clients.py; its PASS/FAIL lines pass through, a failure sets FAIL.
py() { python3 "$CLIENTS" "$@" || FAIL=1; }
listening() { [ -n "$(ss -ltnH "( sport = :$1 )" 2> /dev/null)" ]; }
# wait_for SECONDS COMMAND...: polls every 0.1 s; status 1 when time runs out.
wait_for() {
    local tries=$(($1 * 10))
    shift
    for _ in $(seq "$tries"); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

# start_front NAME RELAY_URL [SMTPSD ARGS...]: smtpsd relaying to RELAY_URL, implicit TLS and
# STARTTLS (required) on free ports of 127.0.0.1; sets FRONT_PID, FRONT_IMPLICIT,
# FRONT_STARTTLS; logs to $WORK/NAME-front.log.
start_front() {
    local name=$1 url=$2 log="$WORK/$1-front.log" ports
    shift 2
    "$SMTPSD" --relay "$url" --users "$USERS" "$@" \
        --listen 127.0.0.1:0=implicit-tls --listen 127.0.0.1:0=starttls-required \
        --cert "$CERT" --key "$KEY" --hostname front.test \
        --max-message-size 64M --max-connections-per-ip 200 --log-level info 2> "$log" &
    FRONT_PID=$!
    echo "$FRONT_PID" > "$WORK/$name-front.pid"
    for _ in $(seq 100); do
        [ "$(grep -c 'listening on' "$log")" -ge 2 ] && break
        kill -0 "$FRONT_PID" 2> /dev/null || break
        sleep 0.1
    done
    # One line per --listen, in order: implicit TLS first.
    ports=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | tr '\n' ' ')
    read -r FRONT_IMPLICIT FRONT_STARTTLS _ <<< "$ports"
    if [ -z "${FRONT_STARTTLS:-}" ]; then
        echo "smtpsd (relay front to $url) did not start:"
        cat "$log"
        exit 1
    fi
    echo "==> smtpsd relay front (pid $FRONT_PID) to $url: implicit TLS :$FRONT_IMPLICIT," \
        "STARTTLS :$FRONT_STARTTLS"
}

stop_front() {
    [ -n "$FRONT_PID" ] || return 0
    kill "$FRONT_PID" 2> /dev/null || true
    for _ in $(seq 50); do
        kill -0 "$FRONT_PID" 2> /dev/null || break
        sleep 0.1
    done
    kill -9 "$FRONT_PID" 2> /dev/null || true
    FRONT_PID=''
}
