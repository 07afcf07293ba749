//! DATA body decoding (RFC 5321 §4.1.1.4, §4.5.2): dot-unstuffing and end-of-data detection.
//!
//! The decoder is a byte-level state machine, so it gives the same output for any split of the
//! input into chunks. Only `CRLF "." CRLF` ends the body — the initial CRLF being the one that
//! ended the `DATA` command or a previous *real* CRLF line ending. A bare LF or a bare CR never
//! takes part in an end-of-data sequence (SMTP smuggling, CVE-2023-51764/51765/51766); it is
//! normalised to CRLF, and reported through [`DataDecoder::saw_bare_line_ending`] so that the
//! session can apply its policy.
//!
//! [`DataDecoder::decode_spans`] describes the message octets as [`Span`]s: ranges of its input
//! (almost all of a body, which therefore need not be copied) and the few octets the input does
//! not hold as they stand (a normalised line ending). [`DataDecoder::decode`] copies them out.

use std::ops::Range;

use memchr::memchr2;

/// Progress of one [`DataDecoder::decode`] or [`DataDecoder::decode_spans`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeProgress {
    /// Input octets consumed.
    pub consumed: usize,
    /// Whether the end-of-data line was consumed (it is not part of the output).
    pub end: bool,
}

/// A piece of decoded message content, reported by [`DataDecoder::decode_spans`] in message
/// order. Use [`Span::octets`] to read it rather than matching, so that a future kind of span
/// cannot be dropped by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Span {
    /// These octets of the call's input, unchanged: text, CRLF line endings, a dot-stuffed
    /// line after its removed leading dot (RFC 5321 §4.5.2). Never empty.
    Input(Range<usize>),
    /// Octets that do not stand in the input as they are: the CRLF that replaces a bare LF or
    /// bare CR, or that completes a CR held back from the previous call.
    Literal(&'static [u8]),
}

impl Span {
    /// The span's octets; `input` is the slice given to the `decode_spans` call that reported
    /// it (an [`Span::Input`] range lies within it by construction).
    #[must_use]
    pub fn octets<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        match self {
            Self::Input(range) => &input[range.clone()],
            Self::Literal(octets) => octets,
        }
    }

    /// The number of octets in the span.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Input(range) => range.len(),
            Self::Literal(octets) => octets.len(),
        }
    }

    /// Whether the span is empty (the decoder never reports one that is).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    /// After a CR inside a line, at the end of the previous call's input.
    Cr,
}

