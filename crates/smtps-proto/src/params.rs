//! ESMTP parameters of `MAIL` and `RCPT` (RFC 5321 §4.1.2 `Mail-parameters`, `Rcpt-parameters`),
//! parsed into types: SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), AUTH=
//! (RFC 4954 §5), RET, ENVID, NOTIFY and ORCPT (RFC 3461), REQUIRETLS (RFC 8689).
//!
//! Keywords and the SIZE, BODY, RET and NOTIFY values are case-insensitive. An unknown keyword is
//! refused with 555 5.5.4, a keyword of the other command too; a known one with a bad value, or
//! given twice, with 501 5.5.4 (RFC 5321 §4.1.1.11, RFC 1869 §6). Values in xtext (AUTH=, ENVID,
//! ORCPT) are checked and kept as sent; [`decode_xtext`] decodes them.

use crate::command::{CommandError, Verb};

/// The parameters of a `MAIL` command. Each is `None`/`false` when not given.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailParameters<'a> {
    /// `SIZE=`: the declared message size in octets (RFC 1870 §3).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152 §3, RFC 3030 §3).
    pub body: Option<BodyType>,
    /// `SMTPUTF8`, no value (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// `AUTH=`: the authenticated sender as sent, in xtext, or `<>` (RFC 4954 §5).
    pub auth: Option<&'a str>,
    /// `RET=` (RFC 3461 §4.3).
    pub ret: Option<DsnReturn>,
    /// `ENVID=`: the envelope identifier as sent, in xtext (RFC 3461 §4.4).
    pub envid: Option<&'a str>,
    /// `REQUIRETLS`, no value (RFC 8689 §4.1).
    pub requiretls: bool,
}

/// The parameters of a `RCPT` command. Each is `None` when not given.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RcptParameters<'a> {
    /// `NOTIFY=` (RFC 3461 §4.1).
    pub notify: Option<DsnNotify>,
    /// `ORCPT=` (RFC 3461 §4.2).
    pub orcpt: Option<OriginalRecipient<'a>>,
}

/// The `BODY=` value (RFC 6152 §3, RFC 3030 §3).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyType {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME` (RFC 6152).
    EightBitMime,
    /// `BINARYMIME` (RFC 3030); only valid with BDAT.
    BinaryMime,
}

/// The `RET=` value: what a DSN of failure carries (RFC 3461 §4.3).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsnReturn {
    /// `FULL`: the whole message.
    Full,
    /// `HDRS`: the headers only.
    Headers,
}

/// The `NOTIFY=` value (RFC 3461 §4.1): either [`NEVER`](Self::NEVER) alone, or any non-empty
/// combination of [`SUCCESS`](Self::SUCCESS), [`FAILURE`](Self::FAILURE) and
/// [`DELAY`](Self::DELAY). Only the parser combines them, so every value is a valid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DsnNotify(u8);

/// `ORCPT=addr-type;xtext` (RFC 3461 §4.2).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginalRecipient<'a> {
    /// The address type, an atom such as `rfc822`, as sent.
    pub addr_type: &'a str,
    /// The address as sent, in xtext (checked, not decoded: see [`decode_xtext`]).
    pub address: &'a str,
}

/// An ESMTP parameter this crate knows, named by the errors that concern it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parameter {
    /// `SIZE` (RFC 1870), on MAIL.
    Size,
    /// `BODY` (RFC 6152, RFC 3030), on MAIL.
    Body,
    /// `SMTPUTF8` (RFC 6531), on MAIL.
    SmtpUtf8,
    /// `AUTH` (RFC 4954 §5), on MAIL.
    Auth,
    /// `RET` (RFC 3461), on MAIL.
    Ret,
    /// `ENVID` (RFC 3461), on MAIL.
    EnvId,
    /// `REQUIRETLS` (RFC 8689), on MAIL.
    RequireTls,
    /// `NOTIFY` (RFC 3461), on RCPT.
    Notify,
    /// `ORCPT` (RFC 3461), on RCPT.
    Orcpt,
}

