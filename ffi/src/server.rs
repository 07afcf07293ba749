//! `smtps_server`: listeners bound, callbacks registered; run on library threads
//! (`smtps_server_start`), on the calling thread (`smtps_server_run`), or from the host's own
//! poll loop (`smtps_server_start_polled` + `smtps_server_dispatch`, which turns the worker on
//! the host's thread: no queue, no copies).

use std::ffi::{c_char, c_int, c_void};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use ::smtps_server::{PolledServer, RunningServer, Server, ServerHandle};
use smtps_tls::TlsAcceptor;

use crate::callbacks::smtps_callbacks;
use crate::config::smtps_config;
use crate::error::{fail, io_error, server_error, smtps_result, tls_error};
use crate::ffi::{
    Castable, OwnershipBox, byte_slice_mut, check_out, take_box, to_boxed_ptr, try_ref_from_ptr,
    try_str_opt, write_out,
};
use crate::handler::{Core, FIRST_DECISION_ID, FfiHandler, Kind, Pending, UserData, in_callback};
use crate::panic::ffi_boundary;
use crate::reply::verdict;

/// A server: its listeners are bound from `smtps_server_new` on. Free with
/// `smtps_server_free`. Every function taking a server is thread-safe unless it says
/// otherwise.
#[allow(non_camel_case_types)]
pub struct smtps_server {
    _private: [u8; 0],
}

impl Castable for smtps_server {
    type Ownership = OwnershipBox;
    type RustType = FfiServer;
}

/// The Rust value behind `smtps_server`.
pub(crate) struct FfiServer {
    core: Arc<Core>,
    handle: ServerHandle,
    local_addrs: Vec<SocketAddr>,
    tls: Option<Arc<TlsAcceptor>>,
    state: Mutex<State>,
    /// The worker of the poll-loop mode, turned by `smtps_server_dispatch` (one caller at a
    /// time). Apart from `state`, which callbacks may need while a turn holds this.
    polled: Mutex<Option<PolledServer<FfiHandler>>>,
}

enum State {
    /// Bound, not serving yet.
    Bound(Box<Server<FfiHandler>>),
    /// Serving on library threads; the supervisor joins them.
    Threads(Option<JoinHandle<()>>),
    /// Serving from `smtps_server_run` on a host thread.
    Caller,
    /// Serving from the host's poll loop (`smtps_server_dispatch`).
    Polled,
    /// A shutdown was requested (`smtps_server_shutdown`).
    ShuttingDown(Option<JoinHandle<()>>),
    /// `smtps_server_stop` is waiting for the end.
    Stopping,
    /// Over.
    Stopped,
}

impl FfiServer {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn polled(&self) -> MutexGuard<'_, Option<PolledServer<FfiHandler>>> {
        self.polled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the bound server, if the server is still in that phase.
    fn take_bound(&self, next: State) -> Result<Box<Server<FfiHandler>>, smtps_result> {
        let mut state = self.state();
        match std::mem::replace(&mut *state, next) {
            State::Bound(server) => Ok(server),
            other => {
                let result = phase_error(&other);
                *state = other;
                Err(result)
            }
        }
    }

    /// Serves from the host's poll loop: returns the descriptor to poll.
    fn start_polled(&self) -> Result<std::os::fd::RawFd, smtps_result> {
        let server = self.take_bound(State::Polled)?;
        let polled = server.into_polled();
        let fd = polled.fd();
        *self.polled() = Some(polled);
        Ok(fd)
    }

    /// One turn of the poll-loop mode's worker, waiting at most `timeout`. Returns the
    /// readiness events served, or `None` once the server has finished.
    fn turn(&self, timeout: Duration) -> Result<Option<usize>, smtps_result> {
        let mut polled = self.polled();
        let Some(server) = polled.as_mut() else {
            return Err(fail(
                smtps_result::WrongState,
                "the server was not started with smtps_server_start_polled",
            ));
        };
        if server.is_finished() {
            return Ok(None);
        }
        match server.turn(timeout) {
            Ok(served) => Ok(Some(served)),
            Err(error) => Err(server_error(&error)),
        }
    }

