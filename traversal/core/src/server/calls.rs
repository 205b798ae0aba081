//! The server side of calls, sans-IO: names with keys, call signalling, the relay and the echo
//! service of `docs/calls.md`.
//!
//! [`Calls`] is driven by [`crate::server::Server`]: it learns of each control connection
//! ([`Calls::open`], which hands out the registration challenge, and [`Calls::closed`]), of the
//! media mapping the authenticated keepalives last saw ([`Calls::set_mapped`]), of the call
//! messages a client sends ([`Calls::register`], [`Calls::call`], [`Calls::ringing`],
//! [`Calls::accept`], [`Calls::reject`], [`Calls::hang_up`]), of relay frames
//! ([`Calls::relay`]) and of time ([`Calls::handle_timeout`]). Its answers are polled with
//! [`Calls::poll_signal`].
//!
//! Rules:
//! - A name belongs to the first key that registers it; a registration signs
//!   [`registration_message`] with that key over the connection's fresh challenge. The same key
//!   on a new connection takes the name over (the old connection's call ends).
//! - A client has at most one call. A call rings for at most [`RING_TIMEOUT`]; a closed control
//!   connection or a lost mapping ends the call with `peer_lost` for the other side.
//! - The relay forwards a ChannelData frame unchanged only when it comes from the registered
//!   mapped address of a party of a connected call, on that call's channel, within the
//!   direction's token bucket, and only to the other party's registered mapped address (the
//!   sender's own for the echo service). One hash lookup by source address decides.
//!
//! Memory is bounded: one entry per control connection (bounded by the server), at most one
//! call per client, two relay routes per call, and at most [`CallsConfig::max_names`] names.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::channel;
pub use crate::control::{EndReason, ServerMessage};
use crate::server::{ConnId, hex, unhex};

/// The echo service's name: calls to it are answered by the server.
pub const ECHO: &str = "echo";
/// A call not accepted within this time ends with `no_answer`.
pub const RING_TIMEOUT: Duration = Duration::from_secs(30);
/// Most candidates passed on per side.
pub const MAX_CANDIDATES: usize = 8;
/// Length of the registration challenge.
pub const CHALLENGE_LEN: usize = 32;
/// Length of a call's secret.
pub const SECRET_LEN: usize = 16;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// The bytes a registration signs: `b"pinhole-register-v1\0" || name || 0x00 || challenge`.
pub fn registration_message(name: &str, challenge: &[u8]) -> Vec<u8> {
    let mut m = b"pinhole-register-v1\0".to_vec();
    m.extend_from_slice(name.as_bytes());
    m.push(0);
    m.extend_from_slice(challenge);
    m
}

/// Whether `name` may be registered: 1 to 32 letters, digits, '.', '_' or '-', not `echo` (the
/// rules of the app's settings, without trimming: the server takes the name as sent).
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&n)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.eq_ignore_ascii_case(ECHO)
}

/// Settings of the call router.
#[derive(Debug, Clone)]
pub struct CallsConfig {
    /// Most names in the name table; more are refused with `server_full`.
    pub max_names: usize,
    /// Ringing time before `no_answer`.
    pub ring_timeout: Duration,
    /// Relay rate per call and direction, bytes per second (whole frames).
    pub relay_bytes_per_s: u32,
    /// Relay rate per call and direction, frames per second.
    pub relay_packets_per_s: u32,
    /// Bucket depth, as time at the rates above.
    pub relay_burst: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_names: 100_000,
            ring_timeout: RING_TIMEOUT,
            relay_bytes_per_s: 64_000,
            relay_packets_per_s: 100,
            relay_burst: Duration::from_secs(1),
        }
    }
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Names in the table.
    pub names: usize,
    /// Names online now.
    pub online: usize,
    /// Calls ringing or connected now.
    pub calls: usize,
    /// Relay routes installed now.
    pub routes: usize,
    /// Registrations refused (bad name, signature, taken, table full).
    pub registrations_refused: u64,
    /// Calls connected since start.
    pub calls_connected: u64,
    /// Frames forwarded.
    pub relayed: u64,
    /// Frames from an address with no route (not a party of a connected call).
    pub relay_no_route: u64,
    /// Frames on another channel than the sender's call, or malformed.
    pub relay_bad_frame: u64,
    /// Frames over the direction's token bucket.
    pub relay_rate_limited: u64,
}

/// A call router's internal call number (not the client's `call_id`).
type CallKey = u64;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Available tokens, thousandths of a byte.
    bytes_milli: u64,
    /// Available tokens, thousandths of a frame.
    packets_milli: u64,
    stamp: Option<Instant>,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        bytes_milli: 0,
        packets_milli: 0,
        stamp: None,
    };

    fn take(&mut self, now: Instant, len: usize, limits: &Limits) -> bool {
        match self.stamp {
            None => {
                self.bytes_milli = limits.bytes_cap_milli;
                self.packets_milli = limits.packets_cap_milli;
            }
            Some(stamp) => {
                let us = u64::try_from(now.saturating_duration_since(stamp).as_micros())
                    .unwrap_or(u64::MAX)
                    .min(limits.burst_us);
                // rate tokens/s = rate/1000 thousandths per microsecond.
                let refill = |rate: u64| us.saturating_mul(rate) / 1000;
                self.bytes_milli = (self.bytes_milli.saturating_add(refill(limits.bytes_per_s)))
                    .min(limits.bytes_cap_milli);
                self.packets_milli = (self
                    .packets_milli
                    .saturating_add(refill(limits.packets_per_s)))
                .min(limits.packets_cap_milli);
            }
        }
        self.stamp = Some(now);
        let need = u64::try_from(len).unwrap_or(u64::MAX).saturating_mul(1000);
        if self.bytes_milli < need || self.packets_milli < 1000 {
            return false;
        }
        self.bytes_milli -= need;
        self.packets_milli -= 1000;
        true
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    bytes_per_s: u64,
    packets_per_s: u64,
    burst_us: u64,
    bytes_cap_milli: u64,
    packets_cap_milli: u64,
}

impl Limits {
    fn new(config: &CallsConfig) -> Self {
        let burst_us = u64::try_from(config.relay_burst.as_micros()).unwrap_or(u64::MAX);
        let bytes_per_s = u64::from(config.relay_bytes_per_s);
        let packets_per_s = u64::from(config.relay_packets_per_s);
        Limits {
            bytes_per_s,
            packets_per_s,
            burst_us,
            bytes_cap_milli: bytes_per_s.saturating_mul(burst_us) / 1000,
            packets_cap_milli: packets_per_s.saturating_mul(burst_us) / 1000,
        }
    }
}

