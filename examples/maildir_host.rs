//! A complete Rust host: an implicit-TLS submission listener (RFC 8314) that authenticates
//! users from a fixed table, stores each message durably in a Maildir, answers `250` only once
//! the file is `fsync`ed, and shuts down gracefully on SIGTERM or SIGINT.
//!
//! ```sh
//! cargo run --example maildir_host -- --listen 127.0.0.1:2465 \
//!     --cert cert.pem --key key.pem --maildir ./maildir
//! ```
//!
//! Users: `alice` / `correct horse battery staple` (see [`USERS`]). It prints
//! `listening on ADDR` once bound (port 0 picks one).
//!
//! What it leaves out: a user file with password hashes (checked on a thread of their own, as
//! `smtpsd` does with argon2), STARTTLS listeners, certificate reload on SIGHUP, logging.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use smtps::maildir::{Delivery, DeliveryError, Maildir};
use smtps::proto::{EnhancedStatus, Reply, ReplyCode, SessionConfig};
use smtps::received::Received;
use smtps::server::{Answer, Context, Credentials, Handler, Mode, Responder, Server, ServerConfig};
use smtps::tls::TlsSettings;

/// The user table: name and password. A real host keeps hashes in a file.
const USERS: &[(&str, &str)] = &[("alice", "correct horse battery staple")];

/// How long transactions in flight may take to finish after SIGTERM/SIGINT.
const GRACE: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(std::env::args().skip(1))?;
    let hostname = "mx.example.test";
    let maildir = Maildir::open_or_create(&args.maildir)?.with_hostname(hostname);

    let tls = TlsSettings::new()
        .certificate_files(&args.cert, &args.key)
        .build()?;
    let mut session = SessionConfig::new(hostname);
    // A submission port: no MAIL before AUTH (RFC 4954 §6, RFC 6409 §4.3).
    session.policy.require_auth_for_mail = true;
    let config = ServerConfig::new(session)
        .listener(args.listen, Mode::ImplicitTls)
        .tls(Arc::new(tls));

    // The committer: fsync is slow, so it runs here and never on a worker thread.
    let (commits, queue) = mpsc::channel();
    let committer = std::thread::spawn(move || commit_loop(&queue));

    let host = MaildirHost {
        maildir,
        hostname: hostname.to_owned(),
        commits: Mutex::new(commits),
    };
    let server = Server::bind(config, host)?;
    for addr in server.local_addrs() {
        println!("listening on {addr}");
    }

    // Graceful shutdown: stop accepting, let transactions finish within GRACE, tell idle
    // sessions 421 4.3.2. A signal handler may do almost nothing, so a thread waits instead.
    let handle = server.handle();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("signal {signal}: shutting down");
            handle.shutdown(GRACE);
        }
    });

    server.run()?;
    // The server (and with it the handler's sender) is gone: the committer finishes the
    // commits it has and stops.
    if committer.join().is_err() {
        return Err("the commit thread panicked".into());
    }
    println!("stopped");
    Ok(())
}

/// The host: AUTH against [`USERS`], each message into the Maildir.
struct MaildirHost {
    maildir: Maildir,
    hostname: String,
    commits: Mutex<Sender<(Delivery, Responder)>>,
}

/// Per session: the message being written.
#[derive(Default)]
struct Session {
    delivery: Option<Delivery>,
}

impl Handler for MaildirHost {
    type Session = Session;

    fn connect(&self, _cx: &mut Context<'_>) -> (Session, Answer) {
        (Session::default(), Answer::Accept)
    }

    // Without this AUTH would not be advertised, and `auth` never called.
    fn offers_auth(&self) -> bool {
        true
    }

    fn auth(&self, _: &mut Session, _cx: &mut Context<'_>, creds: &Credentials<'_>) -> Answer {
        let known = USERS.iter().fold(false, |found, (user, password)| {
            // Every entry is compared, each in constant time: how long this takes tells
            // nothing about which user exists or how much of a password was right.
            let matches = constant_time_eq(user.as_bytes(), creds.authentication_id.as_bytes())
                & constant_time_eq(password.as_bytes(), creds.password.as_bytes());
            found | matches
        });
        let acting_as_self =
            creds.authorization_id.is_empty() || creds.authorization_id == creds.authentication_id;
        if known && acting_as_self {
            Answer::Accept
        } else {
            Answer::Reject(Reply::new(
                ReplyCode::AUTH_INVALID,
                EnhancedStatus::new(5, 7, 8),
                "Authentication credentials invalid",
            ))
        }
    }

