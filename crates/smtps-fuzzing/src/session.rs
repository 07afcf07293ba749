//! The `session` target: a [`ServerSession`] driven by a list of operations — input split into
//! arbitrary chunks, host decisions given at once or held and given later, end of stream,
//! close, TLS upgrade — with the protocol invariants checked after every step.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use smtps_proto::{
    AuthMechanisms, DecisionId, Error, Event, Extensions, LineEndingPolicy, Reply, Security,
    ServerSession, SessionConfig, Verdict, VrfyPolicy,
};

use crate::command::map_tokens;
use crate::wire::{check_replies, show};

pub(crate) mod differential;

pub use differential::{Reach, differential};

/// Fragments of SMTP client dialogues: byte `i` of a [`Op::FeedTokens`] stands for
/// `SESSION_TOKENS[i]` (bytes past the table stand for themselves).
pub const SESSION_TOKENS: &[&str] = &[
    "EHLO mail.example.com\r\n",
    "EHLO smtp-out.example.net\r\n",
    "HELO [192.0.2.1]\r\n",
    "EHLO [IPv6:2001:db8::1]\r\n",
    "MAIL FROM:<alice@example.org>\r\n",
    "MAIL FROM:<>\r\n",
    "MAIL FROM:<a@example.org> SIZE=100\r\n",
    "MAIL FROM:<a@example.org> BODY=8BITMIME\r\n",
    "MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n",
    "MAIL FROM:<ü@exämple.org> SMTPUTF8\r\n",
    "MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ314159 AUTH=<>\r\n",
    "MAIL FROM:<a@example.org> REQUIRETLS\r\n",
    "MAIL FROM:<",
    "RCPT TO:<",
    "bob@example.net",
    ">\r\n",
    "RCPT TO:<bob@example.net>\r\n",
    "RCPT TO:<Postmaster>\r\n",
    "RCPT TO:<ü@exämple.org>\r\n",
    "RCPT TO:<carol@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;carol@example.net\r\n",
    "DATA\r\n",
    "BDAT 0 LAST\r\n",
    "BDAT 5\r\n",
    "BDAT 3 LAST\r\n",
    "BDAT 100\r\n",
    "BDAT 99999999999 LAST\r\n",
    "RSET\r\n",
    "NOOP\r\n",
    "QUIT\r\n",
    "VRFY postmaster\r\n",
    "EXPN staff\r\n",
    "HELP\r\n",
    "STARTTLS\r\n",
    "AUTH PLAIN\r\n",
    "AUTH PLAIN AHVzZXIAcGFzcw==\r\n",
    "AUTH LOGIN\r\n",
    "AUTH LOGIN dXNlcg==\r\n",
    "AUTH CRAM-MD5\r\n",
    "dXNlcg==\r\n",
    "cGFzcw==\r\n",
    "AHVzZXIAcGFzcw==\r\n",
    "*\r\n",
    "=\r\n",
    "Subject: hello\r\n",
    "From: Alice <alice@example.org>\r\n",
    "\r\n",
    "\n",
    "\r",
    ".",
    ".\r\n",
    "\r\n.\r\n",
    "\n.\n",
    "\n.\r\n",
    "\r\n.\n",
    "\r.\r",
    "..",
    "Hello, world.",
    " ",
    "a",
    "0",
    "12345",
    "\x00",
    "\u{7f}",
    "é",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n",
];

/// One step of a [`SessionInput`]. The byte encoding is that of [`SessionInput::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The client sends these octets (taken by the session as it can).
    Feed(Vec<u8>),
    /// The client sends the concatenation of [`SESSION_TOKENS`] picked by these octets.
    FeedTokens(Vec<u8>),
    /// The client sends `bytes` repeated `count` times (100 KB lines, 1000 RCPTs).
    FeedRepeat {
        /// Repetitions.
        count: u16,
        /// The octets repeated.
        bytes: Vec<u8>,
    },
    /// Accept the outstanding decision with the default reply.
    Accept,
    /// Accept the outstanding decision with a reply of the host's.
    AcceptWith {
        /// Picks the code (some codes are invalid for some decisions, which is checked).
        code: u8,
        /// Reply text (may hold CR/LF, which must never reach the wire).
        text: Vec<u8>,
    },
    /// Refuse the outstanding decision.
    Reject {
        /// Picks the code; 421 closes the session.
        code: u8,
        /// Picks the enhanced status: none, `x.7.1`, `x.0.0`.
        status: u8,
        /// Reply text.
        text: Vec<u8>,
    },
    /// Only drain events and output: an outstanding decision stays held (deferred).
    Defer,
    /// The client closed its side.
    Eof,
    /// The host closes the session with `421`.
    Close,
    /// The transport finished the TLS handshake.
    TlsEstablished,
    /// Answer a decision already answered (or the wrong one): must be refused.
    Stale,
    /// Accept the next `n` decisions as soon as they come.
    AutoAccept(u8),
    /// The host cannot take the message in progress (`refuse_message`): now if a body is being
    /// read, else at the next body chunk.
    RefuseMessage {
        /// Picks the code: 452, 451, 552, 554.
        code: u8,
    },
}

