//! The rendezvous server with several UDP threads (`udp_threads`, one `SO_REUSEPORT` socket
//! each), in process on loopback: plain STUN from many source ports is answered (by both
//! threads), a call whose two parties land on different threads relays both ways, and
//! registrations, calls and the relay work the same with one thread and with two.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pinhole_tests::scripted::{Client, Target};
use traversal::channel;
use traversal::rendezvous::{self, Rendezvous, RendezvousConfig};
use traversal::stun;

const WAIT: Duration = Duration::from_secs(5);

fn server(threads: usize) -> Rendezvous {
    let mut config = RendezvousConfig::new("127.0.0.1:0".parse().unwrap());
    config.udp_threads = threads;
    config.server.calls.limits = traversal::calls::LimitsConfig::none();
    config.server.max_connections_per_ip = 1_000;
    rendezvous::spawn(config).unwrap()
}

fn target(server: &Rendezvous) -> Target {
    Target {
        addr: server.local_addr(),
        fingerprint: Some(server.fingerprint()),
    }
}

fn key(seed: u64) -> SigningKey {
    let mut bytes = [7u8; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    SigningKey::from_bytes(&bytes)
}

/// One Binding Request from `socket`, its answer checked (the mapped address is `socket`'s).
fn binding(socket: &UdpSocket, server: &Rendezvous, tid: [u8; 12]) {
    socket
        .send_to(&stun::encode_binding_request(&tid), server.local_addr())
        .unwrap();
    let mut buf = [0u8; 1500];
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(m) = stun::Message::decode(&buf[..n]) else {
            continue; // a relay frame or a keepalive answer of a scripted client
        };
        if m.kind != stun::BINDING_SUCCESS || m.transaction_id != tid {
            continue;
        }
        assert_eq!(
            from,
            server.local_addr(),
            "answered from the server's address"
        );
        assert_eq!(
            m.xor_mapped_address().unwrap(),
            Some(socket.local_addr().unwrap())
        );
        return;
    }
    panic!(
        "no answer to a Binding Request from {:?}",
        socket.local_addr()
    );
}

/// Which UDP thread serves `socket`: the one whose count of datagrams grew by a Binding
/// Request from it (nothing else sends meanwhile).
fn thread_of(socket: &UdpSocket, server: &Rendezvous, tid: [u8; 12]) -> usize {
    let before = server.udp_datagrams_per_thread();
    binding(socket, server, tid);
    let after = server.udp_datagrams_per_thread();
    let grew: Vec<usize> = (0..after.len()).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(grew.len(), 1, "{before:?} -> {after:?}");
    grew[0]
}

/// Sends a relay frame carrying `payload` from `from` and waits for it at `to`, from the
/// server's address.
fn relay(from: &Client, to: &Client, channel: u16, token: [u8; 8], payload: &[u8]) {
    let mut frame = Vec::new();
    channel::encode_relay_into(channel, token, payload, &mut frame).unwrap();
    from.udp.send_to(&frame, from.server).unwrap();
    let end = Instant::now() + WAIT;
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        if let Ok((n, source)) = to.udp.recv_from(&mut buf)
            && let Ok(got) = channel::decode_relay(&buf[..n])
            && got.media == payload
        {
            assert_eq!(source, from.server, "relayed from the server's address");
            return;
        }
    }
    panic!("the relay did not forward {payload:?}");
}

