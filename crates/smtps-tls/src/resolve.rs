//! Certificate selection by SNI (RFC 6066 §3), with a default for clients that send none.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A [`ResolvesServerCert`] that picks a certificate by the client's SNI name.
///
/// Lookup order for a name sent by the client (RFC 6066 §3, compared case-insensitively as
/// RFC 4343 requires): an exact match, then a one-label wildcard (`*.example.org` matches
/// `mx.example.org`, not `a.b.example.org`, as RFC 6125 §6.4.3 allows), then the default.
/// A client that sends no SNI — common among SMTP clients — gets the default.
///
/// Immutable once built: [`TlsAcceptor::reload`](crate::TlsAcceptor::reload) builds a new one
/// and swaps the whole configuration, so a handshake in progress keeps the certificate it chose.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    /// A resolver that answers every client with `default`.
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        Self {
            default,
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }

    /// Serves `key` to clients that ask for `name` (a DNS name, or `*.` + a DNS name).
    ///
    /// The name is not validated here; [`TlsSettings`](crate::TlsSettings) validates the
    /// names it is given. A later `add` for the same name replaces the earlier one.
    pub fn add(&mut self, name: &str, key: Arc<CertifiedKey>) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.to_owned(), key),
            None => self.exact.insert(name, key),
        };
    }

    /// The certificate for `server_name` (`None` when the client sent no SNI).
    pub fn select(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return key;
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return key;
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.select(client_hello.server_name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::crypto::aws_lc_rs;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    fn key(cn: &str) -> Arc<CertifiedKey> {
        let ck = rcgen::generate_simple_self_signed(vec![cn.to_owned()]).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let provider = aws_lc_rs::default_provider();
        Arc::new(
            CertifiedKey::from_der(
                vec![CertificateDer::from(ck.cert.der().to_vec())],
                der,
                &provider,
            )
            .unwrap(),
        )
    }

    #[test]
    fn rfc6066_sni_exact_wildcard_and_default() {
        let (d, a, w) = (key("default"), key("a.example"), key("w.example"));
        let mut r = SniResolver::new(Arc::clone(&d));
        r.add("A.Example", Arc::clone(&a));
        r.add("*.w.example", Arc::clone(&w));
        assert!(Arc::ptr_eq(r.select(None), &d));
        assert!(Arc::ptr_eq(r.select(Some("a.example")), &a));
        assert!(Arc::ptr_eq(r.select(Some("A.EXAMPLE.")), &a));
        assert!(Arc::ptr_eq(r.select(Some("mx.w.example")), &w));
        // RFC 6125 §6.4.3: a wildcard covers one label only.
        assert!(Arc::ptr_eq(r.select(Some("a.b.w.example")), &d));
        assert!(Arc::ptr_eq(r.select(Some("unknown.example")), &d));
    }
}
