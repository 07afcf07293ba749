//! A sans-IO SMTP server session (RFC 5321) with the extensions a submission or relay server
//! needs: PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING/BINARYMIME, DSN,
//! STARTTLS, AUTH, REQUIRETLS and LIMITS.
//!
//! The crate does no I/O, reads no clock and starts no thread: bytes go in, events and reply
//! bytes come out. That makes it usable from any event loop and fuzzable.
//!
//! # The contract
//!
//! A [`ServerSession`] is driven with four kinds of call, in a loop:
//!
//! 1. **Input** — [`ServerSession::handle_input`] takes octets received from the client (after
//!    TLS decryption). It returns how many it took: while events or a decision are outstanding
//!    it takes no more than its input limit, and the caller keeps the rest. That is the
//!    back-pressure that stops a connection being read. [`ServerSession::handle_eof`] reports
//!    that the client closed its side.
//! 2. **Events** — [`ServerSession::poll_event`] returns the next [`Event`] until it returns
//!    `None`. Events borrow the session's buffers (a body chunk is a slice of them), so each is
//!    handled before the next call. Processing is lazy: input is parsed only as events are
//!    polled, so a host that stops polling stops the session consuming input.
//! 3. **Decisions** — events carrying a [`DecisionId`] (connect, HELO/EHLO, AUTH, MAIL, RCPT,
//!    start of data, end of message) wait for [`ServerSession::decide`]. The answer may come at
//!    once or much later (after a queue file is fsynced, from another thread by way of the
//!    host's loop). Until it comes, nothing after that command is acted on, so replies always
//!    leave in command order (RFC 2920 §3.1) and no buffered input is dropped. A host that
//!    forwards commands (a relay) may opt into [`SessionConfig::pipelined_decisions`]: the
//!    RCPTs and DATA pipelined after an undecided MAIL or RCPT then come at once, each with its
//!    own decision, verdicts still taking effect in command order.
//! 4. **Output** — [`ServerSession::poll_transmit`] hands over the reply octets to send. Call it
//!    once `poll_event` has returned `None`: replies to a pipelined batch then leave together.
//!
//! After [`Event::StartTls`], send the output (the `220`), upgrade the transport, then call
//! [`ServerSession::handle_tls_established`]. After [`ServerSession::is_closed`] turns true,
//! send the output and close the connection.
//!
//! ```
//! use std::sync::Arc;
//! use smtps_proto::{Event, Security, ServerSession, SessionConfig, Verdict};
//!
//! let config = Arc::new(SessionConfig::new("mx.example.org"));
//! let mut session = ServerSession::new(config, Security::Tls);
//! let mut wire = Vec::new();
//! let input = b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n\
//!               DATA\r\nSubject: hi\r\n\r\nHello.\r\n.\r\nQUIT\r\n";
//! let mut offset = 0;
//! let mut body = Vec::new();
//! loop {
//!     offset += session.handle_input(&input[offset..]);
//!     let mut decisions = Vec::new();
//!     while let Some(event) = session.poll_event() {
//!         match event {
//!             Event::BodyChunk(chunk) => body.extend_from_slice(chunk),
//!             Event::Connect { decision }
//!             | Event::Helo { decision, .. }
//!             | Event::Mail { decision, .. }
//!             | Event::Rcpt { decision, .. }
//!             | Event::DataStart { decision, .. }
//!             | Event::MessageEnd { decision, .. } => decisions.push(decision),
//!             _ => {}
//!         }
//!         for decision in decisions.drain(..) {
//!             session.decide(decision, Verdict::Accept).expect("outstanding");
//!         }
//!     }
//!     session.poll_transmit(&mut wire);
//!     if session.is_closed() || offset == input.len() {
//!         break;
//!     }
//! }
//! assert_eq!(body, b"Subject: hi\r\n\r\nHello.\r\n");
//! assert!(wire.ends_with(b"221 2.0.0 Bye\r\n"));
//! ```
//!
//! # Security properties
//!
//! - Only `CRLF.CRLF` ends DATA; bare LF and bare CR are normalised or refused by policy and
//!   never end a message (SMTP smuggling).
//! - Input pipelined after STARTTLS is discarded (CVE-2011-0411).
//! - AUTH is offered and accepted only over TLS unless
//!   [`Policy::danger_allow_plaintext_auth`] is set.
//! - Every buffer is bounded by a [`Limits`] value.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod address;
mod base64;
pub mod command;
mod config;
pub mod data;
mod error;
pub mod params;
pub mod reply;
mod session;

pub use address::{
    AddressLiteral, Domain, ForwardPath, HeloName, LocalPart, MailDomain, Mailbox, ReversePath,
};
pub use command::{Command, CommandError, Verb, parse_command};
pub use config::{
    AuthMechanisms, Extensions, Limits, LineEndingPolicy, Policy, SessionConfig, VrfyPolicy,
};
pub use error::Error;
pub use params::{
    BodyType, DsnNotify, DsnReturn, MailParameters, OriginalRecipient, RcptParameters,
};
pub use reply::{EnhancedStatus, Reply, ReplyCode};
pub use session::{
    AbortReason, AuthMechanism, DecisionId, DecisionKind, Event, Security, ServerSession, Verdict,
};
