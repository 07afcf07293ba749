//! The relay front between a real client (the testkit's, over TLS) and a scripted backend on
//! 127.0.0.1 that records every octet it receives. The backend's behaviour is chosen per test:
//! its extensions, refusals, and failures at each step.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use smtps_proto::SessionConfig;
use smtps_relay::auth::Authenticator;
use smtps_relay::backend::{BackendConfig, Identity};
use smtps_relay::relay::Relay;
use smtps_server::{Mode, RunningServer, Server, ServerConfig};
use smtps_testkit::{IO_TIMEOUT, SmtpClient, acceptor, client_config};

/// How the scripted backend behaves.
#[derive(Clone, Default)]
struct Script {
    /// Extra EHLO keywords.
    extensions: Vec<&'static str>,
    /// The connection starts with a PROXY v2 header (read and recorded).
    expect_proxy: bool,
    /// Close instead of answering the final dot.
    close_at_end_of_data: bool,
    /// Answer MAIL with this malformed line.
    garbage_at_mail: bool,
    /// Answer MAIL twice.
    two_replies_to_mail: bool,
    /// Accept the connection and say nothing at all.
    silent: bool,
    /// After the 250 to the final dot, say 421 and close (an idle timeout come early).
    close_after_message: bool,
    /// After its 354, read nothing for this long (a backend slower than the client).
    stall_in_data: Option<Duration>,
    /// Hold the replies to MAIL and RCPT until the DATA that ends the group is read (RFC 2920
    /// allows a server to): a front that waits for each reply before the next command stalls.
    answer_whole_groups: bool,
}

/// What the backend saw: per connection, everything it read.
#[derive(Default)]
struct Seen {
    connections: Vec<Vec<u8>>,
    /// Messages it accepted (the octets between 354 and the final dot, dot-stuffing kept).
    messages: Vec<Vec<u8>>,
    /// Connections the front closed (or the script ended).
    closed: usize,
}

struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

fn backend(script: Script) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = Arc::clone(&shared);
            let script = script.clone();
            thread::spawn(move || serve(stream, &script, &seen));
        }
    });
    Backend { addr, seen }
}

fn serve(stream: TcpStream, script: &Script, seen: &Mutex<Seen>) {
    converse(stream, script, seen);
    seen.lock().unwrap().closed += 1;
}

