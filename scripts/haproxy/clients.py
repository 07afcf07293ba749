#!/usr/bin/env python3
"""Clients and checks for scripts/haproxy-e2e.sh: smtpsd nodes behind HAProxy (TCP mode,
send-proxy-v2). Every socket has a timeout and every loop a bound in count and time. Each
subcommand prints `key=value` lines and `PASS:`/`FAIL:` lines; its exit status is 1 when a
check fails.

  free-ports N                       N free TCP ports on 127.0.0.1
  haproxy-servers SOCKET             the servers' state from HAProxy's stats socket
  wait-up SOCKET SECONDS             until every server is UP with a passed check (L4OK)
  roundrobin ...                     smtplib through both fronts from 127.0.0.2 and 127.0.0.3
  check-roundrobin LEDGER NODE1 NODE2
  hold ...                           hold connections from 127.0.0.2 until a 421
  failover ...                       a sender for the failover run, writing a ledger
  check-failover LEDGER NODE1 NODE2 KILL_TIME
"""

import argparse
import email.parser
import email.policy
import json
import os
import re
import smtplib
import socket
import ssl
import sys
import time

TIMEOUT = 5
SOURCES = ("127.0.0.2", "127.0.0.3")


def out(key, value):
    print(f"{key}={value}", flush=True)


def tls_context(cafile):
    """Trusts only the test certificate (it names localhost and 127.0.0.1)."""
    return ssl.create_default_context(cafile=cafile)


def message(token, source):
    return (
        f"From: <sender@client.test>\r\n"
        f"To: <rcpt@example.test>\r\n"
        f"Subject: haproxy-e2e {token}\r\n"
        f"Message-ID: <{token}@haproxy-e2e.test>\r\n"
        f"X-Sent-From: {source}\r\n"
        f"\r\n"
        f"sent by {source} as {token}\r\n"
    )


class Session:
    """One SMTP session through a front: implicit TLS or STARTTLS, from `source`. `node` is
    the name in the banner (node1.test or node2.test). Raises on any error."""

    def __init__(self, front, port, cafile, source):
        context = tls_context(cafile)
        self.source = source
        helo = f"client-{source.replace('.', '-')}.test"
        if front == "implicit":
            self.client = smtplib.SMTP_SSL(
                local_hostname=helo, timeout=TIMEOUT, source_address=(source, 0), context=context
            )
        else:
            self.client = smtplib.SMTP(
                local_hostname=helo, timeout=TIMEOUT, source_address=(source, 0)
            )
        # Built without a host (to read the greeting from connect()), smtplib would check the
        # certificate against an empty name: the name it checks is `_host`.
        self.client._host = "127.0.0.1"
        try:
            code, greeting = self.client.connect("127.0.0.1", port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, greeting)
            self.node = greeting.decode(errors="replace").split(" ")[0]
            if front == "starttls":
                self.client.ehlo()
                code, reply = self.client.starttls(context=context)
                if code != 220:
                    raise smtplib.SMTPResponseException(code, reply)
            self.client.ehlo()
        except BaseException:
            self.client.close()
            raise

    def send(self, token):
        """One message; returns when the end of DATA was answered 250 (raises otherwise)."""
        client = self.client
        code, reply = client.mail("sender@client.test")
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, "sender@client.test")
        code, reply = client.rcpt("rcpt@example.test")
        if code != 250:
            raise smtplib.SMTPRecipientsRefused({"rcpt@example.test": (code, reply)})
        code, reply = client.data(message(token, self.source).encode("ascii"))
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def close(self):
        try:
            self.client.quit()
        except (OSError, smtplib.SMTPException):
            self.client.close()


def send_one(front, port, cafile, token, source):
    """One session, one message."""
    session = Session(front, port, cafile, source)
    try:
        session.send(token)
    finally:
        session.close()


# --- the maildirs --------------------------------------------------------------------------


def stored(maildir):
    """Every message in maildir/new: {token: [received header, ...]} (a list: duplicates)."""
    found = {}
    new = os.path.join(maildir, "new")
    if not os.path.isdir(new):
        return found
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    for name in sorted(os.listdir(new)):
        with open(os.path.join(new, name), "rb") as f:
            headers = parser.parse(f)
        mid = headers.get("Message-ID", "")
        m = re.match(r"\s*<([^@>]+)@haproxy-e2e\.test>", mid)
        if not m:
            continue
        received = " ".join((headers.get_all("Received") or [""])[0].split())
        found.setdefault(m.group(1), []).append(
            {"received": received, "from": headers.get("X-Sent-From", "").strip()}
        )
    return found


