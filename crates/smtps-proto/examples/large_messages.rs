//! Ten 100 KiB messages through a `ServerSession`, `ROUNDS` times, for counting instructions
//! per message under callgrind (issue 16): the input is offered 16 KiB at a time, as a TLS
//! record's plaintext arrives, and the host only reads each body chunk. Leaves out TLS and
//! sockets (see `scripts/profile.sh` for the whole server).
//!
//! ```text
//! cargo build --release -p smtps-proto --example large_messages
//! valgrind --tool=callgrind target/release/examples/large_messages no_dots 2
//! valgrind --tool=callgrind target/release/examples/large_messages no_dots 12
//! ```
//!
//! The difference between the two totals, divided by 100, is the cost of one message. The
//! body shape is `no_dots` (lines of about 63 octets, none starting with a dot) or
//! `dot_every_7` (every seventh line does, as in smtps-loadgen's messages).

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use smtps_proto::data::dot_stuff;
use smtps_proto::{Event, Security, ServerSession, SessionConfig, Verdict};

#[path = "../benches/support/text_body.rs"]
mod support;
use support::text_body;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let dot_every = match args.next().as_deref() {
        Some("no_dots") => 0,
        Some("dot_every_7") => 7,
        _ => {
            eprintln!("usage: large_messages no_dots|dot_every_7 ROUNDS");
            return ExitCode::FAILURE;
        }
    };
    let Some(rounds) = args.next().and_then(|n| n.parse::<u32>().ok()) else {
        eprintln!("usage: large_messages no_dots|dot_every_7 ROUNDS");
        return ExitCode::FAILURE;
    };
    let mut wire = b"EHLO client.example\r\n".to_vec();
    for _ in 0..10 {
        wire.extend_from_slice(
            b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n",
        );
        dot_stuff(&text_body(dot_every), &mut wire);
    }
    let config = Arc::new(SessionConfig::new("mx.example.org"));
    let (mut delivered, mut chunks) = (0u32, 0u64);
    for _ in 0..rounds {
        let (d, c) = run(&config, &wire);
        delivered += d;
        chunks += c;
    }
    println!("messages={delivered} body_chunks={chunks}");
    ExitCode::SUCCESS
}

/// One session: the ten messages, every decision accepted.
fn run(config: &Arc<SessionConfig>, wire: &[u8]) -> (u32, u64) {
    let mut session = ServerSession::new(config.clone(), Security::Tls);
    let (mut delivered, mut chunks) = (0, 0);
    let mut replies = Vec::new();
    let mut offset = 0;
    while offset < wire.len() {
        let end = wire.len().min(offset + 16 * 1024);
        let taken = session.handle_input(&wire[offset..end]);
        offset += taken;
        while let Some(event) = session.poll_event() {
            if let Event::BodyChunk(chunk) = &event {
                black_box(chunk);
                chunks += 1;
            }
            if matches!(event, Event::MessageEnd { .. }) {
                delivered += 1;
            }
            if let Some(decision) = event.decision() {
                let _ = session.decide(decision, Verdict::Accept);
            }
        }
        replies.clear();
        session.poll_transmit(&mut replies);
        if taken == 0 && !session.wants_input() {
            break;
        }
    }
    (delivered, chunks)
}
