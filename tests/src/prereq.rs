//! What a test does when something it needs is missing (root, network namespaces, a sound
//! server, ffmpeg, coturn...).
//!
//! Under the README's test command (`./dev test`, and so CI) every prerequisite is installed and
//! started, so a missing one is a failure: `./dev test` sets [`STRICT_ENV`] and
//! [`missing`] panics. Run by hand (`cargo test`), the test says why it does not run and the
//! caller returns.

/// Set (to any value but `0`) by `./dev test`: missing prerequisites fail the test.
pub const STRICT_ENV: &str = "PINHOLE_TEST_STRICT";

/// True when missing prerequisites must fail the test.
pub fn strict() -> bool {
    std::env::var_os(STRICT_ENV).is_some_and(|v| v != "0")
}

/// Reports that the test cannot run because `what` is missing: panics under `./dev test`,
/// otherwise prints `SKIP: ...` to stderr. The caller returns right after.
///
/// ```no_run
/// fn ffmpeg_decodes_our_rtp() {
///     if which_ffmpeg().is_none() {
///         return pinhole_tests::prereq::missing("ffmpeg is not installed");
///     }
///     // ...
/// }
/// # fn which_ffmpeg() -> Option<()> { None }
/// ```
#[track_caller]
pub fn missing(what: impl std::fmt::Display) {
    if strict() {
        panic!("{what} (the test command installs and starts what tests need: run ./dev test)");
    }
    eprintln!("SKIP: {what}");
}