def read_ledger(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# --- HAProxy's stats socket ----------------------------------------------------------------


def haproxy_command(path, command):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def servers(path):
    """[(backend, server, status, check_status)] from `show stat`."""
    lines = haproxy_command(path, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = []
    for line in lines[1:]:
        if not line.strip():
            continue
        row = dict(zip(header, line.split(",")))
        if row["svname"] in ("FRONTEND", "BACKEND"):
            continue
        rows.append((row["pxname"], row["svname"], row["status"], row["check_status"]))
    return rows


def cmd_free_ports(args):
    socks = []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_haproxy_servers(args):
    for backend, server, status, check in servers(args.socket):
        print(f"  haproxy: {backend}/{server} {status} check={check}")


def cmd_wait_up(args):
    deadline = time.monotonic() + args.seconds
    rows = []
    while time.monotonic() < deadline:
        try:
            rows = servers(args.socket)
        except OSError:
            rows = []
        if rows and all(status == "UP" and check == "L4OK" for _, _, status, check in rows):
            break
        time.sleep(0.1)
    for backend, server, status, check in rows:
        print(f"  haproxy: {backend}/{server} {status} check={check}")
    ok = bool(rows) and all(s == "UP" and c == "L4OK" for _, _, s, c in rows)
    sys.exit(0 if ok else 1)


# --- 4. round robin and Received: ----------------------------------------------------------


def cmd_roundrobin(args):
    """args.count messages through each front, alternating the source address (half each)."""
    with open(args.ledger, "w") as ledger:
        for front, port in (("implicit", args.implicit), ("starttls", args.starttls)):
            for i in range(args.count):
                source = SOURCES[i % 2]
                token = f"rr-{front}-{source}-{i:02d}"
                entry = {"id": token, "front": front, "source": source, "ok": True}
                try:
                    send_one(front, port, args.cafile, token, source)
                except (OSError, smtplib.SMTPException) as e:
                    entry.update(ok=False, error=repr(e)[:200])
                    print(f"  {token}: {e!r}", flush=True)
                ledger.write(json.dumps(entry) + "\n")
    out("sent", 2 * args.count)


def cmd_check_roundrobin(args):
    ledger = read_ledger(args.ledger)
    nodes = {"node1": stored(args.node1), "node2": stored(args.node2)}
    fail = False

    def verdict(ok, text):
        nonlocal fail
        print(f"{'PASS' if ok else 'FAIL'}: {text}", flush=True)
        fail |= not ok

    for front in ("implicit", "starttls"):
        sent = [e["id"] for e in ledger if e["front"] == front]
        per_node = {n: sum(1 for t in sent if t in found) for n, found in nodes.items()}
        out(f"{front}_per_node", f"node1:{per_node['node1']} node2:{per_node['node2']}")
        verdict(
            per_node["node1"] > 0 and per_node["node2"] > 0,
            f"round robin over the {front} front: node1 got {per_node['node1']}, "
            f"node2 got {per_node['node2']} of {len(sent)}",
        )
    refused = [e["id"] for e in ledger if not e["ok"]]
    verdict(
        not refused,
        f"all {len(ledger)} messages acknowledged with 250"
        + (f"; not: {refused}" if refused else ""),
    )
    copies = {e["id"]: sum(len(found.get(e["id"], [])) for found in nodes.values()) for e in ledger}
    wrong = {t: c for t, c in copies.items() if c != 1}
    verdict(
        not wrong,
        f"every message stored exactly once in total ({len(ledger)} sent, "
        f"{sum(copies.values())} stored)" + (f"; not once: {wrong}" if wrong else ""),
    )
    bad = []
    for e in ledger:
        for node, found in nodes.items():
            for copy in found.get(e["id"], []):
                want = f"([{e['source']}]) by {node}.test"
                if want not in copy["received"] or "[127.0.0.1]" in copy["received"]:
                    bad.append(f"{e['id']} on {node}: {copy['received']}")
    if ledger:
        example = next(iter(nodes["node1"].values()), [{"received": "-"}])[0]["received"]
        out("received_example", example)
    verdict(
        not bad,
        "each Received: header names the real client ([127.0.0.2] or [127.0.0.3], the "
        "sender) and the node that stored it, never the balancer's [127.0.0.1]"
        + (f"; wrong: {bad[:5]}" if bad else ""),
    )
    sys.exit(1 if fail else 0)


# --- 5. the per-address limit --------------------------------------------------------------


def banner(sock):
    """The greeting's last line ('220 ...' or '421 ...'), or the error."""
    data = b""
    try:
        while len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
            lines = data.split(b"\r\n")
            if any(re.match(rb"\d{3} ", line) for line in lines[:-1]):
                break
    except OSError as e:
        return f"error: {e!r}"
    lines = [line for line in data.decode(errors="replace").split("\r\n") if line]
    return lines[-1] if lines else "closed without a reply"


def connect(port, source):
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0))
    return sock, banner(sock)


