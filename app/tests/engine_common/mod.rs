//! A small stand-in for the rendezvous server's call service, for engine tests: the
//! registration exchange (welcome, UDP answer with MESSAGE-INTEGRITY), names with Ed25519 keys,
//! the call signalling of docs/calls.md, the relay (ChannelData between the two parties'
//! mapped addresses) and `echo`. Blocking threads on 127.0.0.1; it stops when dropped.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{Value, json};
use traversal::channel;
use traversal::control::{FrameDecoder, encode};
use traversal::wire::{Flags, UdpMessage};

#[derive(Default)]
struct State {
    /// Per connection: user index -> (stream, key, name, mapped).
    conns: HashMap<u32, Conn>,
    /// name -> public key (hex)
    names: HashMap<String, String>,
    calls: HashMap<u64, CallRec>,
    hide_candidates: Arc<AtomicBool>,
}

struct Conn {
    stream: TcpStream,
    key: Vec<u8>,
    challenge: Vec<u8>,
    name: Option<String>,
    mapped: Option<SocketAddr>,
}

#[derive(Clone)]
struct CallRec {
    caller: u32,
    callee: Option<u32>,
    caller_candidates: Value,
    channel: u16,
    connected: bool,
}

/// The fake server.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub(crate) relayed: Arc<AtomicU64>,
    /// When false, relay frames are dropped (a test of the direct path).
    pub(crate) relay_on: Arc<AtomicBool>,
    /// When true, `connected` carries only unreachable candidates: the call stays relayed.
    pub(crate) hide_candidates: Arc<AtomicBool>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl FakeServer {
    /// Stops the server and waits until its threads have let the port go.
    pub(crate) fn stop(self) -> SocketAddr {
        let addr = self.addr;
        drop(self);
        std::thread::sleep(Duration::from_millis(300));
        addr
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn send(state: &mut State, index: u32, message: Value) {
    if let Some(c) = state.conns.get_mut(&index) {
        let _ = c.stream.write_all(&encode(&message));
    }
}

fn index_of(state: &State, name: &str) -> Option<u32> {
    state
        .conns
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .map(|(i, _)| *i)
}

impl FakeServer {
    pub(crate) fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// A server on `addr` (the address of one that stopped: a restart).
    pub(crate) fn start_on(addr: SocketAddr) -> Self {
        let udp = UdpSocket::bind(addr).unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).unwrap();
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let relay_on = Arc::new(AtomicBool::new(true));
        let hide_candidates = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State {
            hide_candidates: hide_candidates.clone(),
            ..State::default()
        }));
        {
            let (state, stop, relayed, relay_on) = (
                state.clone(),
                stop.clone(),
                relayed.clone(),
                relay_on.clone(),
            );
            std::thread::spawn(move || udp_loop(udp, state, stop, relayed, relay_on));
        }
        {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut next_index = 1u32;
                while !stop.load(Ordering::SeqCst) {
                    match tcp.accept() {
                        Ok((stream, peer)) => {
                            let index = next_index;
                            next_index += 1;
                            let (state, stop) = (state.clone(), stop.clone());
                            std::thread::spawn(move || conn_loop(stream, peer, index, state, stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
        FakeServer {
            addr,
            stop,
            relayed,
            relay_on,
            hide_candidates,
        }
    }
}

fn udp_loop(
    udp: UdpSocket,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    relayed: Arc<AtomicU64>,
    relay_on: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = udp.recv_from(&mut buf) else {
            continue;
        };
        let data = &buf[..n];
        let mut st = state.lock().unwrap();
        match channel::classify(data) {
            channel::Kind::Stun => {
                let keys: HashMap<u32, Vec<u8>> =
                    st.conns.iter().map(|(i, c)| (*i, c.key.clone())).collect();
                let Ok(UdpMessage::Request {
                    transaction_id,
                    user_index,
                    flags,
                    ..
                }) = UdpMessage::decode(data, |u| keys.get(&u).cloned())
                else {
                    continue;
                };
                if let Some(c) = st.conns.get_mut(&user_index) {
                    c.mapped = Some(from);
                    let answer = UdpMessage::Answer {
                        transaction_id,
                        user_index,
                        mapped: from,
                        flags: Flags {
                            test_socket: flags.test_socket,
                            to_listed: false,
                        },
                    }
                    .encode(&c.key);
                    let _ = udp.send_to(&answer, from);
                }
            }
            channel::Kind::ChannelData => {
                if !relay_on.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(frame) = channel::decode(data) else {
                    continue;
                };
                let Some(call) = st
                    .calls
                    .values()
                    .find(|c| c.channel == frame.channel && c.connected)
                    .cloned()
                else {
                    continue;
                };
                let mapped = |i: u32| st.conns.get(&i).and_then(|c| c.mapped);
                let to = match call.callee {
                    None => mapped(call.caller),
                    Some(callee) if mapped(call.caller) == Some(from) => mapped(callee),
                    Some(_) => mapped(call.caller),
                };
                if let Some(to) = to {
                    let _ = udp.send_to(data, to);
                    relayed.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

fn conn_loop(
    mut stream: TcpStream,
    peer: SocketAddr,
    index: u32,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let key: Vec<u8> = (0..20)
        .map(|i| (i as u8).wrapping_mul(7) ^ index as u8)
        .collect();
    let challenge: Vec<u8> = (0..32).map(|i| (i as u8) ^ (index as u8) ^ 0x5a).collect();
    state.lock().unwrap().conns.insert(
        index,
        Conn {
            stream: stream.try_clone().unwrap(),
            key: key.clone(),
            challenge: challenge.clone(),
            name: None,
            mapped: None,
        },
    );
    let mut decoder = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        decoder.push(&buf[..n]).unwrap();
        while let Ok(Some(m)) = decoder.next_message::<Value>() {
            let mut st = state.lock().unwrap();
            handle(&mut st, index, peer, &key, &challenge, &m);
        }
    }
    // The connection closed: its call ends with peer_lost for the other side.
    let mut st = state.lock().unwrap();
    let calls: Vec<(u64, CallRec)> = st
        .calls
        .iter()
        .filter(|(_, c)| c.caller == index || c.callee == Some(index))
        .map(|(id, c)| (*id, c.clone()))
        .collect();
    for (id, c) in calls {
        st.calls.remove(&id);
        let other = if c.caller == index {
            c.callee
        } else {
            Some(c.caller)
        };
        if let Some(other) = other {
            send(
                &mut st,
                other,
                json!({"type": "ended", "call_id": id, "reason": "peer_lost"}),
            );
        }
    }
    st.conns.remove(&index);
}

fn handle(st: &mut State, index: u32, peer: SocketAddr, key: &[u8], challenge: &[u8], m: &Value) {
    let ty = m["type"].as_str().unwrap_or("");
    match ty {
        "hello" => send(
            st,
            index,
            json!({"type": "welcome", "version": 1, "user_index": index, "key": hex(key),
                   "observed": peer.to_string(), "private_network": false,
                   "idle_timeout_s": 180, "challenge": hex(challenge)}),
        ),
        "probe" => send(
            st,
            index,
            json!({"type": "probe_failed", "nonce": m["nonce"], "reason": "fake server"}),
        ),
        "register" => {
            let name = m["name"].as_str().unwrap_or("").to_owned();
            let public = m["public_key"].as_str().unwrap_or("").to_owned();
            let ok = (|| {
                let pk: [u8; 32] = unhex(&public)?.try_into().ok()?;
                let sig: [u8; 64] = unhex(m["signature"].as_str()?)?.try_into().ok()?;
                let vk = VerifyingKey::from_bytes(&pk).ok()?;
                let msg = traversal::calls::registration_message(&name, challenge);
                vk.verify(&msg, &Signature::from_bytes(&sig)).ok()
            })()
            .is_some();
            if !ok {
                send(
                    st,
                    index,
                    json!({"type": "error", "code": "bad_signature", "message": "signature does not verify"}),
                );
                return;
            }
            if st.names.get(&name).is_some_and(|k| *k != public) {
                send(
                    st,
                    index,
                    json!({"type": "error", "code": "name_taken", "message": format!("{name} belongs to another key")}),
                );
                return;
            }
            st.names.insert(name.clone(), public);
            if let Some(c) = st.conns.get_mut(&index) {
                c.name = Some(name.clone());
            }
            send(st, index, json!({"type": "registered", "name": name}));
        }
        "call" => {
            let call_id = m["call_id"].as_u64().unwrap_or(0);
            let to = m["to"].as_str().unwrap_or("");
            let channel = 0x4000 + (call_id % 0x1000) as u16;
            if to == "echo" {
                st.calls.insert(
                    call_id,
                    CallRec {
                        caller: index,
                        callee: None,
                        caller_candidates: json!([]),
                        channel,
                        connected: true,
                    },
                );
                send(
                    st,
                    index,
                    json!({"type": "connected", "call_id": call_id, "candidates": [],
                    "secret": "00112233445566778899aabbccddeeff", "channel": channel}),
                );
                return;
            }
            let Some(callee) = index_of(st, to) else {
                send(
                    st,
                    index,
                    json!({"type": "ended", "call_id": call_id, "reason": "offline"}),
                );
                return;
            };
            let from = st.conns[&index].name.clone().unwrap_or_default();
            st.calls.insert(
                call_id,
                CallRec {
                    caller: index,
                    callee: Some(callee),
                    caller_candidates: m["candidates"].clone(),
                    channel,
                    connected: false,
                },
            );
            send(
                st,
                callee,
                json!({"type": "incoming", "call_id": call_id, "from": from,
                "candidates": m["candidates"]}),
            );
        }
        "ringing" => {
            let call_id = m["call_id"].as_u64().unwrap_or(0);
            if let Some(c) = st.calls.get(&call_id) {
                let caller = c.caller;
                send(st, caller, json!({"type": "ringing", "call_id": call_id}));
            }
        }
        "accept" => {
            let call_id = m["call_id"].as_u64().unwrap_or(0);
            let Some(c) = st.calls.get_mut(&call_id) else {
                return;
            };
            c.connected = true;
            let mut c = c.clone();
            let mut callee_candidates = m["candidates"].clone();
            if st.hide_candidates.load(Ordering::SeqCst) {
                // Port 9 (discard) on loopback: nothing answers there.
                callee_candidates = json!(["127.0.0.1:9"]);
                c.caller_candidates = json!(["127.0.0.1:9"]);
            }
            let secret = "0f0e0d0c0b0a09080706050403020100";
            send(
                st,
                c.caller,
                json!({"type": "connected", "call_id": call_id,
                "candidates": callee_candidates, "secret": secret, "channel": c.channel}),
            );
            send(
                st,
                index,
                json!({"type": "connected", "call_id": call_id,
                "candidates": c.caller_candidates, "secret": secret, "channel": c.channel}),
            );
        }
        "reject" => {
            let call_id = m["call_id"].as_u64().unwrap_or(0);
            if let Some(c) = st.calls.remove(&call_id) {
                send(
                    st,
                    c.caller,
                    json!({"type": "ended", "call_id": call_id, "reason": m["reason"]}),
                );
            }
        }
        "hang_up" => {
            let call_id = m["call_id"].as_u64().unwrap_or(0);
            if let Some(c) = st.calls.remove(&call_id) {
                let reason = if c.connected { "hung_up" } else { "cancelled" };
                let other = if c.caller == index {
                    c.callee
                } else {
                    Some(c.caller)
                };
                if let Some(other) = other {
                    send(
                        st,
                        other,
                        json!({"type": "ended", "call_id": call_id, "reason": reason}),
                    );
                }
            }
        }
        _ => {}
    }
}
