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
//! - Per-sender limits (`limits.rs`): calls, rings and registrations per connection, caller key
//!   and source address, names per key and new names per address; what is over a limit is
//!   refused to its sender (`rate_limited`) and never reaches anyone else. A repeated ring
//!   yields to another caller. Names are compared by their confusable skeleton
//!   ([`name_skeleton`]).
//!
//! Memory is bounded: one entry per control connection (bounded by the server), at most one
//! call per client, two relay routes per call, and at most [`CallsConfig::max_names`] names.
//!
//! This module is the router (clients, calls, signalling); `names` holds the name table, its
//! rules and its file format, `relay` the routes and their token buckets.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::channel;
pub use crate::control::{E2eHello, EndReason, ServerMessage};
use crate::server::{ConnId, hex};

pub mod cluster;
#[cfg(test)]
mod cluster_tests;
mod limits;
mod names;
mod relay;
#[cfg(test)]
mod tests;

pub use limits::LimitsConfig;
use limits::{Limits, Ring};
use names::Names;
pub use names::{
    ECHO, MAX_NAME_CHARS, format_names, name_skeleton, parse_names, registration_message,
    valid_name,
};
use relay::{Dropped, Relay};

/// A call not accepted within this time ends with `no_answer`.
pub const RING_TIMEOUT: Duration = Duration::from_secs(30);
/// Most candidates passed on per side.
pub const MAX_CANDIDATES: usize = 8;
/// Length of the registration challenge.
pub const CHALLENGE_LEN: usize = 32;

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
    /// Per-sender limits on calls, rings and registrations, and name quotas.
    pub limits: LimitsConfig,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_names: 100_000,
            ring_timeout: RING_TIMEOUT,
            relay_bytes_per_s: 64_000,
            relay_packets_per_s: 100,
            relay_burst: Duration::from_secs(1),
            limits: LimitsConfig::default(),
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
    /// Calls placed since start (admitted: to an online name or the echo service).
    pub calls_placed: u64,
    /// Frames forwarded.
    pub relayed: u64,
    /// Bytes of the frames forwarded (whole ChannelData frames, as received).
    pub relayed_bytes: u64,
    /// Frames from an address with no route (not a party of a connected call).
    pub relay_no_route: u64,
    /// Frames on another channel than the sender's call, or malformed.
    pub relay_bad_frame: u64,
    /// Frames over the direction's token bucket.
    pub relay_rate_limited: u64,
    /// Calls, rings and registrations refused over a per-sender limit (`rate_limited`).
    pub rate_limited: u64,
}

/// A call router's internal call number (not the client's `call_id`).
type CallKey = u64;

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
    /// The relay tokens of the caller and the callee (the echo service's callee token is the
    /// caller's).
    tokens: [[u8; channel::TOKEN_LEN]; 2],
    caller_candidates: Vec<SocketAddr>,
    /// The caller's name key and commitment, for the callee's `Incoming` and `Connected`.
    caller_key: [u8; 32],
    /// The caller revealed its ephemeral key (once per call).
    revealed: bool,
    /// The source addresses of the routes installed for the caller and the callee.
    sources: [Option<relay::Source>; 2],
}

