//! `pinhole call` and `pinhole answer`, the real binary, on 127.0.0.1: two clients call each
//! other with different tones and each WAV carries the other's; the JSON lines agree; echo;
//! reject, offline, a taken name, an unreachable server; SIGTERM hangs up cleanly.
//!
//! The server is the real `pinhole-rendezvous` from the target directory (built by `cargo build
//! --workspace --bins`, which the test command runs first).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use media::analysis::{dominant_frequency, rms};
use media::audio::WavSource;
use serde_json::Value;

const RATE: u32 = 48_000;

/// The real server binary, started for one test and killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// Stops the server and starts a new one on the same address (the name table is lost).
    fn restart(self) -> Self {
        let addr: SocketAddr = self.addr().parse().unwrap();
        drop(self);
        // Let the stopped server's threads close the port.
        std::thread::sleep(Duration::from_millis(300));
        Self::start_on(addr)
    }

    fn start_on(listen: SocketAddr) -> Self {
        let bin = rendezvous_bin();
        let mut child = Command::new(bin)
            .args(["--listen", &listen.to_string()])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let addr = listening_addr(&mut child);
        Server { child, addr }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rendezvous_bin() -> PathBuf {
    let pinhole = PathBuf::from(env!("CARGO_BIN_EXE_pinhole"));
    let bin = pinhole.with_file_name("pinhole-rendezvous");
    assert!(
        bin.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// Reads the server's log until "listening udp=... tcp=..." gives the address.
fn listening_addr(child: &mut Child) -> SocketAddr {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("tcp=").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    addr.trim_matches(|c: char| c == '"' || c == ',')
        .parse()
        .unwrap()
}

/// `pinhole SUBCOMMAND --config CONFIG`, logging at info.
fn pinhole(config: &Path, subcommand: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pinhole"));
    c.env("RUST_LOG", "warn,pinhole=info")
        .env_remove("PINHOLE_CONFIG")
        .arg(subcommand)
        .arg("--config")
        .arg(config);
    c
}

/// Waits for the process, at most `secs`; kills it after that (and fails).
fn finish(mut child: Child, secs: u64) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {secs} s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pinhole answer` running, its stderr followed until it says it registered.
struct Answerer {
    /// Taken by `finish`; killed on drop otherwise.
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    log: Vec<String>,
}

/// An answerer a test no longer needs (or one left by a failed assertion) must not outlive it.
impl Drop for Answerer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Answerer {
    fn start(server: &Server, config: &Path, user: &str, extra: &[&str]) -> Self {
        let mut child = pinhole(config, "answer")
            .args(["--server", &server.addr(), "--user", user, "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut a = Answerer {
            child: Some(child),
            stderr: rx,
            log: Vec::new(),
        };
        // The headless line, once name and media socket are both registered.
        a.wait_log("verdict=", 10);
        a
    }

    fn wait_log(&mut self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(needle);
                self.log.push(line);
                if found {
                    return;
                }
            }
        }
        panic!("answer never logged {needle:?}: {:#?}", self.log);
    }

    fn finish(mut self, secs: u64) -> Output {
        finish(self.child.take().expect("answer still running"), secs)
    }
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn tone_fraction(path: &Path, hz: f64) -> f64 {
    let samples = WavSource::read_all(path).unwrap();
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn call_and_answer_exchange_tones_and_report_json() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (wa, wb) = (dir.path().join("alice.wav"), dir.path().join("bob.wav"));
    let bob = Answerer::start(
        &server,
        &dir.path().join("bob.toml"),
        "bob",
        &[
            "--calls",
            "1",
            "--input",
            "tone:660",
            "--output",
            &format!("wav:{}", wb.display()),
        ],
    );
    let alice = pinhole(&dir.path().join("alice.toml"), "call")
        .args(["bob", "--server", &server.addr(), "--user", "alice"])
        .args([
            "--input",
            "tone:440",
            "--output",
            &format!("wav:{}", wa.display()),
        ])
        .args(["--duration", "4", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let a = finish(alice, 30);
    assert!(a.status.success(), "call failed: {}", stderr(&a));
    let b = bob.finish(15);
    assert!(b.status.success(), "answer failed: {}", stderr(&b));

    let ja = json_lines(&a);
    let jb = json_lines(&b);
    assert_eq!(ja.len(), 1, "{ja:?}");
    assert_eq!(jb.len(), 1, "{jb:?}");
    let (ja, jb) = (&ja[0], &jb[0]);
    println!("caller: {ja}\ncallee: {jb}");
    assert_eq!(ja["peer"], "bob");
    assert_eq!(jb["peer"], "alice");
    for j in [ja, jb] {
        assert_eq!(j["path"], "direct", "loopback candidates answer: {j}");
        assert!(j["path_changes"].as_u64().unwrap() >= 1, "{j}");
        assert!(j["setup_ms"].as_u64().is_some(), "{j}");
        assert!(j["rtp"]["jitter_ms"].is_number(), "{j}");
        assert!(j["rtp"]["lost"].as_u64().unwrap() < 10, "{j}");
        assert!(j.get("rtt_ms").is_some(), "{j}");
    }
    let duration = ja["duration_s"].as_f64().unwrap();
    assert!((3.5..6.0).contains(&duration), "{ja}");
    // What one sent, the other received (give or take the last packets in flight).
    let sent_a = ja["rtp"]["sent"].as_u64().unwrap();
    let recv_b = jb["rtp"]["received"].as_u64().unwrap();
    assert!(sent_a >= 150, "4 s of 20 ms frames: {ja}");
    assert!(
        recv_b + 10 >= sent_a && recv_b <= sent_a,
        "alice sent {sent_a}, bob got {recv_b}"
    );
    let sent_b = jb["rtp"]["sent"].as_u64().unwrap();
    let recv_a = ja["rtp"]["received"].as_u64().unwrap();
    assert!(
        recv_a + 10 >= sent_b && recv_a <= sent_b,
        "bob sent {sent_b}, alice got {recv_a}"
    );

    let fa = tone_fraction(&wa, 660.0);
    let fb = tone_fraction(&wb, 440.0);
    assert!(fa > 0.8, "alice hears bob's 660 Hz in {fa:.2} of the call");
    assert!(fb > 0.8, "bob hears alice's 440 Hz in {fb:.2} of the call");

    // The key was created on first use and is kept.
    let saved = std::fs::read_to_string(dir.path().join("alice.toml")).unwrap();
    assert!(saved.contains("key = "), "{saved}");
}

#[test]
fn a_call_to_echo_returns_the_callers_own_tone() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("echo.wav");
    let out = pinhole(&dir.path().join("c.toml"), "call")
        .args(["echo", "--server", &server.addr(), "--user", "carol"])
        .args([
            "--input",
            "tone:520",
            "--output",
            &format!("wav:{}", w.display()),
        ])
        .args(["--duration", "3", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(out, 30);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = &json_lines(&out)[0];
    assert_eq!(j["peer"], "echo");
    assert_eq!(j["path"], "relay");
    assert!(j["rtp"]["received"].as_u64().unwrap() > 100, "{j}");
    let f = tone_fraction(&w, 520.0);
    assert!(f > 0.7, "the echo carries our 520 Hz in {f:.2} of the call");
}

#[test]
fn failures_say_why_and_exit_non_zero() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let call = |config: &str, user: &str, peer: &str, server: &str| {
        let child = pinhole(&dir.path().join(config), "call")
            .args([peer, "--server", server, "--user", user])
            .args([
                "--input",
                "silence",
                "--output",
                "null",
                "--duration",
                "1",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        finish(child, 30)
    };

    // Nobody by that name.
    let out = call("a.toml", "alice", "nobody", &server.addr());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("offline"), "{}", stderr(&out));
    assert!(
        out.stdout.is_empty(),
        "no report for a call that never connected"
    );

    // The name is taken by another key (dave answers with his key; a second config, a new
    // key, claims "dave").
    let dave = Answerer::start(
        &server,
        &dir.path().join("dave.toml"),
        "dave",
        &["--input", "silence", "--output", "null"],
    );
    let out = call("mallory.toml", "dave", "alice", &server.addr());
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("name_taken"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("pinhole:")).count(),
        1,
        "one line of reason: {err}"
    );
    drop(dave);

    // No server there.
    let started = Instant::now();
    let out = call("a.toml", "alice", "bob", "127.0.0.1:9");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("server unreachable"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // Bad flags.
    let out = pinhole(&dir.path().join("a.toml"), "call")
        .args(["bob", "--server", "127.0.0.1:3478", "--user", "alice"])
        .args(["--input", "trumpet", "--output", "null", "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("trumpet"), "{}", stderr(&out));
}

#[test]
fn a_rejected_call_says_so() {
    use pinhole::engine::{Command as EngineCommand, Engine, EngineConfig, Event};
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // erin rejects every call (an engine in this process).
    let mut config = EngineConfig::new(
        server.addr(),
        "erin".into(),
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
    );
    config.input = media::audio::SourceSpec::Silence;
    config.output = media::audio::SinkSpec::Null;
    let erin = Engine::start(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        erin.next_event(Duration::from_millis(100)),
        Some(Event::Registered { .. })
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
    let out = pinhole(&dir.path().join("a.toml"), "call")
        .args(["erin", "--server", &server.addr(), "--user", "alice"])
        .args(["--input", "silence", "--output", "null", "--duration", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(out, 30);
    assert!(rejecter.join().unwrap(), "erin saw the call");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rejected"), "{}", stderr(&out));
}

#[test]
fn sigterm_hangs_up_cleanly() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (wa, wb) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let mut bob = Answerer::start(
        &server,
        &dir.path().join("bob.toml"),
        "bob",
        &[
            "--input",
            "tone:660",
            "--output",
            &format!("wav:{}", wb.display()),
        ],
    );
    let alice = pinhole(&dir.path().join("alice.toml"), "call")
        .args(["bob", "--server", &server.addr(), "--user", "alice"])
        .args([
            "--input",
            "tone:440",
            "--output",
            &format!("wav:{}", wa.display()),
        ])
        .args(["--duration", "60", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    bob.wait_log("connected", 15);
    std::thread::sleep(Duration::from_secs(2));
    let kill = |pid: u32| {
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill(alice.id());
    let a = finish(alice, 10);
    assert!(a.status.success(), "{}", stderr(&a));
    let ja = &json_lines(&a)[0];
    assert!(ja["duration_s"].as_f64().unwrap() < 10.0, "{ja}");
    // The WAV is finalised: it reads, and carries bob's tone.
    assert!(tone_fraction(&wa, 660.0) > 0.7);
    // bob was told: its call ended and it reported it; then it is stopped the same way.
    bob.wait_log("call ended", 10);
    kill(bob.child.as_ref().unwrap().id());
    let b = bob.finish(10);
    assert!(b.status.success(), "{}", stderr(&b));
    let jb = json_lines(&b);
    assert_eq!(jb.len(), 1, "{jb:?}");
    assert_eq!(jb[0]["peer"], "alice");
    assert!(tone_fraction(&wb, 440.0) > 0.7);
}

#[test]
fn the_survivor_of_a_killed_peer_ends_the_call_with_a_reason() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Answerer::start(
        &server,
        &dir.path().join("bob.toml"),
        "bob",
        &["--input", "tone:660", "--output", "null"],
    );
    let alice = pinhole(&dir.path().join("alice.toml"), "call")
        .args(["bob", "--server", &server.addr(), "--user", "alice"])
        .args(["--input", "tone:440", "--output", "null"])
        .args(["--duration", "60", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    bob.wait_log("connected", 15);
    std::thread::sleep(Duration::from_secs(1));
    let child = bob.child.as_mut().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let killed = Instant::now();
    let a = finish(alice, 20);
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "ended {:?} after the peer died",
        killed.elapsed()
    );
    assert!(!a.status.success(), "a lost peer is not a normal end");
    let err = stderr(&a);
    assert!(err.contains("lost"), "{err}");
    let ja = json_lines(&a);
    assert_eq!(
        ja.len(),
        1,
        "the call had connected: its report is printed: {ja:?}"
    );
}

#[test]
fn answer_registers_again_after_a_server_restart() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut bob = Answerer::start(
        &server,
        &dir.path().join("bob.toml"),
        "bob",
        &["--calls", "1", "--input", "tone:660", "--output", "null"],
    );
    let server = server.restart();
    bob.wait_log("connecting again", 10);
    bob.wait_log("verdict=", 15);
    let alice = pinhole(&dir.path().join("alice.toml"), "call")
        .args(["bob", "--server", &server.addr(), "--user", "alice"])
        .args([
            "--input",
            "tone:440",
            "--output",
            "null",
            "--duration",
            "1",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let a = finish(alice, 30);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = bob.finish(10);
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(json_lines(&b)[0]["peer"], "alice");
}
