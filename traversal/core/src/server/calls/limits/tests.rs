//! The per-sender limits, each against a finding of issue 11 (these fail on a router without
//! them): a burst aimed at a name, a flood of strangers, ringing that keeps a user busy,
//! registrations that cost a verification each, names without quota, lookalike names.

// A test's virtual clock starts at any instant; none is read again.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};

use super::super::{
    Calls, CallsConfig, EndReason, LimitsConfig, ServerMessage, registration_message,
};
use crate::server::{ConnId, hex, unhex};

struct T {
    calls: Calls,
    now: Instant,
    challenges: HashMap<ConnId, String>,
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([198, 51, 100, last])
}

impl T {
    fn new() -> T {
        T {
            calls: Calls::new(CallsConfig::default(), [9; 32]),
            now: Instant::now(),
            challenges: HashMap::new(),
        }
    }

    /// Bob registered on connection 1.
    fn with_bob() -> T {
        let mut t = T::new();
        t.join(1, ip(1), "bob", 1);
        t
    }

    fn open(&mut self, conn: ConnId, from: IpAddr) {
        let challenge = self.calls.open(conn);
        self.calls.set_source(conn, from);
        self.challenges.insert(conn, challenge);
    }

    fn register(&mut self, conn: ConnId, name: &str, seed: u8) -> Vec<(ConnId, ServerMessage)> {
        let challenge = unhex(&self.challenges[&conn]).unwrap();
        let key = key(seed);
        let sig = key.sign(&registration_message(name, &challenge));
        self.calls.register(
            self.now,
            conn,
            name,
            &hex(key.verifying_key().as_bytes()),
            &hex(&sig.to_bytes()),
        );
        self.drain()
    }

    /// Opens `conn` from `from`, registers `name` with key `seed` and gives it a mapping.
    fn join(&mut self, conn: ConnId, from: IpAddr, name: &str, seed: u8) {
        self.open(conn, from);
        let out = self.register(conn, name, seed);
        assert!(
            matches!(&out[..], [(c, ServerMessage::Registered { .. })] if *c == conn),
            "{name}: {out:?}"
        );
        let port = 40_000 + u16::try_from(conn).unwrap();
        self.calls
            .set_mapped(conn, Some(SocketAddr::new(from, port)));
    }

    fn call(&mut self, conn: ConnId, call_id: u64, to: &str) -> Vec<(ConnId, ServerMessage)> {
        self.calls
            .call(self.now, conn, call_id, to, Vec::new(), String::new());
        self.drain()
    }

    /// `conn` rings bob (1) with call `id` and hangs up: whether bob heard it.
    fn ring_bob(&mut self, conn: ConnId, id: u64) -> usize {
        let rang = count(&self.call(conn, id, "bob"), 1, incoming);
        self.calls.hang_up(conn, id);
        self.drain();
        rang
    }

    fn drain(&mut self) -> Vec<(ConnId, ServerMessage)> {
        std::iter::from_fn(|| self.calls.poll_signal()).collect()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.calls.handle_timeout(self.now);
        self.drain();
    }
}

fn is_code(m: &ServerMessage, want: &str) -> bool {
    matches!(m, ServerMessage::Error { code, .. } if code == want)
}

fn count(
    out: &[(ConnId, ServerMessage)],
    conn: ConnId,
    f: impl Fn(&ServerMessage) -> bool,
) -> usize {
    out.iter().filter(|(c, m)| *c == conn && f(m)).count()
}

fn incoming(m: &ServerMessage) -> bool {
    matches!(m, ServerMessage::Incoming { .. })
}

fn ended(reason: EndReason) -> impl Fn(&ServerMessage) -> bool {
    move |m| matches!(m, ServerMessage::Ended { reason: r, .. } if *r == reason)
}