/// What the `session` target reads: a configuration header (4 octets) and operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInput {
    /// The configuration header; see [`SessionInput::config`].
    pub header: [u8; 4],
    /// The operations, in order.
    pub ops: Vec<Op>,
}

const OP_COUNT: u8 = 13;
const ACCEPT_CODES: [u16; 6] = [250, 251, 220, 235, 354, 334];
const REJECT_CODES: [u16; 12] = [421, 450, 451, 452, 454, 550, 552, 553, 554, 535, 530, 250];

impl<'a> Arbitrary<'a> for SessionInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut header = [0; 4];
        for byte in &mut header {
            *byte = u.arbitrary()?;
        }
        let mut ops = Vec::new();
        while !u.is_empty() {
            let op: u8 = u.arbitrary()?;
            ops.push(match op % OP_COUNT {
                0 => {
                    let len = read_u16(u)?;
                    Op::Feed(take(u, usize::from(len))?)
                }
                1 => {
                    let len: u8 = u.arbitrary()?;
                    Op::FeedTokens(take(u, usize::from(len))?)
                }
                2 => {
                    let count = read_u16(u)?;
                    let len: u8 = u.arbitrary()?;
                    Op::FeedRepeat {
                        count,
                        bytes: take(u, usize::from(len))?,
                    }
                }
                3 => Op::Accept,
                4 => {
                    let code = u.arbitrary()?;
                    let len: u8 = u.arbitrary()?;
                    Op::AcceptWith {
                        code,
                        text: take(u, usize::from(len))?,
                    }
                }
                5 => {
                    let code = u.arbitrary()?;
                    let status = u.arbitrary()?;
                    let len: u8 = u.arbitrary()?;
                    Op::Reject {
                        code,
                        status,
                        text: take(u, usize::from(len))?,
                    }
                }
                6 => Op::Defer,
                7 => Op::Eof,
                8 => Op::Close,
                9 => Op::TlsEstablished,
                10 => Op::Stale,
                11 => Op::AutoAccept(u.arbitrary()?),
                _ => Op::RefuseMessage {
                    code: u.arbitrary()?,
                },
            });
        }
        Ok(Self { header, ops })
    }
}

fn read_u16(u: &mut Unstructured<'_>) -> arbitrary::Result<u16> {
    let lo: u8 = u.arbitrary()?;
    let hi: u8 = u.arbitrary()?;
    Ok(u16::from_le_bytes([lo, hi]))
}

fn take(u: &mut Unstructured<'_>, len: usize) -> arbitrary::Result<Vec<u8>> {
    let len = len.min(u.len());
    Ok(u.bytes(len)?.to_vec())
}

