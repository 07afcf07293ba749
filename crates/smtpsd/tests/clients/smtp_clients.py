#!/usr/bin/env python3
"""Real SMTP clients for smtpsd's end-to-end tests (crates/smtpsd/tests/e2e.rs).

Each subcommand runs one client scenario against a running smtpsd: Python's own smtplib where
a real client is the point, a raw socket (plain or wrapped in `ssl`) where the test needs
control of every byte. A subcommand asserts what it sees on the wire, prints `key=value` lines
for the Rust side (which checks the maildir and the daemon's log) and exits non-zero with a
traceback on any surprise. Every socket has a 10 s timeout.
"""

import argparse
import base64
import concurrent.futures
import email
import email.policy
import smtplib
import socket
import ssl
import struct
import sys
import threading
import time

TIMEOUT = 10


def out(key, value):
    print(f"{key}={value}", flush=True)


def tls_context(args):
    """Trusts only the test certificate (it names localhost and 127.0.0.1)."""
    return ssl.create_default_context(cafile=args.cafile)


def unverified_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def unstuff(wire):
    """Undoes SMTP dot-stuffing (RFC 5321 §4.5.2) of a CRLF-only message."""
    return b"\r\n".join(
        line[1:] if line.startswith(b".") else line for line in wire.split(b"\r\n")
    )


class Recording:
    """Mixin for smtplib.SMTP(_SSL): keeps exactly what `data()` put on the wire."""

    _in_data = False

    def data(self, msg):
        self._in_data = True
        self._data_sent = []
        try:
            reply = super().data(msg)
        finally:
            self._in_data = False
        self.data_reply = reply
        return reply

    def send(self, s):
        if self._in_data:
            self._data_sent.append(s if isinstance(s, bytes) else s.encode("ascii"))
        super().send(s)

    def transmitted_message(self):
        # Sends inside data(): b"data\r\n", then the dot-stuffed message and b".\r\n".
        assert self._data_sent[0].lower() == b"data\r\n", self._data_sent[0]
        wire = b"".join(self._data_sent[1:])
        assert wire.endswith(b"\r\n.\r\n"), wire[-20:]
        return unstuff(wire[: -len(b".\r\n")])


class RecordingSMTP(Recording, smtplib.SMTP):
    pass


class RecordingSMTPSSL(Recording, smtplib.SMTP_SSL):
    pass


def connect_smtplib(args, context=None):
    context = context or tls_context(args)
    if args.tls == "implicit":
        client = RecordingSMTPSSL(args.host, args.port, timeout=TIMEOUT, context=context)
        client.ehlo()
    else:
        client = RecordingSMTP(args.host, args.port, timeout=TIMEOUT)
        client.ehlo()
        assert client.has_extn("starttls"), client.esmtp_features
        client.starttls(context=context)
        client.ehlo()
    return client


def send_proxy_header_first(header):
    """Every smtplib connection from here on starts with `header` (a PROXY protocol header),
    as if it came through a load balancer: smtplib itself then speaks unchanged."""
    original = smtplib.SMTP._get_socket

    def _get_socket(self, host, port, timeout):
        sock = original(self, host, port, timeout)
        sock.sendall(header)
        return sock

    smtplib.SMTP._get_socket = _get_socket


