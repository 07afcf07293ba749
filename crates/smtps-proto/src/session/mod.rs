//! The server session: the SMTP state machine of RFC 5321 §4.1.4 with its extensions, fed bytes
//! and drained of events and reply bytes. See the crate documentation for the call order.

mod auth;
mod body;
mod commands;
mod decide;
mod output;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::address::{ForwardPath, HeloName, ReversePath};
use crate::config::SessionConfig;
use crate::data::DataDecoder;
use crate::error::Error;
use crate::params::{BodyType, MailParameters, RcptParameters};
use crate::reply::Reply;

use output::{Notice, Piece, Ready};

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
    /// A bare LF or CR under [`LineEndingPolicy::Reject`](crate::LineEndingPolicy::Reject);
    /// answered `550 5.5.2` at its end.
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
    /// Decisions outstanding, in command order: one, or with
    /// [`SessionConfig::pipelined_decisions`] a MAIL or RCPT followed by the RCPTs and DATA
    /// read ahead of its verdict (see `read_ahead`).
    pending: VecDeque<Pending>,
    next_decision: u64,
    greeting_refused: bool,
    helo: Option<bool>,
    authenticated: bool,
    txn: Option<Transaction>,
    transactions: u32,
    errors: u32,
    /// NOOP, RSET, VRFY, EXPN and HELP since the last accepted message.
    junk_commands: u64,
    /// Body octets that are not in `input` as they stand (see `read_data`).
    scratch: Vec<u8>,
    /// The body pieces of the DATA read being queued; kept for its capacity.
    pieces: Vec<Piece>,
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
    /// The host's verdict, given before an earlier decision's: applied in its turn.
    verdict: Option<(bool, Option<Reply>)>,
    /// Where the command's line starts in `input`, for a command read ahead of an earlier
    /// verdict: it is read again from there if that verdict takes its ground away.
    read_ahead: Option<usize>,
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

/// What a decision is about, for checking the reply a host gives to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    /// The connection: the greeting (RFC 5321 §4.3.2 "CONNECTION ESTABLISHMENT").
    Connect,
    /// HELO or EHLO.
    Helo,
    /// AUTH (RFC 4954).
    Auth,
    /// MAIL.
    Mail,
    /// RCPT.
    Rcpt,
    /// DATA (its `354`).
    Data,
    /// A BDAT chunk (RFC 3030).
    Bdat,
    /// The end of a message.
    MessageEnd,
}

impl DecisionKind {
    /// Whether `code` accepts this decision (RFC 5321 §4.3.2, RFC 4954 §6): `220` for the
    /// connection, `235` for AUTH, `354` for DATA, `250` or `251` for RCPT, `250` otherwise.
    #[must_use]
    pub fn accepts(self, code: u16) -> bool {
        match self {
            Self::Connect => code == 220,
            Self::Auth => code == 235,
            Self::Data => code == 354,
            Self::Rcpt => matches!(code, 250 | 251),
            Self::Helo | Self::Mail | Self::Bdat | Self::MessageEnd => code == 250,
        }
    }

    /// Whether `code` refuses this decision: 4xx or 5xx; a connection is refused with `554`
    /// (or closed with `421`), the only refusals a client expects instead of the greeting.
    #[must_use]
    pub fn refuses(self, code: u16) -> bool {
        match self {
            Self::Connect => matches!(code, 421 | 554),
            _ => (400..600).contains(&code),
        }
    }
}

impl PendingKind {
    fn decision_kind(self) -> DecisionKind {
        match self {
            Self::Connect => DecisionKind::Connect,
            Self::Helo { .. } => DecisionKind::Helo,
            Self::Auth => DecisionKind::Auth,
            Self::Mail { .. } => DecisionKind::Mail,
            Self::Rcpt => DecisionKind::Rcpt,
            Self::Data => DecisionKind::Data,
            Self::Bdat { .. } => DecisionKind::Bdat,
            Self::MessageEnd => DecisionKind::MessageEnd,
        }
    }
}

