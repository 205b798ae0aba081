//! Calls through the real `pinhole-rendezvous` binary on loopback: two scripted clients (raw
//! control frames with the JSON of docs/calls.md, authenticated UDP keepalives) register names,
//! call, connect, and exchange relay frames both ways; the echo service; a restart with
//! `--names-file` keeps a name bound to its key; a dropped control connection ends the call.
//! Control connections are TLS pinned to the server's certificate; a plaintext client gets
//! nothing; a restart with the same state directory keeps the certificate and the names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pinhole_tests::scripted::{Client, connect_tls};
use pinhole_tests::{Place, Rendezvous};
use serde_json::{Value, json};
use traversal::channel;
use traversal::control::{self, FrameDecoder, PROTOCOL_VERSION};
use traversal::server::{hex, unhex};
use traversal::tls::Fingerprint;

/// The real server on loopback with `extra` flags, from its ready line; killed when dropped.
fn start_server(extra: &[&str]) -> Rendezvous {
    Rendezvous::start_at(Place::Local, "127.0.0.1:0", extra)
}

/// A scripted client ([`Client`]: TLS pinned to the server, hello, keepalive) with the
/// relay's helpers.
struct Peer {
    client: Client,
}

const WAIT: Duration = Duration::from_secs(5);

impl Peer {
    /// Connects, says hello, and registers the media socket's mapping (no name yet).
    fn connect(rendezvous: &Rendezvous) -> Peer {
        Peer {
            client: Client::connect(rendezvous).unwrap(),
        }
    }

    /// Sends `Register` for `name`, signed with `key`, and returns the answer.
    fn register(&mut self, name: &str, key: &SigningKey) -> Value {
        self.client.register_answer(name, key).unwrap()
    }

    fn send(&mut self, message: &Value) {
        self.client.send(message).unwrap();
    }

    fn expect(&mut self, kind: &str) -> Value {
        self.client.next_where(WAIT, |m| m["type"] == kind).unwrap()
    }

    /// A relay frame on `channel` with this party's relay `token`.
    fn relay_send(&self, channel: u16, token: Token, payload: &[u8]) {
        let frame = relay_frame(channel, token, payload);
        self.client.udp.send_to(&frame, self.client.server).unwrap();
    }

    /// The next relay frame within `wait`, from the server.
    fn relay_recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let end = Instant::now() + wait;
        while Instant::now() < end {
            let mut buf = [0u8; 1500];
            let Ok((n, from)) = self.client.udp.recv_from(&mut buf) else {
                continue;
            };
            if from == self.client.server
                && channel::classify(&buf[..n]) == channel::Kind::ChannelData
            {
                return Some(buf[..n].to_vec());
            }
        }
        None
    }

    fn mapped(&self) -> SocketAddr {
        self.client.mapped().unwrap()
    }

    /// Waits for `ended` and returns its call id and reason.
    fn expect_ended(&mut self) -> (u64, String) {
        let ended = self.expect("ended");
        (
            ended["call_id"].as_u64().unwrap(),
            ended["reason"].as_str().unwrap().to_string(),
        )
    }

    /// Whether a relay frame from this client on `channel` with `token` reaches `to` (within
    /// 300 ms).
    fn relays_to(&self, to: &Peer, channel: u16, token: Token) -> bool {
        self.relay_send(channel, token, b"\x80anyone there?");
        to.relay_recv(Duration::from_millis(300)).is_some()
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A party's relay token (the first bytes of each of its relay frames' payload).
type Token = [u8; channel::TOKEN_LEN];

fn relay_frame(channel: u16, token: Token, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    channel::encode_relay_into(channel, token, payload, &mut frame).unwrap();
    frame
}

/// The relay token of a `connected` message.
fn token_of(connected: &Value) -> Token {
    let bytes = unhex(connected["relay_token"].as_str().unwrap()).unwrap();
    Token::try_from(bytes.as_slice()).unwrap()
}

