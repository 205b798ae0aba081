//! Names: which names may be registered, what a registration signs, the registration itself
//! (its checks in order of cost), the name table (each name bound to the first public key that
//! registered it, no two names with the same confusable skeleton, a quota per key) and the
//! names file's text.

use std::collections::HashMap;
use std::time::Instant;

use super::{Calls, EndReason, ServerMessage};
use crate::server::{ConnId, hex, unhex};

/// The echo service's name: calls to it are answered by the server.
pub const ECHO: &str = "echo";
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

/// The form in which two names are compared: the UTS #39 confusable skeleton of the lowercased
/// skeleton (so `аlice` with a Cyrillic `а`, fullwidth `ａｌｉｃｅ`, `Alice` and `alice` are the same
/// name, and so are `I`, `l` and `1`, or `rn` and `m`).
pub fn name_skeleton(name: &str) -> String {
    let lower: String = unicode_security::skeleton(name)
        .flat_map(char::to_lowercase)
        .collect();
    unicode_security::skeleton(&lower).collect()
}

/// Why a name cannot be bound to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BindError {
    /// The name belongs to another key.
    Taken,
    /// Another name that looks the same (the same [`name_skeleton`]) is bound.
    Confusable,
    /// The key holds as many names as it may.
    KeyQuota,
    /// The table is at its cap.
    Full,
}

/// The name table: at most `max` names, each bound to a public key for good; no two names with
/// the same [`name_skeleton`].
#[derive(Debug)]
pub(super) struct Names {
    table: HashMap<Box<str>, [u8; 32]>,
    /// Skeleton to name.
    skeletons: HashMap<Box<str>, Box<str>>,
    /// Names per key.
    per_key: HashMap<[u8; 32], u32>,
    max: usize,
    changed: bool,
}

