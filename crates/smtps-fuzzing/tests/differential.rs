//! The differential check of [`smtps_proto::SessionConfig::pipelined_decisions`]
//! ([`differential()`], the oracle the `session` fuzz target runs) over generated dialogues: a
//! session with the option on must answer byte for byte as one deciding one command at a time
//! does, and the host must see the same verdicts applied.
//!
//! Where the fuzzer's inputs are mostly noise, these are structured: pipelined transactions with
//! good and bad commands, bare LFs now and then, the client's octets cut into pieces, and the
//! pipelined host's decisions interleaved in the orders [`differential()`] maps the operations
//! to. The configuration header is chosen so that small recipient, size, chunk and input limits
//! come up (see [`SessionInput::config`]).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use smtps_fuzzing::session::{Op, Reach, SessionInput, differential};

/// A deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("below n")
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// Senders. The differential host's verdicts are a hash of each command (and of the header), so
/// distinct paths get distinct verdicts: accepted, refused, `421`.
const MAILS: &[&str] = &[
    "MAIL FROM:<a@x.test>",
    "MAIL FROM:<a@x.test>",
    "MAIL FROM:<bad@x.test>",
    "MAIL FROM:<tmp@x.test>",
    "MAIL FROM:<with@x.test>",
    "MAIL FROM:<nodata@x.test>",
    "MAIL FROM:<withdata@x.test>",
    "MAIL FROM:<nomsg@x.test>",
    "MAIL FROM:<softmsg@x.test>",
    "MAIL FROM:<closedata@x.test>",
    "MAIL FROM:<closemsg@x.test>",
    "MAIL FROM:<drop@x.test>",
    "MAIL FROM:<>",
    "MAIL FROM:<bin@x.test> BODY=BINARYMIME",
    "MAIL FROM:<ü@x.test> SMTPUTF8",
    "MAIL FROM:<big@x.test> SIZE=999999999",
    "MAIL FROM:<e@x.test> BODY=8BITMIME",
];
const RCPTS: &[&str] = &[
    "RCPT TO:<b@x.test>",
    "RCPT TO:<c@x.test>",
    "RCPT TO:<no1@x.test>",
    "RCPT TO:<no2@x.test>",
    "RCPT TO:<busy@x.test>",
    "RCPT TO:<fwd@x.test>",
    "RCPT TO:<drop@x.test>",
    "RCPT TO:<ü@x.test>",
    "RCPT TO:<d@x.test> NOTIFY=NEVER",
    "RCPT TO:<Postmaster>",
    "rcpt to:<lower@x.test>",
    "RCPT TO:b@x.test",
    "RCPT TO:<b@x\r.test>",
];
const OTHERS: &[&str] = &[
    "DATA",
    "DATA",
    "RSET",
    "NOOP",
    "VRFY b",
    "EXPN staff",
    "HELP",
    "EHLO c.test",
    "HELO c.test",
    "EHLO refuse.test",
    "AUTH PLAIN AHVzZXIAcGFzcw==",
    "AUTH PLAIN AGJvYgB3cm9uZw==",
    "FOO",
    "",
    ".",
    "Subject: stray",
];
const RARE_OTHERS: &[&str] = &["QUIT", "STARTTLS"];
const BODY_LINES: &[&str] = &["Subject: t", "", "hello", "..dotted", "x\ny", "bare\rcr"];

/// A client line with its ending: CRLF, or now and then a bare LF.
fn push_line(rng: &mut Rng, wire: &mut Vec<u8>, line: &str) {
    wire.extend_from_slice(line.as_bytes());
    wire.extend_from_slice(if rng.chance(3) { b"\n" } else { b"\r\n" });
}

/// A generated dialogue: commands, mostly transactions, pipelined without waiting.
fn dialogue(rng: &mut Rng) -> Vec<u8> {
    let mut wire = Vec::new();
    if rng.chance(90) {
        wire.extend_from_slice(b"EHLO c.test\r\n");
    }
    for _ in 0..rng.below(12) + 1 {
        match rng.below(10) {
            0..=4 => {
                let mail = rng.pick(MAILS);
                push_line(rng, &mut wire, mail);
                for _ in 0..rng.below(5) {
                    let rcpt = rng.pick(RCPTS);
                    push_line(rng, &mut wire, rcpt);
                }
                match rng.below(6) {
                    0 => {}
                    1 => wire.extend_from_slice(b"BDAT 5 LAST\r\nhello"),
                    2 => wire.extend_from_slice(b"BDAT 2\r\nhiBDAT 0 LAST\r\n"),
                    _ => {
                        push_line(rng, &mut wire, "DATA");
                        if rng.chance(80) {
                            for _ in 0..rng.below(4) {
                                let line = rng.pick(BODY_LINES);
                                push_line(rng, &mut wire, line);
                            }
                            if rng.chance(10) {
                                wire.extend(std::iter::repeat_n(b'L', 1100));
                                wire.extend_from_slice(b"\r\n");
                            }
                            wire.extend_from_slice(b".\r\n");
                        }
                    }
                }
            }
            5 => {
                let line = format!("RCPT TO:<{}@x.test>", "l".repeat(600));
                push_line(rng, &mut wire, &line);
            }
            kind => {
                let line = match kind {
                    6 if rng.chance(10) => rng.pick(RARE_OTHERS),
                    6 | 7 => rng.pick(RCPTS),
                    _ => rng.pick(OTHERS),
                };
                push_line(rng, &mut wire, line);
            }
        }
    }
    wire
}

