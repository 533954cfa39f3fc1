//! `query metrics EXP [--type T] [--name N] [--since D] [--run N]`: what the
//! sampler measured over a run — a table per metric type with each series'
//! last, min, avg and max in human units, and on a terminal a sparkline of
//! the series over the window; `--format json` prints every sample, one a
//! line, values in base units.

use super::metrics_read::{MetricFilter, MetricRow};
use super::output::{local_time, write_json_line};
use super::select::{self, RunChoice};
use crate::app::App;
use crate::cli::MetricsArgs;
use chrono::{DateTime, Utc};
use pmon_core::options::Format;
use pmon_core::record::{parse_ts, short_number, MetricType};
use pmon_core::text::{escape_text, humanize_duration};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::IsTerminal;

/// Sparkline width, in characters (one bucket of the window each).
const SPARK_WIDTH: usize = 24;
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub fn metrics(app: &App, args: &MetricsArgs) -> anyhow::Result<()> {
    let (mut store, experiment) = select::open_experiment(app, &args.experiment)?;
    let run = experiment
        .pick_one(&RunChoice::parse(args.run.as_deref()), "query metrics")?
        .clone();
    let now = Utc::now();
    let filter = MetricFilter {
        run_id: run.run_id.clone(),
        metric_type: args.metric_type.map(|t| t.as_str().to_string()),
        name: args.name.clone(),
        since: match &args.since {
            Some(since) => super::logs::parse_since(since, now)?,
            None => None,
        },
        after_seq: None,
    };
    let mut db = store.db();
    match args.format.format {
        Format::Json => super::output::to_stdout(|out| {
            db.each_metric(&filter, |row| {
                write_json_line(out, &json_sample(&run.experiment_id, &run.run_id, &row))?;
                Ok(true)
            })
        }),
        Format::Text => {
            let from = filter
                .since
                .as_deref()
                .or(Some(run.started_at.as_str()))
                .and_then(parse_ts)
                .unwrap_or(now);
            let to = run.ended_at.as_deref().and_then(parse_ts).unwrap_or(now);
            let mut summary = Summary::new(from, to);
            db.each_metric(&filter, |row| {
                summary.add(&row);
                Ok(true)
            })?;
            // Blocks are for a person at a terminal; scripts and NO_COLOR
            // users get the plain table.
            let spark = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let heading = format!(
                "experiment: {} (run {} of {}, {})",
                escape_text(experiment.name()),
                run.ordinal,
                experiment.latest().ordinal,
                escape_text(&run.run_id)
            );
            super::output::to_stdout(|out| {
                writeln!(out, "{heading}")?;
                Ok(out.write_all(summary.text(spark).as_bytes())?)
            })
        }
    }
}

fn json_sample(experiment_id: &str, run_id: &str, row: &MetricRow) -> serde_json::Value {
    json!({
        "experiment_id": experiment_id, "run_id": run_id, "timestamp": row.timestamp,
        "metric_type": row.metric_type, "name": row.name, "value": row.value, "unit": row.unit,
        "step": row.step,
    })
}

/// One series over the window.
#[derive(Debug, Clone)]
struct Series {
    unit: Option<String>,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
    /// Per bucket of the window: the sum and count of its samples.
    buckets: Vec<(f64, u32)>,
}

/// Every series of the window, by type (in the spec's order) and name.
pub struct Summary {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    series: BTreeMap<(usize, String, String), Series>,
    samples: u64,
}

impl Summary {
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Summary {
        Summary {
            from,
            to,
            series: BTreeMap::new(),
            samples: 0,
        }
    }

    pub fn add(&mut self, row: &MetricRow) {
        let order = MetricType::ALL
            .iter()
            .position(|t| t.as_str() == row.metric_type)
            .unwrap_or(MetricType::ALL.len());
        let key = (order, row.metric_type.clone(), row.name.clone());
        let bucket = parse_ts(&row.timestamp).map_or(SPARK_WIDTH - 1, |t| self.bucket(t));
        let series = self.series.entry(key).or_insert_with(|| Series {
            unit: row.unit.clone(),
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            last: row.value,
            buckets: vec![(0.0, 0); SPARK_WIDTH],
        });
        series.count += 1;
        series.min = series.min.min(row.value);
        series.max = series.max.max(row.value);
        series.sum += row.value;
        series.last = row.value;
        series.buckets[bucket].0 += row.value;
        series.buckets[bucket].1 += 1;
        self.samples += 1;
    }

    fn bucket(&self, at: DateTime<Utc>) -> usize {
        let span = (self.to - self.from).num_milliseconds().max(1) as f64;
        let offset = (at - self.from).num_milliseconds().max(0) as f64;
        ((offset / span * SPARK_WIDTH as f64) as usize).min(SPARK_WIDTH - 1)
    }

