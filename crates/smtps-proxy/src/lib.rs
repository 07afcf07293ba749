//! A sans-IO parser for the PROXY protocol header (haproxy `doc/proxy-protocol.txt`), version
//! 1 (text) and version 2 (binary), that a load balancer puts before the first octet of the
//! client's stream.
//!
//! # The contract
//!
//! - **Input:** the octets received on a connection so far, from the first one. The parser
//!   keeps no state: call [`parse_header`] again with the same octets plus the new ones.
//! - **Output:** [`Status::Complete`]`((len, header))` — the first `len` octets are the header;
//!   drop exactly those and hand the rest to TLS or SMTP. [`Status::Partial`] — the octets
//!   could still start a valid header; read more (with a timeout: the specification suggests a
//!   few seconds). `Err(_)` — refuse the connection; no part of the header applies. An error
//!   comes as soon as the octets seen decide it: [`Error::NotProxy`] from the first octet that
//!   can start neither version, and syntax errors at the octet that breaks the syntax.
//! - **Buffers:** the caller owns the buffer; the [`Header`] borrows it for its TLVs. A header
//!   is at most [`MAX_V1_HEADER_LEN`] (v1) or [`MAX_V2_HEADER_LEN`] (v2) octets, so a buffer of
//!   `MAX_V2_HEADER_LEN` octets is enough; longer ones are errors, found without waiting for
//!   more input. Nothing is allocated.
//!
//! A listener either expects the header on every connection or on none: the specification
//! forbids guessing, which would let any client spoof its address.
//!
//! ```
//! use smtps_proxy::{Command, Status, parse_header};
//!
//! let received = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 465\r\n\x16\x03\x01";
//! let Ok(Status::Complete((len, header))) = parse_header(received) else {
//!     panic!("a complete header");
//! };
//! assert_eq!(header.command, Command::Proxy);
//! let addresses = header.addresses.expect("TCP4 has addresses");
//! assert_eq!(addresses.source.to_string(), "192.0.2.1:56324");
//! assert_eq!(&received[len..], b"\x16\x03\x01"); // the TLS ClientHello starts here
//! ```
//!
//! # What is accepted
//!
//! - **v1:** `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` with single spaces, addresses of
//!   the declared family, decimal ports 0–65535 without sign or leading zero, and
//!   `PROXY UNKNOWN\r\n` or `PROXY UNKNOWN <any octets but CR and LF>\r\n` (no addresses).
//!   At most 107 octets. A bare LF, or a CR without LF, is an error.
//! - **v2:** version 2; LOCAL (no addresses, the family is ignored but must be defined) or
//!   PROXY with TCP over IPv4 or IPv6 (addresses) or AF_UNSPEC (no addresses). A PROXY header
//!   for AF_UNIX or UDP is [`Error::UnsupportedFamily`]. TLVs after the addresses are checked
//!   for structure, PP2_TYPE_CRC32C is verified, and [`Tlvs`] reads them without allocating;
//!   see [`Tlvs`] for the checks on each registered type.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::net::SocketAddr;

mod crc32c;
mod error;
mod network;
mod tlv;
mod v1;
mod v2;

pub use crc32c::crc32c;
pub use error::{Error, V1Field};
pub use network::{Network, NetworkError};
pub use tlv::{Ssl, SslClient, Tlv, TlvIter, Tlvs};

/// The longest v1 header, CRLF included (the specification's worst case).
pub const MAX_V1_HEADER_LEN: usize = 107;

/// The longest v2 header accepted, its 16 fixed octets included. The length field allows
/// 65,551; real proxies send well under a kilobyte (addresses, a few TLVs, a certificate's
/// common name), so anything longer is refused as [`Error::HeaderTooLong`].
pub const MAX_V2_HEADER_LEN: usize = 4096;

/// The first octets of a v1 header.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// The 12-octet signature that starts a v2 header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The outcome of a parse that did not fail. Deliberately exhaustive, like httparse's: there
/// is no third state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// The parse is done.
    Complete(T),
    /// The octets seen so far are a valid beginning; more are needed.
    Partial,
}

/// A parsed PROXY header. It borrows the buffer it was parsed from (for the TLVs).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Which version of the protocol it was.
    pub version: Version,
    /// LOCAL or PROXY; v1 headers are always PROXY.
    pub command: Command,
    /// The client's and the proxy's addresses; `None` for LOCAL, v1 `UNKNOWN` and v2
    /// AF_UNSPEC (use the connection's own addresses then).
    pub addresses: Option<Addresses>,
    /// The v2 TLVs after the addresses, already checked; always empty for v1.
    pub tlvs: Tlvs<'a>,
}

impl Header<'_> {
    /// An owned copy, for keeping after the buffer it was parsed from is gone.
    #[must_use]
    pub fn to_owned_header(&self) -> OwnedHeader {
        OwnedHeader {
            version: self.version,
            command: self.command,
            addresses: self.addresses,
            tlvs: self.tlvs.as_bytes().into(),
        }
    }
}

/// A [`Header`] that owns its TLVs: what a session keeps for its whole life.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedHeader {
    /// Which version of the protocol it was.
    pub version: Version,
    /// LOCAL or PROXY.
    pub command: Command,
    /// The client's and the proxy's addresses; `None` for LOCAL, v1 `UNKNOWN` and v2
    /// AF_UNSPEC.
    pub addresses: Option<Addresses>,
    tlvs: Box<[u8]>,
}

impl OwnedHeader {
    /// The TLVs, as checked when the header was parsed.
    #[must_use]
    pub fn tlvs(&self) -> Tlvs<'_> {
        Tlvs::checked(&self.tlvs)
    }
}

/// The protocol version of a header.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The text header, `PROXY ...\r\n`.
    V1,
    /// The binary header, starting with [`V2_SIGNATURE`].
    V2,
}

/// What the proxy says about the connection.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// The proxy opened the connection itself (a health check): use the connection's own
    /// addresses.
    Local,
    /// The connection is relayed for a client.
    Proxy,
}

/// The endpoints of the relayed connection.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addresses {
    /// The client's address and port.
    pub source: SocketAddr,
    /// The address and port the client connected to (on the proxy).
    pub destination: SocketAddr,
}

/// Parses a PROXY header, v1 or v2, from the first octets of a connection.
///
/// Returns the header and its length in octets once complete, [`Status::Partial`] while the
/// octets could still begin a valid header, or the first thing wrong with them. See the
/// [crate documentation](crate) for the contract.
///
/// # Errors
/// Any [`Error`]: the connection is to be refused.
pub fn parse_header(buf: &[u8]) -> Result<Status<(usize, Header<'_>)>, Error> {
    match buf.first() {
        None => Ok(Status::Partial),
        Some(&first) if first == V1_PREFIX[0] => v1::parse(buf),
        Some(&first) if first == V2_SIGNATURE[0] => v2::parse(buf),
        Some(_) => Err(Error::NotProxy),
    }
}

/// Whether `buf` starts with `prefix`: `Some(true)`, `Some(false)`, or `None` if `buf` is a
/// proper prefix of `prefix` (undecided).
fn starts_with(buf: &[u8], prefix: &[u8]) -> Option<bool> {
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        Some(false)
    } else if n < prefix.len() {
        None
    } else {
        Some(true)
    }
}

#[cfg(test)]
mod tests;
