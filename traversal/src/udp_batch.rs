//! Batched UDP receive and send (`recvmmsg`/`sendmmsg`) for the server's hot path.
//!
//! One system call moves up to a batch of datagrams each way instead of one, which is what lets
//! a single core answer a few hundred thousand STUN Binding Requests a second. The shape:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! let socket = std::net::UdpSocket::bind("127.0.0.1:3478")?;
//! let (mut rx, mut tx) = traversal::udp_batch::split(socket, 32)?;
//! loop {
//!     let mut answers = Vec::new(); // a real server keeps its own scratch space
//!     rx.recv_batch(Duration::from_millis(100), |datagram, from| {
//!         answers.push((datagram.to_vec(), from));
//!     })?;
//!     for (answer, to) in &answers {
//!         tx.queue(answer, *to)?; // sends by itself when the batch is full
//!     }
//!     tx.flush()?; // and sends the rest before the next wait
//! }
//! # }
//! ```
//!
//! Memory is allocated once, in [`split`]: `batch` slots of [`DATAGRAM_CAPACITY`] bytes each way.
//! The `mmsghdr` arrays that the kernel reads are kept per thread and per address family and
//! reused, so no call allocates once a thread has made its first one. [`RecvBatch`] and
//! [`SendBatch`] are `Send`: each can live on its own thread.
//!
//! Addresses: on an IPv6 socket, IPv4 peers arrive as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`);
//! they are handed to the callback as plain IPv4 [`SocketAddr`]s, and [`SendBatch::queue`] maps
//! an IPv4 destination back when the socket is IPv6 (and an IPv4-mapped one down when it is IPv4),
//! so callers compare and store one form only.

use std::cell::RefCell;
use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};

/// Largest datagram a slot holds. Longer datagrams are dropped on receive (the kernel truncates
/// them, and a truncated message is worse than none) and refused by [`SendBatch::queue`].
pub const DATAGRAM_CAPACITY: usize = 2048;

/// Largest batch: more gains nothing measurable on loopback and costs stack and cache.
pub const MAX_BATCH: usize = 64;

/// Splits a UDP socket into a batched receiver and a batched sender, each moving up to `batch`
/// datagrams per system call (clamped to 1..=[`MAX_BATCH`]).
///
/// The socket is switched to blocking mode: [`RecvBatch::recv_batch`] waits with a timeout of
/// its own. The sender gets a duplicate of the socket's descriptor (`try_clone`).
pub fn split(sock: UdpSocket, batch: usize) -> io::Result<(RecvBatch, SendBatch)> {
    let batch = batch.clamp(1, MAX_BATCH);
    sock.set_nonblocking(false)?;
    let ipv6 = sock.local_addr()?.is_ipv6();
    let send_sock = sock.try_clone()?;
    let recv = RecvBatch {
        sock,
        ipv6,
        batch,
        bufs: vec![0; batch * DATAGRAM_CAPACITY],
        kept: vec![(0, 0, SocketAddr::from(([0, 0, 0, 0], 0))); batch],
        read_timeout: None,
        truncated: 0,
    };
    let send = SendBatch {
        sock: send_sock,
        ipv6,
        batch,
        bufs: vec![0; batch * DATAGRAM_CAPACITY],
        lens: vec![0; batch],
        tos: vec![None; batch],
        queued: 0,
    };
    Ok((recv, send))
}

/// The receiving half of [`split`].
#[derive(Debug)]
pub struct RecvBatch {
    sock: UdpSocket,
    ipv6: bool,
    batch: usize,
    bufs: Vec<u8>,
    /// Per delivered datagram of the last call: its slot, length and source.
    kept: Vec<(usize, usize, SocketAddr)>,
    /// The `SO_RCVTIMEO` last set, to set it again only when the caller's timeout changes.
    read_timeout: Option<Duration>,
    truncated: u64,
}

