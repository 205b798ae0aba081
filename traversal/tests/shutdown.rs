//! The rendezvous server's graceful shutdown, in process on loopback with scripted clients:
//! every control connection hears `going_away`; hellos, name registrations and calls are
//! refused with `shutting_down`; the call in progress keeps its relay until it ends (then the
//! server stops at once) or the grace passes (then it stops with the call up); at the end
//! every control connection is closed and the port is free for the next server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pinhole_tests::scripted::{Client, Target, connect_tls};
use serde_json::{Value, json};
use traversal::channel;
use traversal::control::{self, FrameDecoder, PROTOCOL_VERSION};
use traversal::rendezvous::{self, Rendezvous, RendezvousConfig};
use traversal::server::RESTART_ALLOWANCE;

const WAIT: Duration = Duration::from_secs(5);

fn server_at(listen: &str) -> Rendezvous {
    let mut config = RendezvousConfig::new(listen.parse().unwrap());
    config.metrics = Some("127.0.0.1:0".parse().unwrap());
    rendezvous::spawn(config).unwrap()
}

fn target(server: &Rendezvous) -> Target {
    Target {
        addr: server.local_addr(),
        fingerprint: Some(server.fingerprint()),
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn expect(client: &mut Client, kind: &str) -> Value {
    client
        .next_where(WAIT, |m| m["type"] == kind)
        .unwrap_or_else(|e| panic!("waiting for {kind}: {e}"))
}

/// Alice and bob registered, in a call through the relay: the channel and their tokens.
struct Call {
    alice: Client,
    bob: Client,
    channel: u16,
    tokens: [[u8; 8]; 2],
}

impl Call {
    fn start(server: &Rendezvous) -> Call {
        let mut alice = Client::connect(target(server)).unwrap();
        let mut bob = Client::connect(target(server)).unwrap();
        alice.register("alice", &key(1)).unwrap();
        bob.register("bob", &key(2)).unwrap();
        let relayed = alice.call_accepted(&mut bob, "bob", 1).unwrap();
        let channel = relayed.channel;
        let tokens = [relayed.caller_token, relayed.callee_token];
        let call = Call {
            alice,
            bob,
            channel,
            tokens,
        };
        assert!(call.relays(), "the relay carries the call");
        call
    }

    /// Whether a frame from alice reaches bob and one from bob reaches alice (within 300 ms).
    fn relays(&self) -> bool {
        let one = |from: &Client, to: &Client, token| {
            let mut frame = Vec::new();
            channel::encode_relay_into(self.channel, token, b"\x80voice", &mut frame).unwrap();
            from.udp.send_to(&frame, from.server).unwrap();
            let end = Instant::now() + Duration::from_millis(300);
            let mut buf = [0u8; 1500];
            while Instant::now() < end {
                if let Ok((n, _)) = to.udp.recv_from(&mut buf)
                    && channel::classify(&buf[..n]) == channel::Kind::ChannelData
                {
                    return true;
                }
            }
            false
        };
        one(&self.alice, &self.bob, self.tokens[0]) && one(&self.bob, &self.alice, self.tokens[1])
    }
}

/// The `retry_after_ms` of the `going_away` a client hears.
fn going_away(client: &mut Client) -> Duration {
    let m = expect(client, "going_away");
    Duration::from_millis(m["retry_after_ms"].as_u64().unwrap())
}

/// Whether the server closes `client`'s control connection within `wait`.
fn closed_within(client: &mut Client, wait: Duration) -> bool {
    match client.next_where(wait, |_| false) {
        Err(e) => e.to_string().contains("closed") || !e.to_string().contains("within"),
        Ok(_) => false,
    }
}

/// A new control connection's hello, and every message until the server closes it.
fn hello_now(server: SocketAddr, fingerprint: traversal::tls::Fingerprint) -> Vec<Value> {
    let target = Target {
        addr: server,
        fingerprint: Some(fingerprint),
    };
    let mut tcp = connect_tls(target, WAIT).unwrap();
    let access = tcp.sock.local_addr().unwrap();
    let hello = json!({"type": "hello", "version": PROTOCOL_VERSION, "access": access});
    std::io::Write::write_all(&mut tcp, &control::encode(&hello)).unwrap();
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => decoder.push(&buf[..n]).unwrap(),
        }
        while let Some(m) = decoder.next_message::<Value>().unwrap() {
            got.push(m);
        }
    }
    got
}

