//! Time as a value. The pure cores never read a clock: the caller passes `now`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time: milliseconds since the start of the run (virtual in the simulator, monotonic in
/// the daemon).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    /// The start of the run.
    pub const ZERO: Time = Time(0);

    /// A time `ms` milliseconds after the start.
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms)
    }

    /// A time `s` seconds after the start.
    pub const fn from_secs(s: u64) -> Self {
        Time(s * 1000)
    }

    /// Milliseconds since the start.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Seconds since the start, as a float (for reports).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// How long after `earlier` this time is (zero if it is not after it).
    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_arithmetic() {
        let t = Time::from_millis(12_345);
        assert_eq!(t.to_string(), "12.345s");
        assert_eq!((t + Duration::from_secs(1)).as_millis(), 13_345);
        assert_eq!(t.since(Time::from_secs(20)), Duration::ZERO);
        assert_eq!(Time::from_secs(20).since(t), Duration::from_millis(7_655));
        assert_eq!((Time::ZERO - Duration::from_secs(5)), Time::ZERO);
    }
}

/// Serde for [`Duration`] as a human string (`"500ms"`, `"30s"`, `"2m"`, `"1h"`; a bare number is
/// seconds). Use with `#[serde(with = "am_core::time::duration_str")]`.
pub mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer, de};
    use std::time::Duration;

    /// Parses `"500ms"`, `"30s"`, `"1.5s"`, `"2m"`, `"1h"` or `"30"` (seconds).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
            Some(i) => t.split_at(i),
            None => (t, "s"),
        };
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 30s, 2m)"))?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "s" | "" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m or h)")),
        };
        if !value.is_finite() || value < 0.0 {
            return Err(format!("`{text}` must be a positive duration"));
        }
        Ok(Duration::from_secs_f64(value * scale))
    }

    /// Formats as milliseconds or seconds.
    pub fn format(d: &Duration) -> String {
        if d.subsec_millis() != 0 {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}s", d.as_secs())
        }
    }

    /// Serializes as a string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(u64),
        Float(f64),
    }

    /// Deserializes from a string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(t) => parse(&t).map_err(de::Error::custom),
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Duration::from_secs_f64(f)),
            Raw::Float(f) => Err(de::Error::custom(format!(
                "{f} is not a positive number of seconds"
            ))),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_units_and_rejects_nonsense() {
            assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
            assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
            assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
            assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
            assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
            assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
            assert!(parse("soon").unwrap_err().contains("not a duration"));
            assert!(parse("3 weeks").unwrap_err().contains("unknown unit"));
            assert_eq!(format(&Duration::from_millis(1500)), "1500ms");
            assert_eq!(format(&Duration::from_secs(30)), "30s");
        }
    }
}