/// One direction of a connected call, keyed by the sender's registered mapped address.
#[derive(Debug, Clone, Copy)]
struct Route {
    call: CallKey,
    channel: u16,
    to: SocketAddr,
    bucket: Bucket,
}

#[derive(Debug)]
struct Client {
    name: Option<Box<str>>,
    challenge: [u8; CHALLENGE_LEN],
    mapped: Option<SocketAddr>,
    call: Option<CallKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ringing { deadline: Instant },
    Connected,
}

#[derive(Debug)]
struct Call {
    id: u64,
    caller: ConnId,
    /// `None` for the echo service.
    callee: Option<ConnId>,
    state: State,
    channel: u16,
    secret: [u8; SECRET_LEN],
    caller_candidates: Vec<SocketAddr>,
    /// The source addresses of the routes installed for the caller and the callee.
    sources: [Option<SocketAddr>; 2],
}

/// The call router. Its `Debug` shows counts only (no keys, challenges or secrets).
pub struct Calls {
    config: CallsConfig,
    limits: Limits,
    secret: [u8; 32],
    counter: u64,
    names: HashMap<Box<str>, [u8; 32]>,
    names_changed: bool,
    online: HashMap<Box<str>, ConnId>,
    clients: HashMap<ConnId, Client>,
    calls: HashMap<CallKey, Call>,
    next_call: CallKey,
    routes: HashMap<SocketAddr, Route>,
    out: VecDeque<(ConnId, ServerMessage)>,
    stats: CallStats,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Calls {
    /// A router with no names. `secret` seeds challenges, call secrets and channels: 32 bytes
    /// from the operating system's random source (tests may give a constant).
    pub fn new(config: CallsConfig, secret: [u8; 32]) -> Self {
        Calls {
            limits: Limits::new(&config),
            config,
            secret,
            counter: 0,
            names: HashMap::new(),
            names_changed: false,
            online: HashMap::new(),
            clients: HashMap::new(),
            calls: HashMap::new(),
            next_call: 0,
            routes: HashMap::new(),
            out: VecDeque::new(),
            stats: CallStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CallStats {
        CallStats {
            names: self.names.len(),
            online: self.online.len(),
            calls: self.calls.len(),
            routes: self.routes.len(),
            ..self.stats
        }
    }

    /// The next message for a control connection.
    pub fn poll_signal(&mut self) -> Option<(ConnId, ServerMessage)> {
        self.out.pop_front()
    }

    /// The key a name is bound to.
    pub fn name_key(&self, name: &str) -> Option<[u8; 32]> {
        self.names.get(name).copied()
    }

    /// Adds names (from the names file) to the table, up to its cap; invalid names are skipped.
    pub fn load_names(&mut self, entries: impl IntoIterator<Item = (String, [u8; 32])>) {
        for (name, key) in entries {
            if self.names.len() >= self.config.max_names {
                break;
            }
            if valid_name(&name) {
                self.names.insert(name.into_boxed_str(), key);
            }
        }
    }

    /// Whether a name was bound since the last call (then the names file should be written).
    pub fn take_names_changed(&mut self) -> bool {
        std::mem::take(&mut self.names_changed)
    }

    /// Marks the name table as changed (a write of the names file failed: try again).
    pub fn mark_names_changed(&mut self) {
        self.names_changed = true;
    }

    /// Bytes held by the tables (entries with the hash tables' spare capacity, names, and
    /// candidate lists), roughly.
    pub fn memory_estimate(&self) -> usize {
        use std::mem::size_of;
        let names = self.names.capacity() * (size_of::<Box<str>>() + 32 + 1)
            + self.names.keys().map(|n| n.len()).sum::<usize>();
        let online = self.online.capacity() * (size_of::<Box<str>>() + size_of::<ConnId>() + 1)
            + self.online.keys().map(|n| n.len()).sum::<usize>();
        let clients = self.clients.capacity() * (size_of::<ConnId>() + size_of::<Client>() + 1)
            + self
                .clients
                .values()
                .map(|c| c.name.as_ref().map_or(0, |n| n.len()))
                .sum::<usize>();
        let calls = self.calls.capacity() * (size_of::<CallKey>() + size_of::<Call>() + 1)
            + self
                .calls
                .values()
                .map(|c| c.caller_candidates.capacity() * size_of::<SocketAddr>())
                .sum::<usize>();
        let routes = self.routes.capacity() * (size_of::<SocketAddr>() + size_of::<Route>() + 1);
        names + online + clients + calls + routes
    }

    /// The name table, sorted by name.
    pub fn names_snapshot(&self) -> Vec<(String, [u8; 32])> {
        let mut v: Vec<_> = self
            .names
            .iter()
            .map(|(n, k)| (n.to_string(), *k))
            .collect();
        v.sort();
        v
    }

    /// A control connection said hello: returns its registration challenge (hex), for
    /// `Welcome`.
    pub fn open(&mut self, conn: ConnId) -> String {
        let mut challenge = [0u8; CHALLENGE_LEN];
        self.random(&mut challenge);
        self.clients.insert(
            conn,
            Client {
                name: None,
                challenge,
                mapped: None,
                call: None,
            },
        );
        hex(&challenge)
    }

    /// The control connection closed: its name goes offline and its call ends (`peer_lost` for
    /// the other side).
    pub fn closed(&mut self, conn: ConnId) {
        self.end_call_of(conn, None, EndReason::PeerLost);
        if let Some(c) = self.clients.remove(&conn)
            && let Some(name) = c.name
            && self.online.get(&name) == Some(&conn)
        {
            self.online.remove(&name);
        }
    }

    /// The connection's media mapping, as the authenticated keepalives last saw it (`None`
    /// when it expired: the call ends, `peer_lost` for the other side).
    pub fn set_mapped(&mut self, conn: ConnId, mapped: Option<SocketAddr>) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        if c.mapped == mapped {
            return;
        }
        let had = c.mapped.is_some();
        c.mapped = mapped;
        let call = c.call;
        if mapped.is_none() && had {
            self.end_call_of(conn, Some(EndReason::ServerError), EndReason::PeerLost);
        } else if let Some(key) = call {
            self.install_routes(key);
        }
    }

    /// `Register { name, public_key, signature }`.
    pub fn register(&mut self, conn: ConnId, name: &str, public_key: &str, signature: &str) {
        let Some(c) = self.clients.get(&conn) else {
            self.error(conn, "no_hello", "say hello first");
            return;
        };
        if !valid_name(name) {
            self.refuse(
                conn,
                "bad_name",
                "a name has 1 to 32 letters, digits, '.', '_' or '-', and is not \"echo\"",
            );
            return;
        }
        if let Some(current) = &c.name
            && **current != *name
        {
            self.refuse(
                conn,
                "already_registered",
                "this connection has registered another name",
            );
            return;
        }
        let key: Option<[u8; 32]> = unhex(public_key).and_then(|k| k.try_into().ok());
        let sig: Option<[u8; 64]> = unhex(signature).and_then(|s| s.try_into().ok());
        let verified = match (key, sig) {
            (Some(key), Some(sig)) => ed25519_dalek::VerifyingKey::from_bytes(&key)
                .ok()
                .is_some_and(|vk| {
                    vk.verify_strict(
                        &registration_message(name, &c.challenge),
                        &ed25519_dalek::Signature::from_bytes(&sig),
                    )
                    .is_ok()
                }),
            _ => false,
        };
        let (true, Some(key)) = (verified, key) else {
            self.refuse(
                conn,
                "bad_signature",
                "the signature does not verify with that key over this connection's challenge",
            );
            return;
        };
        match self.names.get(name) {
            Some(bound) if *bound != key => {
                self.refuse(conn, "name_taken", "this name belongs to another key");
                return;
            }
            Some(_) => {}
            None => {
                if self.names.len() >= self.config.max_names {
                    self.refuse(conn, "server_full", "the server's name table is full");
                    return;
                }
                self.names.insert(name.into(), key);
                self.names_changed = true;
                tracing::info!(name, "name bound to a new key");
            }
        }
        if let Some(&old) = self.online.get(name)
            && old != conn
        {
            // The same key from a new connection (a client that reconnected): it takes over.
            self.end_call_of(old, Some(EndReason::ServerError), EndReason::PeerLost);
            if let Some(o) = self.clients.get_mut(&old) {
                o.name = None;
            }
            self.error(
                old,
                "replaced",
                "the name was registered again from another connection",
            );
        }
        self.online.insert(name.into(), conn);
        if let Some(c) = self.clients.get_mut(&conn) {
            c.name = Some(name.into());
        }
        self.out.push_back((
            conn,
            ServerMessage::Registered {
                name: name.to_string(),
            },
        ));
    }

    /// `Call { call_id, to, candidates }`.
    pub fn call(
        &mut self,
        now: Instant,
        conn: ConnId,
        call_id: u64,
        to: &str,
        mut candidates: Vec<SocketAddr>,
    ) {
        let Some(c) = self.clients.get(&conn) else {
            return;
        };
        let Some(from) = c.name.clone() else {
            self.error(conn, "not_registered", "register a name before calling");
            self.ended(conn, call_id, EndReason::ServerError);
            return;
        };
        if let Some(key) = c.call {
            if self.calls.get(&key).is_some_and(|call| call.id == call_id) {
                return; // A repeat.
            }
            self.ended(conn, call_id, EndReason::Busy);
            return;
        }
        candidates.truncate(MAX_CANDIDATES);
        if to == ECHO {
            let key = self.new_call(call_id, conn, None, State::Connected, Vec::new());
            self.connected(key);
            return;
        }
        let Some(&callee) = self.online.get(to) else {
            self.ended(conn, call_id, EndReason::Offline);
            return;
        };
        let callee_busy = self.clients.get(&callee).is_none_or(|c| c.call.is_some());
        if callee == conn || callee_busy {
            self.ended(conn, call_id, EndReason::Busy);
            return;
        }
        let deadline = now.checked_add(self.config.ring_timeout).unwrap_or(now);
        self.new_call(
            call_id,
            conn,
            Some(callee),
            State::Ringing { deadline },
            candidates.clone(),
        );
        self.out.push_back((
            callee,
            ServerMessage::Incoming {
                call_id,
                from: from.to_string(),
                candidates,
            },
        ));
    }

    /// `Ringing { call_id }` from the callee: passed on to the caller.
    pub fn ringing(&mut self, conn: ConnId, call_id: u64) {
        let caller = match self.call_of(conn, call_id) {
            Some((_, call))
                if call.callee == Some(conn) && matches!(call.state, State::Ringing { .. }) =>
            {
                call.caller
            }
            _ => return,
        };
        self.out
            .push_back((caller, ServerMessage::Ringing { call_id }));
    }

    /// `Accept { call_id, candidates }` from the callee: both get `Connected`.
    pub fn accept(&mut self, conn: ConnId, call_id: u64, mut candidates: Vec<SocketAddr>) {
        let Some((key, call)) = self.call_of(conn, call_id) else {
            return;
        };
        if call.callee != Some(conn) || !matches!(call.state, State::Ringing { .. }) {
            return;
        }
        candidates.truncate(MAX_CANDIDATES);
        let caller_candidates = std::mem::take(&mut call.caller_candidates);
        call.state = State::Connected;
        let (caller, channel, secret) = (call.caller, call.channel, hex(&call.secret));
        self.out.push_back((
            caller,
            ServerMessage::Connected {
                call_id,
                candidates,
                secret: secret.clone(),
                channel,
            },
        ));
        self.out.push_back((
            conn,
            ServerMessage::Connected {
                call_id,
                candidates: caller_candidates,
                secret,
                channel,
            },
        ));
        self.connected(key);
    }

    /// `Reject { call_id, reason }` from the callee (`busy` or `rejected`; anything else counts
    /// as `rejected`).
    pub fn reject(&mut self, conn: ConnId, call_id: u64, reason: EndReason) {
        let Some((key, call)) = self.call_of(conn, call_id) else {
            return;
        };
        if call.callee != Some(conn) || !matches!(call.state, State::Ringing { .. }) {
            return;
        }
        let _ = call;
        let reason = if reason == EndReason::Busy {
            EndReason::Busy
        } else {
            EndReason::Rejected
        };
        self.end_call(key, Some(reason), None);
    }

    /// `HangUp { call_id }` from either side: before an answer, the caller's is a cancel and the
    /// callee's a reject.
    pub fn hang_up(&mut self, conn: ConnId, call_id: u64) {
        let Some((key, call)) = self.call_of(conn, call_id) else {
            return;
        };
        let by_caller = call.caller == conn;
        let reason = match call.state {
            State::Connected => EndReason::HungUp,
            State::Ringing { .. } if by_caller => EndReason::Cancelled,
            State::Ringing { .. } => EndReason::Rejected,
        };
        if by_caller {
            self.end_call(key, None, Some(reason));
        } else {
            self.end_call(key, Some(reason), None);
        }
    }

    /// Timer: ringing calls past their deadline end with `no_answer` for both sides.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Ringing { deadline } if now >= deadline))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.end_call(key, Some(EndReason::NoAnswer), Some(EndReason::NoAnswer));
        }
    }

