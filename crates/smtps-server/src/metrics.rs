//! What a server counts while it serves: sessions by listener and outcome, TLS versions and
//! handshake failures, messages and bytes, AUTH, limit hits, the host's decision latency, open
//! connections. Workers add to relaxed atomics (no lock on any path a client drives); a
//! [`MetricsSnapshot`] reads them from any thread, and renders the Prometheus text exposition
//! format (version 0.0.4) for a scrape.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use smtps_conn::{CloseReason, Mode, Timer};
use smtps_proto::AbortReason;
use smtps_tls::TlsError;

/// How sessions end, as counted (`outcome` label).
pub const SESSION_OUTCOMES: [&str; 11] = [
    "quit",
    "client_closed",
    "timeout",
    "too_many_errors",
    "limit",
    "refused",
    "shutdown",
    "tls_error",
    "io_error",
    "proxy_header",
    "other",
];

/// Why TLS handshakes fail, as counted (`reason` label).
pub const TLS_FAILURE_REASONS: [&str; 8] = [
    "plaintext_client",
    "peer_incompatible",
    "invalid_message",
    "alert_received",
    "unexpected_message",
    "client_closed",
    "timeout",
    "other",
];

/// The TLS versions counted (`version` label).
pub const TLS_VERSIONS: [&str; 3] = ["TLSv1.2", "TLSv1.3", "other"];

/// Why messages in progress are dropped (`reason` label).
pub const ABORT_REASONS: [&str; 5] = [
    "too_large",
    "bare_line_ending",
    "line_too_long",
    "client_left",
    "closed",
];

/// The upper bounds (seconds) of the decision-latency histogram's buckets; `+Inf` follows.
pub const DECISION_BUCKETS: [f64; 10] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// One listener's counters.
pub(crate) struct ListenerMetrics {
    addr: SocketAddr,
    mode: Mode,
    sessions: [AtomicU64; SESSION_OUTCOMES.len()],
    tls_failures: [AtomicU64; TLS_FAILURE_REASONS.len()],
}

