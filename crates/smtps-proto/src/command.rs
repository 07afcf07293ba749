//! SMTP command lines (RFC 5321 §4.1.1): [`parse_command`] turns one line into a [`Command`], or
//! into a [`CommandError`] that knows the reply it calls for.
//!
//! The parser works on a line the session has already framed (without its CRLF) and limited in
//! length. It borrows everything from that line and never allocates. It checks syntax only:
//! whether a command is allowed now, whether an extension it uses was offered, and whether
//! UTF-8 in a path is acceptable (RFC 6531 needs `SMTPUTF8`) are the session's decisions.
//!
//! Leniency: verbs, `FROM:`/`TO:`, ESMTP keywords and their enumerated values are matched in any
//! case; several spaces are accepted where the RFC wants one, a space after `FROM:` and `TO:`, and
//! spaces at the end of the line. Nothing else is relaxed: angle brackets are required, an ASCII
//! control character (anything below SP, and DEL) after the verb is refused with 501 5.5.2, and
//! so is invalid UTF-8 anywhere in the line. An unknown verb is 500 5.5.1.

use std::fmt;

use crate::address::{self, AddressError, ForwardPath, HeloName, ReversePath};
use crate::params::{self, MailParameters, Parameter, RcptParameters};

/// One SMTP command (RFC 5321 §4.1.1 and the extensions named on each variant).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain-or-literal` (RFC 5321 §4.1.1.1).
    Ehlo(HeloName<'a>),
    /// `HELO domain-or-literal` (RFC 5321 §4.1.1.1).
    Helo(HeloName<'a>),
    /// `MAIL FROM:<reverse-path> [parameters]` (RFC 5321 §4.1.1.2).
    Mail {
        /// The reverse path, possibly `<>`.
        from: ReversePath<'a>,
        /// The ESMTP parameters.
        params: MailParameters<'a>,
    },
    /// `RCPT TO:<forward-path> [parameters]` (RFC 5321 §4.1.1.3).
    Rcpt {
        /// The forward path, possibly `<Postmaster>`.
        to: ForwardPath<'a>,
        /// The ESMTP parameters.
        params: RcptParameters<'a>,
    },
    /// `DATA` (RFC 5321 §4.1.1.4).
    Data,
    /// `BDAT chunk-size [LAST]` (RFC 3030 §3).
    Bdat {
        /// The exact number of octets that follow the line.
        size: u64,
        /// Whether `LAST` was given: this chunk ends the message.
        last: bool,
    },
    /// `RSET` (RFC 5321 §4.1.1.5).
    Rset,
    /// `NOOP [string]` (RFC 5321 §4.1.1.9); the argument is ignored.
    Noop,
    /// `QUIT` (RFC 5321 §4.1.1.10).
    Quit,
    /// `VRFY string` (RFC 5321 §4.1.1.6): the argument as sent.
    Vrfy(&'a str),
    /// `EXPN string` (RFC 5321 §4.1.1.7): the argument as sent.
    Expn(&'a str),
    /// `HELP [string]` (RFC 5321 §4.1.1.8): the argument as sent, if any.
    Help(Option<&'a str>),
    /// `STARTTLS` (RFC 3207 §4).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    Auth {
        /// The SASL mechanism name as sent: 1 to 20 letters, digits, `-` or `_`, in any case
        /// (RFC 4422 §3.1). Comparing it with the offered mechanisms is the session's job.
        mechanism: &'a str,
        /// The initial response as sent: base64 text, or `b"="` for an empty response.
        initial_response: Option<&'a [u8]>,
    },
}

/// The verb of a command, also naming the command in [`CommandError::Syntax`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `EHLO`.
    Ehlo,
    /// `HELO`.
    Helo,
    /// `MAIL`.
    Mail,
    /// `RCPT`.
    Rcpt,
    /// `DATA`.
    Data,
    /// `BDAT`.
    Bdat,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY`.
    Vrfy,
    /// `EXPN`.
    Expn,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH`.
    Auth,
}

/// Why a command line was refused, and the reply that says so (RFC 5321 §4.2.2, §4.3.2; RFC 3463
/// enhanced codes): see [`code`](Self::code), [`enhanced`](Self::enhanced) and
/// [`text`](Self::text). `Display` writes the whole reply line, e.g.
/// `501 5.5.2 Syntax: MAIL FROM:<address> [parameters]`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandError {
    /// An unknown or missing verb: 500 5.5.1.
    UnknownCommand,
    /// The arguments do not follow the command's syntax: 501 5.5.2, naming the syntax.
    Syntax(Verb),
    /// An ASCII control character (below SP, or DEL) in the arguments: 501 5.5.2.
    ControlCharacter,
    /// Bytes that are not UTF-8 in the arguments: 501 5.5.2.
    InvalidUtf8,
    /// A bad reverse path in `MAIL`: 501 5.1.7.
    BadSender(AddressError),
    /// A bad forward path in `RCPT`: 501 5.1.3.
    BadRecipient(AddressError),
    /// A `BDAT` chunk size that is not a number or too large: 501 5.5.4.
    InvalidChunkSize,
    /// An `AUTH` initial response that is not base64 (RFC 4954 §4): 501 5.5.2.
    InvalidBase64,
    /// An ESMTP parameter this server does not know: 555 5.5.4.
    UnknownParameter,
    /// A known ESMTP parameter given on the wrong command, such as `NOTIFY` on `MAIL`:
    /// 555 5.5.4.
    ParameterNotAllowed(Parameter),
    /// A known ESMTP parameter with a missing, unexpected or bad value: 501 5.5.4.
    InvalidParameterValue(Parameter),
    /// A known ESMTP parameter given twice: 501 5.5.4.
    DuplicateParameter(Parameter),
    /// Text given to [`decode_xtext`](crate::params::decode_xtext) is not xtext: 501 5.5.4.
    InvalidXtext,
}

/// Parses one command line (RFC 5321 §4.1.1), without its line terminator (the session frames
/// lines and enforces the length limit).
///
/// # Errors
///
/// A [`CommandError`] that names the reply to send.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let line = trim_end_spaces(line);
    let (verb, rest) = match parse_verb(line) {
        Ok(found) => found,
        // Invalid UTF-8 is 501 wherever it is, also where a verb should be.
        Err(_) if std::str::from_utf8(line).is_err() => return Err(CommandError::InvalidUtf8),
        Err(e) => return Err(e),
    };
    let arg = check_argument(rest)?;
    match verb {
        Verb::Ehlo => parse_helo_name(arg, verb).map(Command::Ehlo),
        Verb::Helo => parse_helo_name(arg, verb).map(Command::Helo),
        Verb::Mail => parse_mail(arg),
        Verb::Rcpt => parse_rcpt(arg),
        Verb::Data => no_argument(arg, verb, Command::Data),
        Verb::Bdat => parse_bdat(arg),
        Verb::Rset => no_argument(arg, verb, Command::Rset),
        Verb::Noop => Ok(Command::Noop),
        Verb::Quit => no_argument(arg, verb, Command::Quit),
        Verb::Vrfy => required(arg, verb).map(Command::Vrfy),
        Verb::Expn => required(arg, verb).map(Command::Expn),
        Verb::Help => Ok(Command::Help((!arg.is_empty()).then_some(arg))),
        Verb::StartTls => no_argument(arg, verb, Command::StartTls),
        Verb::Auth => parse_auth(arg),
    }
}

