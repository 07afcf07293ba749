//! One connection's turn, generic over its socket: read while the engine wants input, hand
//! events to the host, write while output waits, as long as anything moves and the budget
//! lasts. Edge-triggered readiness is remembered in [`Readiness`] until a call says otherwise.

use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use smtps_conn::Connection;
use socket2::SockRef;

/// Read–dispatch–write passes one connection gets per turn before others are served.
const TURN_BUDGET: usize = 16;

/// What the socket may do, as far as the last events and calls tell (edge-triggered).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readiness {
    /// The socket may hold unread input, until a read says otherwise.
    pub(crate) readable: bool,
    /// The socket may take output, until a write says `WouldBlock`.
    pub(crate) writable: bool,
    /// The peer shut its side or the socket failed: read to the end whatever the read sizes.
    pub(crate) hangup: bool,
}

/// How a connection's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Closed and every octet sent: close the socket.
    Finished,
    /// Nothing more can move until the next readiness, answer or timer.
    Waiting,
    /// The budget ran out with work left: serve it again before the loop sleeps.
    MoreLeft,
}

/// One connection's turn: read, hand events to `host`, write, as long as anything moves and
/// [`TURN_BUDGET`] lasts. Generic over the socket so that tests can drive it with one that
/// reads short, says `WouldBlock` or ends at any point.
pub(crate) fn turn(
    conn: &mut Connection,
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    readiness: &mut Readiness,
    buf: &mut [u8],
    now: Instant,
    host: &mut dyn FnMut(&mut Connection) -> bool,
) -> Turn {
    for _ in 0..TURN_BUDGET {
        let mut progressed = false;
        let read_now = readiness.readable && conn.wants_read();
        if read_now {
            match conn.read_from(now, reader, buf) {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    // A short read emptied the socket's buffer: the next arrival brings a new
                    // event, no need to read (and get `WouldBlock`) before it.
                    readiness.readable = n == buf.len() || readiness.hangup;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    readiness.readable = false;
                }
                // The engine closed itself (with the error kind as its reason).
                Err(_) => progressed = true,
            }
        }
        progressed |= host(conn);
        // The engine may take in what it held without raising an event (the rest of a refused
        // body is read and dropped), and then want the socket again: that is progress too.
        progressed |= !read_now && readiness.readable && conn.wants_read();
        while readiness.writable && conn.wants_write() {
            match conn.write_to(writer) {
                Ok(0) => break,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    readiness.writable = false;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // Octets went out, or the engine closed itself on the error.
                Ok(_) | Err(_) => progressed = true,
            }
        }
        if conn.is_finished() {
            // A closing session may still report an aborted message.
            host(conn);
            return Turn::Finished;
        }
        if !progressed {
            return Turn::Waiting;
        }
    }
    let more =
        (readiness.readable && conn.wants_read()) || (readiness.writable && conn.wants_write());
    if more { Turn::MoreLeft } else { Turn::Waiting }
}

