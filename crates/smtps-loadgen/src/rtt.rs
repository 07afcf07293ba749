//! `rtt`: one session at a time, timing the milestones a client sees — TLS handshake done, the
//! banner, the reply to the first EHLO, (STARTTLS: its 220 and the EHLO after it), the 354 and
//! the 250 after the final dot of one message, the reply to QUIT — from the moment `connect()`
//! returned. Behind `delay-proxy` these times count round trips.
//!
//! The client behaves like a real one: blocking I/O, the banner read before EHLO is sent (no
//! pipelining across the banner), the TLS Finished written as soon as rustls has it, MAIL, RCPT
//! and DATA in one write only when the EHLO reply offers PIPELINING (as Postfix's smtp client
//! does), the body after the 354.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::engine::Security;
use crate::reply::{self, Reply};

/// What each session does.
pub(crate) struct Plan {
    pub(crate) target: SocketAddr,
    pub(crate) security: Security,
    pub(crate) tls: Arc<ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
    /// `EHLO name\r\n`.
    pub(crate) ehlo: Vec<u8>,
    /// `MAIL FROM:<..>\r\n`, `RCPT TO:<..>\r\n`, `DATA\r\n`.
    pub(crate) envelope: [Vec<u8>; 3],
    /// The dot-stuffed body with its final `.\r\n`.
    pub(crate) payload: Vec<u8>,
    /// Pipeline MAIL, RCPT and DATA when PIPELINING is offered.
    pub(crate) pipelining: bool,
    /// The longest wait for any one read.
    pub(crate) timeout: Duration,
}

/// Whether the envelope went out in one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipelining {
    /// Offered and used: MAIL, RCPT and DATA in one write.
    Used,
    /// Offered, but `--no-pipelining`.
    Declined,
    /// Not offered: one command at a time.
    NotOffered,
}

impl Pipelining {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Used => "used",
            Self::Declined => "offered-not-used",
            Self::NotOffered => "not-offered",
        }
    }
}

/// The times of one session, from `connect()` returning.
#[derive(Debug, Clone, Default)]
pub(crate) struct Milestones {
    /// How long `connect()` itself took.
    pub(crate) connect: Duration,
    /// Implicit TLS: the ClientHello written (the client's own start-up time).
    pub(crate) hello: Option<Duration>,
    /// The client's TLS handshake done (it has the server's Finished).
    pub(crate) tls: Option<Duration>,
    /// The banner (`220`) read.
    pub(crate) banner: Duration,
    /// The reply to the first EHLO.
    pub(crate) ehlo: Duration,
    /// STARTTLS: its `220`.
    pub(crate) starttls: Option<Duration>,
    /// STARTTLS: the reply to the EHLO after the handshake.
    pub(crate) ehlo_tls: Option<Duration>,
    /// The `354` to DATA.
    pub(crate) data: Duration,
    /// The `250` after the final dot.
    pub(crate) message: Duration,
    /// The reply to QUIT: the end of the session.
    pub(crate) quit: Duration,
    /// How the envelope was sent.
    pub(crate) pipelining: Option<Pipelining>,
    /// The negotiated suite and key exchange group.
    pub(crate) tls_params: Option<(String, String)>,
}

/// The milestones by name, in session order, for the summary.
pub(crate) fn named(m: &Milestones) -> Vec<(&'static str, Duration)> {
    let mut out = Vec::new();
    if m.starttls.is_none()
        && let Some(t) = m.tls
    {
        out.push(("tls", t));
    }
    out.push(("banner", m.banner));
    out.push(("ehlo", m.ehlo));
    if let Some(t) = m.starttls {
        out.push(("starttls", t));
    }
    if m.starttls.is_some()
        && let Some(t) = m.tls
    {
        out.push(("tls", t));
    }
    if let Some(t) = m.ehlo_tls {
        out.push(("ehlo_tls", t));
    }
    out.push(("data", m.data));
    out.push(("message", m.message));
    out.push(("quit", m.quit));
    out
}

