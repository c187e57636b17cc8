//! Networks written as CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or a bare address for one host), and
//! whether an address lies in one. Used for the proxies whose forwarded client addresses are
//! believed (`--trusted-proxies`) and the networks a device may connect from
//! (`settings.allowed_sources`).
//!
//! An IPv4 address that reaches a dual-stack socket as IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is
//! the same host as `10.0.0.1` and matches IPv4 networks.

use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Networks in one comma-separated list, at most this many (a list is configuration, not data).
pub const MAX_LIST: usize = 64;

impl Cidr {
    /// One network: `address/prefix` or a bare address. The address is masked to its prefix, so
    /// `10.1.2.3/8` means `10.0.0.0/8`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would also take `+24`.
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// A comma-separated list; empty entries are refused so a typo cannot widen it silently.
    pub fn parse_list(s: &str) -> Result<Vec<Cidr>, String> {
        if s.trim().is_empty() {
            return Ok(Vec::new());
        }
        let parts: Vec<&str> = s.split(',').collect();
        if parts.len() > MAX_LIST {
            return Err(format!("at most {MAX_LIST} networks"));
        }
        parts.into_iter().map(Cidr::parse).collect()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` lies in any of `nets`.
pub fn any_contains(nets: &[Cidr], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(ip))
}

/// `ip` with all but its first `prefix` bits cleared (a prefix past the family's width keeps all).
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            // A shift by the full width (prefix 0) overflows: nothing is kept then.
            let m = u32::MAX
                .checked_shl(32_u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX
                .checked_shl(128_u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_hosts_only() {
        let n = Cidr::parse("10.1.2.3/8").unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(ip("10.255.0.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        let host = Cidr::parse("192.0.2.7").unwrap();
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        assert!(!all.contains(ip("2001:db8::1")), "families do not mix");
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
    }

    #[test]
    fn masks_keep_their_prefix() {
        assert_eq!(mask(ip("10.1.2.3"), 16), ip("10.1.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 40), ip("10.1.2.3"));
        assert_eq!(mask(ip("2001:db8:1:2:3::1"), 64), ip("2001:db8:1:2::"));
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let n = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(n.contains(ip("::ffff:127.0.0.9")));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.1/-1",
            "10.0.0.1/",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
        let e = Cidr::parse_list("10.0.0.0/8,,192.0.2.1").unwrap_err();
        assert!(e.contains("\"\""), "{e}");
        assert_eq!(Cidr::parse_list(" ").unwrap(), Vec::new());
        assert_eq!(Cidr::parse_list("10.0.0.0/8, 192.0.2.1").unwrap().len(), 2);
        let long = vec!["10.0.0.1"; MAX_LIST + 1].join(",");
        assert!(Cidr::parse_list(&long).is_err());
    }
}
