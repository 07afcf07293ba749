//! Host-supplied session-ticket keys (RFC 5077 §4 tickets, RFC 8446 §4.6.1 TLS 1.3 tickets).
//!
//! rustls' own [`Ticketer`](rustls::crypto::aws_lc_rs::Ticketer) makes random keys inside the
//! process, so a ticket issued by one instance cannot be opened by another. [`TicketKeys`] lets
//! the host supply the keys (from a key file it distributes, like HAProxy's `tls-ticket-keys`,
//! stunnel's `ticketKeySecret` or nginx's `ssl_session_ticket_key`), and rotate them, so that
//! several instances behind one balancer resume each other's sessions.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use rustls::server::ProducesTickets;

use crate::error::{ConfigError, Error};

/// One ticket key: a 16-byte name (sent in clear in each ticket, to pick the key) and a
/// 32-byte AES-256-GCM key.
///
/// The wire form, [`TicketKey::from_bytes`] / [`TicketKey::to_bytes`], is 48 bytes:
/// name, then key. Treat it as a secret: anyone holding it can decrypt the session secrets of
/// every session resumed with it (RFC 5077 §5.6, RFC 8446 §2.2 on forward secrecy).
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    name: [u8; 16],
    key: [u8; 32],
}

impl TicketKey {
    /// The length of a key in its wire form.
    pub const LEN: usize = 48;

    /// A key from its 48-byte wire form (16-byte name, 32-byte AES-256 key).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (name, key) = match bytes.split_at_checked(16) {
            Some((name, key)) if bytes.len() == Self::LEN => (name, key),
            _ => {
                return Err(ConfigError::InvalidTicketKey {
                    len: bytes.len(),
                    expected: Self::LEN,
                }
                .into());
            }
        };
        let mut out = Self {
            name: [0; 16],
            key: [0; 32],
        };
        out.name.copy_from_slice(name);
        out.key.copy_from_slice(key);
        Ok(out)
    }

    /// A fresh random key from the provider's CSPRNG (for a host that distributes it).
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; Self::LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ConfigError::Crypto("random generator"))?;
        Self::from_bytes(&bytes)
    }

    /// The 48-byte wire form.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.name);
        out[16..].copy_from_slice(&self.key);
        out
    }

    /// The key's public name (the first 16 bytes of every ticket it seals).
    pub fn name(&self) -> [u8; 16] {
        self.name
    }
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKey")
            .field("name", &Hex(&self.name))
            .finish_non_exhaustive()
    }
}

/// A rotatable set of host-supplied ticket keys, implementing rustls' [`ProducesTickets`].
///
/// The *current* key seals new tickets; it and up to [`TicketKeys::MAX_PREVIOUS`] previous keys
/// open them. Share one `Arc<TicketKeys>` between acceptors in a process, and the same key bytes
/// between processes. Rotation is the host's job and takes effect at once for every acceptor
/// holding the `Arc` (no reload needed).
///
/// Ticket format: `name (16) ‖ nonce (12) ‖ AES-256-GCM(ticket state) ‖ tag (16)`, with the
/// name as additional data. Nonces are random, so rotate at least daily.
pub struct TicketKeys {
    ring: RwLock<Ring>,
    lifetime: u32,
}

impl TicketKeys {
    /// How many previous keys still open tickets after rotations.
    pub const MAX_PREVIOUS: usize = 3;

    /// The default ticket lifetime announced to clients, in seconds (6 hours).
    pub const DEFAULT_LIFETIME: u32 = 6 * 60 * 60;

    /// A key set sealing with `current`; tickets live [`Self::DEFAULT_LIFETIME`].
    pub fn new(current: &TicketKey) -> Result<Arc<Self>, Error> {
        Self::with_lifetime(current, Self::DEFAULT_LIFETIME)
    }