#[test]
fn a_burst_of_call_and_hang_up_aimed_at_a_name_reaches_it_within_its_budget() {
    // Issue 11: one TCP write of 17 call + hang_up pairs made the server close the victim's
    // control connection (its queue overflowed). Now the callee hears 3 rings at most, and
    // the rest is refused to the sender.
    let mut t = T::new();
    t.join(1, ip(1), "mallory", 1);
    t.join(2, ip(2), "bob", 2);
    let mut out = Vec::new();
    for id in 1..=17 {
        t.calls.call(t.now, 1, id, "bob", Vec::new(), String::new());
        t.calls.hang_up(1, id);
        out.extend(t.drain());
    }
    assert_eq!(
        count(&out, 2, incoming),
        3,
        "rings per (caller key, callee)"
    );
    assert_eq!(
        count(&out, 2, |_| true),
        6,
        "3 incoming, 3 cancelled: {out:?}"
    );
    assert_eq!(count(&out, 1, |m| is_code(m, "rate_limited")), 14);
    assert_eq!(t.calls.stats().rate_limited, 14);
    // 100 seconds later one more ring is allowed.
    t.advance(Duration::from_secs(100));
    assert_eq!(count(&t.call(1, 99, "bob"), 2, incoming), 1);
}

#[test]
fn strangers_together_ring_a_user_at_most_its_cap() {
    // 1,300-1,500 incoming a second reached a victim. Now 40 strangers (own keys, own
    // addresses) get 20 rings through at once, then one a second.
    let mut t = T::with_bob();
    let rang: usize = (0..40u8)
        .map(|n| {
            t.join(10 + ConnId::from(n), ip(10 + n), &format!("s{n}"), 10 + n);
            t.ring_bob(10 + ConnId::from(n), 1)
        })
        .sum();
    assert_eq!(rang, 20);
    // The 21st stranger waits a second.
    t.advance(Duration::from_secs(1));
    let next = t.call(30, 2, "bob");
    assert_eq!(count(&next, 1, incoming), 1);
}

#[test]
fn one_address_with_many_keys_rings_a_user_within_its_budget() {
    // 5 keys from one address (its quota of new names), each ringing twice: 6 rings, then one
    // every 30 s.
    let mut t = T::with_bob();
    let mut rang = 0;
    for n in 0..5u8 {
        t.join(10 + ConnId::from(n), ip(7), &format!("k{n}"), 20 + n);
        rang += t.ring_bob(10 + ConnId::from(n), 1) + t.ring_bob(10 + ConnId::from(n), 2);
    }
    assert_eq!(rang, 6);
    t.advance(Duration::from_secs(30));
    assert_eq!(t.ring_bob(14, 3), 1, "30 s later");
}

#[test]
fn without_per_address_limits_many_keys_share_one_address() {
    // A bench's 40 clients on loopback: each its own key and name, all from one address.
    let config = CallsConfig {
        limits: LimitsConfig::without_per_address(),
        ..CallsConfig::default()
    };
    let mut t = T::new();
    t.calls = Calls::new(config, [9; 32]);
    t.join(1, ip(1), "bob", 1);
    let rang: usize = (0..19u8)
        .map(|n| {
            t.join(10 + ConnId::from(n), ip(1), &format!("b{n}"), 10 + n);
            t.ring_bob(10 + ConnId::from(n), 1)
        })
        .sum();
    assert_eq!(rang, 19);
}