impl Command<'_> {
    /// The command's verb.
    pub fn verb(&self) -> Verb {
        match self {
            Self::Ehlo(_) => Verb::Ehlo,
            Self::Helo(_) => Verb::Helo,
            Self::Mail { .. } => Verb::Mail,
            Self::Rcpt { .. } => Verb::Rcpt,
            Self::Data => Verb::Data,
            Self::Bdat { .. } => Verb::Bdat,
            Self::Rset => Verb::Rset,
            Self::Noop => Verb::Noop,
            Self::Quit => Verb::Quit,
            Self::Vrfy(_) => Verb::Vrfy,
            Self::Expn(_) => Verb::Expn,
            Self::Help(_) => Verb::Help,
            Self::StartTls => Verb::StartTls,
            Self::Auth { .. } => Verb::Auth,
        }
    }
}

impl Verb {
    /// The verb, upper-case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ehlo => "EHLO",
            Self::Helo => "HELO",
            Self::Mail => "MAIL",
            Self::Rcpt => "RCPT",
            Self::Data => "DATA",
            Self::Bdat => "BDAT",
            Self::Rset => "RSET",
            Self::Noop => "NOOP",
            Self::Quit => "QUIT",
            Self::Vrfy => "VRFY",
            Self::Expn => "EXPN",
            Self::Help => "HELP",
            Self::StartTls => "STARTTLS",
            Self::Auth => "AUTH",
        }
    }

    /// The command's syntax, as a reply text: `Syntax: MAIL FROM:<address> [parameters]`.
    pub fn syntax(self) -> &'static str {
        match self {
            Self::Ehlo => "Syntax: EHLO hostname",
            Self::Helo => "Syntax: HELO hostname",
            Self::Mail => "Syntax: MAIL FROM:<address> [parameters]",
            Self::Rcpt => "Syntax: RCPT TO:<address> [parameters]",
            Self::Data => "Syntax: DATA",
            Self::Bdat => "Syntax: BDAT chunk-size [LAST]",
            Self::Rset => "Syntax: RSET",
            Self::Noop => "Syntax: NOOP [string]",
            Self::Quit => "Syntax: QUIT",
            Self::Vrfy => "Syntax: VRFY string",
            Self::Expn => "Syntax: EXPN string",
            Self::Help => "Syntax: HELP [string]",
            Self::StartTls => "Syntax: STARTTLS",
            Self::Auth => "Syntax: AUTH mechanism [initial-response]",
        }
    }
}

impl CommandError {
    /// The reply code (RFC 5321 §4.2.3): 500, 501 or 555.
    pub fn code(&self) -> u16 {
        match self {
            Self::UnknownCommand => 500,
            Self::UnknownParameter | Self::ParameterNotAllowed(_) => 555,
            _ => 501,
        }
    }

    /// The enhanced status code (RFC 3463) as `(class, subject, detail)`, e.g. `(5, 5, 2)`.
    pub fn enhanced(&self) -> (u8, u16, u16) {
        match self {
            Self::UnknownCommand => (5, 5, 1),
            Self::Syntax(_) | Self::ControlCharacter | Self::InvalidUtf8 | Self::InvalidBase64 => {
                (5, 5, 2)
            }
            Self::BadSender(_) => (5, 1, 7),
            Self::BadRecipient(_) => (5, 1, 3),
            Self::InvalidChunkSize
            | Self::UnknownParameter
            | Self::ParameterNotAllowed(_)
            | Self::InvalidParameterValue(_)
            | Self::DuplicateParameter(_)
            | Self::InvalidXtext => (5, 5, 4),
        }
    }

    /// The human-readable reply text, without code or enhanced code.
    pub fn text(&self) -> &'static str {
        match self {
            Self::UnknownCommand => "Command unrecognized",
            Self::Syntax(verb) => verb.syntax(),
            Self::ControlCharacter => "Control characters are not allowed in commands",
            Self::InvalidUtf8 => "Invalid UTF-8 in command",
            Self::BadSender(e) => address_text(*e, "Bad sender address syntax"),
            Self::BadRecipient(e) => address_text(*e, "Bad recipient address syntax"),
            Self::InvalidChunkSize => "Syntax: BDAT chunk-size [LAST], chunk-size a number",
            Self::InvalidBase64 => "Cannot decode base64 initial response",
            Self::UnknownParameter => "Unsupported parameter",
            Self::ParameterNotAllowed(p) => match p {
                Parameter::Notify => "NOTIFY is a RCPT parameter",
                Parameter::Orcpt => "ORCPT is a RCPT parameter",
                Parameter::Size => "SIZE is a MAIL parameter",
                Parameter::Body => "BODY is a MAIL parameter",
                Parameter::SmtpUtf8 => "SMTPUTF8 is a MAIL parameter",
                Parameter::Auth => "AUTH is a MAIL parameter",
                Parameter::Ret => "RET is a MAIL parameter",
                Parameter::EnvId => "ENVID is a MAIL parameter",
                Parameter::RequireTls => "REQUIRETLS is a MAIL parameter",
            },
            Self::InvalidParameterValue(p) => match p {
                Parameter::Size => "Syntax: SIZE=number",
                Parameter::Body => "Syntax: BODY=7BIT|8BITMIME|BINARYMIME",
                Parameter::SmtpUtf8 => "SMTPUTF8 takes no value",
                Parameter::Auth => "Syntax: AUTH=xtext|<>",
                Parameter::Ret => "Syntax: RET=FULL|HDRS",
                Parameter::EnvId => "Syntax: ENVID=xtext, at most 100 characters",
                Parameter::RequireTls => "REQUIRETLS takes no value",
                Parameter::Notify => "Syntax: NOTIFY=NEVER|SUCCESS,FAILURE,DELAY",
                Parameter::Orcpt => "Syntax: ORCPT=addr-type;xtext",
            },
            Self::DuplicateParameter(p) => match p {
                Parameter::Size => "Duplicate SIZE parameter",
                Parameter::Body => "Duplicate BODY parameter",
                Parameter::SmtpUtf8 => "Duplicate SMTPUTF8 parameter",
                Parameter::Auth => "Duplicate AUTH parameter",
                Parameter::Ret => "Duplicate RET parameter",
                Parameter::EnvId => "Duplicate ENVID parameter",
                Parameter::RequireTls => "Duplicate REQUIRETLS parameter",
                Parameter::Notify => "Duplicate NOTIFY parameter",
                Parameter::Orcpt => "Duplicate ORCPT parameter",
            },
            Self::InvalidXtext => "Invalid xtext",
        }
    }
}

