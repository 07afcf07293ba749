#!/usr/bin/env python3
"""Clients for smtpsd's engine tests (crates/smtpsd/tests/engine.rs): the regressions of the
mio worker rewritten as a driver of `smtps_conn::Connection`.

Subcommands (output is `key=value` lines; any surprise exits non-zero with a traceback):

  bulk      --sessions S sessions at once, each sending --per-session messages of --size
            octets with smtplib (SMTP_SSL, or SMTP + starttls()). Every final reply must be
            250. Each message is determined by its tag (seed and size), so `check` can rebuild
            it; the tags go into a ledger (JSON lines).
  check     every message of the ledgers is in the maildir's new/ exactly once and, apart from
            the Received: header smtpsd prepends, byte-exact (its length and SHA-256 as sent;
            a message that differs is rebuilt to show where); no other file is there.
  abandon   one abandoned connection of one --stage (see STAGES), repeated --repeat times.
  banner    a new connection gets a `220` greeting (after the TLS handshake on implicit TLS).
  pipelined-starttls
            4000 EHLOs and a STARTTLS in one write: 4000 EHLO replies, then 220, then a TLS
            handshake on the same socket and an EHLO inside TLS.

Every socket has a timeout (10 s, `bulk` 120 s) and every loop a deadline or a count. Only
127.0.0.1 is used.
"""

import argparse
import hashlib
import json
import os
import random
import smtplib
import socket
import ssl
import struct
import threading
import time

TIMEOUT = 10.0
BULK_TIMEOUT = 120.0
MESSAGE_ID = b"Message-ID: <"


def out(key, value):
    print(f"{key}={value}", flush=True)


def tls_context(args):
    """Trusts only the test certificate (it names localhost and 127.0.0.1)."""
    return ssl.create_default_context(cafile=args.cafile)


# --- messages -------------------------------------------------------------------------------

# Random octets become printable ASCII and tabs: no CR, no LF, nothing outside 7 bits.
ALPHABET = bytes(range(0x20, 0x7F)) + b"\t"
TABLE = bytes(ALPHABET[i % len(ALPHABET)] for i in range(256))
LONGEST_LINE = 998


def make_message(tag, size):
    """The message named `tag`, about `size` octets: a few headers, then lines of random
    printable ASCII of 0 to 998 octets with CRLF ends. Every eighth line starts with a dot,
    some are a lone `.` or `..`, and some are exactly 998 octets long."""
    rng = random.Random(tag)
    head = (
        f"From: <bulk@client.test>\r\nTo: <box@mx.test>\r\nSubject: engine {tag}\r\n"
        f"Message-ID: <{tag}@client.test>\r\n\r\n"
    ).encode()
    pool = rng.randbytes(size + LONGEST_LINE).translate(TABLE)
    parts = [head]
    total = len(head)
    at = 0
    n = 0
    while total < size:
        n += 1
        if n % 101 == 0:
            line = b"."
        elif n % 103 == 0:
            line = b".."
        elif n % 37 == 0:
            line = pool[at : at + LONGEST_LINE]
        else:
            width = min(rng.randint(0, LONGEST_LINE), size - total)
            line = pool[at : at + width]
            if n % 8 == 0:
                line = b"." + line[1:]
        at = (at + len(line)) % size
        parts.append(line + b"\r\n")
        total += len(line) + 2
    return b"".join(parts)


def split_received(stored):
    """The stored file without the Received: header smtpsd prepends (continuations too)."""
    assert stored.startswith(b"Received: "), stored[:100]
    end = 0
    while True:
        end = stored.index(b"\r\n", end) + 2
        if stored[end : end + 1] not in (b" ", b"\t"):
            return stored[end:]


def message_tag(body):
    start = body.index(MESSAGE_ID) + len(MESSAGE_ID)
    return body[start : body.index(b"@", start)].decode()


# --- bulk and check -------------------------------------------------------------------------


def connect_smtplib(args):
    context = tls_context(args)
    if args.tls == "implicit":
        client = smtplib.SMTP_SSL(args.host, args.port, timeout=BULK_TIMEOUT, context=context)
        client.ehlo()
    else:
        client = smtplib.SMTP(args.host, args.port, timeout=BULK_TIMEOUT)
        client.ehlo()
        assert client.has_extn("starttls"), client.esmtp_features
        client.starttls(context=context)
        client.ehlo()
    return client


