//! The keys of the people this user has called: trust on first use.
//!
//! The first call with a name records the public key the server vouched for; every later call
//! checks the key against it. A changed key is never overwritten here: the caller warns the user,
//! who compares the call's short authentication string and then accepts the new key with
//! [`Contacts::trust`] (the app's "Trust the new key", `pinhole trust-contact NAME`).
//!
//! The file (`contact-keys.txt` next to the settings) holds one `name key-hex` per line, as the
//! server's names file does (names have no spaces: letters, digits, `.`, `_`, `-`). Blank lines
//! and lines starting with `#` are ignored; any other line that does not parse is an error that
//! names the file and the line, never skipped silently (a lost key would make a changed key look
//! like a first call). Writes are atomic: a temporary file renamed over the old one.
//!
//! The file is the truth: every check, trust and forget reads it again first, so a running
//! engine sees a key trusted meanwhile by the app's button or `pinhole trust-contact`, and never
//! writes an older book over it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The file's name, in the settings file's directory.
pub const FILE_NAME: &str = "contact-keys.txt";

/// What a call's peer key says about the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyCheck {
    /// No key was known for the name; this one is now recorded.
    FirstCall,
    /// The key recorded on an earlier call.
    Same,
    /// Another key than the one recorded (kept until the user trusts the new one).
    Changed {
        /// The recorded key, hex.
        previous: String,
    },
}

impl KeyCheck {
    /// Whether the key differs from the recorded one.
    pub fn is_changed(&self) -> bool {
        matches!(self, KeyCheck::Changed { .. })
    }
}

/// Why the contacts file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ContactsError {
    /// Reading or writing failed.
    #[error("contact keys {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A line is not `name key-hex`.
    #[error("contact keys {} line {line}: {message} (expected `name key-hex`; fix or delete the line)", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// The recorded keys, and the file they live in (none: in memory only).
#[derive(Debug, Clone, Default)]
pub struct Contacts {
    keys: BTreeMap<String, String>,
    path: Option<PathBuf>,
}