/// The line ending every kind of line ending becomes.
const CRLF: &[u8] = b"\r\n";

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
    /// Output octets reported so far.
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
    /// octets after it are not consumed. The same as [`DataDecoder::decode_spans`] with a
    /// sink that copies each span.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> DecodeProgress {
        self.decode_spans(input, |span| out.extend_from_slice(span.octets(input)))
    }

    /// Decodes as much of `input` as possible (RFC 5321 §4.5.2: transparency), handing the
    /// message octets to `sink` as [`Span`]s in order, without copying them: a body made of
    /// CRLF lines is reported as few, long ranges of `input`, cut only where a leading dot is
    /// removed. Stops right after the end-of-data line; octets after it are not consumed.
    ///
    /// Any split of a body into calls reports the same octets, the same end of data and the
    /// same offsets ([`DataDecoder::first_bare_line_ending`], [`DataDecoder::first_long_line`]),
    /// though not the same spans: a CRLF split between calls, for one, becomes a
    /// [`Span::Literal`].
    pub fn decode_spans(&mut self, input: &[u8], mut sink: impl FnMut(Span)) -> DecodeProgress {
        let mut pos = 0;
        // Start of the consumed input octets not yet reported: `input[run..pos]` is message
        // content as it stands. A skipped octet (a leading dot, a held CR, the end-of-data
        // line) first reports the run before it and then moves `run` past itself.
        let mut run = 0;
        let mut end = false;
        while pos < input.len() {
            match self.state {
                State::Text => {
                    // The common case runs here whole: line after line ending in CRLF stays in
                    // one run; the state machine takes over at a leading dot, and the run is
                    // cut at a bare CR or LF or at a CR that ends the input.
                    loop {
                        let Some(found) = memchr2(b'\r', b'\n', &input[pos..]) else {
                            self.line_len = self.line_len.saturating_add(input.len() - pos);
                            pos = input.len();
                            break;
                        };
                        let at = pos + found;
                        let len = self.line_len.saturating_add(found);
                        if input[at] == b'\r' && input.get(at + 1) == Some(&b'\n') {
                            // A real CRLF, reported with its line.
                            let offset = self.decoded + (at - run) as u64;
                            self.check_line_len(len, offset);
                            self.line_len = 0;
                            pos = at + 2;
                            if input.get(pos).is_some_and(|&next| next != b'.') {
                                continue;
                            }
                            // A leading dot, or the end of the input: the next line starts.
                            self.state = State::LineStart;
                            break;
                        }
                        self.line_len = len;
                        report(&mut self.decoded, &mut sink, run..at);
                        pos = at + 1;
                        run = pos;
                        if input[at] == b'\r' && pos == input.len() {
                            // Whether this CR ends a line comes with the next call.
                            self.state = State::Cr;
                        } else {
                            self.bare_line_end(&mut sink);
                        }
                        break;
                    }
                }
                State::Cr => {
                    if input[pos] == b'\n' {
                        pos += 1;
                        run = pos;
                        self.line_end(&mut sink, State::LineStart);
                    } else {
                        // A CR not followed by LF: normalise, and look at this octet again.
                        self.bare_line_end(&mut sink);
                    }
                }
                State::LineStart | State::LineStartAfterBare => {
                    if input[pos] == b'.' {
                        // A leading dot is always removed (§4.5.2).
                        report(&mut self.decoded, &mut sink, run..pos);
                        pos += 1;
                        run = pos;
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
                        // Held back: part of the end-of-data line or a bare CR.
                        pos += 1;
                        run = pos;
                        self.state = State::DotCr;
                    }
                    b'\n' => {
                        pos += 1;
                        run = pos;
                        self.bare_line_end(&mut sink);
                    }
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    if input[pos] == b'\n' {
                        pos += 1;
                        run = pos;
                        end = true;
                        self.state = State::LineStart;
                        break;
                    }
                    // ".\r" then something else: a bare CR after an unstuffed dot.
                    self.bare_line_end(&mut sink);
                }
            }
        }
        report(&mut self.decoded, &mut sink, run..pos);
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

    /// Records the first over-long line (RFC 5321 §4.5.3.1.6): `len` octets of text, whose
    /// line ending stands at message offset `offset`.
    fn check_line_len(&mut self, len: usize, offset: u64) {
        if len.saturating_add(2) > self.max_line_len && self.long_line.is_none() {
            self.long_line = Some(offset);
        }
    }

    /// Ends the current line with a CRLF that is not in the input as it stands. Every input
    /// octet before it has been reported.
    fn line_end(&mut self, sink: &mut impl FnMut(Span), next: State) {
        self.check_line_len(self.line_len, self.decoded);
        sink(Span::Literal(CRLF));
        self.decoded += CRLF.len() as u64;
        self.line_len = 0;
        self.state = next;
    }

    fn bare_line_end(&mut self, sink: &mut impl FnMut(Span)) {
        if self.bare_line_ending.is_none() {
            self.bare_line_ending = Some(self.decoded);
        }
        self.line_end(sink, State::LineStartAfterBare);
    }
}

