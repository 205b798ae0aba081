//! The rendezvous server's Prometheus endpoint, in process on loopback: scraped before and
//! after two scripted clients register, call and relay, the values parsed and compared; what
//! is not `GET /metrics` gets its status (400, 404, 405, 408, 431) and the endpoint goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pinhole_tests::scripted::{Client, Target};
use serde_json::{Value, json};
use traversal::channel;
use traversal::rendezvous::{self, Rendezvous, RendezvousConfig};
use traversal::stun;

const WAIT: Duration = Duration::from_secs(5);

fn server() -> Rendezvous {
    let mut config = RendezvousConfig::new("127.0.0.1:0".parse().unwrap());
    config.metrics = Some("127.0.0.1:0".parse().unwrap());
    rendezvous::spawn(config).unwrap()
}

fn target(server: &Rendezvous) -> Target {
    Target {
        addr: server.local_addr(),
        fingerprint: Some(server.fingerprint()),
    }
}

/// Sends `request` as is and reads the whole answer: status, headers (lowercase names), body.
fn http(addr: SocketAddr, request: &[u8]) -> (u16, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
    let code = status[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect::<HashMap<_, _>>();
    assert_eq!(
        headers["content-length"].parse::<usize>().unwrap(),
        body.len()
    );
    (code, headers, body.to_string())
}

/// `GET /metrics`, parsed: each sample (`name` or `name{labels}`) and its value.
fn scrape(addr: SocketAddr) -> HashMap<String, u64> {
    let (code, headers, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: pinhole\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(typed.iter().any(|t| t == name), "no TYPE for {name}");
        let value = value
            .parse()
            .unwrap_or_else(|_| panic!("not a count: {line}"));
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn expect(client: &mut Client, kind: &str) -> Value {
    client.next_where(WAIT, |m| m["type"] == kind).unwrap()
}

/// Sends a relay frame from `from` and waits for one to reach `to`; returns the frame's length.
fn relay(from: &Client, to: &Client, channel: u16, token: [u8; 8], payload: &[u8]) -> usize {
    let mut frame = Vec::new();
    channel::encode_relay_into(channel, token, payload, &mut frame).unwrap();
    from.udp.send_to(&frame, from.server).unwrap();
    let end = Instant::now() + WAIT;
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if let Ok((n, _)) = to.udp.recv_from(&mut buf)
            && channel::classify(&buf[..n]) == channel::Kind::ChannelData
        {
            return frame.len();
        }
    }
    panic!("the relay did not forward the frame");
}

#[test]
fn the_counters_move_with_registrations_calls_and_the_relay() {
    let server = server();
    let metrics = server.metrics_addr().unwrap();
    assert_ne!(metrics.port(), 0);
    let before = scrape(metrics);
    let version = format!(
        "pinhole_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(before[&version], 1);
    for gauge in [
        "pinhole_registrations",
        "pinhole_connections",
        "pinhole_names",
        "pinhole_calls_active",
        "pinhole_shutting_down",
    ] {
        assert_eq!(before[gauge], 0, "{gauge}");
    }
    for counter in [
        "pinhole_calls_connected_total",
        "pinhole_relayed_packets_total",
        "pinhole_relayed_bytes_total",
        "pinhole_stun_answers_total",
        "pinhole_dropped_total{reason=\"relay_no_route\"}",
        "pinhole_dropped_total{reason=\"shutting_down\"}",
    ] {
        assert_eq!(before[counter], 0, "{counter}");
    }

    // A plain STUN Binding Request, answered by the UDP thread.
    let stun_client = UdpSocket::bind("127.0.0.1:0").unwrap();
    stun_client.set_read_timeout(Some(WAIT)).unwrap();
    stun_client
        .send_to(&stun::encode_binding_request(&[7; 12]), server.local_addr())
        .unwrap();
    let mut buf = [0u8; 1500];
    stun_client.recv_from(&mut buf).unwrap();

    let mut alice = Client::connect(target(&server)).unwrap();
    let mut bob = Client::connect(target(&server)).unwrap();
    alice.register("alice", &key(1)).unwrap();
    bob.register("bob", &key(2)).unwrap();
    let call = alice.call_accepted(&mut bob, "bob", 1).unwrap();
    let (channel, alice_token, bob_token) = (call.channel, call.caller_token, call.callee_token);
    let mut bytes = relay(&alice, &bob, channel, alice_token, b"\x80hello bob");
    bytes += relay(
        &bob,
        &alice,
        channel,
        bob_token,
        b"\x80hello alice, at length",
    );
    // A frame from a socket that is no party of a call: dropped, counted.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut frame = Vec::new();
    channel::encode_relay_into(channel, alice_token, b"\x80me too", &mut frame).unwrap();
    stranger.send_to(&frame, server.local_addr()).unwrap();

    let deadline = Instant::now() + WAIT;
    let after = loop {
        let after = scrape(metrics);
        if after["pinhole_dropped_total{reason=\"relay_no_route\"}"] >= 1
            || Instant::now() > deadline
        {
            break after;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(after["pinhole_registrations"], 2);
    assert_eq!(after["pinhole_connections"], 2);
    assert_eq!(after["pinhole_names"], 2);
    assert_eq!(after["pinhole_names_online"], 2);
    assert_eq!(after["pinhole_calls_active"], 1);
    assert_eq!(after["pinhole_relay_routes"], 2);
    assert_eq!(after["pinhole_calls_placed_total"], 1);
    assert_eq!(after["pinhole_calls_connected_total"], 1);
    assert_eq!(after["pinhole_relayed_packets_total"], 2);
    assert_eq!(after["pinhole_relayed_bytes_total"], bytes as u64);
    assert_eq!(after["pinhole_stun_answers_total"], 1);
    assert_eq!(after["pinhole_dropped_total{reason=\"relay_no_route\"}"], 1);
    assert_eq!(after["pinhole_shutting_down"], 0);
    // The snapshot the endpoint renders is the one the handle gives.
    let snapshot = server.metrics_snapshot();
    assert_eq!(snapshot.stats.calls.relayed, 2);
    assert_eq!(snapshot.stun_answers, 1);

    // Alice hangs up: the gauge comes down, the counters stay.
    alice
        .send(&json!({"type": "hang_up", "call_id": 1}))
        .unwrap();
    expect(&mut bob, "ended");
    let end = scrape(metrics);
    assert_eq!(end["pinhole_calls_active"], 0);
    assert_eq!(end["pinhole_calls_connected_total"], 1);
    drop(alice);
    let deadline = Instant::now() + WAIT;
    while scrape(metrics)["pinhole_connections"] != 1 {
        assert!(
            Instant::now() < deadline,
            "alice's connection is still counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn what_is_not_a_scrape_gets_its_status_and_the_endpoint_goes_on() {
    let server = server();
    let metrics = server.metrics_addr().unwrap();
    let cases: [(&[u8], u16); 7] = [
        (b"hello there\r\n\r\n", 400),
        (b"GET /metrics HTTP/9.9\r\n\r\n", 400),
        (b"\xff\xfe\xfd\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /metrics/../etc HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405),
    ];
    for (request, status) in cases {
        let (code, headers, _) = http(metrics, request);
        assert_eq!(code, status, "{:?}", String::from_utf8_lossy(request));
        assert_eq!(headers["connection"], "close");
    }
    // More than the endpoint reads: 431, whatever follows.
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10_000));
    let (code, _, _) = http(metrics, &big);
    assert_eq!(code, 431);
    // HEAD: the headers without the body.
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream.write_all(b"HEAD /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "no body: {answer}");
    // A connection that says nothing and one that closes at once: the first gets 408 after
    // the read timeout, and the endpoint serves the next scrape.
    drop(TcpStream::connect(metrics).unwrap());
    let started = Instant::now();
    let (code, _, _) = http(metrics, b"");
    assert_eq!(code, 408);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(scrape(metrics)["pinhole_registrations"], 0);
}

#[test]
fn no_endpoint_unless_asked_and_a_taken_port_fails_the_spawn() {
    let plain = rendezvous::spawn(RendezvousConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
    assert_eq!(plain.metrics_addr(), None);
    let server = server();
    let taken = server.metrics_addr().unwrap();
    let mut config = RendezvousConfig::new("127.0.0.1:0".parse().unwrap());
    config.metrics = Some(taken);
    let err = rendezvous::spawn(config).unwrap_err();
    assert!(err.to_string().contains("metrics endpoint"), "{err}");
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
}