#[test]
fn calls_are_limited_per_connection_key_and_address() {
    let mut t = T::new();
    t.join(1, ip(1), "a", 1);
    // Per connection: 5 at once (to names that are offline: no one else hears them).
    let refused = (1..=8)
        .filter(|id| {
            let out = t.call(1, *id, "nobody");
            count(&out, 1, |m| is_code(m, "rate_limited")) == 1
                && count(&out, 1, ended(EndReason::ServerError)) == 1
        })
        .count();
    assert_eq!(refused, 3);
    t.advance(Duration::from_secs(3));
    assert_eq!(
        count(&t.call(1, 20, "nobody"), 1, ended(EndReason::Offline)),
        1
    );
    // Per key, over its connections one after another: 10 at once.
    t.calls.closed(1);
    let mut t = T::new();
    let mut offline = 0;
    for conn in 1..=4 {
        t.join(conn, ip(u8::try_from(conn).unwrap()), "a", 1);
        for id in 0..5 {
            offline += count(&t.call(conn, id, "nobody"), conn, ended(EndReason::Offline));
        }
        t.calls.closed(conn);
    }
    assert_eq!(offline, 10);
    // Per address: 20 at once, from any number of keys.
    let mut t = T::new();
    let mut offline = 0;
    for n in 0..6u8 {
        let conn = ConnId::from(n) + 1;
        t.open(conn, ip(1));
        t.calls.set_mapped(conn, None);
        t.register(conn, &format!("k{n}"), 30 + n);
        for id in 0..5 {
            offline += count(&t.call(conn, id, "nobody"), conn, ended(EndReason::Offline));
        }
    }
    // 6 keys from one address: the fifth new name from it is the last (5 an hour), so 5
    // callers, 20 calls.
    assert_eq!(offline, 20);
}

#[test]
fn a_stranger_ringing_again_does_not_keep_the_callee_busy() {
    // An attacker ringing a victim kept them busy for everyone else, indefinitely.
    let mut t = T::new();
    t.join(1, ip(1), "mallory", 1);
    t.join(2, ip(2), "bob", 2);
    t.join(3, ip(3), "carol", 3);
    t.join(4, ip(4), "dave", 4);
    // A first ring holds the line like any call: carol hears busy.
    assert_eq!(count(&t.call(1, 1, "bob"), 2, incoming), 1);
    assert_eq!(count(&t.call(3, 1, "bob"), 3, ended(EndReason::Busy)), 1);
    // Mallory rings again: that ring yields. Carol's call takes its place.
    t.calls.hang_up(1, 1);
    t.drain();
    assert_eq!(count(&t.call(1, 2, "bob"), 2, incoming), 1);
    let out = t.call(3, 2, "bob");
    assert_eq!(count(&out, 1, ended(EndReason::Busy)), 1, "{out:?}");
    assert_eq!(count(&out, 2, ended(EndReason::Cancelled)), 1);
    assert_eq!(count(&out, 2, incoming), 1);
    // Carol's first ring does not yield to dave, nor to mallory.
    assert_eq!(count(&t.call(4, 1, "bob"), 4, ended(EndReason::Busy)), 1);
    assert_eq!(count(&t.call(1, 3, "bob"), 1, ended(EndReason::Busy)), 1);
    // Bob accepts carol's call: no one pre-empts a call in progress.
    t.calls.hang_up(3, 2);
    t.drain();
    // The same attacker from new keys at the same address: the address's first 3 rings in the
    // window hold the line (a colleague behind the same address may ring too), later ones
    // yield. Mallory rang twice: mallory2's ring is the third.
    t.join(5, ip(1), "mallory2", 5);
    assert_eq!(count(&t.call(5, 1, "bob"), 2, incoming), 1);
    assert_eq!(count(&t.call(4, 2, "bob"), 4, ended(EndReason::Busy)), 1);
    t.calls.hang_up(5, 1);
    t.drain();
    t.join(6, ip(1), "mallory3", 6);
    assert_eq!(count(&t.call(6, 1, "bob"), 2, incoming), 1);
    let out = t.call(4, 3, "bob");
    assert_eq!(count(&out, 2, incoming), 1, "{out:?}");
    assert_eq!(count(&out, 6, ended(EndReason::Busy)), 1);
    // After the window a ring holds again: one ring time per 10 minutes.
    t.advance(Duration::from_secs(601));
    assert_eq!(count(&t.call(1, 4, "bob"), 2, incoming), 1);
    assert_eq!(count(&t.call(3, 3, "bob"), 3, ended(EndReason::Busy)), 1);
}

