//! The engine (a thin driver of the sans-IO phone) over real sockets against the real
//! `pinhole-rendezvous` on loopback: a call that moves to the direct path and outlives the
//! server, reconnecting by itself; a call placed while the server is down; echo; calling
//! yourself; reject, offline and a taken name, each with its typed reason. Audio is checked
//! both ways. (Every transition in virtual time: traversal/tests/phone.rs.)

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use media::audio::{SinkSpec, SourceSpec};
use pinhole::engine::{
    Command, EndReason, Engine, EngineConfig, Event, KeyCheck, PathKind, Registration, Security,
    StopReason,
};
use pinhole_tests::Rendezvous;
use pinhole_tests::tone;
use traversal::control::EndReason as Wire;

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn engine(server: SocketAddr, name: &str, seed: u8, tone: f64, wav: &Path) -> Engine {
    let mut config = EngineConfig::new(server.to_string(), name.into(), key(seed));
    config.input = SourceSpec::Tone { hz: tone };
    config.output = SinkSpec::Wav {
        path: wav.to_owned(),
    };
    Engine::start(config).unwrap()
}

/// Waits (bounded) for an event that `pick` accepts, failing on `Stopped`.
fn wait<T>(engine: &Engine, secs: u64, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(e) = engine.next_event(Duration::from_millis(50)) {
            if let Some(t) = pick(&e) {
                return t;
            }
            if let Event::Stopped { reason } = e {
                panic!("engine stopped: {reason:?}");
            }
        }
    }
    panic!("no such event within {secs} s");
}

fn online(engine: &Engine) {
    wait(engine, 10, |e| {
        matches!(e, Event::Registration(Registration::Online { .. })).then_some(())
    });
}

fn ended(engine: &Engine) -> (EndReason, Option<pinhole::engine::CallReport>) {
    wait(engine, 15, |e| match e {
        Event::Ended { reason, report, .. } => Some((*reason, report.clone())),
        _ => None,
    })
}

/// `caller` calls `callee`'s `name`, which accepts; both connected. How each side sees the
/// call's encryption.
fn connect(caller: &Engine, callee: &Engine, name: &str) -> [Security; 2] {
    caller.send(Command::Call(name.into()));
    wait(callee, 5, |e| {
        matches!(e, Event::Incoming { .. }).then_some(())
    });
    callee.send(Command::Accept);
    [caller, callee].map(|side| {
        wait(side, 10, |e| match e {
            Event::Connected { security, .. } => Some(security.clone()),
            _ => None,
        })
    })
}

