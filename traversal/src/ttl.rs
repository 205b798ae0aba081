//! Sending a datagram with its own IP TTL (IPv6: hop limit): hole punching's openers
//! ([`crate::punch::PunchConfig::opener_ttls`]) open the sender's own router and die in the
//! internet before the peer's.
//!
//! The socket's TTL is set for the one send and put back at once. Everything else on the media
//! socket is sent from the same task, so nothing goes out with the low TTL by mistake.

use std::io;
use std::net::SocketAddr;

use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// Sends `bytes` to `to` from `socket`, with IP TTL (IPv6 hop limit) `ttl` when given, else
/// the socket's own. Returns the bytes sent; `WouldBlock` when the socket's buffer is full.
pub fn try_send_to(
    socket: &tokio::net::UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
    ttl: Option<u8>,
) -> io::Result<usize> {
    let Some(ttl) = ttl else {
        return socket.try_send_to(bytes, to);
    };
    let v6 = socket.local_addr()?.is_ipv6();
    let before = if v6 {
        getsockopt(socket, sockopt::Ipv6Ttl)
    } else {
        getsockopt(socket, sockopt::Ipv4Ttl)
    }
    .map_err(io::Error::from)?;
    set(socket, v6, i32::from(ttl))?;
    let sent = socket.try_send_to(bytes, to);
    set(socket, v6, before)?;
    sent
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
}
