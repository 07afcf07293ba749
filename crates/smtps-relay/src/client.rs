//! One backend connection's SMTP client, without I/O: it takes the session's jobs and the
//! backend's octets, and produces the octets to send and the verdicts to give.
//!
//! The worker's backend I/O ([`crate::backend_io`]) owns the socket, TLS and the timers; this type owns
//! the conversation: greeting, EHLO, STARTTLS, the client's identity (XCLIENT or a PROXY v2
//! header), then commands rebuilt from parsed values, each answered by one checked reply, in
//! order. Commands that RFC 2920 allows in a group (RSET, MAIL, RCPT, then one DATA) go out
//! together when the backend offers PIPELINING.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use smtps_proto::{EnhancedStatus, Reply, ReplyCode, Verdict};
use smtps_server::Responder;

use crate::backend::{
    BackendConfig, BackendError, ClientIdentity, Identity, address_attribute, pack, proxy_v2_header,
};
use crate::body::DataEncoder;
use crate::capabilities::Capabilities;
use crate::logline::{MessageLog, MessageResult};
use crate::params::{MailParams, RcptParams, mail_command, rcpt_command};
use crate::reply::{BackendReply, MAX_LINE, ReplyError, ReplyReader};
use crate::xtext;

/// A command for the backend, or message octets, in the order the client gave them.
pub(crate) enum Command {
    /// MAIL FROM, with who the client is now (XCLIENT is sent again first if that changed).
    Mail {
        client: ClientIdentity,
        path: String,
        params: MailParams,
        responder: Responder,
    },
    Rcpt {
        path: String,
        params: RcptParams,
        responder: Responder,
    },
    /// DATA; on the backend's 354, the front's `Received:` line starts the message.
    Data {
        received: Vec<u8>,
        responder: Responder,
    },
    /// Message octets, dot-unstuffed (the client encoder stuffs them again).
    Body(Vec<u8>),
    /// The message's last octets, then its end; its log line is written with the backend's
    /// verdict.
    End {
        body: Vec<u8>,
        responder: Responder,
        log: MessageLog,
    },
}

/// What a client session asks of its backend connection, in the order it happened.
#[expect(
    clippy::large_enum_variant,
    reason = "a job lives for one call, moved into the step queue: boxing would cost an allocation each"
)]
pub(crate) enum Job {
    Command(Command),
    /// The message in progress will never be acknowledged: close without the final dot.
    Abort,
    /// RSET, a new EHLO, STARTTLS on the client side: the backend gets RSET before the next
    /// MAIL.
    Reset,
    /// The client session ended.
    Close,
}

/// A command not sent yet, built when it goes out (with the capabilities known then).
#[expect(
    clippy::large_enum_variant,
    reason = "steps are few and short-lived; boxing would cost an allocation each"
)]
enum Step {
    Command(Command),
    Rset,
    Quit,
}

impl Step {
    /// RFC 2920 §3.1: RSET, MAIL and RCPT may go anywhere in a group, DATA only last.
    fn may_follow_unanswered(&self) -> bool {
        matches!(
            self,
            Self::Rset
                | Self::Command(Command::Mail { .. } | Command::Rcpt { .. } | Command::Data { .. })
        )
    }

    fn is_message(&self) -> bool {
        matches!(self, Self::Command(Command::Body(_) | Command::End { .. }))
    }
}

/// A command sent whose reply has not come yet.
enum Awaiting {
    Greeting,
    /// The front's own EHLO during set-up.
    Ehlo,
    StartTls,
    /// One XCLIENT line; `last` is followed by the greeting as the client gave it.
    Xclient {
        last: bool,
    },
    /// HELO or EHLO with the client's name after XCLIENT.
    Greet {
        extended: bool,
    },
    Rset,
    Mail(Responder),
    Rcpt(Responder),
    Data {
        received: Vec<u8>,
        responder: Responder,
    },
    End(Responder, MessageLog),
    Quit,
}

impl Awaiting {
    /// Whether a pipelined command may be sent before this one's reply came (RFC 2920 §3.1).
    fn in_group(&self) -> bool {
        matches!(self, Self::Rset | Self::Mail(_) | Self::Rcpt(_))
    }
}

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Greeting, EHLO, STARTTLS, XCLIENT: a failure here means the backend is unavailable.
    Setup,
    /// The backend said 220 to STARTTLS: the backend I/O runs the handshake, then calls
    /// [`BackendClient::tls_established`].
    Handshake,
    /// Taking the session's commands.
    Ready,
    /// QUIT sent: the connection ends with its reply or the backend's close.
    Quitting,
    /// Over: the backend I/O closes the socket.
    Finished,
}