/// Writes with `MSG_NOSIGNAL`: a client that reset its connection makes the write fail with
/// `EPIPE` instead of raising `SIGPIPE`, which would kill a host (a C program) that has not
/// ignored it. A library must never hurt its host.
pub(crate) struct NoSigPipe<'a>(pub(crate) &'a TcpStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        SockRef::from(self.0).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        SockRef::from(self.0).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The read/write loop ([`turn`]) driven by a socket whose octets arrive in random pieces,
    //! which takes writes in random pieces, says `WouldBlock` and ends at random points, with edge-triggered readiness modelled exactly: a new event
    //! only when new octets arrive or room frees up. A turn that forgets a connection with work
    //! left shows up as a session that never finishes.

    use std::io::Read;
    use std::sync::Arc;

    use smtps_conn::Mode;
    use smtps_proto::{Event, Reply, SessionConfig, Verdict};

    use super::*;

    /// A small deterministic generator (xorshift64*), one per seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            usize::try_from(x % (n.max(1) as u64)).unwrap_or(0)
        }
    }

    /// The client's side of the socket: what it sent, how much of it has arrived.
    struct Incoming<'a> {
        sent: &'a [u8],
        arrived: usize,
        read: usize,
        /// The client closed after sending everything.
        closes: bool,
    }

    impl Read for Incoming<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.read == self.arrived {
                if self.arrived == self.sent.len() && self.closes {
                    return Ok(0);
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            // A stream socket returns what has arrived, up to the buffer: a short read means
            // the socket is empty (the driver relies on that, as epoll users do). Short reads
            // come from octets arriving in random pieces.
            let n = (self.arrived - self.read).min(buf.len());
            buf[..n].copy_from_slice(&self.sent[self.read..self.read + n]);
            self.read += n;
            Ok(n)
        }
    }

    /// The socket's send buffer: `room` octets free; the client reads at its own pace.
    struct Outgoing<'a> {
        received: Vec<u8>,
        room: usize,
        rng: &'a mut Rng,
    }

    impl Write for Outgoing<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = 1 + self.rng.below(buf.len().min(self.room));
            self.received.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Outcome {
        replies: String,
        body: Vec<u8>,
        finished: bool,
    }

    /// Runs one session over the random socket: octets arrive and room frees up in random
    /// amounts, one readiness event each time, until the connection finishes or nothing more
    /// can happen.
    fn run(seed: u64, sent: &[u8], closes: bool, refuse_bodies: bool) -> Outcome {
        let mut write_rng = Rng(seed.rotate_left(17) | 1);
        let mut net_rng = Rng(seed.rotate_left(33) | 1);
        let now = Instant::now();
        let mut conn = Connection::new(
            Mode::Plain,
            Arc::new(SessionConfig::new("mx.test")),
            None,
            now,
        )
        .expect("connection");
        let mut incoming = Incoming {
            sent,
            arrived: 0,
            read: 0,
            closes,
        };
        let mut outgoing = Outgoing {
            received: Vec::new(),
            room: 4096,
            rng: &mut write_rng,
        };
        let mut readiness = Readiness {
            readable: true,
            writable: true,
            hangup: false,
        };
        let mut body = Vec::new();
        let mut buf = vec![0u8; 1024];
        let mut host = |conn: &mut Connection| {
            let mut any = false;
            while let Some(event) = conn.poll_event() {
                any = true;
                let mut spool_full = false;
                if let Event::BodyChunk(chunk) = &event {
                    body.extend_from_slice(chunk);
                    spool_full = refuse_bodies;
                }
                let decision = event.decision();
                if spool_full {
                    conn.refuse_message(
                        Reply::from_parts(452, Some("4.3.1"), "Spool full").expect("reply"),
                    );
                }
                if let Some(decision) = decision {
                    conn.decide(decision, Verdict::Accept).expect("decide");
                }
            }
            any
        };
        let mut finished = false;
        for _ in 0..200_000 {
            // A turn left with work goes on the ready queue: served again before the loop
            // sleeps, without a new event.
            let outcome = loop {
                let outcome = turn(
                    &mut conn,
                    &mut incoming,
                    &mut outgoing,
                    &mut readiness,
                    &mut buf,
                    now,
                    &mut host,
                );
                if outcome != Turn::MoreLeft {
                    break outcome;
                }
            };
            if outcome == Turn::Finished {
                finished = true;
                break;
            }
            // The network: more octets arrive, the client reads some replies. Each is an edge.
            let mut event = false;
            if incoming.arrived < sent.len() {
                // Sometimes a burst: more than one turn's budget of reads.
                let step = if net_rng.below(4) == 0 {
                    sent.len()
                } else {
                    1 + net_rng.below(3000)
                };
                incoming.arrived = (incoming.arrived + step).min(sent.len());
                readiness.readable = true;
                event = true;
            } else if closes && !readiness.hangup {
                readiness.hangup = true;
                readiness.readable = true;
                event = true;
            }
            if outgoing.room < 4096 {
                outgoing.room = 4096;
                readiness.writable = true;
                event = true;
            }
            if !event {
                // Nothing will ever wake this connection again.
                break;
            }
        }
        Outcome {
            replies: String::from_utf8_lossy(&outgoing.received).into_owned(),
            body,
            finished,
        }
    }

    fn message() -> (Vec<u8>, Vec<u8>) {
        let mut body = Vec::new();
        for i in 0..3000 {
            if i % 7 == 0 {
                body.extend_from_slice(b".");
            }
            body.extend_from_slice(format!("line {i} of the message body\r\n").as_bytes());
        }
        let mut stuffed = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                stuffed.push(b'.');
            }
            stuffed.extend_from_slice(line);
        }
        (body, stuffed)
    }

    /// A session sending the message twice, then QUIT.
    fn two_messages_then_quit(stuffed: &[u8]) -> Vec<u8> {
        let mut sent = b"EHLO c.test\r\n".to_vec();
        for _ in 0..2 {
            sent.extend_from_slice(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
            sent.extend_from_slice(stuffed);
            sent.extend_from_slice(b".\r\n");
        }
        sent.extend_from_slice(b"QUIT\r\n");
        sent
    }

    #[test]
    fn turns_deliver_every_message_whatever_the_socket_does() {
        let (body, stuffed) = message();
        let sent = two_messages_then_quit(&stuffed);
        for seed in 1..=60u64 {
            let closes = seed % 2 == 0;
            let outcome = run(
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                &sent,
                closes,
                false,
            );
            assert!(
                outcome.finished,
                "seed {seed}: the session stalled: {:?}",
                &outcome.replies[outcome.replies.len().saturating_sub(300)..]
            );
            assert_eq!(
                outcome.replies.matches("250 2.0.0").count(),
                2,
                "seed {seed}: {}",
                outcome.replies
            );
            assert!(
                outcome.replies.ends_with("221 2.0.0 Bye\r\n"),
                "seed {seed}"
            );
            assert_eq!(outcome.body.len(), body.len() * 2, "seed {seed}");
            assert!(outcome.body.starts_with(&body) && outcome.body.ends_with(&body));
        }
    }

    #[test]
    fn turns_end_a_session_cut_at_any_point_without_acknowledging_it() {
        let (_, stuffed) = message();
        let mut sent =
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n".to_vec();
        sent.extend_from_slice(&stuffed);
        sent.extend_from_slice(b".\r\n");
        let mut rng = Rng(7);
        for seed in 1..=60u64 {
            let cut = rng.below(sent.len());
            let outcome = run(
                seed.wrapping_mul(0x51_7CC1_B727_220A),
                &sent[..cut],
                true,
                false,
            );
            assert!(outcome.finished, "seed {seed}: cut at {cut}: not closed");
            assert!(
                !outcome.replies.contains("250 2.0.0"),
                "seed {seed}: a message cut at {cut} of {} was acknowledged",
                sent.len()
            );
        }
    }

    /// A host that cannot take a message (its spool is full) refuses it at the first chunk:
    /// the rest of the body is read and dropped without an event, and the turn must still
    /// read the socket to the end (the engine's side of this, over TLS, is in smtps-conn's
    /// `a_refused_body_over_tls_is_read_to_its_end_in_64_kib_reads`).
    #[test]
    fn turns_read_a_refused_body_to_its_end_whatever_the_socket_does() {
        let (_, stuffed) = message();
        let sent = two_messages_then_quit(&stuffed);
        for seed in 1..=60u64 {
            let outcome = run(
                seed.wrapping_mul(0x2545_F491_4F6C_DD1D),
                &sent,
                seed % 2 == 0,
                true,
            );
            assert!(outcome.finished, "seed {seed}: the session stalled");
            assert_eq!(
                outcome.replies.matches("452 4.3.1").count(),
                2,
                "seed {seed}"
            );
            assert!(outcome.replies.contains("221 "), "seed {seed}");
        }
    }
}
