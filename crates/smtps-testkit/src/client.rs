//! A blocking SMTP client over a real `TcpStream`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtps_tls::rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::cert::{SERVER_NAME, client_connection};

/// How long any blocking call of [`SmtpClient`] may take: connecting, each read and each
/// write, and waiting for a whole reply or for the close. Tests may use it for their own waits.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A minimal SMTP client, enough to drive a server octet for octet: it speaks plaintext until
/// [`SmtpClient::upgrade`] (STARTTLS, in place) or TLS from the start
/// ([`SmtpClient::connect_tls`], implicit TLS). It verifies the server as [`SERVER_NAME`]
/// against the configuration it was given, such as [`crate::client_config()`].
///
/// It does not check what the server says: tests assert on the replies it returns.
pub struct SmtpClient {
    stream: Stream,
    /// Octets received and not yet returned as a reply.
    buf: Vec<u8>,
    config: Arc<ClientConfig>,
}

impl SmtpClient {
    /// Connects in plaintext (a submission or STARTTLS port; [`SmtpClient::upgrade`] starts TLS
    /// later). `config` is kept for that upgrade.
    ///
    /// # Panics
    /// If the connection fails within [`IO_TIMEOUT`].
    #[must_use]
    pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Self {
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        tcp.set_read_timeout(Some(IO_TIMEOUT))
            .expect("a read timeout");
        tcp.set_write_timeout(Some(IO_TIMEOUT))
            .expect("a write timeout");
        Self {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            config: Arc::clone(config),
        }
    }

    /// Connects through a (pretend) load balancer: `header` (a PROXY protocol header, or any
    /// octets) is sent first, then the client speaks plaintext; [`SmtpClient::upgrade`] for
    /// implicit TLS.
    ///
    /// # Panics
    /// As [`SmtpClient::connect`], or if sending fails.
    #[must_use]
    pub fn connect_proxied(addr: SocketAddr, config: &Arc<ClientConfig>, header: &[u8]) -> Self {
        let mut client = Self::connect(addr, config);
        client.send(header);
        client
    }

    /// Connects and speaks TLS from the first octet (implicit TLS, RFC 8314). The handshake
    /// runs on the first read or write.
    ///
    /// # Panics
    /// As [`SmtpClient::connect`].
    #[must_use]
    pub fn connect_tls(addr: SocketAddr, config: &Arc<ClientConfig>) -> Self {
        let mut client = Self::connect(addr, config);
        client.upgrade();
        client
    }

    /// Starts TLS on this connection in place, as after the `220` to `STARTTLS` (RFC 3207);
    /// octets received in plaintext and not yet read as a reply are kept. The handshake runs on
    /// the next read or write.
    ///
    /// # Panics
    /// If TLS already runs.
    pub fn upgrade(&mut self) {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            panic!("TLS already runs on this connection")
        };
        let conn = client_connection(&self.config, SERVER_NAME);
        self.stream = Stream::Tls(Box::new(StreamOwned::new(conn, tcp)));
    }

    /// Sends `data` as it is (no line ending is added), flushing TLS records.
    ///
    /// # Panics
    /// If writing fails or takes longer than [`IO_TIMEOUT`].
    pub fn send(&mut self, data: &[u8]) {
        let sent = match &mut self.stream {
            Stream::Plain(s) => s.write_all(data),
            Stream::Tls(s) => s.write_all(data).and_then(|()| s.flush()),
            Stream::Upgrading => unreachable!("only inside upgrade"),
        };
        if let Err(e) = sent {
            panic!("cannot send {} octets: {e}", data.len());
        }
    }

    /// Sends `line` and CRLF, and returns the reply.
    ///
    /// # Panics
    /// As [`SmtpClient::send`] and [`SmtpClient::reply`].
    pub fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// The next whole reply, all its lines, each ending in CRLF. If the connection ends (or a
    /// read fails or times out) first, whatever was received is returned, possibly "".
    ///
    /// # Panics
    /// If no whole reply arrives within [`IO_TIMEOUT`] while octets keep coming, or a reply is
    /// not UTF-8.
    pub fn reply(&mut self) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(end) = reply_end(&self.buf) {
                let reply = String::from_utf8(self.buf[..end].to_vec()).expect("a UTF-8 reply");
                self.buf.drain(..end);
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "no reply; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            if self.read_some() == 0 {
                return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            }
        }
    }

    /// Whether the server closed the connection (end of stream, or a reset) within
    /// [`IO_TIMEOUT`]; whatever else arrives first (a TLS alert, a last reply) is skipped.
    pub fn closed(&mut self) -> bool {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
        false
    }

    /// Whether TLS runs (or will, on the next read or write).
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The rustls client, once TLS runs: the negotiated version, the server's certificates.
    #[must_use]
    pub fn tls(&self) -> Option<&ClientConnection> {
        match &self.stream {
            Stream::Tls(s) => Some(&s.conn),
            _ => None,
        }
    }

    /// Reads what is there into `buf`; returns how many octets, 0 at the end of the stream or
    /// on any error (a timeout included).
    fn read_some(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = self.read(&mut chunk).unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    fn read(&mut self, chunk: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.read(chunk),
            Stream::Tls(s) => s.read(chunk),
            Stream::Upgrading => unreachable!("only inside upgrade"),
        }
    }
}