    /// A relay frame (a datagram whose first byte is 64-79) from `from`: where to forward it,
    /// unchanged, or `None` to drop it (counted).
    pub fn relay(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Option<SocketAddr> {
        let Some(route) = self.routes.get_mut(&from) else {
            self.stats.relay_no_route += 1;
            return None;
        };
        match channel::decode(bytes) {
            Ok(frame) if frame.channel == route.channel => {}
            _ => {
                self.stats.relay_bad_frame += 1;
                return None;
            }
        }
        if !route.bucket.take(now, bytes.len(), &self.limits) {
            self.stats.relay_rate_limited += 1;
            return None;
        }
        self.stats.relayed += 1;
        Some(route.to)
    }

    fn call_of(&mut self, conn: ConnId, call_id: u64) -> Option<(CallKey, &mut Call)> {
        let key = self.clients.get(&conn)?.call?;
        let call = self.calls.get_mut(&key)?;
        (call.id == call_id).then_some((key, call))
    }

    fn new_call(
        &mut self,
        id: u64,
        caller: ConnId,
        callee: Option<ConnId>,
        state: State,
        caller_candidates: Vec<SocketAddr>,
    ) -> CallKey {
        let mut secret = [0u8; SECRET_LEN];
        self.random(&mut secret);
        let mut ch = [0u8; 2];
        self.random(&mut ch);
        let channel = channel::CHANNEL_MIN | (u16::from_be_bytes(ch) & 0x0FFF);
        self.next_call += 1;
        let key = self.next_call;
        self.calls.insert(
            key,
            Call {
                id,
                caller,
                callee,
                state,
                channel,
                secret,
                caller_candidates,
                sources: [None; 2],
            },
        );
        for party in [Some(caller), callee].into_iter().flatten() {
            if let Some(c) = self.clients.get_mut(&party) {
                c.call = Some(key);
            }
        }
        key
    }

    /// The call is up: routes in, and for the echo service the caller's `Connected`.
    fn connected(&mut self, key: CallKey) {
        self.stats.calls_connected += 1;
        if let Some(call) = self.calls.get(&key)
            && call.callee.is_none()
        {
            let (caller, call_id, channel, secret) =
                (call.caller, call.id, call.channel, hex(&call.secret));
            self.out.push_back((
                caller,
                ServerMessage::Connected {
                    call_id,
                    candidates: Vec::new(),
                    secret,
                    channel,
                },
            ));
        }
        self.install_routes(key);
    }

    /// (Re)installs the relay routes of a connected call from the parties' current mappings,
    /// keeping each direction's bucket.
    fn install_routes(&mut self, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.state != State::Connected {
            return;
        }
        let parties = [Some(call.caller), call.callee];
        let mapped = parties.map(|p| p.and_then(|p| self.clients.get(&p)).and_then(|c| c.mapped));
        let channel = call.channel;
        let old = call.sources;
        let mut buckets = [Bucket::EMPTY; 2];
        for (i, source) in old.iter().enumerate() {
            if let Some(source) = source
                && let Some(route) = self.routes.get(source)
                && route.call == key
            {
                buckets[i] = route.bucket;
                self.routes.remove(source);
            }
        }
        let mut sources = [None; 2];
        for i in 0..2 {
            let (Some(_), Some(from)) = (parties[i], mapped[i]) else {
                continue;
            };
            // Echo: back to the caller itself.
            let to = if parties[1].is_none() {
                Some(from)
            } else {
                mapped[1 - i]
            };
            let Some(to) = to else {
                continue;
            };
            self.routes.insert(
                from,
                Route {
                    call: key,
                    channel,
                    to,
                    bucket: buckets[i],
                },
            );
            sources[i] = Some(from);
        }
        if let Some(call) = self.calls.get_mut(&key) {
            call.sources = sources;
        }
    }

    /// Ends `conn`'s call, if any: `own` to `conn`, `other` to the other party.
    fn end_call_of(&mut self, conn: ConnId, own: Option<EndReason>, other: EndReason) {
        let Some(key) = self.clients.get(&conn).and_then(|c| c.call) else {
            return;
        };
        let Some(caller) = self.calls.get(&key).map(|c| c.caller) else {
            return;
        };
        if caller == conn {
            self.end_call(key, own, Some(other));
        } else {
            self.end_call(key, Some(other), own);
        }
    }

    /// Ends a call, telling the caller `to_caller` and the callee `to_callee`.
    fn end_call(
        &mut self,
        key: CallKey,
        to_caller: Option<EndReason>,
        to_callee: Option<EndReason>,
    ) {
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        for source in call.sources.into_iter().flatten() {
            if self.routes.get(&source).is_some_and(|r| r.call == key) {
                self.routes.remove(&source);
            }
        }
        for (party, reason) in [(Some(call.caller), to_caller), (call.callee, to_callee)] {
            let Some(party) = party else { continue };
            if let Some(c) = self.clients.get_mut(&party)
                && c.call == Some(key)
            {
                c.call = None;
            }
            if let Some(reason) = reason {
                self.ended(party, call.id, reason);
            }
        }
    }

    fn ended(&mut self, conn: ConnId, call_id: u64, reason: EndReason) {
        self.out
            .push_back((conn, ServerMessage::Ended { call_id, reason }));
    }

    fn refuse(&mut self, conn: ConnId, code: &str, message: &str) {
        self.stats.registrations_refused += 1;
        self.error(conn, code, message);
    }

    fn error(&mut self, conn: ConnId, code: &str, message: &str) {
        self.out.push_back((
            conn,
            ServerMessage::Error {
                code: code.into(),
                message: message.into(),
            },
        ));
    }

    /// Fills `out` from HMAC-SHA1(secret, counter) blocks.
    fn random(&mut self, out: &mut [u8]) {
        use hmac::{KeyInit, Mac};
        for chunk in out.chunks_mut(20) {
            self.counter += 1;
            if let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&self.secret) {
                mac.update(b"calls");
                mac.update(&self.counter.to_be_bytes());
                let block = mac.finalize().into_bytes();
                chunk.copy_from_slice(&block[..chunk.len()]);
            }
        }
    }
}

