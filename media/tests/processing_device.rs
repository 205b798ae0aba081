//! Echo cancellation through real devices: a PulseAudio null sink whose monitor is the
//! microphone, so everything played is heard (after the sink's and the source's buffers and the
//! server's scheduling: a delay the canceller has to find). Far-end speech is written to the
//! sink and given to `render` as written; what the monitor records goes through `capture`; the
//! echo return loss enhancement must reach 30 dB once converged (from 6 s on: the devices'
//! drift controllers move the echo path early on; the figure from 2 s on is printed too).
//!
//! The test loads a null sink of its own (`pinhole_apm_PID`) with `pactl load-module` and
//! unloads it when done, even on failure. No server (or one cpal cannot find: its socket must
//! be named by `$PULSE_SERVER=unix:PATH` or `$XDG_RUNTIME_DIR/pulse/native`) fails under
//! `./dev test` and skips by hand, through `pinhole_tests::prereq::missing`.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use media::audio::{DeviceSink, DeviceSource, Sink, Source, output_devices};
use media::processing::synth::{self, Talker};
use media::processing::{ProcessingConfig, VoiceProcessor};
use pinhole_tests::prereq::missing;

const FS: usize = 48_000;
const FRAME: usize = 960;

fn pactl(args: &[&str]) -> Option<String> {
    let out = Command::new("pactl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A null sink loaded for this test, unloaded when dropped.
struct NullSink {
    module: String,
    id: String,
}

impl NullSink {
    fn load() -> NullSink {
        let id = format!("pinhole_apm_{}", std::process::id());
        let module = pactl(&[
            "load-module",
            "module-null-sink",
            &format!("sink_name={id}"),
            "rate=48000",
            "sink_properties=device.description=Pinhole-apm-test",
        ])
        .unwrap_or_else(|| panic!("pactl load-module module-null-sink sink_name={id} failed"));
        NullSink { module, id }
    }
}

impl Drop for NullSink {
    fn drop(&mut self) {
        let _ = pactl(&["unload-module", &self.module]);
    }
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|s| f64::from(*s).powi(2)).sum()
}

#[test]
fn echo_through_a_null_sink_monitor_is_cancelled_by_30_db() {
    let Some(default_sink) = pactl(&["get-default-sink"]) else {
        return missing("no PulseAudio/PipeWire server answers pactl (./dev starts one)");
    };
    let listed = output_devices().unwrap_or_default();
    if !listed.iter().any(|d| d.id == default_sink) {
        return missing(format!(
            "PulseAudio answers pactl but media does not list its sinks (cpal finds the server \
             by $PULSE_SERVER=unix:PATH or $XDG_RUNTIME_DIR/pulse/native); listed: {:?}",
            listed.iter().map(|d| &d.id).collect::<Vec<_>>()
        ));
    }
    let null = NullSink::load();
    let monitor = format!("{}.monitor", null.id);
    // The new sink shows in the server's lists at once; cpal's may take a moment.
    let start = Instant::now();
    let (mut sink, mut source) = loop {
        match (
            DeviceSink::open(Some(&null.id)),
            DeviceSource::open(Some(&monitor)),
        ) {
            (Ok(k), Ok(s)) => break (k, s),
            (k, s) if start.elapsed() > Duration::from_secs(5) => panic!(
                "null sink {} and its monitor loaded but not opened within 5 s: {:?} {:?}",
                null.id,
                k.err(),
                s.err()
            ),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    eprintln!(
        "playing into {:?}, capturing {:?}",
        sink.name(),
        source.name()
    );

    // The far end's 16 s of speech, made before anything is paced: synthesising it takes a
    // quarter of a second in a debug build, which between the silence and the speech made the
    // loop that late, the sink run dry and the catch-up be cut (the echo path moved twice).
    let seconds = 16;
    let far = synth::speech(&Talker::LOW, 61, seconds * FS).samples;

    // Wait for both streams to flow, playing silence.
    let silence = vec![0.0f32; FRAME];
    let mut scratch = vec![0.0f32; FRAME];
    let warm = Instant::now();
    while source.read(&mut scratch).unwrap() < FRAME || sink.stats().callbacks < 20 {
        sink.write(&silence).unwrap();
        assert!(
            warm.elapsed() < Duration::from_secs(10),
            "the null sink and its monitor opened but did not start within 10 s: capture {:?}, \
             playback {:?}",
            source.stats(),
            sink.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Then silence paced like the call until the devices' drift controllers have settled: they
    // steer their resampling ratios toward a target buffer level (up to 1000 ppm, 1 ms a second),
    // moving the echo's delay while they do, and AEC3 loses the echo when it slides (measured:
    // the capture queue opened 17 ms above its target here and slid for 17 s; ERLE fell from
    // 60 to 5 dB 4 s into the speech). At least 5 s; then until the lowest capture and
    // playback latency of a second moved less than 0.3 ms from the second before, twice in a
    // row (at most 12 s). The processor runs through this too, as a call's does from its
    // start: its first frames (allocations, first analysis) do not land on the speech.
    let mut processor = VoiceProcessor::new(ProcessingConfig::default());
    let mut next = Instant::now();
    let lowest = |a: &mut Option<(Duration, Duration)>, c: Duration, p: Duration| {
        let (lc, lp) = a.get_or_insert((c, p));
        *lc = (*lc).min(c);
        *lp = (*lp).min(p);
    };
    let (mut this_second, mut last_second) = (None, None);
    let mut still = 0;
    let mut settle_seconds = 0;
    for n in 1..=12 * 50 {
        sink.write(&silence).unwrap();
        processor.render(&silence);
        source.read(&mut scratch).unwrap();
        processor.capture(&mut scratch);
        lowest(&mut this_second, source.latency(), sink.latency());
        if n % 50 == 0 {
            settle_seconds = n / 50;
            let moved = |(c0, p0): (Duration, Duration), (c1, p1): (Duration, Duration)| {
                c0.abs_diff(c1).max(p0.abs_diff(p1))
            };
            let now = this_second.take().unwrap();
            eprintln!(
                "settling {settle_seconds:2} s: lowest capture latency {:?}, playback {:?}; \
                 steering capture {:+.0} ppm, playback {:+.0} ppm",
                now.0,
                now.1,
                source.drift_ppm(),
                sink.drift_ppm()
            );
            still = match last_second.replace(now) {
                Some(before) if moved(before, now) < Duration::from_micros(300) => still + 1,
                _ => 0,
            };
        }
        next += Duration::from_millis(20);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // Only after the wait: the speech's first frame is read a period after the last
        // silent one, not at once (two reads back to back ran the capture queue dry, and the
        // silence it then inserted moved the echo path as the speech began).
        if n % 50 == 0 && settle_seconds >= 5 && still >= 2 {
            break;
        }
    }
    eprintln!(
        "silence for {settle_seconds} s before the speech (the devices' latencies {}settled: \
         capture {:?}, playback {:?})",
        if still >= 2 { "" } else { "NOT " },
        source.latency(),
        sink.latency()
    );
    let (source_before, sink_before) = (source.stats(), sink.stats());

    // 16 s of far-end speech, paced by the clock in 20 ms frames.
    let mut mic = Vec::with_capacity(far.len());
    let mut out = Vec::with_capacity(far.len());
    let mut frame = vec![0.0f32; FRAME];
    let period = Duration::from_millis(20);
    let mut real = 0;
    // Per frame: how late the loop started it, the playback latency just before the write, and
    // the sink's underrun count after it (instrumentation; printed per second below).
    let mut lateness = Vec::with_capacity(far.len() / FRAME);
    let mut queue = Vec::with_capacity(far.len() / FRAME);
    let mut underruns = Vec::with_capacity(far.len() / FRAME);
    let mut capture_queue = Vec::with_capacity(far.len() / FRAME);
    let mut steering = Vec::with_capacity(far.len() / FRAME);
    let mut delays = Vec::with_capacity(seconds);
    for played in far.chunks_exact(FRAME) {
        lateness.push(Instant::now().saturating_duration_since(next));
        queue.push(sink.latency());
        sink.write(played).unwrap();
        underruns.push(sink.stats().underruns);
        processor.render(played);
        real += source.read(&mut frame).unwrap();
        capture_queue.push(source.latency());
        steering.push((source.drift_ppm(), sink.drift_ppm()));
        mic.extend_from_slice(&frame);
        processor.capture(&mut frame);
        out.extend_from_slice(&frame);
        if out.len() % FS == 0 {
            delays.push(processor.stats().echo_delay_ms);
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let stats = processor.stats();
    let per_second: Vec<String> = (0..seconds)
        .map(|k| {
            let r = k * FS..(k + 1) * FS;
            format!(
                "{:.0}",
                10.0 * (energy(&mic[r.clone()]) / energy(&out[r]).max(1e-20)).log10()
            )
        })
        .collect();
    eprintln!("ERLE per second, dB: {}", per_second.join(" "));
    let frames_per_second = FS / FRAME;
    let mut previous = sink_before.underruns;
    for (k, delay) in delays.iter().enumerate() {
        let r = k * frames_per_second..(k + 1) * frames_per_second;
        let late = lateness[r.clone()].iter().max().unwrap().as_secs_f64() * 1e3;
        let low = queue[r.clone()].iter().min().unwrap().as_secs_f64() * 1e3;
        let high = queue[r.clone()].iter().max().unwrap().as_secs_f64() * 1e3;
        let (clow, chigh) = (
            capture_queue[r.clone()].iter().min().unwrap().as_secs_f64() * 1e3,
            capture_queue[r.clone()].iter().max().unwrap().as_secs_f64() * 1e3,
        );
        let (cppm, pppm) = steering[r.end - 1];
        let count = underruns[r.end - 1] - previous;
        previous = underruns[r.end - 1];
        eprintln!(
            "second {k:2}: loop up to {late:5.1} ms late, playback latency {low:5.1}-{high:5.1} \
             ms, capture latency {clow:5.1}-{chigh:5.1} ms, +{count} playback underruns, \
             echo delay found {delay:?} ms, steering capture {cppm:+.0} ppm playback \
             {pppm:+.0} ppm"
        );
    }
    let (source_after, sink_after) = (source.stats(), sink.stats());
    eprintln!(
        "while playing: capture +{} underruns +{} overruns, playback +{} underruns +{} overruns",
        source_after.underruns - source_before.underruns,
        source_after.overruns - source_before.overruns,
        sink_after.underruns - sink_before.underruns,
        sink_after.overruns - sink_before.overruns
    );
    // Through these devices the echo path moves while their drift controllers steer and when
    // they cut a backlog (counted as overruns), and the canceller reconverges each time: the
    // figure is taken from 6 s on, and the one from 2 s on (the simulated room's) is printed.
    let settled = 6 * FS;
    let erle_from_2s = 10.0 * (energy(&mic[2 * FS..]) / energy(&out[2 * FS..]).max(1e-20)).log10();
    let mic_db = 10.0 * (energy(&mic[settled..]) / (mic.len() - settled) as f64).log10();
    let far_db = 10.0 * (energy(&far[settled..]) / (far.len() - settled) as f64).log10();
    let erle = 10.0 * (energy(&mic[settled..]) / energy(&out[settled..]).max(1e-20)).log10();
    eprintln!(
        "captured {real} real samples of {}; microphone level {mic_db:.1} dBFS (played \
         {far_db:.1} dBFS); ERLE from 6 s on {erle:.1} dB (from 2 s on \
         {erle_from_2s:.1} dB); the processor reports ERLE {:?} dB, \
         echo delay {:?} ms; capture {:?}; playback {:?}",
        far.len(),
        stats.erle_db,
        stats.echo_delay_ms,
        source.stats(),
        sink.stats()
    );
    // The monitor heard what was played (a silent capture would make any ERLE meaningless).
    assert!(
        real > far.len() * 9 / 10,
        "only {real} of {} samples captured",
        far.len()
    );
    assert!(
        mic_db > far_db - 6.0,
        "the monitor is too quiet ({mic_db:.1} dBFS for {far_db:.1} dBFS played)"
    );
    assert!(
        erle >= 30.0,
        "ERLE {erle:.1} dB < 30 dB through the null sink"
    );
    assert!(stats.echo_delay_ms.is_some());
    drop((sink, source));
    drop(null);
}
