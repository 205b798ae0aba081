//! Contacts and recent calls, kept in `contacts.toml` next to the settings file (the settings
//! file is shared with the headless commands; this one is the app's own).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How many recent calls are kept.
pub const MAX_RECENT: usize = 20;

/// One finished (or failed) call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recent {
    /// The other party.
    pub name: String,
    /// We placed it (or it came in).
    pub outgoing: bool,
    /// What happened, in a few words ("2:31", "declined", "missed"...).
    pub outcome: String,
    /// When it ended, seconds since the Unix epoch.
    pub when: u64,
}

/// A contact whose key the user verified: in a call with them, both read the same code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The contact.
    pub name: String,
    /// The key (hex) the call had: verification holds for this key only.
    pub key: String,
    /// When, seconds since the Unix epoch.
    pub when: u64,
}

/// The app's address book.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Book {
    /// Names the user keeps, in the order added.
    pub contacts: Vec<String>,
    /// Latest first.
    pub recent: Vec<Recent>,
    /// Contacts verified by comparing the code in a call, with the key they had then.
    pub verified: Vec<Verified>,
}

impl Book {
    /// Adds a contact (once).
    pub fn add_contact(&mut self, name: &str) {
        let name = name.trim();
        if !name.is_empty() && !self.contacts.iter().any(|c| c == name) {
            self.contacts.push(name.to_owned());
        }
    }

    /// Removes a contact.
    pub fn remove_contact(&mut self, name: &str) {
        self.contacts.retain(|c| c != name);
    }

    /// Marks `name` verified with `key` (hex), replacing an earlier mark for another key.
    pub fn verify(&mut self, name: &str, key: &str) {
        let key = key.trim().to_ascii_lowercase();
        self.verified.retain(|v| v.name != name);
        self.verified.push(Verified {
            name: name.to_owned(),
            key,
            when: now(),
        });
    }

    /// Whether `name` was verified with this very `key` (a changed key is not verified).
    pub fn is_verified(&self, name: &str, key: Option<&str>) -> bool {
        key.is_some_and(|key| {
            self.verified
                .iter()
                .any(|v| v.name == name && v.key.eq_ignore_ascii_case(key.trim()))
        })
    }

    /// Records a call, latest first, keeping [`MAX_RECENT`].
    pub fn record(&mut self, name: &str, outgoing: bool, outcome: String) {
        let when = now();
        self.recent.insert(
            0,
            Recent {
                name: name.to_owned(),
                outgoing,
                outcome,
                when,
            },
        );
        self.recent.truncate(MAX_RECENT);
    }
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `contacts.toml` in the settings file's directory.
pub fn path_next_to(settings: &Path) -> PathBuf {
    settings.with_file_name("contacts.toml")
}

/// Reads the book; a missing file is an empty book, a broken one an error in words.
pub fn load(path: &Path) -> Result<Book, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| format!("{} could not be read: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Book::default()),
        Err(e) => Err(format!("{} could not be read: {e}", path.display())),
    }
}

/// Writes the book (a temporary file renamed over the old one).
pub fn save(path: &Path, book: &Book) -> Result<(), String> {
    let text = toml::to_string(book).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("contacts not saved: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_holds_for_the_key_it_was_made_with_and_survives_the_file() {
        let mut book = Book::default();
        assert!(!book.is_verified("bob", Some("AA")));
        book.verify("bob", "AA");
        assert!(book.is_verified("bob", Some("aa")));
        assert!(
            !book.is_verified("bob", Some("bb")),
            "a changed key is not verified"
        );
        assert!(!book.is_verified("bob", None));
        assert!(!book.is_verified("carol", Some("aa")));
        book.verify("bob", "bb");
        assert_eq!(book.verified.len(), 1, "one mark per contact");
        assert!(book.is_verified("bob", Some("bb")));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.toml");
        save(&path, &book).unwrap();
        assert_eq!(load(&path).unwrap(), book);
        // A book from before verification reads as none verified.
        std::fs::write(&path, "contacts = [\"bob\"]\n").unwrap();
        assert!(load(&path).unwrap().verified.is_empty());
    }
}
