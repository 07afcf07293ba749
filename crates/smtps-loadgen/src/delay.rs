//! `delay-proxy`: a loopback TCP proxy that holds every chunk for a fixed one-way delay in each
//! direction, so that round trips can be measured on a machine without `netem`.
//!
//! Each accepted connection gets four threads: per direction, a reader that timestamps every
//! chunk with the kernel's arrival time (`SO_TIMESTAMPNS`, so a reader thread scheduled late on
//! a busy machine does not add to the delay; the time `recvmsg(2)` returned where the kernel
//! gives none) and queues it with its due time (arrival + delay), and a
//! writer that sleeps until the due time and writes the chunk with one `write(2)` (TCP_NODELAY
//! on every socket, so each chunk leaves as its own segment as far as TCP allows). One FIFO per
//! direction keeps the order. An end of stream is queued like a chunk and becomes a
//! `shutdown(SHUT_WR)` on the other side when due (half-close propagated); a read error (reset,
//! idle timeout) shuts both sides down.
//!
//! The TCP handshake itself cannot be delayed from user space: the client's `connect()` returns
//! as soon as the kernel accepts. To model the last leg of the handshake (the client's ACK
//! travelling to the server) the proxy connects to the target one delay after the accept, so a
//! server that speaks first (a plaintext banner) is heard one round trip after the client's
//! `connect()` returned, as on a real path. Times measured from `connect()` returning therefore
//! leave out the round trip of SYN and SYN-ACK.
//!
//! With `--log FILE`, one line per chunk: the connection number, the milliseconds since its
//! accept when the chunk was read and when it was written, the direction, the size and what the
//! chunk holds (TLS records by content type, or the first plaintext line).

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a proxy behaves.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where to connect for each accepted client.
    pub(crate) target: SocketAddr,
    /// The one-way delay applied to every chunk in each direction.
    pub(crate) delay: Duration,
    /// A connection whose sockets stay silent this long in one direction is closed.
    pub(crate) idle_timeout: Duration,
}

/// A running proxy: its address, and a way to stop accepting.
pub(crate) struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where the chunk log goes (shared by every connection of one proxy).
pub(crate) type Log = Arc<Mutex<Box<dyn Write + Send>>>;