/// The call router. Its `Debug` shows counts only (no keys, challenges or secrets).
pub struct Calls {
    config: CallsConfig,
    /// Challenges, call secrets and channels.
    rng: StdRng,
    names: Names,
    online: HashMap<Box<str>, ConnId>,
    clients: HashMap<ConnId, Client>,
    calls: HashMap<CallKey, Call>,
    next_call: CallKey,
    relay: Relay,
    out: VecDeque<(ConnId, ServerMessage)>,
    stats: CallStats,
    limits: Limits,
    cluster: cluster::ClusterState,
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
        // The salt of the limits' pair ids, apart from the stream of challenges and tokens.
        let mut salt = [0u8; 16];
        StdRng::from_seed(secret.map(|b| b ^ 0x5a)).fill_bytes(&mut salt);
        Calls {
            rng: StdRng::from_seed(secret),
            names: Names::new(config.max_names),
            limits: Limits::new(config.limits.clone(), salt),
            relay: Relay::new(&config),
            config,
            online: HashMap::new(),
            clients: HashMap::new(),
            calls: HashMap::new(),
            next_call: 0,
            out: VecDeque::new(),
            stats: CallStats::default(),
            cluster: cluster::ClusterState::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CallStats {
        CallStats {
            names: self.names.len(),
            online: self.online.len(),
            calls: self.calls.len(),
            routes: self.relay.len(),
            rate_limited: self.limits.refused,
            ..self.stats
        }
    }

    /// The next message for a control connection. (What is said to a remote party goes to
    /// its node instead: [`Calls::poll_cluster`].)
    pub fn poll_signal(&mut self) -> Option<(ConnId, ServerMessage)> {
        loop {
            let (conn, message) = self.out.pop_front()?;
            if conn < cluster::REMOTE_BASE {
                return Some((conn, message));
            }
            self.say_to_remote(conn, message);
        }
    }

    /// Adds names (from the names file) to the table, up to its cap; invalid names are skipped.
    pub fn load_names(&mut self, entries: impl IntoIterator<Item = (String, [u8; 32])>) {
        self.names.load(entries);
    }

    /// Whether a name was bound since the last call (then the names file should be written).
    pub fn take_names_changed(&mut self) -> bool {
        self.names.take_changed()
    }

    /// Marks the name table as changed (a write of the names file failed: try again).
    pub fn mark_names_changed(&mut self) {
        self.names.mark_changed();
    }

    /// Bytes held by the tables (entries with the hash tables' spare capacity, names, and
    /// candidate lists), roughly.
    pub fn memory_estimate(&self) -> usize {
        use std::mem::size_of;
        let names = self.names.memory_estimate();
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
        let remote = (self.cluster.parties.capacity() + self.cluster.remotes.capacity())
            * (size_of::<ConnId>() + size_of::<cluster::Remote>() + 1);
        names
            + online
            + clients
            + calls
            + remote
            + self.relay.memory_estimate()
            + self.limits.memory_estimate()
    }

    /// The name table, sorted by name.
    pub fn names_snapshot(&self) -> Vec<(String, [u8; 32])> {
        self.names.snapshot()
    }

    /// A control connection said hello: returns its registration challenge (hex), for
    /// `Welcome`.
    pub fn open(&mut self, conn: ConnId) -> String {
        let mut challenge = [0u8; CHALLENGE_LEN];
        self.rng.fill_bytes(&mut challenge);
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
        self.cluster.claims.remove(&conn);
        if let Some(c) = self.clients.remove(&conn)
            && let Some(name) = c.name
            && self.online.get(&name) == Some(&conn)
        {
            self.online.remove(&name);
            if self.cluster.node.is_some() {
                self.cluster.out.push_back(cluster::ClusterOut::Offline {
                    name: name.to_string(),
                });
            }
        }
        self.limits.closed(conn);
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

    /// `Call { call_id, to, candidates, commitment }`.
    pub fn call(
        &mut self,
        now: Instant,
        conn: ConnId,
        call_id: u64,
        to: &str,
        candidates: Vec<SocketAddr>,
        commitment: String,
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
        let candidates = passed_on(candidates, c.mapped);
        let Some(caller_key) = self.names.key(&from) else {
            self.ended(conn, call_id, EndReason::ServerError);
            return;
        };
        if !self.admit_call(now, conn, call_id, caller_key) {
            return; // Over a limit: refused to the caller (limits.rs).
        }
        if to == ECHO {
            let key = self.new_call(
                call_id,
                conn,
                None,
                State::Connected,
                Vec::new(),
                caller_key,
            );
            self.connected(key);
            return;
        }
        let callee = match self.online.get(to) {
            Some(&callee) => callee,
            // In a cluster, the node that holds the name's registration is asked.
            None if valid_name(to) && self.cluster.node.is_some() => match self.remote_callee(to) {
                Some(remote) => remote,
                None => return,
            },
            None => {
                self.ended(conn, call_id, EndReason::Offline);
                return;
            }
        };
        match self.admit_ring(now, conn, call_id, caller_key, (callee, to)) {
            Ring::Go => {}
            Ring::Refused => return,
            Ring::Busy => {
                self.ended(conn, call_id, EndReason::Busy);
                return;
            }
        }
        let deadline = now.checked_add(self.config.ring_timeout).unwrap_or(now);
        self.new_call(
            call_id,
            conn,
            Some(callee),
            State::Ringing { deadline },
            candidates.clone(),
            caller_key,
        );
        self.out.push_back((
            callee,
            ServerMessage::Incoming {
                call_id,
                from: from.to_string(),
                candidates,
                key: hex(&caller_key),
                commitment,
            },
        ));
    }

    /// `Ringing { call_id }` from the callee: passed on to the caller.
    pub fn ringing(&mut self, conn: ConnId, call_id: u64) {
        let (key, caller) = match self.call_of(conn, call_id) {
            Some((key, call))
                if call.callee == Some(conn) && matches!(call.state, State::Ringing { .. }) =>
            {
                (key, call.caller)
            }
            _ => return,
        };
        if self.first_ringing(conn, key) {
            self.out
                .push_back((caller, ServerMessage::Ringing { call_id }));
        }
    }

    /// `Accept { call_id, candidates, e2e }` from the callee: both get `Connected`, the caller
    /// with the callee's half of the key exchange.
    pub fn accept(
        &mut self,
        conn: ConnId,
        call_id: u64,
        candidates: Vec<SocketAddr>,
        e2e: E2eHello,
    ) {
        let callee_mapped = self.clients.get(&conn).and_then(|c| c.mapped);
        let Some((key, call)) = self.call_of(conn, call_id) else {
            return;
        };
        if call.callee != Some(conn) || !matches!(call.state, State::Ringing { .. }) {
            return;
        }
        let candidates = if conn >= cluster::REMOTE_BASE {
            candidates // Passed on by the callee's node already.
        } else {
            passed_on(candidates, callee_mapped)
        };
        let caller_candidates = std::mem::take(&mut call.caller_candidates);
        call.state = State::Connected;
        let (caller, channel, tokens, caller_key) =
            (call.caller, call.channel, call.tokens, call.caller_key);
        let callee_key = self.party_key(conn).unwrap_or_default();
        self.out.push_back((
            caller,
            ServerMessage::Connected {
                call_id,
                candidates,
                channel,
                relay_token: hex(&tokens[0]),
                peer_key: hex(&callee_key),
                e2e: Some(e2e),
            },
        ));
        self.out.push_back((
            conn,
            ServerMessage::Connected {
                call_id,
                candidates: caller_candidates,
                channel,
                relay_token: hex(&tokens[1]),
                peer_key: hex(&caller_key),
                e2e: None,
            },
        ));
        self.connected(key);
    }

    /// `Reveal { call_id, e2e }` from the caller of a connected call: passed on to the callee,
    /// once.
    pub fn reveal(&mut self, conn: ConnId, call_id: u64, e2e: E2eHello) {
        let Some((_, call)) = self.call_of(conn, call_id) else {
            return;
        };
        if call.caller != conn || call.state != State::Connected || call.revealed {
            return;
        }
        call.revealed = true;
        if let Some(callee) = call.callee {
            self.out
                .push_back((callee, ServerMessage::Reveal { call_id, e2e }));
        }
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

    /// The server is going away: calls still ringing end with `server_error` for both sides
    /// (connected ones go on until their parties hang up or leave).
    pub fn end_ringing(&mut self) {
        let mut ringing: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Ringing { .. }))
            .map(|(k, _)| *k)
            .collect();
        ringing.sort_unstable();
        for key in ringing {
            let reason = Some(EndReason::ServerError);
            self.end_call(key, reason, reason);
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
        self.limits.sweep(now);
    }

    /// A relay frame (a datagram whose first byte is 64-79) from `from`: where to forward it
    /// and the frame to send there (the same bytes, with the receiver's relay token in place of
    /// the sender's), or `None` to drop it (counted).
    pub fn relay(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let counter = match self.relay.forward(now, from, bytes) {
            Ok((to, token)) => {
                self.stats.relayed += 1;
                self.stats.relayed_bytes += bytes.len() as u64;
                let mut frame = bytes.to_vec();
                channel::set_token(&mut frame, token);
                return Some((to, frame));
            }
            Err(Dropped::NoRoute) => &mut self.stats.relay_no_route,
            Err(Dropped::BadFrame) => &mut self.stats.relay_bad_frame,
            Err(Dropped::RateLimited) => &mut self.stats.relay_rate_limited,
        };
        *counter += 1;
        None
    }

    /// A party's name key: a remote party's as its node said, a client's from the names.
    fn party_key(&self, conn: ConnId) -> Option<[u8; 32]> {
        match self.cluster.parties.get(&conn) {
            Some(remote) => Some(remote.key),
            None => self.names.key(self.clients.get(&conn)?.name.as_deref()?),
        }
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
        caller_key: [u8; 32],
    ) -> CallKey {
        let mut tokens = [[0u8; channel::TOKEN_LEN]; 2];
        self.rng.fill_bytes(&mut tokens[0]);
        if callee.is_some() {
            self.rng.fill_bytes(&mut tokens[1]);
        } else {
            tokens[1] = tokens[0];
        }
        let channel = channel::CHANNEL_MIN | ((self.rng.next_u32() as u16) & 0x0FFF);
        self.next_call += 1;
        self.stats.calls_placed += 1;
        let key = self.next_call;
        self.calls.insert(
            key,
            Call {
                id,
                caller,
                callee,
                state,
                channel,
                tokens,
                caller_candidates,
                caller_key,
                revealed: false,
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
            let (caller, call_id, channel, token) =
                (call.caller, call.id, call.channel, hex(&call.tokens[0]));
            self.out.push_back((
                caller,
                ServerMessage::Connected {
                    call_id,
                    candidates: Vec::new(),
                    channel,
                    relay_token: token,
                    peer_key: String::new(),
                    e2e: None,
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
        // Another node's party: its frames come from that node (a trunk).
        let trunk = parties.map(|p| p.is_some_and(|p| p >= cluster::REMOTE_BASE));
        let (channel, tokens, old) = (call.channel, call.tokens, call.sources);
        // Each party's frames go to the other's mapping; the echo service's back to the caller.
        let echo = parties[1].is_none();
        let new: [Option<relay::Leg>; 2] = std::array::from_fn(|i| {
            let from = mapped[i]?;
            let to = if echo { from } else { mapped[1 - i]? };
            Some(relay::Leg {
                from,
                to,
                token: tokens[i],
                to_token: tokens[1 - i],
                trunk: trunk[i],
            })
        });
        let sources = self.relay.install(key, channel, old, new);
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
        self.relay.remove(key, call.sources);
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
}

/// The candidates of a client that the server passes on to the other side of a call: what it
/// listed that is not a public address (its host addresses on private networks, which the
/// other side's checks try only from the same network) or is on its own mapped address (as
/// the server sees it); at most [`MAX_CANDIDATES`]. So a client cannot aim the other side's
/// connectivity checks at public hosts of its choosing.
fn passed_on(listed: Vec<SocketAddr>, mapped: Option<SocketAddr>) -> Vec<SocketAddr> {
    let own = mapped.map(|m| crate::addr::normalize(m.ip()));
    listed
        .into_iter()
        .filter(|c| {
            let ip = crate::addr::normalize(c.ip());
            !crate::addr::is_public_unicast(ip) || Some(ip) == own
        })
        .take(MAX_CANDIDATES)
        .collect()
}
