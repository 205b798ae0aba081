//! Every device, on a real PulseAudio (or PipeWire) server: its sinks and sources are listed and
//! opened by their names, a sink loaded while the program runs appears within 2 s (and goes
//! when unloaded), a tone played into a null sink comes back from its monitor at a paced
//! 48 kHz, a stream whose device is unloaded reports `DeviceFailed`, and a wrong name lists the
//! server's devices (not ALSA's plugins).
//!
//! Each test loads a null sink of its own (`pinhole_test_TAG_PID`) with `pactl load-module` and
//! unloads it when done, even on failure. No server (or one cpal cannot find: its socket must
//! be named by `$PULSE_SERVER=unix:PATH` or `$XDG_RUNTIME_DIR/pulse/native`) fails under
//! `./dev test` and skips by hand.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use media::analysis::{dominant_frequency, goertzel_power, rms};
use media::audio::{
    AudioError, AudioEvent, DeviceInfo, DeviceLists, DeviceSink, DeviceSource, DeviceWatcher, Sink,
    Source, ToneSource, input_devices, output_devices,
};
use pinhole_tests::prereq::missing;

/// Hot-plug must show within this.
const HOT_PLUG: Duration = Duration::from_secs(2);

/// One test at a time: the timings are measured.
static DEVICES: Mutex<()> = Mutex::new(());

fn devices_lock() -> MutexGuard<'static, ()> {
    DEVICES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pactl(args: &[&str]) -> Option<String> {
    let out = Command::new("pactl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A null sink loaded for one test, unloaded when dropped.
struct NullSink {
    /// `pactl`'s module index, until unloaded.
    module: Option<String>,
    /// The sink's name (its id in the device lists).
    id: String,
    /// Its description (its name in the device lists).
    description: String,
}

impl NullSink {
    fn load(tag: &str) -> NullSink {
        let id = format!("pinhole_test_{tag}_{}", std::process::id());
        let description = format!("Pinhole-test-{tag}-{}", std::process::id());
        let module = pactl(&[
            "load-module",
            "module-null-sink",
            &format!("sink_name={id}"),
            "rate=48000",
            &format!("sink_properties=device.description={description}"),
        ])
        .unwrap_or_else(|| panic!("pactl load-module module-null-sink sink_name={id} failed"));
        NullSink {
            module: Some(module),
            id,
            description,
        }
    }

    fn monitor(&self) -> String {
        format!("{}.monitor", self.id)
    }

    fn unload(&mut self) {
        if let Some(module) = self.module.take() {
            assert!(
                pactl(&["unload-module", &module]).is_some(),
                "pactl unload-module {module} failed"
            );
        }
    }
}

impl Drop for NullSink {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            let _ = pactl(&["unload-module", &module]);
        }
    }
}

/// Whether the tests can run: a server answers `pactl` and the media crate lists its default
/// sink (so cpal's PulseAudio host found it). Reports what is missing otherwise.
#[track_caller]
fn server_ready() -> bool {
    let Some(default_sink) = pactl(&["get-default-sink"]) else {
        missing("no PulseAudio/PipeWire server answers pactl (./dev starts one)");
        return false;
    };
    let listed = output_devices().unwrap_or_default();
    if !listed.iter().any(|d| d.id == default_sink) {
        missing(format!(
            "PulseAudio answers pactl but its sinks are not listed (cpal finds the server by \
             $PULSE_SERVER=unix:PATH or $XDG_RUNTIME_DIR/pulse/native; `pactl info` names the \
             socket); listed: {:?}",
            listed.iter().map(|d| &d.id).collect::<Vec<_>>()
        ));
        return false;
    }
    true
}