    /// Starts the workers on library threads, with a supervisor thread that marks the end.
    fn start(&self) -> smtps_result {
        let server = match self.take_bound(State::Stopped) {
            Ok(server) => server,
            Err(error) => return error,
        };
        let mut state = self.state();
        let running = match server.start() {
            Ok(running) => running,
            Err(error) => {
                self.core.finish(false);
                return server_error(&error);
            }
        };
        let core = Arc::clone(&self.core);
        let supervisor = std::thread::Builder::new()
            .name("smtps-supervisor".into())
            .spawn(move || supervise(&core, running));
        match supervisor {
            Ok(thread) => {
                *state = State::Threads(Some(thread));
                smtps_result::Ok
            }
            Err(error) => {
                // The workers run without a supervisor; stop them.
                self.handle.shutdown(Duration::ZERO);
                self.core.finish(false);
                io_error("starting the supervisor thread", &error)
            }
        }
    }

    /// Requests a shutdown. Returns the supervisor to join, if any, or an error.
    fn request_stop(
        &self,
        grace: Duration,
        waiting: bool,
    ) -> Result<Option<JoinHandle<()>>, smtps_result> {
        let mut state = self.state();
        match std::mem::replace(&mut *state, State::Stopped) {
            State::Bound(server) => {
                drop(server);
                self.core.finish(false);
                Ok(None)
            }
            State::Threads(thread) => {
                self.handle.shutdown(grace);
                if waiting {
                    *state = State::Stopping;
                    Ok(thread)
                } else {
                    *state = State::ShuttingDown(thread);
                    Ok(None)
                }
            }
            State::Caller | State::Polled => {
                self.handle.shutdown(grace);
                *state = if waiting {
                    State::Stopping
                } else {
                    State::ShuttingDown(None)
                };
                Ok(None)
            }
            State::ShuttingDown(thread) if waiting => {
                *state = State::Stopping;
                Ok(thread)
            }
            other @ (State::ShuttingDown(_) | State::Stopping | State::Stopped) => {
                *state = other;
                Err(fail(
                    smtps_result::AlreadyStopped,
                    "the server was already stopped",
                ))
            }
        }
    }

    /// Waits for every worker to stop; in the poll-loop mode turns the worker on the calling
    /// thread meanwhile (the remaining callbacks run there). Returns whether a worker panicked.
    fn wait_finished(&self) -> bool {
        if self.polled().is_some() {
            loop {
                let timeout = self
                    .polled()
                    .as_ref()
                    .map_or(Duration::ZERO, PolledServer::next_timeout);
                match self.turn(timeout.min(Duration::from_millis(100))) {
                    Ok(Some(_)) => {}
                    // Finished; or a poll failure, which leaves nothing to wait for.
                    Ok(None) | Err(_) => return false,
                }
            }
        }
        let mut finish = self.core.finish_state();
        while !finish.finished {
            finish = self
                .core
                .finished
                .wait(finish)
                .unwrap_or_else(PoisonError::into_inner);
        }
        finish.panicked
    }

    fn stop(&self, grace: Duration) -> smtps_result {
        if in_callback() {
            return fail(
                smtps_result::InCallback,
                "smtps_server_stop waits for the callbacks to end: use smtps_server_shutdown in a callback",
            );
        }
        let supervisor = match self.request_stop(grace, true) {
            Ok(thread) => thread,
            Err(error) => return error,
        };
        let panicked = self.wait_finished();
        if let Some(thread) = supervisor {
            let _ = thread.join();
        }
        *self.state() = State::Stopped;
        if panicked {
            fail(smtps_result::WorkerPanicked, "a worker thread panicked")
        } else {
            smtps_result::Ok
        }
    }
}

fn supervise(core: &Core, running: RunningServer) {
    let panicked = running.join().is_err();
    core.finish(panicked);
}

/// The error for a start in the wrong phase.
fn phase_error(state: &State) -> smtps_result {
    match state {
        State::ShuttingDown(_) | State::Stopping | State::Stopped => {
            fail(smtps_result::ServerStopped, "the server has been stopped")
        }
        _ => fail(smtps_result::WrongState, "the server was started already"),
    }
}

