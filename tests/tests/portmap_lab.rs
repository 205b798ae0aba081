//! The NAT lab's port-mapping routers, carrier NAT and deep internet (`pinhole_tests::netns`,
//! `pinhole_tests::miniupnpd`), checked with third-party tools and plain UDP:
//! - a real `miniupnpd` on a port-random router: `upnpc` (UPnP IGD) and `natpmpc` (NAT-PMP)
//!   from a host behind it add a mapping, and a public host's datagram to the router's WAN
//!   address and that port reaches the host (it did not before, and does not after the mapping
//!   is deleted), with the router's WAN firewall on;
//! - `Lab::internet_hops`: a datagram with a small TTL makes the mapping on its own NAT and dies
//!   in the internet before the far router (no conntrack entry there), one with enough TTL
//!   arrives;
//! - `Lab::nat_behind` a `Lab::carrier_nat`: a host behind both reaches a public host, which
//!   sees the carrier's WAN address; a miniupnpd on that home router refuses mappings (its WAN
//!   address is shared address space), as a real one does.
//!
//! Without root, miniupnpd, upnpc or natpmpc (scripts/packages/nat-tests.txt) they fail under
//! `./dev test` and skip by hand (`pinhole_tests::prereq`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pinhole_tests::hostile::{enter, in_namespace};
use pinhole_tests::miniupnpd::{self, Protocols, Upnp};
use pinhole_tests::netns::{Host, Lab, Nat, NatKind, Ns};
use pinhole_tests::output_within;
use pinhole_tests::prereq::missing;

/// How long a datagram that should arrive may take; also how long we wait for one that must
/// not.
const WAIT: Duration = Duration::from_millis(1500);

/// True when `program` runs (`--help` or not, any exit status); otherwise `prereq::missing`.
fn tool(program: &str, package: &str) -> bool {
    let found = Command::new(program)
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        missing(format!(
            "{program} is not installed (Debian {package}, scripts/packages/nat-tests.txt)"
        ));
    }
    found
}

