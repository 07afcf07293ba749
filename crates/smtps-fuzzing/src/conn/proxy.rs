//! The PROXY protocol header a `conn` input may put in front of the client's stream
//! ([`ConnInput::proxy`](super::ConnInput::proxy)): a v1 or v2 header generated from fuzzed
//! fields — well-formed by construction, or with one known flaw — or raw octets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use smtps_proxy::{Command, Error, Ssl, Status, Tlv, Version, parse_header};

use super::short;
use crate::proxy::{tlv, v1_line, v2_raw, with_crc};

/// The header the balancer in front of the client sends first. The byte encoding is that of
/// [`ProxySpec::encode_into`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxySpec {
    /// `PROXY TCP4|TCP6 <source> <destination> <ports>\r\n` (`TCP6` when the addresses are
    /// IPv6; both must be of one family).
    V1 {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to.
        destination: SocketAddr,
    },
    /// `PROXY UNKNOWN\r\n`, or with the text of these addresses after `UNKNOWN` (haproxy
    /// sends them): no addresses either way.
    V1Unknown {
        /// The addresses written after `UNKNOWN`, which the receiver must ignore.
        trailer: Option<(SocketAddr, SocketAddr)>,
    },
    /// A binary header.
    V2(V2Spec),
    /// These octets as they are: a missing, truncated or malformed header, or anything.
    Raw(Vec<u8>),
}

/// A v2 [`ProxySpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Spec {
    /// LOCAL (a health check: the addresses, if any, are not reported) rather than PROXY.
    pub local: bool,
    /// The TCP addresses (both of one family), or `None`: AF_UNSPEC, no address block.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// The TLVs, in order; at most [`MAX_TLVS`] are encoded.
    pub tlvs: Vec<TlvSpec>,
    /// A PP2_TYPE_CRC32C TLV after the others: `Some(true)` with the right checksum,
    /// `Some(false)` with one bit of it flipped (a bad header: [`Error::CrcMismatch`]).
    pub crc: Option<bool>,
}

/// A TLV of a [`V2Spec`], valid for its type by construction ([`TlvSpec::octets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlvSpec {
    /// Picks the type (modulo 8): ALPN, AUTHORITY, NOOP, UNIQUE_ID, SSL, NETNS, or a custom
    /// type `0xe0 | (kind >> 3 & 0x0f)`.
    pub kind: u8,
    /// The value's octets before they are fitted to the type.
    pub value: Vec<u8>,
}

/// The most TLVs a [`V2Spec`] encodes.
pub const MAX_TLVS: usize = 4;

/// What the engine must make of a generated header: [`Connection::proxy_header`] gives
/// exactly this.
///
/// [`Connection::proxy_header`]: smtps_conn::Connection::proxy_header
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The header's version.
    pub version: Version,
    /// LOCAL or PROXY.
    pub command: Command,
    /// The addresses reported (none for LOCAL, UNKNOWN and AF_UNSPEC).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// The TLVs' octets as sent (CRC32C included).
    pub tlvs: Vec<u8>,
}

/// Kind octet: low two bits pick v1 (0), v2 (1 or 2) or raw (3).
const KIND_IPV6: u8 = 1 << 2;
/// v1: UNKNOWN; v2: LOCAL.
const KIND_UNKNOWN_OR_LOCAL: u8 = 1 << 3;
/// v1 UNKNOWN: with the addresses after it; v2: with a CRC32C TLV.
const KIND_TRAILER_OR_CRC: u8 = 1 << 4;
/// v2: the CRC32C is wrong.
const KIND_BAD_CRC: u8 = 1 << 5;
/// v2: AF_UNSPEC.
const KIND_UNSPEC: u8 = 1 << 6;

impl<'a> Arbitrary<'a> for ProxySpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let kind: u8 = u.arbitrary()?;
        let ipv6 = kind & KIND_IPV6 != 0;
        Ok(match kind & 3 {
            0 if kind & KIND_UNKNOWN_OR_LOCAL == 0 => {
                let (source, destination) = pair(u, ipv6)?;
                Self::V1 {
                    source,
                    destination,
                }
            }
            0 => Self::V1Unknown {
                trailer: if kind & KIND_TRAILER_OR_CRC != 0 {
                    Some(pair(u, ipv6)?)
                } else {
                    None
                },
            },
            3 => Self::Raw(short(u)?),
            _ => {
                let addresses = if kind & KIND_UNSPEC == 0 {
                    Some(pair(u, ipv6)?)
                } else {
                    None
                };
                let count: u8 = u.arbitrary()?;
                let mut tlvs = Vec::new();
                for _ in 0..usize::from(count) % (MAX_TLVS + 1) {
                    tlvs.push(TlvSpec {
                        kind: u.arbitrary()?,
                        value: short(u)?,
                    });
                }
                Self::V2(V2Spec {
                    local: kind & KIND_UNKNOWN_OR_LOCAL != 0,
                    addresses,
                    tlvs,
                    crc: (kind & KIND_TRAILER_OR_CRC != 0).then_some(kind & KIND_BAD_CRC == 0),
                })
            }
        })
    }
}

