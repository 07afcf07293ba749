//! A host whose policy and storage are async (tokio), on smtps's own mio workers: the library
//! runs no async runtime, the host brings its own. Decisions are deferred to async tasks and
//! answered through `Responder`; body chunks go to an async writer task while the session's
//! input is paused (`Context::pause_input`), so nothing piles up in memory and no worker
//! thread ever waits for the disk.
//!
//! ```sh
//! cargo run --example tokio_host -- --listen 127.0.0.1:2465 \
//!     --cert cert.pem --key key.pem --spool ./spool
//! ```
//!
//! It takes mail for `@example.test` recipients (a lookup made in an async task), stores each
//! message as `SPOOL/<id>.eml` (written, `fsync`ed, renamed, the directory `fsync`ed) and
//! answers `250` from the task that committed it. It prints `listening on ADDR` once bound, and
//! stops gracefully on SIGTERM or SIGINT.
//!
//! What it leaves out: AUTH (see `maildir_host.rs`), STARTTLS, a `Received:` header.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use smtps::proto::{EnhancedStatus, ForwardPath, RcptParameters, Reply, ReplyCode, SessionConfig};
use smtps::server::{Answer, Context, Handler, InputGate, Mode, Responder, Server, ServerConfig};
use smtps::tls::TlsSettings;
use tokio::io::AsyncWriteExt;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// How long transactions in flight may take to finish after SIGTERM/SIGINT.
const GRACE: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse(std::env::args().skip(1))?;
    std::fs::create_dir_all(&args.spool)?;
    let runtime = Runtime::new()?;

    let tls = TlsSettings::new()
        .certificate_files(&args.cert, &args.key)
        .build()?;
    let config = ServerConfig::new(SessionConfig::new("mx.example.test"))
        .listener(args.listen, Mode::ImplicitTls)
        .tls(Arc::new(tls));
    let host = TokioHost {
        runtime: runtime.handle().clone(),
        spool: Arc::new(args.spool),
        next_id: AtomicU64::new(1),
    };
    let server = Server::bind(config, host)?;
    for addr in server.local_addrs() {
        println!("listening on {addr}");
    }

    let handle = server.handle();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("signal {signal}: shutting down");
            handle.shutdown(GRACE);
        }
    });

    // The mio workers run on their own threads; this thread just waits for them. The tokio
    // runtime lives on beside them and is dropped last.
    server.run()?;
    runtime.shutdown_timeout(GRACE);
    println!("stopped");
    Ok(())
}

/// The host: a handle to the tokio runtime its tasks run on.
struct TokioHost {
    runtime: Handle,
    spool: Arc<PathBuf>,
    next_id: AtomicU64,
}

/// Per session: the writer task of the message in progress.
#[derive(Default)]
struct Session {
    writer: Option<UnboundedSender<Job>>,
}

/// What the writer task of one message is told, in order.
enum Job {
    /// Write this chunk, then let the session's input flow again.
    Chunk(Vec<u8>, InputGate),
    /// Make the message durable, then answer.
    Commit(Responder),
}

impl Handler for TokioHost {
    type Session = Session;

    fn connect(&self, _cx: &mut Context<'_>) -> (Session, Answer) {
        (Session::default(), Answer::Accept)
    }

    fn rcpt(
        &self,
        _: &mut Session,
        cx: &mut Context<'_>,
        to: &ForwardPath<'_>,
        _: &RcptParameters<'_>,
    ) -> Answer {
        let responder = cx.defer();
        let address = to.address();
        // The lookup is async (a directory service, a database): answered from the task.
        self.runtime.spawn(async move {
            if lookup(&address).await {
                responder.accept();
            } else {
                responder.reject(Reply::new(
                    ReplyCode::MAILBOX_UNAVAILABLE,
                    EnhancedStatus::new(5, 1, 1),
                    "No such user here",
                ));
            }
        });
        Answer::Deferred
    }

    fn data_start(&self, session: &mut Session, _cx: &mut Context<'_>) -> Answer {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{id}", std::process::id());
        let (sender, jobs) = unbounded_channel();
        // Unbounded, yet never more than one chunk deep: each chunk pauses the session's
        // input until the task has written it.
        self.runtime
            .spawn(write_message(Arc::clone(&self.spool), name, jobs));
        session.writer = Some(sender);
        Answer::Accept
    }

