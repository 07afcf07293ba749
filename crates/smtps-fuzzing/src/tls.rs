//! The `tls_transport` target: [`Transport`] fed arbitrary bytes in implicit-TLS and STARTTLS
//! modes, and a real rustls client talking through a STARTTLS upgrade whose record stream the
//! fuzzer may corrupt.

use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use smtps_tls::rustls::pki_types::ServerName;
use smtps_tls::rustls::{ClientConfig, ClientConnection};
use smtps_tls::{TlsAcceptor, Transport};

use crate::wire::show;

/// What the plaintext transport sends before upgrading (and must send before any record).
pub const READY_TO_START_TLS: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";

/// The `tls_transport` input. Encoding (what [`TlsInput::encode`] writes and `Arbitrary`
/// reads): one octet each for the fields in order, then the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInput {
    /// `mode % 3`: 0 implicit TLS fed `data`; 1 plaintext fed `data[..boundary]`, then
    /// `start_tls`, then `data[boundary..]` as TLS bytes; 2 like 1, but after the upgrade a real
    /// rustls client handshakes and sends `data[boundary..]` as application data.
    pub mode: u8,
    /// Low octet of the STARTTLS boundary (taken modulo `data.len() + 1`).
    pub boundary_lo: u8,
    /// High octet of the boundary.
    pub boundary_hi: u8,
    /// Size of the pieces the bytes are fed in (0: all at once).
    pub chunk: u8,
    /// How many pre-boundary plaintext octets the host reads before upgrading (×4, capped).
    pub read: u8,
    /// Mode 2: if non-zero, one octet of the client's record stream is flipped at an offset
    /// derived from it.
    pub flip: u8,
    /// The bytes.
    pub data: Vec<u8>,
}

impl<'a> Arbitrary<'a> for TlsInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let header: TlsHeader = u.arbitrary()?;
        Ok(Self {
            mode: header.mode,
            boundary_lo: header.boundary_lo,
            boundary_hi: header.boundary_hi,
            chunk: header.chunk,
            read: header.read,
            flip: header.flip,
            data: u.bytes(u.len())?.to_vec(),
        })
    }
}

/// The fixed part of a [`TlsInput`]: six octets (a derived `Arbitrary` reads one per `u8`).
#[derive(Arbitrary)]
struct TlsHeader {
    mode: u8,
    boundary_lo: u8,
    boundary_hi: u8,
    chunk: u8,
    read: u8,
    flip: u8,
}

impl TlsInput {
    /// Serialises the input so that `Arbitrary` reads it back unchanged (for seed files).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![
            self.mode,
            self.boundary_lo,
            self.boundary_hi,
            self.chunk,
            self.read,
            self.flip,
        ];
        out.extend_from_slice(&self.data);
        out
    }

    /// The STARTTLS boundary within `data`.
    fn boundary(&self) -> usize {
        usize::from(u16::from_le_bytes([self.boundary_lo, self.boundary_hi]))
            % (self.data.len() + 1)
    }

    fn chunk(&self) -> usize {
        if self.chunk == 0 {
            usize::MAX
        } else {
            usize::from(self.chunk)
        }
    }
}

/// Drives a [`Transport`] with a [`TlsInput`] and checks:
///
/// - no call panics, and `handle_received` never claims more than it was given;
/// - once `handle_received` fails it keeps failing;
/// - arbitrary bytes can never make plaintext come out of a TLS transport (no handshake can
///   complete without a client that follows the protocol);
/// - at a STARTTLS boundary, `discarded` is exactly the received plaintext not yet read, the
///   `220` is sent first and once, and no pre-boundary octet ever comes out of
///   `read_plaintext` after it;
/// - with a real client, the server reads exactly what the client sent, or — when the record
///   stream was corrupted — a prefix of it (the AEAD lets nothing forged through), and the
///   client reads exactly what the server wrote.
///
/// # Panics
/// When a check fails.
pub fn tls_transport(data: &[u8]) {
    let Ok(input) = TlsInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    match input.mode % 3 {
        0 => implicit(&input),
        1 => starttls_raw(&input),
        _ => starttls_client(&input),
    }
}

/// A server certificate for `localhost` and a client that trusts it.
pub(crate) struct Fixture {
    pub(crate) acceptor: Arc<TlsAcceptor>,
    pub(crate) client: Arc<ClientConfig>,
}

