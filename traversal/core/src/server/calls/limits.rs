//! What one sender may ask of the call router, so that no stranger can turn it against a user.
//!
//! - Calls: per connection, per caller key and per source address ([`Source`]: an IPv4
//!   address or an IPv6 /64). Rings: per (caller key, callee name), per (caller address,
//!   callee name) and per callee name from everyone together, so the `incoming` a user gets is
//!   bounded however many strangers call.
//!   A `ringing` is passed on once per call. What is over a limit is refused to the sender
//!   (`error` `rate_limited`, and `ended` `server_error` for a call) and never reaches anyone
//!   else: one connection's burst cannot fill another's queue.
//! - Ringing does not hold a user for a stranger: a ring from a caller key that already rang the
//!   same user within [`LimitsConfig::repeat_ring_window`], or from an address whose keys rang
//!   that user [`LimitsConfig::repeat_rings_per_address`] times already, *yields*: while it
//!   rings, a call from anyone else whose ring is not itself a repeat takes its place (the
//!   yielding caller gets `ended` `busy`, the callee `ended` `cancelled`). The count of an
//!   address starts again only after a whole window without a ring. So one key holds a user's
//!   line for at most one ring time (30 s) per 10 minutes, and one address, with any number of
//!   keys, for at most 3 ring times (90 s) per 10 minutes.
//! - Registrations: per connection and per source address, checked before anything else and
//!   before the Ed25519 verification, which comes after every cheap check (name rules, table,
//!   quotas). New names: per source address, and at most [`LimitsConfig::names_per_key`] per key.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::{CallKey, Calls, EndReason, State};
use crate::server::ConnId;
use crate::server::bucket::{Rate, TokenBucket};
use crate::server::limits::{Limit, PairIds, Source, TABLE_CAP, Table};

#[cfg(test)]
mod tests;

/// The call router's per-sender limits. The defaults are what the README states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Call attempts of one control connection.
    pub calls_per_connection: Limit,
    /// Call attempts of one caller key (over all its connections, one after another).
    pub calls_per_key: Limit,
    /// Call attempts from one source address.
    pub calls_per_address: Limit,
    /// Rings from one caller key to one callee name.
    pub rings_per_pair: Limit,
    /// Rings from one address (any keys) to one callee name.
    pub rings_per_address_and_callee: Limit,
    /// Rings to one callee name, from everyone together: a flood guard for the callee's
    /// connection, high enough that keeping it empty takes many addresses.
    pub rings_per_callee: Limit,
    /// A ring from a caller that rang the same callee less than this long before yields to
    /// other callers.
    pub repeat_ring_window: Duration,
    /// Rings from one address (any keys) to one callee within the window that hold the line;
    /// later ones yield.
    pub repeat_rings_per_address: u32,
    /// Registration attempts of one control connection.
    pub registrations_per_connection: Limit,
    /// Registration attempts from one source address.
    pub registrations_per_address: Limit,
    /// Names bound to new keys from one source address.
    pub new_names_per_address: Limit,
    /// Names one key may hold.
    pub names_per_key: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        LimitsConfig {
            calls_per_connection: Limit::new(5, s(3)),
            calls_per_key: Limit::new(10, s(3)),
            calls_per_address: Limit::new(20, s(1)),
            rings_per_pair: Limit::new(3, s(100)),
            rings_per_address_and_callee: Limit::new(6, s(30)),
            rings_per_callee: Limit::new(20, s(1)),
            repeat_ring_window: s(600),
            repeat_rings_per_address: 3,
            registrations_per_connection: Limit::new(3, s(5)),
            registrations_per_address: Limit::new(10, s(6)),
            new_names_per_address: Limit::new(5, s(720)),
            names_per_key: 3,
        }
    }
}

impl LimitsConfig {
    /// The defaults without the per-address limits (benches and tests that run many clients
    /// from one address; with [`crate::server::Config::max_connections_per_ip`] raised too).
    pub fn without_per_address() -> Self {
        LimitsConfig {
            calls_per_address: Limit::NONE,
            rings_per_address_and_callee: Limit::NONE,
            repeat_rings_per_address: u32::MAX,
            registrations_per_address: Limit::NONE,
            new_names_per_address: Limit::NONE,
            ..LimitsConfig::default()
        }
    }

