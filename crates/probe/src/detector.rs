//! Per-target detector state: a fixed ring of recent samples, the current run of misses or replies,
//! and the gaps between replies for phi accrual. Memory per target is constant.

use crate::settings::{Detector, Timing};
use am_core::Time;
use std::cmp::Reverse;
use std::fmt::Write as _;
use std::time::Duration;

/// How many recent probe results each target keeps (for evidence and out-of-order results).
pub const HISTORY: usize = 32;
/// How many gaps between replies the phi-accrual detector learns from.
const GAPS: usize = 16;
/// `rtt_us` of a sample that got no reply.
const LOST: u32 = u32::MAX;

#[derive(Copy, Clone, Debug, Default)]
struct Sample {
    sent: Time,
    rtt_us: u32,
}

/// The detector's state for one target.
#[derive(Clone, Debug)]
pub(crate) struct Track {
    ring: [Sample; HISTORY],
    /// Samples written so far (the ring holds the last `HISTORY`).
    written: u64,
    /// When the probe behind the newest reply was sent.
    pub last_reply_sent: Option<Time>,
    /// When the newest reply arrived.
    pub last_reply_at: Option<Time>,
    last_rtt_us: u32,
    /// Lost probes in a row, all sent after the newest reply.
    pub misses: u32,
    /// When the first of those was sent.
    pub first_miss_sent: Time,
    /// When the newest lost probe was sent.
    pub last_miss_sent: Option<Time>,
    /// Replies in a row, all to probes sent after the newest lost one.
    pub replies: u32,
    /// When the first of those was sent.
    first_reply_sent: Time,
    /// Gaps between reply arrivals, in ms.
    gaps: [u32; GAPS],
    gaps_written: u32,
    /// The latest error text (the probe could not be sent or was refused).
    last_error: Option<Box<str>>,
    /// When the first probe result came (for targets that never answered).
    first_seen: Option<Time>,
}

impl Track {
    pub fn new() -> Track {
        Track {
            ring: [Sample::default(); HISTORY],
            written: 0,
            last_reply_sent: None,
            last_reply_at: None,
            last_rtt_us: 0,
            misses: 0,
            first_miss_sent: Time::ZERO,
            last_miss_sent: None,
            replies: 0,
            first_reply_sent: Time::ZERO,
            gaps: [0; GAPS],
            gaps_written: 0,
            last_error: None,
            first_seen: None,
        }
    }

    fn push(&mut self, s: Sample) {
        let i = (self.written % HISTORY as u64) as usize;
        self.ring[i] = s;
        self.written += 1;
    }

    fn samples(&self) -> impl Iterator<Item = &Sample> {
        let n = self.written.min(HISTORY as u64) as usize;
        self.ring[..n].iter()
    }

    /// A reply to the probe sent at `sent` arrived at `now` after `rtt`.
    pub fn on_reply(&mut self, sent: Time, now: Time, rtt: Duration) {
        let rtt_us = u32::try_from(rtt.as_micros()).unwrap_or(LOST - 1);
        self.first_seen.get_or_insert(now);
        self.push(Sample { sent, rtt_us });
        if self.last_reply_sent.is_none_or(|r| sent > r) {
            self.last_reply_sent = Some(sent);
            self.last_rtt_us = rtt_us;
            if self.misses > 0 {
                // Misses judged before this reply arrived but sent after its probe still count.
                let (n, first) = self
                    .samples()
                    .filter(|s| s.rtt_us == LOST && s.sent > sent)
                    .fold((0u32, None::<Time>), |(n, first), s| {
                        (n + 1, Some(first.map_or(s.sent, |f| f.min(s.sent))))
                    });
                self.misses = n;
                if let Some(first) = first {
                    self.first_miss_sent = first;
                }
            }
        }
        if let Some(prev) = self.last_reply_at {
            if now > prev {
                let gap = u32::try_from(now.as_millis() - prev.as_millis()).unwrap_or(u32::MAX);
                self.gaps[(self.gaps_written as usize) % GAPS] = gap;
                self.gaps_written = self.gaps_written.saturating_add(1);
            }
        }
        if self.last_reply_at.is_none_or(|p| now > p) {
            self.last_reply_at = Some(now);
        }
        if self.last_miss_sent.is_none_or(|m| sent > m) {
            if self.replies == 0 {
                self.first_reply_sent = sent;
            }
            self.replies = self.replies.saturating_add(1);
        }
    }

