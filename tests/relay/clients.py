#!/usr/bin/env python3
"""Clients and checks for tests/relay/run.sh: smtpsd as a relay front (--relay) before a real
Postfix or Exim. Clients connect from 127.0.0.2 (and .3 to .5) to the front's implicit-TLS
and STARTTLS listeners on 127.0.0.1; the front relays every transaction to the backend.

Every socket has a timeout and every loop a bound in count and time. Each subcommand prints
`key=value` lines, `PASS:`/`FAIL:` lines and indented notes; its exit status is 1 when a check
fails.

Delivered mail (--mail DIR) is read from files: Postfix's pipe(8) writes QUEUEID.PID.eml (the
recipients beside it in .rcpt), Exim's appendfile a Maildir (DIR/new/*). A message is known by
its X-Relay-Test-Id header (in the header block only: smuggled headers in a body do not count),
and is byte-exact when, once the Received: lines the backend and the front added at the top
are cut, it equals what the client sent, line ends as LF (how both MTAs store mail).

  free-ports N
  identity     4 messages (implicit TLS, STARTTLS; with and without AUTH) from 127.0.0.2
  reject       a RCPT the backend's policy refuses, alone and beside an accepted one
  smuggle      <LF>.<LF> then pipelined commands inside one body, over TLS (and, with
               --direct PORT, the same bytes straight to the backend, for contrast)
  bulk         pipelined 5 recipients, smtplib with 5 recipients, BDAT, a big message,
               N parallel clients
  outage-sender, check-outage   sender loops (one per body size) while the backend stops
               and starts again, and what they were told against what was delivered
"""

import argparse
import concurrent.futures
import json
import os
import re
import smtplib
import socket
import ssl
import sys
import threading
import time

TIMEOUT = 30
SENDER = "sender@client.test"
FAILED = False


def out(key, value):
    print(f"{key}={value}", flush=True)


def note(text):
    print(f"  {text}", flush=True)


def verdict(ok, text):
    global FAILED
    print(f"{'PASS' if ok else 'FAIL'}: {text}", flush=True)
    FAILED |= not ok
    return ok


def helo_of(source):
    return f"client-{source.replace('.', '-')}.test"


def tls_context(cafile):
    """Trusts only the test certificate (it names localhost and 127.0.0.1)."""
    return ssl.create_default_context(cafile=cafile)


# --- messages ------------------------------------------------------------------------------


def message(token, body, to="box@relay.test", subject=None):
    """A message with CRLF line ends and every header cleanup(8) would otherwise add."""
    head = (
        f"From: <{SENDER}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {subject or 'relay test ' + token}\r\n"
        f"Date: Fri, 02 Jan 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{token}@relay.test>\r\n"
        f"X-Relay-Test-Id: {token}\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n"
        f"\r\n"
    ).encode()
    return head + body


def small_body(token):
    """Dot-leading lines, a lone dot, 8-bit text, a blank-ish line, a 990-octet line."""
    return (
        f"Hello through the relay front ({token}).\r\n"
        ".one dot\r\n..two dots\r\n.\r\n"
        "Gr\u00fc\u00dfe, na\u00efve caf\u00e9\r\n \r\n"
        + "x" * 990
        + "\r\nlast line\r\n"
    ).encode()


def big_body(size):
    """About `size` octets of numbered lines; every 1000th starts with a dot."""
    filler = "the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOP"
    lines = []
    total, i = 0, 0
    while total < size:
        line = f"{'.' if i % 1000 == 0 else ''}{i:08d} {filler}\r\n"
        lines.append(line)
        total += len(line)
        i += 1
    return "".join(lines).encode()


def save(sent_dir, token, data):
    with open(os.path.join(sent_dir, token + ".eml"), "wb") as f:
        f.write(data)


# --- sessions ------------------------------------------------------------------------------


class Session:
    """One smtplib session to the front: implicit TLS or STARTTLS, from `source`, with AUTH
    when `login` is (user, password). Raises on any error."""

    def __init__(self, mode, port, cafile, source, login=None, timeout=TIMEOUT):
        context = tls_context(cafile)
        helo = helo_of(source)
        if mode == "implicit":
            self.client = smtplib.SMTP_SSL(
                local_hostname=helo, timeout=timeout, source_address=(source, 0), context=context
            )
        else:
            self.client = smtplib.SMTP(
                local_hostname=helo, timeout=timeout, source_address=(source, 0)
            )
        # Built without a host (to read the greeting from connect()), smtplib would check the
        # certificate against an empty name: the name it checks is `_host`.
        self.client._host = "127.0.0.1"
        try:
            code, greeting = self.client.connect("127.0.0.1", port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, greeting)
            if mode == "starttls":
                self.client.ehlo()
                code, reply = self.client.starttls(context=context)
                if code != 220:
                    raise smtplib.SMTPResponseException(code, reply)
            self.client.ehlo()
            if login:
                self.client.login(*login)
        except BaseException:
            self.client.close()
            raise

    def close(self):
        try:
            self.client.quit()
        except (OSError, smtplib.SMTPException):
            self.client.close()


