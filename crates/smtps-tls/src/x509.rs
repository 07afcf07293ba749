//! Just enough X.509 (RFC 5280 §4.1) DER parsing to read a certificate's subject and validity.
//!
//! rustls and webpki do the real verification; this only extracts what a host logs or monitors:
//! the `notAfter` date (expiry warnings) and a readable subject DN (client-certificate logging).
//! It never panics: every read is bounds-checked and a malformed input gives an `Err`.

use std::fmt::Write as _;

/// What we read from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertFields {
    /// `notBefore`, seconds since the UNIX epoch.
    pub(crate) not_before: i64,
    /// `notAfter`, seconds since the UNIX epoch.
    pub(crate) not_after: i64,
    /// The subject DN in RFC 4514 string form (most significant RDN last).
    pub(crate) subject: String,
    /// The last (most specific) commonName attribute, if any.
    pub(crate) common_name: Option<String>,
    /// The dNSName entries of the subjectAltName extension (RFC 5280 §4.2.1.6), in order.
    pub(crate) dns_names: Vec<String>,
}

/// Parses the TBSCertificate far enough to return validity and subject.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<CertFields, &'static str> {
    let mut outer = Der::new(der);
    let cert = outer.expect(TAG_SEQUENCE, "certificate is not a SEQUENCE")?;
    let mut cert = Der::new(cert);
    let tbs = cert.expect(TAG_SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
    let mut tbs = Der::new(tbs);
    // version [0] EXPLICIT, optional (absent means v1)
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.any()?;
    }
    tbs.expect(TAG_INTEGER, "serialNumber missing")?;
    tbs.expect(TAG_SEQUENCE, "signature algorithm missing")?;
    tbs.expect(TAG_SEQUENCE, "issuer missing")?;
    let validity = tbs.expect(TAG_SEQUENCE, "validity missing")?;
    let mut validity = Der::new(validity);
    let not_before = parse_time(&mut validity)?;
    let not_after = parse_time(&mut validity)?;
    let subject = tbs.expect(TAG_SEQUENCE, "subject missing")?;
    let (subject, common_name) = render_name(subject)?;
    tbs.expect(TAG_SEQUENCE, "subjectPublicKeyInfo missing")?;
    let mut dns_names = Vec::new();
    // issuerUniqueID [1], subjectUniqueID [2], extensions [3] EXPLICIT (RFC 5280 §4.1).
    while !tbs.is_empty() {
        let (tag, contents) = tbs.any()?;
        if tag == TAG_EXTENSIONS {
            dns_names = subject_alt_dns_names(contents)?;
        }
    }
    Ok(CertFields {
        not_before,
        not_after,
        subject,
        common_name,
        dns_names,
    })
}

/// The dNSName entries of the subjectAltName extension, from the `[3]` extensions field.
fn subject_alt_dns_names(extensions: &[u8]) -> Result<Vec<String>, &'static str> {
    let mut outer = Der::new(extensions);
    let list = outer.expect(TAG_SEQUENCE, "extensions are not a SEQUENCE")?;
    let mut list = Der::new(list);
    let mut names = Vec::new();
    while !list.is_empty() {
        let extension = list.expect(TAG_SEQUENCE, "extension is not a SEQUENCE")?;
        let mut extension = Der::new(extension);
        let oid = extension.expect(TAG_OID, "extension id is not an OID")?;
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        let (mut tag, mut value) = extension.any()?;
        if tag == TAG_BOOLEAN {
            (tag, value) = extension.any()?;
        }
        if tag != TAG_OCTET_STRING {
            return Err("subjectAltName value is not an OCTET STRING");
        }
        let mut general_names = Der::new(value);
        let general_names = general_names.expect(TAG_SEQUENCE, "GeneralNames is not a SEQUENCE")?;
        let mut general_names = Der::new(general_names);
        while !general_names.is_empty() {
            let (tag, name) = general_names.any()?;
            if tag == TAG_DNS_NAME
                && let Ok(name) = std::str::from_utf8(name)
            {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

const TAG_INTEGER: u8 = 0x02;
const TAG_OID: u8 = 0x06;
const TAG_UTF8: u8 = 0x0c;
const TAG_PRINTABLE: u8 = 0x13;
const TAG_T61: u8 = 0x14;
const TAG_IA5: u8 = 0x16;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_UNIVERSAL: u8 = 0x1c;
const TAG_BMP: u8 = 0x1e;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_VERSION: u8 = 0xa0;
const TAG_EXTENSIONS: u8 = 0xa3;
const TAG_BOOLEAN: u8 = 0x01;
const TAG_OCTET_STRING: u8 = 0x04;
/// `[2] IA5String` in GeneralName (RFC 5280 §4.2.1.6).
const TAG_DNS_NAME: u8 = 0x82;
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// A cursor over DER-encoded TLVs.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads one TLV and returns (tag, contents).
    fn any(&mut self) -> Result<(u8, &'a [u8]), &'static str> {
        let (&tag, rest) = self.rest.split_first().ok_or("truncated DER")?;
        if tag & 0x1f == 0x1f {
            return Err("multi-byte DER tags are not used in certificates");
        }
        let (&first, mut rest) = rest.split_first().ok_or("truncated DER length")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err("unsupported DER length");
            }
            if rest.len() < n {
                return Err("truncated DER length");
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return Err("DER length runs past the end");
        }
        let (contents, after) = rest.split_at(len);
        self.rest = after;
        Ok((tag, contents))
    }

    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], &'static str> {
        match self.any() {
            Ok((t, contents)) if t == tag => Ok(contents),
            _ => Err(what),
        }
    }
}

