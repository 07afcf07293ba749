//! What the `Handler` trait promises a host written from its documentation alone: AUTH is
//! advertised only by a host that checks credentials; a host that pauses input
//! (`Context::pause_input`) gets nothing more until it resumes, from any thread, and loses
//! nothing. A host with sockets of its own (`Handler::worker_io`) has them polled by the
//! worker and decides from their readiness and its deadlines, on the worker's thread. Every
//! blocking call has a timeout.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use std::io::{Read, Write};
use std::time::Instant;

use smtps_proto::{ForwardPath, RcptParameters, Reply, SessionConfig, Verdict};
use smtps_server::{
    Answer, Context, Credentials, Handler, InputGate, Mode, Responder, RunningServer, Server,
    ServerConfig, WorkerIo, WorkerRegistry,
};
use smtps_testkit::{IO_TIMEOUT, SmtpClient, acceptor, client_config};

/// `alice` / `secret`, base64 of `\0alice\0secret` (RFC 4616).
const ALICE_PLAIN: &str = "AUTH PLAIN AGFsaWNlAHNlY3JldA==";

/// A host that takes every message and knows nothing of AUTH: it overrides neither
/// `offers_auth` nor `auth`.
struct NoAuth;

impl Handler for NoAuth {
    type Session = ();

    fn connect(&self, _cx: &mut Context<'_>) -> ((), Answer) {
        ((), Answer::Accept)
    }

    fn body_chunk(&self, _: &mut (), _: &mut Context<'_>, _: &[u8]) -> Result<(), Reply> {
        Ok(())
    }

    fn message_end(&self, _: &mut (), _: &mut Context<'_>, _: u64) -> Answer {
        Answer::Accept
    }
}

/// A host with a user table of one.
struct WithAuth;

impl Handler for WithAuth {
    type Session = ();

    fn connect(&self, _cx: &mut Context<'_>) -> ((), Answer) {
        ((), Answer::Accept)
    }

    fn offers_auth(&self) -> bool {
        true
    }

    fn auth(&self, _: &mut (), _: &mut Context<'_>, credentials: &Credentials<'_>) -> Answer {
        if credentials.authentication_id == "alice" && credentials.password == "secret" {
            Answer::Accept
        } else {
            Answer::Reject(Reply::from_parts(535, Some("5.7.8"), "Bad credentials").unwrap())
        }
    }

    fn body_chunk(&self, _: &mut (), _: &mut Context<'_>, _: &[u8]) -> Result<(), Reply> {
        Ok(())
    }

    fn message_end(&self, _: &mut (), _: &mut Context<'_>, _: u64) -> Answer {
        Answer::Accept
    }
}

/// A server with one implicit-TLS listener on 127.0.0.1, stopped on drop.
struct Running {
    server: Option<RunningServer>,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.handle().shutdown(Duration::ZERO);
            let _ = server.join();
        }
    }
}

fn serve<H: Handler>(handler: H) -> Running {
    serve_with(handler, |_| {})
}

fn serve_with<H: Handler>(handler: H, edit: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut config = ServerConfig::new(SessionConfig::new("mx.test"))
        .listener("127.0.0.1:0".parse().unwrap(), Mode::ImplicitTls)
        .tls(acceptor());
    config.workers = 1;
    edit(&mut config);
    let server = Server::bind(config, handler).unwrap();
    let addr = server.local_addrs()[0];
    Running {
        server: Some(server.start().unwrap()),
        addr,
    }
}

fn greeted(running: &Running) -> SmtpClient {
    let mut client = SmtpClient::connect_tls(running.addr, &client_config());
    assert!(client.reply().starts_with("220 mx.test"));
    client
}

