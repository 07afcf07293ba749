//! End-to-end tests: the `smtpsd` binary against clients nobody here wrote (Python `smtplib`,
//! `openssl s_client`, `lettre` over rustls) and against raw-socket attacks.
//!
//! Each test starts its own daemon in a temporary directory, on `127.0.0.1` port-0 listeners
//! (implicit TLS first, STARTTLS-required second), with a certificate made here for
//! `localhost` and `127.0.0.1`; a guard kills the daemon when the test ends, pass or fail.
//! Every blocking step has a deadline: child processes are waited for with one, Python
//! sockets time out after 10 s. The Python scenarios are in `tests/clients/smtp_clients.py`;
//! they check the wire, and the tests here check the maildir and the daemon's log.
#![allow(missing_docs)]

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use common::{
    ChildGuard, ClientRun, Daemon, SMTPSD, TempDir, TestCert, parse_values, read_all, run,
    spawn_smtpsd, wait_until,
};

/// Deadline for one client run (a Python scenario, an `openssl` dialogue).
const CLIENT_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline for one reply line from an interactive client, or for a log line.
const STEP_DEADLINE: Duration = Duration::from_secs(10);
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
/// Listener indexes in [`Daemon::addrs`] for the default [`Setup`].
const IMPLICIT: usize = 0;
const STARTTLS: usize = 1;

// --- smtplib --------------------------------------------------------------------------------

#[test]
fn smtplib_smtp_ssl_delivers_a_message_over_implicit_tls() {
    let daemon = Setup::new().start();
    let message = b"From: Sender <sender@client.test>\r\nTo: box@mx.test\r\n\
                    Subject: implicit TLS\r\nMessage-ID: <implicit@client.test>\r\n\r\n\
                    Hello over implicit TLS.\r\n.leading dot\r\n"
        .to_vec();
    let (run, expected) = daemon.smtplib_send(IMPLICIT, &["--tls", "implicit"], &message);
    assert!(run.value("data_reply").starts_with("250 2.0.0 queued as "));

    let [stored] = daemon.messages().try_into().expect("one message stored");
    let (received, body) = split_received(&stored);
    assert_bytes_eq(body, &expected);
    assert!(received.contains("with ESMTPS"), "{received}");
    assert!(received.contains("TLS"), "{received}");
    assert!(received.contains("by mx.test"), "{received}");
}

#[test]
fn smtplib_starttls_delivers_a_message_after_the_upgrade() {
    let daemon = Setup::new().start();
    let message = b"Subject: STARTTLS\r\nTo: box@mx.test\r\n\r\nHello after STARTTLS.\r\n".to_vec();
    let (run, expected) = daemon.smtplib_send(STARTTLS, &["--tls", "starttls"], &message);
    assert!(run.value("data_reply").starts_with("250 "));

    let [stored] = daemon.messages().try_into().expect("one message stored");
    let (received, body) = split_received(&stored);
    assert_bytes_eq(body, &expected);
    assert!(received.contains("with ESMTPS"), "{received}");
}

#[test]
fn smtplib_login_over_tls_accepts_the_password_and_refuses_a_wrong_one_with_535() {
    let daemon = Setup::new().users().start();
    for (index, tls) in [(IMPLICIT, "implicit"), (STARTTLS, "starttls")] {
        let run = daemon.python("auth", index, &["--tls", tls, "--login", &login()]);
        for mechanism in ["PLAIN", "LOGIN"] {
            let bad = run.value(&format!("{mechanism}_bad"));
            assert!(bad.starts_with("535 5.7.8"), "{tls} {mechanism}: {bad}");
            let good = run.value(&format!("{mechanism}_good"));
            assert!(good.starts_with("235 2.7.0"), "{tls} {mechanism}: {good}");
        }
    }
}

#[test]
fn smtplib_send_message_after_login_is_stored_with_esmtpsa() {
    let daemon = Setup::new().users().start();
    let message = b"Subject: authenticated\r\n\r\nsent after AUTH LOGIN\r\n".to_vec();
    daemon.smtplib_send(
        STARTTLS,
        &[
            "--tls",
            "starttls",
            "--login",
            &login(),
            "--mechanism",
            "LOGIN",
        ],
        &message,
    );
    let [stored] = daemon.messages().try_into().expect("one message stored");
    let (received, _) = split_received(&stored);
    assert!(received.contains("with ESMTPSA"), "{received}");
}

#[test]
fn smtplib_eight_bit_body_is_delivered_byte_exact() {
    let daemon = Setup::new().start();
    let mut message = "From: sender@client.test\r\nTo: box@mx.test\r\nSubject: 8bit\r\n\
                       MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                       Content-Transfer-Encoding: 8bit\r\n\r\n\
                       Grüße, naïve café, 日本語, emoji 📨\r\n"
        .as_bytes()
        .to_vec();
    // Every octet from 0x80 to 0xFF, not valid UTF-8, in lines of 32.
    for row in (0x80..=0xFFu8).collect::<Vec<_>>().chunks(32) {
        message.extend_from_slice(row);
        message.extend_from_slice(b"\r\n");
    }
    let (_, expected) = daemon.smtplib_send(
        IMPLICIT,
        &[
            "--tls",
            "implicit",
            "--raw",
            "--mail-option",
            "BODY=8BITMIME",
        ],
        &message,
    );
    assert_eq!(expected, message, "smtplib sent the message as given");
    let [stored] = daemon.messages().try_into().expect("one message stored");
    assert_bytes_eq(split_received(&stored).1, &expected);
}

