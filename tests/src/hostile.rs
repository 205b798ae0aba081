//! What the hostile tests (`traversal/tests/hostile.rs`, `tests/tests/hostile_netns.rs`) use
//! to attack the real binaries and to judge what went over the wire:
//!
//! - [`reuse_port_socket`] and [`unsent_requests`]: a datagram "from" an address the sender
//!   does not own (on loopback, two sockets share a port), carrying an authenticated request
//!   the server never saw;
//! - [`next_message`]: a scripted client's next message of a kind, telling `error`, `ended`, a
//!   silent server and a closed connection apart;
//! - [`udp_ports`]: the UDP ports a process has open (its media socket);
//! - [`Capture`]: what a real `tcpdump` sees on an interface of a lab namespace, read back as
//!   [`Packet`]s ([`crate::pcap`]), and [`tcp_streams`], [`tls_records`], [`rtp_payloads`],
//!   [`entropy`] to judge it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, sockopt};
use nix::unistd::Pid;
use serde_json::Value;

use crate::TempDir;
use crate::netns::{Lab, Ns};
pub use crate::pcap::{Packet, Transport};
use crate::scripted::Client;

/// A UDP socket bound to `addr` with `SO_REUSEPORT`: two of them share the address, so a
/// test can send "from" a victim's address (a spoofed source, on loopback, without root)
/// while the victim's own socket keeps receiving once the sender is dropped.
pub fn reuse_port_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Datagram, SockFlag::empty(), None)?;
    socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let bind: socket::SockaddrStorage = addr.into();
    socket::bind(fd.as_raw_fd(), &bind)?;
    let socket = UdpSocket::from(fd);
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    Ok(socket)
}

/// A TCP connection to `server` from `source` (on loopback, another 127.0.0.0/8 address
/// stands for another host).
pub fn tcp_from(source: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let family = if source.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::empty(), None)?;
    let bind: socket::SockaddrStorage = SocketAddr::new(source, 0).into();
    socket::bind(fd.as_raw_fd(), &bind)?;
    let to: socket::SockaddrStorage = server.into();
    socket::connect(fd.as_raw_fd(), &to)?;
    Ok(TcpStream::from(fd))
}

/// The authenticated UDP requests `client` signs with its key, sent to a socket of ours
/// instead of the server (which never sees them, so their sequence numbers are fresh): the
/// client's keepalive tries for about 10 s, then gives up. Restores `client.server`. The
/// requests come in the order sent (rising sequence numbers).
pub fn unsent_requests(client: &mut Client) -> io::Result<Vec<Vec<u8>>> {
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    sink.set_read_timeout(Some(Duration::from_millis(20)))?;
    let server = client.server;
    client.server = sink.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sink.recv_from(&mut buf) {
                    out.push(buf[..n].to_vec());
                }
            }
            out
        })
    };
    let answered = client.keepalive().is_ok();
    client.server = server;
    stop.store(true, Ordering::Relaxed);
    let requests = collector.join().unwrap_or_default();
    if answered {
        return Err(io::Error::other(
            "something answered the captured keepalive",
        ));
    }
    Ok(requests)
}

/// Every datagram `socket` receives during `span`, with its source.
pub fn received(socket: &UdpSocket, span: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let end = Instant::now() + span;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            out.push((from, buf[..n].to_vec()));
        }
    }
    out
}

/// What [`next_message`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A message of the kind asked for.
    Message(Value),
    /// An `error` or `ended` message on the way (the messages of other kinds are skipped).
    Refused(Value),
    /// Nothing of either within the wait.
    Silence,
    /// The server closed the connection (or it failed).
    Closed(String),
}

/// The next message of `kind` on `client`'s control connection, within `wait`.
pub fn next_message(client: &mut Client, kind: &str, wait: Duration) -> Next {
    match client.expect_within(kind, wait) {
        Ok(m) => Next::Message(m),
        Err(e) => {
            let text = e.to_string();
            let prefix = format!("waiting for {kind}: ");
            match text
                .strip_prefix(&prefix)
                .map(serde_json::from_str::<Value>)
            {
                Some(Ok(m)) => Next::Refused(m),
                _ if text.starts_with("no ") && text.contains(" within ") => Next::Silence,
                _ => Next::Closed(text),
            }
        }
    }
}

