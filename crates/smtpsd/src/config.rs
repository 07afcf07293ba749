//! The command line and the config file: `smtpsd [--config FILE] [OPTIONS]`,
//! `smtpsd check-config`, `smtpsd hash-password`, `smtpsd gen-ticket-key`.
//!
//! Every option lives once, as a field of [`Settings`]: its doc comment is the `--help` text,
//! `#[arg]` makes it a flag (clap) and the same field is a key of the config file (serde +
//! toml, the flag's name without `--`: `--max-message-size 25M` is `max-message-size = "25M"`;
//! repeatable flags are arrays). [`parse`] reads the file named by `--config`, lets the flags
//! override it ([`Settings::overridden_by`]), checks how the options fit together and returns
//! [`Options`]: listener modes are [`Mode`]s, limits and timeouts left unset are `None`, so
//! the daemon applies the server's defaults. Every error names the flag, or the file, line and
//! key, and the value at fault.
//!
//! Adding an option: add a field to [`Settings`] (doc comment, `#[arg(long, ...)]`, a type
//! that implements `FromStr` and `Deserialize`, e.g. through [`from_str_values!`]) and read it
//! from [`Options::settings`] in the daemon. Checks of one value go in its `FromStr`, checks
//! across options in `Settings::finish`.

use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use smtps_relay::backend::Identity;
use smtps_server::{Mode, Network, Untrusted};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Run the server with these options.
    Run(Box<Options>),
    /// Load everything (certificates, keys, users, ticket keys), print what would run, and
    /// exit (`smtpsd check-config`).
    CheckConfig(Box<Options>),
    /// Read a password on standard input and print its hash (`smtpsd hash-password`).
    HashPassword,
    /// Print a new session-ticket key line (`smtpsd gen-ticket-key`).
    GenTicketKey,
    /// Print this help text (`--help`).
    Help(String),
    /// Print this version line (`--version`).
    Version(String),
}

/// The options of a server run: [`Settings`] merged (file, then flags) and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// `--dev`: generate a self-signed certificate if no `--cert` was given.
    pub dev: bool,
    /// The listeners, in command-line (or file) order (never empty).
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
    /// `--shutdown-grace`: how long transactions in flight may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// `--log-level` (default `info`).
    pub log_level: log::LevelFilter,
    /// `--log-target` (default standard error).
    pub log_target: crate::logger::LogTarget,
    /// AUTH brute-force throttling.
    pub auth_throttle: smtps_relay::auth::ThrottleConfig,
    /// `--config`: the file the options were read from, if any.
    pub config_file: Option<PathBuf>,
    /// Every option as given (the file's, overridden by the flags'), for options that need
    /// no check across others: read new options here.
    pub settings: Settings,
}

impl Options {
    /// Whether the daemon must generate the development certificate ([`crate::devcert`]):
    /// `--dev` without `--cert`, and some listener uses TLS.
    pub fn needs_dev_certificate(&self) -> bool {
        self.dev && self.certificates.is_empty() && self.listeners.iter().any(|l| l.mode.uses_tls())
    }
}

/// One `--listen ADDR:PORT=MODE[+proxy|+proxy-or-direct][+share-port][+name=NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listener {
    /// The address and port to bind.
    pub addr: SocketAddr,
    /// How TLS is used on it.
    pub mode: Mode,
    /// PROXY protocol: `None` (off), or what sources outside `--proxy-trusted` get.
    pub proxy: Option<Untrusted>,
    /// `+share-port`: join another process's listeners on the port (SO_REUSEPORT), for a
    /// zero-downtime upgrade; off, a port someone listens on fails to bind.
    pub share_port: bool,
    /// `+name=NAME`: the name a supervisor gives the listening socket it hands over
    /// (systemd's `FileDescriptorName=`, `LISTEN_FDNAMES`).
    pub name: Option<String>,
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
/// How long a graceful shutdown lets transactions in flight finish, unless
/// `--shutdown-grace` says otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Parses the command-line arguments that follow the program name, and the config file they
/// name.
///
/// # Errors
/// A [`ConfigError`] naming the flag or the file, line and key.
pub fn parse<I, S>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    let args =
        std::iter::once(std::ffi::OsString::from("smtpsd")).chain(args.into_iter().map(Into::into));
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    Ok(Command::Help(error.render().to_string()))
                }
                ErrorKind::DisplayVersion => Ok(Command::Version(error.render().to_string())),
                _ => Err(ConfigError::CommandLine(error.render().to_string())),
            };
        }
    };
    match cli.command {
        None => cli.run.options().map(|o| Command::Run(Box::new(o))),
        Some(Subcommand::CheckConfig(run)) => {
            run.options().map(|o| Command::CheckConfig(Box::new(o)))
        }
        Some(Subcommand::HashPassword) => Ok(Command::HashPassword),
        Some(Subcommand::GenTicketKey) => Ok(Command::GenTicketKey),
    }
}

/// Reads a config file: [`Settings`] as TOML keys, unknown keys refused.
///
/// # Errors
/// [`ConfigError::File`] naming the file, and for a bad key or value its line and column.
pub fn load_file(path: &Path) -> Result<Settings, ConfigError> {
    let bad = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    toml::from_str(&text).map_err(|e| bad(e.to_string().trim_end().to_owned()))
}