#[test]
fn smtplib_one_mebibyte_body_with_dot_leading_lines_is_delivered_byte_exact() {
    let daemon = Setup::new().start();
    let mut message = b"Subject: one mebibyte\r\nTo: box@mx.test\r\n\r\n".to_vec();
    let mut line = 0u32;
    while message.len() < 1024 * 1024 {
        // Every seventh line starts with one or two dots; one line is a lone dot.
        let text = match line % 7 {
            0 => format!(".{line} dot-leading line\r\n"),
            3 => format!("..{line} two dots\r\n"),
            5 if line == 5 => ".\r\n".to_owned(),
            _ => format!("{line:08} {}\r\n", "abcdefghij".repeat(7)),
        };
        message.extend_from_slice(text.as_bytes());
        line += 1;
    }
    let (_, expected) = daemon.smtplib_send(IMPLICIT, &["--tls", "implicit", "--raw"], &message);
    assert_eq!(expected, message, "smtplib sent the message as given");
    let [stored] = daemon.messages().try_into().expect("one message stored");
    assert_bytes_eq(split_received(&stored).1, &expected);
}

#[test]
fn pipelined_commands_are_answered_in_order_and_delivered() {
    let daemon = Setup::new().start();
    let run = daemon.python("pipeline", IMPLICIT, &[]);
    assert!(run.value("data_reply").starts_with("250 "));
    assert_eq!(run.value("closed"), "True", "the server closes after QUIT");
    let [stored] = daemon.messages().try_into().expect("one message stored");
    assert_bytes_eq(
        split_received(&stored).1,
        b"Subject: pipelined\r\n\r\npipelined body\r\n",
    );
}

// --- openssl s_client -----------------------------------------------------------------------

#[test]
fn openssl_s_client_implicit_tls_dialogue_delivers() {
    let daemon = Setup::new().start();
    let mut client = daemon.s_client(IMPLICIT, &[]);
    client.expect(220, "greeting");
    openssl_dialogue(&mut client, "s_client implicit");
    let [stored] = daemon.messages().try_into().expect("one message stored");
    assert_bytes_eq(
        split_received(&stored).1,
        b"Subject: s_client implicit\r\n\r\nhello from openssl\r\n.dot line\r\n",
    );
}

#[test]
fn openssl_s_client_starttls_dialogue_delivers() {
    let daemon = Setup::new().start();
    // `-starttls smtp` reads the greeting, says EHLO and STARTTLS itself, then hands over.
    let mut client = daemon.s_client(STARTTLS, &["-starttls", "smtp"]);
    openssl_dialogue(&mut client, "s_client starttls");
    let [stored] = daemon.messages().try_into().expect("one message stored");
    let (received, body) = split_received(&stored);
    assert!(received.contains("with ESMTPS"), "{received}");
    assert_bytes_eq(
        body,
        b"Subject: s_client starttls\r\n\r\nhello from openssl\r\n.dot line\r\n",
    );
}

fn openssl_dialogue(client: &mut Interactive, subject: &str) {
    client.send("EHLO s-client.test");
    let ehlo = client.expect(250, "EHLO");
    assert!(
        !ehlo.iter().any(|l| l.contains("STARTTLS")),
        "STARTTLS is not offered inside TLS: {ehlo:?}"
    );
    client.send("MAIL FROM:<openssl@client.test>");
    client.expect(250, "MAIL");
    client.send("RCPT TO:<box@mx.test>");
    client.expect(250, "RCPT");
    client.send("DATA");
    client.expect(354, "DATA");
    client.send(&format!("Subject: {subject}"));
    client.send("");
    client.send("hello from openssl");
    client.send("..dot line");
    client.send(".");
    let done = client.expect(250, "end of data");
    assert!(done[0].contains("queued as"), "{done:?}");
    client.send("QUIT");
    client.expect(221, "QUIT");
    client.finish();
}

// --- lettre ---------------------------------------------------------------------------------

#[test]
fn lettre_sends_with_credentials_over_implicit_tls() {
    let daemon = Setup::new().users().start();
    let tls = Tls::Wrapper(daemon.lettre_tls());
    let email = lettre_email("lettre over implicit TLS");
    daemon.lettre_send(IMPLICIT, tls, &email);
    let [stored] = daemon.messages().try_into().expect("one message stored");
    let (received, body) = split_received(&stored);
    assert!(received.contains("with ESMTPSA"), "{received}");
    assert_bytes_eq(body, &lettre_transmitted(&email));
}

#[test]
fn lettre_sends_with_credentials_over_starttls() {
    let daemon = Setup::new().users().start();
    let tls = Tls::Required(daemon.lettre_tls());
    let email = lettre_email("lettre over STARTTLS");
    daemon.lettre_send(STARTTLS, tls, &email);
    let [stored] = daemon.messages().try_into().expect("one message stored");
    let (received, body) = split_received(&stored);
    assert!(received.contains("with ESMTPSA"), "{received}");
    assert_bytes_eq(body, &lettre_transmitted(&email));
}

/// The message lettre transmits: it always ends the data with `\r\n.\r\n`, so a message that
/// already ends in CRLF gains an empty last line.
fn lettre_transmitted(email: &Message) -> Vec<u8> {
    [email.formatted().as_slice(), b"\r\n"].concat()
}

fn lettre_email(subject: &str) -> Message {
    Message::builder()
        .from("Alice <alice@client.test>".parse().expect("mailbox"))
        .to("Box <box@mx.test>".parse().expect("mailbox"))
        .subject(subject)
        .body(String::from(
            "Hello from lettre.\r\n.A dot-leading line.\r\n",
        ))
        .expect("message")
}

// --- load and failure -----------------------------------------------------------------------

#[test]
fn two_hundred_concurrent_clients_each_deliver_exactly_once() {
    const CLIENTS: usize = 200;
    let daemon = Setup::new()
        .args(&["--max-connections-per-ip", "1000"])
        .start();
    let run = daemon.python("concurrent", IMPLICIT, &["--count", &CLIENTS.to_string()]);
    assert_eq!(run.value("sent"), CLIENTS.to_string());

    let mut seen = vec![0u32; CLIENTS];
    for message in daemon.messages() {
        let text = String::from_utf8_lossy(split_received(&message).1).into_owned();
        let index: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Client: "))
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or_else(|| panic!("no X-Client header in {text:?}"));
        seen[index] += 1;
    }
    let wrong: Vec<_> = seen.iter().enumerate().filter(|(_, n)| **n != 1).collect();
    assert!(
        wrong.is_empty(),
        "clients not delivered exactly once: {wrong:?}"
    );
}

