//! [`Connection`]: the engine. See the [crate documentation](crate) for the contract.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use smtps_proto::{DecisionId, Event, Reply, Security, ServerSession, SessionConfig, Verdict};
use smtps_tls::{TlsAcceptor, TlsError, TlsInfo, Transport};

use crate::close::CloseReason;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::mode::Mode;
use crate::replies;
use crate::timeouts::{Timeouts, Timer};

/// The output bound: once this many octets of replies wait for the client (beyond the
/// transport's own buffer of at most 64 KiB), the connection takes no input and produces no
/// events until some are sent. A client that pipelines without reading its replies (RFC 2920
/// §3.1 forbids it) therefore holds at most this, plus one reply, plus the transport's
/// buffer, of the server's memory.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

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
    /// Octets [`Connection::read_from`] read that the transport did not take yet.
    inbox: Vec<u8>,
    /// The client closed its side (end of stream, `close_notify`, or a socket error).
    eof: bool,
    /// The transport was told of the end of stream (once every octet read before it was
    /// taken in).
    transport_eof: bool,
    eof_delivered: bool,
    /// Over without the session's say: TLS failed, the client left before the session began,
    /// a timer expired during a handshake.
    dead: bool,
    closed_transport: bool,
    /// Output was dropped (the socket failed, or the linger ran out): nothing more to send.
    abandoned: bool,
    reason: Option<CloseReason>,
    /// Whether a PROXY protocol header comes first ([`Connection::expect_proxy_header`]).
    proxy: ProxyStage,
    /// The PROXY header's octets: being read, then exactly the header.
    proxy_octets: Vec<u8>,
    /// Octets from the client were taken (too late for [`Connection::expect_proxy_header`]).
    input_taken: bool,
    timers: Timers,
    /// The transaction's accepted sender and recipients.
    envelope: Envelope,
    /// The host paused input then ([`Connection::pause_input`]).
    input_paused: Option<Instant>,
}

/// Where a connection is with its PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyStage {
    /// No header expected.
    Off,
    /// The header is being read; nothing else happens until it is complete.
    Reading,
    /// The header was read; `proxy_octets` holds it.
    Done,
}

