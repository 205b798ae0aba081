//! Call states of `pinhole call` / `pinhole answer` (the real binaries) with `pinhole-rendezvous`
//! on 127.0.0.1 that app/tests/headless_calls.rs does not cover: busy, a caller that cancels
//! while ringing, a server restarted under registered clients (they register again by
//! themselves and take calls), and a whole call after it with the audio checked both ways.
//! (headless_calls.rs has: tones both ways, echo, offline, name taken, unreachable server,
//! reject, SIGTERM, a peer killed mid-call.) A call nobody answers ends after the server's 30 s
//! ring timeout (`no_answer`): too long for a test here; traversal's own tests cover it with a
//! short timer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ed25519_dalek::SigningKey;
use pinhole_tests::scripted::Client;
use pinhole_tests::{Party, Place, Rendezvous, TempDir};
use serde_json::json;

/// The server on loopback, and its address.
fn server(flags: &[&str]) -> (Rendezvous, String) {
    let server = Rendezvous::start_at(Place::Local, "127.0.0.1:0", flags);
    let addr = server.addr.to_string();
    (server, addr)
}

#[test]
fn a_call_to_someone_in_a_call_is_busy() {
    let (_server, addr) = server(&[]);
    let dir = TempDir::new("busy");
    // Tones, not silence: a silent party sends only DTX comfort-noise updates, and the first
    // call's packet count is how this test sees it go on undisturbed.
    let (alice, bob) = (
        Party::tone(&dir, "al", 440.0),
        Party::tone(&dir, "bo", 660.0),
    );
    let carol = Party::silent(&dir, "ca");
    let answer = alice.answer(Place::Local, &addr, &[]);
    let mut first = bob.call(Place::Local, &addr, &alice.name, 5.0);
    first.expect_log("connected", Duration::from_secs(10));
    let second = carol
        .call(Place::Local, &addr, &alice.name, 2.0)
        .finish(Duration::from_secs(10));
    assert!(!second.status.success(), "{second:#?}");
    assert!(
        second.stdout.trim().is_empty(),
        "no report for a call that never connected"
    );
    assert!(
        second.last_log().contains("busy"),
        "the reason is busy: {second:#?}"
    );
    // The first call goes on, undisturbed.
    let first = first.finish(Duration::from_secs(15));
    assert!(first.status.success(), "{first:#?}");
    let json = first.one_json();
    assert_eq!(json["peer"], alice.name.as_str());
    assert!(json["rtp"]["received"].as_u64().unwrap() > 150, "{json}");
    answer.terminate();
    let answer = answer.finish(Duration::from_secs(10));
    assert_eq!(
        answer.json().len(),
        1,
        "alice answered one call: {answer:#?}"
    );
}

#[test]
fn a_caller_that_hangs_up_while_ringing_cancels_the_call() {
    let (server, addr) = server(&[]);
    let dir = TempDir::new("cancel");
    let (dave, erin) = (Party::silent(&dir, "da"), Party::silent(&dir, "er"));
    // dave is scripted with the raw control protocol: he lets the call ring, never answers.
    let mut callee = Client::connect(server.addr).unwrap();
    callee
        .register(&dave.name, &SigningKey::from_bytes(&[7; 32]))
        .unwrap();
    let mut caller = erin.call(Place::Local, &addr, &dave.name, 5.0);
    let incoming = callee
        .expect_within("incoming", Duration::from_secs(10))
        .unwrap();
    assert_eq!(incoming["from"], erin.name.as_str());
    let call_id = incoming["call_id"].clone();
    callee
        .send(&json!({"type": "ringing", "call_id": call_id}))
        .unwrap();
    caller.expect_log("ringing", Duration::from_secs(5));
    // erin gives up (Ctrl-C): the server tells dave the call was cancelled.
    caller.terminate();
    let out = caller.finish(Duration::from_secs(5));
    assert!(
        out.stdout.trim().is_empty(),
        "never connected: no report: {out:#?}"
    );
    let ended = callee.expect("ended").unwrap();
    assert_eq!(ended["call_id"], call_id);
    assert_eq!(ended["reason"], "cancelled", "{ended}");
}

#[test]
fn clients_register_again_after_a_server_restart_and_call() {
    let dir = TempDir::new("restart");
    let names = dir.join("names.json").display().to_string();
    let (mut server, addr) = server(&["--names-file", &names]);
    let (frank, grace) = (
        Party::tone(&dir, "fr", 440.0),
        Party::tone(&dir, "gr", 660.0),
    );
    let mut answer = frank.answer(Place::Local, &addr, &[]);
    let before = answer.log.len();
    // The engine notices and retries with backoff (at most 5 s apart).
    server.restart();
    let again = answer.wait_log_after("headless: registered", before, Duration::from_secs(20));
    assert!(again, "frank never registered again: {:#?}", answer.log);
    let call = grace
        .call(Place::Local, &addr, &frank.name, 4.0)
        .finish(Duration::from_secs(25));
    assert!(call.status.success(), "{call:#?}");
    assert_eq!(call.one_json()["peer"], frank.name.as_str());
    answer.terminate();
    let answer = answer.finish(Duration::from_secs(10));
    let reports = answer.json();
    assert_eq!(reports.len(), 1, "{answer:#?}");
    assert_eq!(reports[0]["peer"], grace.name.as_str());
    let (grace_hears, frank_hears) = (grace.hears(&frank), frank.hears(&grace));
    assert!(grace_hears >= 0.8, "grace hears frank in {grace_hears:.2}");
    assert!(frank_hears >= 0.7, "frank hears grace in {frank_hears:.2}");
}