def cmd_hold(args):
    """Holds connections from 127.0.0.2 until one is answered 421 (at most args.attempts);
    while they are held, one from 127.0.0.3 must get 220."""
    held, accepted, refused = [], 0, None
    try:
        for i in range(args.attempts):
            sock, line = connect(args.port, "127.0.0.2")
            print(f"  127.0.0.2 connection {i + 1}: {line}", flush=True)
            if line.startswith("220 "):
                held.append(sock)
                accepted += 1
                continue
            sock.close()
            if line.startswith("421"):
                refused = line
            break
        other, other_line = connect(args.port, "127.0.0.3")
        print(f"  127.0.0.3 while 127.0.0.2 holds {accepted}: {other_line}", flush=True)
        other.close()
    finally:
        for sock in held:
            sock.close()
    out("accepted", accepted)
    out("refused", refused or "-")
    out("other", other_line)
    ok = refused is not None and accepted == args.expect
    print(
        f"{'PASS' if ok else 'FAIL'}: 127.0.0.2 was refused with 421 after {accepted} "
        f"connections held (expected {args.expect}: the limit of 2 per node on 2 nodes)",
        flush=True,
    )
    ok_other = other_line.startswith("220 ")
    print(
        f"{'PASS' if ok_other else 'FAIL'}: 127.0.0.3 got 220 while 127.0.0.2 was at its limit "
        f"(all of them reach the nodes from the balancer's 127.0.0.1)",
        flush=True,
    )
    sys.exit(0 if ok and ok_other else 1)


# --- 7. failover ---------------------------------------------------------------------------


def cmd_failover(args):
    """Sessions from 127.0.0.2 of args.per_session messages each (a short pause between
    them), until args.duration has passed (and at most args.max_attempts messages). The ledger
    has one JSON line per message, flushed at once: {"id", "node" (the banner's), "t0"
    (time.time() as the session began), "t" (after the reply or the error), "ok", "error"}. args.status holds the node of
    the session in progress ("-" between sessions), for the script to time its kill."""
    start = time.monotonic()
    acked = failed = n = 0

    def status(text):
        with open(args.status + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.status + ".tmp", args.status)

    with open(args.ledger, "w") as ledger:

        def record(entry, error=None):
            entry["ok"] = error is None
            if error is not None:
                entry["error"] = repr(error)[:200]
            entry["t"] = time.time()
            ledger.write(json.dumps(entry) + "\n")
            ledger.flush()

        while n < args.max_attempts and time.monotonic() - start < args.duration:
            token = f"fo-{n:05d}"
            n += 1
            began = time.time()
            try:
                session = Session("implicit", args.port, args.cafile, "127.0.0.2")
            except (OSError, smtplib.SMTPException) as e:
                record({"id": token, "node": "-", "t0": began}, e)
                failed += 1
                time.sleep(0.05)
                continue
            status(session.node)
            try:
                for i in range(args.per_session):
                    if i:
                        token = f"fo-{n:05d}"
                        n += 1
                        time.sleep(0.01)
                    entry = {"id": token, "node": session.node, "t0": began}
                    try:
                        session.send(token)
                    except (OSError, smtplib.SMTPException) as e:
                        record(entry, e)
                        failed += 1
                        time.sleep(0.05)
                        break
                    record(entry)
                    acked += 1
            finally:
                session.close()
                status("-")
    out("acked", acked)
    out("failed", failed)


