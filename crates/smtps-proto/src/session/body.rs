//! The message body: DATA, read through the dot-unstuffing decoder, and BDAT chunks, read by
//! count. Body octets go to the host as they arrive; a message that breaks a limit or the
//! line-ending policy is cut at the first offending octet and answered at its end.

use super::commands::check_data;
use super::output::{Notice, Piece, Ready};
use super::{AbortReason, Mode, PendingKind, ServerSession};
use crate::config::{Extensions, LineEndingPolicy};
use crate::data::Span;
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
                _ => match check_data(self.txn_view().as_ref(), true) {
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

    /// DATA (RFC 5321 §4.1.1.4): decodes the next read of the body (§4.5.2 transparency) and
    /// queues its octets as slices of the input where they stand there unchanged, in scratch
    /// otherwise.
    pub(super) fn read_data(&mut self) -> bool {
        let available = self.input.len() - self.pos;
        if available == 0 {
            return false;
        }
        let Mode::Data(decoder) = &mut self.mode else {
            return false;
        };
        let end = self.pos + available.min(self.config.limits.body_chunk);
        // Events queued earlier have been handed out (`step` reads only when none wait), so
        // the scratch octets they pointed at may go.
        self.scratch.clear();
        self.pieces.clear();
        let had_bare = decoder.saw_bare_line_ending();
        let chunk_start = decoder.decoded_len();
        let base = self.pos;
        let input = &self.input[base..end];
        let (scratch, pieces) = (&mut self.scratch, &mut self.pieces);
        let progress = decoder.decode_spans(input, |span| match span {
            // Long runs go to the host as slices of the input buffer, uncopied (the buffer
            // is not compacted while events point into it).
            Span::Input(range) if range.len() >= MIN_BODY_SLICE => {
                pieces.push(Piece::Input(base + range.start..base + range.end));
            }
            // A normalised line ending, or a run so short that an event of its own would cost
            // the host more than the copy: gathered in scratch with its neighbours.
            span => {
                let from = scratch.len();
                scratch.extend_from_slice(span.octets(input));
                match pieces.last_mut() {
                    Some(Piece::Scratch(range)) if range.end == from => range.end = scratch.len(),
                    _ => pieces.push(Piece::Scratch(from..scratch.len())),
                }
            }
        });
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
        let bare_notice = Notice::BareLineEnding {
            in_body: true,
            rejected: policy.bare_line_ending_in_body == LineEndingPolicy::Reject,
        };
        let already_aborted = self.txn.as_ref().is_none_or(|txn| txn.refusal.is_some());
        // Whether the bare-line-ending notice goes after the abort notice.
        let mut notice_after_abort = false;
        if !already_aborted {
            // Octets of this read: all of them, or those before the violation (`at` ≥
            // `chunk_start` unless the violation was already acted on).
            let decoded = size - chunk_start;
            let kept = violation.as_ref().map_or(decoded, |(at, _, _)| {
                at.saturating_sub(chunk_start).min(decoded)
            });
            if let Some(txn) = &mut self.txn {
                txn.size = chunk_start + kept;
            }
            // The notice goes where the bare line ending stood, between the body octets. One
            // that stood past the cut (a size or line limit broken before it) comes after the
            // abort notice, as it does when it arrives in a later read than the violation.
            let notice_at = match decoder_bare_at {
                Some(at) if bare_now => {
                    let at = at.saturating_sub(chunk_start);
                    let past_the_cut = violation.as_ref().is_some_and(|(_, reason, _)| {
                        *reason != AbortReason::BareLineEnding && at >= kept
                    });
                    notice_after_abort = past_the_cut;
                    (!past_the_cut).then_some(at.min(kept))
                }
                _ => None,
            };
            self.queue_body(kept, notice_at, bare_notice);
        } else if bare_now {
            self.notice(bare_notice);
        }
        if let Some((_, reason, reply)) = violation {
            self.abort_message(reason, reply);
        }
        if notice_after_abort {
            self.notice(bare_notice);
        }
        if progress.end {
            self.mode = Mode::Commands;
            self.end_message();
        }
        true
    }

    /// Queues the first `kept` octets of the pieces just decoded as body events, with `notice`
    /// after the first `notice_at` of them: pieces are cut at either point.
    fn queue_body(&mut self, kept: u64, notice_at: Option<u64>, notice: Notice) {
        let mut notice_at = notice_at;
        let mut offset = 0u64;
        for piece in self.pieces.drain(..) {
            if offset >= kept {
                break;
            }
            // Piece lengths are those of input or scratch ranges, so they fit a usize.
            let len = piece.len() as u64;
            let mut piece = piece.head(usize::try_from(kept - offset).unwrap_or(usize::MAX));
            if let Some(at) = notice_at
                && at < offset + len
            {
                let split = usize::try_from(at - offset).unwrap_or(usize::MAX);
                let head = piece.clone().head(split);
                if !head.is_empty() {
                    self.ready.push_back(head.into_ready());
                }
                self.ready.push_back(Ready::Notice(notice));
                notice_at = None;
                piece = piece.tail(split);
            }
            if !piece.is_empty() {
                self.ready.push_back(piece.into_ready());
            }
            offset += len;
        }
        if notice_at.is_some() {
            self.ready.push_back(Ready::Notice(notice));
        }
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

/// Runs of body octets shorter than this are copied into the scratch buffer with their
/// neighbours rather than handed out as slices of the input: a body full of dot-stuffed or
/// LF-ended short lines then still reaches the host in a few large chunks.
const MIN_BODY_SLICE: usize = 4096;

fn too_large() -> Reply {
    Reply::fixed(
        552,
        (5, 3, 4),
        "Message size exceeds fixed maximum message size",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data::dot_stuff;
    use crate::{Event, Security, SessionConfig, Verdict};

    /// What the host saw of one DATA transaction, adjacent body chunks joined (they are cut
    /// wherever the input was), and how many body octets came as slices of the input buffer.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        events: Vec<String>,
        replies: String,
        from_input: usize,
    }

    const TRANSACTION: &[u8] =
        b"EHLO c.example\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n";

    /// Runs the transaction, then `wire` (a DATA stream and what follows) cut at `splits`.
    fn run(config: &Arc<SessionConfig>, wire: &[u8], splits: &[usize]) -> Seen {
        let mut session = ServerSession::new(config.clone(), Security::Tls);
        let mut seen = Seen {
            events: Vec::new(),
            replies: String::new(),
            from_input: 0,
        };
        drain(&mut session, &mut seen);
        feed(&mut session, &mut seen, TRANSACTION);
        seen.events.clear();
        seen.replies.clear();
        seen.from_input = 0;
        let mut start = 0;
        for &split in splits.iter().chain([&wire.len()]) {
            feed(&mut session, &mut seen, &wire[start..split]);
            start = split;
        }
        seen
    }

    fn feed(session: &mut ServerSession, seen: &mut Seen, mut input: &[u8]) {
        while !input.is_empty() {
            let taken = session.handle_input(input);
            input = &input[taken..];
            drain(session, seen);
            assert!(taken > 0 || input.is_empty(), "session stalled");
        }
    }

    fn drain(session: &mut ServerSession, seen: &mut Seen) {
        while session.has_event() {
            if let Some(Ready::BodyFromInput(range)) = session.ready.front() {
                seen.from_input += range.len();
            }
            let Some(event) = session.poll_event() else {
                break;
            };
            let text = match event {
                Event::BodyChunk(chunk) => format!("body {}", String::from_utf8_lossy(chunk)),
                Event::MessageEnd { size, .. } => format!("end {size}"),
                Event::MessageAborted { reason } => format!("aborted {reason:?}"),
                Event::BareLineEnding { rejected, .. } => format!("bare rejected={rejected}"),
                _ => String::new(),
            };
            if let Some(decision) = event.decision() {
                let _ = session.decide(decision, Verdict::Accept);
            }
            match (seen.events.last_mut(), text.strip_prefix("body ")) {
                (Some(last), Some(more)) if last.starts_with("body ") => last.push_str(more),
                _ if text.is_empty() => {}
                _ => seen.events.push(text),
            }
        }
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        seen.replies.push_str(&String::from_utf8_lossy(&out));
    }

    /// Runs `wire` whole, then cut in two at every position and in three around every
    /// position: the host must see the same octets, notices and replies each time.
    fn run_all_splits(config: &Arc<SessionConfig>, wire: &[u8]) -> Seen {
        let whole = run(config, wire, &[]);
        for split in 0..=wire.len() {
            let cut = run(config, wire, &[split]);
            assert_eq!(cut.events, whole.events, "split at {split}");
            assert_eq!(cut.replies, whole.replies, "split at {split}");
            let close = run(config, wire, &[split, (split + 1).min(wire.len())]);
            assert_eq!(
                close.events,
                whole.events,
                "splits at {split} and {}",
                split + 1
            );
        }
        whole
    }

    /// `count` lines of 78 octets, every `dot_every`-th starting with a dot (0: none).
    fn lines(count: usize, dot_every: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for n in 0..count {
            if dot_every > 0 && n % dot_every == 0 {
                body.push(b'.');
            }
            body.extend((0..78).map(|i| b"abcdefghijklmnopqrstuvwxyz"[(n + i) % 26]));
            body.extend_from_slice(b"\r\n");
        }
        body
    }

    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        dot_stuff(body, &mut wire);
        wire.extend_from_slice(b"NOOP\r\n");
        wire
    }

    fn config(edit: impl FnOnce(&mut SessionConfig)) -> Arc<SessionConfig> {
        let mut config = SessionConfig::new("mx.test");
        edit(&mut config);
        Arc::new(config)
    }

    fn body_event(octets: &[u8]) -> String {
        format!("body {}", String::from_utf8_lossy(octets))
    }

    #[test]
    fn crlf_body_reaches_the_host_as_slices_of_the_input_rfc5321_4_5_2() {
        // Dot-stuffed lines included: the run after a removed dot is a slice too (runs of at
        // least `MIN_BODY_SLICE` octets: 60 lines of 80).
        let body = lines(420, 60);
        let seen = run(&config(|_| {}), &stuffed(&body), &[]);
        assert_eq!(
            seen.events,
            [body_event(&body), format!("end {}", body.len())]
        );
        assert_eq!(seen.from_input, body.len(), "no body octet copied");
        assert_eq!(
            seen.replies,
            "250 2.0.0 Message accepted\r\n250 2.0.0 OK\r\n"
        );
    }

    #[test]
    fn stuffed_dot_lines_and_end_of_data_at_every_split_rfc5321_4_5_2() {
        let mut body = lines(8, 3);
        body.extend_from_slice(b".\r\n..\r\n");
        body.extend(lines(5, 0));
        let seen = run_all_splits(&config(|_| {}), &stuffed(&body));
        assert_eq!(
            seen.events,
            [body_event(&body), format!("end {}", body.len())]
        );
        assert_eq!(
            seen.replies,
            "250 2.0.0 Message accepted\r\n250 2.0.0 OK\r\n"
        );
    }

    #[test]
    fn bare_lf_and_cr_are_normalised_with_the_notice_in_place() {
        // A bare LF in the middle of a long run, then a bare CR: both become CRLF, the notice
        // stands where the first one was, and the smuggled end-of-data line is body text.
        let mut wire = lines(5, 0);
        let first_bare = wire.len() + 300;
        wire.extend([b'x'; 300]);
        wire.extend_from_slice(b"\n.\nMAIL FROM:<evil@x.org>\r\n");
        wire.extend([b'y'; 300]);
        wire.extend_from_slice(b"\r");
        wire.extend(lines(4, 2));
        wire.extend_from_slice(b".\r\nNOOP\r\n");
        let mut body = wire[..first_bare].to_vec();
        body.extend_from_slice(b"\r\n\r\nMAIL FROM:<evil@x.org>\r\n");
        body.extend([b'y'; 300]);
        body.extend_from_slice(b"\r\n");
        // `lines(4, 2)` went unstuffed on the wire, so its dot lines lose their dot.
        for line in lines(4, 2).split_inclusive(|&b| b == b'\n') {
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        let seen = run_all_splits(&config(|_| {}), &wire);
        assert_eq!(
            seen.events,
            [
                body_event(&body[..first_bare]),
                "bare rejected=false".to_owned(),
                body_event(&body[first_bare..]),
                format!("end {}", body.len()),
            ]
        );
    }

    #[test]
    fn bare_line_ending_refused_by_policy_cuts_the_body_there() {
        let mut wire = lines(6, 0);
        let at = wire.len() + 500;
        wire.extend([b'z'; 500]);
        wire.extend_from_slice(b"\rmore\r\n");
        wire.extend(lines(6, 0));
        wire.extend_from_slice(b".\r\nNOOP\r\n");
        let config = config(|c| {
            c.policy.bare_line_ending_in_body = LineEndingPolicy::Reject;
        });
        let seen = run_all_splits(&config, &wire);
        assert_eq!(
            seen.events,
            [
                body_event(&wire[..at]),
                "bare rejected=true".to_owned(),
                "aborted BareLineEnding".to_owned(),
            ]
        );
        assert!(seen.replies.starts_with("550 5.5.2 "), "{}", seen.replies);
    }

    #[test]
    fn size_limit_cuts_a_slice_mid_range_rfc1870() {
        let body = lines(40, 9);
        let config = config(|c| c.limits.message_size = 1000);
        let seen = run_all_splits(&config, &stuffed(&body));
        assert_eq!(
            seen.events,
            [body_event(&body[..1000]), "aborted TooLarge".to_owned()]
        );
        assert_eq!(
            seen.replies,
            "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
        );
    }

    #[test]
    fn bare_line_ending_past_the_size_cut_is_noticed_after_the_abort_at_every_split() {
        // Found by the pipelined-decisions differential test: read whole, the notice of a bare
        // LF past the size cut came before the abort notice; read in two, after it.
        let mut body = lines(20, 0);
        body.extend_from_slice(b"bare\nline\r\n");
        body.extend(lines(5, 0));
        let config = config(|c| c.limits.message_size = 1000);
        let seen = run_all_splits(&config, &stuffed(&body));
        assert_eq!(
            seen.events,
            [
                body_event(&body[..1000]),
                "aborted TooLarge".to_owned(),
                "bare rejected=false".to_owned(),
            ]
        );
        assert!(seen.replies.starts_with("552 5.3.4 "), "{}", seen.replies);
    }

    #[test]
    fn long_line_cuts_the_body_at_its_end_rfc5321_4_5_3_1_6() {
        let mut body = lines(10, 4);
        let at = body.len() + 1200;
        body.extend([b'L'; 1200]);
        body.extend_from_slice(b"\r\n");
        body.extend(lines(10, 0));
        let seen = run_all_splits(&config(|_| {}), &stuffed(&body));
        assert_eq!(
            seen.events,
            [body_event(&body[..at]), "aborted LineTooLong".to_owned()]
        );
        assert!(seen.replies.starts_with("554 5.6.0 "), "{}", seen.replies);
    }

    #[test]
    fn small_body_chunks_still_cover_the_body() {
        // Reads of 7 octets: every run is short, so everything goes through scratch.
        let body = lines(6, 2);
        let config = config(|c| c.limits.body_chunk = 7);
        let seen = run_all_splits(&config, &stuffed(&body));
        assert_eq!(
            seen.events,
            [body_event(&body), format!("end {}", body.len())]
        );
        assert_eq!(seen.from_input, 0);
    }
}