fn converse(stream: TcpStream, script: &Script, seen: &Mutex<Seen>) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.connections.push(Vec::new());
        seen.connections.len() - 1
    };
    let record = |bytes: &[u8]| seen.lock().unwrap().connections[index].extend_from_slice(bytes);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    if script.expect_proxy {
        let mut fixed = [0u8; 16];
        reader.read_exact(&mut fixed).unwrap();
        let mut rest = vec![0u8; usize::from(u16::from_be_bytes([fixed[14], fixed[15]]))];
        reader.read_exact(&mut rest).unwrap();
        record(&fixed);
        record(&rest);
    }
    let mut say = |line: &str| {
        let _ = writer.write_all(line.as_bytes());
    };
    if script.silent {
        let _ = reader.read_to_end(&mut Vec::new());
        return;
    }
    say("220 backend.test ESMTP\r\n");
    let mut line = Vec::new();
    // Replies held until the group's DATA (`answer_whole_groups`), and whether a MAIL was
    // accepted (a refused one makes its RCPTs and DATA 503, as Postfix answers).
    let mut held = String::new();
    let mut in_transaction = false;
    let answer = |held: &mut String, reply: &str, say: &mut dyn FnMut(&str)| {
        if script.answer_whole_groups {
            held.push_str(reply);
        } else {
            say(reply);
        }
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        record(&line);
        let text = String::from_utf8_lossy(&line).to_uppercase();
        if text.starts_with("EHLO") {
            let mut reply = String::from("250-backend.test\r\n250-PIPELINING\r\n");
            for extension in &script.extensions {
                reply.push_str(&format!("250-{extension}\r\n"));
            }
            reply.push_str("250 ENHANCEDSTATUSCODES\r\n");
            say(&reply);
        } else if text.starts_with("HELO") {
            say("250 backend.test\r\n");
        } else if text.starts_with("XCLIENT") {
            say("220 backend.test ESMTP\r\n");
        } else if text.starts_with("MAIL") && script.garbage_at_mail {
            say("2x0 what\r\n");
        } else if text.starts_with("MAIL") && script.two_replies_to_mail {
            say("250 2.1.0 Ok\r\n250 2.1.5 this would answer the RCPT\r\n");
        } else if text.starts_with("MAIL") && text.contains("REFUSED") {
            answer(
                &mut held,
                "550 5.7.1 <refused@client.test>: Sender address rejected\r\n",
                &mut say,
            );
        } else if text.starts_with("MAIL") {
            in_transaction = true;
            answer(&mut held, "250 2.1.0 Ok\r\n", &mut say);
        } else if !in_transaction && (text.starts_with("RCPT") || text.starts_with("DATA")) {
            say(&(std::mem::take(&mut held) + "503 5.5.1 Error: need MAIL command\r\n"));
        } else if text.starts_with("RCPT") && text.contains("NOBODY") {
            answer(
                &mut held,
                "550 5.1.1 <nobody@backend.test>: Recipient address rejected\r\n",
                &mut say,
            );
        } else if text.starts_with("RCPT") {
            answer(&mut held, "250 2.1.5 Ok\r\n", &mut say);
        } else if text.starts_with("DATA") {
            // Even when every RCPT was refused: a careless backend the front must not trust.
            say(&(std::mem::take(&mut held) + "354 End data with <CR><LF>.<CR><LF>\r\n"));
            if let Some(stall) = script.stall_in_data {
                thread::sleep(stall);
            }
            let mut message = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                    return; // closed without the final dot: nothing delivered
                }
                record(&line);
                if line == b".\r\n" {
                    break;
                }
                message.extend_from_slice(&line);
            }
            if script.close_at_end_of_data {
                return;
            }
            seen.lock().unwrap().messages.push(message);
            in_transaction = false;
            say("250 2.0.0 Ok: queued as BACKEND1\r\n");
            if script.close_after_message {
                say("421 4.4.2 backend.test Error: timeout exceeded\r\n");
                return;
            }
        } else if text.starts_with("RSET") {
            in_transaction = false;
            say("250 2.0.0 Ok\r\n");
        } else if text.starts_with("QUIT") {
            say("221 2.0.0 Bye\r\n");
            return;
        } else {
            say("502 5.5.2 Error: command not recognized\r\n");
        }
    }
}

struct Users;

impl Authenticator for Users {
    fn verify(&self, user: &str, password: &[u8]) -> bool {
        user == "alice" && password == b"secret"
    }
}

struct Front {
    server: Option<RunningServer>,
    addr: SocketAddr,
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.handle().shutdown(Duration::ZERO);
            let _ = server.join();
        }
    }
}

fn front(backend: SocketAddr, identity: Identity) -> Front {
    front_with_timeout(backend, identity, Duration::from_secs(5))
}

fn front_with_timeout(backend: SocketAddr, identity: Identity, connect: Duration) -> Front {
    front_with(backend, identity, connect, SessionConfig::new("front.test"))
}

fn front_with(
    backend: SocketAddr,
    identity: Identity,
    connect: Duration,
    session: SessionConfig,
) -> Front {
    let mut config = BackendConfig::new(backend.to_string(), "front.test");
    config.identity = identity;
    config.connect_timeout = connect;
    config.command_timeout = Duration::from_secs(5);
    config.data_timeout = Duration::from_secs(5);
    let relay = Relay::new(config, "front.test").with_authenticator(Arc::new(Users));
    let mut server_config = ServerConfig::new(session)
        .listener("127.0.0.1:0".parse().unwrap(), Mode::ImplicitTls)
        .tls(acceptor());
    server_config.workers = 1;
    let server = Server::bind(server_config, relay).unwrap();
    let addr = server.local_addrs()[0];
    Front {
        server: Some(server.start().unwrap()),
        addr,
    }
}

