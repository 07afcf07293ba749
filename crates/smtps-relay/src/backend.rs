//! One connection to the backend MTA, blocking, on the session's relay thread: connect, greet,
//! optional STARTTLS, the client's identity (XCLIENT or a PROXY v2 header), then commands
//! rebuilt from parsed values, each answered by one checked reply.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::capabilities::Capabilities;
use crate::reply::{BackendReply, MAX_LINE, ReplyError, ReplyReader};
use crate::xtext;

/// How the backend learns who the client is.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Identity {
    /// Not at all: the backend sees the front as the client. Only for backends that apply no
    /// per-client policy.
    #[default]
    None,
    /// Postfix's XCLIENT (`smtpd_authorized_xclient_hosts`): ADDR, PORT, HELO, PROTO, LOGIN,
    /// DESTADDR, DESTPORT and NAME, those the backend advertises.
    Xclient,
    /// A PROXY protocol v2 header before the backend's greeting (Postfix
    /// `smtpd_upstream_proxy_protocol = haproxy`, Exim `hosts_proxy`).
    ProxyV2,
}

/// Where the backend is and how to talk to it.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// `host:port`; resolved at each connection.
    pub address: String,
    /// How the client's identity is passed.
    pub identity: Identity,
    /// STARTTLS to the backend with this client configuration (for a backend across a
    /// network); `None` speaks plaintext (a backend on loopback).
    pub starttls: Option<Arc<ClientConfig>>,
    /// The name to verify the backend's certificate against; the host part of `address` by
    /// default.
    pub server_name: Option<String>,
    /// The name the front gives in its EHLO.
    pub helo_name: String,
    /// Connecting, and the greeting.
    pub connect_timeout: Duration,
    /// Each command's reply (RFC 5321 §4.5.3.2: 5 minutes for MAIL and RCPT).
    pub command_timeout: Duration,
    /// The reply to the end of the message (RFC 5321 §4.5.3.2.6: 10 minutes).
    pub data_timeout: Duration,
}

impl BackendConfig {
    /// A backend at `address` (`host:port`) with plaintext, no identity, and the RFC timeouts.
    #[must_use]
    pub fn new(address: impl Into<String>, helo_name: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            identity: Identity::None,
            starttls: None,
            server_name: None,
            helo_name: helo_name.into(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }
}

/// Who the client is, as the backend should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client's address (after any PROXY header in front of the front).
    pub addr: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// Its HELO/EHLO name.
    pub helo: Option<String>,
    /// EHLO rather than HELO.
    pub extended: bool,
    /// The authenticated user.
    pub login: Option<String>,
}

/// A backend failure: the client gets `451 4.4.x`, never a 5xx for a transport problem.
#[non_exhaustive]
#[derive(Debug)]
pub enum BackendError {
    /// The address does not resolve, or every address refused or timed out.
    Connect(String, io::Error),
    /// Reading or writing failed, timed out, or the backend closed.
    Io(io::Error),
    /// The backend's reply is malformed.
    Reply(ReplyError),
    /// The backend answered a setup step (greeting, EHLO, STARTTLS, XCLIENT) with this.
    Refused(&'static str, BackendReply),
    /// The backend does not offer what the configuration needs (XCLIENT, STARTTLS).
    Missing(&'static str),
    /// TLS to the backend failed.
    Tls(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(address, error) => write!(f, "cannot connect to {address}: {error}"),
            Self::Io(error) => write!(f, "backend connection failed: {error}"),
            Self::Reply(error) => write!(f, "backend sent a bad reply: {error}"),
            Self::Refused(step, reply) => write!(
                f,
                "backend refused {step}: {} {}",
                reply.code,
                reply.lines.first().map_or("", String::as_str)
            ),
            Self::Missing(what) => write!(f, "backend does not offer {what}"),
            Self::Tls(error) => write!(f, "TLS to the backend failed: {error}"),
        }
    }
}

impl std::error::Error for BackendError {}

impl From<io::Error> for BackendError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<ReplyError> for BackendError {
    fn from(error: ReplyError) -> Self {
        Self::Reply(error)
    }
}

/// The socket, plaintext or after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

/// A connection to the backend, ready for MAIL.
pub struct Backend {
    reader: BufReader<Stream>,
    capabilities: Capabilities,
    /// The identity last sent with XCLIENT.
    sent_identity: Option<ClientIdentity>,
    identity: Identity,
    command_timeout: Duration,
    data_timeout: Duration,
    /// The name this connection's EHLO gives.
    helo_name: String,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Connects, reads the greeting, says EHLO, starts TLS if configured, and introduces
    /// `client`.
    ///
    /// # Errors
    /// [`BackendError`] for any step that fails; nothing is left open.
    pub fn connect(config: &BackendConfig, client: &ClientIdentity) -> Result<Self, BackendError> {
        let tcp = connect_tcp(&config.address, config.connect_timeout)?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(config.connect_timeout))?;
        tcp.set_write_timeout(Some(config.command_timeout))?;
        let mut backend = Self {
            reader: BufReader::with_capacity(MAX_LINE * 4, Stream::Plain(tcp)),
            capabilities: Capabilities::default(),
            sent_identity: None,
            identity: config.identity,
            command_timeout: config.command_timeout,
            data_timeout: config.data_timeout,
            // With a PROXY header the backend takes the connection for the client's own, so
            // it gets the client's name too (Exim logs and checks `helo=`); otherwise the
            // front introduces itself (and, with XCLIENT, the client after it).
            helo_name: match (config.identity, &client.helo) {
                (Identity::ProxyV2, Some(name)) => name.clone(),
                _ => config.helo_name.clone(),
            },
        };
        if config.identity == Identity::ProxyV2 {
            let header = proxy_v2_header(client.addr, client.local);
            backend.reader.get_mut().write_all(&header)?;
        }
        backend.expect_greeting("the connection")?;
        backend.ehlo()?;
        if let Some(tls) = &config.starttls {
            backend.starttls(config, tls)?;
        }
        backend.set_timeout(config.command_timeout)?;
        if config.identity == Identity::Xclient {
            backend.xclient(client)?;
        }
        Ok(backend)
    }