#[test]
fn a_host_without_auth_advertises_no_auth_and_answers_502_rfc4954() {
    let running = serve(NoAuth);
    let mut client = greeted(&running);
    let ehlo = client.command("EHLO client.test");
    assert!(ehlo.starts_with("250-mx.test"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "AUTH advertised: {ehlo}");
    let reply = client.command(ALICE_PLAIN);
    assert!(reply.starts_with("502 5.5.1"), "{reply}");
    // The session goes on: the refusal is a reply, not a close.
    assert!(client.command("NOOP").starts_with("250"));
}

#[test]
fn a_host_with_auth_advertises_its_mechanisms_and_checks_credentials_rfc4954() {
    let running = serve(WithAuth);
    let mut client = greeted(&running);
    let ehlo = client.command("EHLO client.test");
    assert!(ehlo.contains("AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    let reply = client.command(ALICE_PLAIN);
    assert!(reply.starts_with("235"), "{reply}");
}

/// What the pausing host saw.
#[derive(Default)]
struct Seen {
    /// A gate is out: no chunk may come.
    paused: AtomicBool,
    /// Chunks that came while a gate was out (must stay 0).
    chunks_while_paused: AtomicUsize,
    chunks: AtomicUsize,
    body: Mutex<Vec<u8>>,
    messages: Mutex<Vec<Vec<u8>>>,
}

/// A host whose storage is slow: each body chunk is "written" by another thread, which
/// resumes input once done. `pause_every_chunk == false` pauses at the first chunk only.
struct Pausing {
    seen: Arc<Seen>,
    gates: Mutex<mpsc::Sender<InputGate>>,
    pause_every_chunk: bool,
}

impl Handler for Pausing {
    type Session = ();

    fn connect(&self, _cx: &mut Context<'_>) -> ((), Answer) {
        ((), Answer::Accept)
    }

    fn body_chunk(&self, _: &mut (), cx: &mut Context<'_>, chunk: &[u8]) -> Result<(), Reply> {
        let seen = &self.seen;
        if seen.paused.load(Ordering::SeqCst) {
            seen.chunks_while_paused.fetch_add(1, Ordering::SeqCst);
        }
        let first = seen.chunks.fetch_add(1, Ordering::SeqCst) == 0;
        seen.body.lock().unwrap().extend_from_slice(chunk);
        if self.pause_every_chunk || first {
            seen.paused.store(true, Ordering::SeqCst);
            let gate = cx.pause_input();
            self.gates.lock().unwrap().send(gate).unwrap();
        }
        Ok(())
    }

    fn message_end(&self, _: &mut (), _: &mut Context<'_>, _: u64) -> Answer {
        let body = std::mem::take(&mut *self.seen.body.lock().unwrap());
        self.seen.messages.lock().unwrap().push(body);
        Answer::Accept
    }
}

fn pausing(pause_every_chunk: bool) -> (Running, Arc<Seen>, mpsc::Receiver<InputGate>) {
    let seen = Arc::new(Seen::default());
    let (sender, gates) = mpsc::channel();
    let running = serve(Pausing {
        seen: Arc::clone(&seen),
        gates: Mutex::new(sender),
        pause_every_chunk,
    });
    (running, seen, gates)
}

/// A body of about `size` octets whose lines often start with a dot, as sent (dot-stuffed,
/// RFC 5321 §4.5.2) and as the host must receive it.
fn body_of(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut body = Vec::with_capacity(size + 64);
    let mut i = 0u64;
    while body.len() < size {
        if i.is_multiple_of(5) {
            body.push(b'.');
        }
        body.extend_from_slice(format!("line {i} of a large message, {}\r\n", i * 7).as_bytes());
        i += 1;
    }
    let mut stuffed = Vec::with_capacity(body.len() + body.len() / 20);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    stuffed.extend_from_slice(b".\r\n");
    (body, stuffed)
}

fn in_data(running: &Running) -> SmtpClient {
    let mut client = greeted(running);
    assert!(client.command("EHLO client.test").starts_with("250"));
    assert!(client.command("MAIL FROM:<a@x.test>").starts_with("250"));
    assert!(client.command("RCPT TO:<b@y.test>").starts_with("250"));
    assert!(client.command("DATA").starts_with("354"));
    client
}

#[test]
fn a_host_pausing_at_every_chunk_and_resuming_from_another_thread_gets_the_body_byte_exact() {
    let (running, seen, gates) = pausing(true);
    // The slow writer: resumes each gate after a while, from its own thread.
    let writer = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut resumed = 0usize;
            while let Ok(gate) = gates.recv_timeout(IO_TIMEOUT) {
                std::thread::sleep(Duration::from_millis(2));
                seen.paused.store(false, Ordering::SeqCst);
                gate.resume();
                resumed += 1;
            }
            resumed
        })
    };
    let (body, stuffed) = body_of(3 * 1024 * 1024);
    let mut client = in_data(&running);
    client.send(&stuffed);
    let reply = client.reply();
    assert!(reply.starts_with("250"), "{reply}");
    assert!(client.command("QUIT").starts_with("221"));
    drop(running);
    let resumed = writer.join().unwrap();
    let messages = seen.messages.lock().unwrap();
    assert_eq!(messages.len(), 1);
    assert!(messages[0] == body, "the body differs");
    assert_eq!(seen.chunks_while_paused.load(Ordering::SeqCst), 0);
    let chunks = seen.chunks.load(Ordering::SeqCst);
    assert!(chunks > 1, "one chunk proves nothing");
    assert_eq!(resumed, chunks, "every chunk paused and was resumed");
}

