//! Tests of the emulator: NAT kinds, mapping expiry, TCP order and breakage, seeded loss.

#![allow(clippy::unwrap_used)]

use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Delivers everything due now; returns the datagrams as (host, to, from).
fn udp_due(net: &mut Net) -> Vec<(HostId, SocketAddr, SocketAddr)> {
    let mut out = Vec::new();
    while let Some(a) = net.pop_due() {
        if let Arrival::Udp { host, to, from, .. } = a {
            out.push((host, to, from));
        }
    }
    out
}

/// What a host behind a NAT of each kind gets back after sending to `contacted`: from
/// that address and port, from another port of it, from another address.
#[test]
fn nat_kinds_filter_as_named() {
    let cases = [
        (NatKind::FullCone, [true, true, true]),
        (NatKind::RestrictedCone, [true, true, false]),
        (NatKind::PortRestricted, [true, false, false]),
        (NatKind::Symmetric, [true, false, false]),
    ];
    for (kind, expected) in cases {
        let mut net = Net::new(1);
        let nat = net.add_nat(NatConfig::new(kind, "203.0.113.1".parse().unwrap()));
        let inside = net.add_host(vec!["192.168.1.10".parse().unwrap()], Some(nat));
        let outside = net.add_host(
            vec![
                "198.51.100.1".parse().unwrap(),
                "198.51.100.2".parse().unwrap(),
            ],
            None,
        );
        let local = sa("192.168.1.10:5000");
        let contacted = sa("198.51.100.1:3478");
        net.send_udp(inside, local, contacted, vec![1]);
        let got = udp_due(&mut net);
        assert_eq!(got.len(), 1, "{kind:?}");
        let mapped = got[0].2;
        assert_eq!(mapped.ip(), "203.0.113.1".parse::<IpAddr>().unwrap());
        let sources = [contacted, sa("198.51.100.1:9999"), sa("198.51.100.2:3478")];
        for (from, pass) in sources.into_iter().zip(expected) {
            net.send_udp(outside, from, mapped, vec![2]);
            let got = udp_due(&mut net);
            let want = if pass {
                vec![(inside, local, from)]
            } else {
                vec![]
            };
            assert_eq!(got, want, "{kind:?} from {from}");
        }
    }
}

#[test]
fn mappings_expire_and_symmetric_ones_differ_per_destination() {
    let mut net = Net::new(1);
    let config = NatConfig::new(NatKind::Symmetric, "203.0.113.1".parse().unwrap())
        .with_timeout(Duration::from_secs(30));
    let nat = net.add_nat(config);
    let host = net.add_host(vec!["10.0.0.1".parse().unwrap()], Some(nat));
    let local = sa("10.0.0.1:5000");
    let a = net.translate(host, local, sa("198.51.100.1:1"));
    let b = net.translate(host, local, sa("198.51.100.1:2"));
    assert_ne!(a, b);
    assert_eq!(net.translate(host, local, sa("198.51.100.1:1")), a);
    let later = net.now() + Duration::from_secs(31);
    net.advance_to(later);
    assert_ne!(net.translate(host, local, sa("198.51.100.1:1")), a);
}

#[test]
fn tcp_keeps_order_and_a_killed_listener_closes_its_connections() {
    let mut net = Net::new(1);
    net.wan_delay = Duration::from_millis(10);
    let client = net.add_host(vec!["7.7.7.7".parse().unwrap()], None);
    let server = net.add_host(vec!["5.5.5.5".parse().unwrap()], None);
    let addr = sa("5.5.5.5:3478");
    // Nothing listens yet: refused after a round trip.
    let refused = net.tcp_connect(client, sa("7.7.7.7:40000"), addr, None);
    net.advance_to(net.now() + Duration::from_millis(20));
    let event = net.pop_due();
    assert!(
        matches!(&event, Some(Arrival::Tcp { conn, event: TcpEvent::Refused, .. }) if *conn == refused),
        "{event:?}"
    );
    net.listen(server, addr);
    let conn = net.tcp_connect(client, sa("7.7.7.7:40001"), addr, None);
    for i in 0..5u8 {
        net.tcp_send(conn, End::Connector, vec![i]);
    }
    net.advance_to(net.now() + Duration::from_secs(1));
    let mut at_server = Vec::new();
    while let Some(Arrival::Tcp { end, event, .. }) = net.pop_due() {
        if end == End::Acceptor {
            at_server.push(event);
        }
    }
    let mut expected = vec![TcpEvent::Accepted {
        listener: addr,
        peer: sa("7.7.7.7:40001"),
    }];
    expected.extend((0..5u8).map(|i| TcpEvent::Data(vec![i])));
    assert_eq!(at_server, expected);
    net.kill_listener(addr);
    net.tcp_send(conn, End::Connector, vec![9]);
    net.advance_to(net.now() + Duration::from_secs(1));
    let rest: Vec<_> = std::iter::from_fn(|| net.pop_due()).collect();
    assert_eq!(
        rest,
        vec![Arrival::Tcp {
            host: client,
            conn,
            end: End::Connector,
            event: TcpEvent::Closed
        }]
    );
    assert!(!net.tcp_is_open(conn, End::Connector));
    assert!(!net.is_listening(addr));
}

#[test]
fn loss_is_drawn_from_the_seed() {
    let run = |seed: u64| {
        let mut net = Net::new(seed);
        let a = net.add_host(vec!["7.7.7.7".parse().unwrap()], None);
        let b = net.add_host(vec!["7.7.7.8".parse().unwrap()], None);
        net.link_mut(a).loss = 0.2;
        for _ in 0..1000 {
            net.send_udp(a, sa("7.7.7.7:1"), sa("7.7.7.8:1"), vec![0]);
        }
        (udp_due(&mut net).len(), net.delivered(b))
    };
    let (n, delivered) = run(3);
    assert_eq!(
        run(3),
        (n, delivered),
        "the same seed loses the same datagrams"
    );
    assert!((740..=860).contains(&n), "{n} of 1000 with 20% loss");
}
