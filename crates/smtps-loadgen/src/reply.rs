//! SMTP reply parsing (RFC 5321 §4.2): single and multi-line replies, EHLO keywords.

/// One complete SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code.
    pub(crate) code: u16,
    /// The text of each line, without the code, separator and CRLF.
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// Whether an EHLO reply lists `keyword` (case-insensitive) as an extension. The first line
    /// is the greeting, not an extension.
    pub(crate) fn has_extension(&self, keyword: &str) -> bool {
        self.lines.iter().skip(1).any(|line| {
            line.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }
}

/// Why bytes from the server are not an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// A line does not start with three digits and a space or hyphen.
    Malformed,
    /// The lines of one multi-line reply carry different codes.
    CodeChanged,
    /// A line longer than the limit without a line ending.
    TooLong,
}

/// The longest reply line accepted (RFC 5321 says 512; servers send more in practice).
const MAX_LINE: usize = 4096;

/// Parses one complete reply from the start of `buf`.
///
/// Returns `Ok(None)` while the reply is incomplete, or `Ok(Some((reply, consumed)))` with the
/// number of bytes it took. Lines may end in CRLF or a bare LF.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ParseError> {
    let mut pos = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > MAX_LINE {
                return Err(ParseError::TooLong);
            }
            return Ok(None);
        };
        let mut line = &rest[..nl];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        pos += nl + 1;
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(ParseError::Malformed);
        }
        let this = line[..3]
            .iter()
            .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
        if *code.get_or_insert(this) != this {
            return Err(ParseError::CodeChanged);
        }
        let (last, text) = match line.get(3) {
            None => (true, &[][..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(ParseError::Malformed),
        };
        lines.push(String::from_utf8_lossy(text).into_owned());
        if last {
            return Ok(Some((Reply { code: this, lines }, pos)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn single_line() {
        let (r, n) = parse(b"220 mx.test ESMTP\r\nextra").unwrap().unwrap();
        assert_eq!(r.code, 220);
        assert_eq!(r.lines, ["mx.test ESMTP"]);
        assert_eq!(n, 19);
    }

    #[test]
    fn multi_line_ehlo_and_extensions() {
        let text = b"250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-STARTTLS\r\n250 8BITMIME\r\n";
        let (r, n) = parse(text).unwrap().unwrap();
        assert_eq!(n, text.len());
        assert_eq!(r.code, 250);
        assert_eq!(r.lines.len(), 5);
        assert!(r.has_extension("pipelining"));
        assert!(r.has_extension("STARTTLS"));
        assert!(r.has_extension("SIZE"));
        assert!(!r.has_extension("CHUNKING"));
        // The greeting line is not an extension.
        assert!(!r.has_extension("mx.test"));
    }

    #[test]
    fn incomplete_waits() {
        assert_eq!(parse(b"").unwrap(), None);
        assert_eq!(parse(b"250-PIPELINING\r\n250 SIZ").unwrap(), None);
        assert_eq!(parse(b"25").unwrap(), None);
    }

    #[test]
    fn bare_lf_and_code_only() {
        let (r, n) = parse(b"354\n").unwrap().unwrap();
        assert_eq!((r.code, n), (354, 4));
        assert_eq!(r.lines, [""]);
    }

    #[test]
    fn consecutive_replies() {
        let buf = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n";
        let mut pos = 0;
        let mut codes = Vec::new();
        while let Some((r, n)) = parse(&buf[pos..]).unwrap() {
            codes.push(r.code);
            pos += n;
        }
        assert_eq!(codes, [250, 250, 354]);
        assert_eq!(pos, buf.len());
    }

    #[test]
    fn errors() {
        assert_eq!(parse(b"hello\r\n"), Err(ParseError::Malformed));
        assert_eq!(parse(b"250x\r\n"), Err(ParseError::Malformed));
        assert_eq!(parse(b"250-a\r\n251 b\r\n"), Err(ParseError::CodeChanged));
        assert_eq!(parse(&[b'2'; 5000]), Err(ParseError::TooLong));
    }
}
