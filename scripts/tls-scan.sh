#!/usr/bin/env bash
# TLS scanners against smtpsd: testssl.sh (Debian package testssl.sh) and sslscan, on the
# implicit-TLS listener and, with STARTTLS (testssl --starttls smtp, sslscan --starttls-smtp),
# on the STARTTLS listener. A fresh smtpsd is started on 127.0.0.1 port 0 with a self-signed
# ECDSA P-256 certificate (and, with --rsa, an RSA-2048 one instead), loopback only.
#
# Verdict (exit 1 if any fails):
#   - protocols offered: only TLS 1.2 and TLS 1.3;
#   - every cipher suite offered is AEAD (GCM, CHACHA20-POLY1305) with forward secrecy
#     (ECDHE, or TLS 1.3);
#   - testssl.sh reports no vulnerability (its "VULNERABLE" findings and any finding of
#     severity MEDIUM, HIGH or CRITICAL outside the certificate checks: a self-signed test
#     certificate is untrusted by design and is reported separately);
#   - after each scan the server holds nothing for the scanner: within 2 s no socket of the
#     port is left in CLOSE-WAIT (`ss`), the daemon's descriptors are back to where they were,
#     and a fresh connection from the same address gets `220` — with the default limit of 50
#     connections per address, which a scanner that leaked slots would exhaust.
# Reports go to OUT (default: a temp dir, printed), as testssl JSON/log and sslscan XML/text.
#   scripts/tls-scan.sh [--rsa] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

KEY=ec OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --rsa) KEY=rsa ;;
        --out) OUT=$2; shift ;;
        *) echo "usage: $0 [--rsa] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
need=()
command -v testssl > /dev/null || need+=(testssl.sh)
command -v sslscan > /dev/null || need+=(sslscan)
command -v hexdump > /dev/null || need+=(bsdextrautils)
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq
    timeout 300 apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi
if [ -z "${SMTPSD:-}" ]; then
    cargo build -q -p smtpsd
    SMTPSD="${CARGO_TARGET_DIR:-target}/debug/smtpsd"
fi