#[test]
fn while_a_gate_is_held_the_client_is_not_read_and_resuming_lets_it_finish() {
    let (running, seen, gates) = pausing(false);
    // More than the loopback socket buffers of both ends hold: the client can finish only if
    // the server reads.
    let (body, stuffed) = body_of(24 * 1024 * 1024);
    let mut client = in_data(&running);
    let (done_tx, done) = mpsc::channel();
    let sender = std::thread::spawn(move || {
        client.send(&stuffed);
        done_tx.send(()).unwrap();
        client.reply()
    });
    let gate = gates.recv_timeout(IO_TIMEOUT).unwrap();
    // However long we hold it, the client stays blocked and no further chunk comes.
    assert!(done.recv_timeout(Duration::from_millis(500)).is_err());
    assert_eq!(seen.chunks.load(Ordering::SeqCst), 1);
    seen.paused.store(false, Ordering::SeqCst);
    gate.resume();
    done.recv_timeout(IO_TIMEOUT * 3).unwrap();
    let reply = sender.join().unwrap();
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(seen.chunks_while_paused.load(Ordering::SeqCst), 0);
    assert!(seen.messages.lock().unwrap()[0] == body);
}

#[test]
fn a_dropped_gate_resumes_input() {
    let (running, seen, gates) = pausing(true);
    // Every gate is dropped as it arrives, unresumed.
    let dropper = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            while let Ok(gate) = gates.recv_timeout(IO_TIMEOUT) {
                seen.paused.store(false, Ordering::SeqCst);
                drop(gate);
            }
        })
    };
    let (body, stuffed) = body_of(256 * 1024);
    let mut client = in_data(&running);
    client.send(&stuffed);
    assert!(client.reply().starts_with("250"));
    drop(running);
    dropper.join().unwrap();
    assert!(seen.messages.lock().unwrap()[0] == body);
}

/// A host that asks a "policy service" (the test, at the other end of a socket pair) about
/// each recipient: the worker polls the host's end, and a recipient nobody answers within
/// 200 ms is refused by the host's own deadline.
struct PolicyHost {
    /// The test's end of the socket pair of the one worker.
    test_end: Arc<Mutex<Option<std::os::unix::net::UnixStream>>>,
}

struct PolicyIo {
    socket: mio::net::UnixStream,
    waiting: Vec<(Responder, Instant)>,
}

