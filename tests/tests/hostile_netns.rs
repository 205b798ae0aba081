//! A hostile network around real calls (`pinhole call` / `pinhole answer` and
//! `pinhole-rendezvous` in the network namespaces of `pinhole_tests::netns`): what a third
//! host or an eavesdropper on a home router or at the server sees and can do. Packets are
//! captured by `tcpdump` inside the namespace (`pinhole_tests::hostile::Capture`, read back by
//! `pinhole_tests::pcap`) and sent from a thread that entered the attacker's namespace. Without
//! root or tcpdump they fail under `./dev test` and skip by hand (`pinhole_tests::prereq`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pinhole_tests::hostile::{
    Capture, Packet, Transport, entropy, in_namespace, rtp_payloads, send_spoofed_udp, tcp_streams,
    tcpdump_installed, tls_records, udp_ports,
};
use pinhole_tests::netns::{Host, Lab, Nat, NatKind, Ns};
use pinhole_tests::prereq::missing;
use pinhole_tests::{Headless, Party, Place, Rendezvous, TempDir};

/// A lab with a server, a callee behind its own home router (`callee_nat`), a caller behind
/// another (`caller_nat`; `None`: public) and a public third host.
struct HostileLab {
    lab: Lab,
    server: Rendezvous,
    server_host: Host,
    callee_nat: Option<Nat>,
    callee_host: Host,
    caller_host: Host,
    third: Host,
    callee: Party,
    caller: Party,
    _dir: TempDir,
}

impl HostileLab {
    fn new(callee_nat: Option<NatKind>, caller_nat: Option<NatKind>) -> Option<Self> {
        let dir = TempDir::new("hostile");
        let (callee, caller) = (
            Party::tone(&dir, "cee", 440.0),
            Party::tone(&dir, "cer", 660.0),
        );
        let mut lab = Lab::new()?;
        let server_host = lab.server("srv").unwrap();
        let mut side = |kind: Option<NatKind>, role: &str| match kind {
            None => (None, lab.public_host(role).unwrap()),
            Some(kind) => {
                let mut nat = lab.nat(kind).unwrap();
                lab.firewall_wan(&nat).unwrap();
                let host = lab.host_behind(&mut nat, role).unwrap();
                (Some(nat), host)
            }
        };
        let (callee_nat, callee_host) = side(callee_nat, "cee");
        let (_, caller_host) = side(caller_nat, "cer");
        let third = lab.public_host("atk").unwrap();
        // The lab's "public" addresses are documentation ranges: allow them as targets.
        let listen = SocketAddr::from((server_host.ip, 3478)).to_string();
        let place = Place::In(&lab, &server_host.ns);
        let server = Rendezvous::start_at(place, &listen, &["--allow-private-targets"]);
        Some(Self {
            lab,
            server,
            server_host,
            callee_nat,
            callee_host,
            caller_host,
            third,
            callee,
            caller,
            _dir: dir,
        })
    }

    fn answer(&self) -> Headless {
        let place = Place::In(&self.lab, &self.callee_host.ns);
        self.callee
            .answer(place, &self.server.addr.to_string(), &["--calls", "1"])
    }

    fn call(&self, secs: f64) -> Headless {
        let place = Place::In(&self.lab, &self.caller_host.ns);
        self.caller.call(
            place,
            &self.server.addr.to_string(),
            &self.callee.name,
            secs,
        )
    }
}

/// Numbers in `json` (at any depth) under keys that name refused media: forged, replayed,
/// from a stranger, dropped in probation...
fn refused_media_counts(json: &serde_json::Value, out: &mut Vec<(String, u64)>) {
    const WORDS: [&str; 8] = [
        "forged",
        "replayed",
        "stranger",
        "probation",
        "unauth",
        "foreign",
        "injected",
        "rejected",
    ];
    match json {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if let Some(n) = value.as_u64()
                    && WORDS.iter().any(|w| key.contains(w))
                {
                    out.push((key.clone(), n));
                }
                refused_media_counts(value, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                refused_media_counts(v, out);
            }
        }
        _ => {}
    }
}

