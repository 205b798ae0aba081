//! Nodes of a cluster (`pinhole-rendezvous --cluster redis://...`, the real binary) sharing a
//! real `redis-server` on loopback: a call between users of two nodes rings, connects and is
//! relayed both ways through both nodes; names stay owned across nodes, node restarts and a
//! Redis that lost its data; a killed node's relayed calls end for the other side with a
//! reason; a Redis restart and a node cut off from Redis, each with what keeps working.
//!
//! Needs `redis-server` (scripts/packages/cluster.txt; `./dev test` installs it) and the
//! binaries (`cargo build --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pinhole_tests::redis::{Cut, Redis};
use pinhole_tests::scripted::{Client, RelayedCall};
use pinhole_tests::{Place, Rendezvous};
use serde_json::{Value, json};
use traversal::channel;
use traversal::rendezvous::{CLUSTER_HEARTBEAT, CLUSTER_LIVENESS};

const WAIT: Duration = Duration::from_secs(5);

/// A node; without per-sender limits, since tests call again and again until the cluster has
/// caught up (the limits apply across nodes as on one: `calls::cluster_tests`).
fn node(redis: &str) -> Rendezvous {
    Rendezvous::start_at(
        Place::Local,
        "127.0.0.1:0",
        &["--cluster", redis, "--no-limits"],
    )
}

/// A node with its metrics endpoint on `metrics` (a free port).
fn node_with_metrics(redis: &str, metrics: &str) -> Rendezvous {
    Rendezvous::start_at(
        Place::Local,
        "127.0.0.1:0",
        &["--cluster", redis, "--no-limits", "--metrics", metrics],
    )
}

/// `GET /metrics`: each sample line's name (with labels) and value.
fn scrape(addr: &str) -> std::collections::HashMap<String, u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: pinhole\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("pinhole_cluster"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn join(node: &Rendezvous, name: &str, seed: u8) -> Client {
    let mut c = Client::connect(node).unwrap();
    c.register(name, &key(seed))
        .unwrap_or_else(|e| panic!("{name} on {}: {e}; log {:#?}", node.addr, node.log()));
    c
}

/// `caller` calls `name` with `call_id`.
fn place_call(caller: &mut Client, call_id: u64, name: &str) {
    let candidates = [caller.mapped().unwrap()];
    caller
        .send(&json!({"type": "call", "call_id": call_id, "to": name,
            "candidates": candidates, "commitment": "ab".repeat(32)}))
        .unwrap();
}

/// `caller` calls `name` (registered by `callee`, perhaps on another node), `callee` accepts.
fn call(caller: &mut Client, callee: &mut Client, name: &str, call_id: u64) -> RelayedCall {
    place_call(caller, call_id, name);
    let incoming = callee.expect("incoming").unwrap();
    assert_eq!(incoming["call_id"], call_id);
    let e2e = json!({"ephemeral": "cd".repeat(32), "signature": "ef".repeat(64)});
    callee
        .send(&json!({"type": "accept", "call_id": call_id, "candidates": [], "e2e": e2e}))
        .unwrap();
    let token = |m: &Value| -> [u8; 8] {
        let bytes = traversal::server::unhex(m["relay_token"].as_str().unwrap()).unwrap();
        bytes.try_into().unwrap()
    };
    let to_caller = caller.expect("connected").unwrap();
    let to_callee = callee.expect("connected").unwrap();
    assert_eq!(to_caller["channel"], to_callee["channel"]);
    assert_eq!(to_caller["e2e"]["ephemeral"], "cd".repeat(32));
    RelayedCall {
        channel: u16::try_from(to_caller["channel"].as_u64().unwrap()).unwrap(),
        caller_token: token(&to_caller),
        callee_token: token(&to_callee),
    }
}

/// Whether a frame from `from` (to its own server) reaches `to` (from its own server) within
/// `wait`.
fn relays(from: &Client, to: &Client, channel: u16, token: [u8; 8], wait: Duration) -> bool {
    let payload = [0x80, 0x60, rand_byte(), rand_byte(), 0xee];
    let mut frame = Vec::new();
    channel::encode_relay_into(channel, token, &payload, &mut frame).unwrap();
    from.udp.send_to(&frame, from.server).unwrap();
    let end = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if let Ok((n, source)) = to.udp.recv_from(&mut buf)
            && let Ok(got) = channel::decode_relay(&buf[..n])
            && got.media == payload
        {
            assert_eq!(source, to.server, "relayed by the receiver's own node");
            return true;
        }
    }
    false
}

fn rand_byte() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The next `ended` message's reason (skipping others) within `wait`.
fn ended_within(client: &mut Client, wait: Duration) -> Option<String> {
    let m = client.next_where(wait, |m| m["type"] == "ended").ok()?;
    m["reason"].as_str().map(str::to_string)
}

