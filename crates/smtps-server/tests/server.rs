//! The event loop over real sockets on 127.0.0.1: implicit TLS, STARTTLS, deferred answers,
//! timers, limits, shutdown. Every blocking call has a timeout.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smtps_proto::{AbortReason, Reply, SessionConfig};
use smtps_server::{
    Answer, CloseReason, Context, Handler, ListenerConfig, Mode, ProxyPolicy, Responder,
    RunningServer, Server, ServerConfig, Timer, Untrusted,
};
use smtps_testkit::{
    IO_TIMEOUT, SmtpClient, acceptor, client_config, proxy_v1, proxy_v2, proxy_v2_local,
};
use smtps_tls::rustls::ClientConfig;

/// What the test host saw.
#[derive(Default)]
struct Log {
    messages: Vec<(String, Vec<String>, Vec<u8>)>,
    aborted: Vec<AbortReason>,
    closed: Vec<CloseReason>,
    tls_versions: Vec<String>,
    helos: Vec<(String, bool)>,
    /// Per connect: the client, the balancer, and the PROXY header's authority TLV.
    connects: Vec<(SocketAddr, Option<SocketAddr>, Option<String>)>,
}

/// A host that records everything; optionally defers RCPT and end-of-message answers to a
/// separate thread.
struct Recorder {
    log: Arc<Mutex<Log>>,
    defer_to: Option<mpsc::Sender<Responder>>,
}

#[derive(Default)]
struct Spool {
    body: Vec<u8>,
}

impl Handler for Recorder {
    type Session = Spool;

    fn connect(&self, cx: &mut Context<'_>) -> (Spool, Answer) {
        let info = cx.info();
        let authority = info
            .proxy
            .as_ref()
            .and_then(|header| header.tlvs().authority().map(str::to_owned));
        self.log
            .lock()
            .unwrap()
            .connects
            .push((info.peer, info.proxied_by, authority));
        if let Some(tls) = &cx.info().tls {
            self.log
                .lock()
                .unwrap()
                .tls_versions
                .push(tls.version_name().to_owned());
        }
        (Spool::default(), Answer::Accept)
    }

    fn helo(
        &self,
        _spool: &mut Spool,
        _cx: &mut Context<'_>,
        name: &smtps_proto::HeloName<'_>,
        extended: bool,
    ) -> Answer {
        self.log
            .lock()
            .unwrap()
            .helos
            .push((name.to_string(), extended));
        Answer::Accept
    }

    fn offers_auth(&self) -> bool {
        true
    }

    fn auth(
        &self,
        _spool: &mut Spool,
        _cx: &mut Context<'_>,
        credentials: &smtps_server::Credentials<'_>,
    ) -> Answer {
        if credentials.authentication_id == "alice" && credentials.password == "secret" {
            Answer::Accept
        } else {
            Answer::Reject(Reply::from_parts(535, Some("5.7.8"), "Bad credentials").unwrap())
        }
    }

    fn rcpt(
        &self,
        _spool: &mut Spool,
        cx: &mut Context<'_>,
        to: &smtps_proto::ForwardPath<'_>,
        _params: &smtps_proto::RcptParameters<'_>,
    ) -> Answer {
        if to.to_string().contains("nobody") {
            return Answer::Reject(Reply::from_parts(550, Some("5.1.1"), "No such user").unwrap());
        }
        match &self.defer_to {
            Some(sender) => {
                sender.send(cx.defer()).unwrap();
                Answer::Deferred
            }
            None => Answer::Accept,
        }
    }

    fn body_chunk(
        &self,
        spool: &mut Spool,
        _cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        spool.body.extend_from_slice(chunk);
        Ok(())
    }

    fn message_end(&self, spool: &mut Spool, cx: &mut Context<'_>, _size: u64) -> Answer {
        let info = cx.info();
        let entry = (
            info.mail_from.clone().unwrap_or_default(),
            info.recipients.clone(),
            std::mem::take(&mut spool.body),
        );
        self.log.lock().unwrap().messages.push(entry);
        match &self.defer_to {
            Some(sender) => {
                sender.send(cx.defer()).unwrap();
                Answer::Deferred
            }
            None => Answer::AcceptWith(Reply::from_parts(250, Some("2.0.0"), "queued").unwrap()),
        }
    }

