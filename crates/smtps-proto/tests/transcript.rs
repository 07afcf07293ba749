//! Runs the SMTP transcripts in `tests/transcripts/` against a `ServerSession`, whole and with
//! the client's input split at every byte and at random boundaries: the events and the output
//! must not depend on how the input was cut (the sans-IO property).
//!
//! Format, one directive per line:
//! - `# text` — a comment.
//! - `! key=value ...` — configuration before the first exchange: `security=plain|starttls|tls`,
//!   `bare_lf_body=reject`, `bare_lf_commands=reject`, `recipients=N`, `message_size=N`,
//!   `errors=N`, `transactions=N`, `require_tls=yes`, `plaintext_auth=yes`, `vrfy=disabled`,
//!   `text_line=N`, `extensions=-NAME,-NAME` (remove extensions by EHLO keyword).
//! - `H: KIND accept|reject CODE STATUS TEXT` — how the host answers the next event of KIND
//!   (connect, helo, auth, mail, rcpt, data, end); unlisted events are accepted.
//! - `C: text` — a client line, CRLF appended; `C> text` — raw client bytes with `\r`, `\n`,
//!   `\xNN` escapes and nothing appended. Consecutive client lines form one flight, sent
//!   together (pipelined).
//! - `S: text` — an expected server reply line; consecutive ones are everything the server
//!   sends after the preceding flight.
//! - `E: text` — an expected event (see `describe`); the events of each flight, when listed,
//!   must match exactly.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use smtps_proto::{
    Event, Extensions, LineEndingPolicy, Reply, Security, ServerSession, SessionConfig, Verdict,
    VrfyPolicy,
};

#[derive(Debug, Default)]
struct Exchange {
    client: Vec<u8>,
    server: Vec<u8>,
    events: Option<Vec<String>>,
}

struct Transcript {
    security: Security,
    config: SessionConfig,
    rules: HashMap<String, VecDeque<Verdict>>,
    exchanges: Vec<Exchange>,
}

fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    let hex = &text[i + 2..i + 4];
                    out.push(u8::from_str_radix(hex, 16).expect("\\xNN escape"));
                    i += 2;
                }
                other => panic!("unknown escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn parse(text: &str) -> Transcript {
    let mut transcript = Transcript {
        security: Security::Tls,
        config: SessionConfig::new("mx.test"),
        rules: HashMap::new(),
        exchanges: vec![Exchange::default()],
    };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (tag, rest) = line.split_at(2);
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let last = transcript.exchanges.last_mut().expect("one exchange");
        match tag {
            "! " | "!" => configure(&mut transcript, rest),
            "C:" | "C>" => {
                if !last.server.is_empty() || last.events.is_some() {
                    transcript.exchanges.push(Exchange::default());
                }
                let last = transcript.exchanges.last_mut().expect("one exchange");
                if tag == "C:" {
                    last.client.extend_from_slice(&unescape(rest));
                    last.client.extend_from_slice(b"\r\n");
                } else {
                    last.client.extend_from_slice(&unescape(rest));
                }
            }
            "S:" => {
                last.server.extend_from_slice(rest.as_bytes());
                last.server.extend_from_slice(b"\r\n");
            }
            "E:" => last
                .events
                .get_or_insert_with(Vec::new)
                .push(rest.to_owned()),
            "H:" => {
                let mut words = rest.splitn(5, ' ');
                let kind = words.next().expect("kind").to_owned();
                let verdict = match words.next() {
                    Some("accept") => Verdict::Accept,
                    Some("reject") => {
                        let code = words.next().expect("code").parse().expect("code");
                        let status = words.next().expect("status");
                        let text = words.next().unwrap_or("");
                        Verdict::Reject(Reply::from_parts(code, Some(status), text).expect("reply"))
                    }
                    other => panic!("bad host rule {other:?}"),
                };
                transcript.rules.entry(kind).or_default().push_back(verdict);
            }
            _ => panic!("unknown transcript line {line:?}"),
        }
    }
    transcript
}

