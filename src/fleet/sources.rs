//! `settings.allowed_sources`: the networks a device may connect from, as a comma-separated list
//! of CIDRs (`10.1.2.0/24, 2001:db8::/48`; a bare address is one host). Sans-IO: text in, a
//! matcher out. Parsed once when the setting changes and kept on the device, so a registration
//! only compares masked addresses.

use std::net::IpAddr;

use crate::cidr::{self, Cidr};

/// The device setting that holds the list.
pub const SETTING: &str = "allowed_sources";
/// Entries a list may have: a terminal sits on a few known networks, not dozens.
pub const MAX_ENTRIES: usize = 16;

/// Where a device may connect from: anywhere (the default, when the setting is unset or empty),
/// or only from these networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedSources {
    /// Boxed slice, not `Vec`: every device keeps one, and most keep none.
    only: Option<Box<[Cidr]>>,
}

impl AllowedSources {
    /// The list's parsed form. An error names the first bad entry.
    pub fn parse(text: &str) -> Result<AllowedSources, String> {
        let entries: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(AllowedSources::default());
        }
        if entries.len() > MAX_ENTRIES {
            return Err(format!(
                "{} entries; at most {MAX_ENTRIES} networks",
                entries.len()
            ));
        }
        entries
            .into_iter()
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(|nets| AllowedSources {
                only: Some(nets.into_boxed_slice()),
            })
    }

    /// A list that lets nothing in: for a stored setting that no longer parses, since its owner
    /// meant to restrict the device.
    pub fn nothing() -> AllowedSources {
        AllowedSources {
            only: Some(Box::default()),
        }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        match &self.only {
            None => true,
            // An IPv4 peer on a dual-stack socket (`::ffff:a.b.c.d`) is matched as IPv4.
            Some(nets) => cidr::any_contains(nets, ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn networks_and_bare_addresses_match_what_they_cover() {
        let s = AllowedSources::parse(" 10.1.2.0/24, 192.168.7.9 ,2001:db8::/48").expect("valid");
        assert!(s.allows(ip("10.1.2.200")));
        assert!(!s.allows(ip("10.1.3.1")));
        assert!(s.allows(ip("192.168.7.9")));
        assert!(!s.allows(ip("192.168.7.10")));
        assert!(s.allows(ip("2001:db8:0:ffff::1")));
        assert!(!s.allows(ip("2001:db9::1")));
        // An IPv4 peer seen through a dual-stack socket.
        assert!(s.allows(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn host_bits_in_the_network_are_ignored_and_zero_prefixes_take_everything() {
        let s = AllowedSources::parse("10.1.2.3/24").expect("valid");
        assert!(s.allows(ip("10.1.2.77")));
        let all = AllowedSources::parse("0.0.0.0/0, ::/0").expect("valid");
        assert!(all.allows(ip("203.0.113.5")) && all.allows(ip("2001:db8::5")));
        // An IPv4 network never covers IPv6 peers, and the other way round.
        let v4 = AllowedSources::parse("0.0.0.0/0").expect("valid");
        assert!(!v4.allows(ip("2001:db8::5")));
    }

    #[test]
    fn empty_means_unrestricted() {
        assert_eq!(AllowedSources::parse(""), Ok(AllowedSources::default()));
        assert_eq!(AllowedSources::parse(" , "), Ok(AllowedSources::default()));
        assert!(AllowedSources::default().allows(ip("198.51.100.1")));
        assert!(!AllowedSources::nothing().allows(ip("198.51.100.1")));
    }

    #[test]
    fn a_bad_entry_is_named() {
        for (text, bad) in [
            ("10.0.0.0/24, 10.0.0.300", "10.0.0.300"),
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("2001:db8::/129", "2001:db8::/129"),
            ("10.0.0.0/", "10.0.0.0/"),
            ("10.0.0.0/+8", "10.0.0.0/+8"),
            ("10.0.0.0/8/8", "10.0.0.0/8/8"),
            ("example.com", "example.com"),
        ] {
            let e = AllowedSources::parse(text).expect_err(text);
            assert!(e.contains(bad), "{text}: {e}");
        }
        let many = vec!["10.0.0.1"; MAX_ENTRIES + 1].join(",");
        assert!(AllowedSources::parse(&many).is_err());
    }
}
