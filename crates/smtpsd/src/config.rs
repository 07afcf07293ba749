//! The command line: `smtpsd [OPTIONS]`, `smtpsd hash-password`, `--help`, `--version`.
//!
//! [`parse`] turns the arguments (without the program name) into a [`Command`]. The result is
//! plain data: listener modes are [`Mode`]s, limits and timeouts left unset
//! are `None`, so the daemon applies the server's defaults. Every error names the flag and the
//! value at fault. Values follow their flag (`--workers 4`) or are joined to it (`--workers=4`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use smtps_relay::backend::Identity;
use smtps_server::{Mode, Network, Untrusted};

/// The text `--help` prints.
pub const HELP: &str = "\
smtpsd: an SMTP server for implicit TLS (RFC 8314) and STARTTLS (RFC 3207) that delivers
into a Maildir.

USAGE:
    smtpsd --dev                         try it out: TLS on 127.0.0.1:2465 and :2587,
                                         self-signed certificate, mail into ./maildir
    smtpsd --listen ADDR:PORT=MODE... --cert CHAIN.pem --key KEY.pem --maildir PATH [OPTIONS]
    smtpsd hash-password                 read a password on standard input, print its
                                         argon2id hash for a --users file
    smtpsd gen-ticket-key                print a new random session-ticket key (a line
                                         for a --ticket-keys file)

LISTENERS AND CERTIFICATES:
    --listen ADDR:PORT=MODE[+proxy|+proxy-or-direct]
                                listen on ADDR:PORT (e.g. 0.0.0.0:465, [::]:587); MODE is
                                implicit-tls, starttls, starttls-required or plain; repeatable.
                                +proxy: every connection from a --proxy-trusted source starts
                                with a PROXY protocol v1/v2 header (HAProxy send-proxy-v2) naming
                                the real client; others are closed without a banner.
                                +proxy-or-direct: others are served as direct clients
    --proxy-trusted CIDR        a load balancer's address or block (10.0.0.0/8, 2001:db8::/32,
                                192.0.2.10) allowed to send PROXY headers; repeatable
    --cert CHAIN.pem --key KEY.pem
                                a certificate chain and its private key (PEM); repeatable:
                                the first pair is the default, later ones are chosen by SNI
    --no-resumption             no TLS session resumption: no session tickets, no session
                                cache; every handshake is a full one
    --ticket-keys FILE          seal session tickets with the keys in FILE (one base64 key of
                                48 bytes a line, the first seals, all open), shared by every
                                node behind a balancer so any node resumes any session;
                                SIGHUP rereads it (`smtpsd gen-ticket-key` prints a new key)
    --dev                       development defaults (self-signed certificate for localhost,
                                implicit TLS on 127.0.0.1:2465, STARTTLS required on
                                127.0.0.1:2587, --maildir ./maildir, --hostname localhost)

DELIVERY AND AUTH:
    --maildir PATH              deliver into this Maildir (created if missing)
    --sink                      accept and discard every message (for benchmarks)
    --relay smtp://HOST:PORT[+xclient|+proxy-v2][+starttls]
                                relay each transaction in real time to a backend MTA (an
                                unmodified Postfix or Exim): its verdicts, its queue. +xclient
                                names the client with XCLIENT (Postfix
                                smtpd_authorized_xclient_hosts), +proxy-v2 with a PROXY v2
                                header (Postfix smtpd_upstream_proxy_protocol, Exim
                                hosts_proxy); +starttls speaks TLS to a remote backend,
                                verified against --relay-ca
    --relay-ca FILE             CA certificates (PEM) for the backend's certificate
    --users FILE                AUTH PLAIN/LOGIN users, one `name:$argon2id$...` a line
    --hostname NAME             our name in the greeting and Received: headers
                                (default: the system's host name)

LIMITS AND TIMEOUTS (defaults: the server's):
    --workers N                 worker threads (default: one per core)
    --max-message-size BYTES    largest message accepted (suffixes K, M, G: powers of 1024)
    --max-recipients N          recipients per message
    --max-connections N         connections in total
    --max-connections-per-ip N  connections from one client address
    --timeout-command SECS      waiting for a command (RFC 5321 §4.5.3.2: 300)
    --timeout-data SECS         waiting for the next block of DATA
    --timeout-handshake SECS    for the TLS handshake
    --timeout-session SECS      for a whole session

OTHER:
    --log-level LEVEL           off, error, warn, info (default), debug or trace
    --help                      print this help
    --version                   print the version
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Run the server with these options.
    Run(Box<Options>),
    /// Read a password on standard input and print its hash (`smtpsd hash-password`).
    HashPassword,
    /// Print a new session-ticket key line (`smtpsd gen-ticket-key`).
    GenTicketKey,
    /// Print [`HELP`].
    Help,
    /// Print the version.
    Version,
}

/// The options of a server run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// `--dev`: generate a self-signed certificate if no `--cert` was given.
    pub dev: bool,
    /// The listeners, in command-line order (never empty).
    pub listeners: Vec<Listener>,
    /// Certificate chains and keys; the first is the default, the others are for SNI. Empty
    /// only with `--dev` (a certificate is generated) or when every listener is `plain`.
    pub certificates: Vec<CertificateFiles>,
    /// `--workers`.
    pub workers: Option<NonZeroUsize>,
    /// Where messages go.
    pub spool: SpoolOption,
    /// `--users`: the AUTH user file.
    pub users: Option<PathBuf>,
    /// `--no-resumption`: no session tickets and no session cache (RFC 8446 §2.2), so every
    /// handshake is full and the server sends no `NewSessionTicket`.
    pub no_resumption: bool,
    /// `--ticket-keys`: the shared session-ticket key file.
    pub ticket_keys: Option<PathBuf>,
    /// `--proxy-trusted`: who may send PROXY headers to `+proxy` listeners.
    pub proxy_trusted: Vec<Network>,
    /// Our host name (`--hostname`, `localhost` with `--dev`, else the system's).
    pub hostname: String,
    /// Size and count limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// `--log-level` (default `info`).
    pub log_level: log::LevelFilter,
}

