//! The server session: the SMTP state machine of RFC 5321 §4.1.4 with its extensions, fed bytes
//! and drained of events and reply bytes. See the crate documentation for the call order.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use memchr::memchr;

use crate::address::{ForwardPath, HeloName, ReversePath};
use crate::base64;
use crate::command::{Command, parse_command};
use crate::config::{AuthMechanisms, Extensions, LineEndingPolicy, SessionConfig, VrfyPolicy};
use crate::data::DataDecoder;
use crate::error::Error;
use crate::params::{BodyType, MailParameters, RcptParameters};
use crate::reply::{EnhancedStatus, Reply, ReplyCode};

/// How the session's transport stands with respect to TLS.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plaintext, and the transport cannot upgrade: STARTTLS is not offered.
    Plaintext,
    /// Plaintext, and STARTTLS is offered (RFC 3207).
    StartTlsAvailable,
    /// TLS is active: implicit TLS (RFC 8314) or after STARTTLS.
    Tls,
}

/// Names one event that awaits the host's decision. Pass it to [`ServerSession::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecisionId(u64);

impl DecisionId {
    /// The number, unique within the session; useful as a key in a host's tables.
    #[must_use]
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// The host's answer to an event that awaits a decision.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept, with the session's default reply (for example `250 2.1.5 Recipient OK`).
    Accept,
    /// Accept with the host's own reply: 2xx, or 3xx for a DATA start (such as
    /// `250 2.0.0 queued as 4F2A1`).
    AcceptWith(Reply),
    /// Refuse with the host's reply: 4xx or 5xx. A `421` also closes the session.
    Reject(Reply),
}

/// The SASL mechanism of an AUTH event (RFC 4954).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// LOGIN.
    Login,
}

/// Why a message in progress was dropped. The host discards whatever it spooled of it; no
/// `250` is ever sent for it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The body outgrew the message size limit (RFC 1870); answered `552 5.3.4` at its end.
    TooLarge,
    /// A bare LF or CR under [`LineEndingPolicy::Reject`]; answered `550 5.5.2` at its end.
    BareLineEnding,
    /// A text line longer than the limit (RFC 5321 §4.5.3.1.6); answered `554 5.6.0` at its end.
    LineTooLong,
    /// The client closed the connection before the end of the message.
    ClientLeft,
    /// The session was closed by [`ServerSession::close`] (a timeout, a shutdown).
    Closed,
}

/// Something the host should know or decide. Events that carry a [`DecisionId`] block the
/// session until [`ServerSession::decide`] answers them; the others are notices.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A client connected: accept to send the `220` greeting (RFC 5321 §4.3.1), or refuse
    /// with `554` (the session then answers only QUIT, §3.1) or `421` (closes).
    Connect {
        /// The decision to give.
        decision: DecisionId,
    },
    /// HELO or EHLO (§4.1.1.1). Any transaction in progress was reset (a [`Event::Reset`]
    /// came before this).
    Helo {
        /// The decision to give.
        decision: DecisionId,
        /// EHLO rather than HELO.
        extended: bool,
        /// The name the client gave.
        name: HeloName<'a>,
    },
    /// AUTH with decoded credentials (RFC 4954, RFC 4616). Accept answers `235 2.7.0`; refuse
    /// with `535 5.7.8` for bad credentials (RFC 4954 §6).
    Auth {
        /// The decision to give.
        decision: DecisionId,
        /// The mechanism used.
        mechanism: AuthMechanism,
        /// The authorization identity (PLAIN only; empty when not given).
        authorization_id: &'a str,
        /// The authentication identity (user name).
        authentication_id: &'a str,
        /// The password.
        password: &'a str,
    },
    /// MAIL FROM (§4.1.1.2).
    Mail {
        /// The decision to give.
        decision: DecisionId,
        /// The reverse path.
        from: ReversePath<'a>,
        /// The ESMTP parameters, already checked against what was advertised.
        params: MailParameters<'a>,
    },
    /// RCPT TO (§4.1.1.3).
    Rcpt {
        /// The decision to give.
        decision: DecisionId,
        /// The forward path.
        to: ForwardPath<'a>,
        /// The ESMTP parameters.
        params: RcptParameters<'a>,
    },
    /// The client wants to send the message body: DATA (accept sends `354`) or the first BDAT
    /// chunk (RFC 3030).
    DataStart {
        /// The decision to give.
        decision: DecisionId,
        /// BDAT rather than DATA.
        chunked: bool,
    },
    /// Message octets, dot-unstuffed (§4.5.2), in order, as they arrive.
    BodyChunk(&'a [u8]),
    /// The whole message has arrived. Accept only once it is safely stored: the `250` goes out
    /// on acceptance.
    MessageEnd {
        /// The decision to give.
        decision: DecisionId,
        /// Message octets received.
        size: u64,
    },
    /// A message in progress was dropped and will never be acknowledged.
    MessageAborted {
        /// Why.
        reason: AbortReason,
    },
    /// The transaction was reset (RSET, or HELO/EHLO/STARTTLS in the middle of one).
    Reset,
    /// The `220` reply to STARTTLS is queued: send it, then start TLS on the transport and call
    /// [`ServerSession::handle_tls_established`]. Input the client pipelined after the
    /// STARTTLS line was discarded (CVE-2011-0411).
    StartTls {
        /// Octets discarded.
        discarded: usize,
    },
    /// A bare LF or CR was seen and handled by policy (reported so the host can log it).
    BareLineEnding {
        /// In a message body rather than a command line.
        in_body: bool,
        /// Whether the policy refused it.
        rejected: bool,
    },
    /// QUIT was answered with `221`; send the output, then close.
    Quit,
    /// The session closed itself after too many errors (`421 4.7.0`).
    TooManyErrors,
}

impl Event<'_> {
    /// The decision this event awaits ([`ServerSession::decide`]), or `None` for a notice.
    #[must_use]
    pub fn decision(&self) -> Option<DecisionId> {
        match *self {
            Self::Connect { decision }
            | Self::Helo { decision, .. }
            | Self::Auth { decision, .. }
            | Self::Mail { decision, .. }
            | Self::Rcpt { decision, .. }
            | Self::DataStart { decision, .. }
            | Self::MessageEnd { decision, .. } => Some(decision),
            _ => None,
        }
    }
}

/// One SMTP server session, without I/O.
///
/// See the [crate documentation](crate) for the contract.
#[derive(Debug)]
pub struct ServerSession {
    config: Arc<SessionConfig>,
    security: Security,
    mode: Mode,
    input: Vec<u8>,
    /// Octets of `input` already processed.
    pos: usize,
    output: Vec<u8>,
    ready: VecDeque<Ready>,
    pending: Option<Pending>,
    next_decision: u64,
    greeting_refused: bool,
    helo: Option<bool>,
    authenticated: bool,
    txn: Option<Transaction>,
    transactions: u32,
    errors: u32,
    /// NOOP, RSET, VRFY, EXPN and HELP since the last accepted message.
    junk_commands: u64,
    scratch: Vec<u8>,
    sasl: Vec<u8>,
}

