//! The NAT lab's dual-stack home routers (`Lab::nat_dual_stack`): hosts behind them have a
//! global IPv6 address, routed (no NAT66), behind the router's stateful IPv6 firewall, which
//! lets in only replies, so two such hosts reach each other by hole punching. The lab is checked
//! with plain UDP sockets in python3. Without root (namespaces) the tests fail under
//! `./dev test` and skip by hand (`pinhole_tests::prereq`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv6Addr;
use std::process::Output;
use std::thread::JoinHandle;
use std::time::Duration;

use pinhole_tests::netns::{Lab, Nat, NatKind, Ns};
use pinhole_tests::output_within;

/// How long any one python3 script may run before the test fails.
const LIMIT: Duration = Duration::from_secs(8);

/// Waits up to ARGV[2] seconds for datagrams on [::]:ARGV[1], answers each with `pong` while
/// ARGV[3] (0 or 1) says so, and prints one line per datagram: `SOURCE PORT PAYLOAD`, or
/// `timeout` when nothing came. Stops after the first datagram unless ARGV[4] is 1.
const RECEIVER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1])))
end = time.monotonic() + float(sys.argv[2])
got = 0
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        data, addr = s.recvfrom(2000)
    except socket.timeout:
        break
    got += 1
    print(addr[0], addr[1], data.decode(), flush=True)
    if sys.argv[3] == "1":
        s.sendto(b"pong", addr)
    if sys.argv[4] != "1":
        break
if got == 0:
    print("timeout", flush=True)
"#;

/// From [::]:ARGV[1], sends `ping N` to [ARGV[2]]:ARGV[3] every 100 ms, ARGV[4] times at most,
/// and stops at the first answer, printed as `SOURCE PORT PAYLOAD` (`timeout` when none came).
/// With ARGV[5] = 0 it sends them all and does not wait for answers.
const SENDER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1])))
s.settimeout(0.1)
for i in range(int(sys.argv[4])):
    s.sendto(b"ping %d" % i, (sys.argv[2], int(sys.argv[3])))
    try:
        data, addr = s.recvfrom(2000)
    except socket.timeout:
        continue
    if sys.argv[5] == "1":
        print(addr[0], addr[1], data.decode(), flush=True)
        sys.exit(0)
if sys.argv[5] == "1":
    print("timeout", flush=True)
"#;

/// A hole punch's side: from [::]:ARGV[1], sends `punch N` to [ARGV[2]]:ARGV[3] every 100 ms
/// for ARGV[4] seconds, listening meanwhile; prints one line per datagram received (`SOURCE
/// PORT PAYLOAD`).
const PUNCHER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", int(sys.argv[1])))
peer = (sys.argv[2], int(sys.argv[3]))
end = time.monotonic() + float(sys.argv[4])
i = 0
next_send = time.monotonic()
while time.monotonic() < end:
    now = time.monotonic()
    if now >= next_send:
        s.sendto(b"punch %d" % i, peer)
        i += 1
        next_send = now + 0.1
    s.settimeout(max(0.005, min(next_send, end) - time.monotonic()))
    try:
        data, addr = s.recvfrom(2000)
    except socket.timeout:
        continue
    print(addr[0], addr[1], data.decode(), flush=True)
"#;

/// Runs a python3 script inside `ns` with `args`, bounded by [`LIMIT`], and returns its stdout
/// (panicking if it failed).
fn python(lab: &Lab, ns: &Ns, script: &str, args: &[String]) -> String {
    let out = output_within(
        lab.command(ns, "python3").arg("-c").arg(script).args(args),
        LIMIT,
    );
    check(&out, ns)
}

/// The same, on a thread, so that two scripts run at once; join for its stdout.
fn python_bg(lab: &Lab, ns: &Ns, script: &str, args: &[String]) -> JoinHandle<String> {
    let mut cmd = lab.command(ns, "python3");
    cmd.arg("-c").arg(script).args(args);
    let ns = ns.clone();
    std::thread::spawn(move || check(&output_within(&mut cmd, LIMIT), &ns))
}

fn check(out: &Output, ns: &Ns) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 in {} failed ({}): stdout: {stdout} stderr: {}",
        ns.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The datagrams a script printed: (source address, source port, payload).
