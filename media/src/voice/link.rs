//! An in-memory datagram link for tests: seeded loss, delay, jitter, reordering and
//! duplication, in virtual time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::session::Transport;

/// How a [`LossyLink`] mistreats datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkConfig {
    /// One-way base delay.
    pub delay: Duration,
    /// Extra delay, uniform between zero and this, per datagram (reorders when larger than the
    /// packet interval).
    pub jitter: Duration,
    /// Probability that a datagram is lost (0.0 to 1.0).
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_delay`, arriving after later ones.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
}

/// What a link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Datagrams handed to the link.
    pub sent: u64,
    /// Datagrams it lost.
    pub lost: u64,
    /// Extra copies it made.
    pub duplicated: u64,
    /// Datagrams held back for reordering.
    pub reordered: u64,
    /// Datagrams delivered.
    pub delivered: u64,
}

/// One direction of an in-memory link.
#[derive(Debug)]
pub struct LossyLink {
    config: LinkConfig,
    rng: StdRng,
    queue: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    order: u64,
    stats: LinkStats,
}

impl LossyLink {
    /// A link whose random choices come from `seed`: the same seed, the same fate.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            order: 0,
            stats: LinkStats::default(),
        }
    }

    /// Changes the link's behaviour from now on (a path change, say).
    pub fn set_config(&mut self, config: LinkConfig) {
        self.config = config;
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Sends `datagram` at `now`.
    pub fn send(&mut self, now: Instant, datagram: &[u8]) {
        self.stats.sent += 1;
        if self.rng.random_bool(self.config.loss.clamp(0.0, 1.0)) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.random_bool(self.config.duplicate.clamp(0.0, 1.0)) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay =
                self.config.delay + self.config.jitter.mul_f64(self.rng.random::<f64>());
            if self.rng.random_bool(self.config.reorder.clamp(0.0, 1.0)) {
                self.stats.reordered += 1;
                delay += self.config.reorder_delay;
            }
            self.order += 1;
            self.queue
                .push(Reverse((now + delay, self.order, datagram.to_vec())));
        }
    }

    /// A [`Transport`] that sends into this link at `now`.
    pub fn transport(&mut self, now: Instant) -> LinkTransport<'_> {
        LinkTransport { link: self, now }
    }

    /// When the next datagram arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next datagram that has arrived by `now`.
    pub fn receive(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_arrival()? > now {
            return None;
        }
        let Reverse((_, _, datagram)) = self.queue.pop()?;
        self.stats.delivered += 1;
        Some(datagram)
    }
}

/// Sends into a [`LossyLink`] at a given time.
#[derive(Debug)]
pub struct LinkTransport<'a> {
    link: &'a mut LossyLink,
    now: Instant,
}

impl Transport for LinkTransport<'_> {
    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        self.link.send(self.now, datagram);
        Ok(())
    }
}
