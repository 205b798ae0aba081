//! `traversal::channel::decode` (relay framing, TURN ChannelData) and `classify` (RFC 7983
//! demux): never a panic, and what decodes encodes back to a frame that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traversal::channel;

fuzz_target!(|data: &[u8]| {
    std::hint::black_box(channel::classify(data));
    if let Ok(frame) = channel::decode(data) {
        let again = channel::encode(frame.channel, frame.payload).expect("re-encode");
        let back = channel::decode(&again).expect("decode the re-encoded frame");
        assert_eq!(back.channel, frame.channel);
        assert_eq!(back.payload, frame.payload);
    }
});
