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
#![forbid(unsafe_code)]

pub use smtps_conn as conn;
pub use smtps_proto as proto;
pub use smtps_server as server;
pub use smtps_tls as tls;
