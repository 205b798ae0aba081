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

// ---------------------------------------------------------------------------------------------
// `pinhole nat-check` across the same topologies: the patent's exchange, end to end.

use std::time::Duration;

use pinhole_tests::output_within;

/// True when the `pinhole` binary has the `nat-check` subcommand (skips with a message if not).
fn nat_check_available() -> bool {
    let ok = pinhole_tests::command("pinhole")
        .args(["nat-check", "--help"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !ok {
        eprintln!("SKIP: `pinhole nat-check` is not built");
    }
    ok
}

/// Runs `pinhole nat-check --server SERVER --json ARGS...` inside `host`'s namespace and
/// returns its JSON report (panics, with its output, if it fails or runs past `limit`).
fn nat_check(
    lab: &Lab,
    host: &Host,
    server: SocketAddr,
    args: &[&str],
    limit: Duration,
) -> serde_json::Value {
    let mut cmd = lab.command(&host.ns, binary("pinhole"));
    cmd.args(["nat-check", "--server", &server.to_string(), "--json"])
        .args(args)
        .env("RUST_LOG", "warn");
    let out = output_within(&mut cmd, limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nat-check failed: {stdout} {stderr}");
    eprintln!("nat-check in {}: {}", host.ns.name, stdout.trim());
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("nat-check printed no JSON ({err}): {stdout} {stderr}"))
}

fn mapped(report: &serde_json::Value) -> SocketAddr {
    report["mapped_address"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no mapped_address in {report}"))
}

#[test]
fn nat_check_public_client() {
    if !nat_check_available() {
        return;
    }
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let client = lab.public_host("cli").unwrap();
    let report = nat_check(&lab, &client, servers[0].addr, &[], Duration::from_secs(15));
    assert_eq!(report["verdict"], "public", "{report}");
    assert_eq!(report["behind_nat"], false, "{report}");
    assert_eq!(v4(mapped(&report)), client.ip, "{report}");
    let locals: Vec<&str> = report["local_addresses"]
        .as_array()
        .expect("local_addresses")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(locals.contains(&client.ip.to_string().as_str()), "{report}");
}

#[test]
fn nat_check_behind_masquerade() {
    if !nat_check_available() {
        return;
    }
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    let report = nat_check(&lab, &client, servers[0].addr, &[], Duration::from_secs(15));
    assert_eq!(report["verdict"], "nat", "{report}");
    assert_eq!(report["behind_nat"], true, "{report}");
    assert_eq!(v4(mapped(&report)), nat.wan_ip, "{report}");
    assert!(report["user_index"].is_u64(), "{report}");
}

#[test]
fn nat_check_behind_random_fully() {
    if !nat_check_available() {
        return;
    }
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::RandomFully).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    let report = nat_check(&lab, &client, servers[0].addr, &[], Duration::from_secs(15));
    assert_eq!(report["verdict"], "nat", "{report}");
    assert_eq!(report["behind_nat"], true, "{report}");
    assert_eq!(v4(mapped(&report)), nat.wan_ip, "{report}");
}

#[test]
fn nat_check_two_clients_behind_one_nat_are_told_apart() {
    if !nat_check_available() {
        return;
    }
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    let first = lab.host_behind(&mut nat, "c1").unwrap();
    let second = lab.host_behind(&mut nat, "c2").unwrap();
    let server = servers[0].addr;
    // Both registered at the same time: each holds its registration for 2 s.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            nat_check(
                &lab,
                &first,
                server,
                &["--hold", "2"],
                Duration::from_secs(20),
            )
        });
        let b = scope.spawn(|| {
            nat_check(
                &lab,
                &second,
                server,
                &["--hold", "2"],
                Duration::from_secs(20),
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    for report in [&a, &b] {
        assert_eq!(report["verdict"], "nat", "{report}");
        assert_eq!(v4(mapped(report)), nat.wan_ip, "{report}");
    }
    assert_ne!(a["user_index"], b["user_index"], "{a} {b}");
    assert_ne!(mapped(&a).port(), mapped(&b).port(), "{a} {b}");
}

#[test]
fn nat_check_keepalives_hold_a_short_lived_mapping() {
    if !nat_check_available() {
        return;
    }
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    lab.set_udp_timeout(&nat, Duration::from_secs(3)).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    let report = nat_check(
        &lab,
        &client,
        servers[0].addr,
        &["--hold", "10", "--keepalive-interval", "1"],
        Duration::from_secs(30),
    );
    assert_eq!(report["verdict"], "nat", "{report}");
    assert_eq!(report["reachable_at_end"], true, "{report}");
    assert_eq!(report["mapping_lost"], false, "{report}");
}

#[test]
fn nat_check_notices_a_mapping_lost_without_keepalives() {
    if !nat_check_available() {
        return;
    }
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    lab.set_udp_timeout(&nat, Duration::from_secs(3)).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    // Keepalives every 60 s against a 3 s NAT timeout: the mapping dies during the hold.
    let report = nat_check(
        &lab,
        &client,
        servers[0].addr,
        &["--hold", "8", "--keepalive-interval", "60"],
        Duration::from_secs(30),
    );
    assert_eq!(report["verdict"], "nat", "{report}");
    assert_eq!(report["mapping_lost"], true, "{report}");
    assert_eq!(report["reachable_at_end"], false, "{report}");
}

#[test]
fn nat_check_measures_the_mapping_lifetime() {
    if !nat_check_available() {
        return;
    }
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    lab.set_udp_timeout(&nat, Duration::from_secs(4)).unwrap();
    let client = lab.host_behind(&mut nat, "cli").unwrap();
    let report = nat_check(
        &lab,
        &client,
        servers[0].addr,
        &["--measure-lifetime", "--lifetime-max", "12"],
        Duration::from_secs(60),
    );
    let lifetime = report["mapping_lifetime_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("no mapping_lifetime_s: {report}"));
    assert!(
        (2.0..=8.0).contains(&lifetime),
        "measured {lifetime} s for a 4 s conntrack timeout: {report}"
    );
}

/// The `proxy` verdict: the client has a public address of its own and its UDP leaves from
/// it, but its TCP control connection goes through a box that masquerades TCP (a proxy), so the
/// server sees TCP from another address.
///
/// ```text
///   cli ns: eth0 203.0.113.x (main table: UDP straight to the internet)
///           prx0 192.168.77.2/30 ──► prx ns 192.168.77.1, eth0 203.0.113.y, MASQUERADE -p tcp
///           `ip rule add ipproto tcp lookup 100`; table 100: default via 192.168.77.1
/// ```
#[test]
fn nat_check_proxy_verdict() {
    if !nat_check_available() {
        return;
    }
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let client = lab.public_host("cli").unwrap();
    let proxy = lab.public_host("prx").unwrap();
    lab.link(
        &proxy.ns,
        "lan0",
        "192.168.77.1/30",
        &client.ns,
        "prx0",
        "192.168.77.2/30",
    )
    .unwrap();
    lab.sysctl(&proxy.ns, "net.ipv4.ip_forward", "1").unwrap();
    lab.iptables(
        &proxy.ns,
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "eth0",
            "-p",
            "tcp",
            "-j",
            "MASQUERADE",
        ],
    )
    .unwrap();
    lab.ip(
        &client.ns,
        &[
            "route",
            "add",
            "default",
            "via",
            "192.168.77.1",
            "table",
            "100",
        ],
    )
    .unwrap();
    lab.ip(
        &client.ns,
        &["rule", "add", "ipproto", "tcp", "lookup", "100"],
    )
    .unwrap();
    let report = nat_check(&lab, &client, servers[0].addr, &[], Duration::from_secs(15));
    assert_eq!(report["verdict"], "proxy", "{report}");
    assert_eq!(
        v4(mapped(&report)),
        client.ip,
        "UDP arrives from the client's own address"
    );
    assert_eq!(
        report["behind_nat"], true,
        "the TCP access address is private: {report}"
    );
    if let Some(tcp) = report["observed_tcp"].as_str() {
        let tcp: SocketAddr = tcp.parse().unwrap();
        assert_eq!(v4(tcp), proxy.ip, "TCP arrives from the proxy: {report}");
    }
}

#[test]
fn lab_teardown_kills_its_processes_and_deletes_its_namespaces() {
    let Some(mut lab) = Lab::new() else {
        return;
    };
    let host = lab.public_host("t").unwrap();
    let names: Vec<String> = lab.namespaces().iter().map(|ns| ns.name.clone()).collect();
    let mut sleeper = lab.command(&host.ns, "sleep");
    sleeper.arg("300");
    let child = lab.spawn(&mut sleeper).unwrap();
    let pid = child.id();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(lab);
    // Killed (and reaped) by PID, namespaces gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived the lab"
    );
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for name in names {
        assert!(!list.contains(&name), "{name} survived the lab: {list}");
    }
    drop(child);
}

#[test]
fn random_loss_on_the_internet_router_drops_some_udp() {
    let Some((mut lab, _server, servers)) = lab_with_server(&[3478]) else {
        return;
    };
    let client = lab.public_host("cli").unwrap();
    // Everything dropped: no answer at all (and the probe says so rather than hanging).
    lab.drop_udp_randomly(&lab.inet, 1.0).unwrap();
    let mut cmd = lab.command(&client.ns, binary("stun-probe"));
    cmd.args([
        "--timeout-ms",
        "600",
        "--server",
        &servers[0].addr.to_string(),
    ]);
    let out = output_within(&mut cmd, Duration::from_secs(10));
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["results"][0]["mapped"].is_null(), "{json}");
}

