//! The relay [`Handler`]: every decision the client sees is the backend's, taken in real time
//! by a relay loop that holds the session's backend connection.
//!
//! The worker never blocks on the backend: each decision is deferred and its [`Responder`]
//! sent, with the job, to the relay loop ([`crate::relay_loop`]), which talks to the backend
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use smtps_proto::{AbortReason, ForwardPath, MailParameters, RcptParameters, Reply, ReversePath};
use smtps_server::{Answer, CloseReason, Context, Credentials, Handler, SessionInfo};

use crate::auth::{Authenticator, authenticate};
use crate::backend::{BackendConfig, ClientIdentity};
use crate::client::{Job, broken};
use crate::logline::{self, MessageLog};
use crate::received::Received;
use crate::relay_loop::LoopHandle;

/// The relay front: a [`Handler`] relaying each transaction to one backend.
pub struct Relay {
    backend: Arc<BackendConfig>,
    hostname: String,
    authenticator: Option<Arc<dyn Authenticator>>,
    next_message: AtomicU64,
    loop_count: usize,
    /// Started with the first session that needs the backend.
    loops: OnceLock<Vec<LoopHandle>>,
}

impl Relay {
    /// A relay to `backend`, naming itself `hostname` in its `Received:` lines, with one
    /// relay loop thread.
    #[must_use]
    pub fn new(backend: BackendConfig, hostname: impl Into<String>) -> Self {
        Self {
            backend: Arc::new(backend),
            hostname: hostname.into(),
            authenticator: None,
            next_message: AtomicU64::new(1),
            loop_count: 1,
            loops: OnceLock::new(),
        }
    }

    /// Offers AUTH and accepts users `authenticator` knows; without one, AUTH is not offered
    /// (`502 5.5.1`).
    #[must_use]
    pub fn with_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Spreads sessions over `count` relay loop threads (at least one), each holding its
    /// sessions' backend connections; one is plenty for thousands of sessions, more serve
    /// a machine with many cores and workers.
    #[must_use]
    pub fn with_loops(mut self, count: usize) -> Self {
        self.loop_count = count.max(1);
        self
    }

    /// The loop that holds `session`'s backend connection; `None` if no loop thread could
    /// be started (logged; the decisions then answer `451 4.3.0`).
    fn loop_for(&self, session: u64) -> Option<&LoopHandle> {
        let loops = self.loops.get_or_init(|| {
            (0..self.loop_count)
                .filter_map(|index| {
                    LoopHandle::spawn(Arc::clone(&self.backend), index)
                        .map_err(|error| {
                            log::error!("smtps-relay: cannot start a relay loop: {error}");
                        })
                        .ok()
                })
                .collect()
        });
        let count = u64::try_from(loops.len()).ok().filter(|&n| n > 0)?;
        loops.get(usize::try_from(session % count).ok()?)
    }

    /// Sends `job` to the session's loop, registering the session first if needed.
    fn send(&self, session: &mut RelaySession, info: &SessionInfo, job: Job) {
        let Some(handle) = self.loop_for(info.id) else {
            return;
        };
        if !session.opened {
            session.opened = true;
            handle.open(info.id, Arc::clone(&session.body_failed));
        }
        handle.send(info.id, job);
    }
}

/// One client session's side of the relay.
pub struct RelaySession {
    /// For the session line's duration.
    started: Instant,
    /// Octets of the messages that reached their end (the session line's `bytes`).
    bytes: u64,
    /// The loop knows this session.
    opened: bool,
    /// Raised by the loop when the backend failed during the message: the next body chunk
    /// answers `451 4.4.2`.
    body_failed: Arc<AtomicBool>,
    /// Body octets not handed to the loop yet: they go in batches of [`BODY_BATCH`], or with
    /// the message's end, so a small message costs the loop one job for its body and end.
    body: Vec<u8>,
}

/// Body octets gathered on the worker before they go to the loop.
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
            opened: false,
            body_failed: Arc::default(),
            body: Vec::new(),
        };
        (session, Answer::Accept)
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
        if session.body_failed.swap(false, Ordering::AcqRel) {
            return Err(broken());
        }
        session.body.extend_from_slice(chunk);
        if session.body.len() >= BODY_BATCH {
            let batch = std::mem::take(&mut session.body);
            self.send(session, cx.info(), Job::Body(batch));
        }
        Ok(())
    }

    fn message_end(&self, session: &mut RelaySession, cx: &mut Context<'_>, size: u64) -> Answer {
        session.bytes = session.bytes.saturating_add(size);
        let log = MessageLog::new(cx.info(), size);
        let responder = cx.defer();
        let body = std::mem::take(&mut session.body);
        self.send(
            session,
            cx.info(),
            Job::End {
                body,
                responder,
                log,
            },
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
        if session.opened {
            self.send(session, cx.info(), Job::Abort);
        }
    }

    fn reset(&self, session: &mut RelaySession, cx: &mut Context<'_>) {
        if session.opened {
            self.send(session, cx.info(), Job::Reset);
        }
    }

    fn disconnect(&self, mut session: RelaySession, cx: &mut Context<'_>, reason: CloseReason) {
        // QUIT between transactions, a plain close in the middle of one (no final dot, so
        // nothing half-sent is delivered).
        if session.opened {
            self.send(&mut session, cx.info(), Job::Close);
        }
        log::info!(
            "{}",
            logline::session(cx.info(), &reason, session.bytes, session.started.elapsed())
        );
    }
}