fn datagrams(stdout: &str) -> Vec<(Ipv6Addr, u16, String)> {
    stdout
        .lines()
        .filter(|line| *line != "timeout")
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let addr = parts.next().unwrap().parse().expect("an IPv6 source");
            let port = parts.next().unwrap().parse().expect("a source port");
            (addr, port, parts.next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Packets the router's firewall dropped on their way from the WAN to the LAN (the counter of
/// its final `DROP` rule in `FORWARD`).
fn firewall_drops(lab: &Lab, nat: &Nat) -> u64 {
    let out = lab
        .exec(&nat.ns, "ip6tables", &["-L", "FORWARD", "-v", "-n", "-x"])
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    listing
        .lines()
        .find(|line| line.split_whitespace().nth(2) == Some("DROP"))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|packets| packets.parse().ok())
        .unwrap_or_else(|| panic!("no DROP rule in {}'s FORWARD: {listing}", nat.ns.name))
}

fn s(value: impl ToString) -> String {
    value.to_string()
}

/// Two dual-stack routers with a host behind each: both hosts have a global IPv6 address in
/// their router's /64, and a public host sees A's own address (routed, not translated).
#[test]
fn hosts_behind_dual_stack_routers_have_global_ipv6() {
    let Some(mut lab) = Lab::new() else { return };
    let public = lab.public_host("pub").unwrap();
    let mut nat_a = lab.nat_dual_stack(NatKind::Masquerade).unwrap();
    let mut nat_b = lab.nat_dual_stack(NatKind::RandomFully).unwrap();
    let a = lab.host_behind(&mut nat_a, "a").unwrap();
    let b = lab.host_behind(&mut nat_b, "b").unwrap();
    let a6 = a.ip6.expect("A behind a dual-stack router has IPv6");
    let b6 = b.ip6.expect("B behind a dual-stack router has IPv6");
    println!(
        "A {a6} behind {:?} (WAN {:?}), B {b6} behind {:?} (WAN {:?}), public {:?}",
        nat_a.lan_ip6, nat_a.wan_ip6, nat_b.lan_ip6, nat_b.wan_ip6, public.ip6
    );
    assert_eq!(a6.segments()[..3], [0x2001, 0xdb8, 3], "{a6}");
    assert_eq!(
        a6.segments()[..4],
        nat_a.lan_network6().unwrap().segments()[..4]
    );
    assert_eq!(
        b6.segments()[..4],
        nat_b.lan_network6().unwrap().segments()[..4]
    );
    assert_ne!(a6.segments()[3], b6.segments()[3], "two routers, two /64s");
    // IPv4 is unchanged: private behind the NAT.
    assert!(a.ip.is_private() && b.ip.is_private());

    // A reaches the public host over UDP; it sees A's own address and answers it.
    let public6 = public.ip6.unwrap();
    let receiver = python_bg(&lab, &public.ns, RECEIVER, &[s(4000), s(5), s(1), s(0)]);
    lab.wait_udp_listen(&public.ns, 4000, Duration::from_secs(3))
        .unwrap();
    let answer = python(
        &lab,
        &a.ns,
        SENDER,
        &[s(4001), s(public6), s(4000), s(20), s(1)],
    );
    let seen = receiver.join().unwrap();
    println!("public host saw: {seen}A got: {answer}");
    let seen = datagrams(&seen);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].0, seen[0].1),
        (a6, 4001),
        "the public host sees A's own global address and port (no NAT66)"
    );
    assert_eq!(
        datagrams(&answer),
        [(public6, 4000, "pong".to_owned())],
        "the answer comes back through A's firewall"
    );
}