fn parse_time(der: &mut Der<'_>) -> Result<i64, &'static str> {
    let (tag, v) = der.any()?;
    let (year, rest) = match tag {
        TAG_UTC_TIME if v.len() == 13 => {
            let yy = digits(&v[0..2])?;
            // RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY, else 20YY.
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            (year, &v[2..])
        }
        TAG_GENERALIZED_TIME if v.len() == 15 => (digits(&v[0..4])?, &v[4..]),
        _ => return Err("validity time is neither UTCTime nor GeneralizedTime (RFC 5280)"),
    };
    if rest.last() != Some(&b'Z') {
        return Err("validity time is not in UTC");
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err("validity time out of range");
    }
    if second > 60 {
        return Err("validity time out of range");
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn digits(s: &[u8]) -> Result<i64, &'static str> {
    s.iter().try_fold(0i64, |acc, &b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + i64::from(b - b'0'))
        } else {
            Err("non-digit in validity time")
        }
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Renders a Name (RFC 5280 §4.1.2.4) as an RFC 4514 string, most specific RDN first.
fn render_name(name: &[u8]) -> Result<(String, Option<String>), &'static str> {
    let mut rdns = Vec::new();
    let mut common_name = None;
    let mut seq = Der::new(name);
    while !seq.is_empty() {
        let set = seq.expect(TAG_SET, "RDN is not a SET")?;
        let mut set = Der::new(set);
        let mut parts = Vec::new();
        while !set.is_empty() {
            let atv = set.expect(TAG_SEQUENCE, "attribute is not a SEQUENCE")?;
            let mut atv = Der::new(atv);
            let oid = atv.expect(TAG_OID, "attribute type is not an OID")?;
            let (tag, value) = atv.any()?;
            let key = attribute_name(oid);
            let text = match string_value(tag, value) {
                Some(s) => {
                    if oid == OID_CN {
                        common_name = Some(s.clone());
                    }
                    escape_rfc4514(&s)
                }
                None => {
                    let mut hex = String::from("#");
                    // RFC 4514 §2.4: the BER encoding in hex.
                    let _ = write!(hex, "{tag:02x}");
                    match value.len() {
                        len @ 0..0x80 => write!(hex, "{len:02x}"),
                        len @ 0x80..0x100 => write!(hex, "81{len:02x}"),
                        len => write!(hex, "82{:04x}", len.min(0xffff)),
                    }
                    .ok();
                    for b in value {
                        let _ = write!(hex, "{b:02x}");
                    }
                    hex
                }
            };
            parts.push(format!("{key}={text}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok((rdns.join(","), common_name))
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

fn attribute_name(oid: &[u8]) -> String {
    let known = match oid {
        OID_CN => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "STREET",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return dotted_oid(oid),
    };
    known.to_owned()
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut out = String::new();
    let mut value: u64 = 0;
    let mut first = true;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 != 0 {
            if value > u64::MAX >> 7 {
                return "0.0".to_owned();
            }
            continue;
        }
        if first {
            let (a, b) = match value {
                0..=39 => (0, value),
                40..=79 => (1, value - 40),
                _ => (2, value - 80),
            };
            let _ = write!(out, "{a}.{b}");
            first = false;
        } else {
            let _ = write!(out, ".{value}");
        }
        value = 0;
    }
    out
}

fn string_value(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        TAG_UTF8 | TAG_PRINTABLE | TAG_IA5 => std::str::from_utf8(value).ok().map(str::to_owned),
        // T61String: treat as Latin-1, which is what it holds in practice.
        TAG_T61 => Some(value.iter().map(|&b| char::from(b)).collect()),
        TAG_BMP => {
            if !value.len().is_multiple_of(2) {
                return None;
            }
            let units = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        TAG_UNIVERSAL => {
            if !value.len().is_multiple_of(4) {
                return None;
            }
            value
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

fn escape_rfc4514(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\{b:02x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5280_subject_alt_name_dns_names_are_read() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![
            "mail.example.test".to_owned(),
            "smtp.example.test".to_owned(),
            "192.0.2.1".to_owned(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mail.example.test");
        let cert = params.self_signed(&key).unwrap();
        let fields = parse_certificate(cert.der()).unwrap();
        assert_eq!(
            fields.dns_names,
            vec!["mail.example.test", "smtp.example.test"]
        );
        assert_eq!(fields.common_name.as_deref(), Some("mail.example.test"));
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
    }

    #[test]
    fn rfc5280_utctime_two_digit_year_pivot() {
        // UTCTime 491231235959Z is 2049, 500101000000Z is 1950.
        let t = b"\x17\x0d491231235959Z";
        assert_eq!(parse_time(&mut Der::new(t)), Ok(2_524_607_999));
        let t = b"\x17\x0d500101000000Z";
        assert_eq!(parse_time(&mut Der::new(t)), Ok(-631_152_000));
    }

    #[test]
    fn rfc5280_generalized_time() {
        let t = b"\x18\x0f20500101000000Z";
        assert_eq!(parse_time(&mut Der::new(t)), Ok(2_524_608_000));
    }

    #[test]
    fn truncated_and_garbage_inputs_are_errors_not_panics() {
        let mut x: u32 = 12345;
        for len in 0..300 {
            let mut v = vec![0u8; len];
            for b in &mut v {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = x.to_be_bytes()[1];
            }
            if len > 0 {
                v[0] = TAG_SEQUENCE;
            }
            let _ = parse_certificate(&v);
        }
        assert!(parse_certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape_rfc4514("a,b"), "a\\,b");
        assert_eq!(escape_rfc4514(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
    }

    #[test]
    fn dotted_oid_renders_unknown_attributes() {
        assert_eq!(
            dotted_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }
}