/// The engine's sense of time: only what drivers pass in.
#[derive(Debug, Clone, Copy)]
struct Timers {
    timeouts: Timeouts,
    /// The latest `now` a driver passed.
    clock: Instant,
    started: Instant,
    /// A TLS handshake (implicit, or after STARTTLS) began then.
    handshake_since: Option<Instant>,
    /// The client last sent something, or the host last answered.
    idle_since: Instant,
    /// The connection began closing then.
    closing_since: Option<Instant>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("security", &self.security)
            .field("tls", &self.tls)
            .field("session_started", &self.session.is_some())
            .field("eof", &self.eof)
            .field("closed", &self.is_closed())
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection in `mode` whose sessions follow `config`, accepted at `now`. TLS modes need
    /// `acceptor` (its certificates as of each handshake). [`Mode::StartTlsRequired`] sets the
    /// session's `require_tls_for_mail` policy. Timers follow [`Timeouts::default`] until
    /// [`Connection::set_timeouts`].
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
        now: Instant,
    ) -> Result<Self, Error> {
        if mode.uses_tls() && acceptor.is_none() {
            return Err(Error::TlsNotConfigured);
        }
        let (transport, security) = match (mode, &acceptor) {
            (Mode::ImplicitTls, Some(acceptor)) => {
                (Transport::new_implicit_tls(acceptor)?, Security::Tls)
            }
            (mode, _) if mode.offers_starttls() => {
                (Transport::new_plaintext(), Security::StartTlsAvailable)
            }
            _ => (Transport::new_plaintext(), Security::Plaintext),
        };
        let session_config =
            if mode == Mode::StartTlsRequired && !config.policy.require_tls_for_mail {
                let mut required = SessionConfig::clone(&config);
                required.policy.require_tls_for_mail = true;
                Arc::new(required)
            } else {
                config
            };
        let conn = Self {
            transport,
            session: None,
            session_config,
            security,
            acceptor,
            tls: None,
            outbox: Vec::new(),
            wire: Vec::new(),
            wire_pos: 0,
            inbox: Vec::new(),
            eof: false,
            transport_eof: false,
            eof_delivered: false,
            dead: false,
            closed_transport: false,
            abandoned: false,
            proxy: ProxyStage::Off,
            proxy_octets: Vec::new(),
            input_taken: false,
            reason: None,
            envelope: Envelope::default(),
            input_paused: None,
            timers: Timers {
                timeouts: Timeouts::default(),
                clock: now,
                started: now,
                handshake_since: (mode == Mode::ImplicitTls).then_some(now),
                idle_since: now,
                closing_since: None,
            },
        };
        // No `advance` here: the session starts at the first call, after
        // `expect_proxy_header` if the driver makes it.
        Ok(conn)
    }

    /// Sets the timers; deadlines already running are measured with the new values.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timers.timeouts = timeouts;
    }

    /// The host stops taking input at `now` (back-pressure from its side: slow storage, an
    /// async sink): until [`Connection::resume_input`], [`Connection::wants_read`] is false
    /// (so the driver leaves the socket unread and TCP flow control holds the client back),
    /// and [`Connection::poll_event`] gives nothing more — once the connection has closed it
    /// again gives what is left (an aborted message), so that the host hears of it. Output
    /// still goes out. Pausing a paused connection changes nothing.
    ///
    /// Timers while paused: the client is not idle, the host is, so the client's idle timers
    /// (`Timeouts::command`, `Timeouts::data_block`, RFC 5321 §4.5.3.2) stand still and
    /// restart at [`Connection::resume_input`]. The host's slowness is bounded as for a
    /// decision, by `Timeouts::decision`: a pause that lasts longer closes the connection with
    /// `421 4.3.0` ([`Timer::InputPaused`]); the message in progress is aborted, never
    /// acknowledged, and the client retries. `Timeouts::session` keeps running.
    pub fn pause_input(&mut self, now: Instant) {
        self.tick(now);
        self.input_paused.get_or_insert(now);
    }

    /// The host takes input again at `now` (see [`Connection::pause_input`]); the client's idle
    /// timer starts afresh. Resuming a connection that is not paused changes nothing.
    pub fn resume_input(&mut self, now: Instant) {
        self.tick(now);
        if self.input_paused.take().is_some() {
            self.timers.idle_since = self.timers.clock;
        }
    }

    /// Whether the host paused input ([`Connection::pause_input`]).
    #[must_use]
    pub fn is_input_paused(&self) -> bool {
        self.input_paused.is_some()
    }

    /// The client's first octets are a PROXY protocol header (haproxy's proxy-protocol.txt, v1
    /// or v2) from a load balancer the driver trusts: it is read before anything else — before
    /// TLS and before the session starts — within [`Timeouts::proxy_header`]. A malformed,
    /// truncated or unsupported header, or none, closes the connection without a word
    /// ([`CloseReason::ProxyHeader`]); nothing of it is applied. Call it right after
    /// [`Connection::new`], before any other call.
    ///
    /// Returns whether the connection expects the header: true when this call (or an earlier
    /// one) took effect, false when it came too late — after input was taken, the end of
    /// stream, or the start of the session — and changed nothing.
    pub fn expect_proxy_header(&mut self) -> bool {
        if self.proxy == ProxyStage::Off && self.session.is_none() && !self.input_taken && !self.eof
        {
            self.proxy = ProxyStage::Reading;
        }
        self.proxy == ProxyStage::Reading
    }

    /// The PROXY header the client's stream began with, once read: the real client's and the
    /// balancer's addresses (`None` for LOCAL health checks and `UNKNOWN`) and the v2 TLVs.
    #[must_use]
    pub fn proxy_header(&self) -> Option<smtps_proxy::Header<'_>> {
        if self.proxy != ProxyStage::Done {
            return None;
        }
        match smtps_proxy::parse_header(&self.proxy_octets) {
            Ok(smtps_proxy::Status::Complete((_, header))) => Some(header),
            _ => None,
        }
    }

    /// Offers octets read from the socket at `now`; returns how many were taken. Keep the rest
    /// and offer it again after draining events and output: that is the back-pressure (nothing
    /// is taken while [`Connection::wants_read`] is false). After the connection closed (or the
    /// client's end of stream), everything is taken and ignored.
    ///
    /// # Errors
    /// [`Error::Tls`] when TLS fails; the connection is then closed. Send what
    /// [`Connection::output`] still gives (the alert), then close the socket.
    pub fn feed(&mut self, now: Instant, data: &[u8]) -> Result<usize, Error> {
        self.tick(now);
        self.advance();
        if self.is_closed() || self.eof {
            return Ok(data.len());
        }
        if !self.wants_read() || data.is_empty() {
            return Ok(0);
        }
        self.timers.idle_since = now;
        self.input_taken = true;
        let header = if self.proxy == ProxyStage::Reading {
            self.read_proxy_header(data)
        } else {
            0
        };
        if self.proxy == ProxyStage::Reading || self.is_closed() {
            return Ok(data.len());
        }
        self.advance();
        match self.transport.handle_received(&data[header..]) {
            Ok(taken) => {
                self.advance();
                Ok(header + taken)
            }
            Err(error) => Err(self.tls_failed(error)),
        }
    }

    /// Reads once from `reader` (a non-blocking socket) into `buf`, a scratch buffer the driver
    /// may share between its connections, and takes what was read at `now`; what the transport
    /// cannot take yet stays inside the connection. Returns the octets read: 0 when the
    /// connection wants no input now ([`Connection::wants_read`]) or the stream ended (noted,
    /// as [`Connection::feed_eof`] would).
    ///
    /// One large read and a copy cost less than reading into rustls directly, which reads at
    /// most 4 KiB per call (a system call per 4 KiB of a message body).
    ///
    /// # Errors
    /// The reader's error. `WouldBlock` means "read again on the next readiness";
    /// `Interrupted` is retried; any other error closes the connection
    /// ([`CloseReason::Io`]) and drops its output. A TLS failure is not an error here: the
    /// connection closes itself, with the alert in its output.
    pub fn read_from(
        &mut self,
        now: Instant,
        reader: &mut dyn Read,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        self.tick(now);
        self.advance();
        if !self.wants_read() || buf.is_empty() {
            return Ok(0);
        }
        let n = loop {
            match reader.read(buf) {
                Ok(n) => break n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    if error.kind() != io::ErrorKind::WouldBlock {
                        self.socket_failed(error.kind());
                    }
                    return Err(error);
                }
            }
        };
        if n == 0 {
            self.feed_eof();
            return Ok(0);
        }
        self.timers.idle_since = now;
        self.input_taken = true;
        let header = if self.proxy == ProxyStage::Reading {
            self.read_proxy_header(&buf[..n])
        } else {
            0
        };
        if self.proxy == ProxyStage::Reading || self.is_closed() {
            return Ok(n);
        }
        self.advance();
        let mut input = &buf[header..n];
        loop {
            match self.transport.handle_received(input) {
                Ok(taken) => {
                    input = &input[taken..];
                    // The session takes the plaintext, which makes room in the transport
                    // for the rest of the read: only what it still cannot take is copied
                    // aside (a 64 KiB read is four TLS records, more than rustls holds).
                    self.advance();
                    if input.is_empty() || taken == 0 || self.is_closed() || !self.inbox.is_empty()
                    {
                        break;
                    }
                }
                Err(error) => {
                    self.tls_failed(error);
                    return Ok(n);
                }
            }
        }
        if !input.is_empty() && !self.is_closed() {
            self.inbox.extend_from_slice(input);
            self.advance();
        }
        Ok(n)
    }

    /// The client closed its side (a socket read returned 0). Noticed at every stage: during
    /// a handshake the connection just closes; in a session, what the client pipelined before
    /// is still processed and answered (it may be reading: a half-close), a decision being made
    /// is awaited, then a message in progress is aborted ([`Event::MessageAborted`]) and the
    /// session closes once its output is sent.
    pub fn feed_eof(&mut self) {
        self.eof = true;
        self.advance();
    }

    /// The socket failed (a read or write returned an error other than `WouldBlock`): the
    /// connection closes as at end of stream, with [`CloseReason::Io`], and drops its output.
    pub fn socket_failed(&mut self, kind: io::ErrorKind) {
        self.reason.get_or_insert(CloseReason::Io(kind));
        self.abandon_output();
        self.inbox = Vec::new();
        self.dead = true;
        self.feed_eof();
    }

    /// The next event, or `None` (send the output, read more input, or answer the awaited
    /// decision). Call it until it returns `None` after every feed, decision and timeout.
    ///
    /// While more than [`OUTPUT_LIMIT`] octets of output wait, it returns `None`: send some.
    ///
    /// [`Event::StartTls`] is for information: the connection upgrades itself (the `220` goes
    /// out in plaintext, the rest in TLS, and plaintext the client pipelined after the
    /// command is dropped, CVE-2011-0411).
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        // The session may consume input without an event (the rest of a refused body is read
        // and dropped): then it gets what the transport holds, until an event comes or nothing
        // moves. `None` thus always means the socket, the client or the host must act.
        if self.input_paused.is_some() && !self.is_closed() {
            return None;
        }
        loop {
            if self.backlogged() && !self.is_closed() {
                return None;
            }
            // Events the session can give from what it holds come first: no need to bring
            // the parts in step for each of a batch.
            if self.session.as_mut().is_some_and(ServerSession::has_event) {
                break;
            }
            self.advance();
            let session = self.session.as_mut()?;
            if session.has_event() {
                break;
            }
            if !self.move_input() {
                return None;
            }
        }
        let session = self.session.as_mut()?;
        let event = session.poll_event()?;
        self.envelope.event(&event);
        match event {
            Event::Quit => {
                self.reason.get_or_insert(CloseReason::Quit);
            }
            Event::TooManyErrors => {
                self.reason.get_or_insert(CloseReason::TooManyErrors);
            }
            _ => {}
        }
        Some(event)
    }

    /// Answers the decision of an event (RFC 5321 §4.2: the reply goes out in command order).
    /// A `421` closes the connection ([`CloseReason::Refused`]). The idle timer restarts at the
    /// latest time passed in: a host answering long after the last input passes the time first
    /// ([`Connection::handle_timeout`]).
    ///
    /// # Errors
    /// [`Error::Session`] if `id` is not an awaited decision (see [`Connection::awaits`]) or the
    /// verdict's reply does not fit; the decision then still waits.
    pub fn decide(&mut self, id: DecisionId, verdict: Verdict) -> Result<(), Error> {
        // No `advance` first: a decision id comes from an event, so the session exists.
        let session = self
            .session
            .as_mut()
            .ok_or(Error::Session(smtps_proto::Error::UnknownDecision))?;
        let accepted = matches!(verdict, Verdict::Accept | Verdict::AcceptWith(_));
        session.decide(id, verdict)?;
        self.envelope
            .decided(id, accepted, |pending| session.awaits(pending));
        if session.is_closed() {
            self.reason.get_or_insert(CloseReason::Refused);
        }
        self.timers.idle_since = self.timers.clock;
        Ok(())
    }

    /// Whether the decision `id` still awaits the host's verdict: false once given, withdrawn
    /// (with [`SessionConfig::pipelined_decisions`], a command read ahead whose ground an
    /// earlier verdict took away) or the session closed. A host holding several decisions
    /// drops the ones no longer awaited.
    #[must_use]
    pub fn awaits(&self, id: DecisionId) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| session.awaits(id))
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

    /// Closes the session with a final reply, such as `421 4.3.2` at shutdown (RFC 5321
    /// §3.8), recording `reason` unless the connection was closing already: a message in
    /// progress is aborted, and the connection closes once the output is sent. Before the
    /// session began (during the implicit-TLS handshake) it just closes.
    pub fn close(&mut self, reply: &Reply, reason: CloseReason) {
        if self.proxy == ProxyStage::Reading {
            // Nothing has spoken yet, not even TLS: close as a bad header does, in silence.
            self.reason.get_or_insert(reason);
            self.dead = true;
            self.abandon_output();
            self.advance();
            return;
        }
        self.advance();
        if !self.is_closed() {
            self.reason.get_or_insert(reason);
        }
        match self.session.as_mut() {
            Some(session) if !self.transport.is_handshaking() => session.close(reply),
            _ => self.dead = true,
        }
        self.advance();
    }

    /// Tells the connection the time: fires the timers due by `now` (a `421 4.4.2` and close
    /// for an idle or overlong session, a plain close for a stalled handshake, dropping the
    /// output of a closing connection whose client does not read). Call it when
    /// [`Connection::poll_timeout`] is reached; calling it at other times is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.advance();
        let Some((deadline, timer)) = self.next_timer() else {
            return;
        };
        if now < deadline {
            return;
        }
        match timer {
            Timer::CloseLinger => {
                self.abandon_output();
                self.dead = true;
            }
            Timer::Handshake | Timer::ProxyHeader => {
                self.reason.get_or_insert(CloseReason::Timeout(timer));
                self.dead = true;
                self.abandon_output();
            }
            Timer::Command | Timer::DataBlock | Timer::Session => {
                let reply = replies::timeout(&self.session_config.hostname);
                self.close(&reply, CloseReason::Timeout(timer));
            }
            Timer::InputPaused => {
                self.close(&replies::host_stalled(), CloseReason::Timeout(timer));
            }
        }
        self.advance();
    }

    /// When [`Connection::handle_timeout`] should be called next; `None` once nothing is left
    /// to time (the connection is over and its output sent or dropped).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(deadline, _)| deadline)
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

    /// Writes pending output to `writer` (a non-blocking socket) with one `write` or
    /// vectored write, straight from the TLS records (no copy); returns what `writer`
    /// returned, 0 when nothing waits. Call it while [`Connection::wants_write`] until the
    /// socket says `WouldBlock`.
    ///
    /// # Errors
    /// The writer's error. `WouldBlock`: wait for writability; `Interrupted`: call again; any
    /// other error closes the connection ([`CloseReason::Io`]) and drops its output.
    pub fn write_to(&mut self, writer: &mut dyn Write) -> io::Result<usize> {
        self.advance();
        let result = if self.wire_pos < self.wire.len() {
            writer.write(&self.wire[self.wire_pos..]).inspect(|&n| {
                self.consume_output(n);
            })
        } else {
            self.flush_into_transport();
            if self.transport.wants_write() {
                self.transport.write_transmit(writer)
            } else {
                Ok(0)
            }
        };
        if let Err(error) = &result
            && !matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            )
        {
            self.socket_failed(error.kind());
        }
        result
    }

    /// Whether the host should read from the socket and feed the connection: false while
    /// received input waits inside it, while more than [`OUTPUT_LIMIT`] octets of output wait,
    /// while the host paused input ([`Connection::pause_input`]), after the client's end of
    /// stream, and once closed.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        !self.is_closed()
            && !self.eof
            && self.input_paused.is_none()
            && self.inbox.is_empty()
            && self.transport.wants_read()
            && !self.backlogged()
    }

    /// Whether output waits ([`Connection::output`] or [`Connection::write_to`]).
    #[must_use]
    pub fn wants_write(&self) -> bool {
        !self.abandoned
            && (self.wire_pos < self.wire.len()
                || !self.outbox.is_empty()
                || self.transport.wants_write()
                || self.session.as_ref().is_some_and(ServerSession::has_output)
                || (self.is_closed() && !self.closed_transport))
    }

    /// Whether the connection is over (QUIT, a `421`, the client left, TLS failed, a timer):
    /// once [`Connection::wants_write`] is false too, close the socket.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.dead || self.session.as_ref().is_some_and(ServerSession::is_closed)
    }

    /// Whether the driver can close the socket and forget the connection: closed, and every
    /// octet sent (or dropped). Drain [`Connection::poll_event`] first: a closing session may
    /// still report an aborted message.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.is_closed() && !self.wants_write()
    }

    /// Why the connection closed, once it has (or is closing).
    #[must_use]
    pub fn close_reason(&self) -> Option<&CloseReason> {
        if self.is_closed() {
            self.reason.as_ref().or(Some(&CloseReason::Quit))
        } else {
            None
        }
    }

    /// Octets of output waiting for the client, as counted against [`OUTPUT_LIMIT`].
    #[must_use]
    pub fn pending_output(&self) -> usize {
        (self.wire.len() - self.wire_pos)
            + self.outbox.len()
            + self
                .session
                .as_ref()
                .map_or(0, ServerSession::pending_output)
    }

    /// Whether a mail transaction is under way or a decision is outstanding: the connection is
    /// not idle, and a graceful shutdown should let it finish. False before the session began.
    #[must_use]
    pub fn in_transaction(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(ServerSession::in_transaction)
    }

    /// The reverse path of the transaction in progress as the host accepted it (`""` for
    /// `<>`, RFC 5321 §4.1.1.2); `None` outside a transaction (after RSET, a new EHLO,
    /// STARTTLS, or the end of a message).
    #[must_use]
    pub fn mail_from(&self) -> Option<&str> {
        // A message refused mid-body ends its transaction without an event.
        if !self.in_transaction() {
            return None;
        }
        self.envelope.mail_from()
    }

    /// The recipients of the transaction in progress the host accepted, in order (RFC 5321
    /// §4.1.1.3).
    #[must_use]
    pub fn recipients(&self) -> &[String] {
        if !self.in_transaction() {
            return &[];
        }
        self.envelope.recipients()
    }

    /// What TLS negotiated, once a handshake (implicit or after STARTTLS) completed.
    #[must_use]
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Whether a TLS handshake is in progress (implicit TLS, or after STARTTLS).
    #[must_use]
    pub fn is_handshaking(&self) -> bool {
        self.transport.is_tls() && self.transport.is_handshaking()
    }

    /// The SMTP session, once it began: its state (in a transaction, authenticated, …).
    #[must_use]
    pub fn session(&self) -> Option<&ServerSession> {
        self.session.as_ref()
    }

    /// Brings the parts in step: starts the session once the transport can carry SMTP,
    /// performs a STARTTLS upgrade the session asked for, records what TLS negotiated, moves
    /// received input on, delivers the end of stream, and starts the linger once closed.
    ///
    /// Every `&mut` entry point calls it first, so an upgrade happens before any later octet
    /// is read or written, whether or not the host has polled [`Event::StartTls`] yet.
    fn advance(&mut self) {
        if !self.inbox.is_empty() {
            // Octets held back go to the transport first: they may finish a handshake.
            self.move_input();
        }
        // An implicit-TLS session starts once TLS 1.3 was agreed, before the client's
        // `Finished`, where 0.5-RTT data is allowed: the greeting then leaves with the server's
        // flight, a round trip sooner (RFC 8446 §2). Nothing the client sends can reach the
        // session before its `Finished` is verified.
        if self.session.is_none()
            && self.proxy != ProxyStage::Reading
            && (!self.transport.is_handshaking() || self.transport.in_half_rtt())
            && !self.dead
        {
            if self.transport.in_half_rtt() {
                self.tls = self.transport.half_rtt_tls_info();
            }
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
        if self.transport.is_tls()
            && !self.transport.is_handshaking()
            && (self.tls.is_none() || self.timers.handshake_since.is_some())
        {
            // The handshake's end (what a 0.5-RTT start recorded is now final too).
            self.tls = self.transport.tls_info();
            self.timers.handshake_since = None;
        }
        // A `close_notify` ends the client's stream as surely as a FIN (RFC 8446 §6.1).
        if !self.eof && self.transport.is_tls() && self.transport.peer_closed() {
            self.eof = true;
        }
        self.move_input();
        // The transport hears of the end of stream after every octet read before it.
        if self.eof && !self.transport_eof && (self.inbox.is_empty() || self.dead) {
            self.transport_eof = true;
            self.transport.handle_eof();
            self.move_input();
        }
        if let Some(session) = self.session.as_mut() {
            // A client that closed its side (FIN, or `close_notify`) may still read: what it
            // pipelined before is processed and answered first, and a decision the host is
            // making (a message being committed) is not cut short. The end of stream reaches
            // the session once it is idle — or at once if the socket failed: nobody can read
            // a reply then.
            if self.transport_eof
                && !self.eof_delivered
                && !self.transport.has_received_plaintext()
                && (self.dead || !session.awaiting_decision() && !session.has_event())
            {
                self.eof_delivered = true;
                if !session.is_closed() {
                    self.reason.get_or_insert(CloseReason::ClientClosed);
                }
                session.handle_eof();
            }
        } else if self.transport_eof && !self.dead {
            // The client left during the implicit-TLS handshake: nobody is left to tell.
            self.reason.get_or_insert(CloseReason::ClientClosed);
            self.dead = true;
            self.abandon_output();
        }
        if self.is_closed() {
            if self.timers.closing_since.is_none() {
                self.timers.closing_since = Some(self.timers.clock);
                self.inbox = Vec::new();
            }
            self.flush_into_transport();
        }
    }

    /// Moves received input along — octets read but not taken into the transport, plaintext
    /// into the session — as far as each takes; whether anything moved.
    fn move_input(&mut self) -> bool {
        if self.inbox.is_empty() && !self.transport.has_received_plaintext() {
            return false;
        }
        let mut moved = false;
        loop {
            let mut step = false;
            if !self.inbox.is_empty() && !self.is_closed() {
                match self.transport.handle_received(&self.inbox) {
                    Ok(taken) => {
                        self.inbox.drain(..taken);
                        step |= taken > 0;
                    }
                    Err(error) => {
                        self.tls_failed(error);
                        return true;
                    }
                }
            }
            if let Some(session) = self.session.as_mut() {
                while self.transport.has_received_plaintext() {
                    let plaintext = self.transport.received_plaintext();
                    if plaintext.is_empty() {
                        break;
                    }
                    let taken = session.handle_input(plaintext);
                    if taken == 0 {
                        break;
                    }
                    self.transport.consume_plaintext(taken);
                    step = true;
                }
            }
            if !step {
                return moved;
            }
            moved = true;
        }
    }

    /// Takes octets of the PROXY header being read; returns how many of `data` it took. Once
    /// the header is complete the rest of `data` is the client's own stream; a bad header closes
    /// the connection (the caller ignores the rest).
    fn read_proxy_header(&mut self, data: &[u8]) -> usize {
        let before = self.proxy_octets.len();
        let take = data
            .len()
            .min(smtps_proxy::MAX_V2_HEADER_LEN.saturating_sub(before));
        self.proxy_octets.extend_from_slice(&data[..take]);
        match smtps_proxy::parse_header(&self.proxy_octets) {
            Ok(smtps_proxy::Status::Complete((len, _))) => {
                // The header was incomplete before these octets: it ends inside `data`.
                self.proxy_octets.truncate(len);
                self.proxy = ProxyStage::Done;
                len - before
            }
            Ok(smtps_proxy::Status::Partial) => take,
            Err(error) => {
                log::info!("smtps: PROXY header refused: {error}");
                self.reason.get_or_insert(CloseReason::ProxyHeader(error));
                self.dead = true;
                self.abandon_output();
                self.proxy_octets = Vec::new();
                data.len()
            }
        }
    }

    /// Advances the clock (never backwards).
    fn tick(&mut self, now: Instant) {
        self.timers.clock = self.timers.clock.max(now);
    }

    /// The next timer to expire, and when.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let t = &self.timers;
        let timeouts = &t.timeouts;
        if let Some(since) = t.closing_since {
            return (!self.is_finished())
                .then(|| (since + timeouts.close_linger, Timer::CloseLinger));
        }
        let mut next = (t.started + timeouts.session, Timer::Session);
        if self.proxy == ProxyStage::Reading {
            let deadline = t.started + timeouts.proxy_header;
            return Some(if deadline < next.0 {
                (deadline, Timer::ProxyHeader)
            } else {
                next
            });
        }
        let mut consider = |deadline: Instant, timer: Timer| {
            if deadline < next.0 {
                next = (deadline, timer);
            }
        };
        if let Some(since) = t.handshake_since.filter(|_| self.is_handshaking()) {
            consider(since + timeouts.handshake, Timer::Handshake);
        } else if let Some(since) = self.input_paused {
            consider(since + timeouts.decision, Timer::InputPaused);
        } else if let Some(session) = &self.session
            && !session.awaiting_decision()
        {
            if session.in_body() {
                consider(t.idle_since + timeouts.data_block, Timer::DataBlock);
            } else {
                consider(t.idle_since + timeouts.command, Timer::Command);
            }
        }
        Some(next)
    }

    /// Whether more output waits than [`OUTPUT_LIMIT`].
    fn backlogged(&self) -> bool {
        self.pending_output() > OUTPUT_LIMIT
    }

    /// Records a TLS failure and closes; the alert stays in the output.
    fn tls_failed(&mut self, error: smtps_tls::Error) -> Error {
        let failure = match &error {
            smtps_tls::Error::Tls(failure) => Some(failure.clone()),
            _ => self.transport.failure().cloned(),
        };
        self.reason
            .get_or_insert(CloseReason::Tls(failure.unwrap_or_else(|| {
                TlsError::Session(smtps_tls::rustls::Error::General(error.to_string()))
            })));
        self.dead = true;
        self.inbox.clear();
        self.flush();
        self.advance();
        error.into()
    }

    /// Drops every octet still to send: the client cannot or will not take it.
    fn abandon_output(&mut self) {
        self.abandoned = true;
        self.outbox = Vec::new();
        self.wire = Vec::new();
        self.wire_pos = 0;
        if let Some(session) = self.session.as_mut() {
            session.poll_transmit(&mut Vec::new());
        }
        self.transport.poll_transmit(&mut Vec::new());
    }

    /// Moves session output into the transport and closes the transport (`close_notify`) after
    /// the session's last reply.
    fn flush_into_transport(&mut self) {
        if self.abandoned {
            return;
        }
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
    }

    /// [`Connection::flush_into_transport`], then the transport's output into `wire`.
    fn flush(&mut self) {
        self.flush_into_transport();
        if self.abandoned {
            return;
        }
        if self.wire_pos == self.wire.len() {
            self.wire.clear();
            self.wire_pos = 0;
        }
        self.transport.poll_transmit(&mut self.wire);
    }

    /// Switches the transport to TLS after the session queued its `220` to STARTTLS. Every
    /// reply queued before it (pipelined commands, then the `220`) goes out in plaintext
    /// first, in order, however backed up the host's sending is. Octets read but not yet taken
    /// by the transport were sent after the command, unprotected: they are dropped with the
    /// transport's own (CVE-2011-0411).
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
        self.inbox.clear();
        let upgraded = match (&self.acceptor, written) {
            (Some(acceptor), Ok(())) => self.transport.start_tls(acceptor).is_ok(),
            _ => false,
        };
        if upgraded && session.handle_tls_established().is_ok() {
            self.timers.handshake_since = Some(self.timers.clock);
            return;
        }
        log::error!("smtps: STARTTLS upgrade failed; closing with 421");
        self.reason.get_or_insert(CloseReason::Refused);
        session.close(&replies::tls_not_available());
    }
}