#[test]
fn ringing_is_passed_on_once_per_call() {
    let mut t = T::new();
    t.join(1, ip(1), "alice", 1);
    t.join(2, ip(2), "bob", 2);
    t.call(1, 7, "bob");
    for _ in 0..100 {
        t.calls.ringing(2, 7);
    }
    let out = t.drain();
    assert_eq!(
        count(&out, 1, |m| matches!(m, ServerMessage::Ringing { .. })),
        1
    );
}

#[test]
fn registrations_are_limited_before_the_signature_is_verified() {
    // `register` repeated on one connection cost an Ed25519 verification each (12-18k/s took
    // a core). Now 3 attempts, then one every 5 s, per connection.
    let mut t = T::new();
    t.open(1, ip(1));
    let (pk, sig) = (hex(key(1).verifying_key().as_bytes()), hex(&[0u8; 64]));
    for _ in 0..1000 {
        t.calls.register(t.now, 1, "alice", &pk, &sig);
    }
    let out = t.drain();
    assert_eq!(count(&out, 1, |m| is_code(m, "bad_signature")), 3);
    assert_eq!(count(&out, 1, |m| is_code(m, "rate_limited")), 997);
    t.advance(Duration::from_secs(5));
    assert_eq!(t.register(1, "alice", 1).len(), 1);
    // Per address: 10 at once from any number of connections.
    let mut t = T::new();
    let mut tried = 0;
    for conn in 1..=8 {
        t.open(conn, ip(7));
        for _ in 0..3 {
            t.calls.register(t.now, conn, "alice", &pk, &sig);
            tried += count(&t.drain(), conn, |m| is_code(m, "bad_signature"));
        }
    }
    assert_eq!(tried, 10);
    // A name that is taken, or a lookalike, is refused before any verification: a
    // signature that would not verify is not even looked at.
    let mut t = T::new();
    t.join(1, ip(1), "alice", 1);
    t.open(2, ip(2));
    t.calls.register(
        t.now,
        2,
        "alice",
        &hex(key(2).verifying_key().as_bytes()),
        &sig,
    );
    assert!(is_code(&t.drain()[0].1, "name_taken"));
}

#[test]
fn names_have_quotas_per_key_and_per_address() {
    // 100,000 names from one key filled the table: now 3 per key.
    let mut t = T::new();
    for (conn, name) in [(1, "a1"), (2, "a2"), (3, "a3")] {
        t.join(conn, ip(u8::try_from(conn).unwrap()), name, 1);
    }
    t.open(4, ip(4));
    assert!(is_code(&t.register(4, "a4", 1)[0].1, "too_many_names"));
    // Its own names still register (a reconnect takes the name over).
    assert!(matches!(
        t.register(4, "a1", 1)[..],
        [_, (4, ServerMessage::Registered { .. })]
    ));
    // New names per address: 5 at once, then one every 12 minutes.
    let mut t = T::new();
    let results: Vec<bool> = (0..7u8)
        .map(|n| {
            let conn = ConnId::from(n) + 1;
            t.open(conn, ip(9));
            let out = t.register(conn, &format!("n{n}"), 40 + n);
            matches!(out[..], [(_, ServerMessage::Registered { .. })])
        })
        .collect();
    assert_eq!(results, [true, true, true, true, true, false, false]);
    t.advance(Duration::from_secs(720));
    t.open(20, ip(9));
    assert!(matches!(
        t.register(20, "n9", 49)[..],
        [(_, ServerMessage::Registered { .. })]
    ));
}

#[test]
fn lookalike_names_are_refused_as_confusable() {
    let mut t = T::new();
    t.join(1, ip(1), "alice", 1);
    t.join(2, ip(2), "bob", 2);
    for (conn, name) in [
        (3, "\u{430}lice"),
        (4, "\u{ff42}\u{ff4f}\u{ff42}"),
        (5, "Alice"),
    ] {
        t.open(conn, ip(10 + u8::try_from(conn).unwrap()));
        let out = t.register(conn, name, 9);
        assert!(is_code(&out[0].1, "name_confusable"), "{name}: {out:?}");
    }
    assert_eq!(t.calls.stats().names, 2);
}
