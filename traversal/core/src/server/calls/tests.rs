// A test's virtual clock starts at any instant; none is read again.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::server::unhex;
use ed25519_dalek::{Signer, SigningKey};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn addr(conn: ConnId) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 1], 40_000 + u16::try_from(conn).unwrap()))
}

fn sign(key: &SigningKey, name: &str, challenge: &str) -> (String, String) {
    let challenge = unhex(challenge).unwrap();
    let sig = key.sign(&registration_message(name, &challenge));
    (hex(key.verifying_key().as_bytes()), hex(&sig.to_bytes()))
}

struct H {
    calls: Calls,
    now: Instant,
}

impl H {
    /// A router without per-sender limits (limits.rs tests those).
    fn new() -> H {
        Self::with(CallsConfig {
            limits: LimitsConfig::none(),
            ..CallsConfig::default()
        })
    }

    fn with(config: CallsConfig) -> H {
        H {
            calls: Calls::new(config, [7; 32]),
            now: Instant::now(),
        }
    }

    fn drain(&mut self) -> Vec<(ConnId, ServerMessage)> {
        std::iter::from_fn(|| self.calls.poll_signal()).collect()
    }

    /// Opens `conn`, registers `name` with `key`, and gives it the mapping `addr(conn)`.
    fn join(&mut self, conn: ConnId, name: &str, key: &SigningKey) -> Vec<(ConnId, ServerMessage)> {
        let challenge = self.calls.open(conn);
        let (pk, sig) = sign(key, name, &challenge);
        self.calls.register(self.now, conn, name, &pk, &sig);
        self.calls.set_mapped(conn, Some(addr(conn)));
        self.drain()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.calls.handle_timeout(self.now);
    }

    /// 1 ("alice") calls 2 ("bob"), both registered: call `call_id` rings (signals drained).
    fn ring(&mut self, call_id: u64) {
        self.join(1, "alice", &key(1));
        self.join(2, "bob", &key(2));
        self.calls
            .call(self.now, 1, call_id, "bob", vec![addr(1)], String::new());
        self.drain();
    }

    /// 1 calls 2 ("bob"), 2 accepts: returns the channel.
    /// Connects call 77 from 1 to 2; the channel and each party's relay token.
    fn connect(&mut self) -> (u16, [Token; 2]) {
        self.ring(77);
        self.calls.accept(2, 77, vec![addr(2)], hello());
        let out = self.drain();
        let token = |t: &str| -> Token { unhex(t).unwrap().try_into().unwrap() };
        match &out[..] {
            [
                (
                    1,
                    ServerMessage::Connected {
                        channel,
                        relay_token: t1,
                        ..
                    },
                ),
                (
                    2,
                    ServerMessage::Connected {
                        relay_token: t2, ..
                    },
                ),
            ] => (*channel, [token(t1), token(t2)]),
            other => panic!("{other:?}"),
        }
    }
}

type Token = [u8; channel::TOKEN_LEN];

/// A relay frame with `token`.
fn frame(ch: u16, token: Token, media: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    channel::encode_relay_into(ch, token, media, &mut out).unwrap();
    out
}

fn registered(name: &str) -> ServerMessage {
    ServerMessage::Registered { name: name.into() }
}

fn ended(call_id: u64, reason: EndReason) -> ServerMessage {
    ServerMessage::Ended { call_id, reason }
}

