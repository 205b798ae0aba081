//! The server's names file on disk: [`crate::calls::parse_names`] and
//! [`crate::calls::format_names`] with the file I/O the sans-IO core leaves out.

use std::io::Write;
use std::path::Path;

use crate::calls::{format_names, parse_names};

/// Reads a names file; a missing file is an empty table.
pub fn read(path: &Path) -> std::io::Result<Vec<(String, [u8; 32])>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_names(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Writes a names file atomically: to a temporary file next to it, synced, then renamed over it.
pub fn write(path: &Path, names: &[(String, [u8; 32])]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format_names(names).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_names_file_round_trips_and_a_missing_one_is_empty() {
        let dir = std::env::temp_dir().join(format!("pinhole-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("names");
        assert!(read(&path).unwrap().is_empty());
        let names = vec![
            ("alice".to_string(), [1u8; 32]),
            ("bob".to_string(), [2u8; 32]),
        ];
        write(&path, &names).unwrap();
        assert_eq!(read(&path).unwrap(), names);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
