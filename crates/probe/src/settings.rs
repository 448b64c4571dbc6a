//! Probe and detector settings, with the defaults and the arithmetic behind them.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a target's probe results are turned into a verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Detector {
    /// Dead after `misses` probes in a row got no reply (lost, timed out or failed to send).
    ConsecutiveMisses {
        /// How many probes in a row must fail.
        misses: u32,
    },
    /// The phi-accrual detector (Hayashibara et al., as in Akka and Cassandra): dead when
    /// `phi = -log10(P(a reply is still to come after this silence))` reaches `threshold`, with the
    /// gaps between replies modelled as a normal distribution learnt from the recent replies.
    PhiAccrual {
        /// Suspicion level that makes the verdict (8 to 12 is usual; 10 means a 1 in 10^10 chance
        /// under the model that the target is still alive).
        threshold: f64,
        /// Floor for the learnt standard deviation of the gaps, in milliseconds (written as a
        /// duration, key `min_std_dev`).
        #[serde(rename = "min_std_dev", with = "am_core::time::duration_str::millis")]
        min_std_dev_ms: u64,
        /// Added to the learnt mean gap: silence tolerated on top of the normal rhythm, in ms
        /// (key `acceptable_pause`).
        #[serde(rename = "acceptable_pause", with = "am_core::time::duration_str::millis")]
        acceptable_pause_ms: u64,
        /// At least this many probes in a row must also have failed (so that no single late reply
        /// or lost probe can make a verdict).
        min_misses: u32,
        /// Dead after this much silence whatever the model says, in ms: keeps the detection bound
        /// even after a history of long gaps (key `max_silence`).
        #[serde(rename = "max_silence", with = "am_core::time::duration_str::millis")]
        max_silence_ms: u64,
    },
}

impl Detector {
    /// The default phi-accrual detector for a probe every 100 ms.
    pub fn default_phi() -> Detector {
        Detector::PhiAccrual {
            threshold: 10.0,
            min_std_dev_ms: 100,
            acceptable_pause_ms: 1_000,
            min_misses: 3,
            max_silence_ms: 2_500,
        }
    }
}

/// The rhythm and detector for one kind of target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Time between two probes of one target.
    #[serde(with = "am_core::time::duration_str")]
    pub interval: Duration,
    /// How long one probe waits for its reply. It may exceed `interval` (probes overlap).
    #[serde(with = "am_core::time::duration_str")]
    pub timeout: Duration,
    /// How results become a "dead" verdict.
    pub detector: Detector,
    /// Replies in a row needed to declare a target alive again (or for the first time), so that a
    /// single late reply does not flap the verdict.
    pub rise: u32,
}

impl Timing {
    /// The defaults for hosts' management addresses and the isolation addresses: a probe every
    /// 100 ms, 300 ms timeout, dead after 20 lost in a row, alive again after 3 answered.
    ///
    /// Worst case from a crash to the verdict: 20 probes at most 110 ms apart (+-5 % jitter) plus the
    /// last one's timeout, 20 x 110 + 300 = 2.5 s (p99 goal: 3 s). Under 20 % independent loss the
    /// chance that a given probe starts a run of 20 losses is 0.8 x 0.2^20 = 8.4e-15; at 36,000
    /// probes an hour that is 3.0e-10 false verdicts per target-hour (one per 380 years for
    /// 1,000 targets).
    pub fn host_default() -> Timing {
        Timing {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            detector: Detector::ConsecutiveMisses { misses: 20 },
            rise: 3,
        }
    }

    /// The defaults for guests' addresses (there are many more of them; a hung guest is less urgent
    /// than a dead host): a probe every 250 ms, 500 ms timeout, dead after 16 lost in a row.
    ///
    /// Worst case 16 x 275 + 500 = 4.9 s; under 20 % loss 0.8 x 0.2^16 x 14,400 = 7.5e-8 false
    /// verdicts per target-hour.
    pub fn guest_default() -> Timing {
        Timing {
            interval: Duration::from_millis(250),
            timeout: Duration::from_millis(500),
            detector: Detector::ConsecutiveMisses { misses: 16 },
            rise: 3,
        }
    }

