//! Names in any script render: egui's fonts draw Latin, Cyrillic, Greek and emoji, and the
//! system font fallback (`pinhole::ui::fonts`, fontconfig through egui's provider) draws CJK
//! with the font the test setup installs (`fonts-wqy-microhei`, scripts/packages/base.txt).
//!
//! The last test runs this binary again with `FONTCONFIG_FILE` pointing at a folder of broken
//! font files, then at one with a copy of the real CJK font among them: no panic, and the real
//! font is found.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use egui::{Context, FontId, RawInput};
use pinhole::ui::fonts::{self, Coverage};
use pinhole_tests::prereq;

/// The Debian package the test setup installs for CJK (and the .deb recommends).
const CJK_PACKAGE: &str = "fonts-wqy-microhei";

/// A name in each script egui draws, and a Chinese one.
const NAMES: &str = "张伟 Жанна Ωμέγα 😀";
const CHINESE: &str = "张伟";

/// One pass of `ctx`, running `f` on its `Ui`; texture updates are dropped (nothing renders).
fn pass<R>(ctx: &Context, mut f: impl FnMut(&egui::Ui) -> R) -> R {
    let mut result = None;
    let mut output = ctx.run_ui(RawInput::default(), |ui| result = Some(f(ui)));
    output.textures_delta.clear();
    result.unwrap()
}

fn has_glyphs(ctx: &Context, font_id: &FontId, text: &str) -> bool {
    pass(ctx, |ui| ui.fonts_mut(|f| f.has_glyphs(font_id, text)))
}

/// The font files fontconfig has with a glyph for '中' (U+4E2D), from `fc-list`; `None` when
/// `fc-list` (package fontconfig) cannot be run.
fn fontconfig_cjk_files() -> Option<Vec<PathBuf>> {
    let out = Command::new("fc-list")
        .args([":charset=4e2d", "file"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut files: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.trim().strip_suffix(':'))
        .map(PathBuf::from)
        .collect();
    files.sort();
    files.dedup();
    Some(files)
}

#[test]
fn egui_fonts_alone_miss_chinese_and_the_system_fallback_draws_it() {
    let proportional = FontId::proportional(14.0);
    let monospace = FontId::monospace(14.0);

    // egui's fonts alone: everything but the Chinese name, so the check below can fail.
    let bare = Context::default();
    assert!(has_glyphs(&bare, &proportional, "Жанна Ωμέγα 😀"));
    assert!(!has_glyphs(&bare, &proportional, CHINESE));

    let ctx = Context::default();
    let started = Instant::now();
    ctx.add_font_provider(fonts::system_fallback());
    let found = has_glyphs(&ctx, &proportional, NAMES);
    let first_lookup = started.elapsed();
    if !found {
        return match fontconfig_cjk_files() {
            Some(files) if !files.is_empty() => panic!(
                "fontconfig has Chinese fonts ({files:?}) but the system fallback found none"
            ),
            _ => prereq::missing(format!(
                "no font for Chinese on this system: install {CJK_PACKAGE} (scripts/packages/base.txt)"
            )),
        };
    }
    assert!(has_glyphs(&ctx, &monospace, NAMES), "monospace");

    let started = Instant::now();
    let coverage: Vec<Coverage> = pass(&ctx, fonts::coverage);
    let all_scripts = started.elapsed();
    eprintln!(
        "system fonts enumerated and a CJK font found in {first_lookup:?}; \
         then every script of SAMPLES in {all_scripts:?}"
    );
    for c in &coverage {
        eprintln!("  {:<10} {}", c.script, c.font.as_deref().unwrap_or("-"));
    }
    eprintln!("  missing: {:?}", fonts::missing_scripts(&coverage));
    let chinese = coverage.iter().find(|c| c.script == "Chinese").unwrap();
    let font = chinese.font.as_deref().unwrap_or_default();
    assert!(font.starts_with("system:"), "{coverage:?}");
    let latin = coverage.iter().find(|c| c.script == "Latin").unwrap();
    assert_eq!(
        latin.font.as_deref(),
        Some("Ubuntu-Light"),
        "egui's font first"
    );
    // The enumeration runs on the provider's thread; the first frame that shows a CJK name
    // waits for it. It should be short.
    assert!(first_lookup < Duration::from_secs(2), "{first_lookup:?}");
}

/// Set in the child process of [`broken_font_files_are_skipped_without_panic`]: whether its
/// fontconfig folder holds a readable CJK font as well as the broken ones.
const CHILD_EXPECTS_CJK: &str = "PINHOLE_FONTS_CHILD_EXPECTS_CJK";

#[test]
fn broken_font_files_are_skipped_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    // Only broken files: fontconfig knows no font at all (fontique panics on that; the
    // provider catches it), and egui's own scripts still render.
    let broken = dir.path().join("broken");
    write_broken_fonts(&broken, None);
    run_child(dir.path(), &broken, false);

    // Broken files around a real CJK font (and a truncated copy of it): the font is found.
    let Some(real) = fontconfig_cjk_files()
        .unwrap_or_default()
        .into_iter()
        .next()
    else {
        return prereq::missing(format!(
            "no CJK font to put among the broken ones: install {CJK_PACKAGE}"
        ));
    };
    let mixed = dir.path().join("mixed");
    write_broken_fonts(&mixed, Some(&real));
    run_child(dir.path(), &mixed, true);
}