fn code(signal: &ServerMessage) -> &str {
    match signal {
        ServerMessage::Error { code, .. } => code,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn a_name_is_first_come_and_bound_to_its_key() {
    let mut h = H::new();
    assert_eq!(h.join(1, "alice", &key(1)), [(1, registered("alice"))]);
    assert_eq!(
        h.calls.names.key("alice"),
        Some(*key(1).verifying_key().as_bytes())
    );
    // Another key: refused, and the name stays with the first.
    let out = h.join(2, "alice", &key(2));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, code(&out[0].1)), (2, "name_taken"));
    assert_eq!(h.calls.stats().online, 1);
    // A signature over another connection's challenge, or garbage: bad_signature.
    let challenge = h.calls.open(3);
    let other = h.calls.open(4);
    let (pk, sig) = sign(&key(3), "carol", &other);
    h.calls.register(h.now, 3, "carol", &pk, &sig);
    h.calls.register(h.now, 3, "carol", &pk, "zz");
    h.calls.register(h.now, 3, "carol", "00", &sig);
    let (_, sig_for_dave) = sign(&key(3), "dave", &challenge);
    h.calls.register(h.now, 3, "carol", &pk, &sig_for_dave);
    let out = h.drain();
    assert_eq!(out.len(), 4);
    assert!(
        out.iter()
            .all(|(c, s)| *c == 3 && code(s) == "bad_signature")
    );
    assert_eq!(h.calls.names.key("carol"), None);
    // Bad names, and the reserved echo.
    for name in ["", "echo", "ECHO", "a b", "x/y", &"n".repeat(33)] {
        let (pk, sig) = sign(&key(3), name, &challenge);
        h.calls.register(h.now, 3, name, &pk, &sig);
        let out = h.drain();
        assert_eq!(code(&out[0].1), "bad_name", "{name:?}");
    }
    assert!(valid_name("Zoë_1.x-y"));
    assert_eq!(h.calls.stats().registrations_refused, 11);
    assert!(h.calls.take_names_changed());
    assert!(!h.calls.take_names_changed());
}

#[test]
fn the_same_key_on_a_new_connection_takes_the_name_over() {
    let mut h = H::new();
    h.connect();
    // Bob reconnects: his old connection's call ends, alice sees peer_lost.
    let out = h.join(5, "bob", &key(2));
    assert!(
        out.contains(&(1, ended(77, EndReason::PeerLost))),
        "{out:?}"
    );
    assert!(
        out.contains(&(2, ended(77, EndReason::ServerError))),
        "{out:?}"
    );
    assert!(
        out.iter().any(|(c, s)| *c == 2
            && matches!(s, ServerMessage::Error { code, .. } if code == "replaced"))
    );
    assert_eq!(out.last(), Some(&(5, registered("bob"))));
    // Calls to bob now ring the new connection; the old one's close changes nothing.
    h.calls.closed(2);
    h.calls.call(h.now, 1, 78, "bob", vec![], String::new());
    let out = h.drain();
    assert!(
        matches!(&out[..], [(5, ServerMessage::Incoming { call_id: 78, from, .. })] if from == "alice"),
        "{out:?}"
    );
    assert_eq!(h.calls.stats().online, 2);
}

#[test]
fn offline_busy_and_unregistered_calls_end_at_once() {
    let mut h = H::new();
    h.join(1, "alice", &key(1));
    h.calls.call(h.now, 1, 1, "nobody", vec![], String::new());
    assert_eq!(h.drain(), [(1, ended(1, EndReason::Offline))]);
    h.calls.call(h.now, 1, 2, "alice", vec![], String::new());
    assert_eq!(h.drain(), [(1, ended(2, EndReason::Busy))]);
    // Not registered: an error and the call ends.
    h.calls.open(9);
    h.calls.call(h.now, 9, 3, "alice", vec![], String::new());
    let out = h.drain();
    assert_eq!(code(&out[0].1), "not_registered");
    assert_eq!(out[1], (9, ended(3, EndReason::ServerError)));
    // Bob in a call with alice: carol's call to either is busy, and so is alice's second.
    h.join(2, "bob", &key(2));
    h.join(3, "carol", &key(3));
    h.calls.call(h.now, 1, 10, "bob", vec![], String::new());
    h.drain();
    h.calls.call(h.now, 3, 11, "bob", vec![], String::new());
    h.calls.call(h.now, 3, 12, "alice", vec![], String::new());
    h.calls.call(h.now, 1, 13, "carol", vec![], String::new());
    // A repeated Call is ignored.
    h.calls.call(h.now, 1, 10, "bob", vec![], String::new());
    assert_eq!(
        h.drain(),
        [
            (3, ended(11, EndReason::Busy)),
            (3, ended(12, EndReason::Busy)),
            (1, ended(13, EndReason::Busy)),
        ]
    );
}

