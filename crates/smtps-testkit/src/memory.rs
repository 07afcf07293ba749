//! A rustls client exchanging octets with a [`Connection`] in memory.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use smtps_conn::Connection;
use smtps_tls::rustls::{ClientConfig, ClientConnection};

use crate::cert::{SERVER_NAME, client_connection};

/// The client end of an in-memory wire to a [`Connection`], for sans-IO tests: plaintext until
/// [`MemoryClient::start_tls`], then TLS through a real rustls client (verifying
/// [`SERVER_NAME`]). Octets move only inside [`MemoryClient::exchange`], exactly as a socket
/// would carry them.
///
/// The host side stays the test's: `exchange` calls it back after each feed so it can take the
/// connection's events and answer its decisions.
pub struct MemoryClient {
    tls: Option<ClientConnection>,
    config: Arc<ClientConfig>,
    /// Plaintext received from the server (decrypted once TLS runs).
    received: Vec<u8>,
    /// Octets on their way to the server.
    to_server: Vec<u8>,
}

impl MemoryClient {
    /// A client that speaks plaintext until [`MemoryClient::start_tls`]; `config` is kept for
    /// that (such as [`crate::client_config()`]).
    #[must_use]
    pub fn new(config: &Arc<ClientConfig>) -> Self {
        Self {
            tls: None,
            config: Arc::clone(config),
            received: Vec::new(),
            to_server: Vec::new(),
        }
    }

    /// Starts TLS: from the first octet for implicit TLS, or after the `220` to `STARTTLS`.
    /// The ClientHello goes out on the next [`MemoryClient::exchange`]; plaintext already
    /// queued for the server goes first.
    pub fn start_tls(&mut self) {
        self.tls = Some(client_connection(&self.config, SERVER_NAME));
    }

    /// Queues `text` for the server: encrypted once TLS runs, as it is before.
    ///
    /// # Panics
    /// If rustls refuses the plaintext.
    pub fn send(&mut self, text: &[u8]) {
        match &mut self.tls {
            Some(tls) => tls.writer().write_all(text).expect("client write"),
            None => self.to_server.extend_from_slice(text),
        }
    }

    /// Moves octets both ways until neither side has more. After each feed of octets into
    /// `conn`, and before taking its output, it calls `host(conn)`, which should drain
    /// [`Connection::poll_event`] and answer the decisions it wants answered now. Octets are
    /// fed at [`Instant::now`].
    ///
    /// # Panics
    /// If the connection fails a feed, the server sends TLS the client rejects, or the
    /// exchange does not settle within 1,000 rounds.
    pub fn exchange(&mut self, conn: &mut Connection, mut host: impl FnMut(&mut Connection)) {
        for _ in 0..1_000 {
            if let Some(tls) = &mut self.tls {
                while tls.wants_write() {
                    tls.write_tls(&mut self.to_server)
                        .expect("client write_tls");
                }
            }
            let mut moved = false;
            while !self.to_server.is_empty() {
                let taken = conn.feed(Instant::now(), &self.to_server).expect("feed");
                self.to_server.drain(..taken);
                host(conn);
                moved |= taken > 0;
                if taken == 0 {
                    break;
                }
            }
            host(conn);
            let out = conn.output().to_vec();
            conn.consume_output(out.len());
            if !out.is_empty() {
                moved = true;
                self.receive(&out);
            }
            let client_pending = self.tls.as_ref().is_some_and(|tls| tls.wants_write());
            if !moved && !client_pending {
                return;
            }
        }
        panic!("the exchange never settled");
    }

    /// Takes `wire` as if the server had sent it: decrypted once TLS runs.
    ///
    /// # Panics
    /// If the octets are not valid TLS for the client.
    pub fn receive(&mut self, mut wire: &[u8]) {
        match &mut self.tls {
            Some(tls) => {
                while !wire.is_empty() {
                    tls.read_tls(&mut wire).expect("client read_tls");
                    tls.process_new_packets().expect("client sees valid TLS");
                }
                let mut buf = Vec::new();
                match tls.reader().read_to_end(&mut buf) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("client read: {e}"),
                }
                self.received.extend_from_slice(&buf);
            }
            None => self.received.extend_from_slice(wire),
        }
    }

    /// The plaintext received since the last call.
    ///
    /// # Panics
    /// If it is not UTF-8.
    pub fn take_received(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.received)).expect("replies are UTF-8")
    }

    /// The rustls client, once TLS started.
    #[must_use]
    pub fn tls(&self) -> Option<&ClientConnection> {
        self.tls.as_ref()
    }

    /// The rustls client, once TLS started: to read its close_notify, or make records by hand.
    pub fn tls_mut(&mut self) -> Option<&mut ClientConnection> {
        self.tls.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use smtps_conn::Mode;
    use smtps_proto::{SessionConfig, Verdict};

    use super::*;
    use crate::{acceptor, client_config};

    fn accept_all(conn: &mut Connection) {
        while let Some(event) = conn.poll_event() {
            if let Some(decision) = event.decision() {
                conn.decide(decision, Verdict::Accept).expect("decide");
            }
        }
    }

    fn connection(mode: Mode) -> Connection {
        let config = Arc::new(SessionConfig::new("mx.test"));
        Connection::new(mode, config, Some(acceptor()), Instant::now()).expect("connection")
    }

    #[test]
    fn implicit_tls_round_trip_in_memory_greets_and_answers_over_tls13() {
        let mut conn = connection(Mode::ImplicitTls);
        let mut client = MemoryClient::new(&client_config());
        client.start_tls();
        client.exchange(&mut conn, accept_all);
        assert!(client.take_received().starts_with("220 mx.test"));
        let version = conn.tls_info().map(smtps_tls::TlsInfo::version_name);
        assert_eq!(version, Some("TLSv1.3"));
        client.send(b"EHLO c.test\r\nQUIT\r\n");
        client.exchange(&mut conn, accept_all);
        let replies = client.take_received();
        assert!(replies.starts_with("250-mx.test"), "{replies}");
        assert!(replies.ends_with("221 2.0.0 Bye\r\n"), "{replies}");
        let tls = client.tls_mut().expect("TLS runs");
        let mut rest = Vec::new();
        assert!(
            tls.reader().read_to_end(&mut rest).is_ok(),
            "no close_notify"
        );
    }

    #[test]
    fn starttls_in_memory_upgrades_at_the_220() {
        let mut conn = connection(Mode::StartTls);
        let mut client = MemoryClient::new(&client_config());
        client.send(b"EHLO c.test\r\nSTARTTLS\r\n");
        client.exchange(&mut conn, accept_all);
        assert!(
            client
                .take_received()
                .ends_with("220 2.0.0 Ready to start TLS\r\n")
        );
        assert!(client.tls().is_none());
        client.start_tls();
        client.send(b"EHLO c.test\r\n");
        client.exchange(&mut conn, accept_all);
        assert!(conn.tls_info().is_some(), "handshake not complete");
        let ehlo = client.take_received();
        assert!(
            ehlo.starts_with("250-mx.test") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
    }
}
