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

/// The app's address book.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Book {
    /// Names the user keeps, in the order added.
    pub contacts: Vec<String>,
    /// Latest first.
    pub recent: Vec<Recent>,
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

    /// Records a call, latest first, keeping [`MAX_RECENT`].
    pub fn record(&mut self, name: &str, outgoing: bool, outcome: String) {
        let when = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
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