/// A server's counters, shared by its workers and its handles.
pub(crate) struct Metrics {
    listeners: Vec<ListenerMetrics>,
    open: AtomicI64,
    tls_versions: [AtomicU64; TLS_VERSIONS.len()],
    messages_accepted: AtomicU64,
    bytes_accepted: AtomicU64,
    /// Messages the host refused at their end: 4xx, 5xx.
    messages_refused: [AtomicU64; 2],
    messages_aborted: [AtomicU64; ABORT_REASONS.len()],
    auth: [AtomicU64; 2],
    /// Connections over the total limit, over the per-address limit.
    limit_hits: [AtomicU64; 2],
    decision_buckets: [AtomicU64; DECISION_BUCKETS.len() + 1],
    decision_micros: AtomicU64,
}

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn new(listeners: impl IntoIterator<Item = (SocketAddr, Mode)>) -> Self {
        Self {
            listeners: listeners
                .into_iter()
                .map(|(addr, mode)| ListenerMetrics {
                    addr,
                    mode,
                    sessions: zeros(),
                    tls_failures: zeros(),
                })
                .collect(),
            open: AtomicI64::new(0),
            tls_versions: zeros(),
            messages_accepted: AtomicU64::new(0),
            bytes_accepted: AtomicU64::new(0),
            messages_refused: zeros(),
            messages_aborted: zeros(),
            auth: zeros(),
            limit_hits: zeros(),
            decision_buckets: zeros(),
            decision_micros: AtomicU64::new(0),
        }
    }

    /// A connection was accepted on a listener.
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection over a limit: the total one (`per_ip` false) or the per-address one.
    pub(crate) fn limit_hit(&self, per_ip: bool) {
        add(&self.limit_hits[usize::from(per_ip)], 1);
    }

    /// A session ended: its outcome, and what TLS did (`tls_version` once a handshake
    /// completed; a handshake that was under way when it ended is a failure).
    pub(crate) fn closed(
        &self,
        listener: usize,
        reason: &CloseReason,
        tls_version: Option<&str>,
        handshaking: bool,
    ) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(version) = tls_version {
            let index = TLS_VERSIONS
                .iter()
                .position(|known| *known == version)
                .unwrap_or(TLS_VERSIONS.len() - 1);
            add(&self.tls_versions[index], 1);
        }
        let Some(listener) = self.listeners.get(listener) else {
            return;
        };
        add(&listener.sessions[outcome_index(reason)], 1);
        if let Some(failure) = tls_failure(reason, handshaking) {
            add(&listener.tls_failures[failure], 1);
        }
    }

    /// The host decided on a message's end: accepted (`code` 0 or 2xx) with its size, or
    /// refused with `code`.
    pub(crate) fn message_end(&self, accepted: bool, code: u16, size: u64) {
        if accepted {
            add(&self.messages_accepted, 1);
            add(&self.bytes_accepted, size);
        } else {
            add(&self.messages_refused[usize::from(code >= 500)], 1);
        }
    }

    /// A message in progress was dropped.
    pub(crate) fn message_aborted(&self, reason: AbortReason) {
        let index = match reason {
            AbortReason::TooLarge => 0,
            AbortReason::BareLineEnding => 1,
            AbortReason::LineTooLong => 2,
            AbortReason::ClientLeft => 3,
            _ => 4,
        };
        add(&self.messages_aborted[index], 1);
    }

    /// An AUTH decision.
    pub(crate) fn auth(&self, accepted: bool) {
        add(&self.auth[usize::from(!accepted)], 1);
    }

    /// How long the host took to decide.
    pub(crate) fn decided_after(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = DECISION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DECISION_BUCKETS.len());
        add(&self.decision_buckets[bucket], 1);
        add(
            &self.decision_micros,
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        );
    }

    /// The counters as they are now.
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let read = |counters: &[AtomicU64]| -> Vec<u64> {
            counters.iter().map(|c| c.load(Ordering::Relaxed)).collect()
        };
        MetricsSnapshot {
            listeners: self
                .listeners
                .iter()
                .map(|listener| ListenerSnapshot {
                    addr: listener.addr,
                    mode: listener.mode,
                    sessions: read(&listener.sessions),
                    tls_handshake_failures: read(&listener.tls_failures),
                })
                .collect(),
            open_connections: u64::try_from(self.open.load(Ordering::Relaxed)).unwrap_or(0),
            tls_handshakes: read(&self.tls_versions),
            messages_accepted: self.messages_accepted.load(Ordering::Relaxed),
            bytes_accepted: self.bytes_accepted.load(Ordering::Relaxed),
            messages_refused_temporary: self.messages_refused[0].load(Ordering::Relaxed),
            messages_refused_permanent: self.messages_refused[1].load(Ordering::Relaxed),
            messages_aborted: read(&self.messages_aborted),
            auth_successes: self.auth[0].load(Ordering::Relaxed),
            auth_failures: self.auth[1].load(Ordering::Relaxed),
            limit_hits_connections: self.limit_hits[0].load(Ordering::Relaxed),
            limit_hits_per_ip: self.limit_hits[1].load(Ordering::Relaxed),
            decision_buckets: read(&self.decision_buckets),
            decision_seconds_sum: Duration::from_micros(
                self.decision_micros.load(Ordering::Relaxed),
            )
            .as_secs_f64(),
        }
    }
}

fn outcome_index(reason: &CloseReason) -> usize {
    match reason {
        CloseReason::Quit => 0,
        CloseReason::ClientClosed => 1,
        CloseReason::Timeout(_) => 2,
        CloseReason::TooManyErrors => 3,
        CloseReason::Limit => 4,
        CloseReason::Refused => 5,
        CloseReason::Shutdown => 6,
        CloseReason::Tls(_) => 7,
        CloseReason::Io(_) => 8,
        CloseReason::ProxyHeader(_) => 9,
        _ => 10,
    }
}