def send_one(mode, port, cafile, source, data, rcpts=("box@relay.test",), login=None,
             timeout=TIMEOUT):
    """One session, one message; returns sendmail's refused-recipients dict."""
    session = Session(mode, port, cafile, source, login, timeout)
    try:
        return session.client.sendmail(SENDER, list(rcpts), data)
    finally:
        session.close()


class Raw:
    """A raw SMTP client over TLS (implicit) or plaintext, for exactly controlled bytes."""

    def __init__(self, port, source, cafile=None, timeout=TIMEOUT):
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        if cafile:
            sock = tls_context(cafile).wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """One reply: (code, text of all its lines)."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; partial reply {lines!r} {self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            line = line.decode(errors="replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(lines)

    def command(self, line):
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def replies_until_quiet(self, quiet=2.0, limit=20):
        """Replies until none arrives for `quiet` seconds (for a peer that may answer more
        often than one would expect)."""
        got = []
        self.sock.settimeout(quiet)
        try:
            while len(got) < limit:
                got.append(self.reply())
        except (TimeoutError, socket.timeout, ConnectionError, ssl.SSLError):
            pass
        self.sock.settimeout(TIMEOUT)
        return got

    def close(self):
        try:
            self.command("QUIT")
        except (OSError, ConnectionError, ssl.SSLError, ValueError):
            pass
        self.sock.close()


# --- delivered mail ------------------------------------------------------------------------


def header_block(path, limit=65536):
    with open(path, "rb") as f:
        data = f.read(limit)
    end = data.find(b"\n\n")
    return data if end < 0 else data[: end + 1]


def header_value(block, name):
    """The first `name:` header's unfolded value in a header block (bytes), or None."""
    m = re.search(rb"(?im)^" + re.escape(name.encode()) + rb":[ \t]*(.*(?:\n[ \t].*)*)", block)
    return None if not m else " ".join(m.group(1).decode(errors="replace").split())


def deliveries(mail_dir, redelivered=None):
    """{test id: [path, ...]}: one path for each message the backend accepted, under mail_dir.
    Postfix's files are QUEUEID.PID.eml. pipe(8) may run twice for one queue file: when
    Postfix stops during a delivery, the command sees the end of its input early (a truncated
    copy) and qmgr never hears of it, so the queue file is delivered again after the restart
    (Postfix's at-least-once delivery, after the front's part is over). Copies with the same
    queue ID count once, the newest (the run Postfix logged as sent); `redelivered` (a list)
    collects the older ones."""
    found = {}
    by_queue_id = {}
    for root, dirs, files in os.walk(mail_dir):
        dirs[:] = [d for d in dirs if d != "tmp"]
        for name in files:
            if name.endswith((".rcpt", ".tmp")) or name.startswith("."):
                continue
            path = os.path.join(root, name)
            m = re.fullmatch(r"([0-9A-F]+)\.\d+\.eml", name)
            if m:
                by_queue_id.setdefault(m.group(1), []).append(path)
                continue
            token = header_value(header_block(path), "X-Relay-Test-Id")
            if token:
                found.setdefault(token, []).append(path)
    for paths in by_queue_id.values():
        paths.sort(key=lambda p: os.stat(p).st_mtime_ns)
        if redelivered is not None:
            redelivered += paths[:-1]
        token = header_value(header_block(paths[-1]), "X-Relay-Test-Id")
        if token:
            found.setdefault(token, []).append(paths[-1])
    return found


def wait_delivered(mail_dir, tokens, seconds):
    """Waits (bounded) until each token has a delivered copy; returns deliveries()."""
    deadline = time.monotonic() + seconds
    while True:
        found = deliveries(mail_dir)
        if all(t in found for t in tokens) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def split_received(data):
    """([unfolded Received: values from the top], the rest)."""
    received = []
    while data.startswith(b"Received:"):
        end = 0
        while True:
            nl = data.find(b"\n", end)
            if nl < 0:
                nl = len(data) - 1
                break
            end = nl + 1
            if end >= len(data) or data[end : end + 1] not in (b" ", b"\t"):
                break
        received.append(" ".join(data[len(b"Received:") : nl].decode(errors="replace").split()))
        data = data[nl + 1 :]
    return received, data


def exact(path, original):
    """(same, received lines): the delivered file without its top Received: lines equals
    `original` (CRLF) with LF line ends."""
    with open(path, "rb") as f:
        data = f.read()
    received, rest = split_received(data)
    return rest == original.replace(b"\r\n", b"\n"), received


def first_difference(path, original):
    with open(path, "rb") as f:
        _, rest = split_received(f.read())
    want = original.replace(b"\r\n", b"\n")
    i = next((i for i, (a, b) in enumerate(zip(rest, want)) if a != b), min(len(rest), len(want)))
    return f"{len(rest)} octets vs {len(want)} sent, first difference at {i}: " \
        f"{rest[max(0, i - 40):i + 40]!r} vs {want[max(0, i - 40):i + 40]!r}"