#[test]
fn client_vanishing_mid_data_leaves_no_file_and_the_server_keeps_serving() {
    let daemon = Setup::new().start();
    let run = daemon.python("vanish", IMPLICIT, &[]);
    assert_eq!(run.values["vanished"], "close");
    // The server notices the close and removes the temporary file.
    let cleaned = wait_until(STEP_DEADLINE, || daemon.maildir_files("tmp").is_empty());
    assert!(
        cleaned,
        "files left in tmp/: {:?}",
        daemon.maildir_files("tmp")
    );
    assert!(daemon.maildir_files("new").is_empty(), "nothing delivered");

    let message = b"Subject: after the vanishing\r\n\r\nstill serving\r\n".to_vec();
    daemon.smtplib_send(IMPLICIT, &["--tls", "implicit", "--raw"], &message);
    let [stored] = daemon
        .messages()
        .try_into()
        .expect("only the later message");
    assert_bytes_eq(split_received(&stored).1, &message);
}

#[test]
fn idle_client_gets_421_4_4_2_after_the_command_timeout_and_silent_handshake_is_dropped() {
    let daemon = Setup::new()
        .args(&["--timeout-command", "1", "--timeout-handshake", "1"])
        .start();
    // A client that never starts its TLS handshake is dropped too (no SMTP reply possible).
    let run = daemon.python("silent-handshake", IMPLICIT, &[]);
    assert_ne!(
        run.value("received"),
        "34",
        "no clear-text reply on the TLS port"
    );
    let elapsed: f64 = run.value("elapsed").parse().expect("seconds");
    assert!(
        elapsed < 5.0,
        "closed after {elapsed}s for a 1s handshake timeout"
    );

    for (index, tls) in [(IMPLICIT, "implicit"), (STARTTLS, "starttls")] {
        let run = daemon.python("idle", index, &["--tls", tls]);
        // Silent after the greeting: 421, without an enhanced code since there was no EHLO.
        let reply = run.value("greeting_reply");
        assert!(
            reply.starts_with("421 "),
            "{tls}, after the greeting: {reply}"
        );
        let reply = run.value("ehlo_reply");
        assert!(reply.starts_with("421 4.4.2"), "{tls}, after EHLO: {reply}");
        for after in ["greeting", "ehlo"] {
            assert_eq!(
                run.value(&format!("{after}_closed")),
                "True",
                "{tls} {after}"
            );
            let elapsed: f64 = run
                .value(&format!("{after}_elapsed"))
                .parse()
                .expect("seconds");
            assert!(
                elapsed < 5.0,
                "{tls}: 421 after {elapsed}s for a 1s timeout"
            );
        }
    }
}

#[test]
fn sigterm_lets_the_transaction_in_flight_finish_and_closes_idle_sessions_with_421() {
    let mut daemon = Setup::new().start();
    let mut client = Interactive::spawn(daemon.python_command("shutdown", IMPLICIT, &[]));
    assert_eq!(client.line(), "ready=1");
    daemon.signal(libc::SIGTERM);
    client.send("go");
    let outputs = client.finish_values();

    let idle = &outputs["idle_reply"];
    assert!(idle.starts_with("421 4.3.2"), "idle session: {idle}");
    assert_eq!(outputs["idle_closed"], "True");
    let busy = &outputs["busy_reply"];
    assert!(busy.starts_with("250 2.0.0 queued as"), "in flight: {busy}");
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("smtpsd still runs after SIGTERM; log:\n{}", daemon.log()));
    assert!(status.success(), "exit {status}; log:\n{}", daemon.log());

    let [stored] = daemon.messages().try_into().expect("the in-flight message");
    assert_bytes_eq(
        split_received(&stored).1,
        b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n",
    );
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_replacement_keeps_the_old_one() {
    let daemon = Setup::new().start();
    for (index, tls) in [(IMPLICIT, "implicit"), (STARTTLS, "starttls")] {
        assert_same_cert(&daemon.peer_certificate(index, tls), &daemon.cert, tls);
    }

    let renewed = TestCert::new("renewed");
    daemon.replace_certificate(&renewed.cert_pem, &renewed.key_pem);
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_log("certificates reloaded", 1),
        "no reload logged:\n{}",
        daemon.log()
    );
    for (index, tls) in [(IMPLICIT, "implicit"), (STARTTLS, "starttls")] {
        assert_same_cert(&daemon.peer_certificate(index, tls), &renewed, tls);
    }

    // A key that does not match the certificate: the reload fails, the renewed cert stays.
    let other = TestCert::new("mismatched");
    daemon.replace_certificate(&other.cert_pem, &renewed.key_pem);
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_log("certificate reload failed", 1),
        "no failed reload logged:\n{}",
        daemon.log()
    );
    // Then a file that is no certificate at all.
    daemon.replace_certificate("not a certificate\n", &renewed.key_pem);
    daemon.signal(libc::SIGHUP);
    assert!(
        daemon.wait_log("certificate reload failed", 2),
        "no second failed reload logged:\n{}",
        daemon.log()
    );
    for (index, tls) in [(IMPLICIT, "implicit"), (STARTTLS, "starttls")] {
        assert_same_cert(&daemon.peer_certificate(index, tls), &renewed, tls);
    }
    let message = b"Subject: after reloads\r\n\r\nstill serving\r\n".to_vec();
    let cafile = daemon.dir.path().join("renewed.pem");
    fs::write(&cafile, &renewed.cert_pem).expect("write CA file");
    let run = daemon.python_with_ca(
        "send",
        IMPLICIT,
        &cafile,
        &[
            "--tls",
            "implicit",
            "--raw",
            "--message-file",
            &daemon.write_file("message", &message),
            "--expect-out",
            &daemon.dir.path().join("expected").display().to_string(),
        ],
    );
    assert!(run.value("data_reply").starts_with("250 "));
}

