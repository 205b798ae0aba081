//! Address classification.
//!
//! The server sends unsolicited UDP (the patent's P4) only to addresses where that cannot turn
//! it into a reflector against its own network or a scanner of private ranges (the lesson of
//! RFC 3489's RESPONSE-ADDRESS and coturn CVE-2020-26262). [`is_public_unicast`] is the single
//! check for that.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Folds IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) to plain IPv4, so that every check sees
/// one spelling of an address.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// True when `ip` is a globally routable unicast address: not unspecified, loopback, private
/// (RFC 1918, RFC 4193), shared/CGNAT (RFC 6598), link-local, multicast, broadcast,
/// documentation, benchmarking or otherwise reserved.
pub fn is_public_unicast(ip: IpAddr) -> bool {
    match normalize(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network", RFC 1122
        || (a == 100 && (b & 0xc0) == 64) // shared address space / CGNAT, RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, RFC 6890
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, RFC 2544
        || a >= 240) // reserved, RFC 1112
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local, RFC 4193
        || (seg[0] & 0xffc0) == 0xfe80 // link-local unicast
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation, RFC 3849
        || (seg[0] == 0x0064 && seg[1] == 0xff9b) // NAT64, RFC 6052
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only, RFC 6666
        || seg[..6] == [0; 6]) // IPv4-compatible, deprecated by RFC 4291
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_addresses_pass() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "205.184.151.171",
            "2a00:1450:4001:80b::200e",
        ] {
            assert!(is_public_unicast(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::808:808",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
        ] {
            assert!(!is_public_unicast(ip(s)), "{s} should not be public");
        }
    }

    #[test]
    fn mapped_ipv6_is_normalized_to_ipv4() {
        assert_eq!(normalize(ip("::ffff:8.8.4.4")), ip("8.8.4.4"));
        assert!(is_public_unicast(ip("::ffff:8.8.4.4")));
        assert_eq!(normalize(ip("2a00::1")), ip("2a00::1"));
    }
}