/// The local UDP ports of the sockets process `pid` holds (from `/proc`).
pub fn udp_ports(pid: u32) -> Vec<u16> {
    let mut inodes = Vec::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let link = link.to_string_lossy().into_owned();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.push(inode.to_owned());
            }
        }
    }
    let mut ports = Vec::new();
    // The process's own view of its namespace's sockets.
    for table in ["udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if !inodes.iter().any(|i| i == inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Moves the calling thread into the network namespace `ns` (sockets it opens from then on
/// live there). For a thread of its own: see [`in_namespace`].
pub fn enter(ns: &Ns) -> io::Result<()> {
    let netns = File::open(format!("/var/run/netns/{}", ns.name))?;
    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

/// Runs `f` on a thread inside the network namespace `ns` (a third host of a lab, say) and
/// returns what it returns.
pub fn in_namespace<T: Send + 'static>(
    ns: &Ns,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = ns.clone();
    std::thread::spawn(move || -> io::Result<T> {
        enter(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("the thread in the namespace panicked"))?
}

/// Sends one UDP datagram with a forged source address (a raw socket with our own IPv4
/// header: needs root, in the calling thread's namespace; see [`in_namespace`]).
pub fn send_spoofed_udp(from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::Raw,
    )?;
    let udp_len = u16::try_from(8 + payload.len()).map_err(io::Error::other)?;
    let total = 20 + udp_len;
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet.extend(from.ip().octets());
    packet.extend(to.ip().octets());
    // The kernel fills in the IP checksum; UDP's zero checksum means "none".
    packet.extend(from.port().to_be_bytes());
    packet.extend(to.port().to_be_bytes());
    packet.extend(udp_len.to_be_bytes());
    packet.extend([0, 0]);
    packet.extend_from_slice(payload);
    let dest = socket::SockaddrIn::from(to);
    socket::sendto(fd.as_raw_fd(), &packet, &dest, socket::MsgFlags::empty())?;
    Ok(())
}

/// Shannon entropy of `bytes`, in bits per byte (8 for uniformly random bytes).
pub fn entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let total = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.log2()
        })
        .sum()
}

/// A `tcpdump` writing every packet on one interface of a lab namespace to a pcap file, from
/// [`Capture::start`] to [`Capture::stop`], which reads the file back ([`crate::pcap`]).
/// Started with [`Lab::spawn`], so the lab's teardown kills it if a test fails first; stopped
/// by a signal to its own PID.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    dir: TempDir,
    what: String,
}

/// True when `tcpdump` is installed; otherwise says so with [`crate::prereq::missing`] (a
/// failure under `./dev test`) and the caller returns.
pub fn tcpdump_installed() -> bool {
    let found = Command::new("tcpdump")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        crate::prereq::missing("tcpdump is not installed (scripts/packages/nat-tests.txt)");
    }
    found
}

