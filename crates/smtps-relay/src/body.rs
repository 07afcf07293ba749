//! The message as the backend gets it: rebuilt, never the client's octets passed through.
//!
//! The engine hands the relay the body dot-unstuffed. [`DataEncoder`] writes it back for
//! `DATA` (RFC 5321 §4.5.2) with every line ending a canonical CRLF — a bare LF or bare CR
//! becomes CRLF — and every line that starts with `.` doubled, then `CRLF.CRLF`. Whatever a
//! client sent to smuggle a second message (`\n.\n`, `\r.\r`), the backend sees one message
//! whose only terminator is the one the encoder writes.

/// Streams body octets into the DATA encoding.
#[derive(Debug)]
pub struct DataEncoder {
    /// At the start of a line (a `.` here is doubled).
    line_start: bool,
    /// The last octet was a CR whose LF has not come yet.
    pending_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self {
            line_start: true,
            pending_cr: false,
        }
    }
}

impl DataEncoder {
    /// Encodes `chunk` onto `out`: the runs between line endings are copied whole (a 100 KiB
    /// body is a few hundred copies, not an octet-by-octet loop).
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 4);
        let mut rest = chunk;
        while let Some(&first) = rest.first() {
            if self.pending_cr {
                // CRLF, or a bare CR: either way one canonical line ending.
                out.extend_from_slice(b"\r\n");
                self.pending_cr = false;
                self.line_start = true;
                if first == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            if self.line_start && first == b'.' {
                out.push(b'.');
            }
            let Some(end) = memchr::memchr2(b'\r', b'\n', rest) else {
                out.extend_from_slice(rest);
                self.line_start = false;
                return;
            };
            out.extend_from_slice(&rest[..end]);
            if rest[end] == b'\n' {
                // CRLF's LF after a CR was handled above; this is a bare LF.
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
            } else {
                self.pending_cr = true;
                self.line_start = false;
            }
            rest = &rest[end + 1..];
        }
    }

    /// Ends the message: the last line ended if it was not, then `.CRLF`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_in(chunks: &[&[u8]]) -> Vec<u8> {
        let mut encoder = DataEncoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            encoder.encode(chunk, &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    fn encode_all(body: &[u8]) -> Vec<u8> {
        let whole = encode_in(&[body]);
        // The same at every split, and octet by octet.
        for at in 0..=body.len() {
            assert_eq!(
                encode_in(&[&body[..at], &body[at..]]),
                whole,
                "split at {at}"
            );
        }
        let octets: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(encode_in(&octets), whole);
        whole
    }

    #[test]
    fn canonical_body_is_dot_stuffed_and_terminated_rfc5321_4_5_2() {
        assert_eq!(
            encode_all(b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend\r\n"),
            b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend\r\n.\r\n"
        );
        assert_eq!(encode_all(b""), b".\r\n");
        assert_eq!(encode_all(b"no newline"), b"no newline\r\n.\r\n");
    }

    /// The encoding octet by octet, as RFC 5321 §4.5.2 reads: the reference the fast path
    /// must match.
    fn reference(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut line_start, mut pending_cr) = (true, false);
        for &b in body {
            if b == b'\n' {
                out.extend_from_slice(b"\r\n");
                (pending_cr, line_start) = (false, true);
                continue;
            }
            if pending_cr {
                out.extend_from_slice(b"\r\n");
                (pending_cr, line_start) = (false, true);
            }
            if b == b'\r' {
                pending_cr = true;
                continue;
            }
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = false;
        }
        if pending_cr || !line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn fast_path_matches_the_octet_by_octet_reference_at_every_split() {
        // Every sequence of four octets from the ones that matter, and a longer mixed body.
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        for n in 0..4 * 4 * 4 * 4 {
            let body: Vec<u8> = (0..4).map(|i| alphabet[(n >> (2 * i)) & 3]).collect();
            assert_eq!(encode_all(&body), reference(&body), "{body:?}");
        }
        let body = b".a\r\n..b\rc\n.\r.\n\r\r\n\n.x.y\r";
        assert_eq!(encode_all(body), reference(body));
    }

    #[test]
    fn bare_line_endings_become_crlf_so_nothing_is_smuggled() {
        // `\n.\n` and `\r.\r` would end the message at a lenient backend; here they are one
        // dot-stuffed line inside the only message.
        assert_eq!(
            encode_all(b"a\n.\nMAIL FROM:<x@y>\r\n"),
            b"a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n"
        );
        assert_eq!(encode_all(b"a\r.\rb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(encode_all(b"trailing cr\r"), b"trailing cr\r\n.\r\n");
        assert_eq!(encode_all(b"\r\r\n"), b"\r\n\r\n.\r\n");
    }
}
