//! The session's two outputs: the queue of events that `ServerSession::poll_event` hands out,
//! and the reply octets that `ServerSession::poll_transmit` does. Queued events hold positions
//! in the session's buffers rather than borrows, and become `Event`s only when polled.

use std::ops::Range;

use super::{AbortReason, AuthMechanism, DecisionId, Event, Mode, ServerSession};
use crate::command::{Command, parse_command};
use crate::config::Extensions;
use crate::reply::Reply;

/// An event ready to be returned, holding positions instead of borrows.
#[derive(Debug)]
pub(super) enum Ready {
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
    /// The decision the event awaits, if any.
    pub(super) fn decision(&self) -> Option<DecisionId> {
        match self {
            Self::Connect(id)
            | Self::Command(id, _)
            | Self::Auth { id, .. }
            | Self::DataStart(id, _)
            | Self::MessageEnd(id, _) => Some(*id),
            _ => None,
        }
    }

    /// Whether the item is part of a message the host refused (see `refuse_message`).
    pub(super) fn belongs_to_refused_message(&self) -> bool {
        matches!(
            self,
            Self::BodyFromScratch(_)
                | Self::BodyFromInput(_)
                | Self::MessageEnd(..)
                | Self::Notice(Notice::Aborted(_))
        )
    }
}

/// Where some decoded body octets are, before they become `Ready` events: a DATA read gathers
/// its pieces first, because the point to cut the body at (a limit) and the place of the
/// bare-line-ending notice are known only once the read is decoded.
#[derive(Debug, Clone)]
pub(super) enum Piece {
    /// A range of the input buffer.
    Input(Range<usize>),
    /// A range of the scratch buffer.
    Scratch(Range<usize>),
}

impl Piece {
    pub(super) fn len(&self) -> usize {
        self.range().len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.range().is_empty()
    }

    /// The first `len` octets (all of them if there are fewer).
    pub(super) fn head(self, len: usize) -> Self {
        self.map(|range| range.start..range.end.min(range.start.saturating_add(len)))
    }

    /// All but the first `len` octets.
    pub(super) fn tail(self, len: usize) -> Self {
        self.map(|range| range.end.min(range.start.saturating_add(len))..range.end)
    }

    pub(super) fn into_ready(self) -> Ready {
        match self {
            Self::Input(range) => Ready::BodyFromInput(range),
            Self::Scratch(range) => Ready::BodyFromScratch(range),
        }
    }

    fn range(&self) -> &Range<usize> {
        match self {
            Self::Input(range) | Self::Scratch(range) => range,
        }
    }

    fn map(self, f: impl FnOnce(Range<usize>) -> Range<usize>) -> Self {
        match self {
            Self::Input(range) => Self::Input(f(range)),
            Self::Scratch(range) => Self::Scratch(f(range)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Notice {
    Aborted(AbortReason),
    Reset,
    StartTls(usize),
    BareLineEnding { in_body: bool, rejected: bool },
    Quit,
    TooManyErrors,
}

impl ServerSession {
    pub(super) fn notice(&mut self, notice: Notice) {
        self.ready.push_back(Ready::Notice(notice));
    }

    /// The event for a ready item, borrowing from the session's buffers.
    pub(super) fn event_for(&self, ready: Ready) -> Event<'_> {
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

    pub(super) fn reply(&mut self, reply: &Reply) {
        let enhanced = self.helo == Some(true)
            && self
                .config
                .extensions
                .contains(Extensions::ENHANCED_STATUS_CODES);
        reply.write_to(&mut self.output, enhanced);
    }

    pub(super) fn reply_or(
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
    pub(super) fn write_greeting_refusal(&mut self, reply: &Reply) {
        let enhanced = reply.status().is_some()
            && self
                .config
                .extensions
                .contains(Extensions::ENHANCED_STATUS_CODES);
        reply.write_to(&mut self.output, enhanced);
    }

    /// Writes a reply that never carries an enhanced status: the greeting and the HELO/EHLO
    /// replies, whose lines are not status text (RFC 2034 §3).
    pub(super) fn write_plain(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output, false);
    }

    /// A reply to a client's command that was refused. Permanent refusals are client mistakes
    /// and too many of them close the session; transient ones (such as `452` for recipients
    /// over the limit, RFC 5321 §4.5.3.1.10) are flow control and are not counted.
    pub(super) fn protocol_error(&mut self, reply: &Reply) {
        self.reply(reply);
        if reply.code().class() == 5 {
            self.errors += 1;
            self.check_error_limit();
        }
    }

    pub(super) fn check_error_limit(&mut self) {
        if self.errors >= self.config.limits.errors && !matches!(self.mode, Mode::Closed) {
            let reply = Reply::fixed(421, (4, 7, 0), "Too many errors, closing connection");
            self.shut(AbortReason::Closed, Some(&reply));
            self.notice(Notice::TooManyErrors);
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
