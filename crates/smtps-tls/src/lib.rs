//! TLS for SMTP servers, sans-IO: implicit TLS (RFC 8314) and `STARTTLS` (RFC 3207) on rustls.
//!
//! This crate does no I/O, starts no thread and reads no clock itself. (rustls does read the
//! system clock, through its default `TimeProvider`, to age session tickets and to check the
//! validity period of client certificates.) It is the only crate of `smtps` whose API names
//! rustls types.
//!
//! # The contract
//!
//! **Inputs**: bytes read from the socket ([`Transport::handle_received`]), end of stream
//! ([`Transport::handle_eof`]), plaintext from the SMTP layer ([`Transport::write_plaintext`]),
//! and the two commands [`Transport::start_tls`] and [`Transport::close`].
//!
//! **Outputs**: plaintext for the SMTP layer ([`Transport::read_plaintext`], or borrowed with
//! [`Transport::received_plaintext`] + [`Transport::consume_plaintext`]), bytes for the socket
//! ([`Transport::poll_transmit`] into a `Vec`, or [`Transport::write_transmit`] straight into
//! an `io::Write`), readiness ([`Transport::wants_read`], [`Transport::wants_write`]) and, once
//! the handshake is done, [`TlsInfo`].
//!
//! **Call order**, per readiness event (the rustls `read_tls` → `process_new_packets` →
//! `reader` → `write_tls` loop):
//!
//! 1. readable: read the socket into your buffer; `handle_received(&buf)` returns how much it
//!    took. Keep the rest. On a socket EOF call `handle_eof()`.
//! 2. drain plaintext with `read_plaintext` into the SMTP session until it returns 0; then feed
//!    the bytes you kept in step 1 again (back-pressure: at most 16 KiB of decrypted
//!    plaintext, 64 KiB in plaintext mode, waits inside the transport).
//! 3. hand the SMTP layer's output to `write_plaintext` (it may take fewer bytes than given).
//! 4. while `wants_write()`, `write_transmit(&mut socket)` until `WouldBlock`.
//! 5. derive socket interest from `wants_read()` / `wants_write()`.
//!
//! An `Err` from `handle_received` is fatal: send what `poll_transmit` still yields (the TLS
//! alert), then close the socket.
//!
//! **Buffer ownership**: the transport copies what it takes in `handle_received` and
//! `write_plaintext`; the caller owns its buffers and may reuse them at once. Plaintext is
//! copied out into caller buffers (or borrowed until the next `&mut` call). Nothing on the
//! read path allocates once the connection's buffers have grown.
//!
//! # `STARTTLS` (RFC 3207)
//!
//! When the SMTP layer accepts `STARTTLS`, the caller queues `220 Ready to start TLS` with
//! `write_plaintext` and *immediately* calls [`Transport::start_tls`]. It does not need to
//! flush first: the transport keeps that plaintext and sends it before any TLS record. Every
//! received byte the transport still holds is discarded and counted
//! ([`StartTls::discarded`]); those bytes were pipelined after `STARTTLS` without protection
//! and must never surface as TLS plaintext (CVE-2011-0411). Anything the caller itself read
//! from the transport beyond the `STARTTLS` line must be dropped by the caller likewise.
//!
//! # Configuration
//!
//! [`TlsSettings`] → [`TlsAcceptor`] (certificates from PEM with typed errors naming the file,
//! SNI, version floor, suites, groups, resumption, client certificates). A `TlsAcceptor` is
//! shared by every connection of a listener and can be reloaded while serving.
//!
//! ```
//! use smtps_tls::{Transport, TlsSettings};
//! # fn main() -> Result<(), smtps_tls::Error> {
//! # let ck = rcgen::generate_simple_self_signed(vec!["mx.example".into()]).unwrap();
//! # let (cert_pem, key_pem) = (ck.cert.pem(), ck.signing_key.serialize_pem());
//! let acceptor = TlsSettings::new()
//!     .default_certificate(smtps_tls::CertificateSource::pem(cert_pem, key_pem))
//!     .build()?;
//! let mut port_465 = Transport::new_implicit_tls(&acceptor)?;
//! let mut port_587 = Transport::new_plaintext();
//! port_587.write_plaintext(b"220 Ready to start TLS\r\n")?;
//! let upgrade = port_587.start_tls(&acceptor)?;
//! assert_eq!(upgrade.discarded, 0);
//! # let _ = &mut port_465;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Tests may unwrap: a panic there is a test failure, which is what we want.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod acceptor;
mod error;
mod info;
mod pem;
mod resolve;
mod settings;
mod tickets;
mod transport;
mod x509;

pub use acceptor::{CertificateInfo, TlsAcceptor};
pub use error::{ConfigError, Error, PemOrigin, TlsError, UsageError};
pub use info::{ClientCertificate, TlsInfo, received_with_keyword};
pub use resolve::SniResolver;
pub use settings::{
    CaBundle, CertificateSource, ClientAuth, SessionTickets, TlsSettings, TlsVersion,
};
pub use tickets::{TicketKey, TicketKeys};
pub use transport::{PLAINTEXT_BUFFER_LIMIT, StartTls, Transport};

/// The rustls version this crate is built on, re-exported so hosts name the same types.
pub use rustls;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_cross_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Transport>();
        send_sync::<TlsAcceptor>();
        send_sync::<TicketKeys>();
        send_sync::<Error>();
    }
}
