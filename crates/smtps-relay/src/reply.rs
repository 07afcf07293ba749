//! Backend replies (RFC 5321 §4.2): read line by line, checked, bounded.
//!
//! The backend is trusted to run the queue, not to be well-formed: a reply whose lines break
//! the syntax, run past [`MAX_LINE`], number more than [`MAX_LINES`], or change their code in
//! the middle ends the backend connection ([`ReplyError`]); the client then gets `451`.

use std::fmt;

use smtps_proto::{EnhancedStatus, Reply, ReplyCode};

/// The longest reply line accepted, CRLF included (RFC 5321 §4.5.3.1.5 says 512).
pub const MAX_LINE: usize = 512;
/// The most lines one reply may have (an EHLO reply has one per extension).
pub const MAX_LINES: usize = 64;
/// The longest reply text passed on to the client, per line.
pub const MAX_TEXT: usize = 200;

/// One complete reply from the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendReply {
    /// The three-digit code.
    pub code: u16,
    /// Each line's text after the code and separator.
    pub lines: Vec<String>,
}

/// Why the backend's octets are not a reply.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line is not `DDD`, `DDD text` or `DDD-text` ending in CRLF.
    Malformed(String),
    /// A line is longer than [`MAX_LINE`].
    LineTooLong,
    /// More than [`MAX_LINES`] lines.
    TooManyLines,
    /// Octets came after a reply that nothing had asked for (starting with these).
    Unsolicited(String),
    /// A continuation line has another code than the first.
    CodeChanged {
        /// The first line's code.
        first: u16,
        /// The code that differed.
        then: u16,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(line) => write!(f, "malformed reply line {line:?}"),
            Self::LineTooLong => write!(f, "reply line over {MAX_LINE} octets"),
            Self::TooManyLines => write!(f, "reply of more than {MAX_LINES} lines"),
            Self::Unsolicited(start) => write!(f, "unsolicited octets after a reply: {start:?}"),
            Self::CodeChanged { first, then } => {
                write!(
                    f,
                    "multi-line reply changed its code from {first} to {then}"
                )
            }
        }
    }
}

impl std::error::Error for ReplyError {}

/// Collects lines into a reply.
#[derive(Debug, Default)]
pub struct ReplyReader {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyReader {
    /// Takes one line, its CRLF removed (the caller bounds its length at [`MAX_LINE`]).
    /// Returns the reply once its last line came.
    ///
    /// # Errors
    /// [`ReplyError`]; the reader is then of no further use.
    pub fn line(&mut self, line: &[u8]) -> Result<Option<BackendReply>, ReplyError> {
        if line.len() + 2 > MAX_LINE {
            return Err(ReplyError::LineTooLong);
        }
        let malformed = || ReplyError::Malformed(String::from_utf8_lossy(line).into_owned());
        let (digits, rest) = line.split_at_checked(3).ok_or_else(malformed)?;
        let valid_code = matches!(digits, [b'2'..=b'5', b'0'..=b'5', b'0'..=b'9']);
        if !valid_code {
            return Err(malformed());
        }
        let code = digits
            .iter()
            .fold(0_u16, |n, d| n * 10 + u16::from(d - b'0'));
        let (last, text) = match rest.split_first() {
            None => (true, &[][..]),
            Some((b' ', text)) => (true, text),
            Some((b'-', text)) => (false, text),
            Some(_) => return Err(malformed()),
        };
        if let Some(first) = self.code
            && first != code
        {
            return Err(ReplyError::CodeChanged { first, then: code });
        }
        self.code = Some(code);
        if self.lines.len() == MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(BackendReply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

impl BackendReply {
    /// A positive completion (2xx).
    #[must_use]
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// A positive intermediate reply (3xx, such as `354`).
    #[must_use]
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// The reply to give the client: the backend's code and enhanced status, its first line's
    /// text with control characters removed and cut at [`MAX_TEXT`] — never a line ending or
    /// anything else that could inject a second reply.
    #[must_use]
    pub fn to_client(&self) -> Reply {
        let first = self.lines.first().map_or("", String::as_str);
        let (status, text) = match first.split_once(' ') {
            Some((word, rest)) => match EnhancedStatus::parse(word) {
                Some(status) if u16::from(status.class()) == self.code / 100 => {
                    (Some(status), rest)
                }
                _ => (None, first),
            },
            None => (None, first),
        };
        let clean: String = text
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_TEXT)
            .collect();
        let clean = match clean.trim() {
            "" => "Backend replied".to_owned(),
            trimmed => trimmed.to_owned(),
        };
        match ReplyCode::new(self.code) {
            Some(code) => Reply::new(code, status, clean),
            None => Reply::new(
                ReplyCode::LOCAL_ERROR,
                EnhancedStatus::new(4, 4, 0),
                "Backend reply not understood",
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(lines: &[&str]) -> Result<Option<BackendReply>, ReplyError> {
        let mut reader = ReplyReader::default();
        let mut last = None;
        for line in lines {
            last = reader.line(line.as_bytes())?;
        }
        Ok(last)
    }

    #[test]
    fn single_and_multi_line_replies_rfc5321_4_2_1() {
        let reply = read(&["250 2.1.0 Ok"]).unwrap().unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, ["2.1.0 Ok"]);
        let ehlo = read(&["250-mx.example", "250-PIPELINING", "250 XCLIENT NAME ADDR"])
            .unwrap()
            .unwrap();
        assert_eq!(ehlo.lines.len(), 3);
        assert_eq!(read(&["354"]).unwrap().unwrap().lines, [""]);
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            "25 Ok", "2500 Ok", "abc Ok", "250_Ok", "650 Ok", "190 Ok", "",
        ] {
            assert!(
                matches!(read(&[bad]), Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            read(&["250-first", "251 then"]),
            Err(ReplyError::CodeChanged {
                first: 250,
                then: 251
            })
        );
        let long = format!("250 {}", "x".repeat(MAX_LINE));
        assert_eq!(read(&[&long]), Err(ReplyError::LineTooLong));
        let many: Vec<&str> = std::iter::repeat_n("250-x", MAX_LINES + 1).collect();
        assert_eq!(read(&many), Err(ReplyError::TooManyLines));
    }

    fn wire(reply: &BackendReply) -> String {
        let mut out = Vec::new();
        reply.to_client().write_to(&mut out, true);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn client_sees_the_backend_code_status_and_clean_text() {
        let reply = read(&["554 5.7.1 <x@y>: Relay access denied"])
            .unwrap()
            .unwrap();
        assert_eq!(wire(&reply), "554 5.7.1 <x@y>: Relay access denied\r\n");
        let bare = read(&["450 try later\x07"]).unwrap().unwrap();
        assert_eq!(wire(&bare), "450 4.0.0 try later\r\n");
        let long = read(&[&format!("250 2.0.0 {}", "y".repeat(400))])
            .unwrap()
            .unwrap();
        assert!(wire(&long).len() < MAX_TEXT + 20);
        // An enhanced code of the wrong class is text, not status.
        let odd = read(&["550 4.1.1 no"]).unwrap().unwrap();
        assert_eq!(wire(&odd), "550 5.0.0 4.1.1 no\r\n");
        let empty = read(&["354"]).unwrap().unwrap();
        assert_eq!(wire(&empty), "354 Backend replied\r\n");
    }
}