// --- attacks --------------------------------------------------------------------------------

#[test]
fn command_pipelined_behind_starttls_is_not_executed() {
    let daemon = Setup::new().start();
    let run = daemon.python("starttls-injection", STARTTLS, &[]);
    // README: bytes pipelined after STARTTLS are discarded (CVE-2011-0411). The handshake
    // works, nothing answers the injection, and a MAIL inside TLS is the first one (250, not
    // 503 "nested MAIL"), which the client checked.
    assert_eq!(run.value("handshake"), "ok");
    assert_eq!(
        run.value("early"),
        "none",
        "an answer to the injected command"
    );
    assert!(
        !daemon.log().contains("evil@inject.test"),
        "the injected MAIL reached the session:\n{}",
        daemon.log()
    );
    assert!(daemon.messages().is_empty());
}

#[test]
fn lf_dot_lf_does_not_end_the_message_only_crlf_dot_crlf_does() {
    let daemon = Setup::new().start();
    let run = daemon.python("smuggle", IMPLICIT, &[]);
    assert!(run.value("data_reply").starts_with("250 "));
    let [stored] = daemon.messages().try_into().expect("exactly one message");
    let body = String::from_utf8_lossy(split_received(&stored).1).into_owned();
    assert!(body.starts_with("Subject: outer\r\n"), "{body:?}");
    for smuggled in [
        "MAIL FROM:<smuggled@evil.test>",
        "RCPT TO:<victim@mx.test>",
        "Subject: smuggled",
        "still the outer message",
    ] {
        assert!(
            body.contains(smuggled),
            "{smuggled:?} missing from {body:?}"
        );
    }
    assert!(body.ends_with("last line\r\n"), "{body:?}");
    assert!(
        !daemon.log().contains("smuggled@evil.test"),
        "the smuggled MAIL reached the session:\n{}",
        daemon.log()
    );
}

#[test]
fn auth_before_tls_on_the_starttls_port_is_refused() {
    let daemon = Setup::new().users().start();
    let run = daemon.python("plaintext-auth", STARTTLS, &[]);
    assert_eq!(
        run.value("auth_advertised"),
        "[]",
        "AUTH offered in plaintext"
    );
    for mechanism in ["PLAIN", "LOGIN"] {
        let reply = run.value(mechanism);
        assert!(
            reply.starts_with("538") || reply.starts_with("503") || reply.starts_with("530"),
            "AUTH {mechanism} in plaintext: {reply}"
        );
    }
}

#[test]
fn hundred_kilobyte_command_line_gets_500_and_the_session_continues() {
    let daemon = Setup::new().start();
    let run = daemon.python("long-line", IMPLICIT, &[]);
    assert!(run.value("long_reply").starts_with("500"));
    assert_eq!(daemon.messages().len(), 1);
}

#[test]
fn recipients_past_one_hundred_get_452_4_5_3() {
    let daemon = Setup::new().start();
    let run = daemon.python("many-rcpts", IMPLICIT, &[]);
    assert_eq!(run.value("accepted"), "100");
    assert_eq!(run.value("refused"), "900");
    assert!(run.value("first_refusal").starts_with("452 4.5.3"));
    assert_eq!(run.value("refusals_alike"), "True");
    assert!(run.value("data_reply").starts_with("250 "));
    assert_eq!(daemon.messages().len(), 1);
}

#[test]
fn client_dripping_a_byte_every_50_ms_is_served_and_others_meanwhile() {
    let daemon = Setup::new().start();
    let run = daemon.python("drip", IMPLICIT, &[]);
    assert!(run.value("data_reply").starts_with("250 "));
    assert_eq!(run.value("others_done"), "3");
    assert_eq!(
        run.value("others_before_drip_end"),
        "3",
        "others waited for the drip (it took {}s)",
        run.value("drip_seconds")
    );
    assert_eq!(daemon.messages().len(), 4);
}

#[test]
fn oversized_message_gets_552_and_leaves_no_file() {
    let daemon = Setup::new().args(&["--max-message-size", "64K"]).start();
    let run = daemon.python("oversized", IMPLICIT, &[]);
    assert_eq!(run.value("size_advertised"), "SIZE 65536");
    assert!(
        run.value("declared").starts_with("552 5.3.4"),
        "{}",
        run.value("declared")
    );
    assert!(
        run.value("sent").starts_with("552 5.3.4"),
        "{}",
        run.value("sent")
    );
    assert!(daemon.messages().is_empty());
    let cleaned = wait_until(STEP_DEADLINE, || daemon.maildir_files("tmp").is_empty());
    assert!(cleaned, "left in tmp/: {:?}", daemon.maildir_files("tmp"));
}

#[test]
fn connections_over_the_per_ip_limit_get_421_4_7_0() {
    let daemon = Setup::new()
        .args(&["--max-connections-per-ip", "5"])
        .start();
    let run = daemon.python("connection-limit", STARTTLS, &["--count", "5"]);
    let over = run.value("over_limit");
    assert!(over.starts_with("421 4.7.0"), "{over}");
    assert_eq!(run.value("over_limit_closed"), "True");
    assert!(run.value("after_one_left").starts_with("220 "));
}

#[test]
fn sni_chooses_the_certificate_named_by_its_common_name() {
    let daemon = Setup::new()
        .sni_cert(TestCert::for_names("other.test", &["other.test"]))
        .start();
    let seen = |sni| daemon.peer_certificate_for(IMPLICIT, "implicit", sni);
    assert_same_cert(&seen("other.test"), &daemon.sni[0], "SNI other.test");
    assert_same_cert(&seen("localhost"), &daemon.cert, "SNI localhost");
    assert_same_cert(&seen("unknown.test"), &daemon.cert, "unknown SNI");
}

