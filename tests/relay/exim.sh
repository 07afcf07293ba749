#!/usr/bin/env bash
# Exim behind the relay front. Debian's exim4 packages conflict with postfix (both provide
# mail-transport-agent), so exim4-daemon-heavy is downloaded (`apt-get download`) and
# unpacked under $WORK, never installed; its libraries are ordinary packages, installed when
# missing. The heavy build, because only it has PROXY protocol support (`exim4 -bV`: "Support
# for: ... PROXY"; the light build lacks it), and Exim 4.96 has no XCLIENT: the front names
# the client with a PROXY v2 header (`--relay smtp://127.0.0.1:PORT+proxy-v2`, Exim
# `hosts_proxy = 127.0.0.1`). The binary insists on its user, Debian-exim, created (system
# user, no home) if missing.
# Exim runs as root in the foreground (-bdf) with a private configuration (-C): listener on
# 127.0.0.1:<free port> (-oX), spool and logs under $WORK, recipients @relay.test accepted
# and appended to a Maildir (appendfile), nothing added but Exim's Received: line.
# Claims (PASS/FAIL each): implicit TLS and STARTTLS (with and without AUTH) from 127.0.0.2
# delivered once and byte-exact; Exim's log and its Received: line name [127.0.0.2] (not the
# front's 127.0.0.1); the front's Received: line is in each message.
# Prints SKIP (and exits 0) when Exim cannot be had: no package download, or no PROXY support.
# Needs run.sh's environment; EXIM=path/to/exim4 uses that binary instead.
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/relay/common.sh
. "$HERE/common.sh"

X="$WORK/exim"
MAIL="$X/mail"
SENT="$WORK/eximsent"
EXIM_PID=''
mkdir -p "$X/deb" "$X/spool" "$X/log" "$MAIL" "$SENT"