fn client(front: &Front) -> SmtpClient {
    let mut client = SmtpClient::connect_tls(front.addr, &client_config());
    assert!(client.reply().starts_with("220"));
    assert!(client.command("EHLO client.test").starts_with("250"));
    client
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn verdicts_are_the_backends_and_250_comes_after_its_250() {
    let backend = backend(Script::default());
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    assert_eq!(c.command("MAIL FROM:<a@client.test>"), "250 2.1.0 Ok\r\n");
    let refused = c.command("RCPT TO:<nobody@backend.test>");
    assert_eq!(
        refused,
        "550 5.1.1 <nobody@backend.test>: Recipient address rejected\r\n"
    );
    assert_eq!(c.command("RCPT TO:<b@backend.test>"), "250 2.1.5 Ok\r\n");
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: relayed\r\n\r\n..leading dot\r\nbody\r\n");
    assert_eq!(c.command("."), "250 2.0.0 Ok: queued as BACKEND1\r\n");
    assert!(c.command("QUIT").starts_with("221"));
    let seen = backend.seen.lock().unwrap();
    let [message] = seen.messages.as_slice() else {
        panic!("one message: {:?}", seen.messages.len());
    };
    let text = String::from_utf8_lossy(message);
    assert!(
        text.starts_with("Received: from client.test ([127.0.0.1])"),
        "{text}"
    );
    assert!(
        text.contains("by front.test (smtpsd) with ESMTPS"),
        "{text}"
    );
    assert!(text.contains("version=TLSv1.3"), "{text}");
    assert!(
        text.ends_with("Subject: relayed\r\n\r\n..leading dot\r\nbody\r\n"),
        "{text}"
    );
}

#[test]
fn smuggled_lf_dot_lf_reaches_the_backend_as_one_canonical_message() {
    let backend = backend(Script::default());
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    c.command("MAIL FROM:<a@client.test>");
    c.command("RCPT TO:<b@backend.test>");
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n");
    assert!(c.command(".").starts_with("250"));
    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 1, "exactly one message");
    let wire = &seen.connections[0];
    // No bare LF anywhere in what the backend read, and one final dot only.
    assert!(!wire.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    let dots = wire.windows(5).filter(|w| w == b"\r\n.\r\n").count();
    assert_eq!(dots, 1, "{}", String::from_utf8_lossy(wire));
    let message = String::from_utf8_lossy(&seen.messages[0]);
    assert!(message.contains("MAIL FROM:<evil@x>\r\n"), "{message}");
    assert!(message.ends_with("smuggled\r\n"), "{message}");
}

/// A backend offering every XCLIENT attribute, a front introducing clients with it, and a
/// client past EHLO.
fn xclient_front() -> (Backend, Front, SmtpClient) {
    let backend = backend(Script {
        extensions: vec!["XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"],
        ..Script::default()
    });
    let front = front(backend.addr, Identity::Xclient);
    let c = client(&front);
    (backend, front, c)
}

/// AUTH PLAIN alice/secret, then a MAIL the backend accepts.
fn authenticate_and_mail(c: &mut SmtpClient) {
    assert!(
        c.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
            .starts_with("235")
    );
    assert!(
        c.command("MAIL FROM:<alice@client.test>")
            .starts_with("250")
    );
}

#[test]
fn xclient_names_the_client_its_helo_and_login() {
    let (backend, _front, mut c) = xclient_front();
    authenticate_and_mail(&mut c);
    let seen = backend.seen.lock().unwrap();
    let wire = String::from_utf8_lossy(&seen.connections[0]).into_owned();
    let xclient = wire.lines().find(|l| l.starts_with("XCLIENT")).unwrap();
    for attribute in [
        "ADDR=127.0.0.1",
        "PROTO=ESMTP",
        "HELO=client.test",
        "LOGIN=alice",
        "DESTADDR=127.0.0.1",
        "NAME=[UNAVAILABLE]",
    ] {
        assert!(xclient.contains(attribute), "{attribute} in {xclient}");
    }
    // XCLIENT, then EHLO again with the client's own name (a front-named EHLO would replace
    // the HELO that XCLIENT gave), then MAIL.
    let lines: Vec<&str> = wire.lines().collect();
    assert_eq!(lines[0], "EHLO front.test");
    assert!(lines[1].starts_with("XCLIENT "));
    assert_eq!(lines[2], "EHLO client.test");
    assert!(lines[3].starts_with("MAIL FROM:"));
    assert_eq!(lines.len(), 4);
}

#[test]
fn a_client_that_authenticates_between_transactions_is_introduced_again_before_its_next_mail() {
    let (backend, _front, mut c) = xclient_front();
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
    assert!(c.command("RSET").starts_with("250"));
    authenticate_and_mail(&mut c);
    let seen = backend.seen.lock().unwrap();
    assert_eq!(
        seen.connections.len(),
        1,
        "one backend connection for the session"
    );
    let wire = String::from_utf8_lossy(&seen.connections[0]).into_owned();
    let lines: Vec<&str> = wire.lines().collect();
    // Set-up (EHLO, XCLIENT without LOGIN, EHLO), the first MAIL; then RSET, and the new
    // identity (XCLIENT with LOGIN, EHLO) before the second MAIL.
    assert!(lines[1].starts_with("XCLIENT ") && lines[1].contains("LOGIN=[UNAVAILABLE]"));
    assert!(lines[3].starts_with("MAIL FROM:<a@client.test>"));
    let second = lines
        .iter()
        .position(|l| l.starts_with("MAIL FROM:<alice@"))
        .unwrap();
    let relogin = lines
        .iter()
        .position(|l| l.starts_with("XCLIENT ") && l.contains("LOGIN=alice"))
        .unwrap();
    assert!(relogin > 3 && relogin < second, "{lines:?}");
    assert_eq!(lines[relogin + 1], "EHLO client.test");
    assert!(lines[4..second].contains(&"RSET"), "{lines:?}");
}

#[test]
fn xclient_for_a_helo_client_says_proto_smtp_and_greets_with_helo() {
    let backend = backend(Script {
        extensions: vec!["XCLIENT NAME ADDR PORT PROTO HELO LOGIN"],
        ..Script::default()
    });
    let front = front(backend.addr, Identity::Xclient);
    let mut c = SmtpClient::connect_tls(front.addr, &client_config());
    assert!(c.reply().starts_with("220"));
    assert!(c.command("HELO old.client.test").starts_with("250"));
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
    let seen = backend.seen.lock().unwrap();
    let wire = String::from_utf8_lossy(&seen.connections[0]).into_owned();
    let lines: Vec<&str> = wire.lines().collect();
    assert!(lines[1].contains("PROTO=SMTP") && lines[1].contains("HELO=old.client.test"));
    assert_eq!(lines[2], "HELO old.client.test");
}

#[test]
fn xclient_required_but_not_offered_refuses_with_451_not_a_silent_relay() {
    let backend = backend(Script::default());
    let front = front(backend.addr, Identity::Xclient);
    let mut c = client(&front);
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .starts_with("451 4.4.1")
    );
}