#[test]
fn sni_chooses_the_certificate_by_any_of_its_subject_alternative_names() {
    let daemon = Setup::new()
        .sni_cert(TestCert::for_names(
            "mail.other.test",
            &["mail.other.test", "smtp.other.test"],
        ))
        .start();
    for sni in ["mail.other.test", "smtp.other.test"] {
        let seen = daemon.peer_certificate_for(IMPLICIT, "implicit", sni);
        assert_same_cert(&seen, &daemon.sni[0], sni);
    }
}

#[test]
fn openssl_client_resumes_with_the_session_ticket_rfc8446_2_2() {
    let daemon = Setup::new().start();
    let run = daemon.python("resumption", IMPLICIT, &[]);
    assert_eq!(run.value("ticket"), "True", "no ticket:\n{}", run.stdout);
    assert_eq!(run.value("reused"), "True", "not resumed:\n{}", run.stdout);
}

#[test]
fn no_resumption_sends_no_ticket_and_every_handshake_is_full() {
    let daemon = Setup::new().args(&["--no-resumption"]).start();
    let run = daemon.python("resumption", IMPLICIT, &[]);
    assert_eq!(
        run.value("ticket"),
        "False",
        "a ticket was sent:\n{}",
        run.stdout
    );
    assert_eq!(run.value("reused"), "False", "resumed:\n{}", run.stdout);
}

#[test]
fn auth_plain_for_another_authorization_identity_is_refused() {
    let daemon = Setup::new().users().start();
    // RFC 4616 §2: the server must fail unless authcid may act as authzid; smtpsd has no
    // such rules, so only an empty authzid or authzid = authcid can be accepted.
    let run = daemon.python(
        "auth-as",
        IMPLICIT,
        &["--login", &login(), "--authzid", "bob"],
    );
    let reply = run.value("reply");
    assert!(
        reply.starts_with("535"),
        "AUTH PLAIN bob\\0{USER}\\0...: {reply}"
    );
}

#[test]
fn two_port_zero_listeners_each_get_their_own_port() {
    let mut setup = Setup::new();
    setup.all_port_zero = true;
    let daemon = setup.start();
    assert_ne!(daemon.addrs[IMPLICIT], daemon.addrs[STARTTLS]);
    daemon.python("pipeline", IMPLICIT, &[]);
    let run = daemon.python("plaintext-auth", STARTTLS, &[]);
    assert_eq!(run.value("auth_advertised"), "[]");
}

// --- start-up errors ------------------------------------------------------------------------

