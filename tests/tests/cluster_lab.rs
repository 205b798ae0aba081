//! A cluster of `pinhole-rendezvous` nodes (`--cluster redis://...`, the real binary) in the
//! NAT lab (`pinhole_tests::netns`): a real `redis-server` on a host of the lab's internet
//! ([`Redis::start_in`]), each node on a server host of its own (its own public address, which
//! it advertises to the others), and `pinhole call` / `pinhole answer` behind home NATs,
//! registered on different nodes, calling each other by name (issue 14, item 5; the loopback
//! tests are traversal/tests/cluster.rs).
//!
//! Each test checks the path the call took and the audio both ways (each side's WAV carries
//! the other side's tone), which nodes signalled it (each node's Prometheus
//! `pinhole_cluster_messages_total`), and where the media went on the lab's internet (the
//! internet router's packet counters): between the two NATs for a direct call; for a relayed
//! one, between the caller's node and the callee's both ways, each of them forwarding the
//! call's frames both ways (`pinhole_relayed_packets_total`) and any other node nothing.
//! Two more kill the callee's node mid-call: a direct call goes on to its end (the caller's
//! node finds the other gone and leaves the call to its clients), a relayed one ends
//! `peer_lost` for the caller within the dead node's liveness. And one restarts Redis (in its
//! namespace, with its data) between two calls across the nodes.
//! Everything is torn down on drop (the nodes, Redis and the clients by PID, then the
//! namespaces). Without root or redis-server they fail under `./dev test`
//! (`PINHOLE_TEST_STRICT=1`) and skip by hand (`pinhole_tests::prereq`).
//!
//! ```text
//!   redis ns ─┐
//!   node a ns ┼── inet ns ──┬── NAT (caller's) ── caller: `pinhole call`, on node a (or c)
//!   node b ns ┤             └── NAT (callee's) ── callee: `pinhole answer`, on node b
//!  (node c ns)┘
//! ```
//!
//! Timings seen on a 2-core machine (debug build, 5 s calls; each test prints its own, "cluster
//! lab: ..."): the lab with Redis and the nodes up in 0.7-1.0 s; `setup_ms` (caller / callee,
//! from the JSON reports) 6-8 / 4-5 ms for the direct calls, 9-14 / 5-11 ms for the relayed
//! ones; direct some 150 ms after the answer, the first 8 frames each way relayed through both
//! nodes until then; a relayed 5 s call is ~511 frames forwarded by each of the two nodes and
//! ~255 packets node to node each way. A node killed: node a finds it gone some 4.9 s after;
//! the relayed call ends 5.06 s after, by the caller's own peer silence (5 s), which beats node
//! a's liveness check. Redis restarted: both nodes back on it some 220 ms after. Some 12 s per
//! call test, 20 s per node-killing one, 18 s for the Redis restart: 103 s for the seven with
//! `--test-threads=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pinhole_tests::netns::{Host, Lab, NatKind};
use pinhole_tests::redis::Redis;
use pinhole_tests::{Headless, HeadlessOutput, Party, Place, Rendezvous, TempDir};
use serde_json::Value;

use NatKind::{Masquerade, RandomFully};

/// The port every node listens on (each on its own host).
const NODE_PORT: u16 = 3478;
/// Where each node serves its metrics, on its own namespace's loopback.
const METRICS: &str = "127.0.0.1:9478";
/// Media packets a second each way (20 ms frames).
const PACKETS_PER_SECOND: f64 = 50.0;

/// One node of the cluster, on a server host of the lab's internet.
struct Node {
    host: Host,
    server: Rendezvous,
}

impl Node {
    /// `host:3478`, as clients and the other nodes reach it.
    fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.host.ip, NODE_PORT))
    }

    /// Its Prometheus text, fetched from inside its namespace.
    fn metrics(&self) -> String {
        let text = pinhole_tests::hostile::in_namespace(&self.host.ns, || {
            let mut s =
                TcpStream::connect_timeout(&METRICS.parse().unwrap(), Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok::<_, std::io::Error>(out)
        })
        .unwrap();
        text.unwrap_or_else(|e| panic!("metrics of {}: {e}", self.addr()))
    }

    /// A counter or gauge of its metrics (a family without labels).
    fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// Relay frames it forwarded so far.
    fn relayed(&self) -> u64 {
        self.metric("pinhole_relayed_packets_total")
    }

    /// Messages it sent to other nodes so far, and received from them.
    fn messages(&self) -> [u64; 2] {
        ["sent", "received"].map(|d| {
            self.metric(&format!(
                "pinhole_cluster_messages_total{{direction=\"{d}\"}}"
            ))
        })
    }
}

