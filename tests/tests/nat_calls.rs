//! `pinhole call` / `pinhole answer` (the real binaries) across real Linux NAT in network
//! namespaces (`pinhole_tests::netns`), with `pinhole-rendezvous` on the lab's internet. Each
//! test builds its own topology, checks the path the call took and the audio both ways (each
//! side's WAV carries the other side's tone), and tears the lab down on drop. Skipped, with a
//! message, where namespaces cannot be made (not root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use media::analysis::{dominant_frequency, rms};
use media::audio::WavSource;
use pinhole_tests::netns::{Host, Lab, NatKind};
use pinhole_tests::{
    Headless, HeadlessOutput, Rendezvous, TempDir, answer_args, binary, call_args, unique_name,
};

const RATE: u32 = 48_000;
const CALLEE_HZ: f64 = 440.0;
const CALLER_HZ: f64 = 660.0;

/// Fraction of the 100 ms windows of a WAV, after its first half second (setup), whose
/// dominant frequency is `hz` (within 10 Hz) and that are not silent.
fn tone_fraction(path: &Path, hz: f64) -> f64 {
    tone_fraction_from(path, hz, 0.5)
}

/// Like [`tone_fraction`], from `from_s` seconds into the WAV on (negative: that many seconds
/// before its end).
fn tone_fraction_from(path: &Path, hz: f64, from_s: f64) -> f64 {
    let samples = WavSource::read_all(path).unwrap();
    let from = if from_s >= 0.0 {
        (from_s * f64::from(RATE)) as usize
    } else {
        samples
            .len()
            .saturating_sub((-from_s * f64::from(RATE)) as usize)
    };
    let windows: Vec<&[f32]> = samples
        .get(from..)
        .unwrap_or(&[])
        .chunks_exact(4_800)
        .collect();
    let good = windows
        .iter()
        .filter(|w| {
            rms(w) > 0.05 && (dominant_frequency(w, RATE, 200.0, 2_000.0, 10.0) - hz).abs() <= 10.0
        })
        .count();
    good as f64 / windows.len().max(1) as f64
}

/// A line per WAV for the test's output: one character per 100 ms window, `#` where the
/// tone `hz` dominates, `.` where it does not (for diagnosis when a check fails).
fn timeline(path: &Path, hz: f64) -> String {
    let samples = WavSource::read_all(path).unwrap();
    samples
        .chunks_exact(4_800)
        .map(|w| {
            let tone = rms(w) > 0.05
                && (dominant_frequency(w, RATE, 200.0, 2_000.0, 10.0) - hz).abs() <= 10.0;
            if tone { '#' } else { '.' }
        })
        .collect()
}

/// Where the two clients live.
enum Topology {
    /// Each behind its own NAT of the given kind (callee's, caller's).
    TwoNats(NatKind, NatKind),
    /// Both behind one NAT of that kind, on its LAN.
    SameNat(NatKind),
}

/// What a call across the lab left on both sides.
struct CallResult {
    caller: HeadlessOutput,
    callee: HeadlessOutput,
    caller_json: serde_json::Value,
    callee_json: serde_json::Value,
    caller_hears: f64,
    callee_hears: f64,
}