/// Makes a server from `config`: builds TLS (reading the certificate files) and binds every
/// listener, so that a bad file or a busy port fails here, named in `smtps_last_error()`.
/// Nothing is served until a start function is called. `callbacks` is copied; `userdata` is
/// passed to every callback, from the threads callbacks run on (see `smtps_callbacks`): what
/// it points to must stay valid until `smtps_server_free` returns and be safe to use from
/// those threads. `config` can be freed afterwards.
///
/// Starts no thread (only `smtps_server_start` and `smtps_server_run` do; see there for the
/// signal mask), so a host may still fork after it.
///
/// On success `*server_out` receives the server; on failure it is left alone.
/// `callbacks->on_message_end` is required (`SMTPS_RESULT_INVALID_PARAMETER`).
///
/// # Safety
/// `config` and `callbacks` are NULL or valid; `server_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_new(
    config: *const smtps_config,
    callbacks: *const smtps_callbacks,
    userdata: *mut c_void,
    server_out: *mut *mut smtps_server,
) -> smtps_result {
    ffi_boundary! {
        let config = try_ref_from_ptr!(config);
        // SAFETY: a NULL-or-valid pointer to a `smtps_callbacks`, by contract.
        let Some(callbacks) = (unsafe { callbacks.as_ref() }).copied() else {
            return crate::panic::NullParameterOrDefault::value();
        };
        check_out!(server_out);
        if callbacks.on_message_end.is_none() {
            return fail(smtps_result::InvalidParameter, "callbacks->on_message_end is required");
        }
        let server_config = match config.server_config() {
            Ok(server_config) => server_config,
            Err(error) => return error,
        };
        let tls = server_config.tls.clone();
        let core = Arc::new(Core::new(callbacks, UserData(userdata)));
        let handler = FfiHandler { core: Arc::clone(&core) };
        let server = match Server::bind(server_config, handler) {
            Ok(server) => server,
            Err(error) => return server_error(&error),
        };
        let value = FfiServer {
            core,
            handle: server.handle(),
            local_addrs: server.local_addrs().to_vec(),
            tls,
            state: Mutex::new(State::Bound(Box::new(server))),
            polled: Mutex::new(None),
        };
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_out(server_out, to_boxed_ptr::<smtps_server>(value)) };
        smtps_result::Ok
    }
}

/// Stops the server if it runs (as `smtps_server_stop` with no grace: open sessions get
/// `421 4.3.2`, `on_message_aborted` and `on_disconnect`), waits for its threads, and frees
/// it. NULL is a no-op. Must not be called from a callback (it would wait for itself); if it
/// is, the server is only shut down and its memory leaked.
///
/// No `smtps_server_stop` is needed first: after one, or after `smtps_server_run` returned or
/// `smtps_server_dispatch` gave `SMTPS_RESULT_SERVER_STOPPED`, it only frees. After a
/// `smtps_server_shutdown` still under way it waits for that shutdown, grace included (the
/// grace is not cut to 0). In the poll-loop mode the remaining callbacks run on the calling
/// thread during the call, as in `smtps_server_stop`.
///
/// # Safety
/// `server` is NULL or from `smtps_server_new` and not freed before; no other thread uses it
/// during or after the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_free(server: *mut smtps_server) {
    ffi_boundary! {
        // SAFETY: a pointer from `smtps_server_new`, or NULL, by contract.
        let Some(server) = (unsafe { take_box(server) }) else { return };
        if in_callback() {
            let _ = server.request_stop(Duration::ZERO, false);
            std::mem::forget(server);
            return;
        }
        let _ = server.stop(Duration::ZERO);
        // Decisions never answered: their responders answer 451 as they drop.
        server.core.registry().clear();
    }
}

/// Serves on library threads (the workers) and returns at once. Callbacks run on the workers.
///
/// This call creates the library's threads: one per worker (`smtps_config_set_workers`) and a
/// supervisor. They inherit the calling thread's signal mask, as every `pthread_create` does:
/// a host that takes signals with `sigwait` (or a `signalfd`) blocks them with
/// `pthread_sigmask` before this call, so that no library thread receives them.
///
/// `SMTPS_RESULT_WRONG_STATE` if started already, `SMTPS_RESULT_SERVER_STOPPED` after a stop.
///
/// # Safety
/// `server` is NULL or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_start(server: *const smtps_server) -> smtps_result {
    ffi_boundary! { try_ref_from_ptr!(server).start() }
}

