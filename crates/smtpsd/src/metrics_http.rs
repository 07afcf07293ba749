//! `--metrics ADDR`: the server's counters for Prometheus, on a listener of their own.
//!
//! A deliberately small HTTP/1.1 responder (RFC 9112): one thread, one connection at a time,
//! `GET /metrics` answered with the text exposition format 0.0.4 and the connection closed;
//! anything else gets 404 or 405. It reads at most [`MAX_REQUEST`] octets of a request head
//! within [`REQUEST_TIMEOUT`], so a scanner that connects and says nothing delays the next
//! scrape by that much at most. Meant for a loopback or management address: it has no TLS
//! and no authentication, like most exporters.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use smtps_server::ServerHandle;

/// The largest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;

/// How long a client may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Extra samples appended to the server's (the certificates' seconds to expiry, say): called at
/// every scrape with the text so far.
pub type ExtraMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

/// The certificates' seconds to expiry, as extra samples
/// (`smtpsd_certificate_expiry_seconds{file,subject}`), read from the acceptor at each scrape
/// so that a reload shows at once; negative once expired.
#[must_use]
pub fn certificate_expiry(acceptor: Arc<smtps_tls::TlsAcceptor>) -> ExtraMetrics {
    Arc::new(move |text: &mut String| {
        use std::fmt::Write as _;
        let now = std::time::SystemTime::now();
        text.push_str(
            "# HELP smtpsd_certificate_expiry_seconds Seconds until the certificate's notAfter.\n\
             # TYPE smtpsd_certificate_expiry_seconds gauge\n",
        );
        for certificate in acceptor.certificates() {
            let _ = writeln!(
                text,
                "smtpsd_certificate_expiry_seconds{{file=\"{}\",subject=\"{}\"}} {}",
                label(&certificate.source.to_string()),
                label(&certificate.subject),
                certificate.seconds_to_expiry(now)
            );
        }
    })
}

/// A label value with `\`, `"` and line feeds escaped (the exposition format's rule).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A running metrics endpoint.
pub struct MetricsEndpoint {
    addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Binds `addr` and serves scrapes of `server` on a thread of its own until the process
    /// ends.
    ///
    /// # Errors
    /// The bind error (address in use, not local), or a thread that cannot start.
    pub fn start(
        addr: SocketAddr,
        server: ServerHandle,
        extra: Option<ExtraMetrics>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let thread = std::thread::Builder::new()
            .name("smtpsd-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if let Err(error) = answer(stream, &server, extra.as_deref()) {
                                log::debug!("smtpsd: metrics request failed: {error}");
                            }
                        }
                        Err(error) => log::warn!("smtpsd: metrics accept failed: {error}"),
                    }
                }
            })?;
        Ok(Self {
            addr,
            _thread: thread,
        })
    }

    /// The address it listens on (the port the kernel chose, for port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reads one request head and answers it.
fn answer(
    mut stream: TcpStream,
    server: &ServerHandle,
    extra: Option<&(dyn Fn(&mut String) + Send + Sync)>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )?;
            // Closing with unread input would reset the connection before the client reads
            // the answer: read a bounded rest first.
            stream.shutdown(std::net::Shutdown::Write)?;
            let mut left = 16 * MAX_REQUEST;
            while left > 0 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
            return Ok(());
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.trim_ascii().split(|b| *b == b' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => {
            let mut text = server.metrics().to_prometheus();
            if let Some(extra) = extra {
                extra(&mut text);
            }
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &text,
            )
        }
        (_, b"/metrics") => respond(&mut stream, "405 Method Not Allowed", "text/plain", ""),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "smtpsd serves /metrics only\n",
        ),
    }
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use smtps_proto::{Reply, SessionConfig};
    use smtps_server::{Answer, Context, Handler, Mode, Server, ServerConfig};

    use super::*;

    struct Sink;

    impl Handler for Sink {
        type Session = ();
        fn connect(&self, _cx: &mut Context<'_>) -> ((), Answer) {
            ((), Answer::Accept)
        }
        fn body_chunk(&self, (): &mut (), _: &mut Context<'_>, _: &[u8]) -> Result<(), Reply> {
            Ok(())
        }
        fn message_end(&self, (): &mut (), _: &mut Context<'_>, _: u64) -> Answer {
            Answer::Accept
        }
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn scrape_answers_the_exposition_format_and_nothing_else() {
        let config = ServerConfig::new(SessionConfig::new("mx.test"))
            .listener("127.0.0.1:0".parse().unwrap(), Mode::Plain);
        let server = Server::bind(config, Sink).unwrap().start().unwrap();
        let extra: ExtraMetrics = Arc::new(|text: &mut String| {
            text.push_str("smtpsd_extra 1\n");
        });
        let endpoint =
            MetricsEndpoint::start("127.0.0.1:0".parse().unwrap(), server.handle(), Some(extra))
                .unwrap();
        let addr = endpoint.local_addr();
        let response = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(
            response.contains("\nsmtps_open_connections 0\n"),
            "{response}"
        );
        assert!(response.ends_with("smtpsd_extra 1\n"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST)
        );
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        server.handle().shutdown(Duration::ZERO);
        server.join().unwrap();
    }
}
