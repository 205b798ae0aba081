//! The exchange in virtual time through the in-memory lab: verdicts, masquerading, keepalives,
//! idle expiry, mapping changes, lifetime measurement, and the server's safety limits.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use traversal::client::{self, Event, LostReason};
use traversal::control::Verdict;
use traversal::server;
use traversal::stun;
use traversal::wire::{Flags, UdpMessage};
use traversal_sim::lab::{Host, Lab};
use traversal_sim::{NatConfig, NatKind};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn nat(lab: &mut Lab, kind: NatKind, public: &str, timeout_s: u64) -> usize {
    lab.add_nat(NatConfig::new(kind, ip(public)).with_timeout(Duration::from_secs(timeout_s)))
}

/// A host on the internet; `tcp_observed` is where its control connection seems to come from.
fn public(local: &str, interfaces: &[&str], tcp_observed: &str) -> Host {
    Host {
        interfaces: interfaces.iter().map(|s| ip(s)).collect(),
        ..Host::public(ip(local), sa(tcp_observed))
    }
}

fn natted(local: &str, nat: usize, public: &str, tcp_port: u16) -> Host {
    Host {
        local_ip: ip(local),
        interfaces: vec![ip(local), ip("fe80::1")],
        nat: Some(nat),
        tcp_observed: SocketAddr::new(ip(public), tcp_port),
        media_port: 5000,
    }
}

/// A lab with `config` and one client at 192.168.1.10 behind a NAT of `kind` at 8.8.8.1 whose
/// mappings die after `timeout_s`; `tweak` adjusts the client. Returns the lab, the NAT and the
/// client.
fn one_client(
    config: server::Config,
    kind: NatKind,
    timeout_s: u64,
    tweak: impl FnOnce(&mut client::Config),
) -> (Lab, usize, usize) {
    let mut lab = Lab::new(config);
    let n = nat(&mut lab, kind, "8.8.8.1", timeout_s);
    let c = lab.add_client(natted("192.168.1.10", n, "8.8.8.1", 33000), tweak);
    (lab, n, c)
}

/// Asks client `i` whether the server reaches it and runs 2 s; returns every answer it has had.
fn reachability(lab: &mut Lab, i: usize) -> Vec<bool> {
    lab.clients[i].client.check_reachability(lab.now);
    lab.run_for(Duration::from_secs(2));
    lab.clients[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Reachability { reachable } => Some(*reachable),
            _ => None,
        })
        .collect()
}

fn verdict_of(lab: &Lab, i: usize) -> Option<(Verdict, SocketAddr)> {
    lab.clients[i].events.iter().find_map(|e| match e {
        Event::Verdict { verdict, mapped } => Some((*verdict, *mapped)),
        _ => None,
    })
}

fn count(lab: &Lab, i: usize, f: impl Fn(&Event) -> bool) -> usize {
    lab.clients[i].events.iter().filter(|e| f(e)).count()
}

#[test]
fn public_client_gets_public_verdict() {
    let mut lab = Lab::new(server::Config::default());
    // The access address: the lab uses port 40000 + index for it.
    let c = lab.add_client(public("7.7.7.7", &[], "7.7.7.7:40000"), |_| {});
    lab.run_for(Duration::from_secs(1));
    assert_eq!(
        verdict_of(&lab, c),
        Some((Verdict::Public, sa("7.7.7.7:5000")))
    );
    assert!(!lab.clients[c].client.private_network());
}

#[test]
fn proxied_client_gets_proxy_verdict() {
    // TCP arrives from a proxy's address; UDP from the client's own public address.
    let mut lab = Lab::new(server::Config::default());
    let c = lab.add_client(public("7.7.7.7", &["10.0.0.5"], "9.9.9.9:50000"), |_| {});
    lab.run_for(Duration::from_secs(1));
    assert!(lab.clients[c].client.private_network());
    assert_eq!(
        verdict_of(&lab, c),
        Some((Verdict::Proxy, sa("7.7.7.7:5000")))
    );
}