/// Writes the reply line: `501 5.5.2 Syntax: MAIL FROM:<address> [parameters]`.
impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (class, subject, detail) = self.enhanced();
        write!(
            f,
            "{} {class}.{subject}.{detail} {}",
            self.code(),
            self.text()
        )
    }
}

impl std::error::Error for CommandError {}

fn address_text(e: AddressError, syntax: &'static str) -> &'static str {
    match e {
        AddressError::LocalPartTooLong => "Local part too long",
        AddressError::DomainTooLong => "Domain too long",
        AddressError::PathTooLong => "Path too long",
        _ => syntax,
    }
}

fn trim_end_spaces(mut line: &[u8]) -> &[u8] {
    while let [head @ .., b' '] = line {
        line = head;
    }
    line
}

const fn word(verb: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*verb)
}

/// Lower-cases the four letters of a verb; a non-letter never becomes a letter.
const CASE: u32 = 0x2020_2020;
const EHLO: u32 = word(b"ehlo");
const HELO: u32 = word(b"helo");
const MAIL: u32 = word(b"mail");
const RCPT: u32 = word(b"rcpt");
const DATA: u32 = word(b"data");
const BDAT: u32 = word(b"bdat");
const RSET: u32 = word(b"rset");
const NOOP: u32 = word(b"noop");
const QUIT: u32 = word(b"quit");
const VRFY: u32 = word(b"vrfy");
const EXPN: u32 = word(b"expn");
const HELP: u32 = word(b"help");
const STAR: u32 = word(b"star");
const TTLS: u32 = word(b"ttls");
const AUTH: u32 = word(b"auth");

/// Reads the verb and the space after it; returns the verb and the rest of the line.
fn parse_verb(line: &[u8]) -> Result<(Verb, &[u8]), CommandError> {
    let Some((head, mut rest)) = line.split_first_chunk::<4>() else {
        return Err(CommandError::UnknownCommand);
    };
    let verb = match u32::from_le_bytes(*head) | CASE {
        EHLO => Verb::Ehlo,
        HELO => Verb::Helo,
        MAIL => Verb::Mail,
        RCPT => Verb::Rcpt,
        DATA => Verb::Data,
        BDAT => Verb::Bdat,
        RSET => Verb::Rset,
        NOOP => Verb::Noop,
        QUIT => Verb::Quit,
        VRFY => Verb::Vrfy,
        EXPN => Verb::Expn,
        HELP => Verb::Help,
        AUTH => Verb::Auth,
        STAR => match rest.split_first_chunk::<4>() {
            Some((tail, after)) if u32::from_le_bytes(*tail) | CASE == TTLS => {
                rest = after;
                Verb::StartTls
            }
            _ => return Err(CommandError::UnknownCommand),
        },
        _ => return Err(CommandError::UnknownCommand),
    };
    match rest {
        [] => Ok((verb, rest)),
        [b' ', rest @ ..] => Ok((verb, rest)),
        _ => Err(CommandError::UnknownCommand),
    }
}

/// Checks the arguments (no control characters, UTF-8) and skips the spaces before them.
fn check_argument(rest: &[u8]) -> Result<&str, CommandError> {
    // Written without early exit so that it vectorises.
    let controls = rest
        .iter()
        .fold(false, |found, &b| found | (b < b' ') | (b == 0x7f));
    if controls {
        return Err(CommandError::ControlCharacter);
    }
    let arg = std::str::from_utf8(rest).map_err(|_| CommandError::InvalidUtf8)?;
    Ok(arg.trim_start_matches(' '))
}

fn no_argument(
    arg: &str,
    verb: Verb,
    command: Command<'static>,
) -> Result<Command<'static>, CommandError> {
    if arg.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax(verb))
    }
}

fn required(arg: &str, verb: Verb) -> Result<&str, CommandError> {
    if arg.is_empty() {
        Err(CommandError::Syntax(verb))
    } else {
        Ok(arg)
    }
}

fn parse_helo_name(arg: &str, verb: Verb) -> Result<HeloName<'_>, CommandError> {
    address::parse_helo_name(arg).map_err(|_| CommandError::Syntax(verb))
}

/// `"MAIL FROM:" Reverse-path [SP Mail-parameters]`.
fn parse_mail(arg: &str) -> Result<Command<'_>, CommandError> {
    let path = strip_prefix_ignore_case(arg, "FROM:").ok_or(CommandError::Syntax(Verb::Mail))?;
    let path = path.trim_start_matches(' ');
    if !path.starts_with('<') {
        return Err(CommandError::Syntax(Verb::Mail));
    }
    let (from, rest) = address::parse_reverse_path(path).map_err(CommandError::BadSender)?;
    let params = params::parse_mail_parameters(parameters(rest, Verb::Mail)?)?;
    Ok(Command::Mail { from, params })
}

/// `"RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path ) [SP Rcpt-parameters]`.
fn parse_rcpt(arg: &str) -> Result<Command<'_>, CommandError> {
    let path = strip_prefix_ignore_case(arg, "TO:").ok_or(CommandError::Syntax(Verb::Rcpt))?;
    let path = path.trim_start_matches(' ');
    if !path.starts_with('<') {
        return Err(CommandError::Syntax(Verb::Rcpt));
    }
    let (to, rest) = address::parse_forward_path(path).map_err(CommandError::BadRecipient)?;
    let params = params::parse_rcpt_parameters(parameters(rest, Verb::Rcpt)?)?;
    Ok(Command::Rcpt { to, params })
}

/// What follows a path: nothing, or spaces and then parameters.
fn parameters(rest: &str, verb: Verb) -> Result<&str, CommandError> {
    if rest.is_empty() || rest.starts_with(' ') {
        Ok(rest)
    } else {
        Err(CommandError::Syntax(verb))
    }
}