    fn data_start(&self, session: &mut Session, cx: &mut Context<'_>) -> Answer {
        let info = cx.info();
        // The trace header names the queue id, known once the file exists.
        let begun = self.maildir.begin_with(|id| {
            Received::for_session(info, &self.hostname, id.as_str())
                .to_header()
                .into_bytes()
        });
        match begun {
            Ok(delivery) => {
                session.delivery = Some(delivery);
                Answer::Accept
            }
            Err(error) => {
                eprintln!("cannot start a message: {error}");
                Answer::Reject(reply_for(&error))
            }
        }
    }

    fn body_chunk(
        &self,
        session: &mut Session,
        _: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        let Some(delivery) = &mut session.delivery else {
            return Ok(());
        };
        // Buffered writes to the local disk are quick; a slow sink would pause input instead
        // (`Context::pause_input`, see `examples/tokio_host.rs`).
        delivery.write(chunk).map_err(|error| {
            session.delivery = None;
            reply_for(&error)
        })
    }

    fn message_end(&self, session: &mut Session, cx: &mut Context<'_>, _size: u64) -> Answer {
        let responder = cx.defer();
        let Some(delivery) = session.delivery.take() else {
            return Answer::Reject(Reply::new(
                ReplyCode::LOCAL_ERROR,
                EnhancedStatus::new(4, 3, 0),
                "Local error in processing",
            ));
        };
        // If the committer is gone the pair comes back in the error and is dropped: the
        // delivery removes its file and the responder answers 451 4.3.0 by itself.
        let _ = self
            .commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send((delivery, responder));
        Answer::Deferred
    }

    fn message_aborted(
        &self,
        session: &mut Session,
        _: &mut Context<'_>,
        _: smtps::proto::AbortReason,
    ) {
        // Dropping an uncommitted delivery removes its temporary file.
        session.delivery = None;
    }

    fn reset(&self, session: &mut Session, _: &mut Context<'_>) {
        session.delivery = None;
    }
}

/// Commits each message (write, fsync, rename into new/, fsync new/), then answers.
fn commit_loop(queue: &Receiver<(Delivery, Responder)>) {
    while let Ok((delivery, responder)) = queue.recv() {
        if responder.is_closed() {
            // Nobody waits for this answer any more (the decision timed out, the session
            // ended): keeping the message would deliver it twice after the client's retry.
            delivery.abort();
            continue;
        }
        match delivery.commit() {
            Ok(id) => responder.accept_with(Reply::new(
                ReplyCode::OK,
                EnhancedStatus::new(2, 0, 0),
                format!("queued as {id}"),
            )),
            Err(error) => {
                eprintln!("delivery failed: {error}");
                responder.reject(reply_for(&error));
            }
        }
    }
}

/// The reply for a storage failure: 452 4.3.1 when the disk is full, else 451 4.3.0.
fn reply_for(error: &DeliveryError) -> Reply {
    let (code, status, text) = error.smtp_reply();
    Reply::from_parts(code, Some(status), text)
        .unwrap_or_else(|| Reply::new(ReplyCode::LOCAL_ERROR, None, "Local error in processing"))
}

/// Whether `a` equals `b`, in a time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// The command line.
struct Args {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    maildir: PathBuf,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let usage = "usage: maildir_host --listen ADDR --cert PEM --key PEM --maildir DIR";
        let (mut listen, mut cert, mut key, mut maildir) = (None, None, None, None);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{usage}"))?;
            match flag.as_str() {
                "--listen" => {
                    listen = Some(
                        value
                            .parse()
                            .map_err(|e| format!("--listen {value}: {e}"))?,
                    );
                }
                "--cert" => cert = Some(PathBuf::from(value)),
                "--key" => key = Some(PathBuf::from(value)),
                "--maildir" => maildir = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown option {flag}\n{usage}")),
            }
        }
        match (listen, cert, key, maildir) {
            (Some(listen), Some(cert), Some(key), Some(maildir)) => Ok(Self {
                listen,
                cert,
                key,
                maildir,
            }),
            _ => Err(usage.to_owned()),
        }
    }
}