    /// The tables, one per type; `spark` adds a sparkline column.
    pub fn text(&self, spark: bool) -> String {
        let span = humanize_duration((self.to - self.from).to_std().unwrap_or_default());
        let mut text = format!(
            "window: {} to {} ({span}), {}\n",
            local_time(&pmon_core::record::format_ts(&self.from), false),
            local_time(&pmon_core::record::format_ts(&self.to), false),
            pmon_core::text::plural(self.samples as u64, "sample", "samples")
        );
        if self.series.is_empty() {
            text.push_str("no metric samples in this window (they are taken every monitoring.metrics_interval while a wrapped program or daemon runs)\n");
            return text;
        }
        let mut rows: Vec<(String, [String; 4], String)> = Vec::new();
        let mut current_type = None;
        for ((_, metric_type, name), s) in &self.series {
            if current_type != Some(metric_type) {
                current_type = Some(metric_type);
                let head = ["last", "min", "avg", "max"].map(str::to_string);
                rows.push((escape_text(metric_type), head, String::new()));
            }
            let unit = s.unit.as_deref();
            let values = [s.last, s.min, s.sum / s.count as f64, s.max].map(|v| human(v, unit));
            let line = if spark {
                sparkline(&s.buckets)
            } else {
                String::new()
            };
            rows.push((format!("  {}", escape_text(name)), values, line));
        }
        let label_width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let value_width = rows
            .iter()
            .flat_map(|r| r.1.iter().map(|v| v.chars().count()))
            .max()
            .unwrap_or(0);
        for (label, values, line) in rows {
            let mut out = format!("{label:<label_width$}");
            for v in values {
                out.push_str(&format!("  {v:>value_width$}"));
            }
            if !line.is_empty() {
                out.push_str("  ");
                out.push_str(&line);
            }
            text.push_str(out.trim_end());
            text.push('\n');
        }
        text
    }
}

/// The series over the window in Unicode blocks, lowest to highest bucket
/// average; a bucket without samples is a space.
fn sparkline(buckets: &[(f64, u32)]) -> String {
    let averages: Vec<Option<f64>> = buckets
        .iter()
        .map(|(sum, n)| (*n > 0).then(|| sum / *n as f64))
        .collect();
    let (lo, hi) = averages
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    averages
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if hi <= lo => BLOCKS[0],
            Some(v) => {
                let level = ((v - lo) / (hi - lo) * (BLOCKS.len() - 1) as f64).round();
                BLOCKS[(level as usize).min(BLOCKS.len() - 1)]
            }
        })
        .collect()
}

/// A value in the units people read: bytes in KiB/MiB/GiB, percent with a
/// `%`, rates with their unit.
pub fn human(value: f64, unit: Option<&str>) -> String {
    match unit {
        Some("bytes") => bytes(value),
        Some("percent") => format!("{value:.1}%"),
        Some(unit) if unit.ends_with("/s") => format!("{} {}", plain(value), escape_text(unit)),
        _ => plain(value),
    }
}

fn bytes(value: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = value;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} B", short_number(v.round()))
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Whole numbers as they are; others with enough digits to tell a loss of
/// 0.0123 from 0.0125.
fn plain(value: f64) -> String {
    if value.fract() == 0.0 || value.abs() >= 100.0 {
        return short_number((value * 10.0).round() / 10.0);
    }
    if value.abs() >= 1.0 {
        return short_number(value);
    }
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(at: &str, metric_type: &str, name: &str, value: f64, unit: Option<&str>) -> MetricRow {
        MetricRow {
            seq: 0,
            timestamp: format!("2026-11-27T10:00:{at}.000000Z"),
            metric_type: metric_type.into(),
            name: name.into(),
            value,
            unit: unit.map(str::to_string),
            step: None,
        }
    }

    #[test]
    fn values_read_in_human_units() {
        assert_eq!(human(300.0 * 1048576.0, Some("bytes")), "300.0 MiB");
        assert_eq!(human(512.0, Some("bytes")), "512 B");
        assert_eq!(human(97.34, Some("percent")), "97.3%");
        assert_eq!(human(39.69, Some("lines/s")), "39.69 lines/s");
        assert_eq!(human(0.01234, None), "0.0123");
        assert_eq!(human(4.0, Some("threads")), "4");
        assert_eq!(human(1234.56, None), "1234.6");
    }

    #[test]
    fn a_table_per_type_with_last_min_avg_max_and_a_sparkline() {
        let from = parse_ts("2026-11-27T10:00:00Z").unwrap();
        let to = parse_ts("2026-11-27T10:00:24Z").unwrap();
        let mut summary = Summary::new(from, to);
        for (i, mib) in [100.0, 200.0, 300.0, 200.0].iter().enumerate() {
            let at = format!("{:02}", i * 6);
            summary.add(&row(
                &at,
                "memory",
                "rss_bytes",
                mib * 1048576.0,
                Some("bytes"),
            ));
        }
        summary.add(&row("05", "user", "loss", 0.5, None));
        summary.add(&row("20", "user", "loss", 0.25, None));
        summary.add(&row("01", "cpu", "cpu_percent", 50.0, Some("percent")));
        let text = summary.text(false);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["memory", "last", "min", "avg", "max"]
        );
        assert_eq!(
            lines[1]
                .split("  ")
                .filter(|s| !s.is_empty())
                .map(str::trim)
                .collect::<Vec<_>>(),
            [
                "rss_bytes",
                "200.0 MiB",
                "100.0 MiB",
                "200.0 MiB",
                "300.0 MiB"
            ]
        );
        assert!(lines[2].starts_with("cpu"), "{text}");
        assert!(lines[4].starts_with("user"), "{text}");
        assert!(
            lines[5].contains("0.25") && lines[5].contains("0.375"),
            "{text}"
        );
        assert!(!text.contains('▁'), "no sparkline off a terminal: {text}");
        let spark = summary.text(true);
        let memory = spark.lines().nth(2).unwrap();
        // One block per sample, placed by time over the 24 s window.
        assert!(
            memory.ends_with("300.0 MiB  ▁     ▅     █     ▅"),
            "{memory:?}"
        );
    }

    #[test]
    fn an_empty_window_says_why() {
        let at = parse_ts("2026-11-27T10:00:00Z").unwrap();
        let text = Summary::new(at, at).text(true);
        assert!(text.contains("no metric samples in this window"), "{text}");
    }
}
