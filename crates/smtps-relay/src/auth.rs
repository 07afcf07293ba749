//! AUTH at the front (RFC 4954): credentials checked off the worker thread, the user then known
//! to the session (and, when relaying, to the backend through XCLIENT LOGIN).
//!
//! Password guessing is throttled before the password hash runs ([`AuthThrottle`], given to
//! [`authenticate`] through [`Authenticator::throttle`]): after too many failures from one
//! client address (or for one user name) within a window, further AUTH is answered at once
//! with `454 4.7.0` (RFC 4954 §6), or tarpitted and closed with `421 4.7.0`, without verifying.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use smtps_proto::{EnhancedStatus, Reply, ReplyCode};
use smtps_server::{Answer, Context, Credentials, Responder};

use crate::logline::Line;

/// Checks AUTH credentials.
pub trait Authenticator: Send + Sync + 'static {
    /// Whether `password` is `user`'s. May take time (a password hash): it runs on a thread
    /// of its own, never on a worker.
    fn verify(&self, user: &str, password: &[u8]) -> bool;

    /// The throttle consulted before each verification; `None` (the default): none.
    fn throttle(&self) -> Option<&AuthThrottle> {
        None
    }
}

/// An [`Authenticator`] behind an [`AuthThrottle`].
pub struct Throttled<A> {
    inner: A,
    throttle: AuthThrottle,
}

impl<A: Authenticator> Throttled<A> {
    /// `inner`, consulted only when `throttle` lets an attempt through.
    pub fn new(inner: A, throttle: AuthThrottle) -> Self {
        Self { inner, throttle }
    }
}

impl<A: Authenticator> Authenticator for Throttled<A> {
    fn verify(&self, user: &str, password: &[u8]) -> bool {
        self.inner.verify(user, password)
    }

    fn throttle(&self) -> Option<&AuthThrottle> {
        Some(&self.throttle)
    }
}

/// `535 5.7.8`.
#[must_use]
pub fn auth_failed() -> Reply {
    Reply::new(
        ReplyCode::AUTH_INVALID,
        EnhancedStatus::new(5, 7, 8),
        "Authentication credentials invalid",
    )
}

/// `454 4.7.0` (RFC 4954 §6): the answer to AUTH from a throttled client.
#[must_use]
pub fn auth_throttled() -> Reply {
    Reply::new(
        ReplyCode::TEMPORARY_FAILURE,
        EnhancedStatus::new(4, 7, 0),
        "Temporary authentication failure, try again later",
    )
}

/// `421 4.7.0`: the end of a tarpitted AUTH; the connection closes.
#[must_use]
pub fn auth_tarpit_closed() -> Reply {
    Reply::new(
        ReplyCode::SERVICE_UNAVAILABLE,
        EnhancedStatus::new(4, 7, 0),
        "Too many failed authentications, closing connection",
    )
}

/// Answers AUTH for a handler: refused without an authenticator, or for an authorization
/// identity other than the user's own (no rules for acting as another user, RFC 4616 §2);
/// refused without verifying when the authenticator's [`AuthThrottle`] says so; otherwise
/// deferred and verified on a thread of its own, then `235` or `535 5.7.8`.
pub fn authenticate(
    authenticator: Option<&Arc<dyn Authenticator>>,
    cx: &mut Context<'_>,
    credentials: &Credentials<'_>,
) -> Answer {
    let Some(authenticator) = authenticator else {
        return Answer::Reject(auth_failed());
    };
    if !credentials.authorization_id.is_empty()
        && credentials.authorization_id != credentials.authentication_id
    {
        log::warn!(
            "smtps: {:?} asked to act as {:?}: refused",
            credentials.authentication_id,
            credentials.authorization_id
        );
        return Answer::Reject(auth_failed());
    }
    let session = cx.info().id;
    let client = cx.info().peer.ip();
    let user = credentials.authentication_id.to_owned();
    // The throttle decides before the hash runs: a refused attempt costs no argon2 work.
    let charge = match authenticator.throttle() {
        None => None,
        Some(throttle) => match throttle.admit(client, &user, Instant::now()) {
            Admit::Verify(charge) => Some(charge),
            Admit::Refuse { by, failures } => {
                let action = throttle.config.action;
                log::warn!(
                    "{}",
                    Line::new(Some(session), "auth_throttled")
                        .field("client", client)
                        .field("user", &user)
                        .field("by", by)
                        .field("failures", failures)
                        .field("action", action)
                );
                return match action {
                    ThrottleAction::Reply => Answer::Reject(auth_throttled()),
                    ThrottleAction::Tarpit(_) => {
                        throttle.tarpit(cx.defer());
                        Answer::Deferred
                    }
                };
            }
        },
    };
    let responder = cx.defer();
    let authenticator = Arc::clone(authenticator);
    let password = credentials.password.as_bytes().to_vec();
    let spawned = std::thread::Builder::new()
        .name("smtps-auth".into())
        .spawn(move || {
            let accepted = authenticator.verify(&user, &password);
            let failures = match (authenticator.throttle(), charge) {
                (Some(throttle), Some(charge)) => throttle.settle(&charge, accepted),
                _ => 0,
            };
            if accepted {
                responder.accept();
            } else {
                log::warn!(
                    "{}",
                    Line::new(Some(session), "auth_failed")
                        .field("client", client)
                        .field("user", &user)
                        .field("failures", failures)
                );
                responder.reject(auth_failed());
            }
        });
    if let Err(error) = spawned {
        // The responder went down with the closure: it answers 451 by itself. The charge
        // stays: an attempt that could not be verified is not a success.
        log::error!("smtps: cannot start an authentication thread: {error}");
    }
    Answer::Deferred
}