impl DsnNotify {
    /// `NEVER`: no DSN at all. Never combined with another value.
    pub const NEVER: Self = Self(0b1000);
    /// `SUCCESS`: a DSN on successful delivery.
    pub const SUCCESS: Self = Self(0b0001);
    /// `FAILURE`: a DSN on failure.
    pub const FAILURE: Self = Self(0b0010);
    /// `DELAY`: a DSN on delay.
    pub const DELAY: Self = Self(0b0100);

    /// Whether every condition of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        other.0 != 0 && self.0 & other.0 == other.0
    }

    /// Whether this is `NEVER`.
    pub fn is_never(self) -> bool {
        self == Self::NEVER
    }
}

impl std::fmt::Display for DsnNotify {
    /// `NEVER`, or the conditions joined with commas, as RFC 3461 §4.1 writes them
    /// (`SUCCESS,FAILURE,DELAY`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_never() {
            return f.write_str("NEVER");
        }
        let mut first = true;
        for (flag, name) in [
            (Self::SUCCESS, "SUCCESS"),
            (Self::FAILURE, "FAILURE"),
            (Self::DELAY, "DELAY"),
        ] {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl Parameter {
    /// The keyword, upper-case, as the RFC writes it.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Size => "SIZE",
            Self::Body => "BODY",
            Self::SmtpUtf8 => "SMTPUTF8",
            Self::Auth => "AUTH",
            Self::Ret => "RET",
            Self::EnvId => "ENVID",
            Self::RequireTls => "REQUIRETLS",
            Self::Notify => "NOTIFY",
            Self::Orcpt => "ORCPT",
        }
    }

    /// The command the parameter belongs to.
    pub fn verb(self) -> Verb {
        match self {
            Self::Notify | Self::Orcpt => Verb::Rcpt,
            _ => Verb::Mail,
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }

    fn from_keyword(keyword: &str) -> Option<Self> {
        let k = keyword.as_bytes();
        let param = match k.len() {
            3 => Self::Ret,
            4 => match k[0] | 0x20 {
                b's' => Self::Size,
                b'b' => Self::Body,
                _ => Self::Auth,
            },
            5 => match k[0] | 0x20 {
                b'e' => Self::EnvId,
                _ => Self::Orcpt,
            },
            6 => Self::Notify,
            8 => Self::SmtpUtf8,
            10 => Self::RequireTls,
            _ => return None,
        };
        k.eq_ignore_ascii_case(param.keyword().as_bytes())
            .then_some(param)
    }
}

/// Decodes xtext (RFC 3461 §4: `+` and two upper-case hex digits stand for one octet), as in
/// ENVID, ORCPT and AUTH= values, appending the octets to `out`.
///
/// # Errors
///
/// [`CommandError::InvalidXtext`] if `xtext` is not xtext: a character outside `!`..=`~`, a bare
/// `=`, or a `+` not followed by two upper-case hex digits. `out` may then hold a partial result.
pub fn decode_xtext(xtext: &str, out: &mut Vec<u8>) -> Result<(), CommandError> {
    let mut bytes = xtext.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => {
                let hi = bytes.next().and_then(upper_hex);
                let lo = bytes.next().and_then(upper_hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(CommandError::InvalidXtext),
                }
            }
            b'=' => return Err(CommandError::InvalidXtext),
            b'!'..=b'~' => out.push(b),
            _ => return Err(CommandError::InvalidXtext),
        }
    }
    Ok(())
}

/// Longest ENVID value (RFC 3461 §4.4).
const MAX_ENVID_LEN: usize = 100;
/// Longest ORCPT value (RFC 3461 §4.2).
const MAX_ORCPT_LEN: usize = 500;