fn configure(transcript: &mut Transcript, options: &str) {
    let config = &mut transcript.config;
    for option in options.split_whitespace() {
        let (key, value) = option.split_once('=').expect("key=value");
        let number = || value.parse::<usize>().expect("number");
        let count = || value.parse::<u32>().expect("number");
        match key {
            "security" => {
                transcript.security = match value {
                    "plain" => Security::Plaintext,
                    "starttls" => Security::StartTlsAvailable,
                    "tls" => Security::Tls,
                    _ => panic!("security {value}"),
                }
            }
            "bare_lf_body" => config.policy.bare_line_ending_in_body = LineEndingPolicy::Reject,
            "bare_lf_commands" => {
                config.policy.bare_line_ending_in_commands = LineEndingPolicy::Reject;
            }
            "recipients" => config.limits.recipients = number(),
            "message_size" => config.limits.message_size = value.parse().expect("number"),
            "errors" => config.limits.errors = count(),
            "transactions" => config.limits.transactions = Some(count()),
            "text_line" => config.limits.text_line = Some(number()),
            "require_tls" => config.policy.require_tls_for_mail = true,
            "require_auth" => config.policy.require_auth_for_mail = true,
            "plaintext_auth" => config.policy.danger_allow_plaintext_auth = true,
            "vrfy" => config.policy.vrfy = VrfyPolicy::Disabled,
            "extensions" => {
                for name in value.split(',') {
                    let ext = match name.trim_start_matches('-') {
                        "PIPELINING" => Extensions::PIPELINING,
                        "CHUNKING" => Extensions::CHUNKING,
                        "SMTPUTF8" => Extensions::SMTP_UTF8,
                        "DSN" => Extensions::DSN,
                        "ENHANCEDSTATUSCODES" => Extensions::ENHANCED_STATUS_CODES,
                        "LIMITS" => Extensions::LIMITS,
                        "REQUIRETLS" => Extensions::REQUIRE_TLS,
                        "SIZE" => Extensions::SIZE,
                        "8BITMIME" => Extensions::EIGHT_BIT_MIME,
                        "AUTH" => Extensions::AUTH,
                        "BINARYMIME" => Extensions::BINARY_MIME,
                        "STARTTLS" => Extensions::START_TLS,
                        _ => panic!("extension {name}"),
                    };
                    config.extensions = if name.starts_with('-') {
                        config.extensions.without(ext)
                    } else {
                        config.extensions | ext
                    };
                }
            }
            _ => panic!("unknown option {key}"),
        }
    }
}

fn describe(event: &Event<'_>) -> String {
    match event {
        Event::Connect { .. } => "connect".into(),
        Event::Helo { extended, name, .. } => {
            format!(
                "{} {}",
                if *extended { "ehlo" } else { "helo" },
                helo_text(name)
            )
        }
        Event::Auth {
            mechanism,
            authorization_id,
            authentication_id,
            password,
            ..
        } => format!(
            "auth {mechanism:?} authz={authorization_id} authc={authentication_id} pass={password}"
        ),
        Event::Mail { from, .. } => format!("mail {from:?}"),
        Event::Rcpt { to, .. } => format!("rcpt {to:?}"),
        Event::DataStart { chunked, .. } => format!("data chunked={chunked}"),
        Event::BodyChunk(chunk) => {
            format!("body {}", String::from_utf8_lossy(chunk).escape_debug())
        }
        Event::MessageEnd { size, .. } => format!("end size={size}"),
        Event::MessageAborted { reason } => format!("aborted {reason:?}"),
        Event::Reset => "reset".into(),
        Event::StartTls { discarded } => format!("starttls discarded={discarded}"),
        Event::BareLineEnding { in_body, rejected } => {
            format!("bare in_body={in_body} rejected={rejected}")
        }
        Event::Quit => "quit".into(),
        Event::TooManyErrors => "too-many-errors".into(),
        other => format!("{other:?}"),
    }
}

fn helo_text(name: &smtps_proto::HeloName<'_>) -> String {
    match name {
        smtps_proto::HeloName::Domain(domain) => domain.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

fn decision_kind(event: &Event<'_>) -> Option<(&'static str, smtps_proto::DecisionId)> {
    Some(match *event {
        Event::Connect { decision } => ("connect", decision),
        Event::Helo { decision, .. } => ("helo", decision),
        Event::Auth { decision, .. } => ("auth", decision),
        Event::Mail { decision, .. } => ("mail", decision),
        Event::Rcpt { decision, .. } => ("rcpt", decision),
        Event::DataStart { decision, .. } => ("data", decision),
        Event::MessageEnd { decision, .. } => ("end", decision),
        _ => return None,
    })
}

/// The outcome of running one transcript: per exchange, the output and the events.
type Outcome = Vec<(Vec<u8>, Vec<String>)>;

/// Runs the transcript, feeding each flight in pieces of the given sizes (cycled).
fn run(transcript: &Transcript, piece_sizes: &[usize]) -> Outcome {
    let mut session = ServerSession::new(Arc::new(transcript.config.clone()), transcript.security);
    let mut rules = transcript.rules.clone();
    let mut outcome = Vec::new();
    let mut sizes = piece_sizes.iter().copied().cycle();
    for exchange in &transcript.exchanges {
        let mut output = Vec::new();
        let mut events: Vec<String> = Vec::new();
        let mut fed = 0;
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 1_000_000, "session made no progress");
            let tls_started = drain(&mut session, &mut rules, &mut events);
            // What the client sent after STARTTLS in the same flight was plaintext that the
            // TLS transport would discard: it never reaches the session.
            if tls_started || fed == exchange.client.len() || session.is_closed() {
                break;
            }
            let size = sizes.next().unwrap_or(usize::MAX).max(1);
            let end = exchange.client.len().min(fed + size);
            fed += session.handle_input(&exchange.client[fed..end]);
        }
        session.poll_transmit(&mut output);
        outcome.push((output, events));
    }
    outcome
}

