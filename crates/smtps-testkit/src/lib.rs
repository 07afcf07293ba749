//! Test fixtures shared by the smtps crates' tests, benches and fuzz harness, so that each test
//! file stops rebuilding its own.
//!
//! - **A certificate for `localhost`** ([`TestCertificate`]): one self-signed ECDSA P-256
//!   certificate per process, as PEM, as DER, or written to files. [`acceptor()`] serves it,
//!   [`client_config()`] trusts it, and [`client_connection()`] opens a rustls client to
//!   [`SERVER_NAME`] with such a configuration.
//! - **A temporary directory** ([`TempDir`]), removed on drop.
//! - **A blocking SMTP client over TCP** ([`SmtpClient`]): plaintext, implicit TLS (RFC 8314) or
//!   STARTTLS (RFC 3207) upgraded in place, with [`IO_TIMEOUT`] on every blocking call.
//! - **An in-memory TLS client** ([`MemoryClient`]) for sans-IO tests: it exchanges octets with
//!   a [`smtps_conn::Connection`] directly, as a socket would carry them.
//!
//! Everything here panics when something fails, with a message that says what: it is made for
//! tests, where a panic is a failed test. It is never published (`publish = false`, and the
//! workspace names it without a version), so only dev-dependencies and the fuzz harness use it.
//!
//! ```
//! use smtps_testkit::{MemoryClient, acceptor, client_config};
//! # use std::{sync::Arc, time::Instant};
//! # use smtps_conn::{Connection, Mode};
//! # let config = Arc::new(smtps_proto::SessionConfig::new("mx.test"));
//! let mut conn = Connection::new(Mode::ImplicitTls, config, Some(acceptor()), Instant::now())
//!     .expect("connection");
//! let mut client = MemoryClient::new(&client_config());
//! client.start_tls();
//! client.exchange(&mut conn, |conn| {
//!     while let Some(event) = conn.poll_event() {
//!         if let Some(decision) = event.decision() {
//!             conn.decide(decision, smtps_proto::Verdict::Accept).expect("decide");
//!         }
//!     }
//! });
//! assert!(client.take_received().starts_with("220 mx.test"));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod cert;
mod client;
mod memory;
mod proxy;
mod temp;

pub use cert::{
    CertificateFiles, SERVER_NAME, TestCertificate, acceptor, client_config, client_connection,
};
pub use client::{IO_TIMEOUT, SmtpClient};
pub use memory::MemoryClient;
pub use proxy::{proxy_v1, proxy_v2, proxy_v2_local};
pub use temp::TempDir;