/// How long QUIT waits for its reply.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One backend connection's protocol state.
pub(crate) struct BackendClient {
    config: Arc<BackendConfig>,
    session: u64,
    phase: Phase,
    capabilities: Capabilities,
    /// Who the client is (set-up introduces this one).
    client: ClientIdentity,
    /// The identity last sent with XCLIENT.
    sent_identity: Option<ClientIdentity>,
    /// The name the set-up EHLO gives.
    helo_name: String,
    tls_done: bool,
    /// Octets to send, plaintext.
    out: Vec<u8>,
    /// A reply line not complete yet.
    line: Vec<u8>,
    reader: ReplyReader,
    awaiting: VecDeque<Awaiting>,
    steps: VecDeque<Step>,
    /// The message in progress, once the backend said 354.
    data: Option<DataEncoder>,
    /// A RSET owed to the backend before the next MAIL.
    reset_pending: bool,
    /// RCPTs the backend accepted in the transaction in progress: without one, its 354 to a
    /// DATA cannot be the client's (the session refuses that DATA, RFC 2920 §3.1).
    recipients_taken: usize,
    /// Raised when the backend fails in the middle of a message whose end has not come: the
    /// worker answers the next body chunk with `451 4.4.2`.
    body_failed: Arc<AtomicBool>,
}

/// `451 4.4.x`: never a 5xx for a transport problem.
fn temporary(detail: u16, text: &'static str) -> Reply {
    Reply::new(
        ReplyCode::LOCAL_ERROR,
        EnhancedStatus::new(4, 4, detail),
        text,
    )
}

/// `451 4.4.1`: the backend could not be reached.
pub(crate) fn unreachable() -> Reply {
    temporary(1, "Backend unavailable, try again later")
}

/// `451 4.4.2`: the backend connection broke.
pub(crate) fn broken() -> Reply {
    temporary(2, "Backend connection lost, try again later")
}

/// Writes the message line (`docs/LOGGING.md`) for the backend's reply to the final dot; the
/// queue id is the backend's own, from its `queued as ID` text (Postfix, Exim's `id=ID`).
fn log_message(log: &MessageLog, reply: &BackendReply) {
    let text = reply.lines.first().map_or("", String::as_str);
    let queue_id = ["queued as ", "id="].iter().find_map(|marker| {
        let start = text.find(marker)? + marker.len();
        let id = text[start..].split([' ', ',', ';', ')']).next()?;
        (!id.is_empty()).then_some(id)
    });
    let result = if reply.is_positive() {
        MessageResult::Accepted(reply.code)
    } else {
        MessageResult::Refused(reply.code)
    };
    log::info!(
        "{}",
        log.line(queue_id.filter(|_| reply.is_positive()), result)
    );
}

/// Refuses a message the backend will never answer, with its message line.
pub(crate) fn refuse_message(responder: Responder, log: &MessageLog, reply: &Reply) {
    log::info!(
        "{}",
        log.line(None, MessageResult::Refused(reply.code().as_u16()))
    );
    responder.respond(Verdict::Reject(reply.clone()));
}

/// The verdict for a backend reply: accepted when positive (or, for DATA, intermediate).
fn verdict(reply: &BackendReply) -> Verdict {
    if reply.is_positive() || reply.is_intermediate() {
        Verdict::AcceptWith(reply.to_client())
    } else {
        Verdict::Reject(reply.to_client())
    }
}

impl BackendClient {
    /// A connection being opened for `session`, introducing `client`; a PROXY v2 header
    /// waits in the output if the configuration asks for one.
    pub(crate) fn new(
        config: Arc<BackendConfig>,
        session: u64,
        client: ClientIdentity,
        body_failed: Arc<AtomicBool>,
    ) -> Self {
        let mut out = Vec::new();
        if config.identity == Identity::ProxyV2 {
            out.extend_from_slice(&proxy_v2_header(client.addr, client.local));
        }
        // With a PROXY header the backend takes the connection for the client's own, so it
        // gets the client's name too (Exim logs and checks `helo=`); otherwise the front
        // introduces itself (and, with XCLIENT, the client after it).
        let helo_name = match (config.identity, &client.helo) {
            (Identity::ProxyV2, Some(name)) => name.clone(),
            _ => config.helo_name.clone(),
        };
        Self {
            config,
            session,
            phase: Phase::Setup,
            capabilities: Capabilities::default(),
            client,
            sent_identity: None,
            helo_name,
            tls_done: false,
            out,
            line: Vec::new(),
            reader: ReplyReader::default(),
            awaiting: VecDeque::from([Awaiting::Greeting]),
            steps: VecDeque::new(),
            data: None,
            reset_pending: false,
            recipients_taken: 0,
            body_failed,
        }
    }