impl RecvBatch {
    /// Waits up to `timeout` for a first datagram, then takes every datagram already queued, up
    /// to the batch size, in one system call, and calls `f(datagram, source)` for each in arrival
    /// order. Returns how many it handed to `f`: 0 when the timeout passed with nothing, or
    /// when all it took were dropped (longer than [`DATAGRAM_CAPACITY`]) or it consumed an ICMP
    /// error report of an earlier send (Linux reports those on the next receive).
    ///
    /// A zero `timeout` does not wait at all.
    pub fn recv_batch(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&[u8], SocketAddr),
    ) -> io::Result<usize> {
        let flags = if timeout.is_zero() {
            MsgFlags::MSG_DONTWAIT
        } else {
            // SO_RCVTIMEO bounds the wait for the first datagram; MSG_WAITFORONE makes the rest
            // non-blocking. (recvmmsg's own timeout argument is only checked between datagrams.)
            if self.read_timeout != Some(timeout) {
                self.sock.set_read_timeout(Some(timeout))?;
                self.read_timeout = Some(timeout);
            }
            MsgFlags::MSG_WAITFORONE
        };
        let fd = self.sock.as_raw_fd();
        let batch = self.batch;
        let kept = &mut self.kept;
        let mut truncated = 0;
        let bufs = &mut self.bufs;
        let received = with_headers(&RECV_HEADERS, self.ipv6, |headers| {
            let mut chunks = bufs.chunks_mut(DATAGRAM_CAPACITY);
            let mut slices: [[IoSliceMut<'_>; 1]; MAX_BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let results = match nix::sys::socket::recvmmsg(
                fd,
                headers,
                slices.iter_mut().take(batch),
                flags,
                None,
            ) {
                Ok(results) => results,
                Err(errno) => return transient(errno).map(|()| 0),
            };
            let mut n = 0;
            // The i-th result filled slot i.
            for (slot, msg) in results.enumerate() {
                if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                    truncated += 1;
                    continue;
                }
                let Some(from) = msg.address.as_ref().and_then(socket_addr) else {
                    continue;
                };
                kept[n] = (slot, msg.bytes, from);
                n += 1;
            }
            Ok(n)
        });
        self.truncated += truncated;
        let received = received?;
        for &(slot, len, from) in &self.kept[..received] {
            let start = slot * DATAGRAM_CAPACITY;
            f(&self.bufs[start..start + len], from);
        }
        Ok(received)
    }

    /// Asks the kernel for a receive buffer of `bytes` (`SO_RCVBUF`; as root beyond
    /// `net.core.rmem_max` with `SO_RCVBUFFORCE`) so that bursts wait there instead of being
    /// dropped while the thread is busy. Returns the size the kernel granted (it doubles the
    /// request for its bookkeeping).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<usize> {
        use nix::sys::socket::sockopt::{RcvBuf, RcvBufForce};
        set_buffer(&self.sock, RcvBufForce, RcvBuf, bytes)
    }

    /// Datagrams dropped so far because they were longer than [`DATAGRAM_CAPACITY`].
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }
}

/// The sending half of [`split`].
#[derive(Debug)]
pub struct SendBatch {
    sock: UdpSocket,
    ipv6: bool,
    batch: usize,
    bufs: Vec<u8>,
    lens: Vec<usize>,
    tos: Vec<Option<SockaddrStorage>>,
    queued: usize,
}