impl Options {
    /// Whether the daemon must generate the development certificate ([`crate::devcert`]):
    /// `--dev` without `--cert`, and some listener uses TLS.
    pub fn needs_dev_certificate(&self) -> bool {
        self.dev && self.certificates.is_empty() && self.listeners.iter().any(|l| l.mode.uses_tls())
    }
}

/// One `--listen ADDR:PORT=MODE[+proxy|+proxy-or-direct]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listener {
    /// The address and port to bind.
    pub addr: SocketAddr,
    /// How TLS is used on it.
    pub mode: Mode,
    /// PROXY protocol: `None` (off), or what sources outside `--proxy-trusted` get.
    pub proxy: Option<Untrusted>,
}

/// One `--cert CHAIN.pem --key KEY.pem` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateFiles {
    /// The certificate chain, leaf first (PEM).
    pub chain: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// Where accepted messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpoolOption {
    /// `--maildir PATH`.
    Maildir(PathBuf),
    /// `--sink`.
    Sink,
    /// `--relay`.
    Relay(RelayTarget),
}

/// One `--relay smtp://HOST:PORT[+xclient|+proxy-v2][+starttls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayTarget {
    /// `HOST:PORT`.
    pub address: String,
    /// How the backend learns the client.
    pub identity: Identity,
    /// STARTTLS to the backend.
    pub starttls: bool,
    /// `--relay-ca`: the CA bundle that verifies the backend.
    pub ca: Option<PathBuf>,
}

/// Size and count limits; `None` keeps the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// `--max-message-size`, in bytes.
    pub max_message_size: Option<u64>,
    /// `--max-recipients`.
    pub max_recipients: Option<NonZeroUsize>,
    /// `--max-connections`.
    pub max_connections: Option<NonZeroUsize>,
    /// `--max-connections-per-ip`.
    pub max_connections_per_ip: Option<NonZeroUsize>,
}

/// Timeouts; `None` keeps the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// `--timeout-command`: waiting for a command.
    pub command: Option<Duration>,
    /// `--timeout-data`: waiting for the next block of DATA.
    pub data: Option<Duration>,
    /// `--timeout-handshake`: the TLS handshake.
    pub handshake: Option<Duration>,
    /// `--timeout-session`: a whole session.
    pub session: Option<Duration>,
}

/// The `--dev` implicit-TLS listener.
pub const DEV_IMPLICIT_TLS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 2465);
/// The `--dev` STARTTLS-required listener.
pub const DEV_STARTTLS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 2587);

/// Parses the command-line arguments that follow the program name.
pub fn parse<I, S>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut args = args.into_iter().map(Into::into).peekable();
    let subcommand = match args.peek().and_then(|a| a.to_str()) {
        Some("hash-password") => Some(Command::HashPassword),
        Some("gen-ticket-key") => Some(Command::GenTicketKey),
        _ => None,
    };
    if let Some(command) = subcommand {
        args.next();
        return match args.next() {
            None => Ok(command),
            Some(a) if a == "--help" || a == "-h" => Ok(Command::Help),
            Some(a) => Err(ConfigError::UnexpectedArgument(lossy(&a))),
        };
    }

    let mut builder = Builder::default();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return Err(ConfigError::UnexpectedArgument(lossy(&arg)));
        };
        if text == "-h" {
            return Ok(Command::Help);
        }
        let Some(body) = text.strip_prefix("--") else {
            return Err(ConfigError::UnexpectedArgument(text.to_owned()));
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(OsString::from(value))),
            None => (body, None),
        };
        let Some(flag) = Flag::find(name) else {
            return Err(ConfigError::UnknownFlag {
                flag: format!("--{name}"),
                suggestion: suggest(name),
            });
        };
        if !flag.takes_value {
            if inline.is_some() {
                return Err(ConfigError::UnexpectedValue { flag: flag.name });
            }
            match flag.name {
                "--help" => return Ok(Command::Help),
                "--version" => return Ok(Command::Version),
                "--dev" => builder.dev = true,
                "--sink" => builder.sink = true,
                "--no-resumption" => builder.no_resumption = true,
                _ => {}
            }
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or(ConfigError::MissingValue { flag: flag.name })?,
        };
        builder.take(flag.name, value)?;
    }
    builder
        .finish()
        .map(|options| Command::Run(Box::new(options)))
}

