//! The sans-IO `Server` with its call router, in virtual time: the relay follows the mappings the
//! authenticated keepalives report (once the new address has echoed its path challenge),
//! forwards only between the parties of a connected call, and a registration whose mapping
//! expires or that says goodbye ends its call. And what the server does against a hostile
//! client (issue 11): forged source addresses, probe floods, bursts at a name, connection
//! hoarding and silent connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use traversal::calls::registration_message;
use traversal::channel;
use traversal::control::{self, FrameDecoder, PROTOCOL_VERSION};
use traversal::server::{Config, ConnId, Server, TcpOutput, Transmit, hex, unhex};
use traversal::wire::{self, Flags, UdpMessage};

struct Client {
    conn: ConnId,
    media: SocketAddr,
    user_index: u32,
    key: Vec<u8>,
    sequence: u64,
    challenge: Vec<u8>,
}

struct H {
    server: Server,
    now: Instant,
    inbox: HashMap<ConnId, Vec<Value>>,
    decoders: HashMap<ConnId, FrameDecoder>,
    sent: Vec<Transmit>,
    closed: Vec<ConnId>,
}

impl H {
    fn new(idle: Duration) -> H {
        H::with(Config {
            idle_timeout: idle,
            ..Config::default()
        })
    }

    fn with(config: Config) -> H {
        H {
            server: Server::new(config, [3; 32]),
            now: Instant::now(),
            inbox: HashMap::new(),
            decoders: HashMap::new(),
            sent: Vec::new(),
            closed: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.server.poll_tcp() {
            match out {
                TcpOutput::Send { conn, bytes } => {
                    let d = self.decoders.entry(conn).or_default();
                    d.push(&bytes).unwrap();
                    while let Some(v) = d.next_message::<Value>().unwrap() {
                        self.inbox.entry(conn).or_default().push(v);
                    }
                }
                TcpOutput::Close { conn } => self.closed.push(conn),
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            self.sent.push(t);
        }
    }

    /// Messages of type `kind` sent to `conn` since the last look.
    fn take(&mut self, conn: ConnId, kind: &str) -> Vec<Value> {
        let inbox = self.inbox.entry(conn).or_default();
        let (want, rest): (Vec<Value>, Vec<Value>) =
            inbox.drain(..).partition(|m| m["type"] == kind);
        *inbox = rest;
        want
    }

    fn send(&mut self, conn: ConnId, message: &Value) {
        self.server
            .handle_tcp_data(self.now, conn, &control::encode(message));
        self.drain();
    }

    fn udp(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<Transmit> {
        self.sent.clear();
        self.server.handle_udp(self.now, from, bytes);
        self.drain();
        std::mem::take(&mut self.sent)
    }

    /// The next authenticated request of `c`.
    fn request(c: &mut Client) -> Vec<u8> {
        c.sequence += 1;
        let mask = wire::sequence_mask(&c.key);
        UdpMessage::Request {
            transaction_id: wire::sequenced_tid(mask, c.sequence, [9; 4]),
            user_index: c.user_index,
            flags: Flags::default(),
        }
        .encode(&c.key)
    }

    /// A keepalive from `c.media`; from a new address, the path challenge is echoed from there.
    fn keepalive(&mut self, c: &mut Client) {
        let request = H::request(c);
        let mut out = self.udp(c.media, &request);
        if let Some(response) = out
            .iter()
            .find_map(|t| wire::path_response(&t.contents, c.user_index, &c.key))
        {
            assert_eq!(out.len(), 1, "a challenge and nothing else");
            assert!(out[0].contents.len() <= request.len());
            out = self.udp(c.media, &response);
        }
        let answer = out.iter().find(|t| t.destination == c.media).unwrap();
        assert!(matches!(
            UdpMessage::decode(&answer.contents, |_| Some(&c.key)),
            Ok(UdpMessage::Answer { flags, .. }) if !flags.path_challenge
        ));
    }

    /// A client on connection `conn` with its media socket at `media`, registered as `name`.
    fn join(&mut self, conn: ConnId, media: SocketAddr, name: &str, seed: u8) -> Client {
        let peer = SocketAddr::from(([198, 51, 100, 1], 50_000 + conn as u16));
        assert!(self.server.handle_tcp_open(self.now, conn, peer));
        self.send(
            conn,
            &json!({"type": "hello", "version": PROTOCOL_VERSION, "access": peer}),
        );
        let welcome = self.take(conn, "welcome").pop().unwrap();
        let mut c = Client {
            conn,
            media,
            user_index: u32::try_from(welcome["user_index"].as_u64().unwrap()).unwrap(),
            key: unhex(welcome["key"].as_str().unwrap()).unwrap(),
            sequence: 0,
            challenge: unhex(welcome["challenge"].as_str().unwrap()).unwrap(),
        };
        self.keepalive(&mut c);
        let key = SigningKey::from_bytes(&[seed; 32]);
        let signature = key.sign(&registration_message(name, &c.challenge));
        self.send(
            conn,
            &json!({"type": "register", "name": name,
                "public_key": hex(key.verifying_key().as_bytes()),
                "signature": hex(&signature.to_bytes())}),
        );
        assert_eq!(self.take(conn, "registered").len(), 1, "{name}");
        c
    }

    /// Alice (1) calls bob (2), who accepts: the channel and alice's and bob's relay tokens.
    fn call(&mut self, alice: &Client, bob: &Client, call_id: u64) -> (u16, [Token; 2]) {
        self.send(alice.conn, &call_message(call_id, "bob", &[alice.media]));
        assert_eq!(self.take(bob.conn, "incoming").len(), 1);
        self.send(
            bob.conn,
            &json!({"type": "accept", "call_id": call_id, "candidates": [bob.media],
                "e2e": {"ephemeral": "01".repeat(32), "signature": "02".repeat(64)}}),
        );
        let a = self.take(alice.conn, "connected").pop().unwrap();
        let b = self.take(bob.conn, "connected").pop().unwrap();
        assert_eq!(a["channel"], b["channel"]);
        let token = |m: &Value| -> Token {
            unhex(m["relay_token"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        };
        (
            u16::try_from(a["channel"].as_u64().unwrap()).unwrap(),
            [token(&a), token(&b)],
        )
    }
}

type Token = [u8; channel::TOKEN_LEN];

/// A relay frame on `channel` with the sender's `token`.
fn frame(channel: u16, token: Token, media: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    channel::encode_relay_into(channel, token, media, &mut out).unwrap();
    out
}

fn call_message(call_id: u64, to: &str, candidates: &[SocketAddr]) -> Value {
    json!({"type": "call", "call_id": call_id, "to": to, "candidates": candidates,
        "commitment": "ab".repeat(32)})
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn the_relay_carries_frames_only_between_the_registered_parties() {
    let mut h = H::new(Duration::from_secs(180));
    let alice = h.join(1, addr("203.0.113.1:4000"), "alice", 1);
    let mut bob = h.join(2, addr("203.0.113.2:5000"), "bob", 2);
    let carol = h.join(3, addr("203.0.113.3:6000"), "carol", 3);
    let (channel, [ta, tb]) = h.call(&alice, &bob, 7);
    let (from_alice, from_bob) = (
        frame(channel, ta, b"\x80audio"),
        frame(channel, tb, b"\x80oi"),
    );
    let out = h.udp(alice.media, &from_alice);
    assert_eq!(out.len(), 1);
    let to_bob = frame(channel, tb, b"\x80audio");
    assert_eq!((out[0].destination, &out[0].contents), (bob.media, &to_bob));
    let out = h.udp(bob.media, &from_bob);
    assert_eq!(out[0].destination, alice.media);
    // Not a reflector: a stranger, a registered client outside the call, a spoofed port.
    assert!(h.udp(addr("192.0.2.99:1234"), &from_alice).is_empty());
    assert!(h.udp(carol.media, &from_alice).is_empty());
    assert!(h.udp(addr("203.0.113.1:4001"), &from_alice).is_empty());
    // Bob's NAT gives him a new mapping: his keepalive moves the relay with it (once the new
    // address echoed its challenge).
    bob.media = addr("203.0.113.2:5999");
    h.keepalive(&mut bob);
    let out = h.udp(alice.media, &from_alice);
    assert_eq!(out[0].destination, bob.media);
    assert!(h.udp(addr("203.0.113.2:5000"), &from_bob).is_empty());
    assert_eq!(h.udp(bob.media, &from_bob)[0].destination, alice.media);
    let stats = h.server.stats().calls;
    assert_eq!(stats.relayed, 4);
    assert_eq!(stats.relay_no_route, 4);
    // Goodbye from bob: alice's call ends with peer_lost and the relay stops.
    h.send(bob.conn, &json!({"type": "bye"}));
    let ended = h.take(alice.conn, "ended");
    assert_eq!(ended[0]["reason"], "peer_lost");
    assert!(h.udp(alice.media, &from_alice).is_empty());
}

#[test]
fn an_expired_mapping_ends_the_call() {
    let mut h = H::new(Duration::from_secs(20));
    let mut alice = h.join(1, addr("203.0.113.1:4000"), "alice", 1);
    let bob = h.join(2, addr("203.0.113.2:5000"), "bob", 2);
    let (channel, [ta, _]) = h.call(&alice, &bob, 8);
    // Alice keeps her mapping alive; bob's keepalives stop.
    for _ in 0..25 {
        h.now += Duration::from_secs(1);
        h.keepalive(&mut alice);
        h.server.handle_timeout(h.now);
        h.drain();
    }
    let ended = h.take(alice.conn, "ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (ended[0]["call_id"].as_u64(), ended[0]["reason"].as_str()),
        (Some(8), Some("peer_lost"))
    );
    assert_eq!(h.take(bob.conn, "ended")[0]["reason"], "server_error");
    assert!(
        h.udp(alice.media, &frame(channel, ta, b"\x80audio"))
            .is_empty()
    );
    assert_eq!(h.server.stats().calls.calls, 0);
}

#[test]
fn ringing_times_out_through_the_server_timer() {
    let mut h = H::new(Duration::from_secs(180));
    let alice = h.join(1, addr("203.0.113.1:4000"), "alice", 1);
    let bob = h.join(2, addr("203.0.113.2:5000"), "bob", 2);
    h.send(alice.conn, &call_message(1, "bob", &[]));
    h.send(bob.conn, &json!({"type": "ringing", "call_id": 1}));
    assert_eq!(h.take(alice.conn, "ringing").len(), 1);
    for _ in 0..31 {
        h.now += Duration::from_secs(1);
        h.server.handle_timeout(h.now);
        h.drain();
    }
    assert_eq!(h.take(alice.conn, "ended")[0]["reason"], "no_answer");
    assert_eq!(h.take(bob.conn, "ended")[0]["reason"], "no_answer");
}

#[test]
fn call_messages_before_hello_are_refused() {
    let mut h = H::new(Duration::from_secs(180));
    let peer = addr("198.51.100.1:50000");
    assert!(h.server.handle_tcp_open(h.now, 1, peer));
    h.send(1, &call_message(1, "echo", &[]));
    assert_eq!(h.take(1, "error")[0]["code"], "no_hello");
    assert_eq!(h.server.stats().calls.calls, 0);
}

/// Issue 11: one authenticated request sent with a forged source address moved the sender's
/// mapping to a victim, who then got probes and the other party's relayed media. Now the
/// victim gets a challenge or four, each no bigger than the request, and nothing moves.
#[test]
fn a_forged_source_address_never_moves_the_mapping() {
    let mut h = H::new(Duration::from_secs(180));
    let alice = h.join(1, addr("203.0.113.1:4000"), "alice", 1);
    let mut bob = h.join(2, addr("203.0.113.2:5000"), "bob", 2);
    let (channel, [ta, _]) = h.call(&alice, &bob, 7);
    h.inbox.clear();
    // A second later, bob signs requests with his own key and sends them as if from the
    // victim.
    h.now += Duration::from_secs(1);
    let victim = addr("192.0.2.50:9999");
    let mut to_victim = Vec::new();
    for _ in 0..20 {
        let request = H::request(&mut bob);
        for t in h.udp(victim, &request) {
            assert_eq!(t.destination, victim);
            assert!(t.contents.len() <= request.len());
            to_victim.push(t.contents);
        }
    }
    assert_eq!(
        to_victim.len(),
        4,
        "challenges: 4 at once, then one every 250 ms"
    );
    assert!(
        to_victim
            .iter()
            .all(|c| wire::path_response(c, bob.user_index, &bob.key).is_some())
    );
    assert_eq!(h.server.mapping(bob.user_index), Some(bob.media));
    assert!(h.take(bob.conn, "udp_seen").is_empty());
    let out = h.udp(alice.media, &frame(channel, ta, b"\x80media"));
    assert_eq!(
        out[0].destination, bob.media,
        "alice's media still goes to bob"
    );
    // Bob cannot answer for the victim: the echo from his own address, or a made-up one from
    // the victim's, moves nothing.
    let response = wire::path_response(&to_victim[0], bob.user_index, &bob.key).unwrap();
    assert!(h.udp(bob.media, &response).is_empty());
    let made_up = UdpMessage::Request {
        transaction_id: [7; 12],
        user_index: bob.user_index,
        flags: Flags {
            path_challenge: true,
            ..Flags::default()
        },
    }
    .encode(&bob.key);
    assert!(h.udp(victim, &made_up).is_empty());
    assert_eq!(h.server.stats().udp_bad_path_response, 2);
    assert_eq!(h.server.mapping(bob.user_index), Some(bob.media));
    // Probes go to the mapping that proved it receives.
    h.now += Duration::from_secs(1);
    h.send(
        bob.conn,
        &json!({"type": "probe", "nonce": 1, "target": "main"}),
    );
    assert_eq!(h.take(bob.conn, "probe_sent")[0]["to"], json!(bob.media));
}

/// Issue 11: probes went out at 29 a second. Now a registration's probes of every kind
/// together: 4 at once, then 2 a second (each kind still 100 ms apart).
#[test]
fn probes_are_paced_per_registration() {
    let mut h = H::with(Config {
        alternate_port: true,
        ..Config::default()
    });
    let bob = h.join(2, addr("203.0.113.2:5000"), "bob", 2);
    let start = h.now;
    let mut probes = 0;
    for i in 0..100u64 {
        h.now = start + Duration::from_millis(10 * i);
        for alternate in [false, true] {
            h.sent.clear();
            h.send(
                bob.conn,
                &json!({"type": "probe", "nonce": i, "target": "main",
                    "from_alternate_port": alternate}),
            );
            probes += h.sent.iter().filter(|t| t.destination == bob.media).count();
        }
    }
    // 4 at once, then one every 500 ms: 5 in the first second (10 a second per kind before,
    // 20 here).
    assert_eq!(probes, 5);
    assert_eq!(h.take(bob.conn, "probe_sent").len(), 5);
    assert_eq!(h.take(bob.conn, "probe_failed").len(), 200 - 5);
}

/// Issue 11: one TCP write of 17 `call` + `hang_up` pairs aimed at a name closed the victim's
/// control connection. Now the victim hears 3 rings, the rest is refused to the sender.
#[test]
fn a_burst_at_a_name_in_one_write_stays_within_the_callees_budget() {
    let mut h = H::new(Duration::from_secs(180));
    let mallory = h.join(1, addr("203.0.113.1:4000"), "mallory", 1);
    let bob = h.join(2, addr("203.0.113.2:5000"), "bob", 2);
    h.inbox.clear();
    let mut write = Vec::new();
    for id in 1..=17u64 {
        write.extend(control::encode(&call_message(id, "bob", &[])));
        write.extend(control::encode(&json!({"type": "hang_up", "call_id": id})));
    }
    h.server.handle_tcp_data(h.now, mallory.conn, &write);
    h.drain();
    let to_bob = h.inbox.remove(&bob.conn).unwrap_or_default();
    assert_eq!(to_bob.len(), 6, "3 incoming and 3 ended: {to_bob:?}");
    let refused = h.take(mallory.conn, "error");
    assert_eq!(refused.len(), 14);
    assert!(refused.iter().all(|e| e["code"] == "rate_limited"));
    assert!(h.closed.is_empty());
}

/// Issue 11: a client that held 20,000 connections locked everyone else out. Now 16 per
/// address (an IPv6 /64 counts as one).
#[test]
fn one_address_holds_at_most_16_connections() {
    let mut h = H::new(Duration::from_secs(180));
    for (prefix, other) in [
        ("198.51.100.7", "198.51.100.8"),
        ("[2001:db8:1:2::", "[2001:db8:1:3::"),
    ] {
        h.server = Server::new(Config::default(), [3; 32]);
        let at = |n: u16| -> SocketAddr {
            if prefix.starts_with('[') {
                addr(&format!("{prefix}{n:x}]:4000"))
            } else {
                addr(&format!("{prefix}:{}", 4000 + n))
            }
        };
        for n in 1..=16 {
            assert!(h.server.handle_tcp_open(h.now, ConnId::from(n), at(n)));
        }
        assert!(!h.server.handle_tcp_open(h.now, 17, at(17)));
        h.drain();
        assert_eq!(h.take(17, "error")[0]["code"], "too_many_connections");
        assert_eq!(h.closed.pop(), Some(17));
        assert_eq!(h.server.stats().refused_per_address, 1);
        // Another address is welcome; a closed connection makes room.
        let other = if prefix.starts_with('[') {
            addr(&format!("{other}1]:4000"))
        } else {
            addr(&format!("{other}:4000"))
        };
        assert!(h.server.handle_tcp_open(h.now, 18, other));
        h.server.handle_tcp_closed(h.now, 1);
        assert!(h.server.handle_tcp_open(h.now, 19, at(19)));
    }
}

/// Issue 11: connections that said hello were never timed out. Now a connection with no
/// hello is closed after 10 s, one with neither a name nor a mapping after 30 s, and one that
/// sends nothing (no control message, no keepalive) after 5 minutes.
#[test]
fn silent_connections_are_closed() {
    let mut h = H::new(Duration::from_secs(180));
    let peer = |n: u16| addr(&format!("198.51.100.{n}:5000"));
    // 1: never says hello. 2: says hello, nothing more. 3: registers a name (no UDP).
    // 4: keeps a mapping (no name, as nat-check does).
    assert!(h.server.handle_tcp_open(h.now, 1, peer(1)));
    assert!(h.server.handle_tcp_open(h.now, 2, peer(2)));
    h.send(
        2,
        &json!({"type": "hello", "version": PROTOCOL_VERSION, "access": peer(2)}),
    );
    let _carol = h.join(3, addr("203.0.113.3:6000"), "carol", 3);
    let mut dave = h.join(4, addr("203.0.113.4:6000"), "dave", 4);
    h.send(4, &json!({"type": "bye"}));
    // Dave said bye (a registration with a name is never silent); start him again without one.
    assert!(h.server.handle_tcp_open(h.now, 5, peer(5)));
    h.send(
        5,
        &json!({"type": "hello", "version": PROTOCOL_VERSION, "access": peer(5)}),
    );
    let welcome = h.take(5, "welcome").pop().unwrap();
    dave.conn = 5;
    dave.user_index = u32::try_from(welcome["user_index"].as_u64().unwrap()).unwrap();
    dave.key = unhex(welcome["key"].as_str().unwrap()).unwrap();
    dave.sequence = 0;
    h.keepalive(&mut dave);
    h.closed.clear();
    let start = h.now;
    let mut closed_at = HashMap::new();
    for s in 1..=320u64 {
        h.now = start + Duration::from_secs(s);
        h.server.handle_timeout(h.now);
        h.drain();
        // Dave's keepalives keep his mapping.
        if s % 10 == 0 {
            h.keepalive(&mut dave);
        }
        for c in h.closed.drain(..) {
            closed_at.entry(c).or_insert(s);
        }
    }
    assert_eq!(closed_at.get(&1), Some(&10));
    assert_eq!(closed_at.get(&2), Some(&30));
    // Carol's name keeps her past 30 s, but she sends nothing: 5 minutes after her last
    // message (her registration, at the start).
    assert_eq!(closed_at.get(&3), Some(&300));
    assert_eq!(closed_at.get(&5), None, "dave's keepalives keep him");
    assert_eq!(h.server.stats().closed_unauthenticated, 3);
}