    /// Probes in a row that must fail before any verdict.
    pub fn min_misses(&self) -> u32 {
        match self.detector {
            Detector::ConsecutiveMisses { misses } => misses,
            Detector::PhiAccrual { min_misses, .. } => min_misses,
        }
    }

    /// Worst-case time from a crash to the verdict with this timing and `jitter` (a fraction of
    /// the interval), not counting the isolation check or the driver's own delays.
    pub fn detection_bound(&self, jitter: f64) -> Duration {
        let gap = self.interval.mul_f64(1.0 + 2.0 * jitter.clamp(0.0, 0.45));
        match self.detector {
            Detector::ConsecutiveMisses { misses } => gap * misses + self.timeout,
            Detector::PhiAccrual {
                max_silence_ms,
                min_misses,
                ..
            } => {
                let by_silence = Duration::from_millis(max_silence_ms) + gap + self.timeout;
                by_silence.max(gap * min_misses + self.timeout)
            }
        }
    }

    /// Expected false "dead" verdicts per target-hour of a live target whose probes are each lost
    /// independently with probability `loss`: the rate of runs of lost probes long enough for a
    /// verdict. For phi accrual that run is the silence at which phi reaches the threshold with the
    /// tightest learnt rhythm (mean gap = interval, deviation at its floor), which over-estimates
    /// the rate (loss lengthens the learnt gaps).
    pub fn false_verdicts_per_hour(&self, loss: f64) -> f64 {
        let interval = self.interval.as_secs_f64().max(1e-6);
        let probes_per_hour = 3_600.0 / interval;
        probes_per_hour * (1.0 - loss) * loss.powf(f64::from(self.verdict_run()))
    }

    /// Lost probes in a row that make a verdict (for phi accrual, at the tightest learnt rhythm).
    pub fn verdict_run(&self) -> u32 {
        match self.detector {
            Detector::ConsecutiveMisses { misses } => misses,
            Detector::PhiAccrual {
                threshold,
                min_std_dev_ms,
                acceptable_pause_ms,
                min_misses,
                max_silence_ms,
            } => {
                let i = self.interval.as_millis().max(1) as f64;
                let mean = i + acceptable_pause_ms as f64;
                let std = (min_std_dev_ms as f64).max(i / 4.0).max(1.0);
                // Silence (from the last reply to the judging of the latest loss) that reaches the
                // threshold, found by bisection: phi grows with silence.
                let (mut lo, mut hi) = (0.0f64, max_silence_ms as f64);
                for _ in 0..60 {
                    let mid = (lo + hi) / 2.0;
                    if crate::detector::phi(mid, mean, std) >= threshold {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                let t = self.timeout.as_millis() as f64;
                let run = ((hi - t) / i).ceil().max(0.0) as u32;
                run.max(min_misses)
            }
        }
    }
}

/// All settings of the [`Monitor`](crate::Monitor) and the [`drive`](crate::drive) loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Hosts' management addresses and the manager's isolation addresses.
    pub hosts: Timing,
    /// Guests' addresses.
    pub guests: Timing,
    /// Random shift of each probe, as a fraction of the interval (0.05: +-5 %), so that probes of
    /// many managers or targets do not fall into step.
    pub jitter: f64,
    /// Before a host or guest is declared dead, the manager must have proof that it can reach the
    /// network itself: a reply from an isolation address, or from most other hosts, to a probe sent
    /// at most this long before the target's latest lost probe.
    #[serde(with = "am_core::time::duration_str")]
    pub isolation_proof_window: Duration,
    /// Seed of the schedule's spreading and jitter (deterministic for a given seed and target).
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hosts: Timing::host_default(),
            guests: Timing::guest_default(),
            jitter: 0.05,
            isolation_proof_window: Duration::from_millis(500),
            seed: 0x05ee_da11_7e57,
        }
    }
}

