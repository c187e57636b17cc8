//! The client a chain of proxies names in `X-Forwarded-For`. Each proxy appends the address it
//! received the request from, so the list reads client, proxy 1, proxy 2… and only its right end
//! can be believed: anything to the left of a proxy we trust may have been written by the client.
//! The client is therefore the rightmost address that is not one of our trusted proxies.

use std::net::{IpAddr, SocketAddr};

/// Entries read at most (several header lines count together): a longer list is a forgery or a
/// loop, and the believable part is at its right end anyway.
pub const MAX_HOPS: usize = 32;

/// The client named by the `X-Forwarded-For` values `values` (header lines in order), given which
/// addresses are trusted proxies. None when there is no such header, or when the entry that would
/// name the client is not an address (then the request is the proxy's own, as far as we know).
pub fn client<'a>(
    values: impl Iterator<Item = &'a str>,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let entries: Vec<&str> = values.flat_map(|v| v.split(',')).collect();
    let mut last = None;
    for entry in entries.iter().rev().take(MAX_HOPS) {
        let ip = address(entry)?;
        if !trusted(ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    // Every hop is a trusted proxy: the farthest one is the client as far as we can tell.
    last
}

/// One entry: an address, optionally with a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as
/// some balancers write it.
fn address(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(a: IpAddr) -> bool {
        a == ip("10.0.0.1") || a == ip("10.0.0.2")
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        assert_eq!(
            client(["203.0.113.7"].into_iter(), trusted),
            Some(ip("203.0.113.7"))
        );
        // The client claims to be 1.1.1.1; the proxy appended who really connected.
        let forged = ["1.1.1.1, 203.0.113.7"];
        assert_eq!(client(forged.into_iter(), trusted), Some(ip("203.0.113.7")));
        // Two trusted proxies in a row.
        let chain = ["198.51.100.9, 203.0.113.7, 10.0.0.2"];
        assert_eq!(client(chain.into_iter(), trusted), Some(ip("203.0.113.7")));
        // Several header lines read as one list.
        let lines = ["198.51.100.9", "203.0.113.7:4711"];
        assert_eq!(client(lines.into_iter(), trusted), Some(ip("203.0.113.7")));
        let v6 = ["[2001:db8::7]:80"];
        assert_eq!(client(v6.into_iter(), trusted), Some(ip("2001:db8::7")));
    }

    #[test]
    fn garbage_where_the_client_should_be_names_nobody() {
        assert_eq!(client(["unknown"].into_iter(), trusted), None);
        assert_eq!(client(["1.1.1.1, junk"].into_iter(), trusted), None);
        // Garbage left of the client is never read.
        assert_eq!(
            client(["junk, 203.0.113.7"].into_iter(), trusted),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(client(std::iter::empty(), trusted), None);
    }

    #[test]
    fn an_all_trusted_chain_names_its_farthest_hop_and_long_lists_are_cut() {
        assert_eq!(
            client(["10.0.0.2, 10.0.0.1"].into_iter(), trusted),
            Some(ip("10.0.0.2"))
        );
        let long = vec!["10.0.0.1"; MAX_HOPS + 5].join(",");
        assert_eq!(
            client([long.as_str()].into_iter(), trusted),
            Some(ip("10.0.0.1"))
        );
    }
}