impl SessionInput {
    /// Serialises the input so that `Arbitrary` reads it back unchanged (for seed files).
    /// Lengths longer than their field (u8 or u16) are cut.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.to_vec();
        for op in &self.ops {
            match op {
                Op::Feed(bytes) => {
                    let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
                    out.push(0);
                    out.extend_from_slice(&len16(bytes.len()));
                    out.extend_from_slice(bytes);
                }
                Op::FeedTokens(bytes) => {
                    out.push(1);
                    push_short(&mut out, bytes);
                }
                Op::FeedRepeat { count, bytes } => {
                    out.push(2);
                    out.extend_from_slice(&count.to_le_bytes());
                    push_short(&mut out, bytes);
                }
                Op::Accept => out.push(3),
                Op::AcceptWith { code, text } => {
                    out.extend_from_slice(&[4, *code]);
                    push_short(&mut out, text);
                }
                Op::Reject { code, status, text } => {
                    out.extend_from_slice(&[5, *code, *status]);
                    push_short(&mut out, text);
                }
                Op::Defer => out.push(6),
                Op::Eof => out.push(7),
                Op::Close => out.push(8),
                Op::TlsEstablished => out.push(9),
                Op::Stale => out.push(10),
                Op::AutoAccept(n) => out.extend_from_slice(&[11, *n]),
                Op::RefuseMessage { code } => out.extend_from_slice(&[12, *code]),
            }
        }
        out
    }

    /// The session configuration and security the header selects.
    ///
    /// Octet 0: bits 0–1 security (StartTlsAvailable, Tls, Plaintext, StartTlsAvailable),
    /// bit 2 reject bare line endings in commands, 3 in bodies, 4 require TLS for MAIL,
    /// 5 require AUTH for MAIL, 6 allow plaintext AUTH, 7 VRFY disabled.
    /// Octet 1: bits 0–1 recipients (100, 1, 2, 5), 2–3 message size (25 MiB, 64, 1000,
    /// 100000), 4–5 text line (1000, 16, none, 100), 6–7 body chunk (64 KiB, 1, 7, 512).
    /// Octet 2: bits 0–1 errors (10, 1, 3, 100), 2–3 transactions (none, 1, 2, none with an
    /// input buffer of a few lines: command and AUTH lines of 80 octets, body chunks of at most
    /// 80, so that read-ahead lines fill it), 4 drop CHUNKING, 5 drop ENHANCEDSTATUSCODES,
    /// 6 drop SIZE and 8BITMIME, 7 add REQUIRETLS.
    /// Octet 3: bits 0–1 AUTH mechanisms (both, PLAIN, LOGIN, both), 2 drop AUTH, 3 drop
    /// STARTTLS, 4 drop SMTPUTF8, 5 drop DSN, 6 drop PIPELINING, 7 a 600-octet host name.
    #[must_use]
    pub fn config(&self) -> (SessionConfig, Security) {
        let [a, b, c, d] = self.header;
        let hostname = if d & 0x80 != 0 {
            format!("{}.example", "h".repeat(600))
        } else {
            "mx.example.org".to_owned()
        };
        let mut config = SessionConfig::new(hostname);
        let security = match a & 3 {
            1 => Security::Tls,
            2 => Security::Plaintext,
            _ => Security::StartTlsAvailable,
        };
        let policy = &mut config.policy;
        if a & 4 != 0 {
            policy.bare_line_ending_in_commands = LineEndingPolicy::Reject;
        }
        if a & 8 != 0 {
            policy.bare_line_ending_in_body = LineEndingPolicy::Reject;
        }
        policy.require_tls_for_mail = a & 0x10 != 0;
        policy.require_auth_for_mail = a & 0x20 != 0;
        policy.danger_allow_plaintext_auth = a & 0x40 != 0;
        if a & 0x80 != 0 {
            policy.vrfy = VrfyPolicy::Disabled;
        }
        let limits = &mut config.limits;
        limits.recipients = [100, 1, 2, 5][usize::from(b & 3)];
        limits.message_size = [25 * 1024 * 1024, 64, 1000, 100_000][usize::from((b >> 2) & 3)];
        limits.text_line = [Some(1000), Some(16), None, Some(100)][usize::from((b >> 4) & 3)];
        limits.body_chunk = [64 * 1024, 1, 7, 512][usize::from(b >> 6)];
        limits.errors = [10, 1, 3, 100][usize::from(c & 3)];
        limits.transactions = [None, Some(1), Some(2), None][usize::from((c >> 2) & 3)];
        if (c >> 2) & 3 == 3 {
            limits.command_line = 80;
            limits.auth_line = 80;
            limits.body_chunk = limits.body_chunk.min(80);
        }
        let mut extensions = config.extensions;
        let drops = [
            (c & 0x10, Extensions::CHUNKING),
            (c & 0x20, Extensions::ENHANCED_STATUS_CODES),
            (c & 0x40, Extensions::SIZE | Extensions::EIGHT_BIT_MIME),
            (d & 0x04, Extensions::AUTH),
            (d & 0x08, Extensions::START_TLS),
            (d & 0x10, Extensions::SMTP_UTF8),
            (d & 0x20, Extensions::DSN),
            (d & 0x40, Extensions::PIPELINING),
        ];
        for (bit, ext) in drops {
            if bit != 0 {
                extensions = extensions.without(ext);
            }
        }
        if c & 0x80 != 0 {
            extensions |= Extensions::REQUIRE_TLS;
        }
        config.extensions = extensions;
        config.auth_mechanisms = match d & 3 {
            1 => AuthMechanisms::PLAIN,
            2 => AuthMechanisms::LOGIN,
            _ => AuthMechanisms::PLAIN | AuthMechanisms::LOGIN,
        };
        (config, security)
    }
}

fn len16(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes()
}

fn push_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(usize::from(u8::MAX))];
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}