/// Where each client lives.
#[derive(Debug, Clone, Copy)]
struct Sides {
    /// The callee's home NAT (WAN firewalled).
    callee: NatKind,
    /// The caller's.
    caller: NatKind,
    /// Nodes in the cluster (2 or 3): the callee is on node b, the caller on node a (of two) or
    /// c (of three).
    nodes: usize,
    /// The caller's node listens on the wildcard address and says where it is with
    /// `--advertise`; the others listen on their address (which then is what they advertise).
    advertise_wildcard: bool,
}

/// A lab with Redis and the nodes on its internet, and two parties behind home NATs.
struct ClusterLab {
    /// What it was made of.
    sides: Sides,
    /// Dropped first: the clients' processes are `Headless`, killed on their own drop.
    nodes: Vec<Node>,
    redis: Redis,
    redis_host: Host,
    callee_host: Host,
    caller_host: Host,
    /// The callee's NAT's WAN address, then the caller's.
    wans: [Ipv4Addr; 2],
    callee: Party,
    caller: Party,
    /// Index of the callee's node and the caller's in `nodes`.
    callee_node: usize,
    caller_node: usize,
    _dir: TempDir,
    /// Last: its drop kills whatever still runs in its namespaces and deletes them.
    lab: Lab,
}

impl ClusterLab {
    /// Builds the lab, starts Redis and the nodes. `None` where it cannot be made (after
    /// `prereq::missing`).
    fn new(sides: Sides) -> Option<Self> {
        let started = Instant::now();
        let mut lab = Lab::new()?;
        // A few routers deep, as in tests/nat_calls.rs: hole punching's openers (TTL 2 and 3)
        // die in the internet instead of reaching the peer's router.
        lab.internet_hops(4).unwrap();
        let redis_host = lab.server("redis").unwrap();
        let redis = Redis::start_in(&lab, &redis_host.ns, redis_host.ip)?;
        let url = redis.url();
        // The callee on node b; the caller on node a of two, c of three.
        let (callee_node, caller_node) = (1, if sides.nodes == 2 { 0 } else { 2 });
        let mut nodes = Vec::new();
        for i in 0..sides.nodes {
            let tag = ["na", "nb", "nc"][i];
            let host = lab.server(tag).unwrap();
            let public = SocketAddr::from((host.ip, NODE_PORT));
            let advertise = public.to_string();
            let mut flags = vec![
                "--cluster",
                url.as_str(),
                "--metrics",
                METRICS,
                // The lab's "public" addresses are documentation ranges, which the server
                // treats as private for P4: allow them (as tests/nat_calls.rs does).
                "--allow-private-targets",
            ];
            let listen = if i == caller_node && sides.advertise_wildcard {
                flags.extend(["--advertise", advertise.as_str()]);
                format!("0.0.0.0:{NODE_PORT}")
            } else {
                advertise.clone()
            };
            let server = Rendezvous::start_at(Place::In(&lab, &host.ns), &listen, &flags);
            assert_eq!(server.addr.port(), NODE_PORT, "{:?}", server.addr);
            nodes.push(Node { host, server });
        }
        let mut home = |kind: NatKind, role: &str| {
            let mut nat = lab.nat(kind).unwrap();
            lab.firewall_wan(&nat).unwrap();
            let wan = nat.wan_ip;
            (lab.host_behind(&mut nat, role).unwrap(), wan)
        };
        let (callee_host, callee_wan) = home(sides.callee, "cee");
        let (caller_host, caller_wan) = home(sides.caller, "cer");
        let dir = TempDir::new("clusterlab");
        let callee = Party::tone(&dir, "cee", 440.0);
        let caller = Party::tone(&dir, "cer", 660.0);
        let lab = Self {
            sides,
            nodes,
            redis,
            redis_host,
            callee_host,
            caller_host,
            wans: [callee_wan, caller_wan],
            callee,
            caller,
            callee_node,
            caller_node,
            _dir: dir,
            lab,
        };
        // Every node is up in the cluster: its liveness key is in Redis.
        lab.wait_nodes_alive();
        eprintln!(
            "cluster lab: {} nodes and Redis at {} up in {} ms",
            sides.nodes,
            lab.redis.addr(),
            started.elapsed().as_millis()
        );
        Some(lab)
    }