/// `"BDAT" SP chunk-size [ SP end-marker ]` (RFC 3030 §3).
fn parse_bdat(arg: &str) -> Result<Command<'_>, CommandError> {
    let (size, rest) = split_word(arg);
    if size.is_empty() {
        return Err(CommandError::Syntax(Verb::Bdat));
    }
    let size = params::parse_decimal(size).ok_or(CommandError::InvalidChunkSize)?;
    let last = match rest {
        "" => false,
        _ if rest.eq_ignore_ascii_case("LAST") => true,
        _ => return Err(CommandError::Syntax(Verb::Bdat)),
    };
    Ok(Command::Bdat { size, last })
}

/// `"AUTH" SP sasl-mech [SP initial-response]` (RFC 4954 §4).
fn parse_auth(arg: &str) -> Result<Command<'_>, CommandError> {
    let (mechanism, response) = split_word(arg);
    // sasl-mech = 1*20mech-char, mech-char = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE
    let mechanism_ok = (1..=20).contains(&mechanism.len())
        && mechanism
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !mechanism_ok {
        return Err(CommandError::Syntax(Verb::Auth));
    }
    let initial_response = match response {
        "" => None,
        _ if response.contains(' ') => return Err(CommandError::Syntax(Verb::Auth)),
        "=" => Some(response.as_bytes()),
        _ if is_base64(response.as_bytes()) => Some(response.as_bytes()),
        _ => return Err(CommandError::InvalidBase64),
    };
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