/// The command line, as clap sees it.
#[derive(Parser)]
#[command(
    name = "smtpsd",
    version,
    about = "An SMTP server for implicit TLS (RFC 8314) and STARTTLS (RFC 3207) that delivers \
             into a Maildir or relays to a backend MTA.",
    after_help = "Try it: smtpsd --dev (TLS on 127.0.0.1:2465 and :2587, self-signed \
                  certificate, mail into ./maildir). Every option is also a key of the --config \
                  file (its name without --; repeatable options are arrays).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Subcommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand)]
enum Subcommand {
    /// Load the configuration and everything it names (certificates and keys, users, ticket
    /// keys, the relay CA), print what would run, and exit 0, or 1 with the reason.
    CheckConfig(Box<RunArgs>),
    /// Read a password on standard input and print its argon2id hash for a --users file.
    HashPassword,
    /// Print a new random session-ticket key (a line for a --ticket-keys file).
    GenTicketKey,
}

/// A server run's options: a config file and the flags that override it.
#[derive(clap::Args)]
struct RunArgs {
    /// Read options from this TOML file: each key is a long option without `--`
    /// (`max-message-size = "25M"`), repeatable options are arrays (`listen = [...]`).
    /// Options also given as flags override the file's (a repeated flag replaces the file's
    /// whole list). Unknown keys are refused.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

impl RunArgs {
    fn options(self) -> Result<Options, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => Settings::default(),
        };
        file.overridden_by(self.settings).finish(self.config)
    }
}

