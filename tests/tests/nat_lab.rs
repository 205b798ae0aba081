//! Real binaries across real Linux NAT, in network namespaces that each test makes and tears
//! down (see `pinhole_tests::netns`). Each test checks what the server saw against the topology
//! it built. Skipped, with a message, where namespaces cannot be made (not root).
//!
//! These use `stun-probe` (plain RFC 8489 Binding) as the client: they validate the lab itself
//! and `pinhole-rendezvous`'s view of mapped addresses across NAT.

use std::net::{Ipv4Addr, SocketAddr};

use pinhole_tests::netns::{Host, Lab, NatKind};
use pinhole_tests::{Rendezvous, binary};

/// Runs `stun-probe` inside `host`'s namespace against `servers` from `bind` and returns what
/// each server saw (`None` where it did not answer).
fn probe(lab: &Lab, host: &Host, bind: &str, servers: &[SocketAddr]) -> Vec<Option<SocketAddr>> {
    let mut cmd = lab.command(&host.ns, binary("stun-probe"));
    cmd.args(["--bind", bind, "--timeout-ms", "3000"]);
    for server in servers {
        cmd.args(["--server", &server.to_string()]);
    }
    let out = cmd.output().expect("run stun-probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "stun-probe printed no JSON ({err}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    json["results"]
        .as_array()
        .expect("results array")
        .iter()
        .map(|r| {
            r["mapped"]
                .as_str()
                .map(|m| m.parse().expect("mapped parses"))
        })
        .collect()
}

fn v4(addr: SocketAddr) -> Ipv4Addr {
    match addr {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(a) => panic!("expected IPv4, got {a}"),
    }
}

/// A lab with one server running `pinhole-rendezvous` on `ports` (one process per port).
fn lab_with_server(ports: &[u16]) -> Option<(Lab, Host, Vec<Rendezvous>)> {
    let mut lab = Lab::new()?;
    let server = lab.server("srv").expect("server namespace");
    let servers = ports
        .iter()
        .map(|port| Rendezvous::start_in(&lab, &server.ns, &format!("{}:{port}", server.ip)))
        .collect();
    Some((lab, server, servers))
}

#[test]
fn public_client_sees_its_own_address() {
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let client = lab.public_host("cli").unwrap();
    let mapped = probe(
        &lab,
        &client,
        &format!("{}:40000", client.ip),
        &[servers[0].addr],
    );
    assert_eq!(mapped, vec![Some(SocketAddr::from((client.ip, 40000)))]);
}

#[test]
fn masquerade_maps_to_the_router_wan_address_for_every_destination() {
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478, 3479]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    let mapped = probe(
        &lab,
        &client,
        "0.0.0.0:40000",
        &[servers[0].addr, servers[1].addr],
    );
    let [Some(a), Some(b)] = mapped[..] else {
        panic!("both servers answer: {mapped:?}");
    };
    assert_eq!(
        v4(a),
        nat.wan_ip,
        "the server sees the router, not {}",
        client.ip
    );
    // Linux keeps the source port when it is free, and one mapping serves every destination.
    assert_eq!(a.port(), 40000);
    assert_eq!(a, b, "endpoint-independent mapping");
}

#[test]
fn random_fully_gives_a_new_mapping_per_destination() {
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478, 3479]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::RandomFully).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    let mapped = probe(
        &lab,
        &client,
        "0.0.0.0:40000",
        &[servers[0].addr, servers[1].addr],
    );
    let [Some(a), Some(b)] = mapped[..] else {
        panic!("both servers answer: {mapped:?}");
    };
    assert_eq!(v4(a), nat.wan_ip);
    assert_eq!(v4(b), nat.wan_ip);
    // One local socket, two destinations, two mappings (symmetric NAT). The ports are random:
    // equal by chance with probability ~1/28000.
    assert_ne!(a.port(), b.port(), "a new port per destination: {a} {b}");
}

#[test]
fn two_clients_behind_one_nat_share_the_ip_not_the_port() {
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    let first = lab.host_behind(&mut nat, "c1").unwrap();
    let second = lab.host_behind(&mut nat, "c2").unwrap();
    assert_ne!(first.ip, second.ip);
    // Both use the same local port, so the NAT must pick another for one of them.
    let a = probe(&lab, &first, "0.0.0.0:40000", &[servers[0].addr]);
    let b = probe(&lab, &second, "0.0.0.0:40000", &[servers[0].addr]);
    let (Some(a), Some(b)) = (a[0], b[0]) else {
        panic!("both answered: {a:?} {b:?}");
    };
    assert_eq!(v4(a), nat.wan_ip);
    assert_eq!(v4(b), nat.wan_ip);
    assert_ne!(a.port(), b.port(), "told apart by port: {a} {b}");
}

#[test]
fn private_addresses_do_not_route_on_the_internet() {
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    // The internet has no route to the client's private address, as on the real Internet.
    let err = lab
        .ip(&lab.inet, &["route", "get", &client.ip.to_string()])
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    // But the client reaches the server through the NAT.
    let mapped = probe(&lab, &client, "0.0.0.0:0", &[servers[0].addr]);
    assert_eq!(mapped[0].map(v4), Some(nat.wan_ip));
}