/// Why settings are unusable.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// A duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A count or fraction out of range.
    #[error("{what} is {value}, expected {expected}")]
    OutOfRange {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: String,
        /// The valid range.
        expected: &'static str,
    },
}

impl Settings {
    /// Checks the settings; [`Monitor::new`](crate::Monitor::new) clamps the same values silently.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (name, t) in [("hosts", &self.hosts), ("guests", &self.guests)] {
            if t.interval.is_zero() {
                return Err(SettingsError::Zero(if name == "hosts" {
                    "hosts.interval"
                } else {
                    "guests.interval"
                }));
            }
            if t.timeout.is_zero() {
                return Err(SettingsError::Zero(if name == "hosts" {
                    "hosts.timeout"
                } else {
                    "guests.timeout"
                }));
            }
            if t.min_misses() == 0 {
                return Err(SettingsError::OutOfRange {
                    what: "misses",
                    value: "0".into(),
                    expected: "at least 1",
                });
            }
            if t.rise == 0 {
                return Err(SettingsError::OutOfRange {
                    what: "rise",
                    value: "0".into(),
                    expected: "at least 1",
                });
            }
            if let Detector::PhiAccrual { threshold, .. } = t.detector
                && !(threshold.is_finite() && threshold > 0.0)
            {
                return Err(SettingsError::OutOfRange {
                    what: "phi threshold",
                    value: threshold.to_string(),
                    expected: "a positive number",
                });
            }
        }
        if !(0.0..=0.45).contains(&self.jitter) {
            return Err(SettingsError::OutOfRange {
                what: "jitter",
                value: self.jitter.to_string(),
                expected: "0 to 0.45",
            });
        }
        Ok(())
    }

    /// A copy with every value brought into its valid range.
    pub(crate) fn sanitized(&self) -> Settings {
        let fix = |t: &Timing| {
            let mut t = t.clone();
            t.interval = t.interval.max(Duration::from_millis(1));
            t.timeout = t.timeout.max(Duration::from_millis(1));
            t.rise = t.rise.max(1);
            match &mut t.detector {
                Detector::ConsecutiveMisses { misses } => *misses = (*misses).max(1),
                Detector::PhiAccrual {
                    threshold,
                    min_misses,
                    ..
                } => {
                    *min_misses = (*min_misses).max(1);
                    if !(threshold.is_finite() && *threshold > 0.0) {
                        *threshold = 10.0;
                    }
                }
            }
            t
        };
        Settings {
            hosts: fix(&self.hosts),
            guests: fix(&self.guests),
            jitter: if self.jitter.is_finite() {
                self.jitter.clamp(0.0, 0.45)
            } else {
                0.0
            },
            isolation_proof_window: self.isolation_proof_window,
            seed: self.seed,
        }
    }
}

/// Serde for a [`Duration`] as whole milliseconds.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_meet_the_goals_on_paper() {
        let s = Settings::default();
        assert_eq!(s.validate(), Ok(()));
        let bound = s.hosts.detection_bound(s.jitter);
        assert!(bound <= Duration::from_secs(3), "{bound:?}");
        assert!(s.hosts.false_verdicts_per_hour(0.2) < 1e-9);
        assert!(s.guests.false_verdicts_per_hour(0.2) < 1e-6);
        let phi = Timing {
            detector: Detector::default_phi(),
            ..Timing::host_default()
        };
        assert!(phi.detection_bound(s.jitter) <= Duration::from_secs(3));
        // Phi reaches 10 after about 1.68 s of silence: 14 lost probes of 100 ms plus the timeout.
        assert_eq!(phi.verdict_run(), 14);
        assert!(phi.false_verdicts_per_hour(0.2) < 1e-5);
    }

    #[test]
    fn invalid_settings_are_named() {
        let mut s = Settings::default();
        s.hosts.interval = Duration::ZERO;
        assert_eq!(s.validate(), Err(SettingsError::Zero("hosts.interval")));
        assert_eq!(s.sanitized().hosts.interval, Duration::from_millis(1));
        s = Settings {
            jitter: 0.9,
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("jitter is 0.9"));
    }
}
