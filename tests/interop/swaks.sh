#!/usr/bin/env bash
# swaks against both listeners: --tls-on-connect (implicit TLS) and --tls (STARTTLS), each
# without and with --auth (PLAIN, LOGIN), verifying the certificate against our CA. Each
# message must be in the maildir once, with the body swaks sent, and smtpsd's Received:
# header must say ESMTPS or ESMTPSA. A wrong password must be refused.
# Needs: run.sh's environment (WORK, MAILDIR, CERT, IMPLICIT, STARTTLS, SMTP_USER, SMTP_PASSWORD).
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
status=0
run_swaks() { # NAME PORT TLS-OPTION [AUTH-MECHANISM]
    local name=$1 port=$2 tls=$3 auth=${4:-} id="swaks-$1-$$"
    local args=(--server 127.0.0.1 --port "$port" "$tls" --tls-verify --tls-ca-path "$CERT"
        --tls-sni localhost --ehlo swaks.interop.test --from swaks@interop.test
        --to box@mx.test --header "X-Interop-Id: $id" --body "swaks body $id"
        --timeout 20)
    [ -n "$auth" ] && args+=(--auth "$auth" --auth-user "$SMTP_USER" --auth-password "$SMTP_PASSWORD")
    if ! timeout 60 swaks "${args[@]}" > "$WORK/$id.out" 2>&1; then
        echo "FAIL $name: swaks exited non-zero"; tail -15 "$WORK/$id.out"; status=1; return
    fi
    local tls_line stored
    tls_line=$(grep -m1 "TLS started with cipher" "$WORK/$id.out" || true)
    stored=$(grep -l "^X-Interop-Id: $id" "$MAILDIR"/new/* 2> /dev/null || true)
    if [ "$(printf '%s' "$stored" | grep -c .)" != 1 ]; then
        echo "FAIL $name: stored $(printf '%s' "$stored" | grep -c .) times"; status=1; return
    fi
    local want="with ESMTPS "
    [ -n "$auth" ] && want="with ESMTPSA "
    if ! grep -q "$want" "$stored" || ! grep -q "^swaks body $id" "$stored"; then
        echo "FAIL $name: stored message lacks '$want' or the body"; head -8 "$stored"; status=1; return
    fi
    echo "ok $name:${tls_line#*===}"
}
run_swaks implicit "$IMPLICIT" --tls-on-connect
run_swaks implicit-auth-login "$IMPLICIT" --tls-on-connect LOGIN
run_swaks starttls "$STARTTLS" --tls
run_swaks starttls-auth-plain "$STARTTLS" --tls PLAIN

# A wrong password: swaks fails, the server said 535.
if timeout 60 swaks --server 127.0.0.1 --port "$IMPLICIT" --tls-on-connect --to box@mx.test \
    --from swaks@interop.test --auth PLAIN --auth-user "$SMTP_USER" --auth-password wrong \
    --timeout 20 > "$WORK/swaks-wrong.out" 2>&1; then
    echo "FAIL wrong password accepted"; status=1
elif grep -q "<~\* 535 5.7.8\|<\*\* 535 5.7.8\|535 5.7.8" "$WORK/swaks-wrong.out"; then
    echo "ok wrong password: $(grep -m1 '535' "$WORK/swaks-wrong.out" | sed 's/^ *//')"
else
    echo "FAIL wrong password: no 535"; tail -5 "$WORK/swaks-wrong.out"; status=1
fi
# STARTTLS port without TLS: MAIL is refused (starttls-required).
if timeout 60 swaks --server 127.0.0.1 --port "$STARTTLS" --to box@mx.test \
    --from swaks@interop.test --timeout 20 > "$WORK/swaks-plain.out" 2>&1; then
    echo "FAIL plaintext MAIL accepted on the STARTTLS-required port"; status=1
else
    echo "ok plaintext on the STARTTLS-required port: $(grep -m1 '<\*\* 5' "$WORK/swaks-plain.out" | sed 's/^ *//')"
fi
exit "$status"