/// Calls `callee` (registered as `name`) from `caller` until it rings there, within 10 s
/// (the cluster catching up); call ids from `id` on. Each try that does not ring is hung up.
fn ring_when_reachable(caller: &mut Client, callee: &mut Client, name: &str, id: &mut u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        *id += 1;
        caller.keepalive().unwrap();
        callee.keepalive().unwrap();
        place_call(caller, *id, name);
        if callee
            .next_where(Duration::from_millis(500), |m| m["type"] == "incoming")
            .is_ok()
        {
            return;
        }
        let _ = caller.send(&json!({"type": "hang_up", "call_id": *id}));
        assert!(Instant::now() < deadline, "{name} unreachable for 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_call_between_users_of_two_nodes_is_relayed_both_ways_through_both() {
    let Some(redis) = Redis::start() else { return };
    let metrics = free_port();
    let (a, b) = (
        node_with_metrics(&redis.url(), &metrics),
        node(&redis.url()),
    );
    let mut alice = join(&a, "alice", 1);
    let mut bob = join(&b, "bob", 2);
    let commands_before = redis.info("total_commands_processed").unwrap();
    let started = Instant::now();
    let relayed = call(&mut alice, &mut bob, "bob", 7);
    let setup = started.elapsed();
    for _ in 0..5 {
        assert!(relays(
            &alice,
            &bob,
            relayed.channel,
            relayed.caller_token,
            WAIT
        ));
        assert!(relays(
            &bob,
            &alice,
            relayed.channel,
            relayed.callee_token,
            WAIT
        ));
    }
    let seen = scrape(&metrics);
    assert_eq!(seen["pinhole_cluster_redis_up"], 1, "{seen:?}");
    assert_eq!(seen["pinhole_cluster_remote_calls"], 1, "{seen:?}");
    // Invite out, accept in.
    assert!(
        seen["pinhole_cluster_messages_total{direction=\"sent\"}"] >= 1,
        "{seen:?}"
    );
    assert!(
        seen["pinhole_cluster_messages_total{direction=\"received\"}"] >= 1,
        "{seen:?}"
    );
    eprintln!(
        "Redis commands for the call's setup (and heartbeats meanwhile): {}",
        redis.info("total_commands_processed").unwrap() - commands_before
    );
    // A forged frame (right channel, wrong token) goes nowhere.
    assert!(!relays(
        &alice,
        &bob,
        relayed.channel,
        [9; 8],
        Duration::from_millis(300)
    ));
    // And back the other way round: bob calls alice after a hang-up.
    alice
        .send(&json!({"type": "hang_up", "call_id": 7}))
        .unwrap();
    assert_eq!(ended_within(&mut bob, WAIT).as_deref(), Some("hung_up"));
    let back = call(&mut bob, &mut alice, "alice", 8);
    assert!(relays(&alice, &bob, back.channel, back.callee_token, WAIT));
    eprintln!("cross-node call set up in {setup:?}");
    bob.send(&json!({"type": "hang_up", "call_id": 8})).unwrap();
    assert_eq!(ended_within(&mut alice, WAIT).as_deref(), Some("hung_up"));
    // Calls to nobody still end at once.
    place_call(&mut alice, 9, "nobody");
    assert_eq!(ended_within(&mut alice, WAIT).as_deref(), Some("offline"));
}

#[test]
fn names_stay_owned_across_nodes_restarts_and_a_redis_that_lost_its_data() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (mut a, b) = (node(&redis.url()), node(&redis.url()));
    let carol = join(&a, "carol", 3);
    let refused = |node: &Rendezvous, seed| {
        let mut c = Client::connect(node).unwrap();
        let answer = c.register_answer("carol", &key(seed)).unwrap();
        answer["code"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(refused(&b, 4), "name_taken");
    // A lookalike on the other node: refused too (the store compares skeletons).
    let mut c = Client::connect(&b).unwrap();
    let answer = c.register_answer("Carol", &key(5)).unwrap();
    assert_eq!(answer["code"], "name_confusable", "{answer}");
    drop(carol);
    // Node a restarts (its cache is gone): still taken, from Redis.
    a.restart();
    assert_eq!(refused(&a, 4), "name_taken");
    // Redis loses everything (killed, its files removed, started empty): the nodes write the
    // bindings they know back when they reconnect.
    redis.stop();
    let wiped = redis.command(&["PING"]).is_err();
    assert!(wiped, "redis stopped");
    redis.wipe_and_start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bound = redis
            .command(&["HGET", "{pinhole}:names", "carol"])
            .unwrap();
        if bound.contains(&traversal::server::hex(key(3).verifying_key().as_bytes())) {
            break;
        }
        assert!(Instant::now() < deadline, "not written back: {bound}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let node3 = node(&redis.url());
    assert_eq!(refused(&node3, 4), "name_taken");
    join(&node3, "carol", 3);
}

#[test]
fn a_killed_node_ends_its_relayed_calls_for_the_other_side_with_a_reason() {
    let Some(redis) = Redis::start() else { return };
    let (a, mut b) = (node(&redis.url()), node(&redis.url()));
    let mut alice = join(&a, "alice", 1);
    let mut bob = join(&b, "bob", 2);
    let relayed = call(&mut alice, &mut bob, "bob", 1);
    assert!(relays(
        &alice,
        &bob,
        relayed.channel,
        relayed.caller_token,
        WAIT
    ));
    let killed = Instant::now();
    b.kill();
    // Alice's node hears of it within the node's liveness and a heartbeat.
    let bound = CLUSTER_LIVENESS + 2 * CLUSTER_HEARTBEAT;
    let reason = ended_within(&mut alice, bound + Duration::from_secs(1));
    assert_eq!(reason.as_deref(), Some("peer_lost"), "within {bound:?}");
    eprintln!("relayed call ended {:?} after the kill", killed.elapsed());
    // Bob moves to the surviving node: registered, reachable by name.
    let mut bob = join(&a, "bob", 2);
    let again = call(&mut alice, &mut bob, "bob", 2);
    assert!(relays(
        &alice,
        &bob,
        again.channel,
        again.caller_token,
        WAIT
    ));
}

#[test]
fn with_redis_down_a_node_serves_its_own_clients_and_resyncs_after() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let mut alice = join(&a, "alice", 1);
    let mut dave = join(&a, "dave", 4);
    let mut bob = join(&b, "bob", 2);
    redis.stop();
    // Calls between a node's own clients go on.
    let local = call(&mut alice, &mut dave, "dave", 1);
    assert!(relays(
        &alice,
        &dave,
        local.channel,
        local.caller_token,
        WAIT
    ));
    alice
        .send(&json!({"type": "hang_up", "call_id": 1}))
        .unwrap();
    assert_eq!(ended_within(&mut dave, WAIT).as_deref(), Some("hung_up"));
    // A known name registers again on its node; a new name is refused for now.
    drop(dave);
    join(&a, "dave", 4);
    let mut c = Client::connect(&a).unwrap();
    let answer = c.register_answer("erin", &key(5)).unwrap();
    assert_eq!(answer["code"], "try_later", "{answer}");
    // Across nodes: offline while the store is away.
    place_call(&mut alice, 2, "bob");
    assert_eq!(ended_within(&mut alice, WAIT).as_deref(), Some("offline"));
    // Redis is back (with its data): the nodes announce their users again.
    redis.restart().unwrap();
    ring_when_reachable(&mut alice, &mut bob, "bob", &mut 2);
    let answer = c.register_answer("erin", &key(5)).unwrap();
    assert_eq!(answer["type"], "registered", "{answer}");
}

#[test]
fn a_node_cut_off_from_redis_drops_out_of_presence_within_its_liveness() {
    let Some(redis) = Redis::start() else { return };
    let cut = Cut::new(redis.addr()).unwrap();
    let (a, b) = (node(&redis.url()), node(&cut.url()));
    let mut alice = join(&a, "alice", 1);
    let mut bob = join(&b, "bob", 2);
    let mut frank = join(&b, "frank", 6);
    cut.cut();
    let cut_at = Instant::now();
    // Within the liveness, bob is unreachable from a (offline: the node's liveness expired,
    // or its channel has no listener): bounded staleness.
    let mut id = 1;
    let gone = loop {
        place_call(&mut alice, id, "bob");
        match alice.next_where(Duration::from_millis(300), |m| {
            m["type"] == "ended" || m["type"] == "ringing"
        }) {
            Ok(m) if m["reason"] == "offline" => break cut_at.elapsed(),
            _ => {
                let _ = alice.send(&json!({"type": "hang_up", "call_id": id}));
                let _ = bob.next_where(Duration::from_millis(50), |m| m["type"] == "incoming");
            }
        }
        assert!(
            cut_at.elapsed() < CLUSTER_LIVENESS + Duration::from_secs(3),
            "still reachable"
        );
        id += 1;
    };
    eprintln!("a node cut off from Redis dropped out of presence after {gone:?}");
    // Meanwhile b's own clients call each other.
    let local = call(&mut bob, &mut frank, "frank", 50);
    assert!(relays(
        &bob,
        &frank,
        local.channel,
        local.caller_token,
        WAIT
    ));
    bob.send(&json!({"type": "hang_up", "call_id": 50}))
        .unwrap();
    // Back on Redis: reachable again.
    cut.restore();
    ring_when_reachable(&mut alice, &mut bob, "bob", &mut id);
}
