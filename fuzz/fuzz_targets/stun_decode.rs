//! `traversal::stun::Message::decode` and everything that reads a decoded message: any bytes
//! must give a value or an error, never a panic, a hang or an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traversal::stun;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = stun::Message::decode(data) else {
        return;
    };
    for attribute in message.attributes() {
        let _ = std::hint::black_box(attribute);
    }
    let _ = message.xor_mapped_address();
    let _ = message.verify_integrity(b"fuzz-key");
    let _ = message.integrity_offset();
    let _ = traversal::wire::read_user_index(&message);
    // The plain-Binding responder the server runs on every datagram.
    let mut answer = [0u8; 44];
    let from = std::net::SocketAddr::from(([192, 0, 2, 1], 3478));
    let _ = stun::answer_plain_binding(data, from, &mut answer);
});