/// What the session is reading.
#[derive(Debug)]
enum Mode {
    Commands,
    /// Skipping the rest of an over-long line; answered `500` at its end.
    SkipLongLine {
        /// The line was a SASL response (RFC 4954 §4: `500 5.5.6`).
        sasl: bool,
    },
    SaslPlain,
    SaslLoginUser,
    SaslLoginPassword,
    Data(DataDecoder),
    Bdat {
        remaining: u64,
        chunk_size: u64,
        last: bool,
        /// Set when the chunk is read only to be thrown away, with the reply to give after.
        refusal: Option<Reply>,
    },
    AwaitingTls,
    Closed,
}

#[derive(Debug)]
struct Transaction {
    body: BodyType,
    smtputf8: bool,
    accepted_rcpts: usize,
    attempted_rcpts: usize,
    bdat_started: bool,
    size: u64,
    /// The reply that ends a message already aborted.
    refusal: Option<Reply>,
}

#[derive(Debug)]
struct Pending {
    id: DecisionId,
    kind: PendingKind,
}

#[derive(Debug, Clone, Copy)]
enum PendingKind {
    Connect,
    Helo { extended: bool },
    Auth,
    Mail { body: BodyType, smtputf8: bool },
    Rcpt,
    Data,
    Bdat { size: u64, last: bool },
    MessageEnd,
}

/// An event ready to be returned, holding positions instead of borrows.
#[derive(Debug)]
enum Ready {
    Connect(DecisionId),
    Command(DecisionId, Range<usize>),
    Auth {
        id: DecisionId,
        mechanism: AuthMechanism,
        authorization_id: Range<usize>,
        authentication_id: Range<usize>,
        password: Range<usize>,
    },
    DataStart(DecisionId, bool),
    BodyFromScratch(Range<usize>),
    BodyFromInput(Range<usize>),
    MessageEnd(DecisionId, u64),
    Notice(Notice),
}

impl Ready {
    /// Whether the item is part of a message the host refused (see `refuse_message`).
    fn belongs_to_refused_message(&self) -> bool {
        matches!(
            self,
            Self::BodyFromScratch(_)
                | Self::BodyFromInput(_)
                | Self::MessageEnd(..)
                | Self::Notice(Notice::Aborted(_))
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Notice {
    Aborted(AbortReason),
    Reset,
    StartTls(usize),
    BareLineEnding { in_body: bool, rejected: bool },
    Quit,
    TooManyErrors,
}

const SASL_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
const SASL_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

impl ServerSession {
    /// A new session for a client that just connected. The first event is
    /// [`Event::Connect`]; the greeting goes out when it is accepted.
    #[must_use]
    pub fn new(config: Arc<SessionConfig>, security: Security) -> Self {
        let mut session = Self {
            config,
            security,
            mode: Mode::Commands,
            input: Vec::new(),
            pos: 0,
            output: Vec::new(),
            ready: VecDeque::new(),
            pending: None,
            next_decision: 0,
            greeting_refused: false,
            helo: None,
            authenticated: false,
            txn: None,
            transactions: 0,
            errors: 0,
            junk_commands: 0,
            scratch: Vec::new(),
            sasl: Vec::new(),
        };
        let id = session.await_decision(PendingKind::Connect);
        session.ready.push_back(Ready::Connect(id));
        session
    }

    /// Offers octets received from the client. Returns how many were taken; the caller keeps
    /// the rest and offers them again after draining events (this is the back-pressure: the
    /// session takes no more than its input limit while events or decisions are outstanding).
    pub fn handle_input(&mut self, data: &[u8]) -> usize {
        match self.mode {
            // After STARTTLS nothing may arrive in plaintext; after close nothing matters.
            Mode::AwaitingTls | Mode::Closed => return data.len(),
            _ => {}
        }
        if self.ready.is_empty() && self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let room = self.input_limit().saturating_sub(self.input.len());
        let taken = room.min(data.len());
        self.input.extend_from_slice(&data[..taken]);
        taken
    }

    /// The client closed its side of the connection. A message in progress is aborted
    /// ([`AbortReason::ClientLeft`]) and the session closes.
    pub fn handle_eof(&mut self) {
        self.shut(AbortReason::ClientLeft, None);
    }

    /// Closes the session with a final reply, such as `421 4.4.2` on a timeout or `421 4.3.2`
    /// at shutdown (RFC 5321 §3.8). A message in progress is aborted ([`AbortReason::Closed`]);
    /// a decision still outstanding becomes unknown.
    pub fn close(&mut self, reply: &Reply) {
        self.shut(AbortReason::Closed, Some(reply));
    }

    /// The host cannot take the message in progress (its spool failed, say), typically while
    /// handling an [`Event::BodyChunk`]. The rest of the body is still read to its end, so
    /// that none of it is taken for commands, and then answered with `reply` (for a full
    /// disk, `452 4.3.1`, RFC 3463). No [`Event::MessageEnd`] follows, even when the end was
    /// already read; an [`Event::MessageAborted`] does not either (a queued one is dropped),
    /// since the host made the call. Does nothing outside a message body.
    pub fn refuse_message(&mut self, reply: Reply) {
        // The body may be read to its end already, its MessageEnd not yet handed over (they
        // arrived in one piece): then the message ends here, with the host's reply.
        let end_was_read = self
            .ready
            .iter()
            .any(|ready| matches!(ready, Ready::MessageEnd(..)));
        // What of the message is still queued goes with it: body chunks, and an abort notice
        // (the host made the call, it needs no notice of it).
        self.ready
            .retain(|ready| !ready.belongs_to_refused_message());
        if end_was_read {
            self.pending = None;
            self.txn = None;
            self.reply(&reply);
            return;
        }
        if let Mode::Bdat { refusal, .. } = &mut self.mode {
            // The chunk is read to its end and refused; the transaction ends with it.
            if refusal.is_none() {
                *refusal = Some(reply);
                self.txn = None;
            }
        } else if let (Mode::Data(_), Some(txn)) = (&self.mode, &mut self.txn)
            && txn.refusal.is_none()
        {
            txn.refusal = Some(reply);
        }
    }

    /// The transport has completed the TLS handshake after [`Event::StartTls`]. The session
    /// starts afresh (RFC 3207 §4.2): the client must send EHLO again.
    ///
    /// # Errors
    /// [`Error::NotAwaitingTls`] if no STARTTLS is in progress.
    pub fn handle_tls_established(&mut self) -> Result<(), Error> {
        if !matches!(self.mode, Mode::AwaitingTls) {
            return Err(Error::NotAwaitingTls);
        }
        self.security = Security::Tls;
        self.mode = Mode::Commands;
        self.helo = None;
        self.authenticated = false;
        self.txn = None;
        self.input.clear();
        self.pos = 0;
        Ok(())
    }

    /// Answers an event that awaited a decision. Answers may come in any order relative to
    /// other calls; replies still leave in command order.
    ///
    /// # Errors
    /// [`Error::UnknownDecision`] if `id` is not the outstanding decision (already answered,
    /// or the session was closed); [`Error::InvalidVerdict`] if the reply's class does not fit
    /// the verdict (an `AcceptWith` must be 2xx, or 3xx for DATA; a `Reject` 4xx or 5xx).
    pub fn decide(&mut self, id: DecisionId, verdict: Verdict) -> Result<(), Error> {
        let kind = match &self.pending {
            Some(pending) if pending.id == id => pending.kind,
            _ => return Err(Error::UnknownDecision),
        };
        let accepting_class = if matches!(kind, PendingKind::Data) {
            3
        } else {
            2
        };
        let (accepted, reply) = match verdict {
            Verdict::Accept => (true, None),
            Verdict::AcceptWith(reply) if reply.code().class() == accepting_class => {
                (true, Some(reply))
            }
            Verdict::Reject(reply) if reply.code().is_negative() => (false, Some(reply)),
            Verdict::AcceptWith(_) | Verdict::Reject(_) => return Err(Error::InvalidVerdict),
        };
        self.pending = None;
        if matches!(kind, PendingKind::Auth) {
            self.wipe_sasl();
        }
        if accepted {
            self.accept(kind, reply);
        } else {
            let reply = reply.unwrap_or_else(|| Reply::fixed(554, (5, 0, 0), "Refused"));
            self.refuse(kind, &reply);
        }
        Ok(())
    }

    /// The next event, or `None` when the session needs more input, awaits a decision, or is
    /// closed. Call it until it returns `None` after every input, decision or close.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        if self.ready.is_empty() && !self.step() {
            return None;
        }
        let ready = self.ready.pop_front()?;
        Some(self.event_for(ready))
    }

    /// Appends the reply octets ready to send to `out` and returns how many. Replies to
    /// pipelined commands (RFC 2920) accumulate until the session has processed all the input
    /// it has, so a batch of commands gets one batch of replies.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let len = self.output.len();
        out.extend_from_slice(&self.output);
        self.output.clear();
        len
    }

