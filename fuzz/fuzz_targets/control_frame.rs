//! `traversal::control::FrameDecoder`: the TCP control connection's framing and JSON messages,
//! fed in arbitrary chunks as TCP would deliver them, decoded as both directions' messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traversal::control::{ClientMessage, FrameDecoder, ServerMessage};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so the fuzzer explores partial frames too.
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut as_server = FrameDecoder::new();
    let mut as_client = FrameDecoder::new();
    for piece in rest.chunks(chunk) {
        if as_server.push(piece).is_ok() {
            while let Ok(Some(message)) = as_server.next_message::<ClientMessage>() {
                std::hint::black_box(message);
            }
        }
        if as_client.push(piece).is_ok() {
            while let Ok(Some(message)) = as_client.next_message::<ServerMessage>() {
                std::hint::black_box(message);
            }
        }
    }
});
