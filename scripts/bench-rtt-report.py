#!/usr/bin/env python3
"""Renders the round-trip section of BENCHMARKS.md from scripts/bench-rtt.sh's raw files and
splices it in between `<!-- bench-rtt: begin -->` and `<!-- bench-rtt: end -->` (or before
"## Profile", or at the end), keeping the rest of the file. Standard library only."""

import argparse
import os
import re
import statistics
import sys
from collections import defaultdict

BEGIN, END = "<!-- bench-rtt: begin -->", "<!-- bench-rtt: end -->"
PEERS = [
    ("smtpsd", "smtpsd --sink"),
    ("postfix", "Postfix smtpd"),
    ("stunnel", "stunnel + smtp-sink"),
    ("aiosmtpd", "aiosmtpd"),
]
MILESTONES = {
    "implicit": [("tls", "TLS handshake done"), ("banner", "banner `220`"),
                 ("ehlo", "EHLO reply"), ("data", "`354`"),
                 ("message", "`250` after the dot"), ("quit", "`221` (end)")],
    "starttls": [("banner", "banner `220`"), ("ehlo", "EHLO reply"),
                 ("starttls", "`220` to STARTTLS"), ("tls", "TLS handshake done"),
                 ("ehlo_tls", "EHLO reply over TLS"), ("data", "`354`"),
                 ("message", "`250` after the dot"), ("quit", "`221` (end)")],
}


def kv(line):
    return dict(p.split("=", 1) for p in line.split() if "=" in p)


def expected(peer, tls, pipelining):
    """Round trips from connect() returning, by the flights each side must wait for (see the
    notes the section prints)."""
    envelope = 1 if pipelining == "used" else 3
    if tls == "implicit":
        banner = 1 if peer == "smtpsd" else 2
        e = {"tls": 1, "banner": banner, "ehlo": banner + 1}
        e["data"] = e["ehlo"] + envelope
    else:
        e = {"banner": 1, "ehlo": 2, "starttls": 3, "tls": 4, "ehlo_tls": 5}
        e["data"] = 5 + envelope
    e["message"] = e["data"] + 1
    e["quit"] = e["message"] + 1
    return e


def last_session_chunks(path):
    """The proxy's lines for the last connection that closed in a chunk log."""
    by_conn = defaultdict(list)
    closed = []
    if not os.path.exists(path):
        return []
    for line in open(path, encoding="utf-8"):
        m = re.match(r"conn=(\d+) ", line)
        if not m:
            continue
        by_conn[m.group(1)].append(line.rstrip("\n"))
        if line.rstrip().endswith(" closed"):
            closed.append(m.group(1))
    return by_conn[closed[-1]] if closed else []


def render_chunks(lines, one_way):
    """One line per chunk: when the proxy read it (≈ when the sender sent it), the direction,
    size and content, and the flight it belongs to."""
    out = []
    for line in lines:
        f = kv(line)
        if "bytes" in f:
            t = float(f["read_ms"])
            what = line.split(f"bytes={f['bytes']} ", 1)[1]
            arrow = "client → server" if f["dir"] == "c>s" else "server → client"
            out.append(f"{t:8.1f} ms  ({t / (2 * one_way):4.1f} RTT)  {arrow}  {f['bytes']:>5} B  {what}")
        elif "end of stream" in line:
            t = float(f["sent_ms"]) - one_way
            arrow = "client → server" if f["dir"] == "c>s" else "server → client"
            out.append(f"{t:8.1f} ms  ({t / (2 * one_way):4.1f} RTT)  {arrow}  FIN")
    return out


def server_pauses(lines, one_way):
    """Gaps of at least half a round trip between two server chunks with no client chunk in
    between: the server held output back by itself (one line each)."""
    out, last = [], None
    for line in lines:
        f = kv(line)
        if "bytes" not in f:
            continue
        t = float(f["read_ms"])
        if f["dir"] == "c>s":
            last = None
            continue
        if last is not None and t - last[0] >= one_way:
            out.append(f"{last[1]} B at {last[0]:.1f} ms, then {f['bytes']} B ({line.split('bytes=')[1].split(' ', 1)[1]}) "
                       f"at {t:.1f} ms: {t - last[0]:.1f} ms later with nothing from the client in between")
        last = (t, f["bytes"])
    return out


