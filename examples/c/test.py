#!/usr/bin/env python3
"""End-to-end test of one example host in examples/c (threaded, event_loop, fork_per_connection).

    python3 examples/c/test.py [--valgrind] [--keep] BINARY

Generates a throw-away certificate for localhost/127.0.0.1 with openssl, starts
`BINARY SPOOL CERT KEY 0 0` with a fresh spool, reads its "PORT <implicit> <starttls>" line, and
then checks, printing one PASS or FAIL line per check:

  - implicit TLS (smtplib.SMTP_SSL): AUTH offered; MAIL before AUTH refused with 530; a wrong
    password refused with 535; login; a message to rcpt@ and nobody@: nobody@ refused with
    550 5.1.1, the message accepted for rcpt@;
  - STARTTLS (smtplib.SMTP + starttls()): STARTTLS offered and AUTH not before TLS; MAIL before
    STARTTLS refused with 530; starttls, login, one message;
  - SPOOL/new holds exactly the messages accepted, byte-exact: the hosts write the envelope first,
        X-Envelope-From: <sender>\\r\\n
        X-Envelope-To: <recipient>\\r\\n   (one per accepted recipient)
    then the message exactly as sent (dot-unstuffed, CRLF line ends); SPOOL/tmp is empty;
  - SIGTERM with two transactions in the middle of DATA: the one whose client then finishes
    its message still gets 250 (graceful shutdown), the one whose client goes silent is
    closed (421, or the connection just ends) once the host's 5 s grace has passed, and its
    partial message leaves no file behind;
  - the host exits with status 0 within 10 s of SIGTERM (60 s under valgrind);
  - with --valgrind the host runs under `valgrind --error-exitcode=1 --leak-check=full
    --errors-for-leak-kinds=definite -q` (forked children too), and its stderr must hold no
    valgrind report.

Every wait is bounded. Exit status 0 when every check passed, 1 otherwise, 2 for bad usage.
Python 3 standard library only; needs openssl on the PATH (and valgrind for --valgrind).
"""

import argparse
import os
import re
import selectors
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time

USER, PASSWORD = "alice", "wonderland"
USER2, PASSWORD2 = "bob", "builder"
SENDER = "sender@example.org"
RCPT = "rcpt@example.net"
NOBODY = "nobody@example.net"

failures = 0


def check(ok, what, detail=""):
    global failures
    if ok:
        print(f"PASS {what}", flush=True)
    else:
        failures += 1
        print(f"FAIL {what}" + (f": {detail}" if detail else ""), flush=True)
    return ok


def message(tag, lines):
    """A message with CRLF line ends, lines to dot-unstuff, UTF-8, and some bulk."""
    text = (
        f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: {tag}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"Hello from {tag}.\r\n"
        ".a line that starts with a dot\r\n..two dots\r\n.\r\nnot the end yet\r\n"
        "caf\u00e9 \u2603 \u00fcber\r\n"
    ).encode("utf-8")
    bulk = b"".join(b"line %05d %s\r\n" % (i, b"x" * 70) for i in range(lines))
    return text + bulk + b"-- \r\nthe end\r\n"


def spooled(sender, rcpts, body):
    head = f"X-Envelope-From: <{sender}>\r\n".encode()
    head += b"".join(f"X-Envelope-To: <{r}>\r\n".encode() for r in rcpts)
    return head + body


