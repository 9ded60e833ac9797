//! Durations in the reference documents' units ("30s", "5m", "2h", "1h30m").
//!
//! The REST API takes strategy settings the way reference 000 writes them (`"batch_delay": "5m"`),
//! so the parser lives next to the engine that consumes the values.

use super::{HOUR, Millis};

/// The longest duration any setting may name: one year. Every deadline the engine computes is
/// `now` plus one of these, so a bound far below `u64::MAX` is what keeps that sum from
/// wrapping (a wrapped deadline lies in the past and fires at once).
pub const MAX_DURATION: Millis = 366 * 24 * HOUR;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty or only whitespace.
    #[error(
        "empty duration: expected a number followed by a unit such as \"30s\", \"5m\" or \"2h\""
    )]
    Empty,
    /// A number was not followed by one of the units ms, s, m, h, d.
    #[error("duration {input:?}: missing or unknown unit after {number} (use ms, s, m, h or d)")]
    Unit {
        /// The whole input.
        input: String,
        /// The number that lacked a unit.
        number: u64,
    },
    /// A character that is neither a digit nor part of a unit.
    #[error("duration {input:?}: unexpected character {found:?}")]
    Syntax {
        /// The whole input.
        input: String,
        /// The offending character.
        found: char,
    },
    /// The value is longer than [`MAX_DURATION`] (or does not even fit in 64-bit milliseconds).
    #[error("duration {input:?} is too long: the limit is 366d")]
    Overflow {
        /// The whole input.
        input: String,
    },
}

/// Parses a duration such as `"30s"`, `"5m"`, `"2h"`, `"1h30m"` or `"250ms"` into milliseconds.
/// A bare number is refused: the reference always writes a unit, and guessing one is how a
/// five-minute delay becomes a five-second one.
pub fn parse_duration(input: &str) -> Result<Millis, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: Millis = 0;
    let overflow = || DurationError::Overflow {
        input: input.to_string(),
    };
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(DurationError::Syntax {
                input: input.to_string(),
                found: s[i..].chars().next().unwrap_or(' '),
            });
        }
        let number: u64 = s[start..i].parse().map_err(|_| overflow())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor: Millis = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(DurationError::Unit {
                    input: input.to_string(),
                    number,
                });
            }
        };
        let part = number.checked_mul(factor).ok_or_else(overflow)?;
        total = total.checked_add(part).ok_or_else(overflow)?;
        if total > MAX_DURATION {
            return Err(overflow());
        }
    }
    Ok(total)
}

/// Formats milliseconds compactly in the same units ("1h30m", "45s", "0s"); durations of a
/// second or more are shown to the second.
pub fn format_duration(ms: Millis) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = if ms >= 1_000 { ms - ms % 1_000 } else { ms };
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if rest > 0 {
        out.push_str(&format!("{rest}ms"));
    }
    out
}

/// Formats unix milliseconds as an RFC 3339 UTC timestamp (`2026-11-22T03:04:05.678Z`): the
/// one formatter of absolute times for the coordinator and the reports.
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_units() {
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration(" 250ms "), Ok(250));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("5"),
            Err(DurationError::Unit { number: 5, .. })
        ));
        assert!(matches!(
            parse_duration("5 minutes"),
            Err(DurationError::Unit { .. })
        ));
        assert!(matches!(
            parse_duration("m5"),
            Err(DurationError::Syntax { found: 'm', .. })
        ));
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::Syntax { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow { .. })
        ));
        for huge in ["18446744073709551615ms", "367d", "366d1ms", "9000h"] {
            let err = parse_duration(huge).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|m| m.contains("366d")),
                "{huge}: {err:?}"
            );
        }
        assert_eq!(parse_duration("366d"), Ok(MAX_DURATION));
        let msg = parse_duration("5x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("unknown unit"), "{msg}");
    }

    #[test]
    fn formats_round_trip() {
        for s in ["1h30m", "45s", "2h", "10m", "1d", "250ms"] {
            assert_eq!(format_duration(parse_duration(s).unwrap_or(0)), s);
        }
        assert_eq!(format_duration(61_500), "1m1s");
    }
}
