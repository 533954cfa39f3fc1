//! Progress lines: tqdm bars (also seen through carriage-return overwrites),
//! Keras `12/100 [==>...]`, `Epoch 3/10`, `[3/10]` and `45%`. pmon's own
//! `##pmon[progress …]` protocol is read in [`super::directive`].
//!
//! Progress is state, not history: the caller keeps the latest update per task.
//! Bars and the protocol line are progress only; `Epoch 3/10 loss=0.2` and
//! `[3/10] loading` are also log lines, because they say more than progress.

use crate::record::ProgressUpdate;
use chrono::Utc;
use regex::Regex;

/// A recognised progress line.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressMatch {
    pub update: ProgressUpdate,
    /// The line carries text beyond the progress and should be stored as a log line too.
    pub also_log: bool,
    /// A tqdm bar: drawn below another bar (`position=N`), it is that bar's child.
    pub nests: bool,
}

pub struct ProgressParser {
    tqdm: Regex,
    tqdm_open: Regex,
    keras: Regex,
    counter: Regex,
}

impl Default for ProgressParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressParser {
    pub fn new() -> ProgressParser {
        let re = |s: &str| Regex::new(s).expect("built-in progress pattern");
        ProgressParser {
            tqdm: re(
                r"^(?:(?P<desc>.*?): ?)?\s*(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>[\d.]+[kMGTP]?)/(?P<total>[\d.]+[kMGTP]?)\s*\[(?P<times>[^\]]*)\]",
            ),
            tqdm_open: re(
                r"^(?:(?P<desc>.*?): )?(?P<n>[\d.]+[kMGTP]?)(?P<unit>[A-Za-z]*) \[(?P<times>[\d:]+, [^\]]*)\]\s*$",
            ),
            keras: re(r"^\s*(?P<n>\d+)/(?P<total>\d+) \[[=>.]*\]"),
            counter: re(r"^(?:Epoch\s+|\[)(?P<n>\d+)\s*/\s*(?P<total>\d+)\]?"),
        }
    }

    pub fn parse(&self, line: &str) -> Option<ProgressMatch> {
        if line.contains("%|") {
            return self.tqdm_bar(line).map(nesting);
        }
        if line.ends_with(']') && (line.contains("/s]") || line.contains("/it]")) {
            if let Some(m) = self.tqdm_unbounded(line) {
                return Some(nesting(m));
            }
        }
        let first = line.trim_start().bytes().next()?;
        if first.is_ascii_digit() {
            if let Some(c) = self.keras.captures(line) {
                return Some(only(update(
                    "keras",
                    num(&c["n"])?,
                    num(&c["total"]),
                    None,
                    None,
                )));
            }
            return percent(line);
        }
        if first == b'E' || first == b'[' {
            let c = self.counter.captures(line)?;
            let whole = c.get(0)?;
            if first == b'[' && !whole.as_str().ends_with(']') {
                return None;
            }
            let task = if first == b'E' { "epoch" } else { "steps" };
            let rest = line[whole.end()..].trim();
            return Some(ProgressMatch {
                update: update(task, num(&c["n"])?, num(&c["total"]), None, None),
                also_log: !rest.is_empty(),
                nests: false,
            });
        }
        None
    }

    fn tqdm_bar(&self, line: &str) -> Option<ProgressMatch> {
        let c = self.tqdm.captures(line)?;
        let (rate, unit) = rate_and_unit(&c["times"]);
        let task = c
            .name("desc")
            .map(|d| d.as_str().trim())
            .filter(|d| !d.is_empty());
        Some(only(update(
            task.unwrap_or("tqdm"),
            num(&c["n"])?,
            num(&c["total"]),
            unit.as_deref(),
            rate,
        )))
    }

    fn tqdm_unbounded(&self, line: &str) -> Option<ProgressMatch> {
        let c = self.tqdm_open.captures(line)?;
        let (rate, _) = rate_and_unit(&c["times"]);
        let unit = Some(&c["unit"]).filter(|u| !u.is_empty());
        let task = c
            .name("desc")
            .map(|d| d.as_str().trim())
            .filter(|d| !d.is_empty());
        Some(only(update(
            task.unwrap_or("tqdm"),
            num(&c["n"])?,
            None,
            unit,
            rate,
        )))
    }
}

fn only(update: ProgressUpdate) -> ProgressMatch {
    ProgressMatch {
        update,
        also_log: false,
        nests: false,
    }
}

fn nesting(m: ProgressMatch) -> ProgressMatch {
    ProgressMatch { nests: true, ..m }
}

