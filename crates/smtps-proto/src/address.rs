//! Addresses in command arguments: domains, address literals, mailboxes and the paths of `MAIL`
//! and `RCPT` (RFC 5321 §4.1.2, §4.1.3, §4.5.3.1; UTF-8 forms from RFC 6531 §3.3).
//!
//! Every value here is built by the command parser ([`crate::command::parse_command`]) and
//! borrows from the command line, so any value is a valid one. Nothing here allocates.
//!
//! UTF-8 in a local part or a domain is accepted by the parser; whether it is acceptable in a
//! transaction depends on `SMTPUTF8` having been given (RFC 6531 §3.4), which is the session's
//! decision: see [`Mailbox::is_ascii`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use memchr::{memchr, memchr2};

/// Longest local part, in octets as written (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// Longest domain name, in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;
/// Longest label of a domain name, in octets (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest reverse or forward path, in octets including the angle brackets and any source route
/// (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH_LEN: usize = 256;

/// The name a client gives in `EHLO` or `HELO` (RFC 5321 §4.1.1.1: `Domain / address-literal`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeloName<'a> {
    /// A domain name.
    Domain(Domain<'a>),
    /// An address literal such as `[192.0.2.1]`.
    AddressLiteral(AddressLiteral<'a>),
}

/// A domain name (RFC 5321 §4.1.2 `Domain`), as written.
///
/// `sub-domain *("." sub-domain)`, where a sub-domain is letters, digits and inner hyphens, or a
/// U-label in UTF-8 (RFC 6531 §3.3). No trailing dot, each label at most 63 octets, the whole at
/// most 255. Comparison (`PartialEq`) is by the text as written; domain names themselves compare
/// case-insensitively, which is the caller's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain<'a>(&'a str);

/// An address literal (RFC 5321 §4.1.3), without its brackets.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressLiteral<'a> {
    /// `[192.0.2.1]`.
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]` (the tag is matched case-insensitively).
    Ipv6(Ipv6Addr),
    /// `[tag:content]`, a General-address-literal with a Standardized-tag other than `IPv6`.
    General {
        /// The tag (an `Ldh-str`), as written.
        tag: &'a str,
        /// The content: printable US-ASCII other than `[`, `\` and `]`, as written.
        content: &'a str,
    },
}

/// A mailbox, `Local-part "@" ( Domain / address-literal )` (RFC 5321 §4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mailbox<'a> {
    local_part: LocalPart<'a>,
    domain: MailDomain<'a>,
}

/// The local part of a mailbox (RFC 5321 §4.1.2): a Dot-string or a Quoted-string, as written
/// (a quoted one keeps its quotes and backslashes), at most 64 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalPart<'a> {
    raw: &'a str,
    quoted: bool,
}

/// The part of a mailbox after the `@` (RFC 5321 §4.1.2).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailDomain<'a> {
    /// A domain name.
    Domain(Domain<'a>),
    /// An address literal such as `[IPv6:2001:db8::1]`.
    AddressLiteral(AddressLiteral<'a>),
}

/// The argument of `MAIL FROM:` (RFC 5321 §4.1.1.2, §4.1.2 `Reverse-path`).
///
/// A source route (`<@a,@b:user@d>`) is accepted and ignored (RFC 5321 §4.1.2, Appendix C).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReversePath<'a> {
    /// `<>`: the null reverse path of bounces (RFC 5321 §4.5.5).
    Null,
    /// A sender mailbox.
    Mailbox(Mailbox<'a>),
}

/// The argument of `RCPT TO:` (RFC 5321 §4.1.1.3, §4.1.2 `Forward-path`).
///
/// A source route is accepted and ignored (RFC 5321 §4.1.2, Appendix C).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardPath<'a> {
    /// `<Postmaster>` without a domain, in any case (RFC 5321 §4.1.1.3, §4.5.1).
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Mailbox<'a>),
}

/// Why a path or mailbox was refused; carried by
/// [`CommandError::BadSender`](crate::command::CommandError::BadSender) and
/// [`CommandError::BadRecipient`](crate::command::CommandError::BadRecipient).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressError {
    /// The path does not follow RFC 5321 §4.1.2.
    Syntax,
    /// The local part is longer than 64 octets (RFC 5321 §4.5.3.1.1).
    LocalPartTooLong,
    /// The domain, or one of its labels, is too long (RFC 5321 §4.5.3.1.2).
    DomainTooLong,
    /// The path is longer than 256 octets (RFC 5321 §4.5.3.1.3).
    PathTooLong,
}

impl<'a> Domain<'a> {
    /// The domain as written.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether the domain is all ASCII (no U-label).
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

impl<'a> Mailbox<'a> {
    /// The local part, as written.
    pub fn local_part(&self) -> LocalPart<'a> {
        self.local_part
    }

    /// The domain or address literal after the `@`.
    pub fn domain(&self) -> MailDomain<'a> {
        self.domain
    }

    /// Whether the mailbox is all ASCII. A mailbox with UTF-8 in it needs `SMTPUTF8` on the
    /// `MAIL` command (RFC 6531 §3.4); refusing it otherwise is the session's job.
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }
}

impl<'a> LocalPart<'a> {
    /// The local part as written: a quoted one keeps its quotes and backslashes.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Whether the local part is a Quoted-string.
    pub fn is_quoted(&self) -> bool {
        self.quoted
    }

    /// Whether the local part is all ASCII.
    pub fn is_ascii(&self) -> bool {
        self.raw.is_ascii()
    }

    /// Appends the local part's value to `out`: without the quotes and with each quoted-pair
    /// (`\x`) replaced by its character. A Dot-string is appended as it is.
    pub fn unquote_into(&self, out: &mut String) {
        let inner = match self.raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(inner) if self.quoted => inner,
            _ => {
                out.push_str(self.raw);
                return;
            }
        };
        let mut escaped = false;
        for c in inner.chars() {
            if escaped || c != '\\' {
                out.push(c);
                escaped = false;
            } else {
                escaped = true;
            }
        }
    }
}

impl MailDomain<'_> {
    /// Whether the domain is all ASCII (an address literal always is).
    pub fn is_ascii(&self) -> bool {
        match self {
            Self::Domain(d) => d.is_ascii(),
            Self::AddressLiteral(_) => true,
        }
    }
}

impl fmt::Display for Domain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Writes the literal with its brackets: `[192.0.2.1]`, `[IPv6:2001:db8::1]`, `[tag:content]`.
impl fmt::Display for AddressLiteral<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(ip) => write!(f, "[{ip}]"),
            Self::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
            Self::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

impl fmt::Display for HeloName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => d.fmt(f),
            Self::AddressLiteral(l) => l.fmt(f),
        }
    }
}

impl fmt::Display for MailDomain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => d.fmt(f),
            Self::AddressLiteral(l) => l.fmt(f),
        }
    }
}

impl fmt::Display for LocalPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

impl ReversePath<'_> {
    /// The path without its brackets, as hosts log and store it: `user@example.org`, or the
    /// empty string for the null path `<>` (RFC 5321 §4.5.5).
    #[must_use]
    pub fn address(&self) -> String {
        match self {
            Self::Null => String::new(),
            Self::Mailbox(m) => m.to_string(),
        }
    }
}

impl ForwardPath<'_> {
    /// The path without its brackets: `user@example.org`, or `Postmaster`.
    #[must_use]
    pub fn address(&self) -> String {
        match self {
            Self::Postmaster => "Postmaster".to_owned(),
            Self::Mailbox(m) => m.to_string(),
        }
    }
}

/// Writes `local-part@domain`, the local part as written.
impl fmt::Display for Mailbox<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// Writes the path with its brackets: `<>` or `<user@example.org>` (a source route is dropped).
impl fmt::Display for ReversePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("<>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// Writes the path with its brackets: `<Postmaster>` or `<user@example.org>`.
impl fmt::Display for ForwardPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postmaster => f.write_str("<Postmaster>"),
            Self::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

// Parsers. Their input is a command-line argument that `parse_command` has already checked to
// be UTF-8 without ASCII control characters; each returns what it parsed and the rest.

/// Parses the whole of an `EHLO`/`HELO` argument.
pub(crate) fn parse_helo_name(s: &str) -> Result<HeloName<'_>, AddressError> {
    let (name, rest) = if s.starts_with('[') {
        let (literal, rest) = parse_address_literal(s)?;
        (HeloName::AddressLiteral(literal), rest)
    } else {
        let (domain, rest) = parse_domain(s)?;
        (HeloName::Domain(domain), rest)
    };
    if rest.is_empty() {
        Ok(name)
    } else {
        Err(AddressError::Syntax)
    }
}

/// Parses a reverse path at the start of `s`, which begins with `<`.
pub(crate) fn parse_reverse_path(s: &str) -> Result<(ReversePath<'_>, &str), AddressError> {
    if let [b'<', b'>', ..] = s.as_bytes() {
        return Ok((ReversePath::Null, s.get(2..).unwrap_or_default()));
    }
    let (mailbox, rest) = parse_path(s)?;
    Ok((ReversePath::Mailbox(mailbox), rest))
}

/// Parses a forward path at the start of `s`, which begins with `<`.
pub(crate) fn parse_forward_path(s: &str) -> Result<(ForwardPath<'_>, &str), AddressError> {
    const POSTMASTER: &str = "<postmaster>";
    if let [b'<', b'P' | b'p', ..] = s.as_bytes()
        && let Some((head, rest)) = s.split_at_checked(POSTMASTER.len())
        && head.eq_ignore_ascii_case(POSTMASTER)
    {
        return Ok((ForwardPath::Postmaster, rest));
    }
    let (mailbox, rest) = parse_path(s)?;
    Ok((ForwardPath::Mailbox(mailbox), rest))
}

/// `Path = "<" [ A-d-l ":" ] Mailbox ">"`.
fn parse_path(s: &str) -> Result<(Mailbox<'_>, &str), AddressError> {
    let mut inner = s.strip_prefix('<').ok_or(AddressError::Syntax)?;
    if inner.starts_with('@') {
        inner = skip_source_route(inner)?;
    }
    let (mailbox, rest) = parse_mailbox(inner)?;
    let rest = rest.strip_prefix('>').ok_or(AddressError::Syntax)?;
    if s.len() - rest.len() > MAX_PATH_LEN {
        return Err(AddressError::PathTooLong);
    }
    Ok((mailbox, rest))
}

/// Skips `A-d-l ":"`, where `A-d-l = At-domain *( "," At-domain )` and `At-domain = "@" Domain`.
fn skip_source_route(mut s: &str) -> Result<&str, AddressError> {
    loop {
        let at_domain = s.strip_prefix('@').ok_or(AddressError::Syntax)?;
        let (_, rest) = parse_domain(at_domain)?;
        if let Some(rest) = rest.strip_prefix(',') {
            s = rest;
        } else {
            return rest.strip_prefix(':').ok_or(AddressError::Syntax);
        }
    }
}

/// `Mailbox = Local-part "@" ( Domain / address-literal )`.
pub(crate) fn parse_mailbox(s: &str) -> Result<(Mailbox<'_>, &str), AddressError> {
    let bytes = s.as_bytes();
    let quoted = bytes.first() == Some(&b'"');
    let local_len = if quoted {
        scan_quoted_string(bytes)?
    } else {
        scan_dot_string(bytes)?
    };
    if local_len > MAX_LOCAL_PART_LEN {
        return Err(AddressError::LocalPartTooLong);
    }
    // `local_len` is just past an ASCII byte (a closing quote or the end of an atom), or 0.
    let (raw, rest) = s.split_at_checked(local_len).ok_or(AddressError::Syntax)?;
    let rest = rest.strip_prefix('@').ok_or(AddressError::Syntax)?;
    let (domain, rest) = if rest.starts_with('[') {
        let (literal, rest) = parse_address_literal(rest)?;
        (MailDomain::AddressLiteral(literal), rest)
    } else {
        let (domain, rest) = parse_domain(rest)?;
        (MailDomain::Domain(domain), rest)
    };
    let local_part = LocalPart { raw, quoted };
    Ok((Mailbox { local_part, domain }, rest))
}

/// `Domain = sub-domain *("." sub-domain)`, each sub-domain `Let-dig [Ldh-str]` or a U-label.
pub(crate) fn parse_domain(s: &str) -> Result<(Domain<'_>, &str), AddressError> {
    let bytes = s.as_bytes();
    let mut end = 0;
    loop {
        let start = end;
        while end < bytes.len() && class(bytes[end]) & LABEL != 0 {
            end += 1;
        }
        let label = &bytes[start..end];
        match (label.first(), label.last()) {
            (Some(b'-') | None, _) | (_, Some(b'-')) => return Err(AddressError::Syntax),
            _ => {}
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(AddressError::DomainTooLong);
        }
        if bytes.get(end) == Some(&b'.') {
            end += 1;
        } else {
            break;
        }
    }
    if end > MAX_DOMAIN_LEN {
        return Err(AddressError::DomainTooLong);
    }
    // The scan stopped at an ASCII byte or at the end, so `end` is a character boundary.
    let (domain, rest) = s.split_at_checked(end).ok_or(AddressError::Syntax)?;
    Ok((Domain(domain), rest))
}

/// `address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
/// General-address-literal ) "]"`, the addresses read by the std parsers.
pub(crate) fn parse_address_literal(s: &str) -> Result<(AddressLiteral<'_>, &str), AddressError> {
    let after_open = s.strip_prefix('[').ok_or(AddressError::Syntax)?;
    // No part of a literal may contain "]", so the first one closes it.
    let close = memchr(b']', after_open.as_bytes()).ok_or(AddressError::Syntax)?;
    let (inner, rest) = after_open
        .split_at_checked(close)
        .ok_or(AddressError::Syntax)?;
    let rest = rest.strip_prefix(']').ok_or(AddressError::Syntax)?;
    let literal = match inner.split_once(':') {
        None => AddressLiteral::Ipv4(inner.parse().map_err(|_| AddressError::Syntax)?),
        Some((tag, content)) if tag.eq_ignore_ascii_case("IPv6") => {
            AddressLiteral::Ipv6(content.parse().map_err(|_| AddressError::Syntax)?)
        }
        Some((tag, content)) => {
            let tag_ok = tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && tag
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric());
            // dcontent = %d33-90 / %d94-126
            let content_ok =
                !content.is_empty() && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126));
            if !(tag_ok && content_ok) {
                return Err(AddressError::Syntax);
            }
            AddressLiteral::General { tag, content }
        }
    };
    Ok((literal, rest))
}

