//! One SMTP server connection without I/O: the TLS transport of `smtps-tls` and the SMTP
//! session of `smtps-proto` glued together, for hosts that own their sockets (a
//! fork-per-connection server, the C ABI's `smtps_conn`, a fuzzer).
//!
//! The host feeds the octets it read from the socket ([`Connection::feed`]), takes events and
//! answers those that await a decision ([`Connection::poll_event`], [`Connection::decide`]),
//! and sends what [`Connection::output`] gives. Everything between — the TLS handshake of
//! implicit TLS (RFC 8314 §3), the STARTTLS upgrade at the exact byte after the `220` (RFC
//! 3207 §4), `close_notify` at the end — happens inside.
//!
//! ```
//! # use std::sync::Arc;
//! use smtps_conn::{Connection, Mode};
//! use smtps_proto::{Event, SessionConfig, Verdict};
//!
//! let config = Arc::new(SessionConfig::new("mx.example.org"));
//! let mut conn = Connection::new(Mode::Plain, config, None).unwrap();
//! conn.feed(b"EHLO client.example\r\n").unwrap();
//! while let Some(event) = conn.poll_event() {
//!     let decision = match event {
//!         Event::Connect { decision } | Event::Helo { decision, .. } => decision,
//!         _ => continue,
//!     };
//!     conn.decide(decision, Verdict::Accept).unwrap();
//! }
//! let reply = conn.output().to_vec();
//! assert!(reply.starts_with(b"220 "));
//! ```
//!
//! A `Connection` is not thread-safe to share, but may move between threads.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use smtps_proto::{
    DecisionId, EnhancedStatus, Event, Reply, ReplyCode, Security, ServerSession, SessionConfig,
    Verdict,
};
use smtps_tls::{TlsAcceptor, TlsInfo, Transport};

/// How a connection begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// TLS from the first octet (RFC 8314 §3, port 465); the session starts after the
    /// handshake.
    ImplicitTls,
    /// Plaintext with STARTTLS offered (RFC 3207, ports 587 and 25). Whether MAIL needs TLS
    /// first is the session configuration's `require_tls_for_mail` policy.
    StartTls,
    /// Plaintext without TLS.
    Plain,
}

impl Mode {
    /// Whether the mode needs a certificate.
    #[must_use]
    pub fn uses_tls(self) -> bool {
        self != Self::Plain
    }
}

/// What can go wrong on a [`Connection`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A TLS mode was asked for without a [`TlsAcceptor`].
    TlsNotConfigured,
    /// TLS failed (a handshake failure, a protocol error, a corrupt record). The connection
    /// is over: send what [`Connection::output`] still gives (the alert), then close.
    Tls(smtps_tls::Error),
    /// The session refused a host call (an unknown decision, a verdict that does not fit).
    Session(smtps_proto::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TlsNotConfigured => f.write_str("a TLS mode needs a certificate"),
            Self::Tls(e) => e.fmt(f),
            Self::Session(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::TlsNotConfigured => None,
            Self::Tls(e) => Some(e),
            Self::Session(e) => Some(e),
        }
    }
}

impl From<smtps_tls::Error> for Error {
    fn from(e: smtps_tls::Error) -> Self {
        Self::Tls(e)
    }
}

impl From<smtps_proto::Error> for Error {
    fn from(e: smtps_proto::Error) -> Self {
        Self::Session(e)
    }
}

