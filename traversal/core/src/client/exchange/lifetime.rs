//! Measuring the NAT mapping's lifetime (RFC 5780 section 4.6 in spirit): from a second
//! socket, register a test mapping, stay silent for T, ask the server to probe it; grow T by
//! doubling until a probe is lost, then bisect. The keepalive interval follows the result.

use std::time::{Duration, Instant};

use super::*;

/// Keepalive interval until the lifetime is measured (or when it is not).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);
/// Fraction of the measured lifetime used as the keepalive interval.
pub const KEEPALIVE_FRACTION: f64 = 0.6;
/// Shortest keepalive interval chosen from a measurement.
pub const KEEPALIVE_FLOOR: Duration = Duration::from_secs(1);
/// Longest keepalive interval chosen from a measurement.
pub const KEEPALIVE_CEILING: Duration = Duration::from_secs(60);
/// Longest silence the lifetime measurement tries by default.
pub const LIFETIME_MAX: Duration = Duration::from_secs(240);
/// First silence the lifetime measurement tries.
pub const LIFETIME_FIRST_TRIAL: Duration = Duration::from_secs(1);
/// Keepalive interval while the lifetime is being measured: half the longest silence known to
/// survive (at least the first trial's), within the floor and the default.
pub(super) fn measuring_interval(known_to_survive: Duration) -> Duration {
    known_to_survive
        .max(LIFETIME_FIRST_TRIAL)
        .mul_f64(0.5)
        .clamp(KEEPALIVE_FLOOR, DEFAULT_KEEPALIVE)
}

#[derive(Debug, Clone, Copy)]
pub(super) enum MeasureStage {
    Refresh {
        tid: TransactionId,
        sent: Instant,
        attempts: u32,
    },
    Silent {
        until: Instant,
    },
    Probing {
        nonce: u64,
        deadline: Instant,
    },
    Done,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Measure {
    pub(super) lo: Duration,
    pub(super) hi: Option<Duration>,
    pub(super) trial: Duration,
    pub(super) stage: MeasureStage,
}

impl Client {
    pub(super) fn start_measuring(&mut self, now: Instant) {
        // Nothing is known of the NAT's timeout yet: the media mapping must not go silent for
        // longer than the first trial while the second socket measures.
        if self.config.keepalive_interval.is_none() {
            let safe = measuring_interval(Duration::ZERO);
            if safe < self.interval {
                self.set_interval(now, safe);
            }
        }
        self.measure = Some(Measure {
            lo: Duration::ZERO,
            hi: None,
            trial: LIFETIME_FIRST_TRIAL,
            stage: MeasureStage::Done,
        });
        self.start_trial(now);
    }

    pub(super) fn start_trial(&mut self, now: Instant) {
        let tid = self.new_tid();
        self.send_request(Socket::Test, tid, true);
        if let Some(m) = self.measure.as_mut() {
            m.stage = MeasureStage::Refresh {
                tid,
                sent: now,
                attempts: 0,
            };
        }
    }

    pub(super) fn trial_done(&mut self, now: Instant, survived: bool) {
        let Some(mut m) = self.measure else {
            return;
        };
        if survived {
            m.lo = m.trial;
        } else {
            m.hi = Some(m.trial);
        }
        // Until measured, keep the media mapping alive well inside the longest silence known
        // to survive.
        if self.config.keepalive_interval.is_none() {
            self.set_interval(now, measuring_interval(m.lo));
        }
        // The server forgets a silent test mapping after its idle expiry: a longer silence
        // would measure the server, not the NAT.
        let server_cap = self
            .server_idle
            .map_or(Duration::MAX, |idle| idle.mul_f64(0.9));
        let max = self
            .config
            .lifetime_max
            .min(server_cap)
            .max(LIFETIME_FIRST_TRIAL);
        let finished = match m.hi {
            None if m.lo >= max => true,
            None => {
                m.trial = (m.trial * 2).min(max);
                false
            }
            Some(hi) => {
                let tolerance = (m.lo / 8).max(Duration::from_millis(500));
                if hi.saturating_sub(m.lo) <= tolerance {
                    true
                } else {
                    m.trial = (m.lo + hi) / 2;
                    false
                }
            }
        };
        if finished {
            m.stage = MeasureStage::Done;
            self.measure = Some(m);
            self.lifetime = Some(m.lo);
            if self.config.keepalive_interval.is_none() {
                let interval =
                    m.lo.mul_f64(KEEPALIVE_FRACTION)
                        .clamp(KEEPALIVE_FLOOR, KEEPALIVE_CEILING);
                self.set_interval(now, interval);
            }
            self.events.push_back(Event::LifetimeMeasured {
                lifetime: m.lo,
                at_least: m.hi.is_none(),
                keepalive_interval: self.interval,
            });
        } else {
            self.measure = Some(m);
            self.start_trial(now);
        }
    }

    pub(super) fn set_interval(&mut self, now: Instant, interval: Duration) {
        let cap = self
            .server_idle
            .map_or(interval, |idle| idle.mul_f64(KEEPALIVE_FRACTION));
        let interval = interval.min(cap);
        self.interval = interval;
        if let Some(at) = self.next_keepalive {
            self.next_keepalive = Some(at.min(now + interval));
        }
    }
}