    /// The probe sent at `sent` got no reply (judged at `now`); `error` says why if it failed.
    pub fn on_miss(&mut self, sent: Time, now: Time, error: Option<&str>) {
        self.first_seen.get_or_insert(now);
        self.push(Sample { sent, rtt_us: LOST });
        if let Some(e) = error {
            if self.last_error.as_deref() != Some(e) {
                self.last_error = Some(e.into());
            }
        }
        if self.last_reply_sent.is_some_and(|r| sent < r) {
            // A later probe already answered: this loss is old news.
            return;
        }
        if self.misses == 0 || sent < self.first_miss_sent {
            self.first_miss_sent = sent;
        }
        self.misses = self.misses.saturating_add(1);
        if self.last_miss_sent.is_none_or(|m| sent > m) {
            self.last_miss_sent = Some(sent);
        }
        self.replies = 0;
    }

    /// Whether the target has ever answered.
    pub fn has_replied(&self) -> bool {
        self.last_reply_sent.is_some()
    }

    /// The phi-accrual suspicion at `now` (0 when there is no silence to judge).
    pub fn phi(&self, now: Time, timing: &Timing) -> f64 {
        let Detector::PhiAccrual {
            min_std_dev_ms,
            acceptable_pause_ms,
            ..
        } = timing.detector
        else {
            return 0.0;
        };
        let Some(last) = self.last_reply_at else {
            return 0.0;
        };
        let n = (self.gaps_written as usize).min(GAPS);
        let interval = timing.interval.as_millis() as f64;
        let (mean, var) = if n == 0 {
            // Bootstrap as Akka does: the expected rhythm, a quarter of it as deviation.
            (interval, (interval / 4.0).powi(2))
        } else {
            let g = &self.gaps[..n];
            let mean = g.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
            let var = g.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n as f64;
            (mean, var)
        };
        let std = var.sqrt().max(min_std_dev_ms as f64).max(1.0);
        let mean = mean + acceptable_pause_ms as f64;
        let t = now.as_millis().saturating_sub(last.as_millis()) as f64;
        phi(t, mean, std)
    }

    /// Whether the detector says "dead" at `now`.
    pub fn failing(&self, now: Time, timing: &Timing) -> bool {
        match timing.detector {
            Detector::ConsecutiveMisses { misses } => self.misses >= misses,
            Detector::PhiAccrual {
                threshold,
                min_misses,
                max_silence_ms,
                ..
            } => {
                if self.misses < min_misses {
                    return false;
                }
                let silence_from = self.last_reply_at.or(self.first_seen).unwrap_or(now);
                now.since(silence_from) >= Duration::from_millis(max_silence_ms)
                    || (self.last_reply_at.is_some() && self.phi(now, timing) >= threshold)
            }
        }
    }

    /// Whether the last `rise` probes whose fate is settled at `now` (sent at least a timeout ago,
    /// so that no earlier probe can still be lost) all answered.
    pub fn risen(&self, now: Time, timing: &Timing) -> bool {
        let rise = timing.rise as usize;
        if (self.replies as usize) < rise {
            return false;
        }
        let settled = now - timing.timeout;
        let mut recent = [Sample::default(); HISTORY];
        let mut n = 0;
        for s in self.samples().filter(|s| s.sent <= settled) {
            recent[n] = *s;
            n += 1;
        }
        if n < rise.min(HISTORY) {
            return false;
        }
        let recent = &mut recent[..n];
        recent.sort_unstable_by_key(|s| Reverse(s.sent));
        recent.iter().take(rise).all(|s| s.rtt_us != LOST)
    }

    /// When the newest probe sent between `from` and `to` (inclusive) that answered was sent.
    pub fn replied_between(&self, from: Time, to: Time) -> Option<Time> {
        self.samples()
            .filter(|s| s.rtt_us != LOST && s.sent >= from && s.sent <= to)
            .map(|s| s.sent)
            .max()
    }

