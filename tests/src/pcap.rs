//! A pcap file reader: what `tcpdump -w` wrote, as the IPv4 and IPv6 UDP and TCP packets in
//! it ([`Packet`]), for the hostile tests to judge what went over the wire.
//!
//! The file format (libpcap's, not pcapng, which `tcpdump -w` does not write): a 24-byte
//! global header whose magic number gives the byte order and the timestamp unit
//! (`0xa1b2c3d4` microseconds, `0xa1b23c4d` nanoseconds; byte-swapped when the writer's order
//! is not ours) and the link type, then records of a 16-byte header (seconds, fraction,
//! captured length, length on the wire) and the frame. Link types read: `EN10MB` (Ethernet,
//! 802.1Q/802.1ad tags skipped), `LINUX_SLL` and `LINUX_SLL2` (`tcpdump -i any`).
//!
//! ```
//! let empty = [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0];
//! assert!(pinhole_tests::pcap::packets(&empty)?.is_empty());
//! assert!(pinhole_tests::pcap::packets(&empty[..20]).is_err());
//! # Ok::<(), pinhole_tests::pcap::Error>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Ethernet (`LINKTYPE_ETHERNET`, DLT_EN10MB).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Linux "cooked" capture v1 (`tcpdump -i any` before libpcap 1.10).
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// Linux "cooked" capture v2 (`tcpdump -i any` since libpcap 1.10).
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// The transport of a captured packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP, with the segment's sequence number.
    Tcp { seq: u32 },
}

/// One captured IP packet carrying UDP or TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Source address and port.
    pub from: SocketAddr,
    /// Destination address and port.
    pub to: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// The UDP or TCP payload.
    pub payload: Vec<u8>,
    /// When it was captured, since the Unix epoch (microseconds or nanoseconds, as the file
    /// says).
    pub at: Duration,
}

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The file ends inside the global header or a record (at byte `at`).
    Truncated {
        /// Where the cut header or record starts.
        at: usize,
    },
    /// The first four bytes are no pcap magic number (pcapng's among them).
    NotPcap(u32),
    /// A link type this reader does not know.
    LinkType(u32),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Truncated { at } => write!(f, "pcap file cut short at byte {at}"),
            Error::NotPcap(magic) => write!(f, "not a pcap file (magic {magic:#010x})"),
            Error::LinkType(t) => write!(f, "pcap link type {t} not supported"),
        }
    }
}

impl std::error::Error for Error {}

/// The UDP and TCP packets of a pcap file, in the order captured; other frames (ARP, ICMP,
/// IP fragments after the first) are left out.
pub fn packets(file: &[u8]) -> Result<Vec<Packet>, Error> {
    let header = file.get(..24).ok_or(Error::Truncated { at: 0 })?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let nanos = matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1);
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => {
            return Err(Error::NotPcap(u32::from_be_bytes([
                header[0], header[1], header[2], header[3],
            ])));
        }
    };
    let word = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    // The link type is the low 16 bits; the high ones may carry FCS information.
    let link = word(&header[20..24]) & 0xffff;
    if ![LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2].contains(&link) {
        return Err(Error::LinkType(link));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < file.len() {
        let record = file.get(at..at + 16).ok_or(Error::Truncated { at })?;
        let len = usize::try_from(word(&record[8..12])).map_err(|_| Error::Truncated { at })?;
        let frame = file
            .get(at + 16..at + 16 + len)
            .ok_or(Error::Truncated { at })?;
        let fraction = u64::from(word(&record[4..8]));
        let captured = Duration::from_secs(u64::from(word(&record[0..4])))
            + Duration::from_nanos(if nanos { fraction } else { fraction * 1_000 });
        out.extend(
            network_layer(link, frame)
                .and_then(|(ethertype, ip)| ip_packet(ethertype, ip))
                .map(|packet| Packet {
                    at: captured,
                    ..packet
                }),
        );
        at += 16 + len;
    }
    Ok(out)
}

/// The ethertype and network-layer bytes of a frame of link type `link`.
fn network_layer(link: u32, frame: &[u8]) -> Option<(u16, &[u8])> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    match link {
        LINKTYPE_ETHERNET => {
            // Destination, source, then the type (after any VLAN tags: 802.1Q, 802.1ad).
            let mut at = 12;
            while matches!(be16(at)?, 0x8100 | 0x88a8) {
                at += 4;
            }
            Some((be16(at)?, frame.get(at + 2..)?))
        }
        // Packet type, ARPHRD type, address length, 8 address bytes, protocol.
        LINKTYPE_LINUX_SLL => Some((be16(14)?, frame.get(16..)?)),
        // Protocol, reserved, interface index, ARPHRD type, packet type, address length and
        // 8 address bytes.
        LINKTYPE_LINUX_SLL2 => Some((be16(0)?, frame.get(20..)?)),
        _ => None,
    }
}

