//! `pinhole call` and `pinhole answer`, the real binary, on 127.0.0.1: two clients call each
//! other with different tones and each WAV carries the other's; the JSON lines agree; echo;
//! reject, offline, a taken name, an unreachable server; SIGTERM hangs up cleanly. Trust: both
//! reports carry the same code, a peer with a new key is flagged until `pinhole trust-contact`,
//! a changed server certificate stops `pinhole answer` until `pinhole trust-server`.
//!
//! The server is the real `pinhole-rendezvous`, started through `pinhole_tests::Rendezvous`
//! (built by `cargo build --workspace --bins`, which the test command runs first).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use pinhole_tests::{Headless, HeadlessOutput, Party, Place, Rendezvous, TempDir};

/// `pinhole ARGS...` run to its end: (success, stdout, stderr).
fn pinhole(args: &[&str]) -> (bool, String, String) {
    let out = pinhole_tests::command("pinhole")
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// A server on loopback, its address, and a directory for the parties.
fn setup(tag: &str) -> (Rendezvous, String, TempDir) {
    let server = Rendezvous::start("127.0.0.1:0");
    let addr = server.addr.to_string();
    (server, addr, TempDir::new(tag))
}

/// alice (440 Hz) and bob (660 Hz), each recording what it hears.
fn talkers(dir: &TempDir) -> (Party, Party) {
    (
        Party::tone(dir, "alice", 440.0),
        Party::tone(dir, "bob", 660.0),
    )
}

/// `pinhole call PEER` from `party` for `secs`, run to its end (at most 30 s).
fn call(party: &Party, server: &str, peer: &str, secs: f64) -> HeadlessOutput {
    party
        .call(Place::Local, server, peer, secs)
        .finish(Duration::from_secs(30))
}

/// Starts a call from `alice` to `bob` that lasts a minute; returns once `bob` is in it.
fn call_in_progress(alice: &Party, bob: &Party, server: &str) -> (Headless, Headless) {
    let mut answer = bob.answer(Place::Local, server, &[]);
    let caller = alice.call(Place::Local, server, &bob.name, 60.0);
    answer.expect_log("connected", Duration::from_secs(15));
    (caller, answer)
}

/// The log of a run that failed before its call connected (no report printed).
fn reason(out: &HeadlessOutput) -> String {
    assert!(!out.status.success(), "{out:#?}");
    assert!(
        out.stdout.is_empty(),
        "no report for a call that never connected: {out:#?}"
    );
    out.log_text()
}

#[test]
fn call_and_answer_exchange_tones_and_report_json() {
    let (_server, addr, dir) = setup("tones");
    let (alice, bob) = talkers(&dir);
    let answer = bob.answer(Place::Local, &addr, &["--calls", "1"]);
    let a = call(&alice, &addr, &bob.name, 4.0);
    assert!(a.status.success(), "call failed: {a:#?}");
    let b = answer.finish(Duration::from_secs(15));
    assert!(b.status.success(), "answer failed: {b:#?}");
    let (ja, jb) = (a.one_json(), b.one_json());
    println!("caller: {ja}\ncallee: {jb}");
    assert_eq!(ja["peer"], bob.name.as_str());
    assert_eq!(jb["peer"], alice.name.as_str());
    for j in [&ja, &jb] {
        assert_eq!(j["path"], "direct", "loopback candidates answer: {j}");
        assert!(j["setup_ms"].as_u64().is_some(), "{j}");
        assert!(j["rtp"]["jitter_ms"].is_number(), "{j}");
        assert!(j["rtp"]["lost"].as_u64().unwrap() < 10, "{j}");
        assert!(j.get("rtt_ms").is_some(), "{j}");
        assert_eq!(j["e2e"], "AEAD_AES_128_GCM", "{j}");
        assert_eq!(j["peer_key_changed"], false, "a first call: {j}");
    }
    // Both sides show the same six digits.
    let sas = ja["sas"].as_str().unwrap();
    assert_eq!(jb["sas"], sas);
    assert!(
        sas.len() == 7 && sas.chars().enumerate().all(|(i, c)| (i == 3) == (c == ' ')),
        "{sas}"
    );
    let duration = ja["duration_s"].as_f64().unwrap();
    assert!((3.5..6.0).contains(&duration), "{ja}");
    // What one sent, the other received (give or take the last packets in flight).
    for (from, to) in [(&ja, &jb), (&jb, &ja)] {
        let sent = from["rtp"]["sent"].as_u64().unwrap();
        let received = to["rtp"]["received"].as_u64().unwrap();
        assert!(sent >= 150, "4 s of 20 ms frames: {from}");
        assert!(
            received + 10 >= sent && received <= sent,
            "sent {sent}, received {received}"
        );
    }
    let (fa, fb) = (alice.hears(&bob), bob.hears(&alice));
    assert!(fa > 0.8, "alice hears bob's tone in {fa:.2} of the call");
    assert!(fb > 0.8, "bob hears alice's tone in {fb:.2} of the call");

    // The key was created on first use and is kept.
    let saved = std::fs::read_to_string(&alice.config).unwrap();
    assert!(saved.contains("key = "), "{saved}");
}

#[test]
fn answer_lets_a_call_ring_as_long_as_asked() {
    let (_server, addr, dir) = setup("ring");
    let (alice, bob) = talkers(&dir);
    let mut answer = bob.answer(Place::Local, &addr, &["--calls", "1", "--ring", "2"]);
    let caller = alice.call(Place::Local, &addr, &bob.name, 1.0);
    answer.expect_log("incoming call: ringing", Duration::from_secs(10));
    let a = caller.finish(Duration::from_secs(30));
    assert!(a.status.success(), "call failed: {a:#?}");
    let b = answer.finish(Duration::from_secs(15));
    assert!(b.status.success(), "answer failed: {b:#?}");
    // The caller heard it ring for the 2 s before the first audio came.
    let setup = a.one_json()["setup_ms"].as_u64().unwrap();
    assert!((2000..6000).contains(&setup), "setup {setup} ms");

    let (ok, _, err) = pinhole(&["answer", "--ring", "forever"]);
    assert!(!ok);
    assert!(
        err.contains("not a number of seconds from 0 to 300"),
        "{err}"
    );
}

#[test]
fn a_call_to_echo_returns_the_callers_own_tone() {
    let (_server, addr, dir) = setup("echo");
    let carol = Party::tone(&dir, "carol", 520.0);
    let out = call(&carol, &addr, "echo", 3.0);
    assert!(out.status.success(), "{out:#?}");
    let j = out.one_json();
    assert_eq!(j["peer"], "echo");
    assert_eq!(j["path"], "relay");
    assert!(j["rtp"]["received"].as_u64().unwrap() > 100, "{j}");
    assert_eq!(j["e2e"], "AEAD_AES_128_GCM", "{j}");
    assert!(j.get("sas").is_none(), "nobody to compare a code with: {j}");
    let f = carol.hears(&carol);
    assert!(
        f > 0.7,
        "the echo carries our own tone in {f:.2} of the call"
    );
}

/// `pinhole call echo` with `--frame-ms MS`: the report's latency, and its parts.
fn echo_latency(frame_ms: u32) -> serde_json::Value {
    let (_server, addr, dir) = setup("echo-latency");
    let dave = Party::tone(&dir, "dave", 500.0);
    let mut args = dave.call_args(&addr, "echo", 3.0);
    args.extend(["--frame-ms".to_owned(), frame_ms.to_string()]);
    let out = Headless::spawn({
        let mut cmd = pinhole_tests::command("pinhole");
        cmd.args(&args);
        cmd
    })
    .finish(Duration::from_secs(30));
    assert!(out.status.success(), "{out:#?}");
    let j = out.one_json();
    println!("{frame_ms} ms frames: {j}");
    j
}

#[test]
fn a_call_to_echo_reports_how_long_the_voice_took_to_come_back() {
    for frame_ms in [10, 20] {
        let j = echo_latency(frame_ms);
        let total = j["echo_latency_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("no echo_latency_ms: {j}"));
        let parts = &j["echo_latency"];
        // A tone and a WAV have no device buffers: all of it is the path, measured.
        assert_eq!(parts["capture_ms"], 0.0, "{j}");
        assert_eq!(parts["playback_ms"], 0.0, "{j}");
        assert_eq!(parts["path_ms"].as_f64(), Some(total), "{j}");
        assert!(parts["correlation"].as_f64().unwrap() >= 0.8, "{j}");
        // At least the frame it is packed in; on loopback the rest is the relay's round trip
        // and the jitter buffer (which may hold a few hundred ms on a loaded machine).
        let frame = f64::from(frame_ms);
        assert!(
            (frame..frame + 400.0).contains(&total),
            "{frame_ms} ms frames: {total} ms: {j}"
        );
        // A tone is sent as it is unless asked.
        assert_eq!(j["processing"]["echo_cancellation"], false, "{j}");
        assert!(j.get("erle_db").is_none(), "{j}");
    }
}

#[test]
fn a_silent_call_to_echo_is_dtx_with_comfort_noise_and_no_loss() {
    let (_server, addr, dir) = setup("dtx");
    let hal = Party::silent(&dir, "hal");
    let out = call(&hal, &addr, "echo", 3.0);
    assert!(out.status.success(), "{out:#?}");
    let j = out.one_json();
    println!("{j}");
    let rtp = &j["rtp"];
    let n = |k: &str| rtp[k].as_u64().unwrap_or_else(|| panic!("no rtp.{k}: {j}"));
    // 3 s of 20 ms frames: nearly all of them silence, not sent.
    assert!(n("dtx_frames") > 100, "{j}");
    assert!(n("sent") < 50, "{j}");
    assert!(n("comfort_noise_frames") > 100, "{j}");
    assert_eq!(n("lost"), 0, "DTX gaps are not losses: {j}");
}

#[test]
fn processing_on_for_a_tone_when_asked_is_in_the_report() {
    let (_server, addr, dir) = setup("processing");
    let erin = Party::tone(&dir, "erin", 440.0);
    let mut args = erin.call_args(&addr, "echo", 3.0);
    args.extend(["--processing", "on", "--no-gain-control"].map(str::to_owned));
    let out = Headless::spawn({
        let mut cmd = pinhole_tests::command("pinhole");
        cmd.args(&args);
        cmd
    })
    .finish(Duration::from_secs(30));
    assert!(out.status.success(), "{out:#?}");
    let j = out.one_json();
    println!("{j}");
    let p = &j["processing"];
    assert_eq!(p["echo_cancellation"], true, "{j}");
    assert_eq!(p["noise_suppression"], true, "{j}");
    assert_eq!(p["high_pass"], true, "{j}");
    assert_eq!(p["gain_control"], false, "{j}");
    // A bad value is refused in words.
    let (ok, _, err) = pinhole(&["call", "echo", "--duration", "1", "--processing", "maybe"]);
    assert!(!ok && err.contains("--processing"), "{err}");
    let (ok, _, err) = pinhole(&[
        "call",
        "echo",
        "--duration",
        "1",
        "--server",
        "127.0.0.1:9",
        "--user",
        "x",
        "--frame-ms",
        "30",
        "--input",
        "silence",
        "--output",
        "null",
        "--config",
        &dir.join("x.toml").display().to_string(),
    ]);
    assert!(!ok && err.contains("--frame-ms 30"), "{err}");
}

#[test]
fn failures_say_why_and_exit_non_zero() {
    let (_server, addr, dir) = setup("failures");
    let alice = Party::silent(&dir, "alice");

    // Nobody by that name.
    let out = call(&alice, &addr, "nobody", 1.0);
    assert!(reason(&out).contains("offline"), "{out:#?}");

    // The name is taken by another key (dave answers with his key; a second config, a new
    // key, claims "dave").
    let dave = Party::silent(&dir, "dave");
    let _answer = dave.answer(Place::Local, &addr, &[]);
    let mallory = Party {
        name: dave.name.clone(),
        config: dir.join("mallory.toml"),
        ..alice.clone()
    };
    let out = call(&mallory, &addr, &alice.name, 1.0);
    assert!(reason(&out).contains("name_taken"), "{out:#?}");
    let reasons = out.log.iter().filter(|l| l.starts_with("pinhole:")).count();
    assert_eq!(reasons, 1, "one line of reason: {out:#?}");

    // No server there.
    let started = Instant::now();
    let out = call(&alice, "127.0.0.1:9", "bob", 1.0);
    assert!(reason(&out).contains("server unreachable"), "{out:#?}");
    assert!(!reason(&out).contains("os error"), "plain words: {out:#?}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // The UDP port the settings name is held by another program.
    let holder = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let carol = Party {
        name: format!("{}-carol", alice.name),
        config: dir.join("carol.toml"),
        ..alice.clone()
    };
    std::fs::write(
        &carol.config,
        format!("name = \"{}\"\n[advanced]\nudp_port = {port}\n", carol.name),
    )
    .unwrap();
    let out = call(&carol, &addr, &alice.name, 1.0);
    assert!(!out.status.success(), "{out:#?}");
    let said = out.log_text();
    assert!(
        said.contains(&format!("cannot use UDP port {port} for calls"))
            && said.contains("already in use"),
        "{out:#?}"
    );
    assert!(!said.contains("os error"), "plain words: {out:#?}");
    drop(holder);

    // Bad flags.
    let trumpet = Party {
        input: "trumpet".into(),
        ..alice.clone()
    };
    let out = call(&trumpet, &addr, "bob", 1.0);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(out.log_text().contains("trumpet"), "{out:#?}");
    // A call of no time, a negative one (not taken for a flag), more than a day.
    for secs in [0.0, -3.0, 90_000.0] {
        let out = call(&alice, &addr, "bob", secs);
        assert_eq!(out.status.code(), Some(2), "{out:#?}");
        assert!(out.log_text().contains("must last more than 0"), "{out:#?}");
    }
    // A WAV file's name without `wav:` says how to write it.
    let bare = Party {
        output: "recording.wav".into(),
        ..alice.clone()
    };
    let out = call(&bare, &addr, "bob", 1.0);
    assert_eq!(out.status.code(), Some(2), "{out:#?}");
    assert!(
        out.log_text().contains("did you mean wav:recording.wav?"),
        "{out:#?}"
    );
}

#[test]
fn a_rejected_call_says_so() {
    use pinhole::engine::{Command as EngineCommand, Engine, EngineConfig, Event};
    let (_server, addr, dir) = setup("reject");
    // erin rejects every call (an engine in this process).
    let mut config = EngineConfig::new(
        addr.clone(),
        "erin".into(),
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
    );
    config.input = media::audio::SourceSpec::Silence;
    config.output = media::audio::SinkSpec::Null;
    let erin = Engine::start(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        erin.next_event(Duration::from_millis(100)),
        Some(Event::Registration(
            pinhole::engine::Registration::Online { .. }
        ))
    ) {
        assert!(Instant::now() < deadline, "erin never registered");
    }
    let rejecter = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Event::Incoming { .. }) = erin.next_event(Duration::from_millis(100)) {
                erin.send(EngineCommand::Reject);
                return true;
            }
        }
        false
    });
    let out = call(&Party::silent(&dir, "alice"), &addr, "erin", 1.0);
    assert!(rejecter.join().unwrap(), "erin saw the call");
    assert!(reason(&out).contains("rejected"), "{out:#?}");
}