/// A configuration header ([`SessionInput::config`]): mostly TLS from the start; now and then
/// bare line endings refused, 1, 2 or 5 recipients, 64-octet messages, 7-octet body chunks, an
/// input buffer of a few lines (read-ahead lines fill it), two transactions, 1 to 100 errors
/// allowed, CHUNKING, SMTPUTF8 or DSN not offered.
fn header(rng: &mut Rng) -> [u8; 4] {
    let bit = |rng: &mut Rng, percent, bit: u8| if rng.chance(percent) { bit } else { 0 };
    let security = u8::from(rng.chance(80));
    let a = security | bit(rng, 15, 0x04) | bit(rng, 15, 0x08) | bit(rng, 5, 0x80);
    let recipients = rng.pick(&[0, 1, 2, 3]);
    let size = if rng.chance(20) { 1 } else { 0 };
    let chunk = if rng.chance(20) { 2 } else { 0 };
    let b = recipients | (size << 2) | (chunk << 6);
    let errors = rng.pick(&[0, 2, 3]);
    let transactions = if rng.chance(25) {
        3
    } else if rng.chance(15) {
        2
    } else {
        0
    };
    let c = errors | (transactions << 2) | bit(rng, 15, 0x10);
    let d = bit(rng, 15, 0x10) | bit(rng, 15, 0x20);
    [a, b, c, d]
}

/// The wire cut into the pieces the client's octets arrive in.
fn pieces(rng: &mut Rng, wire: &[u8]) -> Vec<Vec<u8>> {
    let max = rng.pick(&[1, 3, 20, 200, usize::MAX]);
    let mut pieces = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let len = rest.len().min(if max == usize::MAX {
            max
        } else {
            rng.below(max) + 1
        });
        pieces.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    pieces
}

/// A move of the pipelined host, as [`differential()`] maps the operations: decide the first
/// decision held, the last, the one a code picks, all last to first, first to last, from both
/// ends inwards; or only poll.
fn decision(rng: &mut Rng) -> Op {
    match rng.below(7) {
        0 => Op::Accept,
        1 => Op::Reject {
            code: 0,
            status: 0,
            text: Vec::new(),
        },
        2 => Op::AcceptWith {
            code: rng.byte(),
            text: Vec::new(),
        },
        3 => Op::Stale,
        4 => Op::AutoAccept(0),
        5 => Op::RefuseMessage { code: 0 },
        _ => Op::Defer,
    }
}

/// A generated case: the client's pieces, each followed now and then by the host's moves (it
/// takes more input before deciding 60% of the time).
fn generated(rng: &mut Rng) -> (SessionInput, Vec<u8>) {
    let header = header(rng);
    let wire = dialogue(rng);
    let mut ops = Vec::new();
    for piece in pieces(rng, &wire) {
        ops.push(Op::Feed(piece));
        while rng.chance(40) {
            ops.push(decision(rng));
        }
    }
    (SessionInput { header, ops }, wire)
}

/// Cases run (each a dialogue of up to a few dozen lines); set `SMTPS_DIFFERENTIAL_CASES` for
/// a longer run (the coverage shares asserted at the end need a few hundred cases at least).
const CASES: u64 = 5000;

#[test]
fn pipelined_decisions_answer_byte_for_byte_like_one_at_a_time() {
    let cases = std::env::var("SMTPS_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(CASES);
    // Cases that read ahead (held more than one decision at once), that had decisions withdrawn
    // before their verdict and after it; and the decisions withdrawn.
    let (mut read_ahead, mut with_unknown, mut with_withdrawn) = (0, 0, 0);
    let (mut unknown, mut withdrawn_after_verdict) = (0, 0);
    let (mut small_buffer, mut small_buffer_read_ahead) = (0, 0);
    for case in 0..cases {
        let (input, wire) = generated(&mut Rng(case));
        let reach: Reach =
            catch_unwind(AssertUnwindSafe(|| differential(&input))).unwrap_or_else(|panic| {
                let file = std::env::temp_dir().join(format!("smtps-differential-{case}.bin"));
                let saved = std::fs::write(&file, input.encode()).is_ok();
                eprintln!(
                    "case {case}, header {:?} ({:?}), {} operations, wire:\n{}",
                    input.header,
                    input.config().0.limits,
                    input.ops.len(),
                    String::from_utf8_lossy(&wire)
                );
                if saved {
                    eprintln!(
                        "replay: cargo run -p smtps-fuzzing --example replay -- --show session {}",
                        file.display()
                    );
                }
                resume_unwind(panic)
            });
        read_ahead += u64::from(reach.most_held > 1);
        with_unknown += u64::from(reach.unknown > 0);
        with_withdrawn += u64::from(reach.withdrawn_after_verdict > 0);
        unknown += reach.unknown;
        withdrawn_after_verdict += reach.withdrawn_after_verdict;
        if (input.header[2] >> 2) & 3 == 3 {
            small_buffer += 1;
            small_buffer_read_ahead += u64::from(reach.most_held > 1);
        }
    }
    // The generator reaches what the test is about: otherwise it would pass on sessions that
    // never read ahead or withdraw.
    eprintln!(
        "{cases} cases: read ahead in {read_ahead} ({small_buffer_read_ahead} of {small_buffer} \
         with a small input buffer); decisions withdrawn before their verdict in \
         {with_unknown} ({unknown} in all), after it in {with_withdrawn} \
         ({withdrawn_after_verdict} in all)"
    );
    assert!(read_ahead * 10 > cases, "read ahead in {read_ahead} cases");
    assert!(
        small_buffer_read_ahead * 10 > small_buffer,
        "read ahead in {small_buffer_read_ahead} of {small_buffer} small-buffer cases"
    );
    assert!(
        with_unknown * 50 > cases,
        "decisions withdrawn before their verdict in {with_unknown} cases"
    );
    assert!(
        with_withdrawn * 50 > cases,
        "verdicts withdrawn after they were given in {with_withdrawn} cases"
    );
}