/// A command-line mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A flag smtpsd does not know.
    UnknownFlag {
        /// The flag as given.
        flag: String,
        /// A known flag spelled similarly.
        suggestion: Option<&'static str>,
    },
    /// An argument that is not a flag, or not valid text.
    UnexpectedArgument(String),
    /// A flag that needs a value came last.
    MissingValue {
        /// The flag.
        flag: &'static str,
    },
    /// A flag without a value was given one (`--dev=yes`).
    UnexpectedValue {
        /// The flag.
        flag: &'static str,
    },
    /// A value that does not parse.
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A flag given twice that may appear only once.
    Repeated {
        /// The flag.
        flag: &'static str,
    },
    /// Two listeners on one address.
    DuplicateListener(SocketAddr),
    /// A `--key` without a `--cert` before it, or a `--cert` without its `--key`.
    UnpairedCertificate {
        /// The flag that has no partner.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// Two flags that exclude each other.
    Conflict {
        /// The first flag.
        first: &'static str,
        /// The second flag.
        second: &'static str,
    },
    /// No `--listen` and no `--dev`.
    NoListener,
    /// A TLS listener but no certificate.
    NoCertificate {
        /// The first listener that needs one.
        listener: SocketAddr,
    },
    /// Neither `--maildir` nor `--sink` nor `--relay` (nor `--dev`).
    NoSpool,
    /// `--relay ...+starttls` without `--relay-ca`, or the reverse.
    RelayCa,
    /// A `+proxy` listener, but no `--proxy-trusted`.
    NoProxyTrusted {
        /// The first `+proxy` listener.
        listener: SocketAddr,
    },
    /// `--proxy-trusted`, but no listener has `+proxy`.
    UnusedProxyTrusted,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFlag { flag, suggestion } => {
                write!(f, "unknown option {flag}")?;
                match suggestion {
                    Some(s) => write!(f, "; did you mean {s}?"),
                    None => write!(f, "; see smtpsd --help"),
                }
            }
            Self::UnexpectedArgument(arg) => write!(
                f,
                "unexpected argument {arg:?}; options start with -- (see smtpsd --help)"
            ),
            Self::MissingValue { flag } => write!(f, "{flag} needs a value (see smtpsd --help)"),
            Self::UnexpectedValue { flag } => write!(f, "{flag} takes no value"),
            Self::InvalidValue {
                flag,
                value,
                expected,
            } => write!(f, "invalid value {value:?} for {flag}: expected {expected}"),
            Self::Repeated { flag } => write!(f, "{flag} may be given only once"),
            Self::DuplicateListener(addr) => {
                write!(
                    f,
                    "--listen {addr} is given twice; each address may be used once"
                )
            }
            Self::UnpairedCertificate { flag, value } => write!(
                f,
                "{flag} {value} has no partner: give certificates as pairs, \
                 --cert CHAIN.pem --key KEY.pem"
            ),
            Self::Conflict { first, second } => {
                write!(f, "{first} and {second} exclude each other; choose one")
            }
            Self::NoListener => write!(
                f,
                "no listener: pass --listen ADDR:PORT=MODE (e.g. --listen [::]:465=implicit-tls), \
                 or --dev to try smtpsd out"
            ),
            Self::NoCertificate { listener } => write!(
                f,
                "the listener {listener} uses TLS but no certificate was given; \
                 pass --cert CHAIN.pem --key KEY.pem (or --dev for a self-signed one)"
            ),
            Self::NoSpool => write!(
                f,
                "no delivery target: pass --maildir PATH, --relay smtp://HOST:PORT, \
                 or --sink to discard messages"
            ),
            Self::RelayCa => write!(
                f,
                "--relay ...+starttls needs --relay-ca FILE (the CA that signed the backend's \
                 certificate), and --relay-ca is only for +starttls"
            ),
            Self::NoProxyTrusted { listener } => write!(
                f,
                "the listener {listener} reads PROXY headers but no balancer is trusted; \
                 pass --proxy-trusted with the balancer's address or block (e.g. 10.0.0.0/8)"
            ),
            Self::UnusedProxyTrusted => write!(
                f,
                "--proxy-trusted is given but no listener reads PROXY headers; \
                 add +proxy to the balancer's listeners (e.g. --listen [::]:465=implicit-tls+proxy)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One known flag.
struct Flag {
    name: &'static str,
    takes_value: bool,
}

impl Flag {
    const ALL: &'static [Flag] = &[
        Flag::switch("--help"),
        Flag::switch("--version"),
        Flag::switch("--dev"),
        Flag::switch("--sink"),
        Flag::switch("--no-resumption"),
        Flag::value("--listen"),
        Flag::value("--cert"),
        Flag::value("--key"),
        Flag::value("--workers"),
        Flag::value("--maildir"),
        Flag::value("--users"),
        Flag::value("--hostname"),
        Flag::value("--max-message-size"),
        Flag::value("--max-recipients"),
        Flag::value("--max-connections"),
        Flag::value("--max-connections-per-ip"),
        Flag::value("--timeout-command"),
        Flag::value("--timeout-data"),
        Flag::value("--timeout-handshake"),
        Flag::value("--timeout-session"),
        Flag::value("--log-level"),
        Flag::value("--proxy-trusted"),
        Flag::value("--ticket-keys"),
        Flag::value("--relay"),
        Flag::value("--relay-ca"),
    ];

    const fn switch(name: &'static str) -> Self {
        Self {
            name,
            takes_value: false,
        }
    }

    const fn value(name: &'static str) -> Self {
        Self {
            name,
            takes_value: true,
        }
    }

    /// The flag named `name` (without its leading `--`).
    fn find(name: &str) -> Option<&'static Flag> {
        Self::ALL.iter().find(|f| &f.name[2..] == name)
    }
}