/// Declares [`Settings`] and its field-by-field [`Settings::overridden_by`], so that a field
/// is declared once.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct Settings {
            $( $(#[$field_meta:meta])* pub $field:ident: $type:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct Settings {
            $( $(#[$field_meta])* pub $field: $type, )*
        }

        impl Settings {
            /// These settings (a config file's) with every option `flags` gives in their
            /// place: a value replaces the file's, a repeatable flag the file's whole list, a
            /// switch given in either is on.
            #[must_use]
            pub fn overridden_by(self, flags: Self) -> Self {
                Self { $( $field: Override::overridden_by(self.$field, flags.$field), )* }
            }
        }
    };
}

settings! {
    /// Every option of a server run, as given: by flags (clap) or by the config file (serde,
    /// the same names without `--`). One field per option; its doc comment is its help.
    #[derive(clap::Args, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    #[non_exhaustive]
    pub struct Settings {
        /// Listen on ADDR:PORT (0.0.0.0:465, [::]:587) in MODE: implicit-tls, starttls,
        /// starttls-required or plain; repeatable. +proxy: every connection from a
        /// --proxy-trusted source starts with a PROXY protocol v1/v2 header naming the real
        /// client, others are closed without a banner; +proxy-or-direct: others are served as
        /// direct clients. +share-port: join the listeners another smtpsd has on the port
        /// (SO_REUSEPORT), to upgrade without downtime. +name=NAME: the name of the socket a
        /// supervisor hands over (systemd FileDescriptorName=).
        #[arg(
            long,
            value_name = "ADDR:PORT=MODE[+proxy|+proxy-or-direct][+share-port][+name=NAME]",
            help_heading = "Listeners and certificates"
        )]
        pub listen: Vec<Listener>,
        /// A load balancer's address or block (10.0.0.0/8, 2001:db8::/32, 192.0.2.10) allowed
        /// to send PROXY headers; repeatable.
        #[arg(long, value_name = "CIDR", help_heading = "Listeners and certificates")]
        pub proxy_trusted: Vec<TrustedNetwork>,
        /// A certificate chain (PEM), paired with the --key in the same position; repeatable:
        /// the first pair is the default, later ones are chosen by SNI.
        #[arg(long, value_name = "CHAIN.pem", help_heading = "Listeners and certificates")]
        pub cert: Vec<PathBuf>,
        /// The private key (PEM) of the --cert in the same position; repeatable.
        #[arg(long, value_name = "KEY.pem", help_heading = "Listeners and certificates")]
        pub key: Vec<PathBuf>,
        /// No TLS session resumption: no session tickets, no session cache; every handshake
        /// is a full one.
        #[arg(long, help_heading = "Listeners and certificates")]
        pub no_resumption: bool,
        /// Seal session tickets with the keys in FILE (one base64 key of 48 bytes a line, the
        /// first seals, all open), shared by every node behind a balancer; SIGHUP rereads it
        /// (`smtpsd gen-ticket-key` prints a new key).
        #[arg(long, value_name = "FILE", help_heading = "Listeners and certificates")]
        pub ticket_keys: Option<PathBuf>,
        /// Development defaults: a self-signed certificate for localhost, implicit TLS on
        /// 127.0.0.1:2465, STARTTLS required on 127.0.0.1:2587, --maildir ./maildir,
        /// --hostname localhost.
        #[arg(long, help_heading = "Listeners and certificates")]
        pub dev: bool,
        /// Deliver into this Maildir (created if missing).
        #[arg(long, value_name = "PATH", help_heading = "Delivery and AUTH")]
        pub maildir: Option<PathBuf>,
        /// Accept and discard every message (for benchmarks).
        #[arg(long, help_heading = "Delivery and AUTH")]
        pub sink: bool,
        /// Relay each transaction in real time to a backend MTA (an unmodified Postfix or
        /// Exim): its verdicts, its queue. +xclient names the client with XCLIENT (Postfix
        /// smtpd_authorized_xclient_hosts), +proxy-v2 with a PROXY v2 header (Postfix
        /// smtpd_upstream_proxy_protocol, Exim hosts_proxy); +starttls speaks TLS to a remote
        /// backend, verified against --relay-ca.
        #[arg(
            long,
            value_name = "smtp://HOST:PORT[+xclient|+proxy-v2][+starttls]",
            help_heading = "Delivery and AUTH"
        )]
        pub relay: Option<RelayTarget>,
        /// CA certificates (PEM) for the backend's certificate (--relay ...+starttls).
        #[arg(long, value_name = "FILE", help_heading = "Delivery and AUTH")]
        pub relay_ca: Option<PathBuf>,
        /// AUTH PLAIN/LOGIN users, one `name:$argon2id$...` a line (`smtpsd hash-password`).
        #[arg(long, value_name = "FILE", help_heading = "Delivery and AUTH")]
        pub users: Option<PathBuf>,
        /// Our name in the greeting and Received: headers (default: the system's host name).
        #[arg(long, value_name = "NAME", help_heading = "Delivery and AUTH")]
        pub hostname: Option<Hostname>,
        /// Worker threads (default: one per core).
        #[arg(long, value_name = "N", help_heading = "Limits and timeouts")]
        pub workers: Option<NonZeroUsize>,
        /// Largest message accepted, in bytes (suffixes K, M, G: powers of 1024).
        #[arg(long, value_name = "BYTES", help_heading = "Limits and timeouts")]
        pub max_message_size: Option<Size>,
        /// Recipients per message.
        #[arg(long, value_name = "N", help_heading = "Limits and timeouts")]
        pub max_recipients: Option<NonZeroUsize>,
        /// Connections in total.
        #[arg(long, value_name = "N", help_heading = "Limits and timeouts")]
        pub max_connections: Option<NonZeroUsize>,
        /// Connections from one client address.
        #[arg(long, value_name = "N", help_heading = "Limits and timeouts")]
        pub max_connections_per_ip: Option<NonZeroUsize>,
        /// Seconds waiting for a command (RFC 5321 §4.5.3.2: 300).
        #[arg(long, value_name = "SECS", help_heading = "Limits and timeouts")]
        pub timeout_command: Option<Seconds>,
        /// Seconds waiting for the next block of DATA.
        #[arg(long, value_name = "SECS", help_heading = "Limits and timeouts")]
        pub timeout_data: Option<Seconds>,
        /// Seconds for the TLS handshake.
        #[arg(long, value_name = "SECS", help_heading = "Limits and timeouts")]
        pub timeout_handshake: Option<Seconds>,
        /// Seconds for a whole session.
        #[arg(long, value_name = "SECS", help_heading = "Limits and timeouts")]
        pub timeout_session: Option<Seconds>,
        /// Seconds transactions in flight may take to finish after SIGTERM (default 30); idle
        /// sessions are told 421 at once.
        #[arg(long, value_name = "SECS", help_heading = "Limits and timeouts")]
        pub shutdown_grace: Option<Seconds>,
        /// Serve the server's counters for Prometheus on ADDR (HTTP, GET /metrics; no TLS and
        /// no authentication: keep it on loopback or a management network).
        #[arg(long, value_name = "ADDR")]
        pub metrics: Option<std::net::SocketAddr>,
        /// off, error, warn, info (default), debug or trace.
        #[arg(long, value_name = "LEVEL")]
        pub log_level: Option<LogLevel>,
        /// Where log lines go: stderr (default), syslog (/dev/log, facility mail) or journald
        /// (standard error with sd-daemon priority prefixes).
        #[arg(long, value_name = "TARGET")]
        pub log_target: Option<LogTargetArg>,
        /// Failed AUTH attempts from one client address (an IPv6 /64) within 15 minutes after
        /// which its AUTH is refused without verifying the password (default 5).
        #[arg(long, value_name = "N", help_heading = "Delivery and AUTH")]
        pub auth_max_failures: Option<std::num::NonZeroU32>,
        /// Failed AUTH attempts for one user name, from any address, within 15 minutes after
        /// which AUTH for that name is refused unverified (default 20).
        #[arg(long, value_name = "N", help_heading = "Delivery and AUTH")]
        pub auth_max_failures_per_user: Option<std::num::NonZeroU32>,
        /// What a throttled client gets: reply (454 4.7.0 at once; the default), tarpit (10 s
        /// of silence, then 421 4.7.0 and the connection closes) or tarpit:SECS (1 to 120).
        #[arg(long, value_name = "reply|tarpit[:SECS]", help_heading = "Delivery and AUTH")]
        pub auth_throttle: Option<AuthThrottleAction>,
    }
}

/// How a flag's value replaces a config file's ([`Settings::overridden_by`]).
trait Override {
    fn overridden_by(self, flag: Self) -> Self;
}

impl<T> Override for Option<T> {
    fn overridden_by(self, flag: Self) -> Self {
        flag.or(self)
    }
}

impl<T> Override for Vec<T> {
    fn overridden_by(self, flag: Self) -> Self {
        if flag.is_empty() { self } else { flag }
    }
}

impl Override for bool {
    fn overridden_by(self, flag: Self) -> Self {
        self || flag
    }
}

