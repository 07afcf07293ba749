//! The relay [`Handler`]: every decision the client sees is the backend's, taken in real time
//! on a thread of the session's own that holds its backend connection.
//!
//! The worker never blocks on the backend: each decision is deferred and its
//! [`Responder`] sent, with the job, to the session's relay thread, which talks to the backend
//! and answers. Body chunks follow the same queue, so the backend sees the message in order.
//!
//! # The decision contract
//!
//! - MAIL, RCPT and DATA: the backend's reply, code and text (control characters stripped).
//! - End of message: `250` only after the backend's `250` to the final dot. A backend that
//!   fails before it answers gives the client `451 4.4.2`: the client retries, and the message
//!   is never lost (at worst delivered twice, if the backend took it and the answer was lost:
//!   RFC 5321 §6.1's known duplicate window).
//! - A client that leaves, or a message aborted mid-body: the backend connection is closed
//!   without the final dot, so the backend discards the partial message.
//! - Backend unreachable, timing out, closing, or answering garbage: `451 4.4.1` or `4.4.2`,
//!   never a 5xx for a transport problem; logged with the reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use smtps_proto::{
    AbortReason, EnhancedStatus, ForwardPath, MailParameters, RcptParameters, Reply, ReplyCode,
    ReversePath, Verdict,
};
use smtps_server::{Answer, CloseReason, Context, Credentials, Handler, Responder, SessionInfo};

use crate::auth::{Authenticator, authenticate};
use crate::backend::{Backend, BackendConfig, BackendError, ClientIdentity};
use crate::body::DataEncoder;
use crate::params::{MailParams, RcptParams, mail_command, rcpt_command};
use crate::received::Received;
use crate::reply::BackendReply;

/// The relay front: a [`Handler`] relaying each transaction to one backend.
pub struct Relay {
    backend: Arc<BackendConfig>,
    hostname: String,
    authenticator: Option<Arc<dyn Authenticator>>,
    next_message: AtomicU64,
}

impl Relay {
    /// A relay to `backend`, naming itself `hostname` in its `Received:` lines.
    #[must_use]
    pub fn new(backend: BackendConfig, hostname: impl Into<String>) -> Self {
        Self {
            backend: Arc::new(backend),
            hostname: hostname.into(),
            authenticator: None,
            next_message: AtomicU64::new(1),
        }
    }

    /// Offers AUTH and accepts users `authenticator` knows; without one, AUTH is not offered
    /// (`502 5.5.1`).
    #[must_use]
    pub fn with_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }
}

/// One client session's side of the relay.
#[derive(Default)]
pub struct RelaySession {
    link: Option<Link>,
    /// Body octets not handed to the relay thread yet: they go in batches of
    /// [`BODY_BATCH`], or with the message's end, so a small message costs the thread one
    /// wake-up for its body and end together.
    body: Vec<u8>,
}

/// Body octets gathered on the worker before they go to the relay thread.
const BODY_BATCH: usize = 64 * 1024;

/// The queue to the session's relay thread.
struct Link {
    jobs: Sender<Job>,
    /// Set by the thread when the backend failed during a message: what body chunks answer.
    failure: Arc<Mutex<Option<Reply>>>,
}

enum Job {
    Mail {
        client: ClientIdentity,
        path: String,
        params: MailParams,
        responder: Responder,
    },
    Rcpt {
        path: String,
        params: RcptParams,
        responder: Responder,
    },
    Data {
        received: Vec<u8>,
        responder: Responder,
    },
    Body(Vec<u8>),
    /// The message's last octets, then its end.
    End {
        body: Vec<u8>,
        responder: Responder,
    },
    /// The message in progress will never be acknowledged: close without the final dot.
    Abort,
    /// RSET, a new EHLO, STARTTLS.
    Reset,
}

fn temporary(detail: u16, text: &'static str) -> Reply {
    Reply::new(
        ReplyCode::LOCAL_ERROR,
        EnhancedStatus::new(4, 4, detail),
        text,
    )
}