def read_port_line(proc, deadline):
    """Reads stdout up to the first newline, or gives up at the deadline."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    data = b""
    try:
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return None
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return None
            data += chunk
    finally:
        sel.close()
    return data.split(b"\n", 1)[0].decode("ascii", "replace")


def wait_exit(proc, seconds):
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def implicit_tls(port, ctx, timeout, body):
    with smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=timeout) as s:
        s.ehlo("client.test")
        check(s.has_extn("auth"), "implicit TLS: AUTH offered", s.esmtp_features)
        code, text = s.mail(SENDER)
        check(code == 530, "implicit TLS: MAIL before AUTH refused with 530", f"{code} {text!r}")
        s.rset()
        try:
            s.login(USER, "not-the-password")
            check(False, "implicit TLS: wrong password refused", "login succeeded")
        except smtplib.SMTPAuthenticationError as e:
            check(e.smtp_code == 535, "implicit TLS: wrong password refused with 535", str(e))
        s.login(USER, PASSWORD)
        print(f"PASS implicit TLS: AUTH as {USER}", flush=True)
        refused = s.sendmail(SENDER, [RCPT, NOBODY], body)
        got = refused.get(NOBODY)
        check(
            got is not None and got[0] == 550 and b"5.1.1" in got[1],
            "implicit TLS: RCPT nobody@ refused with 550 5.1.1",
            repr(refused),
        )
        check(RCPT not in refused, "implicit TLS: message accepted for rcpt@", repr(refused))


def starttls(port, ctx, timeout, body):
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.ehlo("client.test")
        check(s.has_extn("starttls"), "STARTTLS: STARTTLS offered", s.esmtp_features)
        check(not s.has_extn("auth"), "STARTTLS: no AUTH before TLS", s.esmtp_features)
        code, text = s.mail(SENDER)
        check(code == 530, "STARTTLS: MAIL before STARTTLS refused with 530", f"{code} {text!r}")
        s.rset()
        s.starttls(context=ctx)
        s.ehlo("client.test")
        check(s.has_extn("auth"), "STARTTLS: AUTH offered after TLS", s.esmtp_features)
        s.login(USER2, PASSWORD2)
        print(f"PASS STARTTLS: AUTH as {USER2}", flush=True)
        refused = s.sendmail(SENDER, [RCPT], body)
        check(refused == {}, "STARTTLS: message accepted", repr(refused))


def open_transaction(port, ctx, timeout, body_part):
    """Implicit TLS, AUTH, MAIL, RCPT, DATA and the first part of a message; returns the client."""
    s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=timeout)
    s.ehlo("client.test")
    s.login(USER, PASSWORD)
    code, text = s.mail(SENDER)
    assert code == 250, (code, text)
    code, text = s.rcpt(RCPT)
    assert code == 250, (code, text)
    s.putcmd("data")
    code, text = s.getreply()
    assert code == 354, (code, text)
    s.send(body_part)
    return s


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", help="the example host to test")
    parser.add_argument("--valgrind", action="store_true", help="run the host under valgrind")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print(f"FAIL {binary} is not an executable", flush=True)
        return 2

    # Under valgrind everything is ~50x slower: longer bounds, still bounded.
    startup, client_timeout, exit_timeout = (120, 120, 60) if args.valgrind else (30, 30, 10)
    work = tempfile.mkdtemp(prefix="smtps-example-")
    spool = os.path.join(work, "spool")
    os.mkdir(spool)
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    gen = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-days", "2", "-keyout", key, "-out", cert],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
    )
    if not check(gen.returncode == 0, "certificate generated", gen.stderr.decode(errors="replace")):
        return 1

    command = [binary, spool, cert, key, "0", "0"]
    if args.valgrind:
        command = ["valgrind", "--error-exitcode=1", "--leak-check=full",
                   "--errors-for-leak-kinds=definite", "-q"] + command
    stderr_path = os.path.join(work, "stderr.txt")
    stderr_file = open(stderr_path, "wb")
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=stderr_file)
    name = os.path.basename(binary)
    exit_status = sigterm_at = None
    try:
        line = read_port_line(proc, time.monotonic() + startup)
        match = re.fullmatch(r"PORT (\d+) (\d+)", line or "")
        if not check(match is not None, f"{name} prints PORT <implicit> <starttls>", repr(line)):
            return 1
        implicit_port, starttls_port = int(match.group(1)), int(match.group(2))

        ctx = ssl.create_default_context(cafile=cert)
        body1 = message("implicit TLS", 3000)  # ~250 KB: many body chunks
        body2 = message("STARTTLS", 10)
        for what, run in (
            ("implicit TLS session", lambda: implicit_tls(implicit_port, ctx, client_timeout, body1)),
            ("STARTTLS session", lambda: starttls(starttls_port, ctx, client_timeout, body2)),
        ):
            try:
                run()
            except (OSError, smtplib.SMTPException) as e:
                check(False, what, f"{type(e).__name__}: {e}")

        new_dir, tmp_dir = os.path.join(spool, "new"), os.path.join(spool, "tmp")
        names = sorted(os.listdir(new_dir)) if os.path.isdir(new_dir) else []
        got = sorted(open(os.path.join(new_dir, n), "rb").read() for n in names)
        want = sorted([spooled(SENDER, [RCPT], body1), spooled(SENDER, [RCPT], body2)])
        check(len(names) == 2, "SPOOL/new holds two messages", repr(names))
        check(got == want, "spooled messages are byte-exact (envelope lines + message)",
              "; ".join(repr(g[:160]) for g in got))
        tmp_left = os.listdir(tmp_dir) if os.path.isdir(tmp_dir) else ["(no SPOOL/tmp)"]
        check(tmp_left == [], "SPOOL/tmp is empty", repr(tmp_left))

        # Shutdown with two transactions in the middle of DATA (dot-stuffing done by hand:
        # the lines below need none).
        body3 = message("finished after SIGTERM", 0).replace(b"\r\n.", b"\r\n_")
        body4 = message("abandoned", 0).replace(b"\r\n.", b"\r\n_")
        finishing = abandoned = None
        try:
            finishing = open_transaction(implicit_port, ctx, client_timeout, body3[:100])
            abandoned = open_transaction(implicit_port, ctx, client_timeout, body4[:100])
            check(True, "two transactions in DATA")
        except (OSError, smtplib.SMTPException, AssertionError) as e:
            check(False, "two transactions in DATA", f"{type(e).__name__}: {e!r}")
        proc.send_signal(signal.SIGTERM)
        sigterm_at = time.monotonic()
        if finishing is not None:
            try:
                finishing.send(body3[100:] + b".\r\n")
                code, text = finishing.getreply()
                check(code == 250, "SIGTERM: a message in flight is still accepted (250)",
                      f"{code} {text!r}")
            except (OSError, smtplib.SMTPException) as e:
                check(False, "SIGTERM: a message in flight is still accepted",
                      f"{type(e).__name__}: {e}")
            finishing.close()
        if abandoned is not None:
            try:
                code, text = abandoned.getreply()
                check(code == 421, "SIGTERM: a stalled message is closed with 421 after the grace",
                      f"{code} {text!r}")
            except smtplib.SMTPServerDisconnected:
                check(True, "SIGTERM: a stalled message is closed after the grace (disconnected)")
            except OSError as e:
                check(False, "SIGTERM: a stalled message is closed after the grace",
                      f"{type(e).__name__}: {e}")
            abandoned.close()
        left = exit_timeout - (time.monotonic() - sigterm_at)
        exit_status = wait_exit(proc, max(left, 0.1))

        names = sorted(os.listdir(new_dir)) if os.path.isdir(new_dir) else []
        got = sorted(open(os.path.join(new_dir, n), "rb").read() for n in names)
        want = sorted(want + [spooled(SENDER, [RCPT], body3)])
        check(got == want, "after shutdown: SPOOL/new holds the three accepted messages, byte-exact",
              repr(names))
        tmp_left = os.listdir(tmp_dir) if os.path.isdir(tmp_dir) else ["(no SPOOL/tmp)"]
        check(tmp_left == [], "after shutdown: SPOOL/tmp is empty (the abandoned message is gone)",
              repr(tmp_left))
    finally:
        if exit_status is None:
            if sigterm_at is None and proc.poll() is None:  # an early failure: stop it anyway
                proc.send_signal(signal.SIGTERM)
                exit_status = wait_exit(proc, exit_timeout)
            else:
                exit_status = proc.poll()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        stderr_file.close()

    check(exit_status == 0, f"SIGTERM: exit status 0 within {exit_timeout} s", repr(exit_status))
    log = open(stderr_path, "rb").read().decode(errors="replace")
    if args.valgrind:
        reports = [l for l in log.splitlines() if re.match(r"==\d+==", l)]
        check(not reports, "valgrind: no errors, no definite leaks", "\n".join(reports[:40]))
    if failures:
        print(f"--- {name} stderr ---\n{log}--- end of stderr ---", flush=True)
    if args.keep or failures:
        print(f"kept {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'FAIL' if failures else 'PASS'} {name}: {failures} failure(s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