/// What a throttled client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThrottleAction {
    /// `454 4.7.0` at once; the session goes on.
    Reply,
    /// Nothing for this long, then `421 4.7.0` and the connection closes.
    Tarpit(Duration),
}

impl fmt::Display for ThrottleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reply => f.write_str("reply"),
            Self::Tarpit(_) => f.write_str("tarpit"),
        }
    }
}

impl std::str::FromStr for ThrottleAction {
    type Err = String;

    /// `reply`, `tarpit` (10 s) or `tarpit:SECS` (1 to 120: well inside the server's
    /// decision timeout, 300 s, which would otherwise answer `451` first).
    fn from_str(value: &str) -> Result<Self, String> {
        let action = match value.split_once(':') {
            None if value == "reply" => Some(Self::Reply),
            None if value == "tarpit" => Some(Self::Tarpit(Duration::from_secs(10))),
            Some(("tarpit", secs)) => secs
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=120).contains(s))
                .map(|s| Self::Tarpit(Duration::from_secs(s))),
            _ => None,
        };
        action.ok_or_else(|| {
            format!(
                "invalid AUTH throttle {value:?}: expected reply, tarpit or tarpit:SECS \
                 (SECS from 1 to 120)"
            )
        })
    }
}

/// The limits of an [`AuthThrottle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleConfig {
    /// Failed attempts from one client (an IPv4 address, or an IPv6 /64) within `window`
    /// after which its AUTH is refused unverified until the window ends. Default 5.
    pub max_failures: u32,
    /// Failed attempts for one user name, from any client, within `window` after which AUTH
    /// for that name is refused unverified. Default 20. Attempts a client makes while it is
    /// throttled are not verified and do not count, so one client cannot lock a user out.
    pub max_failures_per_user: u32,
    /// How long failures are remembered, from the first of a series. Default 15 minutes.
    pub window: Duration,
    /// What a throttled client gets. Default [`ThrottleAction::Reply`].
    pub action: ThrottleAction,
    /// Clients and user names remembered at most (each table); when full, new ones are not
    /// throttled until entries expire. Default 65,536.
    pub max_entries: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            max_failures_per_user: 20,
            window: Duration::from_secs(15 * 60),
            action: ThrottleAction::Reply,
            max_entries: 65_536,
        }
    }
}

/// Counts failed AUTH attempts per client address and per user name, and refuses attempts
/// beyond the limits before anything is verified.
///
/// An attempt is charged when admitted, before the verification, and refunded if it
/// succeeds: attempts in flight count as failures, so parallel connections cannot get more
/// than `max_failures` verifications through either.
pub struct AuthThrottle {
    config: ThrottleConfig,
    state: Mutex<Tables>,
    /// The tarpit thread, started on first use.
    tarpit: Mutex<Option<SyncSender<(Instant, Responder)>>>,
}

/// Responders waiting in the tarpit at most; beyond, a throttled client is closed at once.
const TARPIT_CAPACITY: usize = 4096;

/// Whether an attempt may be verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admit {
    /// Verify it, then [`AuthThrottle::settle`] the charge.
    Verify(Charge),
    /// Refuse it unverified.
    Refuse {
        /// Which limit: `"client"` or `"user"`.
        by: &'static str,
        /// The failures counted against that limit.
        failures: u32,
    },
}

/// An admitted attempt, counted as a failure until settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    client: Option<IpAddr>,
    user: Option<String>,
}

#[derive(Default)]
struct Tables {
    clients: HashMap<IpAddr, Entry>,
    users: HashMap<String, Entry>,
    last_purge: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
}