WORK=$(mktemp -d /tmp/smtpsd-tlsscan.XXXXXX)
OUT=${OUT:-$WORK/reports}
mkdir -p "$OUT"
DAEMON_PID=
cleanup() {
    [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2> /dev/null || true
    rm -f "$WORK"/*.pem
}
trap cleanup EXIT

if [ "$KEY" = rsa ]; then
    NEWKEY=(-newkey rsa:2048)
else
    NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
fi
openssl req -x509 "${NEWKEY[@]}" -nodes -days 2 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2> /dev/null
"$SMTPSD" --listen 127.0.0.1:0=implicit-tls --listen 127.0.0.1:0=starttls-required \
    --cert "$WORK/cert.pem" --key "$WORK/key.pem" --maildir "$WORK/mail" --hostname localhost \
    --timeout-handshake 10 --timeout-command 30 \
    2> "$WORK/smtpsd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do
    [ "$(grep -c 'listening on' "$WORK/smtpsd.log")" -ge 2 ] && break
    sleep 0.1
done
read -r IMPLICIT STARTTLS _ <<< "$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/smtpsd.log" | tr '\n' ' ')"
[ -n "${STARTTLS:-}" ] || { echo "smtpsd did not start"; cat "$WORK/smtpsd.log"; exit 1; }
echo "==> smtpsd ($KEY certificate): implicit TLS 127.0.0.1:$IMPLICIT, STARTTLS 127.0.0.1:$STARTTLS; reports in $OUT"

FAIL=0
fail() { echo "FAIL: $*"; FAIL=1; }
fds() { find "/proc/$DAEMON_PID/fd" -mindepth 1 -maxdepth 1 2> /dev/null | wc -l; }
close_wait() { ss -tanH state close-wait "( sport = :$1 )" 2> /dev/null | wc -l; }
# After a scan: no CLOSE-WAIT on `port` and descriptors back at the baseline within 2 s, and a
# new client gets the banner (through STARTTLS for that listener).
released() {
    local target=$1 port=$2 baseline=$3 waits=-1 open=-1
    for _ in $(seq 40); do
        waits=$(close_wait "$port") open=$(fds)
        [ "$waits" -eq 0 ] && [ "$open" -le "$baseline" ] && break
        sleep 0.05
    done
    echo "  after the scan: $waits CLOSE-WAIT sockets on $port, $open descriptors (baseline $baseline)"
    [ "$waits" -eq 0 ] || fail "$target: $waits sockets left in CLOSE-WAIT after the scan"
    [ "$open" -le "$baseline" ] || fail "$target: $open descriptors open after the scan, $baseline before"
    python3 - "$target" "$port" << 'PY' || fail "$target: a fresh connection after the scan got no 220"
import socket, ssl, sys
target, port = sys.argv[1], int(sys.argv[2])
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
if target == "implicit":
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock = context.wrap_socket(sock)
banner = sock.recv(512).decode(errors="replace")
print(f"  fresh connection: {banner.strip()}")
sys.exit(0 if banner.startswith("220 ") else 1)
PY
}
BASELINE=$(fds)

for target in implicit starttls; do
    port=$IMPLICIT extra=() sslextra=()
    if [ "$target" = starttls ]; then port=$STARTTLS extra=(--starttls smtp) sslextra=(--starttls-smtp); fi
    echo "==> testssl.sh ${extra[*]} 127.0.0.1:$port"
    rm -f "$OUT/testssl-$target.json" "$OUT/testssl-$target.log"
    timeout 900 testssl --quiet --color 0 --warnings batch --ip one --sneaky \
        --jsonfile "$OUT/testssl-$target.json" --logfile "$OUT/testssl-$target.log" \
        "${extra[@]}" "127.0.0.1:$port" > /dev/null 2>&1 || true
    released "$target" "$port" "$BASELINE"
    [ -s "$OUT/testssl-$target.json" ] || { fail "testssl.sh produced no report for $target"; continue; }
    echo "==> sslscan ${sslextra[*]} 127.0.0.1:$port"
    timeout 300 sslscan --no-colour --show-sigs "${sslextra[@]}" --xml="$OUT/sslscan-$target.xml" \
        "127.0.0.1:$port" > "$OUT/sslscan-$target.txt" 2>&1 || fail "sslscan failed on $target"
    released "$target" "$port" "$BASELINE"

    python3 - "$target" "$OUT/testssl-$target.json" "$OUT/sslscan-$target.xml" << 'PY' || FAIL=1
import json, re, sys
import xml.etree.ElementTree as ET
target, tjson, sxml = sys.argv[1:]
bad = []
findings = json.load(open(tjson))
by_id = {f["id"]: f for f in findings}
# Protocols (testssl): offered ones.
offered = [f["id"] for f in findings
           if f["id"] in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")
           and f["finding"].startswith("offered")]
print(f"  testssl protocols offered: {offered}")
if sorted(offered) != ["TLS1_2", "TLS1_3"]:
    bad.append(f"testssl: protocols offered {offered}")
# Ciphers (testssl): cipher_x<hexcode> = "x1302 TLS_AES_256_GCM_SHA384 ECDH 253 AESGCM 256 ...".
suites = [f["finding"] for f in findings if re.match(r"cipher_x[0-9a-f]+$", f["id"])]
print(f"  testssl cipher suites ({len(suites)}):")
if not suites:
    bad.append("testssl: no cipher suite listed")
for s in suites:
    print(f"    {' '.join(s.split())}")
    cols = s.split()
    kx, enc = cols[2], cols[4]
    if not (enc in ("AESGCM", "ChaCha20", "AESCCM") and kx in ("ECDH", "DH")):
        bad.append(f"testssl: cipher without AEAD or forward secrecy: {s}")
for fid in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
            "cipherlist_3DES_IDEA", "cipherlist_AVERAGE", "PFS", "PFS_ECDHE_curves",
            "cipher_negotiated"):
    if fid in by_id:
        print(f"  {fid}: {by_id[fid]['finding']}")
# Vulnerabilities and severities.
cert_ids = ("cert", "intermediate", "chain_of_trust", "OCSP", "DNS_CAA", "certificate_transparency")
for f in findings:
    sev, fid, text = f.get("severity", ""), f["id"], f["finding"]
    if fid.startswith(cert_ids) or fid in ("scanProblem",):
        if sev in ("MEDIUM", "HIGH", "CRITICAL"):
            print(f"  certificate note ({sev}) {fid}: {text}")
        continue
    if "VULNERABLE" in text.upper() and "NOT VULNERABLE" not in text.upper() or sev in ("MEDIUM", "HIGH", "CRITICAL"):
        bad.append(f"testssl {sev} {fid}: {text}")
    elif sev in ("LOW", "WARN"):
        print(f"  testssl {sev} {fid}: {text}")
for fid in ("heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
            "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN",
            "LOGJAM", "BEAST", "LUCKY13", "RC4"):
    if fid in by_id:
        print(f"  {fid}: {by_id[fid]['finding']} ({by_id[fid]['severity']})")
for fid in ("TLS_session_ticket", "sessionresumption_ticket", "sessionresumption_ID",
            "cipher_order", "TLS_extensions"):
    if fid in by_id:
        print(f"  {fid}: {by_id[fid]['finding']}")
# sslscan: protocols and ciphers.
root = ET.parse(sxml).getroot()
for p in root.iter("protocol"):
    if p.get("enabled") == "1":
        print(f"  sslscan protocol enabled: {p.get('type')} {p.get('version')}")
        if p.get("version") not in ("1.2", "1.3"):
            bad.append(f"sslscan: {p.get('type')} {p.get('version')} enabled")
for c in root.iter("cipher"):
    name, proto = c.get("cipher"), c.get("sslversion")
    print(f"  sslscan cipher: {proto} {name} {c.get('bits')} bits {c.get('curve') or ''} {c.get('status')}")
    if not re.search(r"GCM|CHACHA20", name) or not (proto == "TLSv1.3" or "ECDHE" in name or "DHE" in name):
        bad.append(f"sslscan: {proto} {name}")
for tag in ("heartbleed", "compression", "renegotiation", "fallback"):
    for e in root.iter(tag):
        print(f"  sslscan {tag}: {e.attrib}")
        if tag == "heartbleed" and e.get("vulnerable") == "1":
            bad.append(f"sslscan: heartbleed {e.attrib}")
        if tag == "compression" and e.get("supported") == "1":
            bad.append("sslscan: TLS compression")
        if tag == "renegotiation" and e.get("supported") == "1" and e.get("secure") != "1":
            bad.append("sslscan: insecure renegotiation")
for b in bad:
    print(f"FAIL {target}: {b}")
sys.exit(1 if bad else 0)
PY
done
if ! kill -0 "$DAEMON_PID" 2> /dev/null; then fail "smtpsd died during the scans"; fi
[ "$FAIL" = 0 ] && echo "tls-scan: PASS" || echo "tls-scan: FAILED"
exit "$FAIL"
