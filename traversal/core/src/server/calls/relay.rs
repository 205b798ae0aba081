//! The relay: one route per direction of a connected call, keyed by the sender's registered
//! mapped address. A ChannelData frame is forwarded only when it comes from a route's source,
//! on that call's channel, with the sender's relay token, within the direction's token buckets
//! (bytes and frames); one hash lookup by source address and a comparison of 8 bytes decide.
//! The frame goes on with the receiver's token in place of the sender's; the media in it is
//! encrypted end to end and never looked at.
//!
//! In a cluster, a call between clients of two nodes is relayed by both: each node forwards
//! between its own client and the other node (a trunk). Many calls share the other node's
//! address, so a trunk direction is keyed by its token (which the two nodes agreed on in the
//! call's signalling) and checked against the node's address: one more hash lookup, on a
//! miss by address only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::{CallKey, CallsConfig};
use crate::channel;
use crate::server::bucket::{Rate, TokenBucket};

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    /// No route from that address: not a party of a connected call.
    NoRoute,
    /// Another channel than the call's, not a relay frame, or not the sender's token.
    BadFrame,
    /// Over the direction's token bucket.
    RateLimited,
}

/// One direction of a connected call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Route {
    pub(super) call: CallKey,
    pub(super) channel: u16,
    pub(super) to: SocketAddr,
    /// The sender's address (a trunk's is the other node's, shared by its calls).
    from: SocketAddr,
    token: [u8; channel::TOKEN_LEN],
    to_token: [u8; channel::TOKEN_LEN],
    bytes: TokenBucket,
    frames: TokenBucket,
    /// When a frame was last forwarded.
    last: Option<Instant>,
}

/// Where a direction's frames come from: a client's mapped address, or another node of the
/// cluster (a trunk), told apart by the direction's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Client(SocketAddr),
    Trunk([u8; channel::TOKEN_LEN]),
}

/// One direction of a call to install: frames from `from` with `token` go to `to` with
/// `to_token`; with `trunk` they come from another node, which many calls share.
#[derive(Debug, Clone, Copy)]
pub(super) struct Leg {
    pub(super) from: SocketAddr,
    pub(super) to: SocketAddr,
    pub(super) token: [u8; channel::TOKEN_LEN],
    pub(super) to_token: [u8; channel::TOKEN_LEN],
    pub(super) trunk: bool,
}

/// The routes of every connected call, and the rates they share.
#[derive(Debug)]
pub(super) struct Relay {
    bytes: Rate,
    frames: Rate,
    routes: HashMap<SocketAddr, Route>,
    trunks: HashMap<[u8; channel::TOKEN_LEN], Route>,
}

impl Relay {
    pub(super) fn new(config: &CallsConfig) -> Self {
        Relay {
            bytes: Rate::over(config.relay_bytes_per_s, config.relay_burst),
            frames: Rate::over(config.relay_packets_per_s, config.relay_burst),
            routes: HashMap::new(),
            trunks: HashMap::new(),
        }
    }

    /// Routes installed.
    pub(super) fn len(&self) -> usize {
        self.routes.len() + self.trunks.len()
    }

    /// Bytes held by the table, with its spare capacity.
    pub(super) fn memory_estimate(&self) -> usize {
        self.routes.capacity()
            * (std::mem::size_of::<SocketAddr>() + std::mem::size_of::<Route>() + 1)
            + self.trunks.capacity() * (channel::TOKEN_LEN + std::mem::size_of::<Route>() + 1)
    }

    /// Whether any direction of the call from `sources` forwarded a frame at or after `since`.
    pub(super) fn forwarded_since(&self, sources: [Option<Source>; 2], since: Instant) -> bool {
        sources.into_iter().flatten().any(|source| {
            self.get(source)
                .and_then(|r| r.last)
                .is_some_and(|last| last >= since)
        })
    }

    fn get(&self, source: Source) -> Option<&Route> {
        match source {
            Source::Client(addr) => self.routes.get(&addr),
            Source::Trunk(token) => self.trunks.get(&token),
        }
    }

    /// Where a frame from `from` goes and the token it goes with, or why it is dropped.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(SocketAddr, [u8; channel::TOKEN_LEN]), Dropped> {
        let route = match self.routes.get_mut(&from) {
            Some(route) => route,
            // Another node's frame: its direction by the token, from that node only.
            None => channel::decode_relay(bytes)
                .ok()
                .and_then(|frame| self.trunks.get_mut(&frame.token))
                .filter(|route| route.from == from)
                .ok_or(Dropped::NoRoute)?,
        };
        match channel::decode_relay(bytes) {
            Ok(frame) if frame.channel == route.channel && frame.token == route.token => {}
            _ => return Err(Dropped::BadFrame),
        }
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        if !TokenBucket::take_both(
            now,
            (&mut route.bytes, &self.bytes, len),
            (&mut route.frames, &self.frames, 1),
        ) {
            return Err(Dropped::RateLimited);
        }
        route.last = Some(now);
        Ok((route.to, route.to_token))
    }

    /// Replaces call `key`'s routes from the sources `old` by `new` (one [`Leg`] per party),
    /// each direction keeping its buckets. Returns the new sources.
    pub(super) fn install(
        &mut self,
        key: CallKey,
        channel: u16,
        old: [Option<Source>; 2],
        new: [Option<Leg>; 2],
    ) -> [Option<Source>; 2] {
        let mut buckets = [(TokenBucket::FULL, TokenBucket::FULL); 2];
        for (i, source) in old.iter().enumerate() {
            if let Some(route) = source.and_then(|s| self.remove_one(key, s)) {
                buckets[i] = (route.bytes, route.frames);
            }
        }
        let mut sources = [None; 2];
        for (i, leg) in new.iter().enumerate().filter_map(|(i, n)| Some((i, (*n)?))) {
            let (bytes, frames) = buckets[i];
            let route = Route {
                call: key,
                channel,
                to: leg.to,
                from: leg.from,
                token: leg.token,
                to_token: leg.to_token,
                bytes,
                frames,
                last: None,
            };
            let source = if leg.trunk {
                self.trunks.insert(leg.token, route);
                Source::Trunk(leg.token)
            } else {
                self.routes.insert(leg.from, route);
                Source::Client(leg.from)
            };
            sources[i] = Some(source);
        }
        sources
    }

    /// Removes call `key`'s routes from `sources`.
    pub(super) fn remove(&mut self, key: CallKey, sources: [Option<Source>; 2]) {
        for source in sources.into_iter().flatten() {
            self.remove_one(key, source);
        }
    }

    /// Removes the route from `source` if it is call `key`'s.
    fn remove_one(&mut self, key: CallKey, source: Source) -> Option<Route> {
        if self.get(source)?.call != key {
            return None;
        }
        match source {
            Source::Client(addr) => self.routes.remove(&addr),
            Source::Trunk(token) => self.trunks.remove(&token),
        }
    }

    /// Every route, for the consistency checks of the tests.
    #[cfg(test)]
    pub(super) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values().chain(self.trunks.values())
    }
}

