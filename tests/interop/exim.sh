#!/usr/bin/env bash
# Exim as the sending MTA. Debian's exim4 cannot be installed beside postfix (both provide
# mail-transport-agent and conflict), so the exim4-daemon-light package is downloaded
# (`apt-get download`) and unpacked under $WORK, never installed; its libraries are ordinary
# packages. The binary insists on its user, Debian-exim, which is created (system user, no
# home) if missing. Exim runs in the foreground (-odf) with a private configuration (-C, as
# root): spool and logs under $WORK, no daemon, no listener. Two manualroute routers relay
# implicit.test over implicit TLS (protocol = smtps) and starttls.test over STARTTLS
# (hosts_require_tls), both verifying smtpsd's certificate. Checks: byte-exact delivery and
# TLS 1.3 in Exim's log.
# Set SKIP_EXIM=1 to skip. Needs: run.sh's environment.
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
HERE=$(cd "$(dirname "$0")" && pwd)
[ -n "${SKIP_EXIM:-}" ] && { echo "skipped (SKIP_EXIM)"; exit 0; }
X="$WORK/exim"
mkdir -p "$X/deb" "$X/spool" "$X/log" "$WORK/eximmsgs"
if [ -z "${EXIM:-}" ]; then
    # (Package lists may be missing on a fresh machine: update once and retry.)
    (cd "$X/deb" && timeout 120 apt-get download exim4-daemon-light > /dev/null 2>&1) ||
        { timeout 300 apt-get update -qq &&
            (cd "$X/deb" && timeout 120 apt-get download exim4-daemon-light > /dev/null 2>&1); } || {
        echo "cannot download exim4-daemon-light"; exit 1; }
    missing=()
    for lib in libgnutls-dane0 libidn12 libnsl2 libdb5.3 libpcre2-8-0; do
        dpkg -s "$lib" > /dev/null 2>&1 || missing+=("$lib")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive timeout 200 apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
    fi
    dpkg-deb -x "$X"/deb/exim4-daemon-light_*.deb "$X/root"
    EXIM="$X/root/usr/sbin/exim4"
fi
id Debian-exim > /dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin Debian-exim
chown -R Debian-exim "$X/spool" "$X/log"

cat > "$X/exim.conf" << CONF
primary_hostname = exim.interop.test
exim_path = $EXIM
keep_environment =
qualify_domain = interop.test
spool_directory = $X/spool
log_file_path = $X/log/%slog
log_selector = +tls_cipher +tls_peerdn +tls_certificate_verified +outgoing_port
trusted_users = root
tls_advertise_hosts =
daemon_smtp_ports =
begin routers
implicit:
  driver = manualroute
  domains = implicit.test
  transport = smtps_wrap
  route_list = * 127.0.0.1
  self = send
starttls:
  driver = manualroute
  domains = starttls.test
  transport = smtp_starttls
  route_list = * 127.0.0.1
  self = send
begin transports
smtps_wrap:
  driver = smtp
  port = $IMPLICIT
  protocol = smtps
  allow_localhost
  hosts_require_tls = *
  tls_verify_certificates = $CERT
  tls_verify_cert_hostnames =
  tls_sni = localhost
smtp_starttls:
  driver = smtp
  port = $STARTTLS
  allow_localhost
  hosts_require_tls = *
  tls_verify_certificates = $CERT
  tls_verify_cert_hostnames =
  tls_sni = localhost
begin retry
* * F,1m,10s
CONF

status=0
for route in implicit starttls; do
    for kind in small dots; do
        id="exim-$route-$kind-$$"
        f="$WORK/eximmsgs/$id.eml"
        {
            printf 'From: Sender <sender@interop.test>\nTo: <box@%s.test>\n' "$route"
            printf 'Subject: exim %s %s\nDate: Mon, 02 Jan 2026 11:00:00 +0000\n' "$route" "$kind"
            printf 'Message-ID: <%s@interop.test>\nX-Interop-Id: %s\n\n' "$id" "$id"
            case "$kind" in
                small) printf 'Hello from Exim over %s.\n' "$route" ;;
                dots) printf '.one dot\n..two dots\n.\n'; for i in $(seq 2000); do printf '%05d exim line\n' "$i"; done ;;
            esac
        } > "$f"
        timeout 60 "$EXIM" -C "$X/exim.conf" -odf -oi -f sender@interop.test "box@$route.test" < "$f" 2>> "$X/stderr" ||
            { echo "FAIL exim exited non-zero for $id"; status=1; }
    done
done
python3 "$HERE/compare.py" "$MAILDIR" "$WORK"/eximmsgs/exim-*.eml || status=1
for port in "$IMPLICIT" "$STARTTLS"; do
    line=$(grep -m1 "=> box@.*\[127.0.0.1\]:$port X=TLS1.3:" "$X/log/mainlog" || true)
    if [ -n "$line" ]; then
        echo "ok exim log, port $port: $(printf '%s' "$line" | grep -o 'X=TLS1.3:[^ ]*') $(printf '%s' "$line" | grep -o 'CV=[a-z]*')"
    else
        echo "FAIL: no TLS 1.3 delivery to port $port in Exim's log"; tail -5 "$X/log/mainlog" 2> /dev/null; status=1
    fi
done
exit "$status"