    /// Whether the session can take more input now.
    #[must_use]
    pub fn wants_input(&self) -> bool {
        !matches!(self.mode, Mode::AwaitingTls | Mode::Closed)
            && self.input.len() - self.pos < self.input_limit()
    }

    /// Whether the session answered STARTTLS with `220` and now waits for the transport to
    /// switch to TLS (RFC 3207 §4): the host upgrades the transport after sending what
    /// [`ServerSession::poll_transmit`] gives, then calls
    /// [`ServerSession::handle_tls_established`]. Input offered meanwhile is discarded.
    #[must_use]
    pub fn awaiting_tls(&self) -> bool {
        matches!(self.mode, Mode::AwaitingTls)
    }

    /// Whether reply octets are waiting for [`ServerSession::poll_transmit`].
    #[must_use]
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// How many reply octets wait for [`ServerSession::poll_transmit`]: what a connection
    /// counts against its output bound (back-pressure on a client that does not read).
    #[must_use]
    pub fn pending_output(&self) -> usize {
        self.output.len()
    }

    /// Whether the session is over (QUIT, a `421`, the client left): send the remaining
    /// output, then close the connection.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// Whether a message body is being received (between the start of DATA/BDAT and its end).
    #[must_use]
    pub fn in_body(&self) -> bool {
        matches!(self.mode, Mode::Data(_) | Mode::Bdat { .. })
    }