def check_exact(found, originals, what):
    """PASS/FAIL: each of `originals` ({token: bytes}) delivered once, byte-exact."""
    wrong = []
    for token, original in originals.items():
        paths = found.get(token, [])
        if len(paths) != 1:
            wrong.append(f"{token}: {len(paths)} copies")
            continue
        same, _ = exact(paths[0], original)
        if not same:
            wrong.append(f"{token}: {first_difference(paths[0], original)}")
    size = sum(len(o) for o in originals.values())
    return verdict(
        not wrong,
        f"{what}: {len(originals)} message(s), {size} octets, each delivered exactly once and "
        "byte-exact" + (f"; wrong: {wrong[:5]}" if wrong else ""),
    )


FRONT_RECEIVED = re.compile(
    r"from (?P<helo>\S+) \(\[(?P<ip>[0-9.]+)\]\) by (?P<host>\S+) \(smtpsd\) with "
    r"(?P<proto>ESMTPSA?) id (?P<id>\S+) \(version=(?P<version>TLSv1\.[23]) "
    r"cipher=(?P<cipher>\S+) bits=(?P<bits>\d+)\)"
)


def front_received(received):
    """The front's Received: line among `received` (the parsed match), or None."""
    for line in received:
        m = FRONT_RECEIVED.search(line)
        if m:
            return m
    return None


# --- backend logs --------------------------------------------------------------------------


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def postfix_client_line(log, token):
    """smtpd's `QUEUEID: client=...` line for the message whose Message-ID names token."""
    m = re.search(r"\b([0-9A-F]{6,}): message-id=<" + re.escape(token) + r"@relay\.test>", log)
    if not m:
        return None
    c = re.search(r"\b" + m.group(1) + r": (client=.*)", log)
    return c.group(1) if c else None


def exim_arrival_line(log, token):
    """Exim's `<=` line for the message whose Message-ID names token."""
    for line in log.splitlines():
        if " <= " in line and f"id={token}@relay.test" in line:
            return line
    return None


def backend_client(backend, log, token):
    """(the log line, the client address it names) for the message `token`."""
    if backend == "postfix":
        line = postfix_client_line(log, token)
        m = line and re.search(r"client=\S*?\[([0-9.]+)\]", line)
    else:
        line = exim_arrival_line(log, token)
        m = line and re.search(r" H=.*?\[([0-9.]+)\]", line)
    return line, (m.group(1) if m else None)


def wait_log(backend, log_path, tokens, seconds):
    deadline = time.monotonic() + seconds
    while True:
        log = read_text(log_path)
        if all(backend_client(backend, log, t)[0] for t in tokens) or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


# --- identity: implicit TLS and STARTTLS, with and without AUTH ------------------------------


