//! The media loop alone: two engines on 127.0.0.1 exchange audio without a server, directly and
//! through a relay that the test runs, and switch paths mid-call without losing audio. Each side
//! sends its own tone; each WAV must carry the other's.

#![allow(clippy::unwrap_used, clippy::too_many_arguments)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use media::analysis::{dominant_frequency, rms};
use media::audio::{SinkSpec, SourceSpec, WavSource};
use pinhole::engine::{DirectCall, MediaConfig, MediaPath, PathKind, run_direct};
use traversal::channel;
use traversal::phone::CallSecurity;

const RATE: u32 = 48_000;
const WINDOW: usize = 4_800; // 100 ms

/// Fraction of 100 ms windows in `samples` (after the first `skip_s`) whose dominant frequency
/// is `hz` (within 10 Hz) and that are not silent.
fn tone_fraction(samples: &[f32], hz: f64, skip_s: f64) -> f64 {
    let skip = (skip_s * f64::from(RATE)) as usize;
    let windows: Vec<&[f32]> = samples
        .get(skip..)
        .unwrap_or(&[])
        .chunks_exact(WINDOW)
        .collect();
    if windows.is_empty() {
        return 0.0;
    }
    let good = windows
        .iter()
        .filter(|w| {
            rms(w) > 0.05 && (dominant_frequency(w, RATE, 200.0, 2_000.0, 10.0) - hz).abs() <= 10.0
        })
        .count();
    good as f64 / windows.len() as f64
}

fn read(path: &Path) -> Vec<f32> {
    WavSource::read_all(path).unwrap()
}

fn bind() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

fn call(
    socket: UdpSocket,
    path: MediaPath,
    relay: Option<(SocketAddr, u16)>,
    switches: Vec<(Duration, MediaPath)>,
    tone: f64,
    out: &Path,
    peer: &str,
    secs: f64,
) -> std::thread::JoinHandle<pinhole::engine::CallReport> {
    let call = DirectCall {
        socket,
        path,
        relay,
        switches,
        input: SourceSpec::Tone { hz: tone },
        output: SinkSpec::Wav {
            path: out.to_owned(),
        },
        media: MediaConfig::default(),
        duration: Duration::from_secs_f64(secs),
        peer: peer.into(),
        // Both ends of the test call share one key per direction.
        keys: CallSecurity::loopback([7; 32]),
    };
    std::thread::spawn(move || run_direct(call).unwrap())
}

#[test]
fn two_engines_exchange_tones_directly() {
    let dir = tempfile::tempdir().unwrap();
    let (sa, a) = bind();
    let (sb, b) = bind();
    let wa = dir.path().join("a.wav");
    let wb = dir.path().join("b.wav");
    let ha = call(sa, MediaPath::Direct(b), None, vec![], 440.0, &wa, "b", 3.0);
    let hb = call(sb, MediaPath::Direct(a), None, vec![], 880.0, &wb, "a", 3.0);
    let ra = ha.join().unwrap();
    let rb = hb.join().unwrap();
    let (fa, fb) = (
        tone_fraction(&read(&wa), 880.0, 0.5),
        tone_fraction(&read(&wb), 440.0, 0.5),
    );
    assert!(fa > 0.8, "a hears b's 880 Hz in {fa:.2} of the call");
    assert!(fb > 0.8, "b hears a's 440 Hz in {fb:.2} of the call");
    for r in [&ra, &rb] {
        assert_eq!(r.path, PathKind::Direct);
        assert_eq!(r.path_changes, 0);
        // 3 s of 20 ms frames: about 150 each way.
        assert!((120..=160).contains(&r.rtp.sent), "{r:?}");
        assert!(r.rtp.received >= 100, "{r:?}");
        assert_eq!(r.rtp.lost, 0, "loopback loses nothing: {r:?}");
        assert!(r.setup_ms.is_some(), "{r:?}");
    }
    let json = serde_json::to_value(&ra).unwrap();
    for key in [
        "peer",
        "path",
        "path_changes",
        "setup_ms",
        "duration_s",
        "rtp",
        "rtt_ms",
    ] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    assert_eq!(json["path"], "direct");
    assert!(json["rtp"]["jitter_ms"].is_number(), "{json}");
}

/// A relay like the server's: ChannelData on `channel` from one party goes, unchanged, to the
/// other. Counts what it forwarded.
fn relay(
    socket: UdpSocket,
    parties: [SocketAddr; 2],
    channel: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut forwarded = 0;
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(frame) = channel::decode(&buf[..n]) else {
                continue;
            };
            assert_eq!(frame.channel, channel);
            let out = channel::encode(frame.channel, frame.payload).unwrap();
            let to = if from == parties[0] {
                parties[1]
            } else {
                parties[0]
            };
            socket.send_to(&out, to).unwrap();
            forwarded += 1;
        }
        forwarded
    })
}

#[test]
fn relay_first_then_direct_then_relay_keeps_the_audio() {
    let dir = tempfile::tempdir().unwrap();
    let (sa, a) = bind();
    let (sb, b) = bind();
    let (sr, r) = bind();
    let channel = 0x4123;
    let stop = Arc::new(AtomicBool::new(false));
    let hr = relay(sr, [a, b], channel, stop.clone());
    let on_relay = MediaPath::Relay {
        server: r,
        channel,
        token: [5; 8],
    };
    let wa = dir.path().join("a.wav");
    let wb = dir.path().join("b.wav");
    // Both start on the relay; a moves to direct at 1 s, b at 1.3 s; a goes back to the relay
    // at 2.5 s. Each side accepts media on either path at any time.
    let ha = call(
        sa,
        on_relay,
        None,
        vec![
            (Duration::from_millis(1_000), MediaPath::Direct(b)),
            (Duration::from_millis(2_500), on_relay),
        ],
        500.0,
        &wa,
        "b",
        4.0,
    );
    let hb = call(
        sb,
        on_relay,
        None,
        vec![(Duration::from_millis(1_300), MediaPath::Direct(a))],
        1_000.0,
        &wb,
        "a",
        4.0,
    );
    let ra = ha.join().unwrap();
    let rb = hb.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let forwarded = hr.join().unwrap();
    assert!(
        forwarded > 100,
        "the relay carried the first second and the end: {forwarded}"
    );
    let (fa, fb) = (
        tone_fraction(&read(&wa), 1_000.0, 0.5),
        tone_fraction(&read(&wb), 500.0, 0.5),
    );
    assert!(fa > 0.9, "a hears b's 1000 Hz in {fa:.2} of the call");
    assert!(fb > 0.9, "b hears a's 500 Hz in {fb:.2} of the call");
    assert_eq!(ra.path, PathKind::Relay);
    assert_eq!(ra.path_changes, 2, "{ra:?}");
    assert_eq!(rb.path, PathKind::Direct);
    assert_eq!(rb.path_changes, 1, "{rb:?}");
    assert_eq!(
        ra.rtp.lost + rb.rtp.lost,
        0,
        "no packet lost in the switches: {ra:?} {rb:?}"
    );
}