class Raw:
    """A line-oriented SMTP client on a raw socket, optionally upgraded to TLS."""

    def __init__(self, args, tls):
        self.sock = socket.create_connection((args.host, args.port), timeout=TIMEOUT)
        if args.proxy_header:
            self.sock.sendall(bytes.fromhex(args.proxy_header))
        self.buf = b""
        if tls:
            self.sock = tls_context(args).wrap_socket(self.sock, server_hostname="localhost")

    def starttls(self, args):
        assert self.buf == b"", f"unread plaintext before the handshake: {self.buf!r}"
        self.sock = tls_context(args).wrap_socket(self.sock, server_hostname="localhost")

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; unterminated input {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One reply, multi-line or not: (code, [lines])."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return int(lines[0][:3]), lines

    def expect(self, code, what=""):
        got, lines = self.reply()
        assert got == code, f"{what}: expected {code}, got {lines!r}"
        return lines

    def command(self, line, code):
        self.send(line + b"\r\n")
        return self.expect(code, line[:60].decode("ascii", "replace"))

    def at_eof(self):
        """True once the server has closed (nothing more arrives)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.sock.close()


def greet(args, tls=True, ehlo=b"EHLO raw.test"):
    client = Raw(args, tls)
    client.expect(220, "greeting")
    lines = client.command(ehlo, 250)
    return client, lines


# --- smtplib scenarios ---------------------------------------------------------------------


def cmd_send(args):
    """One message through smtplib: send_message (or sendmail with --raw), optional AUTH."""
    client = connect_smtplib(args)
    if args.login:
        user, password = args.login.split(":", 1)
        if args.mechanism:
            client.user, client.password = user, password
            code, text = client.auth(
                args.mechanism, getattr(client, "auth_" + args.mechanism.lower())
            )
        else:
            code, text = client.login(user, password)
        assert code == 235, (code, text)
    with open(args.message_file, "rb") as f:
        message = f.read()
    options = args.mail_option or []
    if args.raw:
        refused = client.sendmail(args.sender, [args.to], message, mail_options=options)
    else:
        parsed = email.message_from_bytes(message, policy=email.policy.default)
        refused = client.send_message(parsed, args.sender, [args.to], mail_options=options)
    assert refused == {}, refused
    code, text = client.data_reply
    assert code == 250, (code, text)
    out("data_reply", f"{code} {text.decode()}")
    with open(args.expect_out, "wb") as f:
        f.write(client.transmitted_message())
    client.quit()


def cmd_auth(args):
    """AUTH PLAIN and LOGIN: a wrong password gets 535, the right one 235."""
    user, password = args.login.split(":", 1)
    for mechanism in ("PLAIN", "LOGIN"):
        client = connect_smtplib(args)
        advertised = client.esmtp_features.get("auth", "").upper().split()
        assert mechanism in advertised, advertised
        client.user, client.password = user, password + "-wrong"
        try:
            client.auth(mechanism, getattr(client, "auth_" + mechanism.lower()))
            raise AssertionError(f"{mechanism}: a wrong password was accepted")
        except smtplib.SMTPAuthenticationError as e:
            out(f"{mechanism}_bad", f"{e.smtp_code} {e.smtp_error.decode()}")
        client.user, client.password = user, password
        code, text = client.auth(mechanism, getattr(client, "auth_" + mechanism.lower()))
        out(f"{mechanism}_good", f"{code} {text.decode()}")
        # Once authenticated, the session carries on: a second AUTH is refused with 503.
        code, text = client.docmd("NOOP")
        assert code == 250, (code, text)
        client.quit()


def cmd_auth_as(args):
    """AUTH PLAIN with a non-empty authorization identity (`--authzid`) beside the login."""
    user, password = args.login.split(":", 1)
    client = connect_smtplib(args)
    response = base64.b64encode(f"{args.authzid}\0{user}\0{password}".encode())
    code, text = client.docmd("AUTH", "PLAIN " + response.decode())
    out("reply", f"{code} {text.decode()}")
    client.quit()


def cmd_concurrent(args):
    """`--count` clients, each in its own thread and connection, all open at once."""
    barrier = threading.Barrier(args.count, timeout=TIMEOUT * 3)

    def one(index):
        client = smtplib.SMTP_SSL(
            args.host, args.port, timeout=TIMEOUT * 3, context=tls_context(args)
        )
        barrier.wait()
        message = (
            f"From: c{index}@client.test\r\nTo: box@mx.test\r\n"
            f"Subject: concurrent {index}\r\nX-Client: {index}\r\n\r\n"
            f"message from client {index}\r\n"
        ).encode()
        refused = client.sendmail(f"c{index}@client.test", ["box@mx.test"], message)
        assert refused == {}, refused
        client.quit()
        return index

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.count) as pool:
        done = sorted(pool.map(one, range(args.count)))
    assert done == list(range(args.count))
    out("sent", len(done))


# --- raw-socket scenarios ------------------------------------------------------------------


def cmd_pipeline(args):
    """RFC 2920: MAIL, two RCPTs and DATA in one write; end of data and QUIT in another."""
    client, ehlo = greet(args)
    assert b"250-PIPELINING" in ehlo or b"250 PIPELINING" in ehlo, ehlo
    client.send(
        b"MAIL FROM:<pipe@client.test>\r\nRCPT TO:<one@mx.test>\r\n"
        b"RCPT TO:<two@mx.test>\r\nDATA\r\n"
    )
    codes = [client.reply()[0] for _ in range(4)]
    assert codes == [250, 250, 250, 354], codes
    client.send(b"Subject: pipelined\r\n\r\npipelined body\r\n.\r\nQUIT\r\n")
    lines = client.expect(250, "end of data")
    client.expect(221, "QUIT")
    out("data_reply", lines[0].decode())
    out("closed", client.at_eof())


def cmd_vanish(args):
    """Two clients leave mid-DATA: one with a TCP reset, one with a plain close."""
    for how in ("reset", "close"):
        client, _ = greet(args)
        client.command(b"MAIL FROM:<gone@client.test>", 250)
        client.command(b"RCPT TO:<box@mx.test>", 250)
        client.command(b"DATA", 354)
        client.send(b"Subject: vanished\r\n\r\n" + b"half a message\r\n" * 1000 + b"no end")
        if how == "reset":
            # SO_LINGER 0: close() sends a TCP reset instead of a FIN.
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        out("vanished", how)


def cmd_idle(args):
    """Two clients fall silent, one after the greeting and one after EHLO, and wait for the
    server's 421. (Enhanced status codes are shown only after EHLO, RFC 2034.)"""
    results = {}

    def idle(after):
        client = Raw(args, args.tls == "implicit")
        client.expect(220, "greeting")
        if after == "ehlo":
            client.command(b"EHLO idle.test", 250)
        started = time.monotonic()
        code, lines = client.reply()
        results[after] = (lines[0].decode(), time.monotonic() - started, client.at_eof())

    threads = [threading.Thread(target=idle, args=(after,)) for after in ("greeting", "ehlo")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    for after, (reply, elapsed, closed) in sorted(results.items()):
        out(f"{after}_reply", reply)
        out(f"{after}_elapsed", f"{elapsed:.2f}")
        out(f"{after}_closed", closed)


def cmd_silent_handshake(args):
    """Connects to the implicit-TLS port and never sends a ClientHello."""
    sock = socket.create_connection((args.host, args.port), timeout=TIMEOUT)
    started = time.monotonic()
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    out("elapsed", f"{time.monotonic() - started:.2f}")
    # A TLS alert record (0x15) or nothing: never SMTP in clear text.
    out("received", received[:1].hex() if received else "nothing")


def cmd_oversized(args):
    """Over --max-message-size: refused when declared with SIZE and when just sent."""
    client, ehlo = greet(args)
    size = [line.decode() for line in ehlo if line[4:].startswith(b"SIZE")]
    out("size_advertised", size[0][4:] if size else "")
    client.send(b"MAIL FROM:<big@client.test> SIZE=100000\r\n")
    out("declared", client.reply()[1][0].decode())
    client.command(b"MAIL FROM:<big@client.test>", 250)
    client.command(b"RCPT TO:<box@mx.test>", 250)
    client.command(b"DATA", 354)
    client.send(b"Subject: too big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 2000)
    client.send(b".\r\n")
    out("sent", client.reply()[1][0].decode())
    client.command(b"NOOP", 250)
    client.command(b"QUIT", 221)


def cmd_connection_limit(args):
    """`--count` connections from one address are served; the next gets 421 4.7.0."""
    held = []
    for _ in range(args.count):
        client = Raw(args, tls=False)
        client.expect(220, "greeting within the limit")
        held.append(client)
    extra = Raw(args, tls=False)
    code, lines = extra.reply()
    out("over_limit", lines[0].decode())
    out("over_limit_closed", extra.at_eof())
    held.pop().command(b"QUIT", 221)
    # Once one leaves, a newcomer is served again (the server may take a moment to notice).
    deadline = time.monotonic() + TIMEOUT
    while True:
        again = Raw(args, tls=False)
        code, lines = again.reply()
        if code == 220 or time.monotonic() > deadline:
            break
        again.close()
        time.sleep(0.05)
    out("after_one_left", lines[0].decode())


def cmd_shutdown(args):
    """Sets up an in-flight transaction and an idle session, prints `ready`, waits for `go`
    on stdin (the test sends SIGTERM in between), then finishes the transaction."""
    busy, _ = greet(args)
    busy.command(b"MAIL FROM:<busy@client.test>", 250)
    busy.command(b"RCPT TO:<box@mx.test>", 250)
    busy.command(b"DATA", 354)
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
    idle, _ = greet(args)
    out("ready", 1)
    assert sys.stdin.readline().strip() == "go"
    code, lines = idle.reply()
    out("idle_reply", lines[0].decode())
    out("idle_closed", idle.at_eof())
    busy.send(b"second half\r\n.\r\n")
    code, lines = busy.reply()
    out("busy_reply", lines[0].decode())
    try:
        busy.send(b"QUIT\r\n")
        code, lines = busy.reply()
        out("busy_quit", lines[0].decode())
    except (EOFError, OSError) as e:
        out("busy_quit", f"closed ({e.__class__.__name__})")


def cmd_peer_cert(args):
    """Prints the DER of the certificate the server presents, in hex (not verified)."""
    sock = socket.create_connection((args.host, args.port), timeout=TIMEOUT)
    if args.tls == "starttls":
        client = Raw.__new__(Raw)
        client.sock, client.buf = sock, b""
        client.expect(220, "greeting")
        client.command(b"EHLO cert.test", 250)
        client.command(b"STARTTLS", 220)
        sock = client.sock
    tls = unverified_context().wrap_socket(sock, server_hostname=args.sni)
    out("der", tls.getpeercert(binary_form=True).hex())
    tls.close()


def cmd_resumption(args):
    """Two implicit-TLS sessions with one client context (OpenSSL): whether the first got a
    session ticket, and whether the second resumed with it."""
    context = tls_context(args)
    first = context.wrap_socket(
        socket.create_connection((args.host, args.port), timeout=TIMEOUT),
        server_hostname="localhost",
    )
    client = Raw.__new__(Raw)
    client.sock, client.buf = first, b""
    client.expect(220, "greeting")
    client.command(b"QUIT", 221)
    session = first.session
    out("ticket", bool(session is not None and session.has_ticket))
    first.close()
    second = context.wrap_socket(
        socket.create_connection((args.host, args.port), timeout=TIMEOUT),
        server_hostname="localhost",
        session=session,
    )
    client.sock, client.buf = second, b""
    client.expect(220, "greeting")
    client.command(b"QUIT", 221)
    out("reused", second.session_reused)
    second.close()


def cmd_starttls_injection(args):
    """CVE-2011-0411 style: a command pipelined behind STARTTLS in the same plaintext write
    must not be executed inside the TLS session."""
    client = Raw(args, tls=False)
    client.expect(220, "greeting")
    client.command(b"EHLO inject.test", 250)
    client.send(b"STARTTLS\r\nMAIL FROM:<evil@inject.test>\r\n")
    client.expect(220, "STARTTLS")
    out("plaintext_after_220", repr(client.buf))
    client.buf = b""
    try:
        client.sock = tls_context(args).wrap_socket(client.sock, server_hostname="localhost")
    except (ssl.SSLError, OSError) as e:
        # Taking the injected bytes as the start of the handshake also keeps them unexecuted.
        out("handshake", f"failed ({e.__class__.__name__}: {e})")
        return
    out("handshake", "ok")
    # Anything the server says now, before we speak, would be the answer to the injection.
    client.sock.settimeout(1.0)
    try:
        early = client.sock.recv(4096)
        out("early", "closed" if early == b"" else repr(early))
        if early == b"":
            return
        raise AssertionError(f"the server answered the injected command: {early!r}")
    except (socket.timeout, TimeoutError):
        out("early", "none")
    client.sock.settimeout(TIMEOUT)
    client.command(b"EHLO inject.test", 250)
    client.command(b"MAIL FROM:<good@inject.test>", 250)
    client.command(b"QUIT", 221)


def cmd_smuggle(args):
    """`\\n.\\n` is not an end of data: only CRLF.CRLF ends the message (SMTP smuggling)."""
    client, _ = greet(args)
    client.command(b"MAIL FROM:<outer@client.test>", 250)
    client.command(b"RCPT TO:<box@mx.test>", 250)
    client.command(b"DATA", 354)
    # Three false ends: LF.LF, CRLF LF.CRLF (a dot after a bare LF) and CRLF.LF.
    client.send(
        b"Subject: outer\r\n\r\nouter body\n.\n"
        b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@mx.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nsmuggled body\r\n\n.\r\n"
        b"still the outer message\r\n.\n"
        b"last line\r\n.\r\n"
    )
    lines = client.expect(250, "end of data")
    out("data_reply", lines[0].decode())
    # Nothing else must have been answered: the next reply is QUIT's.
    client.send(b"QUIT\r\n")
    client.expect(221, "QUIT")


def cmd_plaintext_auth(args):
    """On a STARTTLS port before TLS, AUTH is neither advertised nor accepted."""
    client, ehlo = greet(args, tls=False)
    advertised = [line.decode() for line in ehlo if line[4:].upper().startswith(b"AUTH")]
    out("auth_advertised", advertised)
    credentials = base64.b64encode(b"\0alice\0secret")
    for line in (b"AUTH PLAIN " + credentials, b"AUTH LOGIN"):
        client.send(line + b"\r\n")
        code, lines = client.reply()
        out(line.split()[1].decode(), lines[0].decode())
        assert 500 <= code < 600, lines
    client.command(b"QUIT", 221)


def cmd_long_line(args):
    """A 100 KB command line gets 500; the session goes on and can deliver."""
    client, _ = greet(args)
    client.send(b"NOOP " + b"x" * 100_000 + b"\r\n")
    code, lines = client.reply()
    out("long_reply", lines[0].decode())
    assert code == 500, lines
    client.command(b"NOOP", 250)
    client.command(b"MAIL FROM:<long@client.test>", 250)
    client.command(b"RCPT TO:<box@mx.test>", 250)
    client.command(b"DATA", 354)
    client.command(b"Subject: after a long line\r\n\r\nstill here\r\n.", 250)
    client.command(b"QUIT", 221)


def cmd_many_rcpts(args):
    """1000 RCPTs in one write: the first 100 get 250, the rest 452 4.5.3."""
    client, _ = greet(args)
    client.command(b"MAIL FROM:<many@client.test>", 250)
    client.send(b"".join(b"RCPT TO:<r%d@mx.test>\r\n" % i for i in range(1000)))
    replies = [client.reply()[1][0] for _ in range(1000)]
    accepted = sum(1 for r in replies if r.startswith(b"250"))
    over = [r for r in replies if not r.startswith(b"250")]
    out("accepted", accepted)
    out("refused", len(over))
    out("first_refusal", over[0].decode() if over else "")
    out("refusals_alike", all(r == over[0] for r in over))
    assert replies[:accepted] == [r for r in replies if r.startswith(b"250")]
    client.command(b"DATA", 354)
    lines = client.command(b"Subject: many\r\n\r\nto a hundred\r\n.", 250)
    out("data_reply", lines[0].decode())
    client.command(b"QUIT", 221)


def cmd_drip(args):
    """One client sends a transaction a byte every 50 ms; meanwhile others are served."""
    others = []

    def normal_clients():
        for index in range(3):
            client = smtplib.SMTP_SSL(args.host, args.port, timeout=TIMEOUT, context=tls_context(args))
            message = f"Subject: beside the drip {index}\r\n\r\nquick\r\n".encode()
            assert client.sendmail("quick@client.test", ["box@mx.test"], message) == {}
            client.quit()
            others.append(time.monotonic())

    client = Raw(args, tls=True)
    client.expect(220, "greeting")
    started = time.monotonic()
    thread = threading.Thread(target=normal_clients)
    thread.start()

    def drip(line, code):
        for byte in line + b"\r\n":
            client.send(bytes([byte]))
            time.sleep(0.05)
        return client.expect(code, line.decode())

    # 70 bytes: three and a half seconds.
    drip(b"EHLO d", 250)
    drip(b"MAIL FROM:<d@c.t>", 250)
    drip(b"RCPT TO:<b@m.t>", 250)
    drip(b"DATA", 354)
    lines = drip(b"Subject: d\r\n\r\ns\r\n.", 250)
    finished = time.monotonic()
    thread.join(TIMEOUT)
    client.command(b"QUIT", 221)
    out("drip_seconds", f"{finished - started:.2f}")
    out("data_reply", lines[0].decode())
    out("others_done", len(others))
    out("others_before_drip_end", sum(1 for t in others if t < finished))


def cmd_no_banner(args):
    """The server closes without a word (a PROXY listener refusing a connection)."""
    sock = socket.create_connection((args.host, args.port), timeout=TIMEOUT)
    if args.proxy_header:
        sock.sendall(bytes.fromhex(args.proxy_header))
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    assert received == b"", f"expected no banner, got {received!r}"
    out("closed", "without a banner")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--tls", choices=["implicit", "starttls"], default="implicit")
    parser.add_argument("--login", help="USER:PASSWORD")
    parser.add_argument("--mechanism", choices=["PLAIN", "LOGIN"])
    parser.add_argument("--message-file")
    parser.add_argument("--expect-out")
    parser.add_argument("--raw", action="store_true", help="sendmail() instead of send_message()")
    parser.add_argument("--mail-option", action="append")
    parser.add_argument("--sender", default="sender@client.test")
    parser.add_argument("--to", default="box@mx.test")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--authzid", help="authorization identity for auth-as")
    parser.add_argument("--sni", default="localhost", help="server name for peer-cert")
    parser.add_argument("--proxy-header", help="hex octets every connection sends first")
    parser.add_argument("scenario")
    args = parser.parse_args()
    if args.proxy_header:
        send_proxy_header_first(bytes.fromhex(args.proxy_header))
    globals()["cmd_" + args.scenario.replace("-", "_")](args)


if __name__ == "__main__":
    main()