impl AuthThrottle {
    /// A throttle with these limits.
    #[must_use]
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            state: Mutex::new(Tables::default()),
            tarpit: Mutex::new(None),
        }
    }

    /// Decides on an attempt by `user` from `client` at `now`, and charges it if admitted.
    pub fn admit(&self, client: IpAddr, user: &str, now: Instant) -> Admit {
        let config = &self.config;
        let key = client_key(client);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let client_failures = current(state.clients.get(&key), now, config.window);
        if client_failures >= config.max_failures {
            return Admit::Refuse {
                by: "client",
                failures: client_failures,
            };
        }
        let user_failures = current(state.users.get(user), now, config.window);
        if user_failures >= config.max_failures_per_user {
            return Admit::Refuse {
                by: "user",
                failures: user_failures,
            };
        }
        let full =
            state.clients.len() >= config.max_entries || state.users.len() >= config.max_entries;
        if full
            && state
                .last_purge
                .is_none_or(|t| now.duration_since(t) >= PURGE_EVERY)
        {
            let window = config.window;
            state
                .clients
                .retain(|_, e| now.duration_since(e.since) < window);
            state
                .users
                .retain(|_, e| now.duration_since(e.since) < window);
            state.last_purge = Some(now);
        }
        let client = charge(&mut state.clients, key, now, config).then_some(key);
        let user = charge(&mut state.users, user.to_owned(), now, config).then(|| user.to_owned());
        Admit::Verify(Charge { client, user })
    }

    /// Settles an admitted attempt: a success takes its charge back; a failure keeps it.
    /// Returns the failures now counted for the client.
    pub fn settle(&self, charge: &Charge, accepted: bool) -> u32 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if accepted {
            if let Some(key) = &charge.client
                && let Some(entry) = state.clients.get_mut(key)
            {
                entry.failures = entry.failures.saturating_sub(1);
            }
            if let Some(user) = &charge.user
                && let Some(entry) = state.users.get_mut(user)
            {
                entry.failures = entry.failures.saturating_sub(1);
            }
        }
        charge
            .client
            .and_then(|key| state.clients.get(&key))
            .map_or(0, |e| e.failures)
    }

    /// Holds `responder` for the tarpit delay, then answers `421 4.7.0` (closing the
    /// connection). With the tarpit full, answers at once.
    fn tarpit(&self, responder: Responder) {
        let ThrottleAction::Tarpit(delay) = self.config.action else {
            responder.reject(auth_throttled());
            return;
        };
        let mut sender = self.tarpit.lock().unwrap_or_else(PoisonError::into_inner);
        if sender.is_none() {
            let (tx, rx) = mpsc::sync_channel(TARPIT_CAPACITY);
            let spawned = std::thread::Builder::new()
                .name("smtps-tarpit".into())
                .spawn(move || tarpit_loop(&rx));
            match spawned {
                Ok(_) => *sender = Some(tx),
                Err(error) => log::error!("smtps: cannot start the tarpit thread: {error}"),
            }
        }
        let Some(tx) = sender.as_ref() else {
            responder.reject(auth_tarpit_closed());
            return;
        };
        match tx.try_send((Instant::now() + delay, responder)) {
            Ok(()) => {}
            Err(
                TrySendError::Full((_, responder)) | TrySendError::Disconnected((_, responder)),
            ) => {
                responder.reject(auth_tarpit_closed());
            }
        }
    }
}

impl fmt::Debug for AuthThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthThrottle")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How often a full table is swept for expired entries, at most.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// The failures an entry counts at `now` (none once its window has passed).
fn current(entry: Option<&Entry>, now: Instant, window: Duration) -> u32 {
    entry.map_or(0, |e| {
        if now.duration_since(e.since) < window {
            e.failures
        } else {
            0
        }
    })
}

/// Counts one failure for `key`, starting a new window if the last one ended. Returns
/// whether it was counted (not when the table is full of live entries).
fn charge<K: std::hash::Hash + Eq>(
    table: &mut HashMap<K, Entry>,
    key: K,
    now: Instant,
    config: &ThrottleConfig,
) -> bool {
    let fresh = Entry {
        failures: 0,
        since: now,
    };
    if !table.contains_key(&key) && table.len() >= config.max_entries {
        return false;
    }
    let entry = table.entry(key).or_insert(fresh);
    if now.duration_since(entry.since) >= config.window || entry.failures == 0 {
        *entry = fresh;
    }
    entry.failures = entry.failures.saturating_add(1);
    true
}

/// An IPv4 address, or the /64 of an IPv6 address (one host's usual allocation).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