#[test]
fn a_direct_call_outlives_the_server_and_both_sides_register_again() {
    let mut server = Rendezvous::start("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let (wa, wb) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let alice = engine(server.addr, "alice", 1, 440.0, &wa);
    let bob = engine(server.addr, "bob", 2, 660.0, &wb);
    online(&alice);
    online(&bob);

    let [sa, sb] = connect(&alice, &bob, "bob");
    // Both read the same six digits, encrypted end to end; each sees the other's name key,
    // remembered as a first call.
    assert_eq!(sa.suite, "AEAD_AES_128_GCM");
    assert!(sa.sas.is_some() && sa.sas == sb.sas, "{sa:?} {sb:?}");
    assert_eq!(
        sa.peer_key,
        Some(hex::encode(key(2).verifying_key().to_bytes()))
    );
    assert_eq!(
        sb.peer_key,
        Some(hex::encode(key(1).verifying_key().to_bytes()))
    );
    assert_eq!(sa.key_check, Some(KeyCheck::FirstCall));
    // On loopback the host candidates answer: the media moves to the direct path.
    for side in [&alice, &bob] {
        wait(side, 5, |e| {
            matches!(
                e,
                Event::PathChanged {
                    path: PathKind::Direct,
                    ..
                }
            )
            .then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    server.kill();
    for side in [&alice, &bob] {
        wait(side, 5, |e| {
            matches!(e, Event::Registration(Registration::Offline { .. })).then_some(())
        });
    }
    // The call goes on without the server: 3 s of it.
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    for side in [&alice, &bob] {
        online(side);
    }
    alice.send(Command::HangUp);
    let (reason, report) = ended(&alice);
    assert_eq!(reason, EndReason::HungUp);
    let report = report.unwrap();
    assert_eq!(report.end, Some(EndReason::HungUp));
    assert_eq!(report.path, PathKind::Direct, "{report:?}");
    // The hang-up reached bob over the direct path or the new server, whichever came first.
    let (reason_b, report_b) = ended(&bob);
    assert_eq!(reason_b, EndReason::Remote(Wire::HungUp));
    let report_b = report_b.unwrap();
    let json = serde_json::to_value(&report_b).unwrap();
    assert_eq!(json["end"], "peer_hung_up");
    assert_eq!(json["e2e"], "AEAD_AES_128_GCM");
    assert_eq!(json["sas"], sb.sas.unwrap().as_str());
    assert_eq!(json["peer_key_changed"], false);
    assert!(
        report.rtp.received > 150 && report_b.rtp.received > 150,
        "{report:?} {report_b:?}"
    );

    // The first call's recordings (the next call writes the same files): the tones carried
    // both ways, also while the server was gone and after it came back.
    let (fa, fb) = (
        tone::fraction(&wa, 660.0, 0.0),
        tone::fraction(&wb, 440.0, 0.0),
    );
    assert!(
        fa > 0.6 && fb > 0.6,
        "alice heard 660 Hz in {fa:.2}, bob 440 Hz in {fb:.2}:\n{}\n{}",
        tone::timeline(&wa, 660.0),
        tone::timeline(&wb, 440.0)
    );

    // A second call through the restarted server.
    connect(&bob, &alice, "alice");
    bob.send(Command::HangUp);
    assert_eq!(ended(&bob).0, EndReason::HungUp);
    assert_eq!(ended(&alice).0, EndReason::Remote(Wire::HungUp));
}

#[test]
fn a_call_placed_while_the_server_is_down_fails_in_bounded_time() {
    let mut server = Rendezvous::start("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let alice = engine(server.addr, "alice", 1, 440.0, &dir.path().join("a.wav"));
    online(&alice);
    server.kill();
    wait(&alice, 5, |e| {
        matches!(e, Event::Registration(Registration::Offline { .. })).then_some(())
    });
    let placed = Instant::now();
    alice.send(Command::Call("bob".into()));
    let (reason, report) = ended(&alice);
    assert_eq!(reason, EndReason::ServerUnreachable);
    assert!(report.is_none());
    assert!(
        placed.elapsed() < Duration::from_secs(13),
        "{:?}",
        placed.elapsed()
    );
}

#[test]
fn echo_and_calling_yourself() {
    let server = Rendezvous::start("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("echo.wav");
    let alice = engine(server.addr, "alice", 1, 520.0, &w);
    online(&alice);

    alice.send(Command::Call("alice".into()));
    assert_eq!(ended(&alice), (EndReason::SelfCall, None));

    alice.send(Command::Call("echo".into()));
    wait(&alice, 5, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    });
    wait(&alice, 5, |e| {
        matches!(e, Event::Muted(false)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    alice.send(Command::HangUp);
    let (reason, report) = ended(&alice);
    assert_eq!(reason, EndReason::HungUp);
    let report = report.unwrap();
    assert_eq!(report.path, PathKind::Relay);
    assert_eq!(report.peer, "echo");
    drop(alice);
    let f = tone::fraction(&w, 520.0, 0.0);
    assert!(
        f > 0.7,
        "the echo carries our 520 Hz in {f:.2} of the call: {report:?}\n{}",
        tone::timeline(&w, 520.0)
    );
}

#[test]
fn reject_offline_and_a_taken_name_end_with_reasons() {
    let server = Rendezvous::start("127.0.0.1:0");
    let dir = tempfile::tempdir().unwrap();
    let alice = engine(server.addr, "alice", 1, 440.0, &dir.path().join("a.wav"));
    let bob = engine(server.addr, "bob", 2, 660.0, &dir.path().join("b.wav"));
    online(&alice);
    online(&bob);

    alice.send(Command::Call("nobody".into()));
    assert_eq!(ended(&alice).0, EndReason::Remote(Wire::Offline));

    alice.send(Command::Call("bob".into()));
    wait(&bob, 5, |e| {
        matches!(e, Event::Incoming { .. }).then_some(())
    });
    bob.send(Command::Reject);
    assert_eq!(ended(&bob).0, EndReason::Declined);
    assert_eq!(ended(&alice).0, EndReason::Remote(Wire::Rejected));

    // Another key for the name "bob".
    let thief = engine(server.addr, "bob", 9, 440.0, &dir.path().join("t.wav"));
    let reason = wait(&thief, 10, |e| match e {
        Event::Stopped { reason } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason, Some(StopReason::NameTaken));
}

/// A contact whose name key changed between two calls (here: "bob" on another server with
/// another key, as a server in the middle would present him): the second call says so, in the
/// event and in the report; the remembered key is kept.
#[test]
fn a_contacts_changed_key_is_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let contacts = dir.path().join("contact-keys.txt");
    let (wa, wb) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let alice_on = |server: SocketAddr| {
        let mut config = EngineConfig::new(server.to_string(), "alice".into(), key(1));
        config.input = SourceSpec::Tone { hz: 440.0 };
        config.output = SinkSpec::Wav { path: wa.clone() };
        config.contacts = Some(contacts.clone());
        Engine::start(config).unwrap()
    };
    let first = Rendezvous::start("127.0.0.1:0");
    let (alice, bob) = (
        alice_on(first.addr),
        engine(first.addr, "bob", 2, 660.0, &wb),
    );
    online(&alice);
    online(&bob);
    let [sa, _] = connect(&alice, &bob, "bob");
    assert_eq!(sa.key_check, Some(KeyCheck::FirstCall));
    alice.send(Command::HangUp);
    ended(&alice);
    drop((alice, bob));

    let second = Rendezvous::start("127.0.0.1:0");
    let (alice, mallory) = (
        alice_on(second.addr),
        engine(second.addr, "bob", 3, 660.0, &wb),
    );
    online(&alice);
    online(&mallory);
    let [sa, _] = connect(&alice, &mallory, "bob");
    let known = hex::encode(key(2).verifying_key().to_bytes());
    assert_eq!(
        sa.key_check,
        Some(KeyCheck::Changed {
            previous: known.clone()
        })
    );
    alice.send(Command::HangUp);
    let (_, report) = ended(&alice);
    assert!(report.unwrap().peer_key_changed);
    let file = std::fs::read_to_string(&contacts).unwrap();
    assert!(
        file.contains(&known),
        "the first key stays remembered: {file}"
    );
}
