//! The control connections' slab: each connection's socket, TLS session and what is not
//! written yet, keyed by its poll token.

use std::collections::VecDeque;
use std::time::Instant;

use super::tls_session::TlsSession;
use crate::server::ConnId;

/// One control connection: its socket, its TLS session and what the server has to say on it
/// that the socket did not take yet. No task, no channel, no buffer per idle connection.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: mio::net::TcpStream,
    pub(super) id: ConnId,
    /// `None` only while the TCP thread runs the handshake without the lock.
    pub(super) tls: Option<TlsSession>,
    /// What is not written yet; `None` (nothing allocated) once all is written.
    pub(super) out: Option<Box<Pending>>,
    /// Close after writing what is queued.
    pub(super) closing: bool,
    /// In [`Conns::touched`].
    pub(super) touched: bool,
    /// Registered for writability (the queue is waiting on the socket).
    pub(super) want_write: bool,
    /// In [`Conns::lingering`].
    pub(super) lingering: bool,
}

/// What is not written yet: messages waiting for the end of the TLS handshake, and records
/// the socket did not take (only while its buffer is full), the front one from `written` on.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) plain: VecDeque<Vec<u8>>,
    pub(super) records: VecDeque<Vec<u8>>,
    pub(super) written: usize,
}

impl Pending {
    pub(super) fn len(&self) -> usize {
        self.plain.len() + self.records.len()
    }
}

/// Every control connection, in a slab: the poll token is the slot, and the server's
/// [`ConnId`] is the slot in its low 32 bits with a count of accepted connections above, so
/// an id is never reused.
#[derive(Debug, Default)]
pub(super) struct Conns {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Slots with new output, flushed at the end of `Shared::drain`.
    pub(super) touched: Vec<usize>,
    /// Connections the server closed before their TLS handshake ended, kept (for at most
    /// [`super::LINGER`]) so that the handshake can end and carry the last words (`server_full`).
    pub(super) lingering: Vec<(ConnId, Instant)>,
    accepted: u64,
}

impl Conns {
    /// No connection is open.
    pub(super) fn is_empty(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    pub(super) fn vacant(&self) -> usize {
        self.free.last().copied().unwrap_or(self.slots.len())
    }

    /// Stores `stream` in the slot [`Self::vacant`] named; returns its id.
    pub(super) fn insert(&mut self, stream: mio::net::TcpStream, tls: TlsSession) -> ConnId {
        let key = match self.free.pop() {
            Some(key) => key,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.accepted += 1;
        let id = (self.accepted << 32) | key as u64;
        self.slots[key] = Some(Conn {
            stream,
            id,
            tls: Some(tls),
            out: None,
            closing: false,
            touched: false,
            want_write: false,
            lingering: false,
        });
        id
    }

    pub(super) fn get_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.slots.get_mut(key).and_then(Option::as_mut)
    }

    pub(super) fn by_id(&mut self, id: ConnId) -> Option<(usize, &mut Conn)> {
        let key = usize::try_from(id & u64::from(u32::MAX)).ok()?;
        let conn = self.get_mut(key)?;
        (conn.id == id).then_some((key, conn))
    }

    pub(super) fn remove(&mut self, key: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(key)?.take()?;
        self.free.push(key);
        Some(conn)
    }
}
