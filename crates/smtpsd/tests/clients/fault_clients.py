#!/usr/bin/env python3
"""Load, abuse and ledger checks for smtpsd's fault tests (crates/smtpsd/tests/faults.rs) and
the soak run (scripts/soak.sh).

Subcommands:

  load   senders (and optionally a latency probe, handshake loopers and abusive clients) run
         against a running smtpsd until a deadline, a stop file, or (--until-refused) until the
         daemon stops accepting connections. Every transaction goes into a ledger (JSON lines):
         its id, the SHA-256 and length of the exact message bytes, and its outcome:
           acked    the final reply to the data was 250
           refused  a definite 4xx/5xx reply ended the transaction (MAIL, RCPT, DATA or data)
           aborted  the connection broke before the end of data was sent
           unknown  the end of data was sent but no reply came (the daemon died meanwhile)
         With --scan DIR, a thread re-reads DIR/new/ every 20 ms during the run and checks
         every file it finds against the ledger's expected bytes: a partial or foreign file
         there is counted as `scan_bad`.
  check  compares a maildir with one or more ledgers: every acked message is stored exactly
         once and byte-exact (apart from the Received: header smtpsd prepends); nothing
         refused or aborted is stored; an unknown one is stored at most once, byte-exact; no
         file without a ledger entry. Exits 1 on a violation.
  probe  one well-behaved session, timed.

Every socket has a timeout (10 s unless told), every loop a deadline. Only loopback
addresses are used: the listener's (127.0.0.1) and, for floods, other 127.0.0.0/8 sources.
Output is `key=value` lines.
"""

import argparse
import hashlib
import json
import os
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time

TIMEOUT = 10.0
# session --tail-bytes: how the end of each message is sent (0: in one write with the rest).
TAIL = [0]
ID_HEADER = b"X-Fault-Id: "


def out(key, value):
    print(f"{key}={value}", flush=True)


# --- messages -------------------------------------------------------------------------------


def make_message(mid, big=False, size=None):
    """A message determined by its id: headers naming the id, lines of printable ASCII, every
    ninth line dot-leading (to exercise dot-stuffing), CRLF line ends."""
    rng = random.Random(mid)
    size = size or rng.randint(64 * 1024, 256 * 1024) if big or size else rng.choice(
        [rng.randint(200, 2000), rng.randint(2000, 20000), rng.randint(20000, 60000)]
    )
    head = (
        f"From: <s@client.test>\r\nTo: <box@mx.test>\r\nSubject: fault {mid}\r\n"
        f"Message-ID: <{mid}@client.test>\r\n"
    ).encode() + ID_HEADER + mid.encode() + b"\r\n\r\n"
    lines = [head]
    total = len(head)
    n = 0
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_=+"
    while total < size:
        width = rng.randint(0, 76)
        text = "".join(rng.choice(alphabet) for _ in range(width))
        if n % 9 == 4:
            text = "." + text
        if n == 7:
            text = "."
        line = text.encode() + b"\r\n"
        lines.append(line)
        total += len(line)
        n += 1
    return b"".join(lines)


def stuff(message):
    """Dot-stuffing (RFC 5321 §4.5.2) of a CRLF message, plus the end-of-data line."""
    assert message.endswith(b"\r\n")
    body = b"\r\n".join(b"." + l if l.startswith(b".") else l for l in message[:-2].split(b"\r\n"))
    return body + b"\r\n.\r\n"


def digest(data):
    return hashlib.sha256(data).hexdigest()


def split_received(stored):
    """The file minus its first header (smtpsd's Received:, with its folded lines)."""
    if not stored.startswith(b"Received: "):
        return None
    end = 0
    while True:
        nl = stored.find(b"\r\n", end)
        if nl < 0:
            return None
        end = nl + 2
        if stored[end : end + 1] not in (b" ", b"\t"):
            return stored[end:]


def message_id(body):
    m = re.search(rb"^X-Fault-Id: (\S+)\r$", body, re.M)
    return m.group(1).decode() if m else None


# --- the ledger -----------------------------------------------------------------------------


