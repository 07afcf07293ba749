//! The message body: DATA, read through the dot-unstuffing decoder, and BDAT chunks, read by
//! count. Body octets go to the host as they arrive; a message that breaks a limit or the
//! line-ending policy is cut at the first offending octet and answered at its end.

use super::output::{Notice, Ready};
use super::{AbortReason, Mode, PendingKind, ServerSession};
use crate::config::{Extensions, LineEndingPolicy};
use crate::reply::{EnhancedStatus, Reply, ReplyCode};

impl ServerSession {
    /// BDAT (RFC 3030 §2): the chunk's octets are always read, also when the command is
    /// refused, so that they are never taken for commands.
    pub(super) fn bdat(&mut self, size: u64, last: bool) {
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

    pub(super) fn read_bdat(&mut self) -> bool {
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

    pub(super) fn read_data(&mut self) -> bool {
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
}

fn too_large() -> Reply {
    Reply::fixed(
        552,
        (5, 3, 4),
        "Message size exceeds fixed maximum message size",
    )
}
