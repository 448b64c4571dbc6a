//! Virtual time: the world's timers (every host's storage heartbeat tick, a sick guest's tools
//! heartbeat turning red) and advancing the world to `now`, publishing the changes each timer
//! makes at its own time. Owns [`Timers`]; writes the live hosts' heartbeats, publishes through
//! `feed.rs`.

use super::World;
use crate::truth::GuestState;
use am_core::Time;

/// How far the timers are processed.
#[derive(Debug)]
pub(super) struct Timers {
    /// Timers up to this time are processed.
    processed_until: Time,
    /// The next timer after `processed_until`, while the truth has not changed.
    next_timer: Option<Time>,
}

impl Timers {
    /// Nothing processed yet.
    pub(super) fn new() -> Self {
        Timers {
            processed_until: Time::ZERO,
            next_timer: None,
        }
    }

    /// Forgets the next timer: the truth changed, it must be looked for again.
    pub(super) fn forget_next(&mut self) {
        self.next_timer = None;
    }
}

impl World {
    /// The next timer strictly after `t`: a storage heartbeat tick or a guest heartbeat turning red.
    pub fn next_timer_after(&self, t: Time) -> Time {
        let p = self.cfg.hb_period_ms;
        let hb = (t.as_millis() / p + 1) * p;
        let red = self
            .vms
            .values()
            .filter(|v| v.is_running() && v.guest != GuestState::Ok)
            .map(|v| (v.guest_since + self.cfg.heartbeat_delay).as_millis())
            .filter(|&r| r > t.as_millis())
            .min()
            .unwrap_or(u64::MAX);
        Time(hb.min(red))
    }

    /// Processes every timer up to `now`, publishing the changes each one makes at its own time.
    pub fn advance(&mut self, now: Time) {
        if self.feed.is_dirty() {
            let t = self.timers.processed_until;
            self.publish(t);
        }
        loop {
            let next = match self.timers.next_timer {
                Some(t) => t,
                None => {
                    let t = self.next_timer_after(self.timers.processed_until);
                    self.timers.next_timer = Some(t);
                    t
                }
            };
            if next > now {
                break;
            }
            self.timers.processed_until = next;
            self.timers.next_timer = None;
            if next.as_millis() % self.cfg.hb_period_ms == 0 {
                for h in self.hosts.values_mut().filter(|h| h.condition.is_alive()) {
                    h.last_heartbeat = next;
                }
            }
            self.mark_dirty();
            self.publish(next);
        }
        if now > self.timers.processed_until {
            self.timers.processed_until = now;
        }
    }
}