impl Capture {
    /// Starts `tcpdump -i IFACE` in `ns` (`any`: every interface) and returns once it says it
    /// is listening.
    pub fn start(lab: &mut Lab, ns: &Ns, iface: &str) -> io::Result<Self> {
        let dir = TempDir::new("tcpdump");
        let log = File::create(dir.join("tcpdump.log"))?;
        let mut cmd = lab.command(ns, "tcpdump");
        // Whole packets (-s 0), each written at once (-U), no name lookups (-n), and no
        // switch to the `tcpdump` user (-Z root), who may not write to the test's directory.
        cmd.args(["-i", iface, "-U", "-s", "0", "-n", "-Z", "root", "-w"])
            .arg(dir.join("capture.pcap"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = lab.spawn(&mut cmd)?;
        let mut capture = Self {
            child,
            dir,
            what: format!("tcpdump -i {iface} in {}", ns.name),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !capture.log().contains("listening on") {
            if let Some(status) = capture.child.try_wait()? {
                return Err(capture.failed(&format!("exited ({status})")));
            }
            if Instant::now() > deadline {
                return Err(capture.failed("did not start listening within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(capture)
    }

    /// Stops tcpdump (SIGINT: it writes out what it holds) and returns the UDP and TCP
    /// packets it captured.
    pub fn stop(mut self) -> io::Result<Vec<Packet>> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).map_err(io::Error::other)?);
        nix::sys::signal::kill(pid, Signal::SIGINT)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                return Err(self.failed("did not stop within 10 s of SIGINT"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            return Err(self.failed(&format!("exited ({status})")));
        }
        let file = std::fs::read(self.dir.join("capture.pcap"))?;
        crate::pcap::packets(&file)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", self.what)))
    }

    /// What tcpdump said on stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tcpdump.log")).unwrap_or_default()
    }

    fn failed(&self, what: &str) -> io::Error {
        io::Error::other(format!("{} {what}: {}", self.what, self.log().trim()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Still running only when the test failed before `stop` (a no-op once reaped).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of each TCP stream (one direction of a connection) among `packets`, reassembled
/// by sequence number (retransmissions and the copies seen on two interfaces counted once),
/// keyed by (from, to).
pub fn tcp_streams(packets: &[Packet]) -> BTreeMap<(SocketAddr, SocketAddr), Vec<u8>> {
    let mut segments: BTreeMap<(SocketAddr, SocketAddr), BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
    for p in packets {
        if let Transport::Tcp { seq } = p.transport
            && !p.payload.is_empty()
        {
            segments
                .entry((p.from, p.to))
                .or_default()
                .entry(seq)
                .or_insert_with(|| p.payload.clone());
        }
    }
    segments
        .into_iter()
        .map(|(key, parts)| {
            let mut out = Vec::new();
            let mut next: Option<u32> = None;
            for (seq, bytes) in parts {
                let skip = match next {
                    Some(n) => usize::try_from(n.wrapping_sub(seq)).unwrap_or(0),
                    None => 0,
                };
                if skip < bytes.len() && next.is_none_or(|n| n.wrapping_sub(seq) < 1 << 31) {
                    out.extend_from_slice(&bytes[skip..]);
                    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                    next = Some(seq.wrapping_add(len));
                }
            }
            (key, out)
        })
        .collect()
}

/// The TLS records of a TCP stream: their content types, or where the stream stops looking
/// like TLS (a record type outside 20-23, a version other than 0x0303, 0x0301 allowed on the
/// first record as TLS 1.3's ClientHello has it, or a record longer than 2^14 + 256).
pub fn tls_records(stream: &[u8]) -> Result<Vec<u8>, String> {
    let mut types = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let Some(header) = stream.get(at..at + 5) else {
            // A record cut by the end of the capture.
            break;
        };
        let (kind, version) = (header[0], u16::from_be_bytes([header[1], header[2]]));
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let version_ok =
            version == 0x0303 || (types.is_empty() && kind == 0x16 && version == 0x0301);
        if !(0x14..=0x17).contains(&kind) || !version_ok || len > (1 << 14) + 256 {
            let shown = &stream[at..stream.len().min(at + 40)];
            return Err(format!(
                "not a TLS record at byte {at}: {shown:02x?} ({:?})",
                String::from_utf8_lossy(shown)
            ));
        }
        types.push(kind);
        at += 5 + len;
    }
    Ok(types)
}

/// The RTP packets among UDP payloads: the datagram itself (direct) or the media of a relay
/// frame (ChannelData, 4-byte header and 8-byte relay token); RTCP (payload types 64-95 after
/// the marker bit) left out. Each as (header, payload).
pub fn rtp_payloads<'a>(datagrams: impl IntoIterator<Item = &'a [u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for d in datagrams {
        let media = match d.first() {
            Some(0x40..=0x4f) => d.get(12..).unwrap_or_default(),
            Some(0x80..=0xbf) => d,
            _ => continue,
        };
        if media.len() < 12 || media[0] >> 6 != 2 || (64..96).contains(&(media[1] & 0x7f)) {
            continue;
        }
        let csrc = usize::from(media[0] & 0x0f) * 4;
        let mut start = 12 + csrc;
        if media[0] & 0x10 != 0 {
            let Some(ext) = media.get(start + 2..start + 4) else {
                continue;
            };
            start += 4 + usize::from(u16::from_be_bytes([ext[0], ext[1]])) * 4;
        }
        if start >= media.len() {
            continue;
        }
        out.push((media[..start].to_vec(), media[start..].to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_known_inputs() {
        assert!(entropy(&[7; 1000]).abs() < 1e-9);
        let all: Vec<u8> = (0..=255).collect();
        assert!((entropy(&all) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn tls_records_are_walked_and_plaintext_is_not() {
        let mut s = vec![0x16, 0x03, 0x01, 0, 2, 1, 2];
        s.extend([0x17, 0x03, 0x03, 0, 1, 9]);
        assert_eq!(tls_records(&s), Ok(vec![0x16, 0x17]));
        assert!(tls_records(b"\x00\x00\x00\x2a{\"type\":\"hello\"}").is_err());
        assert!(tls_records(&[0x17, 0x03, 0x01, 0, 0]).is_err());
    }

    #[test]
    fn rtp_payloads_of_direct_and_relayed_media() {
        let rtp = [0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xaa, 0xbb];
        let mut relayed = vec![0x40, 0x00, 0, 22];
        relayed.extend([1u8; 8]);
        relayed.extend(rtp);
        let rtcp = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let got = rtp_payloads([&rtp[..], &relayed, &rtcp, b"\x00\x01"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, vec![0xaa, 0xbb]);
        assert_eq!(got[1].1, vec![0xaa, 0xbb]);
    }

    #[test]
    fn tcp_streams_are_reassembled_once() {
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:2".parse().unwrap();
        let seg = |seq, payload: &[u8]| Packet {
            from: a,
            to: b,
            transport: Transport::Tcp { seq },
            payload: payload.to_vec(),
            at: std::time::Duration::ZERO,
        };
        let packets = [
            seg(103, b"def"),
            seg(100, b"abc"),
            seg(100, b"abc"),
            seg(102, b"cd"),
        ];
        assert_eq!(tcp_streams(&packets)[&(a, b)], b"abcdef");
    }
}
