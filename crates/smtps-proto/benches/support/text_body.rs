//! The body both the criterion bench (`benches/proto.rs`) and the instruction counter
//! (`examples/large_messages.rs`) send: shared so that their figures describe one message.

/// A 100 KiB message body of text lines of about 63 octets like smtps-loadgen's: every
/// `dot_every`-th line starts with a dot (0: none).
pub(crate) fn text_body(dot_every: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "quarterly",
        "report",
        "is",
        "attached",
        "please",
        "review",
    ];
    let mut body = Vec::new();
    let mut word = 0;
    let mut line = 0;
    while body.len() < 100 * 1024 {
        line += 1;
        let start = body.len();
        if dot_every > 0 && line % dot_every == 0 {
            body.extend_from_slice(b". ");
        }
        while body.len() - start < 60 {
            body.extend_from_slice(WORDS[word % WORDS.len()].as_bytes());
            body.push(b' ');
            word += 1;
        }
        body.extend_from_slice(b"end\r\n");
    }
    body
}
