//! DATA body decoding (RFC 5321 §4.1.1.4, §4.5.2): dot-unstuffing and end-of-data detection.
//!
//! The decoder is a byte-level state machine, so it gives the same output for any split of the
//! input into chunks. Only `CRLF "." CRLF` ends the body — the initial CRLF being the one that
//! ended the `DATA` command or a previous *real* CRLF line ending. A bare LF or a bare CR never
//! takes part in an end-of-data sequence (SMTP smuggling, CVE-2023-51764/51765/51766); it is
//! normalised to CRLF, and reported through [`DataDecoder::saw_bare_line_ending`] so that the
//! session can apply its policy.

use memchr::memchr2;

/// Progress of one [`DataDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeProgress {
    /// Input octets consumed.
    pub consumed: usize,
    /// Whether the end-of-data line was consumed (it is not part of the output).
    pub end: bool,
}

/// Where in a line the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that follows a real CRLF: a `.` here may begin end-of-data.
    LineStart,
    /// At the start of a line that follows a bare LF or CR: a `.` is unstuffed but can never
    /// begin end-of-data.
    LineStartAfterBare,
    /// After a leading `.` that followed a real CRLF.
    Dot,
    /// After a leading `.` and a CR that followed a real CRLF.
    DotCr,
    /// Inside a line.
    Text,
    /// After a CR inside a line.
    Cr,
}

/// A streaming decoder for a DATA body: removes dot-stuffing, detects the end-of-data line,
/// normalises bare line endings, and counts octets and over-long lines.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    /// Output offset of the first bare line ending (before its normalised CRLF).
    bare_line_ending: Option<u64>,
    line_len: usize,
    max_line_len: usize,
    /// Output offset of the end of the first over-long line (before its CRLF).
    long_line: Option<u64>,
    /// Output octets produced by earlier calls.
    decoded: u64,
}

impl DataDecoder {
    /// A decoder at the start of a body. `max_line_len` is the longest text line allowed,
    /// CRLF included (RFC 5321 §4.5.3.1.6: 1000); `usize::MAX` disables the check.
    #[must_use]
    pub fn new(max_line_len: usize) -> Self {
        Self {
            state: State::LineStart,
            bare_line_ending: None,
            line_len: 0,
            max_line_len,
            long_line: None,
            decoded: 0,
        }
    }