/// `451 4.4.1`: the backend could not be reached.
fn unreachable() -> Reply {
    temporary(1, "Backend unavailable, try again later")
}

/// `451 4.4.2`: the backend connection broke.
fn broken() -> Reply {
    temporary(2, "Backend connection lost, try again later")
}

fn client_identity(info: &SessionInfo) -> ClientIdentity {
    ClientIdentity {
        addr: info.peer,
        local: info.local,
        helo: info.helo.clone(),
        extended: info.extended,
        login: info.auth_id.clone(),
    }
}

impl Relay {
    /// Sends `job` to the session's thread, starting it first if needed. A thread that cannot
    /// start answers through the dropped responder (`451 4.3.0`).
    fn send(&self, session: &mut RelaySession, info: &SessionInfo, job: Job) {
        let link = session.link.get_or_insert_with(|| {
            let (jobs, queue) = mpsc::channel();
            let failure = Arc::new(Mutex::new(None));
            let thread_failure = Arc::clone(&failure);
            let config = Arc::clone(&self.backend);
            let id = info.id;
            let spawned = std::thread::Builder::new()
                .name(format!("smtps-relay-{id}"))
                .spawn(move || relay_thread(&config, id, &queue, &thread_failure));
            if let Err(error) = spawned {
                log::error!("smtps-relay: session={id} cannot start a relay thread: {error}");
            }
            Link { jobs, failure }
        });
        // A send fails only if the thread is gone; the job's responder then answers 451.
        let _ = link.jobs.send(job);
    }
}

impl Handler for Relay {
    type Session = RelaySession;

    fn connect(&self, _cx: &mut Context<'_>) -> (RelaySession, Answer) {
        (RelaySession::default(), Answer::Accept)
    }

    /// AUTH is offered with an authenticator ([`Relay::with_authenticator`]), and only then.
    fn offers_auth(&self) -> bool {
        self.authenticator.is_some()
    }

    fn auth(
        &self,
        _session: &mut RelaySession,
        cx: &mut Context<'_>,
        credentials: &Credentials<'_>,
    ) -> Answer {
        authenticate(self.authenticator.as_ref(), cx, credentials)
    }

    fn mail(
        &self,
        session: &mut RelaySession,
        cx: &mut Context<'_>,
        from: &ReversePath<'_>,
        params: &MailParameters<'_>,
    ) -> Answer {
        let responder = cx.defer();
        let job = Job::Mail {
            client: client_identity(cx.info()),
            path: from.to_string(),
            params: params.into(),
            responder,
        };
        self.send(session, cx.info(), job);
        Answer::Deferred
    }

    fn rcpt(
        &self,
        session: &mut RelaySession,
        cx: &mut Context<'_>,
        to: &ForwardPath<'_>,
        params: &RcptParameters<'_>,
    ) -> Answer {
        let responder = cx.defer();
        let job = Job::Rcpt {
            path: to.to_string(),
            params: params.into(),
            responder,
        };
        self.send(session, cx.info(), job);
        Answer::Deferred
    }

    fn data_start(&self, session: &mut RelaySession, cx: &mut Context<'_>) -> Answer {
        let responder = cx.defer();
        let number = self.next_message.fetch_add(1, Ordering::Relaxed);
        let id = format!("R{:X}{number:05X}", cx.info().id);
        let received = Received::for_session(cx.info(), &self.hostname, &id)
            .to_header()
            .into_bytes();
        self.send(
            session,
            cx.info(),
            Job::Data {
                received,
                responder,
            },
        );
        Answer::Deferred
    }

