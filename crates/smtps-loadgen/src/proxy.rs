//! The PROXY protocol header (haproxy `doc/proxy-protocol.txt`) that `--proxy` sends as the
//! first octets of every connection, as a load balancer would: a fake client address from a
//! range, in turn, and the server's address as the destination. Encoded here rather than taken
//! from `smtps-proxy`, so that the load generator stays an independent client.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which header to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`.
    V1,
    /// The binary header: signature, PROXY command, TCP over IPv4 or IPv6, no TLVs.
    V2,
}

impl Version {
    /// The name used on the command line and in the summary.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// A range of fake client addresses, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceRange {
    /// The first address of the range (host bits zero).
    base: IpAddr,
    prefix: u8,
}

impl SourceRange {
    /// The default range for a target of this family: the documentation prefixes
    /// 192.0.2.0/24 (RFC 5737) and 2001:db8::/120 (RFC 3849).
    pub(crate) fn default_for(target: IpAddr) -> Self {
        match target {
            IpAddr::V4(_) => Self {
                base: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)),
                prefix: 24,
            },
            IpAddr::V6(_) => Self {
                base: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)),
                prefix: 120,
            },
        }
    }

    /// Parses `ADDRESS/PREFIX` or a bare address (one host). The host bits are cleared.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("--proxy-source {s}: expected ADDRESS/PREFIX"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("--proxy-source {s}: prefix length 0 to {bits}"))?,
        };
        let base = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Self { base, prefix })
    }

    /// Whether the range is IPv4.
    pub(crate) fn is_ipv4(self) -> bool {
        self.base.is_ipv4()
    }

    /// The `n`th client, cycling over the hosts of the range (without the network and
    /// broadcast addresses of an IPv4 range of four or more, nor the all-zero host of an
    /// IPv6 one), with ports from 1024 up, one step per full cycle: every (address, port)
    /// is distinct for the first hosts × 64,512 connections.
    pub(crate) fn client(self, n: u64) -> SocketAddr {
        let (first, hosts) = self.hosts();
        let host = first + u128::from(n % hosts);
        // Below 65,536 by the modulo.
        let port = u16::try_from(1024 + (n / hosts) % 64_512).unwrap_or(1024);
        let ip = match self.base {
            IpAddr::V4(a) => {
                // Within the range by the modulo: fits in the 32-prefix host bits.
                let host = u32::try_from(host).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(host)))
            }
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(host))),
        };
        SocketAddr::new(ip, port)
    }

    /// `(first host offset, number of hosts)`, the count capped to `u64::MAX`.
    fn hosts(self) -> (u128, u64) {
        let bits = if self.is_ipv4() { 32 } else { 128 };
        let host_bits = bits - u32::from(self.prefix);
        let size = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
        let (first, count) = match (self.is_ipv4(), host_bits) {
            (_, 0) | (true, 1) => (0, size),
            (true, _) => (1, size - 2),
            (false, _) => (1, size - 1),
        };
        (first, u64::try_from(count).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// What every connection of a run sends first.
#[derive(Debug)]
pub(crate) struct Proxy {
    /// v1 or v2.
    pub(crate) version: Version,
    /// The fake clients.
    pub(crate) sources: SourceRange,
    /// Headers made so far, over all threads: the next client.
    next: AtomicU64,
}

impl Proxy {
    /// Headers of `version` with clients from `sources`, from the first host on.
    pub(crate) fn new(version: Version, sources: SourceRange) -> Self {
        Self {
            version,
            sources,
            next: AtomicU64::new(0),
        }
    }

    /// The header for the next connection to `destination`.
    pub(crate) fn next_header(&self, destination: SocketAddr) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        encode(self.version, self.sources.client(n), destination)
    }
}

/// Encodes a PROXY header for a TCP connection from `source` to `destination`. If the families
/// differ, both are sent as IPv6 (an IPv4 address as `::ffff:a.b.c.d`).
pub(crate) fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (src, dst) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d))),
    };
    let (sport, dport) = (source.port(), destination.port());
    match version {
        Version::V1 => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {family} {src} {dst} {sport} {dport}\r\n").into_bytes()
        }
        Version::V2 => {
            let mut out = Vec::with_capacity(52);
            out.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\n");
            // Version 2, PROXY command.
            out.push(0x21);
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    // TCP over IPv4; 4 + 4 + 2 + 2 octets follow.
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    // TCP over IPv6; 16 + 16 + 2 + 2 octets follow.
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&sport.to_be_bytes());
            out.extend_from_slice(&dport.to_be_bytes());
            out
        }
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use smtps_proxy::{Command, Status, parse_header};

    use super::*;

    /// Parses `bytes` back with `smtps-proxy`: the whole of it is one header, with these
    /// addresses.
    fn parses_back(bytes: &[u8], source: SocketAddr, destination: SocketAddr) {
        let Ok(Status::Complete((len, header))) = parse_header(bytes) else {
            panic!("not a complete header: {bytes:?}");
        };
        assert_eq!(len, bytes.len());
        assert_eq!(header.command, Command::Proxy);
        assert!(header.tlvs.as_bytes().is_empty());
        let addresses = header.addresses.unwrap();
        assert_eq!(addresses.source, source);
        assert_eq!(addresses.destination, destination);
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_ipv4_and_ipv6() {
        let (src, dst) = (addr("192.0.2.7:1024"), addr("127.0.0.1:465"));
        let bytes = encode(Version::V1, src, dst);
        assert_eq!(bytes, b"PROXY TCP4 192.0.2.7 127.0.0.1 1024 465\r\n");
        parses_back(&bytes, src, dst);

        let (src, dst) = (addr("[2001:db8::7]:65535"), addr("[::1]:25"));
        let bytes = encode(Version::V1, src, dst);
        assert_eq!(bytes, b"PROXY TCP6 2001:db8::7 ::1 65535 25\r\n");
        parses_back(&bytes, src, dst);
    }

    #[test]
    fn v2_ipv4_and_ipv6() {
        let (src, dst) = (addr("192.0.2.7:1024"), addr("127.0.0.1:465"));
        let bytes = encode(Version::V2, src, dst);
        let mut expected = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        expected.extend_from_slice(&[192, 0, 2, 7, 127, 0, 0, 1, 0x04, 0x00, 0x01, 0xd1]);
        assert_eq!(bytes, expected);
        parses_back(&bytes, src, dst);

        let (src, dst) = (addr("[2001:db8::7]:65535"), addr("[::1]:25"));
        let bytes = encode(Version::V2, src, dst);
        assert_eq!(bytes.len(), 16 + 36);
        assert_eq!(&bytes[12..16], b"\x21\x21\x00\x24");
        assert_eq!(&bytes[48..], &[0xff, 0xff, 0, 25]);
        parses_back(&bytes, src, dst);
    }

    #[test]
    fn mixed_families_go_as_ipv6() {
        let (src, dst) = (addr("[2001:db8::7]:1024"), addr("127.0.0.1:465"));
        let mapped = addr("[::ffff:127.0.0.1]:465");
        for version in [Version::V1, Version::V2] {
            parses_back(&encode(version, src, dst), src, mapped);
        }
    }

    #[test]
    fn the_source_range_cycles_over_its_hosts() {
        let range = SourceRange::parse("192.0.2.99/24").unwrap();
        assert_eq!(range, SourceRange::default_for(addr("127.0.0.1:1").ip()));
        assert_eq!(range.to_string(), "192.0.2.0/24");
        assert_eq!(range.client(0), addr("192.0.2.1:1024"));
        assert_eq!(range.client(253), addr("192.0.2.254:1024"));
        assert_eq!(range.client(254), addr("192.0.2.1:1025"));
        assert_eq!(range.client(254 * 64_512), addr("192.0.2.1:1024"));

        let one = SourceRange::parse("198.51.100.9").unwrap();
        assert_eq!(one.client(5), addr("198.51.100.9:1029"));
        let pair = SourceRange::parse("198.51.100.9/31").unwrap();
        assert_eq!(pair.client(0), addr("198.51.100.8:1024"));
        assert_eq!(pair.client(1), addr("198.51.100.9:1024"));
        assert_eq!(
            SourceRange::parse("0.0.0.0/0").unwrap().client(0).ip(),
            addr("0.0.0.1:1").ip()
        );

        let v6 = SourceRange::default_for(addr("[::1]:1").ip());
        assert_eq!(v6.to_string(), "2001:db8::/120");
        assert_eq!(v6.client(0), addr("[2001:db8::1]:1024"));
        assert_eq!(v6.client(255), addr("[2001:db8::1]:1025"));
        let wide = SourceRange::parse("2001:db8::/32").unwrap();
        assert_eq!(wide.client(70_000), addr("[2001:db8::1:1171]:1024"));
        assert_eq!(
            SourceRange::parse("::/0").unwrap().client(0).ip(),
            addr("[::1]:1").ip()
        );

        assert!(SourceRange::parse("192.0.2.0/33").is_err());
        assert!(SourceRange::parse("2001:db8::/129").is_err());
        assert!(SourceRange::parse("192.0.2.0/").is_err());
        assert!(SourceRange::parse("mx.test/24").is_err());
    }

    #[test]
    fn each_connection_has_the_next_client() {
        let proxy = Proxy::new(Version::V1, SourceRange::parse("192.0.2.0/30").unwrap());
        let dst = addr("127.0.0.1:2525");
        let headers: Vec<Vec<u8>> = (0..3).map(|_| proxy.next_header(dst)).collect();
        assert_eq!(headers[0], b"PROXY TCP4 192.0.2.1 127.0.0.1 1024 2525\r\n");
        assert_eq!(headers[1], b"PROXY TCP4 192.0.2.2 127.0.0.1 1024 2525\r\n");
        assert_eq!(headers[2], b"PROXY TCP4 192.0.2.1 127.0.0.1 1025 2525\r\n");
    }
}
