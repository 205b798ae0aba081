//! Interop: ffmpeg, given an SDP file, receives Pinhole's RTP over UDP on 127.0.0.1 and decodes
//! it into a WAV with the right tone, and the other way round. Without ffmpeg the tests fail
//! under `./dev test` and skip with a message by hand ([`missing`]).
#![allow(clippy::unwrap_used)]

mod voice_common;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use media::tone::Tone;
use media::voice::{SendTo, VoiceConfig, VoiceSession};
use pinhole_tests::TempDir;
use pinhole_tests::prereq::missing;
use rand::SeedableRng;
use rand::rngs::StdRng;
use voice_common::{dominant, read_wav};

#[test]
fn ffmpeg_decodes_our_rtp_stream_given_an_sdp() {
    if !ffmpeg_installed() {
        return missing("ffmpeg is not installed (scripts/packages/media.txt lists it)");
    }
    let dir = TempDir::new("voice-ffmpeg");
    // A free even port for ffmpeg (RTP on P; it also binds P+1 for RTCP).
    let port = (0..50)
        .find_map(|_| {
            let p = UdpSocket::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port()
                & !1;
            let free = |port| UdpSocket::bind(("127.0.0.1", port)).is_ok();
            (p > 1024 && free(p) && free(p + 1)).then_some(p)
        })
        .unwrap();
    let config = VoiceConfig {
        rtcp_interval: Duration::from_secs(1),
        ..VoiceConfig::default()
    };
    let sdp = dir.join("stream.sdp");
    std::fs::write(
        &sdp,
        format!(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=Pinhole\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} useinbandfec=1\r\n",
            pt = config.payload_type
        ),
    )
    .unwrap();
    let out = dir.join("out.wav");
    let mut ffmpeg = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-protocol_whitelist",
            "file,udp,rtp",
        ])
        .args(["-analyzeduration", "500000", "-probesize", "32768", "-i"])
        .arg(&sdp)
        .args(["-t", "3", "-ac", "1", "-ar", "48000", "-y"])
        .arg(&out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    // Wait for ffmpeg to bind its port (seen in /proc/net/udp, without touching the port),
    // then stream 6 s of a 440 Hz tone in real time.
    let bound = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        udp_port_bound(port)
    });
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut socket = SendTo {
        socket: &socket,
        peer: ([127, 0, 0, 1], port).into(),
    };
    let start = Instant::now();
    let mut session =
        VoiceSession::new(config.clone(), start, &mut StdRng::seed_from_u64(3)).unwrap();
    let mut tone = Tone::new(440.0, 48_000, 0.5);
    let mut frame = vec![0.0f32; config.codec.frame.samples()];
    for i in 0..300u32 {
        let due = start + config.codec.frame.duration() * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = Instant::now();
        tone.fill(&mut frame);
        session.push_capture(now, &frame, &mut socket);
        session.handle_timeout(now, &mut socket);
        if ffmpeg.try_wait().unwrap().is_some() {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = ffmpeg.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = ffmpeg.kill();
            let _ = ffmpeg.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(bound, "ffmpeg never bound port {port}");
    assert!(
        status.is_some_and(|s| s.success()),
        "ffmpeg failed: {status:?}"
    );
    let (samples, rate) = read_wav(&out);
    let level = media::analysis::rms(&samples[samples.len() / 3..]);
    let f = dominant(&samples, rate);
    eprintln!(
        "ffmpeg decoded {} samples at {rate} Hz: dominant {f} Hz, rms {level} ({})",
        samples.len(),
        out.display()
    );
    assert_eq!(rate, 48_000);
    assert!(
        samples.len() >= 2 * 48_000,
        "only {} samples",
        samples.len()
    );
    assert!((f - 440.0).abs() <= 5.0, "dominant {f} Hz");
    assert!(level > 0.2, "rms {level}");
    assert_eq!(session.stats().sent.send_errors, 0);
}

#[test]
fn pinhole_decodes_ffmpegs_rtp_stream() {
    if !ffmpeg_installed() {
        return missing("ffmpeg is not installed (scripts/packages/media.txt lists it)");
    }
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let config = VoiceConfig::default();
    // A 660 Hz tone, encoded by libopus in ffmpeg, sent as RTP in real time with our payload
    // type (ffmpeg's RTCP goes to port + 1, which nobody reads).
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi"])
        .args(["-i", "sine=frequency=660:sample_rate=48000:duration=4"])
        .args(["-ac", "1", "-c:a", "libopus", "-b:a", "32k", "-f", "rtp"])
        .args(["-payload_type", &config.payload_type.to_string()])
        .arg(format!("rtp://127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut session = VoiceSession::new(config, start, &mut StdRng::seed_from_u64(4)).unwrap();
    let mut heard = Vec::new();
    let mut frame = vec![0.0f32; 960];
    let mut next_pull = start;
    let mut buf = [0u8; 1_500];
    while start.elapsed() < Duration::from_secs(6) {
        if let Ok(n) = socket.recv(&mut buf) {
            session.handle_datagram(Instant::now(), &buf[..n]);
        }
        let now = Instant::now();
        if now >= next_pull {
            session.pull_playout(now, &mut frame);
            heard.extend_from_slice(&frame);
            next_pull += Duration::from_millis(20);
        }
        if ffmpeg.try_wait().unwrap().is_some() && start.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let s = session.stats();
    eprintln!("from ffmpeg: {:?}", s.received);
    assert!(s.received.packets >= 150, "{:?}", s.received);
    assert_eq!(s.received.malformed, 0);
    // The second second of what arrived: the tone, at its level.
    let first = heard.iter().position(|x| x.abs() > 0.05).unwrap();
    let second = &heard[first + 48_000..first + 96_000];
    let f = dominant(second, 48_000);
    let level = media::analysis::rms(second);
    eprintln!("decoded {f} Hz at rms {level}");
    assert!((f - 660.0).abs() <= 5.0, "dominant {f} Hz");
    assert!(level > 0.05, "rms {level}");
}

/// Whether `ffmpeg` runs.
fn ffmpeg_installed() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether some socket is bound to UDP `port` on this host (Linux: `/proc/net/udp`).
fn udp_port_bound(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/udp") else {
        // Not Linux: give ffmpeg a generous moment instead.
        std::thread::sleep(Duration::from_millis(1_500));
        return true;
    };
    let needle = format!(":{port:04X} ");
    table.lines().skip(1).any(|line| {
        line.split_whitespace()
            .nth(1)
            .is_some_and(|local| format!("{local} ").ends_with(&needle))
    })
}
