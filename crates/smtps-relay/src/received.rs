//! The `Received:` trace header a receiving SMTP server prepends (RFC 5321 §4.4), with the
//! `with` keywords of RFC 3848 (`ESMTPS`, `ESMTPSA`, …) and the TLS details as a comment.
//!
//! ```text
//! Received: from client.example (mail.client.example [192.0.2.7])
//!     by mx.example (smtpsd) with ESMTPS id 4f2a1c0d9e8b
//!     (version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 bits=256)
//!     for <bob@example.org>; Fri, 27 Nov 2026 18:04:56 +0000
//! ```
//!
//! (continuation lines begin with a tab). Everything that came from the client is sanitized:
//! no CR, LF or other control character can end the header early or forge another one.
//!
//! A host prepends it to each message it stores or forwards: in `Handler::data_start`,
//! [`Received::for_session`] takes everything from the session (client address and HELO name,
//! `with` keyword, TLS, the recipient when there is one), and [`Received::to_header`] gives the
//! octets to write first. The facts can also be set one by one:
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use smtps_relay::received::{Protocol, Received};
//!
//! let time = UNIX_EPOCH + Duration::from_secs(1_795_802_696); // 27 Nov 2026 18:04:56 UTC
//! let protocol = Protocol::from_session(true, true, false);
//! let mut received = Received::new(
//!     "192.0.2.7".parse().unwrap(), "client.example", "mx.example", protocol, "4f2a1c0d9e8b", time,
//! );
//! received.tls = Some("version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 bits=256".into());
//! received.recipient = Some("bob@example.org".into());
//! let header = received.to_header();
//! assert!(header.starts_with("Received: from client.example ([192.0.2.7])\r\n\tby mx.example"));
//! assert!(header.contains("with ESMTPS id 4f2a1c0d9e8b"));
//! assert!(header.ends_with("for <bob@example.org>; Fri, 27 Nov 2026 18:04:56 +0000\r\n"));
//!
//! // A HELO name with a line break cannot forge a second header.
//! let forged = Received::new(
//!     "192.0.2.7".parse().unwrap(), "x\r\nX-Spam: no", "mx.example", Protocol::Smtp, "1", time,
//! );
//! assert_eq!(forged.to_header().matches("\r\n").count(), forged.to_header().lines().count());
//! assert!(!forged.to_header().contains("\r\nX-Spam"));
//! ```

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use smtps_server::SessionInfo;

/// Lines are folded to at most this many characters where a fold point exists (RFC 5322 §2.1.1).
const LINE_LIMIT: usize = 78;
/// Longest client-supplied value kept; the rest is cut (RFC 5321 §4.5.3.1.2: 255 for a domain).
const VALUE_LIMIT: usize = 255;

/// The facts a `Received:` header records. Build it with [`Received::new`], set the optional
/// fields, then render it with [`Received::to_header`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Received {
    /// The client's IP address (the TCP peer, or the one the PROXY protocol reported).
    pub peer_ip: IpAddr,
    /// The name the client gave in HELO/EHLO, as sent; empty if it gave none.
    pub helo: String,
    /// The client's name from reverse DNS, if one was looked up and confirmed.
    pub reverse_dns: Option<String>,
    /// Our host name, as in the greeting.
    pub hostname: String,
    /// The `with` keyword (RFC 3848).
    pub protocol: Protocol,
    /// The queue id of the message.
    pub id: String,
    /// The TLS details, e.g. `version=TLSv1.3 cipher=TLS13_AES_128_GCM_SHA256 bits=128`;
    /// rendered as a comment. `None` for a plaintext session.
    pub tls: Option<String>,
    /// The recipient, without angle brackets; set it only when the message has exactly one
    /// (RFC 5321 §7.2: listing several would disclose Bcc recipients).
    pub recipient: Option<String>,
    /// When the message was received; rendered in UTC.
    pub time: SystemTime,
}