    /// No limits (tests of other things).
    pub fn none() -> Self {
        LimitsConfig {
            calls_per_connection: Limit::NONE,
            calls_per_key: Limit::NONE,
            calls_per_address: Limit::NONE,
            rings_per_pair: Limit::NONE,
            rings_per_address_and_callee: Limit::NONE,
            rings_per_callee: Limit::NONE,
            repeat_ring_window: Duration::ZERO,
            repeat_rings_per_address: u32::MAX,
            registrations_per_connection: Limit::NONE,
            registrations_per_address: Limit::NONE,
            new_names_per_address: Limit::NONE,
            names_per_key: usize::MAX,
        }
    }
}

/// One connection's own buckets and where it comes from.
#[derive(Debug)]
struct PerConn {
    source: Source,
    calls: TokenBucket,
    registrations: TokenBucket,
    /// The call (the router's own number) whose `ringing` was passed on last: one per call.
    rang: Option<CallKey>,
    /// The call id of this connection's ring that yields to other callers.
    yielding: Option<u64>,
}

/// The tables behind [`LimitsConfig`]; at most [`TABLE_CAP`] entries each.
#[derive(Debug)]
pub(super) struct Limits {
    config: LimitsConfig,
    conn_calls: Option<Rate>,
    conn_registrations: Option<Rate>,
    conns: HashMap<ConnId, PerConn>,
    calls_per_key: Table<[u8; 32]>,
    calls_per_address: Table<Source>,
    rings_per_pair: Table<u128>,
    rings_per_address_and_callee: Table<u128>,
    rings_per_callee: Table<u128>,
    registrations_per_address: Table<Source>,
    new_names_per_address: Table<Source>,
    /// When a caller (key, or address) last rang a callee, and how many times since it last
    /// let a whole window pass.
    last_rings: HashMap<u128, (Instant, u32)>,
    ids: PairIds,
    /// Requests refused over a limit.
    pub(super) refused: u64,
}

impl Limits {
    pub(super) fn new(config: LimitsConfig, salt: [u8; 16]) -> Self {
        Limits {
            conn_calls: config.calls_per_connection.rate(),
            conn_registrations: config.registrations_per_connection.rate(),
            conns: HashMap::new(),
            calls_per_key: Table::new(config.calls_per_key, TABLE_CAP),
            calls_per_address: Table::new(config.calls_per_address, TABLE_CAP),
            rings_per_pair: Table::new(config.rings_per_pair, TABLE_CAP),
            rings_per_address_and_callee: Table::new(
                config.rings_per_address_and_callee,
                TABLE_CAP,
            ),
            rings_per_callee: Table::new(config.rings_per_callee, TABLE_CAP),
            registrations_per_address: Table::new(config.registrations_per_address, TABLE_CAP),
            new_names_per_address: Table::new(config.new_names_per_address, TABLE_CAP),
            last_rings: HashMap::new(),
            ids: PairIds::new(salt),
            refused: 0,
            config,
        }
    }

    pub(super) fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// A connection's own entry, made on its first call, ring or registration (a connection
    /// that only keeps a mapping costs nothing here), from an unknown address until
    /// [`Calls::set_source`].
    fn conn(&mut self, conn: ConnId) -> &mut PerConn {
        self.conns.entry(conn).or_insert(PerConn {
            source: Source::of(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            calls: TokenBucket::FULL,
            registrations: TokenBucket::FULL,
            rang: None,
            yielding: None,
        })
    }

    pub(super) fn closed(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Timer: forgets refilled buckets and old rings.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.calls_per_key.sweep(now);
        self.calls_per_address.sweep(now);
        self.rings_per_pair.sweep(now);
        self.rings_per_address_and_callee.sweep(now);
        self.rings_per_callee.sweep(now);
        self.registrations_per_address.sweep(now);
        self.new_names_per_address.sweep(now);
        let window = self.config.repeat_ring_window;
        self.last_rings
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < window);
    }

