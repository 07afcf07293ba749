//! [`Transport`]: one connection's byte stream, plaintext or TLS, with the same sans-IO surface.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ServerConnection;

use crate::acceptor::TlsAcceptor;
use crate::error::{ConfigError, Error, TlsError, UsageError};
use crate::info::TlsInfo;

/// The most plaintext a plaintext-mode transport buffers in each direction (64 KiB).
///
/// [`Transport::handle_received`] and [`Transport::write_plaintext`] accept at most this much
/// pending data and report how much they took. In TLS mode rustls applies its own limits
/// (16 KiB of received plaintext, 64 KiB of pending output) the same way.
pub const PLAINTEXT_BUFFER_LIMIT: usize = 64 * 1024;

/// A connection's transport: plaintext (SMTP before `STARTTLS`, RFC 3207) or TLS (after
/// `STARTTLS`, or from the first byte on an implicit-TLS port, RFC 8314 §3.3).
///
/// It does no I/O. The caller moves bytes between it and the socket:
///
/// * socket → [`handle_received`](Self::handle_received) → [`read_plaintext`](Self::read_plaintext)
///   (or [`received_plaintext`](Self::received_plaintext) + [`consume_plaintext`](Self::consume_plaintext)) → SMTP
/// * SMTP → [`write_plaintext`](Self::write_plaintext) → [`poll_transmit`](Self::poll_transmit)
///   (or [`write_transmit`](Self::write_transmit)) → socket
///
/// See the [crate documentation](crate) for the call order and the `STARTTLS` contract.
#[derive(Debug)]
pub struct Transport {
    state: State,
    /// Plaintext output queued before `start_tls` (the `220 Ready to start TLS` reply):
    /// sent before any TLS record.
    pre_tls: Vec<u8>,
    pre_tls_pos: usize,
}

/// What [`Transport::start_tls`] did at the upgrade boundary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartTls {
    /// Bytes the peer had sent after the `STARTTLS` command that the transport had received
    /// but not yet handed up. They were discarded (RFC 3207 §4.2, CVE-2011-0411): they
    /// arrived unprotected and must never be read as if they came through TLS.
    pub discarded: usize,
    /// Plaintext output still pending (normally the `220` reply). It is sent, in plaintext,
    /// before the first TLS record.
    pub plaintext_pending: usize,
}

#[derive(Debug)]
enum State {
    Plain(Plain),
    Tls(Box<Tls>),
}

#[derive(Debug, Default)]
struct Plain {
    incoming: Vec<u8>,
    in_pos: usize,
    outgoing: Vec<u8>,
    out_pos: usize,
    eof: bool,
    closed: bool,
}

#[derive(Debug)]
struct Tls {
    conn: ServerConnection,
    /// The configuration lets application data go out before the client's `Finished`.
    half_rtt: bool,
    failure: Option<TlsError>,
    first_byte: Option<u8>,
    /// Decrypted bytes not yet read (from rustls' `IoState`, minus what was read since).
    plaintext_pending: usize,
    peer_closed: bool,
    closed: bool,
}

impl Transport {
    /// A plaintext transport (ports 25 and 587 before `STARTTLS`, RFC 3207).
    pub fn new_plaintext() -> Self {
        Self {
            state: State::Plain(Plain::default()),
            pre_tls: Vec::new(),
            pre_tls_pos: 0,
        }
    }

    /// A transport that is TLS from the first byte (port 465, RFC 8314 §3.3), using the
    /// acceptor's configuration as of now.
    pub fn new_implicit_tls(acceptor: &TlsAcceptor) -> Result<Self, Error> {
        Self::new_implicit_tls_with_config(acceptor.server_config())
    }

    /// Like [`Transport::new_implicit_tls`], with a rustls configuration built elsewhere.
    pub fn new_implicit_tls_with_config(config: Arc<ServerConfig>) -> Result<Self, Error> {
        Ok(Self {
            state: State::Tls(Box::new(Tls::new(config)?)),
            pre_tls: Vec::new(),
            pre_tls_pos: 0,
        })
    }

    /// Feeds bytes received from the socket. Returns how many were taken; feed the rest
    /// again after draining plaintext with [`read_plaintext`](Self::read_plaintext)
    /// (back-pressure, as rustls' `read_tls`).
    ///
    /// Under TLS, a protocol failure returns [`Error::Tls`] (with the `rustls::Error` whole);
    /// the alert to send is then waiting in [`poll_transmit`](Self::poll_transmit), and every
    /// later call returns the same error. Bytes after the peer's `close_notify` are taken and
    /// ignored (RFC 8446 §6.1).
    pub fn handle_received(&mut self, data: &[u8]) -> Result<usize, Error> {
        match &mut self.state {
            State::Plain(p) => Ok(p.handle_received(data)),
            State::Tls(t) => t.handle_received(data),
        }
    }