/// Options as they are collected, before defaults and checks.
#[derive(Default)]
struct Builder {
    dev: bool,
    sink: bool,
    relay: Option<RelayTarget>,
    relay_ca: Option<PathBuf>,
    no_resumption: bool,
    ticket_keys: Option<PathBuf>,
    proxy_trusted: Vec<Network>,
    listeners: Vec<Listener>,
    certificates: Vec<CertificateFiles>,
    pending_cert: Option<PathBuf>,
    workers: Option<NonZeroUsize>,
    maildir: Option<PathBuf>,
    users: Option<PathBuf>,
    hostname: Option<String>,
    limits: Limits,
    timeouts: Timeouts,
    log_level: Option<log::LevelFilter>,
}

impl Builder {
    fn take(&mut self, flag: &'static str, value: OsString) -> Result<(), ConfigError> {
        match flag {
            "--cert" => {
                if let Some(chain) = self.pending_cert.take() {
                    return Err(ConfigError::UnpairedCertificate {
                        flag: "--cert",
                        value: chain.display().to_string(),
                    });
                }
                self.pending_cert = Some(PathBuf::from(value));
            }
            "--key" => {
                let Some(chain) = self.pending_cert.take() else {
                    return Err(ConfigError::UnpairedCertificate {
                        flag: "--key",
                        value: lossy(&value),
                    });
                };
                self.certificates.push(CertificateFiles {
                    chain,
                    key: PathBuf::from(value),
                });
            }
            "--maildir" => set_once(flag, &mut self.maildir, PathBuf::from(value))?,
            "--users" => set_once(flag, &mut self.users, PathBuf::from(value))?,
            "--ticket-keys" => set_once(flag, &mut self.ticket_keys, PathBuf::from(value))?,
            "--relay-ca" => set_once(flag, &mut self.relay_ca, PathBuf::from(value))?,
            _ => self.take_text(flag, text(flag, &value)?)?,
        }
        Ok(())
    }

