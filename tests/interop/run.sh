#!/usr/bin/env bash
# Interop tests with real mail software against smtpsd (implicit TLS and STARTTLS listeners):
#   postfix.sh  Debian's Postfix as the sending MTA, an isolated instance (own config, queue and
#               log under a temp dir; no listener at all, so no clash with port 25): relays over
#               implicit TLS (smtp_tls_wrappermode) and over STARTTLS; byte-exact delivery and
#               TLS 1.3 in Postfix's log.
#   swaks.sh    swaks --tls-on-connect / --tls, with and without --auth, against both listeners.
#   exim.sh     notes what was tried with Exim (Debian's exim4 conflicts with postfix).
# Python smtplib, openssl s_client and lettre run against both listeners in
# crates/smtpsd/tests/e2e.rs (cargo test).
#
# Installs what it needs with apt-get (idempotent, non-interactive). Runs as root on Debian 12,
# loopback only, each step under a 90 s deadline (installs: 300 s each); a run takes ~10 s here
# once the packages are in (plus the smtpsd build).
# Exit status 0 only when every step passed; the last line is "N passed, N failed".
#   SMTPSD=path/to/smtpsd tests/interop/run.sh      (default: cargo build -p smtpsd)
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/interop

need=()
command -v postfix > /dev/null || need+=(postfix)
command -v swaks > /dev/null || need+=(swaks)
perl -MIO::Socket::SSL -e 1 2> /dev/null || need+=(libio-socket-ssl-perl libnet-ssleay-perl)
command -v openssl > /dev/null || need+=(openssl)
command -v python3 > /dev/null || need+=(python3)
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

export WORK
WORK=$(mktemp -d /tmp/smtpsd-interop.XXXXXX)
chmod 755 "$WORK"
DAEMON_PID=
cleanup() {
    [ -f "$WORK/postfix/main.cf" ] && timeout 30 postfix -c "$WORK/postfix" stop > /dev/null 2>&1 || true
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2> /dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# A certificate for localhost/127.0.0.1 and a user for AUTH.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2> /dev/null
chmod 644 "$WORK/cert.pem"
export SMTP_USER=alice SMTP_PASSWORD="interop secret 1"
echo "$SMTP_USER:$(printf '%s\n' "$SMTP_PASSWORD" | "$SMTPSD" hash-password)" > "$WORK/users"

export MAILDIR="$WORK/mail" CERT="$WORK/cert.pem"
"$SMTPSD" --listen 127.0.0.1:0=implicit-tls --listen 127.0.0.1:0=starttls-required \
    --cert "$WORK/cert.pem" --key "$WORK/key.pem" --maildir "$MAILDIR" --users "$WORK/users" \
    --hostname mx.test --timeout-command 30 2> "$WORK/smtpsd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do
    [ "$(grep -c 'listening on' "$WORK/smtpsd.log")" -ge 2 ] && break
    sleep 0.1
done
read -r IMPLICIT STARTTLS _ <<< "$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/smtpsd.log" | tr '\n' ' ')"
[ -n "${STARTTLS:-}" ] || { echo "smtpsd did not start:"; cat "$WORK/smtpsd.log"; exit 1; }
export IMPLICIT STARTTLS
echo "==> smtpsd: implicit TLS on 127.0.0.1:$IMPLICIT, STARTTLS on 127.0.0.1:$STARTTLS"

passed=0 failed=0
for step in postfix swaks exim; do
    echo "==> $step"
    if timeout 90 bash "$HERE/$step.sh"; then
        passed=$((passed + 1))
    else
        echo "==> $step: FAILED"
        failed=$((failed + 1))
    fi
done
if ! kill -0 "$DAEMON_PID" 2> /dev/null; then
    echo "==> smtpsd died:"; tail -20 "$WORK/smtpsd.log"; failed=$((failed + 1))
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" = 0 ]
