//! Checks on the reply octets a session sends (RFC 5321 §4.2, §4.2.1, §4.5.3.1.5).

use smtps_proto::reply::MAX_REPLY_LINE;

/// One reply parsed from the wire: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireReply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, after the code and separator, without CRLF.
    pub lines: Vec<Vec<u8>>,
}

/// Parses and checks a batch of reply octets, as returned by one `poll_transmit`.
///
/// Every line is `DDD` + (`' '` | `'-'`) + text + CRLF with a valid reply code (first digit
/// 2–5, second 0–5), at most [`MAX_REPLY_LINE`] octets, no other CR or LF, valid UTF-8; the
/// lines of a multi-line reply share their code and only the last has `' '`; the batch ends
/// at the end of a reply (replies are written whole). An enhanced status code, when a line
/// starts with one, has the class of the reply code (RFC 3463 §2).
///
/// # Panics
/// On any violation: that is the point of a fuzz check.
pub fn check_replies(batch: &[u8]) -> Vec<WireReply> {
    let mut replies = Vec::new();
    let mut open: Option<WireReply> = None;
    let mut rest = batch;
    while !rest.is_empty() {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            panic!(
                "reply output does not end with a line feed: {:?}",
                show(rest)
            );
        };
        let line = &rest[..=lf];
        rest = &rest[lf + 1..];
        assert!(
            line.len() <= MAX_REPLY_LINE,
            "reply line of {} octets exceeds {MAX_REPLY_LINE}: {:?}",
            line.len(),
            show(line)
        );
        assert!(
            line.len() >= 6 && line[line.len() - 2] == b'\r',
            "reply line does not end in CRLF or is too short: {:?}",
            show(line)
        );
        let body = &line[..line.len() - 2];
        assert!(
            !body.contains(&b'\r'),
            "bare CR inside a reply line: {:?}",
            show(line)
        );
        assert!(
            std::str::from_utf8(body).is_ok(),
            "reply line is not UTF-8: {:?}",
            show(line)
        );
        let digits = &body[..3];
        assert!(
            digits.iter().all(u8::is_ascii_digit)
                && (b'2'..=b'5').contains(&digits[0])
                && digits[1] <= b'5',
            "reply line does not start with a valid 3-digit code: {:?}",
            show(line)
        );
        let code = u16::from(digits[0] - b'0') * 100
            + u16::from(digits[1] - b'0') * 10
            + u16::from(digits[2] - b'0');
        let separator = body[3];
        assert!(
            separator == b' ' || separator == b'-',
            "reply code not followed by ' ' or '-': {:?}",
            show(line)
        );
        let text = &body[4..];
        check_enhanced_status(code, text);
        let reply = open.get_or_insert_with(|| WireReply {
            code,
            lines: Vec::new(),
        });
        assert_eq!(
            reply.code,
            code,
            "multi-line reply changes code mid-reply: {:?}",
            show(batch)
        );
        reply.lines.push(text.to_vec());
        if separator == b' ' {
            replies.extend(open.take());
        }
    }
    assert!(
        open.is_none(),
        "output batch ends inside a multi-line reply: {:?}",
        show(batch)
    );
    replies
}

/// If `text` starts with something shaped like an enhanced status code (`d.d+.d+ `), its class
/// must be the reply code's class. Host texts in the harness never start with a digit.
fn check_enhanced_status(code: u16, text: &[u8]) {
    let Some(end) = text.iter().position(|&b| b == b' ') else {
        return;
    };
    let word = &text[..end];
    let mut parts = word.split(|&b| b == b'.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let numeric = |p: &[u8]| !p.is_empty() && p.len() <= 3 && p.iter().all(u8::is_ascii_digit);
    if class.len() == 1 && numeric(class) && numeric(subject) && numeric(detail) {
        assert_eq!(
            u16::from(class[0] - b'0'),
            code / 100,
            "enhanced status class differs from the reply code's: {code} {:?}",
            show(text)
        );
        assert!(
            code / 100 != 3,
            "a 3xx reply carries an enhanced status (RFC 2034 §3): {code} {:?}",
            show(text)
        );
    }
}

/// Bytes as a readable string for panic messages.
pub(crate) fn show(bytes: &[u8]) -> String {
    let limit = 300;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]).into_owned();
    if bytes.len() > limit {
        format!("{shown}… ({} octets)", bytes.len())
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_replies() {
        let replies = check_replies(b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 Go\r\n");
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].code, 250);
        assert_eq!(replies[0].lines.len(), 3);
    }

    #[test]
    #[should_panic(expected = "multi-line")]
    fn refuses_unterminated_multi_line_reply() {
        check_replies(b"250-mx\r\n");
    }

    #[test]
    #[should_panic(expected = "CRLF")]
    fn refuses_bare_lf() {
        check_replies(b"250 ok\n");
    }

    #[test]
    #[should_panic(expected = "class")]
    fn refuses_mismatched_enhanced_status() {
        check_replies(b"250 5.0.0 ok\r\n");
    }
}