#[test]
fn a_shutdown_tells_everyone_refuses_newcomers_and_relays_until_the_call_ends() {
    let server = server_at("127.0.0.1:0");
    let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
    let mut call = Call::start(&server);
    // Carol said hello but has no name yet.
    let mut carol = Client::connect(target(&server)).unwrap();
    let metrics_addr = server.metrics_addr().unwrap();
    let grace = Duration::from_secs(20);
    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let observer = {
        // The handle moves into the shutdown; the metrics endpoint is read over HTTP.
        std::thread::spawn(move || {
            server.shut_down_gracefully(grace);
            done_tx.send(Instant::now()).unwrap();
        })
    };
    // Everyone hears it; with a call holding the server, come back after the grace.
    for client in [&mut call.alice, &mut call.bob, &mut carol] {
        let retry_after = going_away(client);
        assert!(
            retry_after > grace && retry_after <= grace + RESTART_ALLOWANCE,
            "{retry_after:?}"
        );
    }
    // The call goes on through the relay.
    assert!(call.relays());
    std::thread::sleep(Duration::from_millis(300));
    assert!(call.relays());
    // A newcomer hears going_away, then shutting_down, and its connection closes.
    let answer = hello_now(addr, fingerprint);
    let kinds: Vec<&str> = answer.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["going_away", "error"], "{answer:?}");
    assert_eq!(answer[1]["code"], "shutting_down");
    // A name registration and a call are refused with the same code.
    let refused = carol.register_answer("carol", &key(3)).unwrap();
    assert_eq!(refused["code"], "shutting_down", "{refused}");
    carol
        .send(&json!({"type": "call", "call_id": 9, "to": "alice",
            "candidates": [], "commitment": "ab".repeat(32)}))
        .unwrap();
    let refused = carol.next_where(WAIT, |m| m["type"] == "error").unwrap();
    assert_eq!(refused["code"], "shutting_down");
    let ended = expect(&mut carol, "ended");
    assert_eq!(ended["call_id"], 9);
    let text = scrape_text(metrics_addr);
    assert!(text.contains("\npinhole_shutting_down 1\n"), "{text}");
    assert!(
        text.contains("\npinhole_dropped_total{reason=\"shutting_down\"} 3\n"),
        "{text}"
    );
    assert!(done_rx.try_recv().is_err(), "the call holds the server");
    // The call ends: the server stops at once, not at the end of the grace.
    call.alice
        .send(&json!({"type": "hang_up", "call_id": 1}))
        .unwrap();
    assert_eq!(expect(&mut call.bob, "ended")["reason"], "hung_up");
    let stopped = done_rx.recv_timeout(WAIT).expect("stopped");
    assert!(stopped - started < grace / 2, "{:?}", stopped - started);
    observer.join().unwrap();
    for client in [&mut call.alice, &mut call.bob, &mut carol] {
        assert!(closed_within(client, WAIT));
    }
    // The port is free: a new server on the same address, and clients register there.
    let again = server_at(&addr.to_string());
    let mut alice = Client::connect(target(&again)).unwrap();
    alice.register("alice", &key(1)).unwrap();
}

fn scrape_text(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn the_grace_bounds_a_shutdown_with_a_call_in_progress() {
    let server = server_at("127.0.0.1:0");
    let mut call = Call::start(&server);
    let grace = Duration::from_secs(2);
    let started = Instant::now();
    let shutdown = std::thread::spawn(move || server.shut_down_gracefully(grace));
    going_away(&mut call.alice);
    going_away(&mut call.bob);
    assert!(call.relays());
    shutdown.join().unwrap();
    let took = started.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(2),
        "{took:?}"
    );
    // Stopped with the call up: the control connections close, the relay is gone.
    assert!(closed_within(&mut call.alice, WAIT));
    assert!(closed_within(&mut call.bob, WAIT));
    assert!(!call.relays());
}

#[test]
fn a_shutdown_with_no_call_stops_at_once() {
    let server = server_at("127.0.0.1:0");
    let mut alice = Client::connect(target(&server)).unwrap();
    alice.register("alice", &key(1)).unwrap();
    assert_eq!(server.metrics_snapshot().stats.refused_shutting_down, 0);
    let started = Instant::now();
    let shutdown = std::thread::spawn(move || server.shut_down_gracefully(Duration::from_secs(30)));
    // Nothing holds the server: come back after the restart allowance.
    assert_eq!(going_away(&mut alice), RESTART_ALLOWANCE);
    shutdown.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut alice, WAIT));
}
