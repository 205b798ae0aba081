//! Real binaries across real Linux NAT, in network namespaces that each test makes and tears
//! down (see `pinhole_tests::netns`). Each test checks what the server saw against the topology
//! it built. Without root (namespaces) they fail under `./dev test` and skip by hand
//! (`pinhole_tests::prereq`).
//!
//! `stun-probe` (plain RFC 8489 Binding) validates the lab itself and `pinhole-rendezvous`'s view
//! of mapped addresses across NAT; `pinhole nat-check` runs the patent's exchange end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pinhole_tests::netns::{Host, Lab, Nat, NatKind};
use pinhole_tests::{Place, Rendezvous, binary, output_within};

/// The common topology: a server running `pinhole-rendezvous` (one process per port) and one
/// client, on the internet or behind a NAT.
struct World {
    lab: Lab,
    servers: Vec<Rendezvous>,
    nat: Option<Nat>,
    client: Host,
}

impl World {
    /// Builds it; `None` where the lab cannot be made (after `prereq::missing`).
    fn new(ports: &[u16], behind: Option<NatKind>, udp_timeout: Option<u64>) -> Option<Self> {
        let mut lab = Lab::new()?;
        let server = lab.server("srv").unwrap();
        let servers = ports
            .iter()
            .map(|port| Rendezvous::start_in(&lab, &server.ns, &format!("{}:{port}", server.ip)))
            .collect();
        let (nat, client) = match behind {
            None => (None, lab.public_host("cli").unwrap()),
            Some(kind) => {
                let mut nat = lab.nat(kind).unwrap();
                if let Some(secs) = udp_timeout {
                    lab.set_udp_timeout(&nat, Duration::from_secs(secs))
                        .unwrap();
                }
                let client = lab.host_behind(&mut nat, "cli").unwrap();
                (Some(nat), client)
            }
        };
        Some(Self {
            lab,
            servers,
            nat,
            client,
        })
    }

    fn server(&self) -> SocketAddr {
        self.servers[0].addr
    }

    fn wan_ip(&self) -> Ipv4Addr {
        self.nat.as_ref().expect("behind a NAT").wan_ip
    }

    /// `stun-probe` from the client to every server.
    fn probe(&self, bind: &str) -> Vec<Option<SocketAddr>> {
        let servers: Vec<SocketAddr> = self.servers.iter().map(|s| s.addr).collect();
        probe(&self.lab, &self.client, bind, &servers)
    }

    /// `pinhole nat-check` from the client against the first server.
    fn nat_check(&self, args: &[&str], limit: u64) -> serde_json::Value {
        nat_check(&self.lab, &self.client, self.server(), args, limit)
    }
}