    fn take_text(&mut self, flag: &'static str, value: &str) -> Result<(), ConfigError> {
        match flag {
            "--listen" => {
                let listener = parse_listener(value)?;
                // Port 0 asks the system for a free port: each such listener gets its own.
                if listener.addr.port() != 0
                    && self.listeners.iter().any(|l| l.addr == listener.addr)
                {
                    return Err(ConfigError::DuplicateListener(listener.addr));
                }
                self.listeners.push(listener);
            }
            "--proxy-trusted" => {
                let network = Network::from_str(value).map_err(|_| {
                    invalid(
                        flag,
                        value,
                        "an IPv4 or IPv6 address or block, e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.10",
                    )
                })?;
                self.proxy_trusted.push(network);
            }
            "--relay" => set_once(flag, &mut self.relay, parse_relay(value)?)?,
            "--workers" => set_once(flag, &mut self.workers, count(flag, value)?)?,
            "--hostname" => set_once(flag, &mut self.hostname, parse_hostname(value)?)?,
            "--max-message-size" => {
                set_once(flag, &mut self.limits.max_message_size, size(flag, value)?)?;
            }
            "--max-recipients" => {
                set_once(flag, &mut self.limits.max_recipients, count(flag, value)?)?;
            }
            "--max-connections" => {
                set_once(flag, &mut self.limits.max_connections, count(flag, value)?)?;
            }
            "--max-connections-per-ip" => set_once(
                flag,
                &mut self.limits.max_connections_per_ip,
                count(flag, value)?,
            )?,
            "--timeout-command" => set_once(flag, &mut self.timeouts.command, secs(flag, value)?)?,
            "--timeout-data" => set_once(flag, &mut self.timeouts.data, secs(flag, value)?)?,
            "--timeout-handshake" => {
                set_once(flag, &mut self.timeouts.handshake, secs(flag, value)?)?;
            }
            "--timeout-session" => set_once(flag, &mut self.timeouts.session, secs(flag, value)?)?,
            "--log-level" => {
                let level = log::LevelFilter::from_str(value)
                    .map_err(|_| invalid(flag, value, "off, error, warn, info, debug or trace"))?;
                set_once(flag, &mut self.log_level, level)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Options, ConfigError> {
        if let Some(chain) = self.pending_cert {
            return Err(ConfigError::UnpairedCertificate {
                flag: "--cert",
                value: chain.display().to_string(),
            });
        }
        let spool = match (self.maildir, self.sink, self.relay) {
            (Some(_), true, _) => {
                return Err(ConfigError::Conflict {
                    first: "--maildir",
                    second: "--sink",
                });
            }
            (Some(_), _, Some(_)) => {
                return Err(ConfigError::Conflict {
                    first: "--maildir",
                    second: "--relay",
                });
            }
            (None, true, Some(_)) => {
                return Err(ConfigError::Conflict {
                    first: "--sink",
                    second: "--relay",
                });
            }
            (Some(path), false, None) => SpoolOption::Maildir(path),
            (None, true, None) => SpoolOption::Sink,
            (None, false, Some(mut relay)) => {
                if relay.starttls != self.relay_ca.is_some() {
                    return Err(ConfigError::RelayCa);
                }
                relay.ca = self.relay_ca.take();
                SpoolOption::Relay(relay)
            }
            (None, false, None) if self.dev => SpoolOption::Maildir(PathBuf::from("./maildir")),
            (None, false, None) => return Err(ConfigError::NoSpool),
        };
        if self.relay_ca.is_some() {
            return Err(ConfigError::RelayCa);
        }
        let mut listeners = self.listeners;
        if listeners.is_empty() {
            if !self.dev {
                return Err(ConfigError::NoListener);
            }
            listeners = vec![
                Listener {
                    addr: DEV_IMPLICIT_TLS,
                    mode: Mode::ImplicitTls,
                    proxy: None,
                },
                Listener {
                    addr: DEV_STARTTLS,
                    mode: Mode::StartTlsRequired,
                    proxy: None,
                },
            ];
        }
        match listeners.iter().find(|l| l.proxy.is_some()) {
            Some(l) if self.proxy_trusted.is_empty() => {
                return Err(ConfigError::NoProxyTrusted { listener: l.addr });
            }
            None if !self.proxy_trusted.is_empty() => {
                return Err(ConfigError::UnusedProxyTrusted);
            }
            _ => {}
        }
        if self.no_resumption && self.ticket_keys.is_some() {
            return Err(ConfigError::Conflict {
                first: "--no-resumption",
                second: "--ticket-keys",
            });
        }
        if !self.dev
            && self.certificates.is_empty()
            && let Some(l) = listeners.iter().find(|l| l.mode.uses_tls())
        {
            return Err(ConfigError::NoCertificate { listener: l.addr });
        }
        let hostname = match (self.hostname, self.dev) {
            (Some(name), _) => name,
            (None, true) => "localhost".to_owned(),
            (None, false) => crate::system_hostname()
                .and_then(|name| parse_hostname(&name).ok())
                .unwrap_or_else(|| "localhost".to_owned()),
        };
        Ok(Options {
            dev: self.dev,
            listeners,
            certificates: self.certificates,
            workers: self.workers,
            spool,
            users: self.users,
            no_resumption: self.no_resumption,
            ticket_keys: self.ticket_keys,
            proxy_trusted: self.proxy_trusted,
            hostname,
            limits: self.limits,
            timeouts: self.timeouts,
            log_level: self.log_level.unwrap_or(log::LevelFilter::Info),
        })
    }
}

fn set_once<T>(flag: &'static str, slot: &mut Option<T>, value: T) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(ConfigError::Repeated { flag });
    }
    *slot = Some(value);
    Ok(())
}

fn invalid(flag: &'static str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::InvalidValue {
        flag,
        value: value.to_owned(),
        expected,
    }
}

fn text<'a>(flag: &'static str, value: &'a OsStr) -> Result<&'a str, ConfigError> {
    value
        .to_str()
        .ok_or_else(|| invalid(flag, &lossy(value), "valid UTF-8 text"))
}

fn lossy(value: &OsStr) -> String {
    value.to_string_lossy().into_owned()
}

/// `ADDR:PORT=MODE[+proxy|+proxy-or-direct]`, e.g. `0.0.0.0:465=implicit-tls`,
/// `[::]:587=starttls-required+proxy`.
fn parse_listener(value: &str) -> Result<Listener, ConfigError> {
    const EXPECTED: &str = "ADDR:PORT=MODE, e.g. 0.0.0.0:465=implicit-tls or [::]:587=starttls-required \
                            (MODE: implicit-tls, starttls, starttls-required, plain)";
    let Some((addr, mode)) = value.rsplit_once('=') else {
        return Err(invalid("--listen", value, EXPECTED));
    };
    let (mode, proxy) = match mode.split_once('+') {
        None => (mode, None),
        Some((mode, "proxy")) => (mode, Some(Untrusted::Refuse)),
        Some((mode, "proxy-or-direct")) => (mode, Some(Untrusted::Direct)),
        Some(_) => {
            return Err(invalid(
                "--listen",
                value,
                "+proxy or +proxy-or-direct after the mode, e.g. [::]:465=implicit-tls+proxy",
            ));
        }
    };
    let addr = SocketAddr::from_str(addr).map_err(|_| {
        invalid(
            "--listen",
            value,
            "an IP address and port before `=`, e.g. 127.0.0.1:465 or [::1]:465 (names are not resolved)",
        )
    })?;
    let mode = Mode::from_str(mode).map_err(|_| {
        invalid(
            "--listen",
            value,
            "a mode after `=`: implicit-tls, starttls, starttls-required or plain",
        )
    })?;
    Ok(Listener { addr, mode, proxy })
}

/// `smtp://HOST:PORT[+xclient|+proxy-v2][+starttls]`.
fn parse_relay(value: &str) -> Result<RelayTarget, ConfigError> {
    const EXPECTED: &str = "smtp://HOST:PORT with optional +xclient or +proxy-v2 and +starttls, \
                            e.g. smtp://127.0.0.1:10025+xclient";
    let Some(rest) = value.strip_prefix("smtp://") else {
        return Err(invalid("--relay", value, EXPECTED));
    };
    let mut parts = rest.split('+');
    let address = parts.next().unwrap_or_default();
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return Err(invalid("--relay", value, EXPECTED));
    }
    let mut target = RelayTarget {
        address: address.to_owned(),
        identity: Identity::None,
        starttls: false,
        ca: None,
    };
    for option in parts {
        match option {
            "xclient" if target.identity == Identity::None => target.identity = Identity::Xclient,
            "proxy-v2" if target.identity == Identity::None => target.identity = Identity::ProxyV2,
            "starttls" if !target.starttls => target.starttls = true,
            _ => return Err(invalid("--relay", value, EXPECTED)),
        }
    }
    Ok(target)
}