/// One SMTP connection, TLS and SMTP together, without I/O. See the [crate documentation](crate).
pub struct Connection {
    transport: Transport,
    /// Made once the transport can carry SMTP (at once, or after the implicit-TLS handshake).
    session: Option<ServerSession>,
    session_config: Arc<SessionConfig>,
    security: Security,
    acceptor: Option<Arc<TlsAcceptor>>,
    /// What TLS negotiated, once a handshake completed.
    tls: Option<TlsInfo>,
    /// Session output the transport has not taken yet.
    outbox: Vec<u8>,
    /// Transport output the host has not taken yet; `wire[wire_pos..]` is pending.
    wire: Vec<u8>,
    wire_pos: usize,
    /// The client closed its side.
    eof: bool,
    eof_delivered: bool,
    /// TLS failed, or the client left (or the host closed) before the session began.
    dead: bool,
    closed_transport: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("security", &self.security)
            .field("tls", &self.tls)
            .field("session_started", &self.session.is_some())
            .field("eof", &self.eof)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection in `mode` whose sessions follow `config`. TLS modes need `acceptor`
    /// (its certificates as of each handshake).
    ///
    /// In [`Mode::ImplicitTls`] the first event ([`Event::Connect`]) comes after the
    /// handshake; otherwise it comes at once.
    ///
    /// # Errors
    /// [`Error::TlsNotConfigured`] for a TLS mode without an acceptor; [`Error::Tls`] if
    /// rustls cannot start a session with the acceptor's configuration.
    pub fn new(
        mode: Mode,
        config: Arc<SessionConfig>,
        acceptor: Option<Arc<TlsAcceptor>>,
    ) -> Result<Self, Error> {
        if mode.uses_tls() && acceptor.is_none() {
            return Err(Error::TlsNotConfigured);
        }
        let (transport, security) = match (mode, &acceptor) {
            (Mode::ImplicitTls, Some(acceptor)) => {
                (Transport::new_implicit_tls(acceptor)?, Security::Tls)
            }
            (Mode::StartTls, _) => (Transport::new_plaintext(), Security::StartTlsAvailable),
            _ => (Transport::new_plaintext(), Security::Plaintext),
        };
        let mut conn = Self {
            transport,
            session: None,
            session_config: config,
            security,
            acceptor,
            tls: None,
            outbox: Vec::new(),
            wire: Vec::new(),
            wire_pos: 0,
            eof: false,
            eof_delivered: false,
            dead: false,
            closed_transport: false,
        };
        conn.advance();
        Ok(conn)
    }

