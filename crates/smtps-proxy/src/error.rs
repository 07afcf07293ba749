//! The crate's one error type.

use std::fmt;

/// Why the first octets of a connection are not an acceptable PROXY header. Every error means
/// "refuse the connection": no part of the header applies.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The octets seen so far can start neither a v1 header (`PROXY `) nor a v2 header (the
    /// 12-octet signature).
    NotProxy,
    /// A v1 header has no CRLF within its first 107 octets.
    V1TooLong,
    /// A v1 header breaks the syntax in the named part.
    V1Syntax(V1Field),
    /// A v2 header's version (the high four bits of its 13th octet, given here) is not 2.
    BadVersion(u8),
    /// A v2 header's command (the low four bits of its 13th octet, given here) is neither
    /// LOCAL (0) nor PROXY (1).
    BadCommand(u8),
    /// A v2 header's 14th octet (given here) names no address family and transport the
    /// specification defines.
    BadFamily(u8),
    /// A v2 PROXY header's family (given here) is defined but not supported: AF_UNIX, or
    /// DGRAM (UDP). Only TCP over IPv4 or IPv6 and AF_UNSPEC are.
    UnsupportedFamily(u8),
    /// A v2 header's length field cannot hold the addresses of its declared family.
    BadLength,
    /// A v2 header is longer than [`MAX_V2_HEADER_LEN`](crate::MAX_V2_HEADER_LEN) octets.
    HeaderTooLong,
    /// The v2 TLV of this type is malformed: it runs past the header, its value has the wrong
    /// size or encoding for its type, or (for CRC32C) it appears twice.
    BadTlv(u8),
    /// The PP2_TYPE_CRC32C checksum does not match the header.
    CrcMismatch,
}

/// The part of a v1 header line that is wrong.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum V1Field {
    /// The protocol: not `TCP4`, `TCP6` or `UNKNOWN`.
    Protocol,
    /// The source address (missing, malformed, or not of the declared family).
    Source,
    /// The destination address.
    Destination,
    /// The source port (not a decimal 0–65535 without sign or leading zero).
    SourcePort,
    /// The destination port.
    DestinationPort,
    /// The line end: a bare LF, or a CR not followed by LF.
    LineEnd,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotProxy => f.write_str("not a PROXY protocol header"),
            Self::V1TooLong => f.write_str("PROXY v1 header has no CRLF within 107 octets"),
            Self::V1Syntax(field) => write!(f, "PROXY v1 header: bad {field}"),
            Self::BadVersion(version) => {
                write!(f, "PROXY v2 header: version {version} is not 2")
            }
            Self::BadCommand(command) => {
                write!(
                    f,
                    "PROXY v2 header: command {command:#x} is neither LOCAL nor PROXY"
                )
            }
            Self::BadFamily(family) => {
                write!(
                    f,
                    "PROXY v2 header: undefined family and transport {family:#04x}"
                )
            }
            Self::UnsupportedFamily(family) => write!(
                f,
                "PROXY v2 header: family and transport {family:#04x} not supported (only TCP over IPv4 or IPv6, or AF_UNSPEC)"
            ),
            Self::BadLength => {
                f.write_str("PROXY v2 header: length too short for the declared addresses")
            }
            Self::HeaderTooLong => write!(
                f,
                "PROXY v2 header longer than {} octets",
                crate::MAX_V2_HEADER_LEN
            ),
            Self::BadTlv(kind) => write!(f, "PROXY v2 header: malformed TLV of type {kind:#04x}"),
            Self::CrcMismatch => f.write_str("PROXY v2 header: CRC32C checksum mismatch"),
        }
    }
}

impl fmt::Display for V1Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Protocol => "protocol (TCP4, TCP6 or UNKNOWN)",
            Self::Source => "source address",
            Self::Destination => "destination address",
            Self::SourcePort => "source port",
            Self::DestinationPort => "destination port",
            Self::LineEnd => "line end (CRLF expected)",
        })
    }
}

impl std::error::Error for Error {}