def cmd_bulk(args):
    errors = []
    acked = []
    lock = threading.Lock()

    def session(index):
        client = connect_smtplib(args)
        for n in range(args.per_session):
            tag = f"{args.prefix}-{index}-{n}"
            message = make_message(tag, args.size)
            code, text = client.mail("bulk@client.test")
            assert code == 250, (tag, "MAIL", code, text)
            code, text = client.rcpt("box@mx.test")
            assert code == 250, (tag, "RCPT", code, text)
            # smtplib dot-stuffs and adds the end of data; the message already ends in CRLF,
            # so what it transmits is the message itself.
            code, text = client.data(message)
            if code != 250:
                raise AssertionError(f"{tag}: {code} {text!r} after the final dot")
            with lock:
                acked.append(
                    {
                        "tag": tag,
                        "size": args.size,
                        "len": len(message),
                        "sha256": hashlib.sha256(message).hexdigest(),
                    }
                )
        code, text = client.quit()
        assert code == 221, (code, text)

    def guarded(index):
        try:
            session(index)
        except Exception as e:  # noqa: BLE001 - reported below, with the session
            with lock:
                errors.append(f"session {index}: {e!r}")

    started = time.monotonic()
    threads = [
        threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(args.sessions)
    ]
    for thread in threads:
        thread.start()
    # Each message may take a socket timeout per step; the count of steps bounds the wait.
    limit = started + BULK_TIMEOUT * (args.per_session + 2)
    for thread in threads:
        thread.join(max(0.0, limit - time.monotonic()))
    hung = sum(1 for t in threads if t.is_alive())
    with open(args.ledger, "w") as f:
        for entry in acked:
            f.write(json.dumps(entry) + "\n")
    out("acked", len(acked))
    out("octets", sum(e["len"] for e in acked))
    out("seconds", f"{time.monotonic() - started:.1f}")
    out("hung", hung)
    for i, error in enumerate(errors):
        out(f"error{i}", error)
    assert hung == 0 and not errors, (hung, errors)


def cmd_check(args):
    expected = {}
    for path in args.ledgers:
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                expected[entry["tag"]] = entry
    seen = {}
    violations = []
    new = os.path.join(args.maildir, "new")
    for name in sorted(os.listdir(new)):
        with open(os.path.join(new, name), "rb") as f:
            body = split_received(f.read())
        tag = message_tag(body)
        seen[tag] = seen.get(tag, 0) + 1
        entry = expected.get(tag)
        if entry is None:
            violations.append(f"{name}: {tag} is not in the ledger")
            continue
        if len(body) == entry["len"] and hashlib.sha256(body).hexdigest() == entry["sha256"]:
            continue
        # Rebuilt only to show where it differs.
        sent = make_message(tag, entry["size"])
        if body != sent:
            at = next(
                (i for i, (a, b) in enumerate(zip(body, sent)) if a != b),
                min(len(body), len(sent)),
            )
            around = slice(max(0, at - 20), at + 20)
            violations.append(
                f"{name}: {tag} differs at octet {at} ({len(body)} stored, {len(sent)} sent): "
                f"stored {body[around]!r}, sent {sent[around]!r}"
            )
        else:
            violations.append(f"{name}: {tag} matches its rebuild but not the ledger's digest")
    for tag in expected:
        if seen.get(tag, 0) != 1:
            violations.append(f"{tag}: acknowledged, stored {seen.get(tag, 0)} times")
    out("expected", len(expected))
    out("stored", sum(seen.values()))
    out("tmp_files", len(os.listdir(os.path.join(args.maildir, "tmp"))))
    out("violations", len(violations))
    for i, violation in enumerate(violations[:20]):
        out(f"violation{i}", violation)
    assert not violations, violations[:5]


# --- abandoned connections ------------------------------------------------------------------