class Ledger:
    def __init__(self, prefix):
        self.prefix = prefix
        self.lock = threading.Lock()
        self.entries = {}
        self.counter = 0

    def new_id(self, kind="m"):
        with self.lock:
            self.counter += 1
            return f"{self.prefix}-{kind}{self.counter}"

    def register(self, mid, message):
        with self.lock:
            self.entries[mid] = {
                "id": mid,
                "sha256": digest(message),
                "len": len(message),
                "outcome": "pending",
                "reply": "",
            }

    def settle(self, mid, outcome, reply=""):
        with self.lock:
            self.entries[mid]["outcome"] = outcome
            self.entries[mid]["reply"] = reply

    def expected(self, mid):
        with self.lock:
            entry = self.entries.get(mid)
            return entry and entry["sha256"]

    def counts(self):
        with self.lock:
            counts = {}
            for e in self.entries.values():
                counts[e["outcome"]] = counts.get(e["outcome"], 0) + 1
            return counts

    def write(self, path):
        with self.lock, open(path, "w") as f:
            for e in self.entries.values():
                f.write(json.dumps(e) + "\n")


# --- a raw SMTP client ----------------------------------------------------------------------


class Refused(Exception):
    """A definite 4xx/5xx reply where a positive one was needed."""

    def __init__(self, code, line):
        super().__init__(line)
        self.code, self.line = code, line