/// Runs a [`SessionInput`] and checks, after every step:
///
/// - every reply line is a valid 3-digit code + `' '`/`'-'`, ends in CRLF, fits 512 octets,
///   and multi-line replies are well-formed ([`check_replies`]);
/// - events come in a legal order: `Connect` first; nothing but QUIT is acted on after a
///   refused greeting; `Mail` needs an accepted HELO/EHLO and no transaction; `Rcpt` and
///   `DataStart` need a transaction; `BodyChunk` only between an accepted `DataStart` and
///   `MessageEnd`/`MessageAborted`; `MessageEnd`'s size is the sum of its chunks; `Helo` and
///   `StartTls` come with no transaction left open; a started message ends with exactly one of
///   `MessageEnd`, `MessageAborted` or `Reset` before the session goes quiet;
/// - at most one decision is outstanding; `decide` succeeds exactly when the model says so;
/// - nothing comes after `Quit` or `TooManyErrors`, and after end of stream or `close` only
///   the one `MessageAborted` of a message in progress; a final `421` leaves the session closed
///   and silent;
/// - `StartTls { discarded }` equals the octets taken after the `STARTTLS` line; until the
///   upgrade nothing is processed, and after it no pre-TLS octet is;
/// - liveness: with no decision outstanding and input waiting, the session takes input.
///
/// Then the same client octets go through [`differential()`]: a session with
/// [`SessionConfig::pipelined_decisions`] must answer them byte for byte as one deciding one
/// command at a time does.
///
/// # Panics
/// When a check fails.
pub fn session(data: &[u8]) {
    let Ok(input) = SessionInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    run(&input);
    let reach = differential(&input);
    if trace() {
        eprintln!("differential {reach:?}");
    }
}

/// Runs one input (also used by the seed writer's self-check).
pub fn run(input: &SessionInput) {
    let (config, security) = input.config();
    let mut host = Host::new(config, security);
    for op in &input.ops {
        host.apply(op);
    }
    host.finish();
}

/// Total octets one input may feed, so a run stays fast.
const FEED_BUDGET: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    Helo { extended: bool },
    Auth,
    Mail,
    Rcpt,
    Data { chunked: bool },
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// No message body under way.
    None,
    /// A DATA/BDAT start awaits the host.
    Deciding { chunked: bool },
    /// Body octets may arrive.
    Open { chunked: bool },
    /// `MessageEnd` was given and awaits the host.
    Ending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    /// The session runs.
    No,
    /// After `Quit` or `TooManyErrors`: no more events at all.
    Finished,
    /// After end of stream, `close` or a `421` refusal: at most one `MessageAborted`.
    Shut { aborted: bool },
}

struct Host {
    session: ServerSession,
    /// Octets the client sent that the session has not taken yet.
    client: Vec<u8>,
    /// Octets the session took since the connection began or since the TLS upgrade.
    stream: Vec<u8>,
    fed: usize,
    pending: Option<(DecisionId, Kind)>,
    answered: Option<DecisionId>,
    auto_accept: u8,
    connected: bool,
    greeting_refused: bool,
    helo: Option<bool>,
    txn: bool,
    body: Body,
    body_size: u64,
    awaiting_tls: bool,
    over: Over,
    /// A final `421` went out: nothing may follow.
    said_421: bool,
    /// `refuse_message` with this reply at the next body chunk.
    refuse_at_chunk: Option<Reply>,
}

impl Host {
    fn new(config: SessionConfig, security: Security) -> Self {
        Self {
            session: ServerSession::new(Arc::new(config), security),
            client: Vec::new(),
            stream: Vec::new(),
            fed: 0,
            pending: None,
            answered: None,
            auto_accept: 0,
            connected: false,
            greeting_refused: false,
            helo: None,
            txn: false,
            body: Body::None,
            body_size: 0,
            awaiting_tls: false,
            over: Over::No,
            said_421: false,
            refuse_at_chunk: None,
        }
    }

