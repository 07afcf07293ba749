//! The seed corpora, written for this project: real-looking client dialogues and every attack
//! input of the test suites, encoded for each target. `examples/write_seeds.rs` writes them to
//! `fuzz/corpus/<target>/seed-<name>.bin`; `tests/corpus.rs` checks the files for drift.

use smtps_proto::Verdict;

use crate::conn::{ConnInput, ConnOp, ProxySpec, TlvSpec, V2Spec};
use crate::data::DecoderInput;
use crate::session::differential::{salt, verdict};
use crate::session::{Op, SessionInput};
use crate::tls::TlsInput;

/// One seed file.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target directory: `command`, `session`, `data_decoder`, `tls_transport`, `conn` or
    /// `proxy_header`.
    pub target: &'static str,
    /// The file name without `seed-` and `.bin`.
    pub name: String,
    /// The contents.
    pub bytes: Vec<u8>,
    /// Whether the contents are the same on every run (TLS handshakes are random); only
    /// deterministic seeds are checked for drift.
    pub deterministic: bool,
}

/// Every seed, in a stable order.
#[must_use]
pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    command_seeds(&mut seeds);
    session_seeds(&mut seeds);
    pipelined_seeds(&mut seeds);
    decoder_seeds(&mut seeds);
    tls_seeds(&mut seeds);
    conn_seeds(&mut seeds);
    proxy_seeds(&mut seeds);
    seeds
}

fn push(seeds: &mut Vec<Seed>, target: &'static str, name: &str, bytes: Vec<u8>) {
    seeds.push(Seed {
        target,
        name: name.to_owned(),
        bytes,
        deterministic: true,
    });
}

/// Command lines, real and hostile; the first octet 0 selects raw mode.
const COMMAND_LINES: &[(&str, &[u8])] = &[
    ("ehlo-postfix", b"EHLO mail.example.com"),
    ("ehlo-exim", b"EHLO mx1.example.net"),
    ("ehlo-outlook", b"EHLO DESKTOP-4G7H2KQ"),
    ("ehlo-gmail", b"EHLO mail-wm1-f54.google.com"),
    ("ehlo-ipv4-literal", b"EHLO [192.0.2.25]"),
    ("ehlo-ipv6-literal", b"EHLO [IPv6:2001:db8::25]"),
    ("ehlo-general-literal", b"EHLO [x400:c=de;a=b]"),
    ("helo", b"HELO client.example.org"),
    ("helo-utf8", b"HELO b\xc3\xbccher.example"),
    ("mail-null", b"MAIL FROM:<>"),
    ("mail-simple", b"MAIL FROM:<alice@example.org>"),
    ("mail-space", b"MAIL FROM: <alice@example.org>"),
    (
        "mail-params",
        b"MAIL FROM:<alice@example.org> SIZE=12345 BODY=8BITMIME RET=HDRS ENVID=QQ314159 AUTH=<>",
    ),
    (
        "mail-smtputf8",
        b"MAIL FROM:<j\xc3\xb6rg@b\xc3\xbccher.example> SMTPUTF8 BODY=8BITMIME",
    ),
    (
        "mail-binarymime",
        b"MAIL FROM:<a@example.org> BODY=BINARYMIME",
    ),
    ("mail-requiretls", b"MAIL FROM:<a@example.org> REQUIRETLS"),
    (
        "mail-source-route",
        b"MAIL FROM:<@relay.example,@other.example:a@example.org>",
    ),
    (
        "mail-quoted",
        b"MAIL FROM:<\"first last\\\"q\"@example.org>",
    ),
    ("mail-literal", b"MAIL FROM:<a@[IPv6:::ffff:192.0.2.1]>"),
    (
        "mail-auth-xtext",
        b"MAIL FROM:<a@example.org> AUTH=a+2Bb@example.org",
    ),
    ("mail-dup-param", b"MAIL FROM:<a@example.org> SIZE=1 SIZE=2"),
    (
        "mail-size-overflow",
        b"MAIL FROM:<a@example.org> SIZE=99999999999999999999999",
    ),
    ("mail-no-brackets", b"MAIL FROM:alice@example.org"),
    ("rcpt-simple", b"RCPT TO:<bob@example.net>"),
    ("rcpt-postmaster", b"RCPT TO:<Postmaster>"),
    (
        "rcpt-dsn",
        b"RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;bob+2Bx@example.net",
    ),
    (
        "rcpt-notify-never",
        b"RCPT TO:<bob@example.net> NOTIFY=NEVER",
    ),
    (
        "rcpt-orcpt-utf8",
        b"RCPT TO:<bob@example.net> ORCPT=utf-8;b\\x{F6}b@example.net",
    ),
    (
        "rcpt-long-local",
        b"RCPT TO:<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.net>",
    ),
    ("data", b"DATA"),
    ("data-arg", b"DATA x"),
    ("bdat", b"BDAT 1024"),
    ("bdat-last", b"BDAT 0 LAST"),
    ("bdat-huge", b"BDAT 18446744073709551616 LAST"),
    ("rset", b"RSET"),
    ("noop-arg", b"NOOP hello"),
    ("quit", b"QUIT"),
    ("vrfy", b"VRFY postmaster"),
    ("expn", b"EXPN staff"),
    ("help", b"HELP MAIL"),
    ("starttls", b"STARTTLS"),
    ("starttls-lower-trailing", b"starttls   "),
    ("auth-plain-ir", b"AUTH PLAIN AHVzZXIAcGFzcw=="),
    ("auth-plain-empty", b"AUTH PLAIN ="),
    ("auth-login", b"AUTH LOGIN"),
    ("auth-bad-base64", b"AUTH PLAIN !!!"),
    ("control-char", b"MAIL FROM:<a@example.org>\x00"),
    ("tab", b"RCPT TO:<b@example.net>\tNOTIFY=NEVER"),
    ("invalid-utf8-verb", b"\xffHLO x"),
    ("invalid-utf8-arg", b"EHLO \xc3\x28"),
    ("empty", b""),
    ("unknown", b"XCLIENT ADDR=1.2.3.4"),
];

