//! Interop with a third-party STUN implementation: coturn (Debian's `coturn` package, listed in
//! scripts/packages/nat-tests.txt). Without coturn (or root, for the lab) the tests fail under
//! `./dev test` and skip by hand (`pinhole_tests::prereq`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use pinhole_tests::netns::{Host, Lab, Nat, NatKind};
use pinhole_tests::{Coturn, Place, Rendezvous, command, output_within, prereq, stun_client};

fn have_stunclient() -> bool {
    if Command::new("turnutils_stunclient").output().is_err() {
        prereq::missing("coturn's turnutils_stunclient is not installed");
        return false;
    }
    true
}

/// A lab with a server host on its internet and a client behind a NAT of `kind`.
fn lab_behind(kind: NatKind) -> Option<(Lab, Host, Nat, Host)> {
    let mut lab = Lab::new()?;
    let server = lab.server("srv").unwrap();
    let mut nat = lab.nat(kind).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    Some((lab, server, nat, client))
}

/// `pinhole nat-check --stun SERVER --json` at `place`: its JSON report (it must succeed) and
/// the mapped address in it.
fn nat_check_stun(place: Place<'_>, server: SocketAddr) -> (serde_json::Value, SocketAddr) {
    let mut cmd = place.command("pinhole");
    cmd.args(["nat-check", "--stun", &server.to_string(), "--json"]);
    let out = output_within(&mut cmd, Duration::from_secs(15));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nat-check --stun failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let mapped = json["mapped_address"].as_str().unwrap().parse().unwrap();
    (json, mapped)
}

/// The addresses in turnutils_stunclient's "UDP reflexive addr: IP:PORT" lines.
fn reflexive(stdout: &str) -> Vec<SocketAddr> {
    stdout
        .lines()
        .filter_map(|line| line.split("UDP reflexive addr: ").nth(1))
        .filter_map(|addr| addr.trim().parse().ok())
        .collect()
}

#[test]
fn turnutils_stunclient_gets_its_address_from_pinhole_rendezvous() {
    if !have_stunclient() {
        return;
    }
    let server = Rendezvous::start("127.0.0.1:0");
    let out = output_within(
        Command::new("turnutils_stunclient")
            .args(["-p", &server.addr.port().to_string()])
            .arg(server.addr.ip().to_string()),
        Duration::from_secs(10),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mapped = reflexive(&stdout);
    assert!(!mapped.is_empty(), "no reflexive address in: {stdout}");
    for addr in mapped {
        assert_eq!(addr.ip(), IpAddr::from([127, 0, 0, 1]), "{stdout}");
        assert_ne!(addr.port(), 0);
        assert_ne!(addr.port(), server.addr.port());
    }
}

/// Across a real NAT the port matters too: the NAT's own conntrack table says which mapping it
/// made, and coturn's client must report exactly that from our server's answer.
#[test]
fn turnutils_stunclient_through_nat_reports_the_nat_mapping() {
    if !have_stunclient() {
        return;
    }
    let Some((lab, server_host, nat, client)) = lab_behind(NatKind::RandomFully) else {
        return;
    };
    let server = Rendezvous::start_in(&lab, &server_host.ns, &format!("{}:3478", server_host.ip));
    let out = output_within(
        lab.command(&client.ns, "turnutils_stunclient")
            .args(["-p", "3478"])
            .arg(server.addr.ip().to_string()),
        Duration::from_secs(10),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mapped = reflexive(&stdout);
    assert!(!mapped.is_empty(), "no reflexive address in: {stdout}");
    // The NAT's entries for flows to the server: "... src=SERVER dst=WAN sport=3478 dport=P".
    let table = lab
        .exec(
            &nat.ns,
            "conntrack",
            &["-L", "-p", "udp", "--orig-dst", &server_host.ip.to_string()],
        )
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let nat_ports: Vec<u16> = table
        .lines()
        .filter_map(|line| line.split("dport=").nth(2))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!nat_ports.is_empty(), "no conntrack entry: {table}");
    for addr in mapped {
        assert_eq!(addr.ip(), IpAddr::V4(nat.wan_ip), "{stdout}");
        assert!(
            nat_ports.contains(&addr.port()),
            "mapped {addr} is not a mapping of the NAT: {table}"
        );
    }
}

/// Our STUN codec reads coturn's answers (the other direction of interop).
#[test]
fn stun_probe_gets_its_address_from_coturn() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mapped =
        stun_client::binding_many(&socket, &[coturn.addr], Duration::from_secs(5)).unwrap();
    assert_eq!(mapped, vec![Some(socket.local_addr().unwrap())]);
    // And the probe binary says the same.
    let out = output_within(
        command("stun-probe").args([
            "--bind",
            "127.0.0.1:40123",
            "--server",
            &coturn.addr.to_string(),
        ]),
        Duration::from_secs(10),
    );
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["results"][0]["mapped"], "127.0.0.1:40123");
}

/// `pinhole nat-check --stun` against coturn.
#[test]
fn pinhole_nat_check_stun_works_against_coturn() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let (json, mapped) = nat_check_stun(Place::Local, coturn.addr);
    assert_eq!(mapped.ip(), IpAddr::from([127, 0, 0, 1]), "{json}");
    assert_ne!(mapped.port(), 0);
    assert_eq!(json["behind_nat"], false, "{json}");
}

/// `pinhole nat-check --stun` against coturn across a real NAT: the mapped address is the
/// router's, and plain STUN is enough to say "behind NAT".
#[test]
fn pinhole_nat_check_stun_against_coturn_through_nat() {
    let Some((lab, server, nat, client)) = lab_behind(NatKind::Masquerade) else {
        return;
    };
    let Some(coturn) = Coturn::start_in(&lab, &server.ns, server.ip, 3478) else {
        return;
    };
    let (json, mapped) = nat_check_stun(Place::In(&lab, &client.ns), coturn.addr);
    assert_eq!(mapped.ip(), IpAddr::V4(nat.wan_ip), "{json}");
    assert_eq!(json["behind_nat"], true, "{json}");
    assert_eq!(json["verdict"], "nat", "{json}");
}
