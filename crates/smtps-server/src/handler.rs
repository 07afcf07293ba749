//! The host's side: the [`Handler`] trait, the answers it gives, the session information it
//! sees, and the [`Responder`] that answers later from any thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mio::{Token, Waker};
use smtps_conn::{CloseReason, Mode};
use smtps_proto::{
    AbortReason, AuthMechanism, DecisionId, ForwardPath, HeloName, MailParameters, RcptParameters,
    Reply, ReplyCode, ReversePath, Verdict,
};
use smtps_tls::TlsInfo;

use crate::worker_io::{WorkerIo, WorkerRegistry};

/// The host: decides on each step of every session.
///
/// One value serves every connection, from every worker thread (`Send + Sync`); per-connection
/// state lives in [`Handler::Session`], created by [`Handler::connect`]. Each decision method
/// returns an [`Answer`]: now, or [`Answer::Deferred`] after taking a [`Responder`] with
/// [`Context::defer`] to answer later from any thread. Until then the session waits, replies
/// stay in order, and nothing later from that client is acted on.
///
/// # Threads, and what may block
///
/// Every method runs on the worker thread that owns the connection (one of
/// [`ServerConfig::workers`](crate::ServerConfig::workers), or the host's own thread inside
/// [`PolledServer::turn`](crate::PolledServer::turn)); one session's calls come from one thread,
/// in order, never two at once, while other sessions' calls run on other workers at the same
/// time. A method that blocks stalls every connection of its worker, so none should: work
/// that takes time goes elsewhere and reports back from any thread —
///
/// - a decision (connect, HELO, AUTH, MAIL, RCPT, DATA, the message's end): take a
///   [`Responder`] with [`Context::defer`], return [`Answer::Deferred`], answer later;
/// - the body ([`Handler::body_chunk`]): take an [`InputGate`] with [`Context::pause_input`],
///   hand the chunk to the slow writer, and [`InputGate::resume`] when it is written. Until then
///   the worker reads nothing more from that client (TCP flow control holds it back) and
///   calls nothing more for that session, so nothing piles up in memory.
///
/// [`Responder`] and [`InputGate`] are `Send`: answer or resume from a thread pool, an async
/// task or a completion callback. Dropping either is safe (a `451 4.3.0`, a resume), so a
/// host that loses track of a session cannot wedge it.
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state.
    type Session: Send + 'static;

    /// A client connected (for implicit TLS: after the handshake). Accept to send the `220`
    /// greeting; refuse with `554` (the session then answers only QUIT) or `421` (closes).
    fn connect(&self, cx: &mut Context<'_>) -> (Self::Session, Answer);

    /// HELO, or EHLO when `extended` (RFC 5321 §4.1.1.1).
    fn helo(
        &self,
        session: &mut Self::Session,
        cx: &mut Context<'_>,
        name: &HeloName<'_>,
        extended: bool,
    ) -> Answer {
        let _ = (session, cx, name, extended);
        Answer::Accept
    }

    /// Whether this host checks credentials: `true` only if it overrides [`Handler::auth`].
    ///
    /// The server asks once, in [`Server::bind`](crate::Server::bind). When `false` (the
    /// default) AUTH is not advertised in the EHLO reply whatever
    /// [`SessionConfig::auth_mechanisms`](smtps_proto::SessionConfig) lists, and a client's
    /// `AUTH` gets `502 5.5.1` (RFC 5321 §4.2.4; RFC 4954 §4 lets a server that does not offer
    /// AUTH refuse it), so a client never sends a password to a host that cannot check it.
    /// When `true` the mechanisms of the session configuration are offered, over TLS only
    /// (RFC 4954 §4 and the policy's `danger_allow_plaintext_auth`), and each `AUTH` reaches
    /// [`Handler::auth`].
    ///
    /// Override both together:
    ///
    /// ```
    /// # use smtps_server::{Answer, Context, Credentials, Handler};
    /// # use smtps_proto::{EnhancedStatus, Reply, ReplyCode};
    /// struct Host;
    /// impl Handler for Host {
    ///     type Session = ();
    ///     fn offers_auth(&self) -> bool {
    ///         true
    ///     }
    ///     fn auth(&self, _: &mut (), _: &mut Context<'_>, c: &Credentials<'_>) -> Answer {
    ///         // A real host looks the user up, compares in constant time, and defers a
    ///         // password hash to another thread (see `examples/maildir_host.rs`).
    ///         if c.authentication_id == "alice" && c.password == "secret" {
    ///             Answer::Accept
    ///         } else {
    ///             let status = EnhancedStatus::new(5, 7, 8);
    ///             Answer::Reject(Reply::new(ReplyCode::AUTH_INVALID, status, "Bad credentials"))
    ///         }
    ///     }
    /// #   fn connect(&self, _: &mut Context<'_>) -> ((), Answer) { ((), Answer::Accept) }
    /// #   fn body_chunk(&self, _: &mut (), _: &mut Context<'_>, _: &[u8]) -> Result<(), Reply> { Ok(()) }
    /// #   fn message_end(&self, _: &mut (), _: &mut Context<'_>, _: u64) -> Answer { Answer::Accept }
    /// }
    /// ```
    fn offers_auth(&self) -> bool {
        false
    }

    /// Whether the host takes decisions pipelined (RFC 2920): while it holds a deferred
    /// [`Handler::mail`] or [`Handler::rcpt`], the RCPTs and the DATA the client sent in the
    /// same group come to [`Handler::rcpt`] and [`Handler::data_start`] at once, each with a
    /// responder of its own, instead of one after the other's answer. A host that forwards
    /// them (a relay to a backend that offers PIPELINING) then asks for all of them in one
    /// round trip. Verdicts take effect, and replies leave, in command order whatever order
    /// they come in. A command whose ground an earlier verdict took away — a RCPT after its
    /// MAIL was refused, the DATA after every RCPT was — is withdrawn: its responder turns
    /// closed ([`Responder::is_closed`], [`Responder::try_respond`] gives `false`) and the
    /// client gets the session's own answer (`503 5.5.1`, `554 5.5.1`), as from a server that
    /// decides one command at a time. How much is read ahead is bounded (the session's input
    /// limit), so a host answers what it has without waiting for the rest of the group. See
    /// [`SessionConfig::pipelined_decisions`](smtps_proto::SessionConfig::pipelined_decisions).
    /// Default `false`; a host that answers in the call itself gains nothing from it.
    fn pipelined_decisions(&self) -> bool {
        false
    }

    /// Host I/O on the worker threads ([`WorkerIo`]): called once per worker as the server
    /// is bound ([`Server::bind`](crate::Server::bind)), with the registry of that worker's
    /// poll; the worker then owns the object on its thread. `None` (the default): the host has no sockets
    /// of its own for the workers to poll. A host that talks to another server for its
    /// decisions (a relay's backend) returns its per-worker state here and reaches it from
    /// the decision methods through [`Context::worker_io`], so a deferred decision is sent,
    /// answered and applied on the worker's own thread.
    fn worker_io(&self, registry: WorkerRegistry) -> Option<Box<dyn WorkerIo>> {
        let _ = registry;
        None
    }

    /// AUTH (RFC 4954), called only when [`Handler::offers_auth`] is `true`, with the
    /// credentials decoded (PLAIN, RFC 4616; LOGIN). Accept answers `235 2.7.0` and the
    /// session is authenticated ([`SessionInfo::auth_id`]); a password hash takes time, so a
    /// real host defers and checks on another thread. The default refuses with `535 5.7.8`:
    /// a host without a user database has no business accepting credentials.
    fn auth(
        &self,
        session: &mut Self::Session,
        cx: &mut Context<'_>,
        credentials: &Credentials<'_>,
    ) -> Answer {
        let _ = (session, cx, credentials);
        Answer::Reject(Reply::new(
            ReplyCode::AUTH_INVALID,
            smtps_proto::EnhancedStatus::new(5, 7, 8),
            "Authentication credentials invalid",
        ))
    }

    /// MAIL FROM (§4.1.1.2).
    fn mail(
        &self,
        session: &mut Self::Session,
        cx: &mut Context<'_>,
        from: &ReversePath<'_>,
        params: &MailParameters<'_>,
    ) -> Answer {
        let _ = (session, cx, from, params);
        Answer::Accept
    }

    /// RCPT TO (§4.1.1.3).
    fn rcpt(
        &self,
        session: &mut Self::Session,
        cx: &mut Context<'_>,
        to: &ForwardPath<'_>,
        params: &RcptParameters<'_>,
    ) -> Answer {
        let _ = (session, cx, to, params);
        Answer::Accept
    }

    /// DATA or the first BDAT chunk (RFC 3030): the body is about to arrive.
    fn data_start(&self, session: &mut Self::Session, cx: &mut Context<'_>) -> Answer {
        let _ = (session, cx);
        Answer::Accept
    }

    /// Message octets, dot-unstuffed, in order (RFC 5321 §4.5.2; BDAT chunks, RFC 3030, come
    /// through here too). Return an error reply (such as `452 4.3.1` when the spool is full) to
    /// refuse the message: the rest of the body is read and that reply given at its end.
    ///
    /// The chunk is borrowed for the call. A host whose storage is slow copies it to its
    /// writer and calls [`Context::pause_input`]: no further chunk (and no other call for this
    /// session) comes until the [`InputGate`] is resumed or dropped.
    ///
    /// # Errors
    /// The reply for a message the host cannot take.
    fn body_chunk(
        &self,
        session: &mut Self::Session,
        cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply>;

    /// The whole message has arrived. Accept only once it is stored durably: the `250` is the
    /// promise to deliver.
    ///
    /// A deferred `message_end` can outlive the client's patience: when the server's decision
    /// timeout (`Timeouts::decision`) passes first, the client gets `451 4.3.0` and will send
    /// the message again, the [`Responder`] reports [`Responder::is_closed`], and the host must
    /// discard what it stored (keeping it delivers the message twice). A client that merely
    /// disconnects while the host commits is still answered (the decision is awaited), as RFC
    /// 5321 §6.1 prefers a possible duplicate to a loss.
    fn message_end(&self, session: &mut Self::Session, cx: &mut Context<'_>, size: u64) -> Answer;

    /// The message in progress was dropped (too large, client gone, shutdown): discard what
    /// was spooled. It will never be acknowledged.
    ///
    /// It can arrive while a deferred [`Handler::message_end`] is still being committed (the
    /// session closed on a shutdown's grace or a `421`): the client never got `250`, so the
    /// stored copy must go even if the commit finishes later; the responder answers nobody
    /// ([`Responder::is_closed`] is `true`).
    fn message_aborted(
        &self,
        session: &mut Self::Session,
        cx: &mut Context<'_>,
        reason: AbortReason,
    ) {
        let _ = (session, cx, reason);
    }

    /// The transaction was reset (RSET, a new EHLO, STARTTLS).
    fn reset(&self, session: &mut Self::Session, cx: &mut Context<'_>) {
        let _ = (session, cx);
    }

    /// The connection is closing; the last call for this session.
    fn disconnect(&self, session: Self::Session, cx: &mut Context<'_>, reason: CloseReason) {
        let _ = (session, cx, reason);
    }
}

/// A decision method's answer: a [`Verdict`] now (the same three cases), or
/// [`Answer::Deferred`] after taking a [`Responder`], whose later answer is a `Verdict`. The two
/// types stay apart on purpose: a `Verdict` can never be "deferred", so a responder cannot be
/// answered with "later". `Answer::from(verdict)` turns one into the other.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accept, with the default reply.
    Accept,
    /// Accept with this reply (2xx; for DATA, 3xx).
    AcceptWith(Reply),
    /// Refuse with this reply (4xx or 5xx; `421` also closes).
    Reject(Reply),
    /// The answer comes later through the [`Responder`] taken with [`Context::defer`].
    Deferred,
}

impl From<Verdict> for Answer {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::AcceptWith(reply) => Self::AcceptWith(reply),
            Verdict::Reject(reply) => Self::Reject(reply),
            _ => Self::Accept,
        }
    }
}