class Bio:
    """TLS on a memory BIO over a blocking socket: every record is ours to send or withhold,
    and the server's close_notify is told apart from a bare end of stream."""

    def __init__(self, args, sock):
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = tls_context(args).wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost"
        )
        self.plain = b""

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def pump(self):
        """One read from the socket into the BIO; False at the end of stream."""
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def hello(self):
        """Sends the ClientHello and waits for the first octets of the server's answer."""
        try:
            self.tls.do_handshake()
            raise AssertionError("handshake done without an answer")
        except ssl.SSLWantReadError:
            self.flush()
        assert self.pump(), "closed after the ClientHello"

    def handshake(self):
        for _ in range(100):
            try:
                self.tls.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                self.flush()
                if not self.pump():
                    raise EOFError("closed during the handshake")
        raise AssertionError("handshake did not finish in 100 reads")

    def send(self, data):
        self.tls.write(data)
        self.flush()

    def reply(self):
        """One SMTP reply: its first line."""
        for _ in range(1000):
            while b"\r\n" in self.plain:
                line, self.plain = self.plain.split(b"\r\n", 1)
                if line[3:4] != b"-":
                    return line
            try:
                self.plain += self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self.pump():
                    raise EOFError(f"closed; unterminated {self.plain!r}")
        raise AssertionError("no reply in 1000 reads")

    def close_notify_and_wait(self, timeout):
        """Sends close_notify, then reads until the server's close_notify and the end of the
        stream. Returns what came: `close_notify+eof`, `eof` (a FIN without close_notify),
        `reset`, or `timeout`."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        self.flush()
        deadline = time.monotonic() + timeout
        got_notify = False
        extra = b""
        self.sock.settimeout(timeout)
        while time.monotonic() < deadline:
            if not got_notify:
                try:
                    extra += self.tls.read(65536)
                    continue
                except ssl.SSLZeroReturnError:
                    got_notify = True
                    continue
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLEOFError:
                    return "eof", extra
            try:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except ConnectionResetError:
                return "reset", extra
            if not data:
                return ("close_notify+eof" if got_notify else "eof"), extra
            if got_notify:
                extra += data
            else:
                self.incoming.write(data)
        return ("close_notify+timeout" if got_notify else "timeout"), extra


def reset(sock):
    """SO_LINGER 0: close() sends a TCP reset instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def plain_connect(args):
    return socket.create_connection((args.host, args.port), timeout=TIMEOUT)


def read_reply(sock, buf=b""):
    """One plaintext reply (first line) and what was read past it."""
    for _ in range(1000):
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                return line, buf
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed; unterminated {buf!r}")
        buf += chunk
    raise AssertionError("no reply in 1000 reads")


def to_tls_start(args):
    """A socket where the server expects a ClientHello: just connected on the implicit-TLS
    port; after EHLO, STARTTLS and its 220 on the STARTTLS port."""
    sock = plain_connect(args)
    if args.tls == "starttls":
        line, rest = read_reply(sock)
        assert line.startswith(b"220 "), line
        sock.sendall(b"EHLO abandon.test\r\n")
        line, rest = read_reply(sock, rest)
        assert line.startswith(b"250 "), line
        sock.sendall(b"STARTTLS\r\n")
        line, rest = read_reply(sock, rest)
        assert line.startswith(b"220 "), line
        assert rest == b"", rest
    return sock


def tls_session(args):
    """A finished handshake (after STARTTLS on that port), the greeting read on implicit TLS
    and an EHLO answered inside TLS on STARTTLS: nothing unread is left."""
    bio = Bio(args, to_tls_start(args))
    bio.handshake()
    if args.tls == "implicit":
        line = bio.reply()
        assert line.startswith(b"220 "), line
    else:
        bio.send(b"EHLO abandon.test\r\n")
        line = bio.reply()
        assert line.startswith(b"250 "), line
    return bio


def stage_connect_close(args):
    """(a) TCP connect, then close."""
    plain_connect(args).close()


def stage_partial_hello(args):
    """(b) Five octets of a ClientHello record header, then close."""
    sock = to_tls_start(args)
    sock.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00]))
    sock.close()