/// Alice calls bob; bob rings and accepts (the server passes the end-to-end key exchange on
/// without looking at it). Returns the channel and alice's and bob's relay tokens.
fn connect_call(alice: &mut Peer, bob: &mut Peer, call_id: u64) -> (u16, Token, Token) {
    let commitment = "ab".repeat(32);
    alice.send(&json!({"type": "call", "call_id": call_id, "to": "bob",
        "candidates": [alice.mapped()], "commitment": commitment}));
    let incoming = bob.expect("incoming");
    assert_eq!(incoming["call_id"], call_id);
    assert_eq!(incoming["from"], "alice");
    assert_eq!(incoming["candidates"], json!([alice.mapped()]));
    assert_eq!(incoming["commitment"], commitment.as_str());
    assert_eq!(incoming["key"], hex(key(1).verifying_key().as_bytes()));
    bob.send(&json!({"type": "ringing", "call_id": call_id}));
    assert_eq!(alice.expect("ringing")["call_id"], call_id);
    let e2e = json!({"ephemeral": "cd".repeat(32), "signature": "ef".repeat(64)});
    bob.send(
        &json!({"type": "accept", "call_id": call_id, "candidates": [bob.mapped()],
        "e2e": e2e}),
    );
    let to_alice = alice.expect("connected");
    let to_bob = bob.expect("connected");
    assert_eq!(to_alice["candidates"], json!([bob.mapped()]));
    assert_eq!(to_bob["candidates"], json!([alice.mapped()]));
    assert_eq!(to_alice["e2e"], e2e, "the callee's half reaches the caller");
    assert_eq!(to_alice["peer_key"], hex(key(2).verifying_key().as_bytes()));
    assert_eq!(to_bob["peer_key"], hex(key(1).verifying_key().as_bytes()));
    assert_eq!(to_alice["channel"], to_bob["channel"]);
    let (alice_token, bob_token) = (token_of(&to_alice), token_of(&to_bob));
    assert_ne!(alice_token, bob_token);
    let channel = u16::try_from(to_alice["channel"].as_u64().unwrap()).unwrap();
    assert!(channel::is_valid_channel(channel));
    (channel, alice_token, bob_token)
}

#[test]
fn two_clients_call_and_the_relay_carries_frames_both_ways() {
    let server = start_server(&[]);
    let mut alice = Peer::connect(&server);
    let mut bob = Peer::connect(&server);
    assert_eq!(alice.register("alice", &key(1))["type"], "registered");
    assert_eq!(bob.register("bob", &key(2))["type"], "registered");
    // A name not online.
    alice.send(
        &json!({"type": "call", "call_id": 1, "to": "nobody", "candidates": [],
        "commitment": "ab".repeat(32)}),
    );
    assert_eq!(alice.expect_ended(), (1, "offline".into()));

    let (channel, alice_token, bob_token) = connect_call(&mut alice, &mut bob, 42);
    // Each frame arrives with the receiver's token in place of the sender's.
    alice.relay_send(channel, alice_token, b"\x80from alice");
    let frame = relay_frame(channel, bob_token, b"\x80from alice");
    assert_eq!(bob.relay_recv(WAIT), Some(frame), "alice to bob");
    bob.relay_send(channel, bob_token, b"\x80from bob");
    let frame = relay_frame(channel, alice_token, b"\x80from bob");
    assert_eq!(alice.relay_recv(WAIT), Some(frame), "bob to alice");
    // Another channel, or another token, is not relayed.
    let other = if channel == 0x4000 { 0x4001 } else { 0x4000 };
    assert!(!alice.relays_to(&bob, other, alice_token));
    assert!(!alice.relays_to(&bob, channel, bob_token));

    // Bob hangs up: alice hears it, and the relay stops.
    bob.send(&json!({"type": "hang_up", "call_id": 42}));
    assert_eq!(alice.expect_ended(), (42, "hung_up".into()));
    assert!(!alice.relays_to(&bob, channel, alice_token));
}

#[test]
fn the_echo_service_returns_relay_frames() {
    let server = start_server(&[]);
    let mut alice = Peer::connect(&server);
    assert_eq!(alice.register("alice", &key(1))["type"], "registered");
    let commitment = "ab".repeat(32);
    alice.send(&json!({"type": "call", "call_id": 9, "to": "echo",
        "candidates": [alice.mapped()], "commitment": commitment}));
    let connected = alice.expect("connected");
    assert_eq!(connected["call_id"], 9);
    assert_eq!(connected["candidates"], json!([]));
    let channel = u16::try_from(connected["channel"].as_u64().unwrap()).unwrap();
    let token = token_of(&connected);
    for i in 0..5u8 {
        let payload = [0x80, i, 1, 2, 3];
        alice.relay_send(channel, token, &payload);
        // Back on the call's channel, with the same media (and the echo's token).
        let back = alice.relay_recv(WAIT).expect("an echoed frame");
        let back = channel::decode_relay(&back).unwrap();
        assert_eq!((back.channel, back.media), (channel, &payload[..]));
    }
    alice.send(&json!({"type": "hang_up", "call_id": 9}));
    // After the hang-up the client is free for another call.
    alice.send(
        &json!({"type": "call", "call_id": 10, "to": "echo", "candidates": [],
        "commitment": commitment}),
    );
    let again = alice.expect("connected");
    assert_eq!(again["call_id"], 10);
}

#[test]
fn a_dropped_control_connection_ends_the_call_with_peer_lost() {
    let server = start_server(&[]);
    let mut alice = Peer::connect(&server);
    let mut bob = Peer::connect(&server);
    alice.register("alice", &key(1));
    bob.register("bob", &key(2));
    let (channel, alice_token, _) = connect_call(&mut alice, &mut bob, 5);
    drop(bob);
    assert_eq!(alice.expect_ended(), (5, "peer_lost".into()));
    assert!(!alice.relays_to(&alice, channel, alice_token));
}