#[test]
fn natted_client_gets_nat_verdict_and_p4_skips_private_addresses() {
    let mut lab = Lab::new(server::Config::default());
    let n = nat(&mut lab, NatKind::FullCone, "8.8.8.1", 30);
    let mut host = natted("192.168.1.10", n, "8.8.8.1", 33000);
    host.interfaces.extend([
        ip("127.0.0.1"),
        ip("224.0.0.1"),
        ip("::ffff:10.1.1.1"),
        ip("0.0.0.0"),
    ]);
    let c = lab.add_client(host, |_| {});
    lab.run_for(Duration::from_secs(1));
    let (verdict, mapped) = verdict_of(&lab, c).unwrap();
    assert_eq!(verdict, Verdict::Nat);
    assert_eq!(mapped.ip(), ip("8.8.8.1"));
    // The server sent only to the observed mapping: nothing to the private, loopback,
    // multicast, link-local or unspecified addresses the client listed.
    for (to, _) in &lab.server.sent {
        assert_eq!(*to, mapped, "server sent to {to}");
    }
}

#[test]
fn p4_goes_once_to_public_listed_addresses_and_never_grows() {
    let mut lab = Lab::new(server::Config::default());
    let n = nat(&mut lab, NatKind::FullCone, "8.8.8.1", 30);
    let mut host = natted("192.168.1.10", n, "8.8.8.1", 33000);
    // Five public addresses listed: at most three get the P4.
    host.interfaces
        .extend(["11.0.0.1", "11.0.0.2", "11.0.0.3", "11.0.0.4", "11.0.0.5"].map(ip));
    let c = lab.add_client(host, |k| {
        k.keepalive_interval = Some(Duration::from_secs(2))
    });
    lab.run_for(Duration::from_secs(10));
    let mapped = verdict_of(&lab, c).unwrap().1;
    let to_listed: Vec<_> = lab
        .server
        .sent
        .iter()
        .filter(|(to, _)| *to != mapped)
        .collect();
    assert_eq!(to_listed.len(), 3, "{to_listed:?}");
    for (to, len) in &to_listed {
        assert!(to.ip().to_string().starts_with("11.0.0."));
        assert!(*len <= traversal::wire::REQUEST_LEN);
    }
}

#[test]
fn two_masqueraded_clients_are_told_apart() {
    let mut lab = Lab::new(server::Config::default());
    let n = nat(&mut lab, NatKind::FullCone, "8.8.8.1", 30);
    let a = lab.add_client(natted("192.168.1.10", n, "8.8.8.1", 33000), |_| {});
    let b = lab.add_client(natted("192.168.1.11", n, "8.8.8.1", 33001), |_| {});
    lab.run_for(Duration::from_secs(1));
    let (va, ma) = verdict_of(&lab, a).unwrap();
    let (vb, mb) = verdict_of(&lab, b).unwrap();
    assert_eq!((va, vb), (Verdict::Nat, Verdict::Nat));
    assert_eq!(ma.ip(), mb.ip());
    assert_ne!(ma.port(), mb.port());
    let (ia, ib) = (
        lab.clients[a].client.user_index(),
        lab.clients[b].client.user_index(),
    );
    assert_ne!(ia, ib);
    assert_eq!(lab.server.mapping(ia), Some(ma));
    assert_eq!(lab.server.mapping(ib), Some(mb));
    // Each is reachable through its own mapping.
    for i in [a, b] {
        assert_eq!(reachability(&mut lab, i), [true]);
    }
}

#[test]
fn keepalives_hold_the_mapping() {
    let (mut lab, _, c) = one_client(server::Config::default(), NatKind::Symmetric, 20, |k| {
        k.keepalive_interval = Some(Duration::from_secs(10));
    });
    lab.run_for(Duration::from_secs(120));
    let client = &lab.clients[c].client;
    assert!(client.stats().keepalives_sent >= 10, "{:?}", client.stats());
    assert_eq!(client.stats().mappings_lost, 0);
    assert_eq!(client.stats().reregistrations, 0);
    assert_eq!(reachability(&mut lab, c), [true]);
}

