//! The daemon proper: options → server configuration, the delivering [`Handler`], signals.

use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use smtps_proto::{AbortReason, Reply, SessionConfig};
use smtps_server::{
    Answer, CloseReason, Context, Credentials, Handler, ListenerConfig, ProxyPolicy, Responder,
    Server, ServerConfig, ServerHandle,
};
use smtps_tls::{CertificateSource, SessionTickets, TicketKeys, TlsAcceptor, TlsSettings};

use crate::config::{Options, RelayTarget, SpoolOption};
use crate::maildir::{Delivery, DeliveryError, Maildir, Spool};
use crate::users::UserFile;
use smtps_relay::auth::{AuthThrottle, Authenticator, Throttled, authenticate};
use smtps_relay::backend::BackendConfig;
use smtps_relay::logline::{self, MessageLog, MessageResult};
use smtps_relay::received::Received;
use smtps_relay::relay::Relay;

/// Files in the Maildir's `tmp/` older than this are leftovers of a crash (the Maildir
/// convention).
const STALE_TMP: Duration = Duration::from_secs(36 * 3600);
/// How long a graceful shutdown lets transactions in flight finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Threads that commit messages (fsync) so that workers never wait on the disk. Enough for
/// every connection of a busy submission server to have its commit in flight: concurrent
/// fsyncs share the file system's journal commits.
const COMMITTERS: usize = 16;

