#!/usr/bin/env python3
"""Clients of a relay front that pipeline MAIL, RCPT, RCPT, DATA and then, in turn: vanish
before the replies, reset, reset after 2.5 MiB of body, send close_notify mid-group, leave
mid-handshake, or send a whole 5 MiB message. Usage: relay-abandon.py N PORT CAFILE (run by
scripts/relay-abandon.sh)."""
import socket
import ssl
import struct
import sys

ctx = ssl.create_default_context(cafile=sys.argv[3])
PORT = int(sys.argv[2])
pending = {}  # reply octets read past the last reply, per socket


def reply(s):
    """The next reply's code (a pipelined group's replies may come in one record)."""
    data = pending.pop(s, b"")
    while True:
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        line, data = data.split(b"\r\n", 1)
        if line[3:4] != b"-":
            pending[s] = data
            return int(line[:3]), line


def conn():
    raw = socket.create_connection(("127.0.0.1", PORT))
    return raw, ctx.wrap_socket(raw, server_hostname="localhost")


def rst(raw):
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
big = (b"x" * 76 + b"\r\n") * (5 * 1024 * 1024 // 78)
group = b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@s.test>\r\nRCPT TO:<c@s.test>\r\nDATA\r\n"
counts = {}
for i in range(int(sys.argv[1])):
    stage = i % 6
    raw, s = conn()
    reply(s)
    s.sendall(b"EHLO c.test\r\n"); reply(s)
    if stage == 0:      # group, gone before the replies
        s.sendall(group); s.close()
    elif stage == 1:    # group, reset before the replies
        s.sendall(group); rst(s); s.close()
    elif stage == 2:    # group answered, 2.5 MiB of body, reset
        s.sendall(group)
        for _ in range(4): reply(s)
        s.sendall(big[: len(big) // 2]); rst(s); s.close()
    elif stage == 3:    # TLS close_notify mid-group
        s.sendall(group[:40])
        try: s.unwrap().close()
        except (ssl.SSLError, OSError): s.close()
    elif stage == 4:    # gone mid-handshake (a raw TCP client that sends half a ClientHello)
        s.close()
        r = socket.create_connection(("127.0.0.1", PORT)); r.sendall(b"\x16\x03\x01\x02\x00\x01\x00"); r.close()
    else:               # a whole 5 MiB message
        s.sendall(group)
        codes = [reply(s)[0] for _ in range(4)]
        s.sendall(big + b".\r\n")
        codes.append(reply(s)[0])
        s.sendall(b"QUIT\r\n"); reply(s); s.close()
        counts[tuple(codes)] = counts.get(tuple(codes), 0) + 1
print("whole messages:", counts)
