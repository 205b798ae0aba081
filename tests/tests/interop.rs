//! Interop with a third-party STUN implementation: coturn (Debian's `coturn` package, listed in
//! scripts/packages/nat-tests.txt). Each test skips with a message when coturn is missing.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use pinhole_tests::netns::{Lab, NatKind};
use pinhole_tests::{Coturn, Rendezvous, binary, command, output_within, stun_client};

fn have_stunclient() -> bool {
    if Command::new("turnutils_stunclient").output().is_err() {
        eprintln!("SKIP: coturn's turnutils_stunclient is not installed");
        return false;
    }
    true
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
    let Some(mut lab) = Lab::new() else {
        return;
    };
    let server_host = lab.server("srv").unwrap();
    let server = Rendezvous::start_in(&lab, &server_host.ns, &format!("{}:3478", server_host.ip));
    let mut nat = lab.nat(NatKind::RandomFully).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
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
        Command::new(binary("stun-probe")).args([
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

/// `pinhole nat-check --stun` against coturn, once that subcommand exists.
#[test]
fn pinhole_nat_check_stun_works_against_coturn() {
    let help = command("pinhole")
        .args(["nat-check", "--help"])
        .output()
        .unwrap();
    let help_text = String::from_utf8_lossy(&help.stdout);
    if !help.status.success() || !help_text.contains("--stun") {
        eprintln!("SKIP: `pinhole nat-check --stun` is not built yet");
        return;
    }
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let out = output_within(
        command("pinhole").args(["nat-check", "--stun", &coturn.addr.to_string(), "--json"]),
        Duration::from_secs(15),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nat-check --stun failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let mapped: SocketAddr = json["mapped_address"].as_str().unwrap().parse().unwrap();
    assert_eq!(mapped.ip(), IpAddr::from([127, 0, 0, 1]), "{stdout}");
    assert_ne!(mapped.port(), 0);
    assert_eq!(json["behind_nat"], false, "{stdout}");
}

/// `pinhole nat-check --stun` against coturn across a real NAT: the mapped address is the
/// router's, and plain STUN is enough to say "behind NAT".
#[test]
fn pinhole_nat_check_stun_against_coturn_through_nat() {
    let help = command("pinhole")
        .args(["nat-check", "--help"])
        .output()
        .unwrap();
    if !help.status.success() || !String::from_utf8_lossy(&help.stdout).contains("--stun") {
        eprintln!("SKIP: `pinhole nat-check --stun` is not built yet");
        return;
    }
    let Some(mut lab) = Lab::new() else {
        return;
    };
    let server = lab.server("srv").unwrap();
    let Some(coturn) = Coturn::start_in(&lab, &server.ns, server.ip, 3478) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    let mut cmd = lab.command(&client.ns, binary("pinhole"));
    cmd.args(["nat-check", "--stun", &coturn.addr.to_string(), "--json"]);
    let out = output_within(&mut cmd, Duration::from_secs(15));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nat-check --stun failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let mapped: SocketAddr = json["mapped_address"].as_str().unwrap().parse().unwrap();
    assert_eq!(mapped.ip(), IpAddr::V4(nat.wan_ip), "{stdout}");
    assert_eq!(json["behind_nat"], true, "{stdout}");
    assert_eq!(json["verdict"], "nat", "{stdout}");
}