    /// What the backend advertised (after STARTTLS and XCLIENT, the last EHLO's).
    #[must_use]
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Tells the backend about `client` again if it changed since (a later AUTH, a new EHLO):
    /// with XCLIENT only; a PROXY header is sent once per connection.
    ///
    /// # Errors
    /// As [`Backend::connect`].
    pub fn update_identity(&mut self, client: &ClientIdentity) -> Result<(), BackendError> {
        if self.identity == Identity::Xclient && self.sent_identity.as_ref() != Some(client) {
            self.xclient(client)?;
        }
        Ok(())
    }

    /// Sends one command line (CRLF added) and reads its reply.
    ///
    /// # Errors
    /// I/O, timeout, or a malformed reply.
    pub fn command(&mut self, line: &str) -> Result<BackendReply, BackendError> {
        self.send(line)?;
        self.last_reply()
    }

    /// Reads the reply to the last command sent: nothing may follow it (a second reply would
    /// answer the next command and shift every verdict after it).
    ///
    /// # Errors
    /// As [`Backend::reply`], and [`ReplyError::Unsolicited`] for octets after it.
    pub fn last_reply(&mut self) -> Result<BackendReply, BackendError> {
        let reply = self.reply()?;
        self.expect_nothing_buffered()?;
        Ok(reply)
    }

    fn expect_nothing_buffered(&self) -> Result<(), BackendError> {
        match self.reader.buffer() {
            [] => Ok(()),
            extra => Err(ReplyError::Unsolicited(
                String::from_utf8_lossy(&extra[..extra.len().min(64)]).into_owned(),
            )
            .into()),
        }
    }

    /// Sends one command line without reading its reply (PIPELINING, RFC 2920).
    ///
    /// # Errors
    /// I/O.
    pub fn send(&mut self, line: &str) -> Result<(), BackendError> {
        debug_assert!(
            !line.contains(['\r', '\n']),
            "commands are built, never copied"
        );
        let mut wire = Vec::with_capacity(line.len() + 2);
        wire.extend_from_slice(line.as_bytes());
        wire.extend_from_slice(b"\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(&wire)?;
        stream.flush()?;
        Ok(())
    }

    /// Writes message octets, already encoded.
    ///
    /// # Errors
    /// I/O.
    pub fn write_body(&mut self, octets: &[u8]) -> Result<(), BackendError> {
        self.reader.get_mut().write_all(octets)?;
        Ok(())
    }

    /// Flushes the message's last octets and reads the reply to it, with the data timeout.
    ///
    /// # Errors
    /// I/O, timeout, or a malformed reply.
    pub fn end_of_data(&mut self) -> Result<BackendReply, BackendError> {
        self.reader.get_mut().flush()?;
        self.set_timeout(self.data_timeout)?;
        let reply = self.last_reply();
        self.set_timeout(self.command_timeout)?;
        reply
    }

    /// Ends the session politely (QUIT), ignoring failures: the connection closes anyway.
    pub fn quit(mut self) {
        let _ = self.set_timeout(Duration::from_secs(5));
        let _ = self.command("QUIT");
    }

    /// Reads one reply.
    ///
    /// # Errors
    /// I/O, timeout, end of stream, or a malformed reply.
    pub fn reply(&mut self) -> Result<BackendReply, BackendError> {
        let mut reader = ReplyReader::default();
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(BackendError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            let Some(text) = line.strip_suffix(b"\r\n") else {
                if line.len() >= MAX_LINE {
                    return Err(ReplyError::LineTooLong.into());
                }
                return Err(
                    ReplyError::Malformed(String::from_utf8_lossy(&line).into_owned()).into(),
                );
            };
            if let Some(reply) = reader.line(text)? {
                return Ok(reply);
            }
        }
    }

    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().tcp().set_read_timeout(Some(timeout))
    }