/// Fills `dir` with files named like fonts that are not, and with `real` and a truncated copy.
fn write_broken_fonts(dir: &Path, real: Option<&Path>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("broken.ttf"),
        b"not a font at all, just some bytes",
    )
    .unwrap();
    std::fs::write(dir.join("empty.otf"), b"").unwrap();
    // A TrueType collection header that promises faces the file does not hold.
    let mut ttc = b"ttcf\0\x01\0\0\0\0\0\x10".to_vec();
    for i in 0..16u32 {
        ttc.extend_from_slice(&(1000 + i).to_be_bytes());
    }
    std::fs::write(dir.join("lying.ttc"), ttc).unwrap();
    if let Some(real) = real {
        let bytes = std::fs::read(real).unwrap();
        let cut = bytes.len().min(64 * 1024);
        std::fs::write(dir.join("a-truncated.ttc"), &bytes[..cut]).unwrap();
        std::fs::write(dir.join(real.file_name().unwrap()), &bytes).unwrap();
    }
}

/// Runs [`child_draws_what_its_fontconfig_file_lists`] in a new process whose fontconfig sees
/// only `fonts`, and checks that it passed.
fn run_child(scratch: &Path, fonts: &Path, expects_cjk: bool) {
    let conf = fonts.with_extension("conf");
    let cache = scratch.join("cache");
    std::fs::write(&conf, fontconfig_file(fonts, &cache)).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_draws_what_its_fontconfig_file_lists"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env("FONTCONFIG_FILE", &conf)
        .env(CHILD_EXPECTS_CJK, if expects_cjk { "1" } else { "0" })
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child with {} failed ({}):\n{stdout}\n{stderr}",
        fonts.display(),
        out.status
    );
}

/// A fontconfig configuration with one font folder and its own cache.
fn fontconfig_file(fonts: &Path, cache: &Path) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE fontconfig SYSTEM \"fonts.dtd\">\n\
         <fontconfig>\n  <dir>{}</dir>\n  <cachedir>{}</cachedir>\n</fontconfig>\n",
        fonts.display(),
        cache.display()
    )
}

#[test]
#[ignore = "the child process of broken_font_files_are_skipped_without_panic"]
fn child_draws_what_its_fontconfig_file_lists() {
    let Some(expects_cjk) = std::env::var_os(CHILD_EXPECTS_CJK) else {
        panic!("run by broken_font_files_are_skipped_without_panic, with FONTCONFIG_FILE set");
    };
    let ctx = Context::default();
    ctx.add_font_provider(fonts::system_fallback());
    let coverage = pass(&ctx, fonts::coverage);
    eprintln!("{coverage:?}");
    let chinese = coverage.iter().find(|c| c.script == "Chinese").unwrap();
    assert_eq!(chinese.covered(), expects_cjk == "1", "{coverage:?}");
    // egui's own scripts never depend on the system.
    let missing = fonts::missing_scripts(&coverage);
    for script in ["Latin", "Cyrillic", "Greek", "Emoji"] {
        assert!(!missing.contains(&script), "{coverage:?}");
    }
}