/// Parses the parameters after the reverse path of `MAIL`: `esmtp-param *(SP esmtp-param)`,
/// where `s` is what follows the path and its spaces.
pub(crate) fn parse_mail_parameters(s: &str) -> Result<MailParameters<'_>, CommandError> {
    let mut params = MailParameters::default();
    let mut seen = 0u16;
    for (param, value) in Parameters::new(s, Verb::Mail) {
        let param = param?;
        seen = mark_seen(seen, param)?;
        let invalid = CommandError::InvalidParameterValue(param);
        match param {
            Parameter::Size => params.size = Some(value.and_then(parse_decimal).ok_or(invalid)?),
            Parameter::Body => {
                let value = value.ok_or(invalid)?;
                params.body = Some(if value.eq_ignore_ascii_case("8BITMIME") {
                    BodyType::EightBitMime
                } else if value.eq_ignore_ascii_case("7BIT") {
                    BodyType::SevenBit
                } else if value.eq_ignore_ascii_case("BINARYMIME") {
                    BodyType::BinaryMime
                } else {
                    return Err(invalid);
                });
            }
            Parameter::SmtpUtf8 | Parameter::RequireTls if value.is_some() => return Err(invalid),
            Parameter::SmtpUtf8 => params.smtputf8 = true,
            Parameter::RequireTls => params.requiretls = true,
            Parameter::Auth => {
                params.auth = Some(value.filter(|v| is_xtext(v)).ok_or(invalid)?);
            }
            Parameter::Ret => {
                let value = value.ok_or(invalid)?;
                params.ret = Some(if value.eq_ignore_ascii_case("HDRS") {
                    DsnReturn::Headers
                } else if value.eq_ignore_ascii_case("FULL") {
                    DsnReturn::Full
                } else {
                    return Err(invalid);
                });
            }
            Parameter::EnvId => {
                let ok = |v: &&str| v.len() <= MAX_ENVID_LEN && is_xtext(v);
                params.envid = Some(value.filter(ok).ok_or(invalid)?);
            }
            Parameter::Notify | Parameter::Orcpt => {
                return Err(CommandError::ParameterNotAllowed(param));
            }
        }
    }
    Ok(params)
}

/// Parses the parameters after the forward path of `RCPT`, where `s` is what follows the path
/// and its spaces.
pub(crate) fn parse_rcpt_parameters(s: &str) -> Result<RcptParameters<'_>, CommandError> {
    let mut params = RcptParameters::default();
    let mut seen = 0u16;
    for (param, value) in Parameters::new(s, Verb::Rcpt) {
        let param = param?;
        seen = mark_seen(seen, param)?;
        let invalid = CommandError::InvalidParameterValue(param);
        match param {
            Parameter::Notify => params.notify = Some(value.and_then(parse_notify).ok_or(invalid)?),
            Parameter::Orcpt => params.orcpt = Some(value.and_then(parse_orcpt).ok_or(invalid)?),
            _ => return Err(CommandError::ParameterNotAllowed(param)),
        }
    }
    Ok(params)
}

/// Splits parameters on spaces (several in a row are accepted) into keyword and optional value,
/// yielding the known keyword or the error for an unknown or malformed one.
struct Parameters<'a> {
    rest: &'a str,
    verb: Verb,
}

impl<'a> Parameters<'a> {
    fn new(rest: &'a str, verb: Verb) -> Self {
        Self { rest, verb }
    }
}

