//! Clients that know several servers (issue 14): two independent `pinhole-rendezvous` on
//! loopback, the engine (and `pinhole call`) given both. The first dies (SIGKILL), says it is
//! going away (SIGTERM), or is dead from the start: the client registers on the second within
//! 5 s, measured and printed, and calls there. A settings file with a bad entry in its list is
//! refused with an error naming the entry. (Every transition in virtual time:
//! traversal/tests/phone.rs, "several servers".)
//!
//! And the same against a cluster: two `pinhole-rendezvous --cluster` nodes sharing a real
//! `redis-server`, each client knowing both (its own first). Users of different nodes call each
//! other by name; when a node dies its client moves to the other within 5 s, keeps its name
//! there, and a call that went direct goes on through the node's death until hung up.
//!
//! Needs the binaries: `cargo build -p traversal --bin pinhole-rendezvous -p pinhole --bin
//! pinhole` (or `cargo build --workspace --bins`), and for the cluster `redis-server`
//! (scripts/packages/cluster.txt).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use media::audio::{SinkSpec, SourceSpec};
use pinhole::engine::{
    CallReport, Command, EndReason, Engine, EngineConfig, Event, PathKind, Registration, ServerLoss,
};
use pinhole_tests::redis::Redis;
use pinhole_tests::{Party, Place, Rendezvous, TempDir, tone};

/// The bound: registered again within 5 s of a node's death.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// An engine for `name` with the server list `servers` (`a, b`), sending `hz`, recording to
/// `wav`.
fn engine(servers: &str, name: &str, seed: u8, hz: f64, wav: &Path) -> Engine {
    let mut config = EngineConfig::new(servers.into(), name.into(), key(seed));
    config.input = SourceSpec::Tone { hz };
    config.output = SinkSpec::Wav {
        path: wav.to_owned(),
    };
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

/// The server of the next `Online`, within `limit`.
fn online_at(engine: &Engine, limit: Duration) -> String {
    wait(engine, limit, |e| match e {
        Event::Registration(Registration::Online { server, .. }) => Some(server.clone()),
        _ => None,
    })
}

/// A loopback address nothing listens on (a server dead from the start).
fn dead_server() -> String {
    format!("127.0.0.1:{}", pinhole_tests::free_port())
}

/// `caller` calls `callee`'s `name`, which accepts: both connected.
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

fn ended(engine: &Engine) -> EndReason {
    ended_with_report(engine).0
}

/// How the call ended, and its report.
fn ended_with_report(engine: &Engine) -> (EndReason, Option<CallReport>) {
    wait(engine, Duration::from_secs(10), |e| match e {
        Event::Ended { reason, report, .. } => Some((*reason, report.clone())),
        _ => None,
    })
}

#[test]
fn when_the_first_server_dies_both_clients_register_on_the_second_within_5_s_and_call() {
    let mut first = Rendezvous::start("127.0.0.1:0");
    let second = Rendezvous::start("127.0.0.1:0");
    let list = format!("{}, {}", first.addr, second.addr);
    let dir = tempfile::tempdir().unwrap();
    let alice = engine(&list, "alice", 1, 440.0, &dir.path().join("a.wav"));
    let bob = engine(&list, "bob", 2, 660.0, &dir.path().join("b.wav"));
    for side in [&alice, &bob] {
        assert_eq!(
            online_at(side, Duration::from_secs(10)),
            first.addr.to_string()
        );
    }

    let died = Instant::now();
    first.kill();
    for (name, side) in [("alice", &alice), ("bob", &bob)] {
        let at = online_at(side, FAILOVER_BOUND);
        let took = died.elapsed();
        println!("{name}: registered on {at} {took:?} after the first server died");
        assert_eq!(at, second.addr.to_string());
        assert!(took < FAILOVER_BOUND, "{name}: {took:?}");
    }

    // The second server carries calls: the names are registered there now.
    connect(&alice, &bob, "bob");
    alice.send(Command::HangUp);
    assert_eq!(ended(&alice), EndReason::HungUp);
    assert_eq!(
        ended(&bob),
        EndReason::Remote(traversal::control::EndReason::HungUp)
    );
}

#[test]
fn a_first_server_dead_from_the_start_costs_nothing_and_echo_works_on_the_second() {
    let second = Rendezvous::start("127.0.0.1:0");
    let list = format!("{}, {}", dead_server(), second.addr);
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("echo.wav");
    let started = Instant::now();
    let carol = engine(&list, "carol", 3, 520.0, &wav);
    let at = online_at(&carol, FAILOVER_BOUND);
    let took = started.elapsed();
    println!("registered on {at} {took:?} after the start, past a dead first server");
    assert_eq!(at, second.addr.to_string());
    assert!(took < FAILOVER_BOUND, "{took:?}");

    carol.send(Command::Call("echo".into()));
    wait(&carol, Duration::from_secs(5), |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    });
    // Media for a while (bounded by the events, not asserted by the sleep).
    wait(&carol, Duration::from_secs(5), |e| match e {
        Event::Stats(report) if report.duration_s >= 2.0 => Some(()),
        _ => None,
    });
    carol.send(Command::HangUp);
    assert_eq!(ended(&carol), EndReason::HungUp);
    drop(carol);
    let f = tone::fraction(&wav, 520.0, 0.0);
    assert!(f > 0.5, "the echo carries our 520 Hz in {f:.2} of the call");
}