/// Serves from the host's own poll loop, on the host's thread: one worker serves every
/// connection, and it runs only inside `smtps_server_dispatch` (the listeners of further
/// workers set with `smtps_config_set_workers` are closed). Every callback runs on the thread
/// calling `smtps_server_dispatch`, inline: nothing is queued or copied (a message body goes
/// from the socket to `on_body` chunk by chunk, as in the threaded mode).
///
/// `*fd_out` receives a file descriptor (owned by the server: do not close or read it) that
/// polls readable (`POLLIN`) whenever the server has work: a client, a reply given from
/// another thread, a shutdown. Call `smtps_server_dispatch` then, and also once
/// `smtps_server_next_timeout_ms` milliseconds have passed (timers). Starts no thread.
///
/// A deferred decision answered with `smtps_server_reply` on the dispatching thread itself,
/// between two dispatches, wakes the loop the same way: the descriptor polls readable at once
/// (`smtps_server_next_timeout_ms` does not change), so the host's next `poll()` returns and
/// the next dispatch sends the reply; no extra dispatch is needed.
///
/// # Safety
/// `server` is NULL or a live server; `fd_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_start_polled(
    server: *const smtps_server,
    fd_out: *mut c_int,
) -> smtps_result {
    ffi_boundary! {
        let server = try_ref_from_ptr!(server);
        check_out!(fd_out);
        match server.start_polled() {
            Ok(fd) => {
                // SAFETY: checked non-NULL above; writable by contract.
                unsafe { write_out(fd_out, fd) };
                smtps_result::Ok
            }
            Err(error) => error,
        }
    }
}

/// Serves what is ready — accepts, reads, callbacks, writes, due timers — on the calling
/// thread, without blocking, and sets `*dispatched_out` to the number of readiness events
/// served. Call it when the descriptor from `smtps_server_start_polled` polls readable and
/// when `smtps_server_next_timeout_ms` has passed (calling it more often is harmless).
///
/// Returns `SMTPS_RESULT_SERVER_STOPPED` once the server has finished (after a shutdown,
/// every session closed): the end of the host's loop. `SMTPS_RESULT_WRONG_STATE` if the
/// server was not started with `smtps_server_start_polled`; `SMTPS_RESULT_IN_CALLBACK` from a
/// callback. Calls from several threads are serialised.
///
/// # Safety
/// `server` is NULL or a live server; `dispatched_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_dispatch(
    server: *const smtps_server,
    dispatched_out: *mut usize,
) -> smtps_result {
    ffi_boundary! {
        let server = try_ref_from_ptr!(server);
        check_out!(dispatched_out);
        if in_callback() {
            return fail(smtps_result::InCallback, "smtps_server_dispatch called from a callback");
        }
        match server.turn(Duration::ZERO) {
            Ok(Some(served)) => {
                // SAFETY: checked non-NULL above; writable by contract.
                unsafe { write_out(dispatched_out, served) };
                smtps_result::Ok
            }
            Ok(None) => fail(smtps_result::ServerStopped, "the server has finished"),
            Err(error) => error,
        }
    }
}

/// Milliseconds until `smtps_server_dispatch` must be called even if the descriptor from
/// `smtps_server_start_polled` stays quiet (the next timer: a client's timeout, a host's
/// decision timeout, the end of a shutdown's grace); 0 when work is left over from the last
/// dispatch; at most 1000. Use it as the host's `poll()` timeout. -1 if the server is not in
/// the poll-loop mode (or NULL).
///
/// # Safety
/// `server` is NULL or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_next_timeout_ms(server: *const smtps_server) -> i64 {
    ffi_boundary! {
        // SAFETY: see `try_ref_from_ptr`; NULL has no timer.
        let Some(server) = (unsafe { crate::ffi::try_ref(server) }) else {
            return -1;
        };
        match server.polled().as_ref() {
            Some(polled) => {
                let left = polled.next_timeout();
                // Round up: waking a millisecond early would find nothing due yet.
                i64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
            }
            None => -1,
        }
    }
}