/// A host name for the greeting: letters, digits, `-` and `.`, at most 255 characters, no
/// empty label.
fn parse_hostname(value: &str) -> Result<String, ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 255
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "--hostname",
            value,
            "a domain name such as mx.example.org (letters, digits, `-`, `.`)",
        ))
    }
}

fn count(flag: &'static str, value: &str) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::from_str(value).map_err(|_| invalid(flag, value, "a whole number of at least 1"))
}

fn secs(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match u64::from_str(value) {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
        _ => Err(invalid(
            flag,
            value,
            "a whole number of seconds, at least 1",
        )),
    }
}

/// Bytes, optionally with a K, M or G suffix (powers of 1024).
fn size(flag: &'static str, value: &str) -> Result<u64, ConfigError> {
    const EXPECTED: &str = "a number of bytes of at least 1, optionally with K, M or G (e.g. 25M)";
    let (digits, multiplier) = match value.as_bytes().last() {
        Some(b'k' | b'K') => (&value[..value.len() - 1], 1 << 10),
        Some(b'm' | b'M') => (&value[..value.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&value[..value.len() - 1], 1 << 30),
        _ => (value, 1),
    };
    u64::from_str(digits)
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|&n| n > 0)
        .ok_or_else(|| invalid(flag, value, EXPECTED))
}