#[test]
fn sigterm_hangs_up_cleanly() {
    let (_server, addr, dir) = setup("sigterm");
    let (alice, bob) = talkers(&dir);
    let (caller, mut answer) = call_in_progress(&alice, &bob, &addr);
    std::thread::sleep(Duration::from_secs(2));
    caller.terminate();
    let a = caller.finish(Duration::from_secs(10));
    assert!(a.status.success(), "{a:#?}");
    let ja = a.one_json();
    assert!(ja["duration_s"].as_f64().unwrap() < 10.0, "{ja}");
    // The WAV is finalised: it reads, and carries bob's tone.
    assert!(alice.hears(&bob) > 0.7);
    // bob was told: its call ended and it reported it; then it is stopped the same way.
    assert!(
        answer.wait_json(Duration::from_secs(10)).is_some(),
        "{answer:#?}"
    );
    answer.terminate();
    let b = answer.finish(Duration::from_secs(10));
    assert!(b.status.success(), "{b:#?}");
    assert_eq!(b.one_json()["peer"], alice.name.as_str());
    assert!(bob.hears(&alice) > 0.7);
}

#[test]
fn the_survivor_of_a_killed_peer_ends_the_call_with_a_reason() {
    let (_server, addr, dir) = setup("killed");
    let (alice, bob) = (Party::silent(&dir, "alice"), Party::silent(&dir, "bob"));
    let (caller, mut answer) = call_in_progress(&alice, &bob, &addr);
    std::thread::sleep(Duration::from_secs(1));
    answer.kill();
    let a = caller.finish(Duration::from_secs(20));
    assert!(
        !a.status.success(),
        "a lost peer is not a normal end: {a:#?}"
    );
    assert!(a.log_text().contains("lost"), "{a:#?}");
    // The call had connected: its report is printed.
    a.one_json();
}