def cmd_identity(args):
    source = "127.0.0.2"
    login = (args.user, args.password)
    cases = []
    for mode, port in (("implicit", args.implicit), ("starttls", args.starttls)):
        for auth in (False, True):
            token = f"{args.tag}-identity-{mode}-{'auth' if auth else 'anon'}"
            data = message(token, small_body(token))
            save(args.sent, token, data)
            try:
                refused = send_one(mode, port, args.cafile, source, data,
                                   login=login if auth else None)
                result = "250" if not refused else f"refused {refused}"
            except (OSError, smtplib.SMTPException) as e:
                result = repr(e)[:300]
            note(f"{token}: {result}")
            cases.append((token, mode, auth, data, result))
    verdict(all(c[4] == "250" for c in cases),
            "implicit TLS and STARTTLS from 127.0.0.2, with and without AUTH: 4 messages "
            "acknowledged with 250 by the front (after the backend's 250)")
    found = wait_delivered(args.mail, [c[0] for c in cases], 20)
    check_exact(found, {c[0]: c[3] for c in cases}, f"delivered by {args.backend}")

    # The backend names the real client.
    log = wait_log(args.backend, args.log, [c[0] for c in cases], 10)
    bad = []
    for token, mode, auth, _, _ in cases:
        line, addr = backend_client(args.backend, log, token)
        note(f"{args.backend} log, {mode}{' + AUTH' if auth else ''}: {line}")
        if addr != source:
            bad.append(f"{token}: {line}")
    verdict(not bad, f"{args.backend}'s log names the client [{source}] for all 4 messages, "
            "not the front's 127.0.0.1" + (f"; wrong: {bad}" if bad else ""))
    if args.backend == "postfix":
        bad = []
        for token, mode, auth, _, _ in cases:
            line = postfix_client_line(log, token) or ""
            has = f"sasl_username={args.user}" in line
            if has != auth:
                bad.append(f"{token}: {line}")
        verdict(not bad, f"sasl_username={args.user} (XCLIENT LOGIN) in Postfix's log exactly "
                "for the 2 messages sent after AUTH" + (f"; wrong: {bad}" if bad else ""))

    # Received: lines. The front's one names the client, TLS and ESMTPS/ESMTPSA; the
    # backend's, above it, names the client too.
    bad, shown = [], False
    for token, mode, auth, _, _ in cases:
        paths = found.get(token, [])
        if not paths:
            bad.append(f"{token}: not delivered")
            continue
        _, received = exact(paths[0], b"")
        front = front_received(received)
        if not shown and front:
            note(f"front's Received: {front.group(0)}")
            shown = True
        want = "ESMTPSA" if auth else "ESMTPS"
        if not front or front["proto"] != want or front["ip"] != source \
                or front["host"] != "front.test" or front["helo"] != helo_of(source) \
                or front["version"] != "TLSv1.3":
            bad.append(f"{token}: {received}")
        elif len(received) != 2 or received[1] != " ".join(front.string.split()):
            bad.append(f"{token}: expected the backend's then the front's Received: {received}")
    verdict(not bad, "the front's Received: line is in every delivered message, below the "
            "backend's: from the client's HELO ([127.0.0.2]) by front.test (smtpsd), TLSv1.3, "
            "cipher and bits, ESMTPSA exactly after AUTH" + (f"; wrong: {bad}" if bad else ""))
    bad = []
    for token, mode, auth, _, _ in cases:
        paths = found.get(token, [])
        received = exact(paths[0], b"")[1] if paths else []
        top = received[0] if received else ""
        if "[127.0.0.2]" not in top or "127.0.0.1" in top:
            bad.append(f"{token}: {top}")
    top = exact(found[cases[0][0]][0], b"")[1][0] if cases[0][0] in found else "-"
    note(f"{args.backend}'s Received: {top}")
    verdict(not bad, f"{args.backend}'s own Received: line names [127.0.0.2], never 127.0.0.1"
            + (f"; wrong: {bad}" if bad else ""))
    if args.backend == "postfix":
        # XCLIENT HELO= carries the client's EHLO name; the EHLO the front must send after
        # XCLIENT sets Postfix's HELO name again, so it has to repeat the client's name (as in
        # Postfix's XCLIENT_README example), or Postfix's HELO restrictions and its Received:
        # line see the front's name instead.
        bad = []
        for token, mode, auth, _, _ in cases:
            paths = found.get(token, [])
            top = exact(paths[0], b"")[1][0] if paths else ""
            if not top.startswith(f"from {helo_of(source)} "):
                bad.append(f"{token}: {top[:80]}")
        verdict(not bad, f"Postfix sees the client's HELO name ({helo_of(source)}, sent as XCLIENT "
                "HELO=): its Received: line says 'from " + helo_of(source) + " (...[127.0.0.2])'"
                + (f"; wrong: {bad}" if bad else ""))


# --- reject: the backend's RCPT verdict ----------------------------------------------------


