//! The client's media socket: one UDP socket for IPv4 and IPv6 (dual-stack), and sends with
//! their own IP TTL for hole punching's openers.
//!
//! - [`bind`] opens `[::]:PORT` with `IPV6_V6ONLY` off, so that one socket (one port, one
//!   router mapping) carries the relay and registration over IPv4 and a direct IPv6 path to
//!   the peer; where the system has no IPv6 it opens `0.0.0.0:PORT`.
//! - On a dual-stack socket IPv4 sources arrive as IPv4-mapped IPv6 addresses
//!   (`::ffff:a.b.c.d`): [`peer`] turns them back into plain IPv4, so the sans-IO phone only
//!   ever sees plain addresses; a plain IPv4 destination is sent to as it is (Linux).
//! - [`try_send_to`] with a TTL sets the socket's TTL (IPv4: `IP_TTL`, which Linux applies to
//!   IPv4-mapped destinations of an IPv6 socket too; IPv6: the hop limit) for the one send and
//!   puts it back at once. Everything else on the media socket is sent from the same task, so
//!   nothing goes out with the low TTL by mistake. The openers
//!   ([`crate::punch::PunchConfig::opener_ttls`]) open the sender's own router and die in the
//!   internet before the peer's.
//! - Sends go straight to `sendto` (non-blocking): a full buffer is `WouldBlock`, a lost
//!   packet, as on the wire; nothing waits for the socket to become writable.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// Opens the media socket on `port` (0: any): dual-stack `[::]` where the system has IPv6,
/// else IPv4 `0.0.0.0`. Non-blocking, for tokio.
pub fn bind(port: u16) -> io::Result<tokio::net::UdpSocket> {
    let socket = match dual_stack(port) {
        Ok(socket) => socket,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
        Err(e) => {
            tracing::debug!("no IPv6 media socket ({e}): IPv4 only");
            std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)))?
        }
    };
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

fn dual_stack(port: u16) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, None)?;
    socket.set_only_v6(false)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(socket.into())
}

/// True when `socket` carries IPv6 too (a dual-stack socket from [`bind`]).
pub fn is_dual_stack(socket: &tokio::net::UdpSocket) -> bool {
    socket.local_addr().is_ok_and(|a| a.is_ipv6())
}

/// A datagram's source as the phone knows it: IPv4-mapped IPv6 as plain IPv4.
pub fn peer(from: SocketAddr) -> SocketAddr {
    match from {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => from,
        },
        SocketAddr::V4(_) => from,
    }
}

/// Sends `bytes` to `to` from `socket`, with IP TTL (IPv6 hop limit) `ttl` when given, else
/// the socket's own. Returns the bytes sent; `WouldBlock` when the socket's buffer is full.
pub fn try_send_to(
    socket: &tokio::net::UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
    ttl: Option<u8>,
) -> io::Result<usize> {
    // No mapping to `::ffff:a.b.c.d` needed, nor a look at the socket's family on every
    // packet: Linux sends to a plain IPv4 address from a dual-stack socket as it is.
    let Some(ttl) = ttl else {
        return send_now(socket, bytes, to);
    };
    // IPv4 packets (from an IPv4 socket, or to an IPv4-mapped address) take IP_TTL.
    let v6_packet = matches!(to, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none());
    let before = get(socket, v6_packet)?;
    set(socket, v6_packet, i32::from(ttl))?;
    let sent = send_now(socket, bytes, to);
    set(socket, v6_packet, before)?;
    sent
}

/// `sendto` on the non-blocking socket, without tokio's readiness bookkeeping: tokio's
/// `try_send_to` answers `WouldBlock` on a socket its reactor has not polled yet (one just
/// opened, as birthday probing's spares are, right before their openers go).
fn send_now(socket: &tokio::net::UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_to(bytes, &to.into())
}

fn get(socket: &tokio::net::UdpSocket, v6: bool) -> io::Result<i32> {
    let result = if v6 {
        getsockopt(socket, sockopt::Ipv6Ttl)
    } else {
        getsockopt(socket, sockopt::Ipv4Ttl)
    };
    result.map_err(io::Error::from)
}

fn set(socket: &tokio::net::UdpSocket, v6: bool, ttl: i32) -> io::Result<()> {
    let result = if v6 {
        setsockopt(socket, sockopt::Ipv6Ttl, &ttl)
    } else {
        setsockopt(socket, sockopt::Ipv4Ttl, &ttl)
    };
    result.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ttl_is_put_back_after_an_opener() -> io::Result<()> {
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let to = b.local_addr()?;
        let before = a.ttl()?;
        a.writable().await?;
        assert_eq!(try_send_to(&a, b"low", to, Some(2))?, 3);
        assert_eq!(a.ttl()?, before, "the socket's TTL came back");
        a.writable().await?;
        assert_eq!(try_send_to(&a, b"normal", to, None)?, 6);
        let mut buf = [0u8; 16];
        // Loopback: TTL 2 is enough, both arrive.
        let (n, _) = b.recv_from(&mut buf).await?;
        assert_eq!(&buf[..n], b"low");
        let (n, _) = b.recv_from(&mut buf).await?;
        assert_eq!(&buf[..n], b"normal");
        Ok(())
    }

    #[tokio::test]
    async fn a_dual_stack_socket_talks_plain_ipv4_and_ipv6() -> io::Result<()> {
        let media = bind(0)?;
        assert!(is_dual_stack(&media), "{:?}", media.local_addr());
        let port = media.local_addr()?.port();
        let v4 = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let v6 = tokio::net::UdpSocket::bind("[::1]:0").await?;
        for peer_socket in [&v4, &v6] {
            let to = peer_socket.local_addr()?;
            media.writable().await?;
            try_send_to(&media, b"out", to, Some(3))?;
            let mut buf = [0u8; 8];
            let (n, from) = peer_socket.recv_from(&mut buf).await?;
            assert_eq!(&buf[..n], b"out");
            assert_eq!(from.port(), port);
            let back = SocketAddr::new(to.ip(), port);
            peer_socket.send_to(b"in", back).await?;
            let (n, from) = media.recv_from(&mut buf).await?;
            assert_eq!(&buf[..n], b"in");
            // What the phone sees: the sender's own plain address.
            assert_eq!(peer(from), to);
        }
        // The port is taken for IPv4 too.
        let again = std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port)));
        assert!(again.is_err(), "IPv4 on the same port: {again:?}");
        Ok(())
    }
}