    /// Bytes held, roughly.
    pub(super) fn memory_estimate(&self) -> usize {
        use std::mem::size_of;
        self.conns.capacity() * (size_of::<ConnId>() + size_of::<PerConn>() + 1)
            + self.last_rings.capacity() * (size_of::<u128>() + size_of::<(Instant, u32)>() + 1)
            + self.calls_per_key.memory_estimate()
            + self.calls_per_address.memory_estimate()
            + self.rings_per_pair.memory_estimate()
            + self.rings_per_address_and_callee.memory_estimate()
            + self.rings_per_callee.memory_estimate()
            + self.registrations_per_address.memory_estimate()
            + self.new_names_per_address.memory_estimate()
    }

    fn source(&self, conn: ConnId) -> Source {
        self.conns
            .get(&conn)
            .map_or(Source::of(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), |c| c.source)
    }

    /// A call attempt of `conn` (key `caller`): takes from the connection's, the key's and the
    /// address's buckets, all or none.
    fn admit_call(&mut self, now: Instant, conn: ConnId, caller: [u8; 32]) -> bool {
        let source = self.source(conn);
        let rate = self.conn_calls;
        let own = rate.is_none_or(|r| self.conn(conn).calls.has(now, &r, 1));
        if !(own && self.calls_per_key.has(now, caller) && self.calls_per_address.has(now, source))
        {
            return false;
        }
        if let Some(r) = rate {
            self.conn(conn).calls.take(now, &r, 1);
        }
        self.calls_per_key.take(now, caller) && self.calls_per_address.take(now, source)
    }

    /// A registration attempt of `conn`.
    fn admit_registration(&mut self, now: Instant, conn: ConnId) -> bool {
        let source = self.source(conn);
        let rate = self.conn_registrations;
        let own = rate.is_none_or(|r| self.conn(conn).registrations.has(now, &r, 1));
        if !(own && self.registrations_per_address.has(now, source)) {
            return false;
        }
        if let Some(r) = rate {
            self.conn(conn).registrations.take(now, &r, 1);
        }
        self.registrations_per_address.take(now, source)
    }
}

/// What a ring may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ring {
    /// Over a limit: refused to the caller, already told.
    Refused,
    /// The callee is in a call (or is the caller).
    Busy,
    /// Ring.
    Go,
}

impl Calls {
    /// The source address of a control connection (the server tells it before handing on a
    /// registration or a call); per-address limits count it.
    pub fn set_source(&mut self, conn: ConnId, ip: IpAddr) {
        if self.clients.contains_key(&conn) {
            self.limits.conn(conn).source = Source::of(ip);
        }
    }

    /// The connection's source, as the per-address limits key it (a cross-node call's
    /// invitation carries the caller's).
    pub(super) fn source_key(&self, conn: ConnId) -> u64 {
        self.limits.source(conn).key()
    }

    /// Sets a remote party's source from [`Calls::source_key`] of its node.
    pub(super) fn set_source_key(&mut self, conn: ConnId, key: u64) {
        if self.clients.contains_key(&conn) {
            self.limits.conn(conn).source = Source::from_key(key);
        }
    }

    /// Requests refused over a limit since start.
    pub fn rate_limited(&self) -> u64 {
        self.limits.refused
    }

    /// A call attempt of `conn` (registered as `caller`): false, with `rate_limited` and
    /// `ended` told to the sender, when over a limit.
    pub(super) fn admit_call(
        &mut self,
        now: Instant,
        conn: ConnId,
        call_id: u64,
        caller: [u8; 32],
    ) -> bool {
        if self.limits.admit_call(now, conn, caller) {
            return true;
        }
        self.refuse_call(conn, call_id, "too many calls: wait a moment");
        false
    }