/// Answers each tarpitted responder at its deadline; when the throttle is gone, answers the
/// rest at once and ends.
fn tarpit_loop(rx: &mpsc::Receiver<(Instant, Responder)>) {
    let mut waiting: BinaryHeap<Reverse<Waiting>> = BinaryHeap::new();
    let mut next = 0_u64;
    loop {
        let now = Instant::now();
        while waiting.peek().is_some_and(|w| w.0.at <= now) {
            if let Some(Reverse(w)) = waiting.pop() {
                w.responder.reject(auth_tarpit_closed());
            }
        }
        let received = match waiting.peek() {
            Some(w) => rx.recv_timeout(w.0.at.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok((at, responder)) => {
                next += 1;
                waiting.push(Reverse(Waiting {
                    at,
                    order: next,
                    responder,
                }));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for Reverse(w) in waiting.drain() {
                    w.responder.reject(auth_tarpit_closed());
                }
                return;
            }
        }
    }
}

struct Waiting {
    at: Instant,
    order: u64,
    responder: Responder,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max: u32, per_user: u32) -> AuthThrottle {
        AuthThrottle::new(ThrottleConfig {
            max_failures: max,
            max_failures_per_user: per_user,
            window: Duration::from_secs(60),
            ..ThrottleConfig::default()
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn a_client_gets_max_failures_verifications_then_refusals_until_the_window_ends() {
        let t = throttle(3, 100);
        let start = Instant::now();
        let mut verified = 0;
        for i in 0..1000 {
            let now = start + Duration::from_millis(i);
            if let Admit::Verify(charge) = t.admit(ip("192.0.2.1"), "alice", now) {
                verified += 1;
                t.settle(&charge, false);
            }
        }
        assert_eq!(verified, 3);
        assert_eq!(
            t.admit(ip("192.0.2.1"), "alice", start + Duration::from_secs(30)),
            Admit::Refuse {
                by: "client",
                failures: 3
            }
        );
        // Another client is not affected; the window's end forgives.
        assert!(matches!(
            t.admit(ip("192.0.2.2"), "alice", start),
            Admit::Verify(_)
        ));
        assert!(matches!(
            t.admit(ip("192.0.2.1"), "alice", start + Duration::from_secs(61)),
            Admit::Verify(_)
        ));
    }

    #[test]
    fn attempts_in_flight_count_so_parallel_connections_get_no_more() {
        let t = throttle(2, 100);
        let now = Instant::now();
        let first = t.admit(ip("192.0.2.1"), "a", now);
        let second = t.admit(ip("192.0.2.1"), "b", now);
        assert!(matches!(first, Admit::Verify(_)));
        assert!(matches!(second, Admit::Verify(_)));
        assert!(matches!(
            t.admit(ip("192.0.2.1"), "c", now),
            Admit::Refuse { by: "client", .. }
        ));
        // A success gives its charge back.
        let Admit::Verify(charge) = first else {
            unreachable!()
        };
        assert_eq!(t.settle(&charge, true), 1);
        assert!(matches!(
            t.admit(ip("192.0.2.1"), "c", now),
            Admit::Verify(_)
        ));
    }

    #[test]
    fn a_user_guessed_at_from_many_clients_is_throttled_by_name() {
        let t = throttle(2, 5);
        let now = Instant::now();
        for i in 1..=5 {
            let Admit::Verify(charge) = t.admit(ip(&format!("198.51.100.{i}")), "bob", now) else {
                panic!("attempt {i} refused");
            };
            t.settle(&charge, false);
        }
        assert_eq!(
            t.admit(ip("198.51.100.99"), "bob", now),
            Admit::Refuse {
                by: "user",
                failures: 5
            }
        );
        assert!(matches!(
            t.admit(ip("198.51.100.99"), "carol", now),
            Admit::Verify(_)
        ));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let t = throttle(1, 100);
        let now = Instant::now();
        assert!(matches!(
            t.admit(ip("2001:db8:1:2::1"), "a", now),
            Admit::Verify(_)
        ));
        assert!(matches!(
            t.admit(ip("2001:db8:1:2:ffff::9"), "a", now),
            Admit::Refuse { by: "client", .. }
        ));
        assert!(matches!(
            t.admit(ip("2001:db8:1:3::1"), "a", now),
            Admit::Verify(_)
        ));
    }

    #[test]
    fn throttle_actions_parse() {
        assert_eq!("reply".parse(), Ok(ThrottleAction::Reply));
        assert_eq!(
            "tarpit".parse(),
            Ok(ThrottleAction::Tarpit(Duration::from_secs(10)))
        );
        assert_eq!(
            "tarpit:3".parse(),
            Ok(ThrottleAction::Tarpit(Duration::from_secs(3)))
        );
        for bad in ["", "tarpit:0", "tarpit:121", "tarpit:x", "drop"] {
            assert!(bad.parse::<ThrottleAction>().is_err(), "{bad}");
        }
    }

    #[test]
    fn full_tables_stop_counting_new_clients_instead_of_growing() {
        let t = AuthThrottle::new(ThrottleConfig {
            max_failures: 1,
            max_entries: 2,
            ..ThrottleConfig::default()
        });
        let now = Instant::now();
        for i in 1..=10 {
            let _ = t.admit(ip(&format!("192.0.2.{i}")), "u", now);
        }
        let state = t.state.lock().expect("not poisoned");
        assert!(state.clients.len() <= 2 && state.users.len() <= 2);
    }
}