#[test]
fn missing_certificate_file_is_named_at_start_up() {
    let dir = TempDir::new("missing-cert");
    let missing = dir.path().join("no-such-cert.pem");
    let key = dir.path().join("key.pem");
    fs::write(&key, TestCert::new("x").key_pem).expect("write key");
    let (status, stderr) = start_failure(&dir, &missing, &key, "127.0.0.1:0");
    assert!(!status.success());
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[test]
fn key_that_does_not_match_the_certificate_is_named_at_start_up() {
    let dir = TempDir::new("mismatch");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("other-key.pem");
    fs::write(&cert, TestCert::new("one").cert_pem).expect("write cert");
    fs::write(&key, TestCert::new("two").key_pem).expect("write key");
    let (status, stderr) = start_failure(&dir, &cert, &key, "127.0.0.1:0");
    assert!(!status.success());
    assert!(
        stderr.contains(&key.display().to_string()) || stderr.contains(&cert.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn port_in_use_is_named_at_start_up() {
    let dir = TempDir::new("port-in-use");
    let cert = TestCert::new("x");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    fs::write(&cert_path, &cert.cert_pem).expect("write cert");
    fs::write(&key_path, &cert.key_pem).expect("write key");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let (status, stderr) = start_failure(&dir, &cert_path, &key_path, &addr);
    assert!(!status.success());
    assert!(stderr.contains(&addr), "{stderr}");
}

/// A bound, not listening, SO_REUSEPORT socket on a free `127.0.0.1` port: smtpsd (which sets
/// SO_REUSEPORT too) can bind the port while it is held, and no one else can take it.
fn reserve_port() -> socket2::Socket {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&any.into()).expect("bind a placeholder");
    socket
}

/// Runs smtpsd with one implicit-TLS listener on `addr`, expecting it to exit by itself.
fn start_failure(dir: &TempDir, cert: &Path, key: &Path, addr: &str) -> (ExitStatus, String) {
    let mut command = Command::new(SMTPSD);
    command
        .args(["--listen", &format!("{addr}=implicit-tls")])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--maildir")
        .arg(dir.path().join("mail"))
        .args(["--hostname", "mx.test"]);
    let output = run(command, None, STEP_DEADLINE);
    (output.status, output.stderr)
}

// --- behind a load balancer (PROXY protocol) -----------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// smtplib through a pretend balancer: each connection starts with a PROXY header naming
/// another client, and that client is what the daemon records, in `Received:` and its log.
#[test]
fn proxy_listener_records_the_client_named_by_the_header_in_received() {
    let daemon = Setup::new()
        .listeners(&["implicit-tls+proxy", "starttls-required+proxy"])
        .args(&["--proxy-trusted", "127.0.0.0/8"])
        .start();
    let v2 = smtps_testkit::proxy_v2(
        "203.0.113.9:4711".parse().expect("address"),
        "198.51.100.1:465".parse().expect("address"),
        &[(0x02, b"mx.test")],
    );
    let message = b"Subject: via a balancer\r\n\r\nproxied over implicit TLS\r\n".to_vec();
    daemon.smtplib_send(
        IMPLICIT,
        &["--tls", "implicit", "--proxy-header", &hex(&v2)],
        &message,
    );
    let v1 = smtps_testkit::proxy_v1(
        "[2001:db8::9]:4712".parse().expect("address"),
        "[2001:db8::1]:587".parse().expect("address"),
    );
    let message = b"Subject: via a balancer\r\n\r\nproxied over STARTTLS\r\n".to_vec();
    daemon.smtplib_send(
        STARTTLS,
        &["--tls", "starttls", "--proxy-header", &hex(&v1)],
        &message,
    );
    let mut received: Vec<String> = daemon
        .messages()
        .iter()
        .map(|stored| split_received(stored).0)
        .collect();
    received.sort();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received[0].contains("([203.0.113.9])"), "{}", received[0]);
    assert!(
        received[1].contains("([IPv6:2001:db8::9])"),
        "{}",
        received[1]
    );
    // The client's HELO may say anything; the address in parentheses is what we saw.
    assert!(
        received.iter().all(|r| !r.contains("([127.0.0.1])")),
        "{received:?}"
    );
    assert!(daemon.wait_log("event=proxy client=203.0.113.9:4711", 1));
    assert!(daemon.wait_log("event=proxy client=[2001:db8::9]:4712", 1));
}

/// A `+proxy` listener serves nobody without a header, and a bad header gets no banner; the
/// daemon logs why.
#[test]
fn proxy_listener_closes_without_a_banner_on_a_bad_or_missing_header() {
    let daemon = Setup::new()
        .listeners(&["implicit-tls+proxy", "starttls-required+proxy"])
        .args(&["--proxy-trusted", "127.0.0.1", "--log-level", "debug"])
        .start();
    daemon.python(
        "no-banner",
        STARTTLS,
        &["--proxy-header", &hex(b"PROXY TCP4 1.2.3.4\r\n")],
    );
    daemon.python(
        "no-banner",
        STARTTLS,
        &["--proxy-header", &hex(b"EHLO x\r\n")],
    );
    assert!(
        daemon.wait_log("reason=proxy_header", 2),
        "{}",
        daemon.log()
    );
    // A smtplib client that knows nothing of the balancer is not served either.
    let message = b"Subject: direct\r\n\r\nno header\r\n".to_vec();
    let message_file = daemon.write_file("direct", &message);
    let mut command = daemon.python_command(
        "send",
        STARTTLS,
        &[
            "--tls",
            "starttls",
            "--message-file",
            &message_file,
            "--expect-out",
            "/dev/null",
        ],
    );
    command.env("PYTHONUNBUFFERED", "1");
    let output = run(command, None, CLIENT_DEADLINE);
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("SMTPServerDisconnected"),
        "{}",
        output.stderr
    );
    assert!(daemon.messages().is_empty());
}

/// Two nodes sharing a `--ticket-keys` file: a session that began on one resumes on the other
/// (`openssl s_client -sess_out`, then `-sess_in`), TLS 1.3 and 1.2; a node with other keys
/// makes a full handshake.
#[test]
fn nodes_sharing_ticket_keys_resume_each_others_sessions() {
    let keys_dir = TempDir::new("ticket-keys");
    let keys = keys_dir.path().join("ticket-keys");
    let key_line = || {
        let output = run(
            {
                let mut c = Command::new(SMTPSD);
                c.arg("gen-ticket-key");
                c
            },
            None,
            STEP_DEADLINE,
        );
        assert!(output.status.success(), "{}", output.stderr);
        output.stdout
    };
    fs::write(&keys, key_line()).expect("write keys");
    let other_keys = keys_dir.path().join("other-keys");
    fs::write(&other_keys, key_line()).expect("write keys");
    let keys_arg = keys.display().to_string();
    let other_arg = other_keys.display().to_string();
    let first = Setup::new().args(&["--ticket-keys", &keys_arg]).start();
    // The same certificate on every node, as behind a balancer.
    let second = Setup::new()
        .certificate_of(&first)
        .args(&["--ticket-keys", &keys_arg])
        .start();
    let stranger = Setup::new()
        .certificate_of(&first)
        .args(&["--ticket-keys", &other_arg])
        .start();
    for version in ["-tls1_3", "-tls1_2"] {
        let session = keys_dir.path().join(format!("session{version}.pem"));
        let out = s_client(
            &first,
            &["-sess_out", &session.display().to_string(), version],
        );
        assert!(out.contains("New, TLSv1."), "{out}");
        let resumed = s_client(
            &second,
            &["-sess_in", &session.display().to_string(), version],
        );
        assert!(
            resumed.contains("Reused, TLSv1."),
            "{version} on the other node: {resumed}"
        );
        let full = s_client(
            &stranger,
            &["-sess_in", &session.display().to_string(), version],
        );
        assert!(
            full.contains("New, TLSv1."),
            "{version} with other keys: {full}"
        );
    }
}

/// `openssl s_client` to the implicit-TLS listener: reads the banner and the session ticket,
/// sends QUIT; returns its output.
fn s_client(daemon: &Daemon, args: &[&str]) -> String {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "(sleep 1; printf 'QUIT\\r\\n'; sleep 1) | openssl s_client -connect {} -CAfile {} -servername localhost -ign_eof {}",
        daemon.addrs[IMPLICIT],
        daemon.cafile.display(),
        args.join(" ")
    ));
    let output = run(command, None, CLIENT_DEADLINE);
    format!("{}{}", output.stdout, output.stderr)
}

// --- the daemon under test ------------------------------------------------------------------

/// How to start a daemon: the default listeners are implicit TLS and STARTTLS-required.
struct Setup {
    listeners: Vec<&'static str>,
    users: bool,
    args: Vec<String>,
    /// Every listener on `127.0.0.1:0`, as the daemon should allow.
    all_port_zero: bool,
    /// More `--cert/--key` pairs, served by SNI.
    sni: Vec<TestCert>,
    /// The default certificate; a new one when `None`.
    certificate: Option<TestCert>,
}

impl Setup {
    fn new() -> Self {
        Self {
            listeners: vec!["implicit-tls", "starttls-required"],
            users: false,
            args: Vec::new(),
            all_port_zero: false,
            sni: Vec::new(),
            certificate: None,
        }
    }