/// A start-up failure, naming the file or address at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The certificate or key could not be loaded.
    Tls(smtps_tls::Error),
    /// The development certificate could not be written.
    DevCertificate(crate::devcert::DevCertError),
    /// The maildir could not be opened or created.
    Maildir(DeliveryError),
    /// The users file could not be read.
    Users(crate::users::UsersError),
    /// The ticket key file could not be used.
    TicketKeys(crate::ticket_keys::TicketKeyError),
    /// The `--relay-ca` file could not be used.
    RelayCa(PathBuf, String),
    /// A socket handed over by the supervisor matches no listener, or cannot be used.
    Activation(String),
    /// The `--maildir` is not a directory and cannot be created (`check-config`).
    MaildirPath(PathBuf),
    /// A listener could not be opened, or the loop could not start.
    Server(smtps_server::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "{e}"),
            Self::DevCertificate(e) => write!(f, "{e}"),
            Self::Maildir(e) => write!(f, "{e}"),
            Self::Users(e) => write!(f, "{e}"),
            Self::TicketKeys(e) => write!(f, "{e}"),
            Self::RelayCa(path, reason) => write!(
                f,
                "cannot use {} as --relay-ca: {reason}; give the PEM certificates of the CA that \
                 signed the backend's certificate",
                path.display()
            ),
            Self::Activation(reason) => write!(f, "socket activation: {reason}"),
            Self::MaildirPath(path) => write!(
                f,
                "cannot deliver into {}: it is not a directory and its parent does not exist; \
                 create it or fix --maildir",
                path.display()
            ),
            Self::Server(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A server built from the options, ready to run.
pub struct Daemon {
    server: Host,
    tls: Option<Arc<TlsAcceptor>>,
    ticket_keys: Option<(PathBuf, Arc<TicketKeys>)>,
    /// The development certificate, when one was generated.
    pub dev_certificate: Option<PathBuf>,
}

impl Daemon {
    /// Loads certificates, opens the maildir and the user file, binds every listener.
    ///
    /// # Errors
    /// A [`StartError`] that names the file or address and what to do.
    pub fn build(options: &Options) -> Result<Self, StartError> {
        Self::build_with(options, Vec::new())
    }

    /// [`Daemon::build`], serving the sockets a supervisor handed over (socket activation)
    /// for the listeners they match: by `+name=NAME`, else by address. The others are bound.
    ///
    /// # Errors
    /// As [`Daemon::build`], and [`StartError::Activation`] for a socket no listener matches.
    pub fn build_with(
        options: &Options,
        mut handed_over: Vec<(String, std::net::TcpListener)>,
    ) -> Result<Self, StartError> {
        let (tls, ticket_keys, dev_certificate) = load_tls(options, true)?;
        let spool = match &options.spool {
            SpoolOption::Relay(_) => None,
            SpoolOption::Maildir(path) => {
                let maildir = Maildir::open_or_create(path)
                    .map_err(StartError::Maildir)?
                    .with_hostname(&options.hostname);
                let removed = maildir.clean_tmp(STALE_TMP);
                if removed > 0 {
                    log::info!(
                        "smtpsd: removed {removed} stale files from {}/tmp",
                        path.display()
                    );
                }
                Some(Spool::Maildir(maildir))
            }
            _ => Some(Spool::Sink),
        };
        let users: Option<Arc<dyn Authenticator>> = match &options.users {
            Some(path) => Some(Arc::new(Throttled::new(
                UserFile::load(path).map_err(StartError::Users)?,
                AuthThrottle::new(options.auth_throttle),
            ))),
            None => None,
        };
        let mut session = SessionConfig::new(options.hostname.clone());
        if let Some(size) = options.limits.max_message_size {
            session.limits.message_size = size;
        }
        if let Some(recipients) = options.limits.max_recipients {
            session.limits.recipients = recipients.get();
        }
        let mut config = ServerConfig::new(session);
        for listener in &options.listeners {
            let matching = handed_over
                .iter()
                .position(|(name, socket)| match &listener.name {
                    Some(wanted) => wanted == name,
                    None => socket.local_addr().is_ok_and(|a| a == listener.addr),
                });
            let mut listener_config = match matching {
                Some(i) => {
                    let (name, socket) = handed_over.swap_remove(i);
                    ListenerConfig::inherited(socket, listener.mode)
                        .map_err(|e| StartError::Activation(format!("{name}: {e}")))?
                }
                None => ListenerConfig::new(listener.addr, listener.mode),
            };
            if listener.share_port {
                listener_config = listener_config.share_port();
            }
            if let Some(untrusted) = listener.proxy {
                listener_config = listener_config
                    .proxy(ProxyPolicy::new(options.proxy_trusted.clone()).untrusted(untrusted));
            }
            config = config.add_listener(listener_config);
        }
        if let Some((name, socket)) = handed_over.first() {
            let addr = socket
                .local_addr()
                .map_or_else(|_| "?".to_owned(), |a| a.to_string());
            return Err(StartError::Activation(format!(
                "the socket {name} ({addr}) handed over matches no listener; add \
                 +name={name} to a --listen, or listen on {addr}"
            )));
        }
        if let Some(tls) = &tls {
            config = config.tls(Arc::clone(tls));
        }
        config.workers = options.workers.map_or(0, std::num::NonZero::get);
        let limits = &options.limits;
        if let Some(n) = limits.max_connections {
            config.limits.connections = n.get();
        }
        if let Some(n) = limits.max_connections_per_ip {
            config.limits.connections_per_ip = n.get();
        }
        let timeouts = &options.timeouts;
        if let Some(t) = timeouts.command {
            config.timeouts.command = t;
        }
        if let Some(t) = timeouts.data {
            config.timeouts.data_block = t;
        }
        if let Some(t) = timeouts.handshake {
            config.timeouts.handshake = t;
        }
        if let Some(t) = timeouts.session {
            config.timeouts.session = t;
        }
        let server = match (spool, &options.spool) {
            (Some(spool), _) => {
                let handler = Delivering::new(spool, users, options.hostname.clone());
                Host::Deliver(Server::bind(config, handler).map_err(StartError::Server)?)
            }
            (None, SpoolOption::Relay(target)) => {
                // The relay sends DATA: binary bodies could not reach the backend.
                config.session.extensions = config
                    .session
                    .extensions
                    .without(smtps_proto::Extensions::BINARY_MIME);
                let relay = relay(target, &options.hostname, users)?;
                Host::Relay(Server::bind(config, relay).map_err(StartError::Server)?)
            }
            (None, _) => unreachable!("only --relay has no spool"),
        };
        Ok(Self {
            server,
            tls,
            ticket_keys,
            dev_certificate,
        })
    }

    /// The certificates served (for [`crate::certwatch`]); `None` without TLS.
    #[must_use]
    pub fn tls(&self) -> Option<Arc<TlsAcceptor>> {
        self.tls.clone()
    }

    /// What `SIGHUP` rereads: the certificates and the ticket key file.
    #[must_use]
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tls: self.tls.clone(),
            ticket_keys: self.ticket_keys.clone(),
        }
    }

    /// The bound addresses, in the order of the options' listeners.
    #[must_use]
    pub fn local_addrs(&self) -> &[std::net::SocketAddr] {
        match &self.server {
            Host::Deliver(server) => server.local_addrs(),
            Host::Relay(server) => server.local_addrs(),
        }
    }

    /// A handle for shutting down.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        match &self.server {
            Host::Deliver(server) => server.handle(),
            Host::Relay(server) => server.handle(),
        }
    }

    /// Serves until shut down.
    ///
    /// # Errors
    /// A worker failure.
    pub fn run(self) -> Result<(), smtps_server::Error> {
        match self.server {
            Host::Deliver(server) => server.run(),
            Host::Relay(server) => server.run(),
        }
    }
}

