//! smtps: embeddable SMTPS listeners for mail servers.
//!
//! This facade re-exports the workspace crates so a Rust embedder depends on one package:
//!
//! - [`proto`]: the sans-IO SMTP server session (RFC 5321 and its extensions).
//! - [`tls`]: the sans-IO TLS transport over rustls, with the STARTTLS upgrade (RFC 3207)
//!   and implicit TLS (RFC 8314).
//! - [`conn`]: one connection without I/O, TLS and SMTP together, for hosts that own their
//!   sockets (fork-per-connection servers).
//! - [`server`]: the mio event loop — listeners, workers, timers, limits, graceful shutdown —
//!   and the [`server::Handler`] trait through which the host decides.
//! - [`maildir`]: durable Maildir delivery (write, `fsync`, rename, `fsync` the directory),
//!   for a host that answers `250` only once the message is safe.
//! - [`received`]: the `Received:` trace header (RFC 5321 §4.4, RFC 3848) built from a
//!   session.
//! - [`relay`]: a ready `Handler` that relays each transaction to a backend MTA.
#![forbid(unsafe_code)]

pub use smtps_conn as conn;
pub use smtps_maildir as maildir;
pub use smtps_proto as proto;
pub use smtps_relay as relay;
pub use smtps_relay::received;
pub use smtps_server as server;
pub use smtps_tls as tls;