    /// Octets to write, taken: plaintext, for the socket or the TLS session.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// How many octets wait to be written.
    pub(crate) fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Whether the backend I/O should start TLS on the socket now.
    pub(crate) fn wants_tls(&self) -> bool {
        self.phase == Phase::Handshake
    }

    /// Whether the connection is over: the backend I/O closes it.
    pub(crate) fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Whether the connection takes a new MAIL (set up or being set up, not failing or
    /// leaving).
    pub(crate) fn is_usable(&self) -> bool {
        matches!(self.phase, Phase::Setup | Phase::Handshake | Phase::Ready)
    }

    /// How long the backend has to answer from now, while something is awaited.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        let front = self.awaiting.front()?;
        Some(match (self.phase, front) {
            (Phase::Setup | Phase::Handshake, _) => self.config.connect_timeout,
            (_, Awaiting::End(..)) => self.config.data_timeout,
            (_, Awaiting::Quit) => QUIT_TIMEOUT,
            _ => self.config.command_timeout,
        })
    }

    /// Takes the session's next job.
    pub(crate) fn submit(&mut self, job: Job) {
        match job {
            Job::Command(command) => {
                if matches!(command, Command::Mail { .. })
                    && std::mem::take(&mut self.reset_pending)
                {
                    self.steps.push_back(Step::Rset);
                }
                self.steps.push_back(Step::Command(command));
            }
            Job::Abort => {
                self.body_failed.store(false, Ordering::Release);
                if self.in_message() {
                    // Closing without the final dot: the backend discards the message.
                    self.finish();
                }
            }
            Job::Reset => {
                if !self.in_message() {
                    self.reset_pending = true;
                }
            }
            Job::Close => {
                if self.in_message() || !self.is_usable() {
                    self.finish();
                } else {
                    self.steps.push_back(Step::Quit);
                }
            }
        }
        self.pump();
    }

    /// Whether a message has started on the backend (its 354 came) and not ended.
    fn in_message(&self) -> bool {
        self.data.is_some() || self.steps.iter().any(Step::is_message)
    }

    /// Takes octets the backend sent (plaintext).
    pub(crate) fn received(&mut self, mut octets: &[u8]) {
        while !octets.is_empty() && self.phase != Phase::Finished {
            let Some(newline) = memchr::memchr(b'\n', octets) else {
                self.line.extend_from_slice(octets);
                if self.line.len() > MAX_LINE {
                    self.fail(&ReplyError::LineTooLong.into());
                }
                return;
            };
            self.line.extend_from_slice(&octets[..=newline]);
            octets = &octets[newline + 1..];
            let line = std::mem::take(&mut self.line);
            let parsed = match line.strip_suffix(b"\r\n") {
                _ if line.len() > MAX_LINE => Err(ReplyError::LineTooLong),
                Some(text) => self.reader.line(text),
                None => Err(ReplyError::Malformed(
                    String::from_utf8_lossy(&line).into_owned(),
                )),
            };
            match parsed {
                Ok(Some(reply)) => self.reply(reply, octets),
                Ok(None) => {}
                Err(error) => self.fail(&error.into()),
            }
            self.line = line;
            self.line.clear();
        }
    }

