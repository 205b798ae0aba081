//! The ringtone in `assets/` is what `pinhole::ui::sound::synth_ringtone` makes (no downloaded
//! media), and it decodes to a short, audible, unclipped chime. `PINHOLE_WRITE_ASSETS=1`
//! rewrites the file from the synthesiser.

#![allow(clippy::unwrap_used)]

use pinhole::ui::sound::{
    RINGTONE_RATE, RINGTONE_WAV, decode_wav, encode_wav, ring_cycle, synth_ringtone,
};

#[test]
fn the_ringtone_asset_is_the_synthesised_chime() {
    let wav = encode_wav(&synth_ringtone(), RINGTONE_RATE);
    if std::env::var_os("PINHOLE_WRITE_ASSETS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/ringtone.wav");
        std::fs::write(path, &wav).unwrap();
        return;
    }
    assert!(
        RINGTONE_WAV == wav.as_slice(),
        "assets/ringtone.wav is stale"
    );
    assert!(wav.len() < 64 * 1024, "small: {} bytes", wav.len());
}

#[test]
fn the_ringtone_decodes_to_an_audible_ring_with_a_pause() {
    let (rate, samples) = decode_wav(RINGTONE_WAV).unwrap();
    assert_eq!(rate, RINGTONE_RATE);
    let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!((0.2..0.99).contains(&peak), "peak {peak}");
    // One cycle at 48 kHz: about a second of chime, then silence.
    let cycle = ring_cycle();
    assert!(cycle.len() > 48_000 * 2, "{}", cycle.len());
    assert!(cycle[cycle.len() - 4_800..].iter().all(|s| *s == 0.0));
}

#[test]
fn malformed_wav_is_refused_without_panic() {
    assert!(decode_wav(b"").is_none());
    assert!(decode_wav(b"RIFF\0\0\0\0WAVEfmt \xff\xff\xff\xff").is_none());
    let mut stereo = encode_wav(&[0, 1, 2, 3], 8_000);
    stereo[22] = 2;
    assert!(decode_wav(&stereo).is_none());
    let truncated = encode_wav(&[0; 100], 8_000);
    assert!(decode_wav(&truncated[..60]).is_none());
}
