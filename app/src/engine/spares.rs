//! The spare UDP sockets of birthday probing (`traversal::punch::Birthday`): opened when the
//! phone asks ([`traversal::phone::Event::OpenSpares`]), each read by a task of its own into
//! one channel, closed when the phone says which one the direct path runs on, or when the
//! call ends.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Datagrams waiting from all spares together; more are dropped (as a full socket buffer
/// would).
const QUEUE: usize = 256;

/// A datagram that came in on a spare socket.
pub(super) struct Datagram {
    pub(super) spare: u16,
    pub(super) from: SocketAddr,
    pub(super) bytes: Vec<u8>,
}

struct Spare {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// The open spares, by number.
pub(super) struct Spares {
    spares: Vec<Option<Spare>>,
    rx: mpsc::Receiver<Datagram>,
}

impl Spares {
    /// Opens up to `count` IPv4 sockets on any port; fewer when the system refuses more (the
    /// open-files limit): the phone is told how many opened. Must run inside the runtime.
    pub(super) fn open(count: u16) -> Spares {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut spares = Vec::with_capacity(usize::from(count));
        for spare in 0..count {
            let socket = match bind() {
                Ok(socket) => Arc::new(socket),
                Err(e) => {
                    tracing::info!(
                        opened = spare,
                        "birthday probing: no more spare sockets: {e}"
                    );
                    break;
                }
            };
            let reader = tokio::spawn(read(spare, socket.clone(), tx.clone()));
            spares.push(Some(Spare { socket, reader }));
        }
        Spares { spares, rx }
    }

    /// How many opened.
    pub(super) fn opened(&self) -> u16 {
        u16::try_from(self.spares.len()).unwrap_or(u16::MAX)
    }

    /// Spare `spare`'s socket, while it is open.
    pub(super) fn socket(&self, spare: u16) -> Option<&UdpSocket> {
        self.spares
            .get(usize::from(spare))?
            .as_ref()
            .map(|s| &*s.socket)
    }

    /// Closes every spare but `keep`.
    pub(super) fn keep_only(&mut self, keep: Option<u16>) {
        for (i, slot) in self.spares.iter_mut().enumerate() {
            if keep.is_some_and(|k| usize::from(k) == i) {
                continue;
            }
            if let Some(spare) = slot.take() {
                spare.reader.abort();
            }
        }
    }

    /// How many are open now.
    #[cfg(test)]
    fn open_now(&self) -> usize {
        self.spares.iter().flatten().count()
    }

    /// A datagram that is already waiting, if any.
    pub(super) fn try_recv(&mut self) -> Option<Datagram> {
        self.rx.try_recv().ok()
    }

    /// The next datagram from any spare; never ready without spares.
    pub(super) async fn recv(spares: &mut Option<Spares>) -> Datagram {
        match spares {
            Some(spares) => match spares.rx.recv().await {
                Some(datagram) => datagram,
                // Every reader ended (sockets closed): nothing more comes.
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.keep_only(None);
    }
}

fn bind() -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

async fn read(spare: u16, socket: Arc<UdpSocket>, tx: mpsc::Sender<Datagram>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let datagram = Datagram {
                    spare,
                    from,
                    bytes: buf[..n].to_vec(),
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(datagram) {
                    return;
                }
            }
            // ICMP errors (a port unreachable from a probe) come back as receive errors on
            // some systems: not the end of the socket.
            Err(e) => tracing::trace!(spare, "spare socket: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spares_open_carry_datagrams_and_close_but_the_kept_one() {
        let mut spares = Some(Spares::open(4));
        let opened = spares.as_ref().unwrap().opened();
        assert_eq!(opened, 4);
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = |i: u16, s: &Option<Spares>| {
            s.as_ref()
                .unwrap()
                .socket(i)
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port(2, &spares)));
        peer.send_to(b"hello", to).await.unwrap();
        let got = Spares::recv(&mut spares).await;
        assert_eq!((got.spare, &got.bytes[..]), (2, &b"hello"[..]));
        assert_eq!(got.from, peer.local_addr().unwrap());

        spares.as_mut().unwrap().keep_only(Some(2));
        assert_eq!(spares.as_ref().unwrap().open_now(), 1);
        assert!(spares.as_ref().unwrap().socket(0).is_none());
        let kept = spares.as_ref().unwrap().socket(2).unwrap();
        kept.send_to(b"back", peer.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
    }
}