#[test]
fn plain_stun_from_many_ports_is_answered_by_both_threads() {
    let server = server(2);
    let sockets: Vec<UdpSocket> = (0..200)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    for (i, s) in sockets.iter().enumerate() {
        s.send_to(
            &stun::encode_binding_request(&[i as u8; 12]),
            server.local_addr(),
        )
        .unwrap();
    }
    for (i, s) in sockets.iter().enumerate() {
        let mut buf = [0u8; 1500];
        let (n, from) = s.recv_from(&mut buf).expect("an answer");
        assert_eq!(from, server.local_addr());
        let m = stun::Message::decode(&buf[..n]).unwrap();
        assert_eq!(m.transaction_id, [i as u8; 12]);
        assert_eq!(
            m.xor_mapped_address().unwrap(),
            Some(s.local_addr().unwrap())
        );
    }
    // Counted once per batch, as it ends: a full batch may have gone out a moment before.
    let end = Instant::now() + WAIT;
    while server.metrics_snapshot().stun_answers < 200 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let per_thread = server.udp_datagrams_per_thread();
    assert_eq!(per_thread.len(), 2);
    assert_eq!(per_thread.iter().sum::<u64>(), 200, "{per_thread:?}");
    // 200 source ports hashed over two sockets: both get some (all on one: about 2^-199).
    assert!(per_thread.iter().all(|&n| n > 0), "{per_thread:?}");
    // The answers counter adds up over the threads.
    let snapshot = server.metrics_snapshot();
    assert_eq!(snapshot.stun_answers, 200);
    assert_eq!(snapshot.udp_threads, 2);
}

#[test]
fn a_call_across_two_threads_relays_both_ways() {
    let server = server(2);
    // Clients until one is served by each thread (each client's source port hashes to one).
    let mut found: [Option<Client>; 2] = [None, None];
    for i in 0..64u8 {
        if found.iter().all(Option::is_some) {
            break;
        }
        let client = Client::connect(target(&server)).unwrap();
        let thread = thread_of(&client.udp, &server, [i; 12]);
        if found[thread].is_none() {
            found[thread] = Some(client);
        }
    }
    let [Some(mut alice), Some(mut bob)] = found else {
        panic!("64 clients all on one thread");
    };
    alice.register("alice", &key(1)).unwrap();
    bob.register("bob", &key(2)).unwrap();
    let call = alice.call_accepted(&mut bob, "bob", 1).unwrap();
    let (channel, alice_token, bob_token) = (call.channel, call.caller_token, call.callee_token);
    for n in 0..10u8 {
        relay(&alice, &bob, channel, alice_token, &[0x80, n, 1]);
        relay(&bob, &alice, channel, bob_token, &[0x80, n, 2]);
    }
    // Still each on its own thread.
    assert_eq!(thread_of(&alice.udp, &server, [100; 12]), 0);
    assert_eq!(thread_of(&bob.udp, &server, [101; 12]), 1);
    assert_eq!(server.stats().calls.relayed, 20);
}

/// `pairs` calls, each relaying both ways; returns the datagrams each thread received.
fn calls_relay(threads: usize, pairs: usize) -> Vec<u64> {
    let server = server(threads);
    let mut calls = Vec::new();
    for i in 0..pairs {
        let mut a = Client::connect(target(&server)).unwrap();
        let mut b = Client::connect(target(&server)).unwrap();
        let (na, nb) = (format!("a{i}"), format!("b{i}"));
        a.register(&na, &key(2 * i as u64)).unwrap();
        b.register(&nb, &key(2 * i as u64 + 1)).unwrap();
        let call = a.call_accepted(&mut b, &nb, 10 + i as u64).unwrap();
        let (channel, ta, tb) = (call.channel, call.caller_token, call.callee_token);
        calls.push((a, b, channel, ta, tb));
    }
    for round in 0..3u8 {
        for (a, b, channel, ta, tb) in &calls {
            relay(a, b, *channel, *ta, &[0x80, round, 1]);
            relay(b, a, *channel, *tb, &[0x80, round, 2]);
        }
    }
    let stats = server.stats();
    assert_eq!(stats.calls.relayed, 6 * pairs as u64);
    assert_eq!(stats.calls.calls_connected, pairs as u64);
    server.udp_datagrams_per_thread()
}

#[test]
fn registrations_calls_and_the_relay_work_with_one_thread_and_with_two() {
    let one = calls_relay(1, 12);
    assert_eq!(one.len(), 1);
    let two = calls_relay(2, 12);
    assert_eq!(two.len(), 2);
    // 24 clients' ports over two sockets: both threads served some (all on one: 2^-23).
    assert!(two.iter().all(|&n| n > 0), "{two:?}");
}