impl Answer {
    /// The verdict for the session, or `None` for a deferred answer.
    pub(crate) fn into_verdict(self) -> Option<Verdict> {
        match self {
            Self::Accept => Some(Verdict::Accept),
            Self::AcceptWith(reply) => Some(Verdict::AcceptWith(reply)),
            Self::Reject(reply) => Some(Verdict::Reject(reply)),
            Self::Deferred => None,
        }
    }
}

/// AUTH credentials, decoded (RFC 4954, RFC 4616).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The mechanism.
    pub mechanism: AuthMechanism,
    /// The authorization identity; empty when not given.
    pub authorization_id: &'a str,
    /// The authentication identity (the user name).
    pub authentication_id: &'a str,
    /// The password.
    pub password: &'a str,
}

/// What is known about a session, for every decision.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// A number unique within the server process: the key for [`Responder`] and logs.
    pub id: u64,
    /// The client's address: the socket's peer, or on a PROXY protocol listener the client
    /// the balancer's header names.
    pub peer: SocketAddr,
    /// The address the client connected to: the socket's, or the header's destination (on
    /// the balancer).
    pub local: SocketAddr,
    /// The balancer's address (the socket's peer) when a PROXY header gave `peer`; `None` for
    /// a direct client, and for the balancer's own LOCAL connections (health checks).
    pub proxied_by: Option<SocketAddr>,
    /// The PROXY header the connection began with, with its TLVs ([`ProxyHeader::tlvs`]:
    /// authority, unique id, the balancer's TLS version and cipher when it terminated TLS).
    ///
    /// [`ProxyHeader::tlvs`]: crate::ProxyHeader::tlvs
    pub proxy: Option<crate::ProxyHeader>,
    /// The index of the listener in [`crate::ServerConfig::listeners`].
    pub listener: usize,
    /// The listener's mode.
    pub mode: Mode,
    /// What TLS negotiated, once it has (implicit TLS, or after STARTTLS).
    pub tls: Option<TlsInfo>,
    /// The HELO/EHLO name, once accepted.
    pub helo: Option<String>,
    /// Whether the client used EHLO.
    pub extended: bool,
    /// The authenticated identity, once AUTH succeeded.
    pub auth_id: Option<String>,
    /// The reverse path of the transaction in progress (`""` for `<>`).
    pub mail_from: Option<String>,
    /// The accepted recipients of the transaction in progress.
    pub recipients: Vec<String>,
    /// Messages accepted in this session.
    pub messages: u64,
}

