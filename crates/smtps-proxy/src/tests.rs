//! Tables of valid and invalid v1 and v2 headers, each also split at every octet boundary;
//! the v1/v2 differential; generated headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

/// What a table case must parse to.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A complete header of `len` octets.
    Complete {
        len: usize,
        version: Version,
        command: Command,
        /// Source and destination as `SocketAddr` text.
        addresses: Option<(&'static str, &'static str)>,
    },
    Partial,
    Error(Error),
}

fn v1_ok(len: usize, addresses: Option<(&'static str, &'static str)>) -> Expect {
    Expect::Complete {
        len,
        version: Version::V1,
        command: Command::Proxy,
        addresses,
    }
}

fn v2_ok(len: usize, command: Command, addresses: Option<(&'static str, &'static str)>) -> Expect {
    Expect::Complete {
        len,
        version: Version::V2,
        command,
        addresses,
    }
}

/// Checks one case whole, with trailing octets, and split at every boundary.
fn check(name: &str, input: &[u8], expect: Expect) {
    let parsed = parse_header(input);
    match expect {
        Expect::Complete {
            len,
            version,
            command,
            addresses,
        } => {
            let Ok(Status::Complete((taken, header))) = parsed else {
                panic!("{name}: expected a complete header, got {parsed:?}");
            };
            assert_eq!(taken, len, "{name}: length");
            assert_eq!(header.version, version, "{name}: version");
            assert_eq!(header.command, command, "{name}: command");
            let got = header
                .addresses
                .map(|a| (a.source.to_string(), a.destination.to_string()));
            let want = addresses.map(|(s, d)| (s.to_owned(), d.to_owned()));
            assert_eq!(got, want, "{name}: addresses");
            // Octets after the header (the TLS ClientHello, or SMTP) are not taken.
            for tail in [
                &b"\x16\x03\x01\x02\x00"[..],
                b"EHLO x\r\n",
                b"\r\n",
                b"PROXY ",
            ] {
                let mut longer = input.to_vec();
                longer.extend_from_slice(tail);
                assert_eq!(parse_header(&longer), parsed, "{name}: with {tail:?} after");
            }
        }
        Expect::Partial => assert_eq!(parsed, Ok(Status::Partial), "{name}"),
        Expect::Error(error) => assert_eq!(parsed, Err(error), "{name}"),
    }
    assert_prefixes_agree(name, input);
}

/// Every prefix of `input` (the input split at that boundary, first part) parses to `Partial`
/// or to what the whole input parses to; a complete header is `Partial` exactly until its
/// last octet, and once a prefix decides, every longer one decides the same.
fn assert_prefixes_agree(name: &str, input: &[u8]) {
    let full = parse_header(input);
    let mut decided = None;
    for split in 0..=input.len() {
        let part = parse_header(&input[..split]);
        if part == Ok(Status::Partial) {
            assert!(
                decided.is_none(),
                "{name}: Partial at {split} after deciding at {decided:?}"
            );
            if let Ok(Status::Complete((len, _))) = full {
                assert!(
                    split < len,
                    "{name}: Partial at {split} with all {len} octets"
                );
            }
        } else {
            assert_eq!(part, full, "{name}: split at {split}");
            decided.get_or_insert(split);
        }
    }
}

// A small v2 encoder, for tests only.

const PROXY: u8 = 0x21;
const LOCAL: u8 = 0x20;
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
const UNSPEC: u8 = 0x00;