    /// Offers octets read from the socket; returns how many were taken. Keep the rest and
    /// offer it again after draining events and output: that is the back-pressure. After the
    /// connection closed (or the client's end of stream), everything is taken and ignored.
    ///
    /// # Errors
    /// [`Error::Tls`] when TLS fails; the connection is then closed. Send what
    /// [`Connection::output`] still gives (the alert), then close the socket.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.advance();
        if self.is_closed() || self.eof {
            return Ok(data.len());
        }
        match self.transport.handle_received(data) {
            Ok(taken) => {
                self.advance();
                Ok(taken)
            }
            Err(error) => {
                self.dead = true;
                self.flush();
                Err(error.into())
            }
        }
    }

    /// The client closed its side (a socket read returned 0). A message in progress is
    /// aborted ([`Event::MessageAborted`]); the session closes once its output is sent.
    pub fn feed_eof(&mut self) {
        if !self.eof {
            self.eof = true;
            self.transport.handle_eof();
        }
        self.advance();
    }

    /// The next event, or `None` (send the output, read more input, or answer the awaited
    /// decision). Call it until it returns `None` after every feed and every decision.
    ///
    /// [`Event::StartTls`] is for information: the connection upgrades itself (the `220` goes
    /// out in plaintext, the rest in TLS, and plaintext the client pipelined after the
    /// command is dropped, CVE-2011-0411).
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.advance();
        self.session.as_mut()?.poll_event()
    }

    /// Answers the decision of an event (RFC 5321 §4.2: the reply goes out in command order).
    ///
    /// # Errors
    /// [`Error::Session`] if `id` is not the awaited decision or the verdict's reply does not
    /// fit; the decision then still waits.
    pub fn decide(&mut self, id: DecisionId, verdict: Verdict) -> Result<(), Error> {
        self.advance();
        let session = self
            .session
            .as_mut()
            .ok_or(Error::Session(smtps_proto::Error::UnknownDecision))?;
        session.decide(id, verdict)?;
        Ok(())
    }

    /// The host cannot take the message being received (its spool failed): the rest of the
    /// body is read and dropped, then answered with `reply` (4xx or 5xx, such as `452 4.3.1`).
    /// See [`ServerSession::refuse_message`].
    pub fn refuse_message(&mut self, reply: Reply) {
        self.advance();
        if let Some(session) = self.session.as_mut() {
            session.refuse_message(reply);
        }
    }

    /// Closes the session with a final reply, such as `421 4.4.2` on the host's timeout (RFC
    /// 5321 §3.8): a message in progress is aborted, and the connection closes once the
    /// output is sent. Before the session began (during the implicit-TLS handshake) it just
    /// closes.
    pub fn close(&mut self, reply: &Reply) {
        self.advance();
        match self.session.as_mut() {
            Some(session) => session.close(reply),
            None => self.dead = true,
        }
    }

    /// The octets to send to the socket now (empty when there are none). Mark what was sent
    /// with [`Connection::consume_output`].
    pub fn output(&mut self) -> &[u8] {
        self.advance();
        if self.wire_pos == self.wire.len() {
            self.flush();
        }
        &self.wire[self.wire_pos..]
    }

    /// Marks `n` octets of [`Connection::output`] as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.wire_pos = (self.wire_pos + n).min(self.wire.len());
    }

    /// Copies octets to send into `buf`; returns how many (0: nothing to send now).
    pub fn take_output(&mut self, buf: &mut [u8]) -> usize {
        let ready = self.output();
        let n = ready.len().min(buf.len());
        buf[..n].copy_from_slice(&ready[..n]);
        self.consume_output(n);
        n
    }

    /// Whether the host should read from the socket and feed the connection: false while
    /// received input waits inside it, after the client's end of stream, and once closed.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        !self.is_closed() && !self.eof && self.transport.wants_read()
    }

    /// Whether output waits for [`Connection::output`].
    #[must_use]
    pub fn wants_write(&self) -> bool {
        self.wire_pos < self.wire.len()
            || !self.outbox.is_empty()
            || self.transport.wants_write()
            || self.session.as_ref().is_some_and(ServerSession::has_output)
    }

    /// Whether the connection is over (QUIT, a `421`, the client left, TLS failed): once
    /// [`Connection::wants_write`] is false too, close the socket.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.dead || self.session.as_ref().is_some_and(ServerSession::is_closed)
    }

    /// What TLS negotiated, once a handshake (implicit or after STARTTLS) completed.
    #[must_use]
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The SMTP session, once it began: its state (in a transaction, authenticated, …).
    #[must_use]
    pub fn session(&self) -> Option<&ServerSession> {
        self.session.as_ref()
    }

    /// Brings the parts in step: starts the session once the transport can carry SMTP,
    /// performs a STARTTLS upgrade the session asked for, records what TLS negotiated, moves
    /// received plaintext into the session and delivers the end of stream.
    ///
    /// Every `&mut` entry point calls it first, so an upgrade happens before any later octet
    /// is read or written, whether or not the host has polled [`Event::StartTls`] yet.
    fn advance(&mut self) {
        if self.session.is_none() && !self.transport.is_handshaking() && !self.dead {
            self.session = Some(ServerSession::new(
                Arc::clone(&self.session_config),
                self.security,
            ));
        }
        if self
            .session
            .as_ref()
            .is_some_and(ServerSession::awaiting_tls)
        {
            self.start_tls();
        }
        if self.tls.is_none() && self.transport.is_tls() && !self.transport.is_handshaking() {
            self.tls = self.transport.tls_info();
        }
        let Some(session) = self.session.as_mut() else {
            if self.eof && self.transport.is_handshaking() {
                self.dead = true;
            }
            return;
        };
        loop {
            let plaintext = self.transport.received_plaintext();
            if plaintext.is_empty() {
                break;
            }
            let taken = session.handle_input(plaintext);
            if taken == 0 {
                break;
            }
            self.transport.consume_plaintext(taken);
        }
        if self.eof && !self.eof_delivered && self.transport.received_plaintext().is_empty() {
            self.eof_delivered = true;
            session.handle_eof();
        }
    }

    /// Moves session output into the transport and transport output into `wire`, and closes
    /// the transport (`close_notify`) after the session's last reply.
    fn flush(&mut self) {
        if let Some(session) = self.session.as_mut() {
            session.poll_transmit(&mut self.outbox);
        }
        if !self.outbox.is_empty() {
            match self.transport.write_plaintext(&self.outbox) {
                Ok(taken) => {
                    self.outbox.drain(..taken);
                }
                Err(_) => self.outbox.clear(),
            }
        }
        if self.is_closed() && self.outbox.is_empty() && !self.closed_transport {
            self.closed_transport = true;
            self.transport.close();
        }
        if self.wire_pos == self.wire.len() {
            self.wire.clear();
            self.wire_pos = 0;
        }
        self.transport.poll_transmit(&mut self.wire);
    }

    /// Switches the transport to TLS after the session queued its `220` to STARTTLS. Every
    /// reply queued before it (pipelined commands, then the `220`) goes out in plaintext
    /// first, in order, however backed up the host's sending is.
    fn start_tls(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.poll_transmit(&mut self.outbox);
        let mut written = Ok(());
        while !self.outbox.is_empty() {
            match self.transport.write_plaintext(&self.outbox) {
                Ok(0) | Err(_) => {
                    written = Err(());
                    break;
                }
                Ok(taken) => {
                    self.outbox.drain(..taken);
                    // The transport's plaintext buffer is bounded: move what it holds on.
                    self.transport.poll_transmit(&mut self.wire);
                }
            }
        }
        let upgraded = match (&self.acceptor, written) {
            (Some(acceptor), Ok(())) => self.transport.start_tls(acceptor).is_ok(),
            _ => false,
        };
        if upgraded && session.handle_tls_established().is_ok() {
            return;
        }
        log::error!("smtps: STARTTLS upgrade failed; closing with 421");
        session.close(&Reply::new(
            ReplyCode::SERVICE_UNAVAILABLE,
            EnhancedStatus::new(4, 7, 0),
            "TLS not available",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Connection {
        Connection::new(Mode::Plain, Arc::new(SessionConfig::new("mx.test")), None)
            .expect("plain connection")
    }

    #[test]
    fn tls_mode_without_acceptor_is_refused() {
        let config = Arc::new(SessionConfig::new("mx.test"));
        assert!(matches!(
            Connection::new(Mode::ImplicitTls, Arc::clone(&config), None),
            Err(Error::TlsNotConfigured)
        ));
        assert!(matches!(
            Connection::new(Mode::StartTls, config, None),
            Err(Error::TlsNotConfigured)
        ));
    }

    #[test]
    fn plain_connection_greets_once_connect_is_accepted() {
        let mut conn = plain();
        let Some(Event::Connect { decision }) = conn.poll_event() else {
            panic!("no connect event");
        };
        assert!(conn.output().is_empty(), "greeting before the decision");
        conn.decide(decision, Verdict::Accept).expect("decide");
        let mut buf = [0u8; 3];
        assert_eq!(conn.take_output(&mut buf), 3);
        assert_eq!(&buf, b"220");
        assert!(conn.output().ends_with(b"\r\n"));
    }

    #[test]
    fn end_of_stream_before_the_greeting_closes_the_connection() {
        let mut conn = plain();
        conn.feed_eof();
        while conn.poll_event().is_some() {}
        assert!(conn.is_closed());
        assert_eq!(conn.feed(b"NOOP\r\n").expect("ignored"), 6);
        assert!(!conn.wants_read());
    }
}