    /// Evidence for a "dead" verdict.
    pub fn dead_evidence(&self, now: Time, timing: &Timing) -> String {
        let mut s = format!(
            "{} of {} probes lost since {}",
            self.misses, self.misses, self.first_miss_sent
        );
        match (self.last_reply_sent, self.last_reply_at) {
            (Some(sent), Some(at)) => {
                let _ = write!(
                    s,
                    " (last reply {at} to the probe sent {sent}, rtt {})",
                    fmt_rtt(self.last_rtt_us)
                );
            }
            _ => s.push_str(" (never answered)"),
        }
        if let Some(last) = self.last_miss_sent {
            let _ = write!(s, "; last lost probe sent {last}, judged {now}");
        }
        if let Detector::PhiAccrual { threshold, .. } = timing.detector {
            let _ = write!(s, "; phi {:.1} (threshold {threshold})", self.phi(now, timing));
        }
        let (lost, total) = self.recent();
        let _ = write!(s, "; {lost} of the last {total} lost");
        if let Some(e) = &self.last_error {
            let _ = write!(s, "; last error: {e}");
        }
        s
    }

    /// Evidence for an "alive" verdict.
    pub fn alive_evidence(&self) -> String {
        let mut s = format!(
            "{} probes answered in a row since {} (rtt {})",
            self.replies,
            self.first_reply_sent,
            fmt_rtt(self.last_rtt_us)
        );
        let (lost, total) = self.recent();
        let _ = write!(s, "; {lost} of the last {total} lost");
        s
    }

    /// Lost and total among the recent samples.
    pub fn recent(&self) -> (usize, usize) {
        let total = self.samples().count();
        let lost = self.samples().filter(|s| s.rtt_us == LOST).count();
        (lost, total)
    }
}

fn fmt_rtt(us: u32) -> String {
    if us >= 10_000 {
        format!("{}ms", us / 1000)
    } else {
        format!("{:.1}ms", f64::from(us) / 1000.0)
    }
}

/// `-log10(P(X > t))` for X normal with `mean` and `std`, with the logistic approximation of the
/// normal tail that Akka uses (good to a few percent, and it never returns infinity early).
pub(crate) fn phi(t: f64, mean: f64, std: f64) -> f64 {
    let y = (t - mean) / std;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p_later = if t > mean {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    if p_later <= 0.0 {
        f64::INFINITY
    } else {
        -p_later.log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Timing;

    fn ms(v: u64) -> Time {
        Time::from_millis(v)
    }

    #[test]
    fn counts_misses_and_resets_on_a_newer_reply() {
        let t = Timing::host_default();
        let mut tr = Track::new();
        tr.on_reply(ms(0), ms(1), Duration::from_millis(1));
        for i in 1..=19 {
            tr.on_miss(ms(i * 100), ms(i * 100 + 300), None);
        }
        assert_eq!(tr.misses, 19);
        assert!(!tr.failing(ms(2300), &t));
        tr.on_miss(ms(2000), ms(2300), Some("refused"));
        assert!(tr.failing(ms(2300), &t));
        let ev = tr.dead_evidence(ms(2300), &t);
        assert!(
            ev.starts_with("20 of 20 probes lost since 0.100s (last reply 0.001s"),
            "{ev}"
        );
        assert!(ev.contains("last error: refused"), "{ev}");
        tr.on_reply(ms(2100), ms(2101), Duration::from_millis(1));
        assert_eq!(tr.misses, 0);
        assert_eq!(tr.replies, 1);
        assert!(!tr.risen(ms(3000), &t));
    }

    #[test]
    fn an_old_loss_after_a_newer_reply_is_not_a_miss() {
        let mut tr = Track::new();
        tr.on_reply(ms(100), ms(101), Duration::from_millis(1));
        tr.on_miss(ms(50), ms(350), None);
        assert_eq!(tr.misses, 0);
        assert_eq!(tr.replies, 1);
    }

    #[test]
    fn a_reply_overtaken_by_a_later_error_keeps_that_error_counted() {
        let mut tr = Track::new();
        tr.on_miss(ms(200), ms(200), Some("send failed"));
        tr.on_reply(ms(100), ms(150), Duration::from_millis(50));
        assert_eq!(tr.misses, 1);
        assert_eq!(tr.replies, 0);
    }

    #[test]
    fn phi_grows_with_silence() {
        assert!(phi(100.0, 100.0, 10.0) < 0.4);
        assert!(phi(200.0, 100.0, 10.0) > 10.0);
        assert!(phi(150.0, 100.0, 10.0) < phi(160.0, 100.0, 10.0));
    }
}
