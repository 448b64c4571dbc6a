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

/// The one duration grammar of the project (config files, scenarios, fault scripts): `"500ms"`,
/// `"30s"`, `"1.5s"`, `"2m"`, `"1m30s"`, `"1h"`. The unit is required: a bare number (`"30"`, or
/// `30` in TOML) is refused, because seconds and milliseconds are both plausible readings. Use
/// with `#[serde(with = "am_core::time::duration_str")]`.
pub mod duration_str {
    use serde::{Deserializer, Serializer, de};
    use std::fmt;
    use std::time::Duration;

    /// Parses `500ms`, `30s`, `1.5s`, `2m`, `1m30s`, `1h` (units `ms`, `s`, `m` or `min`, `h`).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("empty duration (e.g. 500ms, 30s, 2m)".into());
        }
        let mut total_ms: f64 = 0.0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m or h, e.g. 30s)"))?;
            if num_len == 0 {
                return Err(format!("`{text}` is not a duration (e.g. 500ms, 30s, 2m)"));
            }
            let number: f64 = rest[..num_len]
                .parse()
                .map_err(|_| format!("`{}` in `{text}` is not a number", &rest[..num_len]))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let factor = match &rest[..unit_len] {
                "ms" => 1.0,
                "s" => 1_000.0,
                "m" | "min" => 60_000.0,
                "h" => 3_600_000.0,
                other => return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m or h)")),
            };
            rest = &rest[unit_len..];
            total_ms += number * factor;
        }
        if !total_ms.is_finite() || !(0.0..=1e15).contains(&total_ms) {
            return Err(format!("`{text}` is out of range"));
        }
        Ok(Duration::from_millis(total_ms.round() as u64))
    }

    /// Writes a duration in the shortest form [`parse`] reads back (`5s`, `1500ms`).
    pub fn format(d: &Duration) -> String {
        let ms = d.as_millis();
        if ms % 1000 == 0 {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    /// Serializes as a string such as `"5s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    /// Deserializes from a string such as `"5s"`; a number is refused, naming the fix.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with its unit, such as \"500ms\", \"30s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} has no unit: write it as a string with one, e.g. \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} has no unit: write it as a string with one, e.g. \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "{v} has no unit: write it as a string with one, e.g. \"{v}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }

    /// The same for a whole number of milliseconds kept as `u64` (detector settings).
    pub mod millis {
        use serde::{Deserializer, Serializer};
        use std::time::Duration;

        /// Serializes as a string such as `"100ms"`.
        pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(&Duration::from_millis(*ms), s)
        }

        /// Deserializes from a string such as `"100ms"`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
            super::deserialize(d).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn one_grammar_with_units_required() {
            assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
            assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
            assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
            assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
            assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
            assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
            assert!(parse("7").unwrap_err().contains("no unit"));
            assert!(parse("soon").unwrap_err().contains("not a duration"));
            assert!(parse("3 weeks").unwrap_err().contains("unknown unit"));
            assert!(parse("").is_err());
            assert_eq!(format(&Duration::from_millis(1500)), "1500ms");
            assert_eq!(format(&Duration::from_secs(30)), "30s");
        }

        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[serde(with = "super")]
            d: Duration,
        }

        #[test]
        fn numbers_are_refused_with_the_fix() {
            let e = serde_json::from_str::<T>(r#"{"d": 30}"#).unwrap_err().to_string();
            assert!(e.contains("\"30s\""), "{e}");
            let t: T = serde_json::from_str(r#"{"d": "250ms"}"#).unwrap();
            assert_eq!(t.d, Duration::from_millis(250));
        }
    }
}