#[test]
fn idle_expiry_is_noticed_and_the_client_registers_again() {
    let (mut lab, _, c) = one_client(server::Config::default(), NatKind::Symmetric, 20, |k| {
        // Longer than the NAT's timeout: the mapping dies between keepalives.
        k.keepalive_interval = Some(Duration::from_secs(30));
    });
    lab.run_for(Duration::from_secs(25));
    assert_eq!(reachability(&mut lab, c), [false]);
    lab.run_for(Duration::from_secs(10));
    assert!(
        count(&lab, c, |e| *e
            == Event::MappingLost {
                reason: LostReason::ProbeNotReceived
            })
            >= 1
    );
    assert!(lab.clients[c].client.stats().reregistrations >= 1);
    assert!(lab.clients[c].client.is_registered());
    // The new mapping (another port: the NAT is symmetric and allocates afresh) is the one
    // the server now knows.
    let index = lab.clients[c].client.user_index();
    assert_eq!(lab.server.mapping(index), lab.clients[c].client.mapped());
}

#[test]
fn changed_mapping_is_seen_in_a_keepalive_answer() {
    let (mut lab, n, c) = one_client(server::Config::default(), NatKind::FullCone, 60, |k| {
        k.keepalive_interval = Some(Duration::from_secs(5));
        k.verify_mapping = false;
    });
    lab.run_for(Duration::from_secs(6));
    let before = lab.clients[c].client.mapped().unwrap();
    lab.reset_nat(n);
    lab.run_for(Duration::from_secs(6));
    let after = lab.clients[c].client.mapped().unwrap();
    assert_ne!(before, after);
    assert_eq!(
        count(
            &lab,
            c,
            |e| matches!(e, Event::MappingChanged { old, new } if *old == before && *new == after)
        ),
        1
    );
    assert_eq!(lab.clients[c].client.stats().reregistrations, 1);
    assert_eq!(
        lab.server.mapping(lab.clients[c].client.user_index()),
        Some(after)
    );
}

#[test]
fn lifetime_measurement_finds_the_nat_timeout() {
    for timeout_s in [5u64, 30, 90] {
        let (mut lab, _, c) = one_client(
            server::Config::default(),
            NatKind::FullCone,
            timeout_s,
            |k| {
                k.measure_lifetime = true;
            },
        );
        let done = lab.run_until(Duration::from_secs(1200), |lab| {
            lab.clients[c].client.mapping_lifetime().is_some()
        });
        assert!(done, "no measurement for {timeout_s} s");
        let measured = lab.clients[c]
            .client
            .mapping_lifetime()
            .unwrap()
            .as_secs_f64();
        let t = timeout_s as f64;
        assert!(
            measured <= t && measured >= t * 0.85 - 0.5,
            "NAT timeout {t} s, measured {measured} s"
        );
        let interval = lab.clients[c].client.keepalive_interval();
        assert!(interval.as_secs_f64() < measured, "{interval:?}");
        // And the mapping is held at that interval.
        lab.clients[c].client.check_reachability(lab.now);
        lab.run_for(Duration::from_secs(3));
        let lost_before = lab.clients[c].client.stats().mappings_lost;
        lab.run_for(Duration::from_secs(300));
        assert_eq!(
            lab.clients[c].client.stats().mappings_lost,
            lost_before,
            "timeout {t}"
        );
    }
}

#[test]
fn forged_user_index_without_the_key_is_dropped() {
    let (mut lab, _, c) = one_client(server::Config::default(), NatKind::FullCone, 30, |_| {});
    lab.run_for(Duration::from_secs(1));
    let index = lab.clients[c].client.user_index();
    let mapped = lab.server.mapping(index).unwrap();
    let attacker = sa("6.6.6.6:4444");
    for key in [&b"guess"[..], &[0u8; 16][..]] {
        let forged = UdpMessage::Request {
            transaction_id: [9; 12],
            user_index: index,
            flags: Flags::default(),
        }
        .encode(key);
        lab.inject_to_server(attacker, &forged);
    }
    assert_eq!(lab.server.mapping(index), Some(mapped));
    assert_eq!(lab.server.stats().udp_auth_failed, 2);
    assert!(!lab.server.sent.iter().any(|(to, _)| *to == attacker));
    // Unknown indexes and junk are counted too; a plain Binding still gets its answer.
    let forged = UdpMessage::Request {
        transaction_id: [9; 12],
        user_index: index.wrapping_add(1),
        flags: Flags::default(),
    }
    .encode(b"k");
    lab.inject_to_server(attacker, &forged);
    lab.inject_to_server(attacker, b"\x00\x01junk");
    assert_eq!(lab.server.stats().udp_unknown_user, 1);
    assert_eq!(lab.server.stats().udp_malformed, 1);
    lab.inject_to_server(attacker, &stun::encode_binding_request(&[1; 12]));
    assert_eq!(lab.server.sent.last(), Some(&(attacker, 32)));
}