    fn message_aborted(&self, spool: &mut Spool, _cx: &mut Context<'_>, reason: AbortReason) {
        spool.body.clear();
        self.log.lock().unwrap().aborted.push(reason);
    }

    fn disconnect(&self, _spool: Spool, _cx: &mut Context<'_>, reason: CloseReason) {
        self.log.lock().unwrap().closed.push(reason);
    }
}

struct Fixture {
    server: Option<RunningServer>,
    implicit: SocketAddr,
    starttls: SocketAddr,
    log: Arc<Mutex<Log>>,
    client_config: Arc<ClientConfig>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.handle().shutdown(Duration::ZERO);
            let _ = server.join();
        }
    }
}

fn start(
    configure: impl FnOnce(&mut ServerConfig),
    defer_to: Option<mpsc::Sender<Responder>>,
) -> Fixture {
    let mut config = ServerConfig::new(SessionConfig::new("mx.test"))
        .listener("127.0.0.1:0".parse().unwrap(), Mode::ImplicitTls)
        .listener("127.0.0.1:0".parse().unwrap(), Mode::StartTlsRequired)
        .tls(acceptor());
    config.workers = 2;
    configure(&mut config);
    let log = Arc::new(Mutex::new(Log::default()));
    let server = Server::bind(
        config,
        Recorder {
            log: Arc::clone(&log),
            defer_to,
        },
    )
    .unwrap();
    let addrs = server.local_addrs().to_vec();
    Fixture {
        server: Some(server.start().unwrap()),
        implicit: addrs[0],
        starttls: addrs[1],
        log,
        client_config: client_config(),
    }
}

fn send_message(client: &mut SmtpClient, from: &str, to: &str, body: &str) -> String {
    assert!(
        client
            .command(&format!("MAIL FROM:<{from}>"))
            .starts_with("250")
    );
    assert!(
        client
            .command(&format!("RCPT TO:<{to}>"))
            .starts_with("250")
    );
    assert!(client.command("DATA").starts_with("354"));
    client.send(body.as_bytes());
    client.command(".")
}

