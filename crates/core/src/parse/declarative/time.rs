//! How a parser's `timestamp` capture becomes a time: `time_format` (a
//! strftime format, `rfc3339`, `unix`, `unix_ms`, or the agent's own reader
//! of ISO 8601 and Python's asctime) and `timezone` for times without an
//! offset.

use super::error::ParserFileError;
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, Local, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_saphyr::Spanned;

/// How a `timestamp` capture becomes a time.
#[derive(Debug)]
pub enum TimeReader {
    /// The agent's own reader (`2026-11-27 10:00:00,123`, ISO 8601).
    Auto,
    Rfc3339,
    Unix,
    UnixMs,
    Strftime {
        format: String,
        has_year: bool,
        has_date: bool,
        has_offset: bool,
        utc: bool,
    },
}

impl TimeReader {
    pub fn new(
        format: Option<&Spanned<String>>,
        zone: Option<&Spanned<String>>,
        origin: &str,
    ) -> Result<TimeReader, ParserFileError> {
        let utc = match zone.map(|z| z.value.to_ascii_lowercase()) {
            None => false,
            Some(z) if z == "local" => false,
            Some(z) if z == "utc" => true,
            Some(z) => {
                return Err(ParserFileError::new(
                    origin,
                    zone.map(|z| z.referenced.line()),
                    format!("timezone '{z}' is not known: use local or utc"),
                ))
            }
        };
        let Some(format) = format else {
            return Ok(TimeReader::Auto);
        };
        Ok(match format.value.as_str() {
            "rfc3339" => TimeReader::Rfc3339,
            "unix" => TimeReader::Unix,
            "unix_ms" => TimeReader::UnixMs,
            f => {
                if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
                    return Err(ParserFileError::new(
                        origin,
                        Some(format.referenced.line()),
                        format!("time_format '{f}' is not a strftime format (nor rfc3339, unix, unix_ms)"),
                    ));
                }
                let has = |specs: &[&str]| specs.iter().any(|s| f.contains(s));
                TimeReader::Strftime {
                    format: f.to_string(),
                    has_year: has(&["%Y", "%y", "%G", "%g", "%C", "%F", "%D", "%c", "%+", "%s"]),
                    has_date: has(&["%d", "%e", "%j", "%F", "%D", "%c", "%+", "%s"]),
                    has_offset: has(&["%z", "%:z", "%#z", "%+"]),
                    utc,
                }
            }
        })
    }

    pub fn read(&self, text: &str) -> Option<DateTime<Utc>> {
        let text = text.trim();
        match self {
            TimeReader::Auto => crate::parse::timestamp::parse_prefix(text).map(|(t, _)| t),
            TimeReader::Rfc3339 => DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            TimeReader::Unix => {
                let secs: f64 = text.parse().ok()?;
                DateTime::from_timestamp_micros((secs * 1e6).round() as i64)
            }
            TimeReader::UnixMs => {
                let ms: f64 = text.parse().ok()?;
                DateTime::from_timestamp_micros((ms * 1e3).round() as i64)
            }
            TimeReader::Strftime {
                format,
                has_year,
                has_date,
                has_offset,
                utc,
            } => {
                if *has_offset {
                    return DateTime::parse_from_str(text, format)
                        .ok()
                        .map(|t| t.with_timezone(&Utc));
                }
                let naive = if *has_year {
                    NaiveDateTime::parse_from_str(text, format).ok()?
                } else if *has_date {
                    yearless(text, format)?
                } else {
                    let time = NaiveTime::parse_from_str(text, format).ok()?;
                    Local::now().date_naive().and_time(time)
                };
                if *utc {
                    Some(naive.and_utc())
                } else {
                    Local
                        .from_local_datetime(&naive)
                        .earliest()
                        .map(|t| t.with_timezone(&Utc))
                }
            }
        }
    }
}

/// glog's `1127 10:00:00`: this year, unless that is more than a day
/// ahead (a December line read in January).
fn yearless(text: &str, format: &str) -> Option<NaiveDateTime> {
    let now = Local::now().naive_local();
    let with = |year: i32| {
        NaiveDateTime::parse_from_str(&format!("{year} {text}"), &format!("%Y {format}")).ok()
    };
    let this_year = with(now.year())?;
    if this_year > now + chrono::Duration::days(1) {
        return with(now.year() - 1);
    }
    Some(this_year)
}