impl WorkerIo for PolicyIo {
    fn ready(&mut self, token: usize, _event: &mio::event::Event) {
        assert_eq!(token, 7);
        let mut buf = [0; 64];
        while let Ok(n) = self.socket.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &answer in &buf[..n] {
                if self.waiting.is_empty() {
                    continue;
                }
                let (responder, _) = self.waiting.remove(0);
                responder.respond(if answer == b'y' {
                    Verdict::Accept
                } else {
                    Verdict::Reject(
                        Reply::from_parts(550, Some("5.7.1"), "Policy says no").unwrap(),
                    )
                });
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.waiting
            .first()
            .map(|(_, asked)| *asked + Duration::from_millis(200))
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, asked)) = self.waiting.first()
            && now >= *asked + Duration::from_millis(200)
        {
            let (responder, _) = self.waiting.remove(0);
            responder.respond(Verdict::Reject(
                Reply::from_parts(451, Some("4.4.3"), "Policy service did not answer").unwrap(),
            ));
        }
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl Handler for PolicyHost {
    type Session = ();

    fn connect(&self, _cx: &mut Context<'_>) -> ((), Answer) {
        ((), Answer::Accept)
    }

    fn worker_io(&self, registry: WorkerRegistry) -> Option<Box<dyn WorkerIo>> {
        let (host_end, test_end) = std::os::unix::net::UnixStream::pair().unwrap();
        host_end.set_nonblocking(true).unwrap();
        let mut socket = mio::net::UnixStream::from_std(host_end);
        registry
            .register(&mut socket, 7, mio::Interest::READABLE)
            .unwrap();
        *self.test_end.lock().unwrap() = Some(test_end);
        Some(Box::new(PolicyIo {
            socket,
            waiting: Vec::new(),
        }))
    }

    fn rcpt(
        &self,
        _: &mut (),
        cx: &mut Context<'_>,
        to: &ForwardPath<'_>,
        _: &RcptParameters<'_>,
    ) -> Answer {
        let responder = cx.defer();
        let io = cx.worker_io::<PolicyIo>().expect("this host's worker I/O");
        io.socket.write_all(format!("{to}\n").as_bytes()).unwrap();
        io.waiting.push((responder, Instant::now()));
        Answer::Deferred
    }

    fn body_chunk(&self, _: &mut (), _: &mut Context<'_>, _: &[u8]) -> Result<(), Reply> {
        Ok(())
    }

    fn message_end(&self, _: &mut (), _: &mut Context<'_>, _: u64) -> Answer {
        Answer::Accept
    }
}

#[test]
fn a_host_decides_from_its_own_socket_polled_by_the_worker_and_from_its_deadline() {
    let test_end = Arc::new(Mutex::new(None));
    let running = serve(PolicyHost {
        test_end: Arc::clone(&test_end),
    });
    // The one worker made its I/O as the server was bound.
    let mut policy: std::os::unix::net::UnixStream = test_end.lock().unwrap().take().unwrap();
    let mut client = greeted(&running);
    assert!(client.command("EHLO client.test").starts_with("250"));
    assert!(
        client
            .command("MAIL FROM:<a@client.test>")
            .starts_with("250")
    );
    policy.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // The host's question reaches the policy service; its answer is the verdict.
    client.send(b"RCPT TO:<b@example.org>\r\n");
    let mut question = [0; 64];
    let n = policy.read(&mut question).unwrap();
    assert_eq!(&question[..n], b"<b@example.org>\n");
    policy.write_all(b"n").unwrap();
    assert!(client.reply().starts_with("550 5.7.1 Policy says no"));
    client.send(b"RCPT TO:<c@example.org>\r\n");
    let n = policy.read(&mut question).unwrap();
    assert_eq!(&question[..n], b"<c@example.org>\n");
    policy.write_all(b"y").unwrap();
    assert!(client.reply().starts_with("250"));
    // Unanswered: the host's deadline, run by the worker, refuses.
    let reply = client.command("RCPT TO:<d@example.org>");
    assert!(reply.starts_with("451 4.4.3"), "{reply}");
    assert!(client.command("QUIT").starts_with("221"));
}

/// A host that takes decisions pipelined (`Handler::pipelined_decisions`) and hands every
/// MAIL, RCPT and DATA responder to the test, which answers them in an order of its choosing.
struct Pipelining {
    decisions: Mutex<mpsc::Sender<(String, Responder)>>,
    /// The recipients `SessionInfo` holds at each message's end.
    recipients_at_end: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Pipelining {
    fn hand_over(&self, what: String, cx: &mut Context<'_>) -> Answer {
        let responder = cx.defer();
        self.decisions
            .lock()
            .unwrap()
            .send((what, responder))
            .unwrap();
        Answer::Deferred
    }
}

impl Handler for Pipelining {
    type Session = ();

