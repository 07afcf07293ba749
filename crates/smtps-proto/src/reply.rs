//! Replies: reply codes (RFC 5321 §4.2), enhanced status codes (RFC 2034, RFC 3463) and their
//! serialisation, including multi-line replies (§4.2.1) within the reply-line limit (§4.5.3.1.5).

use std::borrow::Cow;
use std::fmt;

use smallvec::SmallVec;

/// The longest reply line, including the code and CRLF (RFC 5321 §4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

/// A three-digit SMTP reply code (RFC 5321 §4.2): first digit 2–5, second 0–5, third 0–9.
///
/// Built only through [`ReplyCode::new`] or the constants, so every value is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// `214` help message.
    pub const HELP: Self = Self(214);
    /// `220` service ready.
    pub const SERVICE_READY: Self = Self(220);
    /// `221` closing.
    pub const CLOSING: Self = Self(221);
    /// `235` authentication succeeded (RFC 4954).
    pub const AUTH_OK: Self = Self(235);
    /// `250` requested action completed.
    pub const OK: Self = Self(250);
    /// `252` cannot verify, will attempt delivery.
    pub const CANNOT_VERIFY: Self = Self(252);
    /// `334` SASL challenge (RFC 4954).
    pub const AUTH_CHALLENGE: Self = Self(334);
    /// `354` start mail input.
    pub const START_MAIL_INPUT: Self = Self(354);
    /// `421` service not available, closing.
    pub const SERVICE_UNAVAILABLE: Self = Self(421);
    /// `451` local error in processing.
    pub const LOCAL_ERROR: Self = Self(451);
    /// `452` insufficient storage (also: too many recipients, §4.5.3.1.10).
    pub const INSUFFICIENT_STORAGE: Self = Self(452);
    /// `454` TLS not available / temporary authentication failure.
    pub const TEMPORARY_FAILURE: Self = Self(454);
    /// `500` syntax error, command unrecognised or line too long.
    pub const SYNTAX_ERROR: Self = Self(500);
    /// `501` syntax error in parameters or arguments.
    pub const ARGUMENT_ERROR: Self = Self(501);
    /// `502` command not implemented.
    pub const NOT_IMPLEMENTED: Self = Self(502);
    /// `503` bad sequence of commands.
    pub const BAD_SEQUENCE: Self = Self(503);
    /// `504` command parameter not implemented.
    pub const PARAMETER_NOT_IMPLEMENTED: Self = Self(504);
    /// `530` authentication / TLS required (RFC 3207, RFC 4954).
    pub const ACCESS_DENIED: Self = Self(530);
    /// `535` authentication credentials invalid (RFC 4954).
    pub const AUTH_INVALID: Self = Self(535);
    /// `538` encryption required for the authentication mechanism (RFC 4954).
    pub const ENCRYPTION_REQUIRED: Self = Self(538);
    /// `550` mailbox unavailable / policy rejection.
    pub const MAILBOX_UNAVAILABLE: Self = Self(550);
    /// `552` exceeded storage allocation.
    pub const EXCEEDED_STORAGE: Self = Self(552);
    /// `553` mailbox name not allowed.
    pub const MAILBOX_NAME_INVALID: Self = Self(553);
    /// `554` transaction failed.
    pub const TRANSACTION_FAILED: Self = Self(554);
    /// `555` MAIL/RCPT parameters not recognised or not implemented.
    pub const PARAMETERS_NOT_RECOGNIZED: Self = Self(555);

    /// A reply code from its number, if it is a valid one (RFC 5321 §4.2: `2`–`5`, `0`–`5`, `0`–`9`).
    #[must_use]
    pub const fn new(code: u16) -> Option<Self> {
        let first = code / 100;
        let second = (code / 10) % 10;
        if first >= 2 && first <= 5 && second <= 5 {
            Some(Self(code))
        } else {
            None
        }
    }

    /// The number.
    #[must_use]
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// The first digit: 2 positive completion, 3 intermediate, 4 transient, 5 permanent.
    #[must_use]
    pub const fn class(self) -> u8 {
        // `new` bounds the code to 200..=559, so the first digit fits a u8.
        #[allow(clippy::cast_possible_truncation)]
        let class = (self.0 / 100) as u8;
        class
    }

    /// Whether the reply is positive (2xx).
    #[must_use]
    pub const fn is_positive(self) -> bool {
        self.class() == 2
    }

    /// Whether the reply is intermediate (3xx).
    #[must_use]
    pub const fn is_intermediate(self) -> bool {
        self.class() == 3
    }

    /// Whether the reply is a failure (4xx or 5xx).
    #[must_use]
    pub const fn is_negative(self) -> bool {
        self.class() >= 4
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An enhanced mail system status code, `class.subject.detail` (RFC 3463 §2, RFC 2034).
///
/// Built only by [`EnhancedStatus::new`], [`EnhancedStatus::parse`] or the constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// `2.0.0` success.
    pub const OK: Self = Self::known(2, 0, 0);
    /// `4.0.0` transient failure, unspecified.
    pub const TRANSIENT: Self = Self::known(4, 0, 0);
    /// `5.0.0` permanent failure, unspecified.
    pub const PERMANENT: Self = Self::known(5, 0, 0);

    /// An enhanced status from its parts: class 2, 4 or 5; subject and detail 0–999.
    #[must_use]
    pub const fn new(class: u8, subject: u16, detail: u16) -> Option<Self> {
        if (class == 2 || class == 4 || class == 5) && subject <= 999 && detail <= 999 {
            Some(Self {
                class,
                subject,
                detail,
            })
        } else {
            None
        }
    }

    /// Parses `"5.7.1"` (RFC 3463 §2: `class "." subject "." detail`, 1–3 digits each part).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let class = parse_digits(parts.next()?, 1)?;
        let subject = parse_digits(parts.next()?, 3)?;
        let detail = parse_digits(parts.next()?, 3)?;
        if parts.next().is_some() {
            return None;
        }
        Self::new(u8::try_from(class).ok()?, subject, detail)
    }

    /// The default status for a reply code's class: `2.0.0`, `4.0.0` or `5.0.0`.
    #[must_use]
    pub const fn for_code(code: ReplyCode) -> Self {
        match code.class() {
            4 => Self::TRANSIENT,
            5 => Self::PERMANENT,
            _ => Self::OK,
        }
    }

    /// The class digit.
    #[must_use]
    pub const fn class(self) -> u8 {
        self.class
    }

    /// The subject number.
    #[must_use]
    pub const fn subject(self) -> u16 {
        self.subject
    }

    /// The detail number.
    #[must_use]
    pub const fn detail(self) -> u16 {
        self.detail
    }

    // Only for the literal constants of this crate, whose values are checked by a unit test.
    pub(crate) const fn known(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

fn parse_digits(text: &str, max_len: usize) -> Option<u16> {
    if text.is_empty() || text.len() > max_len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// An SMTP reply: a code, an optional enhanced status, and one or more lines of text
/// (RFC 5321 §4.2, §4.2.1).
///
/// Text supplied by the host is sanitised when the reply is written: CR, LF and other control
/// characters become spaces, so host text can never inject a reply line, and over-long lines are
/// cut to fit [`MAX_REPLY_LINE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: ReplyCode,
    status: Option<EnhancedStatus>,
    lines: SmallVec<[Cow<'static, str>; 1]>,
}

impl Reply {
    /// A one-line reply.
    #[must_use]
    pub fn new(
        code: ReplyCode,
        status: Option<EnhancedStatus>,
        text: impl Into<Cow<'static, str>>,
    ) -> Self {
        let mut lines = SmallVec::new();
        lines.push(text.into());
        Self {
            code,
            status,
            lines,
        }
    }

    /// A reply from a numeric code and a textual enhanced status, as a host (or a C caller)
    /// would give them. `None` if the code is not a valid reply code, the status does not parse,
    /// or its class disagrees with the code's (RFC 3463 §2: they must match).
    #[must_use]
    pub fn from_parts(code: u16, status: Option<&str>, text: &str) -> Option<Self> {
        let code = ReplyCode::new(code)?;
        let status = match status {
            Some(s) if !s.is_empty() => {
                let status = EnhancedStatus::parse(s)?;
                if status.class() != code.class() {
                    return None;
                }
                Some(status)
            }
            _ => None,
        };
        Some(Self::new(code, status, text.to_owned()))
    }

    /// A reply whose code and status are known-good constants of this crate.
    pub(crate) fn fixed(code: u16, status: (u8, u16, u16), text: &'static str) -> Self {
        debug_assert!(ReplyCode::new(code).is_some());
        Self::new(
            ReplyCode(code),
            Some(EnhancedStatus::known(status.0, status.1, status.2)),
            text,
        )
    }

    /// Appends a line to a multi-line reply (§4.2.1).
    #[must_use]
    pub fn with_line(mut self, text: impl Into<Cow<'static, str>>) -> Self {
        self.lines.push(text.into());
        self
    }

    /// Replaces the enhanced status.
    #[must_use]
    pub fn with_status(mut self, status: Option<EnhancedStatus>) -> Self {
        self.status = status;
        self
    }

    /// The reply code.
    #[must_use]
    pub fn code(&self) -> ReplyCode {
        self.code
    }

    /// The enhanced status, if one was given.
    #[must_use]
    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The lines of text.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(AsRef::as_ref)
    }

    /// Writes the reply in wire form. With `enhanced` (ENHANCEDSTATUSCODES advertised,
    /// RFC 2034 §3), every line of a 2xx/4xx/5xx reply carries the enhanced status — the given
    /// one, or `x.0.0` for the code's class; 3xx replies never carry one.
    pub fn write_to(&self, out: &mut Vec<u8>, enhanced: bool) {
        let status = if enhanced && !self.code.is_intermediate() {
            Some(self.status.unwrap_or(EnhancedStatus::for_code(self.code)))
        } else {
            None
        };
        let last = self.lines.len().saturating_sub(1);
        for (index, text) in self.lines.iter().enumerate() {
            let start = out.len();
            let code = self.code.as_u16();
            out.extend_from_slice(&[
                digit(code / 100),
                digit(code / 10 % 10),
                digit(code % 10),
                if index == last { b' ' } else { b'-' },
            ]);
            if let Some(status) = status {
                write_status(out, status);
                out.push(b' ');
            }
            // Leave room for CRLF within the line limit.
            let room = MAX_REPLY_LINE - 2 - (out.len() - start);
            push_sanitized(out, text, room);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a new vector (see [`Reply::write_to`]).
    #[must_use]
    pub fn to_bytes(&self, enhanced: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out, enhanced);
        out
    }
}

fn digit(n: u16) -> u8 {
    // n is always a single decimal digit here.
    b'0' + (n % 10) as u8
}

fn write_status(out: &mut Vec<u8>, status: EnhancedStatus) {
    out.push(b'0' + status.class % 10);
    out.push(b'.');
    write_number(out, status.subject);
    out.push(b'.');
    write_number(out, status.detail);
}

fn write_number(out: &mut Vec<u8>, n: u16) {
    if n >= 100 {
        out.push(digit(n / 100));
    }
    if n >= 10 {
        out.push(digit(n / 10));
    }
    out.push(digit(n));
}

/// Copies `text` with control characters replaced by spaces, cut at a character boundary so
/// that at most `room` octets are written.
fn push_sanitized(out: &mut Vec<u8>, text: &str, room: usize) {
    let mut written = 0;
    for ch in text.chars() {
        let len = ch.len_utf8();
        if written + len > room {
            break;
        }
        if ch.is_control() {
            out.push(b' ');
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
        written += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_code_rejects_invalid_numbers_rfc5321_4_2() {
        for bad in [0, 199, 160, 260, 600, 999, 1250] {
            assert!(ReplyCode::new(bad).is_none(), "{bad}");
        }
        for good in [200, 250, 354, 421, 559] {
            assert_eq!(ReplyCode::new(good).map(ReplyCode::as_u16), Some(good));
        }
    }

    #[test]
    fn enhanced_status_parses_rfc3463_syntax() {
        assert_eq!(EnhancedStatus::parse("5.7.1"), EnhancedStatus::new(5, 7, 1));
        assert_eq!(
            EnhancedStatus::parse("4.999.999"),
            EnhancedStatus::new(4, 999, 999)
        );
        for bad in [
            "", "5.7", "5.7.1.1", "3.0.0", "5.1000.0", "5..1", "a.b.c", "25.0.0", "5.7.1 ",
        ] {
            assert_eq!(EnhancedStatus::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn single_line_reply_with_enhanced_status_rfc2034() {
        let reply = Reply::fixed(250, (2, 1, 0), "Sender OK");
        assert_eq!(reply.to_bytes(true), b"250 2.1.0 Sender OK\r\n");
        assert_eq!(reply.to_bytes(false), b"250 Sender OK\r\n");
    }

    #[test]
    fn intermediate_reply_never_carries_enhanced_status_rfc2034() {
        let reply = Reply::new(ReplyCode::START_MAIL_INPUT, None, "Go ahead");
        assert_eq!(reply.to_bytes(true), b"354 Go ahead\r\n");
    }

    #[test]
    fn missing_status_defaults_to_class_rfc3463() {
        let reply = Reply::new(ReplyCode::TRANSACTION_FAILED, None, "No");
        assert_eq!(reply.to_bytes(true), b"554 5.0.0 No\r\n");
    }

    #[test]
    fn multi_line_reply_uses_hyphen_until_last_line_rfc5321_4_2_1() {
        let reply = Reply::new(ReplyCode::OK, None, "one")
            .with_line("two")
            .with_line("three");
        assert_eq!(
            reply.to_bytes(false),
            b"250-one\r\n250-two\r\n250 three\r\n"
        );
    }

    #[test]
    fn host_text_cannot_inject_reply_lines() {
        let reply = Reply::from_parts(550, Some("5.7.1"), "no\r\n250 2.0.0 fake").expect("valid");
        assert_eq!(reply.to_bytes(true), b"550 5.7.1 no  250 2.0.0 fake\r\n");
    }

    #[test]
    fn long_reply_text_is_cut_to_512_octets_rfc5321_4_5_3_1_5() {
        let reply = Reply::new(ReplyCode::OK, None, "é".repeat(600));
        let bytes = reply.to_bytes(true);
        assert!(bytes.len() <= MAX_REPLY_LINE);
        assert!(bytes.ends_with(b"\r\n"));
        assert!(std::str::from_utf8(&bytes).is_ok());
    }

    #[test]
    fn from_parts_requires_matching_classes_rfc3463_2() {
        assert!(Reply::from_parts(250, Some("5.0.0"), "x").is_none());
        assert!(Reply::from_parts(250, Some("bad"), "x").is_none());
        assert!(Reply::from_parts(700, None, "x").is_none());
        assert!(Reply::from_parts(451, Some(""), "x").is_some());
    }
}