/// Runs one session and returns its milestones.
pub(crate) fn session(plan: &Plan) -> Result<Milestones, String> {
    let started = Instant::now();
    let tcp = TcpStream::connect_timeout(&plan.target, plan.timeout)
        .map_err(|e| format!("connect {}: {e}", plan.target))?;
    let t0 = Instant::now();
    let mut m = Milestones {
        connect: t0 - started,
        ..Milestones::default()
    };
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(plan.timeout))
        .map_err(|e| e.to_string())?;
    let mut wire = Wire {
        tcp,
        tls: None,
        input: Vec::new(),
        handshake_done: None,
    };
    if plan.security == Security::Implicit {
        wire.start_tls(plan)?;
        m.hello = Some(t0.elapsed());
    }
    expect(&wire.read_reply()?, 220, "banner")?;
    m.banner = t0.elapsed();
    wire.send(&plan.ehlo)?;
    let mut ehlo = wire.read_reply()?;
    expect(&ehlo, 250, "EHLO")?;
    m.ehlo = t0.elapsed();
    if plan.security == Security::StartTls {
        if !ehlo.has_extension("STARTTLS") {
            return Err("STARTTLS not offered".to_owned());
        }
        wire.send(b"STARTTLS\r\n")?;
        expect(&wire.read_reply()?, 220, "STARTTLS")?;
        m.starttls = Some(t0.elapsed());
        if !wire.input.is_empty() {
            return Err("bytes after the 220 to STARTTLS".to_owned());
        }
        wire.start_tls(plan)?;
        while wire.handshake_done.is_none() {
            wire.fill()?;
        }
        wire.send(&plan.ehlo)?;
        ehlo = wire.read_reply()?;
        expect(&ehlo, 250, "EHLO after STARTTLS")?;
        m.ehlo_tls = Some(t0.elapsed());
    }
    m.tls = wire.handshake_done.map(|t| t - t0);
    m.tls_params = wire.tls.as_ref().and_then(|c| {
        Some((
            format!("{:?}", c.negotiated_cipher_suite()?.suite()),
            format!("{:?}", c.negotiated_key_exchange_group()?.name()),
        ))
    });

    let offered = ehlo.has_extension("PIPELINING");
    let pipelining = match (offered, plan.pipelining) {
        (true, true) => Pipelining::Used,
        (true, false) => Pipelining::Declined,
        (false, _) => Pipelining::NotOffered,
    };
    m.pipelining = Some(pipelining);
    let expected = [(250, "MAIL"), (250, "RCPT"), (354, "DATA")];
    if pipelining == Pipelining::Used {
        wire.send(&plan.envelope.concat())?;
        for (code, what) in expected {
            expect(&wire.read_reply()?, code, what)?;
        }
    } else {
        for (command, (code, what)) in plan.envelope.iter().zip(expected) {
            wire.send(command)?;
            expect(&wire.read_reply()?, code, what)?;
        }
    }
    m.data = t0.elapsed();
    wire.send(&plan.payload)?;
    expect(&wire.read_reply()?, 250, "end of data")?;
    m.message = t0.elapsed();
    wire.send(b"QUIT\r\n")?;
    expect(&wire.read_reply()?, 221, "QUIT")?;
    m.quit = t0.elapsed();
    wire.close();
    Ok(m)
}

/// A blocking connection, plaintext or TLS, with the plaintext read so far.
struct Wire {
    tcp: TcpStream,
    tls: Option<ClientConnection>,
    input: Vec<u8>,
    handshake_done: Option<Instant>,
}

impl Wire {
    /// Starts the client's handshake: the ClientHello goes out now.
    fn start_tls(&mut self, plan: &Plan) -> Result<(), String> {
        let conn = ClientConnection::new(Arc::clone(&plan.tls), plan.server_name.clone())
            .map_err(|e| format!("TLS: {e}"))?;
        self.tls = Some(conn);
        self.flush()
    }