impl Received {
    /// The header for a message of `info`'s session received by `hostname` as `id`, now: the
    /// client's address (the PROXY protocol's, if a balancer sent one), its HELO name, the
    /// `with` keyword, the TLS details, and the recipient when there is exactly one.
    #[must_use]
    pub fn for_session(info: &SessionInfo, hostname: &str, id: &str) -> Self {
        let tls = info.tls.as_ref();
        let protocol = Protocol::from_session(info.extended, tls.is_some(), info.auth_id.is_some());
        let mut received = Self::new(
            info.peer.ip(),
            info.helo.as_deref().unwrap_or_default(),
            hostname,
            protocol,
            id,
            SystemTime::now(),
        );
        received.tls = tls.map(|tls| {
            tls.received_comment()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_owned()
        });
        received.recipient = match info.recipients.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        };
        received
    }

    /// The header facts with no reverse DNS name, no TLS comment and no recipient.
    pub fn new(
        peer_ip: IpAddr,
        helo: &str,
        hostname: &str,
        protocol: Protocol,
        id: &str,
        time: SystemTime,
    ) -> Self {
        Self {
            peer_ip,
            helo: helo.to_owned(),
            reverse_dns: None,
            hostname: hostname.to_owned(),
            protocol,
            id: id.to_owned(),
            tls: None,
            recipient: None,
            time,
        }
    }

    /// Renders the whole header field, `Received: …` through its final CRLF, folded so that
    /// lines stay within 78 characters wherever a fold point allows.
    pub fn to_header(&self) -> String {
        let literal = address_literal(self.peer_ip);
        let helo = sanitize(&self.helo, is_domain_char);
        let from = if helo.is_empty() {
            literal.clone()
        } else {
            helo
        };
        let tcp_info = match &self.reverse_dns {
            Some(name) => {
                let name = sanitize(name, is_domain_char);
                if name.is_empty() {
                    format!("({literal})")
                } else {
                    format!("({name} {literal})")
                }
            }
            None => format!("({literal})"),
        };
        let hostname = sanitize(&self.hostname, is_domain_char);
        let id = sanitize(&self.id, is_atom_char);

        let mut lines: Vec<Vec<String>> = vec![
            vec!["Received:".into(), "from".into(), from, tcp_info],
            vec![
                "by".into(),
                hostname,
                "(smtpsd)".into(),
                "with".into(),
                self.protocol.keyword().into(),
                "id".into(),
                id,
            ],
        ];
        if let Some(tls) = &self.tls {
            let tls = sanitize(tls, is_comment_char);
            let words: Vec<&str> = tls.split(' ').filter(|w| !w.is_empty()).collect();
            if let Some((last, first)) = words.split_last() {
                let mut comment: Vec<String> = Vec::with_capacity(words.len());
                for (i, word) in first.iter().enumerate() {
                    comment.push(if i == 0 {
                        format!("({word}")
                    } else {
                        (*word).into()
                    });
                }
                comment.push(if first.is_empty() {
                    format!("({last})")
                } else {
                    format!("{last})")
                });
                lines.push(comment);
            }
        }
        if let Some(rcpt) = &self.recipient {
            let rcpt = sanitize(rcpt, is_path_char);
            lines.push(vec!["for".into(), format!("<{rcpt}>")]);
        }
        // The date follows the last clause's `;` (RFC 5321: `";" FWS date-time`).
        if let Some(last) = lines.last_mut().and_then(|l| l.last_mut()) {
            last.push(';');
        }
        let date = rfc5322_date(self.time);
        let mut out = String::with_capacity(256);
        let mut line_len = 0;
        for (n, words) in lines.iter().enumerate() {
            for (i, word) in words.iter().enumerate() {
                if n == 0 && i == 0 {
                    out.push_str(word);
                    line_len = word.len();
                } else if i == 0 || line_len + 1 + word.len() > LINE_LIMIT {
                    out.push_str("\r\n\t");
                    out.push_str(word);
                    line_len = 1 + word.len();
                } else {
                    out.push(' ');
                    out.push_str(word);
                    line_len += 1 + word.len();
                }
            }
        }
        if line_len + 1 + date.len() > LINE_LIMIT {
            out.push_str("\r\n\t");
        } else {
            out.push(' ');
        }
        out.push_str(&date);
        out.push_str("\r\n");
        out
    }
}

/// The `with` keyword of a `Received:` header (RFC 5321 §4.4, RFC 3848).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// HELO, no extensions.
    Smtp,
    /// EHLO, plaintext, not authenticated.
    Esmtp,
    /// EHLO, plaintext, authenticated (RFC 3848).
    Esmtpa,
    /// EHLO over TLS, not authenticated (RFC 3848).
    Esmtps,
    /// EHLO over TLS, authenticated (RFC 3848).
    Esmtpsa,
}

