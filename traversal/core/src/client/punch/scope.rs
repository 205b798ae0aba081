//! Addresses: which candidates a check of a call may go to, from the kind of network of each address and
//! of our own (see [`super::Punch::filter_candidates`]).

use std::net::{IpAddr, SocketAddr};

use crate::addr;

/// The same transport address: IP and port (an IPv6 scope id or flow label the socket reports
/// on a datagram need not be on the candidate it answers).
pub(super) fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

/// Folds an IPv4-mapped IPv6 address to IPv4; keeps the scope id of other IPv6 addresses.
pub(super) fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            SocketAddr::new(addr::normalize(addr.ip()), addr.port())
        }
        other => other,
    }
}

/// True for an address a check may go to at all (whatever our own addresses are).
pub(super) fn checkable(addr: SocketAddr) -> bool {
    addr.port() != 0 && of(addr.ip()) != Scope::Unusable
}

/// True when a check to `ip` makes sense from `ours` (normalized): never to a family none of
/// ours is in (an IPv6 peer from an IPv4-only host); public addresses always;
/// loopback only from loopback; link-local on a link-local subnet of ours (IPv4 /16, IPv6 /64);
/// private ones in a private network of ours (IPv4 /24, IPv6 /48); documentation and
/// benchmarking ranges only in a lab that has such an address; unusable ones never.
pub(super) fn reachable(ip: IpAddr, ours: &[IpAddr]) -> bool {
    // No address of that family (a peer's IPv6 address, and we have IPv4 only): unreachable.
    let v4 = addr::normalize(ip).is_ipv4();
    if !ours.is_empty() && !ours.iter().any(|o| addr::normalize(*o).is_ipv4() == v4) {
        return false;
    }
    let kind = of(ip);
    let ours_of = |k: Scope| ours.iter().filter(move |o| of(**o) == k);
    match kind {
        Scope::Unusable => false,
        Scope::Public => true,
        Scope::Loopback | Scope::Lab => ours_of(kind).next().is_some(),
        Scope::LinkLocal => ours_of(kind).any(|o| same_prefix(ip, *o, 16, 64)),
        Scope::Private => ours_of(kind).any(|o| same_prefix(ip, *o, 24, 48)),
    }
}

/// What kind of network an address is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Unspecified, multicast, broadcast, "this network" or reserved: never checked.
    Unusable,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// RFC 1918, RFC 6598 shared (CGNAT) and RFC 4193 unique local addresses.
    Private,
    /// Documentation (RFC 5737, RFC 3849) and benchmarking (RFC 2544) ranges: not on the
    /// Internet, but test labs use them as public addresses.
    Lab,
    /// Anything else.
    Public,
}

/// The kind of network of `ip` (IPv4-mapped IPv6 addresses as IPv4).
pub(super) fn of(ip: IpAddr) -> Scope {
    match addr::normalize(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || a == 0 || a >= 240 {
                Scope::Unusable
            } else if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_link_local() {
                Scope::LinkLocal
            } else if v4.is_private() || (a == 100 && (b & 0xc0) == 64) {
                Scope::Private
            } else if v4.is_documentation() || (a == 198 && (b & 0xfe) == 18) {
                Scope::Lab
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_unspecified() || v6.is_multicast() {
                Scope::Unusable
            } else if v6.is_loopback() {
                Scope::Loopback
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Scope::LinkLocal
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Scope::Private
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Scope::Lab
            } else {
                Scope::Public
            }
        }
    }
}

/// True when `a` and `b` share their first `v4` (IPv4) or `v6` (IPv6) bits.
fn same_prefix(a: IpAddr, b: IpAddr, v4: u32, v6: u32) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - v4).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - v6).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}
