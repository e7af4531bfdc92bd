//! IP networks ([`IpNet`], `10.0.0.0/8`, `::1/128`) for trusted-proxy and trusted-network
//! configuration, and the rule that resolves a client's address behind proxies.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    network: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The loopback networks, 127.0.0.0/8 and ::1/128.
    pub fn loopback() -> [IpNet; 2] {
        [
            IpNet {
                network: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            IpNet {
                network: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                prefix: 128,
            },
        ]
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// `203.0.113.7`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0..={max}"))?,
        };
        Ok(IpNet { network, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether `ip` is in any of `networks`.
pub fn in_any(networks: &[IpNet], ip: IpAddr) -> bool {
    networks.iter().any(|net| net.contains(ip))
}

/// The client address behind proxies: walking `X-Forwarded-For` from the right (the hop nearest
/// to us) past every trusted proxy, the first address that is not trusted. `peer` is the socket
/// peer; when it is not itself trusted, forwarded addresses are ignored entirely, so a client
/// cannot choose the address it is audited and limited under.
pub fn resolve_client_ip(peer: IpAddr, forwarded_for: &[IpAddr], trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !in_any(trusted, peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.iter().rev() {
        client = hop.to_canonical();
        if !in_any(trusted, client) {
            return client;
        }
    }
    // Every hop is a trusted proxy: the left-most one is as far as the chain goes.
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(
            net.contains(ip("::ffff:10.1.0.9")),
            "IPv4-mapped counts as IPv4"
        );
        let single: IpNet = "203.0.113.7".parse().unwrap();
        assert!(single.contains(ip("203.0.113.7")) && !single.contains(ip("203.0.113.8")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(
            "0.0.0.0/0"
                .parse::<IpNet>()
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
    }

    #[test]
    fn bad_networks_are_refused_with_a_reason() {
        for bad in [
            "",
            "10.0.0.0/33",
            "300.1.1.1",
            "10.0.0.0/x",
            "::/129",
            "example.com",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let trusted: Vec<IpNet> = vec!["10.0.0.1".parse().unwrap()];
        let client = resolve_client_ip(ip("198.51.100.4"), &[ip("1.2.3.4")], &trusted);
        assert_eq!(client, ip("198.51.100.4"));
    }

    #[test]
    fn right_most_untrusted_address_wins() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The attacker prepends a fake address; the proxies append the real one.
        let chain = [ip("1.2.3.4"), ip("198.51.100.4"), ip("10.0.0.2")];
        assert_eq!(
            resolve_client_ip(ip("10.0.0.1"), &chain, &trusted),
            ip("198.51.100.4")
        );
        assert_eq!(
            resolve_client_ip(ip("10.0.0.1"), &[], &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            resolve_client_ip(ip("10.0.0.1"), &[ip("10.0.0.7")], &trusted),
            ip("10.0.0.7")
        );
    }
}
