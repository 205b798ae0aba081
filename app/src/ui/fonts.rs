//! Fonts for names and messages in any script.
//!
//! egui's own fonts (Ubuntu-Light, Hack, Noto Emoji, the emoji icon font) cover Latin, Cyrillic,
//! Greek and monochrome emoji; a Chinese, Japanese, Korean, Arabic, Hebrew, Devanagari or Thai
//! name drawn with them alone is a row of empty boxes. The rest comes from the fonts installed on
//! the system, found on demand by egui's [`SystemFontProvider`]: when a character is in none of
//! the fonts egui has, it asks fontconfig (through `libfontconfig.so.1`, opened at run time) for
//! the font the system itself would use for that script and locale, memory-maps it and appends
//! it to the family's fallbacks, after egui's fonts, so Latin text keeps its look.
//!
//! ```text
//!   text with '张' -> egui's fonts miss it -> FontProvider::font_for('张', Proportional)
//!     -> fontique: system fonts enumerated once, on a thread started with the provider
//!        (a lookup before that is done waits for it)
//!     -> the fontconfig fallback for (Han, locale) that has the glyph -> appended, drawn
//! ```
//!
//! The app installs it with `ctx.add_font_provider(fonts::system_fallback())` when it starts
//! (and sets `NativeOptions::system_font_fallback` to false: eframe is built without its own
//! `system_fonts`, so its stand-in would only log that it found nothing). Tests with a bare
//! [`egui::Context`] or `egui_kittest` install it the same way. [`coverage`] says which scripts
//! render and with which font, for a log line or a diagnostics view.
//!
//! Enumerating the system fonts took 17 ms on the test machine (24 faces through fontconfig's
//! cache), and a lookup of every script of [`SAMPLES`] 60 ms more; it runs on the provider's
//! thread, started by [`system_fallback`], so the first frame only waits for it if it shows a
//! character egui's fonts lack.
//!
//! Fonts that fontconfig cannot read are left out by fontconfig; a face that fails to parse, or
//! lacks an outline for the glyph, is skipped by the provider. A panic inside the discovery
//! (fontique unwraps fontconfig's answers, and panics when fontconfig knows no font at all) is
//! caught here: it is logged once and only egui's scripts render from then on. Without
//! `libfontconfig.so.1` no system font is found. A CJK font is not on every system: the Debian
//! package recommends `fonts-wqy-microhei` (or an installed `fonts-noto-cjk`).
//!
//! [`SystemFontProvider`]: egui_system_font_provider::SystemFontProvider

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use egui::epaint::text::{FallbackRequest, FontInsert};
use egui::{FontFamily, FontId, FontProvider};
use egui_system_font_provider::SystemFontProvider;

/// A script and characters of it to look for, in [`SAMPLES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The script's name, as a log line or a diagnostics view shows it.
    pub script: &'static str,
    /// Characters of the script; a font covers the script when it has all of them.
    pub text: &'static str,
}

/// The scripts names and messages are checked against. egui's fonts cover the first four;
/// the others need a system font.
pub const SAMPLES: &[Sample] = &[
    Sample::new("Latin", "Aé"),
    Sample::new("Cyrillic", "Ж"),
    Sample::new("Greek", "Ω"),
    Sample::new("Emoji", "😀"),
    Sample::new("Chinese", "中张"),
    Sample::new("Japanese", "日あ"),
    Sample::new("Korean", "한"),
    Sample::new("Arabic", "ع"),
    Sample::new("Hebrew", "א"),
    Sample::new("Devanagari", "क"),
    Sample::new("Thai", "ก"),
];

impl Sample {
    const fn new(script: &'static str, text: &'static str) -> Self {
        Self { script, text }
    }
}

