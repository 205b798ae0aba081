//! `traversal::wire::UdpMessage::decode`: the patent's UDP messages (STUN-framed, with
//! MESSAGE-INTEGRITY and FINGERPRINT). The key lookup answers for every user index, so the
//! fuzzer reaches the integrity check and the attribute parsing behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traversal::wire::UdpMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = UdpMessage::decode(data, |_user| Some([7u8; 32])) {
        std::hint::black_box((message.user_index(), message.transaction_id()));
        // What decodes must encode again without panicking.
        std::hint::black_box(message.encode(&[7u8; 32]));
    }
});