    fn listeners(mut self, listeners: &[&'static str]) -> Self {
        self.listeners = listeners.to_vec();
        self
    }

    /// Serve `other`'s certificate (as every node behind one balancer does).
    fn certificate_of(mut self, other: &Daemon) -> Self {
        self.certificate = Some(other.cert.clone());
        self
    }

    fn sni_cert(mut self, cert: TestCert) -> Self {
        self.sni.push(cert);
        self
    }

    /// With a `--users` file holding [`USER`] and [`PASSWORD`].
    fn users(mut self) -> Self {
        self.users = true;
        self
    }

    fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|&a| a.to_owned()));
        self
    }

    fn start(self) -> Daemon {
        let dir = TempDir::new("daemon");
        let cert = self
            .certificate
            .clone()
            .unwrap_or_else(|| TestCert::new("smtpsd e2e"));
        let (cert_path, key_path) = cert.write_pem_files(dir.path());
        let mut command = Command::new(SMTPSD);
        let mut reserved = Vec::new();
        for (index, mode) in self.listeners.iter().enumerate() {
            let addr = if index == 0 || self.all_port_zero {
                "127.0.0.1:0".parse().expect("address")
            } else {
                // smtpsd refuses a second `127.0.0.1:0` (see the ignored test
                // `two_port_zero_listeners_each_get_their_own_port`): hold a free port with
                // SO_REUSEPORT, not listening, until smtpsd has bound it beside us.
                let placeholder = reserve_port();
                let addr = placeholder
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .expect("placeholder address");
                reserved.push(placeholder);
                addr
            };
            command.args(["--listen", &format!("{addr}={mode}")]);
        }
        command
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .arg("--maildir")
            .arg(dir.path().join("mail"))
            .args(["--hostname", "mx.test", "--workers", "2"]);
        for (index, sni) in self.sni.iter().enumerate() {
            let cert_path = dir.path().join(format!("sni-{index}-cert.pem"));
            let key_path = dir.path().join(format!("sni-{index}-key.pem"));
            fs::write(&cert_path, &sni.cert_pem).expect("write SNI cert");
            fs::write(&key_path, &sni.key_pem).expect("write SNI key");
            command
                .arg("--cert")
                .arg(cert_path)
                .arg("--key")
                .arg(key_path);
        }
        if self.users {
            let users = dir.path().join("users");
            fs::write(&users, format!("{USER}:{}\n", password_hash())).expect("write users");
            command.arg("--users").arg(users);
        }
        command.args(&self.args);
        let (guard, log, addrs) = spawn_smtpsd(command, self.listeners.len(), STEP_DEADLINE);
        drop(reserved);
        Daemon {
            guard,
            log,
            addrs,
            step_deadline: STEP_DEADLINE,
            cert,
            sni: self.sni,
            cafile: cert_path.clone(),
            cert_path,
            key_path,
            dir: Arc::new(dir),
        }
    }
}

/// The Python clients of `tests/clients/smtp_clients.py`, `openssl s_client` and lettre.
impl Daemon {
    fn python_command(&self, scenario: &str, listener: usize, args: &[&str]) -> Command {
        self.python_command_with_ca(scenario, listener, &self.cert_path, args)
    }

    fn python_command_with_ca(
        &self,
        scenario: &str,
        listener: usize,
        cafile: &Path,
        args: &[&str],
    ) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtp_clients.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args(["--port", &self.addrs[listener].port().to_string()])
            .arg("--cafile")
            .arg(cafile)
            .args(args)
            .arg(scenario);
        command
    }

    /// Runs a Python scenario to its end; it must succeed.
    fn python(&self, scenario: &str, listener: usize, args: &[&str]) -> ClientRun {
        self.python_with_ca(scenario, listener, &self.cert_path, args)
    }

    fn python_with_ca(
        &self,
        scenario: &str,
        listener: usize,
        cafile: &Path,
        args: &[&str],
    ) -> ClientRun {
        let command = self.python_command_with_ca(scenario, listener, cafile, args);
        let output = run(command, None, CLIENT_DEADLINE);
        assert!(
            output.status.success(),
            "python scenario {scenario} failed ({})\nstdout:\n{}\nstderr:\n{}\nsmtpsd log:\n{}",
            output.status,
            output.stdout,
            output.stderr,
            self.log()
        );
        ClientRun::parse(&output.stdout)
    }

    /// Sends `message` with smtplib; returns the run and what smtplib transmitted after its
    /// own dot-stuffing is undone.
    fn smtplib_send(&self, listener: usize, args: &[&str], message: &[u8]) -> (ClientRun, Vec<u8>) {
        let message_file = self.write_file("message", message);
        let expected = self.dir.path().join("expected");
        let mut all = args.to_vec();
        let expected_arg = expected.display().to_string();
        all.extend([
            "--message-file",
            &message_file,
            "--expect-out",
            &expected_arg,
        ]);
        let run = self.python("send", listener, &all);
        let transmitted = fs::read(&expected).expect("read what smtplib sent");
        (run, transmitted)
    }

    /// The DER certificate a new connection is shown (Python `getpeercert(binary_form=True)`).
    fn peer_certificate(&self, listener: usize, tls: &str) -> Vec<u8> {
        self.peer_certificate_for(listener, tls, "localhost")
    }

    /// The same, asking for server name `sni`.
    fn peer_certificate_for(&self, listener: usize, tls: &str, sni: &str) -> Vec<u8> {
        let run = self.python("peer-cert", listener, &["--tls", tls, "--sni", sni]);
        hex_decode(run.value("der"))
    }

    fn s_client(&self, listener: usize, args: &[&str]) -> Interactive {
        let mut command = Command::new("openssl");
        command
            .args(["s_client", "-connect", &self.addrs[listener].to_string()])
            .args(["-quiet", "-crlf", "-verify_return_error"])
            .args(["-servername", "localhost", "-verify_hostname", "localhost"])
            .arg("-CAfile")
            .arg(&self.cert_path)
            .args(args);
        Interactive::spawn(command)
    }

    fn lettre_tls(&self) -> TlsParameters {
        let pem = self.cert.cert_pem.as_bytes();
        TlsParameters::builder("localhost".to_owned())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(pem).expect("PEM certificate"))
            .build_rustls()
            .expect("rustls parameters")
    }

    /// Sends with lettre's blocking transport, on a thread with a deadline.
    fn lettre_send(&self, listener: usize, tls: Tls, email: &Message) {
        let transport = SmtpTransport::builder_dangerous("127.0.0.1")
            .port(self.addrs[listener].port())
            .tls(tls)
            .credentials(Credentials::new(USER.to_owned(), PASSWORD.to_owned()))
            .timeout(Some(STEP_DEADLINE))
            .build();
        let email = email.clone();
        let response = with_deadline(CLIENT_DEADLINE, move || transport.send(&email))
            .unwrap_or_else(|e| panic!("lettre: {e}; smtpsd log:\n{}", self.log()));
        assert!(response.is_positive(), "{response:?}");
        let first = response.first_line().unwrap_or_default();
        assert!(first.starts_with("2.0.0 queued as"), "{first}");
    }
}

