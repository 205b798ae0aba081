//! `traversal::channel::decode_relay` and `set_token` (a relay frame: ChannelData carrying a
//! party's 8-byte token and the media): never a panic; a decoded frame re-encodes to one that
//! decodes the same, and rewriting its token in place (as the server does) changes only that.
#![no_main]

use libfuzzer_sys::fuzz_target;
use traversal::channel;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = channel::decode_relay(data) else {
        return;
    };
    let mut again = Vec::new();
    channel::encode_relay_into(frame.channel, frame.token, frame.media, &mut again)
        .expect("re-encode");
    let back = channel::decode_relay(&again).expect("decode the re-encoded frame");
    assert_eq!(back, frame);
    let mut rewritten = data.to_vec();
    let token = [0xa5; 8];
    channel::set_token(&mut rewritten, token);
    let moved = channel::decode_relay(&rewritten).expect("still a frame");
    assert_eq!(
        (moved.channel, moved.token, moved.media),
        (frame.channel, token, frame.media)
    );
});