    /// Waits (10 s at most) until Redis holds every node's liveness key.
    fn wait_nodes_alive(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let keys = self
                .redis
                .command(&["KEYS", "{pinhole}:node:*"])
                .unwrap_or_default();
            let missing: Vec<SocketAddr> = self
                .nodes
                .iter()
                .map(Node::addr)
                .filter(|a| !keys.contains(&a.to_string()))
                .collect();
            let up = |n: &Node| n.metric("pinhole_cluster_redis_up") == 1;
            if missing.is_empty() && self.nodes.iter().all(up) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {missing:?} not alive in Redis at {} ({}): {keys:?}; logs: {:#?}",
                self.redis.addr(),
                self.redis_host.ns.name,
                self.nodes
                    .iter()
                    .map(|n| n.server.log())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `pinhole answer` for the callee on its node, registered; and its presence written in
    /// Redis (so that the other nodes find it).
    fn answer(&self) -> Headless {
        let place = Place::In(&self.lab, &self.callee_host.ns);
        let node = &self.nodes[self.callee_node];
        let answer = self
            .callee
            .answer(place, &node.addr().to_string(), &["--calls", "1"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let at = self
                .redis
                .command(&["HGET", "{pinhole}:presence", &self.callee.name])
                .unwrap_or_default();
            if at.contains(&node.addr().to_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} registered on {} but not present in Redis: {at:?}",
                self.callee.name,
                node.addr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        answer
    }

    /// `pinhole call` from the caller, on its node, to the callee's name, talking `secs`.
    fn call(&self, secs: f64) -> Headless {
        let place = Place::In(&self.lab, &self.caller_host.ns);
        let node = self.nodes[self.caller_node].addr().to_string();
        self.caller.call(place, &node, &self.callee.name, secs)
    }

    /// Counts, on the internet's router, the UDP packets from `from` to `to` from now on
    /// (a rule without a target: it only counts). Read back with [`ClusterLab::counted`].
    fn count_udp(&self, from: Ipv4Addr, to: Ipv4Addr) {
        let (from, to) = (from.to_string(), to.to_string());
        let rule: &[&str] = &["-I", "FORWARD", "-p", "udp", "-s", &from, "-d", &to];
        self.lab.iptables(&self.lab.inet, rule).unwrap();
    }

    /// Packets counted by [`ClusterLab::count_udp`] from `from` to `to`.
    fn counted(&self, from: Ipv4Addr, to: Ipv4Addr) -> u64 {
        let out = self
            .lab
            .exec(&self.lab.inet, "iptables", &["-nvxL", "FORWARD"])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (from, to) = (from.to_string(), to.to_string());
        text.lines()
            .find_map(|l| {
                // pkts bytes [target] prot [opt] in out source destination: a rule without
                // a target has a column fewer, and the opt column may be empty too.
                let f: Vec<&str> = l.split_whitespace().collect();
                let n = f.len();
                let udp = f.iter().any(|c| *c == "udp" || *c == "17");
                (n >= 6 && udp && f[n - 2] == from && f[n - 1] == to)
                    .then(|| f[0].parse().ok())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no counting rule {from} -> {to}: {text}"))
    }

    /// Checks that each side heard the other ([`Party::check_heard_each_other`]).
    fn check_audio(&self, least: f64) {
        Party::check_heard_each_other(&self.caller, &self.callee, least);
    }

    /// Every node's log, for a failure's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&format!("--- node {} ---\n", node.addr()));
            for line in node.server.log() {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

/// Checks one side's report of a call of `secs`: its peer, that it sent the whole call and
/// received at least `share` of it, its setup time and its duration.
fn check_report(json: &Value, peer: &Party, secs: f64, share: f64) {
    assert_eq!(json["peer"], peer.name.as_str(), "{json}");
    let rtp = &json["rtp"];
    let (sent, received) = (
        rtp["sent"].as_u64().unwrap(),
        rtp["received"].as_u64().unwrap(),
    );
    let expected = secs * PACKETS_PER_SECOND;
    assert!(
        sent as f64 + 10.0 >= expected,
        "sent {sent} of ~{expected}: {json}"
    );
    assert!(
        received as f64 >= expected * share,
        "received {received} of ~{expected}: {json}"
    );
    assert!(json["setup_ms"].as_f64().is_some(), "{json}");
    assert!(json["duration_s"].as_f64().unwrap() >= secs - 0.5, "{json}");
}

/// Both processes' reports, after checking that both exited 0 with one JSON line each.
fn reports(lab: &ClusterLab, caller: HeadlessOutput, callee: HeadlessOutput) -> [Value; 2] {
    for (who, out) in [("caller", &caller), ("callee", &callee)] {
        for line in out
            .log
            .iter()
            .filter(|l| l.contains("call connected") || l.contains("placing"))
        {
            eprintln!("{who}: {line}");
        }
    }
    assert!(
        caller.status.success(),
        "caller failed: {caller:#?}\n{}",
        lab.logs()
    );
    assert!(
        callee.status.success(),
        "callee failed: {callee:#?}\n{}",
        lab.logs()
    );
    let (caller, callee) = (caller.one_json(), callee.one_json());
    eprintln!("caller: {caller}\ncallee: {callee}");
    [caller, callee]
}

/// What one call across the cluster showed.
struct Outcome {
    /// The caller's report, then the callee's.
    reports: [Value; 2],
    /// Relay frames each node forwarded during the call.
    relayed: Vec<u64>,
    /// Messages each node sent to other nodes during the call, and received from them.
    messages: Vec<[u64; 2]>,
    /// UDP packets on the internet during the call, NAT to NAT (callee's to caller's, caller's
    /// to callee's).
    nat_to_nat: [u64; 2],
    /// UDP packets on the internet during the call between the callee's node and the caller's
    /// (b to the caller's node, the caller's node to b).
    node_to_node: [u64; 2],
}

/// A call of `secs` across the cluster: the callee answers on node b, the caller calls its
/// name from node a (of two) or c (of three). Checks both reports (peer, packets, duration)
/// and the audio both ways; returns what the call showed, the lab kept for more checks.
fn call_across(sides: Sides, secs: f64) -> Option<(ClusterLab, Outcome)> {
    let lab = ClusterLab::new(sides)?;
    let outcome = call_once(&lab, secs);
    Some((lab, outcome))
}

/// One call of `secs` in `lab` (the callee answers it and exits), checked as
/// [`call_across`] does.
fn call_once(lab: &ClusterLab, secs: f64) -> Outcome {
    let sides = lab.sides;
    let [callee_wan, caller_wan] = lab.wans;
    let (b, c) = (
        lab.nodes[lab.callee_node].host.ip,
        lab.nodes[lab.caller_node].host.ip,
    );
    for (from, to) in [
        (callee_wan, caller_wan),
        (caller_wan, callee_wan),
        (b, c),
        (c, b),
    ] {
        lab.count_udp(from, to);
    }
    let before: Vec<u64> = lab.nodes.iter().map(Node::relayed).collect();
    let messages_before: Vec<[u64; 2]> = lab.nodes.iter().map(Node::messages).collect();
    let callee = lab.answer();
    let caller = lab.call(secs);
    let caller = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        caller.finish(Duration::from_secs_f64(secs + 20.0))
    }));
    let caller = caller.unwrap_or_else(|panic| {
        // The caller never ended: the callee's and the nodes' side of the story first.
        eprintln!("callee's log: {:#?}\n{}", callee.log, lab.logs());
        std::panic::resume_unwind(panic)
    });
    let reports = reports(lab, caller, callee.finish(Duration::from_secs(10)));
    check_report(&reports[0], &lab.callee, secs, 0.8);
    check_report(&reports[1], &lab.caller, secs, 0.8);
    lab.check_audio(0.8);
    let relayed = lab
        .nodes
        .iter()
        .zip(&before)
        .map(|(n, was)| n.relayed() - was)
        .collect();
    let messages: Vec<[u64; 2]> = lab
        .nodes
        .iter()
        .zip(&messages_before)
        .map(|(n, [s, r])| {
            let [s2, r2] = n.messages();
            [s2 - s, r2 - r]
        })
        .collect();
    let nat_to_nat = [
        lab.counted(callee_wan, caller_wan),
        lab.counted(caller_wan, callee_wan),
    ];
    let node_to_node = [lab.counted(b, c), lab.counted(c, b)];
    let setup = |json: &Value| json["setup_ms"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "cluster lab: {sides:?}: path {} / {}, setup {:.0} / {:.0} ms, direct after {:?} / {:?} \
         ms (caller / callee); relayed by the nodes {relayed:?}; UDP NAT to NAT {nat_to_nat:?}, \
         node to node {node_to_node:?}; node messages (sent, received) {messages:?}",
        reports[0]["path"],
        reports[1]["path"],
        setup(&reports[0]),
        setup(&reports[1]),
        reports[0]["direct_after_ms"].as_u64(),
        reports[1]["direct_after_ms"].as_u64(),
    );
    Outcome {
        reports,
        relayed,
        messages,
        nat_to_nat,
        node_to_node,
    }
}

/// The call was signalled node to node: the caller's node and the callee's each sent the
/// other messages about it (invitation, answer, hang-up...), and any other node none.
fn assert_signalled_between(lab: &ClusterLab, outcome: &Outcome) {
    for (i, [sent, received]) in outcome.messages.iter().copied().enumerate() {
        if i == lab.callee_node || i == lab.caller_node {
            assert!(
                sent >= 1 && received >= 1,
                "node {} sent {sent} and received {received} messages: {:?}",
                lab.nodes[i].addr(),
                outcome.messages
            );
        } else {
            assert_eq!(
                (sent, received),
                (0, 0),
                "node {} took part: {:?}",
                lab.nodes[i].addr(),
                outcome.messages
            );
        }
    }
}

/// The call went direct: both reports say so, and its media crossed the internet NAT to NAT,
/// both ways.
fn assert_direct(lab: &ClusterLab, outcome: &Outcome, secs: f64) {
    assert_signalled_between(lab, outcome);
    for json in &outcome.reports {
        assert_eq!(json["path"], "direct", "{json}\n{}", lab.logs());
        let after = json["direct_after_ms"].as_u64().expect("went direct");
        assert!(after <= 1000, "direct {after} ms after the answer: {json}");
    }
    // Most of the call each way (the first moments may be relayed).
    let least = (secs * PACKETS_PER_SECOND * 0.7) as u64;
    for n in outcome.nat_to_nat {
        assert!(
            n >= least,
            "{:?} packets NAT to NAT, not {least}",
            outcome.nat_to_nat
        );
    }
}

/// The call was relayed from start to end, through both the caller's node and the callee's:
/// both reports say so; each node forwarded the call's frames both ways, and they crossed the
/// internet between the two nodes both ways; nothing went NAT to NAT that a call could use.
fn assert_relayed_through_both(lab: &ClusterLab, outcome: &Outcome, secs: f64) {
    assert_signalled_between(lab, outcome);
    for json in &outcome.reports {
        assert_eq!(json["path"], "relay", "{json}\n{}", lab.logs());
        assert_eq!(json["path_changes"], 0, "never direct: {json}");
    }
    let one_way = secs * PACKETS_PER_SECOND * 0.8;
    for node in [lab.callee_node, lab.caller_node] {
        let relayed = outcome.relayed[node];
        assert!(
            relayed as f64 >= 2.0 * one_way,
            "node {} forwarded {relayed} frames, not the call both ways (~{}): {:?}",
            lab.nodes[node].addr(),
            2.0 * one_way,
            outcome.relayed
        );
    }
    for n in outcome.node_to_node {
        assert!(
            n as f64 >= one_way,
            "{:?} packets node to node, not {one_way}",
            outcome.node_to_node
        );
    }
    // The checks that failed went NAT to NAT (some 40 packets each way), and nothing else:
    // no media, which would be 50 packets a second.
    for n in outcome.nat_to_nat {
        assert!(
            (n as f64) < secs * PACKETS_PER_SECOND * 0.5,
            "{:?} packets NAT to NAT on a relayed call",
            outcome.nat_to_nat
        );
    }
}

/// Issue 14, item 5: clients behind two port-preserving home routers (MASQUERADE, WAN
/// firewalled), the callee registered on node b, the caller on node a, calling by name: the
/// call connects across the cluster and goes direct, with audio both ways; the nodes relayed
/// little or nothing.
#[test]
fn masquerade_clients_on_two_nodes_go_direct() {
    let secs = 5.0;
    let sides = Sides {
        callee: Masquerade,
        caller: Masquerade,
        nodes: 2,
        advertise_wildcard: false,
    };
    let Some((lab, outcome)) = call_across(sides, secs) else {
        return;
    };
    assert_direct(&lab, &outcome, secs);
}

/// Issue 14, item 5: both home routers port-random (`--random-fully`): no direct pair, so the
/// call is relayed from start to end through both nodes (the caller's node a relays between
/// its client and node b, node b between node a and its client), with audio both ways.
#[test]
fn random_fully_clients_on_two_nodes_are_relayed_through_both() {
    let secs = 5.0;
    let sides = Sides {
        callee: RandomFully,
        caller: RandomFully,
        nodes: 2,
        advertise_wildcard: false,
    };
    let Some((lab, outcome)) = call_across(sides, secs) else {
        return;
    };
    assert_relayed_through_both(&lab, &outcome, secs);
}

/// Three nodes; the caller's node c listens on the wildcard address and advertises its public
/// one (`--advertise`). The caller on node c calls the callee on node b through port-random
/// routers: signalled and relayed through c and b only (node a, in the cluster, hears and
/// forwards nothing of it), with audio both ways.
#[test]
fn three_nodes_relay_through_the_callers_and_the_callees_only() {
    let secs = 5.0;
    let sides = Sides {
        callee: RandomFully,
        caller: RandomFully,
        nodes: 3,
        advertise_wildcard: true,
    };
    let Some((lab, outcome)) = call_across(sides, secs) else {
        return;
    };
    assert_eq!((lab.callee_node, lab.caller_node), (1, 2));
    assert_relayed_through_both(&lab, &outcome, secs);
    assert_eq!(
        outcome.relayed[0], 0,
        "node a relayed: {:?}",
        outcome.relayed
    );
}

/// Three nodes, port-preserving routers, the caller on node c (listening on the wildcard
/// address, `--advertise`): direct, as with two; node a takes no part.
#[test]
fn three_nodes_masquerade_clients_go_direct() {
    let secs = 5.0;
    let sides = Sides {
        callee: Masquerade,
        caller: Masquerade,
        nodes: 3,
        advertise_wildcard: true,
    };
    let Some((lab, outcome)) = call_across(sides, secs) else {
        return;
    };
    assert_direct(&lab, &outcome, secs);
}

/// Starts a call of `secs` across two nodes (callee on b, caller on a) through routers of
/// `kind`, waits until it connected and `after` more (from the path the caller's log says
/// it took: direct or relay), then kills node b, the callee's (SIGKILL: it tells nobody).
/// Returns the lab, both processes and when b died.
fn kill_the_callees_node(
    kind: NatKind,
    secs: f64,
    path: &str,
    after: Duration,
) -> Option<(ClusterLab, Headless, Headless, Instant)> {
    let sides = Sides {
        callee: kind,
        caller: kind,
        nodes: 2,
        advertise_wildcard: false,
    };
    let mut lab = ClusterLab::new(sides)?;
    let callee = lab.answer();
    let mut caller = lab.call(secs);
    caller.expect_log("connected", Duration::from_secs(10));
    if path == "direct" {
        // Only once direct: from then on no frame crosses the nodes.
        let line = caller.wait_line_after("media path changed", 0, Duration::from_secs(5));
        assert!(
            line.as_deref().is_some_and(|l| l.contains("to=Direct")),
            "not direct: {line:?}: {:#?}",
            caller.log
        );
    }
    std::thread::sleep(after);
    let node_b = lab.callee_node;
    lab.nodes[node_b].server.kill();
    let killed = Instant::now();
    eprintln!("cluster lab: node b killed {after:?} into the {path} call");
    Some((lab, caller, callee, killed))
}

/// Issue 14: a node that dies leaves its direct calls to their clients. Two port-preserving
/// routers, a direct call across nodes a and b; 5 s in (well after the last frame relayed at
/// the start: [`traversal::rendezvous`]'s RELAYED_WITHIN is 3 s), the callee's node b is
/// killed. Node a finds b gone within b's liveness, forgets the call without ending it, and
/// the call goes on to its end with audio both ways; the caller hangs up normally.
#[test]
fn a_direct_call_goes_on_when_the_callees_node_dies() {
    use traversal::rendezvous::{CLUSTER_HEARTBEAT, CLUSTER_LIVENESS};
    // Long enough for node a to find b gone mid-call.
    let after = Duration::from_secs(5);
    let secs = 5.0 + (CLUSTER_LIVENESS + 2 * CLUSTER_HEARTBEAT).as_secs_f64() + 4.0;
    let Some((lab, caller, callee, killed)) =
        kill_the_callees_node(Masquerade, secs, "direct", after)
    else {
        return;
    };
    // Node a finds b gone within b's liveness and two heartbeats, while the call goes on.
    let bound = CLUSTER_LIVENESS + 2 * CLUSTER_HEARTBEAT;
    let found = loop {
        let log = lab.nodes[0].server.log();
        if log
            .iter()
            .any(|l| l.contains("cluster: a node with calls here is gone"))
        {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < bound + Duration::from_secs(1),
            "node a never found b gone: {}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("cluster lab: node a found b gone {found:?} after the kill (bound {bound:?})");
    let caller = caller.finish(Duration::from_secs_f64(secs + 20.0));
    let caller_ended = killed.elapsed();
    let callee = callee.finish(Duration::from_secs(20));
    let cluster_lines = |log: Vec<String>| -> Vec<String> {
        log.into_iter().filter(|l| l.contains("cluster")).collect()
    };
    eprintln!(
        "cluster lab: the caller hung up {caller_ended:?} after node b died; the callee exited \
         {:?}; node a: {:#?}",
        callee.status,
        cluster_lines(lab.nodes[0].server.log())
    );
    assert!(
        caller.status.success(),
        "caller failed: {caller:#?}\n{}",
        lab.logs()
    );
    let caller_json = caller.one_json();
    eprintln!("caller: {caller_json}");
    assert_eq!(caller_json["end"], "hung_up", "{caller_json}");
    assert_eq!(caller_json["path"], "direct", "{caller_json}");
    check_report(&caller_json, &lab.callee, secs, 0.8);
    // Node a never ended the call: the client was not told its peer was lost.
    assert!(
        !caller
            .log
            .iter()
            .any(|l| l.contains("the server lost the peer")),
        "node a ended a direct call: {:#?}\n{}",
        caller.log,
        lab.logs()
    );
    // It found b gone mid-call (the call was still up), and left the call alone: it was
    // direct.
    let node_a = lab.nodes[0].server.log();
    let said = |needle: &str| node_a.iter().any(|l| l.contains(needle));
    assert!(
        said("cluster: a node with calls here is gone"),
        "{}",
        lab.logs()
    );
    assert!(
        !said("a node with a relayed call is gone"),
        "{}",
        lab.logs()
    );
    assert_eq!(lab.nodes[0].metric("pinhole_cluster_remote_calls"), 0);
    // The callee's side of the call: it went on as long (its report, whatever its end).
    let callee_json = callee
        .json()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no report from the callee: {callee:#?}"));
    eprintln!("callee: {callee_json}");
    assert_eq!(callee_json["path"], "direct", "{callee_json}");
    check_report(&callee_json, &lab.caller, secs - 1.0, 0.8);
    lab.check_audio(0.8);
}

/// Issue 14: a node that dies ends its relayed calls for the other node's clients. Two
/// port-random routers, a call relayed through nodes a and b; 2 s in, the callee's node b is
/// killed. Node a finds b gone within b's liveness and two heartbeats and ends the call
/// (`peer_lost`), and the caller's `pinhole call` ends with that reason and its report.
#[test]
fn a_relayed_call_ends_with_peer_lost_when_the_callees_node_dies() {
    use traversal::rendezvous::{CLUSTER_HEARTBEAT, CLUSTER_LIVENESS};
    let secs = 30.0;
    let Some((lab, caller, callee, killed)) =
        kill_the_callees_node(RandomFully, secs, "relay", Duration::from_secs(2))
    else {
        return;
    };
    let bound = CLUSTER_LIVENESS + 2 * CLUSTER_HEARTBEAT + Duration::from_secs(1);
    let caller = caller.finish(bound + Duration::from_secs(5));
    let ended = killed.elapsed();
    let callee = callee.finish(Duration::from_secs(30));
    eprintln!(
        "cluster lab: the relayed call ended for the caller {ended:?} after node b died \
         (bound {bound:?}); callee exited {:?} after {:?}",
        callee.status, callee.waited
    );
    let node_a = lab.nodes[0].server.log();
    let said = |log: &[String], needle: &str| log.iter().any(|l| l.contains(needle));
    eprintln!(
        "cluster lab: node a ended it: {}; the caller found its peer silent: {}; the callee's \
         end: {:?}",
        said(&node_a, "a node with a relayed call is gone"),
        said(&caller.log, "nothing from the peer"),
        callee.json().first().map(|j| j["end"].clone())
    );
    let caller_json = caller
        .json()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no report from the caller: {caller:#?}\n{}", lab.logs()));
    eprintln!("caller: {caller_json}");
    eprintln!("caller's WAV: {}", lab.caller.timeline(&lab.callee));
    assert_eq!(caller_json["end"], "peer_lost", "{caller_json}");
    assert_eq!(caller_json["path"], "relay", "{caller_json}");
    assert!(
        ended <= bound,
        "ended {ended:?} after the kill, not within {bound:?}"
    );
    // Node a ended the call when it found b gone, unless the caller, hearing nothing (its
    // peer silence is 5 s, about b's liveness), hung up first: which one is a race.
    if said(&node_a, "cluster: a node with calls here is gone") {
        assert!(
            said(&node_a, "a node with a relayed call is gone"),
            "node a: {node_a:#?}"
        );
    }
    assert_eq!(lab.nodes[0].metric("pinhole_cluster_remote_calls"), 0);
    assert_eq!(lab.nodes[0].metric("pinhole_calls_active"), 0);
    // Not a normal end: the exit status says so.
    assert!(!caller.status.success(), "{caller:#?}");
    // Until b died (2 s), the callee was heard through both nodes.
    let heard = lab.caller.hears(&lab.callee) * (caller_json["duration_s"].as_f64().unwrap() - 0.5);
    assert!(
        heard >= 1.2,
        "caller heard the callee for {heard:.1} s: {caller_json}"
    );
    let received = caller_json["rtp"]["received"].as_u64().unwrap();
    assert!(
        received >= 80,
        "received {received} frames in 2 s: {caller_json}"
    );
}

/// Redis dies (SIGKILL) and comes back with its data (its append-only file) between two calls
/// across the cluster: both nodes notice, reconnect by themselves ("cluster: connected to
/// Redis" again, the names loaded back), and a
/// second call by name across them connects direct, with audio both ways.
#[test]
fn a_second_call_across_nodes_works_after_redis_restarted() {
    let secs = 3.0;
    let sides = Sides {
        callee: Masquerade,
        caller: Masquerade,
        nodes: 2,
        advertise_wildcard: false,
    };
    let Some(mut lab) = ClusterLab::new(sides) else {
        return;
    };
    let first = call_once(&lab, secs);
    assert_direct(&lab, &first, secs);
    let marks: Vec<usize> = lab.nodes.iter().map(|n| n.server.log().len()).collect();
    let restarted = Instant::now();
    lab.redis.restart().unwrap();
    // Each node finds its connections broken and reconnects within a few heartbeats.
    for (node, mark) in lab.nodes.iter().zip(marks) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.server.log()[mark..]
            .iter()
            .any(|l| l.contains("cluster: connected to Redis"))
        {
            assert!(
                Instant::now() < deadline,
                "node {} never reconnected: {}",
                node.addr(),
                lab.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!(
        "cluster lab: both nodes back on Redis {:?} after its restart",
        restarted.elapsed()
    );
    lab.wait_nodes_alive();
    // The names are still bound (from the append-only file).
    let bound = lab
        .redis
        .command(&["HGET", "{pinhole}:names", &lab.callee.name])
        .unwrap();
    assert!(
        bound.starts_with('$'),
        "{:?} lost: {bound:?}",
        lab.callee.name
    );
    let second = call_once(&lab, secs);
    assert_direct(&lab, &second, secs);
}