// --- clients and processes ------------------------------------------------------------------

/// A client driven line by line: standard input written, standard output read with deadlines.
struct Interactive {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    transcript: Vec<String>,
}

impl Interactive {
    fn spawn(mut command: Command) -> Self {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = ChildGuard::spawn(command);
        let stdin = guard.child.stdin.take();
        let stdout = guard.child.stdout.take().expect("stdout");
        let stderr = Some(read_all(guard.child.stderr.take().expect("stderr")));
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line);
                if sender.send(line.trim_end_matches('\r').to_owned()).is_err() {
                    break;
                }
            }
        });
        Self {
            guard,
            stdin,
            lines,
            stderr,
            transcript: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        self.transcript.push(format!("> {line}"));
        let stdin = self.stdin.as_mut().expect("stdin open");
        let written = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush());
        if let Err(e) = written {
            self.fail(&format!("writing {line:?}: {e}"));
        }
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(STEP_DEADLINE) {
            Ok(line) => {
                self.transcript.push(format!("< {line}"));
                line
            }
            Err(e) => self.fail(&format!("no line within {STEP_DEADLINE:?} ({e})")),
        }
    }

    /// Reads one SMTP reply (all its lines) and checks its code.
    fn expect(&mut self, code: u16, what: &str) -> Vec<String> {
        let mut lines = vec![self.line()];
        while lines
            .last()
            .is_some_and(|l| l.as_bytes().get(3) == Some(&b'-'))
        {
            lines.push(self.line());
        }
        if !lines[0].starts_with(&format!("{code} ")) && !lines[0].starts_with(&format!("{code}-"))
        {
            self.fail(&format!("{what}: expected {code}, got {lines:?}"));
        }
        lines
    }

    /// Closes standard input and waits for a successful exit.
    fn finish(&mut self) {
        self.stdin = None;
        match self.guard.wait_deadline(STEP_DEADLINE) {
            Some(status) if status.success() => {}
            Some(status) => self.fail(&format!("exited with {status}")),
            None => self.fail("did not exit"),
        }
    }

    /// [`Self::finish`], returning the `key=value` lines printed after the last one read.
    fn finish_values(mut self) -> HashMap<String, String> {
        self.stdin = None;
        let mut rest = String::new();
        let deadline = Instant::now() + CLIENT_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push(format!("< {line}"));
                    rest.push_str(&line);
                    rest.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => self.fail("no end of output"),
            }
        }
        self.finish();
        parse_values(&rest)
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.guard.child.kill();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        panic!(
            "{}: {why}\ntranscript:\n{}\nstderr:\n{stderr}",
            self.guard.what,
            self.transcript.join("\n")
        );
    }
}

/// Runs `f` on a thread; panics if it has not returned within `timeout`.
fn with_deadline<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let _ = sender.send(f());
    });
    receiver
        .recv_timeout(timeout)
        .unwrap_or_else(|e| panic!("no result within {timeout:?}: {e}"))
}

// --- users, messages, certificates ----------------------------------------------------------

/// [`PASSWORD`]'s hash, made once with `smtpsd hash-password`.
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut command = Command::new(SMTPSD);
        command.arg("hash-password");
        let output = run(
            command,
            Some(format!("{PASSWORD}\n").into_bytes()),
            STEP_DEADLINE,
        );
        assert!(output.status.success(), "{}", output.stderr);
        let hash = output.stdout.trim().to_owned();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        hash
    })
}

fn login() -> String {
    format!("{USER}:{PASSWORD}")
}

/// Splits a delivered file into its prepended `Received:` header (unfolded lines joined) and
/// the message as the client sent it.
fn split_received(stored: &[u8]) -> (String, &[u8]) {
    assert!(
        stored.starts_with(b"Received: "),
        "no Received: header first: {:?}",
        String::from_utf8_lossy(&stored[..stored.len().min(200)])
    );
    let mut end = 0;
    loop {
        let line_end = stored[end..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| end + p + 2)
            .expect("header line ends with CRLF");
        end = line_end;
        if !matches!(stored.get(end), Some(b' ' | b'\t')) {
            break;
        }
    }
    let header = String::from_utf8_lossy(&stored[..end]).into_owned();
    (header, &stored[end..])
}

/// Byte equality that reports the first difference instead of dumping a mebibyte.
fn assert_bytes_eq(actual: &[u8], expected: &[u8]) {
    if actual == expected {
        return;
    }
    let at = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    let around = |bytes: &[u8]| {
        let start = at.saturating_sub(40);
        String::from_utf8_lossy(&bytes[start..bytes.len().min(at + 40)]).into_owned()
    };
    panic!(
        "messages differ at byte {at} (lengths {} stored, {} sent)\nstored: {:?}\nsent:   {:?}",
        actual.len(),
        expected.len(),
        around(actual),
        around(expected)
    );
}

/// Checks that the DER `seen` on a connection is `expected`'s, without printing both in full.
fn assert_same_cert(seen: &[u8], expected: &TestCert, what: &str) {
    assert!(
        seen == expected.der,
        "{what}: expected the certificate {:?}, was shown another one ({} octets)",
        expected.common_name,
        seen.len()
    );
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}
