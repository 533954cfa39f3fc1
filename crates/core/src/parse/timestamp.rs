//! Timestamps at the start of log lines (`2026-11-27 10:00:00,123`).
//!
//! Hand-written rather than a regex because every line of a busy program goes
//! through it. Times without an offset are local time, as Python's `asctime` is.

use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::cell::Cell;

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[,.fraction][Z|±HH:MM|±HHMM]` at the start of
/// `text`; returns the time and the rest of the text.
pub fn parse_prefix(text: &str) -> Option<(DateTime<Utc>, &str)> {
    let b = text.as_bytes();
    if b.len() < 19 || !(b[10] == b' ' || b[10] == b'T') {
        return None;
    }
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    let mut pos = 19;
    let mut nanos = 0u32;
    if pos < b.len() && (b[pos] == b',' || b[pos] == b'.') {
        let start = pos + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        let frac = &b[start..end.min(start + 9)];
        nanos = digits(frac)? * 10u32.pow(9 - frac.len() as u32);
        pos = end;
    }
    let naive =
        NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(hour, minute, second, nanos)?;
    let (offset, used) = parse_offset(&b[pos..]);
    pos += used;
    let utc = match offset {
        Some(off) => off
            .from_local_datetime(&naive)
            .single()?
            .with_timezone(&Utc),
        None => local_to_utc(naive)?,
    };
    Some((utc, &text[pos..]))
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn parse_offset(b: &[u8]) -> (Option<FixedOffset>, usize) {
    match b.first() {
        Some(b'Z') => (FixedOffset::east_opt(0), 1),
        Some(&sign @ (b'+' | b'-')) => {
            let (h, m, used) = if b.len() >= 6 && b[3] == b':' {
                (digits(&b[1..3]), digits(&b[4..6]), 6)
            } else if b.len() >= 5 {
                (digits(&b[1..3]), digits(&b[3..5]), 5)
            } else {
                return (None, 0);
            };
            match (h, m) {
                (Some(h), Some(m)) if h < 24 && m < 60 => {
                    let secs = (h * 3600 + m * 60) as i32;
                    let secs = if sign == b'-' { -secs } else { secs };
                    (FixedOffset::east_opt(secs), used)
                }
                _ => (None, 0),
            }
        }
        _ => (None, 0),
    }
}

thread_local! {
    /// The local UTC offset of the last hour converted: time zone rules are
    /// looked up once an hour of log time, not once a line.
    static OFFSET_CACHE: Cell<Option<(i64, i32)>> = const { Cell::new(None) };
}

fn local_to_utc(naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    let hour_key = naive.and_utc().timestamp().div_euclid(3600);
    if let Some((key, offset)) = OFFSET_CACHE.with(Cell::get) {
        if key == hour_key {
            let off = FixedOffset::east_opt(offset)?;
            return off
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.with_timezone(&Utc));
        }
    }
    let local = Local.from_local_datetime(&naive).earliest()?;
    let offset = local.offset().local_minus_utc();
    // Only cache hours that are unambiguous in the local zone.
    if Local.from_local_datetime(&naive).single().is_some() {
        OFFSET_CACHE.with(|c| c.set(Some((hour_key, offset))));
    }
    Some(local.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::format_ts;

    #[test]
    fn parses_python_asctime_and_iso_forms() {
        let (ts, rest) = parse_prefix("2026-11-27 10:00:00,123Z INFO x").unwrap();
        assert_eq!(format_ts(&ts), "2026-11-27T10:00:00.123000Z");
        assert_eq!(rest, " INFO x");
        let (ts, _) = parse_prefix("2026-11-27T10:00:00.5+02:00").unwrap();
        assert_eq!(format_ts(&ts), "2026-11-27T08:00:00.500000Z");
        let (_, rest) = parse_prefix("2026-11-27 10:00:00 - a").unwrap();
        assert_eq!(rest, " - a");
    }

    #[test]
    fn rejects_non_timestamps() {
        assert!(parse_prefix("2026-11-27 is a date").is_none());
        assert!(parse_prefix("2026-13-27 10:00:00").is_none());
        assert!(parse_prefix("short").is_none());
    }
}