LOGS_SHOWN=''
show_logs() {
    LOGS_SHOWN=1
    for log in log/mainlog log/paniclog log/rejectlog stderr; do
        [ -s "$X/$log" ] || continue
        echo "---- exim $log (last 60 lines) ----"
        tail -n 60 "$X/$log"
    done
    echo "---- exim-front.log (last 60 lines) ----"
    tail -n 60 "$WORK/exim-front.log" 2> /dev/null || true
}
stop_exim() {
    [ -n "$EXIM_PID" ] || return 0
    kill "$EXIM_PID" 2> /dev/null || true
    for _ in $(seq 50); do
        kill -0 "$EXIM_PID" 2> /dev/null || break
        sleep 0.1
    done
    kill -9 "$EXIM_PID" 2> /dev/null || true
    EXIM_PID=''
}
cleanup() {
    local status=$?
    stop_front
    stop_exim
    if [ "$status" != 0 ] && [ -z "$LOGS_SHOWN" ]; then
        echo "exim: stopped early (status $status)"
        show_logs
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT
skip() {
    echo "SKIP: Exim backend: $*"
    exit 0
}

# --- the binary ----------------------------------------------------------------------------
if [ -z "${EXIM:-}" ]; then
    # (Package lists may be missing on a fresh machine: update once and retry.)
    download() { (cd "$X/deb" && timeout 120 apt-get download exim4-daemon-heavy) > "$X/download.log" 2>&1; }
    download || { timeout 300 apt-get update -qq > /dev/null 2>&1 && download; } ||
        skip "apt-get download exim4-daemon-heavy failed: $(grep -m2 '^E:' "$X/download.log" | tr '\n' ' ')"
    DEB=$(ls "$X"/deb/exim4-daemon-heavy_*.deb)
    # Its libraries: every dependency but exim4-base and debconf (first alternative each).
    missing=()
    for dep in $(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:any//' | tr -d ' '); do
        case "$dep" in exim4-base | debconf | debconf-2.0 | '') continue ;; esac
        dpkg -s "$dep" > /dev/null 2>&1 || missing+=("$dep")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> installing Exim's libraries: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" > /dev/null
    fi
    dpkg-deb -x "$DEB" "$X/root"
    EXIM="$X/root/usr/sbin/exim4"
fi
if ldd "$EXIM" | grep -q 'not found'; then
    skip "$EXIM misses libraries: $(ldd "$EXIM" | grep 'not found' | tr -s ' \t\n' ' ')"
fi
id Debian-exim > /dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin Debian-exim
# -bV without a configuration still prints the build (and complains about the missing one).
VERSION=$("$EXIM" -C /dev/null -bV 2>&1 || true)
echo "$VERSION" | grep -q '^Support for:.* PROXY' ||
    skip "this Exim build has no PROXY support ($(echo "$VERSION" | grep -m1 '^Support for:'))"
echo "==> $(echo "$VERSION" | grep -m1 '^Exim version') ($EXIM), with PROXY support"
chown -R Debian-exim: "$X/spool" "$X/log" "$MAIL"

# --- the daemon ----------------------------------------------------------------------------
cat > "$X/exim.conf" << CONF
primary_hostname = exim.relay.test
exim_path = $EXIM
keep_environment =
qualify_domain = relay.test
spool_directory = $X/spool
log_file_path = $X/log/%slog
log_selector = +proxy +incoming_port +received_recipients -host_lookup_failed
pid_file_path = $X/exim.pid
local_interfaces = 127.0.0.1
hosts_proxy = 127.0.0.1
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
message_size_limit = 100M
trusted_users = root
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  accept domains = relay.test
  deny message = relay not permitted
begin routers
local_maildir:
  driver = accept
  domains = relay.test
  transport = maildir
begin transports
maildir:
  driver = appendfile
  directory = $MAIL
  maildir_format
  create_directory
  user = Debian-exim
  mode = 0644
begin retry
* * F,1m,10s
CONF
"$EXIM" -C "$X/exim.conf" -bV > /dev/null 2> "$X/config-check" ||
    { cat "$X/config-check"; fail "Exim refused its configuration"; exit 1; }
# A free port, bound by Exim a moment later: retried with a new one (3 times at most).
for attempt in 1 2 3; do
    PORT=$(python3 "$CLIENTS" free-ports 1)
    "$EXIM" -C "$X/exim.conf" -bdf -oX "$PORT" > /dev/null 2>> "$X/stderr" &
    EXIM_PID=$!
    echo "$EXIM_PID" > "$WORK/exim.pid"
    wait_for 10 listening "$PORT" && break
    echo "exim: did not listen on :$PORT (attempt $attempt)"
    stop_exim
    [ "$attempt" = 3 ] && { show_logs; fail "Exim did not start"; exit 1; }
done
echo "==> exim (pid $EXIM_PID) on 127.0.0.1:$PORT, hosts_proxy = 127.0.0.1"

start_front exim "smtp://127.0.0.1:$PORT+proxy-v2"
ARGS=(--implicit "$FRONT_IMPLICIT" --starttls "$FRONT_STARTTLS" --cafile "$CERT" --mail "$MAIL"
    --sent "$SENT" --backend exim --log "$X/log/mainlog" --tag "ex$$")

echo "==> identity: implicit TLS and STARTTLS from 127.0.0.2, with and without AUTH"
py identity "${ARGS[@]}" --user "$USER_NAME" --password "$USER_PASSWORD"
# Each delivery re-executes Exim from the Exim user with our untrusted -C file (it is not in
# the build's TRUSTED_CONFIG_LIST, /etc/exim4/trusted_configs, which we leave alone): Exim
# then logs "exim user lost privilege for using -C option" to the panic log and delivers as
# Debian-exim, which owns the Maildir. Any other panic line is a failure.
PANICS=$(grep -v 'exim user lost privilege for using -C option' "$X/log/paniclog" 2> /dev/null || true)
[ -z "$PANICS" ] || fail "Exim's panic log: $PANICS"
if grep -qi panic "$WORK/exim-front.log"; then fail "panic in the front's log"; fi
kill -0 "$FRONT_PID" 2> /dev/null || fail "the front is gone"
kill -0 "$EXIM_PID" 2> /dev/null || fail "Exim is gone"
[ "$FAIL" = 0 ] || show_logs
exit "$FAIL"