/// A client over implicit TLS that has sent DATA and got its 354.
fn client_in_data(fx: &Fixture) -> SmtpClient {
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    assert!(client.reply().starts_with("220"));
    client.command("EHLO busy.test");
    assert!(client.command("MAIL FROM:<a@x.test>").starts_with("250"));
    assert!(client.command("RCPT TO:<b@y.test>").starts_with("250"));
    assert!(client.command("DATA").starts_with("354"));
    client
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn message_over_implicit_tls_rfc8314() {
    let fx = start(|_| {}, None);
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    assert!(client.reply().starts_with("220 mx.test"));
    let ehlo = client.command("EHLO client.test");
    assert!(
        ehlo.contains("250-AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    let reply = send_message(
        &mut client,
        "a@x.test",
        "b@y.test",
        "Subject: t\r\n\r\nhello\r\n",
    );
    assert_eq!(reply, "250 2.0.0 queued\r\n");
    assert!(client.command("QUIT").starts_with("221"));
    assert!(client.closed());
    let log = fx.log.lock().unwrap();
    assert_eq!(log.messages.len(), 1);
    assert_eq!(log.messages[0].0, "a@x.test");
    assert_eq!(log.messages[0].1, vec!["b@y.test".to_owned()]);
    assert_eq!(log.messages[0].2, b"Subject: t\r\n\r\nhello\r\n");
    assert_eq!(log.tls_versions, vec!["TLSv1.3".to_owned()]);
    assert_eq!(log.helos, vec![("client.test".to_owned(), true)]);
}

#[test]
fn starttls_required_then_message_rfc3207() {
    let fx = start(|_| {}, None);
    let mut client = SmtpClient::connect(fx.starttls, &fx.client_config);
    assert!(client.reply().starts_with("220"));
    let ehlo = client.command("EHLO client.test");
    assert!(
        ehlo.contains("250-STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(
        client
            .command("MAIL FROM:<a@x.test>")
            .starts_with("530 5.7.0")
    );
    assert!(client.command("STARTTLS").starts_with("220 2.0.0"));
    client.upgrade();
    let ehlo = client.command("EHLO client.test");
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    let reply = send_message(&mut client, "a@x.test", "b@y.test", "hi\r\n");
    assert!(reply.starts_with("250"), "{reply}");
}

#[test]
fn starttls_injection_is_discarded_cve_2011_0411() {
    let fx = start(|_| {}, None);
    let mut client = SmtpClient::connect(fx.starttls, &fx.client_config);
    client.reply();
    client.command("EHLO attacker.test");
    // The injected commands travel in the same packet as STARTTLS, in plaintext.
    client.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n");
    assert!(client.reply().starts_with("220 2.0.0"));
    client.upgrade();
    // Had the injection been kept, this RCPT would be accepted in its transaction.
    assert!(
        client.command("RCPT TO:<b@y.test>").starts_with("503"),
        "injected MAIL was executed"
    );
    assert!(client.command("EHLO client.test").starts_with("250"));
    assert!(
        client
            .command("RCPT TO:<b@y.test>")
            .starts_with("503 5.5.1")
    );
}

#[test]
fn smuggling_lf_dot_lf_does_not_end_the_message() {
    let fx = start(|_| {}, None);
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    client.reply();
    client.command("EHLO c.test");
    assert!(client.command("MAIL FROM:<a@x.test>").starts_with("250"));
    assert!(client.command("RCPT TO:<b@y.test>").starts_with("250"));
    assert!(client.command("DATA").starts_with("354"));
    client.send(
        b"one\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
    );
    assert!(client.reply().starts_with("250"));
    let log = fx.log.lock().unwrap();
    assert_eq!(
        log.messages.len(),
        1,
        "exactly one message, the smuggled one is its content"
    );
    assert!(String::from_utf8_lossy(&log.messages[0].2).contains("MAIL FROM:<evil@x.test>"));
}

#[test]
fn deferred_answers_from_another_thread_keep_order() {
    let (sender, receiver) = mpsc::channel::<Responder>();
    let fx = start(|_| {}, Some(sender));
    // The host's "queue" thread: answers each deferred decision after a pause.
    let host = std::thread::spawn(move || {
        let mut answered = 0;
        while let Ok(responder) = receiver.recv_timeout(IO_TIMEOUT) {
            std::thread::sleep(Duration::from_millis(20));
            responder.accept_with(Reply::from_parts(250, Some("2.0.0"), "committed").unwrap());
            answered += 1;
            if answered == 3 {
                break;
            }
        }
        answered
    });
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    client.reply();
    client.command("EHLO c.test");
    client.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<nobody@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n");
    assert_eq!(client.reply(), "250 2.1.0 Sender OK\r\n");
    assert_eq!(client.reply(), "250 2.0.0 committed\r\n");
    assert_eq!(client.reply(), "550 5.1.1 No such user\r\n");
    assert_eq!(client.reply(), "250 2.0.0 committed\r\n");
    assert!(client.reply().starts_with("354"));
    client.send(b"body\r\n.\r\n");
    assert_eq!(client.reply(), "250 2.0.0 committed\r\n");
    assert_eq!(host.join().unwrap(), 3);
}

#[test]
fn dropped_responder_answers_451() {
    let (sender, receiver) = mpsc::channel::<Responder>();
    let fx = start(|_| {}, Some(sender));
    let host = std::thread::spawn(move || {
        let responder = receiver.recv_timeout(IO_TIMEOUT).unwrap();
        drop(responder);
    });
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    client.reply();
    client.command("EHLO c.test");
    client.command("MAIL FROM:<a@x.test>");
    assert!(
        client
            .command("RCPT TO:<b@y.test>")
            .starts_with("451 4.3.0")
    );
    host.join().unwrap();
}

#[test]
fn responder_is_closed_once_the_decision_timeout_answered_for_the_host() {
    let (sender, receiver) = mpsc::channel::<Responder>();
    let fx = start(
        |config| config.timeouts.decision = Duration::from_secs(1),
        Some(sender),
    );
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    client.reply();
    client.command("EHLO c.test");
    client.command("MAIL FROM:<a@x.test>");
    client.send(b"RCPT TO:<b@y.test>\r\n");
    let first = receiver.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(!first.is_closed(), "the decision is awaited");
    assert!(client.reply().starts_with("451 4.3.0"));
    assert!(first.is_closed(), "the server answered for the host");
    // The next decision of the same session gets a live responder; the stale one stays closed
    // and its answer reaches nobody.
    client.send(b"RCPT TO:<c@y.test>\r\n");
    let second = receiver.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(!second.is_closed());
    assert!(first.is_closed());
    first.reject(Reply::from_parts(550, Some("5.7.1"), "stale").unwrap());
    second.accept();
    assert!(
        client.reply().starts_with("250"),
        "the live answer is the one given"
    );
}

#[test]
fn command_timeout_answers_421_rfc5321_4_5_3_2() {
    let fx = start(|c| c.timeouts.command = Duration::from_millis(300), None);
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    client.reply();
    client.command("EHLO c.test");
    let reply = client.reply();
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(client.closed());
    wait_for("disconnect", || {
        fx.log
            .lock()
            .unwrap()
            .closed
            .contains(&CloseReason::Timeout(Timer::Command))
    });
}

#[test]
fn handshake_timeout_closes_a_stalled_client() {
    let fx = start(|c| c.timeouts.handshake = Duration::from_millis(300), None);
    // Connects but never sends a ClientHello.
    let mut client = SmtpClient::connect(fx.implicit, &fx.client_config);
    let started = Instant::now();
    assert!(client.closed());
    assert!(started.elapsed() < IO_TIMEOUT);
    // And the server still serves.
    let mut good = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    assert!(good.reply().starts_with("220"));
}

#[test]
fn client_vanishing_mid_data_delivers_nothing() {
    let fx = start(|_| {}, None);
    {
        let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
        client.reply();
        client.command("EHLO c.test");
        client.command("MAIL FROM:<a@x.test>");
        client.command("RCPT TO:<b@y.test>");
        client.command("DATA");
        client.send(b"partial body without end\r\n");
    }
    wait_for("abort", || {
        fx.log
            .lock()
            .unwrap()
            .aborted
            .contains(&AbortReason::ClientLeft)
    });
    assert!(fx.log.lock().unwrap().messages.is_empty());
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    assert!(
        client.reply().starts_with("220"),
        "the server goes on serving"
    );
}

#[test]
fn per_ip_limit_answers_421_4_7_0() {
    let fx = start(|c| c.limits.connections_per_ip = 2, None);
    let mut first = SmtpClient::connect(fx.starttls, &fx.client_config);
    let mut second = SmtpClient::connect(fx.starttls, &fx.client_config);
    assert!(first.reply().starts_with("220"));
    assert!(second.reply().starts_with("220"));
    let mut third = SmtpClient::connect(fx.starttls, &fx.client_config);
    let reply = third.reply();
    assert!(reply.starts_with("421 4.7.0"), "{reply:?}");
    assert!(third.closed());
    drop(first);
    wait_for("slot freed", || {
        let mut again = SmtpClient::connect(fx.starttls, &fx.client_config);
        again.reply().starts_with("220")
    });
}

#[test]
fn graceful_shutdown_finishes_transactions_and_closes_idle_sessions() {
    let mut fx = start(|_| {}, None);
    let mut idle = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    idle.reply();
    idle.command("EHLO idle.test");
    let mut busy = client_in_data(&fx);
    let server = fx.server.take().unwrap();
    server.handle().shutdown(Duration::from_secs(5));
    assert!(
        idle.reply().starts_with("421 4.3.2"),
        "idle session told to go"
    );
    assert!(idle.closed());
    busy.send(b"in flight\r\n.\r\n");
    assert!(
        busy.reply().starts_with("250"),
        "transaction in flight finishes"
    );
    assert!(
        busy.command("MAIL FROM:<a@x.test>")
            .starts_with("421 4.3.2")
    );
    server.join().unwrap();
    assert_eq!(fx.log.lock().unwrap().messages.len(), 1);
    assert!(
        TcpStream::connect_timeout(&fx.implicit, IO_TIMEOUT).is_err(),
        "listener closed"
    );
}

#[test]
fn shutdown_deadline_aborts_unfinished_messages() {
    let mut fx = start(|_| {}, None);
    let mut busy = client_in_data(&fx);
    busy.send(b"never finished\r\n");
    let server = fx.server.take().unwrap();
    server.handle().shutdown(Duration::from_millis(200));
    assert!(busy.reply().starts_with("421 4.3.2"));
    server.join().unwrap();
    let log = fx.log.lock().unwrap();
    assert!(log.messages.is_empty());
    assert!(log.aborted.contains(&AbortReason::Closed));
}

#[test]
fn plaintext_to_implicit_tls_port_is_refused_and_server_survives() {
    let fx = start(|_| {}, None);
    let mut client = SmtpClient::connect(fx.implicit, &fx.client_config);
    client.send(b"EHLO plaintext.test\r\n");
    assert!(client.closed());
    let mut good = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    assert!(good.reply().starts_with("220"));
}

#[test]
fn port_in_use_is_named_in_the_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = ServerConfig::new(SessionConfig::new("mx.test")).listener(addr, Mode::Plain);
    let log = Arc::new(Mutex::new(Log::default()));
    let error = Server::bind(
        config,
        Recorder {
            log,
            defer_to: None,
        },
    )
    .err()
    .unwrap();
    let text = error.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("another process"),
        "{text}"
    );
}

#[test]
fn a_port_another_server_listens_on_is_refused_unless_sharing_is_asked_for() {
    let bind = |addr: SocketAddr, share: bool| {
        let mut listener = ListenerConfig::new(addr, Mode::Plain);
        if share {
            listener = listener.share_port();
        }
        let config = ServerConfig::new(SessionConfig::new("mx.test")).add_listener(listener);
        Server::bind(
            config,
            Recorder {
                log: Arc::default(),
                defer_to: None,
            },
        )
    };
    // The first server's workers share their port among themselves (SO_REUSEPORT)...
    let first = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
    let addr = first.local_addrs()[0];
    // ...which must not let a second server join them unasked.
    let error = bind(addr, false).err().expect("a busy port must fail");
    assert!(
        error.to_string().contains(&addr.to_string())
            && error.to_string().contains("another process"),
        "{error}"
    );
    // Asked for (the zero-downtime upgrade), both listen on it.
    let second = bind(addr, true).expect("sharing asked for");
    assert_eq!(second.local_addrs()[0], addr);
}

#[test]
fn tls_listener_without_certificate_is_a_configuration_error() {
    let config = ServerConfig::new(SessionConfig::new("mx.test"))
        .listener("127.0.0.1:0".parse().unwrap(), Mode::ImplicitTls);
    let log = Arc::new(Mutex::new(Log::default()));
    let error = Server::bind(
        config,
        Recorder {
            log,
            defer_to: None,
        },
    )
    .err()
    .unwrap();
    assert!(
        error.to_string().contains("no certificate is configured"),
        "{error}"
    );
}

#[test]
fn client_that_never_reads_replies_is_not_read_either_write_backpressure() {
    let fx = start(|c| c.session.limits.junk_commands = u64::MAX, None);
    // Small client buffers, so that the test reaches the server's own limits quickly.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket
        .connect_timeout(&fx.starttls.into(), IO_TIMEOUT)
        .unwrap();
    let mut tcp: TcpStream = socket.into();
    tcp.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let batch = b"NOOP\r\n".repeat(10_000);
    let mut sent = 0usize;
    let limit = 64 << 20;
    let blocked = loop {
        match tcp.write(&batch) {
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break true;
            }
            Err(e) => panic!("unexpected write error after {sent} bytes: {e}"),
        }
        if sent >= limit {
            break false;
        }
    };
    assert!(
        blocked,
        "the server kept reading {sent} bytes while its replies were not read"
    );
}

