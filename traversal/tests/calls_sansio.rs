//! The sans-IO `Server` with its call router, in virtual time: the relay follows the mappings the
//! authenticated keepalives report, forwards only between the parties of a connected call, and
//! a registration whose mapping expires or that says goodbye ends its call.

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
}

impl H {
    fn new(idle: Duration) -> H {
        H {
            server: Server::new(
                Config {
                    idle_timeout: idle,
                    ..Config::default()
                },
                [3; 32],
            ),
            now: Instant::now(),
            inbox: HashMap::new(),
            decoders: HashMap::new(),
            sent: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(out) = self.server.poll_tcp() {
            if let TcpOutput::Send { conn, bytes } = out {
                let d = self.decoders.entry(conn).or_default();
                d.push(&bytes).unwrap();
                while let Some(v) = d.next_message::<Value>().unwrap() {
                    self.inbox.entry(conn).or_default().push(v);
                }
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

    fn keepalive(&mut self, c: &mut Client) {
        c.sequence += 1;
        let mask = wire::sequence_mask(&c.key);
        let request = UdpMessage::Request {
            transaction_id: wire::sequenced_tid(mask, c.sequence, [9; 4]),
            user_index: c.user_index,
            flags: Flags::default(),
        }
        .encode(&c.key);
        let answers = self.udp(c.media, &request);
        assert!(answers.iter().any(|t| t.destination == c.media));
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

    /// Alice (1) calls bob (2), who accepts: the channel.
    fn call(&mut self, alice: &Client, bob: &Client, call_id: u64) -> u16 {
        self.send(
            alice.conn,
            &json!({"type": "call", "call_id": call_id, "to": "bob", "candidates": [alice.media]}),
        );
        assert_eq!(self.take(bob.conn, "incoming").len(), 1);
        self.send(
            bob.conn,
            &json!({"type": "accept", "call_id": call_id, "candidates": [bob.media]}),
        );
        let a = self.take(alice.conn, "connected").pop().unwrap();
        let b = self.take(bob.conn, "connected").pop().unwrap();
        assert_eq!(a["channel"], b["channel"]);
        u16::try_from(a["channel"].as_u64().unwrap()).unwrap()
    }
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
    let channel = h.call(&alice, &bob, 7);
    let frame = channel::encode(channel, b"\x80audio").unwrap();
    let out = h.udp(alice.media, &frame);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].destination, &out[0].contents), (bob.media, &frame));
    let out = h.udp(bob.media, &frame);
    assert_eq!(out[0].destination, alice.media);
    // Not a reflector: a stranger, a registered client outside the call, a spoofed port.
    assert!(h.udp(addr("192.0.2.99:1234"), &frame).is_empty());
    assert!(h.udp(carol.media, &frame).is_empty());
    assert!(h.udp(addr("203.0.113.1:4001"), &frame).is_empty());
    // Bob's NAT gives him a new mapping: his keepalive moves the relay with it.
    bob.media = addr("203.0.113.2:5999");
    h.keepalive(&mut bob);
    let out = h.udp(alice.media, &frame);
    assert_eq!(out[0].destination, bob.media);
    assert!(h.udp(addr("203.0.113.2:5000"), &frame).is_empty());
    assert_eq!(h.udp(bob.media, &frame)[0].destination, alice.media);
    let stats = h.server.stats().calls;
    assert_eq!(stats.relayed, 4);
    assert_eq!(stats.relay_no_route, 4);
    // Goodbye from bob: alice's call ends with peer_lost and the relay stops.
    h.send(bob.conn, &json!({"type": "bye"}));
    let ended = h.take(alice.conn, "ended");
    assert_eq!(ended[0]["reason"], "peer_lost");
    assert!(h.udp(alice.media, &frame).is_empty());
}

#[test]
fn an_expired_mapping_ends_the_call() {
    let mut h = H::new(Duration::from_secs(20));
    let mut alice = h.join(1, addr("203.0.113.1:4000"), "alice", 1);
    let bob = h.join(2, addr("203.0.113.2:5000"), "bob", 2);
    let channel = h.call(&alice, &bob, 8);
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
    let frame = channel::encode(channel, b"\x80audio").unwrap();
    assert!(h.udp(alice.media, &frame).is_empty());
    assert_eq!(h.server.stats().calls.calls, 0);
}

#[test]
fn ringing_times_out_through_the_server_timer() {
    let mut h = H::new(Duration::from_secs(180));
    let alice = h.join(1, addr("203.0.113.1:4000"), "alice", 1);
    let bob = h.join(2, addr("203.0.113.2:5000"), "bob", 2);
    h.send(
        alice.conn,
        &json!({"type": "call", "call_id": 1, "to": "bob", "candidates": []}),
    );
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
    h.send(
        1,
        &json!({"type": "call", "call_id": 1, "to": "echo", "candidates": []}),
    );
    assert_eq!(h.take(1, "error")[0]["code"], "no_hello");
    assert_eq!(h.server.stats().calls.calls, 0);
}
