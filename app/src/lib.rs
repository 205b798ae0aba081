//! The `pinhole` client: what the desktop app and the headless commands share.
//!
//! The binary (`src/main.rs`) holds the command line and the window; this library holds the parts
//! that tests drive directly.

pub mod contacts;
pub mod engine;
pub mod headless;
pub mod invite;
pub mod settings;
pub mod ui;