impl Settings {
    /// Applies defaults (`--dev`'s among them) and checks how the options fit together.
    fn finish(self, config_file: Option<PathBuf>) -> Result<Options, ConfigError> {
        let s = self.clone();
        for (i, listener) in s.listen.iter().enumerate() {
            // Port 0 asks the system for a free port: each such listener gets its own.
            if listener.addr.port() != 0 && s.listen[..i].iter().any(|l| l.addr == listener.addr) {
                return Err(ConfigError::DuplicateListener(listener.addr));
            }
        }
        if let Some(chain) = s.cert.get(s.key.len()) {
            return Err(ConfigError::UnpairedCertificate {
                flag: "--cert",
                value: chain.display().to_string(),
            });
        }
        if let Some(key) = s.key.get(s.cert.len()) {
            return Err(ConfigError::UnpairedCertificate {
                flag: "--key",
                value: key.display().to_string(),
            });
        }
        let certificates: Vec<CertificateFiles> = s
            .cert
            .into_iter()
            .zip(s.key)
            .map(|(chain, key)| CertificateFiles { chain, key })
            .collect();
        let spool = match (s.maildir, s.sink, s.relay) {
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
                if relay.starttls != s.relay_ca.is_some() {
                    return Err(ConfigError::RelayCa);
                }
                relay.ca.clone_from(&s.relay_ca);
                SpoolOption::Relay(relay)
            }
            (None, false, None) if s.dev => SpoolOption::Maildir(PathBuf::from("./maildir")),
            (None, false, None) => return Err(ConfigError::NoSpool),
        };
        if s.relay_ca.is_some() && !matches!(spool, SpoolOption::Relay(_)) {
            return Err(ConfigError::RelayCa);
        }
        let mut listeners = s.listen;
        if listeners.is_empty() {
            if !s.dev {
                return Err(ConfigError::NoListener);
            }
            listeners = [
                (DEV_IMPLICIT_TLS, Mode::ImplicitTls),
                (DEV_STARTTLS, Mode::StartTlsRequired),
            ]
            .into_iter()
            .map(|(addr, mode)| Listener {
                addr,
                mode,
                proxy: None,
                share_port: false,
                name: None,
            })
            .collect();
        }
        let proxy_trusted: Vec<Network> = s.proxy_trusted.into_iter().map(|t| t.0).collect();
        match listeners.iter().find(|l| l.proxy.is_some()) {
            Some(l) if proxy_trusted.is_empty() => {
                return Err(ConfigError::NoProxyTrusted { listener: l.addr });
            }
            None if !proxy_trusted.is_empty() => {
                return Err(ConfigError::UnusedProxyTrusted);
            }
            _ => {}
        }
        if s.no_resumption && s.ticket_keys.is_some() {
            return Err(ConfigError::Conflict {
                first: "--no-resumption",
                second: "--ticket-keys",
            });
        }
        if !s.dev
            && certificates.is_empty()
            && let Some(l) = listeners.iter().find(|l| l.mode.uses_tls())
        {
            return Err(ConfigError::NoCertificate { listener: l.addr });
        }
        let hostname = match (s.hostname, s.dev) {
            (Some(name), _) => name.0,
            (None, true) => "localhost".to_owned(),
            (None, false) => crate::system_hostname()
                .and_then(|name| Hostname::from_str(&name).ok())
                .map_or_else(|| "localhost".to_owned(), |name| name.0),
        };
        let secs = |value: Option<Seconds>| value.map(|s| s.0);
        Ok(Options {
            dev: s.dev,
            listeners,
            certificates,
            workers: s.workers,
            spool,
            users: s.users,
            no_resumption: s.no_resumption,
            ticket_keys: s.ticket_keys,
            proxy_trusted,
            hostname,
            limits: Limits {
                max_message_size: s.max_message_size.map(|size| size.0),
                max_recipients: s.max_recipients,
                max_connections: s.max_connections,
                max_connections_per_ip: s.max_connections_per_ip,
            },
            timeouts: Timeouts {
                command: secs(s.timeout_command),
                data: secs(s.timeout_data),
                handshake: secs(s.timeout_handshake),
                session: secs(s.timeout_session),
            },
            shutdown_grace: secs(s.shutdown_grace).unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            log_level: s.log_level.map_or(log::LevelFilter::Info, |level| level.0),
            log_target: s.log_target.map(|target| target.0).unwrap_or_default(),
            auth_throttle: {
                let mut throttle = smtps_relay::auth::ThrottleConfig::default();
                if let Some(n) = s.auth_max_failures {
                    throttle.max_failures = n.get();
                }
                if let Some(n) = s.auth_max_failures_per_user {
                    throttle.max_failures_per_user = n.get();
                }
                if let Some(action) = s.auth_throttle {
                    throttle.action = action.0;
                }
                throttle
            },
            config_file,
            settings: self,
        })
    }
}