    /// Tells the transport the peer closed its side of the TCP connection (a socket read
    /// returned 0). Plaintext already received can still be read.
    pub fn handle_eof(&mut self) {
        match &mut self.state {
            State::Plain(p) => p.eof = true,
            State::Tls(t) => t.handle_eof(),
        }
    }

    /// Copies received plaintext into `buf`; returns the number of bytes, 0 if none is ready.
    /// Never allocates.
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> usize {
        match &mut self.state {
            State::Plain(p) => {
                let n = buf.len().min(p.incoming.len() - p.in_pos);
                buf[..n].copy_from_slice(&p.incoming[p.in_pos..p.in_pos + n]);
                p.consume(n);
                n
            }
            // WouldBlock (nothing yet), UnexpectedEof (closed) and Ok(0) (close_notify) all
            // mean "nothing to read"; `peer_closed` tells them apart.
            State::Tls(t) => {
                let n = t.conn.reader().read(buf).unwrap_or(0);
                t.plaintext_pending = t.plaintext_pending.saturating_sub(n);
                n
            }
        }
    }

    /// Borrows the received plaintext that is ready, without copying; empty if none.
    /// Under TLS this is one decrypted record at a time. Follow with
    /// [`consume_plaintext`](Self::consume_plaintext).
    pub fn received_plaintext(&mut self) -> &[u8] {
        match &mut self.state {
            State::Plain(p) => &p.incoming[p.in_pos..],
            State::Tls(t) => t.conn.reader().into_first_chunk().unwrap_or(&[]),
        }
    }

    /// Whether received plaintext waits to be read: a cheap check before
    /// [`received_plaintext`](Self::received_plaintext).
    pub fn has_received_plaintext(&self) -> bool {
        match &self.state {
            State::Plain(p) => p.in_pos < p.incoming.len(),
            State::Tls(t) => t.plaintext_pending > 0,
        }
    }

    /// Marks `n` bytes of [`received_plaintext`](Self::received_plaintext) as read (clamped to
    /// what was there).
    pub fn consume_plaintext(&mut self, n: usize) {
        match &mut self.state {
            State::Plain(p) => p.consume(n.min(p.incoming.len() - p.in_pos)),
            State::Tls(t) => {
                let available = t.conn.reader().into_first_chunk().map_or(0, <[u8]>::len);
                let n = n.min(available);
                t.conn.reader().consume(n);
                t.plaintext_pending = t.plaintext_pending.saturating_sub(n);
            }
        }
    }

    /// Queues plaintext to send (encrypted under TLS). Returns how many bytes were taken,
    /// which may be fewer than given when output is backed up: send with
    /// [`poll_transmit`](Self::poll_transmit) and write the rest.
    ///
    /// Under TLS, plaintext written during the handshake (the implicit-TLS `220` greeting,
    /// RFC 8314 §3.3) is held by rustls and sent encrypted once the handshake completes.
    ///
    /// Fails after [`close`](Self::close) and after a TLS failure.
    pub fn write_plaintext(&mut self, data: &[u8]) -> Result<usize, Error> {
        match &mut self.state {
            State::Plain(p) => p.write(data),
            State::Tls(t) => t.write(data),
        }
    }

    /// Upgrades to TLS at this exact byte (RFC 3207 §4), with the acceptor's configuration as
    /// of now.
    ///
    /// Call it right after queueing the `220 Ready to start TLS` reply with
    /// [`write_plaintext`](Self::write_plaintext). That reply, and any other plaintext output
    /// still pending, stays queued and is sent in plaintext before the first TLS record — the
    /// caller does not have to flush first. Received plaintext not yet read is discarded and
    /// counted in [`StartTls::discarded`] (CVE-2011-0411). The caller must also drop whatever
    /// it read from the transport past the `STARTTLS` line but did not process.
    ///
    /// Fails if the transport is already TLS (RFC 3207 §4.2: a second `STARTTLS` is refused by
    /// the SMTP layer with 503 before it gets here) or was closed.
    pub fn start_tls(&mut self, acceptor: &TlsAcceptor) -> Result<StartTls, Error> {
        self.start_tls_with_config(acceptor.server_config())
    }