    fn body_chunk(
        &self,
        session: &mut RelaySession,
        cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        if let Some(link) = &session.link
            && let Some(reply) = link
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            return Err(reply);
        }
        session.body.extend_from_slice(chunk);
        if session.body.len() >= BODY_BATCH {
            let batch = std::mem::take(&mut session.body);
            self.send(session, cx.info(), Job::Body(batch));
        }
        Ok(())
    }

    fn message_end(&self, session: &mut RelaySession, cx: &mut Context<'_>, _size: u64) -> Answer {
        let responder = cx.defer();
        let body = std::mem::take(&mut session.body);
        self.send(session, cx.info(), Job::End { body, responder });
        Answer::Deferred
    }

    fn message_aborted(
        &self,
        session: &mut RelaySession,
        cx: &mut Context<'_>,
        reason: AbortReason,
    ) {
        log::info!(
            "smtps-relay: session={} message aborted ({reason:?}): the backend gets no final dot",
            cx.info().id
        );
        session.body.clear();
        if session.link.is_some() {
            self.send(session, cx.info(), Job::Abort);
        }
    }

    fn reset(&self, session: &mut RelaySession, cx: &mut Context<'_>) {
        if session.link.is_some() {
            self.send(session, cx.info(), Job::Reset);
        }
    }

    fn disconnect(&self, session: RelaySession, _cx: &mut Context<'_>, _reason: CloseReason) {
        // Dropping the queue ends the thread: QUIT between transactions, a plain close in the
        // middle of one (no final dot, so nothing half-sent is delivered).
        drop(session);
    }
}

/// The verdict for a backend reply: accepted when positive (or, for DATA, intermediate).
fn verdict(reply: &BackendReply) -> Verdict {
    if reply.is_positive() || reply.is_intermediate() {
        Verdict::AcceptWith(reply.to_client())
    } else {
        Verdict::Reject(reply.to_client())
    }
}

/// What the relay thread holds between jobs.
struct State<'a> {
    config: &'a BackendConfig,
    id: u64,
    backend: Option<Backend>,
    /// The message in progress, once the backend said 354.
    data: Option<DataEncoder>,
    /// Encoded octets not yet written.
    out: Vec<u8>,
    /// A RSET owed to the backend before the next MAIL.
    reset_pending: bool,
    failure: &'a Mutex<Option<Reply>>,
}

/// The session's relay thread: takes jobs in order until the session ends.
fn relay_thread(
    config: &BackendConfig,
    id: u64,
    queue: &Receiver<Job>,
    failure: &Mutex<Option<Reply>>,
) {
    let mut state = State {
        config,
        id,
        backend: None,
        data: None,
        out: Vec::new(),
        reset_pending: false,
        failure,
    };
    while let Ok(job) = queue.recv() {
        state.run(job);
    }
    // The session ended. Mid-message: close without the final dot; otherwise say goodbye.
    if let Some(backend) = state.backend.take()
        && state.data.is_none()
    {
        backend.quit();
    }
}

