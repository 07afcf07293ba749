//! Command lines: reading a line (a command, or a SASL response handed on to `auth`), checking
//! a command against the session's state and what was advertised, and acting on it. Commands
//! that need the host wait for a decision; the rest are answered here.

use std::ops::Range;

use memchr::memchr;

use super::auth::mechanism_named;
use super::output::{Notice, Ready};
use super::{AbortReason, Mode, PendingKind, Security, ServerSession};
use crate::address::{ForwardPath, ReversePath};
use crate::command::{Command, parse_command};
use crate::config::{AuthMechanisms, Extensions, LineEndingPolicy, VrfyPolicy};
use crate::params::{BodyType, MailParameters, RcptParameters};
use crate::reply::{EnhancedStatus, Reply, ReplyCode};

impl ServerSession {
    pub(super) fn read_line(&mut self) -> bool {
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

    pub(super) fn skip_long_line(&mut self, sasl: bool) -> bool {
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
                let reply = Reply::fixed(
                    421,
                    (4, 7, 0),
                    "Too many commands without mail, closing connection",
                );
                self.shut(AbortReason::Closed, Some(&reply));
                // After `shut`, which drops what was queued: the host must hear why.
                self.notice(Notice::TooManyErrors);
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
                match check_rcpt(self.txn_view().as_ref(), self, &params, ascii) {
                    Err(reply) => self.protocol_error(&reply),
                    Ok(()) => {
                        let id = self.await_decision(PendingKind::Rcpt);
                        self.ready.push_back(Ready::Command(id, line));
                    }
                }
            }
            Command::Data => match check_data(self.txn_view().as_ref(), false) {
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

    /// With [`SessionConfig::pipelined_decisions`](crate::SessionConfig::pipelined_decisions),
    /// while a MAIL or RCPT awaits its verdict: takes the next pipelined line if it is a RCPT or
    /// a DATA that would be taken were every outstanding decision accepted, and hands it to the
    /// host at once. Anything else — another command, a line the checks would refuse, a bare
    /// line ending (its notice must not come twice if the line is read again) — waits for the
    /// verdicts and is then read as usual.
    pub(super) fn read_ahead(&mut self) -> bool {
        if !self.config.pipelined_decisions
            || !matches!(self.mode, Mode::Commands)
            || !self.pending.back().is_some_and(|pending| {
                matches!(pending.kind, PendingKind::Mail { .. } | PendingKind::Rcpt)
            })
        {
            return false;
        }
        let buf = &self.input[self.pos..];
        let Some(lf) = memchr(
            b'\n',
            &buf[..buf.len().min(self.config.limits.command_line)],
        ) else {
            return false;
        };
        if lf == 0 || buf[lf - 1] != b'\r' || memchr(b'\r', &buf[..lf - 1]).is_some() {
            return false;
        }
        let line = self.pos..self.pos + lf - 1;
        let Some(txn) = self.tentative_txn() else {
            return false;
        };
        let kind = match parse_command(&self.input[line.clone()]) {
            Ok(Command::Rcpt { to, params }) => {
                let ascii = match to {
                    ForwardPath::Postmaster => true,
                    ForwardPath::Mailbox(mailbox) => mailbox.is_ascii(),
                };
                if check_rcpt(Some(&txn), self, &params, ascii).is_err() {
                    return false;
                }
                PendingKind::Rcpt
            }
            Ok(Command::Data) if check_data(Some(&txn), false).is_ok() => PendingKind::Data,
            _ => return false,
        };
        let start = self.pos;
        self.pos += lf + 1;
        let id = self.await_decision(kind);
        if let Some(pending) = self.pending.back_mut() {
            pending.read_ahead = Some(start);
        }
        self.ready.push_back(match kind {
            PendingKind::Data => Ready::DataStart(id, false),
            _ => Ready::Command(id, line),
        });
        true
    }

    /// The transaction as it stands.
    pub(super) fn txn_view(&self) -> Option<TxnView> {
        self.txn.as_ref().map(|txn| TxnView {
            body: txn.body,
            smtputf8: txn.smtputf8,
            bdat_started: txn.bdat_started,
            accepted_rcpts: txn.accepted_rcpts,
            attempted_rcpts: txn.attempted_rcpts,
        })
    }

    /// The transaction as it would stand were every outstanding MAIL and RCPT accepted.
    fn tentative_txn(&self) -> Option<TxnView> {
        let mut txn = self
            .txn_view()
            .or_else(|| match self.pending.front()?.kind {
                PendingKind::Mail { body, smtputf8 } => Some(TxnView {
                    body,
                    smtputf8,
                    bdat_started: false,
                    accepted_rcpts: 0,
                    attempted_rcpts: 0,
                }),
                _ => None,
            })?;
        let rcpts = self
            .pending
            .iter()
            .filter(|pending| matches!(pending.kind, PendingKind::Rcpt))
            .count();
        txn.accepted_rcpts += rcpts;
        txn.attempted_rcpts += rcpts;
        Some(txn)
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

    fn reset_transaction(&mut self) {
        if self.txn.take().is_some() {
            self.notice(Notice::Reset);
        }
    }

    /// Whether `ext` was advertised in this session's EHLO reply.
    pub(super) fn advertised(&self, ext: Extensions) -> bool {
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
    pub(super) fn ehlo_reply(&self) -> Reply {
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
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn non_ascii_address() -> Reply {
    Reply::fixed(
        553,
        (5, 6, 7),
        "Non-ASCII address requires SMTPUTF8 (RFC 6531)",
    )
}

/// What the checks of RCPT and DATA need of the transaction: the one in progress, or one
/// assumed while MAIL and RCPT verdicts are outstanding (`ServerSession::read_ahead`).
#[derive(Debug, Clone, Copy)]
pub(super) struct TxnView {
    body: BodyType,
    smtputf8: bool,
    bdat_started: bool,
    accepted_rcpts: usize,
    attempted_rcpts: usize,
}

fn check_rcpt(
    txn: Option<&TxnView>,
    session: &ServerSession,
    params: &RcptParameters<'_>,
    ascii: bool,
) -> Result<(), Reply> {
    let Some(txn) = txn else {
        return Err(Reply::fixed(503, (5, 5, 1), "Need MAIL command"));
    };
    if (params.notify.is_some() || params.orcpt.is_some()) && !session.advertised(Extensions::DSN) {
        return Err(Reply::fixed(555, (5, 5, 4), "Parameter not advertised"));
    }
    if !ascii && !txn.smtputf8 {
        return Err(non_ascii_address());
    }
    if txn.accepted_rcpts >= session.config.limits.recipients {
        return Err(Reply::fixed(452, (4, 5, 3), "Too many recipients"));
    }
    Ok(())
}

/// Checks that a DATA (or a first BDAT) may start now.
pub(super) fn check_data(txn: Option<&TxnView>, chunked: bool) -> Result<(), Reply> {
    let Some(txn) = txn else {
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
