//! Names: which names may be registered, what a registration signs, the name table (each
//! name bound to the first public key that registered it) and the names file's text.

use std::collections::HashMap;

use crate::server::{hex, unhex};

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

/// Why a name cannot be bound to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BindError {
    /// The name belongs to another key.
    Taken,
    /// The table is at its cap.
    Full,
}

/// The name table: at most `max` names, each bound to a public key for good.
#[derive(Debug)]
pub(super) struct Names {
    table: HashMap<Box<str>, [u8; 32]>,
    max: usize,
    changed: bool,
}

impl Names {
    pub(super) fn new(max: usize) -> Self {
        Names {
            table: HashMap::new(),
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

    /// Binds `name` to `key` unless it is bound to another key or the table is full; a name
    /// already bound to `key` is fine.
    pub(super) fn bind(&mut self, name: &str, key: [u8; 32]) -> Result<(), BindError> {
        match self.table.get(name) {
            Some(bound) if *bound != key => Err(BindError::Taken),
            Some(_) => Ok(()),
            None if self.table.len() >= self.max => Err(BindError::Full),
            None => {
                self.table.insert(name.into(), key);
                self.changed = true;
                tracing::info!(name, "name bound to a new key");
                Ok(())
            }
        }
    }

    /// Adds names (from the names file), up to the cap; invalid names are skipped.
    pub(super) fn load(&mut self, entries: impl IntoIterator<Item = (String, [u8; 32])>) {
        for (name, key) in entries {
            if self.table.len() >= self.max {
                break;
            }
            if valid_name(&name) {
                self.table.insert(name.into_boxed_str(), key);
            }
        }
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
        self.table.capacity() * (std::mem::size_of::<Box<str>>() + 32 + 1)
            + self.table.keys().map(|n| n.len()).sum::<usize>()
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
        assert_eq!(names.bind("a", [1; 32]), Ok(()));
        assert!(names.take_changed());
        assert_eq!(names.bind("a", [1; 32]), Ok(()));
        assert!(!names.take_changed(), "the same key again changes nothing");
        assert_eq!(names.bind("a", [2; 32]), Err(BindError::Taken));
        assert_eq!(names.bind("b", [2; 32]), Ok(()));
        assert_eq!(names.bind("c", [3; 32]), Err(BindError::Full));
        assert_eq!(names.key("a"), Some([1; 32]));
        assert_eq!(names.key("c"), None);
        assert_eq!(names.len(), 2);
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