#[test]
fn replayed_requests_cannot_move_the_mapping() {
    let (mut lab, _, c) = one_client(server::Config::default(), NatKind::FullCone, 30, |k| {
        k.keepalive_interval = Some(Duration::from_secs(2));
    });
    lab.run_for(Duration::from_secs(7));
    let index = lab.clients[c].client.user_index();
    let mapped = lab.server.mapping(index).unwrap();
    // An on-path attacker replays every request it saw, from its own address.
    let captured: Vec<Vec<u8>> = lab.server.received.iter().map(|(_, b)| b.clone()).collect();
    assert!(captured.len() >= 3);
    for bytes in &captured {
        lab.inject_to_server(sa("6.6.6.6:4444"), bytes);
    }
    assert_eq!(lab.server.mapping(index), Some(mapped));
    // Requests are dropped as replays; the path response (the echo of the first mapping's
    // challenge) as echoing no challenge sent to that address.
    let stats = lab.server.stats();
    assert_eq!(stats.udp_bad_path_response, 1);
    assert_eq!(
        stats.udp_replayed + stats.udp_bad_path_response,
        captured.len() as u64
    );
    assert!(
        !lab.server
            .sent
            .iter()
            .any(|(to, _)| to.ip() == ip("6.6.6.6"))
    );
    // The client carries on undisturbed.
    lab.run_for(Duration::from_secs(10));
    assert_eq!(lab.clients[c].client.stats().mappings_lost, 0);
    assert_eq!(lab.clients[c].client.mapped(), Some(mapped));
}

#[test]
fn filtering_probe_from_the_alternate_port() {
    let mut lab = Lab::new(server::Config::default());
    let open = nat(&mut lab, NatKind::FullCone, "8.8.8.1", 30);
    let strict = nat(&mut lab, NatKind::PortRestricted, "8.8.8.2", 30);
    let a = lab.add_client(natted("192.168.1.10", open, "8.8.8.1", 33000), |_| {});
    let b = lab.add_client(natted("192.168.2.10", strict, "8.8.8.2", 33000), |_| {});
    let p = lab.add_client(public("7.7.7.7", &[], "7.7.7.7:40002"), |_| {});
    lab.run_for(Duration::from_secs(1));
    for i in [a, b, p] {
        lab.clients[i].client.check_filtering(lab.now);
    }
    lab.run_for(Duration::from_secs(5));
    let filtering = |i: usize| {
        lab.clients[i].events.iter().find_map(|e| match e {
            Event::Filtering { filtered } => Some(*filtered),
            _ => None,
        })
    };
    assert_eq!(filtering(a), Some(Some(false)));
    assert_eq!(filtering(b), Some(Some(true)));
    assert_eq!(filtering(p), Some(Some(false)));
    // The strict NAT still lets in what comes from the main port.
    assert_eq!(reachability(&mut lab, b), [true]);
}

#[test]
fn blocked_udp_fails_the_registration_in_time() {
    let mut lab = Lab::new(server::Config::default());
    let n = nat(&mut lab, NatKind::FullCone, "8.8.8.1", 30);
    lab.udp_blocked.push(ip("192.168.1.10"));
    let c = lab.add_client(natted("192.168.1.10", n, "8.8.8.1", 33000), |k| {
        k.register_timeout = Duration::from_secs(3);
    });
    lab.run_for(Duration::from_secs(10));
    let failures: Vec<_> = lab.clients[c]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Failed { reason } if reason.contains("no UDP answer")))
        .collect();
    assert_eq!(failures.len(), 1, "{:?}", lab.clients[c].events);
    // Retransmitted with backoff, not flooded: 250 ms doubling to 2 s within 3 s.
    assert!(lab.server.received.is_empty());
}