    /// May `conn` (key `caller`) ring `callee` (registered as `to`) for call `call_id`? Takes the
    /// ring budgets and, if the callee's ring yields to this one, ends that ring.
    pub(super) fn admit_ring(
        &mut self,
        now: Instant,
        conn: ConnId,
        call_id: u64,
        caller: [u8; 32],
        (callee, to): (ConnId, &str),
    ) -> Ring {
        if callee == conn {
            return Ring::Busy;
        }
        let source = self.limits.source(conn);
        let ids = &self.limits.ids;
        let pair = ids.id(&[b"ring-key", &caller, to.as_bytes()]);
        let from_address = ids.id(&[b"ring-address", &source.bytes(), to.as_bytes()]);
        let to_callee = ids.id(&[b"callee", to.as_bytes()]);
        let window = self.limits.config.repeat_ring_window;
        // Rings within the window (counted from the last one) before this one.
        let before = |id: &u128| match self.limits.last_rings.get(id) {
            Some((at, n)) if now.saturating_duration_since(*at) < window => *n,
            _ => 0,
        };
        let (by_key, by_address) = (before(&pair), before(&from_address));
        let repeat = by_key >= 1 || by_address >= self.limits.config.repeat_rings_per_address;
        // The callee's own call: busy unless it is a ring that yields to this one.
        let mut preempt = None;
        if let Some(key) = self.clients.get(&callee).and_then(|c| c.call) {
            let yields = self.calls.get(&key).is_some_and(|c| {
                matches!(c.state, State::Ringing { .. })
                    && c.callee == Some(callee)
                    && self.limits.conns.get(&c.caller).and_then(|p| p.yielding) == Some(c.id)
            });
            if !yields || repeat {
                return Ring::Busy;
            }
            preempt = Some(key);
        }
        let limits = &mut self.limits;
        if !(limits.rings_per_pair.has(now, pair)
            && limits.rings_per_address_and_callee.has(now, from_address)
            && limits.rings_per_callee.has(now, to_callee))
        {
            self.refuse_call(conn, call_id, "too many rings to this name: wait a moment");
            return Ring::Refused;
        }
        limits.rings_per_pair.take(now, pair);
        limits.rings_per_address_and_callee.take(now, from_address);
        limits.rings_per_callee.take(now, to_callee);
        // A full table of recent rings (swept each second) fails safe: the ring is taken as a
        // repeat (it yields).
        let repeat = repeat || self.limits.last_rings.len() + 2 > TABLE_CAP;
        if self.limits.last_rings.len() + 2 <= TABLE_CAP {
            let rings = &mut self.limits.last_rings;
            rings.insert(pair, (now, by_key.saturating_add(1)));
            rings.insert(from_address, (now, by_address.saturating_add(1)));
        }
        self.limits.conn(conn).yielding = repeat.then_some(call_id);
        if let Some(key) = preempt {
            tracing::debug!(callee, "a repeated ring yields to another caller");
            self.end_call(key, Some(EndReason::Busy), Some(EndReason::Cancelled));
        }
        Ring::Go
    }

    /// Whether the callee's `ringing` for call `key` is passed on: once per call.
    pub(super) fn first_ringing(&mut self, conn: ConnId, key: CallKey) -> bool {
        let c = self.limits.conn(conn);
        let first = c.rang != Some(key);
        c.rang = Some(key);
        first
    }

    /// A registration attempt: false, with `rate_limited` told, when over a limit.
    pub(super) fn admit_registration(&mut self, now: Instant, conn: ConnId) -> bool {
        if self.limits.admit_registration(now, conn) {
            return true;
        }
        self.limits.refused += 1;
        self.refuse(
            conn,
            "rate_limited",
            "too many registrations: wait a moment",
        );
        false
    }

    /// Whether `conn`'s address may bind one more name to a new key now (`take`: and count it).
    pub(super) fn new_name_allowed(&mut self, now: Instant, conn: ConnId, take: bool) -> bool {
        let source = self.limits.source(conn);
        let table = &mut self.limits.new_names_per_address;
        if take {
            table.take(now, source)
        } else {
            table.has(now, source)
        }
    }

    fn refuse_call(&mut self, conn: ConnId, call_id: u64, message: &str) {
        self.limits.refused += 1;
        self.error(conn, "rate_limited", message);
        self.ended(conn, call_id, EndReason::ServerError);
    }
}