/// Reports `range` of the input, unless it is empty.
fn report(decoded: &mut u64, sink: &mut impl FnMut(Span), range: Range<usize>) {
    if !range.is_empty() {
        *decoded += range.len() as u64;
        sink(Span::Input(range));
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

    /// Decodes `input` whole, at every two-way split and one octet at a time, through
    /// `decode` and through `decode_spans`, checking that all agree (octets, end of data,
    /// bare-line-ending and long-line offsets, decoded length).
    fn decode_all_splits(input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let whole = decode_chunks(input, &[input.len()]);
        let mut splits: Vec<Vec<usize>> = (0..=input.len())
            .map(|split| vec![split, input.len() - split])
            .collect();
        splits.push(vec![1; input.len()]);
        for sizes in &splits {
            assert_eq!(
                decode_chunks(input, sizes),
                whole,
                "chunks {sizes:?} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        (whole.out, whole.end, whole.bare.is_some())
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Decoded {
        out: Vec<u8>,
        end: Option<usize>,
        bare: Option<u64>,
        long_line: Option<u64>,
    }

    /// Decodes `input` in pieces of `sizes` through `decode_spans`, checking the spans (in
    /// order, within the piece, never empty, literals only CRLF), and through `decode`.
    fn decode_chunks(input: &[u8], sizes: &[usize]) -> Decoded {
        let by_spans = decode_chunks_with(input, sizes, |decoder, chunk, out| {
            let mut next = 0;
            decoder.decode_spans(chunk, |span| {
                match &span {
                    Span::Input(range) => {
                        assert!(range.start >= next && range.end <= chunk.len(), "{range:?}");
                        assert!(!range.is_empty());
                        next = range.end;
                    }
                    Span::Literal(octets) => assert_eq!(*octets, b"\r\n"),
                }
                out.extend_from_slice(span.octets(chunk));
            })
        });
        let by_copy = decode_chunks_with(input, sizes, |decoder, chunk, out| {
            decoder.decode(chunk, out)
        });
        assert_eq!(by_spans, by_copy);
        by_spans
    }

    fn decode_chunks_with(
        input: &[u8],
        sizes: &[usize],
        mut decode: impl FnMut(&mut DataDecoder, &[u8], &mut Vec<u8>) -> DecodeProgress,
    ) -> Decoded {
        let mut decoder = DataDecoder::new(1000);
        let mut out = Vec::new();
        let mut offset = 0;
        let mut end = None;
        'pieces: for &size in sizes {
            let chunk = &input[offset..offset + size];
            let mut done = 0;
            while done < chunk.len() {
                let progress = decode(&mut decoder, &chunk[done..], &mut out);
                done += progress.consumed;
                if progress.end {
                    end = Some(offset + done);
                    break 'pieces;
                }
                if progress.consumed == 0 {
                    break;
                }
            }
            offset += size;
        }
        assert_eq!(decoder.decoded_len(), out.len() as u64);
        Decoded {
            out,
            end,
            bare: decoder.first_bare_line_ending(),
            long_line: decoder.first_long_line(),
        }
    }

    /// The spans of one `decode_spans` call.
    fn spans(decoder: &mut DataDecoder, input: &[u8]) -> (Vec<Span>, DecodeProgress) {
        let mut spans = Vec::new();
        let progress = decoder.decode_spans(input, |span| spans.push(span));
        (spans, progress)
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

    #[test]
    fn crlf_lines_are_one_span_of_the_input() {
        let mut decoder = DataDecoder::new(1000);
        let (spans, progress) = spans(&mut decoder, b"one\r\ntwo\r\nthree\r\n.\r\nNOOP\r\n");
        assert_eq!(spans, [Span::Input(0..17)]);
        assert_eq!(
            progress,
            DecodeProgress {
                consumed: 20,
                end: true
            }
        );
    }

    #[test]
    fn stuffed_dot_line_continues_after_its_removed_dot_rfc5321_4_5_2() {
        let mut decoder = DataDecoder::new(1000);
        let (spans, progress) = spans(&mut decoder, b"a\r\n..b\r\n.c\r\n.\r\n");
        assert_eq!(
            spans,
            [Span::Input(0..3), Span::Input(4..8), Span::Input(9..12)]
        );
        assert!(progress.end);
        assert_eq!(decoder.decoded_len(), 10);
    }

    #[test]
    fn bare_line_endings_become_literal_crlf() {
        let mut decoder = DataDecoder::new(1000);
        let (spans, _) = spans(&mut decoder, b"ab\ncd\ref\r\n");
        assert_eq!(
            spans,
            [
                Span::Input(0..2),
                Span::Literal(b"\r\n"),
                Span::Input(3..5),
                Span::Literal(b"\r\n"),
                Span::Input(6..10),
            ]
        );
        assert_eq!(decoder.first_bare_line_ending(), Some(2));
    }

    #[test]
    fn cr_at_the_end_of_a_call_is_held_for_the_next() {
        let mut decoder = DataDecoder::new(1000);
        assert_eq!(spans(&mut decoder, b"ab\r").0, [Span::Input(0..2)]);
        assert_eq!(decoder.decoded_len(), 2);
        // A CRLF after all: not bare.
        assert_eq!(
            spans(&mut decoder, b"\ncd").0,
            [Span::Literal(b"\r\n"), Span::Input(1..3)]
        );
        assert!(!decoder.saw_bare_line_ending());
        assert_eq!(spans(&mut decoder, b"\r").0, []);
        // A bare CR: normalised, and `x` is looked at again.
        assert_eq!(
            spans(&mut decoder, b"x").0,
            [Span::Literal(b"\r\n"), Span::Input(0..1)]
        );
        assert_eq!(decoder.first_bare_line_ending(), Some(6));
        assert_eq!(decoder.decoded_len(), 9);
    }

    #[test]
    fn end_of_data_is_found_at_every_split_rfc5321_4_1_1_4() {
        let mut input = Vec::new();
        for line in 0..30u8 {
            if line % 4 == 0 {
                input.push(b'.');
            }
            input.extend((0..40).map(|i| b'a' + (line + i) % 26));
            input.extend_from_slice(b"\r\n");
        }
        let body_len = input.len() - 8;
        input.extend_from_slice(b".\r\nQUIT\r\n");
        let (out, end, bare) = decode_all_splits(&input);
        assert_eq!(end, Some(input.len() - 6));
        assert_eq!(out.len(), body_len);
        assert!(!bare);
        // Three-way splits around every position too.
        let whole = decode_chunks(&input, &[input.len()]);
        for at in 0..input.len() {
            let rest = input.len() - at - 1;
            assert_eq!(decode_chunks(&input, &[at, 1, rest]), whole, "at {at}");
        }
    }

    #[test]
    fn long_line_offset_is_the_same_for_every_split_rfc5321_4_5_3_1_6() {
        let mut input = b"short\r\n".to_vec();
        input.extend([b'x'; 1100]);
        input.extend_from_slice(b"\r\nnext\r\n.\r\n");
        decode_all_splits(&input);
        let whole = decode_chunks(&input, &[input.len()]);
        assert_eq!(whole.long_line, Some(7 + 1100));
    }
}