    fn apply(&mut self, op: &Op) {
        if trace() {
            eprintln!("op {op:?}");
        }
        match op {
            Op::Feed(bytes) => self.feed(bytes),
            Op::FeedTokens(bytes) => self.feed(&map_tokens(bytes, SESSION_TOKENS)),
            Op::FeedRepeat { count, bytes } => {
                let total = bytes.len() * usize::from(*count);
                if total <= FEED_BUDGET {
                    self.feed(&bytes.repeat(usize::from(*count)));
                }
            }
            Op::Accept => self.decide_pending(|_| Verdict::Accept),
            Op::AcceptWith { code, text } => {
                let code = ACCEPT_CODES[usize::from(*code) % ACCEPT_CODES.len()];
                let text = host_text(text);
                self.decide_pending(|_| {
                    Verdict::AcceptWith(Reply::from_parts(code, None, &text).expect("valid code"))
                });
            }
            Op::Reject { code, status, text } => {
                let code = REJECT_CODES[usize::from(*code) % REJECT_CODES.len()];
                let status = match status % 3 {
                    0 => None,
                    1 => Some(format!("{}.7.1", code / 100)),
                    _ => Some(format!("{}.0.0", code / 100)),
                };
                let text = host_text(text);
                let reply = Reply::from_parts(code, status.as_deref(), &text).expect("valid code");
                self.decide_pending(|_| Verdict::Reject(reply.clone()));
            }
            Op::Defer => self.pump(),
            Op::Eof => {
                self.session.handle_eof();
                self.shut();
            }
            Op::Close => {
                let reply = Reply::from_parts(421, Some("4.4.2"), "Timeout, closing connection")
                    .expect("valid reply");
                let was_closed = self.session.is_closed();
                self.session.close(&reply);
                self.shut();
                if !was_closed {
                    let mut out = Vec::new();
                    self.session.poll_transmit(&mut out);
                    let replies = check_replies(&out);
                    assert_eq!(
                        replies.last().map(|r| r.code),
                        Some(421),
                        "close did not end the output with its 421: {:?}",
                        show(&out)
                    );
                    self.said_421 = true;
                }
            }
            Op::TlsEstablished => {
                let result = self.session.handle_tls_established();
                if self.awaiting_tls {
                    assert_eq!(result, Ok(()), "TLS upgrade after StartTls refused");
                    self.awaiting_tls = false;
                    self.stream.clear();
                    self.helo = None;
                    assert!(
                        self.session.poll_event().is_none(),
                        "an event right after the TLS upgrade: pre-TLS input was processed"
                    );
                    assert!(
                        !self.session.has_output(),
                        "output right after the TLS upgrade: pre-TLS input was processed"
                    );
                } else {
                    assert_eq!(
                        result,
                        Err(Error::NotAwaitingTls),
                        "handle_tls_established accepted without STARTTLS"
                    );
                }
            }
            Op::Stale => {
                if let Some(id) = self.answered {
                    assert_eq!(
                        self.session.decide(id, Verdict::Accept),
                        Err(Error::UnknownDecision),
                        "an answered decision was accepted again"
                    );
                }
            }
            Op::AutoAccept(n) => {
                self.auto_accept = *n;
                if self.auto_accept > 0 {
                    self.decide_pending(|_| Verdict::Accept);
                }
            }
            Op::RefuseMessage { code } => {
                let code = [452, 451, 552, 554][usize::from(code % 4)];
                let reply =
                    Reply::from_parts(code, None, "h cannot take the message").expect("valid code");
                if self.session.in_body() {
                    self.refuse_message(reply);
                } else {
                    self.refuse_at_chunk = Some(reply);
                }
            }
        }
        self.pump();
    }

    /// The client sends `bytes`; the session takes what it can now.
    fn feed(&mut self, bytes: &[u8]) {
        if self.fed + bytes.len() > FEED_BUDGET {
            return;
        }
        self.fed += bytes.len();
        self.client.extend_from_slice(bytes);
        self.pump();
    }

    /// Offers the client's octets, drains events and output, until nothing moves.
    fn pump(&mut self) {
        // Draining may free room without producing an event (a skipped over-long line), so
        // stop only after two rounds in a row in which nothing was taken and nothing happened.
        let mut idle = 0;
        loop {
            let offered = self.client.len();
            let taken = self.session.handle_input(&self.client);
            assert!(taken <= offered, "handle_input took more than offered");
            if self.awaiting_tls || self.over != Over::No {
                // Swallowed: after STARTTLS nothing may be read in plaintext; after close
                // nothing matters.
                assert_eq!(
                    taken, offered,
                    "a session awaiting TLS or closed refused input"
                );
            } else {
                self.stream.extend_from_slice(&self.client[..taken]);
            }
            self.client.drain(..taken);
            let events = self.drain();
            self.transmit();
            if taken == 0 && events == 0 {
                idle += 1;
                if idle == 2 {
                    break;
                }
            } else {
                idle = 0;
            }
        }
        if self.pending.is_none()
            && !self.awaiting_tls
            && self.over == Over::No
            && !self.client.is_empty()
        {
            panic!(
                "session stalled: no decision outstanding, {} octets waiting, none taken",
                self.client.len()
            );
        }
    }