/// Serves on the calling thread (plus one library thread per further worker) until the
/// server is shut down — by `smtps_server_shutdown` from a callback or another thread, or
/// `smtps_server_stop` from another thread. Callbacks run on the calling thread and the
/// other workers. The further workers' threads are created by this call and inherit the
/// calling thread's signal mask (see `smtps_server_start`). Once it has returned,
/// `smtps_server_stop` gives `SMTPS_RESULT_ALREADY_STOPPED`; `smtps_server_free` is enough.
///
/// # Safety
/// `server` is NULL or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_run(server: *const smtps_server) -> smtps_result {
    ffi_boundary! {
        let server = try_ref_from_ptr!(server);
        let bound = {
            let mut state = server.state();
            match std::mem::replace(&mut *state, State::Caller) {
                State::Bound(bound) => bound,
                other => {
                    let result = phase_error(&other);
                    *state = other;
                    return result;
                }
            }
        };
        let result = bound.run();
        server.core.finish(matches!(result, Err(::smtps_server::Error::WorkerPanicked)));
        {
            let mut state = server.state();
            if matches!(*state, State::Caller | State::ShuttingDown(_)) {
                *state = State::Stopped;
            }
        }
        match result {
            Ok(()) => smtps_result::Ok,
            Err(error) => server_error(&error),
        }
    }
}

/// Starts a graceful shutdown and returns at once; allowed in callbacks. Listeners close;
/// idle sessions get `421 4.3.2`; transactions in flight may finish (deferred replies still
/// work) until `grace_ms` milliseconds have passed, then they are closed and the host told
/// (`on_message_aborted`, `on_disconnect`).
///
/// `SMTPS_RESULT_ALREADY_STOPPED` if a shutdown or stop was requested before.
///
/// The end of a poll loop (`smtps_server_start_polled`) whose host answers deferred decisions
/// from the loop (a commit queue drained after each dispatch): call this, keep polling,
/// dispatching and answering until `smtps_server_dispatch` returns
/// `SMTPS_RESULT_SERVER_STOPPED`, then `smtps_server_free`. Not `smtps_server_stop`: it blocks
/// the loop, so the decisions it would answer wait until the grace ends and are aborted.
///
/// # Safety
/// `server` is NULL or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_shutdown(
    server: *const smtps_server,
    grace_ms: u32,
) -> smtps_result {
    ffi_boundary! {
        let server = try_ref_from_ptr!(server);
        match server.request_stop(Duration::from_millis(grace_ms.into()), false) {
            Ok(_) => smtps_result::Ok,
            Err(error) => error,
        }
    }
}

/// Shuts down as `smtps_server_shutdown` does and waits until every worker has stopped and
/// every callback has returned; `on_disconnect` has then been called for every session. In
/// the poll-loop mode the remaining callbacks run on the calling thread meanwhile, inside this
/// call: work the host does in its own loop between dispatches (answering deferred decisions
/// from a queue) does not happen, so such decisions wait until `grace_ms` ends and their
/// messages are aborted. Such a host uses `smtps_server_shutdown` and keeps dispatching until
/// `SMTPS_RESULT_SERVER_STOPPED` instead. A server never started just closes its listeners.
///
/// After `smtps_server_shutdown` it waits for that shutdown to finish (its grace, not
/// `grace_ms`) and returns `SMTPS_RESULT_OK`; likewise, at once, after `smtps_server_dispatch`
/// gave `SMTPS_RESULT_SERVER_STOPPED`. Not needed before `smtps_server_free`, which stops the
/// server itself.
///
/// `SMTPS_RESULT_ALREADY_STOPPED` for a second stop and after `smtps_server_run` returned;
/// `SMTPS_RESULT_IN_CALLBACK` from a callback (use `smtps_server_shutdown` there).
///
/// # Safety
/// `server` is NULL or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_stop(
    server: *const smtps_server,
    grace_ms: u32,
) -> smtps_result {
    ffi_boundary! {
        try_ref_from_ptr!(server).stop(Duration::from_millis(grace_ms.into()))
    }
}