/// A UDP or TCP packet from an IPv4 (ethertype 0x0800) or IPv6 (0x86dd) packet.
fn ip_packet(ethertype: u16, ip: &[u8]) -> Option<Packet> {
    let (src, dst, protocol, l4) = match ethertype {
        0x0800 => ipv4(ip)?,
        0x86dd => ipv6(ip)?,
        _ => return None,
    };
    let port = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    let (transport, payload) = match protocol {
        17 => {
            let len = usize::from(port(4)?).clamp(8, l4.len());
            (Transport::Udp, l4.get(8..len)?)
        }
        6 => {
            let offset = usize::from(*l4.get(12)? >> 4) * 4;
            let seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
            (Transport::Tcp { seq }, l4.get(offset..)?)
        }
        _ => return None,
    };
    Some(Packet {
        from: SocketAddr::new(src, port(0)?),
        to: SocketAddr::new(dst, port(2)?),
        transport,
        payload: payload.to_vec(),
        at: Duration::ZERO,
    })
}

/// Source, destination, protocol and transport bytes of an IPv4 packet (none for a fragment
/// after the first).
fn ipv4(ip: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    let header = usize::from(ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || header < 20 || ip.len() < header {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some((src.into(), dst.into(), ip[9], ip.get(header..total)?))
}

/// Source, destination, protocol and transport bytes of an IPv6 packet, past its extension
/// headers (hop-by-hop, routing, destination options, a first fragment).
fn ipv6(ip: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let total = (40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))).min(ip.len());
    let addr = |at: usize| -> Option<IpAddr> {
        let bytes: [u8; 16] = ip.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(bytes).into())
    };
    let (mut next, mut at) = (ip[6], 40);
    loop {
        match next {
            0 | 43 | 60 => {
                next = *ip.get(at)?;
                at += (usize::from(*ip.get(at + 1)?) + 1) * 8;
            }
            44 => {
                let offset = u16::from_be_bytes([*ip.get(at + 2)?, *ip.get(at + 3)?]) >> 3;
                if offset != 0 {
                    return None;
                }
                next = *ip.get(at)?;
                at += 8;
            }
            _ => break,
        }
    }
    Some((addr(8)?, addr(24)?, next, ip.get(at..total)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file of `frames` in the byte order asked for.
    fn file(little: bool, nanos: bool, link: u32, frames: &[Vec<u8>]) -> Vec<u8> {
        let w32 = |v: u32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let w16 = |v: u16| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend(w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        out.extend(w16(2));
        out.extend(w16(4));
        out.extend(w32(0));
        out.extend(w32(0));
        out.extend(w32(262_144));
        out.extend(w32(link));
        for (i, f) in frames.iter().enumerate() {
            let len = u32::try_from(f.len()).unwrap();
            out.extend(w32(1_700_000_000));
            out.extend(w32(u32::try_from(i).unwrap()));
            out.extend(w32(len));
            out.extend(w32(len));
            out.extend(f);
        }
        out
    }

    fn udp(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(src.to_be_bytes());
        out.extend(dst.to_be_bytes());
        out.extend(u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        out.extend([0, 0]);
        out.extend(payload);
        out
    }

    fn tcp(src: u16, dst: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(src.to_be_bytes());
        out.extend(dst.to_be_bytes());
        out.extend(seq.to_be_bytes());
        out.extend([0, 0, 0, 0]);
        // Data offset 6 words: one word of options (NOPs).
        out.extend([0x60, 0x18, 0xff, 0xff, 0, 0, 0, 0, 1, 1, 1, 1]);
        out.extend(payload);
        out
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + l4.len()).unwrap();
        let mut out = vec![0x45, 0];
        out.extend(total.to_be_bytes());
        out.extend([0, 0, 0x40, 0, 64, protocol, 0, 0]);
        out.extend(src);
        out.extend(dst);
        out.extend(l4);
        out
    }

    /// An IPv6 packet; with `hop_by_hop`, an 8-byte hop-by-hop options header first.
    fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, hop_by_hop: bool, l4: &[u8]) -> Vec<u8> {
        let ext: &[u8] = if hop_by_hop {
            &[protocol, 0, 1, 4, 0, 0, 0, 0]
        } else {
            &[]
        };
        let len = u16::try_from(ext.len() + l4.len()).unwrap();
        let mut out = vec![0x60, 0, 0, 0];
        out.extend(len.to_be_bytes());
        out.extend([if hop_by_hop { 0 } else { protocol }, 64]);
        out.extend(src.octets());
        out.extend(dst.octets());
        out.extend(ext);
        out.extend(l4);
        out
    }

    fn ethernet(tags: usize, ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut out = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for _ in 0..tags {
            out.extend([0x81, 0x00, 0x00, 0x05]);
        }
        out.extend(ethertype.to_be_bytes());
        // Ethernet pads short frames; the IP total length says where the packet ends.
        out.extend(ip);
        out.extend([0; 6]);
        out
    }

    /// A `LINUX_SLL` or `LINUX_SLL2` frame (by `link`).
    fn cooked(link: u32, ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut out = if link == LINKTYPE_LINUX_SLL {
            // Packet type, ARPHRD, address length, address, protocol.
            let mut v1 = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
            v1.extend(ethertype.to_be_bytes());
            v1
        } else {
            // Protocol, reserved, interface, ARPHRD, packet type, address length, address.
            let mut v2 = ethertype.to_be_bytes().to_vec();
            v2.extend([0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            v2
        };
        out.extend(ip);
        out
    }

    fn a() -> Ipv6Addr {
        "2001:db8:2::2".parse().unwrap()
    }

    fn b() -> Ipv6Addr {
        "2001:db8:1::2".parse().unwrap()
    }

    #[test]
    fn ethernet_frames_in_both_byte_orders_and_timestamp_units() {
        let frames = vec![
            ethernet(
                0,
                0x0800,
                &ipv4(
                    [10, 0, 0, 2],
                    [198, 51, 100, 2],
                    17,
                    &udp(4000, 3478, b"media"),
                ),
            ),
            ethernet(
                1,
                0x86dd,
                &ipv6(a(), b(), 6, false, &tcp(50_000, 3478, 7, b"\x17\x03\x03")),
            ),
            // ARP: left out.
            ethernet(0, 0x0806, &[0; 28]),
        ];
        let want = vec![
            Packet {
                from: "10.0.0.2:4000".parse().unwrap(),
                to: "198.51.100.2:3478".parse().unwrap(),
                transport: Transport::Udp,
                payload: b"media".to_vec(),
                at: Duration::from_secs(1_700_000_000),
            },
            Packet {
                from: "[2001:db8:2::2]:50000".parse().unwrap(),
                to: "[2001:db8:1::2]:3478".parse().unwrap(),
                transport: Transport::Tcp { seq: 7 },
                payload: b"\x17\x03\x03".to_vec(),
                at: Duration::from_secs(1_700_000_000),
            },
        ];
        for little in [true, false] {
            for nanos in [true, false] {
                let bytes = file(little, nanos, LINKTYPE_ETHERNET, &frames);
                // The second frame was captured a unit (a microsecond or nanosecond) later.
                let mut want = want.clone();
                want[1].at += if nanos {
                    Duration::from_nanos(1)
                } else {
                    Duration::from_micros(1)
                };
                assert_eq!(packets(&bytes), Ok(want), "{little} {nanos}");
            }
        }
    }

    #[test]
    fn cooked_frames_of_tcpdump_i_any() {
        let v4 = ipv4([203, 0, 113, 2], [198, 51, 100, 2], 6, &tcp(1, 2, 9, b"hi"));
        let v6 = ipv6(a(), b(), 17, true, &udp(5, 6, b"x"));
        let [got, got2] = [LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2].map(|link| {
            let frames = [cooked(link, 0x0800, &v4), cooked(link, 0x86dd, &v6)];
            packets(&file(link == LINKTYPE_LINUX_SLL, false, link, &frames)).unwrap()
        });
        assert_eq!(got, got2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].transport, Transport::Tcp { seq: 9 });
        assert_eq!(got[0].payload, b"hi");
        assert_eq!(got[1].from, SocketAddr::new(a().into(), 5));
        assert_eq!(got[1].to, SocketAddr::new(b().into(), 6));
        assert_eq!(got[1].payload, b"x");
    }

    #[test]
    fn later_fragments_and_other_protocols_are_left_out() {
        let mut fragment = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, &udp(1, 2, b"y"));
        fragment[6..8].copy_from_slice(&[0, 185]);
        let icmp = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 1, &[8, 0, 0, 0]);
        let frames = [
            cooked(LINKTYPE_LINUX_SLL2, 0x0800, &fragment),
            cooked(LINKTYPE_LINUX_SLL2, 0x0800, &icmp),
        ];
        assert_eq!(
            packets(&file(true, false, LINKTYPE_LINUX_SLL2, &frames)),
            Ok(vec![])
        );
    }

    #[test]
    fn a_cut_or_foreign_file_is_an_error() {
        let frame = cooked(
            LINKTYPE_LINUX_SLL2,
            0x0800,
            &ipv4([10, 0, 0, 1], [10, 0, 0, 2], 17, &udp(1, 2, b"z")),
        );
        let whole = file(false, true, LINKTYPE_LINUX_SLL2, &[frame.clone(), frame]);
        assert_eq!(packets(&whole).map(|p| p.len()), Ok(2));
        let second = whole.len() - (16 + 49);
        for cut in [0, 10, 23, 30, second + 3, whole.len() - 1] {
            let want = if cut < 24 {
                0
            } else if cut < second {
                24
            } else {
                second
            };
            assert_eq!(
                packets(&whole[..cut]),
                Err(Error::Truncated { at: want }),
                "{cut}"
            );
        }
        let mut pcapng = whole.clone();
        pcapng[..4].copy_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a]);
        assert_eq!(packets(&pcapng), Err(Error::NotPcap(0x0a0d_0d0a)));
        let wifi = file(true, false, 105, &[]);
        assert_eq!(packets(&wifi), Err(Error::LinkType(105)));
    }
}