/// A configuration mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A command-line mistake, as clap words it (it names the flag and the value, and
    /// suggests a flag spelled alike).
    CommandLine(String),
    /// The config file could not be read, or a key or value in it is wrong.
    File {
        /// The file.
        path: PathBuf,
        /// Why, with the line, column and key for a bad key or value.
        reason: String,
    },
    /// Two listeners on one address.
    DuplicateListener(SocketAddr),
    /// A `--key` without a `--cert`, or a `--cert` without its `--key`.
    UnpairedCertificate {
        /// The flag that has no partner.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// Two options that exclude each other.
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
            Self::CommandLine(text) => {
                let text = text.trim_end();
                f.write_str(text.strip_prefix("error: ").unwrap_or(text))
            }
            Self::File { path, reason } => write!(
                f,
                "config file {}: {reason}\n(keys are the long options without --; see smtpsd \
                 --help)",
                path.display()
            ),
            Self::DuplicateListener(addr) => {
                write!(
                    f,
                    "--listen {addr} is given twice; each address may be used once"
                )
            }
            Self::UnpairedCertificate { flag, value } => write!(
                f,
                "{flag} {value} has no partner: give certificates as pairs, \
                 --cert CHAIN.pem --key KEY.pem (in a config file: cert = [...] and key = [...], \
                 in the same order)"
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

/// What `smtpsd check-config` prints: one line per thing that would run.
impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.config_file {
            writeln!(f, "config file {}", path.display())?;
        }
        for l in &self.listeners {
            write!(f, "listen {} {}", l.addr, l.mode)?;
            match l.proxy {
                Some(Untrusted::Direct) => write!(f, ", PROXY header from trusted sources")?,
                Some(_) => write!(f, ", PROXY header required")?,
                None => {}
            }
            if l.share_port {
                write!(f, ", port shared (SO_REUSEPORT)")?;
            }
            if let Some(name) = &l.name {
                write!(f, ", named {name}")?;
            }
            writeln!(f)?;
        }
        for network in &self.proxy_trusted {
            writeln!(f, "proxy-trusted {network}")?;
        }
        for (i, c) in self.certificates.iter().enumerate() {
            let role = if i == 0 { "default" } else { "SNI" };
            writeln!(
                f,
                "certificate ({role}) {} key {}",
                c.chain.display(),
                c.key.display()
            )?;
        }
        if self.needs_dev_certificate() {
            writeln!(
                f,
                "certificate: self-signed for localhost, generated at start"
            )?;
        }
        match &self.spool {
            SpoolOption::Maildir(path) => writeln!(f, "deliver into maildir {}", path.display())?,
            SpoolOption::Sink => writeln!(f, "discard every message (sink)")?,
            SpoolOption::Relay(t) => {
                write!(f, "relay to smtp://{} ({:?}", t.address, t.identity)?;
                if let Some(ca) = &t.ca {
                    write!(f, ", STARTTLS verified against {}", ca.display())?;
                }
                writeln!(f, ")")?;
            }
        }
        match &self.users {
            Some(path) => writeln!(f, "AUTH users from {}", path.display())?,
            None => writeln!(f, "no AUTH (no --users)")?,
        }
        match (&self.ticket_keys, self.no_resumption) {
            (Some(path), _) => writeln!(f, "session tickets sealed with {}", path.display())?,
            (None, true) => writeln!(f, "no TLS session resumption")?,
            (None, false) => {}
        }
        writeln!(f, "hostname {}", self.hostname)?;
        let or_default = |v: Option<String>| v.unwrap_or_else(|| "server default".to_owned());
        writeln!(
            f,
            "workers {}",
            self.workers
                .map_or_else(|| "one per core".to_owned(), |n| n.to_string())
        )?;
        let l = &self.limits;
        writeln!(
            f,
            "limits: message size {}, recipients {}, connections {}, per address {}",
            or_default(l.max_message_size.map(|n| n.to_string())),
            or_default(l.max_recipients.map(|n| n.to_string())),
            or_default(l.max_connections.map(|n| n.to_string())),
            or_default(l.max_connections_per_ip.map(|n| n.to_string())),
        )?;
        let t = &self.timeouts;
        let secs = |d: Option<Duration>| or_default(d.map(|d| format!("{}s", d.as_secs())));
        writeln!(
            f,
            "timeouts: command {}, data {}, handshake {}, session {}; shutdown grace {}s",
            secs(t.command),
            secs(t.data),
            secs(t.handshake),
            secs(t.session),
            self.shutdown_grace.as_secs()
        )?;
        writeln!(f, "log level {}", self.log_level)
    }
}

/// Makes types that parse from text (`FromStr<Err = String>`) config-file values too: a TOML
/// string, or a number written as its digits (`workers = 4`, `max-message-size = "25M"`).
/// The error text of `FromStr` is what both the flag and the file report.
macro_rules! from_str_values {
    ($($type:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(FromStrVisitor::<$type>(PhantomData))
            }
        }
    )*};
}

from_str_values!(
    RelayTarget,
    Hostname,
    Size,
    Seconds,
    TrustedNetwork,
    LogLevel,
    LogTargetArg,
    AuthThrottleAction,
);

/// A listener in a config file: the `--listen` text, or a table
/// `{ address = "[::]:465", mode = "implicit-tls", proxy = "required" | "or-direct",
/// share-port = true, name = "submissions" }`.
impl<'de> Deserialize<'de> for Listener {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListenerVisitor)
    }
}

struct ListenerVisitor;

impl<'de> serde::de::Visitor<'de> for ListenerVisitor {
    type Value = Listener;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"ADDR:PORT=MODE[+...]\" or a table { address, mode, ... }")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Listener, E> {
        Listener::from_str(value).map_err(E::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Listener, A::Error> {
        use serde::de::Error;
        let table = ListenerTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        let mut text = format!("{}={}", table.address, table.mode);
        match table.proxy.as_deref() {
            None => {}
            Some("required") => text.push_str("+proxy"),
            Some("or-direct") => text.push_str("+proxy-or-direct"),
            Some(other) => {
                return Err(A::Error::custom(format!(
                    "invalid proxy {other:?}: expected \"required\" (only headers from \
                     --proxy-trusted sources) or \"or-direct\" (others served directly)"
                )));
            }
        }
        if table.share_port {
            text.push_str("+share-port");
        }
        if let Some(name) = &table.name {
            text.push_str("+name=");
            text.push_str(name);
        }
        Listener::from_str(&text).map_err(A::Error::custom)
    }
}

/// The table form of a listener.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ListenerTable {
    address: String,
    mode: String,
    #[serde(default)]
    proxy: Option<String>,
    #[serde(default)]
    share_port: bool,
    #[serde(default)]
    name: Option<String>,
}

