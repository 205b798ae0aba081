//! Call states of `pinhole call` / `pinhole answer` (the real binaries) with `pinhole-rendezvous`
//! on 127.0.0.1 that app/tests/headless_calls.rs does not cover: busy, a caller that cancels
//! while ringing, a server restarted under registered clients (they register again by
//! themselves and take calls), and a whole call after it with the audio checked both ways.
//! (headless_calls.rs has: tones both ways, echo, offline, name taken, unreachable server,
//! reject, SIGTERM, a peer killed mid-call.) A call nobody answers ends after the server's 30 s
//! ring timeout (`no_answer`): too long for a test here; traversal's own tests cover it with a
//! short timer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use media::analysis::{dominant_frequency, rms};
use media::audio::WavSource;
use pinhole_tests::{
    Headless, Rendezvous, TempDir, answer_args, binary, call_args, free_port, unique_name,
};
use serde_json::{Value, json};
use traversal::calls::registration_message;
use traversal::control::{self, FrameDecoder, PROTOCOL_VERSION};
use traversal::server::{hex, unhex};
use traversal::wire::{self, Flags, UdpMessage};

const RATE: u32 = 48_000;

fn pinhole(args: Vec<String>) -> Headless {
    let mut cmd = std::process::Command::new(binary("pinhole"));
    cmd.args(args);
    Headless::spawn(cmd)
}

/// Fraction of the 100 ms windows after the first half second whose dominant frequency is
/// `hz` (within 10 Hz) and that are not silent.
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