/// Length of the Quoted-string at the start of `bytes` (which starts with `"`), quotes included.
/// `qtextSMTP` is every printable character but `"` and `\` (RFC 5321 §4.1.2, RFC 6531 §3.3);
/// the caller has already refused control characters.
fn scan_quoted_string(bytes: &[u8]) -> Result<usize, AddressError> {
    let mut i = 1;
    loop {
        let tail = bytes.get(i..).ok_or(AddressError::Syntax)?;
        let found = i + memchr2(b'"', b'\\', tail).ok_or(AddressError::Syntax)?;
        if bytes[found] == b'"' {
            return Ok(found + 1);
        }
        // quoted-pairSMTP = %d92 %d32-126
        match bytes.get(found + 1) {
            Some(32..=126) => i = found + 2,
            _ => return Err(AddressError::Syntax),
        }
    }
}

/// Length of the Dot-string at the start of `bytes`: `Atom *("." Atom)`, `Atom = 1*atext`.
fn scan_dot_string(bytes: &[u8]) -> Result<usize, AddressError> {
    let mut end = 0;
    loop {
        let start = end;
        while end < bytes.len() && class(bytes[end]) & ATEXT != 0 {
            end += 1;
        }
        if end == start {
            return Err(AddressError::Syntax);
        }
        if bytes.get(end) == Some(&b'.') {
            end += 1;
        } else {
            return Ok(end);
        }
    }
}

