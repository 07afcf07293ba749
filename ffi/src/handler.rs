//! The Rust `Handler` behind a C server: it calls the C callbacks inline, on whichever thread
//! turns the worker — a library worker thread, or in the host-poll-loop mode the host's own
//! thread inside `smtps_server_dispatch`. Nothing is queued or copied between threads.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use smtps_proto::{
    AbortReason, DecisionKind, ForwardPath, HeloName, MailParameters, RcptParameters, Reply,
    ReversePath, Verdict,
};
use smtps_server::{Answer, CloseReason, Context, Credentials, Handler, Responder};

use crate::callbacks::{
    SMTPS_ANSWER_ACCEPT, SMTPS_ANSWER_DEFER, smtps_abort_reason, smtps_answer, smtps_callbacks,
    smtps_close_reason,
};
use crate::ffi::lend;
use crate::reply::fixed;
use crate::session::{SessionView, smtps_session};
use crate::view::{smtps_bytes, smtps_str};

thread_local! {
    /// How deep the calling thread is in C callbacks (a callback may call back into us).
    static IN_CALLBACK: Cell<u32> = const { Cell::new(0) };
}

/// Whether the calling thread is running a callback.
pub(crate) fn in_callback() -> bool {
    IN_CALLBACK.with(Cell::get) > 0
}

/// The host's `void *userdata`.
#[derive(Clone, Copy)]
pub(crate) struct UserData(pub(crate) *mut c_void);

// SAFETY: the pointer is only handed back to the host's callbacks; `smtps_server_new` documents
// that the host makes what it points to safe to use from the threads callbacks run on.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

/// Which decision an entry of the registry is, for checking the reply's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    Helo,
    Auth,
    Mail,
    Rcpt,
    Data,
    MessageEnd,
    /// Not a decision: a body chunk, during which a reply refuses the message.
    Body,
}

/// The first decision id: decision ids and session ids never look alike, so a session id
/// passed to `smtps_server_reply` by mistake is refused, not taken for a decision.
pub(crate) const FIRST_DECISION_ID: u64 = 1 << 32;

impl Kind {
    /// What the reply must answer (`None` for a body chunk, which only refuses).
    pub(crate) fn decision_kind(self) -> Option<DecisionKind> {
        Some(match self {
            Self::Connect => DecisionKind::Connect,
            Self::Helo => DecisionKind::Helo,
            Self::Auth => DecisionKind::Auth,
            Self::Mail => DecisionKind::Mail,
            Self::Rcpt => DecisionKind::Rcpt,
            Self::Data => DecisionKind::Data,
            Self::MessageEnd => DecisionKind::MessageEnd,
            Self::Body => return None,
        })
    }

    /// The refusal given for `SMTPS_ANSWER_REJECT`.
    fn default_refusal(self) -> Reply {
        match self {
            Self::Connect => fixed(554, "5.7.1", "Access denied"),
            Self::Helo => fixed(550, "5.7.1", "Access denied"),
            Self::Auth => fixed(535, "5.7.8", "Authentication credentials invalid"),
            Self::Mail => fixed(550, "5.7.1", "Sender refused"),
            Self::Rcpt => fixed(550, "5.7.1", "Recipient refused"),
            Self::Data | Self::MessageEnd => fixed(554, "5.7.1", "Message refused"),
            Self::Body => fixed(451, "4.3.0", "Local error in processing"),
        }
    }
}

/// A decision the host has not answered yet, by decision id.
pub(crate) enum Pending {
    /// The callback is running; a reply given meanwhile is kept here.
    InCallback {
        kind: Kind,
        verdict: Option<Verdict>,
    },
    /// Deferred: `smtps_server_reply` completes the responder.
    Deferred { kind: Kind, responder: Responder },
}

/// An event's arguments, for `Core::invoke`.
enum Call {
    Connect,
    Helo {
        name: String,
    },
    Auth {
        user: String,
        password: String,
        authzid: String,
    },
    Mail {
        from: String,
    },
    Rcpt {
        to: String,
    },
    DataStart,
    MessageEnd(u64),
    Aborted(smtps_abort_reason),
    Reset,
    Disconnect(smtps_close_reason),
}

/// The end of a server run on library threads: set by the supervisor, awaited by
/// `smtps_server_stop`.
#[derive(Default)]
pub(crate) struct Finish {
    /// Every worker has stopped.
    pub(crate) finished: bool,
    /// A worker panicked.
    pub(crate) panicked: bool,
}

