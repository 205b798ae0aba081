//! The engine against a stand-in server (engine_common): registration with a name key, calls,
//! relay-first media that moves to the direct path, echo, reject, offline, a taken name. Audio
//! is checked both ways.

#![allow(clippy::unwrap_used)]

mod engine_common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use engine_common::FakeServer;
use media::analysis::{dominant_frequency, rms};
use media::audio::{SinkSpec, SourceSpec, WavSource};
use pinhole::engine::{Command, EndReason, Engine, EngineConfig, Event, PathKind};

const RATE: u32 = 48_000;

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn engine(server: &FakeServer, name: &str, seed: u8, tone: f64, wav: &Path) -> Engine {
    engine_at(server.addr, name, seed, tone, wav)
}

fn engine_at(server: SocketAddr, name: &str, seed: u8, tone: f64, wav: &Path) -> Engine {
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
            if let Event::Stopped { error } = e {
                panic!("engine stopped: {error:?}");
            }
        }
    }
    panic!("no such event within {secs} s");
}

fn registered(engine: &Engine) {
    wait(engine, 10, |e| {
        matches!(e, Event::Registered { .. }).then_some(())
    });
}

fn tone_fraction(samples: &[f32], hz: f64) -> f64 {
    let windows: Vec<&[f32]> = samples
        .get(RATE as usize / 2..)
        .unwrap_or(&[])
        .chunks_exact(4_800)
        .collect();
    let good = windows
        .iter()
        .filter(|w| {
            rms(w) > 0.05 && (dominant_frequency(w, RATE, 200.0, 2_000.0, 10.0) - hz).abs() <= 10.0
        })
        .count();
    good as f64 / windows.len().max(1) as f64
}

/// Level and dominant frequency of each 100 ms window, for failure messages.
fn windows(samples: &[f32]) -> Vec<(f32, f64)> {
    samples
        .chunks_exact(4_800)
        .map(|w| {
            (
                (rms(w) * 100.0).round() / 100.0,
                dominant_frequency(w, RATE, 200.0, 2_000.0, 10.0),
            )
        })
        .collect()
}