#[test]
fn answer_registers_again_after_a_server_restart() {
    let (mut server, addr, dir) = setup("restart");
    let (alice, bob) = (Party::silent(&dir, "alice"), Party::silent(&dir, "bob"));
    let mut answer = bob.answer(Place::Local, &addr, &["--calls", "1"]);
    let mark = answer.log.len();
    // A new server on the same address (the name table is lost): bob registers again.
    server.restart();
    let again = answer.wait_log_after("headless: registered", mark, Duration::from_secs(20));
    assert!(again, "bob never registered again: {:#?}", answer.log);
    let a = call(&alice, &addr, &bob.name, 1.0);
    assert!(a.status.success(), "{a:#?}");
    let b = answer.finish(Duration::from_secs(10));
    assert!(b.status.success(), "{b:#?}");
    assert_eq!(b.one_json()["peer"], alice.name.as_str());
}

#[test]
fn a_peer_with_a_new_key_is_flagged_until_trusted() {
    let (_first, addr, dir) = setup("newkey");
    let (alice, bob) = (Party::silent(&dir, "alice"), Party::silent(&dir, "bob"));
    let talk = |callee: &Party, server: &str| {
        let answer = callee.answer(Place::Local, server, &["--calls", "1"]);
        let a = call(&alice, server, &bob.name, 1.0);
        assert!(a.status.success(), "{a:#?}");
        assert!(answer.finish(Duration::from_secs(15)).status.success());
        a
    };
    // The first call remembers bob's key.
    assert_eq!(talk(&bob, &addr).one_json()["peer_key_changed"], false);
    // "bob" with another key, on another server (which gave the name to whoever came first).
    let second = Rendezvous::start("127.0.0.1:0");
    let other = second.addr.to_string();
    let impostor = Party {
        config: dir.join("bob-new-key.toml"),
        ..bob.clone()
    };
    let a = talk(&impostor, &other);
    let j = a.one_json();
    assert_eq!(j["peer_key_changed"], true, "{j}");
    let warning = a
        .log
        .iter()
        .find(|l| l.contains("WARNING"))
        .unwrap_or_else(|| panic!("{a:#?}"));
    assert!(warning.contains(&format!("{}'s key changed since your last call", bob.name)));
    assert!(
        warning.contains(j["sas"].as_str().unwrap()),
        "the code to compare: {warning}"
    );
    // Still flagged on the next call: a changed key is not taken silently.
    assert_eq!(talk(&impostor, &other).one_json()["peer_key_changed"], true);

    // The warning says how to accept the new key; after that the key is the known one.
    let command = warning.split('`').nth(1).unwrap();
    let words: Vec<&str> = command.split(' ').collect();
    assert_eq!(
        words[..3],
        ["pinhole", "trust-contact", bob.name.as_str()],
        "{command}"
    );
    let config = alice.config.display().to_string();
    let (ok, stdout, stderr) =
        pinhole(&["trust-contact", &bob.name, words[3], "--config", &config]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("trusting key"), "{stdout}");
    assert_eq!(
        talk(&impostor, &other).one_json()["peer_key_changed"],
        false
    );
}