    /// Decodes as much of `input` as possible, appending message octets to `out`: at most
    /// `2 * input.len() + 1` of them, since a bare CR or LF becomes CRLF and a CR held back
    /// from the previous call may turn out bare. Stops right after the end-of-data line;
    /// octets after it are not consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> DecodeProgress {
        let start_len = out.len();
        let mut pos = 0;
        let mut end = false;
        while pos < input.len() {
            match self.state {
                State::Text => {
                    let rest = &input[pos..];
                    // The common case runs whole: lines ending in CRLF, not too long, the next
                    // one not starting with a dot, are copied as they are in one piece; the
                    // state machine takes over at anything else (a bare CR or LF, a leading
                    // dot, a long line, the end of the input).
                    let mut line_start = 0;
                    let mut line_len = self.line_len;
                    loop {
                        let Some(found) = memchr2(b'\r', b'\n', &rest[line_start..]) else {
                            out.extend_from_slice(rest);
                            self.line_len = line_len + (rest.len() - line_start);
                            pos = input.len();
                            break;
                        };
                        let i = line_start + found;
                        let len = line_len + found;
                        let ordinary = rest[i] == b'\r'
                            && rest.get(i + 1) == Some(&b'\n')
                            && rest.get(i + 2).is_some_and(|&next| next != b'.')
                            && (len.saturating_add(2) <= self.max_line_len
                                || self.long_line.is_some());
                        if ordinary {
                            line_start = i + 2;
                            line_len = 0;
                            continue;
                        }
                        out.extend_from_slice(&rest[..i]);
                        self.line_len = len;
                        pos += i + 1;
                        if rest[i] == b'\r' {
                            self.state = State::Cr;
                        } else {
                            self.bare_line_end(out, start_len);
                        }
                        break;
                    }
                }
                State::Cr => {
                    if input[pos] == b'\n' {
                        pos += 1;
                        self.line_end(out, start_len, State::LineStart);
                    } else {
                        // A CR not followed by LF: normalise, and look at this byte again.
                        self.bare_line_end(out, start_len);
                    }
                }
                State::LineStart | State::LineStartAfterBare => {
                    if input[pos] == b'.' {
                        // A leading dot is always removed (§4.5.2).
                        pos += 1;
                        self.state = if self.state == State::LineStart {
                            State::Dot
                        } else {
                            State::Text
                        };
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => match input[pos] {
                    b'\r' => {
                        pos += 1;
                        self.state = State::DotCr;
                    }
                    b'\n' => {
                        pos += 1;
                        self.bare_line_end(out, start_len);
                    }
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    if input[pos] == b'\n' {
                        pos += 1;
                        end = true;
                        self.state = State::LineStart;
                        break;
                    }
                    // ".\r" then something else: a bare CR after an unstuffed dot.
                    self.bare_line_end(out, start_len);
                }
            }
        }
        self.decoded += (out.len() - start_len) as u64;
        DecodeProgress { consumed: pos, end }
    }

    /// Whether a bare LF or bare CR was seen (and normalised to CRLF).
    #[must_use]
    pub fn saw_bare_line_ending(&self) -> bool {
        self.bare_line_ending.is_some()
    }

    /// The message offset where the first bare LF or CR stood, if any: the octets before it
    /// are the same whatever the policy.
    #[must_use]
    pub fn first_bare_line_ending(&self) -> Option<u64> {
        self.bare_line_ending
    }

    /// Whether a line longer than the configured maximum was seen.
    #[must_use]
    pub fn saw_long_line(&self) -> bool {
        self.long_line.is_some()
    }

    /// The message offset of the end of the first over-long line, if any.
    #[must_use]
    pub fn first_long_line(&self) -> Option<u64> {
        self.long_line
    }

    /// Octets of message content produced so far.
    #[must_use]
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    fn line_end(&mut self, out: &mut Vec<u8>, start_len: usize, next: State) {
        if self.line_len.saturating_add(2) > self.max_line_len && self.long_line.is_none() {
            self.long_line = Some(self.offset(out, start_len));
        }
        out.extend_from_slice(b"\r\n");
        self.line_len = 0;
        self.state = next;
    }

    fn bare_line_end(&mut self, out: &mut Vec<u8>, start_len: usize) {
        if self.bare_line_ending.is_none() {
            self.bare_line_ending = Some(self.offset(out, start_len));
        }
        self.line_end(out, start_len, State::LineStartAfterBare);
    }

    /// The message offset of the next octet to be written to `out`.
    fn offset(&self, out: &[u8], start_len: usize) -> u64 {
        self.decoded + (out.len() - start_len) as u64
    }
}

/// Dot-stuffs `body` for sending with DATA (RFC 5321 §4.5.2) and appends the end-of-data line.
/// `body` is expected to use CRLF line endings; a body that does not end in CRLF gets one.
/// Used by tests, benchmarks and the fuzz targets as the inverse of [`DataDecoder`].
pub fn dot_stuff(body: &[u8], out: &mut Vec<u8>) {
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` whole and at every two-way split, checking that all agree.
    fn decode_all_splits(input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let whole = decode_chunks(input, &[input.len()]);
        for split in 0..=input.len() {
            assert_eq!(
                decode_chunks(input, &[split, input.len() - split]),
                whole,
                "split at {split} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        // And one byte at a time.
        assert_eq!(decode_chunks(input, &vec![1; input.len()]), whole);
        whole
    }

    fn decode_chunks(input: &[u8], sizes: &[usize]) -> (Vec<u8>, Option<usize>, bool) {
        let mut decoder = DataDecoder::new(1000);
        let mut out = Vec::new();
        let mut offset = 0;
        for &size in sizes {
            let chunk = &input[offset..offset + size];
            let mut done = 0;
            while done < chunk.len() {
                let progress = decoder.decode(&chunk[done..], &mut out);
                done += progress.consumed;
                if progress.end {
                    return (out, Some(offset + done), decoder.saw_bare_line_ending());
                }
                if progress.consumed == 0 {
                    break;
                }
            }
            offset += size;
        }
        (out, None, decoder.saw_bare_line_ending())
    }

    macro_rules! data_cases {
        ($($name:ident: $input:expr => $out:expr, $end:expr, $bare:expr;)*) => {$(
            #[test]
            fn $name() {
                let (out, end, bare) = decode_all_splits($input);
                assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy($out));
                assert_eq!(end, $end, "end-of-data position");
                assert_eq!(bare, $bare, "bare line ending reported");
            }
        )*};
    }

    data_cases! {
        empty_body_ends_at_first_dot_line_rfc5321_4_1_1_4: b".\r\n" => b"", Some(3), false;
        simple_body_rfc5321_4_1_1_4: b"Subject: x\r\n\r\nhello\r\n.\r\n" => b"Subject: x\r\n\r\nhello\r\n", Some(24), false;
        leading_dot_is_unstuffed_rfc5321_4_5_2: b"..hidden\r\n..\r\n.\r\n" => b".hidden\r\n.\r\n", Some(17), false;
        octets_after_end_are_not_consumed: b"a\r\n.\r\nMAIL FROM:<x>\r\n" => b"a\r\n", Some(6), false;
        incomplete_body_does_not_end: b"a\r\n.\r" => b"a\r\n", None, false;
        dot_inside_line_is_kept: b"a.b\r\n.\r\n" => b"a.b\r\n", Some(8), false;
        smuggling_lf_dot_lf_does_not_end_data: b"a\n.\nMAIL FROM:<evil>\r\n.\r\n" => b"a\r\n\r\nMAIL FROM:<evil>\r\n", Some(25), true;
        smuggling_lf_dot_crlf_does_not_end_data: b"a\n.\r\nRCPT TO:<x>\r\n.\r\n" => b"a\r\n\r\nRCPT TO:<x>\r\n", Some(21), true;
        smuggling_crlf_dot_lf_does_not_end_data: b"a\r\n.\nQUIT\r\n.\r\n" => b"a\r\n\r\nQUIT\r\n", Some(14), true;
        smuggling_cr_dot_cr_does_not_end_data: b"a\r.\rQUIT\r\n.\r\n" => b"a\r\n\r\nQUIT\r\n", Some(13), true;
        smuggling_crlf_dot_cr_does_not_end_data: b"a\r\n.\rQUIT\r\n.\r\n" => b"a\r\n\r\nQUIT\r\n", Some(14), true;
        bare_lf_lines_are_normalized_postfix_3_9: b"one\ntwo\r\n.\r\n" => b"one\r\ntwo\r\n", Some(12), true;
        bare_cr_is_normalized: b"one\rtwo\r\n.\r\n" => b"one\r\ntwo\r\n", Some(12), true;
        cr_cr_lf_is_bare_cr_then_crlf: b"x\r\r\n.\r\n" => b"x\r\n\r\n", Some(7), true;
        binary_octets_pass_through: b"\x00\xff\x80\r\n.\r\n" => b"\x00\xff\x80\r\n", Some(8), false;
    }

    #[test]
    fn long_lines_are_reported_rfc5321_4_5_3_1_6() {
        let mut decoder = DataDecoder::new(1000);
        let mut input = vec![b'x'; 998];
        input.extend_from_slice(b"\r\n");
        decoder.decode(&input, &mut Vec::new());
        assert!(!decoder.saw_long_line(), "998 + CRLF = 1000 is allowed");
        input.insert(0, b'y');
        decoder.decode(&input, &mut Vec::new());
        assert!(decoder.saw_long_line());
    }

    #[test]
    fn unstuffing_undoes_stuffing() {
        let bodies: [&[u8]; 5] = [
            b"",
            b".\r\n",
            b"..\r\n.x\r\n",
            b"Subject: a\r\n\r\n.\r\n..\r\nend\r\n",
            b"no final newline",
        ];
        for body in bodies {
            let mut wire = Vec::new();
            dot_stuff(body, &mut wire);
            let (out, end, bare) = decode_all_splits(&wire);
            let mut expected = body.to_vec();
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(out, expected);
            assert_eq!(end, Some(wire.len()));
            assert!(!bare);
        }
    }

    #[test]
    fn decoded_length_counts_output_octets() {
        let mut decoder = DataDecoder::new(1000);
        let mut out = Vec::new();
        decoder.decode(b"..ab\r\n.\r\n", &mut out);
        assert_eq!(decoder.decoded_len(), 5);
        assert_eq!(out, b".ab\r\n");
    }
}