/// Two addresses of one family: 4 or 16 octets each, then the two ports (big-endian); missing
/// octets are zero.
fn pair(u: &mut Unstructured<'_>, ipv6: bool) -> arbitrary::Result<(SocketAddr, SocketAddr)> {
    let mut ip = || -> arbitrary::Result<IpAddr> {
        Ok(if ipv6 {
            Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?).into()
        } else {
            Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?).into()
        })
    };
    let (source, destination) = (ip()?, ip()?);
    let source_port = u16::from_be_bytes(u.arbitrary()?);
    let destination_port = u16::from_be_bytes(u.arbitrary()?);
    Ok((
        SocketAddr::new(source, source_port),
        SocketAddr::new(destination, destination_port),
    ))
}

impl ProxySpec {
    /// Appends the encoding that `Arbitrary` reads back unchanged: a kind octet (bits 0–1: v1
    /// 0, v2 1, raw 3; bit 2: IPv6; bit 3: UNKNOWN / LOCAL; bit 4: UNKNOWN's address trailer /
    /// a CRC32C; bit 5: a wrong CRC32C; bit 6: AF_UNSPEC), then the addresses (4 or 16 octets
    /// each, two big-endian ports), and for v2 a TLV count and the TLVs (type octet, length
    /// octet, value); raw octets are a length octet and the octets. Byte strings longer than
    /// 255 octets are cut.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let ipv6 = |(source, _): &(SocketAddr, SocketAddr)| {
            if source.is_ipv6() { KIND_IPV6 } else { 0 }
        };
        match self {
            Self::V1 {
                source,
                destination,
            } => {
                let pair = (*source, *destination);
                out.push(ipv6(&pair));
                encode_pair(&pair, out);
            }
            Self::V1Unknown { trailer: None } => out.push(KIND_UNKNOWN_OR_LOCAL),
            Self::V1Unknown {
                trailer: Some(pair),
            } => {
                out.push(KIND_UNKNOWN_OR_LOCAL | KIND_TRAILER_OR_CRC | ipv6(pair));
                encode_pair(pair, out);
            }
            Self::V2(spec) => {
                let mut kind = 1;
                kind |= spec.addresses.as_ref().map_or(KIND_UNSPEC, ipv6);
                if spec.local {
                    kind |= KIND_UNKNOWN_OR_LOCAL;
                }
                match spec.crc {
                    Some(true) => kind |= KIND_TRAILER_OR_CRC,
                    Some(false) => kind |= KIND_TRAILER_OR_CRC | KIND_BAD_CRC,
                    None => {}
                }
                out.push(kind);
                if let Some(pair) = &spec.addresses {
                    encode_pair(pair, out);
                }
                let tlvs = &spec.tlvs[..spec.tlvs.len().min(MAX_TLVS)];
                out.push(u8::try_from(tlvs.len()).unwrap_or_default());
                for tlv in tlvs {
                    out.push(tlv.kind);
                    encode_bytes(&tlv.value, out);
                }
            }
            Self::Raw(bytes) => {
                out.push(3);
                encode_bytes(bytes, out);
            }
        }
    }

    /// The octets on the wire.
    #[must_use]
    pub fn octets(&self) -> Vec<u8> {
        match self {
            Self::V1 {
                source,
                destination,
            } => v1_line(*source, *destination).into_bytes(),
            Self::V1Unknown { trailer: None } => b"PROXY UNKNOWN\r\n".to_vec(),
            Self::V1Unknown {
                trailer: Some((source, destination)),
            } => {
                let line = v1_line(*source, *destination);
                let addresses = line.get("PROXY TCP4 ".len()..).unwrap_or_default();
                format!("PROXY UNKNOWN {addresses}").into_bytes()
            }
            Self::V2(spec) => spec.octets(),
            Self::Raw(bytes) => bytes[..bytes.len().min(255)].to_vec(),
        }
    }

    /// What a receiver must make of [`ProxySpec::octets`]: the header, or the error a
    /// deliberately bad one gives; `None` for raw octets.
    #[must_use]
    pub fn expected(&self) -> Option<Result<Expected, Error>> {
        let v1 = |addresses| Expected {
            version: Version::V1,
            command: Command::Proxy,
            addresses,
            tlvs: Vec::new(),
        };
        match self {
            Self::V1 {
                source,
                destination,
            } => Some(Ok(v1(Some((*source, *destination))))),
            Self::V1Unknown { .. } => Some(Ok(v1(None))),
            Self::V2(V2Spec {
                crc: Some(false), ..
            }) => Some(Err(Error::CrcMismatch)),
            Self::V2(spec) => {
                let octets = spec.octets();
                let start = 16 + spec.addresses.as_ref().map_or(0, |(s, _)| block_len(s));
                Some(Ok(Expected {
                    version: Version::V2,
                    command: if spec.local {
                        Command::Local
                    } else {
                        Command::Proxy
                    },
                    addresses: spec.addresses.filter(|_| !spec.local),
                    tlvs: octets.get(start..).unwrap_or_default().to_vec(),
                }))
            }
            Self::Raw(_) => None,
        }
    }
}

