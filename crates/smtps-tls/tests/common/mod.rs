//! Shared test fixtures: an rcgen PKI (ECDSA P-256), real rustls clients, and an in-memory
//! pump between a client and a server `Transport` (quinn's `Pair`/`drive` pattern). What is
//! not specific to TLS tests (the client connection, temporary directories) comes from
//! `smtps-testkit`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, missing_docs)]

use std::io::Read;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::ClientConnection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use smtps_tls::{CertificateSource, Transport};

/// A rustls client for `name` with `config`: the kit's, under the name these tests use.
#[allow(unused_imports)] // Not every test binary makes clients.
pub use smtps_testkit::client_connection as client;

/// A test CA and what it issued.
pub struct Pki {
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

/// An issued certificate with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

impl Leaf {
    pub fn source(&self) -> CertificateSource {
        CertificateSource::pem(self.cert_pem.clone(), self.key_pem.clone())
    }
}

impl Pki {
    pub fn new() -> Self {
        Self::named("smtps test CA")
    }

    pub fn named(cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca }
    }

    /// An ECDSA P-256 leaf for `names`, CN = first name, valid until `not_after` (y, m, d).
    pub fn issue(&self, names: &[&str], not_after: Option<(i32, u8, u8)>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        self.issue_with_key(names, not_after, &key)
    }

    pub fn issue_with_key(
        &self,
        names: &[&str],
        not_after: Option<(i32, u8, u8)>,
        key: &KeyPair,
    ) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        dn.push(DnType::OrganizationName, "Example Mail");
        params.distinguished_name = dn;
        if let Some((y, m, d)) = not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let cert = params.signed_by(key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        Arc::new(roots)
    }

    /// A client config trusting this CA, for the given versions, default suites.
    pub fn client_config(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_protocol_versions(versions)
                .with_root_certificates(self.roots())
                .with_no_client_auth(),
        )
    }

    pub fn client_config_with_cert(&self, leaf: &Leaf) -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder()
                .with_root_certificates(self.roots())
                .with_client_auth_cert(vec![leaf.der.clone()], leaf.key_der.clone_key())
                .unwrap(),
        )
    }
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];

pub fn tls13() -> &'static [&'static SupportedProtocolVersion] {
    &TLS13_ONLY
}

pub fn tls12() -> &'static [&'static SupportedProtocolVersion] {
    &TLS12_ONLY
}

/// What went wrong in a pump.
#[derive(Debug)]
pub enum PumpError {
    Server(smtps_tls::Error),
    Client(rustls::Error),
}

/// A client and a server transport connected in memory.
pub struct Pair {
    pub client: ClientConnection,
    pub server: Transport,
    /// Plaintext the server read, in order.
    pub server_received: Vec<u8>,
    /// Plaintext the client read, in order.
    pub client_received: Vec<u8>,
    /// Every byte the server sent.
    pub server_sent: Vec<u8>,
}

impl Pair {
    pub fn new(client: ClientConnection, server: Transport) -> Self {
        Self {
            client,
            server,
            server_received: Vec::new(),
            client_received: Vec::new(),
            server_sent: Vec::new(),
        }
    }

    /// Moves bytes both ways until nothing moves. On a server failure, the alert is still
    /// delivered to the client before returning the error.
    pub fn drive(&mut self) -> Result<(), PumpError> {
        for _ in 0..1000 {
            let mut progress = false;
            let mut wire = Vec::new();
            while self.client.wants_write() {
                if self.client.write_tls(&mut wire).unwrap() == 0 {
                    break;
                }
            }
            if !wire.is_empty() {
                progress = true;
                if let Err(e) = self.feed_server(&wire) {
                    self.deliver_to_client().ok();
                    return Err(PumpError::Server(e));
                }
            }
            progress |= self.deliver_to_client()?;
            if !progress {
                return Ok(());
            }
        }
        panic!("pump did not settle");
    }

    /// Feeds raw bytes to the server, draining plaintext as it goes (the caller's loop).
    pub fn feed_server(&mut self, mut wire: &[u8]) -> Result<(), smtps_tls::Error> {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.server.handle_received(wire)?;
            wire = &wire[n..];
            let mut drained = 0;
            loop {
                let m = self.server.read_plaintext(&mut buf);
                if m == 0 {
                    break;
                }
                drained += m;
                self.server_received.extend_from_slice(&buf[..m]);
            }
            if wire.is_empty() {
                return Ok(());
            }
            assert!(n > 0 || drained > 0, "transport made no progress");
        }
    }

    /// Sends the server's pending output to the client; true if anything moved.
    pub fn deliver_to_client(&mut self) -> Result<bool, PumpError> {
        let mut out = Vec::new();
        self.server.poll_transmit(&mut out);
        if out.is_empty() {
            return Ok(false);
        }
        self.server_sent.extend_from_slice(&out);
        let mut rd = &out[..];
        while !rd.is_empty() {
            let n = self.client.read_tls(&mut rd).unwrap();
            self.client
                .process_new_packets()
                .map_err(PumpError::Client)?;
            let mut buf = Vec::new();
            let _ = self.client.reader().read_to_end(&mut buf);
            self.client_received.extend_from_slice(&buf);
            if n == 0 {
                break;
            }
        }
        Ok(true)
    }

    /// The end-entity certificate the client was shown.
    pub fn server_cert_seen(&self) -> CertificateDer<'static> {
        self.client.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }
}