class Conn:
    def __init__(self, opts, mode, source=None, timeout=TIMEOUT, ehlo=True):
        self.opts = opts
        port = opts.implicit_port if mode == "implicit" else opts.starttls_port
        src = (source, 0) if source else None
        self.sock = socket.create_connection((opts.host, port), timeout=timeout, source_address=src)
        self.buf = b""
        if mode == "implicit":
            self.sock = opts.context.wrap_socket(self.sock, server_hostname="localhost")
        self.expect(220)
        if mode == "starttls":
            self.command(b"EHLO fault.test", 250)
            self.command(b"STARTTLS", 220)
            assert self.buf == b""
            self.sock = opts.context.wrap_socket(self.sock, server_hostname="localhost")
        if ehlo:
            self.ehlo = self.command(b"EHLO fault.test", 250)

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return int(lines[0][:3]), lines

    def expect(self, code):
        got, lines = self.reply()
        if got != code:
            raise Refused(got, lines[0].decode("ascii", "replace"))
        return lines

    def command(self, line, code):
        self.send(line + b"\r\n")
        return self.expect(code)

    def closed_by_server(self, timeout):
        """Waits up to `timeout` for the server to close; True if it did."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except (OSError, ssl.SSLError):
            return True

    def reset(self):
        """Leaves with a TCP reset (SO_LINGER 0)."""
        try:
            raw = self.sock
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def transaction(conn, ledger, mid, message, stats, wire=None):
    """MAIL, RCPT, DATA, the message: settles `mid` in the ledger. Returns True on 250.
    `wire` (with its end of data) is sent instead of the stuffed message, which is then the
    bytes expected in the maildir."""
    ledger.register(mid, message)
    dot_sent = False
    try:
        conn.command(b"MAIL FROM:<s@client.test>", 250)
        conn.command(b"RCPT TO:<box@mx.test>", 250)
        conn.command(b"DATA", 354)
        wire = wire if wire is not None else stuff(message)
        if TAIL[0]:
            # All but the last bytes, a pause (the server takes them in), then the rest with
            # the end of data in one write.
            conn.send(wire[: -TAIL[0]])
            time.sleep(0.3)
            conn.send(wire[-TAIL[0] :])
        else:
            conn.send(wire)
        dot_sent = True
        lines = conn.expect(250)
        ledger.settle(mid, "acked", lines[0].decode())
        return True
    except Refused as e:
        ledger.settle(mid, "refused", e.line)
        stats.add(f"refused_{e.code}")
        raise
    except (OSError, EOFError, ssl.SSLError) as e:
        ledger.settle(mid, "unknown" if dot_sent else "aborted", repr(e))
        raise


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.samples = {}
        self.notes = []

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def sample(self, key, value):
        with self.lock:
            self.samples.setdefault(key, []).append(value)

    def note(self, text):
        with self.lock:
            if len(self.notes) < 20:
                self.notes.append(text)


# --- well-behaved clients -------------------------------------------------------------------


class Stop:
    def __init__(self, opts):
        self.deadline = time.monotonic() + opts.duration
        self.stop_file = opts.stop_file
        self.refused = threading.Event()
        self.until_refused = opts.until_refused

    def __call__(self):
        if time.monotonic() >= self.deadline:
            return True
        if self.stop_file and os.path.exists(self.stop_file):
            return True
        return self.until_refused and self.refused.is_set()


def sender(opts, ledger, stats, stop, index):
    rng = random.Random(f"{opts.prefix}-sender-{index}")
    while not stop():
        mode = "implicit" if rng.random() < 0.5 or not opts.starttls_port else "starttls"
        try:
            conn = Conn(opts, mode)
        except ConnectionRefusedError:
            stop.refused.set()
            stats.add("connect_refused")
            time.sleep(0.05)
            continue
        except Refused as e:
            stats.add(f"greeting_{e.code}")
            time.sleep(0.05)
            continue
        except (OSError, EOFError, ssl.SSLError) as e:
            stats.add("connect_failed")
            stats.note(f"sender connect: {e!r}")
            time.sleep(0.05)
            continue
        stats.add("sessions")
        try:
            for _ in range(rng.randint(1, 4)):
                if stop() and not opts.until_refused:
                    break
                mid = ledger.new_id("s")
                transaction(conn, ledger, mid, make_message(mid, big=rng.random() < 0.03), stats)
                stats.add("sent")
            conn.command(b"QUIT", 221)
        except Refused as e:
            stats.add("transactions_refused")
            if e.code == 421:
                stats.add("got_421")
        except (OSError, EOFError, ssl.SSLError) as e:
            stats.add("broken_sessions")
            stats.note(f"sender: {e!r}")
        finally:
            conn.close()


def probe_once(opts, ledger, stats):
    """One full session: connect, TLS, EHLO, one small message, QUIT. Returns seconds."""
    started = time.monotonic()
    conn = Conn(opts, "implicit")
    mid = ledger.new_id("p")
    rng = random.Random(mid)
    message = make_message(mid)[: 400 + rng.randint(0, 200)]
    message = message[: message.rfind(b"\r\n") + 2]
    transaction(conn, ledger, mid, message, stats)
    conn.command(b"QUIT", 221)
    conn.close()
    return time.monotonic() - started


def prober(opts, ledger, stats, stop):
    while not stop():
        try:
            stats.sample("probe", probe_once(opts, ledger, stats))
        except Exception as e:  # noqa: BLE001 - a failed probe is the finding
            stats.add("probe_failed")
            stats.note(f"probe: {e!r}")
        time.sleep(opts.probe_interval)


def handshaker(opts, stats, stop, index):
    """Connects and completes TLS (both listener kinds) in a loop: for certificate reload."""
    n = 0
    while not stop():
        mode = "implicit" if (n + index) % 2 == 0 else "starttls"
        n += 1
        try:
            conn = Conn(opts, mode)
            der = conn.sock.getpeercert(binary_form=True)
            stats.add("cert_" + hashlib.sha256(der).hexdigest()[:12])
            conn.command(b"QUIT", 221)
            conn.close()
            stats.add("handshakes")
        except Exception as e:  # noqa: BLE001
            stats.add("handshake_failures")
            stats.note(f"handshake ({mode}): {e!r}")


# --- abusive clients ------------------------------------------------------------------------


def client_hello_prefix():
    """The first bytes of a TLS ClientHello record: enough to start the server's handshake."""
    return b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(32)


def abuse_vanish_handshake(opts, ledger, stats, rng):
    sock = socket.create_connection((opts.host, opts.implicit_port), timeout=TIMEOUT)
    sock.sendall(client_hello_prefix())
    if rng.random() < 0.5:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def abuse_vanish_command(opts, ledger, stats, rng):
    conn = Conn(opts, rng.choice(["implicit", "starttls"]))
    conn.send(b"MAIL FROM:<half-a-comm")
    conn.reset() if rng.random() < 0.5 else conn.close()