    /// Polls every event, checking each against the model. Returns how many.
    fn drain(&mut self) -> usize {
        let mut count = 0;
        loop {
            let mut auto = None;
            let Some(event) = self.session.poll_event() else {
                break;
            };
            count += 1;
            if trace() {
                eprintln!("event {event:?}");
            }
            let event = Seen::from(&event);
            self.check_event(&event);
            if let Some(id) = event.decision() {
                assert!(
                    self.pending.is_none(),
                    "a second decision while one is outstanding"
                );
                self.pending = Some((id, event.kind()));
                if self.auto_accept > 0 {
                    auto = Some(id);
                }
            }
            if auto.is_some() {
                self.auto_accept -= 1;
                self.decide(|_| Verdict::Accept, false);
            }
            if matches!(*event, Seen::Chunk(_))
                && let Some(reply) = self.refuse_at_chunk.take()
            {
                self.refuse_message(reply);
            }
        }
        count
    }

    fn check_event(&mut self, event: &Seen) {
        match self.over {
            Over::Finished => panic!("event {event:?} after Quit/TooManyErrors"),
            Over::Shut { aborted } => {
                assert!(
                    matches!(event, Seen::Aborted) && !aborted,
                    "event {event:?} after the session was shut"
                );
                self.over = Over::Shut { aborted: true };
                self.check_aborted();
                return;
            }
            Over::No => {}
        }
        assert!(
            !self.awaiting_tls,
            "event {event:?} while awaiting the TLS upgrade: plaintext after STARTTLS processed"
        );
        if !self.connected {
            assert_eq!(*event, Seen::Decision(Kind::Connect), "first event");
        }
        let needs_greeting = !matches!(
            event,
            Seen::Decision(Kind::Connect) | Seen::Quit | Seen::TooManyErrors | Seen::Bare
        );
        if needs_greeting {
            assert!(
                !self.greeting_refused,
                "event {event:?} after the greeting was refused"
            );
        }
        match *event {
            Seen::Decision(Kind::Connect) => {
                assert!(!self.connected, "second Connect");
                self.connected = true;
            }
            Seen::Decision(Kind::Helo { .. }) => {
                assert!(!self.txn, "Helo with a transaction open (no Reset first)");
                assert_eq!(self.body, Body::None, "Helo during a message");
            }
            Seen::Decision(Kind::Auth) => {
                assert_eq!(self.helo, Some(true), "Auth without an accepted EHLO");
                assert!(!self.txn, "Auth during a transaction");
            }
            Seen::Decision(Kind::Mail) => {
                assert!(self.helo.is_some(), "Mail without an accepted HELO/EHLO");
                assert!(!self.txn, "Mail inside a transaction");
            }
            Seen::Decision(Kind::Rcpt) => assert!(self.txn, "Rcpt outside a transaction"),
            Seen::Decision(Kind::Data { chunked }) => {
                assert!(self.txn, "DataStart outside a transaction");
                assert_eq!(self.body, Body::None, "DataStart during a message");
                self.body = Body::Deciding { chunked };
                self.body_size = 0;
            }
            Seen::Chunk(len) => {
                assert!(
                    matches!(self.body, Body::Open { .. }),
                    "BodyChunk outside DataStart..MessageEnd/MessageAborted"
                );
                assert!(len > 0, "empty BodyChunk");
                self.body_size += len as u64;
            }
            Seen::Decision(Kind::End) => unreachable!("MessageEnd is Seen::EndOf"),
            Seen::EndOf { size } => {
                assert!(
                    matches!(self.body, Body::Open { .. }),
                    "MessageEnd without an open body"
                );
                assert_eq!(size, self.body_size, "MessageEnd size != sum of chunks");
                self.body = Body::Ending;
            }
            Seen::Aborted => self.check_aborted(),
            Seen::Reset => {
                assert!(
                    !matches!(self.body, Body::Open { chunked: false } | Body::Ending),
                    "Reset in the middle of a DATA message"
                );
                self.body = Body::None;
                self.txn = false;
            }
            Seen::StartTls { discarded } => {
                assert!(!self.txn, "StartTls with a transaction open");
                assert_eq!(self.body, Body::None, "StartTls during a message");
                self.check_start_tls(discarded);
            }
            Seen::Bare => {}
            Seen::Quit | Seen::TooManyErrors => {
                assert!(
                    self.body == Body::None,
                    "{event:?} leaves a started message ({:?}) without MessageAborted or Reset",
                    self.body
                );
                self.over = Over::Finished;
                self.body = Body::None;
                self.txn = false;
            }
        }
    }