    /// Like [`Transport::start_tls`], with a rustls configuration built elsewhere.
    pub fn start_tls_with_config(&mut self, config: Arc<ServerConfig>) -> Result<StartTls, Error> {
        let State::Plain(plain) = &mut self.state else {
            return Err(UsageError::AlreadyTls.into());
        };
        if plain.closed {
            return Err(UsageError::Closed.into());
        }
        let mut tls = Tls::new(config)?;
        let discarded = plain.incoming.len() - plain.in_pos;
        let pending = &plain.outgoing[plain.out_pos..];
        self.pre_tls.extend_from_slice(pending);
        let plaintext_pending = self.pre_tls.len() - self.pre_tls_pos;
        if plain.eof {
            tls.handle_eof();
        }
        self.state = State::Tls(Box::new(tls));
        if discarded > 0 {
            log::warn!(
                "STARTTLS: discarded {discarded} plaintext bytes sent after the command \
                 (RFC 3207 §4.2, CVE-2011-0411)"
            );
        }
        Ok(StartTls {
            discarded,
            plaintext_pending,
        })
    }

    /// Closes our side: under TLS queues a `close_notify` alert (RFC 8446 §6.1); in plaintext
    /// refuses further writes. Pending output is still sent: keep calling
    /// [`poll_transmit`](Self::poll_transmit) until [`wants_write`](Self::wants_write) is false,
    /// then shut the socket down.
    pub fn close(&mut self) {
        match &mut self.state {
            State::Plain(p) => p.closed = true,
            State::Tls(t) => {
                if !t.closed {
                    t.conn.send_close_notify();
                    t.closed = true;
                }
            }
        }
    }