    /// Whether a mail transaction is under way (after an accepted MAIL, until the message is
    /// answered or the transaction reset) or a decision is outstanding: the session is not
    /// idle, and a graceful shutdown should let it finish.
    #[must_use]
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || self.pending.is_some() || self.in_body()
    }

    /// "Junk" commands — NOOP, RSET, VRFY, EXPN, HELP — since the last accepted message, for
    /// a limit on clients that keep a session open without sending mail (as Postfix's
    /// `smtpd_junk_command_limit`).
    #[must_use]
    pub fn junk_commands(&self) -> u64 {
        self.junk_commands
    }

    /// Whether an event awaits the host's decision.
    #[must_use]
    pub fn awaiting_decision(&self) -> bool {
        self.pending.is_some()
    }

    /// The transport's security as the session knows it.
    #[must_use]
    pub fn security(&self) -> Security {
        self.security
    }

    /// Whether the client has authenticated (RFC 4954).
    #[must_use]
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    // ---- processing -------------------------------------------------------------------

    /// Processes input until something is ready, a decision is awaited, or input runs out.
    /// Returns whether `ready` has something.
    fn step(&mut self) -> bool {
        while self.ready.is_empty() && self.pending.is_none() {
            let progressed = match self.mode {
                Mode::Commands
                | Mode::SaslPlain
                | Mode::SaslLoginUser
                | Mode::SaslLoginPassword => self.read_line(),
                Mode::SkipLongLine { sasl } => self.skip_long_line(sasl),
                Mode::Data(_) => self.read_data(),
                Mode::Bdat { .. } => self.read_bdat(),
                Mode::AwaitingTls | Mode::Closed => false,
            };
            if !progressed {
                break;
            }
        }
        if self.input.len() == self.pos && self.ready.is_empty() {
            // Everything consumed: give back memory held for a large burst.
            self.input.clear();
            self.pos = 0;
            if self.input.capacity() > 4 * self.config.limits.command_line {
                self.input = Vec::new();
            }
        }
        !self.ready.is_empty()
    }

    fn read_line(&mut self) -> bool {
        let buf = &self.input[self.pos..];
        if buf.is_empty() {
            return false;
        }
        let limits = &self.config.limits;
        let max = if !matches!(self.mode, Mode::Commands) || starts_with_ignore_case(buf, b"AUTH ")
        {
            limits.auth_line
        } else {
            limits.command_line
        };
        let Some(lf) = memchr(b'\n', &buf[..buf.len().min(max)]) else {
            if buf.len() >= max {
                self.pos += max;
                self.mode = Mode::SkipLongLine {
                    sasl: !matches!(self.mode, Mode::Commands),
                };
                return true;
            }
            return false;
        };
        let start = self.pos;
        self.pos += lf + 1;
        let (end, bare_lf) = if lf > 0 && self.input[start + lf - 1] == b'\r' {
            (start + lf - 1, false)
        } else {
            (start + lf, true)
        };
        let bare_cr = memchr(b'\r', &self.input[start..end]).is_some();
        if bare_lf || bare_cr {
            let rejected =
                self.config.policy.bare_line_ending_in_commands == LineEndingPolicy::Reject;
            self.notice(Notice::BareLineEnding {
                in_body: false,
                rejected,
            });
            if rejected {
                self.protocol_error(&Reply::fixed(
                    500,
                    (5, 5, 2),
                    "Bare LF or CR not allowed; end lines with CRLF",
                ));
                return true;
            }
        }
        match self.mode {
            Mode::Commands => self.command(start..end),
            Mode::SaslPlain => self.sasl_plain(start..end),
            Mode::SaslLoginUser => self.sasl_login_user(start..end),
            _ => self.sasl_login_password(start..end),
        }
        true
    }

    fn skip_long_line(&mut self, sasl: bool) -> bool {
        let buf = &self.input[self.pos..];
        if buf.is_empty() {
            return false;
        }
        match memchr(b'\n', buf) {
            None => self.pos = self.input.len(),
            Some(lf) => {
                self.pos += lf + 1;
                self.mode = Mode::Commands;
                self.wipe_sasl();
                self.protocol_error(&if sasl {
                    Reply::fixed(500, (5, 5, 6), "Authentication exchange line is too long")
                } else {
                    Reply::fixed(500, (5, 5, 2), "Line too long")
                });
            }
        }
        true
    }

    fn command(&mut self, line: Range<usize>) {
        let command = match parse_command(&self.input[line.clone()]) {
            Ok(command) => command,
            Err(error) => {
                let (class, subject, detail) = error.enhanced();
                let reply = Reply::new(
                    ReplyCode::new(error.code()).unwrap_or(ReplyCode::SYNTAX_ERROR),
                    EnhancedStatus::new(class, subject, detail),
                    error.text(),
                );
                self.protocol_error(&reply);
                return;
            }
        };
        if matches!(
            command,
            Command::Noop | Command::Rset | Command::Vrfy(_) | Command::Expn(_) | Command::Help(_)
        ) {
            self.junk_commands += 1;
            if self.junk_commands > self.config.limits.junk_commands {
                self.notice(Notice::TooManyErrors);
                let reply = Reply::fixed(
                    421,
                    (4, 7, 0),
                    "Too many commands without mail, closing connection",
                );
                self.shut(AbortReason::Closed, Some(&reply));
                return;
            }
        }
        if self.greeting_refused && !matches!(command, Command::Quit) {
            self.protocol_error(&Reply::fixed(503, (5, 5, 1), "Bad sequence of commands"));
            return;
        }
        match command {
            Command::Ehlo(_) | Command::Helo(_) => {
                let extended = matches!(command, Command::Ehlo(_));
                self.reset_transaction();
                let id = self.await_decision(PendingKind::Helo { extended });
                self.ready.push_back(Ready::Command(id, line));
            }
            Command::Mail { from, params } => {
                let ascii = match from {
                    ReversePath::Null => true,
                    ReversePath::Mailbox(mailbox) => mailbox.is_ascii(),
                };
                match self.check_mail(&params, ascii) {
                    Err(reply) => self.protocol_error(&reply),
                    Ok(()) => {
                        let kind = PendingKind::Mail {
                            body: params.body.unwrap_or(BodyType::SevenBit),
                            smtputf8: params.smtputf8,
                        };
                        let id = self.await_decision(kind);
                        self.ready.push_back(Ready::Command(id, line));
                    }
                }
            }
            Command::Rcpt { to, params } => {
                let ascii = match to {
                    ForwardPath::Postmaster => true,
                    ForwardPath::Mailbox(mailbox) => mailbox.is_ascii(),
                };
                match self.check_rcpt(&params, ascii) {
                    Err(reply) => self.protocol_error(&reply),
                    Ok(()) => {
                        if let Some(txn) = &mut self.txn {
                            txn.attempted_rcpts += 1;
                        }
                        let id = self.await_decision(PendingKind::Rcpt);
                        self.ready.push_back(Ready::Command(id, line));
                    }
                }
            }
            Command::Data => match self.check_data(false) {
                Err(reply) => self.protocol_error(&reply),
                Ok(()) => {
                    let id = self.await_decision(PendingKind::Data);
                    self.ready.push_back(Ready::DataStart(id, false));
                }
            },
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.reset_transaction();
                self.reply(&Reply::fixed(250, (2, 0, 0), "OK"));
            }
            Command::Noop => self.reply(&Reply::fixed(250, (2, 0, 0), "OK")),
            Command::Quit => {
                self.reply(&Reply::fixed(221, (2, 0, 0), "Bye"));
                self.reset_transaction();
                self.notice(Notice::Quit);
                self.mode = Mode::Closed;
            }
            Command::Vrfy(_) => match self.config.policy.vrfy {
                VrfyPolicy::Disabled => {
                    self.reply(&Reply::fixed(502, (5, 5, 1), "VRFY not supported"));
                }
                _ => self.reply(&Reply::fixed(
                    252,
                    (2, 5, 0),
                    "Cannot VRFY user, but will accept message and attempt delivery",
                )),
            },
            Command::Expn(_) => {
                self.protocol_error(&Reply::fixed(502, (5, 5, 1), "EXPN not supported"));
            }
            Command::Help(_) => self.reply(&Reply::fixed(
                214,
                (2, 0, 0),
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS AUTH (RFC 5321)",
            )),
            Command::StartTls => self.start_tls(),
            Command::Auth { mechanism, initial_response } => {
                let mechanism = mechanism_named(mechanism);
                let initial_response = initial_response.map(<[u8]>::to_vec);
                self.auth(mechanism, initial_response.as_deref());
            }
        }
    }

    fn check_mail(&self, params: &MailParameters<'_>, ascii: bool) -> Result<(), Reply> {
        if self.helo.is_none() {
            return Err(Reply::fixed(503, (5, 5, 1), "Send HELO or EHLO first"));
        }
        if self.txn.is_some() {
            return Err(Reply::fixed(503, (5, 5, 1), "Nested MAIL command"));
        }
        let policy = &self.config.policy;
        if policy.require_tls_for_mail && self.security != Security::Tls {
            return Err(Reply::fixed(
                530,
                (5, 7, 0),
                "Must issue a STARTTLS command first",
            ));
        }
        if policy.require_auth_for_mail && !self.authenticated {
            return Err(Reply::fixed(530, (5, 7, 0), "Authentication required"));
        }
        if self
            .config
            .limits
            .transactions
            .is_some_and(|max| self.transactions >= max)
        {
            return Err(Reply::fixed(
                452,
                (4, 5, 3),
                "Too many transactions in this session",
            ));
        }
        let unadvertised = Reply::fixed(555, (5, 5, 4), "Parameter not advertised");
        if let Some(size) = params.size {
            if !self.advertised(Extensions::SIZE) {
                return Err(unadvertised);
            }
            if size > self.config.limits.message_size {
                return Err(Reply::fixed(
                    552,
                    (5, 3, 4),
                    "Message size exceeds fixed maximum message size",
                ));
            }
        }
        match params.body {
            Some(BodyType::EightBitMime) if !self.advertised(Extensions::EIGHT_BIT_MIME) => {
                return Err(unadvertised);
            }
            Some(BodyType::BinaryMime)
                if !self.advertised(Extensions::BINARY_MIME | Extensions::CHUNKING) =>
            {
                return Err(unadvertised);
            }
            _ => {}
        }
        if (params.smtputf8 && !self.advertised(Extensions::SMTP_UTF8))
            || ((params.ret.is_some() || params.envid.is_some())
                && !self.advertised(Extensions::DSN))
            || (params.requiretls && !self.advertised(Extensions::REQUIRE_TLS))
            || (params.auth.is_some() && !self.advertised(Extensions::AUTH))
        {
            return Err(unadvertised);
        }
        if !ascii && !params.smtputf8 {
            return Err(non_ascii_address());
        }
        Ok(())
    }

    fn check_rcpt(&self, params: &RcptParameters<'_>, ascii: bool) -> Result<(), Reply> {
        let Some(txn) = &self.txn else {
            return Err(Reply::fixed(503, (5, 5, 1), "Need MAIL command"));
        };
        if (params.notify.is_some() || params.orcpt.is_some()) && !self.advertised(Extensions::DSN)
        {
            return Err(Reply::fixed(555, (5, 5, 4), "Parameter not advertised"));
        }
        if !ascii && !txn.smtputf8 {
            return Err(non_ascii_address());
        }
        if txn.accepted_rcpts >= self.config.limits.recipients {
            return Err(Reply::fixed(452, (4, 5, 3), "Too many recipients"));
        }
        Ok(())
    }

    /// Checks that a DATA (or a first BDAT) may start now.
    fn check_data(&self, chunked: bool) -> Result<(), Reply> {
        let Some(txn) = &self.txn else {
            return Err(Reply::fixed(503, (5, 5, 1), "Need MAIL command"));
        };
        if !chunked && txn.bdat_started {
            return Err(Reply::fixed(
                503,
                (5, 5, 1),
                "DATA cannot follow BDAT (RFC 3030)",
            ));
        }
        if !chunked && txn.body == BodyType::BinaryMime {
            return Err(Reply::fixed(
                503,
                (5, 5, 1),
                "BINARYMIME requires BDAT (RFC 3030)",
            ));
        }
        if txn.accepted_rcpts == 0 {
            if txn.attempted_rcpts > 0 {
                return Err(Reply::fixed(554, (5, 5, 1), "No valid recipients"));
            }
            return Err(Reply::fixed(503, (5, 5, 1), "Need RCPT command"));
        }
        Ok(())
    }

    /// BDAT (RFC 3030 §2): the chunk's octets are always read, also when the command is
    /// refused, so that they are never taken for commands.
    fn bdat(&mut self, size: u64, last: bool) {
        let max = self.config.limits.message_size;
        let refusal = if !self.advertised(Extensions::CHUNKING) {
            Some(Reply::fixed(502, (5, 5, 1), "CHUNKING not offered"))
        } else {
            match &self.txn {
                Some(txn) if txn.bdat_started => {
                    (txn.size.saturating_add(size) > max).then(too_large)
                }
                _ => match self.check_data(true) {
                    Err(reply) => Some(reply),
                    Ok(()) if size > max => Some(too_large()),
                    Ok(()) => {
                        let id = self.await_decision(PendingKind::Bdat { size, last });
                        self.ready.push_back(Ready::DataStart(id, true));
                        return;
                    }
                },
            }
        };
        if let Some(reply) = &refusal {
            if reply.code() == ReplyCode::EXCEEDED_STORAGE {
                if let Some(txn) = self.txn.take() {
                    self.notice(if txn.bdat_started {
                        Notice::Aborted(AbortReason::TooLarge)
                    } else {
                        Notice::Reset
                    });
                }
            } else {
                self.errors += 1;
            }
        }
        self.mode = Mode::Bdat {
            remaining: size,
            chunk_size: size,
            last,
            refusal,
        };
    }

    fn read_bdat(&mut self) -> bool {
        let Mode::Bdat {
            remaining,
            chunk_size,
            last,
            refusal,
        } = &mut self.mode
        else {
            return false;
        };
        if *remaining > 0 {
            let available = self.input.len() - self.pos;
            if available == 0 {
                return false;
            }
            let cap = u64::try_from(available.min(self.config.limits.body_chunk)).unwrap_or(0);
            let take = (*remaining).min(cap);
            *remaining -= take;
            // `take` ≤ `available`, a usize.
            let take = usize::try_from(take).unwrap_or(available);
            let range = self.pos..self.pos + take;
            self.pos += take;
            if refusal.is_none() {
                if let Some(txn) = &mut self.txn {
                    txn.size += take as u64;
                }
                self.ready.push_back(Ready::BodyFromInput(range));
            }
            return true;
        }
        let (chunk_size, last, refusal) = (*chunk_size, *last, refusal.take());
        self.mode = Mode::Commands;
        if let Some(reply) = refusal {
            self.reply(&reply);
            self.check_error_limit();
        } else if last {
            self.end_message();
        } else {
            self.reply(&Reply::new(
                ReplyCode::OK,
                Some(EnhancedStatus::OK),
                format!("{chunk_size} octets received"),
            ));
        }
        true
    }

    fn read_data(&mut self) -> bool {
        let available = self.input.len() - self.pos;
        if available == 0 {
            return false;
        }
        let Mode::Data(decoder) = &mut self.mode else {
            return false;
        };
        let end = self.pos + available.min(self.config.limits.body_chunk);
        self.scratch.clear();
        let had_bare = decoder.saw_bare_line_ending();
        let progress = decoder.decode(&self.input[self.pos..end], &mut self.scratch);
        self.pos += progress.consumed;
        let bare_now = !had_bare && decoder.saw_bare_line_ending();
        let size = decoder.decoded_len();
        let decoder_bare_at = decoder.first_bare_line_ending();
        let policy = &self.config.policy;
        let limits = &self.config.limits;
        // The earliest point at which the message becomes unacceptable. Cutting the body there
        // makes the events the same however the input was split.
        let mut violation: Option<(u64, AbortReason, Reply)> = None;
        let mut consider = |at: Option<u64>, reason: AbortReason, reply: fn() -> Reply| {
            if let Some(at) = at
                && violation.as_ref().is_none_or(|(first, _, _)| at < *first)
            {
                violation = Some((at, reason, reply()));
            }
        };
        if policy.bare_line_ending_in_body == LineEndingPolicy::Reject {
            consider(
                decoder.first_bare_line_ending(),
                AbortReason::BareLineEnding,
                || {
                    Reply::fixed(
                        550,
                        (5, 5, 2),
                        "Bare LF or CR in message; end lines with CRLF",
                    )
                },
            );
        }
        consider(decoder.first_long_line(), AbortReason::LineTooLong, || {
            Reply::fixed(554, (5, 6, 0), "Message has a line longer than the limit")
        });
        consider(
            (size > limits.message_size).then_some(limits.message_size),
            AbortReason::TooLarge,
            too_large,
        );
        let bare_rejected = policy.bare_line_ending_in_body == LineEndingPolicy::Reject;
        let already_aborted = self.txn.as_ref().is_none_or(|txn| txn.refusal.is_some());
        if !already_aborted {
            let chunk_start = size - self.scratch.len() as u64;
            if let Some((at, _, _)) = &violation {
                // `at` ≥ `chunk_start` unless the violation was already acted on.
                let keep = usize::try_from(at.saturating_sub(chunk_start)).unwrap_or(usize::MAX);
                self.scratch.truncate(keep);
            }
            if let Some(txn) = &mut self.txn {
                txn.size = chunk_start + self.scratch.len() as u64;
            }
            // The notice goes where the bare line ending stood, between the body octets.
            let split = match decoder_bare_at {
                Some(at) if bare_now => usize::try_from(at.saturating_sub(chunk_start))
                    .map_or(self.scratch.len(), |at| at.min(self.scratch.len())),
                _ => self.scratch.len(),
            };
            if split > 0 {
                self.ready.push_back(Ready::BodyFromScratch(0..split));
            }
            if bare_now {
                self.notice(Notice::BareLineEnding {
                    in_body: true,
                    rejected: bare_rejected,
                });
            }
            if split < self.scratch.len() {
                self.ready
                    .push_back(Ready::BodyFromScratch(split..self.scratch.len()));
            }
        } else if bare_now {
            self.notice(Notice::BareLineEnding {
                in_body: true,
                rejected: bare_rejected,
            });
        }
        if let Some((_, reason, reply)) = violation {
            self.abort_message(reason, reply);
        }
        if progress.end {
            self.mode = Mode::Commands;
            self.end_message();
        }
        true
    }

    /// Marks the message as aborted (once) and remembers the reply for its end.
    fn abort_message(&mut self, reason: AbortReason, reply: Reply) {
        let Some(txn) = &mut self.txn else { return };
        if txn.refusal.is_none() {
            txn.refusal = Some(reply);
            self.notice(Notice::Aborted(reason));
        }
    }

    fn end_message(&mut self) {
        let Some(txn) = &mut self.txn else { return };
        if let Some(reply) = txn.refusal.take() {
            self.txn = None;
            self.reply(&reply);
            return;
        }
        let size = txn.size;
        let id = self.await_decision(PendingKind::MessageEnd);
        self.ready.push_back(Ready::MessageEnd(id, size));
    }

    fn start_tls(&mut self) {
        if self.security == Security::Tls {
            self.protocol_error(&Reply::fixed(503, (5, 5, 1), "TLS already active"));
            return;
        }
        if self.security != Security::StartTlsAvailable
            || !self.config.extensions.contains(Extensions::START_TLS)
        {
            self.protocol_error(&Reply::fixed(502, (5, 5, 1), "STARTTLS not offered"));
            return;
        }
        self.reset_transaction();
        self.reply(&Reply::fixed(220, (2, 0, 0), "Ready to start TLS"));
        let discarded = self.input.len() - self.pos;
        self.input.clear();
        self.pos = 0;
        self.mode = Mode::AwaitingTls;
        self.notice(Notice::StartTls(discarded));
    }

    fn auth(&mut self, mechanism: Option<AuthMechanism>, initial_response: Option<&[u8]>) {
        let offered = self.config.auth_mechanisms;
        let refusal = if !self.config.extensions.contains(Extensions::AUTH) || offered.is_empty() {
            Some(Reply::fixed(502, (5, 5, 1), "AUTH not offered"))
        } else if self.helo != Some(true) {
            Some(Reply::fixed(503, (5, 5, 1), "Send EHLO first"))
        } else if self.security != Security::Tls && !self.config.policy.danger_allow_plaintext_auth
        {
            Some(Reply::fixed(
                538,
                (5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ))
        } else if self.authenticated {
            Some(Reply::fixed(503, (5, 5, 1), "Already authenticated"))
        } else if self.txn.is_some() {
            Some(Reply::fixed(
                503,
                (5, 5, 1),
                "AUTH not permitted during a mail transaction",
            ))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.protocol_error(&reply);
            return;
        }
        let mechanism = mechanism.filter(|m| match m {
            AuthMechanism::Plain => offered.contains(AuthMechanisms::PLAIN),
            AuthMechanism::Login => offered.contains(AuthMechanisms::LOGIN),
        });
        match (mechanism, initial_response) {
            (None, _) => self.protocol_error(&Reply::fixed(
                504,
                (5, 5, 4),
                "Unrecognized authentication type",
            )),
            (Some(AuthMechanism::Plain), None) => {
                self.reply(&Reply::new(ReplyCode::AUTH_CHALLENGE, None, ""));
                self.mode = Mode::SaslPlain;
            }
            (Some(AuthMechanism::Plain), Some(response)) => self.finish_plain(response),
            (Some(AuthMechanism::Login), None) => {
                self.reply(&Reply::new(
                    ReplyCode::AUTH_CHALLENGE,
                    None,
                    SASL_USERNAME_PROMPT,
                ));
                self.mode = Mode::SaslLoginUser;
            }
            (Some(AuthMechanism::Login), Some(response)) => {
                self.mode = Mode::SaslLoginUser;
                self.login_user(response);
            }
        }
    }

    fn sasl_plain(&mut self, line: Range<usize>) {
        self.mode = Mode::Commands;
        let response = self.input[line].to_vec();
        if !self.sasl_cancelled(&response) {
            self.finish_plain(&response);
        }
    }

    fn sasl_login_user(&mut self, line: Range<usize>) {
        let response = self.input[line].to_vec();
        if !self.sasl_cancelled(&response) {
            self.login_user(&response);
        }
    }

    fn sasl_login_password(&mut self, line: Range<usize>) {
        self.mode = Mode::Commands;
        let response = self.input[line].to_vec();
        if self.sasl_cancelled(&response) {
            return;
        }
        let user_len = self.sasl.len();
        let mut password = Vec::new();
        if decode_sasl(&response, &mut password).is_none()
            || std::str::from_utf8(&password).is_err()
        {
            password.fill(0);
            self.sasl_failed();
            return;
        }
        self.sasl.extend_from_slice(&password);
        password.fill(0);
        let id = self.await_decision(PendingKind::Auth);
        self.ready.push_back(Ready::Auth {
            id,
            mechanism: AuthMechanism::Login,
            authorization_id: 0..0,
            authentication_id: 0..user_len,
            password: user_len..self.sasl.len(),
        });
    }

    /// `*` cancels an exchange (RFC 4954 §4).
    fn sasl_cancelled(&mut self, response: &[u8]) -> bool {
        if response == b"*" {
            self.mode = Mode::Commands;
            self.wipe_sasl();
            self.protocol_error(&Reply::fixed(501, (5, 0, 0), "Authentication cancelled"));
            true
        } else {
            false
        }
    }

    fn login_user(&mut self, response: &[u8]) {
        let mut user = Vec::new();
        if decode_sasl(response, &mut user).is_none() || std::str::from_utf8(&user).is_err() {
            self.mode = Mode::Commands;
            self.sasl_failed();
            return;
        }
        self.wipe_sasl();
        self.sasl = user;
        self.reply(&Reply::new(
            ReplyCode::AUTH_CHALLENGE,
            None,
            SASL_PASSWORD_PROMPT,
        ));
        self.mode = Mode::SaslLoginPassword;
    }

    /// PLAIN: `[authzid] NUL authcid NUL passwd`, UTF-8 (RFC 4616 §2).
    fn finish_plain(&mut self, response: &[u8]) {
        self.wipe_sasl();
        let mut decoded = Vec::new();
        if decode_sasl(response, &mut decoded).is_none() {
            self.sasl_failed();
            return;
        }
        self.sasl = decoded;
        let mut parts = self.sasl.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.sasl_failed();
            return;
        };
        let valid =
            std::str::from_utf8(&self.sasl).is_ok() && !authc.is_empty() && !pass.is_empty();
        let (authz_len, authc_len) = (authz.len(), authc.len());
        if !valid {
            self.sasl_failed();
            return;
        }
        let id = self.await_decision(PendingKind::Auth);
        self.ready.push_back(Ready::Auth {
            id,
            mechanism: AuthMechanism::Plain,
            authorization_id: 0..authz_len,
            authentication_id: authz_len + 1..authz_len + 1 + authc_len,
            password: authz_len + authc_len + 2..self.sasl.len(),
        });
    }

    fn sasl_failed(&mut self) {
        self.wipe_sasl();
        self.protocol_error(&Reply::fixed(
            501,
            (5, 5, 2),
            "Cannot decode SASL response (RFC 4954 §4)",
        ));
    }

    fn wipe_sasl(&mut self) {
        // Credentials do not linger in memory longer than the decision needs them.
        self.sasl.fill(0);
        self.sasl.clear();
    }

    // ---- decisions ----------------------------------------------------------------------

    fn accept(&mut self, kind: PendingKind, reply: Option<Reply>) {
        match kind {
            PendingKind::Connect => {
                let text = format!("{} ESMTP ready", self.config.hostname);
                let reply =
                    reply.unwrap_or_else(|| Reply::new(ReplyCode::SERVICE_READY, None, text));
                self.write_plain(&reply);
            }
            PendingKind::Helo { extended } => {
                self.helo = Some(extended);
                match reply {
                    Some(reply) => self.write_plain(&reply),
                    None if extended => {
                        let reply = self.ehlo_reply();
                        self.write_plain(&reply);
                    }
                    None => {
                        let reply = Reply::new(ReplyCode::OK, None, self.config.hostname.clone());
                        self.write_plain(&reply);
                    }
                }
            }
            PendingKind::Auth => {
                self.authenticated = true;
                self.reply_or(reply, 235, (2, 7, 0), "Authentication successful");
            }
            PendingKind::Mail { body, smtputf8 } => {
                self.txn = Some(Transaction {
                    body,
                    smtputf8,
                    accepted_rcpts: 0,
                    attempted_rcpts: 0,
                    bdat_started: false,
                    size: 0,
                    refusal: None,
                });
                self.reply_or(reply, 250, (2, 1, 0), "Sender OK");
            }
            PendingKind::Rcpt => {
                if let Some(txn) = &mut self.txn {
                    txn.accepted_rcpts += 1;
                }
                self.reply_or(reply, 250, (2, 1, 5), "Recipient OK");
            }
            PendingKind::Data => {
                let max_line = self.config.limits.text_line.unwrap_or(usize::MAX);
                self.mode = Mode::Data(DataDecoder::new(max_line));
                let reply = reply.unwrap_or_else(|| {
                    Reply::new(
                        ReplyCode::START_MAIL_INPUT,
                        None,
                        "Start mail input; end with <CRLF>.<CRLF>",
                    )
                });
                self.reply(&reply);
            }
            PendingKind::Bdat { size, last } => {
                if let Some(txn) = &mut self.txn {
                    txn.bdat_started = true;
                }
                self.mode = Mode::Bdat {
                    remaining: size,
                    chunk_size: size,
                    last,
                    refusal: None,
                };
            }
            PendingKind::MessageEnd => {
                self.txn = None;
                self.transactions += 1;
                self.junk_commands = 0;
                self.reply_or(reply, 250, (2, 0, 0), "Message accepted");
            }
        }
    }

    fn refuse(&mut self, kind: PendingKind, reply: &Reply) {
        match kind {
            PendingKind::Connect => {
                self.write_greeting_refusal(reply);
                if reply.code() == ReplyCode::SERVICE_UNAVAILABLE {
                    self.mode = Mode::Closed;
                } else {
                    self.greeting_refused = true;
                }
                return;
            }
            PendingKind::Bdat { .. } if reply.code() == ReplyCode::SERVICE_UNAVAILABLE => {
                // Closing: the chunk need not be read.
                self.reply(reply);
                self.shut(AbortReason::Closed, None);
                return;
            }
            PendingKind::Bdat { size, last } => {
                // The refused chunk is still read, then answered.
                self.txn = None;
                self.mode = Mode::Bdat {
                    remaining: size,
                    chunk_size: size,
                    last,
                    refusal: Some(reply.clone()),
                };
                return;
            }
            PendingKind::MessageEnd => self.txn = None,
            // Failed authentications count as errors, so password guessing ends in 421.
            PendingKind::Auth if reply.code().class() == 5 => {
                self.protocol_error(reply);
                return;
            }
            _ => {}
        }
        self.reply(reply);
        if reply.code() == ReplyCode::SERVICE_UNAVAILABLE {
            self.shut(AbortReason::Closed, None);
        }
    }

    // ---- helpers ------------------------------------------------------------------------

    fn await_decision(&mut self, kind: PendingKind) -> DecisionId {
        self.next_decision += 1;
        let id = DecisionId(self.next_decision);
        self.pending = Some(Pending { id, kind });
        id
    }

    fn notice(&mut self, notice: Notice) {
        self.ready.push_back(Ready::Notice(notice));
    }

    fn reset_transaction(&mut self) {
        if self.txn.take().is_some() {
            self.notice(Notice::Reset);
        }
    }

    fn shut(&mut self, reason: AbortReason, reply: Option<&Reply>) {
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        // The host has seen the message start (DataStart) and not yet its end or its abort.
        let message_started = match &self.mode {
            Mode::Data(_) => true,
            Mode::Bdat { refusal, .. } => refusal.is_none(),
            _ => false,
        } || self.txn.as_ref().is_some_and(|txn| txn.bdat_started)
            || matches!(
                self.pending,
                Some(Pending {
                    kind: PendingKind::MessageEnd | PendingKind::Bdat { .. },
                    ..
                })
            );
        let already_aborted = self.txn.as_ref().is_some_and(|txn| txn.refusal.is_some());
        let before_greeting = matches!(
            self.pending,
            Some(Pending {
                kind: PendingKind::Connect,
                ..
            })
        );
        self.ready.clear();
        self.pending = None;
        self.wipe_sasl();
        if message_started && !already_aborted {
            self.notice(Notice::Aborted(reason));
        }
        self.txn = None;
        match reply {
            Some(reply) if before_greeting => self.write_greeting_refusal(reply),
            Some(reply) => self.reply(reply),
            None => {}
        }
        self.mode = Mode::Closed;
    }

    fn reply(&mut self, reply: &Reply) {
        let enhanced = self.helo == Some(true)
            && self
                .config
                .extensions
                .contains(Extensions::ENHANCED_STATUS_CODES);
        reply.write_to(&mut self.output, enhanced);
    }

    fn reply_or(
        &mut self,
        reply: Option<Reply>,
        code: u16,
        status: (u8, u16, u16),
        text: &'static str,
    ) {
        let reply = reply.unwrap_or_else(|| Reply::fixed(code, status, text));
        self.reply(&reply);
    }

    /// Writes a reply given instead of the greeting. It carries the host's enhanced status,
    /// if it gave one, so that the client can log why (`554 5.7.1`, `421 4.7.0`), as is
    /// common practice; nothing has been advertised yet to say otherwise.
    fn write_greeting_refusal(&mut self, reply: &Reply) {
        let enhanced = reply.status().is_some()
            && self
                .config
                .extensions
                .contains(Extensions::ENHANCED_STATUS_CODES);
        reply.write_to(&mut self.output, enhanced);
    }

    /// Writes a reply that never carries an enhanced status: the greeting and the HELO/EHLO
    /// replies, whose lines are not status text (RFC 2034 §3).
    fn write_plain(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output, false);
    }

    /// A reply to a client's command that was refused. Permanent refusals are client mistakes
    /// and too many of them close the session; transient ones (such as `452` for recipients
    /// over the limit, RFC 5321 §4.5.3.1.10) are flow control and are not counted.
    fn protocol_error(&mut self, reply: &Reply) {
        self.reply(reply);
        if reply.code().class() == 5 {
            self.errors += 1;
            self.check_error_limit();
        }
    }

    fn check_error_limit(&mut self) {
        if self.errors >= self.config.limits.errors && !matches!(self.mode, Mode::Closed) {
            let reply = Reply::fixed(421, (4, 7, 0), "Too many errors, closing connection");
            self.shut(AbortReason::Closed, Some(&reply));
            self.notice(Notice::TooManyErrors);
        }
    }

    /// Whether `ext` was advertised in this session's EHLO reply.
    fn advertised(&self, ext: Extensions) -> bool {
        self.helo == Some(true) && self.offers(ext)
    }

    /// Whether `ext` would be advertised now.
    fn offers(&self, ext: Extensions) -> bool {
        let config = &self.config;
        let secure = self.security == Security::Tls;
        let mut offered = config.extensions;
        if self.security != Security::StartTlsAvailable {
            offered = offered.without(Extensions::START_TLS);
        }
        if (!secure && !config.policy.danger_allow_plaintext_auth)
            || config.auth_mechanisms.is_empty()
        {
            offered = offered.without(Extensions::AUTH);
        }
        if !secure {
            offered = offered.without(Extensions::REQUIRE_TLS);
        }
        if !offered.contains(Extensions::CHUNKING) {
            offered = offered.without(Extensions::BINARY_MIME);
        }
        offered.contains(ext)
    }

    /// The EHLO reply: the host name, then one line per extension offered (RFC 5321 §4.1.1.1).
    fn ehlo_reply(&self) -> Reply {
        let config = &self.config;
        let mut reply = Reply::new(ReplyCode::OK, None, config.hostname.clone());
        let simple = [
            (Extensions::PIPELINING, "PIPELINING"),
            (Extensions::EIGHT_BIT_MIME, "8BITMIME"),
            (Extensions::ENHANCED_STATUS_CODES, "ENHANCEDSTATUSCODES"),
            (Extensions::SMTP_UTF8, "SMTPUTF8"),
            (Extensions::CHUNKING, "CHUNKING"),
            (Extensions::BINARY_MIME, "BINARYMIME"),
            (Extensions::DSN, "DSN"),
            (Extensions::START_TLS, "STARTTLS"),
            (Extensions::REQUIRE_TLS, "REQUIRETLS"),
        ];
        if self.offers(Extensions::SIZE) {
            reply = reply.with_line(format!("SIZE {}", config.limits.message_size));
        }
        for (ext, keyword) in simple {
            if self.offers(ext) {
                reply = reply.with_line(keyword);
            }
        }
        if self.offers(Extensions::AUTH) {
            let mut line = String::from("AUTH");
            if config.auth_mechanisms.contains(AuthMechanisms::PLAIN) {
                line.push_str(" PLAIN");
            }
            if config.auth_mechanisms.contains(AuthMechanisms::LOGIN) {
                line.push_str(" LOGIN");
            }
            reply = reply.with_line(line);
        }
        if self.offers(Extensions::LIMITS) {
            let mut line = format!("LIMITS RCPTMAX={}", config.limits.recipients);
            if let Some(max) = config.limits.transactions {
                line.push_str(&format!(" MAILMAX={max}"));
            }
            reply = reply.with_line(line);
        }
        reply
    }

    fn input_limit(&self) -> usize {
        let limits = &self.config.limits;
        limits
            .auth_line
            .max(limits.command_line)
            .max(limits.body_chunk)
    }

    /// The event for a ready item, borrowing from the session's buffers.
    fn event_for(&self, ready: Ready) -> Event<'_> {
        match ready {
            Ready::Connect(decision) => Event::Connect { decision },
            Ready::Command(decision, line) => command_event(decision, &self.input[line]),
            Ready::Auth {
                id,
                mechanism,
                authorization_id,
                authentication_id,
                password,
            } => {
                let text = |range: Range<usize>| {
                    // Checked as UTF-8 when the response was decoded.
                    std::str::from_utf8(&self.sasl[range]).unwrap_or_default()
                };
                Event::Auth {
                    decision: id,
                    mechanism,
                    authorization_id: text(authorization_id),
                    authentication_id: text(authentication_id),
                    password: text(password),
                }
            }
            Ready::DataStart(decision, chunked) => Event::DataStart { decision, chunked },
            Ready::BodyFromScratch(range) => Event::BodyChunk(&self.scratch[range]),
            Ready::BodyFromInput(range) => Event::BodyChunk(&self.input[range]),
            Ready::MessageEnd(decision, size) => Event::MessageEnd { decision, size },
            Ready::Notice(notice) => match notice {
                Notice::Aborted(reason) => Event::MessageAborted { reason },
                Notice::Reset => Event::Reset,
                Notice::StartTls(discarded) => Event::StartTls { discarded },
                Notice::BareLineEnding { in_body, rejected } => {
                    Event::BareLineEnding { in_body, rejected }
                }
                Notice::Quit => Event::Quit,
                Notice::TooManyErrors => Event::TooManyErrors,
            },
        }
    }
}