/// Shared by the handler (on the workers) and the `smtps_server` (on the host's threads).
pub(crate) struct Core {
    callbacks: smtps_callbacks,
    userdata: UserData,
    /// Decisions awaited from the host, by decision id; a body chunk in its callback too.
    pub(crate) registry: Mutex<HashMap<u64, Pending>>,
    /// The next decision id.
    next_decision: AtomicU64,
    pub(crate) finish: Mutex<Finish>,
    /// Signalled when the server finishes.
    pub(crate) finished: Condvar,
}

impl Core {
    pub(crate) fn new(callbacks: smtps_callbacks, userdata: UserData) -> Self {
        Self {
            callbacks,
            userdata,
            registry: Mutex::new(HashMap::new()),
            next_decision: AtomicU64::new(FIRST_DECISION_ID),
            finish: Mutex::new(Finish::default()),
            finished: Condvar::new(),
        }
    }

    /// Whether the host gave an `on_auth` callback (AUTH is offered only then).
    pub(crate) fn has_auth_callback(&self) -> bool {
        self.callbacks.on_auth.is_some()
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn finish_state(&self) -> MutexGuard<'_, Finish> {
        self.finish.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a server run on library threads finished (every worker stopped).
    pub(crate) fn finish(&self, panicked: bool) {
        {
            let mut finish = self.finish_state();
            finish.finished = true;
            finish.panicked |= panicked;
        }
        self.finished.notify_all();
    }

    /// Calls the C callback for `call`, marking the thread as inside a callback.
    fn invoke(&self, view: &SessionView, call: &Call) -> smtps_answer {
        let callbacks = &self.callbacks;
        let ud = self.userdata.0;
        let session = lend::<smtps_session>(view);
        let _guard = CallbackGuard::enter();
        // SAFETY: the host gave these function pointers with `smtps_server_new`, promising
        // they are callable with its userdata from the threads callbacks run on; the session
        // and the views borrow values that outlive the call.
        unsafe {
            match call {
                Call::Connect => callbacks
                    .on_connect
                    .map_or(SMTPS_ANSWER_ACCEPT, |f| f(ud, session)),
                Call::Helo { name } => callbacks.on_helo.map_or(SMTPS_ANSWER_ACCEPT, |f| {
                    f(ud, session, smtps_str::new(name))
                }),
                Call::Auth {
                    user,
                    password,
                    authzid,
                } => callbacks
                    .on_auth
                    .map_or(crate::callbacks::SMTPS_ANSWER_REJECT, |f| {
                        f(
                            ud,
                            session,
                            smtps_str::new(user),
                            smtps_str::new(password),
                            smtps_str::new(authzid),
                        )
                    }),
                Call::Mail { from } => callbacks.on_mail.map_or(SMTPS_ANSWER_ACCEPT, |f| {
                    f(ud, session, smtps_str::new(from))
                }),
                Call::Rcpt { to } => callbacks
                    .on_rcpt
                    .map_or(SMTPS_ANSWER_ACCEPT, |f| f(ud, session, smtps_str::new(to))),
                Call::DataStart => callbacks
                    .on_data_start
                    .map_or(SMTPS_ANSWER_ACCEPT, |f| f(ud, session)),
                Call::MessageEnd(size) => callbacks
                    .on_message_end
                    .map_or(crate::callbacks::SMTPS_ANSWER_REJECT, |f| {
                        f(ud, session, *size)
                    }),
                Call::Aborted(reason) => {
                    if let Some(f) = callbacks.on_message_aborted {
                        f(ud, session, *reason);
                    }
                    SMTPS_ANSWER_ACCEPT
                }
                Call::Reset => {
                    if let Some(f) = callbacks.on_reset {
                        f(ud, session);
                    }
                    SMTPS_ANSWER_ACCEPT
                }
                Call::Disconnect(reason) => {
                    if let Some(f) = callbacks.on_disconnect {
                        f(ud, session, *reason);
                    }
                    SMTPS_ANSWER_ACCEPT
                }
            }
        }
    }

    /// Calls `on_body` with the registry marking a body chunk in progress. Returns the refusal,
    /// if the host refused the message.
    fn body_in_callback(
        &self,
        view: &SessionView,
        last: &mut Option<u64>,
        chunk: &[u8],
    ) -> Option<Reply> {
        self.callbacks.on_body?;
        let id = self.register(view, last, Kind::Body);
        let ret = self.invoke_body(view, chunk);
        view.shared.decision.store(0, Ordering::Relaxed);
        let given = match self.registry().remove(&id) {
            Some(Pending::InCallback { verdict, .. }) => verdict,
            _ => None,
        };
        *last = None;
        match given {
            Some(Verdict::Reject(reply)) => Some(reply),
            Some(_) => None,
            None => match ret {
                SMTPS_ANSWER_ACCEPT | SMTPS_ANSWER_DEFER => None,
                crate::callbacks::SMTPS_ANSWER_REJECT => Some(Kind::Body.default_refusal()),
                other => Some(invalid_answer(view, Kind::Body, other)),
            },
        }
    }

    /// Registers a new decision of `view`'s session, in its callback: the previous one of the
    /// session (`last`) can no longer be answered, and goes.
    fn register(&self, view: &SessionView, last: &mut Option<u64>, kind: Kind) -> u64 {
        let id = self.next_decision.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.registry();
        if let Some(previous) = last.replace(id) {
            registry.remove(&previous);
        }
        registry.insert(
            id,
            Pending::InCallback {
                kind,
                verdict: None,
            },
        );
        drop(registry);
        view.shared.decision.store(id, Ordering::Relaxed);
        id
    }

    fn invoke_body(&self, view: &SessionView, chunk: &[u8]) -> smtps_answer {
        let Some(f) = self.callbacks.on_body else {
            return SMTPS_ANSWER_ACCEPT;
        };
        let session = lend::<smtps_session>(view);
        let _guard = CallbackGuard::enter();
        // SAFETY: as in `invoke`; `chunk` outlives the call.
        unsafe { f(self.userdata.0, session, smtps_bytes::new(chunk)) }
    }

    /// A decision event: calls the host now, on the thread turning the worker.
    fn decide(
        &self,
        view: &SessionView,
        last: &mut Option<u64>,
        cx: &mut Context<'_>,
        kind: Kind,
        call: &Call,
    ) -> Answer {
        let id = self.register(view, last, kind);
        let ret = self.invoke(view, call);
        view.shared.decision.store(0, Ordering::Relaxed);
        let mut registry = self.registry();
        let given = match registry.remove(&id) {
            Some(Pending::InCallback { verdict, .. }) => verdict,
            _ => None,
        };
        if let Some(verdict) = given {
            *last = None;
            return Answer::from(verdict);
        }
        if ret != SMTPS_ANSWER_DEFER {
            *last = None;
            return Answer::from(verdict_for(view, kind, ret));
        }
        registry.insert(
            id,
            Pending::Deferred {
                kind,
                responder: cx.defer(),
            },
        );
        Answer::Deferred
    }
}

/// The answer to a callback return value outside `SMTPS_ANSWER_*` (a host bug): `451 4.3.0`
/// (`421 4.3.0` in place of the greeting), so that the client retries instead of being
/// refused for good, and an error in the log.
fn invalid_answer(view: &SessionView, kind: Kind, answer: smtps_answer) -> Reply {
    let reply = if kind == Kind::Connect {
        ::smtps_conn::replies::greeting_unavailable()
    } else {
        ::smtps_conn::replies::temporary_failure()
    };
    log::error!(
        "smtps-ffi: session={} the {kind:?} callback returned {answer}, which is not an \
         SMTPS_ANSWER_* value: answered {}",
        view.id,
        reply.code().as_u16()
    );
    reply
}

/// The verdict for a callback's return value.
fn verdict_for(view: &SessionView, kind: Kind, answer: smtps_answer) -> Verdict {
    match answer {
        SMTPS_ANSWER_ACCEPT | SMTPS_ANSWER_DEFER => Verdict::Accept,
        crate::callbacks::SMTPS_ANSWER_REJECT => Verdict::Reject(kind.default_refusal()),
        other => Verdict::Reject(invalid_answer(view, kind, other)),
    }
}

/// Marks the thread as inside a callback while it lives.
struct CallbackGuard;

impl CallbackGuard {
    fn enter() -> Self {
        IN_CALLBACK.with(|depth| depth.set(depth.get() + 1));
        Self
    }
}

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        IN_CALLBACK.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// The `Handler` of a C server.
pub(crate) struct FfiHandler {
    pub(crate) core: Arc<Core>,
}

/// The per-session state: the view callbacks see.
pub(crate) struct FfiSession {
    view: Arc<SessionView>,
    /// The session's latest decision id while the registry may hold it.
    last_decision: Option<u64>,
}

impl FfiSession {
    fn refresh(&mut self, cx: &Context<'_>) -> &Arc<SessionView> {
        SessionView::refresh(&mut self.view, cx.info());
        &self.view
    }
}

impl FfiHandler {
    /// Brings the session's view up to date and asks the host for a decision.
    fn decide(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        kind: Kind,
        call: &Call,
    ) -> Answer {
        SessionView::refresh(&mut session.view, cx.info());
        self.core
            .decide(&session.view, &mut session.last_decision, cx, kind, call)
    }