/// The handshake-failure reason of a session that ended while its handshake was under way (or
/// in a failed handshake), as an index into [`TLS_FAILURE_REASONS`].
fn tls_failure(reason: &CloseReason, handshaking: bool) -> Option<usize> {
    if let CloseReason::Tls(TlsError::Handshake {
        error,
        looks_like_plaintext,
    }) = reason
    {
        if *looks_like_plaintext {
            return Some(0);
        }
        return Some(match error {
            smtps_tls::rustls::Error::PeerIncompatible(_) => 1,
            smtps_tls::rustls::Error::InvalidMessage(_) => 2,
            smtps_tls::rustls::Error::AlertReceived(_) => 3,
            smtps_tls::rustls::Error::InappropriateMessage { .. }
            | smtps_tls::rustls::Error::InappropriateHandshakeMessage { .. } => 4,
            _ => 7,
        });
    }
    if !handshaking {
        return None;
    }
    // The server's own closes (a limit's or the host's `421`, a shutdown) are not TLS
    // failures, even when they come in the 0.5-RTT window before the client's `Finished`.
    match reason {
        CloseReason::ClientClosed | CloseReason::Io(_) => Some(5),
        CloseReason::Timeout(Timer::Handshake) => Some(6),
        _ => None,
    }
}

/// One listener's counters in a [`MetricsSnapshot`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSnapshot {
    /// The listener's address (the port the kernel chose, for port 0).
    pub addr: SocketAddr,
    /// Its TLS mode.
    pub mode: Mode,
    /// Sessions ended, by outcome, in the order of [`SESSION_OUTCOMES`].
    pub sessions: Vec<u64>,
    /// TLS handshakes that failed, by reason, in the order of [`TLS_FAILURE_REASONS`].
    pub tls_handshake_failures: Vec<u64>,
}

/// A server's counters at one moment ([`crate::ServerHandle::metrics`]). Counters only grow
/// while the server lives; `open_connections` is a gauge.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Per listener, in configuration order.
    pub listeners: Vec<ListenerSnapshot>,
    /// Connections open now.
    pub open_connections: u64,
    /// Completed TLS handshakes by version, in the order of [`TLS_VERSIONS`].
    pub tls_handshakes: Vec<u64>,
    /// Messages the host accepted (`250` after the end of data).
    pub messages_accepted: u64,
    /// Their octets.
    pub bytes_accepted: u64,
    /// Messages the host refused at their end with a 4xx.
    pub messages_refused_temporary: u64,
    /// ... with a 5xx.
    pub messages_refused_permanent: u64,
    /// Messages dropped in progress, by reason, in the order of [`ABORT_REASONS`].
    pub messages_aborted: Vec<u64>,
    /// AUTH exchanges accepted.
    pub auth_successes: u64,
    /// AUTH exchanges refused.
    pub auth_failures: u64,
    /// Connections over the total connection limit.
    pub limit_hits_connections: u64,
    /// Connections over the per-address limit.
    pub limit_hits_per_ip: u64,
    /// The host's decisions by latency, per bucket of [`DECISION_BUCKETS`] then `+Inf` (not
    /// cumulative).
    pub decision_buckets: Vec<u64>,
    /// The sum of all decision latencies, in seconds.
    pub decision_seconds_sum: f64,
}

