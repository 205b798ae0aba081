//! A call's quality in words, from both sides' figures: what we lose of the peer's voice
//! (our reception over the last seconds), what the peer loses of ours (its RTCP receiver
//! reports) and the round trip. The worst finding wins; the numbers stay in the report.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Loss above this (percent) is heard: Opus's FEC and concealment cover a few percent.
pub const CHOPPY_LOSS_PERCENT: f64 = 5.0;
/// A round trip above this (ms) makes people talk over each other (ITU-T G.114's 400 ms
/// mouth-to-ear bound, which a round trip of this size plus the buffers reaches).
pub const DELAYED_RTT_MS: f64 = 400.0;
/// Our reception is judged over this much of the recent call.
pub const WINDOW: Duration = Duration::from_secs(5);

/// How the call sounds, in one word and a reason.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum CallQuality {
    /// Not enough figures yet (the first seconds).
    Measuring,
    /// Nothing heard lost or late.
    Good,
    /// We lose this share of the peer's packets: our network (or theirs upstream) drops them.
    ChoppyHere {
        /// Percent of the peer's packets lost over the last seconds.
        loss_percent: f64,
    },
    /// The peer loses this share of ours (its RTCP report): its connection is weak.
    WeakThere {
        /// Percent of our packets the peer reported lost.
        loss_percent: f64,
    },
    /// The round trip is long enough to talk over each other.
    Delayed {
        /// Round trip in ms.
        rtt_ms: f64,
    },
}

impl CallQuality {
    /// The worst of what the figures say: `here` our recent loss (percent, `None` before a
    /// window's worth), `there` the peer's reported loss of our stream, `rtt_ms` the round
    /// trip.
    pub fn assess(here: Option<f64>, there: Option<f64>, rtt_ms: Option<f64>) -> Self {
        if here.is_none() && there.is_none() && rtt_ms.is_none() {
            return CallQuality::Measuring;
        }
        let here = here.unwrap_or(0.0);
        let there = there.unwrap_or(0.0);
        if here >= CHOPPY_LOSS_PERCENT && here >= there {
            return CallQuality::ChoppyHere {
                loss_percent: round1(here),
            };
        }
        if there >= CHOPPY_LOSS_PERCENT {
            return CallQuality::WeakThere {
                loss_percent: round1(there),
            };
        }
        match rtt_ms {
            Some(rtt) if rtt >= DELAYED_RTT_MS => CallQuality::Delayed {
                rtt_ms: rtt.round(),
            },
            _ => CallQuality::Good,
        }
    }

    /// For people: "Good", "Choppy: ...".
    pub fn words(&self) -> String {
        match self {
            CallQuality::Measuring => "Measuring…".into(),
            CallQuality::Good => "Good".into(),
            CallQuality::ChoppyHere { loss_percent } => {
                format!("Choppy: your network is losing {loss_percent:.0} % of their voice")
            }
            CallQuality::WeakThere { loss_percent } => {
                format!("Their connection is weak: they lose {loss_percent:.0} % of your voice")
            }
            CallQuality::Delayed { rtt_ms } => {
                format!("Delayed: {rtt_ms:.0} ms there and back; leave pauses to talk")
            }
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Our reception over the last [`WINDOW`]: cumulative received and lost packet counts
/// sampled about once a second.
#[derive(Debug, Default)]
pub struct LossWindow {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl LossWindow {
    /// Records the cumulative counts at `now`.
    pub fn sample(&mut self, now: Instant, received: u64, lost: u64) {
        self.samples.push_back((now, received, lost));
        while self
            .samples
            .front()
            .is_some_and(|(t, ..)| now.saturating_duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Percent of the packets expected over the window that were lost; `None` until the
    /// window holds at least two samples a second apart and some packets.
    pub fn loss_percent(&self) -> Option<f64> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        if last.0.saturating_duration_since(first.0) < Duration::from_secs(1) {
            return None;
        }
        let received = last.1.saturating_sub(first.1);
        let lost = last.2.saturating_sub(first.2);
        let expected = received + lost;
        (expected > 0).then(|| 100.0 * lost as f64 / expected as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_finding_wins() {
        use CallQuality::*;
        assert_eq!(CallQuality::assess(None, None, None), Measuring);
        assert_eq!(CallQuality::assess(Some(0.0), None, Some(20.0)), Good);
        assert_eq!(CallQuality::assess(Some(4.9), Some(4.9), Some(399.0)), Good);
        assert_eq!(
            CallQuality::assess(Some(8.0), Some(2.0), Some(20.0)),
            ChoppyHere { loss_percent: 8.0 }
        );
        assert_eq!(
            CallQuality::assess(Some(6.0), Some(12.04), None),
            WeakThere { loss_percent: 12.0 }
        );
        assert_eq!(
            CallQuality::assess(Some(1.0), Some(0.0), Some(512.4)),
            Delayed { rtt_ms: 512.0 }
        );
        // Loss is worse than delay.
        assert_eq!(
            CallQuality::assess(Some(10.0), None, Some(900.0)),
            ChoppyHere { loss_percent: 10.0 }
        );
    }

    #[test]
    fn words_say_whose_network_it_is() {
        assert_eq!(CallQuality::Good.words(), "Good");
        assert_eq!(
            CallQuality::ChoppyHere { loss_percent: 8.0 }.words(),
            "Choppy: your network is losing 8 % of their voice"
        );
        assert_eq!(
            CallQuality::WeakThere { loss_percent: 12.0 }.words(),
            "Their connection is weak: they lose 12 % of your voice"
        );
        let json = serde_json::to_string(&CallQuality::WeakThere { loss_percent: 12.0 }).unwrap();
        assert_eq!(json, r#"{"verdict":"weak_there","loss_percent":12.0}"#);
    }

    #[test]
    fn the_loss_window_forgets_old_losses() {
        let start = Instant::now();
        let mut w = LossWindow::default();
        w.sample(start, 0, 0);
        assert_eq!(w.loss_percent(), None, "one sample");
        // A burst: 10 of 60 lost in the first second.
        w.sample(start + Duration::from_secs(1), 50, 10);
        assert_eq!(w.loss_percent(), Some(100.0 * 10.0 / 60.0));
        // Then clean seconds: after the window the burst is gone.
        for s in 2..=7 {
            w.sample(start + Duration::from_secs(s), 50 * s, 10);
        }
        assert_eq!(w.loss_percent(), Some(0.0));
    }
}