    /// As [`FfiHandler::decide`], with the command's ESMTP parameters readable during the
    /// callback (`smtps_session_param`).
    fn decide_with(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        kind: Kind,
        call: &Call,
        params: crate::params::Params,
    ) -> Answer {
        if !params.is_empty() {
            Arc::make_mut(&mut session.view).params = params;
        }
        let answer = self.decide(session, cx, kind, call);
        if !session.view.params.is_empty() {
            Arc::make_mut(&mut session.view).params.clear();
        }
        answer
    }
}

impl Handler for FfiHandler {
    type Session = FfiSession;

    fn offers_auth(&self) -> bool {
        self.core.has_auth_callback()
    }

    fn connect(&self, cx: &mut Context<'_>) -> (FfiSession, Answer) {
        let mut session = FfiSession {
            view: Arc::new(SessionView::new(cx.info())),
            last_decision: None,
        };
        let answer = self.decide(&mut session, cx, Kind::Connect, &Call::Connect);
        (session, answer)
    }

    fn helo(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        name: &HeloName<'_>,
        extended: bool,
    ) -> Answer {
        session.refresh(cx);
        if session.view.extended != extended {
            Arc::make_mut(&mut session.view).extended = extended;
        }
        let call = Call::Helo {
            name: name.to_string(),
        };
        self.core.decide(
            &session.view,
            &mut session.last_decision,
            cx,
            Kind::Helo,
            &call,
        )
    }

