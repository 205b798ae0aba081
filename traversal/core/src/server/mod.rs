//! The server side, sans-IO.
//!
//! - this module's own items: registrations, the first acknowledgement, P4, probes, keepalive
//!   answers and the dispatch of relay frames, [`Server`] (its control connection and its UDP
//!   in files of their own);
//! - [`calls`]: names with keys, call signalling, the relay and the echo service;
//! - one token bucket for every rate limit (P4 per source, probes, the relay), and bounded
//!   tables of them for the per-sender limits ([`limits`]).

mod bucket;
pub mod calls;
mod exchange;
pub mod limits;

pub use exchange::*;
pub use limits::{Limit, Source};

/// Lowercase hex, as the control messages carry keys, challenges and secrets.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// Parses lowercase or uppercase hex of at most 64 bytes (the longest field, a signature);
/// `None` for odd length, other characters or more.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() > 128 {
        return None;
    }
    ::hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(hex(&[0xAB]), "ab");
        assert_eq!(unhex("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("+1"), None);
        assert_eq!(unhex(&"00".repeat(64)).map(|v| v.len()), Some(64));
        assert_eq!(unhex(&"00".repeat(65)), None);
    }
}
