//! The connection engine of smtps: one SMTP server connection, TLS and SMTP together, without
//! I/O. Every driver stands on it — the mio server (`smtps-server`, so `smtpsd` and the C
//! server level), the C connection level (`smtps_conn_*`) and the fuzzers — so what concerns
//! one connection lives here once: the TLS handshake of implicit TLS (RFC 8314 §3), the
//! STARTTLS upgrade at the exact byte after the `220` (RFC 3207 §4), timers (RFC 5321
//! §4.5.3.2), output back-pressure, end of stream at every stage, and why it closed.
//!
//! # The contract
//!
//! Inputs, each with the time passed in (the engine never reads a clock):
//! [`Connection::feed`] or [`Connection::read_from`] (octets from the socket),
//! [`Connection::feed_eof`] / [`Connection::socket_failed`], [`Connection::decide`],
//! [`Connection::close`], [`Connection::handle_timeout`].
//!
//! Outputs: [`Connection::poll_event`] (what the host sees and decides),
//! [`Connection::output`] + [`Connection::consume_output`] or [`Connection::write_to`] (octets
//! for the socket), [`Connection::poll_timeout`] (when to call `handle_timeout`),
//! [`Connection::wants_read`] / [`Connection::wants_write`] (interest), and
//! [`Connection::is_finished`] + [`Connection::close_reason`] (when and why to close).
//!
//! A driver's turn, after readiness or a timer: read while `wants_read`, drain `poll_event`
//! (answering decisions now or later), write while `wants_write`, repeat while anything moved;
//! then `handle_timeout(now)` and schedule `poll_timeout()`. Once `is_finished`, drain
//! `poll_event` a last time (a closing session may report an aborted message) and close the
//! socket.
//!
//! Buffers: the connection owns every buffer. Received octets the transport cannot take are
//! kept (at most one read); output beyond [`OUTPUT_LIMIT`] stops input and events until the
//! client reads, so a client that pipelines without reading cannot grow the server's memory.
//!
//! ```
//! # use std::sync::Arc;
//! # use std::time::Instant;
//! use smtps_conn::{Connection, Mode};
//! use smtps_proto::{Event, SessionConfig, Verdict};
//!
//! let config = Arc::new(SessionConfig::new("mx.example.org"));
//! let mut conn = Connection::new(Mode::Plain, config, None, Instant::now()).unwrap();
//! conn.feed(Instant::now(), b"EHLO client.example\r\n").unwrap();
//! while let Some(event) = conn.poll_event() {
//!     if let Some(decision) = event.decision() {
//!         conn.decide(decision, Verdict::Accept).unwrap();
//!     }
//! }
//! let reply = conn.output().to_vec();
//! assert!(reply.starts_with(b"220 "));
//! ```
//!
//! A `Connection` is not thread-safe to share, but may move between threads.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod close;
mod connection;
mod envelope;
mod error;
mod mode;
mod proxy;
pub mod replies;
mod timeouts;

pub use close::CloseReason;
pub use connection::{Connection, OUTPUT_LIMIT};
pub use error::Error;
pub use mode::{Mode, UnknownMode};
pub use proxy::{Admission, ProxyPolicy, Untrusted, reported_addresses};
/// The PROXY protocol header parser ([`Connection::proxy_header`] gives its [`smtps_proxy::Header`]).
pub use smtps_proxy;
pub use timeouts::{Timeouts, Timer};

#[cfg(test)]
mod tests;