fn update(
    task: &str,
    current: f64,
    total: Option<f64>,
    unit: Option<&str>,
    rate: Option<f64>,
) -> ProgressUpdate {
    ProgressUpdate {
        task: task.to_string(),
        current,
        total,
        unit: unit.map(str::to_string),
        rate,
        updated_at: Utc::now(),
    }
}

/// `12`, `3.5`, and tqdm's `unit_scale` suffixes (`1.2k`, `3M`).
fn num(text: &str) -> Option<f64> {
    let (digits, scale) = match text.chars().last()? {
        'k' => (&text[..text.len() - 1], 1e3),
        'M' => (&text[..text.len() - 1], 1e6),
        'G' => (&text[..text.len() - 1], 1e9),
        'T' => (&text[..text.len() - 1], 1e12),
        'P' => (&text[..text.len() - 1], 1e15),
        _ => (text, 1.0),
    };
    digits.parse::<f64>().ok().map(|v| v * scale)
}

/// From tqdm's `00:01<00:02, 99.50it/s` (or `1.25s/it`): the rate per second and unit.
fn rate_and_unit(times: &str) -> (Option<f64>, Option<String>) {
    let Some(rate) = times.split(", ").nth(1) else {
        return (None, None);
    };
    let rate = rate.split(',').next().unwrap_or(rate).trim();
    if !rate.starts_with(|c: char| c.is_ascii_digit()) {
        return (None, None);
    }
    let end = rate
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || "kMGTP".contains(c)))
        .unwrap_or(rate.len());
    let (value, unit) = rate.split_at(end);
    if let Some(unit) = unit.strip_suffix("/s") {
        return (num(value), Some(unit.to_string()));
    }
    if let Some(unit) = unit.strip_prefix("s/") {
        let per_second = num(value).filter(|v| *v > 0.0).map(|v| 1.0 / v);
        return (per_second, Some(unit.to_string()));
    }
    (None, None)
}

fn percent(line: &str) -> Option<ProgressMatch> {
    let value = line.trim().strip_suffix('%')?;
    let v: f64 = value.parse().ok()?;
    (0.0..=100.0)
        .contains(&v)
        .then(|| only(update("progress", v, Some(100.0), Some("%"), None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Seen = (String, f64, Option<f64>, Option<String>, Option<f64>, bool);

    fn p(line: &str) -> Option<Seen> {
        ProgressParser::new().parse(line).map(|m| {
            let u = m.update;
            (u.task, u.current, u.total, u.unit, u.rate, m.also_log)
        })
    }

    #[test]
    fn tqdm_bars() {
        assert_eq!(
            p("Loading shards:  45%|████▌     | 45/100 [00:01<00:01, 39.87it/s]"),
            Some((
                "Loading shards".into(),
                45.0,
                Some(100.0),
                Some("it".into()),
                Some(39.87),
                false
            ))
        );
        assert_eq!(
            p(" 10%|#         | 1.20k/12.0k [00:01<00:09, 1.20kB/s]").map(|t| (t.1, t.2)),
            Some((1200.0, Some(12000.0)))
        );
        assert_eq!(
            p("rows: 1234it [00:02, 617.00it/s]").map(|t| (t.0, t.1, t.2)),
            Some(("rows".into(), 1234.0, None))
        );
        assert_eq!(
            p("  0%|          | 0/5 [00:00<?, ?it/s]").map(|t| (t.1, t.4)),
            Some((0.0, None))
        );
        assert_eq!(
            p("100%|██████████| 3/3 [00:03<00:00,  1.01s/it]")
                .map(|t| t.4.map(|r| (r * 100.0).round())),
            Some(Some(99.0))
        );
    }

    #[test]
    fn other_progress_forms() {
        assert_eq!(
            p(" 12/100 [==>...........................] - ETA: 3s - loss: 0.4").map(|t| (t.0, t.1)),
            Some(("keras".into(), 12.0))
        );
        assert_eq!(
            p("Epoch 3/10"),
            Some(("epoch".into(), 3.0, Some(10.0), None, None, false))
        );
        assert_eq!(p("Epoch 3/10 - loss: 0.2").map(|t| t.5), Some(true));
        assert_eq!(
            p("[3/10] loading shard").map(|t| (t.0, t.5)),
            Some(("steps".into(), true))
        );
        assert_eq!(p("45%").map(|t| t.1), Some(45.0));
    }

    #[test]
    fn log_lines_are_not_progress() {
        for line in [
            "INFO:root:50% done",
            "2026-01-01 10:00:00 INFO x: 3/4 [ok]",
            "[ERROR] boom",
            "Everything fine",
            "100 rows",
            "[3/10 broken",
        ] {
            assert_eq!(p(line), None, "{line}");
        }
    }
}