    fn expect_greeting(&mut self, after: &'static str) -> Result<(), BackendError> {
        let greeting = self.reply()?;
        if greeting.code == 220 {
            Ok(())
        } else {
            Err(BackendError::Refused(after, greeting))
        }
    }

    fn ehlo(&mut self) -> Result<(), BackendError> {
        let name = self.helo_name.clone();
        self.greet("EHLO", &name)
    }

    /// `EHLO name` (the capabilities come from its reply) or `HELO name` (none).
    fn greet(&mut self, verb: &'static str, name: &str) -> Result<(), BackendError> {
        let reply = self.command(&format!("{verb} {name}"))?;
        if !reply.is_positive() {
            return Err(BackendError::Refused(verb, reply));
        }
        self.capabilities = if verb == "EHLO" {
            Capabilities::from_ehlo(&reply)
        } else {
            Capabilities::default()
        };
        Ok(())
    }

    fn starttls(
        &mut self,
        config: &BackendConfig,
        tls: &Arc<ClientConfig>,
    ) -> Result<(), BackendError> {
        if !self.capabilities.starttls {
            return Err(BackendError::Missing("STARTTLS"));
        }
        // `command` refuses octets after the 220: they would be plaintext injected into the
        // TLS session (CVE-2011-0411 from the other side).
        let reply = self.command("STARTTLS")?;
        if reply.code != 220 {
            return Err(BackendError::Refused("STARTTLS", reply));
        }
        let name = config
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(&config.address).to_owned());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| BackendError::Tls(format!("{name}: {e}")))?;
        let connection = ClientConnection::new(Arc::clone(tls), server_name)
            .map_err(|e| BackendError::Tls(e.to_string()))?;
        let placeholder = BufReader::new(Stream::Plain(self.reader.get_ref().tcp().try_clone()?));
        let Stream::Plain(tcp) = std::mem::replace(&mut self.reader, placeholder).into_inner()
        else {
            return Err(BackendError::Tls("STARTTLS twice".into()));
        };
        let mut stream = StreamOwned::new(connection, tcp);
        // Drive the handshake now, so that a failure is reported as TLS, not as a later read.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| BackendError::Tls(e.to_string()))?;
        }
        self.reader = BufReader::with_capacity(MAX_LINE * 4, Stream::Tls(Box::new(stream)));
        self.ehlo()
    }

    fn xclient(&mut self, client: &ClientIdentity) -> Result<(), BackendError> {
        if self.capabilities.xclient.is_none() {
            return Err(BackendError::Missing(
                "XCLIENT to this front (Postfix: add the front's address to smtpd_authorized_xclient_hosts)",
            ));
        }
        let mut attributes = Vec::new();
        let mut add = |name: &str, value: String| {
            if self.capabilities.xclient_takes(name) {
                attributes.push(format!("{name}={}", xtext::encode(&value)));
            }
        };
        add("NAME", "[UNAVAILABLE]".to_owned());
        add("ADDR", address_attribute(client.addr));
        add("PORT", client.addr.port().to_string());
        add(
            "PROTO",
            if client.extended { "ESMTP" } else { "SMTP" }.to_owned(),
        );
        add(
            "HELO",
            client
                .helo
                .clone()
                .unwrap_or_else(|| "[UNAVAILABLE]".to_owned()),
        );
        add(
            "LOGIN",
            client
                .login
                .clone()
                .unwrap_or_else(|| "[UNAVAILABLE]".to_owned()),
        );
        add("DESTADDR", address_attribute(client.local));
        add("DESTPORT", client.local.port().to_string());
        // Postfix takes at most 512 octets a command line: send the attributes in as many
        // XCLIENT commands as needed, each answered with a new greeting.
        for line in pack("XCLIENT", &attributes, MAX_LINE - 2) {
            let reply = self.command(&line)?;
            if reply.code != 220 {
                return Err(BackendError::Refused("XCLIENT", reply));
            }
        }
        self.sent_identity = Some(client.clone());
        // XCLIENT resets the session: greet again as the client did, with its name (Postfix's
        // XCLIENT_README), or the next EHLO would replace the HELO name XCLIENT just gave and
        // every HELO restriction would judge the front instead of the client.
        match &client.helo {
            Some(name) if !client.extended => self.greet("HELO", name),
            Some(name) => self.greet("EHLO", name),
            None => self.ehlo(),
        }
    }
}