/// Builds the topology, starts the server, an answering callee (440 Hz) and a caller
/// (660 Hz) that talks for `secs`, and collects both reports. `udp_timeout` shortens the
/// NATs' conntrack UDP timeouts. `None` when the lab cannot be made here (skip).
fn call_across(
    topology: Topology,
    firewall: bool,
    udp_timeout: Option<Duration>,
    secs: f64,
    block_direct_at: Option<Duration>,
) -> Option<CallResult> {
    let mut lab = Lab::new()?;
    let server_host = lab.server("srv").unwrap();
    let mut wans = Vec::new();
    let (callee_host, caller_host): (Host, Host) = match topology {
        Topology::TwoNats(a, b) => {
            let mut nat_a = lab.nat(a).unwrap();
            let mut nat_b = lab.nat(b).unwrap();
            if firewall {
                lab.firewall_wan(&nat_a).unwrap();
                lab.firewall_wan(&nat_b).unwrap();
            }
            wans = vec![nat_a.wan_ip, nat_b.wan_ip];
            if let Some(t) = udp_timeout {
                lab.set_udp_timeout(&nat_a, t).unwrap();
                lab.set_udp_timeout(&nat_b, t).unwrap();
            }
            (
                lab.host_behind(&mut nat_a, "cee").unwrap(),
                lab.host_behind(&mut nat_b, "cer").unwrap(),
            )
        }
        Topology::SameNat(kind) => {
            let mut nat = lab.nat(kind).unwrap();
            if firewall {
                lab.firewall_wan(&nat).unwrap();
            }
            if let Some(t) = udp_timeout {
                lab.set_udp_timeout(&nat, t).unwrap();
            }
            (
                lab.host_behind(&mut nat, "cee").unwrap(),
                lab.host_behind(&mut nat, "cer").unwrap(),
            )
        }
    };
    // The lab's "public" addresses are documentation ranges, which the server treats as
    // private for P4: allow them (as nat_lab.rs does).
    let mut cmd = lab.command(&server_host.ns, binary("pinhole-rendezvous"));
    cmd.arg("--allow-private-targets");
    let server = Rendezvous::start_command(cmd, &format!("{}:3478", server_host.ip));
    let server_addr = server.addr.to_string();

    let dir = TempDir::new("natcall");
    let callee_name = unique_name("cee");
    let caller_name = unique_name("cer");
    let (callee_wav, caller_wav) = (dir.join("callee.wav"), dir.join("caller.wav"));

    let mut cmd = lab.command(&callee_host.ns, binary("pinhole"));
    cmd.args(answer_args(
        &dir.join("callee.toml"),
        &server_addr,
        &callee_name,
        &format!("tone:{CALLEE_HZ}"),
        &format!("wav:{}", callee_wav.display()),
    ))
    .args(["--calls", "1"]);
    let mut callee = Headless::spawn(cmd);
    callee.expect_log("headless: registered", Duration::from_secs(10));

    let mut cmd = lab.command(&caller_host.ns, binary("pinhole"));
    cmd.args(call_args(
        &dir.join("caller.toml"),
        &server_addr,
        &caller_name,
        &callee_name,
        &format!("tone:{CALLER_HZ}"),
        &format!("wav:{}", caller_wav.display()),
        secs,
    ));
    let mut caller = Headless::spawn(cmd);
    if let Some(at) = block_direct_at {
        caller.expect_log(
            "media path changed path=\"direct\"",
            Duration::from_secs(10),
        );
        std::thread::sleep(at);
        // The internet drops UDP between the two NATs: the direct pair dies, the server
        // (and so the relay) stays reachable from both.
        for (from, to) in [(wans[0], wans[1]), (wans[1], wans[0])] {
            lab.iptables(
                &lab.inet,
                &[
                    "-I",
                    "FORWARD",
                    "-p",
                    "udp",
                    "-s",
                    &from.to_string(),
                    "-d",
                    &to.to_string(),
                    "-j",
                    "DROP",
                ],
            )
            .unwrap();
        }
    }
    let caller = caller.finish(Duration::from_secs_f64(secs + 20.0));
    let callee = callee.finish(Duration::from_secs(10));
    assert!(caller.status.success(), "caller failed: {caller:#?}");
    assert!(callee.status.success(), "callee failed: {callee:#?}");
    let caller_json = caller.one_json();
    let callee_json = callee.one_json();
    eprintln!("caller: {caller_json}\ncallee: {callee_json}");
    assert_eq!(caller_json["peer"], callee_name.as_str());
    assert_eq!(callee_json["peer"], caller_name.as_str());
    for json in [&caller_json, &callee_json] {
        let rtp = &json["rtp"];
        let received = rtp["received"].as_u64().unwrap();
        let sent = rtp["sent"].as_u64().unwrap();
        // 50 packets a second; most of the call's packets arrive.
        let expected = (secs * 50.0) as u64;
        assert!(sent + 10 >= expected, "sent {sent} of ~{expected}: {json}");
        // With the direct pair cut mid-call, what was sent on it in the seconds before the
        // switch to the relay is lost.
        let share = if block_direct_at.is_some() { 5 } else { 8 };
        assert!(
            received * 10 >= expected * share,
            "received {received} of ~{expected}: {json}"
        );
        assert!(json["setup_ms"].as_f64().is_some(), "{json}");
        assert!(json["duration_s"].as_f64().unwrap() >= secs - 0.5, "{json}");
    }
    eprintln!("caller's WAV: {}", timeline(&caller_wav, CALLEE_HZ));
    eprintln!("callee's WAV: {}", timeline(&callee_wav, CALLER_HZ));
    let caller_hears = tone_fraction(&caller_wav, CALLEE_HZ);
    let callee_hears = tone_fraction(&callee_wav, CALLER_HZ);
    eprintln!("caller hears 440 Hz in {caller_hears:.2}, callee hears 660 Hz in {callee_hears:.2}");
    // With the direct pair cut mid-call, the seconds before the switch to the relay are lost
    // (and concealed), and only those: the jitter buffer gives the outage up at once instead of
    // adding it to the delay (about 0.8 of a 10 s call with a 2 s outage carries the tone).
    let least = if block_direct_at.is_some() { 0.65 } else { 0.8 };
    assert!(
        caller_hears >= least,
        "caller hears the callee's tone in {caller_hears:.2} of the windows"
    );
    assert!(
        callee_hears >= least,
        "callee hears the caller's tone in {callee_hears:.2} of the windows"
    );
    let caller_end = tone_fraction_from(&caller_wav, CALLEE_HZ, -3.0);
    let callee_end = tone_fraction_from(&callee_wav, CALLER_HZ, -3.0);
    eprintln!("last 3 s: caller {caller_end:.2}, callee {callee_end:.2}");
    assert!(
        caller_end >= 0.8 && callee_end >= 0.8,
        "the tones over the call's last 3 s: caller {caller_end:.2}, callee {callee_end:.2}"
    );
    drop(server);
    drop(lab);
    Some(CallResult {
        caller,
        callee,
        caller_json,
        callee_json,
        caller_hears,
        callee_hears,
    })
}