/// Waits (up to 5 s) until `check` holds for the watcher's lists; returns how long it took.
fn wait_for(watcher: &DeviceWatcher, what: &str, check: impl Fn(&DeviceLists) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let lists = watcher.snapshot();
        if lists.generation > 0 && check(&lists) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s; inputs {:?}, outputs {:?}",
            ids(&lists.inputs),
            ids(&lists.outputs)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ids(list: &[DeviceInfo]) -> Vec<&str> {
    list.iter().map(|d| d.id.as_str()).collect()
}

fn has(list: &[DeviceInfo], id: &str) -> bool {
    list.iter().any(|d| d.id == id)
}

/// Reads `source` and writes `sink` (silence) in 20 ms frames until both have started.
fn warm_up(source: &mut DeviceSource, sink: &mut DeviceSink) {
    let silence = vec![0.0f32; 960];
    let mut frame = vec![0.0f32; 960];
    let start = Instant::now();
    while source.read(&mut frame).unwrap() < 960 || sink.stats().callbacks < 20 {
        sink.write(&silence).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the devices opened but did not start within 10 s: capture {:?}, playback {:?}",
            source.stats(),
            sink.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lists_are_the_servers_sinks_and_sources_default_first_monitors_last() {
    let _devices = devices_lock();
    if !server_ready() {
        return;
    }
    let _sink = NullSink::load("lists");
    let names = |kind: &str| -> Vec<String> {
        pactl(&["list", "short", kind])
            .unwrap()
            .lines()
            .filter_map(|l| l.split('\t').nth(1).map(str::to_owned))
            .collect()
    };
    let (outputs, inputs) = (output_devices().unwrap(), input_devices().unwrap());
    for d in inputs.iter().chain(&outputs) {
        eprintln!(
            "{} {:?} ({}), {} configs",
            if d.is_default { "*" } else { " " },
            d.id,
            d.name,
            d.configs.len()
        );
    }
    let mut want = names("sinks");
    let mut got: Vec<String> = outputs.iter().map(|d| d.id.clone()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "outputs are the server's sinks, each once");
    let mut want = names("sources");
    let mut got: Vec<String> = inputs.iter().map(|d| d.id.clone()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "inputs are the server's sources, each once");

    let default_sink = pactl(&["get-default-sink"]).unwrap();
    assert_eq!(outputs[0].id, default_sink, "the default sink comes first");
    assert!(outputs[0].is_default && outputs[1..].iter().all(|d| !d.is_default));
    let default_source = pactl(&["get-default-source"]).unwrap();
    assert_eq!(
        inputs[0].id, default_source,
        "the default source comes first"
    );
    // Monitors after every other source (the default, even a monitor, stays first).
    let rest = &inputs[1..];
    let first_monitor = rest.iter().position(|d| d.id.ends_with(".monitor"));
    if let Some(i) = first_monitor {
        assert!(
            rest[i..].iter().all(|d| d.id.ends_with(".monitor")),
            "monitors last: {:?}",
            ids(&inputs)
        );
    }
    // Names are the server's descriptions; nothing from ALSA.
    let ours = outputs.iter().find(|d| d.id == _sink.id).unwrap();
    assert_eq!(ours.name, _sink.description);
    assert!(!ours.configs.is_empty());
    let monitor = inputs.iter().find(|d| d.id == _sink.monitor()).unwrap();
    assert_eq!(monitor.name, format!("Monitor of {}", _sink.description));
    for d in inputs.iter().chain(&outputs) {
        assert!(
            !["System default", "PulseAudio Sound Server"].contains(&d.name.as_str()),
            "an ALSA device is listed: {d:?}"
        );
    }
}

#[test]
fn a_wrong_name_lists_the_servers_devices_and_no_alsa_plugin() {
    let _devices = devices_lock();
    if !server_ready() {
        return;
    }
    let sink = NullSink::load("wrong");
    for (direction, result, wanted, name) in [
        (
            "output",
            DeviceSink::open(Some("pinhole-no-such-speaker")).map(|_| ()),
            sink.id.clone(),
            sink.description.clone(),
        ),
        (
            "input",
            DeviceSource::open(Some("pinhole-no-such-microphone")).map(|_| ()),
            sink.monitor(),
            format!("Monitor of {}", sink.description),
        ),
    ] {
        let err = result.expect_err("a device that does not exist opened");
        let message = err.to_string();
        eprintln!("{message}");
        let AudioError::NoSuchDevice { available, .. } = err else {
            panic!("not NoSuchDevice: {message}");
        };
        assert!(
            available.contains(&format!("{wanted:?} ({name})")),
            "the {direction} list names {wanted:?} with its description: {available}"
        );
        for plugin in [
            "lavrate",
            "upmix",
            "speexrate",
            "\"hw:",
            "\"pulse\"",
            "\"default\"",
        ] {
            assert!(
                !available.contains(plugin),
                "an ALSA PCM ({plugin}) is listed: {available}"
            );
        }
        assert!(!message.contains('\n'), "one line: {message}");
    }

    // What settings saved while devices were listed through ALSA name: the server's default.
    let default_sink = pactl(&["get-default-sink"]).unwrap();
    let default_name = output_devices()
        .unwrap()
        .into_iter()
        .find(|d| d.id == default_sink)
        .unwrap()
        .name;
    for alsa in ["pulse", "PulseAudio Sound Server", "default"] {
        let out = DeviceSink::open(Some(alsa)).unwrap();
        assert_eq!(out.name(), default_name, "{alsa:?} opens the default sink");
    }
}

/// The whole life of a device: it appears (watcher), opens by id and by description, carries a
/// tone from sink to monitor at a paced 48 kHz, disappears (watcher), and its open streams
/// report `DeviceFailed`.
#[test]
fn a_sink_loaded_while_running_appears_plays_and_fails_when_unloaded() {
    let _devices = devices_lock();
    if !server_ready() {
        return;
    }
    let watcher = DeviceWatcher::spawn(Duration::from_millis(500));
    wait_for(&watcher, "first listing", |_| true);
    let before = watcher.generation();

    let mut sink = NullSink::load("life");
    let appeared = wait_for(&watcher, "the loaded sink and its monitor listed", |l| {
        has(&l.outputs, &sink.id) && has(&l.inputs, &sink.monitor())
    });
    eprintln!("FIGURE hot-plug: a loaded sink listed after {appeared:?}");
    assert!(appeared < HOT_PLUG, "listed after {appeared:?}");
    assert!(watcher.generation() > before);

    // By description for the sink, by id for its monitor.
    let mut out = DeviceSink::open(Some(&sink.description)).unwrap();
    let mut mic = DeviceSource::open(Some(&sink.monitor())).unwrap();
    assert_eq!(out.device_format(), (48_000, 1), "no resampling, mono");
    assert_eq!(mic.device_format(), (48_000, 1), "no resampling, mono");
    warm_up(&mut mic, &mut out);

    // 3 s of a 1 kHz tone, paced by the clock in 20 ms frames, while capturing.
    let hz = 1_000.0;
    let mut tone = ToneSource::new(hz);
    let mut frame = vec![0.0f32; 960];
    let mut captured = Vec::new();
    let mut real = 0;
    let (before_out, before_mic) = (out.stats(), mic.stats());
    let start = Instant::now();
    let mut next = start;
    for _ in 0..150 {
        tone.read(&mut frame).unwrap();
        out.write(&frame).unwrap();
        let mut heard = vec![0.0f32; 960];
        real += mic.read(&mut heard).unwrap();
        captured.extend_from_slice(&heard);
        assert_eq!((mic.poll_event(), out.poll_event()), (None, None));
        next += Duration::from_millis(20);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let elapsed = start.elapsed();
    let (mic_stats, out_stats) = (mic.stats(), out.stats());
    let rate = real as f64 / elapsed.as_secs_f64();
    eprintln!(
        "FIGURE capture from the monitor: {real} samples in {elapsed:?} ({rate:.0} per second); \
         capture +{} underruns +{} overruns, playback +{} underruns +{} overruns",
        mic_stats.underruns - before_mic.underruns,
        mic_stats.overruns - before_mic.overruns,
        out_stats.underruns - before_out.underruns,
        out_stats.overruns - before_out.overruns,
    );
    if let Some(onset) = captured.iter().position(|s| s.abs() > 0.1) {
        eprintln!("FIGURE sink-to-monitor latency {} ms", onset / 48);
    }
    // Paced: the device delivers 48 000 samples a second (the first frames may be short while
    // the tone's round trip fills).
    assert!(
        (0.9 * 48_000.0..=1.05 * 48_000.0).contains(&rate),
        "{rate:.0} samples per second"
    );
    let tail = &captured[captured.len() / 2..];
    let level = rms(tail);
    assert!(level > 0.1, "the tone came back too quietly (rms {level})");
    let f = dominant_frequency(tail, 48_000, 100.0, 4_000.0, 10.0);
    assert!((f - hz).abs() <= 10.0, "dominant frequency {f} Hz");
    let on = goertzel_power(tail, 48_000, hz);
    let off = goertzel_power(tail, 48_000, 1_370.0);
    assert!(on > 100.0 * off, "tone {on} vs elsewhere {off}");

    // Unplugged: gone from the lists, and both streams fail.
    sink.unload();
    let unloaded = Instant::now();
    let gone = wait_for(&watcher, "the unloaded sink gone", |l| {
        !has(&l.outputs, &sink.id) && !has(&l.inputs, &sink.monitor())
    });
    eprintln!("FIGURE hot-plug: an unloaded sink gone from the lists after {gone:?}");
    assert!(gone < HOT_PLUG, "still listed after {gone:?}");
    let (mut mic_event, mut out_event) = (None, None);
    while mic_event.is_none() || out_event.is_none() {
        tone.read(&mut frame).unwrap();
        out.write(&frame).unwrap();
        let mut heard = vec![0.0f32; 960];
        mic.read(&mut heard).unwrap();
        mic_event = mic_event.or_else(|| mic.poll_event());
        out_event = out_event.or_else(|| out.poll_event());
        assert!(
            unloaded.elapsed() < Duration::from_secs(5),
            "no DeviceFailed within 5 s of unloading: capture {mic_event:?} {:?}, playback \
             {out_event:?} {:?}",
            mic.stats(),
            out.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed_after = unloaded.elapsed();
    eprintln!(
        "FIGURE unplugged streams report DeviceFailed after {failed_after:?}: \
         {mic_event:?} {out_event:?}"
    );
    assert!(
        failed_after < HOT_PLUG,
        "DeviceFailed after {failed_after:?}"
    );
    for (event, name) in [
        (mic_event, sink.monitor()),
        (out_event, sink.description.clone()),
    ] {
        assert_eq!(
            event,
            Some(AudioEvent::DeviceFailed {
                device: name,
                reason: "the device was removed".into()
            })
        );
    }
    assert!(mic.stats().failed && out.stats().failed);
}

/// A call's speaker and a test tone (or two calls) play at once: each opened device has a
/// connection of its own (PulseAudio refuses a second playback stream on one connection of
/// cpal's host, "Invalid argument").
#[test]
fn two_streams_each_way_open_at_once() {
    let _devices = devices_lock();
    if !server_ready() {
        return;
    }
    let sink = NullSink::load("two");
    let mut outs = vec![
        DeviceSink::open(Some(&sink.id)).unwrap(),
        DeviceSink::open(Some(&sink.id)).unwrap(),
        DeviceSink::open(None).unwrap(),
    ];
    let mut mics = vec![
        DeviceSource::open(Some(&sink.monitor())).unwrap(),
        DeviceSource::open(Some(&sink.monitor())).unwrap(),
    ];
    let silence = vec![0.0f32; 960];
    let mut frame = vec![0.0f32; 960];
    let start = Instant::now();
    while outs.iter().any(|o| o.stats().callbacks < 20)
        || mics.iter().any(|m| m.stats().callbacks < 20)
    {
        for out in &mut outs {
            out.write(&silence).unwrap();
        }
        for mic in &mut mics {
            mic.read(&mut frame).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not all streams run within 10 s: {:?} {:?}",
            outs.iter().map(Sink::stats).collect::<Vec<_>>(),
            mics.iter().map(Source::stats).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A source of PulseAudio's `module-sine-source` loaded for one test, unloaded when dropped. Its
/// latency is fixed at 2 s: it hands the server 2 s of audio at a time.
struct SineSource {
    module: String,
    id: String,
}

impl SineSource {
    fn load(tag: &str) -> SineSource {
        let id = format!("pinhole_test_{tag}_{}", std::process::id());
        let module = pactl(&[
            "load-module",
            "module-sine-source",
            &format!("source_name={id}"),
            "frequency=330",
        ])
        .unwrap_or_else(|| panic!("pactl load-module module-sine-source source_name={id} failed"));
        SineSource { module, id }
    }
}

impl Drop for SineSource {
    fn drop(&mut self) {
        if pactl(&["unload-module", &self.module]).is_none() && !std::thread::panicking() {
            panic!("pactl unload-module {} failed", self.module);
        }
    }
}

/// Opening is quick, every time, 10 times in a row (the streams of one round dropped before the
/// next opens, as a call's devices are when it ends and the next begins): the default speaker
/// and a source whose latency is fixed at 2 s (a sine source; a network or Bluetooth source is
/// alike) in under 1 s. The latter took 2 to 20 s: with cpal's 20 ms record buffer the server
/// dropped each of its 2 s blocks until one happened to be small enough, and cpal's `play`
/// waits for the first audio. The monitor of an idle null sink gets its first audio when the
/// sink's thread next wakes, up to 2 s (the sink's longest block) later: under 2.5 s.
#[test]
fn devices_open_quickly_ten_times_in_a_row() {
    let _devices = devices_lock();
    if !server_ready() {
        return;
    }
    const LIMIT: Duration = Duration::from_secs(1);
    const IDLE_MONITOR_LIMIT: Duration = Duration::from_millis(2_500);
    let sink = NullSink::load("quick");
    let sine = SineSource::load("sine");
    let mut times = Vec::new();
    for round in 0..10 {
        let start = Instant::now();
        let speaker = DeviceSink::open(None).unwrap();
        let playback = start.elapsed();
        let start = Instant::now();
        let monitor = DeviceSource::open(Some(&sink.monitor())).unwrap();
        let capture = start.elapsed();
        let start = Instant::now();
        let slow = DeviceSource::open(Some(&sine.id)).unwrap();
        let slow_capture = start.elapsed();
        times.push((
            playback.as_millis(),
            capture.as_millis(),
            slow_capture.as_millis(),
        ));
        assert!(
            playback < LIMIT && capture < IDLE_MONITOR_LIMIT && slow_capture < LIMIT,
            "round {round}: opening took {playback:?} (default speaker), {capture:?} (monitor), \
             {slow_capture:?} (2 s source); rounds so far (ms): {times:?}"
        );
        if round == 0 {
            // Opened with the source's own buffer, it delivers its tone.
            let mut slow = slow;
            let mut frame = vec![0.0f32; 960];
            let mut heard = Vec::new();
            let start = Instant::now();
            while heard.len() < 4_800 {
                let n = slow.read(&mut frame).unwrap();
                heard.extend_from_slice(&frame[..n]);
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "the 2 s source gave {} samples in 5 s: {:?}",
                    heard.len(),
                    slow.stats()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                rms(&heard) > 0.1,
                "the sine source is silent: rms {}",
                rms(&heard)
            );
            drop((speaker, monitor, slow));
            continue;
        }
        drop((speaker, monitor, slow));
    }
    eprintln!("open times (default speaker, monitor, 2 s source) in ms: {times:?}");
}