/// An RTP packet with Opus's payload type, a stranger's SSRC and 60 bytes of payload.
fn stranger_rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend(seq.to_be_bytes());
    p.extend((u32::from(seq) * 960).to_be_bytes());
    p.extend(0x5eed_f00d_u32.to_be_bytes());
    // A CELT frame header and noise: what a decoder would happily play.
    p.push(0xfc);
    p.extend((0..59u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    p
}

/// Starts sending `count` packets of a stranger's RTP stream (50 a second) from the third host
/// to every UDP port of `target`'s process on the callee's host; the thread returns how many
/// datagrams went out.
fn inject(lab: &HostileLab, target: &Headless, count: u16) -> std::thread::JoinHandle<u32> {
    let ports = udp_ports(target.pid());
    assert!(!ports.is_empty(), "the callee has no UDP socket");
    let targets: Vec<SocketAddr> = ports
        .iter()
        .map(|&p| SocketAddr::new(IpAddr::V4(lab.callee_host.ip), p))
        .collect();
    let ns = lab.third.ns.clone();
    std::thread::spawn(move || {
        in_namespace(&ns, move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            let start = Instant::now();
            let mut sent = 0u32;
            for seq in 0..count {
                let due = start + Duration::from_millis(20) * u32::from(seq);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                for t in &targets {
                    if socket.send_to(&stranger_rtp(seq), t).is_ok() {
                        sent += 1;
                    }
                }
            }
            sent
        })
        .unwrap_or(0)
    })
}

