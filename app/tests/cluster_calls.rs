//! The app's engine against a cluster (issue 14): two `pinhole-rendezvous --cluster` nodes
//! sharing a real `redis-server` on loopback, each client knowing both nodes (its own first).
//! Users of different nodes call each other by name with voice both ways; when a node dies,
//! its client moves to the other node within 5 s, keeps its name there, and a call that went
//! direct goes on through the node's death until hung up.
//!
//! Needs `redis-server` (scripts/packages/cluster.txt) and the binaries (`cargo build
//! --workspace --bins`).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use media::audio::{SinkSpec, SourceSpec};
use pinhole::engine::{
    CallReport, Command, EndReason, Engine, EngineConfig, Event, PathKind, Registration,
};
use pinhole_tests::redis::Redis;
use pinhole_tests::{Place, Rendezvous, tone};

/// The bound: registered again within 5 s of a node's death.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn node(redis: &Redis) -> Rendezvous {
    Rendezvous::start_at(
        Place::Local,
        "127.0.0.1:0",
        &["--cluster", &redis.url(), "--no-limits"],
    )
}

fn engine(servers: &str, name: &str, seed: u8, hz: f64, wav: &Path) -> Engine {
    let mut config = EngineConfig::new(servers.into(), name.into(), key(seed));
    config.input = SourceSpec::Tone { hz };
    config.output = SinkSpec::Wav {
        path: wav.to_owned(),
    };
    config.port_mapping = false;
    Engine::start(config).unwrap()
}

/// Waits (bounded) for an event that `pick` accepts, failing on `Stopped`.
fn wait<T>(engine: &Engine, limit: Duration, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(e) = engine.next_event(Duration::from_millis(20)) {
            if let Some(t) = pick(&e) {
                return t;
            }
            if let Event::Stopped { reason } = e {
                panic!("engine stopped: {reason:?}");
            }
        }
    }
    panic!("no such event within {limit:?}");
}

fn online_at(engine: &Engine, limit: Duration) -> String {
    wait(engine, limit, |e| match e {
        Event::Registration(Registration::Online { server, .. }) => Some(server.clone()),
        _ => None,
    })
}

fn connect(caller: &Engine, callee: &Engine, name: &str) {
    caller.send(Command::Call(name.into()));
    wait(callee, Duration::from_secs(5), |e| {
        matches!(e, Event::Incoming { .. }).then_some(())
    });
    callee.send(Command::Accept);
    for side in [caller, callee] {
        wait(side, Duration::from_secs(10), |e| {
            matches!(e, Event::Connected { .. }).then_some(())
        });
    }
}

fn ended(engine: &Engine) -> (EndReason, CallReport) {
    wait(engine, Duration::from_secs(10), |e| match e {
        Event::Ended {
            reason,
            report: Some(report),
            ..
        } => Some((*reason, report.clone())),
        _ => None,
    })
}

#[test]
fn users_of_two_nodes_talk_and_a_direct_call_outlives_a_node_whose_client_moves_on() {
    let Some(redis) = Redis::start() else { return };
    let a = node(&redis);
    let mut b = node(&redis);
    let dir = tempfile::tempdir().unwrap();
    let (alice_wav, bob_wav) = (dir.path().join("alice.wav"), dir.path().join("bob.wav"));
    // Each knows both nodes, its own first.
    let alice = engine(
        &format!("{}, {}", a.addr, b.addr),
        "alice",
        1,
        440.0,
        &alice_wav,
    );
    let bob = engine(
        &format!("{}, {}", b.addr, a.addr),
        "bob",
        2,
        660.0,
        &bob_wav,
    );
    assert_eq!(
        online_at(&alice, Duration::from_secs(10)),
        a.addr.to_string()
    );
    assert_eq!(online_at(&bob, Duration::from_secs(10)), b.addr.to_string());

    // alice (node a) calls bob (node b) by name.
    connect(&alice, &bob, "bob");
    for side in [&alice, &bob] {
        wait(side, Duration::from_secs(5), |e| {
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

    // Bob's node dies: bob registers on node a within 5 s, under his name.
    let died = Instant::now();
    b.kill();
    let at = online_at(&bob, FAILOVER_BOUND);
    let took = died.elapsed();
    println!("bob registered on {at} {took:?} after his node died");
    assert_eq!(at, a.addr.to_string());
    assert!(took < FAILOVER_BOUND, "{took:?}");
    // The direct call goes on: nothing ends it, and voice keeps coming for 3 s more.
    let talk_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < talk_until {
        for side in [&alice, &bob] {
            if let Some(Event::Ended { reason, .. }) = side.next_event(Duration::from_millis(10)) {
                panic!("the direct call ended when a node died: {reason:?}");
            }
        }
    }
    alice.send(Command::HangUp);
    let (reason, report) = ended(&alice);
    assert_eq!(reason, EndReason::HungUp);
    assert_eq!(report.path, PathKind::Direct, "{report:?}");
    let (reason_b, report_b) = ended(&bob);
    assert_eq!(
        reason_b,
        EndReason::Remote(traversal::control::EndReason::HungUp)
    );
    // Voice both ways, through the node's death: each recording carries the other's tone
    // from start to end (the last second included).
    for (wav, hz, report) in [(&alice_wav, 660.0, &report), (&bob_wav, 440.0, &report_b)] {
        let heard = tone::fraction(wav, hz, 0.5);
        let last = tone::fraction(wav, hz, -1.0);
        assert!(
            heard > 0.8 && last > 0.8,
            "{} heard {hz} Hz in {heard:.2} of it, {last:.2} of its last second: {}",
            wav.display(),
            tone::timeline(wav, hz)
        );
        assert!(report.duration_s > 4.0, "{report:?}");
    }

    // bob's name stays his on node a: a new call there reaches him.
    connect(&alice, &bob, "bob");
    bob.send(Command::HangUp);
    ended(&alice);
}