impl SendBatch {
    /// Copies `data` into the next free slot, to be sent to `to`; sends the whole batch at once
    /// when this fills it. Datagrams longer than [`DATAGRAM_CAPACITY`] are refused
    /// (`InvalidInput`), as are IPv6 destinations on an IPv4 socket.
    pub fn queue(&mut self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        if data.len() > DATAGRAM_CAPACITY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "datagram longer than the batch slot",
            ));
        }
        let to = self.destination(to)?;
        let slot = self.queued;
        let start = slot * DATAGRAM_CAPACITY;
        self.bufs[start..start + data.len()].copy_from_slice(data);
        self.lens[slot] = data.len();
        self.tos[slot] = Some(SockaddrStorage::from(to));
        self.queued += 1;
        if self.queued == self.batch {
            self.flush()?;
        }
        Ok(())
    }

    /// Asks the kernel for a send buffer of `bytes` (`SO_SNDBUF`, or `SO_SNDBUFFORCE` as
    /// root); returns the size granted.
    pub fn set_send_buffer(&self, bytes: usize) -> io::Result<usize> {
        use nix::sys::socket::sockopt::{SndBuf, SndBufForce};
        set_buffer(&self.sock, SndBufForce, SndBuf, bytes)
    }

    /// How many datagrams wait for [`flush`](Self::flush).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Sends every queued datagram (one `sendmmsg` call when nothing fails). A datagram the
    /// kernel refuses (unreachable destination, full buffer...) is dropped and the others still
    /// go; the first such error is returned after the queue is empty.
    pub fn flush(&mut self) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        let mut first_error = None;
        let mut done = 0;
        while done < self.queued {
            let pending = self.queued - done;
            let slices: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|i| {
                let slot = done + i;
                if i < pending {
                    let start = slot * DATAGRAM_CAPACITY;
                    [IoSlice::new(&self.bufs[start..start + self.lens[slot]])]
                } else {
                    [IoSlice::new(&[])]
                }
            });
            let tos = &self.tos[done..self.queued];
            let result = with_headers(&SEND_HEADERS, self.ipv6, |headers| {
                nix::sys::socket::sendmmsg(
                    fd,
                    headers,
                    slices.iter().take(pending),
                    tos,
                    [] as [ControlMessage<'_>; 0],
                    MsgFlags::empty(),
                )
                .map(|results| results.count())
            });
            match result {
                Ok(0) => {
                    // Nothing sent and no error: should not happen; do not spin.
                    first_error.get_or_insert_with(|| io::Error::other("sendmmsg sent nothing"));
                    done += 1;
                }
                Ok(sent) => done += sent,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // The datagram at `done` failed; drop it and go on with the rest.
                    first_error.get_or_insert(err);
                    done += 1;
                }
            }
        }
        self.queued = 0;
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The address to hand the kernel for `to` on this socket's family.
    fn destination(&self, to: SocketAddr) -> io::Result<SocketAddr> {
        match (self.ipv6, to) {
            (true, SocketAddr::V4(v4)) => Ok(SocketAddr::V6(SocketAddrV6::new(
                v4.ip().to_ipv6_mapped(),
                v4.port(),
                0,
                0,
            ))),
            (false, SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => Ok(SocketAddr::new(IpAddr::V4(v4), v6.port())),
                None => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "IPv6 destination on an IPv4 socket",
                )),
            },
            _ => Ok(to),
        }
    }
}

/// Sets a socket buffer size with `force` (beyond the system's maximum, as root), else with
/// `plain`; returns the size the kernel granted.
fn set_buffer<F, P>(sock: &UdpSocket, force: F, plain: P, bytes: usize) -> io::Result<usize>
where
    F: nix::sys::socket::SetSockOpt<Val = usize>,
    P: nix::sys::socket::SetSockOpt<Val = usize> + nix::sys::socket::GetSockOpt<Val = usize> + Copy,
{
    use nix::sys::socket::{getsockopt, setsockopt};
    if setsockopt(sock, force, &bytes).is_err() {
        setsockopt(sock, plain, &bytes)?;
    }
    Ok(getsockopt(sock, plain)?)
}

/// An address the kernel reported, with IPv4-mapped IPv6 turned into plain IPv4.
fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    let v6 = storage.as_sockaddr_in6()?;
    let ip: Ipv6Addr = v6.ip();
    Some(match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
        None => SocketAddr::V6(SocketAddrV6::from(*v6)),
    })
}

/// Receive errors that mean "nothing this time" rather than a broken socket.
fn transient(errno: Errno) -> Result<(), Errno> {
    match errno {
        Errno::EAGAIN | Errno::EINTR => Ok(()),
        // ICMP errors for earlier sends (port unreachable and friends) surface on the next
        // receive on Linux; they say nothing about this socket.
        Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH | Errno::ECONNRESET => {
            Ok(())
        }
        other => Err(other),
    }
}

type Headers = RefCell<[Option<MultiHeaders<SockaddrStorage>>; 2]>;

thread_local! {
    // The mmsghdr arrays, reused by every call on this thread. One per address family: the
    // kernel writes the peer address length back into each header, so a header last used on
    // an IPv4 socket would truncate an IPv6 address.
    static RECV_HEADERS: Headers = const { RefCell::new([None, None]) };
    static SEND_HEADERS: Headers = const { RefCell::new([None, None]) };
}

