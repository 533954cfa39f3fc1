//! pmon's own line protocol, for programs that want to say more than a log
//! line can:
//!
//! * `##pmon[progress task=load/shard_3 current=3 total=10 unit=files rate=1.5]`
//!   — the state of one task of the progress tree;
//! * `##pmon[metric name=loss value=0.12 step=300 unit=nats]` — a value of the
//!   program's own (`metric_type = user`).
//!
//! Such lines are state and samples, not log records. A line that starts like
//! a directive but cannot be read is kept as an ordinary log line, and the
//! reason is reported once (a `parse_error` event), so a typo is seen rather
//! than silently losing the values.

use crate::record::{Metric, MetricType, ProgressUpdate};
use chrono::Utc;

const PREFIX: &str = "##pmon[";

/// What a directive line says.
#[derive(Debug, Clone, PartialEq)]
pub enum Directive {
    Progress(ProgressUpdate),
    Metric(Metric),
}

/// True if the line is meant as a directive (well-formed or not).
pub fn is_directive(line: &str) -> bool {
    line.trim_start().starts_with(PREFIX)
}

/// `None` when the line is no directive; `Some(Err(reason))` when it is one
/// that cannot be read.
pub fn parse(line: &str) -> Option<Result<Directive, String>> {
    let body = line.trim().strip_prefix(PREFIX)?;
    let (kind, rest) = body
        .split_once(' ')
        .unwrap_or((body.trim_end_matches(']'), ""));
    match kind {
        "progress" => Some(pairs(rest).and_then(progress)),
        "metric" => Some(pairs(rest).and_then(metric)),
        other => Some(Err(format!(
            "unknown directive '{other}': pmon reads ##pmon[progress …] and ##pmon[metric …]"
        ))),
    }
}

/// `a=1 b=x]` → `[("a", "1"), ("b", "x")]`.
fn pairs(rest: &str) -> Result<Vec<(&str, &str)>, String> {
    let inner = rest
        .trim_end()
        .strip_suffix(']')
        .ok_or("the directive does not end with ']'")?;
    inner
        .split_whitespace()
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| format!("'{pair}' is not key=value"))
        })
        .collect()
}

fn number(key: &str, value: &str) -> Result<f64, String> {
    let n: f64 = value
        .parse()
        .map_err(|_| format!("{key}={value} is not a number"))?;
    if n.is_finite() {
        Ok(n)
    } else {
        Err(format!("{key}={value} is not a finite number"))
    }
}

fn unknown(key: &str, known: &str) -> String {
    format!("unknown key '{key}' (known: {known})")
}

fn progress(pairs: Vec<(&str, &str)>) -> Result<Directive, String> {
    let (mut task, mut current, mut total, mut unit, mut rate) = (None, None, None, None, None);
    for (k, v) in pairs {
        match k {
            "task" => task = Some(v),
            "current" => current = Some(number(k, v)?),
            "total" => total = Some(number(k, v)?),
            "unit" => unit = Some(v.to_string()),
            "rate" => rate = Some(number(k, v)?),
            _ => return Err(unknown(k, "task, current, total, unit, rate")),
        }
    }
    Ok(Directive::Progress(ProgressUpdate {
        task: task.ok_or("task= is missing")?.to_string(),
        current: current.ok_or("current= is missing")?,
        total,
        unit,
        rate,
        updated_at: Utc::now(),
    }))
}

fn metric(pairs: Vec<(&str, &str)>) -> Result<Directive, String> {
    let (mut name, mut value, mut step, mut unit) = (None, None, None, None);
    for (k, v) in pairs {
        match k {
            "name" => name = Some(v),
            "value" => value = Some(number(k, v)?),
            "step" => {
                step = Some(
                    v.parse::<i64>()
                        .map_err(|_| format!("step={v} is not a whole number"))?,
                )
            }
            "unit" => unit = Some(v.to_string()),
            _ => return Err(unknown(k, "name, value, step, unit")),
        }
    }
    let name = name.ok_or("name= is missing")?;
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err("the name is longer than 200 bytes or holds control characters".into());
    }
    Ok(Directive::Metric(Metric {
        timestamp: Utc::now(),
        metric_type: MetricType::User,
        name: name.to_string(),
        value: value.ok_or("value= is missing")?,
        unit,
        step,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric_of(line: &str) -> (String, f64, Option<i64>, Option<String>) {
        match parse(line) {
            Some(Ok(Directive::Metric(m))) => (m.name, m.value, m.step, m.unit),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn metric_lines_give_user_samples() {
        assert_eq!(
            metric_of("##pmon[metric name=loss value=0.12 step=300]"),
            ("loss".into(), 0.12, Some(300), None)
        );
        assert_eq!(
            metric_of("  ##pmon[metric name=val/acc value=9.5e-1 unit=ratio]  "),
            ("val/acc".into(), 0.95, None, Some("ratio".into()))
        );
    }

    #[test]
    fn progress_lines_give_task_states() {
        let Some(Ok(Directive::Progress(p))) =
            parse("##pmon[progress task=load/shard_3 current=3 total=10 unit=files]")
        else {
            panic!("not progress");
        };
        assert_eq!(
            (p.task.as_str(), p.current, p.total, p.unit.as_deref()),
            ("load/shard_3", 3.0, Some(10.0), Some("files"))
        );
    }

    #[test]
    fn malformed_directives_say_why() {
        let why = |line: &str| parse(line).unwrap().unwrap_err();
        assert_eq!(why("##pmon[metric name=loss]"), "value= is missing");
        assert_eq!(why("##pmon[metric value=1]"), "name= is missing");
        assert_eq!(
            why("##pmon[metric name=loss value=nan]"),
            "value=nan is not a finite number"
        );
        assert_eq!(
            why("##pmon[metric name=loss value=abc]"),
            "value=abc is not a number"
        );
        assert_eq!(
            why("##pmon[metric name=loss value=1 step=1.5]"),
            "step=1.5 is not a whole number"
        );
        assert_eq!(
            why("##pmon[metric name=loss value=1"),
            "the directive does not end with ']'"
        );
        assert_eq!(
            why("##pmon[metric name=loss value=1 colour=red]"),
            "unknown key 'colour' (known: name, value, step, unit)"
        );
        assert_eq!(
            why("##pmon[metric name=loss value]"),
            "'value' is not key=value"
        );
        assert!(why("##pmon[gauge x=1]").starts_with("unknown directive 'gauge'"));
        assert_eq!(why("##pmon[progress current=1]"), "task= is missing");
    }

    #[test]
    fn ordinary_lines_are_not_directives() {
        assert_eq!(parse("loss=0.12"), None);
        assert_eq!(parse("# pmon[metric name=x value=1]"), None);
        assert!(!is_directive("INFO ##pmon[metric name=x value=1]"));
    }
}
