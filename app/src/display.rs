//! Is there a display to open a window on? If not, say how to run Pinhole without one.

use std::fmt;

/// What the user can do on a machine with no display.
pub(crate) const HEADLESS_GUIDANCE: &str = "\
Pinhole's desktop app needs a graphical session (X11 or Wayland).
Without one you can:
  - run the app on a virtual display:  xvfb-run -a pinhole
                                        (from a checkout: xvfb-run -a ./dev run)
  - see the headless commands:          pinhole --help";

/// No display server is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoDisplay;

impl fmt::Display for NoDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pinhole: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set)."
        )
    }
}

/// Checks the environment for a display server, the way winit looks for one on Linux.
pub(crate) fn check() -> Result<(), NoDisplay> {
    check_env(|name| std::env::var_os(name))
}

fn check_env(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<(), NoDisplay> {
    let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    if cfg!(target_os = "linux") && !set("DISPLAY") && !set("WAYLAND_DISPLAY") {
        return Err(NoDisplay);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn no_display_variables_means_no_display() {
        assert_eq!(check_env(env(&[])), Err(NoDisplay));
        assert_eq!(check_env(env(&[("DISPLAY", "")])), Err(NoDisplay));
    }

    #[test]
    fn x11_or_wayland_is_enough() {
        assert_eq!(check_env(env(&[("DISPLAY", ":99")])), Ok(()));
        assert_eq!(check_env(env(&[("WAYLAND_DISPLAY", "wayland-0")])), Ok(()));
    }
}