/// Postfix's form of an address attribute: `IPV6:` before an IPv6 address.
fn address_attribute(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPV6:{}", v6.ip()),
        },
    }
}

/// `command` followed by as many `words` as fit in `limit` octets, over as many lines as needed.
fn pack(command: &str, words: &[String], limit: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = command.to_owned();
    for word in words {
        if line.len() > command.len() && line.len() + 1 + word.len() > limit {
            lines.push(std::mem::replace(&mut line, command.to_owned()));
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > command.len() {
        lines.push(line);
    }
    lines
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, _)) => host,
        None => address,
    }
}

fn connect_tcp(address: &str, timeout: Duration) -> Result<TcpStream, BackendError> {
    let addrs = address
        .to_socket_addrs()
        .map_err(|e| BackendError::Connect(address.to_owned(), e))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => return Ok(tcp),
            Err(error) => last = error,
        }
    }
    Err(BackendError::Connect(address.to_owned(), last))
}

/// A PROXY protocol v2 header (haproxy proxy-protocol.txt §2.2) naming `source` as the client
/// of `destination`, without TLVs.
#[must_use]
pub fn proxy_v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, PROXY
    let canonical = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(v4.into(), a.port())),
        v4 => v4,
    };
    match (canonical(source), canonical(destination)) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            header.extend_from_slice(&[0x11, 0, 12]);
            header.extend_from_slice(&s.ip().octets());
            header.extend_from_slice(&d.ip().octets());
            header.extend_from_slice(&s.port().to_be_bytes());
            header.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            header.extend_from_slice(&[0x21, 0, 36]);
            header.extend_from_slice(&v6(s).octets());
            header.extend_from_slice(&v6(d).octets());
            header.extend_from_slice(&s.port().to_be_bytes());
            header.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    header
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn xclient_attributes_are_packed_under_the_line_limit() {
        let words: Vec<String> = (0..40).map(|i| format!("HELO={}", "h".repeat(i))).collect();
        let lines = pack("XCLIENT", &words, 100);
        assert!(lines.len() > 1);
        assert!(
            lines
                .iter()
                .all(|l| l.len() <= 100 && l.starts_with("XCLIENT "))
        );
        let rejoined: Vec<&str> = lines.iter().flat_map(|l| l.split(' ').skip(1)).collect();
        assert_eq!(rejoined.len(), words.len());
        assert!(pack("XCLIENT", &[], 100).is_empty());
    }

    #[test]
    fn address_attributes_follow_postfix() {
        assert_eq!(
            address_attribute("192.0.2.1:25".parse().unwrap()),
            "192.0.2.1"
        );
        assert_eq!(
            address_attribute("[2001:db8::1]:25".parse().unwrap()),
            "IPV6:2001:db8::1"
        );
        assert_eq!(
            address_attribute("[::ffff:192.0.2.1]:25".parse().unwrap()),
            "192.0.2.1"
        );
    }

    #[test]
    fn host_of_address() {
        assert_eq!(host_of("mx.example:25"), "mx.example");
        assert_eq!(host_of("[::1]:25"), "::1");
        assert_eq!(host_of("mx.example"), "mx.example");
    }

    #[test]
    fn proxy_v2_header_has_the_wire_layout() {
        let header = proxy_v2_header(
            "192.0.2.1:56324".parse().unwrap(),
            "198.51.100.7:465".parse().unwrap(),
        );
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(&header[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&header[16..20], &[192, 0, 2, 1]);
        assert_eq!(&header[24..26], &56324_u16.to_be_bytes());
        let mixed = proxy_v2_header(
            "[2001:db8::1]:1".parse().unwrap(),
            "198.51.100.7:465".parse().unwrap(),
        );
        assert_eq!(&mixed[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(mixed.len(), 16 + 36);
    }
}
