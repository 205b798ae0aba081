//! `media::srtp::Srtp::unprotect`, the first decoder every received media datagram meets:
//! any bytes are refused (the fuzzer cannot forge a GCM tag) without a panic; and whatever
//! `protect` takes comes back unchanged through `unprotect`, once, and not with a byte changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::srtp::{MasterKey, Srtp, SrtpError};

const KEY: MasterKey = MasterKey {
    key: [7; 16],
    salt: [9; 12],
};

fuzz_target!(|data: &[u8]| {
    let mut rx = Srtp::new(&KEY, &KEY).expect("keys");
    let mut out = Vec::new();
    assert!(rx.unprotect(data, &mut out).is_err());
    assert!(out.is_empty());

    let mut tx = Srtp::new(&KEY, &KEY).expect("keys");
    let mut wire = Vec::new();
    if tx.protect(data, &mut wire).is_err() {
        return;
    }
    let mut rx = Srtp::new(&KEY, &KEY).expect("keys");
    let mut tampered = wire.clone();
    // A byte the input picks, changed: refused, and the genuine packet still opens.
    let at = data.first().map_or(0, |&b| usize::from(b)) % tampered.len();
    tampered[at] ^= 0x01;
    assert!(rx.unprotect(&tampered, &mut out).is_err());
    rx.unprotect(&wire, &mut out)
        .expect("a protected packet opens");
    assert_eq!(out, data);
    assert_eq!(rx.unprotect(&wire, &mut out), Err(SrtpError::Replayed));
});