    fn connect(&self, _cx: &mut Context<'_>) -> ((), Answer) {
        ((), Answer::Accept)
    }

    fn pipelined_decisions(&self) -> bool {
        true
    }

    fn mail(
        &self,
        _: &mut (),
        cx: &mut Context<'_>,
        from: &smtps_proto::ReversePath<'_>,
        _: &smtps_proto::MailParameters<'_>,
    ) -> Answer {
        self.hand_over(format!("MAIL {from}"), cx)
    }

    fn rcpt(
        &self,
        _: &mut (),
        cx: &mut Context<'_>,
        to: &ForwardPath<'_>,
        _: &RcptParameters<'_>,
    ) -> Answer {
        self.hand_over(format!("RCPT {to}"), cx)
    }

    fn data_start(&self, _: &mut (), cx: &mut Context<'_>) -> Answer {
        self.hand_over("DATA".to_owned(), cx)
    }

    fn body_chunk(&self, _: &mut (), _: &mut Context<'_>, _: &[u8]) -> Result<(), Reply> {
        Ok(())
    }

    fn message_end(&self, _: &mut (), cx: &mut Context<'_>, _: u64) -> Answer {
        let recipients = cx.info().recipients.clone();
        self.recipients_at_end.lock().unwrap().push(recipients);
        Answer::Accept
    }
}

type Recipients = Arc<Mutex<Vec<Vec<String>>>>;

fn pipelining() -> (Running, Recipients, mpsc::Receiver<(String, Responder)>) {
    pipelining_with(|_| {})
}

fn pipelining_with(
    edit: impl FnOnce(&mut ServerConfig),
) -> (Running, Recipients, mpsc::Receiver<(String, Responder)>) {
    let (sender, receiver) = mpsc::channel();
    let recipients_at_end = Recipients::default();
    let host = Pipelining {
        decisions: Mutex::new(sender),
        recipients_at_end: Arc::clone(&recipients_at_end),
    };
    (serve_with(host, edit), recipients_at_end, receiver)
}

/// The next `n` decisions the host was asked for, in the order asked.
fn asked(decisions: &mpsc::Receiver<(String, Responder)>, n: usize) -> Vec<(String, Responder)> {
    (0..n)
        .map(|_| {
            decisions
                .recv_timeout(IO_TIMEOUT)
                .expect("a decision asked for")
        })
        .collect()
}

fn rcpt_refused() -> Reply {
    Reply::from_parts(550, Some("5.1.1"), "No such user").unwrap()
}

#[test]
fn a_pipelining_host_is_asked_for_the_whole_group_and_replies_leave_in_command_order_rfc_2920() {
    let (running, recipients_at_end, decisions) = pipelining();
    let mut c = greeted(&running);
    assert!(c.command("EHLO client.test").starts_with("250"));
    c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n");
    // All four come before any is answered.
    let mut group = asked(&decisions, 4);
    let names: Vec<&str> = group.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(
        names,
        [
            "MAIL <a@x.test>",
            "RCPT <b@y.test>",
            "RCPT <c@y.test>",
            "DATA"
        ]
    );
    // Answered last to first: each verdict waits for the ones before it.
    let (_, data) = group.pop().unwrap();
    assert!(data.try_respond(Verdict::Accept));
    let (_, second) = group.pop().unwrap();
    assert!(second.try_respond(Verdict::Reject(rcpt_refused())));
    let (_, first) = group.pop().unwrap();
    first.accept();
    let (_, mail) = group.pop().unwrap();
    mail.accept();
    assert!(c.reply().starts_with("250 2.1.0"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert_eq!(c.reply(), "550 5.1.1 No such user\r\n");
    assert!(c.reply().starts_with("354"));
    c.send(b"Subject: grouped\r\n\r\nbody\r\n");
    assert!(c.command(".").starts_with("250"));
    assert_eq!(
        *recipients_at_end.lock().unwrap(),
        [vec!["b@y.test".to_owned()]],
        "the envelope holds the accepted recipient only"
    );
}

#[test]
fn a_refused_mail_withdraws_the_rcpts_and_data_pipelined_after_it_and_closes_their_responders() {
    let (running, recipients_at_end, decisions) = pipelining();
    let mut c = greeted(&running);
    assert!(c.command("EHLO client.test").starts_with("250"));
    c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    let mut group = asked(&decisions, 3).into_iter();
    let (_, mail) = group.next().unwrap();
    mail.reject(Reply::from_parts(550, Some("5.7.1"), "Sender refused").unwrap());
    assert_eq!(c.reply(), "550 5.7.1 Sender refused\r\n");
    // What a server deciding one command at a time answers: no transaction, no DATA.
    assert_eq!(c.reply(), "503 5.5.1 Need MAIL command\r\n");
    assert_eq!(c.reply(), "503 5.5.1 Need MAIL command\r\n");
    for (what, responder) in group {
        assert!(responder.is_closed(), "{what} withdrawn");
        assert!(!responder.try_respond(Verdict::Accept), "{what} not taken");
    }
    // The session goes on, one decision at a time when the client does not pipeline.
    c.send(b"MAIL FROM:<a@x.test>\r\n");
    asked(&decisions, 1).pop().unwrap().1.accept();
    assert!(c.reply().starts_with("250"));
    c.send(b"RCPT TO:<b@y.test>\r\n");
    asked(&decisions, 1).pop().unwrap().1.accept();
    assert!(c.reply().starts_with("250"));
    c.send(b"DATA\r\n");
    asked(&decisions, 1).pop().unwrap().1.accept();
    assert!(c.reply().starts_with("354"));
    c.send(b"Subject: after\r\n\r\nbody\r\n");
    assert!(c.command(".").starts_with("250"));
    assert_eq!(recipients_at_end.lock().unwrap().len(), 1);
}

#[test]
fn the_decision_timeout_answers_every_overdue_pipelined_decision_in_command_order() {
    let (running, _, decisions) =
        pipelining_with(|config| config.timeouts.decision = Duration::from_millis(300));
    let mut c = greeted(&running);
    assert!(c.command("EHLO client.test").starts_with("250"));
    c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n");
    let mut group = asked(&decisions, 4).into_iter();
    // The MAIL is answered in time; the RCPTs and the DATA never are.
    group.next().unwrap().1.accept();
    let held: Vec<(String, Responder)> = group.collect();
    assert!(c.reply().starts_with("250 2.1.0"));
    // Both RCPTs run out: 451 each; the DATA, without a recipient, is withdrawn and answered
    // by the session, not by the timer.
    assert!(c.reply().starts_with("451 4.3.0"));
    assert!(c.reply().starts_with("451 4.3.0"));
    assert_eq!(c.reply(), "554 5.5.1 No valid recipients\r\n");
    for (what, responder) in held {
        assert!(
            responder.is_closed(),
            "{what} settled without its responder"
        );
    }
    // The session goes on.
    assert!(c.command("RSET").starts_with("250"));
}