    /// A key set sealing with `current`; tickets are announced to live `lifetime_secs`
    /// (RFC 8446 §4.6.1 caps this at 7 days; larger values are clamped).
    pub fn with_lifetime(current: &TicketKey, lifetime_secs: u32) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self {
            ring: RwLock::new(Ring {
                current: Sealer::new(current)?,
                previous: Vec::new(),
            }),
            lifetime: lifetime_secs.min(7 * 24 * 60 * 60),
        }))
    }

    /// Makes `next` the sealing key; the old current key keeps opening tickets until it falls
    /// out of the last [`Self::MAX_PREVIOUS`] keys.
    pub fn rotate(&self, next: &TicketKey) -> Result<(), Error> {
        let next = Sealer::new(next)?;
        let mut ring = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        let old = std::mem::replace(&mut ring.current, next);
        ring.previous.insert(0, old);
        ring.previous.truncate(Self::MAX_PREVIOUS);
        Ok(())
    }

    /// Replaces the whole set: `current` seals, `current` and `previous` open (at most
    /// [`Self::MAX_PREVIOUS`] of them are kept). For hosts that reload a key file.
    pub fn set(&self, current: &TicketKey, previous: &[TicketKey]) -> Result<(), Error> {
        let current = Sealer::new(current)?;
        let previous = previous
            .iter()
            .take(Self::MAX_PREVIOUS)
            .map(Sealer::new)
            .collect::<Result<Vec<_>, _>>()?;
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Ring { current, previous };
        Ok(())
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        ring.current.seal(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let name = cipher.get(..16)?;
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        std::iter::once(&ring.current)
            .chain(ring.previous.iter())
            .find(|s| s.name == name)?
            .open(cipher)
    }
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TicketKeys")
            .field("current", &Hex(&ring.current.name))
            .field("previous", &ring.previous.len())
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

struct Ring {
    current: Sealer,
    previous: Vec<Sealer>,
}

struct Sealer {
    name: [u8; 16],
    key: RandomizedNonceKey,
}

const TAG_LEN: usize = 16;

impl Sealer {
    fn new(key: &TicketKey) -> Result<Self, Error> {
        let aead = RandomizedNonceKey::new(&AES_256_GCM, &key.key)
            .map_err(|_| ConfigError::Crypto("AES-256-GCM key setup"))?;
        Ok(Self {
            name: key.name,
            key: aead,
        })
    }

    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut body = Vec::with_capacity(plain.len() + TAG_LEN);
        body.extend_from_slice(plain);
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(&self.name), &mut body)
            .ok()?;
        let mut out = Vec::with_capacity(16 + NONCE_LEN + body.len());
        out.extend_from_slice(&self.name);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let rest = ticket.get(16..)?;
        let (nonce, body) = rest.split_at_checked(NONCE_LEN)?;
        if body.len() < TAG_LEN {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(&self.name), &mut body)
            .ok()?
            .len();
        body.truncate(plain_len);
        Some(body)
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> TicketKey {
        TicketKey::from_bytes(&[fill; 48]).unwrap()
    }

    #[test]
    fn rfc5077_ticket_round_trips_and_tampering_is_rejected() {
        let keys = TicketKeys::new(&key(1)).unwrap();
        let t = keys.encrypt(b"session state").unwrap();
        assert_eq!(&t[..16], &[1; 16]);
        assert_eq!(keys.decrypt(&t).as_deref(), Some(&b"session state"[..]));
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x40;
            assert_eq!(keys.decrypt(&bad), None, "flip at {i}");
        }
        assert_eq!(keys.decrypt(&t[..t.len() - 1]), None);
        assert_eq!(keys.decrypt(&[]), None);
    }

    #[test]
    fn rotation_keeps_previous_keys_for_decryption_only() {
        let keys = TicketKeys::new(&key(1)).unwrap();
        let old = keys.encrypt(b"x").unwrap();
        keys.rotate(&key(2)).unwrap();
        let new = keys.encrypt(b"y").unwrap();
        assert_eq!(&new[..16], &[2; 16]);
        assert_eq!(keys.decrypt(&old).as_deref(), Some(&b"x"[..]));
        for k in 3..=5 {
            keys.rotate(&key(k)).unwrap();
        }
        // key 1 is now 4 rotations old: gone.
        assert_eq!(keys.decrypt(&old), None);
        assert_eq!(keys.decrypt(&new).as_deref(), Some(&b"y"[..]));
    }

    #[test]
    fn shared_key_bytes_open_tickets_across_instances() {
        let a = TicketKeys::new(&key(7)).unwrap();
        let b = TicketKeys::new(&TicketKey::from_bytes(&key(7).to_bytes()).unwrap()).unwrap();
        let t = a.encrypt(b"state").unwrap();
        assert_eq!(b.decrypt(&t).as_deref(), Some(&b"state"[..]));
    }

    #[test]
    fn wrong_length_key_is_refused_with_message() {
        let err = TicketKey::from_bytes(&[0; 47]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TLS configuration: session-ticket key is 47 bytes long, expected 48"
        );
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let s = format!("{:?}", key(0xab));
        assert!(!s.contains(&"ab".repeat(20)), "{s}");
    }
}