fn command_seeds(seeds: &mut Vec<Seed>) {
    for (name, line) in COMMAND_LINES {
        let mut bytes = vec![0];
        bytes.extend_from_slice(line);
        push(seeds, "command", name, bytes);
    }
    // Token mode: MAIL FROM:<user@example.org> SIZE=100, and an IPv6 literal RCPT.
    push(
        seeds,
        "command",
        "tokens-mail",
        vec![1, 2, 17, 43, 20, 38, 18, 57, 54],
    );
    push(
        seeds,
        "command",
        "tokens-rcpt-literal",
        vec![1, 3, 17, 43, 20, 29, 31, 33, 30, 18],
    );
}

/// Header octets: StartTlsAvailable with defaults; implicit TLS; plain with small limits.
const STARTTLS_DEFAULTS: [u8; 4] = [0, 0, 0, 0];
const TLS_DEFAULTS: [u8; 4] = [1, 0, 0, 0];

fn session_seed(seeds: &mut Vec<Seed>, name: &str, header: [u8; 4], ops: Vec<Op>) {
    let input = SessionInput { header, ops };
    push(seeds, "session", name, input.encode());
}

fn feed(text: &[u8]) -> Op {
    Op::Feed(text.to_vec())
}

fn session_seeds(seeds: &mut Vec<Seed>) {
    let postfix = b"EHLO mail.example.com\r\nMAIL FROM:<alice@example.com> SIZE=1432 BODY=8BITMIME\r\nRCPT TO:<bob@example.org> ORCPT=rfc822;bob@example.org\r\nDATA\r\n";
    let body = b"Received: from localhost (localhost [127.0.0.1])\r\n\tby mail.example.com (Postfix) with ESMTP id 4F2A1\r\nFrom: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: Lunch\r\nMessage-ID: <20240101120000.4F2A1@mail.example.com>\r\n\r\nSee you at noon.\r\n..leading dot\r\n.\r\nQUIT\r\n";
    session_seed(
        seeds,
        "postfix-pipelined",
        TLS_DEFAULTS,
        vec![Op::AutoAccept(255), feed(postfix), feed(body)],
    );
    session_seed(
        seeds,
        "exim-starttls",
        STARTTLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO mx1.example.net\r\n"),
            feed(b"STARTTLS\r\n"),
            Op::TlsEstablished,
            feed(b"EHLO mx1.example.net\r\nMAIL FROM:<> \r\nRCPT TO:<postmaster@example.org>\r\nDATA\r\n"),
            feed(b"Subject: bounce\r\n\r\nundeliverable\r\n.\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "outlook-auth-login",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(1),
            feed(b"EHLO DESKTOP-4G7H2KQ\r\n"),
            Op::Accept,
            feed(b"AUTH LOGIN\r\n"),
            feed(b"dXNlckBleGFtcGxlLm9yZw==\r\n"),
            feed(b"c2VjcmV0\r\n"),
            Op::Accept,
            Op::AutoAccept(255),
            feed(b"MAIL FROM:<user@example.org>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"),
            feed(b"Subject: =?utf-8?q?hi?=\r\n\r\nbody\r\n.\r\n"),
            feed(b"QUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "gmail-bdat",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO mail-wm1-f54.google.com\r\nMAIL FROM:<x@gmail.com> BODY=BINARYMIME SIZE=20\r\nRCPT TO:<y@example.org>\r\n"),
            feed(b"BDAT 10\r\n0123456789BDAT 10 LAST\r\nabcdefghij"),
            feed(b"QUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "auth-plain-ir",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO c\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\nMAIL FROM:<user@example.org>\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "auth-plain-challenge-rejected",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(2),
            feed(b"EHLO c\r\nAUTH PLAIN\r\n"),
            feed(b"AHVzZXIAd3Jvbmc=\r\n"),
            Op::Reject {
                code: 9,
                status: 1,
                text: b"Authentication credentials invalid".to_vec(),
            },
            feed(b"AUTH PLAIN\r\n*\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "starttls-injection",
        STARTTLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO attacker\r\nSTARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\n"),
            feed(b"DATA\r\n"),
            Op::TlsEstablished,
            feed(b"EHLO attacker\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "starttls-injection-same-packet-lf",
        STARTTLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO a\nSTARTTLS\nRSET\n"),
            Op::TlsEstablished,
            feed(b"EHLO a\r\n"),
        ],
    );
    for (name, smuggle) in [
        ("smuggling-lf-dot-lf", &b"\n.\n"[..]),
        ("smuggling-lf-dot-crlf", b"\n.\r\n"),
        ("smuggling-crlf-dot-lf", b"\r\n.\n"),
        ("smuggling-cr-dot-cr", b"\r.\r"),
    ] {
        let mut body = b"Subject: x\r\n\r\nbody".to_vec();
        body.extend_from_slice(smuggle);
        body.extend_from_slice(
            b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n",
        );
        for (suffix, header) in [("", TLS_DEFAULTS), ("-reject", [9, 0, 0, 0])] {
            session_seed(
                seeds,
                &format!("{name}{suffix}"),
                header,
                vec![
                    Op::AutoAccept(255),
                    feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"),
                    feed(&body),
                    Op::Eof,
                ],
            );
        }
    }
    session_seed(
        seeds,
        "line-100kb",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO c\r\n"),
            Op::FeedRepeat {
                count: 1000,
                bytes: vec![b'a'; 100],
            },
            feed(b"\r\nNOOP\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"),
            Op::FeedRepeat {
                count: 1000,
                bytes: vec![b'b'; 100],
            },
            feed(b"\r\n.\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "rcpt-1000",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n"),
            Op::FeedRepeat {
                count: 1000,
                bytes: b"RCPT TO:<r@example.net>\r\n".to_vec(),
            },
            Op::AutoAccept(255),
            feed(b"DATA\r\n"),
            Op::Accept,
            feed(b"x\r\n.\r\nQUIT\r\n"),
            Op::Accept,
        ],
    );
    session_seed(
        seeds,
        "auth-line-12k",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO c\r\nAUTH PLAIN\r\n"),
            Op::FeedRepeat {
                count: 4000,
                bytes: b"QUFB".to_vec(),
            },
            feed(b"\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "deferred-decisions",
        TLS_DEFAULTS,
        vec![
            Op::Accept,
            feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"),
            Op::Defer,
            Op::Accept,
            Op::Defer,
            Op::AcceptWith {
                code: 0,
                text: b"sender ok, 2nd try".to_vec(),
            },
            Op::Stale,
            Op::Reject {
                code: 5,
                status: 1,
                text: b"no such user\r\n250 injected".to_vec(),
            },
            Op::Accept,
            Op::Defer,
            Op::AcceptWith {
                code: 4,
                text: b"go ahead".to_vec(),
            },
            feed(b"hello\r\n.\r\n"),
            Op::Defer,
            Op::AcceptWith {
                code: 0,
                text: b"queued as 4F2A1".to_vec(),
            },
            feed(b"QUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "reject-421-bdat",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(4),
            feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 4\r\nabcdQUIT\r\n"),
            Op::Reject {
                code: 0,
                status: 0,
                text: b"shutting down".to_vec(),
            },
        ],
    );
    session_seed(
        seeds,
        "close-mid-data",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhalf a mess"),
            Op::Close,
            feed(b"age\r\n.\r\n"),
        ],
    );
    session_seed(
        seeds,
        "eof-awaiting-end",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(4),
            feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nx\r\n.\r\n"),
            Op::Eof,
        ],
    );
    session_seed(
        seeds,
        "greeting-refused",
        STARTTLS_DEFAULTS,
        vec![
            Op::Reject {
                code: 8,
                status: 0,
                text: b"no service for you".to_vec(),
            },
            feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "limits-small",
        [0x02, 0x55, 0x05, 0x80],
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO c\r\nMAIL FROM:<a@example.org> SIZE=100\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"),
            feed(b"a line that is far too long for sixteen\r\nand a body over the limit of sixty-four octets\r\n.\r\n"),
            feed(b"MAIL FROM:<a@example.org>\r\nBDAT 100 LAST\r\n"),
            Op::FeedRepeat {
                count: 100,
                bytes: b"x".to_vec(),
            },
        ],
    );
    session_seed(
        seeds,
        "token-dialogue",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            Op::FeedTokens(vec![
                0, 4, 16, 17, 20, 43, 45, 56, 50, 22, 57, 57, 57, 57, 57, 23, 57, 57, 57, 28,
            ]),
        ],
    );
    session_seed(
        seeds,
        "refuse-message-data",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nfirst part\r\n"),
            Op::RefuseMessage { code: 0 },
            feed(b"second part\r\n.\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "refuse-message-bdat",
        TLS_DEFAULTS,
        vec![
            Op::AutoAccept(255),
            Op::RefuseMessage { code: 3 },
            feed(
                b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 8\r\nabcd",
            ),
            feed(b"efghBDAT 2 LAST\r\nxyRSET\r\nQUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "errors-then-too-many",
        [0, 0, 1, 0],
        vec![
            Op::AutoAccept(255),
            feed(b"EHLO c\r\nFOO\r\nBAR\r\nBAZ\r\nNOOP\r\n"),
        ],
    );
}

/// A path `<STEM<n>@example.org>` the differential host (`session::differential`) answers as
/// wanted for `kind` (`mail` or `rcpt`): accepted, or refused without closing; for a sender,
/// its DATA too.
fn path(header: [u8; 4], kind: &str, stem: &str, accept: bool) -> String {
    let salt = salt(header);
    let refused = |verdict: Verdict| match verdict {
        Verdict::Reject(reply) => Some(reply.code().as_u16() != 421),
        _ => None,
    };
    (0..)
        .map(|n| format!("<{stem}{n}@example.org>"))
        .find(|path| {
            let answer = refused(verdict(salt, &format!("{kind} {path}"), ""));
            let data = kind != "mail" || refused(verdict(salt, "data", path)).is_none();
            if accept {
                answer.is_none() && data
            } else {
                answer == Some(true)
            }
        })
        .unwrap_or_default()
}

/// Pipelined groups for the differential check of `pipelined_decisions`: the pipelined host
/// decides in the order the operations pick (see `session::differential`).
fn pipelined_seeds(seeds: &mut Vec<Seed>) {
    let header = TLS_DEFAULTS;
    let (sender, refused_sender) = (
        path(header, "mail", "a", true),
        path(header, "mail", "r", false),
    );
    let (ok1, ok2) = (
        path(header, "rcpt", "b", true),
        path(header, "rcpt", "c", true),
    );
    let (no1, no2) = (
        path(header, "rcpt", "n", false),
        path(header, "rcpt", "m", false),
    );
    let group = |mail: &str, rcpts: &[&str]| {
        let mut group = format!("MAIL FROM:{mail}\r\n");
        for rcpt in rcpts {
            group.push_str(&format!("RCPT TO:{rcpt}\r\n"));
        }
        group.push_str("DATA\r\n");
        feed(group.as_bytes())
    };
    let forward = Op::AutoAccept(0);
    session_seed(
        seeds,
        "pipelined-group-reversed",
        header,
        vec![
            feed(b"EHLO c\r\n"),
            forward.clone(),
            forward.clone(),
            group(&sender, &[&ok1, &no1, &ok2]),
            Op::Stale,
            feed(b"Subject: x\r\n\r\nhi\r\n.\r\n"),
            forward.clone(),
            group(&refused_sender, &[&ok1, &ok2]),
            Op::Reject {
                code: 0,
                status: 0,
                text: Vec::new(),
            },
            Op::Accept,
            Op::Stale,
            feed(b"QUIT\r\n"),
        ],
    );
    session_seed(
        seeds,
        "pipelined-rcpts-all-refused",
        header,
        vec![
            feed(b"EHLO c\r\n"),
            forward.clone(),
            forward.clone(),
            group(&sender, &[&no1, &no2]),
            Op::AcceptWith {
                code: 3,
                text: Vec::new(),
            },
            Op::Stale,
            group(&sender, &[&ok1]),
            forward.clone(),
            feed(b"hi\r\n.\r\nQUIT\r\n"),
        ],
    );
    // More RCPTs than the recipient limit and the input buffer (12 KiB with 512-octet body
    // chunks) hold: input stops while the read-ahead lines fill the buffer, and `wants_input`
    // must say so.
    let small_buffer = [1, 0xc0, 0, 0];
    session_seed(
        seeds,
        "pipelined-buffer-full",
        small_buffer,
        vec![
            feed(b"EHLO c\r\n"),
            forward.clone(),
            forward.clone(),
            feed(format!("MAIL FROM:{}\r\n", path(small_buffer, "mail", "a", true)).as_bytes()),
            Op::FeedRepeat {
                count: 600,
                bytes: format!("RCPT TO:{}\r\n", path(small_buffer, "rcpt", "b", true))
                    .into_bytes(),
            },
            Op::Stale,
            forward.clone(),
            feed(b"QUIT\r\n"),
        ],
    );
    // A bare LF past the size cut (64 octets), read by the one-at-a-time session after the
    // abort and by the pipelined one in the same read: the notice came before the abort
    // there, after it here.
    let header = [1, 4, 0, 0];
    let sender = path(header, "mail", "a", true);
    let ok = path(header, "rcpt", "b", true);
    let mut body = b"Subject: x\r\n\r\n".to_vec();
    body.extend_from_slice(&[b'y'; 98]);
    body.extend_from_slice(b"\r\n");
    session_seed(
        seeds,
        "bare-lf-past-size-cut",
        header,
        vec![
            feed(b"EHLO c\r\n"),
            forward.clone(),
            forward.clone(),
            group(&sender, &[&ok]),
            feed(&body),
            feed(b"x\ny\r\n.\r\nQUIT\r\n"),
            Op::Stale,
        ],
    );
}

fn decoder(max_line: u8, chunk: u8, body: &[u8]) -> Vec<u8> {
    DecoderInput {
        max_line,
        chunk,
        alphabet: 0,
        body: body.to_vec(),
    }
    .encode()
}

fn decoder_seeds(seeds: &mut Vec<Seed>) {
    let cases: &[(&str, &[u8])] = &[
        ("simple", b"Subject: x\r\n\r\nhello\r\n.\r\n"),
        ("empty", b".\r\n"),
        ("stuffed", b"..hidden\r\n..\r\n...\r\n.\r\n"),
        ("trailing", b"a\r\n.\r\nMAIL FROM:<x>\r\n"),
        ("smuggling-lf-dot-lf", b"a\n.\nMAIL FROM:<evil>\r\n.\r\n"),
        ("smuggling-lf-dot-crlf", b"a\n.\r\nRCPT TO:<x>\r\n.\r\n"),
        ("smuggling-crlf-dot-lf", b"a\r\n.\nQUIT\r\n.\r\n"),
        ("smuggling-cr-dot-cr", b"a\r.\rQUIT\r\n.\r\n"),
        ("smuggling-crlf-dot-cr", b"a\r\n.\rQUIT\r\n.\r\n"),
        ("bare-lf-lines", b"one\ntwo\r\n.\r\n"),
        ("cr-cr-lf", b"x\r\r\n.\r\n"),
        ("binary", b"\x00\xff\x80\r\n.\r\n"),
        ("incomplete", b"a\r\n.\r"),
        ("dot-space", b"a\r\n. \r\n.\r\n"),
    ];
    for (name, body) in cases {
        push(seeds, "data_decoder", name, decoder(0, 3, body));
    }
    let mut long = vec![b'x'; 999];
    long.extend_from_slice(b"\r\n.\r\n");
    push(seeds, "data_decoder", "line-999", decoder(0, 0, &long));
    push(
        seeds,
        "data_decoder",
        "line-limit-16",
        decoder(66, 5, b"0123456789abcdef\r\n0123456789abcd\r\n.\r\n"),
    );
    push(
        seeds,
        "data_decoder",
        "mapped",
        DecoderInput {
            max_line: 1,
            chunk: 2,
            alphabet: 1,
            body: vec![6, 0, 1, 2, 0, 1, 6, 1, 2, 1, 0, 2, 0, 6, 0, 1, 2, 0, 1],
        }
        .encode(),
    );
}

fn tls_seeds(seeds: &mut Vec<Seed>) {
    let hello = crate::tls::client_hello();
    let plain = b"EHLO client.example\r\nSTARTTLS\r\nMAIL FROM:<evil@example.org>\r\n";
    let boundary = u16::try_from(plain.len()).unwrap_or(0).to_le_bytes();
    let mut tls_seed = |name: &str, mode: u8, read: u8, flip: u8, after: &[u8]| {
        let mut data = if mode == 0 {
            Vec::new()
        } else {
            plain.to_vec()
        };
        data.extend_from_slice(after);
        let (lo, hi) = if mode == 0 {
            (0, 0)
        } else {
            (boundary[0], boundary[1])
        };
        seeds.push(Seed {
            target: "tls_transport",
            name: name.to_owned(),
            bytes: TlsInput {
                mode,
                boundary_lo: lo,
                boundary_hi: hi,
                chunk: 0,
                read,
                flip,
                data,
            }
            .encode(),
            deterministic: mode == 2,
        });
    };
    tls_seed("implicit-client-hello", 0, 0, 0, &hello);
    tls_seed("implicit-plaintext-smtp", 0, 0, 0, b"EHLO oops\r\n");
    tls_seed("starttls-client-hello", 1, 8, 0, &hello);
    tls_seed(
        "starttls-handshake",
        2,
        8,
        0,
        b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n",
    );
    tls_seed(
        "starttls-handshake-flip",
        2,
        5,
        77,
        b"EHLO client.example\r\n",
    );
    tls_seed("starttls-handshake-all-unread", 2, 0, 0, b"QUIT\r\n");
}

/// The octets of a [`ConnOp::Send`] that stand for these [`SESSION_TOKENS`](crate::session::SESSION_TOKENS).
fn tokens(words: &[&str]) -> Vec<u8> {
    let table = crate::session::SESSION_TOKENS;
    words
        .iter()
        .map(|w| {
            let i = table
                .iter()
                .position(|t| t == w)
                .unwrap_or_else(|| panic!("{w:?} is not a session token"));
            u8::try_from(i).expect("fewer than 256 tokens")
        })
        .collect()
}

fn conn_seeds(seeds: &mut Vec<Seed>) {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use ConnOp::{
        Accept, AutoAccept, Close, Eof, Exchange, Flip, RefuseMessage, Reject, Send, SendRaw,
        Stale, StartTls, Wait,
    };
    const IMPLICIT: u8 = 1;
    const STARTTLS: u8 = 0;
    const PLAIN: u8 = 2;
    const RAW_CLIENT: u8 = 4;
    const REQUIRE_TLS: u8 = 8;
    const SMALL_LIMITS: u8 = 16;
    let ehlo = || Send(tokens(&["EHLO mail.example.com\r\n"]));
    let envelope = || {
        Send(tokens(&[
            "MAIL FROM:<alice@example.org>\r\n",
            "RCPT TO:<bob@example.net>\r\n",
            "DATA\r\n",
        ]))
    };
    let body = || {
        Send(tokens(&[
            "Subject: hello\r\n",
            "\r\n",
            "Hello, world.",
            "\r\n",
            "..",
            "\r\n.\r\n",
        ]))
    };
    let quit = || Send(tokens(&["QUIT\r\n"]));
    let mut seed_with = |name: &str, header: u8, proxy: Option<ProxySpec>, ops: Vec<ConnOp>| {
        let input = ConnInput { header, proxy, ops };
        push(seeds, "conn", name, input.encode());
    };
    let mut seed = |name: &str, header: u8, ops: Vec<ConnOp>| seed_with(name, header, None, ops);
    seed(
        "implicit-message",
        IMPLICIT,
        vec![
            AutoAccept(255),
            Exchange(0),
            ehlo(),
            Exchange(0),
            envelope(),
            Exchange(0),
            body(),
            quit(),
            Exchange(0),
        ],
    );
    seed(
        "implicit-pipelined-small-pieces",
        IMPLICIT,
        vec![
            AutoAccept(255),
            ehlo(),
            envelope(),
            body(),
            quit(),
            Exchange(3),
        ],
    );
    seed(
        "starttls-message",
        STARTTLS | REQUIRE_TLS,
        vec![
            AutoAccept(255),
            Exchange(0),
            ehlo(),
            Exchange(0),
            StartTls,
            Exchange(0),
            ehlo(),
            envelope(),
            Exchange(7),
            body(),
            quit(),
            Exchange(0),
        ],
    );
    seed(
        "starttls-injection",
        STARTTLS | REQUIRE_TLS,
        vec![
            AutoAccept(255),
            Exchange(0),
            ehlo(),
            Exchange(0),
            Send(tokens(&[
                "STARTTLS\r\n",
                "MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n",
            ])),
            Exchange(0),
            StartTls,
            Exchange(0),
            ehlo(),
            Exchange(0),
            quit(),
            Exchange(0),
        ],
    );
    seed(
        "starttls-byte-by-byte-auth",
        STARTTLS,
        vec![
            AutoAccept(255),
            Exchange(1),
            ehlo(),
            Exchange(1),
            StartTls,
            Exchange(1),
            ehlo(),
            Send(tokens(&["AUTH PLAIN AHVzZXIAcGFzcw==\r\n"])),
            Exchange(1),
            Send(tokens(&["AUTH LOGIN\r\n", "dXNlcg==\r\n", "cGFzcw==\r\n"])),
            Exchange(2),
        ],
    );
    seed(
        "plain-bdat",
        PLAIN | SMALL_LIMITS,
        vec![
            AutoAccept(255),
            ehlo(),
            Send(tokens(&[
                "MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n",
                "RCPT TO:<bob@example.net>\r\n",
                "BDAT 5\r\n",
                "12345",
                "BDAT 0 LAST\r\n",
            ])),
            Exchange(0),
            Send(tokens(&["BDAT 99999999999 LAST\r\n"])),
            Exchange(0),
        ],
    );
    seed(
        "deferred-decisions",
        IMPLICIT,
        vec![
            Exchange(0),
            Accept,
            Exchange(0),
            ehlo(),
            envelope(),
            Exchange(0),
            Accept,
            Exchange(0),
            Stale,
            Reject(1),
            Exchange(0),
            Accept,
            Exchange(0),
        ],
    );
    seed(
        "implicit-tampered-record",
        IMPLICIT,
        vec![AutoAccept(255), Exchange(0), ehlo(), Flip(9), Exchange(0)],
    );
    seed(
        "implicit-raw-plaintext",
        IMPLICIT | RAW_CLIENT,
        vec![
            SendRaw(b"EHLO oops\r\n".to_vec()),
            Exchange(0),
            Eof,
            Exchange(0),
        ],
    );
    seed(
        "vanish-mid-data",
        STARTTLS,
        vec![
            AutoAccept(255),
            ehlo(),
            envelope(),
            Send(tokens(&["Subject: hello\r\n"])),
            Exchange(0),
            Eof,
            Exchange(0),
        ],
    );
    // 40 × 8 s = 320 s idle: past the 300 s command timer (421 4.4.2); the close linger then
    // ends a client that does not read.
    seed(
        "idle-command-timeout",
        PLAIN,
        vec![
            AutoAccept(255),
            ehlo(),
            Exchange(0),
            Wait(40),
            Exchange(0),
            Wait(1),
        ],
    );
    // 25 × 8 s = 200 s without body octets: past the 180 s data-block timer, mid-message.
    seed(
        "stalled-body-timeout",
        IMPLICIT,
        vec![
            AutoAccept(255),
            ehlo(),
            envelope(),
            Send(tokens(&["Subject: hello\r\n"])),
            Exchange(0),
            Wait(25),
            Exchange(0),
        ],
    );
    // A client that never finishes its handshake after STARTTLS: the 30 s handshake timer.
    seed(
        "stalled-starttls-handshake",
        STARTTLS,
        vec![
            AutoAccept(255),
            ehlo(),
            Send(tokens(&["STARTTLS\r\n"])),
            Exchange(0),
            Wait(4),
            Exchange(0),
        ],
    );
    seed(
        "host-closes-and-refuses",
        IMPLICIT,
        vec![
            AutoAccept(255),
            Exchange(0),
            ehlo(),
            envelope(),
            body(),
            RefuseMessage,
            Exchange(0),
            envelope(),
            Send(tokens(&["Subject: hello\r\n"])),
            Exchange(0),
            Close,
            Exchange(0),
        ],
    );

    // Behind a load balancer: a PROXY header first, then TLS or SMTP on the next octet.
    let v4 = (
        SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 56324),
        SocketAddr::new(Ipv4Addr::new(198, 51, 100, 7).into(), 465),
    );
    let v6 = (
        SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 49152),
        SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x25).into(), 25),
    );
    let v1 = |(source, destination)| {
        Some(ProxySpec::V1 {
            source,
            destination,
        })
    };
    let tlv = |kind: u8, value: &[u8]| TlvSpec {
        kind,
        value: value.to_vec(),
    };
    // ALPN, AUTHORITY, UNIQUE_ID, SSL (client flags 7, verify 0, common name) and a custom
    // type; then a CRC32C.
    let tlvs = vec![
        tlv(0, b"smtp"),
        tlv(1, b"mx.example.org"),
        tlv(3, b"4f2a1c0de"),
        tlv(4, b"\x07\0\0\0\0client.example"),
        tlv(6 | 0x08, b"\x01\x02"),
    ];
    seed_with(
        "proxy-v1-implicit-message",
        IMPLICIT,
        v1(v4),
        vec![
            AutoAccept(255),
            Exchange(0),
            ehlo(),
            Exchange(0),
            envelope(),
            Exchange(0),
            body(),
            quit(),
            Exchange(0),
        ],
    );
    seed_with(
        "proxy-v2-tlvs-starttls",
        STARTTLS | REQUIRE_TLS,
        Some(ProxySpec::V2(V2Spec {
            local: false,
            addresses: Some(v6),
            tlvs: tlvs.clone(),
            crc: Some(true),
        })),
        vec![
            AutoAccept(255),
            Exchange(0),
            ehlo(),
            Exchange(0),
            StartTls,
            Exchange(0),
            ehlo(),
            envelope(),
            Exchange(7),
            body(),
            quit(),
            Exchange(0),
        ],
    );
    // The header one octet per feed, then the session in the same small pieces.
    seed_with(
        "proxy-v1-tcp6-byte-by-byte",
        PLAIN,
        v1(v6),
        vec![AutoAccept(255), Exchange(1), ehlo(), quit(), Exchange(1)],
    );
    // A v2 header and the ClientHello behind it, in 3-octet pieces.
    seed_with(
        "proxy-v2-implicit-split",
        IMPLICIT,
        Some(ProxySpec::V2(V2Spec {
            local: false,
            addresses: Some(v4),
            tlvs,
            crc: None,
        })),
        vec![AutoAccept(255), ehlo(), quit(), Exchange(3)],
    );
    seed_with(
        "proxy-v2-local-health-check",
        PLAIN,
        Some(ProxySpec::V2(V2Spec {
            local: true,
            addresses: None,
            tlvs: Vec::new(),
            crc: None,
        })),
        vec![AutoAccept(255), Exchange(0), quit(), Exchange(0)],
    );
    seed_with(
        "proxy-v1-unknown",
        STARTTLS,
        Some(ProxySpec::V1Unknown { trailer: Some(v6) }),
        vec![AutoAccept(255), ehlo(), Exchange(0), quit(), Exchange(0)],
    );
    // No destination port: closed without a banner.
    seed_with(
        "proxy-bad-v1",
        PLAIN,
        Some(ProxySpec::Raw(
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324\r\n".to_vec(),
        )),
        vec![AutoAccept(255), ehlo(), Exchange(0), quit(), Exchange(0)],
    );
    seed_with(
        "proxy-bad-crc-implicit",
        IMPLICIT,
        Some(ProxySpec::V2(V2Spec {
            local: false,
            addresses: Some(v4),
            tlvs: vec![tlv(0, b"smtp")],
            crc: Some(false),
        })),
        vec![AutoAccept(255), Exchange(0), ehlo(), Exchange(0)],
    );
    // The client speaks first, with no header at all.
    seed_with(
        "proxy-missing",
        PLAIN,
        Some(ProxySpec::Raw(Vec::new())),
        vec![AutoAccept(255), ehlo(), Exchange(0)],
    );
    // Half a header (and no ClientHello behind it), then 16 s of nothing: the 10 s header
    // timer.
    seed_with(
        "proxy-header-timeout",
        IMPLICIT | RAW_CLIENT,
        Some(ProxySpec::Raw(b"PROXY TCP4 192.0".to_vec())),
        vec![Exchange(0), Wait(2), Exchange(0)],
    );
    seed_with(
        "proxy-eof-inside-header",
        STARTTLS,
        Some(ProxySpec::Raw(b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec())),
        vec![Exchange(0), Eof, Exchange(0)],
    );
}