/// Answers one decision, from any thread, once: during its callback (a reply with text of
/// the host's own) or after the callback returned `SMTPS_ANSWER_DEFER`. `decision_id` is
/// `smtps_session_decision_id(session)` read in that callback: every decision has its own, so
/// a reply can only ever answer the command it was meant for.
///
/// `code` 0 accepts with the default reply (`enhanced` and `text` ignored). Otherwise the code
/// must be one RFC 5321 §4.3.2 allows for the command: `220` greets (`on_connect`, refused
/// only with `554`, or `421` which closes), `235` accepts AUTH, `354` DATA, `250` or `251`
/// RCPT, `250` the rest; 4xx and 5xx refuse (`421` also closes). `enhanced` is NULL or an
/// RFC 3463 status such as `"2.0.0"` of the code's class; `text` is NULL (a default text) or
/// UTF-8, one line (CR and LF are replaced). Both are copied. In `on_body`, a 4xx/5xx refuses
/// the message (nothing else is accepted there).
///
/// Returns `SMTPS_RESULT_UNKNOWN_DECISION` if that decision is not awaited: it was answered
/// already, the library answered it itself (`451 4.3.0` after `SMTPS_TIMEOUT_DECISION`, `421`
/// at shutdown), its session closed, or the number is not a decision id (a session id passed
/// by mistake); nothing changes then. `SMTPS_RESULT_INVALID_REPLY` if the reply is malformed
/// or does not answer the command (the decision then still waits);
/// `SMTPS_RESULT_SERVER_STOPPED` after a stop.
///
/// For `on_message_end`: any result other than `SMTPS_RESULT_OK` means this reply did not
/// give the client a `250`: delete the stored copy (after `SMTPS_RESULT_INVALID_REPLY` the
/// decision still waits: reply again correctly, or delete the copy and let
/// `SMTPS_TIMEOUT_DECISION` answer `451 4.3.0`). `SMTPS_RESULT_OK` means the reply was handed
/// to the session; `on_message_aborted` for that session can still follow when a shutdown's
/// grace ends at the same moment, and then it wins: the client never got the `250`, delete
/// the copy. So a host tracks `on_message_aborted` for commits in flight too.
///
/// Given inside the decision's own callback (and answered `SMTPS_RESULT_OK`), the reply wins
/// and the callback's return value is ignored: return `SMTPS_ANSWER_ACCEPT` or any other
/// value, nothing is logged. If the reply failed, the return value decides as usual.
///
/// # Safety
/// `server` is NULL or a live server; `enhanced` and `text` are NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_reply(
    server: *const smtps_server,
    decision_id: u64,
    code: u16,
    enhanced: *const c_char,
    text: *const c_char,
) -> smtps_result {
    ffi_boundary! {
        let server = try_ref_from_ptr!(server);
        let enhanced = try_str_opt!(enhanced);
        let text = try_str_opt!(text);
        if matches!(*server.state(), State::Stopped) {
            return fail(smtps_result::ServerStopped, "the server has been stopped");
        }
        if decision_id < FIRST_DECISION_ID {
            return fail(
                smtps_result::UnknownDecision,
                format_args!("{decision_id} is not a decision id: pass smtps_session_decision_id(session), read in the callback"),
            );
        }
        let mut registry = server.core.registry();
        let kind = match registry.get(&decision_id) {
            Some(Pending::InCallback { verdict: None, kind }) => *kind,
            Some(Pending::Deferred { kind, responder }) if !responder.is_closed() => *kind,
            Some(Pending::Deferred { .. }) => {
                // The library answered it (decision timeout, shutdown): the client has moved on.
                registry.remove(&decision_id);
                return fail(
                    smtps_result::UnknownDecision,
                    format_args!("decision {decision_id} was answered by the library (timeout or shutdown)"),
                );
            }
            _ => {
                return fail(
                    smtps_result::UnknownDecision,
                    format_args!("decision {decision_id} is not awaited (answered already, or its session closed)"),
                );
            }
        };
        let verdict = match verdict(code, enhanced, text, kind.decision_kind()) {
            Ok(smtps_proto::Verdict::AcceptWith(_)) if kind == Kind::Body =>
            {
                return fail(smtps_result::InvalidReply, "during a body chunk only a 4xx or 5xx reply refuses the message");
            }
            Ok(verdict) => verdict,
            Err(error) => return error,
        };
        match registry.get_mut(&decision_id) {
            Some(Pending::InCallback { verdict: slot, .. }) => {
                *slot = Some(verdict);
            }
            _ => {
                if let Some(Pending::Deferred { responder, .. }) = registry.remove(&decision_id) {
                    drop(registry);
                    // The decision timer may have fired meanwhile: exactly one of the two
                    // answers the client, and the host must know which.
                    if !responder.try_respond(verdict) {
                        return fail(
                            smtps_result::UnknownDecision,
                            format_args!("decision {decision_id} was answered by the library (timeout or shutdown)"),
                        );
                    }
                }
            }
        }
        smtps_result::Ok
    }
}

