//! The v2 (binary) header: the signature, version and command, family, length, addresses,
//! TLVs.
//!
//! Each fixed octet is checked as soon as it is there; the addresses and TLVs only once the
//! whole header (16 + length octets) is.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{
    Addresses, Command, Error, Header, MAX_V2_HEADER_LEN, Status, Tlvs, V2_SIGNATURE, Version,
    starts_with,
};

/// The fixed part: signature, version and command, family, length.
const FIXED_LEN: usize = 16;

/// Parses a header whose first octet is CR.
pub(crate) fn parse(buf: &[u8]) -> Result<Status<(usize, Header<'_>)>, Error> {
    match starts_with(buf, V2_SIGNATURE) {
        Some(true) => {}
        Some(false) => return Err(Error::NotProxy),
        None => return Ok(Status::Partial),
    }
    let Some(&version_command) = buf.get(12) else {
        return Ok(Status::Partial);
    };
    if version_command >> 4 != 2 {
        return Err(Error::BadVersion(version_command >> 4));
    }
    let command = match version_command & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        other => return Err(Error::BadCommand(other)),
    };
    let Some(&family_octet) = buf.get(13) else {
        return Ok(Status::Partial);
    };
    let family = Family::from_octet(family_octet).ok_or(Error::BadFamily(family_octet))?;
    if command == Command::Proxy && !family.is_supported() {
        return Err(Error::UnsupportedFamily(family_octet));
    }
    let (Some(&high), Some(&low)) = (buf.get(14), buf.get(15)) else {
        return Ok(Status::Partial);
    };
    let len = usize::from(u16::from_be_bytes([high, low]));
    if FIXED_LEN + len > MAX_V2_HEADER_LEN {
        return Err(Error::HeaderTooLong);
    }
    if len < family.address_len() {
        return Err(Error::BadLength);
    }
    let Some(header) = buf.get(..FIXED_LEN + len) else {
        return Ok(Status::Partial);
    };
    let addresses = match command {
        Command::Local => None,
        Command::Proxy => family.addresses(&header[FIXED_LEN..])?,
    };
    let tlvs = Tlvs::parse(header, FIXED_LEN + family.address_len())?;
    Ok(Status::Complete((
        header.len(),
        Header {
            version: Version::V2,
            command,
            addresses,
            tlvs,
        },
    )))
}

/// The family and transport octet's defined values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `0x00`.
    Unspecified,
    /// `0x11` (TCP) or `0x12` (UDP, `datagram`).
    Ipv4 { datagram: bool },
    /// `0x21` or `0x22`.
    Ipv6 { datagram: bool },
    /// `0x31` or `0x32`.
    Unix,
}

impl Family {
    fn from_octet(octet: u8) -> Option<Self> {
        Some(match octet {
            0x00 => Self::Unspecified,
            0x11 | 0x12 => Self::Ipv4 {
                datagram: octet == 0x12,
            },
            0x21 | 0x22 => Self::Ipv6 {
                datagram: octet == 0x22,
            },
            0x31 | 0x32 => Self::Unix,
            _ => return None,
        })
    }

    /// Whether a PROXY command may carry it.
    fn is_supported(self) -> bool {
        matches!(
            self,
            Self::Unspecified | Self::Ipv4 { datagram: false } | Self::Ipv6 { datagram: false }
        )
    }

    /// The octets of its address block.
    fn address_len(self) -> usize {
        match self {
            Self::Unspecified => 0,
            Self::Ipv4 { .. } => 2 * 4 + 2 * 2,
            Self::Ipv6 { .. } => 2 * 16 + 2 * 2,
            Self::Unix => 2 * 108,
        }
    }

    /// Decodes the address block at the start of `block` (a supported family's).
    fn addresses(self, block: &[u8]) -> Result<Option<Addresses>, Error> {
        fn ports(block: &[u8]) -> Result<(u16, u16), Error> {
            let Some((source, rest)) = block.split_first_chunk::<2>() else {
                return Err(Error::BadLength);
            };
            let Some((destination, _)) = rest.split_first_chunk::<2>() else {
                return Err(Error::BadLength);
            };
            Ok((
                u16::from_be_bytes(*source),
                u16::from_be_bytes(*destination),
            ))
        }
        let (source, destination, rest) = match self {
            Self::Ipv4 { .. } => {
                let Some((source, rest)) = block.split_first_chunk::<4>() else {
                    return Err(Error::BadLength);
                };
                let Some((destination, rest)) = rest.split_first_chunk::<4>() else {
                    return Err(Error::BadLength);
                };
                (
                    Ipv4Addr::from(*source).into(),
                    Ipv4Addr::from(*destination).into(),
                    rest,
                )
            }
            Self::Ipv6 { .. } => {
                let Some((source, rest)) = block.split_first_chunk::<16>() else {
                    return Err(Error::BadLength);
                };
                let Some((destination, rest)) = rest.split_first_chunk::<16>() else {
                    return Err(Error::BadLength);
                };
                (
                    Ipv6Addr::from(*source).into(),
                    Ipv6Addr::from(*destination).into(),
                    rest,
                )
            }
            Self::Unspecified | Self::Unix => return Ok(None),
        };
        let (source_port, destination_port) = ports(rest)?;
        Ok(Some(Addresses {
            source: SocketAddr::new(source, source_port),
            destination: SocketAddr::new(destination, destination_port),
        }))
    }
}