#[test]
fn ring_accept_connects_both_with_the_same_secret_and_channel() {
    let mut h = H::new();
    h.join(1, "alice", &key(1));
    h.join(2, "bob", &key(2));
    let many: Vec<SocketAddr> = (0..12).map(addr).collect();
    h.calls
        .call(h.now, 1, 77, "bob", many.clone(), "c0".repeat(32));
    assert_eq!(
        h.drain(),
        [(
            2,
            ServerMessage::Incoming {
                call_id: 77,
                from: "alice".into(),
                candidates: many[..MAX_CANDIDATES].to_vec(),
                key: hex(&key(1).verifying_key().to_bytes()),
                commitment: "c0".repeat(32),
            }
        )]
    );
    h.calls.ringing(2, 77);
    h.calls.ringing(1, 77); // The caller cannot ring.
    h.calls.ringing(2, 99); // Another call id: nothing.
    assert_eq!(h.drain(), [(1, ServerMessage::Ringing { call_id: 77 })]);
    h.calls.accept(1, 77, vec![], hello()); // Only the callee accepts.
    assert!(h.drain().is_empty());
    h.calls.accept(2, 77, vec![addr(2)], hello());
    let out = h.drain();
    let [
        (
            1,
            ServerMessage::Connected {
                call_id: 77,
                candidates: to_alice,
                channel: c1,
                relay_token: t1,
                peer_key: k1,
                e2e: Some(answer),
            },
        ),
        (
            2,
            ServerMessage::Connected {
                call_id: 77,
                candidates: to_bob,
                channel: c2,
                relay_token: t2,
                peer_key: k2,
                e2e: None,
            },
        ),
    ] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!(to_alice, &[addr(2)]);
    assert_eq!(to_bob, &many[..MAX_CANDIDATES]);
    assert_eq!(c1, c2);
    assert_eq!(
        answer,
        &hello(),
        "the callee's keys go to the caller unread"
    );
    assert_eq!(k1, &hex(&key(2).verifying_key().to_bytes()));
    assert_eq!(k2, &hex(&key(1).verifying_key().to_bytes()));
    assert_eq!(unhex(t1).unwrap().len(), channel::TOKEN_LEN);
    assert_ne!(t1, t2, "each party has its own relay token");
    assert!(channel::is_valid_channel(*c1));
    // The caller's reveal goes to the callee, once; the callee cannot reveal.
    h.calls.reveal(2, 77, hello());
    assert!(h.drain().is_empty());
    h.calls.reveal(1, 77, hello());
    h.calls.reveal(1, 77, hello());
    assert_eq!(
        h.drain(),
        [(
            2,
            ServerMessage::Reveal {
                call_id: 77,
                e2e: hello()
            }
        )]
    );
    // A second accept is ignored; a second call gets other tokens.
    h.calls.accept(2, 77, vec![], hello());
    assert!(h.drain().is_empty());
    h.calls.hang_up(1, 77);
    assert_eq!(h.drain(), [(2, ended(77, EndReason::HungUp))]);
    h.calls.call(h.now, 1, 78, "bob", vec![], String::new());
    h.calls.accept(2, 78, vec![], hello());
    let out = h.drain();
    assert!(matches!(&out[1].1, ServerMessage::Connected { relay_token, .. } if relay_token != t2));
}

#[test]
fn reject_busy_cancel_and_hang_up_from_either_side() {
    let mut h = H::new();
    h.join(1, "alice", &key(1));
    h.join(2, "bob", &key(2));
    let ring = |h: &mut H, id| {
        h.calls.call(h.now, 1, id, "bob", vec![], String::new());
        h.drain();
    };
    ring(&mut h, 1);
    h.calls.reject(1, 1, EndReason::Rejected); // Not the callee: ignored.
    h.calls.reject(2, 1, EndReason::Rejected);
    assert_eq!(h.drain(), [(1, ended(1, EndReason::Rejected))]);
    ring(&mut h, 2);
    h.calls.reject(2, 2, EndReason::Busy);
    assert_eq!(h.drain(), [(1, ended(2, EndReason::Busy))]);
    ring(&mut h, 3);
    h.calls.reject(2, 3, EndReason::NoAnswer); // Any other reason is a reject.
    assert_eq!(h.drain(), [(1, ended(3, EndReason::Rejected))]);
    ring(&mut h, 4);
    h.calls.hang_up(1, 4);
    assert_eq!(h.drain(), [(2, ended(4, EndReason::Cancelled))]);
    ring(&mut h, 5);
    h.calls.hang_up(2, 5);
    assert_eq!(h.drain(), [(1, ended(5, EndReason::Rejected))]);
    ring(&mut h, 6);
    h.calls.accept(2, 6, vec![], hello());
    h.drain();
    h.calls.hang_up(2, 999); // Not this call.
    h.calls.hang_up(2, 6);
    assert_eq!(h.drain(), [(1, ended(6, EndReason::HungUp))]);
    assert_eq!(h.calls.stats().calls, 0);
    // After all that, both are free again.
    ring(&mut h, 7);
    assert_eq!(h.calls.stats().calls, 1);
}

