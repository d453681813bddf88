//! The client's address, as API Gateway saw it, and the network it belongs to: what the
//! throttles count by.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// A client's IP address. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are the IPv4
/// address they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    /// An address, or `None` for anything else (it becomes part of a key, so free text
    /// must not).
    pub fn parse(raw: &str) -> Option<Self> {
        let ip: IpAddr = raw.trim().parse().ok()?;
        Some(Self(match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        }))
    }

    /// The network the address belongs to: its /24 for IPv4, its /64 for IPv6 (one
    /// subscriber's line or one provider's NAT pool; an IPv6 host usually holds a whole
    /// /64). A failed-login run is counted per (name, network), so a guesser elsewhere
    /// never holds back the owner's own network.
    pub fn network(&self) -> Network {
        match self.0 {
            IpAddr::V4(v4) => {
                let masked = Ipv4Addr::from(u32::from(v4) & 0xffff_ff00);
                Network(format!("{masked}/24"))
            }
            IpAddr::V6(v6) => Network(format!("{}/64", v6_prefix64(v6))),
        }
    }

    /// What per-address counters count by: the address itself for IPv4, its /64 for
    /// IPv6 (otherwise one host could take a fresh address per request).
    pub fn subject(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("{}/64", v6_prefix64(v6)),
        }
    }
}

fn v6_prefix64(v6: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A client network in CIDR notation (`203.0.113.0/24`, `2001:db8:1:2::/64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Network(String);

impl Network {
    /// A network as stored earlier (the user item's known networks).
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(raw: &str) -> String {
        ClientAddr::parse(raw).unwrap().network().to_string()
    }

    #[test]
    fn networks_are_the_ipv4_slash_24_and_the_ipv6_slash_64() {
        assert_eq!(net("203.0.113.7"), "203.0.113.0/24");
        assert_eq!(net("203.0.113.250"), "203.0.113.0/24");
        assert_eq!(net("::ffff:203.0.113.7"), "203.0.113.0/24");
        assert_eq!(net("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(net("2001:db8:1:2::ff"), "2001:db8:1:2::/64");
        let v6 = ClientAddr::parse("2001:db8:1:2:3:4:5:6").unwrap();
        assert_eq!(v6.subject(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientAddr::parse("198.51.100.7").unwrap().subject(),
            "198.51.100.7"
        );
    }

    #[test]
    fn anything_but_an_address_is_refused() {
        for raw in ["", "localhost", "1.2.3", "1.2.3.4#x", "::g", "1.2.3.4/24"] {
            assert!(ClientAddr::parse(raw).is_none(), "{raw}");
        }
    }
}