#[test]
fn public_ipv6_client_sees_its_own_address() {
    let Some(mut lab) = Lab::new() else {
        return;
    };
    let server = lab.server("srv").unwrap();
    let server6 = server.ip6.expect("servers have IPv6");
    let rendezvous = Rendezvous::start_in(&lab, &server.ns, &format!("[{server6}]:3478"));
    let client = lab.public_host("cli").unwrap();
    let client6 = client.ip6.expect("public hosts have IPv6");
    let mapped = probe(
        &lab,
        &client,
        &format!("[{client6}]:40000"),
        &[rendezvous.addr],
    );
    assert_eq!(mapped, vec![Some(SocketAddr::from((client6, 40000)))]);
}

#[test]
fn nat_check_public_ipv6_client() {
    if !nat_check_available() {
        return;
    }
    let Some(mut lab) = Lab::new() else {
        return;
    };
    let server = lab.server("srv").unwrap();
    let server6 = server.ip6.expect("servers have IPv6");
    let rendezvous = Rendezvous::start_in(&lab, &server.ns, &format!("[{server6}]:3478"));
    let client = lab.public_host("cli").unwrap();
    let client6 = client.ip6.expect("public hosts have IPv6");
    let report = nat_check(&lab, &client, rendezvous.addr, &[], Duration::from_secs(15));
    assert_eq!(report["verdict"], "public", "{report}");
    assert_eq!(report["behind_nat"], false, "{report}");
    assert_eq!(
        mapped(&report).ip(),
        std::net::IpAddr::V6(client6),
        "{report}"
    );
    let locals: Vec<&str> = report["local_addresses"]
        .as_array()
        .expect("local_addresses")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(locals.contains(&client6.to_string().as_str()), "{report}");
    assert!(locals.contains(&client.ip.to_string().as_str()), "{report}");
}

#[test]
fn hosts_behind_one_nat_share_a_lan() {
    let Some(mut lab) = Lab::new() else {
        return;
    };
    let mut nat = lab.nat(NatKind::Masquerade).unwrap();
    let first = lab.host_behind(&mut nat, "c1").unwrap();
    let second = lab.host_behind(&mut nat, "c2").unwrap();
    // A server on the second host's private address: the first reaches it directly, without
    // the NAT in between (it sees the first host's own private address).
    let local = Rendezvous::start_in(&lab, &second.ns, &format!("{}:3478", second.ip));
    let mapped = probe(&lab, &first, "0.0.0.0:40000", &[local.addr]);
    assert_eq!(mapped, vec![Some(SocketAddr::from((first.ip, 40000)))]);
}