#[test]
fn ringing_ends_with_no_answer_after_30_s() {
    let mut h = H::new();
    h.ring(5);
    h.advance(Duration::from_secs(29));
    assert!(h.drain().is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.drain(),
        [
            (1, ended(5, EndReason::NoAnswer)),
            (2, ended(5, EndReason::NoAnswer))
        ]
    );
    // A connected call never times out.
    h.calls.call(h.now, 1, 6, "bob", vec![], String::new());
    h.calls.accept(2, 6, vec![], hello());
    h.drain();
    h.advance(Duration::from_secs(300));
    assert!(h.drain().is_empty());
}

#[test]
fn a_closed_connection_or_a_lost_mapping_ends_the_call_with_peer_lost() {
    let mut h = H::new();
    h.connect();
    h.calls.closed(2);
    assert_eq!(h.drain(), [(1, ended(77, EndReason::PeerLost))]);
    assert_eq!(h.calls.stats().online, 1);
    assert_eq!(h.calls.stats().routes, 0);
    // While ringing, the callee leaving ends it too.
    h.join(3, "carol", &key(3));
    h.calls.call(h.now, 1, 8, "carol", vec![], String::new());
    h.drain();
    h.calls.closed(1);
    assert_eq!(h.drain(), [(3, ended(8, EndReason::PeerLost))]);
    // The mapping expires mid-call.
    h.join(4, "dave", &key(4));
    h.calls.call(h.now, 3, 9, "dave", vec![], String::new());
    h.calls.accept(4, 9, vec![], hello());
    h.drain();
    h.calls.set_mapped(4, None);
    assert_eq!(
        h.drain(),
        [
            (3, ended(9, EndReason::PeerLost)),
            (4, ended(9, EndReason::ServerError))
        ]
    );
    assert_eq!(h.calls.stats().calls, 0);
}

#[test]
fn the_relay_forwards_only_between_the_parties_on_the_channel_of_a_live_call() {
    let mut h = H::new();
    h.join(3, "carol", &key(3));
    let (channel, [alice, bob]) = h.connect();
    let (from_alice, from_bob) = (frame(channel, alice, b"rtp"), frame(channel, bob, b"rtp"));
    // Each frame goes on with the receiver's token in place of the sender's.
    assert_eq!(
        h.calls.relay(h.now, addr(1), &from_alice),
        Some((addr(2), frame(channel, bob, b"rtp")))
    );
    assert_eq!(
        h.calls.relay(h.now, addr(2), &from_bob),
        Some((addr(1), frame(channel, alice, b"rtp")))
    );
    // A registered client not in the call, an unknown address, another channel, junk, the
    // other party's token or a guessed one from a party's address (a forged source).
    assert_eq!(h.calls.relay(h.now, addr(3), &from_alice), None);
    assert_eq!(h.calls.relay(h.now, addr(50), &from_alice), None);
    let other = if channel == 0x4000 { 0x4001 } else { 0x4000 };
    assert_eq!(
        h.calls.relay(h.now, addr(1), &frame(other, alice, b"rtp")),
        None
    );
    assert_eq!(h.calls.relay(h.now, addr(1), &[0x40, 0, 0, 9]), None);
    assert_eq!(h.calls.relay(h.now, addr(1), &from_bob), None);
    assert_eq!(
        h.calls
            .relay(h.now, addr(1), &frame(channel, [0; 8], b"rtp")),
        None
    );
    let s = h.calls.stats();
    assert_eq!((s.relayed, s.relay_no_route, s.relay_bad_frame), (2, 2, 4));
    // Bob's mapping moves: the relay follows, the old address is refused.
    let moved = SocketAddr::from(([198, 51, 100, 9], 1234));
    h.calls.set_mapped(2, Some(moved));
    assert_eq!(
        h.calls.relay(h.now, addr(1), &from_alice).map(|r| r.0),
        Some(moved)
    );
    assert_eq!(
        h.calls.relay(h.now, moved, &from_bob).map(|r| r.0),
        Some(addr(1))
    );
    assert_eq!(h.calls.relay(h.now, addr(2), &from_bob), None);
    // The call ends: nothing more.
    h.calls.hang_up(1, 77);
    assert_eq!(h.calls.relay(h.now, addr(1), &from_alice), None);
    assert_eq!(h.calls.relay(h.now, moved, &from_bob), None);
    assert_eq!(h.calls.stats().routes, 0);
}