impl Names {
    pub(super) fn new(max: usize) -> Self {
        Names {
            table: HashMap::new(),
            skeletons: HashMap::new(),
            per_key: HashMap::new(),
            max,
            changed: false,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The key `name` is bound to.
    pub(super) fn key(&self, name: &str) -> Option<[u8; 32]> {
        self.table.get(name).copied()
    }

    /// Whether `name` could be bound to `key`, a key holding at most `per_key` names: `Ok(true)`
    /// when it would be a new binding, `Ok(false)` when it is bound to `key` already. Cheap
    /// (no signature): checked before the registration's signature is verified.
    pub(super) fn check(
        &self,
        name: &str,
        key: [u8; 32],
        per_key: usize,
    ) -> Result<bool, BindError> {
        match self.table.get(name) {
            Some(bound) if *bound != key => Err(BindError::Taken),
            Some(_) => Ok(false),
            None if self.looks_taken(name) => Err(BindError::Confusable),
            None if self.held_by(key) >= per_key => Err(BindError::KeyQuota),
            None if self.table.len() >= self.max => Err(BindError::Full),
            None => Ok(true),
        }
    }

    /// Binds `name` to `key` (see [`Names::check`]); a name already bound to `key` is fine.
    pub(super) fn bind(
        &mut self,
        name: &str,
        key: [u8; 32],
        per_key: usize,
    ) -> Result<(), BindError> {
        if self.check(name, key, per_key)? {
            self.insert(name, key);
            self.changed = true;
            tracing::info!(name, "name bound to a new key");
        }
        Ok(())
    }

    /// Whether `name` looks like a bound name or like the echo service's (`ech0`).
    fn looks_taken(&self, name: &str) -> bool {
        let skeleton = name_skeleton(name);
        skeleton == name_skeleton(ECHO) || self.skeletons.contains_key(skeleton.as_str())
    }

    /// Names `key` holds.
    fn held_by(&self, key: [u8; 32]) -> usize {
        self.per_key.get(&key).map_or(0, |n| *n as usize)
    }

    fn insert(&mut self, name: &str, key: [u8; 32]) {
        self.table.insert(name.into(), key);
        self.skeletons
            .insert(name_skeleton(name).into_boxed_str(), name.into());
        *self.per_key.entry(key).or_default() += 1;
    }

    /// Adds names (from the names file), up to the cap; invalid names, and names that look like
    /// one already loaded, are skipped (a file from a server that did not compare skeletons).
    pub(super) fn load(&mut self, entries: impl IntoIterator<Item = (String, [u8; 32])>) {
        for (name, key) in entries {
            if self.table.len() >= self.max {
                break;
            }
            if !valid_name(&name) || self.table.get(name.as_str()) == Some(&key) {
                continue;
            }
            if self.looks_taken(&name) {
                tracing::warn!(name, "names file: a lookalike of a loaded name, skipped");
                continue;
            }
            self.insert(&name, key);
        }
    }

    /// Caches a binding the cluster's store holds (no checks: the store made them; no cap:
    /// the store is the table). Marks the table changed for a names file kept beside it.
    pub(super) fn insert_bound(&mut self, name: &str, key: [u8; 32]) {
        if self.table.contains_key(name) || !valid_name(name) {
            return;
        }
        self.insert(name, key);
        self.changed = true;
    }

    /// Whether a name was bound since the last call.
    pub(super) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub(super) fn mark_changed(&mut self) {
        self.changed = true;
    }

    /// The table, sorted by name.
    pub(super) fn snapshot(&self) -> Vec<(String, [u8; 32])> {
        let mut v: Vec<_> = self
            .table
            .iter()
            .map(|(n, k)| (n.to_string(), *k))
            .collect();
        v.sort();
        v
    }

    /// Bytes held, roughly: entries with the hash table's spare capacity, and the names.
    pub(super) fn memory_estimate(&self) -> usize {
        use std::mem::size_of;
        self.table.capacity() * (size_of::<Box<str>>() + 32 + 1)
            + self.skeletons.capacity() * (2 * size_of::<Box<str>>() + 1)
            + self.per_key.capacity() * (32 + 4 + 1)
            + self
                .table
                .keys()
                .chain(self.skeletons.keys())
                .chain(self.skeletons.values())
                .map(|n| n.len())
                .sum::<usize>()
    }
}

impl Calls {
    /// Whether the connection has registered a name.
    pub fn is_registered(&self, conn: ConnId) -> bool {
        self.clients.get(&conn).is_some_and(|c| c.name.is_some())
    }

    /// `Register { name, public_key, signature }`, checked from the cheapest: the connection's
    /// and its address's registration limits, the name's rules, the table (taken, a lookalike,
    /// the key's quota, full) and the address's quota of new names; the Ed25519 signature last.
    pub fn register(
        &mut self,
        now: Instant,
        conn: ConnId,
        name: &str,
        public_key: &str,
        signature: &str,
    ) {
        let Some(c) = self.clients.get(&conn) else {
            self.error(conn, "no_hello", "say hello first");
            return;
        };
        let (current, challenge) = (c.name.clone(), c.challenge);
        if !self.admit_registration(now, conn) {
            return;
        }
        if !valid_name(name) {
            self.refuse(
                conn,
                "bad_name",
                "a name has 1 to 32 letters, digits, '.', '_' or '-', and is not \"echo\"",
            );
            return;
        }
        if let Some(current) = current
            && *current != *name
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
        let (Some(key), Some(sig)) = (key, sig) else {
            self.refuse(
                conn,
                "bad_signature",
                "a key is 32 bytes and a signature 64, in hex",
            );
            return;
        };
        let per_key = self.limits.config().names_per_key;
        let new = match self.names.check(name, key, per_key) {
            Ok(new) => new,
            Err(err) => {
                let (code, message) = bind_refusal(err);
                self.refuse(conn, code, message);
                return;
            }
        };
        if new && !self.new_name_allowed(now, conn, false) {
            self.limits.refused += 1;
            self.refuse(
                conn,
                "rate_limited",
                "too many new names from this address: try later",
            );
            return;
        }
        let verified = ed25519_dalek::VerifyingKey::from_bytes(&key)
            .ok()
            .is_some_and(|vk| {
                vk.verify_strict(
                    &registration_message(name, &challenge),
                    &ed25519_dalek::Signature::from_bytes(&sig),
                )
                .is_ok()
            });
        if !verified {
            self.refuse(
                conn,
                "bad_signature",
                "the signature does not verify with that key over this connection's challenge",
            );
            return;
        }
        if new {
            self.new_name_allowed(now, conn, true);
            // In a cluster the name may be bound on another node: the shared store decides.
            if self.cluster.node.is_some() {
                self.cluster.claims.insert(conn, (name.into(), key));
                self.cluster
                    .out
                    .push_back(super::cluster::ClusterOut::Claim {
                        conn,
                        name: name.to_string(),
                        key,
                        skeleton: name_skeleton(name),
                        per_key,
                    });
                return;
            }
        }
        if let Err(err) = self.names.bind(name, key, per_key) {
            let (code, message) = bind_refusal(err);
            self.refuse(conn, code, message);
            return;
        }
        self.complete_registration(conn, name);
    }

    /// The name is bound to the connection's key: it goes online here (taking it over from
    /// an older connection of the same key).
    pub(super) fn complete_registration(&mut self, conn: ConnId, name: &str) {
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
        if self.cluster.node.is_some() {
            self.cluster
                .out
                .push_back(super::cluster::ClusterOut::Online {
                    name: name.to_string(),
                });
        }
    }
}

/// The error code and message of a name that cannot be bound.
fn bind_refusal(err: BindError) -> (&'static str, &'static str) {
    match err {
        BindError::Taken => ("name_taken", "this name belongs to another key"),
        BindError::Confusable => (
            "name_confusable",
            "this name looks like a name that belongs to another key",
        ),
        BindError::KeyQuota => ("too_many_names", "this key holds as many names as it may"),
        BindError::Full => ("server_full", "the server's name table is full"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_follow_the_settings_rules() {
        for ok in [
            "a",
            "alice",
            "Bob-2",
            "x.y_z",
            "ä",
            &"n".repeat(MAX_NAME_CHARS),
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "n".repeat(MAX_NAME_CHARS + 1);
        for bad in ["", "echo", "ECHO", "a b", " alice", "a/b", "a\0", &long] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_table_binds_a_name_to_its_first_key_and_is_capped() {
        let mut names = Names::new(2);
        assert_eq!(names.bind("a", [1; 32], 3), Ok(()));
        assert!(names.take_changed());
        assert_eq!(names.bind("a", [1; 32], 3), Ok(()));
        assert!(!names.take_changed(), "the same key again changes nothing");
        assert_eq!(names.bind("a", [2; 32], 3), Err(BindError::Taken));
        assert_eq!(names.bind("b", [2; 32], 3), Ok(()));
        assert_eq!(names.bind("c", [3; 32], 3), Err(BindError::Full));
        assert_eq!(names.key("a"), Some([1; 32]));
        assert_eq!(names.key("c"), None);
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn lookalike_names_are_one_name() {
        // Cyrillic а (U+0430), fullwidth ｂｏｂ, case, and the usual glyph confusions.
        for (a, b) in [
            ("alice", "\u{430}lice"),
            ("bob", "\u{ff42}\u{ff4f}\u{ff42}"),
            ("bob", "Bob"),
            ("paypal", "p\u{430}yp\u{430}l"),
            ("bill", "biII"),
            ("l1", "Il"),
            ("rn", "m"),
        ] {
            assert_eq!(name_skeleton(a), name_skeleton(b), "{a} {b}");
            let mut names = Names::new(10);
            assert_eq!(names.bind(a, [1; 32], 3), Ok(()));
            assert_eq!(names.bind(b, [2; 32], 3), Err(BindError::Confusable), "{b}");
            assert_eq!(names.bind(b, [1; 32], 3), Err(BindError::Confusable), "{b}");
        }
        for (a, b) in [("alice", "alicia"), ("bob", "bobo"), ("ä", "a")] {
            assert_ne!(name_skeleton(a), name_skeleton(b), "{a} {b}");
        }
        // Nor may anyone look like the echo service.
        let mut names = Names::new(10);
        for echo in ["ech0", "\u{435}cho", "Echo"] {
            assert_eq!(
                names.bind(echo, [1; 32], 3),
                Err(BindError::Confusable),
                "{echo}"
            );
        }
    }

    #[test]
    fn a_key_holds_at_most_its_quota_of_names() {
        // 100,000 names from one key do not fill the table: the fourth is refused.
        let mut names = Names::new(100_000);
        for n in 0..3 {
            assert_eq!(names.bind(&format!("n{n}"), [1; 32], 3), Ok(()));
        }
        let refused = (3..100_000)
            .filter(|n| names.bind(&format!("n{n}"), [1; 32], 3) == Err(BindError::KeyQuota))
            .count();
        assert_eq!(refused, 99_997);
        assert_eq!(names.len(), 3);
        assert_eq!(
            names.bind("n0", [1; 32], 3),
            Ok(()),
            "its own names still register"
        );
        assert_eq!(names.bind("other", [2; 32], 3), Ok(()));
    }

    #[test]
    fn a_names_file_with_lookalikes_keeps_the_first() {
        let mut names = Names::new(10);
        names.load(vec![
            ("alice".to_string(), [1; 32]),
            ("\u{430}lice".to_string(), [2; 32]),
        ]);
        assert_eq!(names.snapshot(), vec![("alice".to_string(), [1; 32])]);
    }

    #[test]
    fn the_names_file_round_trips_and_skips_bad_lines() {
        let entries = vec![("alice".to_string(), [0xab; 32]), ("bob".into(), [1; 32])];
        let mut text = format_names(&entries);
        assert!(text.starts_with(&format!("alice {}\n", "ab".repeat(32))));
        text.push_str("bad line\n\nEcho 00\ncarol 0102\n");
        assert_eq!(parse_names(&text), entries);
        let mut names = Names::new(1);
        names.load(parse_names(&text));
        assert_eq!(names.snapshot(), entries[..1]);
        assert!(
            !names.take_changed(),
            "loading is not a change to write back"
        );
    }
}