def cmd_reject(args):
    token = f"{args.tag}-reject-alone"
    data = message(token, small_body(token), to="reject@relay.test")
    try:
        send_one("implicit", args.implicit, args.cafile, "127.0.0.2", data,
                 rcpts=["reject@relay.test"])
        verdict(False, "a RCPT the backend refuses: accepted?")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = e.recipients["reject@relay.test"]
        text = text.decode(errors="replace")
        note(f"RCPT TO:<reject@relay.test>: {code} {text}")
        verdict(code in (550, 554) and "Recipient address rejected" in text
                and args.reject_text in text,
                f"RCPT TO:<reject@relay.test> refused at RCPT time with Postfix's own reply "
                f"({code}, '{args.reject_text}')")
    except (OSError, smtplib.SMTPException) as e:
        verdict(False, f"a RCPT the backend refuses: {e!r}")

    token = f"{args.tag}-reject-mixed"
    data = message(token, small_body(token))
    save(args.sent, token, data)
    try:
        refused = send_one("starttls", args.starttls, args.cafile, "127.0.0.2", data,
                           rcpts=["reject@relay.test", "box@relay.test"])
    except (OSError, smtplib.SMTPException) as e:
        refused = {"error": repr(e)}
    note(f"reject@ + box@ in one transaction: refused {refused}")
    found = wait_delivered(args.mail, [token], 20)
    rcpts = read_rcpts(found.get(token, []))
    ok = list(refused) == ["reject@relay.test"] and refused["reject@relay.test"][0] in (550, 554)
    verdict(ok and rcpts == [["box@relay.test"]],
            "reject@ refused and box@ accepted in one transaction: the message delivered once, "
            f"to box@relay.test only (recipients: {rcpts})")

    # The same, pipelined in one write (the front asks Postfix for the whole group at once):
    # the client gets Postfix's verdicts in command order, and the message goes to box@ only.
    token = f"{args.tag}-reject-pipelined"
    data = message(token, small_body(token))
    save(args.sent, token, data)
    raw = Raw(args.implicit, "127.0.0.2", args.cafile)
    try:
        raw.command("EHLO " + helo_of("127.0.0.2"))
        raw.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<reject@relay.test>\r\n".encode()
                 + b"RCPT TO:<box@relay.test>\r\nDATA\r\n")
        group = [raw.reply() for _ in range(4)]
        end = None
        if group[3][0] == 354:
            raw.send(re.sub(rb"(?m)^\.", b"..", data) + b".\r\n")
            end = raw.reply()[0]
        # Only a refused recipient: the DATA in the group gets 554 (RFC 2920 §3.1), nothing
        # is sent, and the session goes on after RSET.
        raw.send(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<reject@relay.test>\r\nDATA\r\n".encode())
        lonely = [raw.reply()[0] for _ in range(3)]
        after = [raw.command("RSET")[0], raw.command("NOOP")[0]]
    finally:
        raw.close()
    codes = [code for code, _ in group]
    note(f"pipelined MAIL, RCPT reject@, RCPT box@, DATA: {codes}, end {end}; "
         f"MAIL, RCPT reject@, DATA: {lonely}; then RSET, NOOP: {after}")
    found = wait_delivered(args.mail, [token], 20)
    rcpts = read_rcpts(found.get(token, []))
    verdict(codes[:3] == [250, codes[1], 250] and codes[1] in (550, 554)
            and args.reject_text in group[1][1] and codes[3] == 354 and end == 250
            and rcpts == [["box@relay.test"]],
            "pipelined group with a refused RCPT: 250, Postfix's own refusal, 250, 354 in order; "
            f"delivered once, to box@relay.test only (recipients: {rcpts})")
    verdict(lonely[0] == 250 and lonely[1] in (550, 554) and lonely[2] == 554
            and after == [250, 250],
            "pipelined group whose only RCPT is refused: its DATA gets 554, the session goes on")


def read_rcpts(paths):
    got = []
    for path in paths:
        base = path.rsplit(".", 1)[0]
        try:
            with open(base + ".rcpt") as f:
                got.append(sorted(f.read().split()))
        except FileNotFoundError:
            got.append(None)
    return got


# --- smuggle -------------------------------------------------------------------------------


def smuggle_payload(token):
    """A message whose body holds <LF>.<LF> and then a second, pipelined transaction."""
    outer = (
        f"From: <{SENDER}>\r\nTo: <box@relay.test>\r\nSubject: smuggle {token}\r\n"
        f"Date: Fri, 02 Jan 2026 10:00:00 +0000\r\nMessage-ID: <{token}@relay.test>\r\n"
        f"X-Relay-Test-Id: {token}\r\n\r\n"
        "the text before the smuggled part\r\n"
    ).encode()
    inner = (
        "\n.\n"
        "MAIL FROM:<smuggler@client.test>\r\n"
        "RCPT TO:<victim@relay.test>\r\n"
        "DATA\r\n"
        "From: <smuggler@client.test>\r\nTo: <victim@relay.test>\r\nSubject: smuggled\r\n"
        f"Date: Fri, 02 Jan 2026 10:00:00 +0000\r\nMessage-ID: <{token}-smuggled@relay.test>\r\n"
        f"X-Relay-Test-Id: {token}-smuggled\r\n\r\n"
        "smuggled body\r\n"
        ".\r\n"
    ).encode()
    return outer + inner


def smuggle_session(port, cafile, token):
    """Sends the payload; returns every reply after the DATA's 354."""
    raw = Raw(port, "127.0.0.2", cafile)
    try:
        raw.command("EHLO " + helo_of("127.0.0.2"))
        steps = [raw.command(f"MAIL FROM:<{SENDER}>"), raw.command("RCPT TO:<box@relay.test>"),
                 raw.command("DATA")]
        if [c for c, _ in steps] != [250, 250, 354]:
            return steps
        raw.send(smuggle_payload(token))
        return raw.replies_until_quiet(quiet=3.0)
    finally:
        raw.close()


def cmd_smuggle(args):
    token = f"{args.tag}-smuggle"
    replies = smuggle_session(args.implicit, args.cafile, token)
    note(f"through the front: replies after the body: {[f'{c}' for c, _ in replies]}")
    found = wait_delivered(args.mail, [token], 15)
    time.sleep(1)  # a second message, if any, would have arrived with the first
    found = deliveries(args.mail)
    copies = found.get(token, [])
    smuggled = found.get(f"{token}-smuggled", [])
    body = b""
    if copies:
        with open(copies[0], "rb") as f:
            body = f.read()
    carried = b"MAIL FROM:<smuggler@client.test>\nRCPT TO:<victim@relay.test>\nDATA\n" in body
    note(f"through the front: {len(copies)} message(s) {token}, {len(smuggled)} smuggled; "
         f"the smuggled commands are body text of the one message: {carried}")
    verdict([c for c, _ in replies] == [250] and len(copies) == 1 and not smuggled and carried,
            "<LF>.<LF> smuggling through the front: one 250, exactly ONE message in "
            f"{args.backend}, the would-be second transaction is text in its body")
    if args.direct:
        token = f"{args.tag}-smuggle-direct"
        raw = Raw(args.direct, "127.0.0.1")
        try:
            raw.command("EHLO direct.client.test")
            for line in (f"MAIL FROM:<{SENDER}>", "RCPT TO:<box@relay.test>", "DATA"):
                raw.command(line)
            raw.send(smuggle_payload(token))
            replies = raw.replies_until_quiet(quiet=3.0)
        finally:
            raw.close()
        wait_delivered(args.mail, [token, f"{token}-smuggled"], 10)
        found = deliveries(args.mail)
        n = len(found.get(token, [])) + len(found.get(f"{token}-smuggled", []))
        note(f"contrast (not a check): the same bytes straight to {args.backend}'s plain port "
             f"{args.direct}: replies {[c for c, _ in replies]}, {n} message(s) delivered "
             f"({'smuggling works against it directly' if n > 1 else 'not smuggled'})")
        out("direct_smuggle_messages", n)


# --- bulk: pipelining, multiple recipients, BDAT, size, parallel clients -----------------------


def cmd_bulk(args):
    originals = {}
    rcpts5 = [f"box{i}@relay.test" for i in range(1, 6)]

    # Pipelined by hand: MAIL, five RCPT and DATA in one write.
    token = f"{args.tag}-pipelined"
    data = message(token, small_body(token))
    raw = Raw(args.implicit, "127.0.0.2", args.cafile)
    try:
        code, ehlo = raw.command("EHLO " + helo_of("127.0.0.2"))
        offered = "PIPELINING" in ehlo and "CHUNKING" in ehlo
        raw.send(f"MAIL FROM:<{SENDER}>\r\n".encode()
                 + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts5) + b"DATA\r\n")
        codes = [raw.reply()[0] for _ in range(7)]
        end = None
        if codes == [250] * 6 + [354]:
            stuffed = re.sub(rb"(?m)^\.", b"..", data)
            raw.send(stuffed + b".\r\n")
            end = raw.reply()[0]
    finally:
        raw.close()
    note(f"pipelined: EHLO offers PIPELINING and CHUNKING: {offered}; replies {codes}, "
         f"end of data {end}")
    ok_pipelined = offered and codes == [250] * 6 + [354] and end == 250
    originals[token] = data
    save(args.sent, token, data)

    # smtplib: one transaction, five recipients.
    token = f"{args.tag}-five"
    data = message(token, small_body(token))
    try:
        refused = send_one("starttls", args.starttls, args.cafile, "127.0.0.2", data, rcpts5)
    except (OSError, smtplib.SMTPException) as e:
        refused = {"error": repr(e)}
    note(f"smtplib, 5 recipients: refused {refused}")
    originals[token] = data
    save(args.sent, token, data)

    # BDAT: two chunks, the second LAST; a lone "." line and dot-leading lines are literal.
    token = f"{args.tag}-bdat"
    data = message(token, small_body(token) + b".\r\n..\r\n.x\r\nend of bdat\r\n")
    half = len(data) // 2
    raw = Raw(args.implicit, "127.0.0.3", args.cafile)
    try:
        raw.command("EHLO " + helo_of("127.0.0.3"))
        bdat = [raw.command(f"MAIL FROM:<{SENDER}>")[0], raw.command("RCPT TO:<box@relay.test>")[0]]
        raw.send(f"BDAT {half}\r\n".encode() + data[:half])
        bdat.append(raw.reply()[0])
        raw.send(f"BDAT {len(data) - half} LAST\r\n".encode() + data[half:])
        bdat.append(raw.reply()[0])
    finally:
        raw.close()
    note(f"BDAT {half} + BDAT {len(data) - half} LAST: replies {bdat}")
    originals[token] = data
    save(args.sent, token, data)

    found = wait_delivered(args.mail, list(originals), 20)
    rcpts = {t: read_rcpts(found.get(t, [])) for t in originals}
    verdict(ok_pipelined and rcpts[f"{args.tag}-pipelined"] == [sorted(rcpts5)],
            "pipelined MAIL + 5 RCPT + DATA in one write: 6 x 250 and 354, then 250; "
            "delivered once to the 5 recipients")
    verdict(refused == {} and rcpts[f"{args.tag}-five"] == [sorted(rcpts5)],
            "smtplib sendmail to 5 recipients: all accepted, delivered once to the 5")
    verdict(bdat == [250, 250, 250, 250],
            "BDAT from the client (front offers CHUNKING): 2 chunks, the last LAST, all 250")
    check_exact(found, originals, "pipelined, 5-recipient and BDAT messages")

    # A big message.
    token = f"{args.tag}-big"
    data = message(token, big_body(args.big_mib << 20))
    started = time.monotonic()
    try:
        refused = send_one("implicit", args.implicit, args.cafile, "127.0.0.2", data,
                           timeout=120)
        result = "250" if not refused else f"refused {refused}"
    except (OSError, smtplib.SMTPException) as e:
        result = repr(e)[:300]
    acked = time.monotonic() - started
    found = wait_delivered(args.mail, [token], 60)
    delivered = time.monotonic() - started
    note(f"{len(data)} octets: {result} after {acked:.1f} s; delivered after {delivered:.1f} s")
    out("big_message_octets", len(data))
    out("big_message_ack_seconds", f"{acked:.1f}")
    verdict(result == "250", f"a {args.big_mib} MiB message acknowledged with 250 ({acked:.1f} s)")
    check_exact(found, {token: data}, f"the {args.big_mib} MiB message")
    del data

    # Parallel clients: each one session, one message; alternate modes and 4 sources.
    sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    jobs = {}
    for i in range(args.parallel):
        token = f"{args.tag}-parallel-{i:03d}"
        mode = "implicit" if i % 2 == 0 else "starttls"
        jobs[token] = (mode, sources[i % len(sources)], message(token, small_body(token)))
    barrier = threading.Barrier(args.parallel, timeout=60)

    def run(token):
        mode, source, data = jobs[token]
        barrier.wait()
        port = args.implicit if mode == "implicit" else args.starttls
        try:
            refused = send_one(mode, port, args.cafile, source, data, timeout=60)
            return "250" if not refused else f"refused {refused}"
        except (OSError, smtplib.SMTPException, threading.BrokenBarrierError) as e:
            return repr(e)[:200]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        results = dict(zip(jobs, pool.map(run, jobs)))
    elapsed = time.monotonic() - started
    bad = {t: r for t, r in results.items() if r != "250"}
    out("parallel_seconds", f"{elapsed:.1f}")
    verdict(not bad, f"{args.parallel} parallel clients (implicit TLS and STARTTLS, from "
            f"127.0.0.2 to .5): all acknowledged with 250 in {elapsed:.1f} s"
            + (f"; not: {dict(list(bad.items())[:5])}" if bad else ""))
    found = wait_delivered(args.mail, list(jobs), 60)
    check_exact(found, {t: j[2] for t, j in jobs.items()}, f"{args.parallel} parallel clients")
    if args.backend == "postfix":
        log = wait_log(args.backend, args.log, list(jobs), 10)
        wrong = [t for t, (_, source, _) in jobs.items()
                 if backend_client(args.backend, log, t)[1] != source]
        verdict(not wrong, f"Postfix's log names each parallel client's own address "
                "(127.0.0.2 to .5)" + (f"; wrong: {wrong[:5]}" if wrong else ""))