/// A v2 header: signature, `version_command`, `family`, the length of `body`, `body`.
fn v2(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("test body fits the length field");
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[version_command, family]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// [`v2`] with a PP2_TYPE_CRC32C TLV appended to `body` and filled in.
fn v2_crc(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    body.extend_from_slice(&tlv(Tlv::CRC32C, &[0; 4]));
    let mut out = v2(version_command, family, &body);
    let crc = crc32c(&out);
    let at = out.len() - 4;
    out[at..].copy_from_slice(&crc.to_be_bytes());
    out
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(value.len()).expect("test value fits");
    let mut out = vec![kind];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// An address block for `source` and `destination` (both IPv4 or both IPv6).
fn block(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::new();
    for address in [source.ip(), destination.ip()] {
        match address {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn v1_valid_headers_give_their_addresses() {
    let long6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let tcp6_max = format!("PROXY TCP6 {long6} {long6} 65535 65535\r\n");
    let cases: &[(&str, &[u8], Expect)] = &[
        (
            "spec example",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            v1_ok(47, Some(("192.168.0.1:56324", "192.168.0.11:443"))),
        ),
        (
            "tcp4 longest (56 octets)",
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
            v1_ok(56, Some(("255.255.255.255:65535", "255.255.255.255:65535"))),
        ),
        (
            "tcp4 zeros",
            b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
            v1_ok(32, Some(("0.0.0.0:0", "0.0.0.0:0"))),
        ),
        (
            "tcp6 compressed",
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
            v1_ok(40, Some(("[2001:db8::1]:1", "[2001:db8::2]:2"))),
        ),
        (
            "tcp6 longest (104 octets)",
            tcp6_max.as_bytes(),
            v1_ok(
                104,
                Some((
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                )),
            ),
        ),
        (
            "tcp6 upper case, ipv4-mapped",
            b"PROXY TCP6 2001:DB8::A ::ffff:192.0.2.1 25 587\r\n",
            v1_ok(48, Some(("[2001:db8::a]:25", "[::ffff:192.0.2.1]:587"))),
        ),
        ("unknown short form", b"PROXY UNKNOWN\r\n", v1_ok(15, None)),
        (
            "unknown with addresses ignored",
            b"PROXY UNKNOWN 2001:db8::1 2001:db8::2 1 2\r\n",
            v1_ok(43, None),
        ),
        (
            "unknown with anything before the crlf",
            b"PROXY UNKNOWN \x00\xff  not even addresses\t\r\n",
            v1_ok(39, None),
        ),
    ];
    for (name, input, expect) in cases {
        check(name, input, *expect);
    }
}

#[test]
fn v1_invalid_headers_name_the_field() {
    use V1Field::*;
    let syntax = |field| Expect::Error(Error::V1Syntax(field));
    let cases: &[(&str, &[u8], Expect)] = &[
        ("double space", b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", syntax(Source)),
        ("two spaces after PROXY", b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", syntax(Protocol)),
        ("unknown protocol", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", syntax(Protocol)),
        ("lower case protocol", b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", syntax(Protocol)),
        ("protocol too long", b"PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n", syntax(Protocol)),
        ("protocol cut short", b"PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n", syntax(Protocol)),
        ("empty protocol", b"PROXY \r\n", syntax(Protocol)),
        ("unknownx", b"PROXY UNKNOWNX\r\n", syntax(Protocol)),
        ("tcp4 without addresses", b"PROXY TCP4\r\n", syntax(Source)),
        ("tcp4 with ipv6", b"PROXY TCP4 ::1 ::1 1 2\r\n", syntax(Source)),
        ("tcp6 with ipv4", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", syntax(Source)),
        ("ipv4 leading zero", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", syntax(Source)),
        ("ipv4 five numbers", b"PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n", syntax(Destination)),
        ("ipv4 over 255", b"PROXY TCP4 1.2.3.4 5.6.7.256 1 2\r\n", syntax(Destination)),
        ("ipv6 two double colons", b"PROXY TCP6 1::2::3 ::1 1 2\r\n", syntax(Source)),
        ("ipv6 zone", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", syntax(Source)),
        ("missing destination port", b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n", syntax(SourcePort)),
        ("plus sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 25\r\n", syntax(SourcePort)),
        ("minus sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 25\r\n", syntax(SourcePort)),
        ("leading zero port", b"PROXY TCP4 1.2.3.4 5.6.7.8 080 25\r\n", syntax(SourcePort)),
        ("port 65536", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 65536\r\n", syntax(DestinationPort)),
        ("port six digits", b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 1\r\n", syntax(SourcePort)),
        ("trailing space", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 25 \r\n", syntax(DestinationPort)),
        ("hex port", b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 25\r\n", syntax(SourcePort)),
        ("bare lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 25\n", syntax(LineEnd)),
        ("bare lf in a field", b"PROXY TCP4 1.2.3.4\n", syntax(LineEnd)),
        ("bare lf after protocol", b"PROXY TCP4\n", syntax(LineEnd)),
        ("cr without lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 25\rX", syntax(LineEnd)),
        ("cr cr lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 25\r\r\n", syntax(LineEnd)),
        ("unknown bare lf", b"PROXY UNKNOWN\n", syntax(LineEnd)),
        ("unknown bare lf later", b"PROXY UNKNOWN a\nb\r\n", syntax(LineEnd)),
        ("unknown lone cr", b"PROXY UNKNOWN a\rb\r\n", syntax(LineEnd)),
        (
            "tcp6 with 45-octet addresses (116 octets)",
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n",
            Expect::Error(Error::V1TooLong),
        ),
        ("lower case proxy", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Expect::Error(Error::NotProxy)),
        ("proxy without space", b"PROXY\r\n", Expect::Error(Error::NotProxy)),
        ("http", b"POST / HTTP/1.1\r\n", Expect::Error(Error::NotProxy)),
        ("smtp", b"EHLO client.example\r\n", Expect::Error(Error::NotProxy)),
        ("tls client hello", b"\x16\x03\x01\x02\x00\x01", Expect::Error(Error::NotProxy)),
        ("empty", b"", Expect::Partial),
        ("prefix", b"PROX", Expect::Partial),
        ("in an address", b"PROXY TCP6 2001:db8", Expect::Partial),
        ("before the lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 25\r", Expect::Partial),
    ];
    for (name, input, expect) in cases {
        check(name, input, *expect);
    }
}

#[test]
fn v1_is_accepted_at_107_octets_and_refused_at_108() {
    let line = |len: usize| {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(len - 2, b'x');
        line.extend_from_slice(b"\r\n");
        line
    };
    check("107 octets", &line(107), v1_ok(107, None));
    check("108 octets", &line(108), Expect::Error(Error::V1TooLong));
    // Refused at the 107th octet, without waiting for the CRLF.
    let mut no_end = line(108);
    no_end.truncate(107);
    assert_eq!(parse_header(&no_end), Err(Error::V1TooLong));
    assert_eq!(parse_header(&no_end[..106]), Ok(Status::Partial));
}

#[test]
fn v2_valid_headers_give_their_addresses() {
    let v4 = block(addr("192.0.2.1:56324"), addr("198.51.100.7:465"));
    let v6 = block(addr("[2001:db8::1]:1025"), addr("[2001:db8::25]:25"));
    let unix = [0x2f; 216];
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "proxy tcp4",
            v2(PROXY, TCP4, &v4),
            v2_ok(
                28,
                Command::Proxy,
                Some(("192.0.2.1:56324", "198.51.100.7:465")),
            ),
        ),
        (
            "proxy tcp6",
            v2(PROXY, TCP6, &v6),
            v2_ok(
                52,
                Command::Proxy,
                Some(("[2001:db8::1]:1025", "[2001:db8::25]:25")),
            ),
        ),
        (
            "proxy tcp4 with crc",
            v2_crc(PROXY, TCP4, &v4),
            v2_ok(
                35,
                Command::Proxy,
                Some(("192.0.2.1:56324", "198.51.100.7:465")),
            ),
        ),
        (
            "local unspec",
            v2(LOCAL, UNSPEC, &[]),
            v2_ok(16, Command::Local, None),
        ),
        (
            "local ignores tcp4 addresses",
            v2(LOCAL, TCP4, &v4),
            v2_ok(28, Command::Local, None),
        ),
        (
            "local ignores an unix family",
            v2(LOCAL, 0x31, &unix),
            v2_ok(232, Command::Local, None),
        ),
        (
            "local ignores udp",
            v2(LOCAL, 0x12, &v4),
            v2_ok(28, Command::Local, None),
        ),
        (
            "proxy unspec",
            v2(PROXY, UNSPEC, &[]),
            v2_ok(16, Command::Proxy, None),
        ),
        (
            "proxy unspec with tlvs",
            v2(PROXY, UNSPEC, &tlv(Tlv::NOOP, b"")),
            v2_ok(19, Command::Proxy, None),
        ),
        (
            "unknown tlv skipped",
            v2(
                PROXY,
                TCP4,
                &cat(&[&v4, &tlv(0xe0, b"custom"), &tlv(0xff, &[])]),
            ),
            v2_ok(
                40,
                Command::Proxy,
                Some(("192.0.2.1:56324", "198.51.100.7:465")),
            ),
        ),
        (
            "4096 octets",
            v2(
                PROXY,
                TCP4,
                &cat(&[&v4, &tlv(Tlv::NOOP, &[0; 4096 - 16 - 12 - 3])]),
            ),
            v2_ok(
                4096,
                Command::Proxy,
                Some(("192.0.2.1:56324", "198.51.100.7:465")),
            ),
        ),
    ];
    for (name, input, expect) in &cases {
        check(name, input, *expect);
    }
}

#[test]
fn v2_invalid_headers_are_refused() {
    let v4 = block(addr("192.0.2.1:56324"), addr("198.51.100.7:465"));
    let mut bad_crc = v2_crc(PROXY, TCP4, &v4);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut flipped_address = v2_crc(PROXY, TCP4, &v4);
    flipped_address[16] ^= 0x80;
    let ssl_overrun = cat(&[&[0x07], &[0, 0, 0, 0], &[Ssl::VERSION, 0, 9], b"TLSv1.3"]);
    let err = |error| Expect::Error(error);
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("version 1", v2(0x11, TCP4, &v4), err(Error::BadVersion(1))),
        ("version 3", v2(0x31, TCP4, &v4), err(Error::BadVersion(3))),
        ("command 2", v2(0x22, TCP4, &v4), err(Error::BadCommand(2))),
        (
            "command 15",
            v2(0x2f, TCP4, &v4),
            err(Error::BadCommand(15)),
        ),
        (
            "family 0x13",
            v2(PROXY, 0x13, &v4),
            err(Error::BadFamily(0x13)),
        ),
        (
            "family 0x41",
            v2(PROXY, 0x41, &v4),
            err(Error::BadFamily(0x41)),
        ),
        (
            "family 0x01",
            v2(PROXY, 0x01, &v4),
            err(Error::BadFamily(0x01)),
        ),
        (
            "local family 0x40",
            v2(LOCAL, 0x40, &[]),
            err(Error::BadFamily(0x40)),
        ),
        (
            "proxy udp4",
            v2(PROXY, 0x12, &v4),
            err(Error::UnsupportedFamily(0x12)),
        ),
        (
            "proxy udp6",
            v2(PROXY, 0x22, &[0; 36]),
            err(Error::UnsupportedFamily(0x22)),
        ),
        (
            "proxy unix stream",
            v2(PROXY, 0x31, &[0; 216]),
            err(Error::UnsupportedFamily(0x31)),
        ),
        (
            "proxy unix dgram",
            v2(PROXY, 0x32, &[0; 216]),
            err(Error::UnsupportedFamily(0x32)),
        ),
        (
            "tcp4 length 11",
            v2(PROXY, TCP4, &v4[..11]),
            err(Error::BadLength),
        ),
        (
            "tcp6 length 12",
            v2(PROXY, TCP6, &v4),
            err(Error::BadLength),
        ),
        (
            "local tcp4 length 0",
            v2(LOCAL, TCP4, &[]),
            err(Error::BadLength),
        ),
        (
            "local unix length 36",
            v2(LOCAL, 0x31, &[0; 36]),
            err(Error::BadLength),
        ),
        (
            "4097 octets",
            cat(&[V2_SIGNATURE, &[PROXY, TCP4], &4081_u16.to_be_bytes()]),
            err(Error::HeaderTooLong),
        ),
        (
            "length 65535",
            cat(&[V2_SIGNATURE, &[LOCAL, UNSPEC, 0xff, 0xff]]),
            err(Error::HeaderTooLong),
        ),
        (
            "tlv value past the header",
            v2(PROXY, TCP4, &cat(&[&v4, &[Tlv::ALPN, 0, 10], b"smtp"])),
            err(Error::BadTlv(Tlv::ALPN)),
        ),
        (
            "tlv header cut after one octet",
            v2(PROXY, TCP4, &cat(&[&v4, &[0xe0]])),
            err(Error::BadTlv(0xe0)),
        ),
        (
            "tlv header cut after two octets",
            v2(PROXY, TCP4, &cat(&[&v4, &[Tlv::NOOP, 0]])),
            err(Error::BadTlv(Tlv::NOOP)),
        ),
        ("crc mismatch", bad_crc, err(Error::CrcMismatch)),
        (
            "crc over a changed address",
            flipped_address,
            err(Error::CrcMismatch),
        ),
        (
            "crc of 3 octets",
            v2(PROXY, TCP4, &cat(&[&v4, &tlv(Tlv::CRC32C, &[0; 3])])),
            err(Error::BadTlv(Tlv::CRC32C)),
        ),
        (
            "two crcs",
            v2_crc(PROXY, TCP4, &cat(&[&v4, &tlv(Tlv::CRC32C, &[0; 4])])),
            err(Error::BadTlv(Tlv::CRC32C)),
        ),
        (
            "unique id of 129 octets",
            v2(PROXY, TCP4, &cat(&[&v4, &tlv(Tlv::UNIQUE_ID, &[7; 129])])),
            err(Error::BadTlv(Tlv::UNIQUE_ID)),
        ),
        (
            "ssl without verify",
            v2(PROXY, TCP4, &cat(&[&v4, &tlv(Tlv::SSL, &[1, 0, 0, 0])])),
            err(Error::BadTlv(Tlv::SSL)),
        ),
        (
            "ssl sub-tlv past the ssl value",
            v2(PROXY, TCP4, &cat(&[&v4, &tlv(Tlv::SSL, &ssl_overrun)])),
            err(Error::BadTlv(Tlv::SSL)),
        ),
        (
            "authority not utf-8",
            v2(
                PROXY,
                TCP4,
                &cat(&[&v4, &tlv(Tlv::AUTHORITY, b"mx\xff.example")]),
            ),
            err(Error::BadTlv(Tlv::AUTHORITY)),
        ),
        (
            "netns not ascii",
            v2(
                PROXY,
                TCP4,
                &cat(&[&v4, &tlv(Tlv::NETNS, "näme".as_bytes())]),
            ),
            err(Error::BadTlv(Tlv::NETNS)),
        ),
        (
            "signature off by one octet",
            cat(&[b"\r\n\r\n\0\r\nQUIX\n", &[PROXY, TCP4, 0, 12], &v4]),
            err(Error::NotProxy),
        ),
        (
            "crlf then smtp",
            b"\r\nEHLO x\r\n".to_vec(),
            err(Error::NotProxy),
        ),
        ("signature prefix", b"\r\n\r\n\0".to_vec(), Expect::Partial),
        (
            "fixed part only",
            v2(PROXY, TCP4, &v4)[..16].to_vec(),
            Expect::Partial,
        ),
    ];
    for (name, input, expect) in &cases {
        check(name, input, *expect);
    }
}

#[test]
fn v2_tlv_accessors_read_the_registered_types() {
    let v4 = block(addr("192.0.2.1:56324"), addr("198.51.100.7:465"));
    let ssl = cat(&[
        &[0x07],
        &0_u32.to_be_bytes(),
        &tlv(Ssl::VERSION, b"TLSv1.3"),
        &tlv(Ssl::COMMON_NAME, b"client.example"),
        &tlv(Ssl::CIPHER, b"TLS_AES_256_GCM_SHA384"),
        &tlv(Ssl::KEY_ALGORITHM, b"RSA2048"),
    ]);
    let body = cat(&[
        &v4,
        &tlv(Tlv::ALPN, b"smtp"),
        &tlv(Tlv::AUTHORITY, b"mx.example.org"),
        &tlv(Tlv::NOOP, &[0; 5]),
        &tlv(Tlv::UNIQUE_ID, &[9; 128]),
        &tlv(Tlv::SSL, &ssl),
        &tlv(Tlv::NETNS, b"blue"),
        &tlv(0xe1, b"vendor"),
    ]);
    let input = v2_crc(PROXY, TCP4, &body);
    let Ok(Status::Complete((len, header))) = parse_header(&input) else {
        panic!("complete");
    };
    assert_eq!(len, input.len());
    let tlvs = header.tlvs;
    assert_eq!(tlvs.alpn(), Some(&b"smtp"[..]));
    assert_eq!(tlvs.authority(), Some("mx.example.org"));
    assert_eq!(tlvs.unique_id(), Some(&[9; 128][..]));
    assert_eq!(tlvs.netns(), Some("blue"));
    assert_eq!(tlvs.find(0xe1), Some(&b"vendor"[..]));
    assert_eq!(tlvs.find(0xe2), None);
    let crc = u32::from_be_bytes(input[input.len() - 4..].try_into().expect("4 octets"));
    assert_eq!(tlvs.crc32c(), Some(crc));
    let kinds: Vec<u8> = tlvs.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [0x01, 0x02, 0x04, 0x05, 0x20, 0x30, 0xe1, 0x03]);
    assert_eq!(tlvs.into_iter().count(), 8);
    let ssl = tlvs.ssl().expect("ssl");
    assert!(ssl.client().contains(SslClient::SSL));
    assert!(ssl.client().contains(SslClient::CERT_CONN));
    assert!(ssl.client().contains(SslClient::CERT_SESS));
    assert_eq!(ssl.client().bits(), 7);
    assert_eq!(ssl.verify(), 0);
    assert_eq!(ssl.version(), Some("TLSv1.3"));
    assert_eq!(ssl.common_name(), Some("client.example"));
    assert_eq!(ssl.cipher(), Some("TLS_AES_256_GCM_SHA384"));
    assert_eq!(ssl.sub_tlvs().count(), 4);
    assert_prefixes_agree("all tlvs", &input);

    // An owned copy reads the same, after the buffer is gone.
    let owned = header.to_owned_header();
    drop(input);
    assert_eq!(owned.command, Command::Proxy);
    assert_eq!(
        owned.addresses.map(|a| a.source),
        Some(addr("192.0.2.1:56324"))
    );
    assert_eq!(owned.tlvs().authority(), Some("mx.example.org"));
    assert_eq!(
        owned.tlvs().ssl().and_then(|s| s.cipher()),
        Some("TLS_AES_256_GCM_SHA384")
    );
    assert_eq!(owned.tlvs().iter().count(), 8);

    // Absent types, and a v1 header's TLVs.
    let input = v2(PROXY, TCP4, &v4);
    let Ok(Status::Complete((_, bare))) = parse_header(&input) else {
        panic!("complete");
    };
    assert!(bare.tlvs.is_empty());
    assert_eq!(bare.tlvs.ssl(), None);
    assert_eq!(bare.tlvs.crc32c(), None);
    let Ok(Status::Complete((_, text))) = parse_header(b"PROXY UNKNOWN\r\n") else {
        panic!("complete");
    };
    assert!(text.tlvs.is_empty());

    // An SSL sub-TLV that is not UTF-8 is there, but not as text.
    let ssl = cat(&[&[0x01], &1_u32.to_be_bytes(), &tlv(Ssl::CIPHER, b"\xff")]);
    let input = v2(PROXY, TCP4, &cat(&[&v4, &tlv(Tlv::SSL, &ssl)]));
    let Ok(Status::Complete((_, header))) = parse_header(&input) else {
        panic!("complete");
    };
    let ssl = header.tlvs.ssl().expect("ssl");
    assert_eq!(ssl.cipher(), None);
    assert_eq!(ssl.verify(), 1);
    assert!(!ssl.client().contains(SslClient::CERT_CONN));
    assert_eq!(ssl.sub_tlvs().next().map(|t| t.value), Some(&b"\xff"[..]));
}

#[test]
fn v1_and_v2_of_the_same_addresses_are_equal() {
    let pairs = [
        ("192.0.2.1:56324", "198.51.100.7:465"),
        ("0.0.0.0:0", "255.255.255.255:65535"),
        ("[2001:db8::1]:1025", "[2001:db8::25]:25"),
        ("[::]:0", "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        ("[::ffff:192.0.2.1]:1", "[::1]:2"),
        ("[fe80::1:2:3:4]:587", "[2001:db8:0:0:1::1]:993"),
    ];
    for (source, destination) in pairs {
        let (source, destination) = (addr(source), addr(destination));
        let text = v1_line(source, destination);
        let binary = v2(PROXY, family(source), &block(source, destination));
        let Ok(Status::Complete((_, one))) = parse_header(text.as_bytes()) else {
            panic!("{text:?}");
        };
        let Ok(Status::Complete((_, two))) = parse_header(&binary) else {
            panic!("{binary:?}");
        };
        assert_eq!(one.addresses, two.addresses, "{text:?}");
        let addresses = one.addresses.expect("addresses");
        assert_eq!(
            (addresses.source, addresses.destination),
            (source, destination)
        );
    }
}

fn v1_line(source: SocketAddr, destination: SocketAddr) -> String {
    let protocol = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {protocol} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
}

fn family(address: SocketAddr) -> u8 {
    if address.is_ipv4() { TCP4 } else { TCP6 }
}

/// xorshift64*: deterministic, good enough to spread generated cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    fn octet(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    fn octets(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.octet()).collect()
    }

    fn address(&mut self, ipv6: bool) -> SocketAddr {
        let port = u16::from_le_bytes([self.octet(), self.octet()]);
        let ip: IpAddr = if ipv6 {
            // Mostly zero groups, so `::` compression is exercised.
            let mut octets = [0; 16];
            for octet in &mut octets {
                if self.below(3) == 0 {
                    *octet = self.octet();
                }
            }
            Ipv6Addr::from(octets).into()
        } else {
            Ipv4Addr::from(self.next().to_le_bytes()[..4].try_into().unwrap_or([0; 4])).into()
        };
        SocketAddr::new(ip, port)
    }
}

#[test]
fn generated_headers_round_trip_and_mutations_stay_consistent() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let kinds = [
        Tlv::ALPN,
        Tlv::AUTHORITY,
        Tlv::NOOP,
        Tlv::UNIQUE_ID,
        Tlv::NETNS,
        0xe0,
        0xf7,
    ];
    for case in 0..3000 {
        let ipv6 = rng.below(2) == 1;
        let (source, destination) = (rng.address(ipv6), rng.address(ipv6));
        let mut tlvs: Vec<(u8, Vec<u8>)> = Vec::new();
        let input = if rng.below(2) == 0 {
            v1_line(source, destination).into_bytes()
        } else {
            let mut body = block(source, destination);
            for _ in 0..rng.below(5) {
                let kind = kinds[rng.below(kinds.len())];
                let len = rng.below(40);
                let value: Vec<u8> = rng.octets(len).iter().map(|o| b'a' + o % 26).collect();
                body.extend_from_slice(&tlv(kind, &value));
                tlvs.push((kind, value));
            }
            if rng.below(2) == 0 {
                tlvs.push((Tlv::CRC32C, Vec::new()));
                v2_crc(PROXY, family(source), &body)
            } else {
                v2(PROXY, family(source), &body)
            }
        };
        let tail_len = rng.below(8);
        let mut with_tail = input.clone();
        with_tail.extend(rng.octets(tail_len));
        let Ok(Status::Complete((len, header))) = parse_header(&with_tail) else {
            panic!("case {case}: {with_tail:?}");
        };
        assert_eq!(len, input.len(), "case {case}");
        let addresses = header.addresses.expect("addresses");
        assert_eq!(
            (addresses.source, addresses.destination),
            (source, destination)
        );
        let got: Vec<(u8, &[u8])> = header.tlvs.iter().map(|t| (t.kind, t.value)).collect();
        assert_eq!(got.len(), tlvs.len(), "case {case}");
        for ((kind, value), (want_kind, want_value)) in got.iter().zip(&tlvs) {
            assert_eq!(kind, want_kind);
            if *kind != Tlv::CRC32C {
                assert_eq!(value, want_value);
            }
        }
        if case % 10 == 0 {
            assert_prefixes_agree(&format!("case {case}"), &with_tail);
        }
        // A mutated header never panics, and its prefixes agree with it.
        let mut mutated = with_tail.clone();
        for _ in 0..=rng.below(3) {
            let at = rng.below(mutated.len());
            mutated[at] = match rng.below(3) {
                0 => rng.octet(),
                1 => mutated[at] ^ (1 << rng.below(8)),
                _ => b"\r\n 0:."[rng.below(5)],
            };
        }
        assert_prefixes_agree(&format!("case {case} mutated"), &mutated);
    }
}

#[test]
fn errors_display_what_was_wrong() {
    let cases = [
        (Error::NotProxy, "not a PROXY protocol header"),
        (
            Error::V1Syntax(V1Field::SourcePort),
            "PROXY v1 header: bad source port",
        ),
        (Error::BadVersion(1), "PROXY v2 header: version 1 is not 2"),
        (
            Error::BadTlv(0x20),
            "PROXY v2 header: malformed TLV of type 0x20",
        ),
        (
            Error::HeaderTooLong,
            "PROXY v2 header longer than 4096 octets",
        ),
        (
            Error::UnsupportedFamily(0x31),
            "PROXY v2 header: family and transport 0x31 not supported (only TCP over IPv4 or IPv6, or AF_UNSPEC)",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}
