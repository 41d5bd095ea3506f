//! Printing: pretty JSON for `--json`, compact tables and key–value blocks for people, and
//! relative ages ("3s ago").

use std::io::Write;

use anyhow::Result;
use comfy_table::{ContentArrangement, Table, presets};
use flotilla_core::Timestamp;
use serde::Serialize;

use crate::duration::format_duration;

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Writes `value` as pretty JSON to stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    line(&serde_json::to_string_pretty(value)?)
}

/// Pretty-prints JSON text (as it is when it cannot be parsed).
pub fn pretty_json_text(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// A compact table: a header and aligned columns, no borders.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    t.lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Aligned `key: value` lines; values spanning several lines are indented under their key.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (k, v) in rows {
        let key = format!("{k}:");
        let mut lines = v.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(format!("{key:<width$}{first}").trim_end());
        out.push('\n');
        for l in lines {
            out.push_str(&" ".repeat(width));
            out.push_str(l);
            out.push('\n');
        }
    }
    out.trim_end_matches('\n').to_owned()
}

/// The current instant.
pub fn now() -> Timestamp {
    Timestamp::from_millis(chrono::Utc::now().timestamp_millis())
}

/// How long ago `at` was, relative to `now`: `3s ago`, `5m ago`, `2h ago`, `4d ago`; `in 5s`
/// for an instant to come.
pub fn age(at: Timestamp, now: Timestamp) -> String {
    if at > now {
        return format!("in {}", coarse(at.since(now)));
    }
    format!("{} ago", coarse(now.since(at)))
}

/// An optional instant's age, `-` when absent.
pub fn age_opt(at: Option<Timestamp>, now: Timestamp) -> String {
    at.map(|t| age(t, now)).unwrap_or_else(|| "-".into())
}

/// An instant as `5m ago (2026-01-01T12:00:00.000Z)`.
pub fn when(at: Timestamp, now: Timestamp) -> String {
    format!("{} ({at})", age(at, now))
}

fn coarse(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// A duration in milliseconds, in short human form.
pub fn millis(ms: u64) -> String {
    format_duration(std::time::Duration::from_millis(ms))
}

/// Text cut to at most `max` characters, with `…` when cut.
pub fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// JSON text on one line, cut to `max` characters.
pub fn json_summary(text: &str, max: usize) -> String {
    let compact = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string(&v).ok())
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
    ellipsize(&compact, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_relative_and_coarse() {
        let now = Timestamp::from_millis(1_000_000_000);
        let ago = |ms: i64| age(Timestamp::from_millis(1_000_000_000 - ms), now);
        assert_eq!(ago(0), "0s ago");
        assert_eq!(ago(3_400), "3s ago");
        assert_eq!(ago(5 * 60_000 + 10), "5m ago");
        assert_eq!(ago(2 * 3_600_000), "2h ago");
        assert_eq!(ago(47 * 3_600_000), "47h ago");
        assert_eq!(ago(4 * 86_400_000), "4d ago");
        assert_eq!(age(Timestamp::from_millis(1_000_005_000), now), "in 5s");
        assert_eq!(age_opt(None, now), "-");
    }

    #[test]
    fn tables_are_compact_and_aligned() {
        let t = table(
            &["NAME", "STATUS", "AGENTS"],
            vec![
                vec!["default".into(), "active".into(), "3".into()],
                vec!["a-much-longer-name".into(), "inactive".into(), "0".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NAME"), "{t}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{t}");
        let col = lines[0].find("STATUS").unwrap();
        assert_eq!(lines[1].find("active"), Some(col), "{t}");
        assert_eq!(lines[2].find("inactive"), Some(col), "{t}");
        assert!(!t.contains('|') && !t.contains('+'), "{t}");
    }

    #[test]
    fn key_values_align_and_indent() {
        let text = key_values(&[("ID", "x".into()), ("Payload", "{\n  \"a\": 1\n}".into())]);
        assert_eq!(
            text,
            "ID:      x\nPayload: {\n           \"a\": 1\n         }"
        );
    }

    #[test]
    fn summaries_are_one_line_and_cut() {
        assert_eq!(json_summary("{ \"a\" : [1, 2] }", 40), r#"{"a":[1,2]}"#);
        assert_eq!(ellipsize("abcdef", 4), "abc…");
        assert_eq!(ellipsize("abc", 4), "abc");
    }
}
