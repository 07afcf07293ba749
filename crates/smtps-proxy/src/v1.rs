//! The v1 (text) header: `PROXY TCP4|TCP6|UNKNOWN ...\r\n`.
//!
//! The line is read left to right over its first [`MAX_V1_HEADER_LEN`] octets; each field is
//! checked octet by octet (so a wrong octet is an error at once) and decoded only once its
//! delimiter is seen (so a truncated address is never taken for a whole one). Running out of
//! input is `Partial` while fewer than 107 octets are there, and [`Error::V1TooLong`] after.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{
    Addresses, Command, Error, Header, MAX_V1_HEADER_LEN, Status, Tlvs, V1_PREFIX, V1Field,
    Version, starts_with,
};

/// Parses a header whose first octet is `P`.
pub(crate) fn parse(buf: &[u8]) -> Result<Status<(usize, Header<'_>)>, Error> {
    let mut line = Line {
        buf: &buf[..buf.len().min(MAX_V1_HEADER_LEN)],
        pos: 0,
    };
    match line.header() {
        Ok(addresses) => Ok(Status::Complete((
            line.pos,
            Header {
                version: Version::V1,
                command: Command::Proxy,
                addresses,
                tlvs: Tlvs::EMPTY,
            },
        ))),
        Err(Stop::Error(error)) => Err(error),
        Err(Stop::Partial) if buf.len() >= MAX_V1_HEADER_LEN => Err(Error::V1TooLong),
        Err(Stop::Partial) => Ok(Status::Partial),
    }
}

/// Why reading the line stopped.
enum Stop {
    /// The window ended first.
    Partial,
    Error(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Self::Error(error)
    }
}

/// The protocols of a v1 line.
const PROTOCOLS: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];

/// The longest address texts: `255.255.255.255`, and
/// `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
const MAX_IPV4_TEXT: usize = 15;
const MAX_IPV6_TEXT: usize = 45;

/// The longest port, `65535`.
const MAX_PORT_TEXT: usize = 5;

struct Line<'a> {
    /// At most [`MAX_V1_HEADER_LEN`] octets.
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Line<'a> {
    fn header(&mut self) -> Result<Option<Addresses>, Stop> {
        match starts_with(self.buf, V1_PREFIX) {
            Some(true) => self.pos = V1_PREFIX.len(),
            Some(false) => return Err(Error::NotProxy.into()),
            None => return Err(Stop::Partial),
        }
        let protocol = self.protocol()?;
        match protocol {
            b"TCP4" => self.addresses(false).map(Some),
            b"TCP6" => self.addresses(true).map(Some),
            // The only protocol left; anything else was refused octet by octet.
            _ => self.rest_of_unknown().map(|()| None),
        }
    }

    /// Reads the protocol up to (not including) its space or CR.
    fn protocol(&mut self) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        loop {
            let octet = self.peek()?;
            if octet == b' ' || octet == b'\r' {
                break;
            }
            self.pos += 1;
            let seen = &self.buf[start..self.pos];
            if !PROTOCOLS.iter().any(|p| p.starts_with(seen)) {
                return Err(syntax(if octet == b'\n' {
                    V1Field::LineEnd
                } else {
                    V1Field::Protocol
                }));
            }
        }
        let protocol = &self.buf[start..self.pos];
        if PROTOCOLS.contains(&protocol) {
            Ok(protocol)
        } else {
            Err(syntax(V1Field::Protocol))
        }
    }

    /// `UNKNOWN` was read: anything up to the first CR, which must be followed by LF.
    fn rest_of_unknown(&mut self) -> Result<(), Stop> {
        loop {
            match self.next()? {
                b'\r' => return self.line_feed(),
                b'\n' => return Err(syntax(V1Field::LineEnd)),
                _ => {}
            }
        }
    }

    /// ` <src> <dst> <sport> <dport>\r\n` after `TCP4` or `TCP6`.
    fn addresses(&mut self, ipv6: bool) -> Result<Addresses, Stop> {
        if self.next()? != b' ' {
            return Err(syntax(V1Field::Source));
        }
        let source = self.address(ipv6, V1Field::Source)?;
        let destination = self.address(ipv6, V1Field::Destination)?;
        let source_port = self.port(b' ', V1Field::SourcePort)?;
        let destination_port = self.port(b'\r', V1Field::DestinationPort)?;
        self.line_feed()?;
        Ok(Addresses {
            source: SocketAddr::new(source, source_port),
            destination: SocketAddr::new(destination, destination_port),
        })
    }

    /// An address and the space after it.
    fn address(&mut self, ipv6: bool, what: V1Field) -> Result<IpAddr, Stop> {
        let (allowed, max): (fn(u8) -> bool, usize) = if ipv6 {
            (
                |o| o.is_ascii_hexdigit() || o == b':' || o == b'.',
                MAX_IPV6_TEXT,
            )
        } else {
            (|o| o.is_ascii_digit() || o == b'.', MAX_IPV4_TEXT)
        };
        let text = self.field(allowed, max, b' ', what)?;
        // The field is ASCII, hence UTF-8.
        let text = std::str::from_utf8(text).map_err(|_| syntax(what))?;
        // The standard parsers are strict: no leading zeros in IPv4 numbers, exactly 128 bits
        // of IPv6, at most one `::`.
        let address = if ipv6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        address.map_err(|_| syntax(what))
    }

    /// A port and the octet after it (a space, or the CR).
    fn port(&mut self, end: u8, what: V1Field) -> Result<u16, Stop> {
        let digits = self.field(|o| o.is_ascii_digit(), MAX_PORT_TEXT, end, what)?;
        if digits.len() > 1 && digits.starts_with(b"0") {
            return Err(syntax(what)); // no leading zeros (the specification forbids them)
        }
        let mut port: u32 = 0;
        for &digit in digits {
            port = port * 10 + u32::from(digit - b'0');
        }
        u16::try_from(port).map_err(|_| syntax(what))
    }

    /// A non-empty run of `allowed` octets, at most `max` long, then `end` (consumed).
    fn field(
        &mut self,
        allowed: fn(u8) -> bool,
        max: usize,
        end: u8,
        what: V1Field,
    ) -> Result<&'a [u8], Stop> {
        let start = self.pos;
        loop {
            let octet = self.next()?;
            if octet == end {
                let field = &self.buf[start..self.pos - 1];
                return if field.is_empty() {
                    Err(syntax(what))
                } else {
                    Ok(field)
                };
            }
            if octet == b'\n' {
                return Err(syntax(V1Field::LineEnd));
            }
            if !allowed(octet) || self.pos - start > max {
                return Err(syntax(what));
            }
        }
    }

    fn line_feed(&mut self) -> Result<(), Stop> {
        if self.next()? == b'\n' {
            Ok(())
        } else {
            Err(syntax(V1Field::LineEnd))
        }
    }

    fn peek(&self) -> Result<u8, Stop> {
        self.buf.get(self.pos).copied().ok_or(Stop::Partial)
    }

    fn next(&mut self) -> Result<u8, Stop> {
        let octet = self.peek()?;
        self.pos += 1;
        Ok(octet)
    }
}

fn syntax(what: V1Field) -> Stop {
    Stop::Error(Error::V1Syntax(what))
}