/// A UDP socket bound in a namespace, with a thread passing on what it receives.
struct Listener {
    socket: UdpSocket,
    rx: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn bind(ns: &Ns, port: u16) -> Self {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let ns = ns.clone();
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            enter(&ns).expect("enter the namespace");
            let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            ready_tx.send(socket.try_clone().unwrap()).unwrap();
            let mut buf = [0u8; 1500];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && tx.send((buf[..n].to_vec(), from)).is_err()
                {
                    break;
                }
            }
        });
        let socket = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("listener bound within 5 s");
        Self { socket, rx, stop }
    }

    /// Where `payload` came from, if it arrives within `within`.
    fn got(&self, payload: &[u8], within: Duration) -> Option<SocketAddr> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((data, from)) if data == payload => return Some(from),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends `payload` to `to` from this socket with IP TTL `ttl`.
    fn send(&self, to: SocketAddr, payload: &[u8], ttl: u32) {
        self.socket.set_ttl(ttl).unwrap();
        self.socket.send_to(payload, to).unwrap();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `payload` to `to` from a fresh socket (a new source port) in `ns`.
fn send_fresh(ns: &Ns, to: SocketAddr, payload: &'static [u8]) {
    in_namespace(ns, move || {
        let socket = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        socket.send_to(payload, to).unwrap();
    })
    .unwrap();
}

/// Runs `program ARGS` in `ns` (at most 15 s) and returns its stdout, panicking with its
/// output when it fails.
fn run_in(lab: &Lab, ns: &Ns, program: &str, args: &[&str]) -> String {
    let out = output_within(lab.command(ns, program).args(args), Duration::from_secs(15));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A port-random home router with its WAN firewall on, miniupnpd serving `protocols`, a host
/// behind it listening on `port`, and a public host.
struct MappingWorld {
    lab: Lab,
    nat: Nat,
    host: Host,
    public: Host,
    upnp: Upnp,
    listener: Listener,
}

impl MappingWorld {
    fn new(kind: NatKind, protocols: Protocols, port: u16) -> Option<Self> {
        let mut lab = Lab::new()?;
        if !miniupnpd::installed() {
            return None;
        }
        let mut nat = lab.nat(kind).unwrap();
        lab.firewall_wan(&nat).unwrap();
        let host = lab.host_behind(&mut nat, "cli").unwrap();
        let public = lab.public_host("pub").unwrap();
        let upnp = lab.upnp(&nat, protocols).unwrap();
        let listener = Listener::bind(&host.ns, port);
        Some(Self {
            lab,
            nat,
            host,
            public,
            upnp,
            listener,
        })
    }

    /// Whether a datagram from the public host (a fresh source port) to the router's WAN
    /// address and `port` reaches the host; checks where it came from when it does.
    fn reachable(&self, port: u16, payload: &'static [u8]) -> bool {
        send_fresh(
            &self.public.ns,
            SocketAddr::from((self.nat.wan_ip, port)),
            payload,
        );
        match self.listener.got(payload, WAIT) {
            Some(from) => {
                assert_eq!(from.ip(), self.public.ip, "the sender's own address");
                true
            }
            None => false,
        }
    }
}

fn upnp_mapping(kind: NatKind) {
    if !tool("upnpc", "miniupnpc") {
        return;
    }
    let port = 40000;
    let Some(world) = MappingWorld::new(kind, Protocols::UPNP, port) else {
        return;
    };
    assert!(
        !world.reachable(port, b"before"),
        "no mapping yet, yet the host was reachable"
    );
    let host_ip = world.host.ip.to_string();
    let port_s = port.to_string();
    // `-i`: libminiupnpc calls the IGD "not connected" since its external address is in a
    // documentation range (reserved); go on anyway.
    let added = run_in(
        &world.lab,
        &world.host.ns,
        "upnpc",
        &["-i", "-a", &host_ip, &port_s, &port_s, "UDP"],
    );
    assert!(
        added.contains(&format!("ExternalIPAddress = {}", world.nat.wan_ip)),
        "upnpc: {added}"
    );
    assert!(
        added.contains(&format!(
            "external {}:{port} UDP is redirected to internal {host_ip}:{port}",
            world.nat.wan_ip
        )),
        "upnpc did not add the mapping: {added}\nminiupnpd: {}",
        world.upnp.log()
    );
    assert!(
        world.reachable(port, b"mapped"),
        "the UPnP mapping did not make the host reachable\nminiupnpd: {}",
        world.upnp.log()
    );
    let deleted = run_in(
        &world.lab,
        &world.host.ns,
        "upnpc",
        &["-i", "-d", &port_s, "UDP"],
    );
    assert!(
        deleted.contains("UPNP_DeletePortMapping() returned : 0"),
        "upnpc did not delete the mapping: {deleted}"
    );
    assert!(
        !world.reachable(port, b"deleted"),
        "the host was still reachable after the mapping was deleted"
    );
}

#[test]
fn upnp_mapping_through_a_port_random_nat() {
    upnp_mapping(NatKind::RandomFully);
}

fn natpmp_mapping(kind: NatKind) {
    if !tool("natpmpc", "natpmpc") {
        return;
    }
    let port = 40002;
    let Some(world) = MappingWorld::new(kind, Protocols::PCP_PMP, port) else {
        return;
    };
    assert!(
        !world.reachable(port, b"before"),
        "no mapping yet, yet the host was reachable"
    );
    let gateway = world.upnp.lan_ip.to_string();
    let port_s = port.to_string();
    let added = run_in(
        &world.lab,
        &world.host.ns,
        "natpmpc",
        &["-g", &gateway, "-a", &port_s, &port_s, "udp", "3600"],
    );
    assert!(
        added.contains(&format!("Public IP address : {}", world.nat.wan_ip)),
        "natpmpc: {added}"
    );
    assert!(
        added.contains(&format!(
            "Mapped public port {port} protocol UDP to local port {port}"
        )),
        "natpmpc did not add the mapping: {added}\nminiupnpd: {}",
        world.upnp.log()
    );
    assert!(
        world.reachable(port, b"mapped"),
        "the NAT-PMP mapping did not make the host reachable\nminiupnpd: {}",
        world.upnp.log()
    );
    // Lifetime 0 deletes the mapping (RFC 6886, 3.4).
    let deleted = run_in(
        &world.lab,
        &world.host.ns,
        "natpmpc",
        &["-g", &gateway, "-a", &port_s, &port_s, "udp", "0"],
    );
    assert!(
        deleted.contains("readnatpmpresponseorretry returned 0 (OK)"),
        "natpmpc did not delete the mapping: {deleted}"
    );
    assert!(
        !world.reachable(port, b"deleted"),
        "the host was still reachable after the mapping was deleted"
    );
}

#[test]
fn natpmp_mapping_through_a_port_random_nat() {
    natpmp_mapping(NatKind::RandomFully);
}

#[test]
fn natpmp_mapping_through_a_port_preserving_nat() {
    natpmp_mapping(NatKind::Masquerade);
}

/// Conntrack's UDP entries in `ns` whose original destination port is `port`.
fn conntrack(lab: &Lab, ns: &Ns, port: u16) -> String {
    let out = lab
        .exec(
            ns,
            "conntrack",
            &["-L", "-p", "udp", "--dport", &port.to_string()],
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_low_ttl_opens_the_own_nat_and_dies_in_the_internet() {
    const HOPS: u8 = 4;
    let Some(mut lab) = Lab::new() else {
        return;
    };
    lab.internet_hops(HOPS).unwrap();
    let mut nat_a = lab.nat(NatKind::Masquerade).unwrap();
    let mut nat_b = lab.nat(NatKind::Masquerade).unwrap();
    // No firewall on B: a packet that reaches B's router unsolicited is taken in by its own
    // stack and leaves a conntrack entry whatever its TTL (local delivery does not check it).
    let a = lab.host_behind(&mut nat_a, "a").unwrap();
    let b = lab.host_behind(&mut nat_b, "b").unwrap();
    let (port_a, port_b) = (41000, 42000);
    let listen_a = Listener::bind(&a.ns, port_a);
    let listen_b = Listener::bind(&b.ns, port_b);
    let to_b = SocketAddr::from((nat_b.wan_ip, port_b));
    let to_a = SocketAddr::from((nat_a.wan_ip, port_a));

    // TTL 2: through A's router, dead at the first internet hop. TTL HOPS + 1: the most that
    // still dies in an internet HOPS deep (it would reach B's router were the internet one hop).
    for ttl in [2, u32::from(HOPS) + 1] {
        listen_a.send(to_b, b"low", ttl);
        assert_eq!(listen_b.got(b"low", Duration::from_millis(500)), None);
        let far = conntrack(&lab, &nat_b.ns, port_b);
        assert!(far.trim().is_empty(), "TTL {ttl} reached B's router: {far}");
        let own = conntrack(&lab, &nat_a.ns, port_b);
        assert!(
            own.contains(&format!("src={}", a.ip)) && own.contains(&format!("dport={port_b}")),
            "TTL {ttl} made no mapping on A's router: {own:?}"
        );
    }

    // That mapping is a hole: B's datagram to A's WAN address and port gets through to A.
    listen_b.send(to_a, b"punch", 64);
    let from = listen_a.got(b"punch", WAIT);
    assert_eq!(
        from,
        Some(SocketAddr::from((nat_b.wan_ip, port_b))),
        "B's datagram did not come in through the hole A's low-TTL datagram made"
    );
    // And now A's datagram reaches B with just enough TTL (HOPS + 3), and with 64.
    for ttl in [u32::from(HOPS) + 3, 64] {
        listen_a.send(to_b, b"high", ttl);
        assert_eq!(
            listen_b.got(b"high", WAIT),
            Some(SocketAddr::from((nat_a.wan_ip, port_a))),
            "TTL {ttl} did not reach B"
        );
    }
}

#[test]
fn a_host_behind_a_carrier_nat_and_a_home_nat_reaches_the_internet() {
    let Some(mut lab) = Lab::new() else {
        return;
    };
    let mut carrier = lab.carrier_nat(NatKind::RandomFully).unwrap();
    let mut home = lab.nat_behind(&mut carrier, NatKind::Masquerade).unwrap();
    let host = lab.host_behind(&mut home, "cli").unwrap();
    let public = lab.public_host("pub").unwrap();
    let cgn = Ipv4Addr::new(100, 64, 0, 0);
    assert_eq!(
        u32::from(home.wan_ip) >> 22,
        u32::from(cgn) >> 22,
        "the home router's WAN address {} is not in 100.64.0.0/10",
        home.wan_ip
    );
    assert_eq!(carrier.lan_network().octets()[..2], [100, 64]);
    assert_eq!(home.lan_network().octets()[0], 10);

    let port = 43000;
    let server = Listener::bind(&public.ns, port);
    let client = Listener::bind(&host.ns, 43001);
    client.send(SocketAddr::from((public.ip, port)), b"hello", 64);
    let from = server
        .got(b"hello", WAIT)
        .expect("the datagram from behind two NATs did not arrive");
    assert_eq!(
        from.ip(),
        carrier.wan_ip,
        "the public host should see the carrier's WAN address"
    );
    // The reply finds its way back through both NATs.
    server.send(from, b"reply", 64);
    assert_eq!(
        client.got(b"reply", WAIT),
        Some(SocketAddr::from((public.ip, port)))
    );
}

/// A home router's miniupnpd behind a carrier NAT has a WAN address in shared address space
/// and refuses every mapping, as a real one does: the lab leaves that check alone.
#[test]
fn a_home_router_behind_a_carrier_nat_maps_nothing() {
    if !tool("natpmpc", "natpmpc") {
        return;
    }
    let Some(mut lab) = Lab::new() else {
        return;
    };
    if !miniupnpd::installed() {
        return;
    }
    let mut carrier = lab.carrier_nat(NatKind::RandomFully).unwrap();
    let mut home = lab.nat_behind(&mut carrier, NatKind::Masquerade).unwrap();
    let host = lab.host_behind(&mut home, "cli").unwrap();
    let upnp = lab.upnp(&home, Protocols::PCP_PMP).unwrap();
    let gateway = upnp.lan_ip.to_string();
    let out = output_within(
        lab.command(&host.ns, "natpmpc")
            .args(["-g", &gateway, "-a", "40004", "40004", "udp", "60"]),
        Duration::from_secs(15),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("network failure"),
        "natpmpc got a mapping behind a carrier NAT ({}): {} {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        upnp.log().contains(&format!(
            "Reserved / private IP address {} on ext interface eth0: Port forwarding is impossible",
            home.wan_ip
        )),
        "miniupnpd: {}",
        upnp.log()
    );
}