impl Protocol {
    /// The keyword for a session: `extended` if the client said EHLO, `tls` if the session is
    /// encrypted (STARTTLS or implicit TLS), `authenticated` after a successful AUTH. A HELO
    /// session is `SMTP` whatever else holds (RFC 3848 registers no keyword for it).
    pub fn from_session(extended: bool, tls: bool, authenticated: bool) -> Self {
        match (extended, tls, authenticated) {
            (false, _, _) => Self::Smtp,
            (true, false, false) => Self::Esmtp,
            (true, false, true) => Self::Esmtpa,
            (true, true, false) => Self::Esmtps,
            (true, true, true) => Self::Esmtpsa,
        }
    }

    /// The keyword as it appears in the header.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Smtp => "SMTP",
            Self::Esmtp => "ESMTP",
            Self::Esmtpa => "ESMTPA",
            Self::Esmtps => "ESMTPS",
            Self::Esmtpsa => "ESMTPSA",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// Formats `time` as an RFC 5322 §3.3 date in UTC: `Fri, 27 Nov 2026 18:04:56 +0000`.
/// Times before 1970 are rendered as the epoch.
pub fn rfc5322_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(31);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[index(days % 7)],
        MONTHS[index(month - 1)],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    );
    out
}

/// A table index from a value known to be small (a weekday 0–6, a month 0–11).
fn index(small: u64) -> usize {
    usize::try_from(small).unwrap_or(0)
}

/// Converts days since 1970-01-01 into (year, month 1–12, day 1–31) in the proleptic
/// Gregorian calendar (H. Hinnant's `civil_from_days`, for non-negative day counts).
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The RFC 5321 address literal of an IP: `[192.0.2.7]` or `[IPv6:2001:db8::1]`.
fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    }
}

