//! The `data_decoder` target: [`DataDecoder`] (its spans API, `decode_spans`, and the copying
//! `decode`) against a deliberately simple reference, and [`dot_stuff`] round trips.

use arbitrary::{Arbitrary, Unstructured};
use smtps_proto::data::{DataDecoder, DecodeProgress, Span, dot_stuff};

use crate::wire::show;

/// The `data_decoder` input. Encoding (what [`DecoderInput::encode`] writes and
/// `Arbitrary` reads): one octet each for `max_line`, `chunk` and `alphabet`, then the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderInput {
    /// Selects the line limit: see [`DecoderInput::max_line_len`].
    pub max_line: u8,
    /// Chunk size for the split run (0: every octet alone).
    pub chunk: u8,
    /// Bit 0 set: map each body octet onto `\r`, `\n`, `.`, text (see [`DATA_ALPHABET`]).
    pub alphabet: u8,
    /// The DATA stream after the `DATA` command's CRLF.
    pub body: Vec<u8>,
}

/// The octets that matter to the decoder, for mapped inputs.
pub const DATA_ALPHABET: &[u8] = b"\r\n.\r\n.ax";

// Written out rather than derived: a derived `Vec<u8>` is not the plain rest of the input,
// and seed files must be easy to write.
impl<'a> Arbitrary<'a> for DecoderInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self {
            max_line: u.arbitrary()?,
            chunk: u.arbitrary()?,
            alphabet: u.arbitrary()?,
            body: u.bytes(u.len())?.to_vec(),
        })
    }
}

impl DecoderInput {
    /// Serialises the input so that `Arbitrary` reads it back unchanged (for seed files).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.max_line, self.chunk, self.alphabet];
        out.extend_from_slice(&self.body);
        out
    }

    /// The decoder's line limit, CRLF included.
    #[must_use]
    pub fn max_line_len(&self) -> usize {
        match self.max_line % 4 {
            0 => 1000,
            1 => usize::MAX,
            2 => usize::from(self.max_line / 4),
            _ => 3,
        }
    }

    fn stream(&self) -> Vec<u8> {
        if self.alphabet & 1 == 1 {
            self.body
                .iter()
                .map(|&b| DATA_ALPHABET[usize::from(b) % DATA_ALPHABET.len()])
                .collect()
        } else {
            self.body.clone()
        }
    }
}

/// What a decode of a whole stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Message octets.
    pub out: Vec<u8>,
    /// Input offset just after the end-of-data line, if it was seen.
    pub end: Option<usize>,
    /// Output offset of the first bare LF or CR.
    pub bare: Option<u64>,
    /// Output offset of the end of the first over-long line.
    pub long_line: Option<u64>,
}

/// Runs [`DataDecoder`] on the stream whole, in `chunk`-sized pieces, one octet at a time and,
/// for short streams, cut in two at every position, and checks each against
/// [`reference_decode`]: same octets out, same end-of-data position, same bare-line-ending and
/// long-line offsets. Each run goes through `decode_spans` (the spans must be in order, inside
/// the piece, never empty, literals only CRLF) and through `decode`, which must agree. Then
/// dot-stuffs a CRLF body made from the same octets and checks that decoding undoes it exactly.
///
/// # Panics
/// When a check fails.
pub fn data_decoder(data: &[u8]) {
    let Ok(input) = DecoderInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let stream = input.stream();
    let max_line = input.max_line_len();
    let expected = reference_decode(&stream, max_line);
    let whole = decode_in_chunks(&stream, stream.len().max(1), max_line);
    assert_eq!(
        whole,
        expected,
        "decoder differs from the reference on {:?}",
        show(&stream)
    );
    let chunk = usize::from(input.chunk).max(1);
    if chunk < stream.len() {
        assert_eq!(
            decode_in_chunks(&stream, chunk, max_line),
            expected,
            "decoder in chunks of {chunk} differs on {:?}",
            show(&stream)
        );
    }
    if stream.len() <= 4096 {
        assert_eq!(
            decode_in_chunks(&stream, 1, max_line),
            expected,
            "decoder one octet at a time differs on {:?}",
            show(&stream)
        );
    }
    // Every split costs a decode per octet: kept to short streams so that the target stays
    // fast (the `chunk` run covers splits in longer ones).
    if stream.len() <= 128 {
        for split in 1..stream.len() {
            assert_eq!(
                decode_pieces(&stream, &[&stream[..split], &stream[split..]], max_line),
                expected,
                "decoder split at {split} differs on {:?}",
                show(&stream)
            );
        }
    }
    round_trip(&stream, chunk);
}