/// Loads the certificates (generating the development one if `generate` and the options ask
/// for it) and the ticket keys.
type LoadedTls = (
    Option<Arc<TlsAcceptor>>,
    Option<(PathBuf, Arc<TicketKeys>)>,
    Option<PathBuf>,
);

fn load_tls(options: &Options, generate: bool) -> Result<LoadedTls, StartError> {
    let mut dev_certificate = None;
    let mut certificates: Vec<(PathBuf, PathBuf)> = options
        .certificates
        .iter()
        .map(|c| (c.chain.clone(), c.key.clone()))
        .collect();
    if generate && options.needs_dev_certificate() {
        let dir = dev_certificate_dir();
        let generated = crate::devcert::generate(&dir).map_err(StartError::DevCertificate)?;
        dev_certificate = Some(generated.cert_path.clone());
        certificates.push((generated.cert_path, generated.key_path));
    }
    let ticket_keys = match &options.ticket_keys {
        Some(path) => Some((
            path.clone(),
            crate::ticket_keys::load(path).map_err(StartError::TicketKeys)?,
        )),
        None => None,
    };
    let tls = match certificates.split_first() {
        None => None,
        Some(((chain, key), others)) => {
            let mut settings = TlsSettings::new().certificate_files(chain, key);
            if options.no_resumption {
                settings = settings
                    .session_tickets(SessionTickets::Off)
                    .session_cache(0);
            }
            if let Some((_, keys)) = &ticket_keys {
                settings = settings.session_tickets(SessionTickets::HostKeys(Arc::clone(keys)));
            }
            for (chain, key) in others {
                for name in certificate_names(chain, key)? {
                    settings = settings.sni_certificate(name, CertificateSource::files(chain, key));
                }
            }
            Some(Arc::new(
                TlsAcceptor::new(settings).map_err(StartError::Tls)?,
            ))
        }
    };
    Ok((tls, ticket_keys, dev_certificate))
}

/// `smtpsd check-config`: loads what the options name without binding a port (the running
/// daemon may hold it) or writing anything, and describes it.
///
/// # Errors
/// The first [`StartError`], naming the file at fault.
pub fn check(options: &Options) -> Result<String, StartError> {
    use std::fmt::Write as _;
    let mut report = String::new();
    let (tls, ticket_keys, _) = load_tls(options, false)?;
    if let Some(tls) = &tls {
        for (info, files) in tls.certificates().iter().zip(&options.certificates) {
            let _ = writeln!(
                report,
                "loaded {} (key {}): {}",
                files.chain.display(),
                files.key.display(),
                info.dns_names.join(", ")
            );
        }
    }
    if let Some((path, _)) = &ticket_keys {
        let _ = writeln!(report, "loaded ticket keys from {}", path.display());
    }
    if let Some(path) = &options.users {
        UserFile::load(path).map_err(StartError::Users)?;
        let _ = writeln!(report, "loaded users from {}", path.display());
    }
    match &options.spool {
        SpoolOption::Relay(target) => {
            if let Some(ca) = &target.ca {
                backend_tls(ca)?;
                let _ = writeln!(report, "loaded relay CA from {}", ca.display());
            }
        }
        SpoolOption::Maildir(path) => {
            let usable = if path.exists() {
                path.is_dir()
            } else {
                path.parent()
                    .is_none_or(|p| p.as_os_str().is_empty() || p.is_dir())
            };
            if !usable {
                return Err(StartError::MaildirPath(path.clone()));
            }
            let _ = writeln!(report, "maildir {} usable", path.display());
        }
        _ => {}
    }
    Ok(report)
}

/// The server with its host: delivering into the spool, or relaying to a backend.
enum Host {
    Deliver(Server<Delivering>),
    Relay(Server<Relay>),
}

