//! The host's side of a connection: events become [`Handler`] calls, answers (now or
//! deferred) become decisions, and what they change is recorded in [`SessionInfo`].

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use mio::Token;
use smtps_conn::{CloseReason, Connection, replies};
use smtps_proto::{DecisionId, Event, Verdict};

use crate::handler::{
    Answer, Context, Credentials, DeferSlot, GateSlot, Handler, Mailbox, OPEN, SETTLED,
    SessionInfo, temporary_failure,
};
use crate::metrics::Metrics;
use crate::server::Shared;
use crate::worker_io::WorkerIo;

/// The host's side of a connection: what it knows, its state, the decision it deferred.
pub(crate) struct HostSide<S> {
    pub(crate) info: SessionInfo,
    pub(crate) host: Option<S>,
    /// The decisions the host deferred, in command order: one, or several with
    /// [`Handler::pipelined_decisions`].
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) over_limit: bool,
    /// The address counted in the per-address limit: `None` while a PROXY header is awaited
    /// (the balancer's address must not count, the client's is not known yet).
    pub(crate) counted_ip: Option<IpAddr>,
    /// A PROXY header is expected and not applied yet.
    pub(crate) awaiting_header: bool,
    /// [`InputGate`](crate::InputGate)s taken and not resumed yet: while any is, input is
    /// paused ([`Connection::pause_input`]).
    pub(crate) input_holds: u32,
}

impl<S> HostSide<S> {
    /// Drops every outstanding decision (the session closed): no responder can answer any.
    pub(crate) fn settle_all(&mut self) {
        for pending in self.pending.drain(..) {
            pending.settle();
        }
    }