impl<'a> Iterator for Parameters<'a> {
    type Item = (Result<Parameter, CommandError>, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.trim_start_matches(' ');
        if rest.is_empty() {
            return None;
        }
        // Byte loops rather than `split_once`: tokens are short, and this is the hot path of MAIL.
        // Both bytes searched for are ASCII, so the splits fall on character boundaries.
        let space = rest.bytes().position(|b| b == b' ').unwrap_or(rest.len());
        let (param, rest) = rest.split_at_checked(space).unwrap_or((rest, ""));
        self.rest = rest;
        let (keyword, value) = match param.bytes().position(|b| b == b'=') {
            Some(eq) => match (param.get(..eq), param.get(eq + 1..)) {
                (Some(keyword), Some(value)) => (keyword, Some(value)),
                _ => (param, None),
            },
            None => (param, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let well_formed = keyword
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && keyword
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let param = if well_formed {
            Parameter::from_keyword(keyword).ok_or(CommandError::UnknownParameter)
        } else {
            Err(CommandError::Syntax(self.verb))
        };
        Some((param, value))
    }
}

fn mark_seen(seen: u16, param: Parameter) -> Result<u16, CommandError> {
    if seen & param.bit() != 0 {
        Err(CommandError::DuplicateParameter(param))
    } else {
        Ok(seen | param.bit())
    }
}

/// `1*DIGIT` as a `u64`; `None` if empty, not digits, or too large.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// `"NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" )` (RFC 3461 §4.1), any case.
fn parse_notify(s: &str) -> Option<DsnNotify> {
    let mut bits = 0u8;
    for item in s.split(',') {
        let flag = if item.eq_ignore_ascii_case("SUCCESS") {
            DsnNotify::SUCCESS
        } else if item.eq_ignore_ascii_case("FAILURE") {
            DsnNotify::FAILURE
        } else if item.eq_ignore_ascii_case("DELAY") {
            DsnNotify::DELAY
        } else if item.eq_ignore_ascii_case("NEVER") {
            DsnNotify::NEVER
        } else {
            return None;
        };
        bits |= flag.0;
    }
    // NEVER must stand alone.
    (bits & DsnNotify::NEVER.0 == 0 || bits == DsnNotify::NEVER.0).then_some(DsnNotify(bits))
}

/// `addr-type ";" xtext` (RFC 3461 §4.2), `addr-type` an atom.
fn parse_orcpt(s: &str) -> Option<OriginalRecipient<'_>> {
    if s.len() > MAX_ORCPT_LEN {
        return None;
    }
    let (addr_type, address) = s.split_once(';')?;
    let atom = !addr_type.is_empty() && addr_type.bytes().all(is_atext);
    (atom && !address.is_empty() && is_xtext(address))
        .then_some(OriginalRecipient { addr_type, address })
}

/// Non-empty xtext (RFC 3461 §4).
fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |j: usize| b.get(j).copied().and_then(upper_hex).is_some();
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            b'!'..=b'~' => i += 1,
            _ => return false,
        }
    }
    !b.is_empty()
}

fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// ASCII `atext` (RFC 5322 §3.2.3).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    type MailResult = Result<MailParameters<'static>, CommandError>;
    type RcptResult = Result<RcptParameters<'static>, CommandError>;

    fn mail(f: impl FnOnce(&mut MailParameters<'static>)) -> MailResult {
        let mut p = MailParameters::default();
        f(&mut p);
        Ok(p)
    }

    fn rcpt(f: impl FnOnce(&mut RcptParameters<'static>)) -> RcptResult {
        let mut p = RcptParameters::default();
        f(&mut p);
        Ok(p)
    }

    fn invalid(p: Parameter) -> CommandError {
        CommandError::InvalidParameterValue(p)
    }

    /// name, parameter text, expected result.
    macro_rules! mail_params {
        ($($name:ident, $input:expr, $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                let expected: MailResult = $expected;
                assert_eq!(parse_mail_parameters($input), expected, "input {:?}", $input);
            }
        )*};
    }

    mail_params! {
        mail_no_parameters, "", mail(|_| {});
        rfc1870_size, "SIZE=12345", mail(|p| p.size = Some(12345));
        rfc1870_size_zero, "size=0", mail(|p| p.size = Some(0));
        rfc1870_size_u64_max, "SIZE=18446744073709551615", mail(|p| p.size = Some(u64::MAX));
        rfc1870_size_overflow, "SIZE=18446744073709551616", Err(invalid(Parameter::Size));
        rfc1870_size_not_digits, "SIZE=12a", Err(invalid(Parameter::Size));
        rfc1870_size_signed, "SIZE=+12", Err(invalid(Parameter::Size));
        rfc1870_size_empty, "SIZE=", Err(invalid(Parameter::Size));
        rfc1870_size_no_value, "SIZE", Err(invalid(Parameter::Size));
        rfc6152_body_8bitmime, "BODY=8BITMIME", mail(|p| p.body = Some(BodyType::EightBitMime));
        rfc6152_body_7bit_any_case, "body=7bit", mail(|p| p.body = Some(BodyType::SevenBit));
        rfc3030_body_binarymime, "Body=BinaryMime", mail(|p| p.body = Some(BodyType::BinaryMime));
        rfc6152_body_unknown, "BODY=9BIT", Err(invalid(Parameter::Body));
        rfc6152_body_no_value, "BODY", Err(invalid(Parameter::Body));
        rfc6531_smtputf8, "SMTPUTF8", mail(|p| p.smtputf8 = true);
        rfc6531_smtputf8_with_value, "SMTPUTF8=yes", Err(invalid(Parameter::SmtpUtf8));
        rfc8689_requiretls, "requiretls", mail(|p| p.requiretls = true);
        rfc8689_requiretls_with_value, "REQUIRETLS=1", Err(invalid(Parameter::RequireTls));
        rfc4954_5_auth, "AUTH=e+3Dmc2@example.com", mail(|p| p.auth = Some("e+3Dmc2@example.com"));
        rfc4954_5_auth_null, "AUTH=<>", mail(|p| p.auth = Some("<>"));
        rfc4954_5_auth_bad_xtext, "AUTH=a=b", Err(invalid(Parameter::Auth));
        rfc4954_5_auth_empty, "AUTH=", Err(invalid(Parameter::Auth));
        rfc3461_4_3_ret_full, "RET=FULL", mail(|p| p.ret = Some(DsnReturn::Full));
        rfc3461_4_3_ret_hdrs, "ret=hdrs", mail(|p| p.ret = Some(DsnReturn::Headers));
        rfc3461_4_3_ret_bad, "RET=BODY", Err(invalid(Parameter::Ret));
        rfc3461_4_4_envid, "ENVID=QQ314159+2B1", mail(|p| p.envid = Some("QQ314159+2B1"));
        rfc3461_4_4_envid_bad_hex, "ENVID=a+2b", Err(invalid(Parameter::EnvId));
        rfc3461_4_4_envid_short_hex, "ENVID=a+2", Err(invalid(Parameter::EnvId));
        rfc3461_4_4_envid_utf8, "ENVID=é", Err(invalid(Parameter::EnvId));
        all_mail_parameters,
            "SIZE=1 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS ENVID=x REQUIRETLS",
            mail(|p| {
                p.size = Some(1);
                p.body = Some(BodyType::EightBitMime);
                p.smtputf8 = true;
                p.auth = Some("<>");
                p.ret = Some(DsnReturn::Headers);
                p.envid = Some("x");
                p.requiretls = true;
            });
        mail_several_spaces, "SIZE=1   BODY=7BIT ", mail(|p| {
            p.size = Some(1);
            p.body = Some(BodyType::SevenBit);
        });
        rfc1869_6_duplicate_size, "SIZE=1 SIZE=2", Err(CommandError::DuplicateParameter(Parameter::Size));
        rfc1869_6_duplicate_flag, "SMTPUTF8 smtputf8", Err(CommandError::DuplicateParameter(Parameter::SmtpUtf8));
        rfc5321_4_1_1_11_unknown, "FOO=BAR", Err(CommandError::UnknownParameter);
        rfc5321_4_1_1_11_unknown_same_length, "SIZF=1", Err(CommandError::UnknownParameter);
        rfc5321_4_1_1_11_unknown_after_valid, "SIZE=1 XYZZY", Err(CommandError::UnknownParameter);
        rfc3461_notify_on_mail, "NOTIFY=NEVER", Err(CommandError::ParameterNotAllowed(Parameter::Notify));
        rfc3461_orcpt_on_mail, "ORCPT=rfc822;a@b", Err(CommandError::ParameterNotAllowed(Parameter::Orcpt));
        rfc5321_4_1_2_bad_keyword, "-SIZE=1", Err(CommandError::Syntax(Verb::Mail));
        rfc5321_4_1_2_empty_keyword, "=1", Err(CommandError::Syntax(Verb::Mail));
    }

    #[test]
    fn rfc3461_4_4_envid_max_100() {
        let ok = format!("ENVID={}", "x".repeat(100));
        assert_eq!(
            parse_mail_parameters(&ok).map(|p| p.envid.map(str::len)),
            Ok(Some(100))
        );
        let long = format!("ENVID={}", "x".repeat(101));
        assert_eq!(parse_mail_parameters(&long), Err(invalid(Parameter::EnvId)));
    }

    macro_rules! rcpt_params {
        ($($name:ident, $input:expr, $expected:expr;)*) => {$(
            #[test]
            fn $name() {
                let expected: RcptResult = $expected;
                assert_eq!(parse_rcpt_parameters($input), expected, "input {:?}", $input);
            }
        )*};
    }

    const SF: DsnNotify = DsnNotify(DsnNotify::SUCCESS.0 | DsnNotify::FAILURE.0);
    const ALL: DsnNotify = DsnNotify(SF.0 | DsnNotify::DELAY.0);

    rcpt_params! {
        rcpt_no_parameters, "", rcpt(|_| {});
        rfc3461_4_1_notify_never, "NOTIFY=NEVER", rcpt(|p| p.notify = Some(DsnNotify::NEVER));
        rfc3461_4_1_notify_list, "notify=success,Failure", rcpt(|p| p.notify = Some(SF));
        rfc3461_4_1_notify_all, "NOTIFY=DELAY,SUCCESS,FAILURE", rcpt(|p| p.notify = Some(ALL));
        rfc3461_4_1_notify_never_not_alone, "NOTIFY=NEVER,SUCCESS", Err(invalid(Parameter::Notify));
        rfc3461_4_1_notify_success_never, "NOTIFY=SUCCESS,NEVER", Err(invalid(Parameter::Notify));
        rfc3461_4_1_notify_empty_item, "NOTIFY=SUCCESS,", Err(invalid(Parameter::Notify));
        rfc3461_4_1_notify_unknown, "NOTIFY=ALWAYS", Err(invalid(Parameter::Notify));
        rfc3461_4_1_notify_no_value, "NOTIFY", Err(invalid(Parameter::Notify));
        rfc3461_4_2_orcpt, "ORCPT=rfc822;bob+2Bx@example.com",
            rcpt(|p| p.orcpt = Some(OriginalRecipient {
                addr_type: "rfc822",
                address: "bob+2Bx@example.com",
            }));
        rfc3461_4_2_orcpt_no_semicolon, "ORCPT=rfc822", Err(invalid(Parameter::Orcpt));
        rfc3461_4_2_orcpt_empty_type, "ORCPT=;a@b", Err(invalid(Parameter::Orcpt));
        rfc3461_4_2_orcpt_empty_address, "ORCPT=rfc822;", Err(invalid(Parameter::Orcpt));
        rfc3461_4_2_orcpt_bad_xtext, "ORCPT=rfc822;a+zz@b", Err(invalid(Parameter::Orcpt));
        rcpt_both, "NOTIFY=NEVER ORCPT=rfc822;a@b", rcpt(|p| {
            p.notify = Some(DsnNotify::NEVER);
            p.orcpt = Some(OriginalRecipient { addr_type: "rfc822", address: "a@b" });
        });
        rcpt_duplicate_notify, "NOTIFY=NEVER NOTIFY=NEVER",
            Err(CommandError::DuplicateParameter(Parameter::Notify));
        rcpt_unknown, "XFOO", Err(CommandError::UnknownParameter);
        rcpt_size_not_allowed, "SIZE=10", Err(CommandError::ParameterNotAllowed(Parameter::Size));
        rcpt_smtputf8_not_allowed, "SMTPUTF8", Err(CommandError::ParameterNotAllowed(Parameter::SmtpUtf8));
    }

    #[test]
    fn rfc3461_4_1_notify_contains() {
        assert!(SF.contains(DsnNotify::SUCCESS));
        assert!(SF.contains(DsnNotify::FAILURE));
        assert!(!SF.contains(DsnNotify::DELAY));
        assert!(!SF.contains(DsnNotify::NEVER));
        assert!(!SF.is_never());
        assert!(DsnNotify::NEVER.is_never());
        assert!(!DsnNotify::NEVER.contains(DsnNotify::SUCCESS));
    }

    #[test]
    fn rfc3461_4_xtext_decoding() {
        let cases: [(&str, Result<&[u8], CommandError>); 7] = [
            ("abc", Ok(b"abc")),
            ("a+2Bb+3D", Ok(b"a+b=")),
            ("+00+FF", Ok(b"\x00\xff")),
            ("", Ok(b"")),
            ("a+2b", Err(CommandError::InvalidXtext)),
            ("a=b", Err(CommandError::InvalidXtext)),
            ("a b", Err(CommandError::InvalidXtext)),
        ];
        for (input, expected) in cases {
            let mut out = Vec::new();
            let got = decode_xtext(input, &mut out).map(|()| out.as_slice());
            assert_eq!(got, expected, "input {input:?}");
        }
    }
}