def stage_handshake_close(args):
    """(c) A complete handshake, then close without reading anything."""
    bio = Bio(args, to_tls_start(args))
    bio.handshake()
    bio.sock.close()


def stage_banner_close(args):
    """(d) Read the greeting (inside TLS on implicit TLS), then close."""
    if args.tls == "implicit":
        bio = Bio(args, plain_connect(args))
        bio.handshake()
        line = bio.reply()
        sock = bio.sock
    else:
        sock = plain_connect(args)
        line, _ = read_reply(sock)
    assert line.startswith(b"220 "), line
    sock.close()


def stage_reset_handshake(args):
    """(e) A ClientHello, the first octets of the server's answer, then a TCP reset."""
    bio = Bio(args, to_tls_start(args))
    bio.hello()
    reset(bio.sock)


def stage_close_notify_wait(args):
    """(g) close_notify, then wait: the server must answer with its own close_notify or end
    the stream, within the timeout."""
    bio = tls_session(args)
    outcome, extra = bio.close_notify_and_wait(args.wait)
    out("close_outcome", outcome)
    out("close_extra", repr(extra[:200]))
    bio.sock.close()


STAGES = {
    "connect-close": stage_connect_close,
    "partial-hello": stage_partial_hello,
    "handshake-close": stage_handshake_close,
    "banner-close": stage_banner_close,
    "reset-handshake": stage_reset_handshake,
    "close-notify-wait": stage_close_notify_wait,
}


def cmd_abandon(args):
    for _ in range(args.repeat):
        STAGES[args.stage](args)
    out("done", args.repeat)


def cmd_banner(args):
    if args.tls == "implicit":
        bio = Bio(args, plain_connect(args))
        bio.handshake()
        line = bio.reply()
    else:
        sock = plain_connect(args)
        line, _ = read_reply(sock)
        sock.close()
    out("banner", line.decode())


# --- pipelining -----------------------------------------------------------------------------


def cmd_pipelined_starttls(args):
    sock = plain_connect(args)
    sock.settimeout(TIMEOUT * 3)
    line, rest = read_reply(sock)
    assert line.startswith(b"220 "), line
    sock.sendall(b"EHLO c.test\r\n" * args.count + b"STARTTLS\r\n")
    ehlo = 0
    others = []
    for _ in range(args.count + 1):
        line, rest = read_reply(sock, rest)
        if line.startswith(b"250 ") and not others:
            ehlo += 1
        else:
            others.append(line.decode())
    out("ehlo_replies", ehlo)
    out("after", others[:3])
    out("unread_after_220", len(rest))
    assert ehlo == args.count and len(others) == 1 and others[0].startswith("220 "), (ehlo, others)
    assert rest == b"", rest[:100]
    tls = tls_context(args).wrap_socket(sock, server_hostname="localhost")
    out("tls_version", tls.version())
    tls.sendall(b"EHLO c.test\r\n")
    line, rest = read_reply(tls)
    out("ehlo_in_tls", line.decode())
    assert line.startswith(b"250 "), line
    tls.sendall(b"QUIT\r\n")
    line, rest = read_reply(tls, rest)
    assert line.startswith(b"221 "), line
    tls.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--cafile")
    p.add_argument("--tls", choices=["implicit", "starttls"], default="implicit")
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--per-session", type=int, default=1)
    p.add_argument("--size", type=int, default=5 * 1024 * 1024)
    p.add_argument("--prefix", default="m")
    p.add_argument("--ledger")
    p.add_argument("--maildir")
    p.add_argument("--stage", choices=sorted(STAGES))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--wait", type=float, default=5.0, help="close-notify-wait: how long")
    p.add_argument("--count", type=int, default=4000, help="pipelined-starttls: EHLOs")
    p.add_argument("scenario", choices=["bulk", "check", "abandon", "banner", "pipelined-starttls"])
    p.add_argument("ledgers", nargs="*", help="check: ledger files")
    args = p.parse_args()
    {
        "bulk": cmd_bulk,
        "check": cmd_check,
        "abandon": cmd_abandon,
        "banner": cmd_banner,
        "pipelined-starttls": cmd_pipelined_starttls,
    }[args.scenario](args)


if __name__ == "__main__":
    main()