#[test]
fn noop_flood_ends_at_the_junk_command_limit() {
    let fx = start(|c| c.session.limits.junk_commands = 5, None);
    let mut client = SmtpClient::connect_tls(fx.implicit, &fx.client_config);
    client.reply();
    client.command("EHLO c.test");
    for _ in 0..5 {
        assert!(client.command("NOOP").starts_with("250"));
    }
    // A message resets the count.
    assert!(send_message(&mut client, "a@x.test", "b@y.test", "hi\r\n").starts_with("250"));
    for _ in 0..5 {
        assert!(client.command("RSET").starts_with("250"));
    }
    let reply = client.command("NOOP");
    assert!(reply.contains("421 4.7.0"), "{reply}");
    assert!(client.closed());
}

#[test]
fn stalled_starttls_handshake_times_out() {
    let fx = start(|c| c.timeouts.handshake = Duration::from_millis(300), None);
    let mut client = SmtpClient::connect(fx.starttls, &fx.client_config);
    client.reply();
    client.command("EHLO c.test");
    assert!(client.command("STARTTLS").starts_with("220"));
    // No ClientHello follows.
    let started = Instant::now();
    assert!(client.closed());
    assert!(started.elapsed() < IO_TIMEOUT);
    wait_for("timeout", || {
        fx.log
            .lock()
            .unwrap()
            .closed
            .contains(&CloseReason::Timeout(Timer::Handshake))
    });
}