struct FromStrVisitor<T>(PhantomData<T>);

impl<T: FromStr<Err = String>> serde::de::Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<T, E> {
        T::from_str(value).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<T, E> {
        self.visit_str(&value.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<T, E> {
        self.visit_str(&value.to_string())
    }
}

/// `ADDR:PORT=MODE[+proxy|+proxy-or-direct][+share-port][+name=NAME]`, e.g.
/// `0.0.0.0:465=implicit-tls`, `[::]:587=starttls-required+proxy`.
impl FromStr for Listener {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        const EXPECTED: &str = "ADDR:PORT=MODE, e.g. 0.0.0.0:465=implicit-tls or \
             [::]:587=starttls-required (MODE: implicit-tls, starttls, starttls-required, plain)";
        let bad = |expected: &str| format!("invalid listener {value:?}: expected {expected}");
        let Some((addr, rest)) = value.split_once('=') else {
            return Err(bad(EXPECTED));
        };
        let mut parts = rest.split('+');
        let mode = parts.next().unwrap_or_default();
        let addr = SocketAddr::from_str(addr).map_err(|_| {
            bad(
                "an IP address and port before `=`, e.g. 127.0.0.1:465 or [::1]:465 \
                 (names are not resolved)",
            )
        })?;
        let mode = Mode::from_str(mode).map_err(|_| {
            bad("a mode after `=`: implicit-tls, starttls, starttls-required or plain")
        })?;
        let mut listener = Listener {
            addr,
            mode,
            proxy: None,
            share_port: false,
            name: None,
        };
        for option in parts {
            match option {
                "proxy" if listener.proxy.is_none() => listener.proxy = Some(Untrusted::Refuse),
                "proxy-or-direct" if listener.proxy.is_none() => {
                    listener.proxy = Some(Untrusted::Direct);
                }
                "share-port" if !listener.share_port => listener.share_port = true,
                _ => match option.strip_prefix("name=") {
                    Some(name)
                        if listener.name.is_none()
                            && !name.is_empty()
                            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':') =>
                    {
                        listener.name = Some(name.to_owned());
                    }
                    _ => {
                        return Err(bad(
                            "+proxy or +proxy-or-direct, +share-port and +name=NAME after the \
                             mode, each at most once, e.g. [::]:465=implicit-tls+proxy+share-port",
                        ));
                    }
                },
            }
        }
        Ok(listener)
    }
}

/// `smtp://HOST:PORT[+xclient|+proxy-v2][+starttls]`.
impl FromStr for RelayTarget {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid relay target {value:?}: expected smtp://HOST:PORT with optional \
                 +xclient or +proxy-v2 and +starttls, e.g. smtp://127.0.0.1:10025+xclient"
            )
        };
        let rest = value.strip_prefix("smtp://").ok_or_else(bad)?;
        let mut parts = rest.split('+');
        let address = parts.next().unwrap_or_default();
        let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(bad());
        }
        let mut target = RelayTarget {
            address: address.to_owned(),
            identity: Identity::None,
            starttls: false,
            ca: None,
        };
        for option in parts {
            match option {
                "xclient" if target.identity == Identity::None => {
                    target.identity = Identity::Xclient;
                }
                "proxy-v2" if target.identity == Identity::None => {
                    target.identity = Identity::ProxyV2;
                }
                "starttls" if !target.starttls => target.starttls = true,
                _ => return Err(bad()),
            }
        }
        Ok(target)
    }
}

/// A host name for the greeting: letters, digits, `-` and `.`, at most 255 characters, no
/// empty label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(pub String);

impl FromStr for Hostname {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
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
            Ok(Self(value.to_owned()))
        } else {
            Err(format!(
                "invalid host name {value:?}: expected a domain name such as mx.example.org \
                 (letters, digits, `-`, `.`)"
            ))
        }
    }
}

/// Bytes, optionally with a K, M or G suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
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
            .map(Self)
            .ok_or_else(|| {
                format!(
                    "invalid size {value:?}: expected a number of bytes of at least 1, \
                     optionally with K, M or G (e.g. 25M)"
                )
            })
    }
}

/// A whole number of seconds, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match u64::from_str(value) {
            Ok(n) if n > 0 => Ok(Self(Duration::from_secs(n))),
            _ => Err(format!(
                "invalid duration {value:?}: expected a whole number of seconds, at least 1"
            )),
        }
    }
}

/// A `--proxy-trusted` address or block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedNetwork(pub Network);

impl FromStr for TrustedNetwork {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        Network::from_str(value).map(Self).map_err(|_| {
            format!(
                "invalid address or block {value:?}: expected an IPv4 or IPv6 address or block, \
                 e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.10"
            )
        })
    }
}

/// An `--auth-throttle` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthThrottleAction(pub smtps_relay::auth::ThrottleAction);

impl FromStr for AuthThrottleAction {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        smtps_relay::auth::ThrottleAction::from_str(value).map(Self)
    }
}

/// A `--log-target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTargetArg(pub crate::logger::LogTarget);

impl FromStr for LogTargetArg {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        crate::logger::LogTarget::from_str(value)
            .map(Self)
            .map_err(|()| {
                format!("invalid log target {value:?}: expected stderr, syslog or journald")
            })
    }
}