#[test]
fn a_ringing_call_relays_nothing() {
    let mut h = H::new();
    h.ring(1);
    for ch in channel::CHANNEL_MIN..=channel::CHANNEL_MAX {
        let frame = channel::encode(ch, b"x").unwrap();
        assert_eq!(h.calls.relay(h.now, addr(1), &frame), None);
    }
}

#[test]
fn the_token_bucket_caps_a_flood_per_direction() {
    let mut h = H::new();
    let (channel, [alice, bob]) = h.connect();
    let small = frame(channel, alice, &[0x80; 100]);
    // 100 frames/s with a 1 s burst: a flood at one instant gets 100 through.
    let through = (0..1000)
        .filter(|_| h.calls.relay(h.now, addr(1), &small).is_some())
        .count();
    assert_eq!(through, 100);
    // The other direction has its own bucket.
    assert!(
        h.calls
            .relay(h.now, addr(2), &frame(channel, bob, &[0x80; 100]))
            .is_some()
    );
    // Half a second later, 50 more.
    h.now += Duration::from_millis(500);
    let through = (0..1000)
        .filter(|_| h.calls.relay(h.now, addr(1), &small).is_some())
        .count();
    assert_eq!(through, 50);
    // Big frames: the 64 kB/s cap binds first (1404-byte frames: 45 in a 64,000-byte burst).
    let mut h = H::new();
    let (channel, [alice, _]) = h.connect();
    let big = frame(
        channel,
        alice,
        &[0x80; channel::MAX_PAYLOAD_LEN - channel::TOKEN_LEN],
    );
    let through = (0..1000)
        .filter(|_| h.calls.relay(h.now, addr(1), &big).is_some())
        .count();
    assert_eq!(through, 64_000 / big.len());
    // Sustained over 10 s at 200 frames/s: about 64 kB/s plus the burst get through.
    let mut bytes = 0;
    for _ in 0..2000 {
        h.now += Duration::from_millis(5);
        if h.calls.relay(h.now, addr(1), &big).is_some() {
            bytes += big.len();
        }
    }
    assert!(bytes <= 64_000 * 10 + 64_000, "{bytes}");
    assert!(bytes >= 64_000 * 9, "{bytes}");
    assert!(h.calls.stats().relay_rate_limited > 0);
}

#[test]
fn the_echo_service_answers_at_once_and_returns_frames_to_the_sender() {
    let mut h = H::new();
    h.join(1, "alice", &key(1));
    h.calls
        .call(h.now, 1, 4, ECHO, vec![addr(1)], String::new());
    let out = h.drain();
    let [
        (
            1,
            ServerMessage::Connected {
                call_id: 4,
                candidates,
                channel,
                relay_token,
                e2e: None,
                ..
            },
        ),
    ] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert!(candidates.is_empty());
    let token: [u8; channel::TOKEN_LEN] = unhex(relay_token).unwrap().try_into().unwrap();
    let echoed = frame(*channel, token, b"hello");
    assert_eq!(
        h.calls.relay(h.now, addr(1), &echoed),
        Some((addr(1), echoed.clone()))
    );
    // Busy while in the echo call; the mapping moves and the echo follows.
    h.calls.call(h.now, 1, 5, ECHO, vec![], String::new());
    assert_eq!(h.drain(), [(1, ended(5, EndReason::Busy))]);
    let moved = SocketAddr::from(([198, 51, 100, 9], 1234));
    h.calls.set_mapped(1, Some(moved));
    assert_eq!(
        h.calls.relay(h.now, moved, &echoed),
        Some((moved, echoed.clone()))
    );
    h.calls.hang_up(1, 4);
    assert!(h.drain().is_empty());
    assert_eq!(h.calls.relay(h.now, moved, &echoed), None);
}