/// `base64 = base64-terminal / ( 1*(4base64-char) [base64-terminal] )` (RFC 4954 §4): a
/// non-empty multiple of four characters, with `=` padding only at the end.
fn is_base64(s: &[u8]) -> bool {
    let body = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    !s.is_empty()
        && s.len().is_multiple_of(4)
        && body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Splits off the first space-separated word; the rest has its leading spaces removed.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((word, rest)) => (word, rest.trim_start_matches(' ')),
        None => (s, ""),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let (head, rest) = s.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::address::{AddressLiteral, MailDomain, Mailbox};
    use crate::params::{BodyType, DsnNotify, DsnReturn};

    /// A valid line: name, input bytes, and assertions on the parsed command (httparse `req!`).
    macro_rules! ok {
        ($($name:ident, $input:expr, |$cmd:ident| $body:block)*) => {$(
            #[test]
            fn $name() {
                let input: &[u8] = $input;
                let $cmd = match parse_command(input) {
                    Ok(cmd) => cmd,
                    Err(e) => panic!("{:?}: unexpected error {e:?}", String::from_utf8_lossy(input)),
                };
                $body
            }
        )*};
    }

    /// A refused line: name, input bytes, error, and the reply it maps to.
    macro_rules! err {
        ($($name:ident, $input:expr, $error:expr, $code:literal $enhanced:literal;)*) => {$(
            #[test]
            fn $name() {
                let input: &[u8] = $input;
                let error: CommandError = $error;
                assert_eq!(parse_command(input), Err(error), "{:?}", String::from_utf8_lossy(input));
                let (class, subject, detail) = error.enhanced();
                assert_eq!(
                    format!("{} {class}.{subject}.{detail}", error.code()),
                    format!("{} {}", $code, $enhanced),
                );
                assert!(error.to_string().ends_with(error.text()));
            }
        )*};
    }

    fn domain<'a>(name: &HeloName<'a>) -> &'a str {
        match name {
            HeloName::Domain(d) => d.as_str(),
            HeloName::AddressLiteral(_) => panic!("not a domain: {name:?}"),
        }
    }

    fn sender<'a>(cmd: &Command<'a>) -> (Mailbox<'a>, MailParameters<'a>) {
        match cmd {
            Command::Mail {
                from: ReversePath::Mailbox(m),
                params,
            } => (*m, *params),
            _ => panic!("not MAIL with a mailbox: {cmd:?}"),
        }
    }

    fn recipient<'a>(cmd: &Command<'a>) -> (Mailbox<'a>, RcptParameters<'a>) {
        match cmd {
            Command::Rcpt {
                to: ForwardPath::Mailbox(m),
                params,
            } => (*m, *params),
            _ => panic!("not RCPT with a mailbox: {cmd:?}"),
        }
    }

    ok! {
        rfc5321_4_1_1_1_ehlo, b"EHLO mail.example.com", |cmd| {
            let Command::Ehlo(name) = cmd else { panic!("{cmd:?}") };
            assert_eq!(domain(&name), "mail.example.com");
            assert_eq!(cmd.verb(), Verb::Ehlo);
        }
        rfc5321_4_1_1_1_ehlo_mixed_case, b"eHlO client.example.org", |cmd| {
            assert!(matches!(cmd, Command::Ehlo(HeloName::Domain(_))));
        }
        rfc5321_4_1_1_1_helo, b"HELO relay", |cmd| {
            let Command::Helo(name) = cmd else { panic!("{cmd:?}") };
            assert_eq!(domain(&name), "relay");
        }
        rfc5321_4_1_1_1_helo_ipv4_literal, b"HELO [192.0.2.1]", |cmd| {
            assert_eq!(cmd, Command::Helo(HeloName::AddressLiteral(
                AddressLiteral::Ipv4(Ipv4Addr::new(192, 0, 2, 1)))));
        }
        rfc5321_4_1_1_1_ehlo_ipv6_literal, b"ehlo [IPv6:2001:db8::25]", |cmd| {
            assert_eq!(cmd, Command::Ehlo(HeloName::AddressLiteral(AddressLiteral::Ipv6(
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x25)))));
        }
        rfc5321_4_1_1_1_ehlo_general_literal, b"EHLO [x-tag:abc]", |cmd| {
            assert_eq!(cmd, Command::Ehlo(HeloName::AddressLiteral(
                AddressLiteral::General { tag: "x-tag", content: "abc" })));
        }
        rfc6531_ehlo_u_label, "EHLO bücher.example".as_bytes(), |cmd| {
            let Command::Ehlo(name) = cmd else { panic!("{cmd:?}") };
            assert_eq!(domain(&name), "bücher.example");
        }
        lenient_several_spaces_after_verb, b"EHLO   mail.example.com", |cmd| {
            let Command::Ehlo(name) = cmd else { panic!("{cmd:?}") };
            assert_eq!(domain(&name), "mail.example.com");
        }
        lenient_trailing_spaces, b"EHLO mail.example.com  ", |cmd| {
            let Command::Ehlo(name) = cmd else { panic!("{cmd:?}") };
            assert_eq!(domain(&name), "mail.example.com");
        }
        rfc5321_4_1_1_2_mail, b"MAIL FROM:<alice@example.org>", |cmd| {
            let (m, params) = sender(&cmd);
            assert_eq!(m.to_string(), "alice@example.org");
            assert_eq!(m.local_part().as_str(), "alice");
            assert!(matches!(m.domain(), MailDomain::Domain(d) if d.as_str() == "example.org"));
            assert!(m.is_ascii());
            assert_eq!(params, MailParameters::default());
        }
        rfc5321_4_1_1_2_mail_mixed_case, b"mail from:<a@b>", |cmd| {
            assert_eq!(sender(&cmd).0.to_string(), "a@b");
        }
        lenient_mail_space_after_colon, b"MAIL FROM: <a@b>", |cmd| {
            assert_eq!(sender(&cmd).0.to_string(), "a@b");
        }
        rfc5321_4_5_5_null_reverse_path, b"MAIL FROM:<>", |cmd| {
            assert_eq!(cmd, Command::Mail { from: ReversePath::Null, params: MailParameters::default() });
        }
        rfc5321_4_5_5_null_reverse_path_with_params, b"MAIL FROM:<> SIZE=100", |cmd| {
            let Command::Mail { from: ReversePath::Null, params } = cmd else { panic!("{cmd:?}") };
            assert_eq!(params.size, Some(100));
        }
        rfc5321_c_source_route_ignored, b"MAIL FROM:<@relay1.example,@relay2.example:user@d.example>", |cmd| {
            assert_eq!(sender(&cmd).0.to_string(), "user@d.example");
        }
        rfc5321_4_1_2_quoted_escape, b"MAIL FROM:<\"a\\\"b\"@x>", |cmd| {
            let (m, _) = sender(&cmd);
            assert!(m.local_part().is_quoted());
            assert_eq!(m.local_part().as_str(), "\"a\\\"b\"");
            let mut unquoted = String::new();
            m.local_part().unquote_into(&mut unquoted);
            assert_eq!(unquoted, "a\"b");
        }
        rfc5321_4_1_2_quoted_space, b"RCPT TO:<\"john smith\"@example.com>", |cmd| {
            let (m, _) = recipient(&cmd);
            assert_eq!(m.local_part().as_str(), "\"john smith\"");
            let mut unquoted = String::new();
            m.local_part().unquote_into(&mut unquoted);
            assert_eq!(unquoted, "john smith");
        }
        rfc5321_4_1_3_mail_ipv4_literal, b"MAIL FROM:<a@[192.0.2.1]>", |cmd| {
            let (m, _) = sender(&cmd);
            assert_eq!(m.domain(), MailDomain::AddressLiteral(AddressLiteral::Ipv4(Ipv4Addr::new(192, 0, 2, 1))));
        }
        rfc5321_4_1_3_rcpt_ipv6_literal, b"RCPT TO:<a@[IPv6:::1]>", |cmd| {
            let (m, _) = recipient(&cmd);
            assert_eq!(m.domain(), MailDomain::AddressLiteral(AddressLiteral::Ipv6(Ipv6Addr::LOCALHOST)));
        }
        rfc6531_utf8_mailbox, "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8".as_bytes(), |cmd| {
            let (m, params) = sender(&cmd);
            assert!(!m.is_ascii());
            assert_eq!(m.local_part().as_str(), "δοκιμή");
            assert!(params.smtputf8);
        }
        rfc6531_utf8_recipient, "RCPT TO:<用户@例子.广告>".as_bytes(), |cmd| {
            assert!(!recipient(&cmd).0.is_ascii());
        }
        rfc5321_mail_all_parameters,
            b"MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS ENVID=QQ+2B1 REQUIRETLS",
            |cmd| {
            let (_, p) = sender(&cmd);
            assert_eq!(p.size, Some(1000));
            assert_eq!(p.body, Some(BodyType::EightBitMime));
            assert!(p.smtputf8);
            assert_eq!(p.auth, Some("<>"));
            assert_eq!(p.ret, Some(DsnReturn::Headers));
            assert_eq!(p.envid, Some("QQ+2B1"));
            assert!(p.requiretls);
        }
        lenient_mail_params_any_case_and_spaces, b"MAIL FROM:<a@b>   size=5   body=binarymime  ", |cmd| {
            let (_, p) = sender(&cmd);
            assert_eq!(p.size, Some(5));
            assert_eq!(p.body, Some(BodyType::BinaryMime));
        }
        rfc5321_4_1_1_3_rcpt, b"RCPT TO:<bob@example.com>", |cmd| {
            let (m, p) = recipient(&cmd);
            assert_eq!(m.to_string(), "bob@example.com");
            assert_eq!(p, RcptParameters::default());
        }
        lenient_rcpt_space_after_colon, b"rcpt to: <bob@example.com>", |cmd| {
            assert_eq!(recipient(&cmd).0.to_string(), "bob@example.com");
        }
        rfc5321_4_1_1_3_postmaster, b"RCPT TO:<Postmaster>", |cmd| {
            assert_eq!(cmd, Command::Rcpt { to: ForwardPath::Postmaster, params: RcptParameters::default() });
        }
        rfc5321_4_1_1_3_postmaster_any_case, b"RCPT TO:<POSTMASTER> NOTIFY=NEVER", |cmd| {
            let Command::Rcpt { to: ForwardPath::Postmaster, params } = cmd else { panic!("{cmd:?}") };
            assert_eq!(params.notify, Some(DsnNotify::NEVER));
        }
        rfc3461_rcpt_parameters, b"RCPT TO:<b@c> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40c@d", |cmd| {
            let (_, p) = recipient(&cmd);
            let notify = p.notify.unwrap_or(DsnNotify::NEVER);
            assert!(notify.contains(DsnNotify::SUCCESS) && notify.contains(DsnNotify::DELAY));
            assert!(!notify.contains(DsnNotify::FAILURE));
            let orcpt = p.orcpt.map(|o| (o.addr_type, o.address));
            assert_eq!(orcpt, Some(("rfc822", "b+40c@d")));
        }
        rfc5321_4_1_1_4_data, b"DATA", |cmd| { assert_eq!(cmd, Command::Data); }
        rfc5321_4_1_1_4_data_lower, b"data", |cmd| { assert_eq!(cmd, Command::Data); }
        rfc5321_4_1_1_4_data_trailing_space, b"DATA ", |cmd| { assert_eq!(cmd, Command::Data); }
        rfc3030_bdat, b"BDAT 1000", |cmd| {
            assert_eq!(cmd, Command::Bdat { size: 1000, last: false });
        }
        rfc3030_bdat_0_last, b"BDAT 0 LAST", |cmd| {
            assert_eq!(cmd, Command::Bdat { size: 0, last: true });
        }
        rfc3030_bdat_last_any_case, b"bdat 7 last", |cmd| {
            assert_eq!(cmd, Command::Bdat { size: 7, last: true });
        }
        rfc3030_bdat_u64_max, b"BDAT 18446744073709551615", |cmd| {
            assert_eq!(cmd, Command::Bdat { size: u64::MAX, last: false });
        }
        rfc5321_4_1_1_5_rset, b"RSET", |cmd| { assert_eq!(cmd, Command::Rset); }
        rfc5321_4_1_1_5_rset_mixed_case, b"rSeT", |cmd| { assert_eq!(cmd, Command::Rset); }
        rfc5321_4_1_1_9_noop, b"NOOP", |cmd| { assert_eq!(cmd, Command::Noop); }
        rfc5321_4_1_1_9_noop_argument_ignored, b"noop whatever you say", |cmd| {
            assert_eq!(cmd, Command::Noop);
        }
        rfc5321_4_1_1_10_quit, b"QUIT", |cmd| { assert_eq!(cmd, Command::Quit); }
        rfc5321_4_1_1_10_quit_lower, b"quit", |cmd| { assert_eq!(cmd, Command::Quit); }
        rfc5321_4_1_1_6_vrfy, b"VRFY John Smith", |cmd| {
            assert_eq!(cmd, Command::Vrfy("John Smith"));
        }
        rfc5321_4_1_1_7_expn, b"expn staff", |cmd| { assert_eq!(cmd, Command::Expn("staff")); }
        rfc5321_4_1_1_8_help, b"HELP", |cmd| { assert_eq!(cmd, Command::Help(None)); }
        rfc5321_4_1_1_8_help_topic, b"Help mail", |cmd| {
            assert_eq!(cmd, Command::Help(Some("mail")));
        }
        rfc3207_starttls, b"STARTTLS", |cmd| { assert_eq!(cmd, Command::StartTls); }
        rfc3207_starttls_mixed_case, b"StartTLS", |cmd| { assert_eq!(cmd, Command::StartTls); }
        rfc4954_auth, b"AUTH PLAIN", |cmd| {
            assert_eq!(cmd, Command::Auth { mechanism: "PLAIN", initial_response: None });
        }
        rfc4954_auth_initial_response, b"AUTH PLAIN AHVzZXIAcGFzcw==", |cmd| {
            assert_eq!(cmd, Command::Auth {
                mechanism: "PLAIN",
                initial_response: Some(b"AHVzZXIAcGFzcw=="),
            });
        }
        rfc4954_auth_empty_initial_response, b"AUTH PLAIN =", |cmd| {
            assert_eq!(cmd, Command::Auth { mechanism: "PLAIN", initial_response: Some(b"=") });
        }
        rfc4954_auth_lower_case_mechanism, b"auth login", |cmd| {
            assert_eq!(cmd, Command::Auth { mechanism: "login", initial_response: None });
        }
        rfc4954_auth_mechanism_chars, b"AUTH SCRAM-SHA-256-PLUS biwsbj11c2Vy", |cmd| {
            assert_eq!(cmd, Command::Auth {
                mechanism: "SCRAM-SHA-256-PLUS",
                initial_response: Some(b"biwsbj11c2Vy"),
            });
        }
    }

    const UNKNOWN: CommandError = CommandError::UnknownCommand;

    const fn syntax(verb: Verb) -> CommandError {
        CommandError::Syntax(verb)
    }

    const fn sender_error(e: AddressError) -> CommandError {
        CommandError::BadSender(e)
    }

    const fn recipient_error(e: AddressError) -> CommandError {
        CommandError::BadRecipient(e)
    }

    err! {
        rfc5321_4_2_unknown_verb, b"XYZZY", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_unknown_four_letters, b"FOOB bar", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_empty_line, b"", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_only_spaces, b"   ", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_short_line, b"HEL", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_verb_run_on, b"QUITNOW", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_verb_colon, b"MAIL:<a@b>", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_verb_tab, b"EHLO\tx", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_leading_space, b" EHLO x", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_start_only, b"STAR", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_starttl, b"STARTTL", UNKNOWN, 500 "5.5.1";
        rfc5321_4_2_http, b"GET / HTTP/1.1", UNKNOWN, 500 "5.5.1";
        rfc5321_4_1_1_1_ehlo_no_name, b"EHLO", syntax(Verb::Ehlo), 501 "5.5.2";
        rfc5321_4_1_1_1_ehlo_only_spaces, b"EHLO   ", syntax(Verb::Ehlo), 501 "5.5.2";
        rfc5321_4_1_1_1_ehlo_trailing_dot, b"EHLO mail.example.com.", syntax(Verb::Ehlo), 501 "5.5.2";
        rfc5321_4_1_1_1_ehlo_two_words, b"EHLO mail example", syntax(Verb::Ehlo), 501 "5.5.2";
        rfc5321_4_1_1_1_ehlo_underscore, b"EHLO my_host", syntax(Verb::Ehlo), 501 "5.5.2";
        rfc5321_4_1_1_1_helo_bad_literal, b"HELO [1.2.3]", syntax(Verb::Helo), 501 "5.5.2";
        rfc5321_4_1_1_1_helo_bad_ipv6, b"HELO [IPv6:1::2::3]", syntax(Verb::Helo), 501 "5.5.2";
        rfc5321_4_1_1_2_mail_no_from, b"MAIL <a@b>", syntax(Verb::Mail), 501 "5.5.2";
        rfc5321_4_1_1_2_mail_empty, b"MAIL", syntax(Verb::Mail), 501 "5.5.2";
        rfc5321_4_1_1_2_mail_no_brackets, b"MAIL FROM:a@b", syntax(Verb::Mail), 501 "5.5.2";
        rfc5321_4_1_1_2_mail_no_path, b"MAIL FROM:", syntax(Verb::Mail), 501 "5.5.2";
        rfc5321_4_1_1_2_mail_space_before_colon, b"MAIL FROM :<a@b>", syntax(Verb::Mail), 501 "5.5.2";
        rfc5321_4_1_1_2_mail_junk_after_path, b"MAIL FROM:<a@b>x", syntax(Verb::Mail), 501 "5.5.2";
        rfc5321_4_1_1_2_mail_unclosed, b"MAIL FROM:<a@b", sender_error(AddressError::Syntax), 501 "5.1.7";
        rfc5321_4_1_1_2_mail_bad_mailbox, b"MAIL FROM:<a b@c>", sender_error(AddressError::Syntax), 501 "5.1.7";
        rfc5321_4_1_1_2_mail_no_domain, b"MAIL FROM:<user>", sender_error(AddressError::Syntax), 501 "5.1.7";
        rfc5321_4_1_1_2_mail_postmaster_no_domain, b"MAIL FROM:<Postmaster>",
            sender_error(AddressError::Syntax), 501 "5.1.7";
        rfc5321_4_1_1_2_mail_bad_literal, b"MAIL FROM:<a@[300.1.1.1]>",
            sender_error(AddressError::Syntax), 501 "5.1.7";
        rfc5321_4_1_1_2_mail_bad_source_route, b"MAIL FROM:<@a,b:c@d>",
            sender_error(AddressError::Syntax), 501 "5.1.7";
        rfc5321_4_5_3_1_1_mail_local_part_65, b"MAIL FROM:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@b>",
            sender_error(AddressError::LocalPartTooLong), 501 "5.1.7";
        rfc5321_4_5_3_1_1_rcpt_local_part_65, b"RCPT TO:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@b>",
            recipient_error(AddressError::LocalPartTooLong), 501 "5.1.3";
        rfc5321_4_1_1_3_rcpt_null, b"RCPT TO:<>", recipient_error(AddressError::Syntax), 501 "5.1.3";
        rfc5321_4_1_1_3_rcpt_no_to, b"RCPT <a@b>", syntax(Verb::Rcpt), 501 "5.5.2";
        rfc5321_4_1_1_3_rcpt_from, b"RCPT FROM:<a@b>", syntax(Verb::Rcpt), 501 "5.5.2";
        rfc5321_4_1_1_3_rcpt_no_brackets, b"RCPT TO:a@b", syntax(Verb::Rcpt), 501 "5.5.2";
        rfc5321_4_1_1_3_rcpt_bad_mailbox, b"RCPT TO:<a..b@c>", recipient_error(AddressError::Syntax), 501 "5.1.3";
        rfc5321_4_1_1_3_rcpt_junk_after_path, b"RCPT TO:<a@b>,<c@d>", syntax(Verb::Rcpt), 501 "5.5.2";
        rfc5321_4_1_1_11_mail_unknown_param, b"MAIL FROM:<a@b> FOO=BAR",
            CommandError::UnknownParameter, 555 "5.5.4";
        rfc5321_4_1_1_11_rcpt_unknown_param, b"RCPT TO:<a@b> XFORWARD",
            CommandError::UnknownParameter, 555 "5.5.4";
        rfc3461_notify_on_mail, b"MAIL FROM:<a@b> NOTIFY=SUCCESS",
            CommandError::ParameterNotAllowed(Parameter::Notify), 555 "5.5.4";
        rfc1870_size_on_rcpt, b"RCPT TO:<a@b> SIZE=1",
            CommandError::ParameterNotAllowed(Parameter::Size), 555 "5.5.4";
        rfc1870_size_bad, b"MAIL FROM:<a@b> SIZE=ten",
            CommandError::InvalidParameterValue(Parameter::Size), 501 "5.5.4";
        rfc1870_size_huge, b"MAIL FROM:<a@b> SIZE=99999999999999999999",
            CommandError::InvalidParameterValue(Parameter::Size), 501 "5.5.4";
        rfc6152_body_bad, b"MAIL FROM:<a@b> BODY=8BIT",
            CommandError::InvalidParameterValue(Parameter::Body), 501 "5.5.4";
        rfc6531_smtputf8_value, b"MAIL FROM:<a@b> SMTPUTF8=1",
            CommandError::InvalidParameterValue(Parameter::SmtpUtf8), 501 "5.5.4";
        rfc8689_requiretls_value, b"MAIL FROM:<a@b> REQUIRETLS=YES",
            CommandError::InvalidParameterValue(Parameter::RequireTls), 501 "5.5.4";
        rfc4954_auth_param_bad, b"MAIL FROM:<a@b> AUTH=a+zz",
            CommandError::InvalidParameterValue(Parameter::Auth), 501 "5.5.4";
        rfc3461_ret_bad, b"MAIL FROM:<a@b> RET=ALL",
            CommandError::InvalidParameterValue(Parameter::Ret), 501 "5.5.4";
        rfc3461_envid_bad, b"MAIL FROM:<a@b> ENVID=a=b",
            CommandError::InvalidParameterValue(Parameter::EnvId), 501 "5.5.4";
        rfc3461_notify_never_success, b"RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS",
            CommandError::InvalidParameterValue(Parameter::Notify), 501 "5.5.4";
        rfc3461_orcpt_bad, b"RCPT TO:<a@b> ORCPT=rfc822",
            CommandError::InvalidParameterValue(Parameter::Orcpt), 501 "5.5.4";
        rfc1869_duplicate_mail_param, b"MAIL FROM:<a@b> SIZE=1 size=1",
            CommandError::DuplicateParameter(Parameter::Size), 501 "5.5.4";
        rfc1869_duplicate_rcpt_param, b"RCPT TO:<a@b> ORCPT=x;a ORCPT=x;a",
            CommandError::DuplicateParameter(Parameter::Orcpt), 501 "5.5.4";
        rfc5321_4_1_2_bad_keyword, b"MAIL FROM:<a@b> S_IZE=1", syntax(Verb::Mail), 501 "5.5.2";
        rfc5321_4_1_1_4_data_argument, b"DATA now", syntax(Verb::Data), 501 "5.5.2";
        rfc5321_4_1_1_5_rset_argument, b"RSET x", syntax(Verb::Rset), 501 "5.5.2";
        rfc5321_4_1_1_10_quit_argument, b"QUIT now", syntax(Verb::Quit), 501 "5.5.2";
        rfc3207_starttls_argument, b"STARTTLS please", syntax(Verb::StartTls), 501 "5.5.2";
        rfc5321_4_1_1_6_vrfy_no_argument, b"VRFY", syntax(Verb::Vrfy), 501 "5.5.2";
        rfc5321_4_1_1_7_expn_no_argument, b"EXPN ", syntax(Verb::Expn), 501 "5.5.2";
        rfc3030_bdat_no_size, b"BDAT", syntax(Verb::Bdat), 501 "5.5.2";
        rfc3030_bdat_bad_marker, b"BDAT 10 FIRST", syntax(Verb::Bdat), 501 "5.5.2";
        rfc3030_bdat_not_number, b"BDAT ten", CommandError::InvalidChunkSize, 501 "5.5.4";
        rfc3030_bdat_negative, b"BDAT -1", CommandError::InvalidChunkSize, 501 "5.5.4";
        rfc3030_bdat_huge, b"BDAT 18446744073709551616 LAST", CommandError::InvalidChunkSize, 501 "5.5.4";
        rfc4954_auth_no_mechanism, b"AUTH", syntax(Verb::Auth), 501 "5.5.2";
        rfc4954_auth_bad_mechanism, b"AUTH PL@IN", syntax(Verb::Auth), 501 "5.5.2";
        rfc4954_auth_long_mechanism, b"AUTH ABCDEFGHIJKLMNOPQRSTU", syntax(Verb::Auth), 501 "5.5.2";
        rfc4954_auth_extra_argument, b"AUTH PLAIN AAAA BBBB", syntax(Verb::Auth), 501 "5.5.2";
        rfc4954_auth_bad_base64, b"AUTH PLAIN AH*z", CommandError::InvalidBase64, 501 "5.5.2";
        rfc4954_auth_base64_length, b"AUTH PLAIN AHVzZX", CommandError::InvalidBase64, 501 "5.5.2";
        rfc4954_auth_base64_inner_padding, b"AUTH PLAIN AA==AAAA", CommandError::InvalidBase64, 501 "5.5.2";
        control_nul_in_argument, b"EHLO mail\0.example.com", CommandError::ControlCharacter, 501 "5.5.2";
        control_nul_in_path, b"MAIL FROM:<a\0@b>", CommandError::ControlCharacter, 501 "5.5.2";
        control_tab_in_argument, b"VRFY a\tb", CommandError::ControlCharacter, 501 "5.5.2";
        control_cr_in_argument, b"NOOP \r", CommandError::ControlCharacter, 501 "5.5.2";
        control_bare_lf_in_argument, b"RCPT TO:<a@b>\nDATA", CommandError::ControlCharacter, 501 "5.5.2";
        control_del_in_argument, b"HELP \x7f", CommandError::ControlCharacter, 501 "5.5.2";
        control_escape_in_quoted, b"RCPT TO:<\"a\x1bb\"@c>", CommandError::ControlCharacter, 501 "5.5.2";
        invalid_utf8_in_verb, b"HE\xffO x", CommandError::InvalidUtf8, 501 "5.5.2";
        control_in_unknown_verb, b"\0\0\0\0", UNKNOWN, 500 "5.5.1";
        invalid_utf8_in_path, b"MAIL FROM:<\xff@b>", CommandError::InvalidUtf8, 501 "5.5.2";
        invalid_utf8_truncated, b"EHLO b\xc3", CommandError::InvalidUtf8, 501 "5.5.2";
        invalid_utf8_overlong, b"VRFY \xc0\xaf", CommandError::InvalidUtf8, 501 "5.5.2";
    }

    #[test]
    fn rfc5321_4_5_3_1_3_path_too_long() {
        let domain = format!("{}.{}.{}", "d".repeat(63), "d".repeat(63), "d".repeat(62));
        let line = format!("RCPT TO:<{}@{domain}>", "a".repeat(64));
        let error = CommandError::BadRecipient(AddressError::PathTooLong);
        assert_eq!(parse_command(line.as_bytes()), Err(error));
        assert_eq!(error.to_string(), "501 5.1.3 Path too long");
    }

    #[test]
    fn reply_texts() {
        assert_eq!(
            CommandError::Syntax(Verb::Mail).to_string(),
            "501 5.5.2 Syntax: MAIL FROM:<address> [parameters]"
        );
        assert_eq!(
            CommandError::UnknownCommand.to_string(),
            "500 5.5.1 Command unrecognized"
        );
        assert_eq!(
            CommandError::BadSender(AddressError::Syntax).to_string(),
            "501 5.1.7 Bad sender address syntax"
        );
        assert_eq!(
            CommandError::UnknownParameter.to_string(),
            "555 5.5.4 Unsupported parameter"
        );
    }

    /// Mutates valid lines (replace, insert, delete, truncate) with a fixed-seed PRNG: the parser
    /// never panics, and what it accepts displays and reparses to the same paths.
    #[test]
    fn mutated_lines_never_panic() {
        const SEEDS: [&[u8]; 8] = [
            b"EHLO mail.example.com",
            b"HELO [IPv6:2001:db8::1]",
            b"MAIL FROM:<@r.x,@s.y:\"a\\\"b c\"@[192.0.2.1]> SIZE=1 BODY=8BITMIME AUTH=<> ENVID=a+2B",
            b"RCPT TO:<user@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40x",
            b"RCPT TO:<Postmaster>",
            b"BDAT 123 LAST",
            b"AUTH PLAIN AHVzZXIAcGFzcw==",
            b"VRFY <x@[tag:c]>",
        ];
        const ALPHABET: &[u8] = b" <>@.:,;=+\"\\[]-_aZ09\0\x7f\xc3\xa9\xff";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % 1024).unwrap_or(0)
        };
        for round in 0..20_000 {
            let mut line = SEEDS[round % SEEDS.len()].to_vec();
            for _ in 0..=next() % 4 {
                let at = next() % (line.len() + 1);
                let byte = ALPHABET[next() % ALPHABET.len()];
                match next() % 4 {
                    0 if at < line.len() => line[at] = byte,
                    1 => line.insert(at, byte),
                    2 if at < line.len() => {
                        line.remove(at);
                    }
                    _ => line.truncate(at),
                }
            }
            match parse_command(&line) {
                Ok(Command::Mail { from, .. }) => {
                    let again = format!("MAIL FROM:{from}");
                    let reparsed = parse_command(again.as_bytes());
                    assert!(
                        matches!(reparsed, Ok(Command::Mail { from: f, .. }) if f.to_string() == from.to_string()),
                        "{again:?} from {line:?}"
                    );
                }
                Ok(Command::Rcpt { to, .. }) => {
                    let again = format!("RCPT TO:{to}");
                    let reparsed = parse_command(again.as_bytes());
                    assert!(
                        matches!(reparsed, Ok(Command::Rcpt { to: t, .. }) if t.to_string() == to.to_string()),
                        "{again:?} from {line:?}"
                    );
                }
                Ok(_) | Err(_) => {}
            }
        }
    }

    #[test]
    fn verb_names_round_trip() {
        let lines: [&[u8]; 14] = [
            b"EHLO x",
            b"HELO x",
            b"MAIL FROM:<>",
            b"RCPT TO:<Postmaster>",
            b"DATA",
            b"BDAT 1",
            b"RSET",
            b"NOOP",
            b"QUIT",
            b"VRFY x",
            b"EXPN x",
            b"HELP",
            b"STARTTLS",
            b"AUTH X",
        ];
        for line in lines {
            let cmd = parse_command(line).expect("valid line");
            assert!(line.starts_with(cmd.verb().as_str().as_bytes()), "{cmd:?}");
            assert!(cmd.verb().syntax().contains(cmd.verb().as_str()));
        }
    }
}