def abuse_vanish_data(opts, ledger, stats, rng):
    conn = Conn(opts, "implicit")
    mid = ledger.new_id("vd")
    message = make_message(mid, big=True)
    ledger.register(mid, message)
    conn.command(b"MAIL FROM:<s@client.test>", 250)
    conn.command(b"RCPT TO:<box@mx.test>", 250)
    conn.command(b"DATA", 354)
    wire = stuff(message)
    conn.send(wire[: rng.randint(1, len(wire) - 6)])
    ledger.settle(mid, "aborted", "vanished mid-DATA")
    conn.reset() if rng.random() < 0.5 else conn.close()


def abuse_vanish_bdat(opts, ledger, stats, rng):
    conn = Conn(opts, "implicit")
    if not any(b"CHUNKING" in line for line in conn.ehlo):
        stats.add("bdat_not_offered")
        conn.close()
        return
    mid = ledger.new_id("vb")
    message = make_message(mid)
    ledger.register(mid, message)
    conn.command(b"MAIL FROM:<s@client.test>", 250)
    conn.command(b"RCPT TO:<box@mx.test>", 250)
    rest = message
    if rng.random() < 0.5:
        # A first, complete chunk; the connection goes in the middle of the second.
        half = len(message) // 2
        conn.send(b"BDAT %d\r\n" % half + message[:half])
        conn.expect(250)
        rest = message[half:]
    conn.send(b"BDAT %d LAST\r\n" % len(rest) + rest[: rng.randint(0, len(rest) - 1)])
    ledger.settle(mid, "aborted", "vanished mid-BDAT")
    conn.reset() if rng.random() < 0.5 else conn.close()


def abuse_stall_handshake(opts, ledger, stats, rng):
    """Starts a handshake (or not) and falls silent: the handshake timeout must close it."""
    sock = socket.create_connection((opts.host, opts.implicit_port), timeout=TIMEOUT)
    if rng.random() < 0.5:
        sock.sendall(client_hello_prefix())
    started = time.monotonic()
    closed = False
    sock.settimeout(opts.stall_limit)
    try:
        while sock.recv(4096):
            pass
        closed = True
    except (socket.timeout, TimeoutError):
        closed = False
    except OSError:
        closed = True
    sock.close()
    stats.sample("stall_closed_after", time.monotonic() - started)
    if not closed:
        stats.add("violation_stall_not_closed")


def abuse_slow_drip(opts, ledger, stats, rng):
    conn = Conn(opts, "implicit")
    for line, code in [
        (b"MAIL FROM:<drip@client.test>", 250),
        (b"RCPT TO:<box@mx.test>", 250),
        (b"RSET", 250),
        (b"NOOP", 250),
    ]:
        for byte in line + b"\r\n":
            conn.send(bytes([byte]))
            time.sleep(opts.drip_delay)
        conn.expect(code)
    conn.command(b"QUIT", 221)
    conn.close()


def abuse_garbage(opts, ledger, stats, rng):
    conn = Conn(opts, "implicit", ehlo=rng.random() < 0.5)
    conn.sock.settimeout(5)
    for _ in range(rng.randint(3, 15)):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))).replace(b"\n", b"")
        conn.send(b"\xff" + junk + b"\r\n")
        code, lines = conn.reply()
        if code < 400:
            stats.add("violation_garbage_accepted")
            stats.note(f"garbage answered {lines[0]!r}")
    conn.close()


def abuse_smuggle(opts, ledger, stats, rng):
    """Bare-LF dot lines inside DATA: one message, stored whole, nothing smuggled."""
    conn = Conn(opts, "implicit")
    mid = ledger.new_id("sm")
    head = b"Subject: smuggling attempt\r\n" + ID_HEADER + mid.encode() + b"\r\n\r\n"
    wire = head + (
        b"outer body\n.\nMAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@mx.test>\r\n"
        b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n\n.\r\nstill outer\r\n..\n"
        b"last line\r\n.\r\n"
    )
    # smtps-proto's documented rule: a bare LF is normalised to CRLF, a dot after it is
    # unstuffed but never ends the data; only CRLF.CRLF does.
    message = head + (
        b"outer body\r\n\r\nMAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@mx.test>\r\n"
        b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n\r\n\r\nstill outer\r\n.\r\n"
        b"last line\r\n"
    )
    try:
        transaction(conn, ledger, mid, message, stats, wire=wire)
    except Refused:
        pass  # refusing bare LFs outright is fine too (and then nothing is stored)
    conn.command(b"QUIT", 221)
    conn.close()


