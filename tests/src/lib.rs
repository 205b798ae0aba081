//! Helpers for Pinhole's end-to-end tests: find and start the workspace's real binaries.
//!
//! The binaries are built by `cargo build --workspace --bins` (the test command does it before
//! `cargo test`); tests find them next to their own executable, in the same profile directory.

use std::path::PathBuf;
use std::process::Command;

/// Path of a binary of this workspace, built in the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe>  ->  target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A `Command` for a workspace binary.
pub fn command(name: &str) -> Command {
    Command::new(binary(name))
}
