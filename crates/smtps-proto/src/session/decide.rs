//! Acting on the host's verdict for an event that awaited a decision: the state change and
//! the reply for each kind of decision (see `ServerSession::decide`).

use super::{AbortReason, Mode, Pending, PendingKind, ServerSession, Transaction};
use crate::data::DataDecoder;
use crate::reply::{Reply, ReplyCode};

impl ServerSession {
    /// Applies the verdicts given, in command order, as far as they go without a gap; then a
    /// command read ahead whose ground a verdict took away is withdrawn (`withdraw_unfounded`).
    pub(super) fn apply_verdicts(&mut self) {
        while let Some(Pending {
            kind,
            verdict: Some(_),
            ..
        }) = self.pending.front()
        {
            let kind = *kind;
            let Some(Pending {
                verdict: Some((accepted, reply)),
                ..
            }) = self.pending.pop_front()
            else {
                break;
            };
            if accepted {
                self.accept(kind, reply);
            } else {
                let reply = reply.unwrap_or_else(|| Reply::fixed(554, (5, 0, 0), "Refused"));
                self.refuse(kind, &reply);
            }
            self.withdraw_unfounded();
        }
    }

    /// A RCPT read ahead stands on its MAIL being accepted, a DATA on some RCPT being accepted
    /// (RFC 2920 §3.1: "the server must reject the DATA command if there are no valid
    /// recipients"). Once the verdicts before it are applied and its ground is not there, the
    /// command and every one read after it are withdrawn: their events go unpolled, their
    /// decisions become unknown to [`ServerSession::decide`], and their lines are read again as
    /// if they had just arrived, so they get the replies a session deciding one command at a
    /// time gives.
    fn withdraw_unfounded(&mut self) {
        let Some(Pending {
            id,
            kind,
            read_ahead: Some(start),
            ..
        }) = self.pending.front()
        else {
            return;
        };
        let founded = match kind {
            PendingKind::Rcpt => self.txn.is_some(),
            PendingKind::Data => self.txn.as_ref().is_some_and(|txn| txn.accepted_rcpts > 0),
            _ => true,
        };
        if founded {
            return;
        }
        let (first, start) = (*id, *start);
        self.pending.clear();
        self.ready.retain(|ready| {
            ready
                .decision()
                .is_none_or(|id| id.as_u64() < first.as_u64())
        });
        self.pos = start;
    }

    pub(super) fn accept(&mut self, kind: PendingKind, reply: Option<Reply>) {
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
                    txn.attempted_rcpts += 1;
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

    pub(super) fn refuse(&mut self, kind: PendingKind, reply: &Reply) {
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
            PendingKind::Rcpt => {
                if let Some(txn) = &mut self.txn {
                    txn.attempted_rcpts += 1;
                }
            }
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
}
