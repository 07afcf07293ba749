//! The Rust `Handler` behind a C server: it calls the C callbacks on the worker threads, or, in
//! the host-poll-loop mode, queues each event for `smtps_server_dispatch` and defers every
//! decision so that the host thread can answer it.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Deferred: `smtps_server_reply` completes the responder. `seq` tells this decision from
    /// an older one of the same session still in the dispatch queue.
    Deferred {
        kind: Kind,
        seq: u64,
        responder: Responder,
    },
}

/// An event waiting in the queue for `smtps_server_dispatch`.
pub(crate) struct Queued {
    view: Arc<SessionView>,
    seq: u64,
    call: Call,
}

/// An event's arguments, owned (the queue outlives the worker's borrow).
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
    Body(Vec<u8>),
    MessageEnd(u64),
    Aborted(smtps_abort_reason),
    Reset,
    Disconnect(smtps_close_reason),
}

/// The queue of the host-poll-loop mode, and the end-of-server flag (both modes).
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) items: VecDeque<Queued>,
    /// Every worker has stopped.
    pub(crate) finished: bool,
    /// A worker panicked.
    pub(crate) panicked: bool,
}

/// Shared by the handler (on the workers) and the `smtps_server` (on the host's threads).
pub(crate) struct Core {
    callbacks: smtps_callbacks,
    userdata: UserData,
    /// Callbacks are queued for `smtps_server_dispatch` rather than run on the workers.
    pub(crate) polled: AtomicBool,
    pub(crate) registry: Mutex<HashMap<u64, Pending>>,
    /// Sessions whose `on_body` runs now, with the refusal given during the call. Apart from
    /// the registry: in the poll-loop mode the worker may already await the end-of-message
    /// decision of a session whose earlier chunks the host is still being shown.
    pub(crate) in_body: Mutex<HashMap<u64, Option<Verdict>>>,
    pub(crate) queue: Mutex<Queue>,
    /// Signalled when the queue gains an item or the server finishes.
    pub(crate) queue_changed: Condvar,
    /// Written when the queue gains an item or the server finishes: the host polls the other
    /// end.
    signal_write: UnixStream,
    pub(crate) signal_read: UnixStream,
    next_seq: AtomicU64,
}