/// Writes the server's counters into `buf` in the Prometheus text exposition format 0.0.4
/// (what a `/metrics` endpoint serves), NUL-terminated, and sets `*needed_out` to the text's
/// length (without the NUL). Every name starts with `smtps_`: sessions by listener and outcome,
/// TLS handshakes by version and failures by reason, messages and octets accepted, messages
/// refused by reply class and dropped by reason, AUTH results, connection-limit hits, open
/// connections, and a histogram of the host's decision latency. Counters only grow while the
/// server lives. Thread-safe; also from callbacks.
///
/// `SMTPS_RESULT_BUFFER_TOO_SMALL` when `len` is not more than the text's length: nothing is
/// written but `*needed_out`; call again with a buffer of `*needed_out + 1` octets (`buf` may
/// be NULL when `len` is 0, to ask the size).
///
/// # Safety
/// `server` is NULL or a live server; `buf` is NULL with `len` 0, or valid for `len` writable
/// bytes; `needed_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_metrics(
    server: *const smtps_server,
    buf: *mut c_char,
    len: usize,
    needed_out: *mut usize,
) -> smtps_result {
    ffi_boundary! {
        let server = try_ref_from_ptr!(server);
        check_out!(needed_out);
        let text = server.handle.metrics().to_prometheus();
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_out(needed_out, text.len()) };
        if len <= text.len() {
            return fail(
                smtps_result::BufferTooSmall,
                format_args!("the metrics need {} octets and a NUL; the buffer has {len}", text.len()),
            );
        }
        // SAFETY: `buf` is valid for `len` writable bytes by contract (len > 0 here).
        let Some(out) = (unsafe { byte_slice_mut(buf.cast::<u8>(), len) }) else {
            return crate::panic::NullParameterOrDefault::value();
        };
        out[..text.len()].copy_from_slice(text.as_bytes());
        out[text.len()] = 0;
        smtps_result::Ok
    }
}

/// Sets `*port_out` to the port listener `index` (in `smtps_config_add_listener` order) is
/// bound to: the real one where port 0 was asked for. `SMTPS_RESULT_INVALID_PARAMETER` for an
/// index out of range.
///
/// # Safety
/// `server` is NULL or a live server; `port_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_local_port(
    server: *const smtps_server,
    index: usize,
    port_out: *mut u16,
) -> smtps_result {
    ffi_boundary! {
        let server = try_ref_from_ptr!(server);
        check_out!(port_out);
        let Some(addr) = server.local_addrs.get(index) else {
            return fail(smtps_result::InvalidParameter, format_args!("no listener {index}"));
        };
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { write_out(port_out, addr.port()) };
        smtps_result::Ok
    }
}

/// Reads the certificate files again (after a renewal): new TLS handshakes use them, those in
/// progress keep the old ones. On failure (named in `smtps_last_error()`) the old certificates
/// stay in use.
///
/// # Safety
/// `server` is NULL or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn smtps_server_reload_certificates(
    server: *const smtps_server,
) -> smtps_result {
    ffi_boundary! {
        let server = try_ref_from_ptr!(server);
        match &server.tls {
            Some(tls) => match tls.reload() {
                Ok(()) => smtps_result::Ok,
                Err(error) => tls_error(&error),
            },
            None => fail(smtps_result::TlsNotConfigured, "the server has no certificate"),
        }
    }
}