/// The relay front for `--relay`.
fn relay(
    target: &RelayTarget,
    hostname: &str,
    users: Option<Arc<dyn Authenticator>>,
) -> Result<Relay, StartError> {
    let mut backend = BackendConfig::new(target.address.clone(), hostname);
    backend.identity = target.identity;
    if let Some(ca) = &target.ca {
        backend.starttls = Some(backend_tls(ca)?);
    }
    let mut relay = Relay::new(backend, hostname);
    if let Some(users) = users {
        relay = relay.with_authenticator(users);
    }
    Ok(relay)
}

/// A TLS client configuration trusting the CA certificates in `ca` (PEM).
fn backend_tls(ca: &std::path::Path) -> Result<Arc<smtps_tls::rustls::ClientConfig>, StartError> {
    use smtps_tls::rustls;
    use smtps_tls::rustls::pki_types::CertificateDer;
    use smtps_tls::rustls::pki_types::pem::PemObject;
    let bad = |reason: String| StartError::RelayCa(ca.to_owned(), reason);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Authenticator for UserFile {
    fn verify(&self, user: &str, password: &[u8]) -> bool {
        UserFile::verify(self, user, password)
    }
}

/// Rereads the certificates and the ticket key file (on `SIGHUP`); what fails to load is
/// logged and the old one kept.
#[derive(Clone)]
pub struct Reloader {
    tls: Option<Arc<TlsAcceptor>>,
    ticket_keys: Option<(PathBuf, Arc<TicketKeys>)>,
}

impl Reloader {
    /// Reloads everything, logging each outcome.
    pub fn reload(&self) {
        match self.tls.as_deref().map(TlsAcceptor::reload) {
            Some(Ok(())) => log::info!("smtpsd: certificates reloaded"),
            Some(Err(error)) => {
                log::error!("smtpsd: certificate reload failed, keeping the old ones: {error}");
            }
            None => log::info!("smtpsd: no certificates to reload"),
        }
        if let Some((path, keys)) = &self.ticket_keys {
            match crate::ticket_keys::reload(keys, path) {
                Ok(n) => log::info!(
                    "smtpsd: ticket keys reloaded from {} ({n} keys)",
                    path.display()
                ),
                Err(error) => {
                    log::error!("smtpsd: ticket key reload failed, keeping the old keys: {error}");
                }
            }
        }
    }
}

/// Where `--dev` writes its certificate: beside the process, in a per-user temp directory.
fn dev_certificate_dir() -> PathBuf {
    std::env::temp_dir().join(format!("smtpsd-dev-{}", std::process::id()))
}

/// The names an additional (SNI) certificate serves: its subjectAltName DNS names (or its
/// CN when it has none), read by loading it.
fn certificate_names(chain: &PathBuf, key: &PathBuf) -> Result<Vec<String>, StartError> {
    let probe = TlsAcceptor::new(TlsSettings::new().certificate_files(chain, key))
        .map_err(StartError::Tls)?;
    Ok(probe
        .certificates()
        .into_iter()
        .flat_map(|info| info.dns_names)
        .collect())
}

/// The host: AUTH against the user file, delivery into the spool with a `Received:` header,
/// `250` only after the message is durable.
pub struct Delivering {
    spool: Spool,
    users: Option<Arc<dyn Authenticator>>,
    hostname: String,
    commits: Mutex<mpsc::Sender<Commit>>,
}

impl Delivering {
    fn new(spool: Spool, users: Option<Arc<dyn Authenticator>>, hostname: String) -> Self {
        let (sender, receiver) = mpsc::channel::<Commit>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..COMMITTERS {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new()
                .name(format!("smtpsd-commit-{index}"))
                .spawn(move || commit_loop(&receiver));
            if let Err(error) = spawned {
                log::error!("smtpsd: cannot start a commit thread: {error}");
            }
        }
        Self {
            spool,
            users,
            hostname,
            commits: Mutex::new(sender),
        }
    }
}

/// A message for a commit thread: the file, who awaits the answer, its log line.
type Commit = (Delivery, Responder, MessageLog);

fn commit_loop(receiver: &Mutex<mpsc::Receiver<Commit>>) {
    loop {
        let next = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok((delivery, responder, message)) = next else {
            return;
        };
        responder.respond(commit(delivery, &message));
    }
}

/// Commits a message, logs its line, and gives the verdict: `250 queued as ID` once durable.
fn commit(delivery: Delivery, message: &MessageLog) -> smtps_proto::Verdict {
    match delivery.commit() {
        Ok(id) => {
            let reply = Reply::new(
                smtps_proto::ReplyCode::OK,
                smtps_proto::EnhancedStatus::new(2, 0, 0),
                format!("queued as {id}"),
            );
            log::info!(
                "{}",
                message.line(Some(id.as_str()), MessageResult::Accepted(250))
            );
            smtps_proto::Verdict::AcceptWith(reply)
        }
        Err(error) => {
            log::error!("smtpsd: delivery failed: {error}");
            let reply = delivery_reply(&error);
            log::info!(
                "{}",
                message.line(None, MessageResult::Refused(reply.code().as_u16()))
            );
            smtps_proto::Verdict::Reject(reply)
        }
    }
}

fn delivery_reply(error: &DeliveryError) -> Reply {
    let (code, status, text) = error.smtp_reply();
    Reply::from_parts(code, Some(status), text).unwrap_or_else(|| {
        Reply::new(
            smtps_proto::ReplyCode::LOCAL_ERROR,
            None,
            "Local error in processing",
        )
    })
}

/// Per-session state: the message being spooled, and what the session line reports.
pub struct Session {
    delivery: Option<Delivery>,
    started: Instant,
    /// Octets of the messages that reached their end.
    bytes: u64,
}

impl Handler for Delivering {
    type Session = Session;

    fn connect(&self, _cx: &mut Context<'_>) -> (Session, Answer) {
        let session = Session {
            delivery: None,
            started: Instant::now(),
            bytes: 0,
        };
        (session, Answer::Accept)
    }

    /// AUTH is offered with a `--users` file, and only then.
    fn offers_auth(&self) -> bool {
        self.users.is_some()
    }

    fn auth(
        &self,
        _session: &mut Session,
        cx: &mut Context<'_>,
        credentials: &Credentials<'_>,
    ) -> Answer {
        authenticate(self.users.as_ref(), cx, credentials)
    }

    fn data_start(&self, session: &mut Session, cx: &mut Context<'_>) -> Answer {
        let info = cx.info();
        let started = self.spool.begin_with(|id| {
            Received::for_session(info, &self.hostname, id.as_str())
                .to_header()
                .into_bytes()
        });
        match started {
            Ok(delivery) => {
                session.delivery = Some(delivery);
                Answer::Accept
            }
            Err(error) => {
                log::error!("smtpsd: cannot start delivery: {error}");
                Answer::Reject(delivery_reply(&error))
            }
        }
    }

    fn body_chunk(
        &self,
        session: &mut Session,
        _cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        let Some(delivery) = &mut session.delivery else {
            return Ok(());
        };
        delivery.write(chunk).map_err(|error| {
            log::error!("smtpsd: delivery failed: {error}");
            session.delivery = None;
            delivery_reply(&error)
        })
    }

    fn message_end(&self, session: &mut Session, cx: &mut Context<'_>, size: u64) -> Answer {
        session.bytes = session.bytes.saturating_add(size);
        let message = MessageLog::new(cx.info(), size);
        let Some(delivery) = session.delivery.take() else {
            log::info!("{}", message.line(None, MessageResult::Refused(451)));
            return Answer::Reject(Reply::new(
                smtps_proto::ReplyCode::LOCAL_ERROR,
                smtps_proto::EnhancedStatus::new(4, 3, 0),
                "Local error in processing",
            ));
        };
        if matches!(self.spool, Spool::Sink) {
            return Answer::from(commit(delivery, &message));
        }
        let responder = cx.defer();
        let sent = self
            .commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send((delivery, responder, message));
        if sent.is_err() {
            log::error!("smtpsd: no commit thread is running");
        }
        // On a send error the responder is dropped with the message: it answers 451 by itself.
        Answer::Deferred
    }

    fn message_aborted(&self, session: &mut Session, _cx: &mut Context<'_>, _reason: AbortReason) {
        // Dropping the delivery removes its temporary file.
        session.delivery = None;
    }

    fn reset(&self, session: &mut Session, _cx: &mut Context<'_>) {
        session.delivery = None;
    }

    fn disconnect(&self, session: Session, cx: &mut Context<'_>, reason: CloseReason) {
        log::info!(
            "{}",
            logline::session(cx.info(), &reason, session.bytes, session.started.elapsed())
        );
    }
}
