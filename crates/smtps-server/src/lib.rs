//! The mio event loop of smtps: SMTP listeners with implicit TLS (RFC 8314) and STARTTLS
//! (RFC 3207), worker threads, timers, connection limits, graceful shutdown, and the
//! [`Handler`] trait through which a Rust host decides on every step.
//!
//! # From configuration to a running server
//!
//! ```no_run
//! use std::sync::Arc;
//! use smtps_server::{Answer, Context, Handler, Mode, Server, ServerConfig};
//! use smtps_proto::{Reply, SessionConfig};
//!
//! /// Accepts everything and throws it away (a sink, like Postfix's `smtp-sink`).
//! struct Sink;
//!
//! impl Handler for Sink {
//!     type Session = u64;
//!     fn connect(&self, _cx: &mut Context<'_>) -> (u64, Answer) {
//!         (0, Answer::Accept)
//!     }
//!     fn body_chunk(&self, size: &mut u64, _cx: &mut Context<'_>, chunk: &[u8]) -> Result<(), Reply> {
//!         *size += chunk.len() as u64;
//!         Ok(())
//!     }
//!     fn message_end(&self, _size: &mut u64, _cx: &mut Context<'_>, _total: u64) -> Answer {
//!         Answer::Accept
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = Arc::new(
//!     smtps_tls::TlsSettings::new().certificate_files("/etc/ssl/mail.pem", "/etc/ssl/mail.key").build()?,
//! );
//! let config = ServerConfig::new(SessionConfig::new("mx.example.org"))
//!     .listener("[::]:465".parse()?, Mode::ImplicitTls)
//!     .listener("[::]:587".parse()?, Mode::StartTlsRequired)
//!     .tls(tls);
//! let server = Server::bind(config, Sink)?;
//! let handle = server.handle(); // handle.shutdown(grace) from a signal handler thread
//! server.run()?;
//! # let _ = handle;
//! # Ok(())
//! # }
//! ```
//!
//! The example leaves out what a real host adds: delivery that commits before it accepts
//! (see `smtpsd`), AUTH against a user database, and signal handling.
//!
//! # Deferred answers
//!
//! A handler method that cannot answer at once takes a [`Responder`] with
//! [`Context::defer`], returns [`Answer::Deferred`], and later calls
//! [`Responder::respond`] from any thread; the worker is woken through a `mio::Waker`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod dispatch;
mod error;
mod handler;
mod metrics;
mod server;
mod turn;
mod worker;
mod worker_io;

pub use config::{ConnectionLimits, InheritedListener, ListenerConfig, ServerConfig};
pub use error::Error;
pub use handler::{Answer, Context, Credentials, Handler, InputGate, Responder, SessionInfo};
pub use metrics::{
    ABORT_REASONS, DECISION_BUCKETS, ListenerSnapshot, MetricsSnapshot, SESSION_OUTCOMES,
    TLS_FAILURE_REASONS, TLS_VERSIONS,
};
pub use server::{PolledServer, RunningServer, Server, ServerHandle};
pub use smtps_conn::smtps_proxy::{Network, OwnedHeader as ProxyHeader};
pub use smtps_conn::{CloseReason, Mode, ProxyPolicy, Timeouts, Timer, Untrusted};
pub use worker_io::{MAX_HOST_TOKEN, WorkerIo, WorkerRegistry};