#[test]
fn a_restart_with_a_names_file_keeps_each_name_bound_to_its_key() {
    let dir = std::env::temp_dir().join(format!("pinhole-calls-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("names");
    let file = path.to_str().unwrap();
    let mut server = start_server(&["--names-file", file]);
    let mut alice = Peer::connect(&server);
    assert_eq!(alice.register("alice", &key(1))["type"], "registered");
    let mut thief = Peer::connect(&server);
    let refused = thief.register("alice", &key(9));
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("name_taken"))
    );
    drop(alice);
    drop(thief);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("alice "), "{text}");

    let server = start_server(&["--names-file", file]);
    let mut thief = Peer::connect(&server);
    let refused = thief.register("alice", &key(9));
    assert_eq!(
        refused["code"], "name_taken",
        "the name survived the restart"
    );
    let mut alice = Peer::connect(&server);
    assert_eq!(alice.register("alice", &key(1))["type"], "registered");
    // A bad signature is refused too.
    thief.send(&json!({"type": "register", "name": "carol", "public_key": hex(key(1).verifying_key().as_bytes()), "signature": "00"}));
    assert_eq!(thief.expect("error")["code"], "bad_signature");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What a client that does not speak TLS gets back for `bytes` until the server closes the
/// connection (or 5 s pass).
fn plaintext_answer(server: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut tcp = TcpStream::connect(server).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tcp.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (answer, closed)
}

#[test]
fn a_plaintext_client_gets_no_service() {
    let server = start_server(&[]);
    let hello = control::encode(
        &json!({"type": "hello", "version": PROTOCOL_VERSION, "access": "127.0.0.1:1"}),
    );
    let (answer, closed) = plaintext_answer(server.addr, &hello);
    assert!(closed, "the connection was left open");
    // At most a TLS alert record (content type 21), never a control frame.
    assert!(
        answer.is_empty() || answer[0] == 21,
        "answered in clear: {answer:?}"
    );
    let mut decoder = FrameDecoder::new();
    let decoded = decoder
        .push(&answer)
        .ok()
        .and_then(|()| decoder.next_message::<Value>().ok().flatten());
    assert_eq!(decoded, None, "a control frame came back");
    // The server goes on serving TLS clients.
    let mut alice = Peer::connect(&server);
    assert_eq!(alice.register("alice", &key(1))["type"], "registered");
}

#[test]
fn the_ready_lines_fingerprint_is_the_certificate_clients_see() {
    let server = start_server(&[]);
    // Not pinned: whatever the server presents.
    let tls = connect_tls(server.addr, WAIT).unwrap();
    let certs = tls.conn.peer_certificates().unwrap();
    assert_eq!(Fingerprint::of(&certs[0]), server.fingerprint());
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls_version_13()),
        "TLS 1.3 only"
    );
    // Another server has another certificate.
    let other = start_server(&[]);
    assert_ne!(other.fingerprint(), server.fingerprint());
}

fn rustls_version_13() -> traversal::tls::ProtocolVersion {
    traversal::tls::ProtocolVersion::TLSv1_3
}

#[test]
fn a_restart_with_the_same_state_dir_keeps_the_certificate_and_the_names() {
    let dir = std::env::temp_dir().join(format!("pinhole-state-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = start_server(&["--state-dir", dir.to_str().unwrap()]);
    let first = server.fingerprint();
    let mut alice = Peer::connect(&server);
    assert_eq!(alice.register("alice", &key(1))["type"], "registered");
    drop(alice);
    assert!(server.terminate().success());
    for file in ["cert.pem", "key.pem", "names.txt"] {
        assert!(dir.join(file).is_file(), "{file} in the state directory");
    }
    server.restart();
    assert_eq!(
        server.fingerprint(),
        first,
        "the same certificate after a restart"
    );
    let mut thief = Peer::connect(&server);
    assert_eq!(thief.register("alice", &key(9))["code"], "name_taken");
    let mut alice = Peer::connect(&server);
    assert_eq!(alice.register("alice", &key(1))["type"], "registered");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ephemeral_names_do_not_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("pinhole-state-ephemeral-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = start_server(&["--state-dir", dir.to_str().unwrap(), "--ephemeral-names"]);
    let mut alice = Peer::connect(&server);
    assert_eq!(alice.register("alice", &key(1))["type"], "registered");
    drop(alice);
    assert!(server.terminate().success());
    assert!(!dir.join("names.txt").exists());
    server.restart();
    let mut other = Peer::connect(&server);
    assert_eq!(other.register("alice", &key(9))["type"], "registered");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