    /// The backend closed its side.
    pub(crate) fn closed_by_peer(&mut self) {
        let idle = self.phase == Phase::Ready
            && self.awaiting.is_empty()
            && self.steps.is_empty()
            && self.data.is_none();
        if idle || self.phase == Phase::Quitting {
            // Between transactions (the backend's idle timeout): the next MAIL opens anew.
            log::debug!(
                "smtps-relay: session={} backend closed between transactions",
                self.session
            );
            self.finish();
        } else {
            self.fail(&BackendError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }

    /// The connection failed underneath (connect, I/O, TLS, timeout).
    pub(crate) fn failed(&mut self, error: &BackendError) {
        if self.phase == Phase::Quitting {
            self.finish();
        } else {
            self.fail(error);
        }
    }

    /// The STARTTLS handshake with the backend completed: greet again over TLS.
    pub(crate) fn tls_established(&mut self) {
        if self.phase == Phase::Handshake {
            self.phase = Phase::Setup;
            self.tls_done = true;
            self.send_line(&format!("EHLO {}", self.helo_name));
            self.awaiting.push_back(Awaiting::Ehlo);
        }
    }

    fn reply(&mut self, reply: BackendReply, rest: &[u8]) {
        let Some(awaited) = self.awaiting.pop_front() else {
            if reply.code == 421 && self.steps.is_empty() && self.data.is_none() {
                // The backend's idle timeout or shutdown, announced: it closes next.
                log::debug!(
                    "smtps-relay: session={} backend said 421 between transactions",
                    self.session
                );
                self.finish();
            } else {
                let text = reply.lines.first().cloned().unwrap_or_default();
                self.fail(&ReplyError::Unsolicited(format!("{} {text}", reply.code)).into());
            }
            return;
        };
        if self.awaiting.is_empty()
            && !rest.is_empty()
            && !rest.starts_with(b"421")
            && !matches!(awaited, Awaiting::Quit)
        {
            // Octets after the reply to the last command sent: a second reply would answer
            // the next command and shift every verdict after it. Only a 421 may follow (the
            // backend closing, RFC 5321 §3.8); it is taken on its own below.
            self.awaiting.push_front(awaited);
            let start = String::from_utf8_lossy(&rest[..rest.len().min(64)]).into_owned();
            self.fail(&ReplyError::Unsolicited(start).into());
            return;
        }
        match awaited {
            Awaiting::Greeting => {
                if reply.code == 220 {
                    self.send_line(&format!("EHLO {}", self.helo_name));
                    self.awaiting.push_back(Awaiting::Ehlo);
                } else {
                    self.fail(&BackendError::Refused("the connection", reply));
                }
            }
            Awaiting::Ehlo => {
                if reply.is_positive() {
                    self.capabilities = Capabilities::from_ehlo(&reply);
                    self.after_ehlo();
                } else {
                    self.fail(&BackendError::Refused("EHLO", reply));
                }
            }
            Awaiting::StartTls => {
                // Octets after the 220 (plaintext injected into the TLS session,
                // CVE-2011-0411 from the other side) were refused above.
                if reply.code == 220 {
                    self.phase = Phase::Handshake;
                } else {
                    self.fail(&BackendError::Refused("STARTTLS", reply));
                }
            }
            Awaiting::Xclient { last } => {
                if reply.code != 220 {
                    self.fail(&BackendError::Refused("XCLIENT", reply));
                } else if last {
                    self.greet_as_client();
                }
            }
            Awaiting::Greet { extended } => {
                if reply.is_positive() {
                    self.capabilities = if extended {
                        Capabilities::from_ehlo(&reply)
                    } else {
                        Capabilities::default()
                    };
                    if self.phase == Phase::Setup {
                        self.phase = Phase::Ready;
                    }
                } else {
                    self.fail(&BackendError::Refused(
                        if extended { "EHLO" } else { "HELO" },
                        reply,
                    ));
                }
            }
            // Whatever RSET got, the MAIL after it has its own reply.
            Awaiting::Rset => {}
            Awaiting::Mail(responder) => {
                self.recipients_taken = 0;
                responder.respond(verdict(&reply));
            }
            Awaiting::Rcpt(responder) => {
                if reply.is_positive() {
                    self.recipients_taken += 1;
                }
                responder.respond(verdict(&reply));
            }
            Awaiting::Data {
                received,
                responder,
            } => self.data_reply(&reply, &received, responder),
            Awaiting::End(responder, log) => {
                log_message(&log, &reply);
                responder.respond(verdict(&reply));
            }
            Awaiting::Quit => self.finish(),
        }
        self.pump();
    }

    fn data_reply(&mut self, reply: &BackendReply, received: &[u8], responder: Responder) {
        if reply.code == 354 && self.recipients_taken == 0 {
            // The client's DATA, pipelined, was refused by the session once every RCPT was
            // (RFC 2920 §3.1): no body will come, and this backend must not take the next
            // commands for one. Without the final dot it keeps nothing.
            log::warn!(
                "smtps-relay: session={} backend said 354 to a DATA without recipients",
                self.session
            );
            responder.respond(Verdict::Reject(broken()));
            self.finish();
        } else if reply.code == 354 {
            let mut encoder = DataEncoder::default();
            encoder.encode(received, &mut self.out);
            self.data = Some(encoder);
            // The engine sends its own 354 — unless the server answered the client for the
            // host meanwhile (its decision timeout): then no body will come either.
            if !responder.try_respond(Verdict::Accept) {
                self.finish();
            }
        } else if reply.is_positive() || reply.is_intermediate() {
            log::warn!(
                "smtps-relay: session={} backend answered DATA with {}",
                self.session,
                reply.code
            );
            responder.respond(Verdict::Reject(broken()));
            self.finish_failed();
        } else {
            responder.respond(verdict(reply));
        }
    }

    /// After the set-up EHLO: STARTTLS, then XCLIENT, then ready.
    fn after_ehlo(&mut self) {
        if self.config.starttls.is_some() && !self.tls_done {
            if !self.capabilities.starttls {
                self.fail(&BackendError::Missing("STARTTLS"));
                return;
            }
            self.send_line("STARTTLS");
            self.awaiting.push_back(Awaiting::StartTls);
        } else if self.config.identity == Identity::Xclient {
            let client = self.client.clone();
            self.send_xclient(client);
        } else {
            self.phase = Phase::Ready;
        }
    }

    fn send_xclient(&mut self, client: ClientIdentity) {
        if self.capabilities.xclient.is_none() {
            self.fail(&BackendError::Missing(
                "XCLIENT to this front (Postfix: add the front's address to smtpd_authorized_xclient_hosts)",
            ));
            return;
        }
        let mut attributes = Vec::new();
        let mut add = |name: &str, value: String| {
            if self.capabilities.xclient_takes(name) {
                attributes.push(format!("{name}={}", xtext::encode(&value)));
            }
        };
        let unavailable = || "[UNAVAILABLE]".to_owned();
        add("NAME", unavailable());
        add("ADDR", address_attribute(client.addr));
        add("PORT", client.addr.port().to_string());
        add(
            "PROTO",
            if client.extended { "ESMTP" } else { "SMTP" }.to_owned(),
        );
        add("HELO", client.helo.clone().unwrap_or_else(unavailable));
        add("LOGIN", client.login.clone().unwrap_or_else(unavailable));
        add("DESTADDR", address_attribute(client.local));
        add("DESTPORT", client.local.port().to_string());
        // Postfix takes at most 512 octets a command line: the attributes go in as many
        // XCLIENT commands as needed, each answered with a new greeting.
        let lines = pack("XCLIENT", &attributes, MAX_LINE - 2);
        let count = lines.len();
        for (i, line) in lines.iter().enumerate() {
            self.send_line(line);
            self.awaiting.push_back(Awaiting::Xclient {
                last: i + 1 == count,
            });
        }
        self.client = client.clone();
        self.sent_identity = Some(client);
        if count == 0 {
            self.greet_as_client();
        }
    }

    /// XCLIENT resets the session: greet again as the client did, with its name (Postfix's
    /// XCLIENT_README), or the next EHLO would replace the HELO name XCLIENT just gave and
    /// every HELO restriction would judge the front instead of the client.
    fn greet_as_client(&mut self) {
        let (verb, name, extended) = match &self.client.helo {
            Some(name) if !self.client.extended => ("HELO", name.clone(), false),
            Some(name) => ("EHLO", name.clone(), true),
            None => ("EHLO", self.helo_name.clone(), true),
        };
        self.send_line(&format!("{verb} {name}"));
        self.awaiting.push_back(Awaiting::Greet { extended });
    }

    /// Sends the steps that may go now: the next one when nothing is awaited, and with
    /// PIPELINING every one that may follow the unanswered ones in a group.
    fn pump(&mut self) {
        while self.phase == Phase::Ready {
            let Some(step) = self.steps.front() else {
                return;
            };
            let may_go = self.awaiting.is_empty()
                || (self.capabilities.pipelining
                    && step.may_follow_unanswered()
                    && self.awaiting.iter().all(Awaiting::in_group));
            if !may_go {
                return;
            }
            let Some(step) = self.steps.pop_front() else {
                return;
            };
            self.start(step);
        }
    }

    fn start(&mut self, step: Step) {
        let command = match step {
            Step::Command(command) => command,
            Step::Rset => {
                self.send_line("RSET");
                self.awaiting.push_back(Awaiting::Rset);
                return;
            }
            Step::Quit => {
                self.send_line("QUIT");
                self.awaiting.push_back(Awaiting::Quit);
                self.phase = Phase::Quitting;
                return;
            }
        };
        match command {
            Command::Mail {
                client,
                path,
                params,
                responder,
            } => {
                let changed = self.sent_identity.as_ref() != Some(&client);
                if self.config.identity == Identity::Xclient && changed {
                    // The client is introduced again (a later AUTH, a new EHLO); the MAIL
                    // goes once XCLIENT and its greeting are answered.
                    self.send_xclient(client.clone());
                    self.steps.push_front(Step::Command(Command::Mail {
                        client,
                        path,
                        params,
                        responder,
                    }));
                    return;
                }
                match mail_command(&path, &params, &self.capabilities) {
                    Ok(line) => {
                        self.send_line(&line);
                        self.awaiting.push_back(Awaiting::Mail(responder));
                    }
                    Err(refusal) => responder.respond(Verdict::Reject(refusal)),
                }
            }
            Command::Rcpt {
                path,
                params,
                responder,
            } => match rcpt_command(&path, &params, &self.capabilities) {
                Ok(line) => {
                    self.send_line(&line);
                    self.awaiting.push_back(Awaiting::Rcpt(responder));
                }
                Err(refusal) => responder.respond(Verdict::Reject(refusal)),
            },
            Command::Data {
                received,
                responder,
            } => {
                self.send_line("DATA");
                self.awaiting.push_back(Awaiting::Data {
                    received,
                    responder,
                });
            }
            Command::Body(chunk) => {
                if let Some(encoder) = &mut self.data {
                    encoder.encode(&chunk, &mut self.out);
                }
            }
            Command::End {
                body,
                responder,
                log,
            } => match self.data.take() {
                Some(mut encoder) => {
                    encoder.encode(&body, &mut self.out);
                    encoder.finish(&mut self.out);
                    self.awaiting.push_back(Awaiting::End(responder, log));
                }
                None => refuse_message(responder, &log, &broken()),
            },
        }
    }

    fn send_line(&mut self, line: &str) {
        debug_assert!(
            !line.contains(['\r', '\n']),
            "commands are built, never copied"
        );
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// The connection broke: every decision waiting on it gets `451`, logged once.
    fn fail(&mut self, error: &BackendError) {
        if self.phase == Phase::Finished {
            return;
        }
        log::error!("smtps-relay: session={} {error}", self.session);
        let reply = match (self.phase, error) {
            (Phase::Setup | Phase::Handshake, _) | (_, BackendError::Connect(..)) => unreachable(),
            _ => broken(),
        };
        self.answer_all(&reply);
    }

    /// Ends the connection after a failure already answered or logged.
    fn finish_failed(&mut self) {
        self.answer_all(&broken());
    }

    fn answer_all(&mut self, reply: &Reply) {
        // A message whose end has not been submitted learns of it through its next chunk.
        let end_queued = self.awaiting.iter().any(|a| matches!(a, Awaiting::End(..)))
            || self
                .steps
                .iter()
                .any(|s| matches!(s, Step::Command(Command::End { .. })));
        if self.data.is_some() && !end_queued {
            self.body_failed.store(true, Ordering::Release);
        }
        for awaited in std::mem::take(&mut self.awaiting) {
            match awaited {
                Awaiting::Mail(responder)
                | Awaiting::Rcpt(responder)
                | Awaiting::Data { responder, .. } => {
                    responder.respond(Verdict::Reject(reply.clone()));
                }
                Awaiting::End(responder, log) => refuse_message(responder, &log, reply),
                _ => {}
            }
        }
        for step in std::mem::take(&mut self.steps) {
            match step {
                Step::Command(
                    Command::Mail { responder, .. }
                    | Command::Rcpt { responder, .. }
                    | Command::Data { responder, .. },
                ) => responder.respond(Verdict::Reject(reply.clone())),
                Step::Command(Command::End { responder, log, .. }) => {
                    refuse_message(responder, &log, reply);
                }
                _ => {}
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        self.phase = Phase::Finished;
        self.data = None;
        self.out.clear();
    }
}

impl Drop for BackendClient {
    /// Jobs still queued when the connection goes (the worker shutting down) are answered, not
    /// left to the responders' own `451 4.3.0`.
    fn drop(&mut self) {
        if !self.awaiting.is_empty() || !self.steps.is_empty() {
            self.answer_all(&broken());
        }
    }
}