/// The socket, before and after TLS starts.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Only while [`SmtpClient::upgrade`] swaps one for the other.
    Upgrading,
}

/// Where the first whole reply in `buf` ends (after its last line's CRLF): the first line whose
/// code is followed by a space, or that is the code alone.
fn reply_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(end) = buf[start..].windows(2).position(|w| w == b"\r\n") {
        let line = &buf[start..start + end];
        if line.len() >= 4 && line[3] == b' ' || line.len() == 3 {
            return Some(start + end + 2);
        }
        start += end + 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use smtps_conn::{Connection, Mode};
    use smtps_proto::{SessionConfig, Verdict};

    use super::*;
    use crate::{acceptor, client_config};

    /// Serves one connection on `listener` with blocking socket calls, accepting everything.
    fn serve_one(listener: &TcpListener, mode: Mode) {
        let (mut tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let config = Arc::new(SessionConfig::new("mx.test"));
        let mut conn =
            Connection::new(mode, config, Some(acceptor()), Instant::now()).expect("connection");
        let mut buf = vec![0u8; 16 * 1024];
        while !conn.is_finished() {
            while let Some(event) = conn.poll_event() {
                if let Some(decision) = event.decision() {
                    conn.decide(decision, Verdict::Accept).expect("decide");
                }
            }
            while conn.wants_write() {
                conn.write_to(&mut tcp).expect("server write");
            }
            if conn.wants_read() && conn.read_from(Instant::now(), &mut tcp, &mut buf).is_err() {
                return;
            }
        }
    }

    #[test]
    fn starttls_over_a_socket_upgrades_in_place_and_sees_the_close() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = thread::spawn(move || serve_one(&listener, Mode::StartTls));
        let mut client = SmtpClient::connect(addr, &client_config());
        assert!(client.reply().starts_with("220 mx.test"));
        let ehlo = client.command("EHLO c.test");
        assert!(
            ehlo.contains("250-STARTTLS") && ehlo.ends_with("\r\n"),
            "{ehlo}"
        );
        assert!(client.command("STARTTLS").starts_with("220 2.0.0"));
        client.upgrade();
        assert!(client.is_tls());
        let ehlo = client.command("EHLO c.test");
        assert!(
            ehlo.starts_with("250-mx.test") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
        assert!(client.command("QUIT").starts_with("221"));
        assert!(client.closed());
        server.join().expect("server thread");
    }

    #[test]
    fn a_multiline_reply_ends_at_the_line_with_a_space() {
        assert_eq!(reply_end(b"250-a\r\n250-b\r\n"), None);
        assert_eq!(reply_end(b"250-a\r\n250 b\r\n354 go\r\n"), Some(14));
        assert_eq!(reply_end(b"250\r\n"), Some(5));
    }
}