/// The acceptor and client configuration (the test kit's `localhost` certificate), made once
/// per process.
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        acceptor: smtps_testkit::acceptor(),
        client: smtps_testkit::client_config(),
    })
}

/// The first flight of a real rustls client to `localhost` (a ClientHello), for seeds. It
/// differs on every call (random values, key shares).
#[must_use]
pub fn client_hello() -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("valid name");
    let mut client =
        ClientConnection::new(Arc::clone(&fixture().client), name).expect("client connection");
    let mut out = Vec::new();
    while client.wants_write() {
        if client.write_tls(&mut out).unwrap_or(0) == 0 {
            break;
        }
    }
    out
}

/// Implicit TLS (port 465): arbitrary bytes never yield plaintext.
fn implicit(input: &TlsInput) {
    let mut transport =
        Transport::new_implicit_tls(&fixture().acceptor).expect("implicit TLS transport");
    feed_tls_garbage(&mut transport, &input.data, input.chunk());
    transport.handle_eof();
    let mut buf = [0u8; 256];
    assert_eq!(transport.read_plaintext(&mut buf), 0, "plaintext after EOF");
    transport.close();
    let mut out = Vec::new();
    transport.poll_transmit(&mut out);
}

/// Feeds bytes no TLS client produced: whatever the transport does, it never hands out
/// plaintext, and a failure is final.
fn feed_tls_garbage(transport: &mut Transport, data: &[u8], chunk: usize) {
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    let mut failed = false;
    for piece in data.chunks(chunk.min(data.len().max(1))) {
        let mut offset = 0;
        // Bounded: each round takes input or fails.
        for _ in 0..=piece.len() {
            if offset == piece.len() {
                break;
            }
            match transport.handle_received(&piece[offset..]) {
                Ok(taken) => {
                    assert!(!failed, "handle_received succeeded after a failure");
                    assert!(taken <= piece.len() - offset, "took more than given");
                    offset += taken;
                    if taken == 0 {
                        break;
                    }
                }
                Err(_) => {
                    failed = true;
                    assert!(
                        transport.failure().is_some(),
                        "failure() empty after an error"
                    );
                    break;
                }
            }
            assert_eq!(
                transport.read_plaintext(&mut buf),
                0,
                "plaintext came out of a TLS transport fed arbitrary bytes"
            );
            let _ = transport.write_plaintext(b"250 ok\r\n");
            transport.poll_transmit(&mut out);
        }
        if failed {
            assert!(
                transport.handle_received(b"\x16\x03\x01").is_err(),
                "handle_received succeeded after a failure"
            );
            assert!(!transport.wants_read(), "wants_read after a failure");
            break;
        }
    }
}

/// Plaintext until the boundary, then `start_tls`; returns the transport and the octets sent
/// before any TLS record (checked to be exactly the `220`).
fn upgrade(input: &TlsInput) -> Transport {
    let boundary = input.boundary();
    let (plain, _) = input.data.split_at(boundary);
    let mut transport = Transport::new_plaintext();
    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    for piece in plain.chunks(input.chunk().min(plain.len().max(1))) {
        let taken = transport
            .handle_received(piece)
            .expect("plaintext never fails");
        assert_eq!(
            taken,
            piece.len(),
            "plaintext refused input under the limit"
        );
    }
    let to_read = (usize::from(input.read) * 4).min(boundary);
    while received.len() < to_read {
        let want = (to_read - received.len()).min(buf.len());
        let n = transport.read_plaintext(&mut buf[..want]);
        assert!(n > 0, "plaintext transport withheld received octets");
        received.extend_from_slice(&buf[..n]);
    }
    assert_eq!(received, plain[..to_read], "plaintext read back differs");
    assert_eq!(
        transport
            .write_plaintext(READY_TO_START_TLS)
            .expect("write 220"),
        READY_TO_START_TLS.len()
    );
    let upgrade = transport
        .start_tls(&fixture().acceptor)
        .expect("start_tls on a plaintext transport");
    assert_eq!(
        upgrade.discarded,
        boundary - to_read,
        "discarded is not the unread pre-boundary plaintext"
    );
    assert_eq!(upgrade.plaintext_pending, READY_TO_START_TLS.len());
    assert!(transport.is_tls());
    assert!(
        transport.start_tls(&fixture().acceptor).is_err(),
        "a second start_tls was accepted"
    );
    assert_eq!(
        transport.read_plaintext(&mut buf),
        0,
        "pre-boundary plaintext came out after start_tls"
    );
    let mut out = Vec::new();
    transport.poll_transmit(&mut out);
    assert!(
        out.starts_with(READY_TO_START_TLS),
        "the 220 does not go out first: {:?}",
        show(&out)
    );
    transport
}

