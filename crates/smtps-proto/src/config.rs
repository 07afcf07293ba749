//! Session configuration: the advertised extensions, limits and policies.

use std::fmt;

/// A set of ESMTP extensions the server may advertise in its EHLO reply (RFC 5321 §4.1.1.1).
///
/// A typed bitset: combine with `|`, test with [`Extensions::contains`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extensions(u32);

impl Extensions {
    /// No extensions.
    pub const NONE: Self = Self(0);
    /// PIPELINING (RFC 2920).
    pub const PIPELINING: Self = Self(1 << 0);
    /// SIZE (RFC 1870).
    pub const SIZE: Self = Self(1 << 1);
    /// 8BITMIME (RFC 6152).
    pub const EIGHT_BIT_MIME: Self = Self(1 << 2);
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub const ENHANCED_STATUS_CODES: Self = Self(1 << 3);
    /// SMTPUTF8 (RFC 6531).
    pub const SMTP_UTF8: Self = Self(1 << 4);
    /// CHUNKING: the BDAT command (RFC 3030).
    pub const CHUNKING: Self = Self(1 << 5);
    /// BINARYMIME (RFC 3030); needs CHUNKING.
    pub const BINARY_MIME: Self = Self(1 << 6);
    /// DSN (RFC 3461).
    pub const DSN: Self = Self(1 << 7);
    /// STARTTLS (RFC 3207); advertised only while the session is not yet secure and the
    /// transport can upgrade.
    pub const START_TLS: Self = Self(1 << 8);
    /// AUTH (RFC 4954); advertised only while secure unless plaintext AUTH is allowed.
    pub const AUTH: Self = Self(1 << 9);
    /// REQUIRETLS (RFC 8689); advertised only while secure.
    pub const REQUIRE_TLS: Self = Self(1 << 10);
    /// LIMITS (RFC 9422): RCPTMAX and MAILMAX.
    pub const LIMITS: Self = Self(1 << 11);
    /// Every extension this crate implements.
    pub const ALL: Self = Self((1 << 12) - 1);

    /// Whether every extension in `other` is in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` without the extensions in `other`.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl Default for Extensions {
    /// All but REQUIRETLS, which promises onward TLS that only the host can keep.
    fn default() -> Self {
        Self::ALL.without(Self::REQUIRE_TLS)
    }
}

impl std::ops::BitOr for Extensions {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Extensions {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 12] = [
            "PIPELINING",
            "SIZE",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "CHUNKING",
            "BINARYMIME",
            "DSN",
            "STARTTLS",
            "AUTH",
            "REQUIRETLS",
            "LIMITS",
        ];
        let mut set = f.debug_set();
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                set.entry(name);
            }
        }
        set.finish()
    }
}

/// SASL mechanisms the server offers (RFC 4954). A typed bitset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthMechanisms(u8);

impl AuthMechanisms {
    /// PLAIN (RFC 4616).
    pub const PLAIN: Self = Self(1);
    /// LOGIN (draft-murchison-sasl-login), still what many clients use.
    pub const LOGIN: Self = Self(2);

    /// Whether every mechanism in `other` is in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no mechanism is offered.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Default for AuthMechanisms {
    fn default() -> Self {
        Self(Self::PLAIN.0 | Self::LOGIN.0)
    }
}

impl std::ops::BitOr for AuthMechanisms {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// What the session does with a bare LF or bare CR (one not part of CRLF).
///
/// Whichever is chosen, the host is told through [`crate::Event::BareLineEnding`]. Neither
/// choice lets a bare line ending take part in ending a message (RFC 5321 §4.1.1.4).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEndingPolicy {
    /// Take it as CRLF, as Postfix 3.9 does with `smtpd_forbid_bare_newline = normalize`.
    #[default]
    Normalize,
    /// Refuse: `500 5.5.2` for a command line; for a message, read to its real end and answer
    /// `550 5.5.2`.
    Reject,
}

/// How VRFY is answered (RFC 5321 §3.5.3, §7.3).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VrfyPolicy {
    /// `252 2.5.0`: cannot verify, but will accept and attempt delivery.
    #[default]
    CannotVerify,
    /// `502 5.5.1`: not implemented.
    Disabled,
}