# --- outage: the backend stops and starts while a sender loops -----------------------------


def classify(error):
    """(code, text) from an smtplib exception, or (None, repr)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(error.recipients.values()))
        return code, text.decode(errors="replace")
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error
        return error.smtp_code, text.decode(errors="replace") if isinstance(text, bytes) else text
    return None, repr(error)[:200]


def outage_message(token, kib):
    body = small_body(token) if kib == 0 else big_body(kib << 10)
    return message(token, body)


def cmd_outage_sender(args):
    """Sends for args.duration seconds, args.per_session messages a session, bodies of
    args.body_kib KiB (0: small); one ledger line per attempt: id, body size, the time of the
    answer, code, text, the exception (the stage) for a refusal."""
    deadline = time.monotonic() + args.duration
    n = 0
    session = None
    with open(args.ledger, "w") as ledger:
        while time.monotonic() < deadline:
            token = f"{args.tag}-outage-{args.name}-{n:05d}"
            n += 1
            data = outage_message(token, args.body_kib)
            entry = {"id": token, "kib": args.body_kib}
            try:
                if session is None:
                    session = Session("implicit", args.implicit, args.cafile, "127.0.0.2",
                                      timeout=20)
                    session.count = 0
                refused = session.client.sendmail(SENDER, ["box@relay.test"], data)
                entry.update(code=250, text="", refused=bool(refused))
                session.count += 1
                if session.count >= args.per_session:
                    session.close()
                    session = None
            except (OSError, smtplib.SMTPException) as e:
                code, text = classify(e)
                entry.update(code=code, text=text, error=type(e).__name__)
                if session is not None:
                    session.close()
                    session = None
                time.sleep(0.05)
            entry["t"] = time.time()
            ledger.write(json.dumps(entry) + "\n")
            ledger.flush()
    if session is not None:
        session.close()
    out(f"{args.name}_attempts", n)


def cmd_check_outage(args):
    ledger = []
    for path in args.ledger:
        with open(path) as f:
            ledger += [json.loads(line) for line in f if line.strip()]
    stop, stopped, start = args.stop_time, args.stopped_time, args.start_time
    acked = [e for e in ledger if e.get("code") == 250 and not e.get("refused")]
    failed = [e for e in ledger if e.get("code") != 250]
    wait_delivered(args.mail, [e["id"] for e in acked], 30)
    redelivered = []
    found = deliveries(args.mail, redelivered)
    missing = [e["id"] for e in acked if e["id"] not in found]
    dup = [e["id"] for e in acked if len(found.get(e["id"], [])) > 1]
    kinds = {}
    for e in failed:
        m = re.match(r"\s*(\d\.\d\.\d+)", e.get("text") or "")
        key = f"{e['kib']} KiB: {e.get('code')} {m.group(1) if m else ''}".strip() \
            + f" at {e.get('error')}"
        kinds[key] = kinds.get(key, 0) + 1
    after = [e for e in acked if e["t"] > start]
    before = [e for e in acked if e["t"] < stop]
    stopping = [e for e in acked if stop <= e["t"] < stopped]
    during = [e for e in acked if stopped <= e["t"] <= start]
    late = [e["id"] for e in failed if e["id"] in found]
    sizes = sorted({e["kib"] for e in ledger})
    out("attempts", ", ".join(
        f"{sum(1 for e in ledger if e['kib'] == k)} with {k or 'small'} KiB bodies "
        f"({sum(1 for e in acked if e['kib'] == k)} acknowledged)" for k in sizes))
    out("acknowledged", f"{len(acked)} ({len(before)} before `postfix stop`, {len(stopping)} "
        f"while it ran, {len(during)} while Postfix was down, {len(after)} after the restart)")
    out("refused", f"{len(failed)}: {kinds}")
    if redelivered:
        note(f"pipe(8) ran twice for {len(redelivered)} queue file(s): the first run cut off "
             "by the stop, the queue file delivered again after the restart (counted once, "
             f"the newest copy): {[(p, os.path.getsize(p)) for p in redelivered]}")
    if late:
        note(f"refused but delivered anyway (the RFC 5321 6.1 duplicate window): {late}")
    not4xx = [e for e in failed if not (e.get("code") and 400 <= e["code"] < 500)]
    not44 = [e for e in failed if e.get("code") != 451
             or not re.match(r"\s*4\.4\.[0-9]", e.get("text") or "")]
    verdict(failed and not not4xx,
            f"while Postfix was down the senders got {len(failed)} temporary refusals, all 4xx"
            + (f"; not 4xx: {not4xx[:5]}" if not4xx else ""))
    if not4xx == [] and not44:
        note(f"4xx other than 451 4.4.x: {[(e['code'], e['text']) for e in not44[:5]]}")
    out("all_451_4_4_x", not not44)
    verdict(acked and not missing and not dup,
            f"every one of the {len(acked)} messages acknowledged with 250 is delivered, "
            "exactly once" + (f"; missing: {missing[:10]}" if missing else "")
            + (f"; duplicated: {dup[:10]}" if dup else ""))
    check_exact({e["id"]: found.get(e["id"], []) for e in acked},
                {e["id"]: outage_message(e["id"], e["kib"]) for e in acked},
                "the acknowledged messages")
    verdict(not during, f"no 250 while Postfix was down ({len(during)})")
    verdict(len(before) > 0 and len(after) > 0,
            f"250s before the stop ({len(before)}) and again after Postfix's restart "
            f"({len(after)}): mail flows again")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("free-ports")
    s.add_argument("n", type=int)

    def common(s):
        s.add_argument("--implicit", type=int, required=True)
        s.add_argument("--starttls", type=int, required=True)
        s.add_argument("--cafile", required=True)
        s.add_argument("--mail", required=True)
        s.add_argument("--sent", required=True)
        s.add_argument("--backend", choices=["postfix", "exim"], required=True)
        s.add_argument("--log", required=True)
        s.add_argument("--tag", required=True)

    s = sub.add_parser("identity")
    common(s)
    s.add_argument("--user", required=True)
    s.add_argument("--password", required=True)
    s = sub.add_parser("reject")
    common(s)
    s.add_argument("--reject-text", required=True)
    s = sub.add_parser("smuggle")
    common(s)
    s.add_argument("--direct", type=int)
    s = sub.add_parser("bulk")
    common(s)
    s.add_argument("--big-mib", type=int, default=50)
    s.add_argument("--parallel", type=int, default=100)
    s = sub.add_parser("outage-sender")
    common(s)
    s.add_argument("--duration", type=float, required=True)
    s.add_argument("--per-session", type=int, default=3)
    s.add_argument("--body-kib", type=int, default=0)
    s.add_argument("--name", required=True)
    s.add_argument("--ledger", required=True)
    s = sub.add_parser("check-outage")
    common(s)
    s.add_argument("--ledger", action="append", required=True)
    s.add_argument("--stop-time", type=float, required=True)
    s.add_argument("--stopped-time", type=float, required=True)
    s.add_argument("--start-time", type=float, required=True)
    args = p.parse_args()
    if args.command == "free-ports":
        socks = []
        for _ in range(args.n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        print(" ".join(str(sock.getsockname()[1]) for sock in socks))
        for sock in socks:
            sock.close()
        return
    if hasattr(args, "sent"):
        os.makedirs(args.sent, exist_ok=True)
    globals()["cmd_" + args.command.replace("-", "_")](args)
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