def abuse_starttls_injection(opts, ledger, stats, rng):
    sock = socket.create_connection((opts.host, opts.starttls_port), timeout=TIMEOUT)
    conn = Conn.__new__(Conn)
    conn.opts, conn.sock, conn.buf = opts, sock, b""
    conn.expect(220)
    conn.command(b"EHLO inject.test", 250)
    conn.send(b"STARTTLS\r\nMAIL FROM:<evil@inject.test>\r\n")
    conn.expect(220)
    conn.buf = b""
    try:
        conn.sock = opts.context.wrap_socket(sock, server_hostname="localhost")
    except (ssl.SSLError, OSError):
        return  # taking the injected bytes as a broken handshake is safe too
    conn.sock.settimeout(0.5)
    try:
        early = conn.sock.recv(4096)
        if early.startswith(b"421 "):
            # Not an answer to the injection: the server closing (a timeout, a shutdown).
            stats.add("injection_early_421")
            stats.note(f"after the STARTTLS handshake, before any command: {early!r}")
        elif early:
            stats.add("violation_injection_answered")
            stats.note(f"STARTTLS injection answered: {early!r}")
        return
    except (socket.timeout, TimeoutError):
        pass
    conn.sock.settimeout(TIMEOUT)
    conn.command(b"EHLO inject.test", 250)
    conn.command(b"MAIL FROM:<good@inject.test>", 250)  # 503 would mean the injection ran
    conn.command(b"QUIT", 221)
    conn.close()


def abuse_long_line(opts, ledger, stats, rng):
    conn = Conn(opts, "implicit")
    conn.send(b"NOOP " + b"x" * rng.randint(2000, 200_000) + b"\r\n")
    code, lines = conn.reply()
    if code != 500:
        stats.add("violation_long_line")
        stats.note(f"long line answered {lines[0]!r}")
    conn.command(b"NOOP", 250)
    conn.command(b"QUIT", 221)
    conn.close()


