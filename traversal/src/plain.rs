//! Network errors in plain words: what a user is shown instead of the operating system's
//! message and number ("Connection refused (os error 111)").
//!
//! ```
//! let refused = std::io::Error::from_raw_os_error(111); // ECONNREFUSED on Linux
//! let said = traversal::plain::io_error(&refused);
//! assert!(!said.contains("os error"), "{said}");
//! ```

use std::io;

/// What went wrong with a network operation, in words a user can act on; no error numbers.
pub fn io_error(e: &io::Error) -> String {
    use io::ErrorKind::*;
    let said = match e.kind() {
        ConnectionRefused => {
            "nothing answers on that port (is the server running, and are the address and \
             port right?)"
        }
        TimedOut => "no answer in time",
        HostUnreachable => "that computer cannot be reached from here",
        NetworkUnreachable => "no route to that network (is this computer online?)",
        NetworkDown => "the network is down (is this computer online?)",
        ConnectionReset => "the other side cut the connection",
        ConnectionAborted => "the connection was broken off",
        NotConnected => "not connected",
        AddrInUse => "that port is already in use by another program",
        AddrNotAvailable => "that address is not one of this computer's",
        PermissionDenied => {
            "not permitted (a firewall, or a port below 1024 without the privilege to use it)"
        }
        UnexpectedEof => "the other side closed the connection",
        _ => return without_os_number(&e.to_string()),
    };
    said.to_owned()
}

/// `message` without a trailing " (os error N)".
pub fn without_os_number(message: &str) -> String {
    match message.rfind(" (os error ") {
        Some(at) if message.ends_with(')') => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_failures_are_said_in_words_without_numbers() {
        // Linux errno values: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH,
        // EADDRINUSE, EACCES, ECONNRESET.
        for (errno, words) in [
            (111, "nothing answers"),
            (110, "no answer in time"),
            (113, "cannot be reached"),
            (101, "no route"),
            (98, "already in use"),
            (13, "not permitted"),
            (104, "cut the connection"),
        ] {
            let said = io_error(&io::Error::from_raw_os_error(errno));
            assert!(said.contains(words), "errno {errno}: {said}");
            assert!(!said.contains("os error"), "errno {errno}: {said}");
        }
        // Anything else keeps the system's words, without the number.
        let said = io_error(&io::Error::from_raw_os_error(36)); // ENAMETOOLONG
        assert!(!said.is_empty() && !said.contains("os error"), "{said}");
        assert_eq!(io_error(&io::Error::other("custom")), "custom");
    }

    #[test]
    fn only_a_trailing_os_number_is_cut() {
        assert_eq!(
            without_os_number("Connection refused (os error 111)"),
            "Connection refused"
        );
        assert_eq!(without_os_number("no number here"), "no number here");
        assert_eq!(
            without_os_number("(os error 1) first"),
            "(os error 1) first"
        );
    }
}