    fn auth(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        credentials: &Credentials<'_>,
    ) -> Answer {
        let call = Call::Auth {
            user: credentials.authentication_id.to_owned(),
            password: credentials.password.to_owned(),
            authzid: credentials.authorization_id.to_owned(),
        };
        self.decide(session, cx, Kind::Auth, &call)
    }

    fn mail(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        from: &ReversePath<'_>,
        params: &MailParameters<'_>,
    ) -> Answer {
        let call = Call::Mail {
            from: from.address(),
        };
        self.decide_with(session, cx, Kind::Mail, &call, crate::params::mail(params))
    }

    fn rcpt(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        to: &ForwardPath<'_>,
        params: &RcptParameters<'_>,
    ) -> Answer {
        let call = Call::Rcpt { to: to.address() };
        self.decide_with(session, cx, Kind::Rcpt, &call, crate::params::rcpt(params))
    }

    fn data_start(&self, session: &mut FfiSession, cx: &mut Context<'_>) -> Answer {
        self.decide(session, cx, Kind::Data, &Call::DataStart)
    }

    fn body_chunk(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        SessionView::refresh(&mut session.view, cx.info());
        match self
            .core
            .body_in_callback(&session.view, &mut session.last_decision, chunk)
        {
            Some(reply) => Err(reply),
            None => Ok(()),
        }
    }

    fn message_end(&self, session: &mut FfiSession, cx: &mut Context<'_>, size: u64) -> Answer {
        self.decide(session, cx, Kind::MessageEnd, &Call::MessageEnd(size))
    }

    fn message_aborted(&self, session: &mut FfiSession, cx: &mut Context<'_>, reason: AbortReason) {
        let view = session.refresh(cx);
        self.core.invoke(view, &Call::Aborted(reason.into()));
    }

    fn reset(&self, session: &mut FfiSession, cx: &mut Context<'_>) {
        let view = session.refresh(cx);
        self.core.invoke(view, &Call::Reset);
    }

    fn disconnect(&self, mut session: FfiSession, cx: &mut Context<'_>, reason: CloseReason) {
        // A decision still registered can no longer be answered.
        if let Some(last) = session.last_decision.take() {
            let stale = self.core.registry().remove(&last);
            drop(stale);
        }
        let view = session.refresh(cx);
        self.core.invoke(view, &Call::Disconnect((&reason).into()));
    }
}