impl Contacts {
    /// Reads the file at `path`; a missing file is an empty book (saved on the first call).
    pub fn open(path: PathBuf) -> Result<Contacts, ContactsError> {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ContactsError::Io { path, source }),
        };
        let keys = match parse(&text) {
            Ok(keys) => keys,
            Err((line, message)) => {
                return Err(ContactsError::Malformed {
                    path,
                    line,
                    message,
                });
            }
        };
        Ok(Contacts {
            keys,
            path: Some(path),
        })
    }

    /// An empty book that is never written (tests, a profile without a settings file).
    pub fn in_memory() -> Contacts {
        Contacts::default()
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The key recorded for `name`, hex.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.keys.get(name).map(String::as_str)
    }

    /// Checks `key_hex` against the key recorded for `name`. A first key is recorded and saved
    /// (a failed save is logged: the call goes on, the key is kept in memory); a changed key is
    /// not recorded. A name that cannot be stored (empty, with white space) is always a first call.
    pub fn check(&mut self, name: &str, key_hex: &str) -> KeyCheck {
        self.reload();
        let key = key_hex.trim().to_ascii_lowercase();
        match self.keys.get(name) {
            Some(known) if *known == key => KeyCheck::Same,
            Some(known) => KeyCheck::Changed {
                previous: known.clone(),
            },
            None => {
                if let Err(err) = self.record(name, key) {
                    tracing::warn!(name, %err, "could not record the contact's key");
                }
                KeyCheck::FirstCall
            }
        }
    }

    /// Accepts `key_hex` as `name`'s key (after the user compared the short authentication
    /// string), replacing any recorded one, and saves.
    pub fn trust(&mut self, name: &str, key_hex: &str) -> io::Result<()> {
        self.reload();
        self.record(name, key_hex.trim().to_ascii_lowercase())
    }

    /// Forgets `name`'s key, so the next call with it is a first call again; whether one was
    /// recorded.
    pub fn forget(&mut self, name: &str) -> io::Result<bool> {
        self.reload();
        let had = self.keys.remove(name).is_some();
        if had {
            self.save()?;
        }
        Ok(had)
    }

    /// Reads the file again (changed by another process); a file that became unreadable
    /// leaves the book as it was (logged).
    fn reload(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        match Contacts::open(path) {
            Ok(fresh) => self.keys = fresh.keys,
            Err(err) => tracing::warn!(%err, "contact keys not read again; using the last read"),
        }
    }

    fn record(&mut self, name: &str, key: String) -> io::Result<()> {
        if let Err(message) = check_name(name).and_then(|()| check_key(&key)) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        self.keys.insert(name.to_owned(), key);
        self.save()
    }

    /// Writes the book atomically, readable only by the user.
    fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = String::from("# Pinhole: keys of the people you called (name key).\n");
        for (name, key) in &self.keys {
            text.push_str(name);
            text.push(' ');
            text.push_str(key);
            text.push('\n');
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

/// The file's lines; `Err((line, message))` for the first bad one.
fn parse(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut keys = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err((n + 1, format!("`{line}` is not two words")));
        };
        let key = key.to_ascii_lowercase();
        check_key(&key).map_err(|message| (n + 1, message))?;
        if keys.insert(name.to_owned(), key).is_some() {
            return Err((n + 1, format!("`{name}` is listed twice")));
        }
    }
    Ok(keys)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{name}` cannot be a contact's name"));
    }
    Ok(())
}

/// A key is 32 bytes as 64 lowercase hex digits.
fn check_key(key: &str) -> Result<(), String> {
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("`{key}` is not a key (64 hex digits)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// A new book in a temporary directory (kept while the first value lives) and its file.
    fn new_book() -> (tempfile::TempDir, PathBuf, Contacts) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let book = Contacts::open(path.clone()).unwrap();
        (dir, path, book)
    }

    #[test]
    fn first_call_records_then_same_then_changed_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(FILE_NAME);
        let mut book = Contacts::open(path.clone()).unwrap();
        assert_eq!(book.get("alice"), None);
        assert_eq!(book.check("alice", A), KeyCheck::FirstCall);
        assert_eq!(book.get("alice"), Some(A));

        // A fresh read sees the recorded key: it was saved, and no temporary file is left.
        let mut again = Contacts::open(path.clone()).unwrap();
        assert_eq!(again.check("alice", &A.to_uppercase()), KeyCheck::Same);
        assert_eq!(
            again.check("alice", B),
            KeyCheck::Changed {
                previous: A.to_owned()
            }
        );
        assert_eq!(again.get("alice"), Some(A), "a changed key is not recorded");
        assert_eq!(
            again.check("alice", B),
            KeyCheck::Changed {
                previous: A.to_owned()
            },
            "still changed on the next call"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("alice {A}\n")), "{text}");
        assert!(!text.contains(B));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "only the file, no temporary");
    }

    #[test]
    fn trust_accepts_a_new_key_and_forget_starts_over() {
        let (_dir, path, mut book) = new_book();
        book.check("bob", A);
        book.check("carol.x-1", B);
        book.trust("bob", B).unwrap();
        let mut again = Contacts::open(path.clone()).unwrap();
        assert_eq!(again.check("bob", B), KeyCheck::Same);
        assert_eq!(again.get("carol.x-1"), Some(B));
        assert!(again.forget("bob").unwrap());
        assert!(!again.forget("bob").unwrap());
        let mut third = Contacts::open(path).unwrap();
        assert_eq!(third.check("bob", A), KeyCheck::FirstCall);
    }

    #[test]
    fn a_key_trusted_by_another_process_is_seen_and_kept() {
        // The engine's book, open for the whole run.
        let (_dir, path, mut engine) = new_book();
        assert_eq!(engine.check("bob", A), KeyCheck::FirstCall);
        assert!(engine.check("bob", B).is_changed());
        // The app (or `pinhole trust-contact`) trusts the new key in the file.
        Contacts::open(path.clone())
            .unwrap()
            .trust("bob", B)
            .unwrap();
        assert_eq!(engine.check("bob", B), KeyCheck::Same);
        // The engine's next first call does not write the old key back.
        assert_eq!(engine.check("carol", A), KeyCheck::FirstCall);
        assert_eq!(Contacts::open(path).unwrap().get("bob"), Some(B));
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_readable_only_by_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path, mut book) = new_book();
        book.check("alice", A);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        for (text, line, says) in [
            (format!("# c\n\nalice {A}\nbob\n"), 4, "not two words"),
            (format!("alice {A} extra\n"), 1, "not two words"),
            (format!("alice {A}\nbob 12ab\n"), 2, "not a key"),
            (format!("alice {}\n", "zz".repeat(32)), 1, "not a key"),
            (format!("alice {A}\nalice {B}\n"), 2, "listed twice"),
        ] {
            std::fs::write(&path, &text).unwrap();
            let err = Contacts::open(path.clone()).unwrap_err();
            match &err {
                ContactsError::Malformed { line: l, .. } => assert_eq!(*l, line, "{text}"),
                other => panic!("{other:?}"),
            }
            let shown = err.to_string();
            assert!(shown.contains(&format!("line {line}")), "{shown}");
            assert!(shown.contains(says), "{shown}");
            assert!(shown.contains(FILE_NAME), "{shown}");
        }
    }

    #[test]
    fn an_unreadable_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let err = Contacts::open(dir.path().to_owned()).unwrap_err();
        assert!(matches!(err, ContactsError::Io { .. }), "{err:?}");
    }

    #[test]
    fn in_memory_books_check_without_a_file_and_refuse_bad_input() {
        let mut book = Contacts::in_memory();
        assert_eq!(book.path(), None);
        assert_eq!(book.check("alice", A), KeyCheck::FirstCall);
        assert_eq!(book.check("alice", A), KeyCheck::Same);
        assert!(book.check("alice", B).is_changed());
        assert!(book.trust("two words", A).is_err());
        assert!(book.trust("dave", "not-a-key").is_err());
        assert_eq!(book.get("dave"), None);
        // A name that cannot be stored is never recorded, so never "same".
        assert_eq!(book.check("", A), KeyCheck::FirstCall);
        assert_eq!(book.check("", A), KeyCheck::FirstCall);
    }

    #[test]
    fn key_checks_serialize_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&KeyCheck::FirstCall).unwrap(),
            r#""first_call""#
        );
        assert_eq!(
            serde_json::to_string(&KeyCheck::Changed {
                previous: A.to_owned()
            })
            .unwrap(),
            format!(r#"{{"changed":{{"previous":"{A}"}}}}"#)
        );
    }
}
