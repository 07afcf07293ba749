//! Test messages: realistic headers, a text body with lines that start with '.', and the
//! dot-stuffed DATA payload (RFC 5321 §4.5.2) ready to send.

use std::fmt::Write as _;

/// Words for the body text (so that it compresses and looks like mail, not random bytes).
const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "report",
    "is",
    "attached",
    "please",
    "review",
    "before",
    "our",
    "meeting",
    "on",
    "Thursday",
    "and",
    "send",
    "comments",
    "to",
    "the",
    "list",
    "thanks",
    "regards",
    "invoice",
    "shipment",
    "delayed",
    "by",
    "two",
    "days",
    "schedule",
    "update",
];

/// A message of about `size` bytes (exactly `size` when it is larger than the headers): headers,
/// a blank line and a body of CRLF-terminated lines up to 76 characters; every seventh body
/// line starts with '.', one is a lone '.', so that the payload needs dot-stuffing.
pub(crate) fn generate(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut text = String::with_capacity(size + 128);
    let _ = write!(
        text,
        "Received: from client.test (client.test [127.0.0.1])\r\n\
         \tby mx.test with ESMTPS id 4XyZ1234; Fri, 27 Nov 2026 10:00:00 +0000\r\n\
         From: Load Generator <{from}>\r\n\
         To: Benchmark Sink <{to}>\r\n\
         Subject: smtps-loadgen test message of {size} bytes\r\n\
         Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <loadgen.{size}.1@client.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n"
    );
    let mut line_no = 0usize;
    let mut word = 0usize;
    while text.len() < size {
        let remaining = size - text.len();
        if remaining <= 78 {
            // The last line: exactly the remaining bytes (at least "x\r\n").
            let fill = remaining.saturating_sub(2).max(1);
            text.extend(std::iter::repeat_n('x', fill));
            text.push_str("\r\n");
            break;
        }
        line_no += 1;
        let mut line = String::with_capacity(78);
        if line_no == 3 {
            line.push('.');
        } else {
            if line_no.is_multiple_of(7) {
                line.push_str(". ");
            }
            while line.len() < 60 {
                line.push_str(WORDS[word % WORDS.len()]);
                line.push(' ');
                word += 1;
            }
            line.push_str(WORDS[word % WORDS.len()]);
            word += 1;
        }
        text.push_str(&line);
        text.push_str("\r\n");
    }
    text.into_bytes()
}

/// The DATA payload for `message`: each line that starts with '.' gets another '.', and the
/// terminating `.\r\n` is appended (after a CRLF, if the message does not end in one).
pub(crate) fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receiving side: removes the terminator and one leading '.' of each line.
    fn unstuff(payload: &[u8]) -> Vec<u8> {
        let body = payload
            .strip_suffix(b".\r\n")
            .expect("terminator at the end");
        let mut out = Vec::new();
        let mut at_line_start = true;
        for &b in body {
            if at_line_start && b == b'.' {
                at_line_start = false;
                continue;
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        out
    }

    #[test]
    fn exact_size_and_line_lengths() {
        for size in [600, 1000, 2048, 4095, 102_400] {
            let m = generate(size, "a@client.test", "b@mx.test");
            assert_eq!(m.len(), size, "size {size}");
            assert!(m.ends_with(b"\r\n"));
            let text = std::str::from_utf8(&m).expect("utf-8");
            assert!(text.contains("\r\n\r\n"), "headers and body");
            for line in text.split("\r\n") {
                assert!(line.len() <= 998, "line too long");
                assert!(!line.contains('\n') && !line.contains('\r'));
            }
        }
    }

    #[test]
    fn small_size_is_headers_plus_a_line() {
        let m = generate(10, "a@client.test", "b@mx.test");
        assert!(m.len() > 10);
        assert!(m.ends_with(b"\r\n"));
    }

    #[test]
    fn body_has_dot_lines_and_stuffing_round_trips() {
        let m = generate(2048, "a@client.test", "b@mx.test");
        let text = std::str::from_utf8(&m).expect("utf-8");
        assert!(text.split("\r\n").any(|l| l == "."), "a lone dot line");
        assert!(text.split("\r\n").filter(|l| l.starts_with(". ")).count() >= 2);
        let wire = dot_stuff(&m);
        let wire_text = std::str::from_utf8(&wire).expect("utf-8");
        assert!(wire_text.ends_with("\r\n.\r\n"));
        // No line of the payload but the terminator is a lone dot.
        let lines: Vec<&str> = wire_text.split("\r\n").collect();
        let lone = lines.iter().filter(|l| **l == ".").count();
        assert_eq!(lone, 1);
        assert!(wire_text.contains("\r\n..\r\n"));
        assert!(wire_text.contains("\r\n.. "));
        assert_eq!(unstuff(&wire), m);
    }

    #[test]
    fn stuffing_edge_cases() {
        assert_eq!(dot_stuff(b""), b"\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\n.b"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b"a.b\r\n"), b"a.b\r\n.\r\n");
    }
}