#[test]
fn starttls_behind_a_backlog_of_unread_replies_never_loses_or_reorders_them() {
    let fx = start(|c| c.session.limits.junk_commands = u64::MAX, None);
    let mut client = SmtpClient::connect(fx.starttls, &fx.client_config);
    client.reply();
    client.command("EHLO c.test");
    // 9,000 NOOPs (over 100 KiB of replies) and STARTTLS, written before reading anything.
    let mut batch = b"NOOP\r\n".repeat(9_000);
    batch.extend_from_slice(b"STARTTLS\r\n");
    client.send(&batch);
    let mut noops = 0;
    loop {
        let reply = client.reply();
        if reply == "250 2.0.0 OK\r\n" {
            noops += 1;
            continue;
        }
        // Either every NOOP was answered before the 220, or the server refused to upgrade
        // with its output backed up: never a reply lost or out of order.
        assert!(
            (noops == 9_000 && reply.starts_with("220 2.0.0")) || reply.starts_with("421 4.7.0"),
            "after {noops} NOOP replies: {reply:?}"
        );
        break;
    }
}

/// Both listeners read PROXY headers from `trusted`.
fn behind_balancer(trusted: &str, untrusted: Untrusted) -> impl FnOnce(&mut ServerConfig) {
    let policy = ProxyPolicy::new(vec![trusted.parse().unwrap()]).untrusted(untrusted);
    move |config| {
        for listener in &mut config.listeners {
            listener.proxy = Some(policy.clone());
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn proxy_v2_header_names_the_client_and_its_tlvs_over_implicit_tls() {
    let fx = start(behind_balancer("127.0.0.0/8", Untrusted::Refuse), None);
    let header = proxy_v2(
        addr("192.0.2.7:40001"),
        addr("198.51.100.1:465"),
        &[(0x02, b"mx.example.org"), (0x05, b"req-42")],
    );
    let mut client = SmtpClient::connect_proxied(fx.implicit, &fx.client_config, &header);
    client.upgrade();
    assert!(client.reply().starts_with("220"));
    client.command("EHLO client.test");
    assert!(send_message(&mut client, "a@x.test", "b@y.test", "Hi\r\n").starts_with("250"));
    let log = fx.log.lock().unwrap();
    let (peer, proxied_by, authority) = log.connects[0].clone();
    assert_eq!(peer, addr("192.0.2.7:40001"));
    assert_eq!(
        proxied_by.map(|a| a.ip()),
        Some("127.0.0.1".parse().unwrap())
    );
    assert_eq!(authority.as_deref(), Some("mx.example.org"));
    assert_eq!(log.messages.len(), 1);
}

#[test]
fn proxy_v1_header_then_starttls_reports_the_client() {
    let fx = start(behind_balancer("127.0.0.1", Untrusted::Refuse), None);
    let header = proxy_v1(addr("[2001:db8::7]:40002"), addr("[2001:db8::1]:587"));
    let mut client = SmtpClient::connect_proxied(fx.starttls, &fx.client_config, &header);
    assert!(client.reply().starts_with("220"));
    client.command("EHLO client.test");
    assert!(client.command("STARTTLS").starts_with("220"));
    client.upgrade();
    client.command("EHLO client.test");
    assert!(send_message(&mut client, "a@x.test", "b@y.test", "Hi\r\n").starts_with("250"));
    let log = fx.log.lock().unwrap();
    assert_eq!(log.connects[0].0, addr("[2001:db8::7]:40002"));
    assert!(log.connects[0].1.is_some());
}

#[test]
fn proxy_header_from_untrusted_source_is_refused_without_a_banner() {
    let fx = start(behind_balancer("10.0.0.0/8", Untrusted::Refuse), None);
    let header = proxy_v1(addr("192.0.2.7:40001"), addr("198.51.100.1:587"));
    // An attacker connecting directly, claiming an address of its choosing.
    let mut client = SmtpClient::connect_proxied(fx.starttls, &fx.client_config, &header);
    assert_eq!(client.reply(), "", "closed without a banner");
    // A direct client that sends no header is refused the same way.
    let mut client = SmtpClient::connect(fx.starttls, &fx.client_config);
    assert_eq!(client.reply(), "");
    assert!(fx.log.lock().unwrap().connects.is_empty());
}

#[test]
fn untrusted_source_is_served_directly_when_the_listener_allows_it() {
    let fx = start(behind_balancer("10.0.0.0/8", Untrusted::Direct), None);
    let mut client = SmtpClient::connect(fx.starttls, &fx.client_config);
    assert!(client.reply().starts_with("220"));
    let log = fx.log.lock().unwrap();
    assert_eq!(
        log.connects[0].0.ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(log.connects[0].1, None);
}

#[test]
fn malformed_or_missing_proxy_header_closes_without_a_banner() {
    let fx = start(
        |config| {
            behind_balancer("127.0.0.1", Untrusted::Refuse)(config);
            config.timeouts.proxy_header = Duration::from_millis(200);
        },
        None,
    );
    for garbage in [
        &b"EHLO client.test\r\n"[..],
        b"PROXY TCP4 192.0.2.1 198.51.100.7 56324\r\n",
        b"PROXY TCP4 999.0.2.1 198.51.100.7 1 2\r\n",
        &[b'P'; 200],
        b"\r\n\r\n\0\r\nQUIT\n\x21\x31\x00\x00",
    ] {
        let mut client = SmtpClient::connect_proxied(fx.starttls, &fx.client_config, garbage);
        assert_eq!(client.reply(), "", "{:?}", String::from_utf8_lossy(garbage));
    }
    // Nothing at all: the header timer closes it.
    let mut silent = SmtpClient::connect(fx.implicit, &fx.client_config);
    assert_eq!(silent.reply(), "");
    // A truncated header, then silence.
    let header = proxy_v2(addr("192.0.2.7:1"), addr("198.51.100.1:465"), &[]);
    let mut truncated = SmtpClient::connect_proxied(fx.implicit, &fx.client_config, &header[..20]);
    assert_eq!(truncated.reply(), "");
    assert!(
        fx.log.lock().unwrap().connects.is_empty(),
        "no session began"
    );
    // The server goes on serving.
    let header = proxy_v1(addr("192.0.2.8:2"), addr("198.51.100.1:587"));
    let mut good = SmtpClient::connect_proxied(fx.starttls, &fx.client_config, &header);
    assert!(good.reply().starts_with("220"));
}

#[test]
fn per_ip_limit_counts_the_proxied_client_not_the_balancer() {
    let fx = start(
        |config| {
            behind_balancer("127.0.0.1", Untrusted::Refuse)(config);
            config.limits.connections_per_ip = 2;
        },
        None,
    );
    let connect = |client: &str| {
        let client = addr(client);
        let destination = if client.is_ipv4() {
            "198.51.100.1:587"
        } else {
            "[2001:db8::1]:587"
        };
        let header = proxy_v2(client, addr(destination), &[]);
        let mut c = SmtpClient::connect_proxied(fx.starttls, &fx.client_config, &header);
        let reply = c.reply();
        (c, reply)
    };
    let (_a1, r1) = connect("192.0.2.1:1001");
    let (_a2, r2) = connect("192.0.2.1:1002");
    let (mut a3, r3) = connect("192.0.2.1:1003");
    assert!(
        r1.starts_with("220") && r2.starts_with("220"),
        "{r1:?} {r2:?}"
    );
    assert!(
        r3.starts_with("421 4.7.0"),
        "the third from one client: {r3:?}"
    );
    assert!(a3.closed());
    // Five sockets from the balancer so far; other clients are still served.
    let (_b1, r4) = connect("192.0.2.2:1001");
    let (_b2, r5) = connect("[2001:db8::2]:1001");
    assert!(
        r4.starts_with("220") && r5.starts_with("220"),
        "{r4:?} {r5:?}"
    );
}

#[test]
fn proxy_local_command_is_served_with_the_socket_addresses() {
    let fx = start(behind_balancer("127.0.0.1", Untrusted::Refuse), None);
    let mut client = SmtpClient::connect_proxied(fx.starttls, &fx.client_config, &proxy_v2_local());
    assert!(client.reply().starts_with("220"));
    assert!(client.command("QUIT").starts_with("221"));
    let log = fx.log.lock().unwrap();
    assert_eq!(
        log.connects[0].0.ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(log.connects[0].1, None, "a health check is not proxied");
}