#[test]
fn proxy_v2_header_names_the_client_before_the_greeting() {
    let backend = backend(Script {
        expect_proxy: true,
        ..Script::default()
    });
    let front = front(backend.addr, Identity::ProxyV2);
    let mut c = client(&front);
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
    let seen = backend.seen.lock().unwrap();
    let header = &seen.connections[0][..28];
    assert_eq!(&header[..13], b"\r\n\r\n\0\r\nQUIT\n\x21");
    assert_eq!(&header[16..20], &[127, 0, 0, 1], "the client's address");
    assert_eq!(
        &header[20..24],
        &[127, 0, 0, 1],
        "the address it connected to"
    );
    assert_eq!(
        &header[26..28],
        &front.addr.port().to_be_bytes(),
        "the front's port"
    );
    // The backend takes the connection for the client's: it gets the client's name too.
    let wire = String::from_utf8_lossy(&seen.connections[0][28..]).into_owned();
    assert_eq!(wire.lines().next(), Some("EHLO client.test"));
}

#[test]
fn unreachable_backend_gives_451_4_4_1_and_the_session_goes_on() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let front = front(addr, Identity::None);
    let mut c = client(&front);
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .starts_with("451 4.4.1")
    );
    assert!(c.command("NOOP").starts_with("250"));
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .starts_with("451 4.4.1")
    );
}

#[test]
fn backend_closing_before_its_final_reply_gives_451_never_250() {
    let backend = backend(Script {
        close_at_end_of_data: true,
        ..Script::default()
    });
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    c.command("MAIL FROM:<a@client.test>");
    c.command("RCPT TO:<b@backend.test>");
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: lost?\r\n\r\nno\r\n");
    assert!(c.command(".").starts_with("451 4.4.2"));
    // The next transaction opens a new backend connection.
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
    assert_eq!(backend.seen.lock().unwrap().connections.len(), 2);
}