/// Runs `stun-probe` inside `host`'s namespace against `servers` from `bind` and returns what
/// each server saw (`None` where it did not answer).
fn probe(lab: &Lab, host: &Host, bind: &str, servers: &[SocketAddr]) -> Vec<Option<SocketAddr>> {
    let json = stun_probe(
        lab,
        host,
        &["--bind", bind, "--timeout-ms", "3000"],
        servers,
    );
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

/// `stun-probe ARGS --server S...` in `host`'s namespace: its JSON report.
fn stun_probe(lab: &Lab, host: &Host, args: &[&str], servers: &[SocketAddr]) -> serde_json::Value {
    let mut cmd = Place::In(lab, &host.ns).command("stun-probe");
    cmd.args(args);
    for server in servers {
        cmd.args(["--server", &server.to_string()]);
    }
    let out = output_within(&mut cmd, Duration::from_secs(10));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "stun-probe printed no JSON ({err}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `pinhole nat-check --server SERVER --json ARGS...` inside `host`'s namespace and
/// returns its JSON report (panics, with its output, if it fails or runs past `limit` s).
fn nat_check(
    lab: &Lab,
    host: &Host,
    server: SocketAddr,
    args: &[&str],
    limit: u64,
) -> serde_json::Value {
    let mut cmd = lab.command(&host.ns, binary("pinhole"));
    cmd.args(["nat-check", "--server", &server.to_string(), "--json"])
        .args(args)
        .env("RUST_LOG", "warn");
    let out = output_within(&mut cmd, Duration::from_secs(limit));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nat-check failed: {stdout} {stderr}");
    eprintln!("nat-check in {}: {}", host.ns.name, stdout.trim());
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("nat-check printed no JSON ({err}): {stdout} {stderr}"))
}

fn v4(addr: SocketAddr) -> Ipv4Addr {
    match addr {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(a) => panic!("expected IPv4, got {a}"),
    }
}

fn mapped(report: &serde_json::Value) -> SocketAddr {
    report["mapped_address"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no mapped_address in {report}"))
}

/// The report's local addresses.
fn locals(report: &serde_json::Value) -> Vec<IpAddr> {
    report["local_addresses"]
        .as_array()
        .expect("local_addresses")
        .iter()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect()
}

/// The mapped addresses two probes from port 40000 got, both answered.
fn two_mappings(world: &World) -> (SocketAddr, SocketAddr) {
    let mapped = world.probe("0.0.0.0:40000");
    let [Some(a), Some(b)] = mapped[..] else {
        panic!("both servers answer: {mapped:?}");
    };
    assert_eq!(
        v4(a),
        world.wan_ip(),
        "the server sees the router, not {}",
        world.client.ip
    );
    assert_eq!(v4(b), world.wan_ip());
    (a, b)
}

#[test]
fn public_client_sees_its_own_address() {
    let Some(w) = World::new(&[3478], None, None) else {
        return;
    };
    let mapped = w.probe(&format!("{}:40000", w.client.ip));
    assert_eq!(mapped, vec![Some(SocketAddr::from((w.client.ip, 40000)))]);
}

#[test]
fn masquerade_maps_to_the_router_wan_address_for_every_destination() {
    let Some(w) = World::new(&[3478, 3479], Some(NatKind::Masquerade), None) else {
        return;
    };
    let (a, b) = two_mappings(&w);
    // Linux keeps the source port when it is free, and one mapping serves every destination.
    assert_eq!(a.port(), 40000);
    assert_eq!(a, b, "endpoint-independent mapping");
}

#[test]
fn random_fully_gives_a_new_mapping_per_destination() {
    let Some(w) = World::new(&[3478, 3479], Some(NatKind::RandomFully), None) else {
        return;
    };
    let (a, b) = two_mappings(&w);
    // One local socket, two destinations, two mappings (symmetric NAT). The ports are random:
    // equal by chance with probability ~1/28000.
    assert_ne!(a.port(), b.port(), "a new port per destination: {a} {b}");
}

#[test]
fn two_clients_behind_one_nat_share_the_ip_not_the_port() {
    let Some(mut w) = World::new(&[3478], Some(NatKind::Masquerade), None) else {
        return;
    };
    let second = w.lab.host_behind(w.nat.as_mut().unwrap(), "c2").unwrap();
    assert_ne!(w.client.ip, second.ip);
    // Both use the same local port, so the NAT must pick another for one of them.
    let a = w.probe("0.0.0.0:40000");
    let b = probe(&w.lab, &second, "0.0.0.0:40000", &[w.server()]);
    let (Some(a), Some(b)) = (a[0], b[0]) else {
        panic!("both answered: {a:?} {b:?}");
    };
    assert_eq!(v4(a), w.wan_ip());
    assert_eq!(v4(b), w.wan_ip());
    assert_ne!(a.port(), b.port(), "told apart by port: {a} {b}");
}

#[test]
fn private_addresses_do_not_route_on_the_internet() {
    let Some(w) = World::new(&[3478], Some(NatKind::Masquerade), None) else {
        return;
    };
    // The internet has no route to the client's private address, as on the real Internet.
    let err = w
        .lab
        .ip(&w.lab.inet, &["route", "get", &w.client.ip.to_string()])
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    // But the client reaches the server through the NAT.
    let mapped = w.probe("0.0.0.0:0");
    assert_eq!(mapped[0].map(v4), Some(w.wan_ip()));
}

// ---------------------------------------------------------------------------------------------
// `pinhole nat-check` across the same topologies: the patent's exchange, end to end.

#[test]
fn nat_check_public_client() {
    let Some(w) = World::new(&[3478], None, None) else {
        return;
    };
    let report = w.nat_check(&[], 15);
    assert_eq!(report["verdict"], "public", "{report}");
    assert_eq!(report["nat_ports"], "unknown", "{report}");
    assert_eq!(report["behind_nat"], false, "{report}");
    assert_eq!(v4(mapped(&report)), w.client.ip, "{report}");
    assert!(
        locals(&report).contains(&IpAddr::V4(w.client.ip)),
        "{report}"
    );
}

/// `nat-check` behind a NAT of `kind`: verdict `nat`, mapped to the router's WAN address, the
/// NAT's ports kept (`MASQUERADE`) or random (`--random-fully`).
fn nat_check_behind(kind: NatKind) {
    let Some(w) = World::new(&[3478], Some(kind), None) else {
        return;
    };
    let report = w.nat_check(&[], 15);
    let ports = match kind {
        NatKind::RandomFully => "random",
        _ => "kept",
    };
    assert_eq!(report["nat_ports"], ports, "{report}");
    assert_eq!(report["verdict"], "nat", "{report}");
    assert_eq!(report["behind_nat"], true, "{report}");
    assert_eq!(v4(mapped(&report)), w.wan_ip(), "{report}");
    assert!(report["user_index"].is_u64(), "{report}");
}

#[test]
fn nat_check_behind_masquerade() {
    nat_check_behind(NatKind::Masquerade);
}

#[test]
fn nat_check_behind_random_fully() {
    nat_check_behind(NatKind::RandomFully);
}

#[test]
fn nat_check_two_clients_behind_one_nat_are_told_apart() {
    let Some(mut w) = World::new(&[3478], Some(NatKind::Masquerade), None) else {
        return;
    };
    let second = w.lab.host_behind(w.nat.as_mut().unwrap(), "c2").unwrap();
    // Both registered at the same time: each holds its registration for 2 s.
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| w.nat_check(&["--hold", "2"], 20));
        let b = scope.spawn(|| nat_check(&w.lab, &second, w.server(), &["--hold", "2"], 20));
        (a.join().unwrap(), b.join().unwrap())
    });
    for report in [&a, &b] {
        assert_eq!(report["verdict"], "nat", "{report}");
        assert_eq!(v4(mapped(report)), w.wan_ip(), "{report}");
    }
    assert_ne!(a["user_index"], b["user_index"], "{a} {b}");
    assert_ne!(mapped(&a).port(), mapped(&b).port(), "{a} {b}");
}