#[test]
fn the_name_table_is_bounded_and_round_trips_through_its_file() {
    let mut h = H::with(CallsConfig {
        max_names: 2,
        ..CallsConfig::default()
    });
    h.join(1, "a", &key(1));
    h.join(2, "b", &key(2));
    let out = h.join(3, "c", &key(3));
    assert_eq!(code(&out[0].1), "server_full");
    // A known name still registers when the table is full.
    h.calls.closed(1);
    assert_eq!(h.join(4, "a", &key(1)), [(4, registered("a"))]);
    assert_eq!(h.calls.stats().names, 2);

    assert!(parse_names("").is_empty());
    let mut text = format_names(&h.calls.names_snapshot());
    text.push_str("bad line\n\nEcho 00\n");
    let names = parse_names(&text);
    assert_eq!(names, h.calls.names_snapshot());
    let mut fresh = Calls::new(
        CallsConfig {
            max_names: 1,
            ..CallsConfig::default()
        },
        [1; 32],
    );
    fresh.load_names(names);
    assert_eq!(fresh.stats().names, 1);
    assert_eq!(
        fresh.names.key("a"),
        Some(*key(1).verifying_key().as_bytes())
    );
}

#[derive(Debug, Clone)]
enum Op {
    Open(ConnId),
    Register(ConnId, u8, u8),
    Call(ConnId, u64, u8),
    Ringing(ConnId, u64),
    Accept(ConnId, u64),
    Reject(ConnId, u64, bool),
    HangUp(ConnId, u64),
    Closed(ConnId),
    Mapped(ConnId, Option<u16>),
    Relay(u16, u16),
    Wait(u16),
}

fn arb_op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let conn = 1..5u64;
    let id = 1..4u64;
    prop_oneof![
        conn.clone().prop_map(Op::Open),
        (conn.clone(), 0..3u8, 0..3u8).prop_map(|(c, n, k)| Op::Register(c, n, k)),
        (conn.clone(), id.clone(), 0..4u8).prop_map(|(c, i, n)| Op::Call(c, i, n)),
        (conn.clone(), id.clone()).prop_map(|(c, i)| Op::Ringing(c, i)),
        (conn.clone(), id.clone()).prop_map(|(c, i)| Op::Accept(c, i)),
        (conn.clone(), id.clone(), any::<bool>()).prop_map(|(c, i, b)| Op::Reject(c, i, b)),
        (conn.clone(), id).prop_map(|(c, i)| Op::HangUp(c, i)),
        conn.clone().prop_map(Op::Closed),
        (conn, proptest::option::of(0..4u16)).prop_map(|(c, p)| Op::Mapped(c, p)),
        (0..6u16, 0..3u16).prop_map(|(p, ch)| Op::Relay(p, ch)),
        (0..40_000u16).prop_map(Op::Wait),
    ]
}

/// The tables agree with each other, and the relay only sends to a party of a live call.
fn check(calls: &Calls) {
    assert!(calls.relay.len() <= 2 * calls.calls.len());
    for route in calls.relay.routes() {
        let call = &calls.calls[&route.call];
        assert_eq!(call.state, State::Connected);
        let parties: Vec<_> = [Some(call.caller), call.callee]
            .into_iter()
            .flatten()
            .filter_map(|p| calls.clients.get(&p).and_then(|c| c.mapped))
            .collect();
        assert!(parties.contains(&route.to));
        assert_eq!(route.channel, call.channel);
    }
    for (key, call) in &calls.calls {
        for party in [Some(call.caller), call.callee].into_iter().flatten() {
            assert_eq!(calls.clients[&party].call, Some(*key));
        }
    }
    for (conn, c) in &calls.clients {
        if let Some(key) = c.call {
            let call = &calls.calls[&key];
            assert!(call.caller == *conn || call.callee == Some(*conn));
        }
    }
    for (name, conn) in &calls.online {
        assert_eq!(calls.clients[conn].name.as_deref(), Some(&**name));
    }
}