/// Passed to every handler call: the session's information, the way to defer, and the way to
/// pause input.
pub struct Context<'a> {
    pub(crate) info: &'a SessionInfo,
    /// This worker's host I/O ([`Handler::worker_io`]), if the host has any.
    pub(crate) worker_io: Option<&'a mut dyn WorkerIo>,
    pub(crate) defer: Option<DeferSlot>,
    /// The claim of the responder [`Context::defer`] gave out, if it gave one.
    pub(crate) deferred: Option<Arc<AtomicU8>>,
    /// Where a gate's resume goes; `None` where pausing means nothing (at the disconnect).
    pub(crate) gate: Option<GateSlot>,
    /// Gates taken during this call.
    pub(crate) paused: u32,
}

impl Context<'_> {
    /// The session's information.
    #[must_use]
    pub fn info(&self) -> &SessionInfo {
        self.info
    }

    /// This worker's host I/O, as the host's own type `T` (the one its
    /// [`Handler::worker_io`] returned); `None` if it has none or it is another type.
    pub fn worker_io<T: WorkerIo>(&mut self) -> Option<&mut T> {
        self.worker_io.as_deref_mut()?.as_any().downcast_mut()
    }

    /// Takes the responder for this decision, to answer later from any thread; the method then
    /// returns [`Answer::Deferred`]. Every decision method (`connect`, `helo`, `auth`, `mail`,
    /// `rcpt`, `data_start`, `message_end`) can defer. The calls that decide nothing
    /// (`body_chunk`, `message_aborted`, `reset`, `disconnect`), and a second `defer` in one
    /// call, get a responder that answers nothing: its [`Responder::is_closed`] is `true`.
    pub fn defer(&mut self) -> Responder {
        let slot = self.defer.take().map(|slot| {
            let claim = Arc::new(AtomicU8::new(OPEN));
            self.deferred = Some(Arc::clone(&claim));
            (slot, claim)
        });
        Responder { slot }
    }

    /// Pauses this session's input until the returned gate is resumed (or dropped): the
    /// host's back-pressure, for a body going to slow storage or an async sink.
    ///
    /// After the current call returns, the worker reads nothing more from the client — TCP
    /// flow control then stops the client — and makes no further call for this session;
    /// replies already due still go out, and other sessions are served as usual. Each gate
    /// holds the session on its own: input resumes once every gate taken is resumed.
    ///
    /// Timers: while paused the client's idle timers (`Timeouts::command`,
    /// `Timeouts::data_block`, RFC 5321 §4.5.3.2) stand still, since the client is not the one
    /// being slow, and restart at the resume. The host's own slowness is bounded as for a
    /// deferred decision, by `Timeouts::decision` (default 300 s): a pause that lasts longer
    /// closes the connection with `421 4.3.0`, the message is dropped
    /// ([`Handler::message_aborted`]) and the client retries. `Timeouts::session` keeps running.
    ///
    /// Meant for [`Handler::body_chunk`], it works in any call; in [`Handler::disconnect`]
    /// there is nothing left to pause and the gate does nothing.
    ///
    /// ```
    /// # use std::sync::mpsc::Sender;
    /// # use smtps_server::{Context, InputGate};
    /// # use smtps_proto::Reply;
    /// /// In `Handler::body_chunk`: the writer thread resumes once the chunk is on disk.
    /// fn body_chunk(writer: &Sender<(Vec<u8>, InputGate)>, cx: &mut Context<'_>, chunk: &[u8])
    ///     -> Result<(), Reply>
    /// {
    ///     let gate = cx.pause_input();
    ///     // If the writer is gone the gate comes back in the error and resumes as it drops.
    ///     let _ = writer.send((chunk.to_vec(), gate));
    ///     Ok(())
    /// }
    /// ```
    pub fn pause_input(&mut self) -> InputGate {
        let slot = self.gate.clone();
        if slot.is_some() {
            self.paused += 1;
        }
        InputGate { slot }
    }
}