    /// The host refuses the message in progress: no chunk, `MessageEnd` or `MessageAborted`
    /// of it may follow. It takes effect while the body is being read, or when a DATA body was
    /// read to its end but its `MessageEnd` is not polled yet; between BDAT chunks it does
    /// nothing.
    fn refuse_message(&mut self, reply: Reply) {
        let effect = match self.body {
            Body::Open { chunked } => self.session.in_body() || !chunked,
            _ => false,
        };
        self.session.refuse_message(reply);
        if effect {
            self.body = Body::None;
            self.txn = false;
        }
    }

    fn check_aborted(&mut self) {
        assert!(
            matches!(
                self.body,
                Body::Open { .. } | Body::Ending | Body::Deciding { chunked: true }
            ),
            "MessageAborted with no message under way ({:?})",
            self.body
        );
        self.body = Body::None;
        self.txn = false;
    }

    /// The session says it discarded `discarded` octets after the STARTTLS line: the octets it
    /// took must end in `STARTTLS` + line ending exactly that far from the end. The caller
    /// drops what it has not offered yet (RFC 3207 §4.2).
    fn check_start_tls(&mut self, discarded: usize) {
        assert!(
            discarded <= self.stream.len(),
            "StartTls discarded {discarded} octets but only {} were taken",
            self.stream.len()
        );
        let end = self.stream.len() - discarded;
        let head = &self.stream[..end];
        let line = head
            .strip_suffix(b"\r\n")
            .or_else(|| head.strip_suffix(b"\n"))
            .unwrap_or_else(|| panic!("StartTls boundary not after a line: {:?}", show(head)));
        let start = line.len().saturating_sub(8);
        let trimmed = line.trim_ascii_end();
        let tail_start = trimmed.len().saturating_sub(8);
        assert!(
            trimmed[tail_start..].eq_ignore_ascii_case(b"STARTTLS"),
            "StartTls boundary ({discarded} discarded) is not after a STARTTLS line: {:?}",
            show(&line[start.min(tail_start)..])
        );
        self.client.clear();
        self.awaiting_tls = true;
    }

    /// Polls output and checks it.
    fn transmit(&mut self) {
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        if out.is_empty() {
            if self.said_421 {
                assert!(self.session.is_closed(), "still open after a final 421");
            }
            return;
        }
        if trace() {
            eprintln!("output {:?}", show(&out));
        }
        assert!(!self.said_421, "output after a final 421: {:?}", show(&out));
        let replies = check_replies(&out);
        if replies.last().is_some_and(|r| r.code == 421) {
            self.said_421 = true;
            assert!(
                self.session.is_closed(),
                "a 421 reply went out but the session stays open: {:?}",
                show(&out)
            );
        }
    }

    /// Answers the outstanding decision, if any, checking the result against the model.
    fn decide_pending(&mut self, verdict: impl FnOnce(Kind) -> Verdict) {
        self.decide(verdict, true);
    }

    fn decide(&mut self, verdict: impl FnOnce(Kind) -> Verdict, pump: bool) {
        let Some((id, kind)) = self.pending else {
            return;
        };
        let verdict = verdict(kind);
        // RFC 5321 §4.3.2: the codes each command may be answered with.
        let valid = match &verdict {
            Verdict::AcceptWith(reply) => {
                let code = reply.code().as_u16();
                match kind {
                    Kind::Connect => code == 220,
                    Kind::Auth => code == 235,
                    Kind::Data { chunked: false } => code == 354,
                    Kind::Rcpt => code == 250 || code == 251,
                    _ => code == 250,
                }
            }
            Verdict::Reject(reply) => {
                let code = reply.code().as_u16();
                if kind == Kind::Connect {
                    code == 421 || code == 554
                } else {
                    reply.code().is_negative()
                }
            }
            _ => true,
        };
        let accepted = !matches!(verdict, Verdict::Reject(_));
        let closes = matches!(&verdict, Verdict::Reject(r) if r.code().as_u16() == 421);
        let refused_connect_554 = kind == Kind::Connect
            && matches!(&verdict, Verdict::Reject(r) if r.code().as_u16() != 421);
        let result = self.session.decide(id, verdict);
        if !valid {
            assert_eq!(result, Err(Error::InvalidVerdict), "invalid verdict taken");
            return;
        }
        assert_eq!(
            result,
            Ok(()),
            "valid verdict for the outstanding decision refused"
        );
        self.pending = None;
        self.answered = Some(id);
        match (kind, accepted) {
            (Kind::Helo { extended }, true) => self.helo = Some(extended),
            (Kind::Mail, true) => self.txn = true,
            (Kind::Data { chunked }, true) => self.body = Body::Open { chunked },
            (Kind::Data { chunked: false }, false) => self.body = Body::None,
            // A refused BDAT fails the whole transaction (RFC 3030 §2), without a Reset event;
            // a refused DATA leaves it open for another try.
            (Kind::Data { chunked: true }, false) | (Kind::End, _) => {
                self.body = Body::None;
                self.txn = false;
            }
            _ => {}
        }
        if refused_connect_554 {
            self.greeting_refused = true;
        }
        if closes {
            self.shut();
        }
        if pump {
            self.pump();
        }
    }