#[test]
fn malformed_backend_reply_gives_451() {
    let backend = backend(Script {
        garbage_at_mail: true,
        ..Script::default()
    });
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .starts_with("451 4.4.2")
    );
}

#[test]
fn a_second_reply_the_backend_was_not_asked_for_gives_451_not_a_shifted_verdict() {
    let backend = backend(Script {
        two_replies_to_mail: true,
        ..Script::default()
    });
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .starts_with("451 4.4.2")
    );
    assert!(c.command("RCPT TO:<b@backend.test>").starts_with("503"));
}

#[test]
fn client_vanishing_mid_message_sends_no_final_dot() {
    let backend = backend(Script::default());
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    c.command("MAIL FROM:<a@client.test>");
    c.command("RCPT TO:<b@backend.test>");
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: half\r\n\r\nhalf a message\r\n");
    drop(c);
    wait_for("the backend connection to close", || {
        backend.seen.lock().unwrap().closed == 1
    });
    let seen = backend.seen.lock().unwrap();
    assert!(seen.messages.is_empty(), "nothing delivered");
    assert!(!seen.connections[0].ends_with(b"\r\n.\r\n"));
}

#[test]
fn parameters_the_backend_does_not_offer_are_refused_with_their_codes() {
    let backend = backend(Script::default());
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    assert!(
        c.command("MAIL FROM:<a@client.test> SMTPUTF8")
            .starts_with("555 5.6.7")
    );
    assert!(
        c.command("MAIL FROM:<a@client.test> BODY=8BITMIME")
            .starts_with("555 5.6.3")
    );
    assert!(
        c.command("MAIL FROM:<a@client.test> RET=HDRS")
            .starts_with("555 5.5.4")
    );
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
}

#[test]
fn a_backend_that_never_greets_times_out_with_451_4_4_1_and_the_session_goes_on() {
    let backend = backend(Script {
        silent: true,
        ..Script::default()
    });
    let front = front_with_timeout(backend.addr, Identity::None, Duration::from_millis(300));
    let mut c = client(&front);
    let reply = c.command("MAIL FROM:<a@client.test>");
    assert!(reply.starts_with("451 4.4.1"), "{reply}");
    assert!(c.command("NOOP").starts_with("250"));
    // The front closed the silent connection when it gave up on it.
    wait_for("the front to close the silent backend connection", || {
        backend.seen.lock().unwrap().closed == 1
    });
}

#[test]
fn a_backend_closing_between_transactions_is_reopened_for_the_next_mail() {
    let backend = backend(Script {
        close_after_message: true,
        ..Script::default()
    });
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    for round in 0..2 {
        assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
        assert!(c.command("RCPT TO:<b@backend.test>").starts_with("250"));
        assert!(c.command("DATA").starts_with("354"));
        let reply = c.command(&format!("Subject: {round}\r\n\r\nbody\r\n."));
        assert!(reply.starts_with("250"), "round {round}: {reply}");
        // Let the backend's 421 and close arrive before the next MAIL.
        wait_for("the backend to close", || {
            backend.seen.lock().unwrap().closed == round + 1
        });
    }
    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 2);
    assert_eq!(seen.connections.len(), 2);
}

#[test]
fn a_backend_slower_than_the_client_holds_the_client_back_and_loses_nothing() {
    const BODY_MIB: usize = 64;
    let backend = backend(Script {
        stall_in_data: Some(Duration::from_millis(1500)),
        ..Script::default()
    });
    let mut session = SessionConfig::new("front.test");
    session.limits.message_size = 128 << 20;
    let front = front_with(
        backend.addr,
        Identity::None,
        Duration::from_secs(5),
        session,
    );
    let mut c = client(&front);
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
    assert!(c.command("RCPT TO:<b@backend.test>").starts_with("250"));
    assert!(c.command("DATA").starts_with("354"));
    // Lines of 1,000 octets with their CRLF (RFC 5321 §4.5.3.1.6), 64 a chunk.
    let line = format!("{}\r\n", "x".repeat(998));
    let chunk = line.repeat(64);
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    let chunk_len = chunk.len();
    let sender = thread::spawn(move || {
        for _ in 0..BODY_MIB * 16 {
            c.send(chunk.as_bytes());
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
        }
        let reply = c.command(".");
        (c, reply)
    });
    // While the backend reads nothing, the front stops reading the client once about 1 MiB
    // waits for the backend: what the client got written is that plus the socket buffers on
    // the way, not the whole message held in the front's memory.
    thread::sleep(Duration::from_millis(1000));
    let during_stall = written.load(std::sync::atomic::Ordering::Relaxed);
    let (_c, reply) = sender.join().unwrap();
    assert!(reply.starts_with("250"), "{reply}");
    let total = chunk_len * BODY_MIB * 16;
    assert!(
        during_stall < total / 2,
        "{during_stall} octets of {total} taken from the client while the backend read nothing"
    );
    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 1);
    let message = &seen.messages[0];
    // The front's Received: line, then the body as sent.
    assert!(message.ends_with(line.repeat(64 * 16 * BODY_MIB).as_bytes()));
    eprintln!("taken from the client during the backend's stall: {during_stall} octets");
}