#[test]
fn two_engines_call_through_the_server_and_go_direct() {
    let server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (wa, wb) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let alice = engine(&server, "alice", 1, 440.0, &wa);
    let bob = engine(&server, "bob", 2, 660.0, &wb);
    registered(&alice);
    registered(&bob);

    alice.send(Command::Call("bob".into()));
    let from = wait(&bob, 5, |e| match e {
        Event::Incoming { from } => Some(from.clone()),
        _ => None,
    });
    assert_eq!(from, "alice");
    wait(&alice, 5, |e| {
        matches!(e, Event::Ringing { .. }).then_some(())
    });
    bob.send(Command::Accept);
    wait(&alice, 5, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    });
    // On loopback the host candidates answer: the media moves to the direct path.
    wait(&alice, 5, |e| match e {
        Event::PathChanged {
            path: PathKind::Direct,
            ..
        } => Some(()),
        _ => None,
    });
    let stats = wait(&bob, 5, |e| match e {
        Event::Stats(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(stats.peer, "alice");
    std::thread::sleep(Duration::from_secs(3));
    alice.send(Command::HangUp);
    let (reason, report) = wait(&alice, 5, |e| match e {
        Event::Ended { reason, report, .. } => Some((*reason, report.clone().unwrap())),
        _ => None,
    });
    assert_eq!(reason, EndReason::HungUp);
    let (reason_b, report_b) = wait(&bob, 5, |e| match e {
        Event::Ended { reason, report, .. } => Some((*reason, report.clone().unwrap())),
        _ => None,
    });
    assert_eq!(reason_b, EndReason::HungUp);
    assert_eq!(report.path, PathKind::Direct, "{report:?}");
    assert!(report.path_changes >= 1, "{report:?}");
    assert!(
        report.rtp.received > 100 && report_b.rtp.received > 100,
        "{report:?} {report_b:?}"
    );
    assert!(report.setup_ms.is_some_and(|ms| ms < 2_000), "{report:?}");
    assert!(
        server.relayed.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "media started on the relay"
    );
    drop(alice);
    drop(bob);
    let fa = tone_fraction(&WavSource::read_all(&wa).unwrap(), 660.0);
    let fb = tone_fraction(&WavSource::read_all(&wb).unwrap(), 440.0);
    assert!(
        fa > 0.8,
        "alice hears bob's 660 Hz in {fa:.2} of the call: {:?}",
        windows(&WavSource::read_all(&wa).unwrap())
    );
    assert!(
        fb > 0.8,
        "bob hears alice's 440 Hz in {fb:.2} of the call: {:?}",
        windows(&WavSource::read_all(&wb).unwrap())
    );
}

#[test]
fn echo_returns_the_callers_own_tone() {
    let server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("echo.wav");
    let alice = engine(&server, "alice", 1, 520.0, &w);
    registered(&alice);
    alice.send(Command::Call("echo".into()));
    wait(&alice, 5, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    alice.send(Command::HangUp);
    let report = wait(&alice, 5, |e| match e {
        Event::Ended { report, .. } => report.clone(),
        _ => None,
    });
    assert_eq!(report.path, PathKind::Relay);
    assert_eq!(report.peer, "echo");
    drop(alice);
    let samples = WavSource::read_all(&w).unwrap();
    let f = tone_fraction(&samples, 520.0);
    assert!(
        f > 0.7,
        "the echo carries our 520 Hz in {f:.2} of the call: {report:?}; windows: {:?}",
        windows(&samples)
    );
}

#[test]
fn reject_offline_and_a_taken_name_end_with_reasons() {
    let server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let alice = engine(&server, "alice", 1, 440.0, &dir.path().join("a.wav"));
    let bob = engine(&server, "bob", 2, 660.0, &dir.path().join("b.wav"));
    registered(&alice);
    registered(&bob);

    alice.send(Command::Call("nobody".into()));
    let reason = wait(&alice, 5, |e| match e {
        Event::Ended {
            reason,
            connected: false,
            ..
        } => Some(*reason),
        _ => None,
    });
    assert_eq!(reason, EndReason::Offline);

    alice.send(Command::Call("bob".into()));
    wait(&bob, 5, |e| {
        matches!(e, Event::Incoming { .. }).then_some(())
    });
    bob.send(Command::Reject);
    let reason = wait(&alice, 5, |e| match e {
        Event::Ended { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(reason, EndReason::Rejected);

    // The caller cancels before an answer.
    alice.send(Command::Call("bob".into()));
    wait(&bob, 5, |e| {
        matches!(e, Event::Incoming { .. }).then_some(())
    });
    alice.send(Command::HangUp);
    let reason = wait(&bob, 5, |e| match e {
        Event::Ended { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(reason, EndReason::Cancelled);

    // Another key cannot take "bob".
    let mallory = engine(&server, "bob", 9, 440.0, &dir.path().join("m.wav"));
    let error = wait(&mallory, 10, |e| match e {
        Event::Stopped { error } => Some(error.clone()),
        Event::Registered { .. } => panic!("a taken name was registered with another key"),
        _ => None,
    });
    let error = error.unwrap();
    assert!(error.contains("name_taken"), "{error}");
}

#[test]
fn a_restarted_server_is_joined_again() {
    let server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let alice = engine(&server, "alice", 1, 440.0, &dir.path().join("a.wav"));
    registered(&alice);
    let addr = server.stop();
    let error = wait(&alice, 10, |e| match e {
        Event::Error(e) => Some(e.clone()),
        _ => None,
    });
    assert!(error.contains("connecting again"), "{error}");
    let server = FakeServer::start_on(addr);
    registered(&alice);
    // And calls work again.
    alice.send(Command::Call("echo".into()));
    wait(&alice, 5, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    });
    alice.send(Command::HangUp);
    wait(&alice, 5, |e| {
        matches!(e, Event::Ended { .. }).then_some(())
    });
    drop(server);
}

#[test]
fn with_no_direct_pair_the_call_stays_on_the_relay() {
    let server = FakeServer::start();
    server
        .hide_candidates
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (wa, wb) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let alice = engine(&server, "alice", 1, 440.0, &wa);
    let bob = engine(&server, "bob", 2, 660.0, &wb);
    registered(&alice);
    registered(&bob);
    alice.send(Command::Call("bob".into()));
    wait(&bob, 5, |e| {
        matches!(e, Event::Incoming { .. }).then_some(())
    });
    bob.send(Command::Accept);
    wait(&alice, 5, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    bob.send(Command::HangUp);
    let report_b = wait(&bob, 5, |e| match e {
        Event::Ended { report, .. } => report.clone(),
        _ => None,
    });
    let report_a = wait(&alice, 5, |e| match e {
        Event::PathChanged { .. } => panic!("no direct path exists"),
        Event::Ended { reason, report, .. } => {
            assert_eq!(*reason, EndReason::HungUp);
            report.clone()
        }
        _ => None,
    });
    for r in [&report_a, &report_b] {
        assert_eq!(r.path, PathKind::Relay, "{r:?}");
        assert_eq!(r.path_changes, 0, "{r:?}");
        assert!(r.rtp.received > 100, "{r:?}");
    }
    drop(alice);
    drop(bob);
    let fa = tone_fraction(&WavSource::read_all(&wa).unwrap(), 660.0);
    let fb = tone_fraction(&WavSource::read_all(&wb).unwrap(), 440.0);
    assert!(
        fa > 0.8 && fb > 0.8,
        "relayed audio both ways: {fa:.2} {fb:.2}"
    );
}

/// The real server (in this process): a call goes direct on loopback, audio both ways; a third
/// client calling someone in a call hears `busy`.
#[test]
fn the_real_server_connects_calls_and_says_busy() {
    let server = traversal::rendezvous::spawn(traversal::rendezvous::RendezvousConfig::new(
        "127.0.0.1:0".parse().unwrap(),
    ))
    .unwrap();
    let addr = server.local_addr();
    let dir = tempfile::tempdir().unwrap();
    let (wa, wb) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let alice = engine_at(addr, "alice", 1, 440.0, &wa);
    let bob = engine_at(addr, "bob", 2, 660.0, &wb);
    let carol = engine_at(addr, "carol", 3, 550.0, &dir.path().join("c.wav"));
    registered(&alice);
    registered(&bob);
    registered(&carol);
    alice.send(Command::Call("bob".into()));
    wait(&bob, 5, |e| {
        matches!(e, Event::Incoming { .. }).then_some(())
    });
    bob.send(Command::Accept);
    wait(&alice, 5, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    });
    carol.send(Command::Call("bob".into()));
    let reason = wait(&carol, 5, |e| match e {
        Event::Ended { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(reason, EndReason::Busy);
    std::thread::sleep(Duration::from_secs(3));
    bob.send(Command::HangUp);
    let report = wait(&alice, 5, |e| match e {
        Event::Ended { reason, report, .. } => {
            assert_eq!(*reason, EndReason::HungUp);
            report.clone()
        }
        _ => None,
    });
    assert_eq!(report.path, PathKind::Direct, "{report:?}");
    assert!(report.rtp.received > 100, "{report:?}");
    drop(alice);
    drop(bob);
    let fa = tone_fraction(&WavSource::read_all(&wa).unwrap(), 660.0);
    let fb = tone_fraction(&WavSource::read_all(&wb).unwrap(), 440.0);
    assert!(fa > 0.8 && fb > 0.8, "audio both ways: {fa:.2} {fb:.2}");
}