/// A call of `secs` between two public hosts, 2 s after it connected (direct by then): the
/// lab, the callee and the caller.
fn direct_call(secs: f64) -> Option<(HostileLab, Headless, Headless)> {
    let lab = HostileLab::new(None, None)?;
    let callee = lab.answer();
    let mut caller = lab.call(secs);
    caller.expect_log("connected", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    Some((lab, callee, caller))
}

/// Finding: direct RTP was taken from any source address and a new SSRC reset the stream at
/// once: 201 packets injected from a third host were all played, the real peer's tone
/// survived in 14% of windows, and the stream kept a dead call alive. Protected: during a
/// direct call, RTP from a third host to the callee's media socket is dropped, counted and
/// never heard: the callee hears the caller throughout.
#[test]
fn rtp_injected_from_a_third_host_is_not_heard() {
    let Some((lab, callee, caller)) = direct_call(8.0) else {
        return;
    };
    // 4 s of a stranger's stream at 50 packets a second to every UDP port of the callee.
    let sent = inject(&lab, &callee, 200).join().unwrap();
    assert!(sent >= 200, "sent {sent}");
    let caller = caller.finish(Duration::from_secs(30));
    let callee = callee.finish(Duration::from_secs(10));
    assert!(caller.status.success(), "{caller:#?}");
    assert!(callee.status.success(), "{callee:#?}");
    let report = callee.one_json();
    eprintln!("callee: {report}");
    eprintln!("callee's WAV: {}", lab.callee.timeline(&lab.caller));
    assert_eq!(report["path"], "direct", "{report}");
    let heard = lab.callee.hears(&lab.caller);
    assert!(heard >= 0.8, "the caller's tone in {heard:.2} of the call");
    let mut counts = Vec::new();
    refused_media_counts(&report, &mut counts);
    assert!(
        counts.iter().any(|(_, n)| *n >= 100),
        "the injected packets were not counted: {counts:?} in {report}"
    );
}

/// Finding: the injected stream also kept a dead call alive. Protected: when the caller dies
/// (killed, no goodbye) during a direct call, a stranger's stream to the callee does not
/// hide the silence: the callee's call ends within seconds all the same.
#[test]
fn injected_rtp_does_not_keep_a_dead_call_alive() {
    let Some((lab, callee, mut caller)) = direct_call(60.0) else {
        return;
    };
    let injector = inject(&lab, &callee, 1_000);
    std::thread::sleep(Duration::from_millis(500));
    caller.kill();
    // Peer silence ends a direct call after 5 s; 15 s is plenty, and the stream goes on 20 s.
    let callee = callee.finish(Duration::from_secs(15));
    eprintln!("callee: {}", callee.stdout);
    let report = callee.one_json();
    assert_ne!(report["end"], "peer_hung_up", "{report}");
    assert!(
        report["duration_s"].as_f64().unwrap() < 12.0,
        "the dead call lasted: {report}"
    );
    assert!(injector.join().unwrap() >= 500);
}

/// What a capture of one call shows.
struct Seen {
    /// TLS record types of each control-connection direction (or where it stopped being TLS).
    control: Vec<Result<Vec<u8>, String>>,
    /// RTP payloads that reached the callee's side.
    payloads: Vec<(Vec<u8>, Vec<u8>)>,
}

fn control_streams(packets: &[Packet], port: u16) -> Vec<Result<Vec<u8>, String>> {
    tcp_streams(packets)
        .into_iter()
        .filter(|((from, to), _)| from.port() == port || to.port() == port)
        .map(|(_, bytes)| tls_records(&bytes))
        .collect()
}

/// Datagrams in `packets` sent to `ip`.
fn udp_to(packets: &[Packet], ip: IpAddr) -> Vec<&[u8]> {
    packets
        .iter()
        .filter(|p| p.transport == Transport::Udp && p.to.ip() == ip)
        .map(|p| p.payload.as_slice())
        .collect()
}

/// A 5 s call captured by tcpdump at the server (its one link) and on the callee's home router
/// (every interface: the LAN and the WAN side), which took `path` on both sides.
fn captured_call(lab: &mut HostileLab, path: &str) -> (Seen, Seen) {
    let nat = lab
        .callee_nat
        .as_ref()
        .expect("the callee is behind a router");
    let at_server = Capture::start(&mut lab.lab, &lab.server_host.ns, "eth0").unwrap();
    let at_router = Capture::start(&mut lab.lab, &nat.ns, "any").unwrap();
    let callee = lab.answer();
    let caller = lab.call(5.0);
    let caller = caller.finish(Duration::from_secs(30));
    let callee = callee.finish(Duration::from_secs(10));
    let server_packets = at_server.stop().unwrap();
    let router_packets = at_router.stop().unwrap();
    assert!(caller.status.success(), "{caller:#?}");
    assert!(callee.status.success(), "{callee:#?}");
    for report in [caller.one_json(), callee.one_json()] {
        eprintln!("{report}");
        assert_eq!(report["path"], path, "{report}");
    }
    let port = lab.server.addr.port();
    let wan = IpAddr::V4(nat.wan_ip);
    let server = Seen {
        control: control_streams(&server_packets, port),
        payloads: rtp_payloads(udp_to(&server_packets, IpAddr::V4(lab.server_host.ip))),
    };
    let router = Seen {
        control: control_streams(&router_packets, port),
        payloads: rtp_payloads(udp_to(&router_packets, wan)),
    };
    (server, router)
}

/// Decodes `packets` (RTP as captured) with ffmpeg as Opus (payload type 111, as Pinhole
/// sends it), sent to it over the loopback of `ns`, a namespace of its own: no other test's
/// datagrams can reach ffmpeg's port there (on the machine's loopback, a port found free may be
/// another test's destination). The WAV it wrote, or `None` when it decoded nothing.
fn ffmpeg_decode(
    lab: &mut Lab,
    ns: &Ns,
    dir: &Path,
    packets: &[(Vec<u8>, Vec<u8>)],
) -> Option<std::path::PathBuf> {
    // Nothing else listens in the namespace: the RTP port and the next one (RTCP) are free.
    let port = 5004;
    let (sdp, out) = (dir.join("captured.sdp"), dir.join("captured.wav"));
    let session = format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=capture\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n"
    );
    std::fs::write(&sdp, session).unwrap();
    let (sdp, out_arg) = (sdp.display().to_string(), out.display().to_string());
    let args = [
        "-hide_banner",
        "-loglevel",
        "fatal",
        "-protocol_whitelist",
        "file,udp,rtp",
        "-i",
        &sdp,
        "-t",
        "4",
        "-ac",
        "1",
        "-ar",
        "48000",
        "-y",
        &out_arg,
    ];
    let mut ffmpeg = lab
        .spawn(lab.command(ns, "ffmpeg").args(args).stdin(Stdio::null()))
        .unwrap();
    // Sent once ffmpeg listens (it may take seconds to start on a busy machine).
    lab.wait_udp_listen(ns, port, Duration::from_secs(10))
        .unwrap();
    let datagrams: Vec<Vec<u8>> = packets
        .iter()
        .map(|(header, payload)| [&header[..], &payload[..]].concat())
        .collect();
    in_namespace(ns, move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for p in &datagrams {
            let _ = socket.send_to(p, ("127.0.0.1", port));
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ffmpeg.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let len = std::fs::metadata(&out).map_or(0, |m| m.len());
    eprintln!(
        "ffmpeg decoded {len} bytes of WAV from {} packets",
        packets.len()
    );
    (len > 44).then_some(out)
}

/// Checks one capture's media: it looks random (entropy above
/// 7.5 bits per byte, no first payload byte on more than 10% of packets) and that ffmpeg
/// cannot decode into the caller's tone.
fn check_capture(lab: &mut Lab, ns: &Ns, where_: &str, seen: &Seen, dir: &Path) {
    let payloads = &seen.payloads;
    assert!(
        payloads.len() >= 100,
        "{where_}: only {} RTP packets seen",
        payloads.len()
    );
    let all: Vec<u8> = payloads.iter().flat_map(|(_, p)| p.clone()).collect();
    let bits = entropy(&all);
    let mut first: HashMap<u8, usize> = HashMap::new();
    for (_, p) in payloads {
        *first.entry(p[0]).or_default() += 1;
    }
    let (byte, most) = first.iter().max_by_key(|(_, n)| **n).unwrap();
    eprintln!(
        "{where_}: {} RTP payloads, {bits:.2} bits/byte, first byte {byte:#04x} on {most}",
        payloads.len()
    );
    assert!(bits > 7.5, "{where_}: {bits:.2} bits per byte");
    assert!(
        *most * 10 <= payloads.len(),
        "{where_}: {most} of {} payloads start with {byte:#04x}",
        payloads.len()
    );
    if Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return missing("ffmpeg is not installed (scripts/packages/media.txt lists it)");
    }
    if let Some(wav) = ffmpeg_decode(lab, ns, dir, payloads) {
        let heard = pinhole_tests::tone::fraction(&wav, 660.0, 0.0);
        let timeline = pinhole_tests::tone::timeline(&wav, 660.0);
        eprintln!("{where_}: the caller's tone in {heard:.2} of the decoded windows: {timeline}");
        // Plain Opus would decode into the whole call (4 s, the tone in every window). What
        // ffmpeg makes of encrypted payloads varies: seconds of noise, or (it gives up on
        // most of them) a window or two, whose one dominant frequency says nothing. So the
        // tone is judged over a second or more of decoding, and less than that is itself
        // the sign that the payloads are not Opus.
        if timeline.len() < 10 {
            eprintln!(
                "{where_}: ffmpeg could make only {} windows of the payloads",
                timeline.len()
            );
        } else {
            // Plain Opus carries the tone in nearly every window; a window or two of decoded
            // noise can look like it (seen: 2 of 23), so the line is drawn at half.
            assert!(
                heard < 0.5,
                "{where_}: ffmpeg decoded the caller's tone in {heard:.2} of the windows: {timeline}"
            );
        }
    }
}

/// The capture of issue 11: a whole call between two homes behind `kind` NATs (MASQUERADE:
/// it goes direct; `--random-fully`: relayed), seen at the server and on the callee's home
/// router. Checks `where_` of them ("server", "home router").
fn capture_test(kind: NatKind, path: &str, tag: &str, check: &[&str]) {
    if !tcpdump_installed() {
        return;
    }
    let Some(mut lab) = HostileLab::new(Some(kind), Some(kind)) else {
        return;
    };
    let dir = TempDir::new(tag);
    let (server, router) = captured_call(&mut lab, path);
    let decoder = lab.lab.namespace("dec").unwrap();
    // The control connection is TLS wherever it is seen, media or not.
    for (where_, seen) in [("server", &server), ("home router", &router)] {
        assert!(!seen.control.is_empty(), "{where_}: no control connection");
        for stream in &seen.control {
            let types = stream
                .as_ref()
                .unwrap_or_else(|e| panic!("{where_}: plaintext on the control port: {e}"));
            assert!(
                types.contains(&0x17),
                "{where_}: no application data: {types:?}"
            );
        }
        if check.contains(&where_) {
            check_capture(&mut lab.lab, &decoder, where_, seen, &dir.path);
        }
    }
}

#[test]
fn a_captured_direct_call_shows_only_tls_and_random_media() {
    capture_test(
        NatKind::Masquerade,
        "direct",
        "capture-direct",
        &["home router"],
    );
}

/// Relayed: the server relays media it cannot read.
#[test]
fn a_captured_relayed_call_shows_only_tls_and_random_media() {
    capture_test(
        NatKind::RandomFully,
        "relay",
        "capture-relay",
        &["server", "home router"],
    );
}

/// Finding: one authenticated request with a forged source address moved the sender's
/// mapping to a victim, who then got probes (29/s) and, through a relayed call, the other
/// party's media. Here on a real network: the callee (the attacker) keeps its own keepalives
/// from reaching the server (its home router drops them, and we keep a copy), then sends the
/// freshest one with a third host's address as its source (through the internet's router:
/// a network that does not filter forged sources), during a relayed call.
/// Protected: the server sees it, but the third host gets at most a challenge and none of
/// the call's media; the call goes on.
#[test]
fn a_keepalive_with_a_forged_source_redirects_nothing() {
    if !tcpdump_installed() {
        return;
    }
    let Some(mut lab) = HostileLab::new(Some(NatKind::RandomFully), Some(NatKind::RandomFully))
    else {
        return;
    };
    let nat = lab.callee_nat.clone().unwrap();
    let server = lab.server.addr;
    let (server_ip, port) = (lab.server_host.ip.to_string(), server.port().to_string());
    let callee = lab.answer();
    let mut caller = lab.call(24.0);
    caller.expect_log("connected", Duration::from_secs(15));
    // Requests to the server (STUN: first byte 0) stop at the callee's router.
    let keep = [
        "FORWARD",
        "-p",
        "udp",
        "-d",
        &server_ip,
        "--dport",
        &port,
        "-m",
        "u32",
        "--u32",
        "0>>22&0x3C@8>>24=0",
        "-j",
        "DROP",
    ];
    let rule = |lab: &Lab, action: &str| {
        let mut args = vec![action];
        args.extend(keep);
        lab.iptables(&nat.ns, &args).unwrap();
    };
    // Every interface: the requests are dropped before they reach the WAN side.
    let at_router = Capture::start(&mut lab.lab, &nat.ns, "any").unwrap();
    rule(&lab.lab, "-I");
    // Longer than the client's keepalive interval (15 s).
    std::thread::sleep(Duration::from_secs(16));
    let kept: Vec<Packet> = at_router
        .stop()
        .unwrap()
        .into_iter()
        .filter(|p| {
            p.transport == Transport::Udp
                && p.to == server
                && p.from.ip() != IpAddr::V4(nat.wan_ip)
                && p.payload.first() == Some(&0)
        })
        .collect();
    let request = kept.last().expect("no keepalive in 16 s").payload.clone();
    let victim = std::net::SocketAddrV4::new(lab.third.ip, 40_000);
    let at_third = Capture::start(&mut lab.lab, &lab.third.ns, "eth0").unwrap();
    let at_server = Capture::start(&mut lab.lab, &lab.server_host.ns, "eth0").unwrap();
    let SocketAddr::V4(to) = server else {
        panic!("an IPv4 server")
    };
    in_namespace(&lab.lab.inet, move || {
        send_spoofed_udp(victim, to, &request)
    })
    .unwrap()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    rule(&lab.lab, "-D");
    let (at_third, at_server) = (at_third.stop().unwrap(), at_server.stop().unwrap());
    let victim = SocketAddr::V4(victim);
    assert!(
        at_server
            .iter()
            .any(|p| p.from == victim && p.to == server && p.payload.first() == Some(&0)),
        "the forged request never reached the server"
    );
    let from_server: Vec<&Packet> = at_third
        .iter()
        .filter(|p| p.transport == Transport::Udp && p.from.ip() == server.ip())
        .collect();
    let media = rtp_payloads(from_server.iter().map(|p| p.payload.as_slice()));
    eprintln!(
        "the third host got {} datagrams from the server, {} of them media",
        from_server.len(),
        media.len()
    );
    assert!(media.is_empty(), "{} media packets redirected", media.len());
    // A challenge (the forged request was taken for the callee's), and nothing more.
    assert!(
        (1..=3).contains(&from_server.len()),
        "{} datagrams",
        from_server.len()
    );
    let caller = caller.finish(Duration::from_secs(40));
    let callee = callee.finish(Duration::from_secs(10));
    assert!(caller.status.success(), "{caller:#?}");
    assert!(callee.status.success(), "{callee:#?}");
}