    /// The session was shut (end of stream, close, a 421): only the abort of a message in
    /// progress may follow, and it must.
    fn shut(&mut self) {
        if self.over == Over::No {
            self.pending = None;
            self.awaiting_tls = false;
            let must_abort = matches!(self.body, Body::Open { .. } | Body::Ending);
            self.over = Over::Shut { aborted: false };
            self.drain();
            assert!(
                !must_abort || self.over != (Over::Shut { aborted: false }),
                "a started message ({:?}) was neither ended nor aborted at shutdown",
                self.body
            );
            self.body = Body::None;
        }
    }

    /// After the last operation: accept everything, feed what is left, then end the stream.
    fn finish(&mut self) {
        self.auto_accept = u8::MAX;
        for _ in 0..64 {
            if self.pending.is_none() {
                break;
            }
            self.decide_pending(|_| Verdict::Accept);
        }
        self.session.handle_eof();
        self.shut();
        self.transmit();
        assert!(self.session.is_closed(), "not closed after end of stream");
        let taken = self.session.handle_input(b"NOOP\r\n");
        assert_eq!(taken, 6, "closed session refused input");
        assert!(self.session.poll_event().is_none(), "event after close");
        assert!(!self.session.has_output(), "output after close");
    }
}

/// An event without its borrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Decision(Kind),
    EndOf { size: u64 },
    Chunk(usize),
    Aborted,
    Reset,
    StartTls { discarded: usize },
    Bare,
    Quit,
    TooManyErrors,
}

struct SeenWithId {
    seen: Seen,
    id: Option<DecisionId>,
}

impl Seen {
    fn from(event: &Event<'_>) -> SeenWithId {
        let (seen, id) = match *event {
            Event::Connect { decision } => (Self::Decision(Kind::Connect), Some(decision)),
            Event::Helo {
                decision, extended, ..
            } => (Self::Decision(Kind::Helo { extended }), Some(decision)),
            Event::Auth { decision, .. } => (Self::Decision(Kind::Auth), Some(decision)),
            Event::Mail { decision, .. } => (Self::Decision(Kind::Mail), Some(decision)),
            Event::Rcpt { decision, .. } => (Self::Decision(Kind::Rcpt), Some(decision)),
            Event::DataStart { decision, chunked } => {
                (Self::Decision(Kind::Data { chunked }), Some(decision))
            }
            Event::BodyChunk(chunk) => (Self::Chunk(chunk.len()), None),
            Event::MessageEnd { decision, size } => (Self::EndOf { size }, Some(decision)),
            Event::MessageAborted { .. } => (Self::Aborted, None),
            Event::Reset => (Self::Reset, None),
            Event::StartTls { discarded } => (Self::StartTls { discarded }, None),
            Event::BareLineEnding { .. } => (Self::Bare, None),
            Event::Quit => (Self::Quit, None),
            Event::TooManyErrors => (Self::TooManyErrors, None),
            _ => panic!("unknown event {event:?}"),
        };
        SeenWithId { seen, id }
    }
}

impl std::ops::Deref for SeenWithId {
    type Target = Seen;
    fn deref(&self) -> &Seen {
        &self.seen
    }
}

impl SeenWithId {
    fn decision(&self) -> Option<DecisionId> {
        self.id
    }

    fn kind(&self) -> Kind {
        match self.seen {
            Seen::Decision(kind) => kind,
            _ => Kind::End,
        }
    }
}

/// Whether `SMTPS_FUZZ_TRACE` is set: then every event, operation and output batch is
/// printed to stderr (for debugging a finding with the `replay` example).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SMTPS_FUZZ_TRACE").is_some())
}

/// Host reply text from fuzz octets; never starts with a digit, so that the wire check can tell
/// an enhanced status from text.
fn host_text(bytes: &[u8]) -> String {
    format!("h {}", String::from_utf8_lossy(bytes))
}