    fn body_chunk(
        &self,
        session: &mut Session,
        cx: &mut Context<'_>,
        chunk: &[u8],
    ) -> Result<(), Reply> {
        let Some(writer) = &session.writer else {
            return Ok(());
        };
        let gate = cx.pause_input();
        // A writer task that is gone hands the job back: the gate resumes as it drops.
        writer
            .send(Job::Chunk(chunk.to_vec(), gate))
            .map_err(|_| local_error())
    }

    fn message_end(&self, session: &mut Session, cx: &mut Context<'_>, _size: u64) -> Answer {
        let responder = cx.defer();
        let Some(writer) = session.writer.take() else {
            return Answer::Reject(local_error());
        };
        // On a send error the responder drops with the job and answers 451 4.3.0 by itself.
        let _ = writer.send(Job::Commit(responder));
        Answer::Deferred
    }

    fn message_aborted(
        &self,
        session: &mut Session,
        _: &mut Context<'_>,
        _: smtps::proto::AbortReason,
    ) {
        // The writer task sees its channel close without a commit and removes the file.
        session.writer = None;
    }

    fn reset(&self, session: &mut Session, _: &mut Context<'_>) {
        session.writer = None;
    }
}

/// Whether `address` is ours: a stand-in for an async directory lookup.
async fn lookup(address: &str) -> bool {
    tokio::task::yield_now().await;
    address.to_ascii_lowercase().ends_with("@example.test")
}

/// One message's writer: chunks into `SPOOL/tmp-NAME`, then on commit `fsync`, rename to
/// `SPOOL/NAME.eml`, `fsync` the directory, and answer. A channel closed before the commit
/// (the message aborted) removes the file.
async fn write_message(
    spool: Arc<PathBuf>,
    name: String,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
) {
    let tmp = spool.join(format!("tmp-{name}"));
    let mut file = match tokio::fs::File::create(&tmp).await {
        Ok(file) => Some(file),
        Err(error) => {
            eprintln!("cannot create {}: {error}", tmp.display());
            None
        }
    };
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Chunk(chunk, gate) => {
                if let Some(f) = &mut file
                    && let Err(error) = f.write_all(&chunk).await
                {
                    eprintln!("cannot write {}: {error}", tmp.display());
                    file = None;
                }
                gate.resume();
            }
            Job::Commit(responder) => {
                let committed = match file.take() {
                    Some(f) if !responder.is_closed() => commit(f, &tmp, &spool, &name).await,
                    _ => Err(std::io::Error::other("message not stored")),
                };
                match committed {
                    Ok(()) => responder.accept_with(Reply::new(
                        ReplyCode::OK,
                        EnhancedStatus::new(2, 0, 0),
                        format!("queued as {name}"),
                    )),
                    Err(error) => {
                        eprintln!("cannot commit {name}: {error}");
                        let _ = tokio::fs::remove_file(&tmp).await;
                        responder.reject(local_error());
                    }
                }
                return;
            }
        }
    }
    let _ = tokio::fs::remove_file(&tmp).await;
}

/// Flushes and `fsync`s the file, renames it into place, `fsync`s the directory.
async fn commit(
    mut file: tokio::fs::File,
    tmp: &Path,
    spool: &Path,
    name: &str,
) -> std::io::Result<()> {
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(tmp, spool.join(format!("{name}.eml"))).await?;
    tokio::fs::File::open(spool).await?.sync_all().await
}

/// `451 4.3.0`: the client retries later.
fn local_error() -> Reply {
    Reply::new(
        ReplyCode::LOCAL_ERROR,
        EnhancedStatus::new(4, 3, 0),
        "Local error in processing",
    )
}

/// The command line.
struct Args {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    spool: PathBuf,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let usage = "usage: tokio_host --listen ADDR --cert PEM --key PEM --spool DIR";
        let (mut listen, mut cert, mut key, mut spool) = (None, None, None, None);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{usage}"))?;
            match flag.as_str() {
                "--listen" => {
                    listen = Some(
                        value
                            .parse()
                            .map_err(|e| format!("--listen {value}: {e}"))?,
                    );
                }
                "--cert" => cert = Some(PathBuf::from(value)),
                "--key" => key = Some(PathBuf::from(value)),
                "--spool" => spool = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown option {flag}\n{usage}")),
            }
        }
        match (listen, cert, key, spool) {
            (Some(listen), Some(cert), Some(key), Some(spool)) => Ok(Self {
                listen,
                cert,
                key,
                spool,
            }),
            _ => Err(usage.to_owned()),
        }
    }
}