/// A deliberately simple DATA decoder for the whole stream at once, written from RFC 5321
/// §4.1.1.4 and §4.5.2 plus the smuggling rule: lines end at CRLF, bare LF or bare CR (a CR
/// not followed by LF); a leading `.` is removed from every line; the body ends at a line that
/// is exactly `.` ended by CRLF and preceded by a CRLF (or at the start); every line ending
/// becomes CRLF in the output.
#[must_use]
pub fn reference_decode(input: &[u8], max_line_len: usize) -> Decoded {
    let mut decoded = Decoded {
        out: Vec::new(),
        end: None,
        bare: None,
        long_line: None,
    };
    let mut after_crlf = true;
    let mut start = 0;
    while start < input.len() {
        // Find the end of this line and the kind of its terminator.
        let mut i = start;
        let terminator = loop {
            if i == input.len() {
                break None;
            }
            match input[i] {
                b'\r' if i + 1 == input.len() => break None, // CR at the end: undecided
                b'\r' if input[i + 1] == b'\n' => break Some((i, 2, false)),
                b'\n' | b'\r' => break Some((i, 1, true)),
                _ => i += 1,
            }
        };
        let line_end = terminator.map_or(i, |(at, _, _)| at);
        let line = &input[start..line_end];
        if let Some((_, len, false)) = terminator
            && after_crlf
            && line == b"."
        {
            decoded.end = Some(line_end + len);
            return decoded;
        }
        let content = line.strip_prefix(b".").unwrap_or(line);
        decoded.out.extend_from_slice(content);
        let Some((at, len, bare)) = terminator else {
            break;
        };
        let offset = decoded.out.len() as u64;
        if content.len().saturating_add(2) > max_line_len && decoded.long_line.is_none() {
            decoded.long_line = Some(offset);
        }
        if bare && decoded.bare.is_none() {
            decoded.bare = Some(offset);
        }
        decoded.out.extend_from_slice(b"\r\n");
        after_crlf = !bare;
        start = at + len;
    }
    decoded
}

/// Runs the real decoder over `input` fed in pieces of `chunk` octets.
fn decode_in_chunks(input: &[u8], chunk: usize, max_line_len: usize) -> Decoded {
    let pieces: Vec<&[u8]> = input.chunks(chunk).collect();
    decode_pieces(input, &pieces, max_line_len)
}

/// Runs the real decoder over `pieces` (which make up `input`) through `decode_spans` and
/// through `decode`, checks that both agree, and returns the result.
fn decode_pieces(input: &[u8], pieces: &[&[u8]], max_line_len: usize) -> Decoded {
    let by_spans = decode_pieces_with(pieces, max_line_len, |decoder, piece, out| {
        let mut next = 0;
        decoder.decode_spans(piece, |span| {
            match &span {
                Span::Input(range) => {
                    assert!(
                        !range.is_empty() && range.start >= next && range.end <= piece.len(),
                        "span {range:?} after {next} in a piece of {}",
                        piece.len()
                    );
                    next = range.end;
                }
                Span::Literal(octets) => assert_eq!(*octets, b"\r\n", "literal span"),
                _ => panic!("unknown span {span:?}"),
            }
            out.extend_from_slice(span.octets(piece));
        })
    });
    let by_copy = decode_pieces_with(pieces, max_line_len, |decoder, piece, out| {
        decoder.decode(piece, out)
    });
    assert_eq!(
        by_spans,
        by_copy,
        "decode_spans and decode differ on {:?}",
        show(input)
    );
    by_spans
}