#[test]
fn clients_abandoning_at_every_stage_leave_no_backend_connection_and_no_message() {
    let backend = backend(Script::default());
    let front = front(backend.addr, Identity::None);
    let steps: [&[&str]; 5] = [
        &[],
        &["MAIL FROM:<a@client.test>"],
        &["MAIL FROM:<a@client.test>", "RCPT TO:<b@backend.test>"],
        &[
            "MAIL FROM:<a@client.test>",
            "RCPT TO:<b@backend.test>",
            "DATA",
        ],
        &[
            "MAIL FROM:<a@client.test>",
            "RCPT TO:<b@backend.test>",
            "DATA",
            "Subject: cut off\r\n\r\nhalf a body",
        ],
    ];
    for commands in steps {
        let mut c = client(&front);
        for command in commands {
            if command.starts_with("Subject") {
                c.send(command.as_bytes());
            } else {
                let reply = c.command(command);
                assert!(
                    reply.starts_with('2') || reply.starts_with("354"),
                    "{reply}"
                );
            }
        }
        // The client vanishes: no QUIT, no final dot.
        drop(c);
    }
    // Every backend connection the front opened (one per client that reached MAIL) is
    // closed, and nothing was delivered.
    wait_for("the front to close every backend connection", || {
        let seen = backend.seen.lock().unwrap();
        seen.connections.len() == 4 && seen.closed == 4
    });
    assert!(backend.seen.lock().unwrap().messages.is_empty());
    // The front goes on serving.
    let mut c = client(&front);
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
    assert!(c.command("RCPT TO:<b@backend.test>").starts_with("250"));
    assert!(c.command("DATA").starts_with("354"));
    assert!(c.command("whole\r\n.").starts_with("250"));
    assert_eq!(backend.seen.lock().unwrap().messages.len(), 1);
}

/// A client's pipelined group: MAIL, two RCPTs and DATA in one write.
fn pipelined_group(c: &mut SmtpClient, from: &str) -> Vec<String> {
    c.send(
        format!(
            "MAIL FROM:<{from}>\r\nRCPT TO:<b@backend.test>\r\nRCPT TO:<nobody@backend.test>\r\nDATA\r\n"
        )
        .as_bytes(),
    );
    (0..4).map(|_| c.reply()).collect()
}

#[test]
fn a_pipelined_group_reaches_the_backend_as_one_group_rfc_2920() {
    // This backend answers nothing until it has read the group's DATA: a front that waits
    // for the MAIL's reply before sending the RCPT would get nothing (and time out with 451).
    let backend = backend(Script {
        answer_whole_groups: true,
        ..Script::default()
    });
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    let replies = pipelined_group(&mut c, "a@client.test");
    assert_eq!(
        replies,
        [
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "550 5.1.1 <nobody@backend.test>: Recipient address rejected\r\n",
            "354 Start mail input; end with <CRLF>.<CRLF>\r\n",
        ]
    );
    c.send(b"Subject: grouped\r\n\r\nbody\r\n");
    assert_eq!(c.command("."), "250 2.0.0 Ok: queued as BACKEND1\r\n");
    // The next transaction, in the same session and backend connection, groups too.
    let replies = pipelined_group(&mut c, "a@client.test");
    assert!(replies[3].starts_with("354"), "{replies:?}");
    c.send(b"Subject: second\r\n\r\nbody\r\n");
    assert!(c.command(".").starts_with("250"));
    assert!(c.command("QUIT").starts_with("221"));
    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 2);
    assert_eq!(seen.connections.len(), 1, "one backend connection");
}

