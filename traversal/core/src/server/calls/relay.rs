//! The relay: one route per direction of a connected call, keyed by the sender's registered
//! mapped address. A ChannelData frame is forwarded only when it comes from a route's source,
//! on that call's channel, with the sender's relay token, within the direction's token buckets
//! (bytes and frames); one hash lookup by source address and a comparison of 8 bytes decide.
//! The frame goes on with the receiver's token in place of the sender's; the media in it is
//! encrypted end to end and never looked at.

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
    token: [u8; channel::TOKEN_LEN],
    to_token: [u8; channel::TOKEN_LEN],
    bytes: TokenBucket,
    frames: TokenBucket,
}

/// One direction of a call to install: frames from `from` with `token` go to `to` with
/// `to_token`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Leg {
    pub(super) from: SocketAddr,
    pub(super) to: SocketAddr,
    pub(super) token: [u8; channel::TOKEN_LEN],
    pub(super) to_token: [u8; channel::TOKEN_LEN],
}

/// The routes of every connected call, and the rates they share.
#[derive(Debug)]
pub(super) struct Relay {
    bytes: Rate,
    frames: Rate,
    routes: HashMap<SocketAddr, Route>,
}

impl Relay {
    pub(super) fn new(config: &CallsConfig) -> Self {
        Relay {
            bytes: Rate::over(config.relay_bytes_per_s, config.relay_burst),
            frames: Rate::over(config.relay_packets_per_s, config.relay_burst),
            routes: HashMap::new(),
        }
    }

    /// Routes installed.
    pub(super) fn len(&self) -> usize {
        self.routes.len()
    }

    /// Bytes held by the table, with its spare capacity.
    pub(super) fn memory_estimate(&self) -> usize {
        self.routes.capacity()
            * (std::mem::size_of::<SocketAddr>() + std::mem::size_of::<Route>() + 1)
    }

    /// Where a frame from `from` goes and the token it goes with, or why it is dropped.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(SocketAddr, [u8; channel::TOKEN_LEN]), Dropped> {
        let route = self.routes.get_mut(&from).ok_or(Dropped::NoRoute)?;
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
        Ok((route.to, route.to_token))
    }

    /// Replaces call `key`'s routes from the sources `old` by `new` (one [`Leg`] per party),
    /// each direction keeping its buckets. Returns the new sources.
    pub(super) fn install(
        &mut self,
        key: CallKey,
        channel: u16,
        old: [Option<SocketAddr>; 2],
        new: [Option<Leg>; 2],
    ) -> [Option<SocketAddr>; 2] {
        let mut buckets = [(TokenBucket::FULL, TokenBucket::FULL); 2];
        for (i, source) in old.iter().enumerate() {
            if let Some(route) = source.and_then(|s| self.remove_one(key, s)) {
                buckets[i] = (route.bytes, route.frames);
            }
        }
        let mut sources = [None; 2];
        for (i, leg) in new.iter().enumerate().filter_map(|(i, n)| Some((i, (*n)?))) {
            let (bytes, frames) = buckets[i];
            self.routes.insert(
                leg.from,
                Route {
                    call: key,
                    channel,
                    to: leg.to,
                    token: leg.token,
                    to_token: leg.to_token,
                    bytes,
                    frames,
                },
            );
            sources[i] = Some(leg.from);
        }
        sources
    }

    /// Removes call `key`'s routes from `sources`.
    pub(super) fn remove(&mut self, key: CallKey, sources: [Option<SocketAddr>; 2]) {
        for source in sources.into_iter().flatten() {
            self.remove_one(key, source);
        }
    }

    /// Removes the route from `source` if it is call `key`'s.
    fn remove_one(&mut self, key: CallKey, source: SocketAddr) -> Option<Route> {
        if self.routes.get(&source)?.call != key {
            return None;
        }
        self.routes.remove(&source)
    }

    /// Every route, for the consistency checks of the tests.
    #[cfg(test)]
    pub(super) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
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
        };
        let mut frame = Vec::new();
        channel::encode_relay_into(ch, mine, b"voice", &mut frame).unwrap();
        let sources = relay.install(7, ch, [None; 2], [Some(leg(addr(1), addr(2))), None]);
        assert_eq!(sources, [Some(addr(1)), None]);
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
}