impl MetricsSnapshot {
    /// The snapshot in the Prometheus text exposition format 0.0.4 (`# HELP`, `# TYPE`, one
    /// sample a line), every name prefixed `smtps_`.
    #[must_use]
    pub fn to_prometheus(&self) -> String {
        let mut text = String::with_capacity(4096);
        let t = &mut text;
        family(
            t,
            "sessions_total",
            "counter",
            "Sessions ended, by listener and outcome.",
        );
        for listener in &self.listeners {
            let mode = mode_label(listener.mode);
            for (outcome, n) in SESSION_OUTCOMES.iter().zip(&listener.sessions) {
                let labels = format!(
                    "listener=\"{}\",mode=\"{mode}\",outcome=\"{outcome}\"",
                    listener.addr
                );
                sample(t, "sessions_total", &labels, *n);
            }
        }
        family(
            t,
            "tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed, by listener and reason.",
        );
        for listener in &self.listeners {
            let failures = TLS_FAILURE_REASONS
                .iter()
                .zip(&listener.tls_handshake_failures);
            for (reason, n) in failures {
                let labels = format!("listener=\"{}\",reason=\"{reason}\"", listener.addr);
                sample(t, "tls_handshake_failures_total", &labels, *n);
            }
        }
        family(
            t,
            "tls_handshakes_total",
            "counter",
            "Completed TLS handshakes, by version.",
        );
        for (version, n) in TLS_VERSIONS.iter().zip(&self.tls_handshakes) {
            sample(
                t,
                "tls_handshakes_total",
                &format!("version=\"{version}\""),
                *n,
            );
        }
        family(t, "open_connections", "gauge", "Connections open now.");
        sample(t, "open_connections", "", self.open_connections);
        family(
            t,
            "messages_accepted_total",
            "counter",
            "Messages accepted (250 after the end of data).",
        );
        sample(t, "messages_accepted_total", "", self.messages_accepted);
        family(
            t,
            "message_bytes_accepted_total",
            "counter",
            "Octets of the messages accepted.",
        );
        sample(t, "message_bytes_accepted_total", "", self.bytes_accepted);
        family(
            t,
            "messages_refused_total",
            "counter",
            "Messages the host refused at their end, by reply class.",
        );
        sample(
            t,
            "messages_refused_total",
            "class=\"4xx\"",
            self.messages_refused_temporary,
        );
        sample(
            t,
            "messages_refused_total",
            "class=\"5xx\"",
            self.messages_refused_permanent,
        );
        family(
            t,
            "messages_aborted_total",
            "counter",
            "Messages dropped while being received, by reason.",
        );
        for (reason, n) in ABORT_REASONS.iter().zip(&self.messages_aborted) {
            sample(
                t,
                "messages_aborted_total",
                &format!("reason=\"{reason}\""),
                *n,
            );
        }
        family(t, "auth_total", "counter", "AUTH exchanges, by result.");
        sample(t, "auth_total", "result=\"success\"", self.auth_successes);
        sample(t, "auth_total", "result=\"failure\"", self.auth_failures);
        family(
            t,
            "limit_hits_total",
            "counter",
            "Connections over a connection limit, by limit.",
        );
        sample(
            t,
            "limit_hits_total",
            "limit=\"connections\"",
            self.limit_hits_connections,
        );
        sample(
            t,
            "limit_hits_total",
            "limit=\"connections_per_ip\"",
            self.limit_hits_per_ip,
        );
        family(
            t,
            "decision_seconds",
            "histogram",
            "Time the host took to decide (every decision, deferred or not).",
        );
        let mut cumulative = 0;
        for (bound, n) in DECISION_BUCKETS.iter().zip(&self.decision_buckets) {
            cumulative += n;
            sample(
                t,
                "decision_seconds_bucket",
                &format!("le=\"{bound}\""),
                cumulative,
            );
        }
        let count: u64 = self.decision_buckets.iter().sum();
        sample(t, "decision_seconds_bucket", "le=\"+Inf\"", count);
        let _ = writeln!(
            t,
            "smtps_decision_seconds_sum {}",
            self.decision_seconds_sum
        );
        sample(t, "decision_seconds_count", "", count);
        text
    }
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        text,
        "# HELP smtps_{name} {help}\n# TYPE smtps_{name} {kind}"
    );
}

/// One sample line; `labels` without braces, empty for none.
fn sample(text: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(text, "smtps_{name} {value}");
    } else {
        let _ = writeln!(text, "smtps_{name}{{{labels}}} {value}");
    }
}

fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::ImplicitTls => "implicit-tls",
        Mode::StartTls => "starttls",
        Mode::StartTlsRequired => "starttls-required",
        _ => "plain",
    }
}