/// A new provider of system fonts: `ctx.add_font_provider(fonts::system_fallback())`. It starts
/// enumerating the system fonts on a thread of its own and returns at once. One per context:
/// a second one would enumerate the fonts again.
pub fn system_fallback() -> Arc<dyn FontProvider> {
    Arc::new(Guarded {
        inner: SystemFontProvider::new(),
        failed: AtomicBool::new(false),
    })
}

/// egui's system font provider, with its panics caught: after the first one it finds nothing.
struct Guarded {
    inner: SystemFontProvider,
    failed: AtomicBool,
}

impl FontProvider for Guarded {
    fn font_for(&self, request: &FallbackRequest<'_>) -> Option<FontInsert> {
        if self.failed.load(Ordering::Relaxed) {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| self.inner.font_for(request))) {
            Ok(Some(found)) => {
                tracing::debug!(font = %found.name, text = request.cluster, "system font");
                Some(found)
            }
            Ok(None) => {
                tracing::debug!(text = request.cluster, "no system font has it");
                None
            }
            Err(_) => {
                self.failed.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "finding system fonts failed (the panic above): only Latin, Cyrillic, \
                     Greek and emoji will render"
                );
                None
            }
        }
    }
}

/// Which font draws a script in the proportional family, from [`coverage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// From [`SAMPLES`].
    pub script: &'static str,
    /// The font that has the sample's first character (egui's name for it: `Ubuntu-Light`, or
    /// `system:FAMILY:STYLE:INDEX` for a system font), or `None` when a character of the sample
    /// is in no font.
    pub font: Option<String>,
}

impl Coverage {
    /// True when every character of the script's sample has a font.
    pub fn covered(&self) -> bool {
        self.font.is_some()
    }
}

/// For each script in [`SAMPLES`], the font that draws it. Asks the font providers for what the
/// installed fonts lack, so the first call may wait for the system fonts to be enumerated (see
/// the module docs for how long): call it once, for diagnostics, not every frame.
pub fn coverage(ui: &egui::Ui) -> Vec<Coverage> {
    let font_id = FontId::new(14.0, FontFamily::Proportional);
    ui.fonts_mut(|fonts| {
        SAMPLES
            .iter()
            .map(|sample| {
                let covered = fonts.has_glyphs(&font_id, sample.text);
                let font = sample.text.chars().next().filter(|_| covered).map(|c| {
                    fonts
                        .characters(&font_id.family)
                        .get(&c)
                        .and_then(|names| names.first().cloned())
                        .unwrap_or_else(|| "a system font".to_owned())
                });
                Coverage {
                    script: sample.script,
                    font,
                }
            })
            .collect()
    })
}

/// The scripts of [`SAMPLES`] that no font draws, for a log line: `["Thai", "Devanagari"]`.
pub fn missing_scripts(coverage: &[Coverage]) -> Vec<&'static str> {
    coverage
        .iter()
        .filter(|c| !c.covered())
        .map(|c| c.script)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// egui's own fonts: the four scripts they are documented to cover, and none of the others,
    /// so a test that finds CJK with the system fallback shows the fallback found it.
    #[test]
    fn egui_fonts_alone_cover_latin_cyrillic_greek_emoji_only() {
        let ctx = egui::Context::default();
        let mut found = Vec::new();
        let mut output = ctx.run_ui(egui::RawInput::default(), |ui| found = coverage(ui));
        // Nothing renders the texture updates here; dropping them unused is a bug to epaint.
        output.textures_delta.clear();
        let covered: Vec<&str> = found
            .iter()
            .filter(|c| c.covered())
            .map(|c| c.script)
            .collect();
        assert_eq!(
            covered,
            ["Latin", "Cyrillic", "Greek", "Emoji"],
            "{found:?}"
        );
        assert_eq!(
            missing_scripts(&found),
            [
                "Chinese",
                "Japanese",
                "Korean",
                "Arabic",
                "Hebrew",
                "Devanagari",
                "Thai"
            ]
        );
        assert_eq!(found[0].font.as_deref(), Some("Ubuntu-Light"), "{found:?}");
    }
}