#[test]
fn lifetime_measurement_stops_below_the_servers_idle_expiry() {
    let config = server::Config {
        idle_timeout: Duration::from_secs(20),
        ..server::Config::default()
    };
    let (mut lab, _, c) = one_client(config, NatKind::FullCone, 600, |k| {
        k.measure_lifetime = true;
    });
    assert!(lab.run_until(Duration::from_secs(600), |lab| {
        lab.clients[c].client.mapping_lifetime().is_some()
    }));
    let measured = lab.clients[c].events.iter().find_map(|e| match e {
        Event::LifetimeMeasured {
            lifetime, at_least, ..
        } => Some((*lifetime, *at_least)),
        _ => None,
    });
    assert_eq!(measured, Some((Duration::from_secs(18), true)));
}

#[test]
fn keepalive_interval_stays_inside_the_servers_idle_expiry() {
    let config = server::Config {
        idle_timeout: Duration::from_secs(10),
        ..server::Config::default()
    };
    let (mut lab, _, c) = one_client(config, NatKind::FullCone, 300, |_| {});
    lab.run_for(Duration::from_secs(1));
    assert!(lab.clients[c].client.keepalive_interval() <= Duration::from_secs(6));
    lab.run_for(Duration::from_secs(60));
    let index = lab.clients[c].client.user_index();
    assert!(lab.server.mapping(index).is_some());
    assert_eq!(lab.server.stats().mappings_expired, 0);
}

#[test]
fn token_bucket_limits_p4_per_source() {
    let config = server::Config {
        bucket_burst: 4,
        bucket_rate: 1,
        ..server::Config::default()
    };
    let mut lab = Lab::new(config);
    let n = nat(&mut lab, NatKind::FullCone, "8.8.8.1", 30);
    // Many clients behind one address, each listing three public addresses: the bucket for
    // that source lets only a burst of P4s through.
    for i in 0..5u16 {
        let mut host = natted(&format!("192.168.1.{}", 10 + i), n, "8.8.8.1", 33000 + i);
        host.interfaces
            .extend(["11.0.0.1", "11.0.0.2", "11.0.0.3"].map(ip));
        lab.add_client(host, |_| {});
    }
    lab.run_for(Duration::from_millis(500));
    let to_listed = lab
        .server
        .sent
        .iter()
        .filter(|(to, _)| to.ip().to_string().starts_with("11."))
        .count();
    assert_eq!(to_listed, 4);
    assert!(lab.server.stats().rate_limited >= 11);
}

#[test]
fn registrations_are_capped_and_released() {
    let config = server::Config {
        max_registrations: 3,
        ..server::Config::default()
    };
    let mut lab = Lab::new(config);
    let n = nat(&mut lab, NatKind::FullCone, "8.8.8.1", 30);
    for i in 0..4u16 {
        lab.add_client(
            natted(&format!("192.168.1.{}", 10 + i), n, "8.8.8.1", 33000 + i),
            |_| {},
        );
    }
    lab.run_for(Duration::from_secs(1));
    assert_eq!(lab.server.registrations(), 3);
    assert!(matches!(
        lab.clients[3].events.last(),
        Some(Event::Failed { .. })
    ));
    lab.close_client(0);
    assert_eq!(lab.server.registrations(), 2);
}

#[test]
fn idle_mappings_expire_on_the_server() {
    let config = server::Config {
        idle_timeout: Duration::from_secs(10),
        ..server::Config::default()
    };
    let (mut lab, _, c) = one_client(config, NatKind::FullCone, 300, |k| {
        k.keepalive_interval = Some(Duration::from_secs(60));
        k.verify_mapping = false;
    });
    lab.run_for(Duration::from_secs(5));
    let index = lab.clients[c].client.user_index();
    assert!(lab.server.mapping(index).is_some());
    // The client falls silent (its UDP is cut off).
    lab.udp_blocked.push(ip("192.168.1.10"));
    lab.run_for(Duration::from_secs(10));
    assert_eq!(lab.server.mapping(index), None);
    assert_eq!(lab.server.stats().mappings_expired, 1);
}

