"""Real SMTP clients (Python smtplib) for the C program tests. Every socket has a timeout.

  client.py send implicit|starttls PORT CAFILE USER PASSWORD MESSAGE_FILE RCPT...
      Logs in (implicit TLS or STARTTLS), sends the file byte for byte, quits.
  client.py abort implicit|starttls PORT CAFILE USER PASSWORD
      Starts a message, sends half a body, and drops the connection.
  client.py hold implicit|starttls PORT CAFILE USER PASSWORD SECONDS
      Starts a message, sends part of the body, then waits (the server stops meanwhile);
      prints the server's last reply, if any.
  client.py send-proxied implicit|starttls PORT CAFILE USER PASSWORD HEADER_HEX MESSAGE_FILE RCPT...
      As send, behind a pretend load balancer: the connection's first octets are the PROXY
      protocol header given in hex (before the TLS ClientHello, or before the banner).
"""

import smtplib
import socket
import ssl
import sys
import time

TIMEOUT = 15


class HeaderFirst(smtplib.SMTP):
    """Sends PROXY_HEADER on the new TCP connection before anything else (for SMTP_SSL: before
    the socket is wrapped, since it comes after this class in the method order)."""

    proxy_header = b""

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        sock.sendall(self.proxy_header)
        return sock


class ProxiedSMTP(HeaderFirst):
    pass


class ProxiedSMTP_SSL(smtplib.SMTP_SSL, HeaderFirst):
    pass


def connect(mode, port, cafile, user, password, proxy_header=None):
    context = ssl.create_default_context(cafile=cafile)
    HeaderFirst.proxy_header = proxy_header or b""
    if mode == "implicit":
        cls = ProxiedSMTP_SSL if proxy_header else smtplib.SMTP_SSL
        client = cls("localhost", port, context=context, timeout=TIMEOUT)
    else:
        cls = ProxiedSMTP if proxy_header else smtplib.SMTP
        client = cls("localhost", port, timeout=TIMEOUT)
        client.ehlo()
        client.starttls(context=context)
    client.ehlo()
    if user:
        client.login(user, password)
    return client


def start_message(client):
    code, _ = client.mail("sender@example.org")
    assert code == 250, code
    code, _ = client.rcpt("rcpt@example.net")
    assert code == 250, code
    code, _ = client.docmd("DATA")
    assert code == 354, code
    client.send(b"Subject: cut short\r\n\r\nThis message never ends")


def main():
    action, mode, port, cafile, user, password = sys.argv[1:7]
    port = int(port)
    if action in ("send", "send-proxied"):
        header = None
        if action == "send-proxied":
            header = bytes.fromhex(sys.argv[7])
            del sys.argv[7]
        message_file, rcpts = sys.argv[7], sys.argv[8:]
        with open(message_file, "rb") as f:
            message = f.read()
        client = connect(mode, port, cafile, user, password, header)
        refused = client.sendmail("sender@example.org", rcpts, message)
        client.quit()
        print("SENT", refused)
    elif action == "abort":
        client = connect(mode, port, cafile, user, password)
        start_message(client)
        client.sock.shutdown(socket.SHUT_RDWR)
        client.sock.close()
        print("ABORTED")
    elif action == "hold":
        client = connect(mode, port, cafile, user, password)
        start_message(client)
        print("HOLDING", flush=True)
        deadline = time.time() + float(sys.argv[7])
        client.sock.settimeout(1)
        seen = b""
        while time.time() < deadline:
            try:
                data = client.sock.recv(4096)
            except (socket.timeout, TimeoutError):
                continue
            except (OSError, ssl.SSLError):
                break
            if not data:
                break
            seen += data
        print("SERVER SAID", seen.decode(errors="replace").strip())
    else:
        raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main()