    /// The deferred decisions older than `timeout` at `now` that the server may answer in the
    /// host's place: those whose responder has not answered meanwhile (an answer in the
    /// mailbox stands, not the timer's). Each one returned is settled: its responder can no
    /// longer answer.
    pub(crate) fn overdue(&self, now: Instant, timeout: Duration) -> Vec<DecisionId> {
        self.pending
            .iter()
            .filter(|pending| now.duration_since(pending.since) >= timeout)
            .filter(|pending| {
                pending.claim.as_ref().is_none_or(|claim| {
                    claim
                        .compare_exchange(OPEN, SETTLED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
            })
            .map(|pending| pending.decision)
            .collect()
    }
}

/// A decision the host deferred.
pub(crate) struct Pending {
    pub(crate) decision: DecisionId,
    pub(crate) since: Instant,
    update: Update,
    /// The claim shared with the decision's [`Responder`](crate::Responder), if one was taken.
    claim: Option<Arc<AtomicU8>>,
}

impl Pending {
    /// No responder can answer this decision any more.
    fn settle(&self) {
        if let Some(claim) = &self.claim {
            claim.store(SETTLED, Ordering::Release);
        }
    }
}

/// What a decision changes in [`SessionInfo`] once accepted.
pub(crate) enum Update {
    None,
    Helo(String, bool),
    Auth(String),
    Mail(String),
    Rcpt(String),
    /// The end of a message of this many octets.
    MessageEnd(u64),
}

/// Drains the connection's events, asking the host. Returns whether any came.
pub(crate) fn dispatch<H: Handler>(
    shared: &Shared<H>,
    conn: &mut Connection,
    side: &mut HostSide<H::Session>,
    mailbox: &Arc<Mailbox>,
    token: Token,
    worker_io: &mut Option<Box<dyn WorkerIo>>,
) -> bool {
    let mut any = false;
    let handler = &shared.handler;
    // The host sees the client's address and what TLS negotiated from the first event on.
    adopt_proxy_header(shared, conn, side);
    capture_tls(conn, &mut side.info);
    loop {
        let HostSide {
            host,
            info,
            pending,
            over_limit,
            input_holds,
            ..
        } = &mut *side;
        // What the last event ended (RSET, STARTTLS, a dropped message) shows from here on.
        sync_envelope(conn, info);
        let Some(event) = conn.poll_event() else {
            break;
        };
        any = true;
        let decision = event.decision();
        let mut cx = Context {
            info,
            worker_io: worker_io.as_deref_mut().map(|io| io as &mut dyn WorkerIo),
            defer: decision.map(|decision| DeferSlot {
                mailbox: Arc::clone(mailbox),
                token,
                session: info.id,
                decision,
            }),
            deferred: None,
            gate: Some(GateSlot {
                mailbox: Arc::clone(mailbox),
                token,
                session: info.id,
            }),
            paused: 0,
        };
        let mut update = Update::None;
        let mut refusal = None;
        let answer = match event {
            Event::Connect { .. } if *over_limit => {
                conn.close(&replies::too_many_connections(), CloseReason::Limit);
                continue;
            }
            Event::Connect { .. } => {
                let (state, answer) = handler.connect(&mut cx);
                *host = Some(state);
                Some(answer)
            }
            Event::Helo { extended, name, .. } => {
                update = Update::Helo(name.to_string(), extended);
                host.as_mut()
                    .map(|h| handler.helo(h, &mut cx, &name, extended))
            }
            Event::Auth {
                mechanism,
                authorization_id,
                authentication_id,
                password,
                ..
            } => {
                update = Update::Auth(authentication_id.to_owned());
                let credentials = Credentials {
                    mechanism,
                    authorization_id,
                    authentication_id,
                    password,
                };
                host.as_mut()
                    .map(|h| handler.auth(h, &mut cx, &credentials))
            }
            Event::Mail { from, params, .. } => {
                update = Update::Mail(from.address());
                host.as_mut()
                    .map(|h| handler.mail(h, &mut cx, &from, &params))
            }
            Event::Rcpt { to, params, .. } => {
                update = Update::Rcpt(to.address());
                host.as_mut()
                    .map(|h| handler.rcpt(h, &mut cx, &to, &params))
            }
            Event::DataStart { .. } => host.as_mut().map(|h| handler.data_start(h, &mut cx)),
            Event::BodyChunk(chunk) => {
                if let Some(h) = host.as_mut() {
                    refusal = handler.body_chunk(h, &mut cx, chunk).err();
                }
                None
            }
            Event::MessageEnd { size, .. } => {
                update = Update::MessageEnd(size);
                log::info!("smtps: session={} event=message size={size}", cx.info.id);
                host.as_mut().map(|h| handler.message_end(h, &mut cx, size))
            }
            Event::MessageAborted { reason } => {
                shared.control.metrics.message_aborted(reason);
                log::info!(
                    "smtps: session={} event=aborted reason={reason:?}",
                    cx.info.id
                );
                if let Some(h) = host.as_mut() {
                    handler.message_aborted(h, &mut cx, reason);
                }
                None
            }
            Event::Reset => {
                if let Some(h) = host.as_mut() {
                    handler.reset(h, &mut cx);
                }
                None
            }
            Event::StartTls { discarded } => {
                if discarded > 0 {
                    log::warn!(
                        "smtps: session={} event=starttls discarded={discarded} (pipelined after STARTTLS, CVE-2011-0411)",
                        cx.info.id
                    );
                }
                None
            }
            Event::BareLineEnding { in_body, rejected } => {
                log::info!(
                    "smtps: session={} event=bare_line_ending in_body={in_body} rejected={rejected}",
                    cx.info.id
                );
                None
            }
            Event::TooManyErrors => {
                log::info!("smtps: session={} event=too_many_errors", cx.info.id);
                None
            }
            _ => None,
        };
        let claim = cx.deferred.take();
        if cx.paused > 0 {
            // No further event until every gate is resumed (`Worker::wake`).
            *input_holds += cx.paused;
            conn.pause_input(Instant::now());
        }
        if let Some(reply) = refusal {
            conn.refuse_message(reply);
        }
        let Some(decision) = decision else { continue };
        let deferred = claim.is_some();
        pending.push_back(Pending {
            decision,
            since: Instant::now(),
            update,
            claim,
        });
        match answer.and_then(Answer::into_verdict) {
            // An answer in the call settles the responder the host may have taken too.
            Some(verdict) => resolve(conn, side, decision, verdict, &shared.control.metrics),
            None if deferred => {}
            None => {
                // `Answer::Deferred` without taking the responder: the host can never answer.
                log::error!(
                    "smtps: session={} handler deferred without a responder",
                    side.info.id
                );
                let failure = temporary_failure();
                resolve(conn, side, decision, failure, &shared.control.metrics);
            }
        }
    }
    any
}

/// Applies a verdict to the outstanding decision `id` and records what it changed.
pub(crate) fn resolve<S>(
    conn: &mut Connection,
    side: &mut HostSide<S>,
    id: DecisionId,
    verdict: Verdict,
    metrics: &Metrics,
) {
    let Some(index) = side.pending.iter().position(|p| p.decision == id) else {
        return;
    };
    if let Some(pending) = side.pending.remove(index) {
        pending.settle();
        if conn.awaits(id) {
            apply(conn, &mut side.info, &pending, verdict, metrics);
        }
    }
    // A verdict may have withdrawn commands read ahead of it (a refused MAIL): nobody
    // answers those any more.
    side.pending.retain(|pending| {
        let awaited = conn.awaits(pending.decision);
        if !awaited {
            pending.settle();
        }
        awaited
    });
    sync_envelope(conn, &mut side.info);
}

/// Hands the verdict on a decision the engine awaits to it, logs and counts it, and records
/// it in [`SessionInfo`].
fn apply(
    conn: &mut Connection,
    info: &mut SessionInfo,
    pending: &Pending,
    verdict: Verdict,
    metrics: &Metrics,
) {
    let Pending {
        decision,
        ref update,
        since,
        ..
    } = *pending;
    let accepted = matches!(verdict, Verdict::Accept | Verdict::AcceptWith(_));
    let code = match &verdict {
        Verdict::AcceptWith(reply) | Verdict::Reject(reply) => reply.code().as_u16(),
        _ => 0,
    };
    if let Err(error) = conn.decide(decision, verdict) {
        log::warn!("smtps: session={} invalid decision: {error}", info.id);
        // A verdict that does not fit must not leave the client hanging: 451, or in place of
        // the greeting (where only 554 and 421 may stand) 421, which closes.
        if conn.decide(decision, temporary_failure()).is_err() {
            let _ = conn.decide(decision, Verdict::Reject(replies::greeting_unavailable()));
        }
        return;
    }
    log_decision(info.id, update, accepted, code);
    metrics.decided_after(since.elapsed());
    match update {
        Update::Auth(_) => metrics.auth(accepted),
        Update::MessageEnd(size) => metrics.message_end(accepted, code, *size),
        _ => {}
    }
    match update {
        Update::Helo(name, extended) if accepted => {
            info.helo = Some(name.clone());
            info.extended = *extended;
        }
        Update::Auth(user) if accepted => info.auth_id = Some(user.clone()),
        Update::MessageEnd(_) if accepted => info.messages += 1,
        _ => {}
    }
}

/// Brings [`SessionInfo::mail_from`] and [`SessionInfo::recipients`] in step with the
/// envelope the engine keeps (which also ends at RSET, STARTTLS and a dropped message), adding
/// only the new recipients.
fn sync_envelope(conn: &Connection, info: &mut SessionInfo) {
    let (from, recipients) = (conn.mail_from(), conn.recipients());
    if info.mail_from.as_deref() != from {
        info.mail_from = from.map(str::to_owned);
        info.recipients.clear();
    }
    if recipients.len() < info.recipients.len() {
        info.recipients.clear();
    }
    let known = info.recipients.len();
    if let Some(new) = recipients.get(known..) {
        info.recipients.extend_from_slice(new);
    }
}

/// One log line per decided step (`code=0` is the session's default reply).
fn log_decision(id: u64, update: &Update, accepted: bool, code: u16) {
    let outcome = if accepted { "accepted" } else { "refused" };
    match update {
        Update::None => {}
        Update::Helo(name, extended) => log::info!(
            "smtps: session={id} event={} name={name:?} {outcome} code={code}",
            if *extended { "ehlo" } else { "helo" }
        ),
        Update::Auth(user) => {
            log::info!("smtps: session={id} event=auth user={user:?} {outcome} code={code}");
        }
        Update::Mail(from) => {
            log::info!("smtps: session={id} event=mail from=<{from}> {outcome} code={code}");
        }
        Update::Rcpt(to) => {
            log::info!("smtps: session={id} event=rcpt to=<{to}> {outcome} code={code}");
        }
        Update::MessageEnd(_) => {
            log::info!("smtps: session={id} event=message_end {outcome} code={code}");
        }
    }
}

/// Once the engine has read the PROXY header: the session reports the client it names, and
/// that client (not the balancer) is counted against the per-address limit.
fn adopt_proxy_header<H: Handler>(
    shared: &Shared<H>,
    conn: &Connection,
    side: &mut HostSide<H::Session>,
) {
    if !side.awaiting_header {
        return;
    }
    let Some(header) = conn.proxy_header().map(|h| h.to_owned_header()) else {
        return;
    };
    side.awaiting_header = false;
    let info = &mut side.info;
    let socket_peer = info.peer;
    let (peer, local) = smtps_conn::reported_addresses(Some(&header), socket_peer, info.local);
    let relayed =
        header.command == smtps_conn::smtps_proxy::Command::Proxy && header.addresses.is_some();
    info.proxied_by = relayed.then_some(socket_peer);
    info.peer = peer;
    info.local = local;
    log::info!(
        "smtps: session={} event=proxy client={peer} local={local} proxied_by={socket_peer} version={:?} command={:?}",
        info.id,
        header.version,
        header.command,
    );
    info.proxy = Some(header);
    side.counted_ip = Some(peer.ip());
    if shared.count_ip(peer.ip()) > shared.config.limits.connections_per_ip {
        shared.control.metrics.limit_hit(true);
        side.over_limit = true;
    }
}

/// Records (and logs) what TLS negotiated, once it has.
pub(crate) fn capture_tls(conn: &Connection, info: &mut SessionInfo) {
    if info.tls.is_some() {
        return;
    }
    if let Some(tls) = conn.tls_info() {
        log::info!(
            "smtps: session={} event=tls version={} cipher={} group={} resumed={} sni={}",
            info.id,
            tls.version_name(),
            tls.cipher_suite_name(),
            tls.key_exchange_group_name().unwrap_or("-"),
            tls.resumed,
            tls.server_name.as_deref().unwrap_or("-"),
        );
        info.tls = Some(tls.clone());
    }
}
