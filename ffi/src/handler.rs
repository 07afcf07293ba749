//! The Rust `Handler` behind a C server: it calls the C callbacks inline, on whichever thread
//! turns the worker — a library worker thread, or in the host-poll-loop mode the host's own
//! thread inside `smtps_server_dispatch`. Nothing is queued or copied between threads.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use smtps_proto::{
    AbortReason, ForwardPath, HeloName, MailParameters, RcptParameters, Reply, ReversePath, Verdict,
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

impl Kind {
    /// The reply class that accepts (`None` for a body chunk, which only refuses).
    pub(crate) fn accepting_class(self) -> Option<u8> {
        match self {
            Self::Data => Some(3),
            Self::Body => None,
            _ => Some(2),
        }
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

/// A decision the host has not answered yet, by session id.
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
    pub(crate) registry: Mutex<HashMap<u64, Pending>>,
    /// Sessions whose `on_body` runs now, with the refusal given during the call.
    pub(crate) in_body: Mutex<HashMap<u64, Option<Verdict>>>,
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
            in_body: Mutex::new(HashMap::new()),
            finish: Mutex::new(Finish::default()),
            finished: Condvar::new(),
        }
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn in_body(&self) -> MutexGuard<'_, HashMap<u64, Option<Verdict>>> {
        self.in_body.lock().unwrap_or_else(PoisonError::into_inner)
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
    fn body_in_callback(&self, view: &SessionView, chunk: &[u8]) -> Option<Reply> {
        self.callbacks.on_body?;
        let id = view.id;
        self.in_body().insert(id, None);
        let ret = self.invoke_body(view, chunk);
        let given = self.in_body().remove(&id).flatten();
        match given {
            Some(Verdict::Reject(reply)) => Some(reply),
            Some(_) => None,
            None => {
                (ret == crate::callbacks::SMTPS_ANSWER_REJECT).then(|| Kind::Body.default_refusal())
            }
        }
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
    fn decide(&self, view: &SessionView, cx: &mut Context<'_>, kind: Kind, call: &Call) -> Answer {
        let id = view.id;
        self.registry().insert(
            id,
            Pending::InCallback {
                kind,
                verdict: None,
            },
        );
        let ret = self.invoke(view, call);
        let mut registry = self.registry();
        let given = match registry.remove(&id) {
            Some(Pending::InCallback { verdict, .. }) => verdict,
            _ => None,
        };
        if let Some(verdict) = given {
            return answer_of(verdict);
        }
        if ret != SMTPS_ANSWER_DEFER {
            return answer_of(verdict_for(kind, ret));
        }
        match cx.defer() {
            Some(responder) => {
                registry.insert(id, Pending::Deferred { kind, responder });
                Answer::Deferred
            }
            None => Answer::Reject(::smtps_conn::replies::temporary_failure()),
        }
    }
}

/// The verdict for a callback's return value.
fn verdict_for(kind: Kind, answer: smtps_answer) -> Verdict {
    match answer {
        SMTPS_ANSWER_ACCEPT | SMTPS_ANSWER_DEFER => Verdict::Accept,
        _ => Verdict::Reject(kind.default_refusal()),
    }
}

fn answer_of(verdict: Verdict) -> Answer {
    match verdict {
        Verdict::AcceptWith(reply) => Answer::AcceptWith(reply),
        Verdict::Reject(reply) => Answer::Reject(reply),
        _ => Answer::Accept,
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
}

impl FfiSession {
    fn refresh(&mut self, cx: &Context<'_>) -> &Arc<SessionView> {
        SessionView::refresh(&mut self.view, cx.info());
        &self.view
    }
}

impl Handler for FfiHandler {
    type Session = FfiSession;

    fn connect(&self, cx: &mut Context<'_>) -> (FfiSession, Answer) {
        let session = FfiSession {
            view: Arc::new(SessionView::new(cx.info())),
        };
        let answer = self
            .core
            .decide(&session.view, cx, Kind::Connect, &Call::Connect);
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
        self.core.decide(&session.view, cx, Kind::Helo, &call)
    }

    fn auth(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        credentials: &Credentials<'_>,
    ) -> Answer {
        let view = session.refresh(cx);
        let call = Call::Auth {
            user: credentials.authentication_id.to_owned(),
            password: credentials.password.to_owned(),
            authzid: credentials.authorization_id.to_owned(),
        };
        self.core.decide(view, cx, Kind::Auth, &call)
    }

    fn mail(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        from: &ReversePath<'_>,
        _params: &MailParameters<'_>,
    ) -> Answer {
        let view = session.refresh(cx);
        self.core.decide(
            view,
            cx,
            Kind::Mail,
            &Call::Mail {
                from: from.address(),
            },
        )
    }

    fn rcpt(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        to: &ForwardPath<'_>,
        _params: &RcptParameters<'_>,
    ) -> Answer {
        let view = session.refresh(cx);
        self.core
            .decide(view, cx, Kind::Rcpt, &Call::Rcpt { to: to.address() })
    }

    fn data_start(&self, session: &mut FfiSession, cx: &mut Context<'_>) -> Answer {
        let view = session.refresh(cx);
        self.core.decide(view, cx, Kind::Data, &Call::DataStart)
    }

    fn body_chunk(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        let view = session.refresh(cx);
        match self.core.body_in_callback(view, chunk) {
            Some(reply) => Err(reply),
            None => Ok(()),
        }
    }

    fn message_end(&self, session: &mut FfiSession, cx: &mut Context<'_>, size: u64) -> Answer {
        let view = session.refresh(cx);
        self.core
            .decide(view, cx, Kind::MessageEnd, &Call::MessageEnd(size))
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
        let view = session.refresh(cx);
        // A decision still registered can no longer be answered.
        let stale = self.core.registry().remove(&view.id);
        drop(stale);
        self.core.invoke(view, &Call::Disconnect((&reason).into()));
    }
}
