//! A client scripted with the raw control protocol (docs/calls.md), for tests and benches that
//! drive `pinhole-rendezvous` step by step: TLS (pinned to the server's certificate when the
//! [`Target`] knows it) and `hello`, the authenticated UDP keepalive from
//! its own media socket, `register` signed with an Ed25519 key, then whatever call signalling
//! the caller sends.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use traversal::calls::registration_message;
use traversal::control::{self, FrameDecoder, PROTOCOL_VERSION};
use traversal::server::{hex, unhex};
use traversal::tls::{self, BlockingStream, ClientTrust, Fingerprint};
use traversal::wire::{self, Flags, UdpMessage};

use crate::Rendezvous;

/// How long [`Client::expect`] waits.
const WAIT: Duration = Duration::from_secs(5);

/// Where a client connects: the server's address and, to pin, its certificate's fingerprint
/// (a [`Rendezvous`] gives both; a bare address accepts any certificate).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub fingerprint: Option<Fingerprint>,
}

impl From<&Rendezvous> for Target {
    fn from(server: &Rendezvous) -> Self {
        Target {
            addr: server.addr,
            fingerprint: Some(server.fingerprint()),
        }
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Target {
            addr,
            fingerprint: None,
        }
    }
}

/// The TLS control connection to `target` (the handshake done within 5 s); reads then time
/// out after `read_timeout`.
pub fn connect_tls(target: impl Into<Target>, read_timeout: Duration) -> Result<BlockingStream> {
    let target = target.into();
    let tcp = TcpStream::connect(target.addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let trust = ClientTrust {
        pinned: target.fingerprint,
        known_servers: None,
    };
    let stream = tls::connect_blocking(tcp, &target.addr.to_string(), &trust)
        .with_context(|| format!("TLS handshake with {}", target.addr))?;
    stream.sock.set_read_timeout(Some(read_timeout))?;
    Ok(stream)
}

/// Sends the authenticated keepalive of `user_index` (its `key`) from `udp` to `server` until
/// the server answers it: at most `attempts` requests (sequence numbers from 1, `slot` in the
/// transaction ids' last bytes), each given 200 ms, path challenges answered meanwhile (a new
/// address proves it receives before it counts). False when nothing answered.
pub fn keepalive_answered(
    udp: &UdpSocket,
    server: SocketAddr,
    user_index: u32,
    key: &[u8],
    slot: [u8; 4],
    attempts: u64,
) -> Result<bool> {
    let mask = wire::sequence_mask(key);
    for sequence in 1..=attempts {
        let request = UdpMessage::Request {
            transaction_id: wire::sequenced_tid(mask, sequence, slot),
            user_index,
            flags: Flags::default(),
        }
        .encode(key);
        udp.send_to(&request, server)?;
        let end = Instant::now() + Duration::from_millis(200);
        while Instant::now() < end {
            let mut buf = [0u8; 1500];
            let Ok((n, _)) = udp.recv_from(&mut buf) else {
                continue;
            };
            if let Some(response) = wire::path_response(&buf[..n], user_index, key) {
                udp.send_to(&response, server)?;
                continue;
            }
            if let Ok(UdpMessage::Answer { .. }) =
                UdpMessage::decode(&buf[..n], |u| (u == user_index).then_some(key))
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// A TCP connection to `server` from `local`, bound before connecting (so that the ephemeral
/// ports of one source address do not run out when thousands connect).
pub fn connect_tcp_from(local: SocketAddrV4, server: SocketAddr) -> Result<TcpStream> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
    let SocketAddr::V4(server) = server else {
        bail!("IPv4 server address expected");
    };
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(server))?;
    Ok(TcpStream::from(fd))
}

/// A call the server relays, from [`Client::call_accepted`].
#[derive(Debug, Clone, Copy)]
pub struct RelayedCall {
    /// The relay channel both sides use.
    pub channel: u16,
    /// The caller's relay token.
    pub caller_token: [u8; 8],
    /// The callee's relay token.
    pub callee_token: [u8; 8],
}

/// A scripted client: its control connection and its media socket on 127.0.0.1.
#[derive(Debug)]
pub struct Client {
    /// The server (TCP and UDP).
    pub server: SocketAddr,
    tcp: BlockingStream,
    decoder: FrameDecoder,
    /// The media socket, registered with the server by the keepalive.
    pub udp: UdpSocket,
    /// The server's index for this client.
    pub user_index: u32,
    key: Vec<u8>,
    challenge: Vec<u8>,
}

impl Client {
    /// Connects (TLS, pinned when `server` is a [`Rendezvous`]), says hello, and registers the
    /// media socket's mapping (no name yet).
    pub fn connect(server: impl Into<Target>) -> Result<Self> {
        let target = server.into();
        let server = target.addr;
        let tcp = connect_tls(target, Duration::from_millis(20))?;
        let access = tcp.sock.local_addr()?;
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        udp.set_read_timeout(Some(Duration::from_millis(20)))?;
        let mut c = Self {
            server,
            tcp,
            decoder: FrameDecoder::new(),
            udp,
            user_index: 0,
            key: Vec::new(),
            challenge: Vec::new(),
        };
        c.send(&json!({"type": "hello", "version": PROTOCOL_VERSION, "access": access}))?;
        let welcome = c.expect("welcome")?;
        c.user_index = welcome["user_index"]
            .as_u64()
            .and_then(|u| u32::try_from(u).ok())
            .context("user_index")?;
        c.key = welcome["key"].as_str().and_then(unhex).context("key")?;
        c.challenge = welcome["challenge"]
            .as_str()
            .and_then(unhex)
            .context("challenge")?;
        c.keepalive()?;
        Ok(c)
    }

    /// Sends one control message.
    pub fn send(&mut self, message: &Value) -> Result<()> {
        self.tcp.write_all(&control::encode(message))?;
        self.tcp.flush()?;
        Ok(())
    }

    /// `self` calls `callee` (registered as `name`) with `call_id`, `callee` accepts (with a
    /// key-exchange half the server only passes on), and both are told the call connected:
    /// the relay channel and each side's relay token.
    pub fn call_accepted(
        &mut self,
        callee: &mut Client,
        name: &str,
        call_id: u64,
    ) -> Result<RelayedCall> {
        self.send(&json!({"type": "call", "call_id": call_id, "to": name,
            "candidates": [self.mapped()?], "commitment": "ab".repeat(32)}))?;
        callee.expect("incoming")?;
        let e2e = json!({"ephemeral": "cd".repeat(32), "signature": "ef".repeat(64)});
        callee
            .send(&json!({"type": "accept", "call_id": call_id, "candidates": [], "e2e": e2e}))?;
        let token = |m: &Value| -> Result<[u8; 8]> {
            let hex = m["relay_token"].as_str().context("no relay token")?;
            let bytes = unhex(hex).context("relay token not hex")?;
            bytes.try_into().ok().context("relay token not 8 bytes")
        };
        let to_caller = self.expect("connected")?;
        let to_callee = callee.expect("connected")?;
        let channel = to_caller["channel"].as_u64().context("no channel")?;
        Ok(RelayedCall {
            channel: u16::try_from(channel)?,
            caller_token: token(&to_caller)?,
            callee_token: token(&to_callee)?,
        })
    }

    /// Waits (5 s) for the next control message of type `kind`, skipping others; an `error`
    /// or `ended` message on the way is an error.
    pub fn expect(&mut self, kind: &str) -> Result<Value> {
        self.expect_within(kind, WAIT)
    }

    /// Like [`Client::expect`], waiting at most `wait`.
    pub fn expect_within(&mut self, kind: &str, wait: Duration) -> Result<Value> {
        let m = self.next_where(wait, |m| {
            m["type"] == kind || m["type"] == "error" || m["type"] == "ended"
        })?;
        if m["type"] != kind {
            bail!("waiting for {kind}: {m}");
        }
        Ok(m)
    }

    /// Waits up to `wait` for the next control message for which `want` holds, skipping others.
    pub fn next_where(&mut self, wait: Duration, want: impl Fn(&Value) -> bool) -> Result<Value> {
        let end = Instant::now() + wait;
        loop {
            while let Some(m) = self.decoder.next_message::<Value>()? {
                if want(&m) {
                    return Ok(m);
                }
            }
            if Instant::now() > end {
                bail!("no such message within {wait:?}");
            }
            let mut buf = [0u8; 4096];
            match self.tcp.read(&mut buf) {
                Ok(0) => bail!("the server closed the control connection"),
                Ok(n) => self.decoder.push(&buf[..n])?,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The authenticated request from the media socket that registers its mapping.
    pub fn keepalive(&mut self) -> Result<()> {
        let (udp, server, index) = (&self.udp, self.server, self.user_index);
        if !keepalive_answered(udp, server, index, &self.key, [1, 2, 3, 4], 49)? {
            bail!("no answer to the keepalive");
        }
        Ok(())
    }

    /// Binds `name` to `key` (signing the server's challenge).
    pub fn register(&mut self, name: &str, key: &SigningKey) -> Result<()> {
        let answer = self.register_answer(name, key)?;
        if answer["type"] != "registered" {
            bail!("registering {name}: {answer}");
        }
        Ok(())
    }

    /// Asks to bind `name` to `key`; the server's answer, `registered` or `error`.
    pub fn register_answer(&mut self, name: &str, key: &SigningKey) -> Result<Value> {
        let signature = key.sign(&registration_message(name, &self.challenge));
        self.send(&json!({
            "type": "register",
            "name": name,
            "public_key": hex(key.verifying_key().as_bytes()),
            "signature": hex(&signature.to_bytes()),
        }))?;
        self.next_where(WAIT, |m| m["type"] == "registered" || m["type"] == "error")
    }

    /// The media socket's address (its candidate on loopback).
    pub fn mapped(&self) -> Result<SocketAddr> {
        Ok(self.udp.local_addr()?)
    }
}