def abuse_oversized(opts, ledger, stats, rng):
    conn = Conn(opts, "implicit")
    mid = ledger.new_id("big")
    head = b"Subject: oversized\r\n" + ID_HEADER + mid.encode() + b"\r\n\r\n"
    message = head + (b"o" * 998 + b"\r\n") * (opts.max_message_size // 1000 + 50)
    try:
        transaction(conn, ledger, mid, message, stats)
        stats.add("violation_oversized_accepted")
    except Refused as e:
        if e.code != 552:
            stats.note(f"oversized answered {e.line}")
    conn.command(b"QUIT", 221)
    conn.close()


def abuse_flood(opts, ledger, stats, rng):
    """Opens more connections from one other loopback address than the per-IP limit allows,
    holds them briefly, then closes them all."""
    held, over = [], 0
    for _ in range(opts.flood_size):
        try:
            sock = socket.create_connection(
                (opts.host, opts.starttls_port), timeout=TIMEOUT,
                source_address=(opts.flood_source, 0),
            )
        except OSError:
            over += 1
            continue
        held.append(sock)
    # Read each greeting: 220 within the limit, 421 over it.
    for sock in held:
        try:
            first = sock.recv(512)
            if first.startswith(b"421"):
                over += 1
        except OSError:
            over += 1
    stats.add("flood_over_limit", over)
    time.sleep(rng.uniform(0.1, 1.0))
    for sock in held:
        sock.close()


ABUSES = {
    "vanish-handshake": abuse_vanish_handshake,
    "vanish-command": abuse_vanish_command,
    "vanish-data": abuse_vanish_data,
    "vanish-bdat": abuse_vanish_bdat,
    "stall-handshake": abuse_stall_handshake,
    "slow-drip": abuse_slow_drip,
    "garbage": abuse_garbage,
    "smuggle": abuse_smuggle,
    "starttls-injection": abuse_starttls_injection,
    "long-line": abuse_long_line,
    "oversized": abuse_oversized,
    "flood": abuse_flood,
}


def abuser(opts, ledger, stats, stop, index, kinds):
    rng = random.Random(f"{opts.prefix}-abuser-{index}")
    n = 0
    while not stop():
        kind = kinds[(index + n) % len(kinds)] if opts.abuse_round_robin else rng.choice(kinds)
        n += 1
        if opts.abuse_rounds and n > opts.abuse_rounds:
            break
        try:
            ABUSES[kind](opts, ledger, stats, rng)
            stats.add("abuse_done")
        except Refused as e:
            stats.add("abuse_refused")
            if e.code == 421:
                stats.add("abuse_421")
            else:
                stats.note(f"{kind}: refused {e.line}")
        except (OSError, EOFError, ssl.SSLError) as e:
            # The server closing on an abuser is its right: counted, not a failure.
            stats.add("abuse_closed")
        stats.add("abusive_sessions")
        stats.add(f"abuse_{kind}")


def mixed(opts, ledger, stats, stop, index, kinds):
    """Soak worker: per session, abusive with probability --abuse-ratio, else a sender
    session."""
    rng = random.Random(f"{opts.prefix}-mixed-{index}")
    while not stop():
        if rng.random() < opts.abuse_ratio:
            kind = rng.choice(kinds)
            try:
                ABUSES[kind](opts, ledger, stats, rng)
            except Refused as e:
                stats.add("abuse_421" if e.code == 421 else "abuse_refused")
                if e.code != 421:
                    stats.note(f"{kind}: refused {e.line}")
            except (OSError, EOFError, ssl.SSLError):
                stats.add("abuse_closed")
            stats.add("abusive_sessions")
            stats.add(f"abuse_{kind}")
            continue
        mode = "implicit" if rng.random() < 0.5 else "starttls"
        try:
            conn = Conn(opts, mode)
        except Refused as e:
            stats.add(f"greeting_{e.code}")
            stats.note(f"well-behaved greeting: {e.line}")
            time.sleep(0.1)
            continue
        except (OSError, EOFError, ssl.SSLError) as e:
            stats.add("connect_failed")
            stats.note(f"well-behaved connect: {e!r}")
            time.sleep(0.1)
            continue
        stats.add("sessions")
        try:
            for _ in range(rng.randint(1, 3)):
                mid = ledger.new_id("s")
                transaction(conn, ledger, mid, make_message(mid, big=rng.random() < 0.02), stats)
                stats.add("sent")
            conn.command(b"QUIT", 221)
        except Refused as e:
            stats.add("transactions_refused")
            stats.note(f"well-behaved refused: {e.line}")
        except (OSError, EOFError, ssl.SSLError) as e:
            stats.add("broken_sessions")
            stats.note(f"well-behaved broken: {e!r}")
        finally:
            conn.close()
        time.sleep(opts.pause)


# --- the maildir scanner ---------------------------------------------------------------------


def scanner(opts, ledger, stats, done):
    """Re-reads new/ every --scan-interval (20 ms): a file there must be a complete message of
    the ledger."""
    new = os.path.join(opts.scan, "new")
    checked = set()
    while True:
        finished = done.is_set()
        try:
            names = os.listdir(new)
        except OSError:
            names = []
        for name in names:
            if name in checked:
                continue
            checked.add(name)
            try:
                with open(os.path.join(new, name), "rb") as f:
                    stored = f.read()
            except OSError as e:
                stats.note(f"scan: {name}: {e!r}")
                continue
            body = split_received(stored)
            mid = body is not None and message_id(body)
            expected = mid and ledger.expected(mid)
            if not expected or digest(body) != expected:
                stats.add("scan_bad")
                stats.note(f"scan: bad file {name} ({len(stored)} bytes, id {mid})")
        stats.counts["scan_checked"] = len(checked)
        stats.counts["scan_rounds"] = stats.counts.get("scan_rounds", 0) + 1
        if finished:
            return
        time.sleep(opts.scan_interval)


# --- subcommands ----------------------------------------------------------------------------


def cmd_load(opts):
    ledger = Ledger(opts.prefix)
    stats = Stats()
    stop = Stop(opts)
    kinds = opts.abuse.split(",") if opts.abuse else []
    threads = []
    for i in range(opts.senders):
        threads.append(threading.Thread(target=sender, args=(opts, ledger, stats, stop, i)))
    for i in range(opts.mixed):
        threads.append(threading.Thread(target=mixed, args=(opts, ledger, stats, stop, i, kinds)))
    for i in range(opts.abusers):
        threads.append(threading.Thread(target=abuser, args=(opts, ledger, stats, stop, i, kinds)))
    for i in range(opts.handshakers):
        threads.append(threading.Thread(target=handshaker, args=(opts, stats, stop, i)))
    if opts.probe:
        threads.append(threading.Thread(target=prober, args=(opts, ledger, stats, stop)))
    done = threading.Event()
    scan = None
    if opts.scan:
        scan = threading.Thread(target=scanner, args=(opts, ledger, stats, done))
        scan.start()
    for t in threads:
        t.daemon = True
        t.start()
    out("started", len(threads))
    # Every thread stops by itself at the deadline; a socket may add its timeout once more.
    limit = time.monotonic() + opts.duration + 3 * TIMEOUT + opts.stall_limit
    for t in threads:
        t.join(max(0.0, limit - time.monotonic()))
    hung = sum(1 for t in threads if t.is_alive())
    done.set()
    if scan:
        scan.join(TIMEOUT)
    if opts.ledger:
        ledger.write(opts.ledger)
    for key, value in sorted(ledger.counts().items()):
        out(f"ledger_{key}", value)
    out("hung_threads", hung)
    for key, value in sorted(stats.counts.items()):
        out(key, value)
    for key, values in sorted(stats.samples.items()):
        values = sorted(values)
        out(f"{key}_count", len(values))
        out(f"{key}_median", f"{values[len(values) // 2]:.3f}")
        out(f"{key}_max", f"{values[-1]:.3f}")
    for i, note in enumerate(stats.notes):
        out(f"note{i}", note)


def cmd_probe(opts):
    ledger = Ledger(opts.prefix)
    stats = Stats()
    seconds = probe_once(opts, ledger, stats)
    if opts.ledger:
        ledger.write(opts.ledger)
    out("probe_seconds", f"{seconds:.3f}")


def cmd_session(opts):
    """One session, one message per --messages item (`big`, `small` or a size in bytes):
    prints each final
    reply as reply<i>=..., a NOOP's reply after them, and writes the ledger."""
    ledger = Ledger(opts.prefix)
    stats = Stats()
    TAIL[0] = opts.tail_bytes
    conn = Conn(opts, "implicit")
    for i, kind in enumerate(opts.messages.split(",")):
        mid = ledger.new_id(kind)
        try:
            size = int(kind) if kind.isdigit() else None
            message = make_message(mid, big=kind == "big", size=size)
            transaction(conn, ledger, mid, message, stats)
            out(f"reply{i}", ledger.entries[mid]["reply"])
        except Refused as e:
            out(f"reply{i}", e.line)
    out("noop", conn.command(b"NOOP", 250)[0].decode())
    conn.command(b"QUIT", 221)
    conn.close()
    if opts.ledger:
        ledger.write(opts.ledger)


def cmd_check(opts):
    entries = {}
    for path in opts.ledgers:
        with open(path) as f:
            for line in f:
                e = json.loads(line)
                entries[e["id"]] = e
    stored = {}
    violations = []
    new = os.path.join(opts.maildir, "new")
    for name in sorted(os.listdir(new)):
        with open(os.path.join(new, name), "rb") as f:
            data = f.read()
        body = split_received(data)
        mid = body is not None and message_id(body)
        if not mid or mid not in entries:
            violations.append(f"{name}: not in the ledger (id {mid})")
            continue
        stored.setdefault(mid, []).append(name)
        if digest(body) != entries[mid]["sha256"]:
            violations.append(
                f"{name}: {mid} differs ({len(body)} bytes stored, {entries[mid]['len']} sent)"
            )
    counts = {}
    for mid, e in entries.items():
        outcome = e["outcome"]
        n = len(stored.get(mid, []))
        counts[outcome] = counts.get(outcome, 0) + 1
        if n:
            counts[f"{outcome}_stored"] = counts.get(f"{outcome}_stored", 0) + 1
        if outcome == "acked" and n != 1:
            violations.append(f"{mid}: acknowledged ({e['reply']}) but stored {n} times")
        elif outcome in ("refused", "aborted", "pending") and n:
            violations.append(f"{mid}: {outcome} ({e['reply']}) but stored {n} times")
        if opts.shutdown and outcome == "refused" and not e["reply"].startswith("421"):
            violations.append(f"{mid}: refused with {e['reply']}, not 421")
        if opts.shutdown and outcome in ("aborted", "unknown", "pending"):
            violations.append(f"{mid}: {outcome} ({e['reply']}): neither 250 nor 421")
        elif outcome == "unknown":
            if n > 1:
                violations.append(f"{mid}: unacknowledged, stored {n} times")
            if n and not opts.allow_unknown_stored:
                violations.append(f"{mid}: unacknowledged but stored")
    tmp = os.listdir(os.path.join(opts.maildir, "tmp"))
    out("ledger_entries", len(entries))
    for key, value in sorted(counts.items()):
        out(key, value)
    out("files_new", sum(len(v) for v in stored.values()))
    out("files_tmp", len(tmp))
    out("violations", len(violations))
    for i, v in enumerate(violations[:30]):
        out(f"violation{i}", v)
    sys.exit(1 if violations else 0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--implicit-port", type=int)
    p.add_argument("--starttls-port", type=int)
    p.add_argument("--cafile", help="trusted certificates (PEM; several for a reload test)")
    p.add_argument("--prefix", default="f", help="message id prefix, unique per run")
    p.add_argument("--ledger", help="write the ledger (JSON lines) here")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--stop-file", help="stop once this file exists")
    p.add_argument("--until-refused", action="store_true",
                   help="go on past --stop-file until connections are refused (shutdown)")
    p.add_argument("--senders", type=int, default=0)
    p.add_argument("--mixed", type=int, default=0, help="soak workers (senders + abuse)")
    p.add_argument("--abuse-ratio", type=float, default=0.1)
    p.add_argument("--pause", type=float, default=0.0, help="mixed: pause between sessions")
    p.add_argument("--abusers", type=int, default=0)
    p.add_argument("--abuse", default="", help="comma-separated: " + ",".join(ABUSES))
    p.add_argument("--abuse-rounds", type=int, default=0, help="per abuser; 0: until stop")
    p.add_argument("--abuse-round-robin", action="store_true")
    p.add_argument("--handshakers", type=int, default=0)
    p.add_argument("--probe", action="store_true", help="a timed well-behaved session loop")
    p.add_argument("--probe-interval", type=float, default=0.1)
    p.add_argument("--scan", help="maildir to re-scan during the run")
    p.add_argument("--scan-interval", type=float, default=0.02)
    p.add_argument("--stall-limit", type=float, default=15.0,
                   help="longest wait for the server to close a stalled handshake")
    p.add_argument("--drip-delay", type=float, default=0.02)
    p.add_argument("--flood-size", type=int, default=60)
    p.add_argument("--flood-source", default="127.0.0.2")
    p.add_argument("--max-message-size", type=int, default=1024 * 1024)
    p.add_argument("--maildir")
    p.add_argument("--allow-unknown-stored", action="store_true")
    p.add_argument("--shutdown", action="store_true",
                   help="check: every transaction ended with 250 or 421 (graceful shutdown)")
    p.add_argument("--messages", default="small", help="session: e.g. big,small")
    p.add_argument("--tail-bytes", type=int, default=0,
                   help="session: send each message's last N bytes (with the end of data) "
                   "in a separate write after a pause")
    p.add_argument("scenario", choices=["load", "probe", "session", "check"])
    p.add_argument("ledgers", nargs="*", help="check: ledger files")
    opts = p.parse_args()
    if opts.cafile:
        opts.context = ssl.create_default_context(cafile=opts.cafile)
    {"load": cmd_load, "probe": cmd_probe, "session": cmd_session, "check": cmd_check}[opts.scenario](opts)


if __name__ == "__main__":
    main()
