#!/usr/bin/env bash
# Postfix as the sending MTA: an isolated instance (config_directory, queue_directory,
# data_directory and maillog_file under $WORK/; master.cf with no inet service, so nothing
# listens and the system's port 25 is untouched) relays to smtpsd through two smtp(8) clients:
#   smtps_wrap     smtp_tls_wrappermode = yes, security level encrypt -> implicit-TLS port
#   smtp_starttls  STARTTLS, security level encrypt                   -> STARTTLS port
# chosen per recipient domain by transport_maps. Messages go in with `sendmail -C DIR`.
# Needs: run.sh's environment (WORK, MAILDIR, CERT, IMPLICIT, STARTTLS).
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
HERE=$(cd "$(dirname "$0")" && pwd)
PF="$WORK/postfix"
mkdir -p "$PF" "$WORK/pfqueue" "$WORK/pfdata" "$WORK/msgs"
chown postfix "$WORK/pfdata"

cat > "$PF/main.cf" << CONF
compatibility_level = 3.6
queue_directory = $WORK/pfqueue
data_directory = $WORK/pfdata
maillog_file = $WORK/postfix.log
maillog_file_prefixes = $WORK
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.interop.test
mydomain = interop.test
myorigin = interop.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
local_transport = error:no local delivery in this instance
relayhost =
transport_maps = inline:{ implicit.test=smtps_wrap:[127.0.0.1]:$IMPLICIT, starttls.test=smtp_starttls:[127.0.0.1]:$STARTTLS }
default_transport = error:only implicit.test and starttls.test are relayed
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
smtp_tls_CAfile = $CERT
smtputf8_enable = no
biff = no
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
CONF
cat > "$PF/master.cf" << 'CONF'
pickup        unix  n - n 60   1 pickup
cleanup       unix  n - n -    0 cleanup
qmgr          unix  n - n 300  1 qmgr
tlsmgr        unix  - - n 1000? 1 tlsmgr
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
scache        unix  - - n -    1 scache
postlog       unix-dgram n - n - 1 postlogd
smtp          unix  - - n -    - smtp
smtps_wrap    unix  - - n -    - smtp -o smtp_tls_wrappermode=yes -o smtp_tls_security_level=encrypt
smtp_starttls unix  - - n -    - smtp -o smtp_tls_security_level=encrypt
CONF
postfix -c "$PF" check
postfix -c "$PF" start
for _ in $(seq 50); do [ -S "$WORK/pfqueue/public/pickup" ] || [ -p "$WORK/pfqueue/public/pickup" ] && break; sleep 0.1; done

# Six messages, three per route: small; dot-leading lines and 8-bit text; 300 KB.
n=0
for route in implicit starttls; do
    for kind in small dots big; do
        n=$((n + 1))
        id="postfix-$route-$kind-$$"
        f="$WORK/msgs/$id.eml"
        {
            printf 'From: Sender <sender@interop.test>\nTo: <box@%s.test>\n' "$route"
            printf 'Subject: postfix %s %s\nDate: Mon, 02 Jan 2026 10:00:0%d +0000\n' "$route" "$kind" "$n"
            printf 'Message-ID: <%s@interop.test>\nX-Interop-Id: %s\n' "$id" "$id"
            if [ "$kind" = dots ]; then
                printf 'MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n'
            fi
            printf '\n'
            case "$kind" in
                small) printf 'Hello from Postfix over %s.\n' "$route" ;;
                dots) printf '.one dot\n..two dots\n.\nGr\303\274\303\237e, na\303\257ve caf\303\251\n \n' ;;
                big) for i in $(seq 4000); do printf '%06d %s\n' "$i" "the quick brown fox jumps over the lazy dog 0123456789"; done ;;
            esac
        } > "$f"
        timeout 30 sendmail -C "$PF" -f sender@interop.test -oi "box@$route.test" < "$f"
    done
done

# Wait (bounded) for all six in the maildir.
delivered=0
for _ in $(seq 120); do
    delivered=$(grep -l "^X-Interop-Id: postfix-" "$MAILDIR"/new/* 2> /dev/null | wc -l || true)
    [ "$delivered" -ge 6 ] && break
    sleep 0.5
done
if [ "$delivered" -lt 6 ]; then
    echo "only $delivered of 6 delivered; queue:"
    postqueue -c "$PF" -p || true
    tail -30 "$WORK/postfix.log"
    exit 1
fi
python3 "$HERE/compare.py" "$MAILDIR" "$WORK"/msgs/postfix-*.eml

# Postfix's log: TLS 1.3 and the cipher, for each route.
status=0
for port in "$IMPLICIT" "$STARTTLS"; do
    line=$(grep -m1 "TLS connection established to 127.0.0.1\[127.0.0.1\]:$port: TLSv1.3 with cipher" "$WORK/postfix.log" || true)
    if [ -n "$line" ]; then
        echo "ok postfix log, port $port: ${line#*: }"
    else
        echo "FAIL: no TLS 1.3 connection to port $port in Postfix's log"; status=1
    fi
done
grep -m1 "status=sent" "$WORK/postfix.log" | sed 's/^/   /'
[ "$(grep -c 'status=sent' "$WORK/postfix.log")" -ge 6 ] || { echo "FAIL: fewer than 6 status=sent"; status=1; }
postfix -c "$PF" stop > /dev/null 2>&1 || true
exit "$status"