proptest::proptest! {
    #[test]
    fn any_sequence_keeps_the_tables_consistent(ops in proptest::collection::vec(arb_op(), 1..80)) {
        let names = ["alice", "bob", "carol", "echo"];
        // With the default limits: refusals and rings that yield keep the tables consistent too.
        let mut h = H::with(CallsConfig::default());
        let mut challenges: HashMap<ConnId, String> = HashMap::new();
        for op in ops {
            match op {
                Op::Open(c) => {
                    h.calls.closed(c);
                    challenges.insert(c, h.calls.open(c));
                }
                Op::Register(c, n, k) => {
                    let challenge = challenges.get(&c).cloned().unwrap_or_default();
                    let challenge = if challenge.is_empty() { "00".into() } else { challenge };
                    let (pk, sig) = sign(&key(k), names[usize::from(n)], &challenge);
                    h.calls.register(h.now, c, names[usize::from(n)], &pk, &sig);
                }
                Op::Call(c, i, n) => h.calls.call(h.now, c, i, names[usize::from(n)], vec![addr(c)], String::new()),
                Op::Ringing(c, i) => h.calls.ringing(c, i),
                Op::Accept(c, i) => h.calls.accept(c, i, vec![addr(c)], hello()),
                Op::Reject(c, i, busy) => h.calls.reject(c, i, if busy { EndReason::Busy } else { EndReason::Rejected }),
                Op::HangUp(c, i) => h.calls.hang_up(c, i),
                Op::Closed(c) => {
                    h.calls.closed(c);
                    challenges.remove(&c);
                }
                Op::Mapped(c, p) => h.calls.set_mapped(c, p.map(|p| addr(u64::from(p)))),
                Op::Relay(p, ch) => {
                    let frame = channel::encode(channel::CHANNEL_MIN + ch, b"x").unwrap();
                    let _ = h.calls.relay(h.now, addr(u64::from(p)), &frame);
                }
                Op::Wait(ms) => h.advance(Duration::from_millis(u64::from(ms))),
            }
            h.drain();
            check(&h.calls);
        }
        for c in 1..5 {
            h.calls.closed(c);
        }
        let s = h.calls.stats();
        proptest::prop_assert_eq!((s.online, s.calls, s.routes), (0, 0, 0));
    }
}

#[test]
fn debug_hides_secrets() {
    let mut h = H::new();
    let challenge = h.calls.open(1);
    let debug = format!("{:?}", h.calls);
    assert!(!debug.contains(&challenge));
    assert!(debug.contains("stats"));
}

/// A callee's half of the key exchange, as the router passes it on unread.
fn hello() -> E2eHello {
    E2eHello {
        ephemeral: "11".repeat(32),
        signature: "22".repeat(64),
    }
}

/// A caller cannot aim the callee's checks at public hosts: of the public addresses it lists,
/// only those on its own mapped address go on; private ones (host candidates) do, for the
/// callee to try from the same network only. The callee's likewise.
#[test]
fn only_sensible_candidates_are_passed_on() {
    let mut h = H::new();
    h.join(1, "alice", &key(1));
    h.join(2, "bob", &key(2));
    let sock = |s: &str| -> SocketAddr { s.parse().unwrap() };
    h.calls.set_mapped(1, Some(sock("1.2.3.4:5000")));
    h.calls.set_mapped(2, Some(sock("5.6.7.8:6000")));
    h.drain();
    let listed = vec![
        sock("1.2.3.4:5000"),
        sock("192.168.1.5:5000"),
        sock("8.8.8.8:53"),
        sock("1.2.3.4:7000"),
        sock("93.184.216.34:80"),
    ];
    h.calls.call(h.now, 1, 9, "bob", listed, String::new());
    let out = h.drain();
    let [(2, ServerMessage::Incoming { candidates, .. })] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(
        candidates,
        &[
            sock("1.2.3.4:5000"),
            sock("192.168.1.5:5000"),
            sock("1.2.3.4:7000")
        ]
    );
    let answer = vec![
        sock("5.6.7.8:6000"),
        sock("1.1.1.1:443"),
        sock("10.0.0.2:6000"),
    ];
    h.calls.accept(2, 9, answer, hello());
    let out = h.drain();
    let [(1, ServerMessage::Connected { candidates, .. }), _] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(candidates, &[sock("5.6.7.8:6000"), sock("10.0.0.2:6000")]);
}
