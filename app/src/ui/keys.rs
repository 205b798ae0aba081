//! Every action of the views on a key, and the words that name the key in tooltips.
//!
//! | view     | key          | does                                   |
//! |----------|--------------|----------------------------------------|
//! | main     | Enter        | call the name typed                    |
//! | main     | Ctrl+,       | settings                               |
//! | incoming | Enter        | accept (not in its first half second)  |
//! | incoming | Esc          | reject                                 |
//! | calling  | Esc          | cancel                                 |
//! | in call  | Esc          | hang up                                |
//! | in call  | M            | mute or unmute the microphone          |
//! | in call  | hold Space   | talk, when push-to-talk is on          |
//! | settings | Ctrl+S / Esc | save / cancel                          |
//!
//! Tab and Shift+Tab move between controls in every view, Space or Enter presses the one with
//! the focus (egui's own keyboard navigation).

use std::time::Duration;

use egui::{Key, KeyboardShortcut, Modifiers};

pub(super) const CALL: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::Enter);
pub(super) const SETTINGS: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Comma);
pub(super) const ACCEPT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::Enter);
pub(super) const REJECT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::Escape);
pub(super) const HANG_UP: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::Escape);
pub(super) const MUTE: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::M);
pub(super) const SAVE: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::S);
pub(super) const CANCEL: KeyboardShortcut = KeyboardShortcut::new(Modifiers::NONE, Key::Escape);
/// Held to talk when push-to-talk is on.
pub(super) const TALK: Key = Key::Space;

/// Enter does not accept a call that came in less than this long ago.
pub(super) const ACCEPT_GRACE: Duration = Duration::from_millis(500);

/// Whether `shortcut` was pressed this frame (and takes the key, so that nothing else acts on
/// it).
pub(super) fn pressed(ui: &egui::Ui, shortcut: KeyboardShortcut) -> bool {
    ui.input_mut(|i| i.consume_shortcut(&shortcut))
}

/// A tooltip naming what a control does and its key, e.g. "Accept the call (Enter)".
pub(super) fn hint(ui: &egui::Ui, what: &str, shortcut: KeyboardShortcut) -> String {
    format!("{what} ({})", ui.ctx().format_shortcut(&shortcut))
}