/// A `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevel(pub log::LevelFilter);

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        log::LevelFilter::from_str(value).map(Self).map_err(|_| {
            format!("invalid log level {value:?}: expected off, error, warn, info, debug or trace")
        })
    }
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
                    share_port: false,
                    name: None,
                },
                Listener {
                    addr: "127.0.0.1:2587".parse().unwrap(),
                    mode: Mode::StartTlsRequired,
                    proxy: None,
                    share_port: false,
                    name: None,
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
    fn help_version_and_subcommands() {
        let Ok(Command::Help(help)) = parse(["--help"]) else {
            panic!("--help");
        };
        for flag in [
            "--listen",
            "--config",
            "--max-connections-per-ip",
            "check-config",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        }
        assert!(matches!(parse(["-h"]), Ok(Command::Help(_))));
        assert!(
            matches!(parse(["--dev", "--version"]), Ok(Command::Version(v)) if v.contains("smtpsd"))
        );
        assert_eq!(parse(["hash-password"]), Ok(Command::HashPassword));
        assert!(matches!(
            parse(["hash-password", "--help"]),
            Ok(Command::Help(_))
        ));
        assert!(parse(["hash-password", "secret"]).is_err());
        assert!(matches!(parse(["check-config", "--dev"]), Ok(Command::CheckConfig(o)) if o.dev));
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
            (&["--lisen", "x"], "similar argument exists: '--listen'"),
            (&["--frobnicate"], "unexpected argument '--frobnicate'"),
            (&["serve"], "unrecognized subcommand 'serve'"),
            (&["--workers"], "a value is required for '--workers <N>'"),
            (&["--dev=yes"], "--dev"),
            (&["--workers", "0"], "invalid value '0' for '--workers <N>'"),
            (
                &["--workers", "many"],
                "invalid value 'many' for '--workers <N>'",
            ),
            (
                &["--listen", "127.0.0.1:465"],
                "invalid value '127.0.0.1:465' for '--listen",
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
                "invalid value '10X' for '--max-message-size",
            ),
            (&["--max-message-size", "99999999999G"], "99999999999G"),
            (
                &["--timeout-data", "0"],
                "invalid value '0' for '--timeout-data",
            ),
            (
                &["--log-level", "loud"],
                "invalid value 'loud' for '--log-level",
            ),
            (
                &["--hostname", "bad name"],
                "invalid value 'bad name' for '--hostname",
            ),
            (&["--hostname", "a..b"], "for '--hostname"),
            (
                &["--dev", "--workers", "2", "--workers", "3"],
                "cannot be used multiple times",
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
                "+proxy or +proxy-or-direct, +share-port and +name=NAME after the mode",
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
                "invalid value '10.0.0.1/8' for '--proxy-trusted",
            ),
            (
                &["--dev", "--proxy-trusted", "balancer.example"],
                "invalid value 'balancer.example' for '--proxy-trusted",
            ),
            (
                &["--dev", "--no-resumption", "--ticket-keys", "k"],
                "--no-resumption and --ticket-keys exclude each other",
            ),
            (&["gen-ticket-key", "now"], "unexpected argument 'now'"),
            (&["--dev", "--relay", "127.0.0.1:25"], "expected smtp://"),
            (&["--dev", "--relay", "smtp://127.0.0.1"], "for '--relay"),
            (&["--dev", "--relay", "smtp://[::1]:0"], "for '--relay"),
            (
                &["--dev", "--relay", "smtp://h:25+xclient+proxy-v2"],
                "for '--relay",
            ),
            (&["--dev", "--relay", "smtp://h:25+tls"], "for '--relay"),
            (
                &["--listen", "[::]:25=plain+share-port+share-port", "--sink"],
                "each at most once",
            ),
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
        use std::ffi::OsString;
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
        let size = |s: &str| Size::from_str(s).map(|s| s.0);
        assert_eq!(size("1"), Ok(1));
        assert_eq!(size("64k"), Ok(64 << 10));
        assert_eq!(size("2G"), Ok(2 << 30));
        assert!(size("0").is_err());
        assert!(size("K").is_err());
    }

    #[test]
    fn listeners_share_ports_and_carry_names() {
        let o = run(&[
            "--listen",
            "0.0.0.0:465=implicit-tls+share-port+name=submissions",
            "--listen",
            "[::]:587=starttls-required+proxy+share-port",
            "--proxy-trusted",
            "10.0.0.0/8",
            "--dev",
        ]);
        assert!(o.listeners[0].share_port);
        assert_eq!(o.listeners[0].name.as_deref(), Some("submissions"));
        assert_eq!(o.listeners[1].proxy, Some(Untrusted::Refuse));
        assert!(o.listeners[1].share_port);
        assert_eq!(o.listeners[1].name, None);
    }

    fn write_config(text: &str) -> (crate::test_support::TempDir, PathBuf) {
        let dir = crate::test_support::TempDir::new("config");
        let path = dir.path().join("smtpsd.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_config_file_sets_every_option_and_flags_override_it() {
        let (_dir, path) = write_config(
            r#"
# the options of a node behind a balancer
listen = ["0.0.0.0:465=implicit-tls+proxy", "[::]:587=starttls-required+share-port"]
proxy-trusted = ["10.0.0.0/8"]
cert = ["/etc/a.pem", "/etc/b.pem"]
key = ["/etc/a.key", "/etc/b.key"]
ticket-keys = "/etc/smtpsd/ticket-keys"
maildir = "/var/mail/smtpsd"
users = "/etc/smtpsd/users"
hostname = "mx.example.org"
workers = 4
max-message-size = "25M"
max-recipients = 100
max-connections = 1000
max-connections-per-ip = 20
timeout-command = 300
timeout-data = "180"
timeout-handshake = 10
timeout-session = 3600
shutdown-grace = 60
log-level = "debug"
"#,
        );
        let config = path.to_str().unwrap();
        let o = run(&["--config", config]);
        assert_eq!(o.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(o.listeners.len(), 2);
        assert_eq!(o.listeners[0].proxy, Some(Untrusted::Refuse));
        assert!(o.listeners[1].share_port);
        assert_eq!(o.certificates.len(), 2);
        assert_eq!(o.certificates[1].key, PathBuf::from("/etc/b.key"));
        assert_eq!(o.spool, SpoolOption::Maildir("/var/mail/smtpsd".into()));
        assert_eq!(o.hostname, "mx.example.org");
        assert_eq!(o.workers, NonZeroUsize::new(4));
        assert_eq!(o.limits.max_message_size, Some(25 << 20));
        assert_eq!(o.limits.max_connections_per_ip, NonZeroUsize::new(20));
        assert_eq!(o.timeouts.data, Some(Duration::from_secs(180)));
        assert_eq!(o.shutdown_grace, Duration::from_secs(60));
        assert_eq!(o.log_level, log::LevelFilter::Debug);

        // A flag replaces the file's value; a repeated flag the file's whole list.
        let o = run(&[
            "--config",
            config,
            "--workers",
            "2",
            "--listen",
            "127.0.0.1:2525=plain+proxy",
            "--log-level=warn",
        ]);
        assert_eq!(o.workers, NonZeroUsize::new(2));
        assert_eq!(o.listeners.len(), 1);
        assert_eq!(o.listeners[0].mode, Mode::Plain);
        assert_eq!(o.log_level, log::LevelFilter::Warn);
        assert_eq!(o.hostname, "mx.example.org");
        assert_eq!(o.settings.max_recipients, NonZeroUsize::new(100));
    }

    #[test]
    fn listeners_in_a_config_file_may_be_tables() {
        let (_dir, path) = write_config(
            r#"
sink = true
proxy-trusted = ["10.0.0.0/8"]
listen = [
    "127.0.0.1:2525=plain",
    { address = "[::]:465", mode = "implicit-tls", proxy = "required", name = "submissions" },
]
cert = ["a.pem"]
key = ["a.key"]

[[listen]]
address = "0.0.0.0:587"
mode = "starttls-required"
proxy = "or-direct"
share-port = true
"#,
        );
        // TOML forbids mixing: an array and [[listen]] for one key.
        let message = error(&["--config", path.to_str().unwrap()]).to_string();
        assert!(message.contains("listen"), "{message}");

        let (_dir, path) = write_config(
            r#"
sink = true
proxy-trusted = ["10.0.0.0/8"]
cert = ["a.pem"]
key = ["a.key"]
listen = [
    "127.0.0.1:2525=plain",
    { address = "[::]:465", mode = "implicit-tls", proxy = "required", name = "submissions" },
    { address = "0.0.0.0:587", mode = "starttls-required", proxy = "or-direct", share-port = true },
]
"#,
        );
        let o = run(&["--config", path.to_str().unwrap()]);
        assert_eq!(o.listeners.len(), 3);
        assert_eq!(o.listeners[1].mode, Mode::ImplicitTls);
        assert_eq!(o.listeners[1].proxy, Some(Untrusted::Refuse));
        assert_eq!(o.listeners[1].name.as_deref(), Some("submissions"));
        assert_eq!(o.listeners[2].proxy, Some(Untrusted::Direct));
        assert!(o.listeners[2].share_port);

        for (table, needle) in [
            (
                r#"{ address = "[::]:465", mode = "tls" }"#,
                "a mode after `=`",
            ),
            (r#"{ address = "[::]:465" }"#, "missing field `mode`"),
            (
                r#"{ address = "[::]:465", mode = "plain", port = 1 }"#,
                "unknown field `port`",
            ),
            (
                r#"{ address = "[::]:465", mode = "plain", proxy = "yes" }"#,
                "invalid proxy",
            ),
        ] {
            let (_dir, path) = write_config(&format!("sink = true\nlisten = [{table}]\n"));
            let message = error(&["--config", path.to_str().unwrap()]).to_string();
            assert!(
                message.contains(needle) && message.contains("line 2"),
                "{table}: {message}"
            );
        }
    }

    #[test]
    fn config_file_errors_name_the_file_line_and_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "dev = true\nfrobnicate = 1\n",
                &["line 2", "unknown field `frobnicate`", "smtpsd.toml"],
            ),
            ("dev = true\n\nworkers = 0\n", &["line 3", "workers"]),
            (
                "dev = true\nlisten = [\"127.0.0.1:25=tls\"]\n",
                &["line 2", "a mode after `=`"],
            ),
            (
                "dev = true\nmax-message-size = \"10X\"\n",
                &["line 2", "\"10X\""],
            ),
            ("dev = \"yes\"\n", &["line 1", "dev"]),
            ("dev = true\nlisten = \n", &["line 2"]),
            ("listen = [\"[::]:25=plain\"]\n", &["no delivery target"]),
        ];
        for (text, needles) in cases {
            let (_dir, path) = write_config(text);
            let message = error(&["--config", path.to_str().unwrap()]).to_string();
            for needle in *needles {
                assert!(message.contains(needle), "{text:?}: {message}");
            }
        }
        let message = error(&["--config", "/nonexistent/smtpsd.toml"]).to_string();
        assert!(message.contains("/nonexistent/smtpsd.toml"), "{message}");
    }
}
