//! Address blocks in CIDR notation (RFC 4632 §3.1, RFC 4291 §2.3): the sources a listener
//! trusts to send PROXY headers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A block of IPv4 or IPv6 addresses: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`
/// or `/128` implied when the prefix length is left out).
///
/// An IPv4 block also contains the IPv4-mapped IPv6 form of its addresses
/// (`::ffff:10.1.2.3`), which is how a dual-stack socket reports an IPv4 peer.
///
/// ```
/// use smtps_proxy::Network;
///
/// let balancers: Network = "10.0.0.0/8".parse().unwrap();
/// assert!(balancers.contains("10.1.2.3".parse().unwrap()));
/// assert!(balancers.contains("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!balancers.contains("192.0.2.1".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    /// The first address of the block (host bits cleared).
    base: IpAddr,
    prefix: u8,
}

/// Why a string is not a [`Network`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    Address(String),
    /// The prefix length is not a number from 0 to 32 (IPv4) or 128 (IPv6).
    PrefixLength(String),
    /// Bits are set past the prefix length (`10.0.0.1/8`): probably a typo for the address
    /// or for the length, so it is refused rather than guessed.
    HostBitsSet(String),
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(s) => write!(f, "{s:?} is not an IPv4 or IPv6 address block"),
            Self::PrefixLength(s) => write!(
                f,
                "{s:?} has a bad prefix length: 0 to 32 for IPv4, 0 to 128 for IPv6"
            ),
            Self::HostBitsSet(s) => write!(
                f,
                "{s:?} has bits set past its prefix length; write the block's first address"
            ),
        }
    }
}

impl std::error::Error for NetworkError {}

impl Network {
    /// The block of `prefix` leading bits of `addr`.
    ///
    /// # Errors
    /// [`NetworkError::PrefixLength`] past the address's width, [`NetworkError::HostBitsSet`]
    /// when `addr` has bits set after the prefix.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, NetworkError> {
        let width = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > width {
            return Err(NetworkError::PrefixLength(format!("{addr}/{prefix}")));
        }
        let network = Self { base: addr, prefix };
        if network.masked(addr) != addr {
            return Err(NetworkError::HostBitsSet(format!("{addr}/{prefix}")));
        }
        Ok(network)
    }

    /// The block's first address.
    #[must_use]
    pub fn address(&self) -> IpAddr {
        self.base
    }

    /// The prefix length.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` lies in the block. IPv4-mapped IPv6 addresses count as IPv4.
    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        match (self.base, addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                self.masked(addr) == self.base
            }
            _ => false,
        }
    }

    /// `addr` with the bits past the prefix cleared (same family as `addr`).
    fn masked(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| NetworkError::Address(s.to_owned()))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= width)
                .ok_or_else(|| NetworkError::PrefixLength(s.to_owned()))?,
            Some(_) => return Err(NetworkError::PrefixLength(s.to_owned())),
        };
        Self::new(addr, prefix).map_err(|error| match error {
            NetworkError::HostBitsSet(_) => NetworkError::HostBitsSet(s.to_owned()),
            other => other,
        })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn net(s: &str) -> Network {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_block_contains_its_addresses_and_their_mapped_form() {
        let block = net("10.0.0.0/8");
        assert!(block.contains("10.0.0.0".parse().unwrap()));
        assert!(block.contains("10.255.255.255".parse().unwrap()));
        assert!(block.contains("::ffff:10.9.8.7".parse().unwrap()));
        assert!(!block.contains("11.0.0.0".parse().unwrap()));
        assert!(
            !block.contains("::a00:1".parse().unwrap()),
            "IPv4-compatible is not mapped"
        );
    }

    #[test]
    fn ipv6_block_contains_its_addresses_only() {
        let block = net("2001:db8::/32");
        assert!(block.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!block.contains("2001:db9::1".parse().unwrap()));
        assert!(!block.contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bare_address_is_a_single_host() {
        assert_eq!(net("127.0.0.1"), net("127.0.0.1/32"));
        assert_eq!(net("::1"), net("::1/128"));
        assert!(net("127.0.0.1").contains("127.0.0.1".parse().unwrap()));
        assert!(!net("127.0.0.1").contains("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn zero_prefix_is_everything_of_the_family() {
        assert!(net("0.0.0.0/0").contains("203.0.113.9".parse().unwrap()));
        assert!(net("::/0").contains("2001:db8::9".parse().unwrap()));
        assert!(!net("::/0").contains("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn malformed_blocks_are_refused_with_the_reason() {
        for (input, expected) in [
            ("", NetworkError::Address(String::new())),
            ("10.0.0/8", NetworkError::Address("10.0.0/8".into())),
            (
                "10.0.0.0/33",
                NetworkError::PrefixLength("10.0.0.0/33".into()),
            ),
            ("::/129", NetworkError::PrefixLength("::/129".into())),
            ("10.0.0.0/", NetworkError::PrefixLength("10.0.0.0/".into())),
            (
                "10.0.0.0/+8",
                NetworkError::PrefixLength("10.0.0.0/+8".into()),
            ),
            (
                "10.0.0.0/0008",
                NetworkError::PrefixLength("10.0.0.0/0008".into()),
            ),
            ("10.0.0.1/8", NetworkError::HostBitsSet("10.0.0.1/8".into())),
            (
                "2001:db8::1/32",
                NetworkError::HostBitsSet("2001:db8::1/32".into()),
            ),
        ] {
            assert_eq!(input.parse::<Network>(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["10.0.0.0/8", "2001:db8::/32", "127.0.0.1/32", "::/0"] {
            assert_eq!(net(s).to_string(), s);
        }
    }
}