/// Keeps the characters `allowed` accepts (and any non-ASCII, non-control character), replaces
/// every other with `?`, and cuts the result at [`VALUE_LIMIT`] characters.
fn sanitize(value: &str, allowed: fn(char) -> bool) -> String {
    value
        .chars()
        .take(VALUE_LIMIT)
        .map(|c| {
            if (c.is_ascii() && allowed(c)) || (!c.is_ascii() && !c.is_control()) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A domain or address literal: `mx-1.example`, `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '[' | ']' | ':')
}

/// An atom (RFC 5322 `atext`), for the id.
fn is_atom_char(c: char) -> bool {
    c.is_ascii_graphic()
        && !matches!(
            c,
            '(' | ')' | '<' | '>' | '[' | ']' | ':' | ';' | '@' | '\\' | ',' | '"'
        )
}

/// Comment text: printable ASCII and spaces, without the characters that nest or quote.
fn is_comment_char(c: char) -> bool {
    c == ' ' || (c.is_ascii_graphic() && !matches!(c, '(' | ')' | '\\'))
}

/// A forward-path's content, between `<` and `>`.
fn is_path_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '<' | '>' | '(' | ')')
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;

    /// Fri, 27 Nov 2026 18:04:56 +0000.
    fn time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_802_696)
    }

    fn sample() -> Received {
        Received::new(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            "client.example",
            "mx.example",
            Protocol::Esmtps,
            "4f2a1c0d9e8b",
            time(),
        )
    }

    fn assert_well_formed(header: &str) {
        assert!(header.starts_with("Received: "), "{header}");
        assert!(header.ends_with("\r\n"), "{header}");
        let body = &header[..header.len() - 2];
        for (i, line) in body.split("\r\n").enumerate() {
            assert!(!line.contains(['\r', '\n']), "bare CR/LF in {line:?}");
            assert!(
                line.chars().all(|c| c == '\t' || !c.is_control()),
                "{line:?}"
            );
            if i > 0 {
                assert!(line.starts_with('\t'), "continuation without WSP: {line:?}");
            }
        }
    }

    fn line_lengths(header: &str) -> Vec<usize> {
        header
            .trim_end_matches("\r\n")
            .split("\r\n")
            .map(str::len)
            .collect()
    }

    #[test]
    fn full_header_has_tls_comment_and_single_recipient() {
        let mut r = sample();
        r.reverse_dns = Some("mail.client.example".into());
        r.tls = Some("version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 bits=256".into());
        r.recipient = Some("bob@example.org".into());
        assert_eq!(
            r.to_header(),
            "Received: from client.example (mail.client.example [192.0.2.7])\r\n\
             \tby mx.example (smtpsd) with ESMTPS id 4f2a1c0d9e8b\r\n\
             \t(version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384 bits=256)\r\n\
             \tfor <bob@example.org>; Fri, 27 Nov 2026 18:04:56 +0000\r\n"
        );
    }

    #[test]
    fn plaintext_header_without_recipient_ends_with_the_date() {
        let mut r = sample();
        r.protocol = Protocol::Esmtp;
        assert_eq!(
            r.to_header(),
            "Received: from client.example ([192.0.2.7])\r\n\
             \tby mx.example (smtpsd) with ESMTP id 4f2a1c0d9e8b;\r\n\
             \tFri, 27 Nov 2026 18:04:56 +0000\r\n"
        );
    }

    #[test]
    fn missing_helo_uses_the_address_literal_and_ipv6_is_tagged() {
        let mut r = sample();
        r.helo = String::new();
        r.peer_ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let header = r.to_header();
        assert!(
            header.starts_with("Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n"),
            "{header}"
        );
        r.peer_ip = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped());
        assert!(r.to_header().contains("([198.51.100.1])"));
    }

    #[test]
    fn crlf_and_controls_in_client_values_cannot_break_the_header() {
        let mut r = sample();
        r.helo = "evil\r\nX-Injected: yes\0(\t)".into();
        r.reverse_dns = Some("a\nb".into());
        r.tls = Some("version=x)\r\nX: y".into());
        r.recipient = Some("a>\r\nBcc: <c@d".into());
        let header = r.to_header();
        assert_well_formed(&header);
        assert!(!header.contains("\r\nX-Injected"), "{header}");
        assert!(!header.contains("\r\nBcc"), "{header}");
        assert!(
            header.starts_with("Received: from evil??X-Injected:?yes???? (a?b [192.0.2.7])\r\n"),
            "{header}"
        );
        assert!(header.contains("\t(version=x???X: y)\r\n"), "{header}");
        assert!(header.contains("\tfor <a???Bcc:??c@d>; "), "{header}");
    }

    #[test]
    fn long_values_are_folded_at_78_columns_where_possible() {
        let mut r = sample();
        r.helo = format!("{}.example", "h".repeat(50));
        r.reverse_dns = Some(format!("{}.example", "r".repeat(40)));
        r.tls = Some(
            "version=TLSv1.2 cipher=TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 bits=256 \
             group=X25519MLKEM768 sni=mx.example"
                .into(),
        );
        r.recipient = Some(format!("{}@example.org", "u".repeat(60)));
        let header = r.to_header();
        assert_well_formed(&header);
        for len in line_lengths(&header) {
            assert!(len <= LINE_LIMIT, "{len} in {header}");
        }
        // Unfolding gives back the single-line form.
        let unfolded = header.replace("\r\n\t", " ");
        assert!(
            unfolded.contains("group=X25519MLKEM768 sni=mx.example)"),
            "{unfolded}"
        );
    }

    #[test]
    fn an_unbreakable_helo_is_cut_at_255_characters() {
        let mut r = sample();
        r.helo = "x".repeat(1000);
        let header = r.to_header();
        assert_well_formed(&header);
        assert!(
            header.contains(&format!("\t{}\r\n", "x".repeat(255))),
            "{header}"
        );
        assert!(!header.contains(&"x".repeat(256)));
    }

    #[test]
    fn protocol_keywords_follow_rfc_3848() {
        let cases = [
            ((false, true, true), "SMTP"),
            ((true, false, false), "ESMTP"),
            ((true, false, true), "ESMTPA"),
            ((true, true, false), "ESMTPS"),
            ((true, true, true), "ESMTPSA"),
        ];
        for ((ehlo, tls, auth), keyword) in cases {
            assert_eq!(Protocol::from_session(ehlo, tls, auth).keyword(), keyword);
        }
    }

    #[test]
    fn dates_are_rfc_5322_in_utc() {
        let at = |secs| rfc5322_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(at(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 +0000");
        assert_eq!(at(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 +0000");
        assert_eq!(rfc5322_date(time()), "Fri, 27 Nov 2026 18:04:56 +0000");
        assert_eq!(
            rfc5322_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
    }
}