#[test]
fn a_server_going_away_sends_the_client_to_the_next_at_once() {
    let mut first = Rendezvous::start("127.0.0.1:0");
    let second = Rendezvous::start("127.0.0.1:0");
    let list = format!("{}, {}", first.addr, second.addr);
    let dir = tempfile::tempdir().unwrap();
    let dave = engine(&list, "dave", 4, 440.0, &dir.path().join("d.wav"));
    assert_eq!(
        online_at(&dave, Duration::from_secs(10)),
        first.addr.to_string()
    );

    let told = Instant::now();
    // SIGTERM: the server says `going_away` to its clients, then stops (waited for here, at
    // most 5 s; the engine's events queue meanwhile).
    first.terminate();
    wait(&dave, FAILOVER_BOUND, |e| {
        matches!(
            e,
            Event::Registration(Registration::Offline {
                reason: ServerLoss::ShuttingDown,
                ..
            })
        )
        .then_some(())
    });
    let at = online_at(&dave, FAILOVER_BOUND);
    let took = told.elapsed();
    println!("registered on {at} {took:?} after the first server said it is going away");
    assert_eq!(at, second.addr.to_string());
    assert!(took < FAILOVER_BOUND, "{took:?}");
}

#[test]
fn every_server_dead_from_the_start_stops_the_engine_after_one_round() {
    let list = format!("{}, {}", dead_server(), dead_server());
    let dir = tempfile::tempdir().unwrap();
    let erin = engine(&list, "erin", 5, 440.0, &dir.path().join("e.wav"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        assert!(Instant::now() < deadline, "the engine does not stop");
        match erin.next_event(Duration::from_millis(50)) {
            Some(Event::Stopped { reason }) => break reason,
            Some(Event::Registration(Registration::Online { .. })) => panic!("online?"),
            _ => {}
        }
    };
    assert!(
        matches!(
            reason,
            Some(pinhole::engine::StopReason::Unreachable { .. })
        ),
        "{reason:?}"
    );
}

// ---- `pinhole call` ----

/// `pinhole ARGS...` run to its end: (exit code, stderr).
fn pinhole(args: &[&str]) -> (Option<i32>, String) {
    let out = pinhole_tests::command("pinhole")
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn pinhole_call_takes_a_server_list_and_says_which_it_registered_with() {
    let second = Rendezvous::start("127.0.0.1:0");
    let list = format!("{},{}", dead_server(), second.addr);
    let dir = TempDir::new("list");
    let frank = Party::silent(&dir, "frank");
    let out = frank
        .call(Place::Local, &list, "echo", 1.0)
        .finish(Duration::from_secs(30));
    assert!(out.status.success(), "{out:#?}");
    let log = out.log_text();
    let registered = log
        .lines()
        .find(|l| l.contains("registered") && l.contains("mapped="))
        .unwrap_or_else(|| panic!("no registration line: {log}"));
    assert!(
        registered.contains(&format!("server={}", second.addr))
            || registered.contains(&format!("server=\"{}\"", second.addr)),
        "the line names the server: {registered}"
    );
}

#[test]
fn a_bad_entry_in_the_server_list_is_named() {
    let dir = TempDir::new("badlist");
    let config = dir.join("settings.toml");
    std::fs::write(
        &config,
        "name = \"gina\"\nserver = \"127.0.0.1:3478, bad_host:1\"\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let common = [
        "--config", &config, "--input", "silence", "--output", "null",
    ];
    let mut args = vec!["call", "echo", "--duration", "1"];
    args.extend(common);
    let (code, err) = pinhole(&args);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("\"bad_host:1\" (server 2 of 2)"), "{err}");
    assert!(err.contains("settings.toml"), "the file is named: {err}");

    // The same on the command line.
    args.extend(["--server", "127.0.0.1:3478,127.0.0.1:0"]);
    let (code, err) = pinhole(&args);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--server"), "{err}");
    assert!(err.contains("\"127.0.0.1:0\" (server 2 of 2)"), "{err}");
}

// ---- a cluster: nodes sharing names through Redis ----

/// A node of a cluster on loopback.
fn node(redis: &Redis) -> Rendezvous {
    Rendezvous::start_at(
        Place::Local,
        "127.0.0.1:0",
        &["--cluster", &redis.url(), "--no-limits"],
    )
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
    let (reason, report) = ended_with_report(&alice);
    let report = report.unwrap();
    assert_eq!(reason, EndReason::HungUp);
    assert_eq!(report.path, PathKind::Direct, "{report:?}");
    let (reason_b, report_b) = ended_with_report(&bob);
    let report_b = report_b.unwrap();
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
