//! The relay [`Handler`]: every decision the client sees is the backend's, taken in real time
//! over the session's own backend connection.
//!
//! The worker never blocks on the backend: each decision is deferred and its
//! [`Responder`](smtps_server::Responder) handed, with the job, to the worker's backend I/O
//! (the `backend_io` module, polled by the same worker beside the client sockets), which talks
//! to the backend and answers. Body chunks follow the same queue, so the backend sees the
//! message in order.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use smtps_proto::{AbortReason, ForwardPath, MailParameters, RcptParameters, Reply, ReversePath};
use smtps_server::{
    Answer, CloseReason, Context, Credentials, Handler, SessionInfo, WorkerIo, WorkerRegistry,
};

use crate::auth::{Authenticator, authenticate};
use crate::backend::{BackendConfig, ClientIdentity};
use crate::backend_io::{PAUSE_ABOVE, RelayIo};
use crate::client::{Command, Job, broken};
use crate::logline::{self, MessageLog};
use crate::received::Received;

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

    /// Sends `job` to the backend connection of the session, on this worker.
    fn send(session: &RelaySession, cx: &mut Context<'_>, job: Job) {
        let id = cx.info().id;
        match cx.worker_io::<RelayIo>() {
            Some(io) => io.submit(id, &session.body_failed, job),
            // Only if a driver ran the session without the worker I/O this relay asked for;
            // the job's responder, dropped here, answers `451 4.3.0`.
            None => log::error!("smtps-relay: session={id} has no backend I/O on its worker"),
        }
    }
}

/// One client session's side of the relay.
pub struct RelaySession {
    /// For the session line's duration.
    started: Instant,
    /// Octets of the messages that reached their end (the session line's `bytes`).
    bytes: u64,
    /// Raised by the worker's backend I/O when the backend failed during the message: the
    /// next body chunk answers `451 4.4.2`.
    body_failed: Arc<AtomicBool>,
    /// Body octets not handed to the backend I/O yet: they go in batches of [`BODY_BATCH`], or
    /// with the message's end, so a small message costs one job for its body and end.
    body: Vec<u8>,
}

/// Body octets gathered on the worker before they go to the backend I/O.
const BODY_BATCH: usize = 64 * 1024;

fn client_identity(info: &SessionInfo) -> ClientIdentity {
    ClientIdentity {
        addr: info.peer,
        local: info.local,
        helo: info.helo.clone(),
        extended: info.extended,
        login: info.auth_id.clone(),
    }
}

impl Handler for Relay {
    type Session = RelaySession;

    fn connect(&self, _cx: &mut Context<'_>) -> (RelaySession, Answer) {
        let session = RelaySession {
            started: Instant::now(),
            bytes: 0,
            body_failed: Arc::default(),
            body: Vec::new(),
        };
        (session, Answer::Accept)
    }

    /// AUTH is offered with an authenticator ([`Relay::with_authenticator`]), and only then.
    fn offers_auth(&self) -> bool {
        self.authenticator.is_some()
    }

    /// RCPTs and the DATA a client pipelined go to the backend in the same group as their MAIL
    /// (RFC 2920), not one round trip each.
    fn pipelined_decisions(&self) -> bool {
        true
    }

    /// Each worker polls its sessions' backend connections itself.
    fn worker_io(&self, registry: WorkerRegistry) -> Option<Box<dyn WorkerIo>> {
        Some(Box::new(RelayIo::new(Arc::clone(&self.backend), registry)))
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
        let job = Job::Command(Command::Mail {
            client: client_identity(cx.info()),
            path: from.to_string(),
            params: params.into(),
            responder,
        });
        Self::send(session, cx, job);
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
        let job = Job::Command(Command::Rcpt {
            path: to.to_string(),
            params: params.into(),
            responder,
        });
        Self::send(session, cx, job);
        Answer::Deferred
    }

    fn data_start(&self, session: &mut RelaySession, cx: &mut Context<'_>) -> Answer {
        let responder = cx.defer();
        let number = self.next_message.fetch_add(1, Ordering::Relaxed);
        let id = format!("R{:X}{number:05X}", cx.info().id);
        let received = Received::for_session(cx.info(), &self.hostname, &id)
            .to_header()
            .into_bytes();
        Self::send(
            session,
            cx,
            Job::Command(Command::Data {
                received,
                responder,
            }),
        );
        Answer::Deferred
    }

    fn body_chunk(
        &self,
        session: &mut RelaySession,
        cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        if session.body_failed.swap(false, Ordering::AcqRel) {
            return Err(broken());
        }
        session.body.extend_from_slice(chunk);
        if session.body.len() >= BODY_BATCH {
            let batch = std::mem::take(&mut session.body);
            Self::send(session, cx, Job::Command(Command::Body(batch)));
            // A backend slower than the client: stop reading the client until it catches up.
            let id = cx.info().id;
            if cx
                .worker_io::<RelayIo>()
                .is_some_and(|io| io.backlog(id) > PAUSE_ABOVE)
            {
                let gate = cx.pause_input();
                if let Some(io) = cx.worker_io::<RelayIo>() {
                    io.hold_input(id, gate);
                }
            }
        }
        Ok(())
    }

    fn message_end(&self, session: &mut RelaySession, cx: &mut Context<'_>, size: u64) -> Answer {
        session.bytes = session.bytes.saturating_add(size);
        let log = MessageLog::new(cx.info(), size);
        let responder = cx.defer();
        let body = std::mem::take(&mut session.body);
        Self::send(
            session,
            cx,
            Job::Command(Command::End {
                body,
                responder,
                log,
            }),
        );
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
        Self::send(session, cx, Job::Abort);
    }

    fn reset(&self, session: &mut RelaySession, cx: &mut Context<'_>) {
        Self::send(session, cx, Job::Reset);
    }

    fn disconnect(&self, session: RelaySession, cx: &mut Context<'_>, reason: CloseReason) {
        // QUIT between transactions, a plain close in the middle of one (no final dot, so
        // nothing half-sent is delivered); nothing for a session that never reached MAIL.
        Self::send(&session, cx, Job::Close);
        log::info!(
            "{}",
            logline::session(cx.info(), &reason, session.bytes, session.started.elapsed())
        );
    }
}
