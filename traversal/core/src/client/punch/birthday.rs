//! Which side of a call does what in birthday probing ([`Birthday`]), from the candidates
//! both sides signalled.
//!
//! A client signals its host candidates (its own addresses, with the media socket's port)
//! and its public ones (the address the server saw, and a router's port mapping). Behind a
//! NAT, the NAT's kind shows in them:
//! - a public IPv4 candidate on a host candidate's port: the NAT keeps ports (`MASQUERADE`,
//!   most home routers), so the mapping towards the peer is predictable;
//! - public IPv4 candidates only on other ports: the NAT picked a port (`--random-fully`, or
//!   a port-keeping NAT whose port was taken), and may pick another for the peer;
//! - no private IPv4 host candidate: no NAT in front, or nothing known.
//!
//! Both sides compute the same roles from the same two lists, so no signalling is needed.

use std::net::SocketAddr;

use super::scope::{self, Scope};
use super::types::Birthday;

/// How a side's IPv4 NAT picks ports, as far as its candidates show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// No private IPv4 host candidate, or no public IPv4 one: nothing to go by.
    Unknown,
    /// A public candidate on a host candidate's port.
    Keeps(SocketAddr),
    /// Public candidates only on other ports than the host candidates'.
    Random(SocketAddr),
}

/// The port behaviour of the NAT in front of the side that signalled `candidates`.
pub fn port_kind(candidates: &[SocketAddr]) -> PortKind {
    let v4 = candidates
        .iter()
        .map(|c| scope::normalize(*c))
        .filter(|c| c.is_ipv4());
    let (inside, outside): (Vec<SocketAddr>, Vec<SocketAddr>) = v4
        .filter(|c| c.port() != 0)
        .partition(|c| matches!(scope::of(c.ip()), Scope::Private));
    let outside: Vec<SocketAddr> = outside
        .into_iter()
        .filter(|c| matches!(scope::of(c.ip()), Scope::Public | Scope::Lab))
        .collect();
    if inside.is_empty() || outside.is_empty() {
        return PortKind::Unknown;
    }
    match outside
        .iter()
        .find(|o| inside.iter().any(|i| i.port() == o.port()))
    {
        Some(kept) => PortKind::Keeps(*kept),
        // The last public candidate is the one the server saw (a router mapping comes first).
        None => PortKind::Random(outside[outside.len() - 1]),
    }
}

/// Our role in birthday probing, from our candidates and the peer's (as signalled, before
/// [`super::Punch::filter_candidates`]): only when exactly one side's NAT picks ports.
pub fn birthday_role(ours: &[SocketAddr], theirs: &[SocketAddr]) -> Option<Birthday> {
    match (port_kind(ours), port_kind(theirs)) {
        (PortKind::Random(_), PortKind::Keeps(peer)) => Some(Birthday::Spares { peer }),
        (PortKind::Keeps(_), PortKind::Random(peer)) => Some(Birthday::Spray { peer: peer.ip() }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_kind_shows_in_the_ports() {
        let keeps = addrs(&[
            "10.1.0.2:40000",
            "[2001:db8::2]:40000",
            "203.0.113.10:40000",
        ]);
        assert_eq!(
            port_kind(&keeps),
            PortKind::Keeps("203.0.113.10:40000".parse().unwrap())
        );
        let random = addrs(&["10.2.0.2:40000", "203.0.113.20:51234"]);
        assert_eq!(
            port_kind(&random),
            PortKind::Random("203.0.113.20:51234".parse().unwrap())
        );
        // A router mapping on the host port (UPnP) next to a random server-reflexive one.
        let mapped = addrs(&["10.2.0.2:40000", "203.0.113.20:40000", "203.0.113.20:51234"]);
        assert!(matches!(port_kind(&mapped), PortKind::Keeps(_)));
        // No NAT (the public address is the host's), loopback, or nothing public.
        assert_eq!(port_kind(&addrs(&["203.0.113.5:4000"])), PortKind::Unknown);
        assert_eq!(port_kind(&addrs(&["127.0.0.1:4000"])), PortKind::Unknown);
        assert_eq!(port_kind(&addrs(&["10.1.0.2:4000"])), PortKind::Unknown);
        assert_eq!(port_kind(&[]), PortKind::Unknown);
    }

    #[test]
    fn only_one_random_side_probes_and_both_agree() {
        let keeps = addrs(&["10.1.0.2:40000", "203.0.113.10:40000"]);
        let random = addrs(&["10.2.0.2:40000", "203.0.113.20:51234"]);
        assert_eq!(
            birthday_role(&random, &keeps),
            Some(Birthday::Spares {
                peer: "203.0.113.10:40000".parse().unwrap()
            })
        );
        assert_eq!(
            birthday_role(&keeps, &random),
            Some(Birthday::Spray {
                peer: "203.0.113.20".parse().unwrap()
            })
        );
        // Both random: no side can guess; both keep ports: the normal checks go direct.
        assert_eq!(birthday_role(&random, &random), None);
        assert_eq!(birthday_role(&keeps, &keeps), None);
        assert_eq!(birthday_role(&keeps, &addrs(&["198.51.100.7:3000"])), None);
    }
}