def main():
    ap = argparse.ArgumentParser()
    for a in ("results", "sessions", "meta", "commands", "chunks", "out"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--notes", help="hand-written notes to include as they are")
    a = ap.parse_args()
    meta = dict(l.rstrip("\n").split("=", 1) for l in open(a.meta, encoding="utf-8") if "=" in l)
    one_way = float(meta.get("delay_ms", "10"))
    rtt = 2 * one_way
    summaries = defaultdict(list)
    for line in open(a.results, encoding="utf-8"):
        f = kv(line)
        summaries[(f["peer"], f["tls"])].append(f)
    times = defaultdict(lambda: defaultdict(list))
    errors = defaultdict(int)
    for line in open(a.sessions, encoding="utf-8"):
        f = kv(line)
        key = (f.get("peer"), f.get("tls"))
        if "error" in f:
            errors[key] += 1
            continue
        if "session" not in f:
            continue
        for name, v in f.items():
            if name.endswith("_ms") and name not in ("connect_ms", "hello_sent_ms"):
                times[key][name[:-3]].append(float(v))

    def med(key, name):
        v = times[key].get(name)
        return statistics.median(v) if v else None

    lines = []
    w = lines.append
    w(BEGIN)
    w("## Latency in round trips (one-way delay "
      f"{one_way:g} ms, round trip {rtt:g} ms)\n")
    w("Generated by `scripts/bench-rtt.sh` (issue 16); `scripts/bench-peers.sh` keeps this "
      "section when it rewrites the rest of the file. This kernel has no `netem`, so "
      "`smtps-loadgen delay-proxy` sits between client and server on loopback and holds every "
      f"chunk {one_way:g} ms in each direction (one FIFO per direction, one write per chunk, "
      "TCP_NODELAY, half-close passed on); it connects to the server one delay after it accepts, "
      "like the client's last handshake ACK travelling to the server. `smtps-loadgen rtt` runs "
      "one session at a time like a real client: the banner is read before EHLO is sent, "
      "MAIL/RCPT/DATA go in one write only when the EHLO reply offers PIPELINING, the body "
      "(2 KiB) after the `354`, then QUIT. Each figure is the median over every session of "
      "every round, **in round trips** (time ÷ "
      f"{rtt:g} ms, one decimal) with the milliseconds below, counted **from `connect()` "
      "returning**: add one round trip for SYN and SYN-ACK to get the time from the first "
      "packet. Same certificate (ECDSA P-256), TLS 1.3, X25519, no session "
      "resumption, as in the tables above. The expected count of each milestone is in "
      "brackets (see *Flights* below).\n")

    verdict = []
    for tls in ("implicit", "starttls"):
        ms = MILESTONES[tls]
        w(f"### {'Implicit TLS (port 465 style)' if tls == 'implicit' else 'STARTTLS (port 587 style)'}\n")
        w("| server | " + " | ".join(label for _, label in ms) + " | pipelining | sessions | errors |")
        w("|---|" + "---|" * (len(ms) + 3))
        for peer, name in PEERS:
            key = (peer, tls)
            if key not in summaries:
                continue
            pipe = sorted({s.get("pipelining", "-") for s in summaries[key]})
            exp = expected(peer, tls, pipe[0] if len(pipe) == 1 else "-")
            cells = []
            for m, _ in ms:
                v = med(key, m)
                if v is None:
                    cells.append("–")
                else:
                    cells.append(f"**{v / rtt:.1f}** [{exp[m]}]<br>{v:.1f} ms")
            n = sum(len(v) for v in [times[key].get("quit", [])])
            fails = sum(1 for s in summaries[key] if s.get("failed"))
            err = errors[key] + fails
            w(f"| {name} | " + " | ".join(cells) + f" | {', '.join(pipe)} | {n} | {err} |")
        w("")
        if tls == "implicit":
            ours = med(("smtpsd", "implicit"), "ehlo")
            for peer, name in PEERS[1:]:
                theirs = med((peer, "implicit"), "ehlo")
                if ours is None or theirs is None:
                    continue
                verdict.append((name, theirs / rtt - ours / rtt,
                                round(theirs / rtt) - round(ours / rtt)))

    w("### Is smtpsd a round trip ahead? (implicit TLS, the first reply after the banner)\n")
    if verdict:
        ours = med(("smtpsd", "implicit"), "ehlo")
        ahead = all(flights >= 1 for _, _, flights in verdict)
        parts = [f"{name} {diff:+.2f} RTT ({flights:+d} whole)" for name, diff, flights in verdict]
        w(f"smtpsd's reply to the first EHLO comes after **{ours / rtt:.1f}** round trips; each "
          f"peer's comes later by: {', '.join(parts)}. "
          + ("**Yes: smtpsd is at least one round trip ahead of every peer** (whole round trips: "
             "the medians rounded to the nearest integer)." if ahead else
             "**No: smtpsd is not a whole round trip ahead of every peer**; see the flights "
             "below for where the time goes."))
        w("")

    w("### Flights (TLS 1.3, from `connect()` returning; 1 = one round trip)\n")
    w("- **Implicit TLS, smtpsd** (the `220` as 0.5-RTT data, `TlsSettings::half_rtt_data`): "
      "ClientHello →; ← ServerHello, {EncryptedExtensions, Certificate, CertificateVerify, "
      "Finished} **and the `220`** in the same flight: the banner is read with the handshake's "
      "end, **1**. {Finished} + EHLO →; ← `250` EHLO reply, **2**. MAIL+RCPT+DATA → ← "
      "`250`,`250`,`354`, 3; body → ← `250`, **4**; QUIT → ← `221`, **5**.")
    w("- **Implicit TLS, Postfix, stunnel + smtp-sink, aiosmtpd** (the banner after the "
      "handshake): ClientHello →; ← ServerHello … Finished, 1 (handshake done at the client); "
      "{Finished} →; the server's `220` only once it has the client's Finished: ← `220`, "
      "**2**. EHLO → ← `250`, **3**; the envelope 4 (with PIPELINING; aiosmtpd offers none: "
      "MAIL, RCPT, DATA one round trip each, 6); body → ← `250`, **5** (aiosmtpd 7); QUIT, "
      "**6** (aiosmtpd 8). stunnel connects to smtp-sink once the handshake is done, so the "
      "sink's banner follows the client's Finished too; OpenSSL (Postfix, stunnel, Python) "
      "may send a NewSessionTicket after the client's Finished (`NumTickets` is not 0 for "
      "Postfix here): it rides in the same flight as the `220` and costs no round trip by itself (but see the pause below).")
    w("- **STARTTLS, every server**: the server speaks first, so the banner needs the "
      "connection's last leg and its own trip back: ← `220`, **1**; EHLO, **2**; STARTTLS → ← "
      "`220`, 3; ClientHello → ← ServerHello … Finished, 4 (handshake done); {Finished} + EHLO "
      "→ ← `250`, 5; envelope 6 (aiosmtpd 8); body, **7** (aiosmtpd 9); QUIT, **8** (aiosmtpd "
      "10). 0.5-RTT data cannot help here: after STARTTLS the client speaks first.")
    w("- What costs CPU rather than round trips (server handshake work, Postfix forking, "
      "Python) shows as the fraction above the whole number; the machine is shared (load "
      f"average {meta.get('loadavg', '–')} over the run), so a few tenths are the scheduler's.\n")

    pauses = []
    for peer, name in PEERS:
        for tls in ("implicit", "starttls"):
            chunks = last_session_chunks(os.path.join(a.chunks, f"chunks-{peer}-{tls}.log"))
            pauses += [f"- {name}, {tls}: {p}" for p in server_pauses(chunks, one_way)]
    if pauses:
        w("Servers that paused their own output (in the logged session below; a gap of at "
          "least one delay between two server chunks with no client chunk in between):\n")
        for p in pauses:
            w(p)
        w("")
    if a.notes and os.path.exists(a.notes):
        w(open(a.notes, encoding="utf-8").read().rstrip("\n") + "\n")

    w("The proxy's log of one session per setup (the last one of the run): when the proxy "
      "read each chunk (≈ when its sender sent it; it is delivered one delay later), in ms and "
      "round trips from the accept (≈ `connect()` returning), the direction, the size and the "
      "TLS records in it (`hs` handshake, `ccs` change_cipher_spec, `app` encrypted records, "
      "which in TLS 1.3 also carry the encrypted handshake messages; `text` before STARTTLS):\n")
    for peer, name in PEERS:
        for tls in ("implicit", "starttls"):
            chunks = last_session_chunks(os.path.join(a.chunks, f"chunks-{peer}-{tls}.log"))
            if not chunks:
                continue
            w(f"<details><summary>{name}, {tls}</summary>\n")
            w("```")
            for l in render_chunks(chunks, one_way):
                w(l)
            w("```\n</details>\n")

    w("### Machine, versions, commands\n")
    w("| | |")
    w("|---|---|")
    for key, label in [("machine_model", "CPU"), ("machine_cores", "cores"), ("kernel", "kernel"),
                       ("os", "OS"), ("postfix", "Postfix"), ("stunnel", "stunnel"),
                       ("openssl", "OpenSSL (Postfix, stunnel, Python)"),
                       ("aiosmtpd", "aiosmtpd"), ("rustc", "rustc"), ("rustls", "rustls"),
                       ("commit", "smtps commit"), ("date", "run at (UTC)"),
                       ("settings", "settings"), ("loadavg", "load average (start → end)")]:
        w(f"| {label} | {meta.get(key, '–')} |")
    w("")
    w(f"As root on Debian 12: `{meta.get('settings', '')} scripts/bench-rtt.sh` (installs the "
      "peers as `scripts/bench-peers.sh` does and starts them with its functions and "
      "configuration, on ports of their own; builds the release binaries; starts one delay "
      "proxy per server and port; runs every setup once per round, the order alternating; "
      "stops everything and rewrites this section). Postfix, stunnel + smtp-sink and aiosmtpd "
      "are configured as in `scripts/bench-peers.sh`. The commands, then each `rtt` run "
      "(per round):\n")
    w("```")
    for line in open(a.commands, encoding="utf-8"):
        w(line.rstrip("\n"))
    w("```")
    w(END)
    section = "\n".join(lines) + "\n"

    if a.out == "-":
        sys.stdout.write(section)
        return
    text = open(a.out, encoding="utf-8").read() if os.path.exists(a.out) else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    elif "\n## Profile" in text:
        head, tail = text.split("\n## Profile", 1)
        text = head.rstrip("\n") + "\n\n" + section + "\n## Profile" + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote the round-trip section into {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