#[test]
fn memory_per_registration_is_small() {
    // 1,000 clients behind one NAT address: above the default per-address cap.
    let mut lab = Lab::new(server::Config {
        max_connections_per_ip: 1000,
        ..server::Config::default()
    });
    let n = nat(&mut lab, NatKind::FullCone, "8.8.8.1", 300);
    for i in 0..1000u16 {
        lab.add_client(
            natted(
                &format!("10.{}.{}.1", i / 250, i % 250),
                n,
                "8.8.8.1",
                1024 + i,
            ),
            |_| {},
        );
    }
    lab.run_for(Duration::from_secs(1));
    assert_eq!(lab.server.registrations(), 1000);
    let per = lab.server.memory_estimate() / 1000;
    assert!(per < 1024, "{per} bytes per registration");
}

#[test]
fn ipv6_client_without_nat_is_public() {
    let mut lab = Lab::new(server::Config::default());
    let c = lab.add_client(
        public("2a00:1450::7", &["192.168.1.10"], "[2a00:1450::7]:40000"),
        |_| {},
    );
    lab.run_for(Duration::from_secs(1));
    assert_eq!(
        verdict_of(&lab, c),
        Some((Verdict::Public, sa("[2a00:1450::7]:5000")))
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn lifetime_is_found_for_any_timeout(
            timeout_ms in 1500u64..200_000,
            symmetric in any::<bool>(),
            inbound_refreshes in any::<bool>(),
        ) {
            // The server keeps silent mappings longer than any NAT timeout tried here.
            let mut lab = Lab::new(server::Config {
                idle_timeout: Duration::from_secs(600),
                ..server::Config::default()
            });
            let kind = if symmetric { NatKind::Symmetric } else { NatKind::FullCone };
            let n = lab.add_nat(NatConfig {
                inbound_refreshes,
                ..NatConfig::new(kind, ip("8.8.8.1")).with_timeout(Duration::from_millis(timeout_ms))
            });
            let c = lab.add_client(natted("192.168.1.10", n, "8.8.8.1", 33000), |k| {
                k.measure_lifetime = true;
            });
            let done = lab.run_until(Duration::from_secs(2400), |lab| {
                lab.clients[c].client.mapping_lifetime().is_some()
            });
            prop_assert!(done);
            let measured = lab.clients[c].client.mapping_lifetime().unwrap().as_secs_f64();
            let t = timeout_ms as f64 / 1000.0;
            prop_assert!(measured < t && measured >= t * 0.85 - 0.5, "timeout {} s, measured {} s", t, measured);
            // The media mapping is kept while the second socket measures, and the chosen
            // interval keeps it afterwards: no loss at all, over the next ten minutes either.
            prop_assert_eq!(lab.clients[c].client.stats().mappings_lost, 0);
            lab.run_for(Duration::from_secs(600));
            prop_assert_eq!(lab.clients[c].client.stats().mappings_lost, 0);
        }

        #[test]
        fn verdict_matches_the_topology(
            topology in 0u8..3,
            host in 2u8..250,
            port in 1024u16..60000,
        ) {
            let mut lab = Lab::new(server::Config::default());
            let n = nat(&mut lab, NatKind::Symmetric, "8.8.8.1", 30);
            let public_ip = format!("7.7.7.{host}");
            // The lab's access address is local_ip:40000 for the first client.
            let public_host = |observed: &str| Host { media_port: port, ..public(&public_ip, &[], observed) };
            let (spec, expected) = match topology {
                0 => (public_host(&format!("{public_ip}:40000")), Verdict::Public),
                1 => (public_host("9.9.9.9:50000"), Verdict::Proxy),
                _ => (natted(&format!("10.0.0.{host}"), n, "8.8.8.1", 40000), Verdict::Nat),
            };
            let c = lab.add_client(spec, |_| {});
            lab.run_for(Duration::from_secs(1));
            let (verdict, mapped) = verdict_of(&lab, c).unwrap();
            prop_assert_eq!(verdict, expected);
            if expected == Verdict::Nat {
                prop_assert_eq!(mapped.ip(), ip("8.8.8.1"));
            } else {
                prop_assert_eq!(mapped, SocketAddr::new(ip(&public_ip), port));
            }
        }
    }
}
