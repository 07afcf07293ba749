#!/usr/bin/env python3
"""compare.py MAILDIR MESSAGE...: each MESSAGE (a file with LF line ends, as given to
sendmail) must be in MAILDIR/new exactly once, found by its X-Interop-Id header, and equal to
the stored file once the leading Received: headers (smtpsd's and the relaying MTA's) are
taken off and CRLF is turned back into LF. Prints one line per message; exits 1 on a miss."""

import os
import re
import sys


def strip_received(data):
    lines = data.split(b"\r\n")
    i = 0
    while i < len(lines) and lines[i].lower().startswith(b"received:"):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\r\n".join(lines[i:])


def main():
    maildir, messages = sys.argv[1], sys.argv[2:]
    new = os.path.join(maildir, "new")
    stored = {}
    for name in os.listdir(new):
        with open(os.path.join(new, name), "rb") as f:
            data = f.read()
        m = re.search(rb"^X-Interop-Id: (\S+)\r$", data, re.M)
        if m:
            stored.setdefault(m.group(1).decode(), []).append(data)
    bad = 0
    for path in messages:
        with open(path, "rb") as f:
            expected = f.read()
        mid = re.search(rb"^X-Interop-Id: (\S+)$", expected, re.M).group(1).decode()
        found = stored.get(mid, [])
        if len(found) != 1:
            print(f"FAIL {mid}: stored {len(found)} times")
            bad += 1
            continue
        body = strip_received(found[0])
        if b"\n" in body.replace(b"\r\n", b""):
            print(f"FAIL {mid}: a bare LF in the stored message")
            bad += 1
            continue
        got = body.replace(b"\r\n", b"\n")
        if got != expected:
            at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
                      min(len(got), len(expected)))
            print(f"FAIL {mid}: differs at byte {at} ({len(got)} stored, {len(expected)} sent): "
                  f"{got[max(0, at - 40):at + 40]!r} vs {expected[max(0, at - 40):at + 40]!r}")
            bad += 1
            continue
        print(f"ok {mid}: {len(expected)} bytes, byte-exact")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