/// Where an [`InputGate`]'s resume goes.
#[derive(Clone)]
pub(crate) struct GateSlot {
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) token: Token,
    pub(crate) session: u64,
}

/// Holds one session's input paused ([`Context::pause_input`]) until [`InputGate::resume`], from
/// any thread. Dropping it resumes too, so a gate lost on an error path cannot stall a session
/// for good. A resume that comes after the session closed is ignored.
#[must_use = "dropping the gate resumes input at once"]
pub struct InputGate {
    slot: Option<GateSlot>,
}

impl InputGate {
    /// The session this gate holds ([`SessionInfo::id`]); 0 for a gate that holds nothing.
    #[must_use]
    pub fn session_id(&self) -> u64 {
        self.slot.as_ref().map_or(0, |slot| slot.session)
    }

    /// Lets the session's input flow again (once every other gate of the session is resumed
    /// too): the worker reads the client again and goes on calling the handler.
    pub fn resume(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.mailbox.post_resume(slot.token, slot.session);
        }
    }
}

impl Drop for InputGate {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for InputGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputGate")
            .field("session", &self.session_id())
            .finish()
    }
}

/// A deferred decision's claim: who answers it. The responder and the worker (its decision
/// timer, the session's end, a withdrawal) race for it from `OPEN`; whoever moves it first
/// answers, or settles that nobody will.
/// The decision awaits its responder's answer.
pub(crate) const OPEN: u8 = 1;
/// The responder answered: the verdict is in the worker's mailbox, the timer leaves it alone.
pub(crate) const CLAIMED: u8 = 2;
/// Settled without the responder: answered by the server, withdrawn, or the session closed.
pub(crate) const SETTLED: u8 = 0;