fn decode_pieces_with(
    pieces: &[&[u8]],
    max_line_len: usize,
    mut decode: impl FnMut(&mut DataDecoder, &[u8], &mut Vec<u8>) -> DecodeProgress,
) -> Decoded {
    let mut decoder = DataDecoder::new(max_line_len);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut end = None;
    for piece in pieces {
        let before = out.len();
        let progress = decode(&mut decoder, piece, &mut out);
        // Documented: at most `2 * input.len() + 1` (a bare LF or CR becomes CRLF; a CR held
        // from the previous call can turn out bare).
        let bound = 2 * piece.len() + 1;
        assert!(
            out.len() - before <= bound,
            "decode wrote {} octets for {} input octets",
            out.len() - before,
            piece.len()
        );
        assert!(progress.consumed <= piece.len());
        if progress.end {
            end = Some(offset + progress.consumed);
            break;
        }
        assert_eq!(
            progress.consumed,
            piece.len(),
            "decode stopped early without end of data"
        );
        offset += piece.len();
    }
    assert_eq!(decoder.decoded_len(), out.len() as u64, "decoded_len");
    assert_eq!(
        decoder.saw_bare_line_ending(),
        decoder.first_bare_line_ending().is_some()
    );
    assert_eq!(decoder.saw_long_line(), decoder.first_long_line().is_some());
    Decoded {
        out,
        end,
        bare: decoder.first_bare_line_ending(),
        long_line: decoder.first_long_line(),
    }
}

/// A CRLF body from `octets` (lines split at LF, CRs dropped), dot-stuffed, then decoded: the
/// body comes back exactly, ends exactly at the end of the stuffed stream, with no bare line
/// ending, also when more input follows.
fn round_trip(octets: &[u8], chunk: usize) {
    let mut body = Vec::new();
    for (index, line) in octets.split(|&b| b == b'\n').enumerate() {
        if index > 0 {
            body.extend_from_slice(b"\r\n");
        }
        body.extend(line.iter().filter(|&&b| b != b'\r'));
    }
    let mut wire = Vec::new();
    dot_stuff(&body, &mut wire);
    let stuffed_len = wire.len();
    wire.extend_from_slice(b"MAIL FROM:<next@example.org>\r\n");
    let mut expected = body.clone();
    if !expected.is_empty() && !expected.ends_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    for piece in [wire.len(), chunk] {
        let decoded = decode_in_chunks(&wire, piece, usize::MAX);
        assert_eq!(
            decoded.out,
            expected,
            "unstuffing does not undo stuffing for {:?}",
            show(&body)
        );
        assert_eq!(
            decoded.end,
            Some(stuffed_len),
            "stuffed body does not end where dot_stuff ended it: {:?}",
            show(&body)
        );
        assert_eq!(
            decoded.bare, None,
            "stuffed CRLF body reported bare line ending"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_agrees_with_the_documented_smuggling_cases() {
        let d = reference_decode(b"a\n.\nMAIL FROM:<evil>\r\n.\r\n", 1000);
        assert_eq!(d.out, b"a\r\n\r\nMAIL FROM:<evil>\r\n");
        assert_eq!(d.end, Some(25));
        assert_eq!(d.bare, Some(1));
        let d = reference_decode(b"a\r.\rQUIT\r\n.\r\n", 1000);
        assert_eq!(d.out, b"a\r\n\r\nQUIT\r\n");
        assert_eq!(d.end, Some(13));
    }

    #[test]
    fn encode_is_read_back_by_arbitrary() {
        let input = DecoderInput {
            max_line: 7,
            chunk: 3,
            alphabet: 1,
            body: b"a\r\n.\r\n".to_vec(),
        };
        let bytes = input.encode();
        let back = DecoderInput::arbitrary_take_rest(Unstructured::new(&bytes));
        assert_eq!(back.ok(), Some(input));
    }
}