#[test]
fn a_changed_server_certificate_stops_answer_until_trusted() {
    let (server, addr, dir) = setup("certificate");
    let bob = Party::silent(&dir, "bob");
    let real = server.fingerprint().to_string();
    let wrong = format!("sha256:{}", "00".repeat(32));
    let answer_once = |extra: &[&str]| {
        let mut cmd = pinhole_tests::command("pinhole");
        cmd.args(bob.answer_args(&addr)).args(extra);
        Headless::spawn(cmd).finish(Duration::from_secs(15))
    };
    let refused = |out: &HeadlessOutput| {
        assert_eq!(out.status.code(), Some(1), "{out:#?}");
        let said = out.log_text();
        for part in [
            format!("the certificate of {addr} changed"),
            format!("trusted {wrong}, presented {real}"),
            format!("pinhole trust-server {addr} {real}"),
        ] {
            assert!(said.contains(&part), "{part:?} in {said}");
        }
    };
    // Pinned on the command line.
    refused(&answer_once(&["--server-fingerprint", &wrong]));
    // Remembered in known-servers.txt (beside the settings) from an earlier first use.
    let known = dir.join("known-servers.txt");
    std::fs::write(&known, format!("{addr} {wrong}\n")).unwrap();
    refused(&answer_once(&[]));

    // pinhole trust-server with the new fingerprint accepts it.
    let config = bob.config.display().to_string();
    let (ok, stdout, stderr) = pinhole(&["trust-server", &addr, &real, "--config", &config]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&real), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        format!("{addr} {real}\n")
    );
    let answer = bob.answer(Place::Local, &addr, &[]);
    answer.terminate();
    let out = answer.finish(Duration::from_secs(10));
    assert!(out.status.success(), "{out:#?}");

    // Without a fingerprint it forgets: the next connection trusts on first use again.
    let (ok, stdout, _) = pinhole(&["trust-server", &addr, "--config", &config]);
    assert!(ok && stdout.contains("forgot"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&known).unwrap().trim(), "");
    let answer = bob.answer(Place::Local, &addr, &[]);
    answer.terminate();
    let out = answer.finish(Duration::from_secs(10));
    assert!(out.status.success(), "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        format!("{addr} {real}\n"),
        "recorded on first use"
    );
}