/// The router's stateful firewall: unsolicited datagrams from the internet are dropped; once
/// the host sent to a public host's address and port, that address and port get through.
#[test]
fn ipv6_firewall_lets_in_only_replies() {
    let Some(mut lab) = Lab::new() else { return };
    let public = lab.public_host("pub").unwrap();
    let mut nat = lab.nat_dual_stack(NatKind::Masquerade).unwrap();
    let host = lab.host_behind(&mut nat, "h").unwrap();
    let (host6, public6) = (host.ip6.unwrap(), public.ip6.unwrap());

    // Unsolicited: five datagrams from public:6000 to host:5000 never arrive; the router
    // dropped them (rather than them being lost on the way).
    let drops_before = firewall_drops(&lab, &nat);
    let receiver = python_bg(&lab, &host.ns, RECEIVER, &[s(5000), s(1.5), s(0), s(1)]);
    lab.wait_udp_listen(&host.ns, 5000, Duration::from_secs(3))
        .unwrap();
    python(
        &lab,
        &public.ns,
        SENDER,
        &[s(6000), s(host6), s(5000), s(5), s(0)],
    );
    let unsolicited = receiver.join().unwrap();
    let dropped = firewall_drops(&lab, &nat) - drops_before;
    println!("unsolicited: host got {unsolicited:?}, the router dropped {dropped}");
    assert_eq!(
        unsolicited.trim(),
        "timeout",
        "unsolicited datagrams arrived"
    );
    assert!(dropped >= 5, "the router dropped {dropped} packets, not 5");
    // The host can be pinged by nobody either.
    assert!(
        lab.exec(
            &public.ns,
            "ping",
            &["-6", "-c1", "-W1", &host6.to_string()]
        )
        .is_err(),
        "an unsolicited ping got through"
    );

    // Solicited: the host sends from 5000 to public:6000; the public host's datagrams from
    // 6000 now arrive (three of them, all answers to the first one it got).
    let public_side = python_bg(&lab, &public.ns, RECEIVER, &[s(6000), s(3), s(1), s(0)]);
    lab.wait_udp_listen(&public.ns, 6000, Duration::from_secs(3))
        .unwrap();
    let answer = python(
        &lab,
        &host.ns,
        SENDER,
        &[s(5000), s(public6), s(6000), s(20), s(1)],
    );
    let seen = public_side.join().unwrap();
    println!("solicited: public saw {seen:?}, host got {answer:?}");
    assert_eq!(datagrams(&seen)[0].0, host6);
    assert_eq!(
        datagrams(&answer),
        [(public6, 6000, "pong".to_owned())],
        "the reply from the address and port the host sent to did not arrive"
    );
    // A new datagram from that port (not an answer to one just received) gets in too, as
    // conntrack holds the flow: the public host sends three, the host waits for them.
    let receiver = python_bg(&lab, &host.ns, RECEIVER, &[s(5000), s(3), s(0), s(1)]);
    lab.wait_udp_listen(&host.ns, 5000, Duration::from_secs(3))
        .unwrap();
    python(
        &lab,
        &public.ns,
        SENDER,
        &[s(6000), s(host6), s(5000), s(3), s(0)],
    );
    let later = datagrams(&receiver.join().unwrap());
    println!("later datagrams from public:6000: {later:?}");
    assert_eq!(later.len(), 3, "{later:?}");
    assert!(
        later
            .iter()
            .all(|(ip, port, _)| (*ip, *port) == (public6, 6000))
    );
}

/// Hole punching over IPv6 between two firewalled dual-stack routers: A and B send to each
/// other's global address and port at about the same time and then both receive.
#[test]
fn ipv6_hole_punch_between_two_firewalled_routers() {
    let Some(mut lab) = Lab::new() else { return };
    let mut nat_a = lab.nat_dual_stack(NatKind::RandomFully).unwrap();
    let mut nat_b = lab.nat_dual_stack(NatKind::Masquerade).unwrap();
    let a = lab.host_behind(&mut nat_a, "a").unwrap();
    let b = lab.host_behind(&mut nat_b, "b").unwrap();
    let (a6, b6) = (a.ip6.unwrap(), b.ip6.unwrap());

    // Neither gets through unsolicited (on other ports: a datagram from A to B:P opens A's
    // router to B:P, which is what the punch below relies on).
    for (from, to, to_nat, port) in [(&a, &b, &nat_b, 7100), (&b, &a, &nat_a, 7200)] {
        let before = firewall_drops(&lab, to_nat);
        python(
            &lab,
            &from.ns,
            SENDER,
            &[s(port), s(to.ip6.unwrap()), s(port + 1), s(1), s(0)],
        );
        assert!(
            firewall_drops(&lab, to_nat) > before,
            "an unsolicited datagram to {} was not dropped by its router",
            to.ns.name
        );
    }

    let (drops_a, drops_b) = (firewall_drops(&lab, &nat_a), firewall_drops(&lab, &nat_b));
    let side_a = python_bg(&lab, &a.ns, PUNCHER, &[s(7000), s(b6), s(7000), s(2)]);
    let side_b = python_bg(&lab, &b.ns, PUNCHER, &[s(7000), s(a6), s(7000), s(2)]);
    let (got_a, got_b) = (side_a.join().unwrap(), side_b.join().unwrap());
    let dropped = (
        firewall_drops(&lab, &nat_a) - drops_a,
        firewall_drops(&lab, &nat_b) - drops_b,
    );
    let (got_a, got_b) = (datagrams(&got_a), datagrams(&got_b));
    println!(
        "punch: A got {} datagrams, B got {}; the routers dropped {dropped:?} first ones",
        got_a.len(),
        got_b.len()
    );
    assert!(!got_a.is_empty(), "A received nothing from B");
    assert!(!got_b.is_empty(), "B received nothing from A");
    assert!(got_a.iter().all(|(ip, port, _)| (*ip, *port) == (b6, 7000)));
    assert!(got_b.iter().all(|(ip, port, _)| (*ip, *port) == (a6, 7000)));
    // Each keeps sending for 2 s every 100 ms: once both holes are open, the rest arrive.
    assert!(
        got_a.len() >= 5 && got_b.len() >= 5,
        "{} / {} datagrams",
        got_a.len(),
        got_b.len()
    );
}