impl Proxy {
    /// Starts accepting on `listener` in a thread of its own.
    pub(crate) fn start(
        listener: TcpListener,
        config: Config,
        log: Option<Log>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("delay-accept".to_owned())
                .spawn(move || accept_loop(&listener, &config, log.as_ref(), &stop))?
        };
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting (connections already open run to their end) and waits for the accept
    /// thread.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The address the proxy listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a proxy until the process ends (the `delay-proxy` subcommand).
pub(crate) fn run(listen: SocketAddr, config: Config, log: Option<Log>) -> Result<(), String> {
    let listener = TcpListener::bind(listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    let (target, delay) = (config.target, config.delay);
    let mut proxy = Proxy::start(listener, config, log).map_err(|e| e.to_string())?;
    eprintln!(
        "delay-proxy: {} -> {target} with {:.3} ms each way",
        proxy.addr(),
        delay.as_secs_f64() * 1e3
    );
    // The accept thread ends only when stopped, which nothing here does: until killed.
    if let Some(t) = proxy.thread.take() {
        let _ = t.join();
    }
    Ok(())
}

fn accept_loop(listener: &TcpListener, config: &Config, log: Option<&Log>, stop: &AtomicBool) {
    let next_id = AtomicU64::new(1);
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((client, _)) = accepted else {
            // EMFILE and the like: back off instead of spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let accepted_at = Instant::now();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let config = config.clone();
        let log = log.cloned();
        let spawned = std::thread::Builder::new()
            .name(format!("delay-{id}"))
            .spawn(move || connection(id, &client, accepted_at, &config, log.as_ref()));
        if spawned.is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What a reader hands its writer.
enum Item {
    /// Bytes read at `read_at`, due at `due`.
    Chunk {
        bytes: Vec<u8>,
        read_at: Instant,
        due: Instant,
    },
    /// The end of the stream (half-close), due at `due`.
    End { due: Instant },
    /// The reading side failed (reset, idle timeout): close both sides at once.
    Abort,
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::Up => "c>s",
            Self::Down => "s>c",
        }
    }
}

fn connection(
    id: u64,
    client: &TcpStream,
    accepted_at: Instant,
    config: &Config,
    log: Option<&Log>,
) {
    let _ = client.set_nodelay(true);
    let _ = client.set_read_timeout(Some(config.idle_timeout));
    let Ok(client_reader) = client.try_clone() else {
        return;
    };
    // Read the client from the start, so that each chunk's delay counts from its arrival.
    let (up_tx, up_rx) = mpsc::channel();
    let delay = config.delay;
    let Ok(up_reader) = std::thread::Builder::new()
        .name(format!("delay-{id}-up"))
        .spawn(move || read_side(&client_reader, delay, &up_tx))
    else {
        return;
    };
    // The client's ACK reaches the server one delay after the accept.
    sleep_until(accepted_at + config.delay);
    let server = match TcpStream::connect_timeout(&config.target, config.idle_timeout) {
        Ok(s) => s,
        Err(e) => {
            log_line(
                log,
                &format!("conn={id} connect to {} failed: {e}", config.target),
            );
            let _ = client.shutdown(Shutdown::Both);
            let _ = up_reader.join();
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let _ = server.set_read_timeout(Some(config.idle_timeout));
    let (Ok(server_reader), Ok(server_writer), Ok(client_writer)) =
        (server.try_clone(), server.try_clone(), client.try_clone())
    else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = up_reader.join();
        return;
    };
    let (down_tx, down_rx) = mpsc::channel();
    let down_reader = std::thread::Builder::new()
        .name(format!("delay-{id}-down"))
        .spawn(move || read_side(&server_reader, delay, &down_tx));
    let down_writer = {
        let log = log.cloned();
        let server = server.try_clone();
        std::thread::Builder::new()
            .name(format!("delay-{id}-down-w"))
            .spawn(move || {
                if let Ok(server) = server {
                    write_side(
                        &down_rx,
                        client_writer,
                        &server,
                        Direction::Down,
                        id,
                        accepted_at,
                        log.as_ref(),
                    );
                }
            })
    };
    write_side(
        &up_rx,
        server_writer,
        client,
        Direction::Up,
        id,
        accepted_at,
        log,
    );
    let _ = up_reader.join();
    if let Ok(t) = down_reader {
        let _ = t.join();
    }
    if let Ok(t) = down_writer {
        let _ = t.join();
    }
    log_line(
        log,
        &format!(
            "conn={id} t_ms={:.3} closed",
            accepted_at.elapsed().as_secs_f64() * 1e3
        ),
    );
}

/// Reads `from` until its end or an error, queuing each chunk with its due time.
fn read_side(from: &TcpStream, delay: Duration, to: &mpsc::Sender<Item>) {
    let mut buf = vec![0u8; 64 * 1024];
    enable_timestamps(from);
    loop {
        match recv_stamped(from, &mut buf) {
            Ok((0, _)) => {
                let _ = to.send(Item::End {
                    due: Instant::now() + delay,
                });
                return;
            }
            Ok((n, arrived)) => {
                let now = Instant::now();
                let read_at = arrived
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .and_then(|ago| now.checked_sub(ago))
                    .unwrap_or(now);
                let item = Item::Chunk {
                    bytes: buf[..n].to_vec(),
                    read_at,
                    due: read_at + delay,
                };
                if to.send(item).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = to.send(Item::Abort);
                return;
            }
        }
    }
}

/// Writes each queued chunk to `to` when it is due; `other` is the socket the chunks came from
/// (shut down with `to` when the reading side failed or this side cannot write).
fn write_side(
    queue: &mpsc::Receiver<Item>,
    mut to: TcpStream,
    other: &TcpStream,
    direction: Direction,
    id: u64,
    accepted_at: Instant,
    log: Option<&Log>,
) {
    let mut records = RecordTracker::default();
    let ms = |t: Instant| t.saturating_duration_since(accepted_at).as_secs_f64() * 1e3;
    // The reader always ends with End or Abort, or by being dropped: the loop is bounded by it.
    while let Ok(item) = queue.recv() {
        match item {
            Item::Chunk {
                bytes,
                read_at,
                due,
            } => {
                sleep_until(due);
                let sent_at = Instant::now();
                let written = to.write_all(&bytes);
                if log.is_some() {
                    let what = records.describe(&bytes);
                    log_line(
                        log,
                        &format!(
                            "conn={id} read_ms={:.3} sent_ms={:.3} dir={} bytes={} {what}",
                            ms(read_at),
                            ms(sent_at),
                            direction.name(),
                            bytes.len(),
                        ),
                    );
                }
                if written.is_err() {
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = other.shutdown(Shutdown::Both);
                    return;
                }
            }
            Item::End { due } => {
                sleep_until(due);
                // Logged first, so the line is there once the peer sees the end.
                log_line(
                    log,
                    &format!(
                        "conn={id} sent_ms={:.3} dir={} end of stream",
                        ms(Instant::now()),
                        direction.name()
                    ),
                );
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Item::Abort => {
                log_line(
                    log,
                    &format!(
                        "conn={id} t_ms={:.3} dir={} aborted (read error or idle timeout)",
                        ms(Instant::now()),
                        direction.name()
                    ),
                );
                let _ = to.shutdown(Shutdown::Both);
                let _ = other.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Asks the kernel to stamp received data with its arrival time (best effort).
fn enable_timestamps(socket: &TcpStream) {
    let on: libc::c_int = 1;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the descriptor is open (borrowed from `socket`), and the option value points to
    // a c_int of the length given, alive for the call.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            len,
        )
    };
}

/// One `recvmsg(2)`: the octets read, and the kernel's receive time of the data when it gives
/// one (`SCM_TIMESTAMPNS`, of the last segment read).
fn recv_stamped(
    socket: &TcpStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one timespec control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all zeros is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: the descriptor is open; msg points to one iovec over `buf` and to `control`,
    // both alive and of the lengths given, for the duration of the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
    let Ok(n) = usize::try_from(n) else {
        return Err(std::io::Error::last_os_error());
    };
    let mut stamp = None;
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR stay within
    // msg_control/msg_controllen and return null at the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is non-null and points into `control`, as CMSG_* guarantee.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: an SCM_TIMESTAMPNS message carries one timespec; read unaligned.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            if let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
                stamp = UNIX_EPOCH.checked_add(Duration::new(secs, nanos));
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR; cmsg is a header of this message.
        cmsg = unsafe { libc::CMSG_NXTHDR(&raw const msg, cmsg) };
    }
    Ok((n, stamp))
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

fn log_line(log: Option<&Log>, line: &str) {
    if let Some(log) = log
        && let Ok(mut w) = log.lock()
    {
        let _ = writeln!(w, "{line}");
        let _ = w.flush();
    }
}

/// Follows the TLS record layer of one direction across chunks, to say what each chunk holds:
/// `tls=hs:512,ccs:1,app:53` (record content types and lengths), or `text="220 mx.test ..."`
/// for plaintext SMTP (before STARTTLS, or without TLS).
#[derive(Debug, Default)]
struct RecordTracker {
    /// Octets of the current record still to come in later chunks.
    remaining: usize,
    /// The header of a record split across chunks, so far.
    partial_header: Vec<u8>,
}

impl RecordTracker {
    fn describe(&mut self, chunk: &[u8]) -> String {
        let mut parts = Vec::new();
        let mut pos = 0;
        if self.remaining > 0 {
            let take = self.remaining.min(chunk.len());
            parts.push(format!("cont:{take}"));
            self.remaining -= take;
            pos = take;
        }
        let mut header = std::mem::take(&mut self.partial_header);
        while pos < chunk.len() {
            let need = 5 - header.len();
            let take = need.min(chunk.len() - pos);
            header.extend_from_slice(&chunk[pos..pos + take]);
            if header.len() < 5 {
                if looks_like_record(&header) {
                    self.partial_header = header;
                    parts.push("header...".to_owned());
                    break;
                }
                // Too short to tell, and not a record start: plaintext.
                return text_of(chunk, pos, &parts);
            }
            if !looks_like_record(&header) {
                return text_of(chunk, pos, &parts);
            }
            pos += take;
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let kind = match header[0] {
                20 => "ccs",
                21 => "alert",
                22 => "hs",
                _ => "app",
            };
            let here = len.min(chunk.len() - pos);
            pos += here;
            self.remaining = len - here;
            parts.push(if self.remaining > 0 {
                format!("{kind}:{len}(split)")
            } else {
                format!("{kind}:{len}")
            });
            header.clear();
        }
        format!("tls={}", parts.join(","))
    }
}

/// Whether `header` (up to five octets) can start a TLS record: content type 20–23, legacy
/// version 3.1–3.4.
fn looks_like_record(header: &[u8]) -> bool {
    header.first().is_some_and(|t| (20..=23).contains(t))
        && header.get(1).is_none_or(|&v| v == 3)
        && header.get(2).is_none_or(|v| (1..=4).contains(v))
}

fn text_of(chunk: &[u8], pos: usize, parts: &[String]) -> String {
    let rest = &chunk[pos..];
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut text: String = String::from_utf8_lossy(line)
        .trim_end_matches('\r')
        .chars()
        .take(40)
        .collect();
    text = text.replace('"', "'");
    let lines = rest.iter().filter(|&&b| b == b'\n').count();
    let mut out = String::new();
    if !parts.is_empty() {
        out = format!("tls={} ", parts.join(","));
    }
    out + &format!("text=\"{text}\" lines={lines}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Read;

    use super::*;

    const DELAY: Duration = Duration::from_millis(30);
    /// Every blocking call in these tests gives up after this long.
    const LIMIT: Duration = Duration::from_secs(10);

    /// A proxy in front of a fresh listener; returns the proxy, and the listener the proxy
    /// connects to.
    fn setup(delay: Duration) -> (Proxy, TcpListener, Arc<Mutex<Vec<u8>>>) {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let buf = Arc::new(Mutex::new(Vec::new()));
        let log: Log = Arc::new(Mutex::new(Box::new(SharedBuf(Arc::clone(&buf)))));
        let proxy = Proxy::start(
            listener,
            Config {
                target: target.local_addr().unwrap(),
                delay,
                idle_timeout: LIMIT,
            },
            Some(log),
        )
        .unwrap();
        (proxy, target, buf)
    }

    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn pair(proxy: &Proxy, target: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect_timeout(&proxy.addr(), LIMIT).unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        target.set_nonblocking(false).unwrap();
        let (server, _) = target.accept().unwrap();
        server.set_read_timeout(Some(LIMIT)).unwrap();
        (client, server)
    }

    fn read_exact_len(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        s.read_exact(&mut out).unwrap();
        out
    }

    fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn both_directions_in_order_with_the_delay() {
        let (mut proxy, target, log) = setup(DELAY);
        let (mut client, mut server) = pair(&proxy, &target);
        // Many small chunks each way: they arrive whole and in order.
        let mut sent_up = Vec::new();
        let start = Instant::now();
        for i in 0..50u32 {
            let chunk = format!("up {i}\r\n");
            client.write_all(chunk.as_bytes()).unwrap();
            sent_up.extend_from_slice(chunk.as_bytes());
        }
        assert_eq!(read_exact_len(&mut server, sent_up.len()), sent_up);
        // Lower bound only: nothing can arrive before the delay (plus the connect delay).
        assert!(start.elapsed() >= DELAY, "{:?}", start.elapsed());

        let mut sent_down = Vec::new();
        let start = Instant::now();
        for i in 0..50u32 {
            let chunk = format!("down {i}\r\n");
            server.write_all(chunk.as_bytes()).unwrap();
            sent_down.extend_from_slice(chunk.as_bytes());
        }
        assert_eq!(read_exact_len(&mut client, sent_down.len()), sent_down);
        assert!(start.elapsed() >= DELAY, "{:?}", start.elapsed());

        // A round trip through the proxy takes at least two delays.
        let start = Instant::now();
        client.write_all(b"ping").unwrap();
        assert_eq!(read_exact_len(&mut server, 4), b"ping");
        server.write_all(b"pong").unwrap();
        assert_eq!(read_exact_len(&mut client, 4), b"pong");
        assert!(start.elapsed() >= 2 * DELAY, "{:?}", start.elapsed());

        drop(client);
        drop(server);
        proxy.stop();
        let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        assert!(text.contains("dir=c>s"), "{text}");
        assert!(text.contains("dir=s>c"), "{text}");
    }

    #[test]
    fn a_server_that_speaks_first_is_heard_a_round_trip_after_connect() {
        let (mut proxy, target, _) = setup(DELAY);
        let start = Instant::now();
        let (mut client, mut server) = pair(&proxy, &target);
        server.write_all(b"220 hi\r\n").unwrap();
        assert_eq!(read_exact_len(&mut client, 8), b"220 hi\r\n");
        assert!(start.elapsed() >= 2 * DELAY, "{:?}", start.elapsed());
        proxy.stop();
    }

    #[test]
    fn bulk_data_arrives_intact_both_ways_at_once() {
        let (mut proxy, target, _) = setup(Duration::from_millis(2));
        let (mut client, mut server) = pair(&proxy, &target);
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let up = {
            let mut c = client.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || {
                c.write_all(&data).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
            })
        };
        let down = {
            let mut s = server.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || {
                s.write_all(&data).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
            })
        };
        let got_up = read_to_end(&mut server);
        let got_down = read_to_end(&mut client);
        up.join().unwrap();
        down.join().unwrap();
        assert!(got_up == data, "client to server intact");
        assert!(got_down == data, "server to client intact");
        proxy.stop();
    }

    #[test]
    fn half_close_is_propagated_each_way() {
        let (mut proxy, target, log) = setup(DELAY);
        // The client half-closes: the server reads the end, and can still answer.
        let (mut client, mut server) = pair(&proxy, &target);
        client.write_all(b"QUIT\r\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut server), b"QUIT\r\n");
        server.write_all(b"221 bye\r\n").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut client), b"221 bye\r\n");

        // The server half-closes first: the client reads the end, and can still send.
        let (mut client, mut server) = pair(&proxy, &target);
        server.write_all(b"421 going away\r\n").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut client), b"421 going away\r\n");
        client.write_all(b"late\r\n").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut server), b"late\r\n");
        drop((client, server));
        proxy.stop();
        let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("end of stream").count(), 4, "{text}");
    }

    #[test]
    fn a_refused_target_closes_the_client() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let mut proxy = Proxy::start(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Config {
                target,
                delay: Duration::from_millis(1),
                idle_timeout: LIMIT,
            },
            None,
        )
        .unwrap();
        let mut client = TcpStream::connect_timeout(&proxy.addr(), LIMIT).unwrap();
        client.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = [0u8; 16];
        // Either an orderly end or a reset: never bytes, never a hang (the read is bounded).
        assert!(matches!(client.read(&mut buf), Ok(0) | Err(_)));
        proxy.stop();
    }

    #[test]
    fn describes_tls_records_and_text() {
        let mut t = RecordTracker::default();
        assert_eq!(
            t.describe(b"220 mx.test ESMTP\r\n"),
            "text=\"220 mx.test ESMTP\" lines=1"
        );
        let mut t = RecordTracker::default();
        // A handshake record of 4 octets and the start of an application data record of 10.
        let mut chunk = vec![22, 3, 3, 0, 4, 1, 2, 3, 4, 23, 3, 3, 0, 10, 0, 0];
        assert_eq!(t.describe(&chunk), "tls=hs:4,app:10(split)");
        chunk = vec![0; 8];
        chunk.extend_from_slice(&[20, 3]);
        assert_eq!(t.describe(&chunk), "tls=cont:8,header...");
        assert_eq!(t.describe(&[3, 0, 1, 1]), "tls=ccs:1");
    }
}