/// `atext` (RFC 5322 §3.2.3) and UTF-8 (RFC 6531 §3.3).
const ATEXT: u8 = 1;
/// Letters, digits, `-`, and UTF-8 (U-labels, RFC 6531 §3.3).
const LABEL: u8 = 2;

const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0u8;
    loop {
        let b = c as usize;
        if c.is_ascii_alphanumeric() || c >= 0x80 || c == b'-' {
            table[b] = ATEXT | LABEL;
        } else if matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'_'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        ) {
            table[b] = ATEXT;
        }
        if c == u8::MAX {
            break;
        }
        c += 1;
    }
    table
};

fn class(b: u8) -> u8 {
    CLASSES[usize::from(b)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(s: &str) -> Result<&str, AddressError> {
        match parse_domain(s) {
            Ok((d, "")) => Ok(d.as_str()),
            Ok(_) => Err(AddressError::Syntax),
            Err(e) => Err(e),
        }
    }

    fn mailbox(s: &str) -> Result<(String, &str), AddressError> {
        match parse_mailbox(s) {
            Ok((m, "")) => Ok((m.to_string(), m.local_part().as_str())),
            Ok(_) => Err(AddressError::Syntax),
            Err(e) => Err(e),
        }
    }

    /// name, input, expected (`Ok` is the domain as written).
    macro_rules! domains {
        ($($name:ident, $input:expr, $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(domain($input), $expected, "input {:?}", $input);
            }
        )*};
    }

    domains! {
        rfc5321_4_1_2_domain_simple, "example.com", Ok("example.com");
        rfc5321_4_1_2_domain_single_label, "localhost", Ok("localhost");
        rfc5321_4_1_2_domain_digits_and_hyphens, "a-1.0-9.x", Ok("a-1.0-9.x");
        rfc5321_4_1_2_domain_numeric, "192.0.2.1", Ok("192.0.2.1");
        rfc6531_3_3_domain_u_label, "bücher.example", Ok("bücher.example");
        rfc5321_4_1_2_domain_trailing_dot, "example.com.", Err(AddressError::Syntax);
        rfc5321_4_1_2_domain_leading_dot, ".example.com", Err(AddressError::Syntax);
        rfc5321_4_1_2_domain_empty_label, "a..b", Err(AddressError::Syntax);
        rfc5321_4_1_2_domain_leading_hyphen, "-a.b", Err(AddressError::Syntax);
        rfc5321_4_1_2_domain_trailing_hyphen, "a-.b", Err(AddressError::Syntax);
        rfc5321_4_1_2_domain_underscore, "a_b.c", Err(AddressError::Syntax);
        rfc5321_4_1_2_domain_empty, "", Err(AddressError::Syntax);
    }

    #[test]
    fn rfc1035_label_max_63_octets() {
        let ok = format!("{}.com", "a".repeat(63));
        assert_eq!(domain(&ok), Ok(ok.as_str()));
        let long = format!("{}.com", "a".repeat(64));
        assert_eq!(domain(&long), Err(AddressError::DomainTooLong));
    }

    #[test]
    fn rfc5321_4_5_3_1_2_domain_max_255_octets() {
        let label = "a".repeat(63);
        let ok = format!("{label}.{label}.{label}.{}", "b".repeat(63));
        assert_eq!(ok.len(), 255);
        assert_eq!(domain(&ok), Ok(ok.as_str()));
        let long = format!("{ok}a");
        assert_eq!(domain(&long), Err(AddressError::DomainTooLong));
    }

    macro_rules! literals {
        ($($name:ident, $input:expr, $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                let got = parse_address_literal($input);
                assert_eq!(got, $expected, "input {:?}", $input);
            }
        )*};
    }

    literals! {
        rfc5321_4_1_3_ipv4, "[192.0.2.1]",
            Ok((AddressLiteral::Ipv4(Ipv4Addr::new(192, 0, 2, 1)), ""));
        rfc5321_4_1_3_ipv6, "[IPv6:2001:db8::1]>",
            Ok((AddressLiteral::Ipv6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)), ">"));
        rfc5321_4_1_3_ipv6_tag_any_case, "[ipv6:::1]",
            Ok((AddressLiteral::Ipv6(Ipv6Addr::LOCALHOST), ""));
        rfc5321_4_1_3_ipv6_v4_form, "[IPv6:::ffff:192.0.2.1]",
            Ok((AddressLiteral::Ipv6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()), ""));
        rfc5321_4_1_3_general, "[x-tag:some!content]",
            Ok((AddressLiteral::General { tag: "x-tag", content: "some!content" }, ""));
        rfc5321_4_1_3_ipv4_octet_too_big, "[192.0.2.256]", Err(AddressError::Syntax);
        rfc5321_4_1_3_ipv4_three_octets, "[192.0.2]", Err(AddressError::Syntax);
        rfc5321_4_1_3_ipv4_unclosed, "[192.0.2.1", Err(AddressError::Syntax);
        rfc5321_4_1_3_ipv6_bad, "[IPv6:2001:db8::g]", Err(AddressError::Syntax);
        // Grammatically a General-address-literal with the tag "2001" (RFC 5321 §4.1.3).
        rfc5321_4_1_3_ipv6_without_tag, "[2001:db8::1]",
            Ok((AddressLiteral::General { tag: "2001", content: "db8::1" }, ""));
        rfc5321_4_1_3_ipv6_zone_id, "[IPv6:fe80::1%eth0]", Err(AddressError::Syntax);
        rfc5321_4_1_3_general_empty_content, "[x:]", Err(AddressError::Syntax);
        rfc5321_4_1_3_general_bad_tag, "[x_y:z]", Err(AddressError::Syntax);
        rfc5321_4_1_3_general_backslash, "[x:a\\b]", Err(AddressError::Syntax);
        rfc5321_4_1_3_empty, "[]", Err(AddressError::Syntax);
    }

    #[test]
    fn address_literal_display() {
        for s in ["[192.0.2.1]", "[IPv6:2001:db8::1]", "[x-tag:content]"] {
            let (literal, _) = parse_address_literal(s).expect("valid literal");
            assert_eq!(literal.to_string(), s);
        }
    }

    /// name, input, expected (`Ok` is the mailbox displayed and its local part as written).
    macro_rules! mailboxes {
        ($($name:ident, $input:expr, $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                let expected: Result<(&str, &str), AddressError> = $expected;
                let expected = expected.map(|(m, l)| (m.to_string(), l));
                assert_eq!(mailbox($input), expected, "input {:?}", $input);
            }
        )*};
    }

    mailboxes! {
        rfc5321_4_1_2_dot_string, "john.q.public@example.com",
            Ok(("john.q.public@example.com", "john.q.public"));
        rfc5321_4_1_2_atext_specials, "a!#$%&'*+-/=?^_`{|}~b@x",
            Ok(("a!#$%&'*+-/=?^_`{|}~b@x", "a!#$%&'*+-/=?^_`{|}~b"));
        rfc5321_4_1_2_quoted_space, "\"john smith\"@example.com",
            Ok(("\"john smith\"@example.com", "\"john smith\""));
        rfc5321_4_1_2_quoted_pair, "\"a\\\"b\"@x", Ok(("\"a\\\"b\"@x", "\"a\\\"b\""));
        rfc5321_4_1_2_quoted_at_and_bracket, "\"a@b>c\"@x", Ok(("\"a@b>c\"@x", "\"a@b>c\""));
        rfc5321_4_1_2_quoted_empty, "\"\"@x", Ok(("\"\"@x", "\"\""));
        rfc5321_4_1_2_ipv4_literal, "a@[192.0.2.1]", Ok(("a@[192.0.2.1]", "a"));
        rfc6531_3_3_utf8_local_part, "δοκιμή@παράδειγμα.δοκιμή",
            Ok(("δοκιμή@παράδειγμα.δοκιμή", "δοκιμή"));
        rfc5321_4_1_2_no_at, "user", Err(AddressError::Syntax);
        rfc5321_4_1_2_no_local_part, "@x", Err(AddressError::Syntax);
        rfc5321_4_1_2_no_domain, "a@", Err(AddressError::Syntax);
        rfc5321_4_1_2_leading_dot, ".a@x", Err(AddressError::Syntax);
        rfc5321_4_1_2_double_dot, "a..b@x", Err(AddressError::Syntax);
        rfc5321_4_1_2_trailing_dot, "a.@x", Err(AddressError::Syntax);
        rfc5321_4_1_2_space_in_dot_string, "a b@x", Err(AddressError::Syntax);
        rfc5321_4_1_2_unclosed_quote, "\"ab@x", Err(AddressError::Syntax);
        rfc5321_4_1_2_quoted_pair_at_end, "\"ab\\", Err(AddressError::Syntax);
        rfc5321_4_1_2_two_ats, "a@b@c", Err(AddressError::Syntax);
        rfc5321_4_1_2_bad_literal, "a@[1.2.3]", Err(AddressError::Syntax);
    }

    #[test]
    fn rfc5321_4_5_3_1_1_local_part_max_64_octets() {
        let ok = format!("{}@x", "a".repeat(64));
        assert!(mailbox(&ok).is_ok());
        let long = format!("{}@x", "a".repeat(65));
        assert_eq!(mailbox(&long), Err(AddressError::LocalPartTooLong));
        let quoted = format!("\"{}\"@x", "a".repeat(63));
        assert_eq!(mailbox(&quoted), Err(AddressError::LocalPartTooLong));
    }

    #[test]
    fn rfc5321_4_1_2_unquote() {
        let cases = [
            ("\"john smith\"@x", "john smith"),
            ("\"a\\\"b\"@x", "a\"b"),
            ("\"a\\\\b\"@x", "a\\b"),
            ("\"\\x\"@x", "x"),
            ("plain.user@x", "plain.user"),
        ];
        for (input, expected) in cases {
            let (m, _) = parse_mailbox(input).expect("valid mailbox");
            let mut out = String::new();
            m.local_part().unquote_into(&mut out);
            assert_eq!(out, expected, "input {input:?}");
        }
    }

    #[test]
    fn rfc6531_3_4_is_ascii() {
        let (ascii, _) = parse_mailbox("a@b.c").expect("valid");
        assert!(ascii.is_ascii());
        let (utf8_local, _) = parse_mailbox("ü@b.c").expect("valid");
        assert!(!utf8_local.is_ascii());
        let (utf8_domain, _) = parse_mailbox("a@ü.c").expect("valid");
        assert!(!utf8_domain.is_ascii());
        assert!(!utf8_domain.domain().is_ascii());
    }

    #[test]
    fn rfc5321_4_1_2_paths() {
        type Expected = Result<(&'static str, &'static str), AddressError>;
        let cases: [(&str, Expected); 10] = [
            ("<>", Ok(("<>", ""))),
            ("<a@b> SIZE=1", Ok(("<a@b>", " SIZE=1"))),
            ("<@r1,@r2.x:a@b>", Ok(("<a@b>", ""))),
            ("<@r1:a@b>", Ok(("<a@b>", ""))),
            ("<@r1,a@b>", Err(AddressError::Syntax)),
            ("<@r1:>", Err(AddressError::Syntax)),
            ("<a@b", Err(AddressError::Syntax)),
            ("a@b>", Err(AddressError::Syntax)),
            ("<\"a>b\"@c>", Ok(("<\"a>b\"@c>", ""))),
            ("<a@b >", Err(AddressError::Syntax)),
        ];
        for (input, expected) in cases {
            let got = parse_reverse_path(input).map(|(p, rest)| (p.to_string(), rest));
            let expected = expected.map(|(p, rest)| (p.to_string(), rest));
            assert_eq!(got, expected, "input {input:?}");
        }
    }

    #[test]
    fn rfc5321_4_1_1_3_postmaster() {
        for input in ["<Postmaster>", "<postmaster>", "<POSTMASTER>"] {
            assert_eq!(parse_forward_path(input), Ok((ForwardPath::Postmaster, "")));
        }
        let (path, _) = parse_forward_path("<postmaster@example.com>").expect("valid");
        assert!(matches!(path, ForwardPath::Mailbox(_)));
        assert_eq!(
            parse_reverse_path("<Postmaster>"),
            Err(AddressError::Syntax)
        );
        assert_eq!(parse_forward_path("<>"), Err(AddressError::Syntax));
    }

    #[test]
    fn rfc5321_4_5_3_1_3_path_max_256_octets() {
        // 64 + 1 + 189 + 2 brackets = 256
        let domain = format!("{}.{}.{}", "d".repeat(63), "d".repeat(63), "d".repeat(61));
        let ok = format!("<{}@{domain}>", "a".repeat(64));
        assert_eq!(ok.len(), 256);
        assert!(parse_reverse_path(&ok).is_ok());
        let long = format!("<{}@{domain}x>", "a".repeat(64));
        assert_eq!(parse_reverse_path(&long), Err(AddressError::PathTooLong));
    }
}