/// PROXY headers as load balancers send them, each followed by the first client octets.
fn proxy_seeds(seeds: &mut Vec<Seed>) {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use smtps_proxy::{Ssl, Tlv};

    use crate::proxy::{tlv, v1_line, v2_header, v2_raw, with_crc};

    let v4_source = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 56324);
    let v4_destination = SocketAddr::new(Ipv4Addr::new(198, 51, 100, 7).into(), 465);
    let v6_source = SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(), 49152);
    let v6_destination =
        SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x25).into(), 25);
    let client_hello = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03";
    let with_tail = |header: &[u8], tail: &[u8]| [header, tail].concat();

    push(
        seeds,
        "proxy_header",
        "v1-tcp4",
        with_tail(v1_line(v4_source, v4_destination).as_bytes(), client_hello),
    );
    push(
        seeds,
        "proxy_header",
        "v1-tcp6",
        with_tail(v1_line(v6_source, v6_destination).as_bytes(), b"EHLO c\r\n"),
    );
    push(
        seeds,
        "proxy_header",
        "v1-unknown",
        b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\nEHLO c\r\n".to_vec(),
    );
    let ssl = [
        &[0x07][..],
        &0_u32.to_be_bytes(),
        &tlv(Ssl::VERSION, b"TLSv1.3"),
        &tlv(Ssl::COMMON_NAME, b"client.example"),
        &tlv(Ssl::CIPHER, b"TLS_AES_256_GCM_SHA384"),
    ]
    .concat();
    let tlvs = [
        tlv(Tlv::ALPN, b"smtp"),
        tlv(Tlv::AUTHORITY, b"mx.example.org"),
        tlv(Tlv::UNIQUE_ID, b"4f2a1c0de"),
        tlv(Tlv::SSL, &ssl),
        tlv(Tlv::NETNS, b"blue"),
        tlv(Tlv::NOOP, &[0; 3]),
        tlv(Tlv::CRC32C, &[0; 4]),
    ]
    .concat();
    push(
        seeds,
        "proxy_header",
        "v2-proxy-tcp4-tlvs-crc",
        with_tail(
            &with_crc(v2_header(v4_source, v4_destination, &tlvs)),
            client_hello,
        ),
    );
    push(
        seeds,
        "proxy_header",
        "v2-local",
        with_tail(&v2_raw(0x20, 0x00, &[]), client_hello),
    );
    push(
        seeds,
        "proxy_header",
        "v2-proxy-tcp6",
        with_tail(&v2_header(v6_source, v6_destination, &[]), b"EHLO c\r\n"),
    );
}