impl Core {
    pub(crate) fn new(callbacks: smtps_callbacks, userdata: UserData) -> std::io::Result<Self> {
        let (signal_read, signal_write) = UnixStream::pair()?;
        signal_read.set_nonblocking(true)?;
        signal_write.set_nonblocking(true)?;
        Ok(Self {
            callbacks,
            userdata,
            polled: AtomicBool::new(false),
            registry: Mutex::new(HashMap::new()),
            in_body: Mutex::new(HashMap::new()),
            queue: Mutex::new(Queue::default()),
            queue_changed: Condvar::new(),
            signal_write,
            signal_read,
            next_seq: AtomicU64::new(1),
        })
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn in_body(&self) -> MutexGuard<'_, HashMap<u64, Option<Verdict>>> {
        self.in_body.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes whoever waits for the queue: a `smtps_server_stop` on the condition variable, the
    /// host's poll loop on the socket.
    pub(crate) fn notify(&self) {
        self.queue_changed.notify_all();
        // A full socket is readable already; any other failure leaves the condvar path.
        let _ = (&self.signal_write).write(&[1]);
    }

    /// Empties the signalling socket (the host read its readiness).
    pub(crate) fn drain_signal(&self) {
        let mut buf = [0u8; 256];
        while matches!((&self.signal_read).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Marks the server finished (every worker stopped).
    pub(crate) fn finish(&self, panicked: bool) {
        {
            let mut queue = self.queue();
            queue.finished = true;
            queue.panicked |= panicked;
        }
        self.notify();
    }

    fn push(&self, item: Queued) {
        self.queue().items.push_back(item);
        self.notify();
    }

    /// Runs one queued event's callback on the calling (host) thread, and answers its decision
    /// unless the host deferred it.
    pub(crate) fn dispatch(&self, item: Queued) {
        let Queued { view, seq, call } = item;
        let id = view.id;
        let kind = match &call {
            Call::Connect => Kind::Connect,
            Call::Helo { .. } => Kind::Helo,
            Call::Auth { .. } => Kind::Auth,
            Call::Mail { .. } => Kind::Mail,
            Call::Rcpt { .. } => Kind::Rcpt,
            Call::DataStart => Kind::Data,
            Call::MessageEnd(_) => Kind::MessageEnd,
            Call::Body(chunk) => {
                if view
                    .shared
                    .refusal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some()
                {
                    return;
                }
                if let Some(reply) = self.body_in_callback(&view, chunk) {
                    *view
                        .shared
                        .refusal
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(reply);
                }
                return;
            }
            Call::Aborted(_) | Call::Reset | Call::Disconnect(_) => {
                clear_refusal(&view);
                self.invoke(&view, &call);
                return;
            }
        };
        if matches!(kind, Kind::Data) {
            clear_refusal(&view);
        }
        let refused = if matches!(kind, Kind::MessageEnd) {
            view.shared
                .refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        } else {
            None
        };
        let answer = match refused {
            Some(reply) => Some(Verdict::Reject(reply)),
            None => {
                let ret = self.invoke(&view, &call);
                (ret != SMTPS_ANSWER_DEFER).then(|| verdict_for(kind, ret))
            }
        };
        let Some(verdict) = answer else { return };
        let responder = {
            let mut registry = self.registry();
            match registry.get(&id) {
                Some(Pending::Deferred { seq: pending, .. }) if *pending == seq => {
                    match registry.remove(&id) {
                        Some(Pending::Deferred { responder, .. }) => Some(responder),
                        _ => None,
                    }
                }
                // Answered during the callback by `smtps_server_reply`, or the session closed.
                _ => None,
            }
        };
        if let Some(responder) = responder {
            responder.respond(verdict);
        }
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
                Call::Body(chunk) => callbacks.on_body.map_or(SMTPS_ANSWER_ACCEPT, |f| {
                    f(ud, session, smtps_bytes::new(chunk))
                }),
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

    /// A decision event on a worker: calls the host now, or queues it (host-poll-loop mode).
    fn decide(
        &self,
        view: &Arc<SessionView>,
        cx: &mut Context<'_>,
        kind: Kind,
        call: Call,
    ) -> Answer {
        let id = view.id;
        if self.polled.load(Ordering::Acquire) {
            let Some(responder) = cx.defer() else {
                return Answer::Reject(fixed(451, "4.3.0", "Temporary failure, try again later"));
            };
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            // Registered before it is queued, so that a reply during the callback finds it.
            self.registry().insert(
                id,
                Pending::Deferred {
                    kind,
                    seq,
                    responder,
                },
            );
            self.push(Queued {
                view: Arc::clone(view),
                seq,
                call,
            });
            return Answer::Deferred;
        }
        self.registry().insert(
            id,
            Pending::InCallback {
                kind,
                verdict: None,
            },
        );
        let ret = self.invoke(view, &call);
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
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                registry.insert(
                    id,
                    Pending::Deferred {
                        kind,
                        seq,
                        responder,
                    },
                );
                Answer::Deferred
            }
            None => Answer::Reject(fixed(451, "4.3.0", "Temporary failure, try again later")),
        }
    }

    /// A notice (no decision) on a worker: calls the host now, or queues it.
    fn notify_host(&self, view: &Arc<SessionView>, call: Call) {
        if self.polled.load(Ordering::Acquire) {
            self.push(Queued {
                view: Arc::clone(view),
                seq: 0,
                call,
            });
        } else {
            self.invoke(view, &call);
        }
    }
}

fn clear_refusal(view: &SessionView) {
    *view
        .shared
        .refusal
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = None;
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
            .decide(&session.view, cx, Kind::Connect, Call::Connect);
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
        let view = Arc::clone(&session.view);
        let call = Call::Helo {
            name: name.to_string(),
        };
        self.core.decide(&view, cx, Kind::Helo, call)
    }

    fn auth(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        credentials: &Credentials<'_>,
    ) -> Answer {
        let view = Arc::clone(session.refresh(cx));
        let call = Call::Auth {
            user: credentials.authentication_id.to_owned(),
            password: credentials.password.to_owned(),
            authzid: credentials.authorization_id.to_owned(),
        };
        self.core.decide(&view, cx, Kind::Auth, call)
    }

    fn mail(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        from: &ReversePath<'_>,
        _params: &MailParameters<'_>,
    ) -> Answer {
        let view = Arc::clone(session.refresh(cx));
        self.core.decide(
            &view,
            cx,
            Kind::Mail,
            Call::Mail {
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
        let view = Arc::clone(session.refresh(cx));
        self.core
            .decide(&view, cx, Kind::Rcpt, Call::Rcpt { to: to.address() })
    }

    fn data_start(&self, session: &mut FfiSession, cx: &mut Context<'_>) -> Answer {
        let view = Arc::clone(session.refresh(cx));
        self.core.decide(&view, cx, Kind::Data, Call::DataStart)
    }

    fn body_chunk(
        &self,
        session: &mut FfiSession,
        cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        let view = Arc::clone(session.refresh(cx));
        if self.core.polled.load(Ordering::Acquire) {
            let refused = view
                .shared
                .refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(reply) = refused {
                return Err(reply);
            }
            self.core.push(Queued {
                view,
                seq: 0,
                call: Call::Body(chunk.to_vec()),
            });
            return Ok(());
        }
        match self.core.body_in_callback(&view, chunk) {
            Some(reply) => Err(reply),
            None => Ok(()),
        }
    }

    fn message_end(&self, session: &mut FfiSession, cx: &mut Context<'_>, size: u64) -> Answer {
        let view = Arc::clone(session.refresh(cx));
        self.core
            .decide(&view, cx, Kind::MessageEnd, Call::MessageEnd(size))
    }

    fn message_aborted(&self, session: &mut FfiSession, cx: &mut Context<'_>, reason: AbortReason) {
        let view = Arc::clone(session.refresh(cx));
        self.core.notify_host(&view, Call::Aborted(reason.into()));
    }

    fn reset(&self, session: &mut FfiSession, cx: &mut Context<'_>) {
        let view = Arc::clone(session.refresh(cx));
        self.core.notify_host(&view, Call::Reset);
    }

    fn disconnect(&self, mut session: FfiSession, cx: &mut Context<'_>, reason: CloseReason) {
        let view = Arc::clone(session.refresh(cx));
        // A decision still registered can no longer be answered.
        let stale = self.core.registry().remove(&view.id);
        drop(stale);
        self.core
            .notify_host(&view, Call::Disconnect((&reason).into()));
    }
}