/// Where a deferred answer goes: the worker's queue, woken through its `Waker`.
pub(crate) struct DeferSlot {
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) token: Token,
    pub(crate) session: u64,
    pub(crate) decision: DecisionId,
}

/// A worker's inbox for answers given from other threads.
pub(crate) struct Mailbox {
    pub(crate) queue: Mutex<Vec<Completion>>,
    /// Resumed [`InputGate`]s: the connection's token and its session.
    pub(crate) resumes: Mutex<Vec<(Token, u64)>>,
    pub(crate) waker: Waker,
    /// Set by the worker when it gives up the thread (the end of a turn, before its poll
    /// sleeps): only then does a post need the waker's system call. While a turn runs (an
    /// answer from the host's own worker I/O, or from another thread meanwhile) the worker
    /// takes the mailbox before it sleeps again.
    pub(crate) idle: AtomicBool,
}

/// A deferred answer on its way to the worker.
pub(crate) struct Completion {
    pub(crate) token: Token,
    pub(crate) session: u64,
    pub(crate) decision: DecisionId,
    pub(crate) verdict: Verdict,
}

impl Mailbox {
    pub(crate) fn post(&self, completion: Completion) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(completion);
        self.wake();
    }

    /// Wakes the worker if it may be asleep. A failed wake leaves the post queued; the
    /// worker's timer sweep picks it up.
    fn wake(&self) {
        if self.idle.swap(false, Ordering::SeqCst)
            && let Err(error) = self.waker.wake()
        {
            log::warn!("smtps: cannot wake worker: {error}");
        }
    }

    /// The worker is running a turn: posts need no wake-up until [`Mailbox::end_turn`].
    pub(crate) fn begin_turn(&self) {
        self.idle.store(false, Ordering::SeqCst);
    }

    /// The worker's turn is over: a post from now on wakes it, and one that came since it
    /// last took the mailbox makes its poll return at once.
    pub(crate) fn end_turn(&self) {
        self.idle.store(true, Ordering::SeqCst);
        let waiting = !self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
            || !self
                .resumes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
        if waiting {
            self.wake();
        }
    }

    pub(crate) fn take(&self) -> Vec<Completion> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn post_resume(&self, token: Token, session: u64) {
        self.resumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((token, session));
        self.wake();
    }

    pub(crate) fn take_resumes(&self) -> Vec<(Token, u64)> {
        std::mem::take(&mut *self.resumes.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Answers one deferred decision, once, from any thread.
///
/// Dropping it unanswered answers `451 4.3.0` so that no session waits forever for a host
/// that lost track of it. If the session has closed meanwhile, the answer is ignored.
pub struct Responder {
    slot: Option<(DeferSlot, Arc<AtomicU8>)>,
}

impl Responder {
    /// The session this answer is for ([`SessionInfo::id`]).
    #[must_use]
    pub fn session_id(&self) -> u64 {
        self.slot.as_ref().map_or(0, |(slot, _)| slot.session)
    }

    /// Whether an answer can no longer reach the client: the session closed, or the decision
    /// was settled without this responder (the server's decision timeout answered `451 4.3.0`,
    /// a shutdown's grace ended, or — with [`Handler::pipelined_decisions`] — the command was
    /// withdrawn because an earlier verdict took its ground away). Like `oneshot::Sender::is_closed`: `true` is final, `false`
    /// may turn `true` the next moment. A host can check it before costly work for an answer
    /// nobody awaits (a `message_end` whose client left: the message must not be kept, see
    /// [`Handler::message_aborted`]).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.slot
            .as_ref()
            .is_none_or(|(_, claim)| claim.load(Ordering::Acquire) != OPEN)
    }

    /// Gives the answer (see [`Responder::try_respond`] to learn whether it was taken).
    pub fn respond(mut self, verdict: Verdict) {
        let _ = self.send(verdict);
    }

    /// Accepts with the default reply.
    pub fn accept(self) {
        self.respond(Verdict::Accept);
    }

    /// Accepts with the host's reply (2xx, or 3xx for DATA).
    pub fn accept_with(self, reply: Reply) {
        self.respond(Verdict::AcceptWith(reply));
    }

    /// Refuses with the host's reply (4xx or 5xx).
    pub fn reject(self, reply: Reply) {
        self.respond(Verdict::Reject(reply));
    }

    /// Gives the answer unless it can no longer reach the client ([`Responder::is_closed`]).
    /// Returns whether it was taken: `true` means the session applies it; `false` means the
    /// server had already answered for the host (its decision timeout's `451 4.3.0`) or the
    /// session closed, so the client never sees this verdict — for a message, the host must
    /// not keep it (the client will send it again).
    ///
    /// The check and the hand-over are one atomic step, racing the decision timer fairly: of
    /// the two, exactly one answers the client.
    ///
    /// With [`Handler::pipelined_decisions`], a verdict on a command read ahead (a RCPT or
    /// DATA asked for before the verdicts on the commands before it) is taken here but applied
    /// only in its turn, and dropped if those verdicts withdraw the command: a RCPT whose MAIL
    /// was refused, the DATA when every RCPT was. The host knows both from its own answers.
    #[must_use = "false means the client never got this answer"]
    pub fn try_respond(mut self, verdict: Verdict) -> bool {
        self.send(verdict)
    }

    fn send(&mut self, verdict: Verdict) -> bool {
        let Some((slot, claim)) = self.slot.take() else {
            return false;
        };
        if claim
            .compare_exchange(OPEN, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        slot.mailbox.post(Completion {
            token: slot.token,
            session: slot.session,
            decision: slot.decision,
            verdict,
        });
        true
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if self.slot.is_some() {
            let _ = self.send(temporary_failure());
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("session", &self.session_id())
            .finish()
    }
}

/// The answer for a decision the host could not give: `451 4.3.0`, so that the client retries.
pub(crate) fn temporary_failure() -> Verdict {
    Verdict::Reject(smtps_conn::replies::temporary_failure())
}