fn sigterm(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// A callee scripted with the raw control protocol (docs/calls.md): it registers a name and
/// lets incoming calls ring without answering.
struct Scripted {
    tcp: TcpStream,
    decoder: FrameDecoder,
    _udp: UdpSocket,
}

impl Scripted {
    fn register(server: SocketAddr, name: &str) -> Self {
        let tcp = TcpStream::connect(server).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let access = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut s = Self {
            tcp,
            decoder: FrameDecoder::new(),
            _udp: udp,
        };
        s.send(&json!({"type": "hello", "version": PROTOCOL_VERSION, "access": access}));
        let welcome = s.expect("welcome", Duration::from_secs(5));
        let index = u32::try_from(welcome["user_index"].as_u64().unwrap()).unwrap();
        let key = unhex(welcome["key"].as_str().unwrap()).unwrap();
        let challenge = unhex(welcome["challenge"].as_str().unwrap()).unwrap();
        // The authenticated keepalive that registers the media socket's mapping.
        let mask = wire::sequence_mask(&key);
        let mut answered = false;
        for sequence in 1..50u64 {
            let request = UdpMessage::Request {
                transaction_id: wire::sequenced_tid(mask, sequence, [1, 2, 3, 4]),
                user_index: index,
                flags: Flags::default(),
            }
            .encode(&key);
            s._udp.send_to(&request, server).unwrap();
            let mut buf = [0u8; 1500];
            if let Ok((n, _)) = s._udp.recv_from(&mut buf)
                && let Ok(UdpMessage::Answer { .. }) =
                    UdpMessage::decode(&buf[..n], |u| (u == index).then_some(key.as_slice()))
            {
                answered = true;
                break;
            }
        }
        assert!(answered, "no answer to the keepalive");
        let signing = SigningKey::from_bytes(&[7; 32]);
        let signature = signing.sign(&registration_message(name, &challenge));
        s.send(&json!({
            "type": "register",
            "name": name,
            "public_key": hex(signing.verifying_key().as_bytes()),
            "signature": hex(&signature.to_bytes()),
        }));
        s.expect("registered", Duration::from_secs(5));
        s
    }

    fn send(&mut self, message: &Value) {
        self.tcp.write_all(&control::encode(message)).unwrap();
    }

    fn expect(&mut self, kind: &str, wait: Duration) -> Value {
        let end = Instant::now() + wait;
        loop {
            while let Some(m) = self.decoder.next_message::<Value>().unwrap() {
                if m["type"] == kind {
                    return m;
                }
            }
            assert!(Instant::now() < end, "no {kind} within {wait:?}");
            let mut buf = [0u8; 4096];
            match self.tcp.read(&mut buf) {
                Ok(0) => panic!("the server closed the control connection"),
                Ok(n) => self.decoder.push(&buf[..n]).unwrap(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[test]
fn a_call_to_someone_in_a_call_is_busy() {
    let server = Rendezvous::start("127.0.0.1:0");
    let addr = server.addr.to_string();
    let dir = TempDir::new("busy");
    let (alice, bob, carol) = (unique_name("al"), unique_name("bo"), unique_name("ca"));
    let mut answer = pinhole(answer_args(
        &dir.join("a.toml"),
        &addr,
        &alice,
        "tone:440",
        "null",
    ));
    answer.expect_log("headless: registered", Duration::from_secs(10));
    let mut first = pinhole(call_args(
        &dir.join("b.toml"),
        &addr,
        &bob,
        &alice,
        "tone:660",
        "null",
        5.0,
    ));
    first.expect_log("connected", Duration::from_secs(10));
    let second = pinhole(call_args(
        &dir.join("c.toml"),
        &addr,
        &carol,
        &alice,
        "tone:550",
        "null",
        2.0,
    ))
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
    assert_eq!(json["peer"], alice.as_str());
    assert!(json["rtp"]["received"].as_u64().unwrap() > 150, "{json}");
    sigterm(answer.pid());
    let answer = answer.finish(Duration::from_secs(10));
    assert_eq!(
        answer.json().len(),
        1,
        "alice answered one call: {answer:#?}"
    );
}

#[test]
fn a_caller_that_hangs_up_while_ringing_cancels_the_call() {
    let server = Rendezvous::start("127.0.0.1:0");
    let addr = server.addr.to_string();
    let dir = TempDir::new("cancel");
    let (dave, erin) = (unique_name("da"), unique_name("er"));
    let mut callee = Scripted::register(server.addr, &dave);
    let mut caller = pinhole(call_args(
        &dir.join("e.toml"),
        &addr,
        &erin,
        &dave,
        "tone:660",
        "null",
        5.0,
    ));
    let incoming = callee.expect("incoming", Duration::from_secs(10));
    assert_eq!(incoming["from"], erin.as_str());
    let call_id = incoming["call_id"].clone();
    callee.send(&json!({"type": "ringing", "call_id": call_id}));
    caller.expect_log("ringing", Duration::from_secs(5));
    // erin gives up (Ctrl-C): the server tells dave the call was cancelled.
    sigterm(caller.pid());
    let out = caller.finish(Duration::from_secs(5));
    assert!(
        out.stdout.trim().is_empty(),
        "never connected: no report: {out:#?}"
    );
    let ended = callee.expect("ended", Duration::from_secs(5));
    assert_eq!(ended["call_id"], call_id);
    assert_eq!(ended["reason"], "cancelled", "{ended}");
}

#[test]
fn clients_register_again_after_a_server_restart_and_call() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dir = TempDir::new("restart");
    let names = dir.join("names.json");
    let start = || {
        let mut cmd = std::process::Command::new(binary("pinhole-rendezvous"));
        cmd.arg("--names-file").arg(&names);
        Rendezvous::start_command(cmd, &listen)
    };
    let server = start();
    let (frank, grace) = (unique_name("fr"), unique_name("gr"));
    let wav_f = dir.join("frank.wav");
    let wav_g = dir.join("grace.wav");
    let mut answer = pinhole(answer_args(
        &dir.join("f.toml"),
        &listen,
        &frank,
        "tone:440",
        &format!("wav:{}", wav_f.display()),
    ));
    answer.expect_log("headless: registered", Duration::from_secs(10));
    let before = answer.log.len();
    drop(server);
    // The engine notices and retries with backoff (at most 5 s apart).
    std::thread::sleep(Duration::from_millis(500));
    let server = start();
    let again = answer.wait_log_after("headless: registered", before, Duration::from_secs(20));
    assert!(again, "frank never registered again: {:#?}", answer.log);
    let call = pinhole(call_args(
        &dir.join("g.toml"),
        &listen,
        &grace,
        &frank,
        "tone:660",
        &format!("wav:{}", wav_g.display()),
        4.0,
    ))
    .finish(Duration::from_secs(25));
    assert!(call.status.success(), "{call:#?}");
    let json = call.one_json();
    assert_eq!(json["peer"], frank.as_str());
    sigterm(answer.pid());
    let answer = answer.finish(Duration::from_secs(10));
    let reports = answer.json();
    assert_eq!(reports.len(), 1, "{answer:#?}");
    assert_eq!(reports[0]["peer"], grace.as_str());
    let grace_hears = tone_fraction(&wav_g, 440.0);
    let frank_hears = tone_fraction(&wav_f, 660.0);
    assert!(grace_hears >= 0.8, "grace hears frank in {grace_hears:.2}");
    assert!(frank_hears >= 0.7, "frank hears grace in {frank_hears:.2}");
    drop(server);
}