#[cfg(test)]
mod tests {
    // A test's virtual clock starts at any instant; none is read again.
    #![allow(clippy::disallowed_methods, clippy::unwrap_used)]

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 1], port))
    }

    #[test]
    fn a_route_forwards_its_channel_only_and_keeps_its_buckets_when_moved() {
        let mut relay = Relay::new(&CallsConfig {
            relay_packets_per_s: 2,
            ..CallsConfig::default()
        });
        let now = Instant::now();
        let ch = channel::CHANNEL_MIN + 5;
        let (mine, theirs) = ([1; 8], [2; 8]);
        let leg = |from, to| Leg {
            from,
            to,
            token: mine,
            to_token: theirs,
            trunk: false,
        };
        let mut frame = Vec::new();
        channel::encode_relay_into(ch, mine, b"voice", &mut frame).unwrap();
        let sources = relay.install(7, ch, [None; 2], [Some(leg(addr(1), addr(2))), None]);
        assert_eq!(sources, [Some(Source::Client(addr(1))), None]);
        assert_eq!(relay.forward(now, addr(1), &frame), Ok((addr(2), theirs)));
        assert_eq!(relay.forward(now, addr(2), &frame), Err(Dropped::NoRoute));
        let other = channel::encode(ch + 1, b"voice").unwrap();
        assert_eq!(relay.forward(now, addr(1), &other), Err(Dropped::BadFrame));
        assert_eq!(relay.forward(now, addr(1), b"junk"), Err(Dropped::BadFrame));
        // The right address and channel without the sender's token: an off-path forger.
        let mut forged = Vec::new();
        channel::encode_relay_into(ch, [9; 8], b"voice", &mut forged).unwrap();
        assert_eq!(relay.forward(now, addr(1), &forged), Err(Dropped::BadFrame));
        // The sender's mapping moves: the new route has the old one's (now empty) bucket.
        assert_eq!(relay.forward(now, addr(1), &frame), Ok((addr(2), theirs)));
        let sources = relay.install(7, ch, sources, [Some(leg(addr(3), addr(2))), None]);
        assert_eq!(relay.forward(now, addr(1), &frame), Err(Dropped::NoRoute));
        assert_eq!(
            relay.forward(now, addr(3), &frame),
            Err(Dropped::RateLimited)
        );
        // Another call's routes are not removed in its name.
        relay.remove(8, sources);
        assert_eq!(relay.len(), 1);
        relay.remove(7, sources);
        assert_eq!(relay.len(), 0);
    }

    #[test]
    fn trunks_from_one_node_are_told_apart_by_their_token() {
        let mut relay = Relay::new(&CallsConfig::default());
        let now = Instant::now();
        let (node, other_node) = (addr(100), addr(101));
        let ch = channel::CHANNEL_MIN + 9;
        // Two calls with the same node: its frames for each by their own token.
        let trunk = |token, to| Leg {
            from: node,
            to,
            token,
            to_token: [0xcc; 8],
            trunk: true,
        };
        let a = relay.install(1, ch, [None; 2], [Some(trunk([1; 8], addr(1))), None]);
        let b = relay.install(2, ch, [None; 2], [Some(trunk([2; 8], addr(2))), None]);
        let frame = |token| {
            let mut f = Vec::new();
            channel::encode_relay_into(ch, token, b"voice", &mut f).unwrap();
            f
        };
        assert_eq!(
            relay.forward(now, node, &frame([1; 8])),
            Ok((addr(1), [0xcc; 8]))
        );
        assert_eq!(
            relay.forward(now, node, &frame([2; 8])),
            Ok((addr(2), [0xcc; 8]))
        );
        assert_eq!(
            relay.forward(now, node, &frame([3; 8])),
            Err(Dropped::NoRoute)
        );
        // The right token from anywhere else than that node: dropped.
        assert_eq!(
            relay.forward(now, other_node, &frame([1; 8])),
            Err(Dropped::NoRoute)
        );
        assert!(relay.forwarded_since(a, now));
        let later = now + std::time::Duration::from_secs(1);
        assert!(!relay.forwarded_since(a, later));
        relay.remove(1, a);
        assert_eq!(
            relay.forward(now, node, &frame([1; 8])),
            Err(Dropped::NoRoute)
        );
        relay.remove(2, b);
        assert_eq!(relay.len(), 0);
    }
}