/// STARTTLS, then arbitrary bytes as TLS: never plaintext.
fn starttls_raw(input: &TlsInput) {
    let mut transport = upgrade(input);
    let tls = &input.data[input.boundary()..];
    feed_tls_garbage(&mut transport, tls, input.chunk());
    let mut out = Vec::new();
    transport.poll_transmit(&mut out);
    assert!(
        !out.starts_with(READY_TO_START_TLS),
        "the 220 was sent twice"
    );
}

/// STARTTLS, then a real client handshake and application data, possibly corrupted.
fn starttls_client(input: &TlsInput) {
    let mut server = upgrade(input);
    let app = &input.data[input.boundary()..];
    let name = ServerName::try_from("localhost").expect("valid name");
    let mut client =
        ClientConnection::new(Arc::clone(&fixture().client), name).expect("client connection");
    {
        let mut writer = client.writer();
        std::io::Write::write_all(&mut writer, app).expect("client buffers app data");
    }
    let mut received = Vec::new();
    let mut sent_to_server = 0usize;
    let flip_at = (input.flip != 0).then(|| usize::from(input.flip) * 13);
    let mut broken = false;
    let mut buf = vec![0u8; 4096];
    let reply = b"250 2.0.0 OK after TLS\r\n";
    let mut reply_queued = false;
    let mut client_got = Vec::new();
    for _ in 0..64 {
        let mut moved = false;
        // Client → server.
        let mut records = Vec::new();
        while client.wants_write() {
            if client.write_tls(&mut records).unwrap_or(0) == 0 {
                break;
            }
        }
        if let Some(at) = flip_at
            && at >= sent_to_server
            && at < sent_to_server + records.len()
        {
            records[at - sent_to_server] ^= 0x20;
        }
        sent_to_server += records.len();
        let mut offset = 0;
        for _ in 0..=records.len() {
            if offset == records.len() || broken {
                break;
            }
            match server.handle_received(&records[offset..]) {
                Ok(taken) => offset += taken,
                Err(_) => broken = true,
            }
            loop {
                // Both read paths: copying, and borrowing + consuming (odd `read`).
                let n = if input.read & 1 == 1 {
                    let chunk = server.received_plaintext();
                    let n = chunk.len().min(usize::from(input.chunk).max(1));
                    received.extend_from_slice(&chunk[..n]);
                    server.consume_plaintext(n);
                    n
                } else {
                    let n = server.read_plaintext(&mut buf);
                    received.extend_from_slice(&buf[..n]);
                    n
                };
                if n == 0 {
                    break;
                }
            }
        }
        moved |= !records.is_empty();
        assert!(
            app.starts_with(&received),
            "server read octets the client never sent (flip {:?}): {:?}",
            flip_at,
            show(&received)
        );
        // Server → client.
        if !server.is_handshaking() && !reply_queued && !broken {
            reply_queued = server.write_plaintext(reply).expect("server write") == reply.len();
        }
        let mut back = Vec::new();
        server.poll_transmit(&mut back);
        moved |= !back.is_empty();
        let mut rest = &back[..];
        while !rest.is_empty() {
            match client.read_tls(&mut rest) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if client.process_new_packets().is_err() {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if let Ok(n) = std::io::Read::read(&mut client.reader(), &mut buf) {
            client_got.extend_from_slice(&buf[..n]);
        }
        if !moved || broken {
            break;
        }
    }
    if flip_at.is_none() {
        assert!(!broken, "uncorrupted STARTTLS session failed");
        assert_eq!(
            received, app,
            "server did not read exactly what the client sent"
        );
        assert!(
            reply.starts_with(&client_got),
            "client read something the server never wrote"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_is_read_back_by_arbitrary() {
        let input = TlsInput {
            mode: 2,
            boundary_lo: 7,
            boundary_hi: 0,
            chunk: 3,
            read: 1,
            flip: 0,
            data: b"EHLO x\r\nSTARTTLS\r\n".to_vec(),
        };
        let bytes = input.encode();
        let back = TlsInput::arbitrary_take_rest(Unstructured::new(&bytes));
        assert_eq!(back.ok(), Some(input));
    }
}
