//! Durations in pipeline files: `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"2d"`, parsed with the file so
//! that a bad value is an error with its key, line and column.

use std::time::Duration;

use super::written::{Setting, Written};
use crate::{Error, Result};

/// A duration as written in a pipeline file (a late record's reason quotes
/// `max_out_of_orderness = 1m` as written).
pub type DurationText = Written<Duration>;

impl Setting for Duration {
    fn parse_setting(text: &str) -> Result<Self> {
        parse_duration("duration", text)
    }
}

impl Written<Duration> {
    /// No time at all, written `"0s"`.
    pub fn zero() -> Self {
        Written::new("0s", Duration::ZERO)
    }

    /// `ms` milliseconds, written `"{ms}ms"`.
    pub fn from_millis(ms: u64) -> Self {
        Written::new(format!("{ms}ms"), Duration::from_millis(ms))
    }

    /// The duration.
    pub fn get(&self) -> Duration {
        *self.value()
    }
}

/// Parses `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"2d"` (a bare number is seconds).
pub fn parse_duration(key: &str, text: &str) -> Result<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let not_a_duration = || {
        Error::config(
            key,
            format!("'{text}' is not a duration; write e.g. 500ms, 10s, 5m, 1h"),
        )
    };
    // Whole numbers are exact (a window of `3600001ms` is that, not a float's rounding of it).
    if let Ok(whole) = number.parse::<u64>() {
        let ms_per_unit: u64 = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => 0,
        };
        if ms_per_unit > 0 {
            let ms = whole.checked_mul(ms_per_unit).ok_or_else(not_a_duration)?;
            return Ok(Duration::from_millis(ms));
        }
    }
    let value: f64 = number.parse().map_err(|_| not_a_duration())?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(Error::config(
                key,
                format!("unknown unit '{other}' in '{text}'; use ms, s, m, h or d"),
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(Error::config(key, format!("'{text}' must be >= 0")));
    }
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| Error::config(key, format!("'{text}' is too long for a duration")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_what_they_cannot_hold() {
        let ms = |text: &str| parse_duration("k", text).map(|d| d.as_millis());
        assert_eq!(ms("500ms").unwrap(), 500);
        assert_eq!(ms("1.5s").unwrap(), 1500);
        assert_eq!(ms("2h").unwrap(), 7_200_000);
        assert_eq!(ms("3").unwrap(), 3000);
        // Too large for a u64 of milliseconds, and too large for a Duration: errors, not panics.
        for text in [
            "99999999999999999999s",
            "99999999999999999999999999.5d",
            "1e999h",
        ] {
            let err = ms(text).unwrap_err().to_string();
            assert!(err.contains("[k]") && err.contains(text), "{err}");
        }
        let written: DurationText = "90s".parse().unwrap();
        assert_eq!(
            (written.get(), written.to_string()),
            (Duration::from_secs(90), "90s".into())
        );
        assert!("soon".parse::<DurationText>().is_err());
    }
}
