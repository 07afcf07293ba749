//! The `proxy_header` target: [`smtps_proxy::parse_header`] on arbitrary first octets, and
//! v1/v2 encodings of the same addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smtps_proxy::{
    Command, Error, Header, MAX_V1_HEADER_LEN, MAX_V2_HEADER_LEN, Status, Tlv, V2_SIGNATURE,
    Version, crc32c, parse_header,
};

use crate::wire::show;

type Parsed<'a> = Result<Status<(usize, Header<'a>)>, Error>;

/// Parses `data` as the first octets of a connection, then checks v1 against v2.
///
/// Input: raw octets, parsed as they are (seeds are real headers). The same octets are also
/// read as a structured choice for the differential check: octet 0 bit 0 picks IPv4 or IPv6,
/// the next 4 or 16 octets are the source address, as many the destination, 2 + 2 the ports
/// (missing octets are zero), and what is left (at most 1,000 octets) becomes a TLV value.
///
/// Checks, on the raw octets: no panic; a complete header took at most `data.len()` octets
/// (and at most the version's limit); parsing only those octets, or the input with one more
/// octet appended, gives the same header; every prefix parses to `Partial` or to the same
/// result, `Partial` exactly until the header's last octet; `Partial` only below the v2 limit;
/// a v1 header is PROXY without TLVs; the TLVs iterate over exactly their octets.
/// Differential: the chosen addresses, as a v1 line and as a v2 header (plain, and with the
/// TLV and a CRC32C), parse to equal addresses, the ones chosen.
///
/// # Panics
/// When a check fails.
pub fn proxy_header(data: &[u8]) {
    check_raw(data);
    differential(data);
}

fn check_raw(data: &[u8]) {
    let parsed = parse_header(data);
    match parsed {
        Ok(Status::Complete((taken, header))) => {
            assert!(taken <= data.len(), "took {taken} of {} octets", data.len());
            let limit = match header.version {
                Version::V1 => MAX_V1_HEADER_LEN,
                _ => MAX_V2_HEADER_LEN,
            };
            assert!(
                taken <= limit,
                "{:?} header of {taken} octets",
                header.version
            );
            assert_eq!(
                parse_header(&data[..taken]),
                parsed,
                "the header alone parses differently: {}",
                show(data)
            );
            let mut longer = data.to_vec();
            longer.push(b'\n');
            assert_eq!(
                parse_header(&longer),
                parsed,
                "one more octet: {}",
                show(data)
            );
            if header.version == Version::V1 {
                assert_eq!(header.command, Command::Proxy);
                assert!(header.tlvs.is_empty());
            }
            let rebuilt: usize = header.tlvs.iter().map(|t| 3 + t.value.len()).sum();
            assert_eq!(rebuilt, header.tlvs.as_bytes().len(), "TLVs lost octets");
        }
        Ok(Status::Partial) => assert!(
            data.len() < MAX_V2_HEADER_LEN,
            "Partial after {} octets",
            data.len()
        ),
        Err(_) => {}
    }
    check_prefixes(data, &parsed);
}

/// Every prefix parses to `Partial` or to `full`, and once one decides, every longer one
/// does; all prefixes up to 300 octets, then two more.
fn check_prefixes(data: &[u8], full: &Parsed<'_>) {
    let complete_at = match full {
        Ok(Status::Complete((len, _))) => Some(*len),
        _ => None,
    };
    let mut decided = None;
    let len = data.len();
    let splits = (0..len).filter(|&k| k <= 300 || k == len / 2 || k + 1 == len);
    for split in splits {
        let part = parse_header(&data[..split]);
        if part == Ok(Status::Partial) {
            assert!(
                decided.is_none(),
                "Partial at {split} after deciding at {decided:?}: {}",
                show(data)
            );
            if let Some(len) = complete_at {
                assert!(split < len, "Partial at {split} with all {len} octets");
            }
        } else {
            assert_eq!(&part, full, "split at {split}: {}", show(data));
            decided.get_or_insert(split);
        }
    }
}

fn differential(data: &[u8]) {
    let mut octets = data.iter().copied();
    let mut next = || octets.next().unwrap_or(0);
    let ipv6 = next() & 1 == 1;
    let mut ip = || -> IpAddr {
        if ipv6 {
            Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|_| next())).into()
        } else {
            Ipv4Addr::from(std::array::from_fn::<u8, 4, _>(|_| next())).into()
        }
    };
    let (source_ip, destination_ip) = (ip(), ip());
    let source = SocketAddr::new(source_ip, u16::from_be_bytes([next(), next()]));
    let destination = SocketAddr::new(destination_ip, u16::from_be_bytes([next(), next()]));
    let used = if ipv6 { 1 + 36 } else { 1 + 12 };
    let rest = data.get(used..).unwrap_or_default();
    let value = &rest[..rest.len().min(1000)];

    let text = v1_line(source, destination);
    let plain = v2_header(source, destination, &[]);
    let mut tlvs = tlv(0xe0, value);
    tlvs.extend_from_slice(&tlv(Tlv::CRC32C, &[0; 4]));
    let checked = with_crc(v2_header(source, destination, &tlvs));
    let want = Some((source, destination));
    for (name, input) in [
        ("v1", text.as_bytes()),
        ("v2", &plain),
        ("v2+crc", &checked),
    ] {
        let Ok(Status::Complete((len, header))) = parse_header(input) else {
            panic!(
                "{name} of {source} {destination}: {:?}",
                parse_header(input)
            );
        };
        assert_eq!(len, input.len(), "{name}");
        let got = header.addresses.map(|a| (a.source, a.destination));
        assert_eq!(got, want, "{name}: {}", show(input));
    }
    let Ok(Status::Complete((_, header))) = parse_header(&checked) else {
        return;
    };
    assert_eq!(header.tlvs.find(0xe0), Some(value));
    assert!(header.tlvs.crc32c().is_some());
}

/// The v1 line for `source` and `destination` (of the same family).
pub fn v1_line(source: SocketAddr, destination: SocketAddr) -> String {
    let protocol = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {protocol} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
}

/// A v2 PROXY header for `source` and `destination` (of the same family), then `tlvs`.
///
/// # Panics
/// If the header does not fit the length field.
#[must_use]
pub fn v2_header(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for ip in [source.ip(), destination.ip()] {
        match ip {
            IpAddr::V4(v4) => body.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => body.extend_from_slice(&v6.octets()),
        }
    }
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    body.extend_from_slice(tlvs);
    let family = if source.is_ipv4() { 0x11 } else { 0x21 };
    v2_raw(0x21, family, &body)
}

/// A v2 header with `version_command`, `family` and `body` (addresses and TLVs).
///
/// # Panics
/// If `body` does not fit the length field.
#[must_use]
pub fn v2_raw(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("body fits the length field");
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[version_command, family]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A TLV of type `kind`.
///
/// # Panics
/// If `value` is longer than 65,535 octets.
#[must_use]
pub fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(value.len()).expect("value fits the length field");
    let mut out = vec![kind];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Fills in the CRC32C of a header whose last TLV is a zeroed PP2_TYPE_CRC32C.
///
/// # Panics
/// If `header` is shorter than 4 octets.
#[must_use]
pub fn with_crc(mut header: Vec<u8>) -> Vec<u8> {
    let crc = crc32c(&header);
    let at = header.len().saturating_sub(4);
    header[at..].copy_from_slice(&crc.to_be_bytes());
    header
}
