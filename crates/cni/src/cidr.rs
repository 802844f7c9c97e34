//! A small IP network type (address plus prefix length) for subnets and leases.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network such as `10.88.0.0/16` or `fd00:1::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is not `address/prefix`.
#[derive(Debug, thiserror::Error)]
#[error("invalid IP network {0:?}: expected address/prefix, e.g. 10.88.0.0/16")]
pub struct IpNetParseError(pub String);

impl IpNet {
    /// A network from an address and prefix; the host bits are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, IpNetParseError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(IpNetParseError(format!("{addr}/{prefix}")));
        }
        let net = Self { addr, prefix };
        Ok(Self {
            addr: from_u128(addr, to_u128(addr) & net.mask()),
            prefix,
        })
    }

    /// A network known to be valid (host bits clear, prefix in range).
    pub(crate) const fn new_unchecked(addr: IpAddr, prefix: u8) -> Self {
        Self { addr, prefix }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    fn host_bits(&self) -> u32 {
        u32::from(max_prefix(self.addr) - self.prefix)
    }

    fn mask(&self) -> u128 {
        let bits = self.host_bits();
        let all = if self.addr.is_ipv6() {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        if bits >= 128 {
            0
        } else {
            all & !((1u128 << bits) - 1)
        }
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.addr.is_ipv6() && to_u128(ip) & self.mask() == to_u128(self.addr)
    }

    /// The address `index` places after the network address, if inside the network.
    pub fn nth(&self, index: u128) -> Option<IpAddr> {
        if index >= self.size() {
            return None;
        }
        Some(from_u128(self.addr, to_u128(self.addr) + index))
    }

    /// How many addresses the network spans (saturating at `u128::MAX`).
    pub fn size(&self) -> u128 {
        let bits = self.host_bits();
        if bits >= 128 {
            u128::MAX
        } else {
            1u128 << bits
        }
    }

    /// The gateway address crius gives the bridge: the first host address.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.nth(1)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv6() { 128 } else { 32 }
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(v & 0xffff_ffff).unwrap_or(0))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

impl FromStr for IpNet {
    type Err = IpNetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IpNetParseError(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let prefix: u8 = p.parse().map_err(|_| err())?;
        Self::new(addr, prefix).map_err(|_| err())
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let n: IpNet = "10.88.3.7/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.88.0.0/16");
        assert!(n.contains("10.88.255.1".parse().unwrap()));
        assert!(!n.contains("10.89.0.1".parse().unwrap()));
        assert_eq!(n.gateway().unwrap().to_string(), "10.88.0.1");
        assert_eq!(n.size(), 65536);
        let v6: IpNet = "fd00:12::/64".parse().unwrap();
        assert!(v6.contains("fd00:12::5".parse().unwrap()));
        assert_eq!(v6.nth(2).unwrap().to_string(), "fd00:12::2");
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
    }
}