/// Runs `f` with this thread's headers for the family, allocating them on first use. Errors
/// from `f` are turned into `io::Error`.
fn with_headers<T>(
    key: &'static std::thread::LocalKey<Headers>,
    ipv6: bool,
    f: impl FnOnce(&mut MultiHeaders<SockaddrStorage>) -> Result<T, Errno>,
) -> io::Result<T> {
    key.with(|cell| {
        let mut headers = cell.try_borrow_mut().map_err(|_| {
            io::Error::other("udp_batch called again from inside its own callback on one thread")
        })?;
        let headers = headers[usize::from(ipv6)]
            .get_or_insert_with(|| MultiHeaders::preallocate(MAX_BATCH, None));
        f(headers).map_err(io::Error::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    fn pair(bind: &str, batch: usize) -> (RecvBatch, SendBatch, SocketAddr) {
        let sock = UdpSocket::bind(bind).unwrap();
        let addr = sock.local_addr().unwrap();
        let (rx, tx) = split(sock, batch).unwrap();
        (rx, tx, addr)
    }

    /// Receives until `want` datagrams arrived or 5 s passed.
    fn receive_all(rx: &mut RecvBatch, want: usize) -> (Vec<(Vec<u8>, SocketAddr)>, usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut calls = 0;
        while got.len() < want && Instant::now() < deadline {
            rx.recv_batch(Duration::from_millis(200), |data, from| {
                got.push((data.to_vec(), from));
            })
            .unwrap();
            calls += 1;
        }
        (got, calls)
    }

    #[test]
    fn timeout_returns_zero() {
        let (mut rx, _tx, _) = pair("127.0.0.1:0", 8);
        let start = Instant::now();
        let n = rx
            .recv_batch(Duration::from_millis(50), |_, _| {
                panic!("no datagram was sent")
            })
            .unwrap();
        assert_eq!(n, 0);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(40),
            "returned after {waited:?}"
        );
        assert!(waited < Duration::from_secs(2), "returned after {waited:?}");
        // A zero timeout does not wait at all.
        assert_eq!(rx.recv_batch(Duration::ZERO, |_, _| {}).unwrap(), 0);
    }

    #[test]
    fn many_datagrams_from_several_sources_arrive_in_batches() {
        let (mut rx, _tx, addr) = pair("127.0.0.1:0", 16);
        let senders: Vec<UdpSocket> = (0..4)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for i in 0..25u8 {
            for (s, sock) in senders.iter().enumerate() {
                sock.send_to(&[s as u8, i, 0xAB], addr).unwrap();
            }
        }
        let (got, calls) = receive_all(&mut rx, 100);
        assert_eq!(got.len(), 100);
        assert!(calls < 100, "{calls} calls for 100 datagrams: not batched");
        let mut per_source: HashMap<SocketAddr, Vec<u8>> = HashMap::new();
        for (data, from) in &got {
            assert_eq!(data.len(), 3);
            let s = data[0] as usize;
            assert_eq!(
                *from,
                senders[s].local_addr().unwrap(),
                "source of {data:?}"
            );
            per_source.entry(*from).or_default().push(data[1]);
        }
        for seq in per_source.values() {
            assert_eq!(*seq, (0..25).collect::<Vec<u8>>(), "each source in order");
        }
    }

    #[test]
    fn queue_sends_to_several_destinations_and_flushes_when_full() {
        let (_rx, mut tx, _) = pair("127.0.0.1:0", 4);
        let sinks: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            })
            .collect();
        for i in 0..10u8 {
            let to = sinks[usize::from(i) % 3].local_addr().unwrap();
            tx.queue(&[i; 100], to).unwrap();
            // Full batches of 4 go out by themselves.
            assert_eq!(tx.queued(), usize::from(i + 1) % 4);
        }
        tx.flush().unwrap();
        assert_eq!(tx.queued(), 0);
        let mut buf = [0u8; 200];
        for (k, sink) in sinks.iter().enumerate() {
            let want: Vec<u8> = (0..10u8).filter(|i| usize::from(*i) % 3 == k).collect();
            for i in want {
                let (n, from) = sink.recv_from(&mut buf).unwrap();
                assert_eq!(n, 100);
                assert_eq!(buf[0], i);
                assert_eq!(from, tx.local_addr().unwrap());
            }
        }
    }

    #[test]
    fn echo_both_ways_in_batches() {
        let (mut rx, mut tx, addr) = pair("127.0.0.1:0", 32);
        let (mut client_rx, mut client_tx, _) = pair("127.0.0.1:0", 32);
        for i in 0..200u16 {
            client_tx.queue(&i.to_be_bytes(), addr).unwrap();
        }
        client_tx.flush().unwrap();
        let mut echoed = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while echoed < 200 && Instant::now() < deadline {
            let mut pending = Vec::new();
            echoed += rx
                .recv_batch(Duration::from_millis(200), |data, from| {
                    pending.push((data.to_vec(), from));
                })
                .unwrap();
            for (data, from) in pending {
                tx.queue(&data, from).unwrap();
            }
            tx.flush().unwrap();
        }
        assert_eq!(echoed, 200);
        let (back, _) = receive_all(&mut client_rx, 200);
        let seqs: Vec<u16> = back
            .iter()
            .map(|(d, _)| u16::from_be_bytes([d[0], d[1]]))
            .collect();
        assert_eq!(seqs, (0..200).collect::<Vec<u16>>());
        assert!(back.iter().all(|(_, from)| *from == addr));
    }

    #[test]
    fn ipv6_and_ipv4_mapped_peers() {
        let Ok(sock) = UdpSocket::bind("[::]:0") else {
            eprintln!("SKIP: no IPv6 on this machine");
            return;
        };
        let port = sock.local_addr().unwrap().port();
        let (mut rx, mut tx) = split(sock, 8).unwrap();
        let v6 = UdpSocket::bind("[::1]:0").unwrap();
        v6.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        v6.send_to(b"six", (Ipv6Addr::LOCALHOST, port)).unwrap();
        v4.send_to(b"four", ("127.0.0.1", port)).unwrap();
        let (got, _) = receive_all(&mut rx, 2);
        assert_eq!(got.len(), 2);
        for (data, from) in &got {
            match data.as_slice() {
                b"six" => assert_eq!(*from, v6.local_addr().unwrap()),
                // Reported as plain IPv4, not ::ffff:127.0.0.1.
                b"four" => assert_eq!(*from, v4.local_addr().unwrap()),
                other => panic!("unexpected {other:?}"),
            }
            tx.queue(data, *from).unwrap();
        }
        tx.flush().unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = v6.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"six");
        let (n, _) = v4.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"four");
    }

    #[test]
    fn oversized_datagrams_are_refused_and_dropped() {
        let (mut rx, mut tx, addr) = pair("127.0.0.1:0", 8);
        let big = vec![7u8; DATAGRAM_CAPACITY + 1];
        let err = tx.queue(&big, addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let v6_dest: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        assert!(tx.queue(b"x", v6_dest).is_err(), "IPv6 on an IPv4 socket");
        // A too-long datagram sent by someone else is dropped, and the next one still arrives.
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        other.send_to(&big, addr).unwrap();
        other.send_to(b"ok", addr).unwrap();
        let (got, _) = receive_all(&mut rx, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, b"ok");
        assert_eq!(rx.truncated(), 1);
    }

    #[test]
    fn buffers_can_grow() {
        let (rx, tx, _) = pair("127.0.0.1:0", 8);
        let before = rx.set_recv_buffer(4096).unwrap();
        let after = rx.set_recv_buffer(1 << 20).unwrap();
        assert!(after > before, "{before} -> {after}");
        assert!(tx.set_send_buffer(1 << 20).unwrap() >= 4096);
    }

    #[test]
    fn halves_move_to_other_threads() {
        let (mut rx, mut tx, addr) = pair("127.0.0.1:0", 8);
        let sender = std::thread::spawn(move || {
            for i in 0..20u8 {
                tx.queue(&[i], addr).unwrap();
            }
            tx.flush().unwrap();
        });
        let receiver = std::thread::spawn(move || receive_all(&mut rx, 20).0.len());
        sender.join().unwrap();
        assert_eq!(receiver.join().unwrap(), 20);
    }
}
