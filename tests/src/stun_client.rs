//! A minimal blocking STUN Binding client for tests and the helper binaries: one socket, any
//! number of servers, retransmission, a hard deadline.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use traversal::stun;

/// Sends a Binding Request from `socket` to each server and returns, per server in the same
/// order, the XOR-MAPPED-ADDRESS it answered (`None` if it did not answer by `deadline`).
/// Requests are retransmitted every 200 ms to servers that have not answered yet.
pub fn binding_many(
    socket: &UdpSocket,
    servers: &[SocketAddr],
    timeout: Duration,
) -> io::Result<Vec<Option<SocketAddr>>> {
    let deadline = Instant::now() + timeout;
    let ids: Vec<stun::TransactionId> = servers.iter().map(|_| transaction_id()).collect();
    let mut mapped: Vec<Option<SocketAddr>> = vec![None; servers.len()];
    let mut buf = [0u8; 1500];
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if mapped.iter().all(Option::is_some) || now >= deadline {
            return Ok(mapped);
        }
        if now >= next_send {
            for (i, server) in servers.iter().enumerate() {
                if mapped[i].is_none() {
                    // An ICMP error from an earlier send may surface here; keep trying.
                    let _ = socket.send_to(&stun::encode_binding_request(&ids[i]), server);
                }
            }
            next_send = now + Duration::from_millis(200);
        }
        let wait = next_send
            .min(deadline)
            .saturating_duration_since(Instant::now());
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let (len, _from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => return Err(err),
        };
        let Ok(message) = stun::Message::decode(&buf[..len]) else {
            continue;
        };
        if message.kind != stun::BINDING_SUCCESS {
            continue;
        }
        if let Some(i) = ids.iter().position(|id| *id == message.transaction_id)
            && let Ok(Some(addr)) = message.xor_mapped_address()
        {
            mapped[i] = Some(addr);
        }
    }
}

/// One Binding Request to one server from a fresh socket bound to `bind`; the mapped address,
/// or an error after `timeout`.
pub fn binding(bind: SocketAddr, server: SocketAddr, timeout: Duration) -> io::Result<SocketAddr> {
    let socket = UdpSocket::bind(bind)?;
    binding_many(&socket, &[server], timeout)?
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {server}")))
}

/// A transaction id that differs between calls and processes (not cryptographic: tests only).
pub fn transaction_id() -> stun::TransactionId {
    use std::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 12];
    for chunk in id.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        let bytes = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    id
}