impl V2Spec {
    /// The header's octets.
    #[must_use]
    pub fn octets(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let family = match &self.addresses {
            None => 0x00,
            Some((source, destination)) => {
                for ip in [source.ip(), destination.ip()] {
                    match ip {
                        IpAddr::V4(v4) => body.extend_from_slice(&v4.octets()),
                        IpAddr::V6(v6) => body.extend_from_slice(&v6.octets()),
                    }
                }
                body.extend_from_slice(&source.port().to_be_bytes());
                body.extend_from_slice(&destination.port().to_be_bytes());
                if source.is_ipv4() { 0x11 } else { 0x21 }
            }
        };
        for spec in self.tlvs.iter().take(MAX_TLVS) {
            body.extend_from_slice(&spec.octets());
        }
        if self.crc.is_some() {
            body.extend_from_slice(&tlv(Tlv::CRC32C, &[0; 4]));
        }
        let command = if self.local { 0x20 } else { 0x21 };
        let header = v2_raw(command, family, &body);
        match self.crc {
            None => header,
            Some(right) => {
                let mut header = with_crc(header);
                if !right && let Some(last) = header.last_mut() {
                    *last ^= 1;
                }
                header
            }
        }
    }
}

impl TlvSpec {
    /// The TLV's octets: type, length and a value of the shape its type requires (text for
    /// AUTHORITY and NETNS, at most 128 octets for UNIQUE_ID, the fixed part and a version
    /// and common-name sub-TLV for SSL).
    #[must_use]
    pub fn octets(&self) -> Vec<u8> {
        let value = &self.value[..self.value.len().min(255)];
        match self.kind % 8 {
            0 => tlv(Tlv::ALPN, value),
            1 => tlv(Tlv::AUTHORITY, &text(value)),
            2 => tlv(Tlv::NOOP, value),
            3 => tlv(Tlv::UNIQUE_ID, &value[..value.len().min(128)]),
            4 => {
                // Client flags, then the 4-octet verify result.
                let mut ssl = [0; 5];
                let fixed = value.len().min(5);
                ssl[..fixed].copy_from_slice(&value[..fixed]);
                let ssl = [
                    &ssl[..],
                    &tlv(Ssl::VERSION, b"TLSv1.3"),
                    &tlv(Ssl::COMMON_NAME, &text(&value[fixed..])),
                ]
                .concat();
                tlv(Tlv::SSL, &ssl)
            }
            5 => tlv(Tlv::NETNS, &text(value)),
            _ => tlv(0xe0 | (self.kind >> 3 & 0x0f), value),
        }
    }
}

/// Whether `octets` are exactly one complete header (nothing before or after it).
#[must_use]
pub(super) fn is_one_header(octets: &[u8]) -> bool {
    matches!(parse_header(octets), Ok(Status::Complete((len, _))) if len == octets.len())
}

/// Octets mapped onto host-name characters.
fn text(value: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789.-";
    value
        .iter()
        .map(|&b| ALPHABET[usize::from(b) % ALPHABET.len()])
        .collect()
}

/// The octets of a v2 address block for this family.
fn block_len(source: &SocketAddr) -> usize {
    if source.is_ipv4() { 12 } else { 36 }
}

fn encode_pair((source, destination): &(SocketAddr, SocketAddr), out: &mut Vec<u8>) {
    for ip in [source.ip(), destination.ip()] {
        match ip {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    let bytes = &bytes[..bytes.len().min(255)];
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}