#[test]
fn a_refused_mail_in_a_pipelined_group_gets_its_rcpts_and_data_answered_503() {
    let backend = backend(Script::default());
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    let replies = pipelined_group(&mut c, "refused@client.test");
    assert_eq!(
        replies[0],
        "550 5.7.1 <refused@client.test>: Sender address rejected\r\n"
    );
    // The session's own answers to commands without a transaction, as a server deciding one
    // command at a time gives them; the DATA is never started.
    for reply in &replies[1..] {
        assert!(reply.starts_with("503 5.5.1"), "{replies:?}");
    }
    // The session goes on: the next transaction is relayed and delivered.
    let replies = pipelined_group(&mut c, "a@client.test");
    assert!(replies[3].starts_with("354"), "{replies:?}");
    c.send(b"Subject: after the refusal\r\n\r\nbody\r\n");
    assert!(c.command(".").starts_with("250"));
    let seen = backend.seen.lock().unwrap();
    assert_eq!(
        seen.messages.len(),
        1,
        "only the accepted transaction's message"
    );
}

#[test]
fn a_backend_saying_354_when_every_rcpt_was_refused_gets_no_body_and_the_client_554() {
    // This backend says 354 even without recipients; the client's DATA was refused by the
    // session (RFC 2920 §3.1), so the backend's DATA must not be fed what comes next.
    let backend = backend(Script::default());
    let front = front(backend.addr, Identity::None);
    let mut c = client(&front);
    c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<nobody@backend.test>\r\nDATA\r\n");
    assert!(c.reply().starts_with("250"));
    assert!(c.reply().starts_with("550 5.1.1"));
    assert_eq!(c.reply(), "554 5.5.1 No valid recipients\r\n");
    wait_for("the backend connection to close", || {
        backend.seen.lock().unwrap().closed == 1
    });
    // The transaction stays open (RFC 5321: a refused DATA does not end it); after RSET the
    // client's next one goes over a new backend connection, cleanly.
    assert!(
        c.command("MAIL FROM:<a@client.test>")
            .starts_with("503 5.5.1")
    );
    assert!(c.command("RSET").starts_with("250"));
    assert!(c.command("MAIL FROM:<a@client.test>").starts_with("250"));
    assert!(c.command("RCPT TO:<b@backend.test>").starts_with("250"));
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: clean\r\n\r\nbody\r\n");
    assert!(c.command(".").starts_with("250"));
    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen.messages.len(), 1);
    let message = String::from_utf8_lossy(&seen.messages[0]);
    assert!(
        message.ends_with("Subject: clean\r\n\r\nbody\r\n"),
        "{message}"
    );
    assert!(
        !seen.connections[0].ends_with(b"\r\n.\r\n"),
        "no final dot on the first"
    );
}

#[test]
fn clients_vanishing_with_a_pipelined_group_outstanding_leave_no_backend_connection_and_no_message()
{
    // The backend answers a group only once it has read its DATA, so the decisions are still
    // with the front (read ahead, deferred) when each client goes.
    let backend = backend(Script {
        answer_whole_groups: true,
        ..Script::default()
    });
    let front = front(backend.addr, Identity::None);
    let groups: [&[u8]; 3] = [
        // Gone before any reply: MAIL, RCPT and DATA outstanding at once.
        b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@backend.test>\r\nDATA\r\n",
        // Gone with the group and the start of a body it never saw 354 for.
        b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@backend.test>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
        // Gone mid-group: the DATA never came.
        b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@backend.test>\r\nRCPT TO:<c@backe",
    ];
    for group in groups {
        let mut c = client(&front);
        c.send(group);
        drop(c);
    }
    wait_for("the front to close every backend connection", || {
        let seen = backend.seen.lock().unwrap();
        seen.connections.len() == 3 && seen.closed == 3
    });
    assert!(backend.seen.lock().unwrap().messages.is_empty());
    // The front goes on serving, pipelined groups included.
    let mut c = client(&front);
    let replies = pipelined_group(&mut c, "a@client.test");
    assert!(replies[3].starts_with("354"), "{replies:?}");
    assert!(c.command("whole\r\n.").starts_with("250"));
    assert_eq!(backend.seen.lock().unwrap().messages.len(), 1);
}