/// Size limits, each with the RFC's minimum or a common default.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4). Default 512; a longer one
    /// is read to its end and answered `500 5.5.2`.
    pub command_line: usize,
    /// Longest AUTH command or SASL response line, CRLF included (RFC 4954 §4). Default 12288.
    pub auth_line: usize,
    /// Longest message text line, CRLF included (RFC 5321 §4.5.3.1.6: 1000); `None` accepts
    /// any length. Default `Some(1000)`.
    pub text_line: Option<usize>,
    /// Recipients per message; the next RCPT gets `452 4.5.3` (RFC 5321 §4.5.3.1.8, §4.5.3.1.10).
    /// Default 100, advertised as LIMITS RCPTMAX (RFC 9422).
    pub recipients: usize,
    /// Largest message in octets, advertised with SIZE (RFC 1870); a larger one is read to its
    /// end and answered `552 5.3.4`. Default 25 MiB (26,214,400).
    pub message_size: u64,
    /// Protocol errors before the session is closed with `421 4.7.0`. Default 10.
    pub errors: u32,
    /// Transactions per session; `None` for no limit. Advertised as LIMITS MAILMAX (RFC 9422).
    /// Default `None`.
    pub transactions: Option<u32>,
    /// NOOP, RSET, VRFY, EXPN and HELP commands since the last accepted message; the next one
    /// is answered `421 4.7.0` and the session closes (as Postfix's
    /// `smtpd_junk_command_limit`, but closing rather than slowing down). Default 1000.
    pub junk_commands: u64,
    /// Largest body chunk handed to the host in one event. Default 64 KiB.
    pub body_chunk: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            command_line: 512,
            auth_line: 12288,
            text_line: Some(1000),
            recipients: 100,
            message_size: 25 * 1024 * 1024,
            errors: 10,
            transactions: None,
            junk_commands: 1000,
            body_chunk: 64 * 1024,
        }
    }
}

/// Policies: where real servers differ, the choice is the operator's.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Bare LF / CR in command lines. Default [`LineEndingPolicy::Normalize`].
    pub bare_line_ending_in_commands: LineEndingPolicy,
    /// Bare LF / CR in message bodies. Default [`LineEndingPolicy::Normalize`]: taken as a
    /// line ending inside the message, never as part of its end (only `CRLF.CRLF` ends a
    /// message, whatever the policy: SMTP smuggling).
    pub bare_line_ending_in_body: LineEndingPolicy,
    /// Refuse MAIL with `530 5.7.0` until TLS is active (RFC 3207 §4; a submission port should,
    /// RFC 8314 §3.3). Default off; a listener in STARTTLS-required mode turns it on.
    pub require_tls_for_mail: bool,
    /// Refuse MAIL with `530 5.7.0` until the client has authenticated (RFC 4954 §6). Default
    /// off.
    pub require_auth_for_mail: bool,
    /// Offer and accept AUTH without TLS. Sends passwords in clear text: only for testing.
    /// Default off: AUTH is advertised and accepted only over TLS.
    pub danger_allow_plaintext_auth: bool,
    /// How VRFY is answered. Default [`VrfyPolicy::CannotVerify`] (`252 2.5.0`).
    pub vrfy: VrfyPolicy,
}

/// Everything a [`crate::ServerSession`] needs to know about the server it speaks for.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The server's name, used in the greeting and the EHLO reply (RFC 5321 §4.3.1).
    pub hostname: String,
    /// Extensions that may be advertised. Default: every one but REQUIRETLS (PIPELINING, SIZE,
    /// 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING, BINARYMIME, DSN, STARTTLS where the
    /// transport can upgrade, AUTH over TLS, LIMITS).
    pub extensions: Extensions,
    /// SASL mechanisms offered with AUTH. Default PLAIN and LOGIN.
    pub auth_mechanisms: AuthMechanisms,
    /// Size and count limits; see [`Limits`] for each default.
    pub limits: Limits,
    /// Policies; see [`Policy`] for each default.
    pub policy: Policy,
    /// Hand the host the RCPT and DATA commands a client pipelined (RFC 2920) while earlier
    /// MAIL and RCPT decisions are still outstanding, so that a host which forwards them (a
    /// relay to a backend that offers PIPELINING) can ask for all of them at once instead of
    /// one round trip each. Verdicts still take effect, and replies still leave, in command
    /// order; a command whose ground went away (a RCPT after a refused MAIL, a DATA after
    /// every RCPT was refused) is withdrawn — its decision becomes unknown — and answered as
    /// if it had arrived after the verdicts (`503 5.5.1`, `554 5.5.1`). What is read ahead is
    /// bounded by the input limit, so a host must not wait for a later command (the DATA) before
    /// answering the ones it has: the group may not fit. Default off: each decision is asked
    /// for only after the previous one is given.
    pub pipelined_decisions: bool,
}

impl SessionConfig {
    /// A configuration with defaults and the given host name.
    #[must_use]
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            extensions: Extensions::default(),
            auth_mechanisms: AuthMechanisms::default(),
            limits: Limits::default(),
            policy: Policy::default(),
            pipelined_decisions: false,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self::new("localhost")
    }
}