/// Holds a registration behind a MASQUERADE NAT with a 3 s UDP timeout for `hold` s, with
/// keepalives every `interval` s: whether the mapping was lost, and reachable at the end.
fn hold_behind_a_short_timeout(hold: &str, interval: &str, lost: bool) {
    let Some(w) = World::new(&[3478], Some(NatKind::Masquerade), Some(3)) else {
        return;
    };
    let report = w.nat_check(&["--hold", hold, "--keepalive-interval", interval], 30);
    assert_eq!(report["verdict"], "nat", "{report}");
    assert_eq!(report["mapping_lost"], lost, "{report}");
    assert_eq!(report["reachable_at_end"], !lost, "{report}");
}

#[test]
fn nat_check_keepalives_hold_a_short_lived_mapping() {
    hold_behind_a_short_timeout("10", "1", false);
}

#[test]
fn nat_check_notices_a_mapping_lost_without_keepalives() {
    // Keepalives every 60 s against a 3 s NAT timeout: the mapping dies during the hold.
    hold_behind_a_short_timeout("8", "60", true);
}

#[test]
fn nat_check_measures_the_mapping_lifetime() {
    let Some(w) = World::new(&[3478], Some(NatKind::Masquerade), Some(4)) else {
        return;
    };
    let report = w.nat_check(&["--measure-lifetime", "--lifetime-max", "12"], 60);
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
    let Some(mut w) = World::new(&[3478], None, None) else {
        return;
    };
    let (lab, client) = (&mut w.lab, &w.client);
    let proxy = lab.public_host("prx").unwrap();
    let (near, far) = ("192.168.77.1", "192.168.77.2");
    lab.link(
        &proxy.ns,
        "lan0",
        &format!("{near}/30"),
        &client.ns,
        "prx0",
        &format!("{far}/30"),
    )
    .unwrap();
    lab.sysctl(&proxy.ns, "net.ipv4.ip_forward", "1").unwrap();
    lab.masquerade(&proxy.ns, &["-p", "tcp"], &[]).unwrap();
    lab.ip(
        &client.ns,
        &["route", "add", "default", "via", near, "table", "100"],
    )
    .unwrap();
    lab.ip(
        &client.ns,
        &["rule", "add", "ipproto", "tcp", "lookup", "100"],
    )
    .unwrap();
    let report = w.nat_check(&[], 15);
    assert_eq!(report["verdict"], "proxy", "{report}");
    assert_eq!(
        v4(mapped(&report)),
        w.client.ip,
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
    let proc = std::path::PathBuf::from(format!("/proc/{}", child.id()));
    assert!(proc.exists());
    drop(lab);
    // Killed (and reaped) by PID, namespaces gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while proc.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!proc.exists(), "{} survived the lab", proc.display());
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
    let Some(w) = World::new(&[3478], None, None) else {
        return;
    };
    // Everything dropped: no answer at all (and the probe says so rather than hanging).
    w.lab.drop_udp_randomly(&w.lab.inet, 1.0).unwrap();
    let json = stun_probe(&w.lab, &w.client, &["--timeout-ms", "600"], &[w.server()]);
    assert!(json["results"][0]["mapped"].is_null(), "{json}");
}

/// A lab with a server listening on its IPv6 address and a public client: (lab, server,
/// client, the client's IPv6 address).
fn ipv6_world() -> Option<(Lab, Rendezvous, Host, std::net::Ipv6Addr)> {
    let mut lab = Lab::new()?;
    let server = lab.server("srv").unwrap();
    let server6 = server.ip6.expect("servers have IPv6");
    let rendezvous = Rendezvous::start_in(&lab, &server.ns, &format!("[{server6}]:3478"));
    let client = lab.public_host("cli").unwrap();
    let client6 = client.ip6.expect("public hosts have IPv6");
    Some((lab, rendezvous, client, client6))
}

#[test]
fn public_ipv6_client_sees_its_own_address() {
    let Some((lab, server, client, client6)) = ipv6_world() else {
        return;
    };
    let bind = format!("[{client6}]:40000");
    let mapped = probe(&lab, &client, &bind, &[server.addr]);
    assert_eq!(mapped, vec![Some(SocketAddr::from((client6, 40000)))]);
}

#[test]
fn nat_check_public_ipv6_client() {
    let Some((lab, server, client, client6)) = ipv6_world() else {
        return;
    };
    let report = nat_check(&lab, &client, server.addr, &[], 15);
    assert_eq!(report["verdict"], "public", "{report}");
    assert_eq!(report["behind_nat"], false, "{report}");
    assert_eq!(mapped(&report).ip(), IpAddr::V6(client6), "{report}");
    let locals = locals(&report);
    assert!(locals.contains(&IpAddr::V6(client6)), "{report}");
    assert!(locals.contains(&IpAddr::V4(client.ip)), "{report}");
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