def cmd_check_failover(args):
    ledger = read_ledger(args.ledger)
    nodes = {"node1": stored(args.node1), "node2": stored(args.node2)}
    kill_time = float(args.kill_time)
    acked = [e for e in ledger if e["ok"]]
    failed = [e for e in ledger if not e["ok"]]
    fail = False

    def verdict(ok, text):
        nonlocal fail
        print(f"{'PASS' if ok else 'FAIL'}: {text}", flush=True)
        fail |= not ok

    where = {e["id"]: [n for n, found in nodes.items() for _ in found.get(e["id"], [])] for e in ledger}
    lost = [e["id"] for e in acked if not where[e["id"]]]
    misplaced = [
        f"{e['id']} acknowledged by {e['node']}, stored {where[e['id']]}"
        for e in acked
        if where[e["id"]] and where[e["id"]] != [e["node"].removesuffix(".test")]
    ]
    per_node = {n: sum(1 for e in acked if n in where[e["id"]]) for n in nodes}
    # Sessions begun after the kill (the script takes the time once node2 is reaped).
    after = [e for e in acked if e["t0"] > kill_time]
    after_elsewhere = [e["id"] for e in after if where[e["id"]] != ["node1"]]
    unacked_stored = [e["id"] for e in failed if where[e["id"]]]
    cut = [e for e in failed if e["node"] == "node2.test"]
    out("attempts", len(ledger))
    out("acked", len(acked))
    out("acked_in_sessions_begun_after_kill", len(after))
    out("failed_attempts", len(failed))
    out("failed_in_a_node2_session_cut_by_the_kill", len(cut))
    out("acked_found", f"node1:{per_node['node1']} node2:{per_node['node2']}")
    out("unacked_but_stored", len(unacked_stored))
    for e in failed[:5]:
        out("failure", f"{e['id']} on {e['node']} at kill{e['t'] - kill_time:+.3f}s: {e.get('error')}")
    verdict(
        acked and not lost and not misplaced,
        f"no acknowledged message lost: all {len(acked)} acknowledged ids are stored exactly "
        f"once, on the node that acknowledged them" + (f"; lost {lost[:10]}" if lost else "")
        + (f"; {misplaced[:10]}" if misplaced else ""),
    )
    verdict(
        len(after) > 0 and not after_elsewhere,
        f"after node2 was killed the sender got {len(after)} acknowledgements, all stored "
        f"on node1" + (f"; elsewhere: {after_elsewhere[:10]}" if after_elsewhere else ""),
    )
    verdict(
        per_node["node2"] > 0,
        f"node2 served the sender before it was killed ({per_node['node2']} acknowledged)",
    )
    sys.exit(1 if fail else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("free-ports")
    p.add_argument("n", type=int)
    p.set_defaults(run=cmd_free_ports)
    p = sub.add_parser("haproxy-servers")
    p.add_argument("socket")
    p.set_defaults(run=cmd_haproxy_servers)
    p = sub.add_parser("wait-up")
    p.add_argument("socket")
    p.add_argument("seconds", type=float)
    p.set_defaults(run=cmd_wait_up)
    p = sub.add_parser("roundrobin")
    p.add_argument("--implicit", type=int, required=True)
    p.add_argument("--starttls", type=int, required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--ledger", required=True)
    p.set_defaults(run=cmd_roundrobin)
    p = sub.add_parser("check-roundrobin")
    p.add_argument("ledger")
    p.add_argument("node1")
    p.add_argument("node2")
    p.set_defaults(run=cmd_check_roundrobin)
    p = sub.add_parser("hold")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--attempts", type=int, default=8)
    p.add_argument("--expect", type=int, default=4)
    p.set_defaults(run=cmd_hold)
    p = sub.add_parser("failover")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--duration", type=float, default=8)
    p.add_argument("--max-attempts", type=int, default=5000)
    p.add_argument("--per-session", type=int, default=4)
    p.add_argument("--status", required=True)
    p.add_argument("--ledger", required=True)
    p.set_defaults(run=cmd_failover)
    p = sub.add_parser("check-failover")
    p.add_argument("ledger")
    p.add_argument("node1")
    p.add_argument("node2")
    p.add_argument("kill_time")
    p.set_defaults(run=cmd_check_failover)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
