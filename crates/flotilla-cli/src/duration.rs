//! Durations on the command line: `500ms`, `30s`, `5m`, `1h`, `2d`, sums such as `1h30m`, and
//! decimals such as `1.5s`; and the reverse, a short human form for output.

use std::time::Duration;

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `2d` or `1h30m` (`0` needs no unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number and a unit (ms, s, m, h, d), \
             e.g. 500ms, 30s, 5m, 1h, 2d"
        )
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| bad())?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    // Round to whole milliseconds: the API counts in milliseconds.
    Ok(Duration::from_millis(
        u64::try_from(total.as_millis()).map_err(|_| bad())?,
    ))
}

/// A short human form: `250ms`, `1.5s`, `30s`, `5m`, `5m30s`, `2h`, `1h30m`, `3d`, `2d4h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        return if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            let text = format!("{:.1}s", ms as f64 / 1000.0);
            text.replace(".0s", "s")
        };
    }
    let secs = d.as_secs();
    let (big, small, big_unit, small_unit) = if secs < 3600 {
        (secs / 60, secs % 60, "m", "s")
    } else if secs < 86_400 {
        (secs / 3600, secs % 3600 / 60, "h", "m")
    } else {
        (secs / 86_400, secs % 86_400 / 3600, "d", "h")
    };
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_sums_and_decimals() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1m30s500ms"),
            Ok(Duration::from_millis(90_500))
        );
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25h"), Ok(Duration::from_secs(900)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "30",
            "s",
            "5x",
            "-5s",
            "5 s",
            "1.2.3s",
            "ms5",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("e.g. 500ms"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_short_forms() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(330)), "5m30s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(3 * 86_400)), "3d");
        for text in ["250ms", "30s", "5m30s", "1h30m", "2d4h"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