/// Parses the text of a names file: one `name public-key-hex` per line. Lines that do not
/// parse are skipped (and logged with their number); blank lines are ignored.
pub fn parse_names(text: &str) -> Vec<(String, [u8; 32])> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let entry = match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(key), None) if valid_name(name) => unhex(key)
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .map(|k| (name.to_string(), k)),
            (None, ..) => continue,
            _ => None,
        };
        match entry {
            Some(entry) => out.push(entry),
            None => tracing::warn!(line = n + 1, "names file: line skipped"),
        }
    }
    out
}

/// The text of a names file for `names` (what [`parse_names`] reads back).
pub fn format_names(names: &[(String, [u8; 32])]) -> String {
    let mut text = String::with_capacity(names.len() * 80);
    for (name, key) in names {
        text.push_str(name);
        text.push(' ');
        text.push_str(&hex(key));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    // A test's virtual clock starts at any instant; none is read again.
    #![allow(clippy::disallowed_methods)]

    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn addr(conn: ConnId) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 1], 40_000 + u16::try_from(conn).unwrap()))
    }

    fn sign(key: &SigningKey, name: &str, challenge: &str) -> (String, String) {
        let challenge = unhex(challenge).unwrap();
        let sig = key.sign(&registration_message(name, &challenge));
        (hex(key.verifying_key().as_bytes()), hex(&sig.to_bytes()))
    }

    struct H {
        calls: Calls,
        now: Instant,
    }

    impl H {
        fn new() -> H {
            Self::with(CallsConfig::default())
        }

        fn with(config: CallsConfig) -> H {
            H {
                calls: Calls::new(config, [7; 32]),
                now: Instant::now(),
            }
        }

        fn drain(&mut self) -> Vec<(ConnId, ServerMessage)> {
            std::iter::from_fn(|| self.calls.poll_signal()).collect()
        }

        /// Opens `conn`, registers `name` with `key`, and gives it the mapping `addr(conn)`.
        fn join(
            &mut self,
            conn: ConnId,
            name: &str,
            key: &SigningKey,
        ) -> Vec<(ConnId, ServerMessage)> {
            let challenge = self.calls.open(conn);
            let (pk, sig) = sign(key, name, &challenge);
            self.calls.register(conn, name, &pk, &sig);
            self.calls.set_mapped(conn, Some(addr(conn)));
            self.drain()
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.calls.handle_timeout(self.now);
        }

        /// 1 calls 2 ("bob"), 2 accepts: returns the channel.
        fn connect(&mut self) -> u16 {
            self.join(1, "alice", &key(1));
            self.join(2, "bob", &key(2));
            self.calls.call(self.now, 1, 77, "bob", vec![addr(1)]);
            self.calls.accept(2, 77, vec![addr(2)]);
            let out = self.drain();
            match &out[..] {
                [_, (1, ServerMessage::Connected { channel, .. }), (2, _)] => *channel,
                other => panic!("{other:?}"),
            }
        }
    }

    fn registered(name: &str) -> ServerMessage {
        ServerMessage::Registered { name: name.into() }
    }

    fn ended(call_id: u64, reason: EndReason) -> ServerMessage {
        ServerMessage::Ended { call_id, reason }
    }

    fn code(signal: &ServerMessage) -> &str {
        match signal {
            ServerMessage::Error { code, .. } => code,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn wire_form_matches_the_design() {
        let frame = crate::control::encode(&ServerMessage::Ended {
            call_id: 3,
            reason: EndReason::NoAnswer,
        });
        assert_eq!(
            &frame[4..],
            br#"{"type":"ended","call_id":3,"reason":"no_answer"}"#
        );
        let frame = crate::control::encode(&ServerMessage::Connected {
            call_id: 1,
            candidates: vec![addr(1)],
            secret: "00".into(),
            channel: 0x4001,
        });
        assert_eq!(
            &frame[4..],
            br#"{"type":"connected","call_id":1,"candidates":["203.0.113.1:40001"],"secret":"00","channel":16385}"#
        );
    }

    #[test]
    fn a_name_is_first_come_and_bound_to_its_key() {
        let mut h = H::new();
        assert_eq!(h.join(1, "alice", &key(1)), [(1, registered("alice"))]);
        assert_eq!(
            h.calls.name_key("alice"),
            Some(*key(1).verifying_key().as_bytes())
        );
        // Another key: refused, and the name stays with the first.
        let out = h.join(2, "alice", &key(2));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, code(&out[0].1)), (2, "name_taken"));
        assert_eq!(h.calls.stats().online, 1);
        // A signature over another connection's challenge, or garbage: bad_signature.
        let challenge = h.calls.open(3);
        let other = h.calls.open(4);
        let (pk, sig) = sign(&key(3), "carol", &other);
        h.calls.register(3, "carol", &pk, &sig);
        h.calls.register(3, "carol", &pk, "zz");
        h.calls.register(3, "carol", "00", &sig);
        let (_, sig_for_dave) = sign(&key(3), "dave", &challenge);
        h.calls.register(3, "carol", &pk, &sig_for_dave);
        let out = h.drain();
        assert_eq!(out.len(), 4);
        assert!(
            out.iter()
                .all(|(c, s)| *c == 3 && code(s) == "bad_signature")
        );
        assert_eq!(h.calls.name_key("carol"), None);
        // Bad names, and the reserved echo.
        for name in ["", "echo", "ECHO", "a b", "x/y", &"n".repeat(33)] {
            let (pk, sig) = sign(&key(3), name, &challenge);
            h.calls.register(3, name, &pk, &sig);
            let out = h.drain();
            assert_eq!(code(&out[0].1), "bad_name", "{name:?}");
        }
        assert!(valid_name("Zoë_1.x-y"));
        assert_eq!(h.calls.stats().registrations_refused, 11);
        assert!(h.calls.take_names_changed());
        assert!(!h.calls.take_names_changed());
    }

    #[test]
    fn the_same_key_on_a_new_connection_takes_the_name_over() {
        let mut h = H::new();
        h.connect();
        // Bob reconnects: his old connection's call ends, alice sees peer_lost.
        let out = h.join(5, "bob", &key(2));
        assert!(
            out.contains(&(1, ended(77, EndReason::PeerLost))),
            "{out:?}"
        );
        assert!(
            out.contains(&(2, ended(77, EndReason::ServerError))),
            "{out:?}"
        );
        assert!(
            out.iter().any(|(c, s)| *c == 2
                && matches!(s, ServerMessage::Error { code, .. } if code == "replaced"))
        );
        assert_eq!(out.last(), Some(&(5, registered("bob"))));
        // Calls to bob now ring the new connection; the old one's close changes nothing.
        h.calls.closed(2);
        h.calls.call(h.now, 1, 78, "bob", vec![]);
        let out = h.drain();
        assert!(
            matches!(&out[..], [(5, ServerMessage::Incoming { call_id: 78, from, .. })] if from == "alice"),
            "{out:?}"
        );
        assert_eq!(h.calls.stats().online, 2);
    }

    #[test]
    fn offline_busy_and_unregistered_calls_end_at_once() {
        let mut h = H::new();
        h.join(1, "alice", &key(1));
        h.calls.call(h.now, 1, 1, "nobody", vec![]);
        assert_eq!(h.drain(), [(1, ended(1, EndReason::Offline))]);
        h.calls.call(h.now, 1, 2, "alice", vec![]);
        assert_eq!(h.drain(), [(1, ended(2, EndReason::Busy))]);
        // Not registered: an error and the call ends.
        h.calls.open(9);
        h.calls.call(h.now, 9, 3, "alice", vec![]);
        let out = h.drain();
        assert_eq!(code(&out[0].1), "not_registered");
        assert_eq!(out[1], (9, ended(3, EndReason::ServerError)));
        // Bob in a call with alice: carol's call to either is busy, and so is alice's second.
        h.join(2, "bob", &key(2));
        h.join(3, "carol", &key(3));
        h.calls.call(h.now, 1, 10, "bob", vec![]);
        h.drain();
        h.calls.call(h.now, 3, 11, "bob", vec![]);
        h.calls.call(h.now, 3, 12, "alice", vec![]);
        h.calls.call(h.now, 1, 13, "carol", vec![]);
        // A repeated Call is ignored.
        h.calls.call(h.now, 1, 10, "bob", vec![]);
        assert_eq!(
            h.drain(),
            [
                (3, ended(11, EndReason::Busy)),
                (3, ended(12, EndReason::Busy)),
                (1, ended(13, EndReason::Busy)),
            ]
        );
    }

    #[test]
    fn ring_accept_connects_both_with_the_same_secret_and_channel() {
        let mut h = H::new();
        h.join(1, "alice", &key(1));
        h.join(2, "bob", &key(2));
        let many: Vec<SocketAddr> = (0..12).map(addr).collect();
        h.calls.call(h.now, 1, 77, "bob", many.clone());
        assert_eq!(
            h.drain(),
            [(
                2,
                ServerMessage::Incoming {
                    call_id: 77,
                    from: "alice".into(),
                    candidates: many[..MAX_CANDIDATES].to_vec(),
                }
            )]
        );
        h.calls.ringing(2, 77);
        h.calls.ringing(1, 77); // The caller cannot ring.
        h.calls.ringing(2, 99); // Another call id: nothing.
        assert_eq!(h.drain(), [(1, ServerMessage::Ringing { call_id: 77 })]);
        h.calls.accept(1, 77, vec![]); // Only the callee accepts.
        assert!(h.drain().is_empty());
        h.calls.accept(2, 77, vec![addr(2)]);
        let out = h.drain();
        let [
            (
                1,
                ServerMessage::Connected {
                    call_id: 77,
                    candidates: to_alice,
                    secret: s1,
                    channel: c1,
                },
            ),
            (
                2,
                ServerMessage::Connected {
                    call_id: 77,
                    candidates: to_bob,
                    secret: s2,
                    channel: c2,
                },
            ),
        ] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!(to_alice, &[addr(2)]);
        assert_eq!(to_bob, &many[..MAX_CANDIDATES]);
        assert_eq!((s1, c1), (s2, c2));
        assert_eq!(unhex(s1).unwrap().len(), SECRET_LEN);
        assert!(channel::is_valid_channel(*c1));
        // A second accept is ignored; a second call gets another secret.
        h.calls.accept(2, 77, vec![]);
        assert!(h.drain().is_empty());
        h.calls.hang_up(1, 77);
        assert_eq!(h.drain(), [(2, ended(77, EndReason::HungUp))]);
        h.calls.call(h.now, 1, 78, "bob", vec![]);
        h.calls.accept(2, 78, vec![]);
        let out = h.drain();
        assert!(matches!(&out[1].1, ServerMessage::Connected { secret, .. } if secret != s1));
    }

    #[test]
    fn reject_busy_cancel_and_hang_up_from_either_side() {
        let mut h = H::new();
        h.join(1, "alice", &key(1));
        h.join(2, "bob", &key(2));
        let ring = |h: &mut H, id| {
            h.calls.call(h.now, 1, id, "bob", vec![]);
            h.drain();
        };
        ring(&mut h, 1);
        h.calls.reject(1, 1, EndReason::Rejected); // Not the callee: ignored.
        h.calls.reject(2, 1, EndReason::Rejected);
        assert_eq!(h.drain(), [(1, ended(1, EndReason::Rejected))]);
        ring(&mut h, 2);
        h.calls.reject(2, 2, EndReason::Busy);
        assert_eq!(h.drain(), [(1, ended(2, EndReason::Busy))]);
        ring(&mut h, 3);
        h.calls.reject(2, 3, EndReason::NoAnswer); // Any other reason is a reject.
        assert_eq!(h.drain(), [(1, ended(3, EndReason::Rejected))]);
        ring(&mut h, 4);
        h.calls.hang_up(1, 4);
        assert_eq!(h.drain(), [(2, ended(4, EndReason::Cancelled))]);
        ring(&mut h, 5);
        h.calls.hang_up(2, 5);
        assert_eq!(h.drain(), [(1, ended(5, EndReason::Rejected))]);
        ring(&mut h, 6);
        h.calls.accept(2, 6, vec![]);
        h.drain();
        h.calls.hang_up(2, 999); // Not this call.
        h.calls.hang_up(2, 6);
        assert_eq!(h.drain(), [(1, ended(6, EndReason::HungUp))]);
        assert_eq!(h.calls.stats().calls, 0);
        // After all that, both are free again.
        ring(&mut h, 7);
        assert_eq!(h.calls.stats().calls, 1);
    }

    #[test]
    fn ringing_ends_with_no_answer_after_30_s() {
        let mut h = H::new();
        h.join(1, "alice", &key(1));
        h.join(2, "bob", &key(2));
        h.calls.call(h.now, 1, 5, "bob", vec![]);
        h.drain();
        h.advance(Duration::from_secs(29));
        assert!(h.drain().is_empty());
        h.advance(Duration::from_secs(1));
        assert_eq!(
            h.drain(),
            [
                (1, ended(5, EndReason::NoAnswer)),
                (2, ended(5, EndReason::NoAnswer))
            ]
        );
        // A connected call never times out.
        h.calls.call(h.now, 1, 6, "bob", vec![]);
        h.calls.accept(2, 6, vec![]);
        h.drain();
        h.advance(Duration::from_secs(300));
        assert!(h.drain().is_empty());
    }

    #[test]
    fn a_closed_connection_or_a_lost_mapping_ends_the_call_with_peer_lost() {
        let mut h = H::new();
        h.connect();
        h.calls.closed(2);
        assert_eq!(h.drain(), [(1, ended(77, EndReason::PeerLost))]);
        assert_eq!(h.calls.stats().online, 1);
        assert_eq!(h.calls.stats().routes, 0);
        // While ringing, the callee leaving ends it too.
        h.join(3, "carol", &key(3));
        h.calls.call(h.now, 1, 8, "carol", vec![]);
        h.drain();
        h.calls.closed(1);
        assert_eq!(h.drain(), [(3, ended(8, EndReason::PeerLost))]);
        // The mapping expires mid-call.
        h.join(4, "dave", &key(4));
        h.calls.call(h.now, 3, 9, "dave", vec![]);
        h.calls.accept(4, 9, vec![]);
        h.drain();
        h.calls.set_mapped(4, None);
        assert_eq!(
            h.drain(),
            [
                (3, ended(9, EndReason::PeerLost)),
                (4, ended(9, EndReason::ServerError))
            ]
        );
        assert_eq!(h.calls.stats().calls, 0);
    }

    #[test]
    fn the_relay_forwards_only_between_the_parties_on_the_channel_of_a_live_call() {
        let mut h = H::new();
        h.join(3, "carol", &key(3));
        let channel = h.connect();
        let frame = channel::encode(channel, b"rtp").unwrap();
        assert_eq!(h.calls.relay(h.now, addr(1), &frame), Some(addr(2)));
        assert_eq!(h.calls.relay(h.now, addr(2), &frame), Some(addr(1)));
        // A registered client not in the call, an unknown address, another channel, junk.
        assert_eq!(h.calls.relay(h.now, addr(3), &frame), None);
        assert_eq!(h.calls.relay(h.now, addr(50), &frame), None);
        let other = if channel == 0x4000 { 0x4001 } else { 0x4000 };
        let wrong = channel::encode(other, b"rtp").unwrap();
        assert_eq!(h.calls.relay(h.now, addr(1), &wrong), None);
        assert_eq!(h.calls.relay(h.now, addr(1), &[0x40, 0, 0, 9]), None);
        let s = h.calls.stats();
        assert_eq!((s.relayed, s.relay_no_route, s.relay_bad_frame), (2, 2, 2));
        // Bob's mapping moves: the relay follows, the old address is refused.
        let moved = SocketAddr::from(([198, 51, 100, 9], 1234));
        h.calls.set_mapped(2, Some(moved));
        assert_eq!(h.calls.relay(h.now, addr(1), &frame), Some(moved));
        assert_eq!(h.calls.relay(h.now, moved, &frame), Some(addr(1)));
        assert_eq!(h.calls.relay(h.now, addr(2), &frame), None);
        // The call ends: nothing more.
        h.calls.hang_up(1, 77);
        assert_eq!(h.calls.relay(h.now, addr(1), &frame), None);
        assert_eq!(h.calls.relay(h.now, moved, &frame), None);
        assert_eq!(h.calls.stats().routes, 0);
    }

    #[test]
    fn a_ringing_call_relays_nothing() {
        let mut h = H::new();
        h.join(1, "alice", &key(1));
        h.join(2, "bob", &key(2));
        h.calls.call(h.now, 1, 1, "bob", vec![]);
        for ch in channel::CHANNEL_MIN..=channel::CHANNEL_MAX {
            let frame = channel::encode(ch, b"x").unwrap();
            assert_eq!(h.calls.relay(h.now, addr(1), &frame), None);
        }
    }

    #[test]
    fn the_token_bucket_caps_a_flood_per_direction() {
        let mut h = H::new();
        let channel = h.connect();
        let small = channel::encode(channel, &[0x80; 100]).unwrap();
        // 100 frames/s with a 1 s burst: a flood at one instant gets 100 through.
        let through = (0..1000)
            .filter(|_| h.calls.relay(h.now, addr(1), &small).is_some())
            .count();
        assert_eq!(through, 100);
        // The other direction has its own bucket.
        assert!(h.calls.relay(h.now, addr(2), &small).is_some());
        // Half a second later, 50 more.
        h.now += Duration::from_millis(500);
        let through = (0..1000)
            .filter(|_| h.calls.relay(h.now, addr(1), &small).is_some())
            .count();
        assert_eq!(through, 50);
        // Big frames: the 64 kB/s cap binds first (1404-byte frames: 45 in a 64,000-byte burst).
        let mut h = H::new();
        let channel = h.connect();
        let big = channel::encode(channel, &[0x80; channel::MAX_PAYLOAD_LEN]).unwrap();
        let through = (0..1000)
            .filter(|_| h.calls.relay(h.now, addr(1), &big).is_some())
            .count();
        assert_eq!(through, 64_000 / big.len());
        // Sustained over 10 s at 200 frames/s: about 64 kB/s plus the burst get through.
        let mut bytes = 0;
        for _ in 0..2000 {
            h.now += Duration::from_millis(5);
            if h.calls.relay(h.now, addr(1), &big).is_some() {
                bytes += big.len();
            }
        }
        assert!(bytes <= 64_000 * 10 + 64_000, "{bytes}");
        assert!(bytes >= 64_000 * 9, "{bytes}");
        assert!(h.calls.stats().relay_rate_limited > 0);
    }

    #[test]
    fn the_echo_service_answers_at_once_and_returns_frames_to_the_sender() {
        let mut h = H::new();
        h.join(1, "alice", &key(1));
        h.calls.call(h.now, 1, 4, ECHO, vec![addr(1)]);
        let out = h.drain();
        let [
            (
                1,
                ServerMessage::Connected {
                    call_id: 4,
                    candidates,
                    secret,
                    channel,
                },
            ),
        ] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert!(candidates.is_empty());
        assert_eq!(unhex(secret).unwrap().len(), SECRET_LEN);
        let frame = channel::encode(*channel, b"hello").unwrap();
        assert_eq!(h.calls.relay(h.now, addr(1), &frame), Some(addr(1)));
        // Busy while in the echo call; the mapping moves and the echo follows.
        h.calls.call(h.now, 1, 5, ECHO, vec![]);
        assert_eq!(h.drain(), [(1, ended(5, EndReason::Busy))]);
        let moved = SocketAddr::from(([198, 51, 100, 9], 1234));
        h.calls.set_mapped(1, Some(moved));
        assert_eq!(h.calls.relay(h.now, moved, &frame), Some(moved));
        h.calls.hang_up(1, 4);
        assert!(h.drain().is_empty());
        assert_eq!(h.calls.relay(h.now, moved, &frame), None);
    }

    #[test]
    fn the_name_table_is_bounded_and_round_trips_through_its_file() {
        let mut h = H::with(CallsConfig {
            max_names: 2,
            ..CallsConfig::default()
        });
        h.join(1, "a", &key(1));
        h.join(2, "b", &key(2));
        let out = h.join(3, "c", &key(3));
        assert_eq!(code(&out[0].1), "server_full");
        // A known name still registers when the table is full.
        h.calls.closed(1);
        assert_eq!(h.join(4, "a", &key(1)), [(4, registered("a"))]);
        assert_eq!(h.calls.stats().names, 2);

        assert!(parse_names("").is_empty());
        let mut text = format_names(&h.calls.names_snapshot());
        text.push_str("bad line\n\nEcho 00\n");
        let names = parse_names(&text);
        assert_eq!(names, h.calls.names_snapshot());
        let mut fresh = Calls::new(
            CallsConfig {
                max_names: 1,
                ..CallsConfig::default()
            },
            [1; 32],
        );
        fresh.load_names(names);
        assert_eq!(fresh.stats().names, 1);
        assert_eq!(
            fresh.name_key("a"),
            Some(*key(1).verifying_key().as_bytes())
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open(ConnId),
        Register(ConnId, u8, u8),
        Call(ConnId, u64, u8),
        Ringing(ConnId, u64),
        Accept(ConnId, u64),
        Reject(ConnId, u64, bool),
        HangUp(ConnId, u64),
        Closed(ConnId),
        Mapped(ConnId, Option<u16>),
        Relay(u16, u16),
        Wait(u16),
    }

    fn arb_op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let conn = 1..5u64;
        let id = 1..4u64;
        prop_oneof![
            conn.clone().prop_map(Op::Open),
            (conn.clone(), 0..3u8, 0..3u8).prop_map(|(c, n, k)| Op::Register(c, n, k)),
            (conn.clone(), id.clone(), 0..4u8).prop_map(|(c, i, n)| Op::Call(c, i, n)),
            (conn.clone(), id.clone()).prop_map(|(c, i)| Op::Ringing(c, i)),
            (conn.clone(), id.clone()).prop_map(|(c, i)| Op::Accept(c, i)),
            (conn.clone(), id.clone(), any::<bool>()).prop_map(|(c, i, b)| Op::Reject(c, i, b)),
            (conn.clone(), id).prop_map(|(c, i)| Op::HangUp(c, i)),
            conn.clone().prop_map(Op::Closed),
            (conn, proptest::option::of(0..4u16)).prop_map(|(c, p)| Op::Mapped(c, p)),
            (0..6u16, 0..3u16).prop_map(|(p, ch)| Op::Relay(p, ch)),
            (0..40_000u16).prop_map(Op::Wait),
        ]
    }

    /// The tables agree with each other, and the relay only sends to a party of a live call.
    fn check(calls: &Calls) {
        assert!(calls.routes.len() <= 2 * calls.calls.len());
        for route in calls.routes.values() {
            let call = &calls.calls[&route.call];
            assert_eq!(call.state, State::Connected);
            let parties: Vec<_> = [Some(call.caller), call.callee]
                .into_iter()
                .flatten()
                .filter_map(|p| calls.clients.get(&p).and_then(|c| c.mapped))
                .collect();
            assert!(parties.contains(&route.to));
            assert_eq!(route.channel, call.channel);
        }
        for (key, call) in &calls.calls {
            for party in [Some(call.caller), call.callee].into_iter().flatten() {
                assert_eq!(calls.clients[&party].call, Some(*key));
            }
        }
        for (conn, c) in &calls.clients {
            if let Some(key) = c.call {
                let call = &calls.calls[&key];
                assert!(call.caller == *conn || call.callee == Some(*conn));
            }
        }
        for (name, conn) in &calls.online {
            assert_eq!(calls.clients[conn].name.as_deref(), Some(&**name));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_sequence_keeps_the_tables_consistent(ops in proptest::collection::vec(arb_op(), 1..80)) {
            let names = ["alice", "bob", "carol", "echo"];
            let mut h = H::new();
            let mut challenges: HashMap<ConnId, String> = HashMap::new();
            for op in ops {
                match op {
                    Op::Open(c) => {
                        h.calls.closed(c);
                        challenges.insert(c, h.calls.open(c));
                    }
                    Op::Register(c, n, k) => {
                        let challenge = challenges.get(&c).cloned().unwrap_or_default();
                        let challenge = if challenge.is_empty() { "00".into() } else { challenge };
                        let (pk, sig) = sign(&key(k), names[usize::from(n)], &challenge);
                        h.calls.register(c, names[usize::from(n)], &pk, &sig);
                    }
                    Op::Call(c, i, n) => h.calls.call(h.now, c, i, names[usize::from(n)], vec![addr(c)]),
                    Op::Ringing(c, i) => h.calls.ringing(c, i),
                    Op::Accept(c, i) => h.calls.accept(c, i, vec![addr(c)]),
                    Op::Reject(c, i, busy) => h.calls.reject(c, i, if busy { EndReason::Busy } else { EndReason::Rejected }),
                    Op::HangUp(c, i) => h.calls.hang_up(c, i),
                    Op::Closed(c) => {
                        h.calls.closed(c);
                        challenges.remove(&c);
                    }
                    Op::Mapped(c, p) => h.calls.set_mapped(c, p.map(|p| addr(u64::from(p)))),
                    Op::Relay(p, ch) => {
                        let frame = channel::encode(channel::CHANNEL_MIN + ch, b"x").unwrap();
                        let _ = h.calls.relay(h.now, addr(u64::from(p)), &frame);
                    }
                    Op::Wait(ms) => h.advance(Duration::from_millis(u64::from(ms))),
                }
                h.drain();
                check(&h.calls);
            }
            for c in 1..5 {
                h.calls.closed(c);
            }
            let s = h.calls.stats();
            proptest::prop_assert_eq!((s.online, s.calls, s.routes), (0, 0, 0));
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let mut h = H::new();
        let challenge = h.calls.open(1);
        let debug = format!("{:?}", h.calls);
        assert!(!debug.contains(&challenge));
        assert!(debug.contains("stats"));
    }
}
