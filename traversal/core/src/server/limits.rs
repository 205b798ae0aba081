//! Per-sender limits: bounded tables of token buckets keyed by where a sender is (its
//! [`Source`]: an IPv4 address, or the /64 of an IPv6 one), by its public key, or by a pair
//! (a caller and a callee). A bucket that has refilled is the same as no bucket, so a table
//! forgets it (the server's timer sweeps every table each second): a table holds only senders
//! that spent something recently, and never more than its cap. A new sender that finds a table
//! at its cap is refused: the limits fail closed, memory stays bounded whatever arrives, and no
//! request costs more than a hash lookup (nothing is scanned on the way).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::bucket::{Rate, TokenBucket};

/// Most entries in one table of buckets.
pub const TABLE_CAP: usize = 65_536;

/// A rate limit: `burst` at once, then one every `every`. A zero `every` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub burst: u32,
    pub every: Duration,
}

impl Limit {
    /// No limit at all.
    pub const NONE: Limit = Limit::new(0, Duration::ZERO);

    /// `burst` at once, then one every `every`.
    pub const fn new(burst: u32, every: Duration) -> Self {
        Limit { burst, every }
    }

    /// The bucket rate, `None` for no limit.
    pub(crate) fn rate(&self) -> Option<Rate> {
        (!self.every.is_zero()).then(|| Rate::every(self.every, self.burst))
    }
}

/// Where a sender is, for per-address limits: an IPv4 address, or the /64 of an IPv6 address
/// (one subscriber usually has a whole /64, so per-address limits count the prefix). Kept in
/// 8 bytes: an IPv6 /64 is its prefix; an IPv4 address sits under the prefix `ffff:0::/32`,
/// which is not IPv6 unicast space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(u64);

impl Source {
    /// The source of `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn of(ip: IpAddr) -> Self {
        match crate::addr::normalize(ip) {
            IpAddr::V4(v4) => Source((0xffff_u64 << 48) | u64::from(u32::from(v4))),
            IpAddr::V6(v6) => Source((u128::from(v6) >> 64) as u64),
        }
    }

    /// The source as a number (what another node of a cluster is told of a caller).
    pub(crate) fn key(&self) -> u64 {
        self.0
    }

    /// A source from [`Source::key`].
    pub(crate) fn from_key(key: u64) -> Self {
        Source(key)
    }

    /// The bytes of the source, to key a pair with it.
    pub(crate) fn bytes(&self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

/// A bounded table of token buckets that share one limit.
#[derive(Debug)]
pub(crate) struct Table<K> {
    rate: Option<Rate>,
    cap: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Hash + Eq + Copy> Table<K> {
    pub(crate) fn new(limit: Limit, cap: usize) -> Self {
        Table {
            rate: limit.rate(),
            cap,
            buckets: HashMap::new(),
        }
    }

    /// Whether `key` has a token at `now` (nothing is taken): for a check across tables that
    /// takes from all or none.
    pub(crate) fn has(&self, now: Instant, key: K) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        match self.buckets.get(&key) {
            Some(bucket) => bucket.has(now, &rate, 1),
            // A new key needs room.
            None => TokenBucket::FULL.has(now, &rate, 1) && self.buckets.len() < self.cap,
        }
    }

    /// Takes a token of `key`'s bucket; false (nothing taken) when it has none or the table is
    /// at its cap.
    pub(crate) fn take(&mut self, now: Instant, key: K) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        if let Some(bucket) = self.buckets.get_mut(&key) {
            return bucket.take(now, &rate, 1);
        }
        if self.buckets.len() >= self.cap {
            return false;
        }
        let mut bucket = TokenBucket::FULL;
        let taken = bucket.take(now, &rate, 1);
        if taken {
            self.buckets.insert(key, bucket);
        }
        taken
    }

    /// Forgets the buckets that have refilled.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.buckets.retain(|_, b| !b.is_full(now));
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes held, with the table's spare capacity.
    pub(crate) fn memory_estimate(&self) -> usize {
        self.buckets.capacity()
            * (std::mem::size_of::<K>() + std::mem::size_of::<TokenBucket>() + 1)
    }
}

/// Identifiers of pairs (a caller and a callee name), salted so that nobody outside can choose
/// two pairs that share a bucket: HMAC-SHA1 with a key from the server's secret, 128 bits.
#[derive(Debug, Clone)]
pub(crate) struct PairIds {
    key: [u8; 16],
}

impl PairIds {
    pub(crate) fn new(key: [u8; 16]) -> Self {
        PairIds { key }
    }

    /// The identifier of `parts` (each length-prefixed, so no two lists share bytes).
    pub(crate) fn id(&self, parts: &[&[u8]]) -> u128 {
        use hmac::{KeyInit, Mac};
        let mut out = [0u8; 16];
        if let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&self.key) {
            for part in parts {
                mac.update(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
                mac.update(part);
            }
            out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        }
        u128::from_be_bytes(out)
    }
}

#[cfg(test)]
mod tests {
    // A test's virtual clock starts at any instant; none is read again.
    #![allow(clippy::disallowed_methods)]
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ipv6_counts_per_64_and_ipv4_per_address() {
        let a = |s: &str| Source::of(s.parse().unwrap());
        assert_eq!(a("2001:db8:1:2::1"), a("2001:db8:1:2:ffff::9"));
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
        assert_ne!(a("192.0.2.1"), a("192.0.2.2"));
        assert_eq!(a("192.0.2.1"), a("::ffff:192.0.2.1"));
    }

    #[test]
    fn a_table_limits_each_key_forgets_refilled_ones_and_is_capped() {
        let mut t = Table::new(Limit::new(2, Duration::from_secs(1)), 3);
        let now = Instant::now();
        assert!(t.take(now, 1) && t.take(now, 1));
        assert!(!t.has(now, 1) && !t.take(now, 1));
        // Other keys have their own buckets, up to the cap.
        assert!(t.take(now, 2) && t.take(now, 3));
        assert!(
            !t.has(now, 4) && !t.take(now, 4),
            "the table is full: refused"
        );
        // Two seconds later every bucket has refilled: the sweep forgets them, room again.
        let later = now + Duration::from_secs(2);
        assert!(!t.take(later, 4), "not before the sweep");
        t.sweep(later);
        assert!(t.has(later, 4) && t.take(later, 4));
        assert_eq!(t.len(), 1);
        let mut none = Table::new(Limit::NONE, 0);
        assert!((0..1000).all(|_| none.take(now, 1)));
    }

    #[test]
    fn pair_ids_depend_on_the_key_and_on_where_parts_split() {
        let ids = PairIds::new([1; 16]);
        assert_eq!(ids.id(&[b"ab", b"c"]), ids.id(&[b"ab", b"c"]));
        assert_ne!(ids.id(&[b"ab", b"c"]), ids.id(&[b"a", b"bc"]));
        assert_ne!(ids.id(&[b"ab"]), PairIds::new([2; 16]).id(&[b"ab"]));
    }
}