/// Drains events, answering decisions by the rules; returns whether TLS was started.
fn drain(
    session: &mut ServerSession,
    rules: &mut HashMap<String, VecDeque<Verdict>>,
    events: &mut Vec<String>,
) -> bool {
    let mut tls_started = false;
    while let Some(event) = session.poll_event() {
        let text = describe(&event);
        let decision = decision_kind(&event);
        let start_tls = matches!(event, Event::StartTls { .. });
        match (events.last_mut(), text.strip_prefix("body ")) {
            // Body chunks are cut wherever the input was: join them for comparison.
            (Some(previous), Some(more)) if previous.starts_with("body ") => {
                previous.push_str(more);
            }
            _ => events.push(text),
        }
        if let Some((kind, decision)) = decision {
            let verdict = rules
                .get_mut(kind)
                .and_then(VecDeque::pop_front)
                .unwrap_or(Verdict::Accept);
            session
                .decide(decision, verdict)
                .expect("outstanding decision");
        }
        if start_tls {
            session.handle_tls_established().expect("after StartTls");
            tls_started = true;
        }
    }
    tls_started
}

fn check(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read transcript");
    let transcript = parse(&text);
    let whole = run(&transcript, &[usize::MAX]);
    for (index, (exchange, (output, events))) in transcript.exchanges.iter().zip(&whole).enumerate()
    {
        assert_eq!(
            String::from_utf8_lossy(output),
            String::from_utf8_lossy(&exchange.server),
            "{}: server output of exchange {index} (client sent {:?})",
            path.display(),
            String::from_utf8_lossy(&exchange.client),
        );
        if let Some(expected) = &exchange.events {
            assert_eq!(
                events,
                expected,
                "{}: events of exchange {index}",
                path.display()
            );
        }
    }
    // The same transcript, cut differently, gives exactly the same result.
    let total: usize = transcript
        .exchanges
        .iter()
        .map(|e| e.client.len())
        .max()
        .unwrap_or(0);
    let mut cuts: Vec<Vec<usize>> = vec![vec![1], vec![2], vec![3], vec![7]];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20 {
        let sizes = (0..16)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                usize::try_from(seed >> 33).unwrap_or(1) % (total.max(2)) + 1
            })
            .collect();
        cuts.push(sizes);
    }
    // How much the session itself discards after STARTTLS depends on the cut (the transport
    // discards the rest), so only that count may differ.
    let normalize = |outcome: Outcome| -> Outcome {
        outcome
            .into_iter()
            .map(|(output, events)| {
                let events = events
                    .into_iter()
                    .map(|e| {
                        if e.starts_with("starttls") {
                            "starttls".into()
                        } else {
                            e
                        }
                    })
                    .collect();
                (output, events)
            })
            .collect()
    };
    let expected = normalize(whole);
    for sizes in cuts {
        let outcome = normalize(run(&transcript, &sizes));
        if outcome != expected {
            let show = |o: &Outcome| -> Vec<(String, Vec<String>)> {
                o.iter()
                    .map(|(out, ev)| (String::from_utf8_lossy(out).into_owned(), ev.clone()))
                    .collect()
            };
            panic!(
                "{}: cut into {sizes:?}:\n{:#?}\nexpected\n{:#?}",
                path.display(),
                show(&outcome),
                show(&expected)
            );
        }
    }
}

#[test]
fn transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("transcripts directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "transcripts missing");
    let failures: Vec<_> = paths
        .iter()
        .filter(|path| std::panic::catch_unwind(|| check(path)).is_err())
        .map(|path| path.display().to_string())
        .collect();
    assert!(failures.is_empty(), "failing transcripts: {failures:#?}");
}