/// The event for a command line that was parsed and checked before; parsing it again is
/// cheaper than keeping borrowed results across calls.
fn command_event(decision: DecisionId, line: &[u8]) -> Event<'_> {
    match parse_command(line) {
        Ok(Command::Ehlo(name)) => Event::Helo {
            decision,
            extended: true,
            name,
        },
        Ok(Command::Helo(name)) => Event::Helo {
            decision,
            extended: false,
            name,
        },
        Ok(Command::Mail { from, params }) => Event::Mail {
            decision,
            from,
            params,
        },
        Ok(Command::Rcpt { to, params }) => Event::Rcpt {
            decision,
            to,
            params,
        },
        // Only the commands above are stored as `Ready::Command`, and parsing is deterministic.
        _ => Event::Reset,
    }
}

fn mechanism_named(name: &str) -> Option<AuthMechanism> {
    if name.eq_ignore_ascii_case("PLAIN") {
        Some(AuthMechanism::Plain)
    } else if name.eq_ignore_ascii_case("LOGIN") {
        Some(AuthMechanism::Login)
    } else {
        None
    }
}

/// Decodes a SASL response: base64, where `=` stands for an empty response (RFC 4954 §4).
fn decode_sasl(response: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if response == b"=" {
        out.clear();
        return Some(());
    }
    base64::decode(response, out)
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn too_large() -> Reply {
    Reply::fixed(
        552,
        (5, 3, 4),
        "Message size exceeds fixed maximum message size",
    )
}

fn non_ascii_address() -> Reply {
    Reply::fixed(
        553,
        (5, 6, 7),
        "Non-ASCII address requires SMTPUTF8 (RFC 6531)",
    )
}