    /// Writes `bytes` (through TLS when it is on) and sends them at once.
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &mut self.tls {
            Some(conn) => {
                conn.writer()
                    .write_all(bytes)
                    .map_err(|e| format!("TLS write: {e}"))?;
                self.flush()
            }
            None => self.tcp.write_all(bytes).map_err(|e| format!("write: {e}")),
        }
    }

    /// Sends whatever TLS has to send.
    fn flush(&mut self) -> Result<(), String> {
        if let Some(conn) = &mut self.tls {
            while conn.wants_write() {
                conn.write_tls(&mut self.tcp)
                    .map_err(|e| format!("write: {e}"))?;
            }
        }
        Ok(())
    }

    /// Reads until one complete reply is there.
    fn read_reply(&mut self) -> Result<Reply, String> {
        loop {
            match reply::parse(&self.input) {
                Ok(Some((r, n))) => {
                    self.input.drain(..n);
                    return Ok(r);
                }
                Ok(None) => self.fill()?,
                Err(e) => return Err(format!("bad reply: {e:?}")),
            }
        }
    }

    /// One `read(2)`: plaintext goes to `input`; TLS records are processed (what TLS answers,
    /// such as the client's Finished, is sent at once).
    fn fill(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 16 * 1024];
        let n = match self.tcp.read(&mut buf) {
            Ok(0) => return Err("the server closed the connection".to_owned()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        };
        let Some(conn) = &mut self.tls else {
            self.input.extend_from_slice(&buf[..n]);
            return Ok(());
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            conn.read_tls(&mut data)
                .map_err(|e| format!("TLS read: {e}"))?;
            conn.process_new_packets()
                .map_err(|e| format!("TLS: {e}"))?;
        }
        if self.handshake_done.is_none() && !conn.is_handshaking() {
            self.handshake_done = Some(Instant::now());
        }
        let mut plain = [0u8; 16 * 1024];
        loop {
            match conn.reader().read(&mut plain) {
                Ok(0) => break,
                Ok(k) => self.input.extend_from_slice(&plain[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("TLS read: {e}")),
            }
        }
        self.flush()
    }

    /// Ends the connection (close_notify for TLS); errors no longer matter.
    fn close(mut self) {
        if let Some(conn) = &mut self.tls {
            conn.send_close_notify();
        }
        let _ = self.flush();
    }
}

fn expect(reply: &Reply, code: u16, what: &str) -> Result<(), String> {
    if reply.code == code {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {code}, got {} {}",
            reply.code,
            reply.lines.first().map_or("", String::as_str)
        ))
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &mut [Duration]) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2
    })
}

/// `time` in round trips of `2 × one_way`, rounded to one decimal.
pub(crate) fn round_trips(time: Duration, one_way: Duration) -> String {
    let rtt = 2.0 * one_way.as_secs_f64();
    if rtt <= 0.0 {
        return "-".to_owned();
    }
    format!("{:.1}", time.as_secs_f64() / rtt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_round_trips() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [ms(3), ms(1), ms(2)]), Some(ms(2)));
        assert_eq!(
            median(&mut [ms(4), ms(1), ms(2), ms(3)]),
            Some(ms(2) + ms(1) / 2)
        );
        assert_eq!(round_trips(ms(41), ms(10)), "2.0");
        assert_eq!(round_trips(ms(46), ms(10)), "2.3");
        assert_eq!(round_trips(ms(5), Duration::ZERO), "-");
    }

    #[test]
    fn milestones_in_session_order() {
        let ms = Duration::from_millis;
        let implicit = Milestones {
            tls: Some(ms(20)),
            banner: ms(20),
            ehlo: ms(40),
            ..Milestones::default()
        };
        let names: Vec<_> = named(&implicit).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["tls", "banner", "ehlo", "data", "message", "quit"]);
        let starttls = Milestones {
            tls: Some(ms(80)),
            starttls: Some(ms(60)),
            ehlo_tls: Some(ms(100)),
            ..Milestones::default()
        };
        let names: Vec<_> = named(&starttls).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "banner", "ehlo", "starttls", "tls", "ehlo_tls", "data", "message", "quit"
            ]
        );
    }
}