/// Input offered at once from this size on is bulk (see `ServerSession::handle_input`).
const BULK_INPUT: usize = 4 * 1024;

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
            pending: VecDeque::new(),
            next_decision: 0,
            greeting_refused: false,
            helo: None,
            authenticated: false,
            txn: None,
            transactions: 0,
            errors: 0,
            junk_commands: 0,
            scratch: Vec::new(),
            pieces: Vec::new(),
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
        // Lines read ahead of a verdict stay until it is given: they may be read again.
        let keep = self.read_ahead_start().unwrap_or(self.pos);
        if self.ready.is_empty() && keep > 0 {
            self.input.drain(..keep);
            self.pos -= keep;
            for pending in &mut self.pending {
                if let Some(start) = &mut pending.read_ahead {
                    *start -= keep;
                }
            }
        }
        let limit = self.input_limit();
        let room = limit.saturating_sub(self.input.len());
        let taken = room.min(data.len());
        if taken >= BULK_INPUT && self.input.capacity() - self.input.len() < taken {
            // A message body or a pipelined batch arrives in records of up to 16 KiB: grow to
            // the limit at once rather than doubling, which copies what is buffered each time.
            // The buffer is given back once the input is consumed (`step`).
            self.input.reserve_exact(room);
        }
        self.input.extend_from_slice(&data[..taken]);
        taken
    }

    /// The client closed its side of the connection. A message in progress is aborted
    /// ([`AbortReason::ClientLeft`]) and the session closes; input not yet processed is
    /// dropped (call it once [`ServerSession::has_event`] is false and no decision is awaited
    /// to answer what the client pipelined before it closed).
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
            self.pending.clear();
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
    /// other calls; replies still leave in command order. With
    /// [`SessionConfig::pipelined_decisions`] several decisions may be outstanding: each
    /// verdict takes effect once every earlier one has.
    ///
    /// # Errors
    /// [`Error::UnknownDecision`] if `id` is not an outstanding decision (already answered,
    /// withdrawn, or the session was closed); [`Error::InvalidVerdict`] if the reply's code is not one
    /// RFC 5321 §4.3.2 allows for the command: an `AcceptWith` is `220` for the connection,
    /// `235` for AUTH (RFC 4954 §6), `354` for DATA, `250` or `251` for RCPT, `250` for the
    /// rest; a `Reject` is 4xx or 5xx, and for the connection `554` or `421` only.
    pub fn decide(&mut self, id: DecisionId, verdict: Verdict) -> Result<(), Error> {
        let Some(index) = self
            .pending
            .iter()
            .position(|pending| pending.id == id && pending.verdict.is_none())
        else {
            return Err(Error::UnknownDecision);
        };
        let kind = self.pending[index].kind;
        let (accepted, reply) = match verdict {
            Verdict::Accept => (true, None),
            Verdict::AcceptWith(reply) if kind.decision_kind().accepts(reply.code().as_u16()) => {
                (true, Some(reply))
            }
            Verdict::Reject(reply) if kind.decision_kind().refuses(reply.code().as_u16()) => {
                (false, Some(reply))
            }
            Verdict::AcceptWith(_) | Verdict::Reject(_) => return Err(Error::InvalidVerdict),
        };
        if matches!(kind, PendingKind::Auth) {
            self.wipe_sasl();
        }
        self.pending[index].verdict = Some((accepted, reply));
        self.apply_verdicts();
        Ok(())
    }

    /// Whether `id` is a decision still awaiting the host's verdict: false once it is given,
    /// withdrawn (see [`SessionConfig::pipelined_decisions`]) or the session closed.
    #[must_use]
    pub fn awaits(&self, id: DecisionId) -> bool {
        self.pending
            .iter()
            .any(|pending| pending.id == id && pending.verdict.is_none())
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

    /// Processes buffered input as far as it goes without the host, and says whether an event
    /// is ready for [`ServerSession::poll_event`]. False means the session needs more input or
    /// awaits a decision: a transport uses it to tell a client that half-closed after
    /// pipelining (whose commands are still answered) from one that left mid-command.
    pub fn has_event(&mut self) -> bool {
        !self.ready.is_empty() || self.step()
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
        // Lines read ahead of a verdict stay buffered until it is given (see `handle_input`):
        // they take room as much as unread input does.
        let kept = self.read_ahead_start().unwrap_or(self.pos);
        !matches!(self.mode, Mode::AwaitingTls | Mode::Closed)
            && self.input.len() - kept < self.input_limit()
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
        self.txn.is_some() || !self.pending.is_empty() || self.in_body()
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
        !self.pending.is_empty()
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
        while self.ready.is_empty() {
            let progressed = match self.mode {
                _ if !self.pending.is_empty() => self.read_ahead(),
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
        if self.input.len() == self.pos
            && self.ready.is_empty()
            && self.read_ahead_start().is_none()
        {
            // Everything consumed: give back memory held for a large burst.
            self.input.clear();
            self.pos = 0;
            if self.input.capacity() > 4 * self.config.limits.command_line {
                self.input = Vec::new();
            }
        }
        !self.ready.is_empty()
    }

    // ---- helpers ------------------------------------------------------------------------

    fn await_decision(&mut self, kind: PendingKind) -> DecisionId {
        self.next_decision += 1;
        let id = DecisionId(self.next_decision);
        self.pending.push_back(Pending {
            id,
            kind,
            verdict: None,
            read_ahead: None,
        });
        id
    }

    /// Where the first command read ahead of a verdict starts in `input`.
    fn read_ahead_start(&self) -> Option<usize> {
        self.pending.iter().find_map(|pending| pending.read_ahead)
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
            || self.pending.iter().any(|pending| {
                matches!(
                    pending.kind,
                    PendingKind::MessageEnd | PendingKind::Bdat { .. }
                )
            });
        let already_aborted = self.txn.as_ref().is_some_and(|txn| txn.refusal.is_some());
        let before_greeting = self
            .pending
            .iter()
            .any(|pending| matches!(pending.kind, PendingKind::Connect));
        self.ready.clear();
        self.pending.clear();
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

    fn input_limit(&self) -> usize {
        let limits = &self.config.limits;
        limits
            .auth_line
            .max(limits.command_line)
            .max(limits.body_chunk)
    }
}