fn path(json: &serde_json::Value) -> &str {
    json["path"].as_str().unwrap()
}

#[test]
fn both_behind_masquerade_go_direct() {
    let Some(r) = call_across(
        Topology::TwoNats(NatKind::Masquerade, NatKind::Masquerade),
        true,
        None,
        5.0,
        None,
    ) else {
        return;
    };
    // Endpoint-independent mapping on both sides: each side's mapped address (the one the
    // server saw) is the one its peer's checks reach, so the simultaneous checks open both
    // routers and a direct pair answers.
    assert_eq!(path(&r.caller_json), "direct", "{:#?}", r.caller);
    assert_eq!(path(&r.callee_json), "direct", "{:#?}", r.callee);
    assert!(r.caller_json["path_changes"].as_u64().unwrap() >= 1);
}

#[test]
fn both_behind_random_fully_stay_on_the_relay() {
    let Some(r) = call_across(
        Topology::TwoNats(NatKind::RandomFully, NatKind::RandomFully),
        true,
        None,
        5.0,
        None,
    ) else {
        return;
    };
    // A new random port per destination on both sides: the addresses the server saw are not
    // the ones the peer's checks would come from or could reach, so no pair answers.
    assert_eq!(path(&r.caller_json), "relay", "{:#?}", r.caller);
    assert_eq!(path(&r.callee_json), "relay", "{:#?}", r.callee);
    assert_eq!(r.caller_json["path_changes"].as_u64(), Some(0));
    assert!(r.caller_hears >= 0.8 && r.callee_hears >= 0.8);
}

#[test]
fn masquerade_to_random_fully_stays_on_the_relay() {
    let Some(r) = call_across(
        Topology::TwoNats(NatKind::Masquerade, NatKind::RandomFully),
        true,
        None,
        5.0,
        None,
    ) else {
        return;
    };
    // What Linux gives: the MASQUERADE side keeps one public port for every destination, but
    // conntrack only lets in replies to flows it started (address- and port-dependent
    // filtering). Its checks go to the address the server saw for the --random-fully peer,
    // which that NAT never maps for another destination; the --random-fully peer's checks
    // leave from a fresh random port that the MASQUERADE side's checks never targeted, so
    // they are dropped too. No pair answers both ways: the call stays on the relay.
    assert_eq!(path(&r.caller_json), "relay", "{:#?}", r.caller);
    assert_eq!(path(&r.callee_json), "relay", "{:#?}", r.callee);
}

#[test]
fn two_clients_behind_one_nat_go_direct() {
    let Some(r) = call_across(
        Topology::SameNat(NatKind::RandomFully),
        true,
        None,
        5.0,
        None,
    ) else {
        return;
    };
    // Both on the NAT's LAN (a bridge): the host candidates reach each other without the NAT,
    // even one that maps --random-fully.
    assert_eq!(path(&r.caller_json), "direct", "{:#?}", r.caller);
    assert_eq!(path(&r.callee_json), "direct", "{:#?}", r.callee);
}

#[test]
fn a_call_outlives_the_nats_udp_timeout() {
    // 4 s conntrack UDP timeout on both NATs, a 12 s call: the media (and the keepalives to
    // the server) must keep both the direct pair and the registration mappings open.
    let Some(r) = call_across(
        Topology::TwoNats(NatKind::Masquerade, NatKind::Masquerade),
        true,
        Some(Duration::from_secs(4)),
        12.0,
        None,
    ) else {
        return;
    };
    assert_eq!(path(&r.caller_json), "direct", "{:#?}", r.caller);
    assert_eq!(path(&r.callee_json), "direct", "{:#?}", r.callee);
    assert!(r.caller_json["duration_s"].as_f64().unwrap() >= 11.5);
}

#[test]
fn a_direct_call_moves_to_the_relay_when_the_direct_pair_dies() {
    // Two MASQUERADE NATs: direct at first; 2 s in, the internet drops UDP between the NATs
    // (not to the server). The liveness checks fail, the media moves to the relay within a few
    // seconds, and the call goes on to its end with audio both ways.
    let Some(r) = call_across(
        Topology::TwoNats(NatKind::Masquerade, NatKind::Masquerade),
        true,
        None,
        10.0,
        Some(Duration::from_secs(2)),
    ) else {
        return;
    };
    for (json, out) in [(&r.caller_json, &r.caller), (&r.callee_json, &r.callee)] {
        assert_eq!(path(json), "relay", "{out:#?}");
        assert!(json["path_changes"].as_u64().unwrap() >= 2, "{json}");
    }
}