    /// Appends every byte ready to go to the socket to `out` and returns how many.
    /// Plaintext queued before `start_tls` comes first.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        if self.pre_tls_pos < self.pre_tls.len() {
            out.extend_from_slice(&self.pre_tls[self.pre_tls_pos..]);
            self.pre_tls.clear();
            self.pre_tls_pos = 0;
        }
        match &mut self.state {
            State::Plain(p) => {
                out.extend_from_slice(&p.outgoing[p.out_pos..]);
                p.outgoing.clear();
                p.out_pos = 0;
            }
            State::Tls(t) => {
                while t.conn.wants_write() {
                    match t.conn.write_tls(out) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
        out.len() - start
    }

    /// Writes pending output to `wr` with one `write` (or vectored write) call and returns
    /// what `wr` returned; call while [`wants_write`](Self::wants_write) until the socket
    /// says `WouldBlock`. Saves the copy `poll_transmit` makes.
    pub fn write_transmit(&mut self, wr: &mut dyn Write) -> io::Result<usize> {
        if self.pre_tls_pos < self.pre_tls.len() {
            let n = wr.write(&self.pre_tls[self.pre_tls_pos..])?;
            self.pre_tls_pos += n;
            if self.pre_tls_pos == self.pre_tls.len() {
                self.pre_tls.clear();
                self.pre_tls_pos = 0;
            }
            return Ok(n);
        }
        match &mut self.state {
            State::Plain(p) => {
                let n = wr.write(&p.outgoing[p.out_pos..])?;
                p.out_pos += n;
                if p.out_pos == p.outgoing.len() {
                    p.outgoing.clear();
                    p.out_pos = 0;
                }
                Ok(n)
            }
            State::Tls(t) => t.conn.write_tls(wr),
        }
    }

    /// Whether the caller should read from the socket and call
    /// [`handle_received`](Self::handle_received). False while received plaintext waits to be
    /// read (back-pressure), after end of stream, and after a failure.
    pub fn wants_read(&self) -> bool {
        match &self.state {
            State::Plain(p) => !p.eof && p.incoming.len() - p.in_pos < PLAINTEXT_BUFFER_LIMIT,
            State::Tls(t) => t.failure.is_none() && !t.peer_closed && t.conn.wants_read(),
        }
    }

    /// Whether there are bytes to send ([`poll_transmit`](Self::poll_transmit)).
    pub fn wants_write(&self) -> bool {
        if self.pre_tls_pos < self.pre_tls.len() {
            return true;
        }
        match &self.state {
            State::Plain(p) => p.out_pos < p.outgoing.len(),
            State::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Whether a TLS handshake is in progress (false in plaintext).
    pub fn is_handshaking(&self) -> bool {
        match &self.state {
            State::Plain(_) => false,
            State::Tls(t) => t.conn.is_handshaking(),
        }
    }

    /// Whether the transport is TLS (implicit, or after `start_tls`).
    pub fn is_tls(&self) -> bool {
        matches!(self.state, State::Tls(_))
    }

    /// Whether the peer has finished sending: end of stream (or `close_notify` under TLS) was
    /// seen and every received plaintext byte has been read.
    pub fn peer_closed(&self) -> bool {
        match &self.state {
            State::Plain(p) => p.eof && p.in_pos == p.incoming.len(),
            State::Tls(t) => t.peer_closed && t.plaintext_pending == 0,
        }
    }

    /// Whether the handshake is under way and what is written now leaves with the server's
    /// first flight, before the client's `Finished` (TLS 1.3 0.5-RTT data, RFC 8446 §2;
    /// [`TlsSettings::half_rtt_data`](crate::TlsSettings::half_rtt_data)): the ClientHello was
    /// accepted, TLS 1.3 chosen, and no client certificate is asked for. Data written meanwhile
    /// is held by rustls until its keys are ready.
    pub fn in_half_rtt(&self) -> bool {
        match &self.state {
            State::Plain(_) => false,
            State::Tls(t) => {
                t.half_rtt
                    && t.failure.is_none()
                    && t.conn.is_handshaking()
                    && t.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
                    && t.conn.negotiated_cipher_suite().is_some()
            }
        }
    }

    /// What the TLS session negotiated so far, during the 0.5-RTT window
    /// ([`Transport::in_half_rtt`]): version, cipher suite, group, SNI, resumption (no client
    /// certificate: none is asked for then). Otherwise as [`Transport::tls_info`].
    pub fn half_rtt_tls_info(&self) -> Option<TlsInfo> {
        match &self.state {
            State::Tls(t) if self.in_half_rtt() => TlsInfo::negotiated_so_far(&t.conn),
            _ => self.tls_info(),
        }
    }

    /// What the TLS session negotiated; `None` in plaintext and during the handshake.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match &self.state {
            State::Plain(_) => None,
            State::Tls(t) => TlsInfo::from_connection(&t.conn),
        }
    }

    /// The TLS failure, if the session failed.
    pub fn failure(&self) -> Option<&TlsError> {
        match &self.state {
            State::Plain(_) => None,
            State::Tls(t) => t.failure.as_ref(),
        }
    }

    /// The rustls connection, for anything this API does not cover (ALPN, exporters).
    pub fn connection(&self) -> Option<&ServerConnection> {
        match &self.state {
            State::Plain(_) => None,
            State::Tls(t) => Some(&t.conn),
        }
    }
}

impl Plain {
    fn handle_received(&mut self, data: &[u8]) -> usize {
        if self.in_pos == self.incoming.len() {
            self.incoming.clear();
            self.in_pos = 0;
        }
        let room = PLAINTEXT_BUFFER_LIMIT.saturating_sub(self.incoming.len() - self.in_pos);
        let n = data.len().min(room);
        if n > 0 && self.incoming.len() + n > self.incoming.capacity() && self.in_pos > 0 {
            // Compact instead of growing: keeps the buffer bounded and allocation-free.
            self.incoming.drain(..self.in_pos);
            self.in_pos = 0;
        }
        self.incoming.extend_from_slice(&data[..n]);
        n
    }

    fn consume(&mut self, n: usize) {
        self.in_pos += n;
        if self.in_pos == self.incoming.len() {
            self.incoming.clear();
            self.in_pos = 0;
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        if self.closed {
            return Err(UsageError::Closed.into());
        }
        if self.out_pos == self.outgoing.len() {
            self.outgoing.clear();
            self.out_pos = 0;
        }
        let room = PLAINTEXT_BUFFER_LIMIT.saturating_sub(self.outgoing.len() - self.out_pos);
        let n = data.len().min(room);
        if n > 0 && self.outgoing.len() + n > self.outgoing.capacity() && self.out_pos > 0 {
            self.outgoing.drain(..self.out_pos);
            self.out_pos = 0;
        }
        self.outgoing.extend_from_slice(&data[..n]);
        Ok(n)
    }
}

impl Tls {
    fn new(config: Arc<ServerConfig>) -> Result<Self, Error> {
        let half_rtt = config.send_half_rtt_data;
        let conn = ServerConnection::new(config).map_err(ConfigError::Incompatible)?;
        Ok(Self {
            conn,
            half_rtt,
            failure: None,
            first_byte: None,
            plaintext_pending: 0,
            peer_closed: false,
            closed: false,
        })
    }

    fn handle_received(&mut self, data: &[u8]) -> Result<usize, Error> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone().into());
        }
        if self.first_byte.is_none() {
            self.first_byte = data.first().copied();
        }
        let mut consumed = 0;
        while consumed < data.len() {
            if self.peer_closed {
                // RFC 8446 §6.1: nothing after close_notify counts.
                return Ok(data.len());
            }
            let mut rd = &data[consumed..];
            match self.conn.read_tls(&mut rd) {
                Ok(0) => return Ok(data.len()),
                Ok(n) => consumed += n,
                Err(e) => {
                    let backed_up = self
                        .conn
                        .reader()
                        .into_first_chunk()
                        .is_ok_and(|c| !c.is_empty());
                    if backed_up {
                        break;
                    }
                    // Not back-pressure: the input can never be taken. Fail rather than
                    // leave the caller feeding the same bytes forever.
                    return Err(self.fail(rustls::Error::General(e.to_string())));
                }
            }
            match self.conn.process_new_packets() {
                Ok(io_state) => {
                    self.plaintext_pending = io_state.plaintext_bytes_to_read();
                    self.peer_closed = io_state.peer_has_closed();
                }
                Err(error) => return Err(self.fail(error)),
            }
        }
        Ok(consumed)
    }

    fn handle_eof(&mut self) {
        if self.failure.is_none() && !self.peer_closed {
            // rustls takes a zero-length read as end of stream.
            let _ = self.conn.read_tls(&mut &[][..]);
            if let Err(error) = self.conn.process_new_packets() {
                let _ = self.fail(error);
            }
        }
        self.peer_closed = true;
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, Error> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone().into());
        }
        if self.closed {
            return Err(UsageError::Closed.into());
        }
        // rustls' writer only fails on I/O it does not do; treat that as "nothing taken".
        Ok(self.conn.writer().write(data).unwrap_or(0))
    }

    fn fail(&mut self, error: rustls::Error) -> Error {
        let failure = if self.conn.is_handshaking() {
            TlsError::Handshake {
                error,
                looks_like_plaintext: self.first_byte.is_some_and(|b| b.is_ascii_alphabetic()),
            }
        } else {
            TlsError::Session(error)
        };
        log::debug!("TLS failure: {failure}");
        self.failure = Some(failure.clone());
        failure.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_round_trip_without_tls() {
        let mut t = Transport::new_plaintext();
        assert!(!t.is_tls() && !t.is_handshaking() && t.wants_read() && !t.wants_write());
        assert_eq!(t.handle_received(b"EHLO a\r\n").unwrap(), 8);
        let mut buf = [0u8; 4];
        assert_eq!(t.read_plaintext(&mut buf), 4);
        assert_eq!(&buf, b"EHLO");
        assert_eq!(t.received_plaintext(), b" a\r\n");
        t.consume_plaintext(100);
        assert_eq!(t.received_plaintext(), b"");
        assert_eq!(t.write_plaintext(b"250 ok\r\n").unwrap(), 8);
        assert!(t.wants_write());
        let mut out = Vec::new();
        assert_eq!(t.poll_transmit(&mut out), 8);
        assert_eq!(out, b"250 ok\r\n");
        assert!(!t.wants_write());
        assert!(t.tls_info().is_none());
    }

    #[test]
    fn plaintext_input_is_bounded_and_reports_backpressure() {
        let mut t = Transport::new_plaintext();
        let big = vec![b'x'; PLAINTEXT_BUFFER_LIMIT + 10];
        assert_eq!(t.handle_received(&big).unwrap(), PLAINTEXT_BUFFER_LIMIT);
        assert!(!t.wants_read());
        assert_eq!(t.handle_received(b"more").unwrap(), 0);
        let mut buf = vec![0u8; 100];
        assert_eq!(t.read_plaintext(&mut buf), 100);
        assert!(t.wants_read());
        assert_eq!(t.handle_received(&big).unwrap(), 100);
    }

    #[test]
    fn plaintext_eof_and_close() {
        let mut t = Transport::new_plaintext();
        t.handle_received(b"QUIT\r\n").unwrap();
        t.handle_eof();
        assert!(!t.peer_closed(), "unread data remains");
        let mut buf = [0u8; 16];
        assert_eq!(t.read_plaintext(&mut buf), 6);
        assert!(t.peer_closed());
        t.write_plaintext(b"221 bye\r\n").unwrap();
        t.close();
        assert!(matches!(
            t.write_plaintext(b"x"),
            Err(Error::Usage(UsageError::Closed))
        ));
        let mut out = Vec::new();
        t.poll_transmit(&mut out);
        assert_eq!(out, b"221 bye\r\n");
    }

    #[test]
    fn write_transmit_sends_partial_writes_in_order() {
        struct Dribble(Vec<u8>);
        impl Write for Dribble {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(3);
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut t = Transport::new_plaintext();
        t.write_plaintext(b"220 hello\r\n").unwrap();
        let mut sink = Dribble(Vec::new());
        while t.wants_write() {
            t.write_transmit(&mut sink).unwrap();
        }
        assert_eq!(sink.0, b"220 hello\r\n");
    }
}