impl State<'_> {
    fn run(&mut self, job: Job) {
        match job {
            Job::Mail {
                client,
                path,
                params,
                responder,
            } => {
                let verdict = self.mail(&client, &path, &params);
                responder.respond(verdict);
            }
            Job::Rcpt {
                path,
                params,
                responder,
            } => {
                let verdict = self.with_backend(|backend| {
                    match rcpt_command(&path, &params, backend.capabilities()) {
                        Ok(line) => backend.command(&line).map(|r| verdict(&r)),
                        Err(refusal) => Ok(Verdict::Reject(refusal)),
                    }
                });
                responder.respond(verdict);
            }
            Job::Data {
                received,
                responder,
            } => {
                let verdict =
                    self.with_backend(|backend| backend.command("DATA").map(|r| verdict(&r)));
                let verdict = match verdict {
                    Verdict::AcceptWith(reply) if reply.code() == ReplyCode::START_MAIL_INPUT => {
                        let mut encoder = DataEncoder::default();
                        encoder.encode(&received, &mut self.out);
                        self.data = Some(encoder);
                        // The engine sends its own 354.
                        Verdict::Accept
                    }
                    Verdict::AcceptWith(reply) => {
                        log::warn!(
                            "smtps-relay: session={} backend answered DATA with {}",
                            self.id,
                            reply.code().as_u16()
                        );
                        self.drop_backend();
                        Verdict::Reject(broken())
                    }
                    other => other,
                };
                responder.respond(verdict);
            }
            Job::Body(chunk) => self.body(&chunk),
            Job::End { body, responder } => {
                self.body(&body);
                let verdict = self.end();
                responder.respond(verdict);
            }
            Job::Abort => {
                if self.data.take().is_some() {
                    // Closing without the final dot: the backend discards the message.
                    self.backend = None;
                    self.out.clear();
                }
            }
            Job::Reset => {
                if self.data.is_none() && self.backend.is_some() {
                    self.reset_pending = true;
                }
            }
        }
    }

    fn mail(&mut self, client: &ClientIdentity, path: &str, params: &MailParams) -> Verdict {
        if self.backend.is_none() {
            match Backend::connect(self.config, client) {
                Ok(backend) => {
                    log::debug!(
                        "smtps-relay: session={} backend {} ready: {:?}",
                        self.id,
                        self.config.address,
                        backend.capabilities()
                    );
                    self.backend = Some(backend);
                    self.reset_pending = false;
                }
                Err(error) => {
                    log::error!("smtps-relay: session={} {error}", self.id);
                    return Verdict::Reject(unreachable());
                }
            }
        }
        let reset = std::mem::take(&mut self.reset_pending);
        self.with_backend(|backend| {
            backend.update_identity(client)?;
            let line = match mail_command(path, params, backend.capabilities()) {
                Ok(line) => line,
                Err(refusal) => return Ok(Verdict::Reject(refusal)),
            };
            if reset {
                if backend.capabilities().pipelining {
                    // RFC 2920: RSET and MAIL in one write, then both replies.
                    backend.send("RSET")?;
                    backend.send(&line)?;
                    backend.reply()?;
                    return backend.last_reply().map(|r| verdict(&r));
                }
                backend.command("RSET")?;
            }
            backend.command(&line).map(|r| verdict(&r))
        })
    }

    /// Runs `step` on the backend; a backend failure drops the connection and answers
    /// `451 4.4.2`.
    fn with_backend(
        &mut self,
        step: impl FnOnce(&mut Backend) -> Result<Verdict, BackendError>,
    ) -> Verdict {
        let Some(backend) = self.backend.as_mut() else {
            return Verdict::Reject(broken());
        };
        match step(backend) {
            Ok(verdict) => verdict,
            Err(error) => {
                log::error!("smtps-relay: session={} {error}", self.id);
                self.drop_backend();
                Verdict::Reject(match error {
                    BackendError::Connect(..) => unreachable(),
                    _ => broken(),
                })
            }
        }
    }

    fn body(&mut self, chunk: &[u8]) {
        let Some(encoder) = self.data.as_mut() else {
            return;
        };
        encoder.encode(chunk, &mut self.out);
        if self.out.len() < 64 * 1024 {
            return;
        }
        self.flush_body();
    }

    fn flush_body(&mut self) {
        let result = match self.backend.as_mut() {
            Some(backend) => backend.write_body(&self.out),
            None => return,
        };
        self.out.clear();
        if let Err(error) = result {
            log::error!("smtps-relay: session={} {error}", self.id);
            self.drop_backend();
            *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(broken());
        }
    }

    fn end(&mut self) -> Verdict {
        let Some(mut encoder) = self.data.take() else {
            return Verdict::Reject(broken());
        };
        encoder.finish(&mut self.out);
        self.flush_body();
        // A failure while writing the body was already told to the client through the body
        // chunks' answer; forget it for the next message.
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.with_backend(|backend| {
            let reply = backend.end_of_data()?;
            Ok(verdict(&reply))
        })
    }

    fn drop_backend(&mut self) {
        self.backend = None;
        self.data = None;
        self.out.clear();
        self.reset_pending = false;
    }
}