/// The known flag closest to `name` (without `--`), if it is a plausible typo.
fn suggest(name: &str) -> Option<&'static str> {
    Flag::ALL
        .iter()
        .map(|f| (edit_distance(name, &f.name[2..]), f.name))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(args.iter().copied()) {
            Ok(Command::Run(options)) => *options,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    fn error(args: &[&str]) -> ConfigError {
        parse(args.iter().copied()).unwrap_err()
    }

    #[test]
    fn dev_alone_gives_the_documented_defaults() {
        let o = run(&["--dev"]);
        assert!(o.dev);
        assert_eq!(
            o.listeners,
            vec![
                Listener {
                    addr: "127.0.0.1:2465".parse().unwrap(),
                    mode: Mode::ImplicitTls,
                    proxy: None,
                },
                Listener {
                    addr: "127.0.0.1:2587".parse().unwrap(),
                    mode: Mode::StartTlsRequired,
                    proxy: None,
                },
            ]
        );
        assert!(o.certificates.is_empty());
        assert!(o.needs_dev_certificate());
        assert_eq!(o.spool, SpoolOption::Maildir(PathBuf::from("./maildir")));
        assert_eq!(o.hostname, "localhost");
        assert_eq!(o.log_level, log::LevelFilter::Info);
        assert_eq!(o.limits, Limits::default());
        assert_eq!(o.timeouts, Timeouts::default());
    }

    #[test]
    fn a_full_command_line_is_collected_in_order() {
        let o = run(&[
            "--listen",
            "0.0.0.0:465=implicit-tls",
            "--listen=[::]:587=starttls-required",
            "--listen",
            "[::1]:25=starttls",
            "--listen",
            "127.0.0.1:2525=plain",
            "--cert",
            "/etc/a.pem",
            "--key",
            "/etc/a.key",
            "--cert=/etc/b.pem",
            "--key=/etc/b.key",
            "--workers",
            "4",
            "--maildir",
            "/var/mail/x",
            "--users",
            "/etc/smtpsd/users",
            "--hostname",
            "mx.example.org",
            "--max-message-size",
            "25M",
            "--max-recipients",
            "100",
            "--max-connections",
            "1000",
            "--max-connections-per-ip",
            "20",
            "--timeout-command",
            "300",
            "--timeout-data",
            "180",
            "--timeout-handshake",
            "10",
            "--timeout-session",
            "3600",
            "--log-level",
            "debug",
        ]);
        let modes: Vec<_> = o.listeners.iter().map(|l| l.mode).collect();
        assert_eq!(
            modes,
            [
                Mode::ImplicitTls,
                Mode::StartTlsRequired,
                Mode::StartTls,
                Mode::Plain
            ]
        );
        assert_eq!(o.listeners[1].addr, "[::]:587".parse().unwrap());
        assert_eq!(
            o.certificates,
            vec![
                CertificateFiles {
                    chain: "/etc/a.pem".into(),
                    key: "/etc/a.key".into()
                },
                CertificateFiles {
                    chain: "/etc/b.pem".into(),
                    key: "/etc/b.key".into()
                },
            ]
        );
        assert_eq!(o.workers, NonZeroUsize::new(4));
        assert_eq!(o.spool, SpoolOption::Maildir("/var/mail/x".into()));
        assert_eq!(o.users, Some("/etc/smtpsd/users".into()));
        assert_eq!(o.hostname, "mx.example.org");
        assert_eq!(o.limits.max_message_size, Some(25 << 20));
        assert_eq!(o.limits.max_recipients, NonZeroUsize::new(100));
        assert_eq!(o.limits.max_connections, NonZeroUsize::new(1000));
        assert_eq!(o.limits.max_connections_per_ip, NonZeroUsize::new(20));
        assert_eq!(o.timeouts.command, Some(Duration::from_secs(300)));
        assert_eq!(o.timeouts.data, Some(Duration::from_secs(180)));
        assert_eq!(o.timeouts.handshake, Some(Duration::from_secs(10)));
        assert_eq!(o.timeouts.session, Some(Duration::from_secs(3600)));
        assert_eq!(o.log_level, log::LevelFilter::Debug);
        assert!(!o.dev);
        assert!(!o.needs_dev_certificate());
    }

    #[test]
    fn explicit_flags_override_dev_defaults() {
        let o = run(&[
            "--dev",
            "--listen",
            "127.0.0.1:9465=implicit-tls",
            "--sink",
            "--hostname",
            "dev.example",
        ]);
        assert_eq!(o.listeners.len(), 1);
        assert_eq!(o.spool, SpoolOption::Sink);
        assert_eq!(o.hostname, "dev.example");
    }

    #[test]
    fn help_version_and_hash_password_are_commands() {
        assert_eq!(parse(["--help"]), Ok(Command::Help));
        assert_eq!(parse(["-h"]), Ok(Command::Help));
        assert_eq!(parse(["--dev", "--version"]), Ok(Command::Version));
        assert_eq!(parse(["hash-password"]), Ok(Command::HashPassword));
        assert_eq!(parse(["hash-password", "--help"]), Ok(Command::Help));
        assert_eq!(
            parse(["hash-password", "secret"]),
            Err(ConfigError::UnexpectedArgument("secret".into()))
        );
    }

    #[test]
    fn proxy_listeners_and_trusted_balancers() {
        let o = run(&[
            "--listen",
            "[::]:465=implicit-tls+proxy",
            "--listen",
            "[::]:587=starttls-required+proxy-or-direct",
            "--listen",
            "127.0.0.1:25=starttls",
            "--proxy-trusted",
            "10.0.0.0/8",
            "--proxy-trusted=2001:db8::/32",
            "--proxy-trusted",
            "192.0.2.10",
            "--cert",
            "a.pem",
            "--key",
            "a.key",
            "--sink",
            "--ticket-keys",
            "/etc/smtpsd/ticket-keys",
        ]);
        let proxies: Vec<_> = o.listeners.iter().map(|l| l.proxy).collect();
        assert_eq!(
            proxies,
            [Some(Untrusted::Refuse), Some(Untrusted::Direct), None]
        );
        assert_eq!(o.listeners[0].mode, Mode::ImplicitTls);
        assert_eq!(o.listeners[1].mode, Mode::StartTlsRequired);
        let trusted: Vec<String> = o.proxy_trusted.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.10/32"]);
        assert_eq!(
            o.ticket_keys,
            Some(PathBuf::from("/etc/smtpsd/ticket-keys"))
        );
        assert_eq!(parse(["gen-ticket-key"]), Ok(Command::GenTicketKey));
    }

    #[test]
    fn relay_targets_parse_with_their_options() {
        let o = run(&["--dev", "--relay", "smtp://127.0.0.1:10025+xclient"]);
        assert_eq!(
            o.spool,
            SpoolOption::Relay(RelayTarget {
                address: "127.0.0.1:10025".into(),
                identity: Identity::Xclient,
                starttls: false,
                ca: None,
            })
        );
        let o = run(&[
            "--dev",
            "--relay=smtp://mx.internal:25+proxy-v2+starttls",
            "--relay-ca",
            "/etc/ssl/internal-ca.pem",
        ]);
        let SpoolOption::Relay(target) = o.spool else {
            panic!("relay");
        };
        assert_eq!(target.identity, Identity::ProxyV2);
        assert!(target.starttls);
        assert_eq!(target.ca, Some(PathBuf::from("/etc/ssl/internal-ca.pem")));
    }

    #[test]
    fn resumption_is_on_unless_turned_off() {
        let args = ["--listen", "127.0.0.1:2525=plain", "--sink"];
        assert!(!run(&args).no_resumption);
        let mut off = args.to_vec();
        off.push("--no-resumption");
        assert!(run(&off).no_resumption);
    }

    #[test]
    fn plain_only_listeners_need_no_certificate() {
        let o = run(&["--listen", "127.0.0.1:2525=plain", "--sink"]);
        assert!(o.certificates.is_empty());
        let o = run(&["--dev", "--listen", "127.0.0.1:2525=plain"]);
        assert!(!o.needs_dev_certificate());
    }

    #[test]
    fn errors_name_the_flag_and_value() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--lisen", "x"],
                "unknown option --lisen; did you mean --listen?",
            ),
            (
                &["--frobnicate"],
                "unknown option --frobnicate; see smtpsd --help",
            ),
            (&["serve"], "unexpected argument \"serve\""),
            (&["--workers"], "--workers needs a value"),
            (&["--dev=yes"], "--dev takes no value"),
            (&["--workers", "0"], "invalid value \"0\" for --workers"),
            (
                &["--workers", "many"],
                "invalid value \"many\" for --workers",
            ),
            (
                &["--listen", "127.0.0.1:465"],
                "invalid value \"127.0.0.1:465\" for --listen",
            ),
            (
                &["--listen", "localhost:465=plain"],
                "names are not resolved",
            ),
            (&["--listen", "127.0.0.1:465=tls"], "a mode after `=`"),
            (
                &["--listen", "127.0.0.1:99999=plain"],
                "127.0.0.1:99999=plain",
            ),
            (
                &["--max-message-size", "10X"],
                "invalid value \"10X\" for --max-message-size",
            ),
            (&["--max-message-size", "99999999999G"], "99999999999G"),
            (
                &["--timeout-data", "0"],
                "invalid value \"0\" for --timeout-data",
            ),
            (
                &["--log-level", "loud"],
                "invalid value \"loud\" for --log-level",
            ),
            (
                &["--hostname", "bad name"],
                "invalid value \"bad name\" for --hostname",
            ),
            (&["--hostname", "a..b"], "for --hostname"),
            (
                &["--dev", "--workers", "2", "--workers", "3"],
                "--workers may be given only once",
            ),
            (&["--key", "k.pem"], "--key k.pem has no partner"),
            (
                &["--cert", "a.pem", "--cert", "b.pem"],
                "--cert a.pem has no partner",
            ),
            (&["--dev", "--cert", "a.pem"], "--cert a.pem has no partner"),
            (
                &["--dev", "--maildir", "m", "--sink"],
                "--maildir and --sink exclude each other",
            ),
            (&["--sink"], "no listener"),
            (
                &["--listen", "[::]:465=implicit-tls", "--sink"],
                "the listener [::]:465 uses TLS",
            ),
            (&["--listen", "[::]:25=plain"], "no delivery target"),
            (
                &["--listen", "[::]:25=plain", "--listen", "[::]:25=starttls"],
                "--listen [::]:25 is given twice",
            ),
            (
                &["--listen", "[::]:25=plain+haproxy", "--sink"],
                "+proxy or +proxy-or-direct after the mode",
            ),
            (
                &["--listen", "[::]:25=plain+proxy", "--sink"],
                "the listener [::]:25 reads PROXY headers but no balancer is trusted",
            ),
            (
                &["--dev", "--proxy-trusted", "10.0.0.0/8"],
                "--proxy-trusted is given but no listener reads PROXY headers",
            ),
            (
                &["--dev", "--proxy-trusted", "10.0.0.1/8"],
                "invalid value \"10.0.0.1/8\" for --proxy-trusted",
            ),
            (
                &["--dev", "--proxy-trusted", "balancer.example"],
                "invalid value \"balancer.example\" for --proxy-trusted",
            ),
            (
                &["--dev", "--no-resumption", "--ticket-keys", "k"],
                "--no-resumption and --ticket-keys exclude each other",
            ),
            (&["gen-ticket-key", "now"], "unexpected argument \"now\""),
            (
                &["--dev", "--relay", "127.0.0.1:25"],
                "for --relay: expected smtp://",
            ),
            (&["--dev", "--relay", "smtp://127.0.0.1"], "for --relay"),
            (&["--dev", "--relay", "smtp://[::1]:0"], "for --relay"),
            (
                &["--dev", "--relay", "smtp://h:25+xclient+proxy-v2"],
                "for --relay",
            ),
            (&["--dev", "--relay", "smtp://h:25+tls"], "for --relay"),
            (
                &["--dev", "--maildir", "m", "--relay", "smtp://h:25"],
                "--maildir and --relay exclude each other",
            ),
            (
                &["--dev", "--relay", "smtp://h:25+starttls"],
                "needs --relay-ca FILE",
            ),
            (
                &["--dev", "--relay", "smtp://h:25", "--relay-ca", "ca.pem"],
                "needs --relay-ca FILE",
            ),
        ];
        for (args, needle) in cases {
            let message = error(args).to_string();
            assert!(message.contains(needle), "{args:?}: {message}");
        }
    }

    #[test]
    fn non_utf8_paths_are_kept() {
        use std::os::unix::ffi::OsStringExt;
        let path = OsString::from_vec(b"/tmp/\xffmail".to_vec());
        let args = vec![
            OsString::from("--dev"),
            OsString::from("--maildir"),
            path.clone(),
        ];
        let Ok(Command::Run(o)) = parse(args) else {
            panic!("did not parse");
        };
        assert_eq!(o.spool, SpoolOption::Maildir(PathBuf::from(path)));
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(size("--x", "1"), Ok(1));
        assert_eq!(size("--x", "64k"), Ok(64 << 10));
        assert_eq!(size("--x", "2G"), Ok(2 << 30));
        assert!(size("--x", "0").is_err());
        assert!(size("--x", "K").is_err());
    }
}
