//! The envelope of the transaction in progress, as the host accepted it: the reverse path and
//! the recipients (RFC 5321 §3.3), kept by the connection so that every host (the server's
//! `SessionInfo`, C hosts at the connection level) reads the same answer.

use std::collections::VecDeque;

use smtps_proto::{DecisionId, Event};

/// The accepted sender and recipients, and the steps awaiting their decisions.
#[derive(Debug, Default)]
pub(crate) struct Envelope {
    mail_from: Option<String>,
    recipients: Vec<String>,
    /// The envelope steps of the decisions outstanding, in command order, with the verdict
    /// once given (accepted or not): several with pipelined decisions, applied in order as the
    /// session applies them.
    awaited: VecDeque<(DecisionId, Step, Option<bool>)>,
}

/// What a decision does to the envelope once accepted.
#[derive(Debug)]
enum Step {
    /// HELO/EHLO: a new session state, no transaction (RFC 5321 §4.1.4).
    Greeting,
    Mail(String),
    Rcpt(String),
    /// The end of a message: accepted or not, the transaction is over.
    MessageEnd,
}

impl Envelope {
    /// Notes what an event means for the envelope.
    pub(crate) fn event(&mut self, event: &Event<'_>) {
        let step = match event {
            Event::Helo { decision, .. } => (*decision, Step::Greeting),
            Event::Mail { decision, from, .. } => (*decision, Step::Mail(from.address())),
            Event::Rcpt { decision, to, .. } => (*decision, Step::Rcpt(to.address())),
            Event::MessageEnd { decision, .. } => (*decision, Step::MessageEnd),
            // RSET, STARTTLS (which resets, RFC 3207 §4.2), a dropped message: no transaction.
            Event::Reset | Event::StartTls { .. } | Event::MessageAborted { .. } => {
                self.clear();
                return;
            }
            _ => return,
        };
        self.awaited.push_back((step.0, step.1, None));
    }

    /// Notes the verdict on `id`, now that the session took it, and applies the verdicts given
    /// in command order as far as they go. `awaits` tells which decisions the session still
    /// awaits: one it withdrew (a RCPT read ahead of a MAIL that was then refused) is dropped.
    pub(crate) fn decided(
        &mut self,
        id: DecisionId,
        accepted: bool,
        awaits: impl Fn(DecisionId) -> bool,
    ) {
        for (awaited, _, verdict) in &mut self.awaited {
            if *awaited == id {
                *verdict = Some(accepted);
            }
        }
        self.awaited
            .retain(|(awaited, _, verdict)| verdict.is_some() || awaits(*awaited));
        while let Some((_, _, Some(accepted))) = self.awaited.front() {
            let accepted = *accepted;
            let Some((_, step, _)) = self.awaited.pop_front() else {
                break;
            };
            match step {
                Step::Greeting if accepted => self.clear(),
                Step::Mail(from) if accepted => {
                    self.mail_from = Some(from);
                    self.recipients.clear();
                }
                // One whose MAIL was then refused waits here unseen (no transaction: the
                // connection shows none) until the next accepted MAIL clears it.
                Step::Rcpt(to) if accepted => self.recipients.push(to),
                Step::MessageEnd => self.clear(),
                _ => {}
            }
        }
    }

    fn clear(&mut self) {
        self.mail_from = None;
        self.recipients.clear();
    }

    /// The accepted reverse path (`""` for `<>`), while a transaction is open.
    pub(crate) fn mail_from(&self) -> Option<&str> {
        self.mail_from.as_deref()
    }

    /// The accepted recipients of the transaction, in order.
    pub(crate) fn recipients(&self) -> &[String] {
        &self.recipients
    }
}
