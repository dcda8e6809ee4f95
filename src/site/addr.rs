//! Addresses of the site: networks (`192.168.50.0/24`) and a host's address (a static
//! address with its prefix, or `dhcp`), parsed when the site file is read so that
//! `300.1.1.1/24` is refused with its line and key.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A network or single address in nftables and gateway syntax (`192.168.50.0/24`; a bare
/// address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

fn full(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl Net {
    /// The single address `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> Net {
        Net {
            addr,
            prefix: full(addr),
        }
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let keep = |bits: u32, width: u32| -> u128 {
            if bits == 0 {
                0
            } else {
                (!0u128 >> (128 - width)) << (width - bits) & (!0u128 >> (128 - width))
            }
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = keep(u32::from(self.prefix), 32);
                (u128::from(u32::from(n)) & m) == (u128::from(u32::from(a)) & m)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = keep(u32::from(self.prefix), 128);
                (u128::from(n) & m) == (u128::from(a) & m)
            }
            _ => false,
        }
    }
}

/// Prints the bare address for a single host, `ADDRESS/PREFIX` otherwise.
impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == full(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().map_err(|_| {
            format!(
                "`{}` is not an IP address or network (e.g. 192.168.50.0/24)",
                s.escape_debug()
            )
        })?;
        let prefix = if p.is_empty() && !s.contains('/') {
            full(addr)
        } else {
            match p.parse::<u8>() {
                Ok(n) if n <= full(addr) => n,
                _ => {
                    return Err(format!(
                        "`{}`: the prefix length must be 0-{}",
                        s.escape_debug(),
                        full(addr)
                    ))
                }
            }
        };
        Ok(Net { addr, prefix })
    }
}

/// Parses `ADDRESS/PREFIX` (or a bare address, a /32 or /128).
pub fn parse_net(s: &str) -> Option<Net> {
    s.parse().ok()
}

impl Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A host's address: a static one with its network's prefix, or DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostAddress {
    #[default]
    Dhcp,
    Static(Net),
}

impl HostAddress {
    /// The static address, without its prefix.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            HostAddress::Dhcp => None,
            HostAddress::Static(n) => Some(n.addr),
        }
    }

    pub fn net(&self) -> Option<Net> {
        match self {
            HostAddress::Dhcp => None,
            HostAddress::Static(n) => Some(*n),
        }
    }
}

/// `dhcp`, or the address with its prefix always written (`192.168.50.10/24`), as
/// systemd-networkd's Address= takes it.
impl fmt::Display for HostAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostAddress::Dhcp => f.write_str("dhcp"),
            HostAddress::Static(n) => write!(f, "{}/{}", n.addr, n.prefix),
        }
    }
}

impl FromStr for HostAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "dhcp" {
            return Ok(HostAddress::Dhcp);
        }
        if !s.contains('/') {
            return Err(format!(
                "`{}` must be \"dhcp\" or ADDRESS/PREFIX (e.g. 192.168.50.10/24)",
                s.escape_debug()
            ));
        }
        s.parse().map(HostAddress::Static)
    }
}

impl Serialize for HostAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_and_print() {
        assert_eq!(
            parse_net("192.168.50.0/24").unwrap().to_string(),
            "192.168.50.0/24"
        );
        assert_eq!(
            parse_net("192.168.50.2").unwrap().to_string(),
            "192.168.50.2"
        );
        assert_eq!(parse_net("fd00::1/64").unwrap().to_string(), "fd00::1/64");
        assert!(parse_net("192.168.50.0/33").is_none());
        assert!(parse_net("192.168.50.0/").is_none());
        assert!(parse_net("edge").is_none());
        let e = "300.1.1.1/24".parse::<Net>().unwrap_err();
        assert!(e.contains("`300.1.1.1/24` is not an IP address"), "{e}");
    }

    #[test]
    fn networks_contain_their_addresses() {
        let n: Net = "192.168.50.0/24".parse().unwrap();
        assert!(n.contains("192.168.50.200".parse().unwrap()));
        assert!(!n.contains("192.168.51.1".parse().unwrap()));
        assert!(!n.contains("fd00::1".parse().unwrap()));
        let n: Net = "10.0.0.0/9".parse().unwrap();
        assert!(n.contains("10.127.0.1".parse().unwrap()));
        assert!(!n.contains("10.128.0.1".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<Net>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        let n: Net = "fd00::/64".parse().unwrap();
        assert!(n.contains("fd00::5".parse().unwrap()));
        assert!(!n.contains("fd01::5".parse().unwrap()));
    }

    #[test]
    fn host_addresses_are_dhcp_or_an_address_with_its_prefix() {
        assert_eq!("dhcp".parse::<HostAddress>().unwrap(), HostAddress::Dhcp);
        let a: HostAddress = "192.168.50.10/24".parse().unwrap();
        assert_eq!(a.to_string(), "192.168.50.10/24");
        assert_eq!(a.ip().unwrap().to_string(), "192.168.50.10");
        let e = "10.0.0.1".parse::<HostAddress>().unwrap_err();
        assert!(e.contains("must be \"dhcp\" or ADDRESS/PREFIX"), "{e}");
        assert!("300.1.1.1/24".parse::<HostAddress>().is_err());
        assert_eq!(
            "10.0.0.1/32".parse::<HostAddress>().unwrap().to_string(),
            "10.0.0.1/32"
        );
    }
}
